"""ipymini: a small, fast Jupyter kernel for Python, built on IPython and pyzmq."""
__version__ = "0.1.0"
__all__ = ['unlock', 'subshell']

def _kernel():
    "The ipymini kernel this code runs in, or None."
    import sys
    if 'IPython' not in sys.modules: return None
    from IPython import get_ipython
    return getattr(get_ipython(), 'kernel', None)

def unlock():
    "In a running cell: let the requests queued behind it start while it goes on awaiting. False outside a cell or an ipymini kernel."
    k = _kernel()
    return bool(k is not None and hasattr(k, 'unlock') and k.unlock())

def subshell():
    "In a running cell: a context manager while whose body later requests from the same client run in a temporary subshell."
    k = _kernel()
    if k is None or not hasattr(k, 'subshell'): raise RuntimeError("subshell() works only in a cell of an ipymini kernel")
    return k.subshell()
