"""IOPub: one writer thread on an XPUB socket; stream text batched for a few milliseconds, never reordered."""
import os, threading, time, logging
import zmq
from .channels import Channel

__all__ = ['IOPub']
log = logging.getLogger('ipymini')

FLUSH_DELAY = float(os.environ.get("IPYMINI_STREAM_FLUSH_MS", "10")) / 1000
MAX_PENDING = 1 << 20  # stream characters held before the writer flushes them itself

class IOPub:
    "Publish on IOPub from any thread. Pending stream text always goes out before any later message."
    def __init__(self, sock, wire):
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber gets its own welcome
        self.wire,self.lock = wire,threading.Lock()
        self.pending,self.size,self.deadline = [],0,None
        self.channel = Channel('iopub', sock, self._on_subscribe, self._on_wake)

    def start(self): self.channel.start()

    def send(self, msg_type, content, parent=None, metadata=None, buffers=(), header=None):
        "Publish one message, after any stream text written before it."
        topic = msg_type.encode()
        with self.lock:
            if self.pending: self._flush_locked()
            self.channel.send(self.wire.serialize(msg_type, content, parent, metadata, (topic,), buffers, header))

    def stream(self, name, text, parent):
        "Buffer `text` for stream `name`; it is published within FLUSH_DELAY, coalesced with its neighbours."
        with self.lock:
            last = self.pending[-1] if self.pending else None
            if last and last[0] is parent and last[1] == name: last[2].append(text)
            else: self.pending.append((parent, name, [text]))
            self.size += len(text)
            if self.size > MAX_PENDING: return self._flush_locked()
            if self.deadline is None:
                self.deadline = time.monotonic() + FLUSH_DELAY
                self.channel.outbox.wake()

    def flush(self):
        "Publish pending stream text now."
        with self.lock: self._flush_locked()

    def _flush_locked(self):
        for parent,name,texts in self.pending:
            self.channel.send(self.wire.serialize('stream', dict(name=name, text=''.join(texts)), parent, idents=(b'stream.' + name.encode(),)))
        self.pending,self.size,self.deadline = [],0,None

    def _on_wake(self):
        "On the IOPub thread after every poll: flush stream text whose delay ran out, else sleep until it does."
        d = self.deadline
        if d is None: self.channel.timeout = None; return
        left = d - time.monotonic()
        if left > 0: self.channel.timeout = max(1, int(left * 1000 + 0.5)); return
        self.channel.timeout = None
        self.flush()

    def _on_subscribe(self, frames):
        "XPUB hands us subscriptions: answer each new one with `iopub_welcome` (JEP 65)."
        for f in frames:
            if f[:1] == b'\x01': self.send('iopub_welcome', dict(subscription=f[1:].decode('utf-8', 'replace')))

    def stop(self):
        self.flush()
        self.channel.stop()
