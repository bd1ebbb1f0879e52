"""IOPub: one writer thread on an XPUB socket; stream text batched for a few milliseconds, never reordered.

Flow control: the socket never drops on its own (XPUB_NODROP) and queues at most HWM messages per subscriber. When a
subscriber is that far behind, messages wait in `Publisher.held`, in order; once `BUFFER` bytes of output wait there,
further output (stream, display) is dropped and a note says so, but status and every other message are kept. A
subscriber that takes nothing for `STALL` seconds is left behind: what waits is sent to the others without it."""
import threading, time, logging
from itertools import groupby
from collections import deque
import zmq
from .channels import Channel, send_frames
from .env import env_float
from .outlimit import OutputLimit

__all__ = ['IOPub', 'Publisher', 'Sink', 'BIG_WRITE']
log = logging.getLogger('ipymini')

FLUSH_DELAY = env_float("IPYMINI_STREAM_FLUSH_MS", 10.) / 1000
BIG_WRITE = 1 << 16  # characters: a write this large is published at once, by the writer
HWM = int(env_float("IPYMINI_IOPUB_HWM", 128, minimum=1))  # messages libzmq queues per subscriber
BUFFER = int(env_float("IPYMINI_IOPUB_BUFFER_MB", 32.) * 2**20)  # output bytes held beyond that before dropping
STALL = env_float("IPYMINI_IOPUB_STALL_S", 10.)  # seconds without progress before a subscriber is left behind
RETRY_MS = 2
DROPPABLE = {b'stream.stdout', b'stream.stderr', b'display_data', b'update_display_data'}  # topics of output, not state

class Publisher(Channel):
    "The IOPub channel: sends without blocking; what a slow subscriber cannot take yet waits, bounded, in `held`."
    def __init__(self, sock, wire, on_recv, on_wake):
        sock.setsockopt(zmq.XPUB_NODROP, 1)  # SNDHWM must be set before bind: Kernel._bind does it
        super().__init__('iopub', sock, on_recv, on_wake)
        self.wire,self.held,self.held_bytes,self.since,self.dropped = wire,deque(),0,0.,{}

    def _send(self, frames):
        if not self.held:
            try: return send_frames(self.sock, frames, zmq.NOBLOCK)
            except zmq.Again: self.since = time.monotonic()
            except zmq.ZMQError as e: return log.warning("iopub: send failed: %s", e)
        # the next poll must time out to retry: the wake hook set its timeout before this send, when nothing may have waited
        self.timeout = min(self.timeout or RETRY_MS, RETRY_MS)
        if frames[0] not in DROPPABLE:
            self._note_dropped()
            return self.held.append(frames)
        n = sum(map(len, frames))
        if self.held_bytes + n > BUFFER:
            p = frames[4]  # the parent header: the note goes to the same cell
            self.dropped[p] = self.dropped.get(p, 0) + n
            return
        self.held.append(frames)
        self.held_bytes += n

    def _note_dropped(self):
        "Tell each cell whose output was dropped, in its own stream, before anything that follows it."
        for p,n in self.dropped.items():
            text = f"\n[ipymini: {n} bytes of output dropped: the client did not read them fast enough]\n"
            self.held.append(self.wire.serialize('stream', dict(name='stderr', text=text), dict(raw_header=p), idents=(b'stream.stderr',)))
        if self.dropped: log.warning("iopub: dropped %d bytes of output for a slow subscriber", sum(self.dropped.values()))
        self.dropped = {}

    def retry(self):
        "On the IOPub thread: send what waits, as far as the subscribers take it."
        h = self.held
        while h:
            try: send_frames(self.sock, h[0], zmq.NOBLOCK)
            except zmq.Again: break
            except zmq.ZMQError as e: log.warning("iopub: send failed: %s", e)
            f = h.popleft()
            if f[0] in DROPPABLE: self.held_bytes -= sum(map(len, f))
            self.since = time.monotonic()
            if not h: self._note_dropped()
        if h and time.monotonic() - self.since > STALL: self._leave_behind()

    def _leave_behind(self):
        "A subscriber took nothing for STALL seconds: send what waits to the others, dropping it for the full ones."
        log.warning("iopub: a subscriber read nothing for %.0f s; sending %d waiting messages without it", STALL, len(self.held))
        self.sock.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self._note_dropped()
            while self.held: self._send_lossy(self.held.popleft())
        finally: self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.held_bytes = 0

    def _send_lossy(self, frames):
        try: send_frames(self.sock, frames, zmq.NOBLOCK)
        except zmq.ZMQError as e: log.warning("iopub: send failed: %s", e)

    def run(self):
        super().run()
        # stopping: give a slow subscriber a moment for the last messages (the shutdown's idle among them)
        deadline = time.monotonic() + 1
        while self.held and time.monotonic() < deadline:
            self.retry()
            if self.held: time.sleep(RETRY_MS / 1000)
        if self.held: self._leave_behind()

class Sink:
    "Text one parent wrote to one stream, not yet published: writers append to `texts`, flushes take from its front by count."
    __slots__ = ('parent', 'name', 'texts')
    def __init__(self, parent, name): self.parent,self.name,self.texts = parent,name,[]

class IOPub:
    """Publish on IOPub from any thread. Pending stream text always goes out before any later message.

    Stream writes take no lock (print() writes twice a line, and a lock per write halves throughput). A write appends its text to
    the `Sink` of its parent and stream, then that sink to `order`: each append is one atomic step under the GIL, and neither
    allocates (a tuple per write cost more than the rest of the write). The first write since a flush sets `armed` and wakes the
    IOPub thread. Flushes, under `lock`, take `order` by count and, for each run of one sink in it, that many texts from the
    sink's front: a text is always in its sink before its entry is in `order`, so a write that lands meanwhile stays whole for the
    next flush, and the runs keep the exact order of writes made one after another."""
    def __init__(self, sock, wire):
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber gets its own welcome
        self.wire,self.lock = wire,threading.Lock()
        self.order,self.armed,self.deadline = [],False,None  # order: the sink of every pending write, in write order
        self.sinks = {}  # stream name -> the sink `stream` wrote to last (OutStream keeps its own)
        self.channel = Publisher(sock, wire, self._on_subscribe, self._on_wake)
        self.limit = OutputLimit(self)  # a request's stream text past IPYMINI_OUTPUT_LIMIT_MB goes to a file
        if not self.limit.limit: self.limit = None

    def start(self): self.channel.start()

    def send(self, msg_type, content, parent=None, metadata=None, buffers=(), header=None):
        "Publish one message, after any stream text written before it."
        topic = msg_type.encode()
        with self.lock:
            if self.order: self._flush_locked()
            if self.limit and msg_type == 'status' and content.get('execution_state') == 'idle': self.limit.finish(parent)
            self.channel.send(self.wire.serialize(msg_type, content, parent, metadata, (topic,), buffers, header))

    def publish_locked(self, msg_type, content, parent):
        "Publish one message now; the caller holds `lock` (the output limit's display, from a flush)."
        self.channel.send(self.wire.serialize(msg_type, content, parent, None, (msg_type.encode(),)))

    def stream(self, name, text, parent):
        "Buffer `text` for stream `name`; it is published within FLUSH_DELAY, coalesced with its neighbours."
        sink = self.sinks.get(name)
        if sink is None or sink.parent is not parent: sink = self.sinks[name] = Sink(parent, name)
        self.write(sink, text)

    def write(self, sink, text):
        sink.texts.append(text)  # first the text, then its turn: see the class docstring
        self.order.append(sink)
        if len(text) > BIG_WRITE: self.flush()
        elif not self.armed: self.arm()

    def arm(self):
        "After the first write since the last flush: wake the IOPub thread, which sets the flush deadline."
        self.armed = True
        self.channel.outbox.wake()

    def flush(self):
        "Publish pending stream text now."
        with self.lock: self._flush_locked()

    def _flush_locked(self):
        self.armed,self.deadline = False,None  # before taking the text: a write after this point wakes the IOPub thread again
        order = self.order
        n = len(order)
        if not n: return
        taken = order[:n]
        del order[:n]
        first = taken[0]
        if taken.count(first) == n: return self._publish(first, n)  # the usual case, counted in C
        for sink,run in groupby(taken): self._publish(sink, len(list(run)))  # one message per run of one parent's stream

    def _publish(self, sink, n):
        "One stream message for the first `n` texts of `sink`."
        texts = sink.texts
        text = ''.join(texts[:n])
        del texts[:n]
        if self.limit:
            text = self.limit.take(sink.parent, sink.name, text)
            if not text: return
        self.send_stream_locked(sink.parent, sink.name, text)

    def send_stream_locked(self, parent, name, text):
        self.channel.send(self.wire.serialize('stream', dict(name=name, text=text), parent, idents=(b'stream.' + name.encode(),)))

    def _on_wake(self):
        "On the IOPub thread after every poll: retry what waits for a slow subscriber; flush stream text whose delay ran out."
        ch = self.channel
        if ch.held: ch.retry()
        self._set_timeout()
        if ch.held: ch.timeout = min(ch.timeout or RETRY_MS, RETRY_MS)

    def _set_timeout(self):
        if self.armed and self.deadline is None: self.deadline = time.monotonic() + FLUSH_DELAY
        d = self.deadline
        due = self.limit and self.limit.due
        if due:
            if due <= time.monotonic():
                with self.lock: self.limit.on_timeout()
                due = self.limit.due
            if due and (d is None or due < d): d = due
        if d is None: self.channel.timeout = None; return
        left = d - time.monotonic()
        if left > 0: self.channel.timeout = max(1, int(left * 1000 + 0.5)); return
        self.channel.timeout = None
        self.flush()

    def _on_subscribe(self, frames):
        "XPUB hands us subscriptions: answer each new one with `iopub_welcome` (JEP 65)."
        for f in frames:
            if f[:1] == b'\x01': self.send('iopub_welcome', dict(subscription=f[1:].decode('utf-8', 'replace')))
