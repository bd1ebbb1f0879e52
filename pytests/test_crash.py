"""A cell that kills the kernel process (a segfault in C code, `os.abort()`, a fatal signal, the out-of-memory killer, `os._exit`)
gets, parented to it, an error naming the cause (for a fatal error, the cell's Python stack from faulthandler) and then its idle,
before the kernel is gone; the process exits as it died, so a restarter works as it does without the report."""
import contextlib, os, re, select, signal
from kernel_utils import memory_cgroup, inside, start_kernel, iopub_until_idle, execute, stdout, control, send, wait_stream, types, parent_id, TIMEOUT

ANSI = re.compile(r'\x1b\[[0-9;]*m')
WATCHER = "import ipymini.crash\nprint(ipymini.crash.watcher_pid())"

def wait_gone(pid):
    "Wait for process `pid` to end (its pidfd turns readable)."
    with contextlib.suppress(ProcessLookupError):
        fd = os.pidfd_open(pid)
        try: assert select.select([fd], [], [], TIMEOUT)[0], f"process {pid} still running"
        finally: os.close(fd)

def watcher(kc):
    "The kernel's crash watcher's pid, from the kernel."
    return int(stdout(execute(kc, WATCHER)[1]))

def crash(km, kc, code):
    """Run `code`, which kills the kernel: (its error message, the process's return code). The cell's messages end with the error
    and the idle; its busy and execute_input come first unless the kernel died before its IOPub thread sent them."""
    mid = kc.execute(code)
    seen = types(msgs := iopub_until_idle(kc, mid))
    assert seen[-2:] == ['error', 'status'] and seen[:-2] == ['status', 'execute_input'][:len(seen) - 2], seen
    assert msgs[-2]['parent_header']['msg_type'] == 'execute_request'
    return msgs[-2]['content'],km.provisioner.process.wait(TIMEOUT)

def text(content): return ANSI.sub('', '\n'.join(content['traceback']))

def test_segfault_names_the_signal_and_the_cells_stack(tmp_path):
    err = tmp_path/'stderr.txt'
    with start_kernel(stderr=open(err, 'w')) as (km,kc):
        pid = watcher(kc)
        mid = kc.execute("import time\nprint('waiting', flush=True)\ntime.sleep(600)")
        wait_stream(kc, mid, 'waiting')
        km.interrupt_kernel()  # jupyter_client's killpg reaches the watcher too: it ignores the SIGINT
        assert [m['content']['ename'] for m in iopub_until_idle(kc, mid) if m['msg_type'] == 'error'] == ['KeyboardInterrupt']
        c,rc = crash(km, kc, "import ctypes\ndef crash_here(): ctypes.string_at(0)\ncrash_here()")
        assert rc == -signal.SIGSEGV
        assert c['ename'] == 'KernelDied' and c['evalue'] == 'the kernel process was killed by SIGSEGV (Segmentation fault)'
        tb = text(c)
        assert tb.startswith('The kernel died while this ran: the kernel process was killed by SIGSEGV (Segmentation fault).')
        assert tb.endswith('KernelDied: the kernel process was killed by SIGSEGV (Segmentation fault)')
        assert 'Fatal Python error: Segmentation fault' in tb and 'Current thread' in tb
        frames = [l for l in tb.splitlines() if l.startswith('  File')]
        # the cell's frames, innermost first, down to the cell's code: none of IPython's or the kernel's below it
        assert re.search(r'line \d+ in string_at$', frames[0]) and frames[1].endswith('line 2 in crash_here') and frames[2].endswith('line 3 in <module>')
        assert len(frames) == 3, frames
        wait_gone(pid)
    log = err.read_text()
    assert '[ipymini] The kernel died while this ran: the kernel process was killed by SIGSEGV (Segmentation fault).' in log
    assert 'in crash_here' in log and 'interactiveshell.py' in log  # stderr has faulthandler's whole report, every thread

def test_abort():
    with start_kernel() as (km,kc):
        c,rc = crash(km, kc, "import os\nos.abort()")
        assert rc == -signal.SIGABRT
        assert c['evalue'] == 'the kernel process was killed by SIGABRT (Aborted)' and 'Fatal Python error: Aborted' in text(c)
        assert [l for l in text(c).splitlines() if l.startswith('  File')][-1].endswith('line 2 in <module>')

def test_sigkill_and_exit_status():
    "A signal no handler sees (SIGKILL) and an exit that skips the kernel's shutdown: the cause, no stack (none was written)."
    for code,rc,evalue in [("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", -9, 'the kernel process was killed by SIGKILL (Killed)'),
                           ("import os\nos._exit(3)", 3, 'the kernel process exited with status 3')]:
        with start_kernel() as (km,kc):
            c,got = crash(km, kc, code)
            assert got == rc and c['evalue'] == evalue and 'Fatal Python error' not in text(c)

def test_every_running_cell_gets_the_report():
    "A cell in a child subshell runs while the parent's cell crashes the kernel: each gets its own error and then its idle."
    with start_kernel() as (km,kc):
        sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
        other = send(kc, sid, "import time\nprint('waiting', flush=True)\ntime.sleep(600)")
        wait_stream(kc, other, 'waiting')
        mid,got = kc.execute("import os\nos.abort()"),{}
        while len([m for ms in got.values() for m in ms if m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle']) < 2:
            m = kc.get_iopub_msg(timeout=TIMEOUT)
            if parent_id(m) in (mid, other): got.setdefault(parent_id(m), []).append(m)
        assert km.provisioner.process.wait(TIMEOUT) == -signal.SIGABRT
        for ms in got.values(): assert types(ms)[-2:] == ['error', 'status'] and ms[-2]['content']['evalue'] == 'the kernel process was killed by SIGABRT (Aborted)'
        assert set(got) == {mid, other} and types(got[other]) == ['error', 'status']  # its busy, execute_input and print came before

def test_restart_after_a_crash():
    "The port the watcher used for the report is free again: the kernel restarts on the same ports and runs a cell."
    with start_kernel() as (km,kc):
        pid = watcher(kc)
        ports = {p: km.get_connection_info()[p] for p in ('shell_port', 'iopub_port', 'control_port')}
        crash(km, kc, "import os\nos.abort()")
        wait_gone(pid)
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=TIMEOUT)
        assert stdout(execute(kc, "print('back')")[1]) == 'back\n'
        assert {p: km.get_connection_info()[p] for p in ports} == ports

def test_clean_stop_reports_nothing(tmp_path):
    "A shutdown is no crash: the watcher ends with the kernel and says nothing; with IPYMINI_CRASH_REPORT=0 there is none."
    err = tmp_path/'stderr.txt'
    with start_kernel(stderr=open(err, 'w')) as (km,kc):
        pid = watcher(kc)
        proc = km.provisioner.process
        km.shutdown_kernel()
        assert proc.wait(TIMEOUT) == 0
        wait_gone(pid)
    assert 'The kernel died' not in err.read_text()
    with start_kernel(env=dict(IPYMINI_CRASH_REPORT='0')) as (km,kc): assert stdout(execute(kc, WATCHER)[1]) == 'None\n'

# ---- the out-of-memory killer, in a memory cgroup the test makes ----
def test_out_of_memory_kill():
    """A kernel started in a cgroup of 300 MB asks for 1 GB: the out-of-memory killer ends it, and the cell is told so, not just
    SIGKILL. IPYMINI_MEMORY_LIMIT=off: else the cell would get a MemoryError near the limit instead."""
    with memory_cgroup(300 << 20) as cg, contextlib.ExitStack() as stack:
        with inside(cg): km,kc = stack.enter_context(start_kernel(env=dict(IPYMINI_MEMORY_LIMIT='off')))
        c,rc = crash(km, kc, "blocks = [b'x' * (64 << 20) for _ in range(16)]")
        assert rc == -signal.SIGKILL
        assert c['evalue'] == 'the kernel process was killed by the out-of-memory killer (SIGKILL): its memory cgroup reached its limit'
