"""The kernel process's life: shutdown always answered, SIGTERM and a dead launcher take the same clean path, its own
process group, the user's child processes ended with it, thread stacks on SIGUSR1."""
import json, os, select, signal, subprocess, sys, textwrap, time, uuid
import pytest, psutil
from jupyter_client import BlockingKernelClient
from kernel_utils import start_kernel, execute, request, get_reply, kernel_ports, exit_status, dumps, TIMEOUT

def wait_exit(pid, timeout=TIMEOUT):
    "Wait for any process (not only a child) to end; True when it did."
    try: fd = os.pidfd_open(pid)
    except ProcessLookupError: return True
    try: return bool(select.select([fd], [], [], timeout)[0])
    finally: os.close(fd)

def gone(pid):
    try: return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess: return True

def on_exit_marker(kc, path):
    "A cell that leaves `path` behind when the kernel runs its exit handlers: the clean path was taken."
    reply,_ = execute(kc, f"import atexit\natexit.register(lambda: open({str(path)!r}, 'w').write('bye'))")
    assert reply['content']['status'] == 'ok'

@pytest.mark.parametrize('channel', ['shell', 'control'])
@pytest.mark.parametrize('restart', [False, True])
def test_shutdown_answered_then_exit(channel, restart, tmp_path):
    with start_kernel() as (km,kc):
        on_exit_marker(kc, tmp_path/'exit')
        reply,msgs = request(kc, 'shutdown_request', channel=channel, restart=restart)
        assert reply['msg_type'] == 'shutdown_reply' and reply['content'] == dict(status='ok', restart=restart)
        assert [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']
        assert km.provisioner.process.wait(TIMEOUT) == 0
        assert (tmp_path/'exit').read_text() == 'bye'

def test_sigterm_clean_exit(tmp_path):
    log = tmp_path/'kernel.log'
    with open(log, 'w') as f, start_kernel(stderr=f) as (km,kc):
        on_exit_marker(kc, tmp_path/'exit')
        km.provisioner.process.send_signal(signal.SIGTERM)
        assert exit_status(km.provisioner.process, log) == 0, log.read_text()
        assert (tmp_path/'exit').read_text() == 'bye'

def test_exit_that_hangs_is_cut_short(tmp_path):
    "An atexit handler that never returns: the process still ends, IPYMINI_EXIT_TIMEOUT later, with every thread's stack in its log."
    log = tmp_path/'kernel.log'
    with open(log, 'w') as f, start_kernel(env=dict(IPYMINI_EXIT_TIMEOUT='0.5'), stderr=f) as (km,kc):
        code = "import atexit\ndef stuck():\n    import threading  # the user's namespace is cleared by then\n    threading.Event().wait()\natexit.register(stuck)"
        assert execute(kc, code)[0]['content']['status'] == 'ok'
        p = km.provisioner.process
        p.send_signal(signal.SIGTERM)
        assert exit_status(p, log) == 0
    text = log.read_text()
    assert 'exit unfinished 3.5 s after the stop (IPYMINI_EXIT_TIMEOUT)' in text and dumps(log) == 1, text
    assert ' in stuck' in text, text

def test_leads_process_group(kernel):
    km,_ = kernel
    pid = km.provisioner.process.pid
    assert os.getpgid(pid) == pid

def connection_file(tmp_path):
    from jupyter_client.connect import write_connection_file
    path,_ = write_connection_file(str(tmp_path/'conn.json'), key=uuid.uuid4().hex.encode(), **kernel_ports())
    return path

def client(path):
    kc = BlockingKernelClient(connection_file=path)
    kc.load_connection_file()
    kc.start_channels()
    kc.wait_for_ready(timeout=TIMEOUT)
    return kc

def test_by_hand_leads_own_group(tmp_path):
    "Started by hand, in its parent's process group, the kernel makes a group of its own."
    path = connection_file(tmp_path)
    p = subprocess.Popen([sys.executable, '-m', 'ipymini', '-f', path], stderr=subprocess.DEVNULL)
    try:
        kc = client(path)
        assert os.getpgid(p.pid) == p.pid != os.getpgid(0)
        request(kc, 'shutdown_request', channel='control')
        kc.stop_channels()
        assert p.wait(TIMEOUT) == 0
    finally: p.kill()

CHILDREN = """
import subprocess, sys
a = subprocess.Popen(['sleep', '600'])
b = subprocess.Popen([sys.executable, '-c', 'import subprocess; subprocess.Popen(["sleep", "600"]).wait()'])
c = subprocess.Popen(['sh', '-c', 'trap "" TERM; sleep 600'], start_new_session=True)  # its own session, and deaf to SIGTERM
"""

def test_children_ended_on_exit():
    with start_kernel() as (km,kc):
        reply,_ = execute(kc, CHILDREN, user_expressions=dict(pids='[a.pid, b.pid, c.pid]'))
        pids = json.loads(reply['content']['user_expressions']['pids']['data']['text/plain'])
        kernel = psutil.Process(km.provisioner.process.pid)
        everyone = {p.pid for p in kernel.children(recursive=True)}
        assert set(pids) <= everyone and len(everyone) >= 4  # b's own sleep too
        request(kc, 'shutdown_request', channel='control')
        assert km.provisioner.process.wait(TIMEOUT) == 0
        assert all(gone(p) for p in everyone), [p for p in everyone if not gone(p)]

LAUNCHER = """
import sys, time
from jupyter_client.manager import KernelManager
km = KernelManager(kernel_name={name!r}, cache_ports=False, **{ports!r})
km.start_kernel()
print(km.connection_file, km.provisioner.process.pid, flush=True)
sys.stdin.read()
"""

def test_launcher_death_shuts_down(tmp_path):
    "A kernel whose launcher (JPY_PARENT_PID) dies runs its exit handlers and ends."
    from kernel_utils import KERNEL_NAME
    launcher = subprocess.Popen([sys.executable, '-c', LAUNCHER.format(name=KERNEL_NAME, ports=kernel_ports())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        path,pid = launcher.stdout.readline().split()
        pid = int(pid)
        kc = client(path)
        on_exit_marker(kc, tmp_path/'exit')
        kc.stop_channels()
        launcher.kill()
        launcher.wait(TIMEOUT)
        assert wait_exit(pid), "kernel still running after its launcher died"
        assert (tmp_path/'exit').read_text() == 'bye'
    finally:
        launcher.kill()
        if 'pid' in locals() and not gone(pid): os.kill(pid, signal.SIGKILL)

def wait_dumps(log, n, p):
    "Wait for the kernel's log to hold `n` stack dumps; the log on failure says why not (`p`: the kernel process)."
    deadline = time.monotonic() + TIMEOUT
    while dumps(log) < n:
        if p.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{dumps(log)} of {n} stack dumps; kernel exit status {p.poll()}; log:\n{log.read_text()}")
        time.sleep(0.005)

def test_sigusr1_dumps_stacks(tmp_path):
    log = tmp_path/'kernel.log'
    with open(log, 'w') as f, start_kernel(stderr=f) as (km,kc):
        p = km.provisioner.process
        p.send_signal(signal.SIGUSR1)
        wait_dumps(log, 1, p)
        request(kc, 'kernel_info_request')  # answered: the kernel lives on
        text = log.read_text()
    assert text.count('Thread 0x') + text.count('Current thread 0x') >= 6, text  # main, shell, control, stdin, iopub, heartbeat
    assert 'ipymini/channels.py' in text and 'ipymini/kernel.py' in text

CHURN = """
import enum, threading
churning = threading.Event()
def churn():  # Python code that makes and drops frames and objects without a pause
    while not churning.is_set():
        class E(enum.Enum): A = 1
        [isinstance(x, int) for x in range(50)]
for _ in range(3): threading.Thread(target=churn, daemon=True).start()
"""

def test_sigusr1_while_threads_run(tmp_path):
    "Stack dumps while other threads run Python: each is read under the GIL, so none reads a frame as it changes (and crashes)."
    log = tmp_path/'kernel.log'
    with open(log, 'w') as f, start_kernel(stderr=f) as (km,kc):
        assert execute(kc, CHURN)[0]['content']['status'] == 'ok'
        p = km.provisioner.process
        for n in range(1, 101):
            p.send_signal(signal.SIGUSR1)
            wait_dumps(log, n, p)
        assert execute(kc, "churning.set()")[0]['content']['status'] == 'ok'
    assert 'in churn' in log.read_text() and dumps(log) == 100  # one dump per signal

# a cell's thread sends the signal to itself once the main thread sleeps in the loop's select() with no timer to wake it (the
# history write after a cell is one): only that thread is interrupted
OTHER_THREAD = """
import atexit, signal, sys, threading, time
atexit.register(lambda: open({marker!r}, 'w').write('bye'))
def later():
    main,loop = threading.main_thread().ident,get_ipython().kernel.loop
    while sys._current_frames()[main].f_code.co_name != 'select' or loop._scheduled: time.sleep(0.001)
    signal.pthread_kill(threading.get_ident(), signal.{sig})
threading.Thread(target=later).start()
"""

def test_sigterm_caught_by_another_thread(tmp_path):
    "A SIGTERM the OS hands to a thread other than the main one, while the main thread sleeps, still stops the kernel cleanly."
    log,marker = tmp_path/'kernel.log',tmp_path/'exit'
    with open(log, 'w') as f, start_kernel(stderr=f) as (km,kc):
        assert execute(kc, OTHER_THREAD.format(marker=str(marker), sig='SIGTERM'))[0]['content']['status'] == 'ok'
        p = km.provisioner.process
        assert exit_status(p, log) == 0, log.read_text()
        assert marker.read_text() == 'bye'

def test_signals_after_user_code_takes_wakeup_fd(tmp_path):
    """User code's asyncio loop with a signal handler takes the signal wakeup fd from the relay: while it holds it the main thread's
    handler dumps the stacks, and once a loop closes (it leaves none) the kernel takes the fd back after the cell, so a signal that
    another thread catches while the main thread sleeps still reaches the relay."""
    log,marker = tmp_path/'kernel.log',tmp_path/'exit'
    ok = lambda code: execute(kc, code)[0]['content']['status'] == 'ok'
    with open(log, 'w') as f, start_kernel(stderr=f) as (km,kc):
        p = km.provisioner.process
        assert ok("import asyncio, signal, threading\nloop = asyncio.new_event_loop()\nloop.add_signal_handler(signal.SIGUSR2, print)\n"
                  "signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)")
        wait_dumps(log, 1, p)
        assert ok("loop.close()")
        assert ok(OTHER_THREAD.format(marker=str(marker), sig='SIGUSR1'))
        wait_dumps(log, 2, p)
        assert ok("async def f(): asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, print)\nasyncio.run(f())")
        assert ok(OTHER_THREAD.format(marker=str(marker), sig='SIGTERM'))
        assert exit_status(p, log) == 0 and marker.read_text() == 'bye'
    assert dumps(log) == 2

def test_sigusr1_caught_by_another_thread(tmp_path):
    log = tmp_path/'kernel.log'
    with open(log, 'w') as f, start_kernel(stderr=f) as (km,kc):
        assert execute(kc, OTHER_THREAD.format(marker=str(tmp_path/'exit'), sig='SIGUSR1'))[0]['content']['status'] == 'ok'
        wait_dumps(log, 1, km.provisioner.process)  # the main thread, still asleep, does not dump them: the relay's thread does
        assert '/selectors.py' in log.read_text()
        request(kc, 'kernel_info_request')
