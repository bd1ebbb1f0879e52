"""Crash reports: a kernel that dies without stopping (a segfault in C code, `os.abort()`, a fatal signal, the out-of-memory
killer) tells each cell it was running why, before it is gone.

`start` forks a small watcher before the kernel binds its sockets. The watcher waits on the kernel's pidfd (no polling); the
kernel's only work is writing to memory they share: its connection info once bound, and the headers of the running cells
around each execute. faulthandler writes a fatal error's stacks to a memory file the watcher also holds. When the kernel ends
without the stop flag set, the watcher reads its exit status from /proc, binds the IOPub port the kernel held, and sends each
running cell an `error` naming the signal (with the cell's Python stack) and then its `idle`; it copies the report to stderr
and exits, and the front end's restarter finds the kernel dead as it would without it. `IPYMINI_CRASH_REPORT=0` turns it off."""
import json, logging, mmap, os, re, select, signal, struct, sys, threading
from .memlimit import memory_cgroups

__all__ = ['start', 'setup', 'watcher_pid', 'fault_fd', 'stopped', 'exit_report', 'parse_faults']
log = logging.getLogger('ipymini')

SUBSCRIBE_WAIT = 1.0  # seconds the watcher waits for a front end to resubscribe: the restarter may soon bind the port again
# the shared page: stop flag, current cells slot, watcher pid; then the connection info; then two slots for the running cells,
# written alternately so the watcher never reads half of one
HEAD,CFG,SLOT = 16,1 << 14,1 << 16
# what the watcher ignores: a launcher's killpg (interrupt, stop), a closed terminal, are for the kernel; SIGKILL still ends it
IGNORED = [getattr(signal, s) for s in ('SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGPIPE') if hasattr(signal, s)]
SIZE = HEAD + CFG + 2 * SLOT

class _Shared:
    "What the kernel and its watcher share: the page (`mm`), the faulthandler file (`fd`), the running cells' raw headers."
    def __init__(self, mm, fd): self.mm,self.fd,self.cells,self.lock = mm,fd,{},threading.Lock()

    def put(self, off, data, room):
        if len(data) > room - 4: return False
        self.mm[off + 4:off + 4 + len(data)] = data
        self.mm[off:off + 4] = struct.pack('I', len(data))
        return True

    def get(self, off):
        n, = struct.unpack('I', self.mm[off:off + 4])
        return self.mm[off + 4:off + 4 + n] if n else None

    def write_cells(self):
        "The running cells' headers as a JSON list, into the slot not current, which then becomes current."
        raws,slot = list(self.cells.values()),1 - self.mm[1]
        while not self.put(HEAD + CFG + slot * SLOT, b'[' + b','.join(raws) + b']', SLOT): raws.pop()  # too many: the first ones
        self.mm[1] = slot

    def read_cells(self):
        data = self.get(HEAD + CFG + self.mm[1] * SLOT)
        try: return json.loads(data) if data else []
        except ValueError: return []

_shared = None

def watcher_pid_of(sh): return struct.unpack('i', sh.mm[4:8])[0]

def watcher_pid():
    "The watcher's pid (None when there is none): it is not one of the user's child processes to end with the kernel."
    return watcher_pid_of(_shared) if _shared else None

def fault_fd():
    "The file faulthandler writes a fatal error's stacks to, for the watcher to send on (None: no watcher)."
    return _shared.fd if _shared else None

def stopped():
    "The kernel is ending on its own (a shutdown, a stop after a vital thread died): nothing for the watcher to report."
    if _shared: _shared.mm[0] = 1

def _enabled():
    if os.environ.get('IPYMINI_CRASH_REPORT', '1').strip().lower() in ('0', 'off', 'no', 'false'): return False
    return os.name == 'posix' and all(hasattr(os, n) for n in ('pidfd_open', 'memfd_create', 'fork')) and os.path.isdir('/proc/self')

def start():
    "Fork the watcher (Linux); called before the kernel's sockets and threads exist, so the fork copies no thread or socket."
    global _shared
    if not _enabled(): return
    from .lifecycle import lead_process_group
    lead_process_group()  # first, so the watcher is in the group a launcher's killpg reaches
    try: sh = _Shared(mmap.mmap(-1, SIZE), os.memfd_create('ipymini-faults', os.MFD_CLOEXEC))
    except OSError as e: return log.info("no crash reports: %s", e)
    # the kernel's cgroup now: a process that has ended shows none, so its count is read at the death from this file
    kernel,path = os.getpid(),oom_file(os.getpid())
    oom = path,oom_kills(path)
    for f in (sys.stdout, sys.stderr): f.flush()  # else the forked processes would write what is buffered again
    try: pid = os.fork()
    except OSError as e: return log.info("no crash reports: cannot fork the watcher: %s", e)
    if pid == 0:  # the watcher is a grandchild: never the kernel's child, so the user's os.wait() in a cell does not wait on it
        try:
            if (w := os.fork()) == 0: _watch(sh, kernel, oom)
            sh.mm[4:8] = struct.pack('i', w)
        finally: os._exit(0)
    os.waitpid(pid, 0)
    if watcher_pid_of(sh): _shared = sh

def setup(kernel):
    "The kernel's side, once its sockets are bound: the connection info for the watcher, and the running cells around each execute."
    if not _shared: return
    if not _shared.put(HEAD, json.dumps(kernel.cfg).encode(), CFG): return log.warning("no crash reports: the connection info is too long")
    def running(msg):
        with _shared.lock:
            _shared.cells[msg['header']['msg_id']] = msg['raw_header']
            _shared.write_cells()
    def ended(msg):
        with _shared.lock:
            _shared.cells.pop(msg['header']['msg_id'], None)
            _shared.write_cells()
    kernel.before_execute.append(running)
    kernel.after_execute.append(ended)

# ---- the watcher ----
def _watch(sh, kernel, oom):
    "The watcher's life: wait for the kernel to end; report if it died. Runs in the forked process and never returns."
    try:
        for sig in IGNORED: signal.signal(sig, signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1): os.dup2(null, fd)  # stdout: a launcher reading it until EOF is not kept waiting
        try:
            with open('/proc/self/comm', 'w') as f: f.write('ipymini-watch')
        except OSError: pass
        try: pfd = os.pidfd_open(kernel)
        except ProcessLookupError: pfd = None
        if pfd is not None: select.select([pfd], [], [])  # readable once the kernel has ended
        if sh.mm[0] or not sh.get(HEAD): return  # it stopped on its own, or never served
        faults = _read_all(sh.fd)
        report = exit_report(exit_status(kernel), oom_kills(oom[0]) > oom[1], parse_faults(faults))
        # stderr first, whole: the launcher's log keeps the report even when a killpg cuts the watcher short
        tb = '\n'.join([report['traceback'][0], *(['', faults.strip('\n')] if faults.strip() else []), report['traceback'][-1]])
        os.write(2, ('[ipymini] ' + re.sub(r'\x1b\[[0-9;]*m', '', tb) + '\n').encode(errors='replace'))
        _publish(json.loads(sh.get(HEAD)), sh.read_cells(), report)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally: os._exit(0)

def _read_all(fd):
    out,off = [],0
    while (b := os.pread(fd, 1 << 16, off)):
        out.append(b)
        off += len(b)
    return b''.join(out).decode(errors='replace')

def exit_status(pid):
    "(exit code, signal number) of ended process `pid`, read while it waits to be reaped; None once it is gone."
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f: st = f.read()
    except OSError: return None
    code = int(st[st.rindex(b')') + 2:].split()[-1])  # the last field is the wait status (the name in parentheses may hold spaces)
    return (code >> 8) & 0xff, code & 0x7f

def oom_file(pid):
    "The memory cgroup file of process `pid` that counts out-of-memory kills (v2 `memory.events`, v1 `memory.oom_control`), or None."
    for d,_,is2 in memory_cgroups(f'/proc/{pid}'):
        if os.path.exists(p := os.path.join(d, 'memory.events' if is2 else 'memory.oom_control')): return p
    return None

def oom_kills(path):
    "How many processes the out-of-memory killer ended in the cgroup of `path` (a file from `oom_file`); 0 when unknown."
    try:
        with open(path) as f: return next((int(l.split()[1]) for l in f if l.startswith('oom_kill ')), 0)
    except (OSError, TypeError, ValueError): return 0

def parse_faults(text):
    """faulthandler's report, shortened to its first line and the current thread's stack down to the cell's code (the frames below
    are IPython's and the kernel's, the other threads the kernel's)."""
    lines = text.strip('\n').splitlines()
    if not lines: return []
    i = next((i for i,l in enumerate(lines) if l.startswith('Current thread')), None)
    if i is None: return lines[:1]
    frames = [l for l in lines[i+1:] if l.startswith('  File')]
    inner = next((j for j,l in enumerate(frames) if any(f'{os.sep}{d}{os.sep}' in l for d in ('IPython', 'ipymini'))), len(frames))
    return [lines[0], '', lines[i], *frames[:inner or len(frames)]]

def exit_report(status, oom=False, faults=()):
    "The `error` content for the cells of a kernel that ended with `status` ((code, signal) or None)."
    code,sig = status or (None, None)
    if sig:
        try: name = signal.Signals(sig).name
        except ValueError: name = f'signal {sig}'
        desc = signal.strsignal(sig)
        what = f"{name} ({desc})" if desc and not desc.startswith('Unknown') else name
        if oom and sig == signal.SIGKILL: cause = f"killed by the out-of-memory killer ({name}): its memory cgroup reached its limit"
        else: cause = f"killed by {what}"
    elif code is not None: cause = f"exited with status {code}"
    else: cause = "ended"
    evalue = f"the kernel process was {cause}" if sig else f"the kernel process {cause}"
    tb = [f"\x1b[0;31mThe kernel died while this ran: {evalue}.\x1b[0m", *(['', *faults] if faults else []),
          '', "The front end restarts it as for any dead kernel; variables are lost.", f"\x1b[0;31mKernelDied\x1b[0m: {evalue}"]
    return dict(ename='KernelDied', evalue=evalue, traceback=tb)

def _publish(cfg, cells, report):
    "Bind the kernel's IOPub port and send each running cell (or, with none, no parent) the report and an idle."
    import zmq
    from .wire import Wire
    from .channels import bind
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.linger = 1000
    try:
        bind(sock, cfg, 'iopub_port')
        if sock.poll(SUBSCRIBE_WAIT * 1000):  # a front end's SUB reconnects (every 100 ms) once it sees the kernel's socket gone
            sock.recv()
            while sock.poll(50): sock.recv()  # others reconnecting at the same moment
        wire = Wire(cfg.get('key', ''), cfg.get('signature_scheme', 'hmac-sha256'))
        for parent in cells or [None]:
            sock.send_multipart(wire.serialize('error', report, parent, idents=(b'error',)))
            sock.send_multipart(wire.serialize('status', dict(execution_state='idle'), parent, idents=(b'status',)))
    finally:
        sock.close()
        ctx.term()
