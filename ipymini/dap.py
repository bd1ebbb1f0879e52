"""What the kernel and debugpy's front ends agree on: the Debug Adapter Protocol connection to debugpy's adapter, and the file each
cell is compiled under (front ends compute it from `debugInfo`, so both must name it the same way)."""
import contextvars, os, json, struct, socket, atexit, threading, itertools, logging, functools
from .env import env_float

__all__ = ['murmur2', 'cell_path', 'tmp_prefix', 'make_tmp_dir', 'hide_thread', 'DAPClient', 'HASH_SEED', 'TMP_SUFFIX', 'TIMEOUT']
log = logging.getLogger('ipymini')

HASH_SEED = 0xC70F6907  # the seed front ends are told in debugInfo; with murmur2 they name a cell's file as the kernel does
TMP_SUFFIX = '.py'
TIMEOUT = env_float('IPYMINI_DEBUG_TIMEOUT', 10.)  # longest wait for debugpy's answer to one request

def murmur2(data: bytes, seed: int) -> int:
    "32-bit MurmurHash2 of `data`, reading 4-byte blocks little-endian."
    m,n = 0x5BD1E995,len(data)
    h,end = (seed ^ n) & 0xFFFFFFFF,n & ~3
    for (k,) in struct.iter_unpack('<I', data[:end]):
        k = (k * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    if n & 3: h = ((h ^ int.from_bytes(data[end:], 'little')) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)

@functools.cache
def tmp_prefix():
    "The folder of this kernel's cell files, with a trailing separator (tempfile loads only when a cell first needs it)."
    import tempfile
    # named as ipykernel names it: JupyterLab shows a source as `Cell [n]` only if its path contains `ipykernel_`
    return os.path.join(tempfile.gettempdir(), f'ipykernel_{os.getpid()}') + os.sep

@functools.cache
def make_tmp_dir():
    "Create the cell folder once, and remove it when the kernel exits."
    import shutil
    os.makedirs(tmp_prefix(), mode=0o700, exist_ok=True)
    atexit.register(shutil.rmtree, tmp_prefix(), ignore_errors=True)

@functools.lru_cache(maxsize=512)
def cell_path(code: str) -> str:
    "The file a cell's code is compiled under and dumped to: the path front ends compute from debugInfo."
    return f"{tmp_prefix()}{murmur2(code.encode('utf-8', 'surrogatepass'), HASH_SEED)}{TMP_SUFFIX}"  # a lone surrogate must not fail a cell

def hide_thread(t):
    "Keep debugpy out of a kernel thread: no tracing (sys.settrace), no sys.monitoring events, never suspended or listed."
    t.pydev_do_not_trace = t.is_pydev_daemon_thread = True

class DAPClient:
    "One Debug Adapter Protocol connection: `send` a request, `wait` for its response; events go to `on_event`, responses to `on_response` too."
    def __init__(self, host, port, on_event, on_response=None):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.settimeout(None)
        self.on_event,self.on_response,self.lock,self.seqs = on_event,on_response,threading.Lock(),itertools.count(1)
        self.waiting,self.closed = {},False
        t = threading.Thread(target=self._read, name='ipymini-debugpy', daemon=True)
        hide_thread(t)
        # in an empty context, not the debug_request's: its events belong to no request, so they go out under the default parent
        # (the latest execute), as ipykernel's go out under its latest shell request
        contextvars.Context().run(t.start)

    def send(self, command, arguments=None, answer=True):
        "Send a request; returns its seq, for `wait` (with `answer=False` its response is dropped)."
        seq = next(self.seqs)
        if answer: self.waiting[seq] = [threading.Event(), None]
        body = json.dumps(dict(seq=seq, type='request', command=command, arguments=arguments or {})).encode()
        with self.lock:
            try: self.sock.sendall(b'Content-Length: %d\r\n\r\n' % len(body) + body)
            except OSError: self.closed = True
        return seq

    def wait(self, seq, timeout=TIMEOUT):
        "The response to request `seq`; TimeoutError if debugpy says nothing in time, ConnectionError if it went away."
        slot = self.waiting[seq]
        ok = slot[0].wait(timeout)
        self.waiting.pop(seq, None)
        if slot[1] is not None: return slot[1]
        if not ok: raise TimeoutError(f"debugpy did not answer within {timeout:g} s")
        raise ConnectionError("the connection to debugpy is closed")

    def request(self, command, arguments=None, timeout=TIMEOUT): return self.wait(self.send(command, arguments), timeout)

    def _read(self):
        buf = bytearray()
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data: break
                buf += data
                while (i := buf.find(b'\r\n\r\n')) >= 0:
                    hdrs = dict(l.split(b':', 1) for l in bytes(buf[:i]).split(b'\r\n') if b':' in l)
                    n = int(hdrs.get(b'Content-Length', 0))
                    if len(buf) < i + 4 + n: break
                    body = bytes(buf[i+4:i+4+n])
                    del buf[:i+4+n]
                    self._dispatch(json.loads(body))
        except (OSError, ValueError) as e: log.warning("debugpy connection: %s", e)
        finally:
            self.closed = True
            for ev,_ in list(self.waiting.values()): ev.set()

    def _dispatch(self, msg):
        kind = msg.get('type')
        handler = self.on_event if kind == 'event' else self.on_response if kind == 'response' else None
        if handler:
            try: handler(msg)
            except Exception: log.exception("error handling debug %s %s", kind, msg.get('event') or msg.get('command'))
        if kind == 'response' and (slot := self.waiting.get(msg.get('request_seq'))): slot[1] = msg; slot[0].set()

    def close(self):
        self.closed = True
        try: self.sock.shutdown(socket.SHUT_RDWR)
        except OSError: pass
        self.sock.close()
