"""The floor `tools/bench.py` compares against: a Python process that answers the Jupyter wire protocol with pyzmq and no IPython.

    python tools/floor_kernel.py -f CONNECTION_FILE

One thread, one poller. It signs and checks every message as a kernel must, answers `kernel_info_request`, runs
`execute_request` code with plain `exec` (stdout sent as stream messages: a write goes out at once when nothing went
out in the last 10 ms, else with the next one after that), answers `complete_request` with no matches,
`shutdown_request` by exiting, and sends busy and idle around every request. No history, display, completion,
interrupts, comms or stdin: what is left is the cost of the protocol itself, which no Python kernel can go below.
"""
import hashlib, hmac, io, json, sys, time, traceback, uuid
from datetime import datetime, timezone
import zmq

DELIM = b"<IDS|MSG>"
FLUSH_S = 0.01

def dumps(o): return json.dumps(o, separators=(",", ":")).encode()

class Floor:
    def __init__(self, cfg):
        self.key,self.session,self.count,self.ns = cfg["key"].encode(),uuid.uuid4().hex,0,{"__name__": "__main__"}
        self.ctx = zmq.Context()
        url = lambda name: f"{cfg['transport']}://{cfg['ip']}:{cfg[name]}"
        self.shell,self.control,self.stdin = (self.ctx.socket(zmq.ROUTER) for _ in range(3))
        self.iopub,self.hb = self.ctx.socket(zmq.PUB),self.ctx.socket(zmq.REP)
        for s,name in [(self.shell, "shell_port"), (self.control, "control_port"), (self.stdin, "stdin_port"), (self.iopub, "iopub_port"),
                       (self.hb, "hb_port")]:
            s.setsockopt(zmq.LINGER, 0)
            # before bind, where libzmq reads it: a benchmark client reads everything, so nothing is ever dropped (a ROUTER
            # drops replies past its HWM of 1,000 silently, which a burst of 1,000 pipelined executes reaches)
            s.setsockopt(zmq.SNDHWM, 0)
            s.bind(url(name))

    def sign(self, parts):
        h = hmac.new(self.key, digestmod=hashlib.sha256)
        for p in parts: h.update(p)
        return h.hexdigest().encode()

    def send(self, sock, msg_type, content, parent, idents=()):
        hdr = dict(msg_id=uuid.uuid4().hex, msg_type=msg_type, session=self.session, username="floor", version="5.4",
                   date=datetime.now(timezone.utc).isoformat())
        parts = [dumps(hdr), dumps(parent.get("header", {})), b"{}", dumps(content)]
        sock.send_multipart([*idents, DELIM, self.sign(parts), *parts])

    def recv(self, sock):
        "(idents, message dict), or None for a message whose signature does not hold."
        frames = sock.recv_multipart()
        i = frames.index(DELIM)
        sig,parts = frames[i+1],frames[i+2:i+6]
        if not hmac.compare_digest(sig, self.sign(parts)): return None
        return frames[:i],dict(zip(("header", "parent_header", "metadata", "content"), map(json.loads, parts)))

    def run(self):
        poller = zmq.Poller()
        for s in (self.shell, self.control, self.hb): poller.register(s, zmq.POLLIN)
        while True:
            for sock,_ in poller.poll():
                if sock is self.hb: self.hb.send(self.hb.recv()); continue
                got = self.recv(sock)
                if got is None: continue
                idents,msg = got
                self.send(self.iopub, "status", dict(execution_state="busy"), msg)
                stop = self.handle(sock, idents, msg)
                self.send(self.iopub, "status", dict(execution_state="idle"), msg)
                if stop: return

    def handle(self, sock, idents, msg):
        "Answer one request; True when the kernel is to exit."
        t,c = msg["header"]["msg_type"],msg["content"]
        reply = lambda rt, content: self.send(sock, rt, content, msg, idents)
        if t == "kernel_info_request":
            reply("kernel_info_reply", dict(status="ok", protocol_version="5.4", implementation="floor", implementation_version="0", banner="",
                language_info=dict(name="python", version=sys.version.split()[0], mimetype="text/x-python", file_extension=".py")))
        elif t == "execute_request": reply("execute_reply", self.execute(c.get("code", ""), msg))
        elif t == "complete_request":
            pos = c.get("cursor_pos", 0)
            reply("complete_reply", dict(status="ok", matches=[], cursor_start=pos, cursor_end=pos, metadata={}))
        elif t == "shutdown_request":
            reply("shutdown_reply", dict(status="ok", restart=bool(c.get("restart"))))
            return True

    def execute(self, code, msg):
        "Run `code` with stdout sent as it is written; the execute_reply's content."
        self.count += 1
        out = Stdout(lambda text: self.send(self.iopub, "stream", dict(name="stdout", text=text), msg))
        old,sys.stdout = sys.stdout,out
        try: exec(compile(code, f"<cell {self.count}>", "exec"), self.ns)
        except Exception as e:
            tb = traceback.format_exception(e)
            return dict(status="error", execution_count=self.count, ename=type(e).__name__, evalue=str(e), traceback=tb)
        finally: sys.stdout = old; out.flush()
        return dict(status="ok", execution_count=self.count, user_expressions={}, payload=[])

class Stdout(io.TextIOBase):
    "Text written goes out through `send`: at once after a quiet spell of FLUSH_S, else batched until FLUSH_S has passed."
    def __init__(self, send): self.send,self.parts,self.last = send,[],0.
    def writable(self): return True
    def write(self, s):
        self.parts.append(s)
        if time.monotonic() - self.last >= FLUSH_S: self.flush()
        return len(s)
    def flush(self):
        if self.parts: self.send("".join(self.parts)); self.parts.clear()
        self.last = time.monotonic()

if __name__ == "__main__":
    with open(sys.argv[sys.argv.index("-f") + 1]) as f: Floor(json.load(f)).run()
