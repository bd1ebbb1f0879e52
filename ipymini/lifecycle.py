"""The kernel process's life: its own process group, a clean stop on SIGTERM or when its launcher dies, the user's
child processes ended with it, and thread stacks dumped on SIGUSR1."""
import faulthandler, logging, os, select, signal, threading, time

__all__ = ['setup', 'dump_stacks', 'lead_process_group', 'watch_parent', 'children', 'end_children']
log = logging.getLogger('ipymini')

# the process's stderr as it was at start: output capture may later point fd 2 at a pipe into IOPub, but a stack dump
# is for whoever runs the kernel, and must work when nothing in Python does
try: ERR_FD = os.dup(2)
except OSError: ERR_FD = None

def setup(kernel, fault_fd=None):
    """Install the signal handlers (main thread only) and the launcher watch; called by `Kernel.start`, after `Interrupts.install`.
    `fault_fd`: where a crash's stacks go.

    Linux delivers a process's signal to any of its threads, and Python runs the handler only once the main thread runs bytecode:
    a kernel idle in select() could sleep through a SIGTERM caught by another thread. So SIGTERM and SIGUSR1 are handled by the
    interrupt relay's thread (it reads the signal wakeup pipe), and by the main thread's handler too where there is no relay."""
    lead_process_group()
    if threading.current_thread() is threading.main_thread():
        ints = kernel.interrupts
        ints.relayed[signal.SIGTERM] = kernel.request_stop  # as often as it comes: request_stop acts once
        signal.signal(signal.SIGTERM, lambda signum, frame: kernel.request_stop())
        if hasattr(signal, 'SIGUSR1') and ERR_FD is not None:
            ints.relayed[signal.SIGUSR1] = dump_stacks
            signal.signal(signal.SIGUSR1, lambda signum, frame: ints.relays() or dump_stacks())
    # a crash in C code still leaves every thread's stack on stderr (through the crash watcher when there is one: see crash.py)
    if (fd := fault_fd or ERR_FD) is not None: faulthandler.enable(file=fd, all_threads=True)
    watch_parent(kernel.request_stop)

def dump_stacks():
    """Every thread's stack to the stderr the kernel started with (SIGUSR1). Called from Python, holding the GIL, so no thread's frames
    change while they are read (faulthandler's own signal handler reads them as they run, and can crash the process)."""
    os.write(ERR_FD, b"[ipymini] the stack of every thread:\n")
    faulthandler.dump_traceback(file=ERR_FD, all_threads=True)
    os.write(ERR_FD, b"[ipymini] end of the stacks\n")

def lead_process_group():
    "Lead a process group of our own (jupyter_client starts us in a new session; by hand we may not be), so the user's children can be found and ended with us."
    if os.name != 'posix': return
    try:
        if os.getpgid(0) != os.getpid(): os.setpgid(0, 0)
    except OSError as e: log.info("cannot lead a process group: %s", e)

def _parent_gone(pid, ppid):
    if os.getppid() != ppid: return True  # reparented: whoever started us is gone
    try: os.kill(pid, 0)
    except ProcessLookupError: return True
    except PermissionError: pass
    return False

def _watch(pid, on_gone):
    ppid = os.getppid()
    try: fd = os.pidfd_open(pid)
    except ProcessLookupError: fd = -1
    except (AttributeError, OSError): fd = None
    if fd is not None and fd >= 0: select.select([fd], [], [])  # readable once the launcher has exited: no polling
    elif fd is None:
        while not _parent_gone(pid, ppid): time.sleep(1)
    log.warning("launcher (pid %d) is gone; shutting down", pid)
    on_gone()

def watch_parent(on_gone, pid=None):
    "When `JPY_PARENT_PID` names our launcher, call `on_gone()` (from a daemon thread) once that process has exited."
    try: pid = pid or int(os.environ.get('JPY_PARENT_PID') or 0)
    except ValueError: return log.warning("ignoring JPY_PARENT_PID=%r: not a process id", os.environ['JPY_PARENT_PID'])
    if pid <= 1 or os.name != 'posix': return
    threading.Thread(target=_watch, args=(pid, on_gone), name='ipymini-parent-watch', daemon=True).start()

def _procs():
    "pid -> (state, ppid, pgid) of every process, from /proc; None where there is no /proc."
    if not os.path.isdir('/proc/self'): return None
    out = {}
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try:
            with open(f'/proc/{d}/stat', 'rb') as f: st = f.read()
        except OSError: continue
        f = st[st.rindex(b')') + 2:].split()  # the command name in parentheses may hold spaces
        out[int(d)] = (f[0], int(f[1]), int(f[2]))
    return out

def children(spare=()):
    "Live processes to end with the kernel: its descendants and the other members of the process group it leads, but `spare` (None: unknown)."
    procs,me = _procs(),os.getpid()
    if procs is None: return None
    kids = {p for p,(_,_,pg) in procs.items() if pg == me and p != me and p not in spare}
    by_parent = {}
    for p,(_,pp,_) in procs.items(): by_parent.setdefault(pp, []).append(p)
    todo = [me]
    while todo:
        for c in by_parent.get(todo.pop(), ()):
            if c not in kids: todo.append(c)
            kids.add(c)
    return {p for p in kids if procs[p][0] != b'Z'}

def _signal(pids, sig):
    for p in pids:
        try: os.kill(p, sig)
        except OSError: pass

def _reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0]: pass
    except ChildProcessError: pass

def end_children(grace=1.0, spare=()):
    "SIGTERM the user's child processes (not the pids in `spare`), then SIGKILL those still there after `grace` seconds."
    if os.name != 'posix': return
    kids = children(spare)
    if kids is None:  # no /proc: the process group is what we can reach
        if os.getpgid(0) != os.getpid(): return
        old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try: os.killpg(0, signal.SIGTERM)
        finally: signal.signal(signal.SIGTERM, old)
        return
    if not kids: return
    log.info("ending %d child processes: %s", len(kids), sorted(kids))
    _signal(kids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap()
        alive = children(spare)
        kids &= alive if alive is not None else kids
        if not kids: return
        time.sleep(0.02)
    _signal(kids, signal.SIGKILL)
    _reap()
