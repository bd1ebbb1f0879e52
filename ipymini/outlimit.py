"""Runaway output: past `IPYMINI_OUTPUT_LIMIT_MB` of one request's stream (stdout or stderr), the front end gets no more stream
text for it. The whole text goes to a file instead, and one display, updated at most every `UPDATE_S` and at the request's
idle, shows how much was held back, the file, and the last lines. Nothing is lost, and a browser never has to lay out
millions of lines. Runs on whichever thread flushes IOPub, under `IOPub.lock`."""
import json, os, time, uuid, logging
from .env import env_float

__all__ = ['OutputLimit']
log = logging.getLogger('ipymini')

UPDATE_S = 0.25  # the overflow display's update rate while text keeps coming
KEEP_DAYS = 7  # overflow files older than this are removed when a new one is made
TRACKED = 1024  # requests whose counts are kept at once (a thread printing to an ended cell starts one again)

def output_dir():
    "Where overflow files go: `ipymini-output` in Jupyter's runtime dir, which belongs to the user."
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        base = jupyter_runtime_dir()
    except Exception: base = os.path.join(os.path.expanduser('~'), '.local', 'share', 'jupyter', 'runtime')
    return os.path.join(base, 'ipymini-output')

class Overflow:
    "One request's stream past the limit: its file, the characters held back, the tail shown, the display showing it."
    __slots__ = ('name', 'path', 'file', 'held', 'tail', 'display_id', 'shown', 'shown_at', 'dirty', 'parent')

class OutputLimit:
    "Per request and stream: characters published so far (with the texts, until the limit, so the file can start at the top)."
    def __init__(self, iopub, limit=None):
        self.iopub = iopub
        self.mb = env_float('IPYMINI_OUTPUT_LIMIT_MB', 4.) if limit is None else limit / 2**20
        self.limit = int(self.mb * 2**20)
        self.tail_len = min(max(self.limit // 4, 1), 1 << 15)
        self.sent = {}  # (raw parent header, stream name) -> [characters, texts]
        self.over = {}  # the same keys -> Overflow
        self.due = None  # monotonic time of the next pending display update, for the IOPub thread's timeout

    def take(self, parent, name, text):
        "The part of `text` to publish as stream text; the rest is held back (written to the request's file)."
        key = (parent.get('raw_header') if parent else None, name)
        o = self.over.get(key)
        if o is not None:
            self._hold(o, text)
            return ''
        s = self.sent.get(key)
        if s is None:
            if len(self.sent) >= TRACKED: del self.sent[next(iter(self.sent))]
            s = self.sent[key] = [0, []]
        room = self.limit - s[0]
        if len(text) <= room:
            s[0] += len(text)
            s[1].append(text)
            return text
        head,rest = text[:room],text[room:]
        cut = head.rfind('\n') + 1  # end the head at a line's end when there is one
        if cut: head,rest = head[:cut],head[cut:] + rest
        s[1].append(head)
        self._start(key, parent, name, s[1])
        del self.sent[key]
        if head: self.iopub.send_stream_locked(parent, name, head)  # the head, then the display that follows it
        self._hold(self.over[key], rest)
        return ''

    def _start(self, key, parent, name, texts):
        o = self.over[key] = Overflow()
        d = output_dir()
        msg_id = json.loads(parent['raw_header']).get('msg_id', '') if parent and 'raw_header' in parent else ''
        o.path = os.path.join(d, f"{time.strftime('%Y%m%d-%H%M%S')}-{str(msg_id)[:36] or uuid.uuid4()}-{name}.txt")
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            _remove_old(d)
            o.file = open(o.path, 'w', encoding='utf-8', errors='surrogateescape')
            o.file.writelines(texts)
        except OSError as e:
            log.warning("cannot write held-back output to %s: %s", o.path, e)
            o.file,o.path = None,None
        o.name,o.held,o.tail,o.display_id,o.shown,o.shown_at,o.dirty,o.parent = name,0,'',uuid.uuid4().hex,False,None,True,parent

    def _hold(self, o, text):
        if o.file is not None:
            try: o.file.write(text)
            except OSError as e:
                log.warning("cannot write held-back output to %s: %s", o.path, e)
                o.file = None
        o.held += len(text)
        o.tail = (o.tail + text)[-self.tail_len:]
        o.dirty = True
        now = time.monotonic()
        if o.shown_at is None or now - o.shown_at >= UPDATE_S: self._show(o, now)
        elif self.due is None:
            self.due = o.shown_at + UPDATE_S
            self.iopub.channel.outbox.wake()  # the IOPub thread sets its timeout for it

    def _show(self, o, now=None):
        o.shown_at,o.dirty = now or time.monotonic(),False
        where = f"the whole text is in {o.path}" if o.path else "it could not be written to a file (see the kernel's log)"
        tail = o.tail
        nl = tail.find('\n')
        if len(tail) == self.tail_len and 0 <= nl < len(tail) - 1: tail = tail[nl + 1:]  # start the tail at a line
        note = (f"[ipymini: {o.held:,} more characters of {o.name} held back past {self.mb:g} MB of output "
                f"(IPYMINI_OUTPUT_LIMIT_MB); {where}. The last lines:]\n")
        content = dict(data={'text/plain': note + tail}, metadata={}, transient=dict(display_id=o.display_id))
        self.iopub.publish_locked('update_display_data' if o.shown else 'display_data', content, o.parent)
        o.shown = True

    def on_timeout(self):
        "The IOPub thread's timeout: show what arrived since the last update."
        self.due = None
        for o in self.over.values():
            if o.dirty: self._show(o)

    def finish(self, parent):
        "The request is idle: the last update of its displays, its files closed, its counts forgotten."
        raw = parent.get('raw_header') if parent else None
        for name in ('stdout', 'stderr'):
            self.sent.pop((raw, name), None)
            o = self.over.pop((raw, name), None)
            if o is None: continue
            if o.file is not None: o.file.close()
            if o.dirty: self._show(o)

def _remove_old(d):
    cutoff = time.time() - KEEP_DAYS * 86400
    with os.scandir(d) as it:
        for e in it:
            try:
                if e.name.endswith('.txt') and e.stat().st_mtime < cutoff: os.unlink(e.path)
            except OSError: pass
