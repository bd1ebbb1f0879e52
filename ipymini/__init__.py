"""ipymini: a small, fast Jupyter kernel for Python, built on IPython and pyzmq."""
__version__ = "0.1.0"
