"""Side-by-side benchmark of ipymini, ipykernel and the protocol floor (`tools/floor_kernel.py`).

    python tools/bench.py                          # all three kernels, 5 rounds (~2 minutes on 2 cores)
    python tools/bench.py --quick                  # one round, fewer samples: a smoke run
    python tools/bench.py --only ipymini,ipykernel --rounds 3
    python tools/bench.py --json results.json      # also dump every sample (`--json` alone prints JSON to stdout)
    python tools/bench.py --base main              # also ipymini as it is at a git revision: is a change worse than noise?

Run it with the test environment of README (`.venv/bin/python tools/bench.py`): it needs ipykernel, psutil and jupyter_client.

Each round starts every selected kernel afresh (same Python, its own connection file and process group), in an order
that rotates from round to round so machine noise hits all kernels alike, and runs every figure on it before the next.
The client is a lean one written here (raw zmq sockets, HMAC-signed JSON frames, no Session machinery), the same for all
kernels; every measurement waits on the messages themselves (reply parent ids, status idle), never on a sleep.
Medians over all rounds are printed with the ratios ipymini/ipykernel and ipymini/floor and the targets ipymini set itself.
With `--base REV` a fourth kernel, `base`, is ipymini's package as it is at git revision REV (extracted into the temp dir
and run by the same Python), measured in the same rounds, with the ratio ipymini/base: a change's cost, under the same noise.
A kernel that fails to start or dies costs at most a timeout: its figures read "n/a" and the reason is listed.
"""
import argparse, atexit, hashlib, hmac, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time, uuid
from datetime import datetime, timezone
from pathlib import Path
import psutil, zmq
from jupyter_client.connect import write_connection_file

REPO   = Path(__file__).resolve().parent.parent
DELIM  = b"<IDS|MSG>"
KINDS  = ("ipymini", "ipykernel", "floor")
BASE   = "base"  # ipymini at another git revision, with --base
STREAM_CODE, STREAM_N = "for i in range(200000): print(i)", 200000
EXPECTED = "".join(f"{i}\n" for i in range(STREAM_N))
COMPLETE_CODE = "import os; os.pa"
FIRST_CODE = "print('a'); time.sleep(2)"
POLL_MS = 200  # how often a wait with nothing arriving checks that the kernel is still alive

class BenchError(Exception): "A kernel failed, died or timed out."

def now_iso(): return datetime.now(timezone.utc).isoformat()
def dumps(o): return json.dumps(o, separators=(",", ":")).encode()
def median(xs): return statistics.median(xs) if xs else None

class Wire:
    "Just enough of the Jupyter wire protocol for a client: signed JSON frames, no date parsing, no Session object."
    def __init__(self, key:bytes): self.key,self.session = key,uuid.uuid4().hex
    def sign(self, parts):
        h = hmac.new(self.key, digestmod=hashlib.sha256)
        for p in parts: h.update(p)
        return h.hexdigest().encode()
    def send(self, sock, msg_type, content):
        "Send a request on `sock`; return its msg_id."
        msg_id = uuid.uuid4().hex
        hdr = dict(msg_id=msg_id, msg_type=msg_type, username="bench", session=self.session, date=now_iso(), version="5.4")
        parts = [dumps(hdr), b"{}", b"{}", dumps(content)]
        sock.send_multipart([DELIM, self.sign(parts), *parts])
        return msg_id
    def recv(self, sock):
        "One message from `sock` as (msg_type, parent msg_id, content); a bad signature is an error, not a dropped message."
        frames = sock.recv_multipart()
        i = frames.index(DELIM)
        sig, parts = frames[i+1], frames[i+2:i+6]
        if not hmac.compare_digest(sig, self.sign(parts)): raise BenchError("kernel sent a message with a bad signature")
        hdr, parent, _, content = map(json.loads, parts)
        return hdr["msg_type"], parent.get("msg_id"), content

class Kernel:
    "One kernel process plus a lean client on its shell, control and IOPub channels."
    def __init__(self, kind, argv, tmp:Path, timeout=30.):
        self.kind = kind
        self.cf, cfg = write_connection_file(str(tmp/f"{kind}-{uuid.uuid4().hex[:8]}.json"), ip="127.0.0.1",
            key=uuid.uuid4().hex.encode(), kernel_name=kind)
        self.wire = Wire(cfg["key"].encode())
        self.ctx = zmq.Context()
        self.shell, self.control, self.iopub = self.ctx.socket(zmq.DEALER), self.ctx.socket(zmq.DEALER), self.ctx.socket(zmq.SUB)
        for sock, port in [(self.shell, "shell_port"), (self.control, "control_port"), (self.iopub, "iopub_port")]:
            # unbounded queues: 1,000 pipelined requests make 3,000 IOPub messages, and a full PUB queue drops silently
            for opt, v in [(zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0), (zmq.RECONNECT_IVL, 2)]: sock.setsockopt(opt, v)
            sock.connect(f"tcp://127.0.0.1:{cfg[port]}")
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.poller = zmq.Poller()
        for sock in (self.shell, self.control, self.iopub): self.poller.register(sock, zmq.POLLIN)
        self.logf = tmp/f"{Path(self.cf).stem}.log"
        with open(self.logf, "wb") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen([*argv, "-f", self.cf], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=REPO, start_new_session=True)
        LIVE.append(self)
        try:
            # the request waits in the DEALER's queue until the kernel binds; 2 ms reconnects bound the error
            self.info = self.wait_reply(self.wire.send(self.shell, "kernel_info_request", {}), timeout)[1]
            self.start_s = time.perf_counter() - t0
            self.wait_iopub(t0 + timeout)
            self.rss_start = self.rss()
        except BaseException: self.kill(); raise

    def wait_iopub(self, deadline):
        "Send kernel_info until one comes back with its idle status on IOPub: then our subscription is live."
        while True:
            try: return self.until([self.wire.send(self.shell, "kernel_info_request", {})], 0.25)
            except TimeoutError:
                if time.perf_counter() > deadline: raise BenchError("no status messages on IOPub: subscription never live")

    def rss(self): return psutil.Process(self.proc.pid).memory_info().rss / 2**20  # MiB, the unit of the memory targets

    def tail(self, n=6):
        try: lines = self.logf.read_text(errors="replace").strip().splitlines()[-n:]
        except OSError: return ""
        return " | ".join(lines)

    def alive(self):
        rc = self.proc.poll()
        if rc is not None: raise BenchError(f"kernel exited with code {rc}: {self.tail()}")

    def read(self, deadline):
        "Yield (is_iopub, msg_type, parent msg_id, content, arrival time) until the deadline, checking the kernel is alive."
        while True:
            socks = self.poller.poll(POLL_MS)
            t = time.perf_counter()
            if t > deadline: raise TimeoutError("kernel alive but no answer before the timeout")
            if not socks: self.alive()
            for sock, _ in socks: yield (sock is self.iopub, *self.wire.recv(sock), t)

    def until(self, ids, timeout=10., on_iopub=None):
        "Read until every request in `ids` has its reply and its idle status; return {msg_id: (arrival time, reply content)}."
        want, replies, idle = set(ids), {}, set()
        left = 2*len(want)
        if not left: return replies
        try:
            for io, mt, pid, content, t in self.read(time.perf_counter() + timeout):
                if pid not in want: continue
                if not io:
                    if pid not in replies: replies[pid], left = (t, content), left-1
                elif mt == "status" and content.get("execution_state") == "idle":
                    if pid not in idle: idle.add(pid); left -= 1
                elif on_iopub: on_iopub(mt, content, t)
                if not left: return replies
        except TimeoutError:
            n = len(want)
            raise TimeoutError(f"after {timeout:g} s, {n-len(replies)} of {n} replies and {n-len(idle)} of {n} idle statuses missing") from None

    def wait_reply(self, msg_id, timeout):
        "Read until the reply to `msg_id` (IOPub is read and dropped meanwhile); return (arrival time, content)."
        for io, mt, pid, content, t in self.read(time.perf_counter() + timeout):
            if not io and pid == msg_id: return t, content

    def execute(self, code, **kw):
        return self.wire.send(self.shell, "execute_request",
            dict(code=code, silent=False, store_history=True, user_expressions={}, allow_stdin=False, stop_on_error=True, **kw))

    def run(self, code, timeout=10., on_iopub=None):
        "Execute `code` and wait for its reply and idle; return the reply content."
        msg_id = self.execute(code)
        return self.until([msg_id], timeout, on_iopub)[msg_id][1]

    def shutdown(self):
        "Ask politely on control, then kill the process group whatever the answer."
        try:
            if self.proc.poll() is None:
                self.wait_reply(self.wire.send(self.control, "shutdown_request", dict(restart=False)), 3)
                self.proc.wait(3)
        except Exception: pass
        self.kill()

    def kill(self):
        if self.proc.poll() is None:
            try: os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError): pass
            try: self.proc.wait(5)
            except subprocess.TimeoutExpired: pass
        self.ctx.destroy(linger=0)
        if self in LIVE: LIVE.remove(self)

LIVE = []
def cleanup(tmp):
    "Kill every kernel still running, then remove the connection files and logs."
    for k in list(LIVE): k.kill()
    shutil.rmtree(tmp, ignore_errors=True)

# ---- figures: each takes a started kernel and returns a number (or records several) ----

def fig_rtt(k, n):
    "`pass` execute: request sent -> execute_reply and idle both received, in ms."
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        k.run("pass")
        out.append((time.perf_counter() - t0) * 1e3)
    return out

def fig_pipelined(k, n):
    "Executes per second with `n` requests sent at once, until the last reply and idle."
    t0 = time.perf_counter()
    ids = [k.execute("pass") for _ in range(n)]
    k.until(ids, 120)
    return n / (time.perf_counter() - t0)

def fig_stream(k):
    "200k print lines: (MB/s delivered, stream message count, every byte arrived in order)."
    parts = []
    def on(mt, c, t):
        if mt == "stream" and c.get("name") == "stdout": parts.append(c["text"])
    t0 = time.perf_counter()
    k.run(STREAM_CODE, 120, on)
    dt = time.perf_counter() - t0
    text = "".join(parts)
    return len(text.encode()) / dt / 1e6, len(parts), text == EXPECTED

def fig_first_output(k):
    "ms from execute sent to the first stream message of a cell that prints then sleeps 2 s."
    first = []
    def on(mt, c, t):
        if mt == "stream" and not first: first.append(t)
    t0 = time.perf_counter()
    k.run(FIRST_CODE, 15, on)
    if not first: raise BenchError("no stream message from print('a')")
    return (first[0] - t0) * 1e3

def fig_complete(k, n):
    "complete_request for `os.pa` -> complete_reply, in ms (idle is awaited before the next request, untimed)."
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        msg_id = k.wire.send(k.shell, "complete_request", dict(code=COMPLETE_CODE, cursor_pos=len(COMPLETE_CODE)))
        out.append((k.until([msg_id])[msg_id][0] - t0) * 1e3)
    return out

def fig_interrupt(k):
    "ms from SIGINT to the KeyboardInterrupt (error on IOPub or error reply) of a running `while True: pass`."
    msg_id = k.execute("while True: pass")
    for io, mt, pid, c, t in k.read(time.perf_counter() + 10):
        if io and pid == msg_id and mt in ("execute_input", "status"): break
    # not part of the figure: lets the loop get past the kernel's own code, so the signal lands in user code
    time.sleep(0.2)
    first = []
    def on(mt, c, t):
        if mt == "error" and not first: first.append(t)
    t0 = time.perf_counter()
    os.kill(k.proc.pid, signal.SIGINT)
    t_reply, reply = k.until([msg_id], 5, on)[msg_id]
    if reply.get("ename") != "KeyboardInterrupt": raise BenchError(f"interrupt gave {reply.get('status')} {reply.get('ename')}")
    return (min([t_reply, *first]) - t0) * 1e3

# ---- table ----

# key, label, target text, target test (None: no target), format
FIGS = [
    ("rtt",       "`pass` execute, reply+idle, median (ms)",  "≤ 1.0",   lambda v: v <= 1.0,  "{:.2f}"),
    ("pipelined", "pipelined executes per second",            "≥ 2,500", lambda v: v >= 2500, "{:,.0f}"),
    ("stream",    "200k print lines, MB/s delivered",         "≥ 8",     lambda v: v >= 8,    "{:.2f}"),
    ("nstream",   "  stream messages for them",               "≤ 100",   lambda v: v <= 100,  "{:,.0f}"),
    ("intact",    "  every byte arrived, in order",           "ok",      lambda v: v == 1,    None),
    ("first",     "first output visible (ms)",                "≤ 50",    lambda v: v <= 50,   "{:.1f}"),
    ("start",     "start to first kernel_info_reply (s)",     "≤ 0.30",  lambda v: v <= 0.30, "{:.3f}"),
    ("complete",  "complete_request `os.pa`, median (ms)",    "",        None,                "{:.2f}"),
    ("rss_start", "resident memory after start (MiB)",        "≤ 45",    lambda v: v <= 45,   "{:.1f}"),
    ("rss_stream","resident memory after stream test (MiB)",  "",        None,                "{:.1f}"),
    ("interrupt", "interrupt `while True: pass`, median (ms)","",        None,                "{:.1f}"),
]

def summary(res, kind, key):
    "Median of a figure's samples over all rounds; for `intact`, 1 only if every round was intact."
    xs = res.get(kind, {}).get(key, [])
    if not xs: return None
    return float(all(xs)) if key == "intact" else median(xs)

def fmt(key, fmt_, v):
    if v is None: return "n/a"
    if key == "intact": return "ok" if v == 1 else "LOST"
    return fmt_.format(v)

def table(res, kinds):
    "The results as a plain-text table, one figure a row; the base columns only when `base` ran."
    cols = [*KINDS, BASE] if BASE in kinds else list(KINDS)
    hdr = ["figure", *cols, *(f"ipymini/{k}" for k in cols[1:]), "target", "ipymini meets"]
    rows = []
    for key, label, target, ok, f in FIGS:
        vals = {k: summary(res, k, key) for k in cols}
        cells = [fmt(key, f, vals[k]) if k in kinds else "-" for k in cols]
        def ratio(other):
            a, b = vals["ipymini"], vals[other]
            if key == "intact" or a is None or b in (None, 0): return "-"
            return f"{a/b:.2f}x"
        meets = "-" if ok is None or vals["ipymini"] is None else ("yes" if ok(vals["ipymini"]) else "NO")
        rows.append([label, *cells, *map(ratio, cols[1:]), target or "-", meets])
    w = [max(len(r[i]) for r in [hdr, *rows]) for i in range(len(hdr))]
    line = lambda r: "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
    return "\n".join([line(hdr), line(["-"*x for x in w]), *map(line, rows)])

# ---- driver ----

def argv_for(kind, base_dir=None):
    if kind == BASE:  # the extracted package first on sys.path, ahead of the installed one, and checked to be what runs
        run = (f"import runpy, sys; sys.path.insert(0, {str(base_dir)!r}); import ipymini; "
               f"assert ipymini.__file__.startswith({str(base_dir)!r}), ipymini.__file__; runpy.run_module('ipymini', run_name='__main__')")
        return [sys.executable, "-c", run]
    return dict(ipymini=[sys.executable, "-m", "ipymini"], ipykernel=[sys.executable, "-m", "ipykernel_launcher"],
        floor=[sys.executable, str(REPO/"tools"/"floor_kernel.py")])[kind]

def extract_base(rev, tmp:Path):
    "ipymini's package as it is at git revision `rev`, written under `tmp`; returns (its dir, the short commit)."
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, check=True).stdout
    try: commit = git("rev-parse", "--short", f"{rev}^{{commit}}").decode().strip()
    except (OSError, subprocess.CalledProcessError) as e: raise SystemExit(f"--base {rev}: not a git revision of {REPO} ({e})")
    d = tmp/f"base-{commit}"
    d.mkdir()
    subprocess.run(["tar", "-x", "-C", str(d)], input=git("archive", "--format=tar", commit, "ipymini"), check=True)
    return d, commit

def bench_one(kind, argv, tmp, cfg, res, errors, rnd, names):
    "Start one kernel and run every figure on it; a failure ends this kernel's round and is recorded, never raised."
    r = res.setdefault(kind, {})
    add = lambda key, v: r.setdefault(key, []).extend(v if isinstance(v, list) else [v])
    step = "start"
    try:
        k = Kernel(kind, argv, tmp, cfg.start_timeout)
    except Exception as e:
        errors.append(dict(kernel=kind, round=rnd, figure=step, error=str(e) or type(e).__name__))
        return False
    # what answered, from kernel_info: a stale install answering for ipymini would show here
    names[kind] = f"{k.info.get('implementation', '?')} {k.info.get('implementation_version', '?')}"
    try:
        add("start", k.start_s)
        add("rss_start", k.rss_start)
        step = "warm-up"
        for _ in range(cfg.warmup): k.run("pass")
        k.until([k.wire.send(k.shell, "complete_request", dict(code=COMPLETE_CODE, cursor_pos=len(COMPLETE_CODE)))], 30)
        step = "rtt"; add("rtt", fig_rtt(k, cfg.n_rtt))
        step = "complete"; add("complete", fig_complete(k, cfg.n_complete))
        step = "pipelined"; add("pipelined", fig_pipelined(k, cfg.n_pipelined))
        step = "stream"
        mbs, n, intact = fig_stream(k)
        add("stream", mbs); add("nstream", n); add("intact", intact)
        add("rss_stream", k.rss())
        step = "first"
        k.run("import time")
        add("first", fig_first_output(k))
        if kind != "floor":  # the floor has no SIGINT handling: the signal would just kill it
            step = "interrupt"; add("interrupt", [fig_interrupt(k) for _ in range(cfg.n_interrupt)])
    except Exception as e:
        msg = str(e) or type(e).__name__
        if k.proc.poll() is None and not isinstance(e, BenchError) and k.tail(3): msg += f" (log: {k.tail(3)})"
        errors.append(dict(kernel=kind, round=rnd, figure=step, error=msg))
    finally: k.shutdown()
    return True

def main(args=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, help="rounds of all kernels (default 5, 1 with --quick)")
    p.add_argument("--only", default=",".join(KINDS), help="comma-separated kernels to run, from: " + ", ".join(KINDS))
    p.add_argument("--quick", action="store_true", help="one round and fewer samples: a smoke run")
    p.add_argument("--base", metavar="REV", help="also run ipymini as it is at git revision REV (kernel `base`), with the ratio ipymini/base")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", help="also dump all samples as JSON to PATH (stdout if no PATH)")
    p.add_argument("--start-timeout", type=float, default=30., help="seconds a kernel gets to answer its first kernel_info")
    a = p.parse_args(args)
    kinds = [k.strip() for k in a.only.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS and k != BASE]
    if bad or not kinds: p.error(f"unknown kernel {', '.join(bad)}: choose from {', '.join(KINDS)} (and {BASE} with --base)")
    if a.base and BASE not in kinds: kinds.append(BASE)
    if BASE in kinds and not a.base: p.error(f"kernel {BASE} needs --base REV")
    rounds = a.rounds or (1 if a.quick else 5)
    # the first interrupt of a process also pays for importing the traceback machinery: 3 a round, the median reported
    cfg = argparse.Namespace(start_timeout=a.start_timeout, warmup=20, n_pipelined=1000, n_interrupt=3,
        n_rtt=100 if a.quick else max(60, -(-300 // rounds)), n_complete=20 if a.quick else max(20, -(-100 // rounds)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so atexit still kills the kernels
    tmp = Path(tempfile.mkdtemp(prefix="ipymini-bench-"))
    atexit.register(cleanup, tmp)
    base_dir, base_commit = extract_base(a.base, tmp) if a.base else (None, None)
    res, errors, given_up, names = {}, [], set(), {}
    t_all = time.perf_counter()
    for rnd in range(rounds):
        order = kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]
        for kind in order:
            if kind in given_up: continue
            print(f"round {rnd+1}/{rounds}: {kind}", file=sys.stderr, flush=True)
            # a kernel that cannot even start will not start next round either: don't pay its timeout again
            if not bench_one(kind, argv_for(kind, base_dir), tmp, cfg, res, errors, rnd+1, names): given_up.add(kind)
    took = time.perf_counter() - t_all
    print(f"\n{rounds} round(s) in {took:.0f} s; Python {sys.version.split()[0]} on {os.cpu_count()} cores; "
          f"medians of {rounds*cfg.n_rtt} round trips, {rounds*cfg.n_complete} completions, {rounds*cfg.n_interrupt} interrupts, "
          f"{rounds} of the rest")
    if base_commit and BASE in names: names[BASE] += f" at {base_commit}"
    print("kernels: " + ", ".join(f"{k} = {names.get(k, 'did not start')}" for k in kinds) + "\n")
    print(table(res, kinds))
    print("\nratios are ipymini's figure over the other's: below 1 is better for times and memory, above 1 for rates.")
    if errors:
        print("\nfailures:")
        for e in errors: print(f"  {e['kernel']} round {e['round']} at {e['figure']}: {e['error']}")
    if a.json:
        out = dict(rounds=rounds, seconds=took, python=sys.version.split()[0], kernels=names, errors=errors,
            medians={k: {key: summary(res, k, key) for key, *_ in FIGS} for k in kinds}, samples=res)
        text = json.dumps(out, indent=1)
        if a.json == "-": print(text)
        else: Path(a.json).write_text(text + "\n")
    return 1 if errors else 0

if __name__ == "__main__":
    try: sys.exit(main())
    except KeyboardInterrupt: sys.exit(130)
