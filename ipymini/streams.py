"""sys.stdout / sys.stderr replacements that publish to IOPub under the message that is current where they are written."""
import io, contextvars

__all__ = ['current_parent', 'get_parent', 'set_default_parent', 'OutStream']

current_parent = contextvars.ContextVar('ipymini_parent', default=None)
_default = [None]

def set_default_parent(msg):
    "The parent for output from code that runs outside any request's context (e.g. a bare thread)."
    _default[0] = msg

def get_parent():
    "The request that output written here and now belongs to."
    return current_parent.get() or _default[0]

class OutStream(io.TextIOBase):
    "A text stream whose writes become IOPub `stream` messages, batched by the IOPub thread."
    def __init__(self, name, iopub, fd=None):
        self._name,self.iopub,self._fd = name,iopub,fd

    @property
    def name(self): return self._name
    @property
    def encoding(self): return 'utf-8'
    @property
    def errors(self): return 'strict'

    def write(self, s):
        if not isinstance(s, str): raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s: self.iopub.stream(self._name, s, get_parent())
        return len(s)

    def writelines(self, lines):
        for l in lines: self.write(l)

    def flush(self): self.iopub.flush()
    def writable(self): return True
    def isatty(self): return False

    def fileno(self):
        if self._fd is None: raise io.UnsupportedOperation("fileno")
        return self._fd
