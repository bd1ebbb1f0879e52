"""The Jupyter wire format: framing, HMAC signing and verification, and message headers."""
import hashlib, hmac, itertools, json, os, uuid, base64
from collections import deque
from datetime import datetime, timezone, date
from .env import env_float

__all__ = ['DELIM', 'PROTOCOL_VERSION', 'WireError', 'Wire', 'dumps', 'error_content', 'now_iso', 'new_id']

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.5"
MAX_FRAME = int(env_float("IPYMINI_MAX_MESSAGE_BYTES", 256 * 2**20, minimum=1))

class WireError(ValueError):
    "A message that cannot be accepted; `reply` says whether the sender can still be told why."
    def __init__(self, msg, ename="BadMessage", header=None, idents=None):
        super().__init__(msg)
        self.ename,self.header,self.idents = ename,header,idents

def _default(o):
    "JSON fallback for the values user code hands to display and user_expressions."
    if isinstance(o, (datetime, date)): return o.isoformat()
    if isinstance(o, (bytes, bytearray, memoryview)): return base64.b64encode(bytes(o)).decode()
    if isinstance(o, (set, frozenset, tuple)): return list(o)
    if hasattr(o, 'tolist'): return o.tolist()
    return repr(o)

# built once: json.dumps with options builds an encoder per call, and every message has four JSON parts
_encode = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(',', ':')).encode
_encode_ascii = json.JSONEncoder(default=_default, separators=(',', ':')).encode

def dumps(o) -> bytes:
    "Compact UTF-8 JSON, never failing on odd user values."
    try: return _encode(o).encode()
    # a lone surrogate (e.g. an escape a client sent, or a decoded file name) has no UTF-8 form: escape it as JSON does
    except UnicodeEncodeError: return _encode_ascii(o).encode()

def error_content(ename, evalue):
    "The content of an error reply that names its problem (the traceback is that one line)."
    return dict(status='error', ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])

def now_iso(): return datetime.now(timezone.utc).isoformat()
def new_id(): return uuid.uuid4().hex

_counter = itertools.count()
def _next_msg_id(session):
    # unique like a uuid4 (the session is one), without a urandom syscall per message: each syscall can hand away the GIL
    return f"{session}_{os.getpid()}_{next(_counter)}"

def _loads(b, what):
    # decode first: json.loads(bytes) would guess UTF-16/32 from zero bytes, and the wire is UTF-8 only
    try: o = json.loads(b.decode())
    except UnicodeDecodeError: raise WireError(f"{what} is not valid UTF-8") from None
    except ValueError as e: raise WireError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(o, dict): raise WireError(f"{what} must be a JSON object, not {type(o).__name__}")
    return o

class Wire:
    "Signs, frames and parses messages for one kernel session (key and scheme from the connection file)."
    def __init__(self, key=b"", scheme="hmac-sha256", username="kernel", history=2**16):
        if isinstance(key, str): key = key.encode()
        if not scheme.startswith("hmac-"): raise ValueError(f"unsupported signature_scheme {scheme!r}")
        algo = scheme[5:]
        if algo not in hashlib.algorithms_available: raise ValueError(f"unsupported signature_scheme {scheme!r}")
        # keyed once here: each message then costs a copy, not a key schedule
        self.hmac = hmac.new(key, digestmod=algo) if key else None
        try: self.hmac and self.hmac.copy().hexdigest()
        except (TypeError, ValueError): raise ValueError(f"unsupported signature_scheme {scheme!r}") from None
        self.key,self.username,self.session = key,username,new_id()
        # a new header's JSON with its fixed fields encoded once (msg_id, msg_type and date are filled in): see `header_json`
        self.header_template = ('{"msg_id":"%s","msg_type":%s,"username":' + _encode(username).replace('%', '%%') +
                                ',"session":"' + self.session + '","date":"%s","version":"' + PROTOCOL_VERSION + '"}')
        self.seen,self.seen_order,self.history = set(),deque(),history

    def sign(self, parts) -> bytes:
        "Hex HMAC of the four JSON frames; empty when the connection has no key."
        if not self.key: return b""
        h = self.hmac.copy()
        for p in parts: h.update(p)
        return h.hexdigest().encode()

    def header(self, msg_type, msg_id=None):
        return dict(msg_id=msg_id or _next_msg_id(self.session), msg_type=msg_type, username=self.username, session=self.session,
                    date=now_iso(), version=PROTOCOL_VERSION)

    def header_json(self, msg_type):
        "The JSON of `header(msg_type)`, from the template: every message sent has one, and encoding a dict costs more."
        t = f'"{msg_type}"' if msg_type.isidentifier() else _encode(msg_type)
        return (self.header_template % (_next_msg_id(self.session), t, now_iso())).encode()

    def serialize(self, msg_type, content=None, parent=None, metadata=None, idents=(), buffers=(), header=None):
        "Frames for a message; `parent` is a parsed message (its raw header bytes are reused) or a header dict or None."
        h = dumps(header) if header else self.header_json(msg_type)
        if parent is None: p = b"{}"
        elif 'raw_header' in parent: p = parent['raw_header']
        elif 'header' in parent: p = dumps(parent['header'])
        else: p = dumps(parent)
        parts = [h, p, dumps(metadata) if metadata else b"{}", dumps({} if content is None else content)]
        return [*idents, DELIM, self.sign(parts), *parts, *buffers]

    def _check_replay(self, sig):
        if sig in self.seen: raise WireError("replayed message signature", ename="ReplayedMessage")
        self.seen.add(sig)
        self.seen_order.append(sig)
        if len(self.seen_order) > self.history: self.seen.discard(self.seen_order.popleft())

    def deserialize(self, frames):
        "Parse and verify `frames` into a message dict with `idents`, `raw_header` and `buffers`; raise WireError."
        try: i = frames.index(DELIM)
        except ValueError: raise WireError("missing <IDS|MSG> delimiter") from None
        idents,rest = frames[:i],frames[i+1:]
        if len(rest) < 5: raise WireError(f"too few frames: {len(rest)} after the delimiter, 5 needed", idents=idents)
        sig,parts,buffers = rest[0],rest[1:5],rest[5:]
        # nothing is parsed before the signature holds: an unsigned message is never answered, let alone run
        if self.key:
            if not hmac.compare_digest(sig, self.sign(parts)): raise WireError("invalid message signature", ename="InvalidSignature")
            self._check_replay(sig)
        header = _loads(parts[0], "header")
        if not isinstance(header.get('msg_type'), str) or not isinstance(header.get('msg_id', ''), str):
            raise WireError("header needs string msg_type and msg_id", idents=idents)
        if sum(map(len, rest)) > MAX_FRAME: raise WireError(f"message larger than {MAX_FRAME} bytes", ename="MessageTooLarge", header=header, idents=idents)
        msg = dict(idents=idents, header=header, raw_header=parts[0], buffers=buffers)
        try:
            msg['parent_header'] = _loads(parts[1], "parent_header")
            msg['metadata'] = _loads(parts[2], "metadata")
            msg['content'] = _loads(parts[3], "content")
        except WireError as e:
            e.header,e.idents = header,idents
            raise
        msg['msg_id'],msg['msg_type'] = header.get('msg_id', ''),header['msg_type']
        return msg
