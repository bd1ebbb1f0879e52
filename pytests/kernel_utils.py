"""Helpers for protocol tests: start ipymini through KernelManager and wait on exact messages."""
import os, signal, subprocess, sys, time, contextlib, fcntl, queue, socket, tempfile
import pytest
from jupyter_client.manager import KernelManager
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from ipymini.kernel import PORTS

TIMEOUT = float(os.environ.get('IPYMINI_TEST_TIMEOUT', 30))
KERNEL_NAME = os.environ.get('IPYMINI_TEST_KERNEL', 'ipymini')

# ---- a private home: no test writes the user's ~/.ipython, ~/.jupyter, ~/.local/share/jupyter or caches ----
USER_DIRS = ('.ipython', '.jupyter', '.local/share/jupyter', '.config/matplotlib', '.cache/matplotlib', '.config/ipython')

def private_home(root):
    "Environment that sends everything a kernel, a Jupyter server or a library writes for the user into `root`."
    d = dict(IPYTHONDIR='.ipython', JUPYTER_CONFIG_DIR='.jupyter', JUPYTER_DATA_DIR='.local/share/jupyter', JUPYTER_RUNTIME_DIR='.local/share/jupyter/runtime',
             MPLCONFIGDIR='.config/matplotlib', XDG_CONFIG_HOME='.config', XDG_CACHE_HOME='.cache', XDG_DATA_HOME='.local/share')
    return dict(HOME=str(root), **{k: os.path.join(root, v) for k,v in d.items()})

_home = {}
def use_private_home():
    """Point this process's environment, which every kernel, server and client it starts inherits, at a private home in a temp
    folder (once: later calls keep it); returns the real home."""
    if not _home:
        _home['real'] = os.path.expanduser('~')
        _home['private'] = tempfile.mkdtemp(prefix='ipymini-test-home-')
        os.environ.update(private_home(_home['private']))
    return _home['real']

def home_snapshot(home):
    "path -> (size, mtime) of every file and folder under the user folders of `home` that kernels and Jupyter write to."
    out = {}
    for d in USER_DIRS:
        top = os.path.join(home, d)
        for root,dirs,files in os.walk(top):
            for n in [root, *(os.path.join(root, f) for f in files)]:
                with contextlib.suppress(OSError):
                    st = os.lstat(n)
                    out[os.path.relpath(n, home)] = (st.st_size, st.st_mtime_ns)
    return out

def check_kernelspec():
    "The tests drive the installed kernelspec, as front ends do."
    try: return KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel: raise RuntimeError(f"kernelspec {KERNEL_NAME!r} not installed: run `python -m ipymini install --sys-prefix`") from None

# ---- ports no other process takes between their choice and the kernel's bind ----
PORT_COUNTER = '/tmp/ipymini-test-ports'  # one for every suite on the machine (each may have a TMPDIR of its own)

def ephemeral_low():
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f: return int(f.read().split()[0])
    except (OSError, ValueError, IndexError): return 32768

def bindable(port):
    with socket.socket() as s:
        try: s.bind(('127.0.0.1', port))
        except OSError: return False
    return True

def kernel_ports():
    """Ports for one kernel: {shell_port: ..., ...}. jupyter_client picks free ones in the ephemeral range, where the OS may hand one
    to an outgoing connection or to another process's pick before the kernel binds it ("Address already in use", under parallel
    suites). These come from below that range, in turn from a counter that every test process on the machine shares."""
    low = ephemeral_low()
    base = max(1024, low - 16384)
    span = low - base
    with open(PORT_COUNTER, 'a+') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        try: i = int(f.read() or 0)
        except ValueError: i = 0
        ports = []
        for _ in range(span):
            if len(ports) == len(PORTS): break
            port,i = base + i % span,i + 1
            if bindable(port): ports.append(port)
        f.seek(0)
        f.truncate()
        f.write(str(i % span))
    assert len(ports) == len(PORTS), f"no free ports in {base}-{low}"
    return dict(zip(PORTS, ports))

@contextlib.contextmanager
def start_kernel(env=None, cwd=None, kernel_name=None, **kw):
    "A running kernel (ipymini, or the kernelspec `kernel_name`, e.g. ipykernel's python3) and a ready client, shut down afterwards."
    if kernel_name is None: check_kernelspec()
    use_private_home()
    ports = kernel_ports()
    km = KernelManager(kernel_name=kernel_name or KERNEL_NAME, cache_ports=False, **ports)  # (its port cache would pick others)
    kenv = {**os.environ, **(env or {})}
    km.start_kernel(env=kenv, cwd=cwd, **kw)
    assert {p: km.get_connection_info()[p] for p in ports} == ports, "the kernel is not on the ports it was given"
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        yield km,kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

def dumps(log):
    "How many stack dumps (SIGUSR1) the kernel's log `log` holds."
    return log.read_text().count('[ipymini] end of the stacks')

def exit_status(p, log):
    """The kernel process `p`'s exit status, once it ends. One still running after TIMEOUT fails the test with its log `log`, and in
    that log every thread's stack (SIGUSR1), which shows where it is stuck."""
    try: return p.wait(TIMEOUT)
    except subprocess.TimeoutExpired: pass
    n,deadline = dumps(log),time.monotonic() + TIMEOUT
    p.send_signal(signal.SIGUSR1)
    while dumps(log) == n and time.monotonic() < deadline: time.sleep(0.05)
    raise AssertionError(f"kernel still running after {TIMEOUT:g} s; its log, with its threads' stacks:\n{log.read_text()}")

def parent_id(msg): return msg.get('parent_header', {}).get('msg_id')

def iopub_until_idle(kc, msg_id, timeout=TIMEOUT):
    "Every IOPub message parented to `msg_id`, up to and including its idle status."
    out,deadline = [],time.monotonic() + timeout
    while True:
        m = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if parent_id(m) != msg_id: continue
        out.append(m)
        if m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle': return out

def get_reply(kc, msg_id, channel='shell', timeout=TIMEOUT):
    "The reply to `msg_id` on `channel`, skipping replies to other requests."
    get,deadline = getattr(kc, f'get_{channel}_msg'),time.monotonic() + timeout
    while True:
        m = get(timeout=max(0.01, deadline - time.monotonic()))
        if parent_id(m) == msg_id: return m

def execute(kc, code, timeout=TIMEOUT, **kw):
    "Run `code`; returns (reply message, IOPub messages for it up to idle)."
    msg_id = kc.execute(code, **kw)
    reply = get_reply(kc, msg_id, timeout=timeout)
    return reply,iopub_until_idle(kc, msg_id, timeout=timeout)

def request(kc, msg_type, channel='shell', timeout=TIMEOUT, **content):
    "Send any request; returns (reply message, IOPub messages for it up to idle)."
    msg = kc.session.msg(msg_type, content)
    getattr(kc, f'{channel}_channel').send(msg)
    mid = msg['header']['msg_id']
    return get_reply(kc, mid, channel, timeout),iopub_until_idle(kc, mid, timeout)

def types(msgs): return [m['msg_type'] for m in msgs]
def outputs(msgs): return [m for m in msgs if m['msg_type'] not in ('status', 'execute_input')]
def stdout(msgs): return ''.join(m['content']['text'] for m in msgs if m['msg_type'] == 'stream' and m['content']['name'] == 'stdout')

def drain_iopub(kc, timeout=0.2):
    "Discard what IOPub holds (e.g. after a test that leaves messages behind)."
    with contextlib.suppress(queue.Empty):
        while True: kc.get_iopub_msg(timeout=timeout)

# ---- several requests in flight, and subshells (JEP 91) ----
def control(kc, msg_type, **content): return request(kc, msg_type, channel='control', **content)

def interrupt(kc):
    "Send interrupt_request and wait for its reply only: reading IOPub up to its idle would skip the interrupted cell's messages."
    req = kc.session.msg('interrupt_request', {})
    kc.control_channel.send(req)
    return get_reply(kc, req['header']['msg_id'], 'control')

def send(kc, sid, code=None, msg_type='execute_request', **content):
    "Send a shell request addressed to subshell `sid` (None: the parent); returns its msg_id."
    if msg_type == 'execute_request':
        content = dict(dict(code=code, silent=False, store_history=True, user_expressions={}, allow_stdin=False, stop_on_error=True), **content)
    msg = kc.session.msg(msg_type, content)
    if sid is not None: msg['header']['subshell_id'] = sid
    kc.shell_channel.send(msg)
    return msg['header']['msg_id']

def run(kc, sid, code, **kw):
    "Execute `code` on subshell `sid`; returns (reply, IOPub messages up to idle)."
    mid = send(kc, sid, code, **kw)
    return get_reply(kc, mid),iopub_until_idle(kc, mid)

def collect(kc, ids, timeout=TIMEOUT):
    "Replies and IOPub messages (by parent msg_id) of several requests in flight at once, until each has its reply and its idle."
    replies,pub,idle,deadline = {},{i: [] for i in ids},set(),time.monotonic() + timeout
    while len(replies) < len(ids):
        m = kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        if parent_id(m) in pub: replies[parent_id(m)] = m
    while len(idle) < len(ids):
        m = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        p = parent_id(m)
        if p not in pub: continue
        pub[p].append(m)
        if m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle': idle.add(p)
    return replies,pub

def wait_stream(kc, msg_id, text, timeout=TIMEOUT):
    "Wait until request `msg_id` has printed `text` (its cell is then running user code); returns the IOPub messages seen for it."
    seen,deadline = [],time.monotonic() + timeout
    while text not in stdout(seen):
        m = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if parent_id(m) == msg_id: seen.append(m)
    return seen

def wait_file(path, timeout=TIMEOUT):
    "Wait until file `path` exists (a kernel or its child writes it whole, by rename); returns its text."
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline: raise TimeoutError(f"{path} did not appear in {timeout} s")
        time.sleep(0.01)
    with open(path) as f: return f.read()

def states(msgs): return [m['content']['execution_state'] for m in msgs if m['msg_type'] == 'status']

# ---- memory cgroups (the memory limit's and the crash report's tests) ----
MOUNTS = [('/sys/fs/cgroup', 'memory.max', ''), ('/sys/fs/cgroup/memory', 'memory.limit_in_bytes', 'memory')]  # v2, v1

def own_cgroup(ctrl):
    "This process's cgroup path in the hierarchy of controller `ctrl` ('' for v2's)."
    with open('/proc/self/cgroup') as f: rows = [l.split(':', 2) for l in f.read().splitlines()]
    return next(p for _,c,p in rows if (c == '' if not ctrl else ctrl in c.split(',')))

@contextlib.contextmanager
def memory_cgroup(limit):
    "A new memory cgroup limited to `limit` bytes: yields its folder. Skips where cgroups cannot be made, but fails under CI."
    mount,knob,ctrl = next(((m, k, c) for m,k,c in MOUNTS if os.path.exists(os.path.join(m, 'cgroup.subtree_control' if not c else k))), (None,)*3)
    path = mount and os.path.join(mount, f'ipymini-test-{os.getpid()}')
    try:
        os.mkdir(path)
        with open(os.path.join(path, knob), 'w') as f: f.write(str(limit))
        back = os.path.join(mount + own_cgroup(ctrl).rstrip('/'), 'cgroup.procs')
    except (OSError, TypeError) as e:
        if os.environ.get('CI'): raise
        pytest.skip(f"cannot make a memory cgroup here ({e}): needs root, with cgroup v1 or v2")
    try: yield path,back
    finally:
        with open(os.path.join(path, 'cgroup.procs')) as f: left = f.read().split()
        for p in left:  # what is still in it goes back, so the cgroup can go
            with contextlib.suppress(OSError), open(back, 'w') as f: f.write(p)
        os.rmdir(path)

@contextlib.contextmanager
def inside(cgroup):
    "This process in `cgroup` (from `memory_cgroup`) while the block runs: what it starts meanwhile starts there, as in a container."
    path,back = cgroup
    with open(os.path.join(path, 'cgroup.procs'), 'w') as f: f.write(str(os.getpid()))
    try: yield
    finally:
        with open(back, 'w') as f: f.write(str(os.getpid()))
