"""Output routing: sys.stdout / sys.stderr replacements that publish to IOPub under the request current where they are written,
threads and executors that carry the context of the cell that started them, and fd-level capture of C and subprocess output."""
import io, os, sys, select, codecs, contextvars, functools, logging, threading, ctypes
try: from termios import FIONREAD
except ImportError: FIONREAD = None
from concurrent.futures import ThreadPoolExecutor
from .iopub import BIG_WRITE, Sink
from .env import env_flag

__all__ = ['current_parent', 'get_parent', 'set_default_parent', 'flush_files', 'OutStream', 'FdCapture', 'setup']
log = logging.getLogger('ipymini')

current_parent = contextvars.ContextVar('ipymini_parent', default=None)
_get = current_parent.get
_default = [None]

def flush_files(*files):
    "Flush `files`, skipping any that is None, closed, or whose reader is gone."
    for f in files:
        try: f and f.flush()
        except (OSError, ValueError): pass

def set_default_parent(msg):
    "The parent for output from code that runs outside any request's context (e.g. a thread started by the kernel)."
    _default[0] = msg

def get_parent():
    "The request that output written here and now belongs to."
    return _get() or _default[0]

class OutStream(io.TextIOBase):
    "A text stream whose writes become IOPub `stream` messages, batched by the IOPub thread."
    __module__ = 'ipykernel.iostream'  # click keeps its colours for a stream of this module, as in ipykernel (see bridge.ipykernel_module)
    def __init__(self, name, iopub, fd=None):
        self._name,self.iopub,self._fd = name,iopub,fd
        self._order = iopub.order.append  # the list is never replaced: flushes delete from it
        self._sink = Sink(None, name)  # the sink of the parent written to last: one attribute, so a thread reads a whole one

    @property
    def name(self): return self._name
    @property
    def encoding(self): return 'UTF-8'
    @property
    def errors(self): return 'strict'

    def write(self, s):
        if not isinstance(s, str): raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        if n:  # IOPub.write, inline: this is the hot path of print()
            p = _get() or _default[0]
            sink = self._sink
            if sink.parent is not p: sink = self._sink = Sink(p, self._name)
            sink.texts.append(s)
            self._order(sink)
            if n > BIG_WRITE: self.iopub.flush()  # now, by the writer: held text stays bounded however fast it comes
            elif not self.iopub.armed: self.iopub.arm()
        return n

    def writelines(self, lines):
        for l in lines: self.write(l)

    def flush(self): self.iopub.flush()
    def writable(self): return True
    def isatty(self): return False

    def fileno(self):
        if self._fd is None: raise io.UnsupportedOperation("fileno")
        return self._fd

# ---- threads and executors inherit the context of the code that starts them ----
# Python 3.11 threads start with an empty context, so a thread started by a cell would lose the cell's parent.
_thread_start,_pool_submit = threading.Thread.start,ThreadPoolExecutor.submit

def _start_in_context(self):
    ctx,run = contextvars.copy_context(),self.run
    self.run = lambda: ctx.run(run)
    _thread_start(self)

def _submit_in_context(self, fn, /, *args, **kwargs):
    # per task, not per worker: a worker thread outlives the cell that happened to start it
    return _pool_submit(self, functools.partial(contextvars.copy_context().run, fn), *args, **kwargs)

def inherit_context():
    "Make `threading.Thread.start` and `ThreadPoolExecutor.submit` run their code in a copy of the caller's context."
    threading.Thread.start,ThreadPoolExecutor.submit = _start_in_context,_submit_in_context

# ---- file-descriptor capture: output that bypasses sys.stdout (C code, subprocesses inheriting fd 1/2) ----
_running = []  # execute requests running now, on any subshell, oldest first

def fd_parent():
    "Where output read from a captured fd goes: it cannot tell its thread, so the newest running execute request, else the default."
    try: return _running[-1]
    except IndexError: return _default[0]

def _c_library():
    """C calls for the check before each execute's idle: (fflush, ioctl, whether C's stdio holds output). The last two are made
    without releasing the GIL (ctypes.PyDLL), which would hand it to a socket thread in the middle of the execute; each is
    non-blocking. A call the C library lacks is None; without `__fpending`, C is taken to hold output."""
    try: libc = ctypes.PyDLL(None)
    except OSError: return None,None,lambda: True
    fflush = getattr(ctypes.CDLL(None), 'fflush', None)  # blocks on a full pipe: through CDLL, releasing the GIL, and only when needed
    # FIONREAD: bytes waiting in a pipe. ioctl is variadic, which ctypes can call safely only where variadic arguments travel as
    # fixed ones do (Linux on x86-64 and arm64); elsewhere poll(2) looks instead
    ioctl = getattr(libc, 'ioctl', None) if FIONREAD is not None and sys.platform.startswith('linux') else None
    if ioctl is not None: ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    try:
        fpending = libc.__fpending  # bytes C's stdio holds unwritten in a stream (glibc, musl)
        fpending.restype,fpending.argtypes = ctypes.c_size_t,[ctypes.c_void_p]
        files = [ctypes.c_void_p.in_dll(libc, n) for n in ('stdout', 'stderr')]
    except (AttributeError, ValueError): fpending,files = None,()
    check = (lambda: any(map(fpending, files))) if fpending else (lambda: True)
    return fflush,ioctl,check

class FdCapture:
    "File descriptors 1 and 2 redirected into pipes; a thread forwards what arrives as `stream` text."
    def __init__(self, iopub, fds=((1, 'stdout'), (2, 'stderr'))):
        self.iopub,self.lock,self.pipes = iopub,threading.Lock(),{}
        for fd,name in fds:
            try: os.fstat(fd)
            except OSError: continue  # launched with this fd closed: nothing to capture
            r,w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self.pipes[r] = (name, codecs.getincrementaldecoder('utf-8')('replace'))
        self.poller,self.wait = select.poll(),select.poll()  # one for looking (a poll object cannot be in two calls), one for the thread's wait
        for r in self.pipes:
            for p in (self.poller, self.wait): p.register(r, select.POLLIN)
        self.fflush,self.ioctl,self.c_pending = _c_library()
        self.nbytes = ctypes.c_int()
        self.nbytes_ref = ctypes.byref(self.nbytes)

    def start(self): threading.Thread(target=self._run, name='ipymini-fdcapture', daemon=True).start()

    def _run(self):
        while self.pipes: self.drain(fds=[fd for fd,_ in self.wait.poll()])

    def readable(self):
        "The pipes holding bytes now."
        if self.ioctl is None: return [fd for fd,_ in self.poller.poll(0)]
        return [fd for fd in self.pipes if self.ioctl(fd, FIONREAD, self.nbytes_ref) != 0 or self.nbytes.value]  # an error: a read will tell

    def drain(self, parent=None, fds=None):
        "Forward what pipes `fds` (default: those holding bytes) hold now, under `parent` (default: `fd_parent()`); the lock keeps the pieces in order."
        with self.lock:
            for r in self.readable() if fds is None else fds:
                if r not in self.pipes: continue
                name,dec = self.pipes[r]
                chunks = []
                while True:
                    try: b = os.read(r, 1 << 16)
                    except BlockingIOError: break
                    if not b:  # every writer closed the fd (e.g. user code ran `os.close(1)`): stop watching it
                        for p in (self.poller, self.wait): p.unregister(r)
                        del self.pipes[r]
                        break
                    chunks.append(b)
                text = dec.decode(b''.join(chunks))
                if text: self.iopub.stream(name, text, parent or fd_parent())

    def flush(self, parent=None):
        "Push out buffered output and forward everything written to the fds so far (e.g. before a cell's idle)."
        flush_files(sys.__stdout__, sys.__stderr__)
        if self.fflush and self.c_pending(): self.fflush(None)
        self.drain(parent)

def _keep_logs_off_fd2():
    "The kernel's own log handlers writing to fd 2 get a private copy of it, so kernel logs stay out of the user's output."
    handlers = logging.getLogger().handlers + log.handlers
    for h in handlers:
        s = getattr(h, 'stream', None)
        try: fd = s.fileno()
        except (AttributeError, OSError, ValueError): continue
        if fd in (1, 2): h.setStream(open(os.dup(fd), 'w', buffering=1, encoding='utf-8', errors='replace'))

def _child_streams():
    """In a forked child (multiprocessing's default on Linux, os.fork): no IOPub thread runs there, so sys.stdout and sys.stderr write
    straight to fds 1 and 2, a line at a time as on a terminal: captured, those reach the cell running in the kernel."""
    for name,fd in (('stdout', 1), ('stderr', 2)):
        if isinstance(getattr(sys, name), OutStream):
            try: setattr(sys, name, io.TextIOWrapper(io.FileIO(fd, 'w', closefd=False), encoding='utf-8', errors='replace', line_buffering=True))
            except OSError: pass  # that fd is closed: leave the stream as it was

def setup(kernel):
    "Threads inherit the cell's context; forked children write to the fds; fds 1/2 are captured (unless IPYMINI_CAPTURE_FD=0) and drained before each execute's idle."
    inherit_context()
    os.register_at_fork(after_in_child=_child_streams)
    if not env_flag('IPYMINI_CAPTURE_FD', True): return
    _keep_logs_off_fd2()
    cap = kernel.fd_capture = FdCapture(kernel.iopub)
    cap.start()
    kernel.before_execute.append(_running.append)
    def drain(msg):
        cap.flush(msg)
        _running.remove(msg)
    kernel.after_execute.append(drain)
