"""Socket-owning threads: each ZMQ socket is read and written by one thread; other threads hand it frames."""
import asyncio, contextlib, ctypes, os, threading, logging
from collections import deque
import zmq

__all__ = ['Outbox', 'Channel', 'Loop', 'defer_wakes', 'wake_deferred', 'send_frames', 'recv_frames', 'bind', 'BindError']
log = logging.getLogger('ipymini')

# write(2) that keeps the GIL: os.write releases it, and the thread just woken then takes it, so a sender waited for the GIL
# at every wake-up (a tenth of a millisecond, several times per execute). One byte into a non-blocking pipe never blocks;
# a full pipe (EAGAIN) means a wake-up is pending already.
try: _write = ctypes.PyDLL(None).write
except (OSError, AttributeError): _write = None  # no C library to call: os.write

def write_byte(fd):
    if _write is None: os.write(fd, b'.')
    else: _write(fd, b'.', 1)

# pyzmq's send_multipart and recv_multipart check and pass keywords on every frame, in Python: for the kernel's messages of
# a few small frames that is most of the cost of a send. The backend's send and recv are the same calls without it.
_send,_recv,_get = zmq.backend.Socket.send,zmq.backend.Socket.recv,zmq.backend.Socket.get
MORE = zmq.SNDMORE

def send_frames(sock, frames, flags=0):
    "`sock.send_multipart(frames, flags)` for a list of bytes-like frames."
    more = flags | MORE
    for f in frames[:-1]: _send(sock, f, more)
    _send(sock, frames[-1], flags)

def recv_frames(sock, flags=0):
    "`sock.recv_multipart(flags)`."
    frames = [_recv(sock, flags)]
    while _get(sock, zmq.RCVMORE): frames.append(_recv(sock, flags))
    return frames

class BindError(Exception): "A socket that cannot be bound as the connection info says, told in one line."

def bind(sock, cfg, port):
    "Bind `sock` to connection info `cfg`'s `port` (a CurveZMQ server where it has keys); returns the port bound (chosen when 0)."
    transport,ip,n = cfg.get('transport', 'tcp'),cfg.get('ip', '127.0.0.1'),cfg.get(port, 0)
    if transport not in ('tcp', 'ipc'): raise BindError(f"unsupported transport {transport!r}: use tcp or ipc")
    if cfg.get('curve_secretkey'):  # CurveZMQ: every socket a server with the key pair the launcher wrote
        try:
            sock.curve_secretkey,sock.curve_publickey = cfg['curve_secretkey'].encode(),cfg['curve_publickey'].encode()
            sock.curve_server = True
        except (zmq.ZMQError, KeyError, AttributeError) as e: raise BindError(f"bad CurveZMQ keys in the connection file: {e}") from None
    try:
        if transport == 'ipc':
            if not n: n = next(i for i in range(1, 65536) if not os.path.exists(f"{ip}-{i}"))
            sock.bind(f"ipc://{ip}-{n}")
        elif n: sock.bind(f"tcp://{ip}:{n}")
        else: n = sock.bind_to_random_port(f"tcp://{ip}")
    except zmq.ZMQError as e: raise BindError(f"cannot bind {port} {n} on {transport}://{ip}: {e.strerror}") from None
    return n

class _Deferred(threading.local): fds = None  # while a thread defers its wake-ups: the fds to write to when it stops
_deferred = _Deferred()

def wake_fd(fd):
    "Wake the thread that polls `fd`: now, or when this thread stops deferring (see `defer_wakes`)."
    fds = _deferred.fds
    if fds is None: write_byte(fd)
    elif fd not in fds: fds.append(fd)

def defer_wakes():
    """Until `wake_deferred`, hold this thread's wake-ups of other threads. A thread woken while this one still runs wants the
    GIL at once and waits for it, and the GIL then passes back and forth between cores; woken when this one is done (just
    before it blocks), it finds the GIL free. Hold them only over short stretches of the kernel's own code."""
    if _deferred.fds is None: _deferred.fds = []

def wake_deferred():
    fds,_deferred.fds = _deferred.fds,None
    for fd in fds or ():
        with contextlib.suppress(OSError): write_byte(fd)

class Loop(asyncio.SelectorEventLoop):
    "An asyncio loop whose wake-up from another thread (`call_soon_threadsafe`) keeps that thread's GIL: see `write_byte`."
    def _write_to_self(self):
        csock = self._csock
        if csock is None: return
        with contextlib.suppress(OSError): wake_fd(csock.fileno())

class Outbox:
    "Frames queued by any thread for the thread that owns a socket; a pipe wakes that thread's poller."
    def __init__(self):
        self.q,self.signalled = deque(),False
        self.rfd,self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)

    def wake(self):
        # one byte per sleep, not per message: each write can hand the GIL to the woken thread
        if self.signalled: return
        self.signalled = True
        try: wake_fd(self.wfd)
        except BlockingIOError: pass

    def put(self, frames):
        self.q.append(frames)
        self.wake()

    def clear_wake(self):
        "Called by the owner before it drains the queue: read the pipe empty first, then re-arm, so no wake-up is lost."
        try: os.read(self.rfd, 65536)
        except BlockingIOError: pass
        self.signalled = False

    def close(self):
        for fd in (self.rfd, self.wfd): os.close(fd)

class Channel(threading.Thread):
    "A thread that owns `sock`: it sends what the outbox holds and hands each incoming frame list to `on_recv`."
    def __init__(self, name, sock, on_recv, on_wake=None, defers=False):
        super().__init__(name=f"ipymini-{name}", daemon=True)
        self.sock,self.on_recv,self.on_wake,self.defers = sock,on_recv,on_wake,defers
        self.outbox,self.running,self.timeout = Outbox(),True,None

    def send(self, frames):
        "Send `frames` on this channel's socket from any thread, keeping the order of earlier sends."
        if threading.get_ident() == self.ident and not self.outbox.q: return self._send(frames)
        self.outbox.put(frames)

    def _send(self, frames):
        try: send_frames(self.sock, frames)
        except zmq.ZMQError as e: log.warning("%s: send failed: %s", self.name, e)

    def call(self, fn):
        "Run `fn()` on this channel's thread, after the messages it has already received."
        self.outbox.put(fn)

    def flush(self):
        q = self.outbox.q
        while q:
            item = q.popleft()
            if not callable(item): self._send(item)
            else:
                try: item()
                except Exception: log.exception("%s: error in a scheduled call", self.name)

    def stop(self):
        self.running = False
        self.outbox.wake()

    def run(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.outbox.rfd, zmq.POLLIN)
        while self.running:
            try: events = dict(poller.poll(self.timeout))
            except zmq.ZMQError:
                if self.running: raise  # not a stop: the thread dies, and the kernel with it (`Kernel.on_thread_death`)
                break
            if self.outbox.rfd in events: self.outbox.clear_wake()
            if self.on_wake: self.on_wake()
            if self.defers: defer_wakes()  # e.g. the shell thread wakes the main thread once it is done with what came in
            try:
                if self.sock in events:
                    for _ in range(1000):  # a burst costs one poll, and a flood cannot starve the outbox
                        try:
                            if not _get(self.sock, zmq.EVENTS) & zmq.POLLIN: break  # asking is cheaper than a failed recv's exception
                            frames = recv_frames(self.sock, zmq.NOBLOCK)
                        except zmq.Again: break
                        except zmq.ZMQError:
                            if self.running: raise
                            return
                        try: self.on_recv(frames)
                        except Exception: log.exception("%s: error handling a message", self.name)
                self.flush()
            finally: wake_deferred()
        self.flush()
