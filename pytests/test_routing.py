"""Output routing: output lands on the cell that caused it (threads, executors, asyncio tasks, subshells), and fd-level
output (C code, subprocesses) reaches the client before the cell's idle."""
import time, uuid
from jupyter_client.session import Session
from kernel_utils import execute, request, get_reply, iopub_until_idle, types, outputs, stdout, parent_id, TIMEOUT

def until_idle(kc, msg_id, timeout=TIMEOUT):
    "Every IOPub message, whatever its parent, up to the idle status of `msg_id`."
    out,deadline = [],time.monotonic() + timeout
    while True:
        m = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        out.append(m)
        if parent_id(m) == msg_id and m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle': return out

def run_all(kc, code, **kw):
    "Execute `code`; returns (reply, every IOPub message up to its idle, whatever the parent)."
    mid = kc.execute(code, **kw)
    return get_reply(kc, mid),until_idle(kc, mid)

def texts(msgs, msg_id, name='stdout'):
    return ''.join(m['content']['text'] for m in msgs if m['msg_type'] == 'stream' and m['content']['name'] == name and parent_id(m) == msg_id)

def mid_of(reply): return reply['parent_header']['msg_id']

def test_thread_output_goes_to_the_cell_that_started_it(kc):
    r1,_ = execute(kc, """
import threading, sys
go, done = threading.Event(), threading.Event()
def later():
    go.wait()
    print('from thread')
    print('thread err', file=sys.stderr)
    display('thread display')
    done.set()
threading.Thread(target=later).start()
""")
    r2,msgs = run_all(kc, "go.set(); done.wait(); print('cell 2')")
    c1,c2 = mid_of(r1),mid_of(r2)
    assert texts(msgs, c1) == 'from thread\n' and texts(msgs, c1, 'stderr') == 'thread err\n'
    assert [m['content']['data'] for m in msgs if m['msg_type'] == 'display_data' and parent_id(m) == c1] == [{'text/plain': "'thread display'"}]
    assert texts(msgs, c2) == 'cell 2\n' and not [m for m in msgs if parent_id(m) == c2 and m['msg_type'] == 'display_data']

def test_nested_thread_keeps_the_cell(kc):
    r1,_ = execute(kc, """
import threading
go2, done2 = threading.Event(), threading.Event()
def inner(): go2.wait(); print('inner'); done2.set()
threading.Thread(target=lambda: threading.Thread(target=inner).start()).start()
""")
    r2,msgs = run_all(kc, "go2.set(); done2.wait()")
    assert texts(msgs, mid_of(r1)) == 'inner\n' and texts(msgs, mid_of(r2)) == ''

def test_executor_tasks_go_to_the_cell_that_submitted_them(kc):
    r1,_ = execute(kc, """
from concurrent.futures import ThreadPoolExecutor
import threading
pool, go3 = ThreadPoolExecutor(1), threading.Event()
first = pool.submit(lambda: (go3.wait(), print('task 1')))
""")
    # the same worker thread runs both tasks: each prints under the cell that submitted it
    r2,msgs = run_all(kc, "go3.set(); first.result(); pool.submit(print, 'task 2').result()")
    assert texts(msgs, mid_of(r1)) == 'task 1\n' and texts(msgs, mid_of(r2)) == 'task 2\n'

def test_asyncio_task_output_goes_to_its_cell(kc):
    r1,_ = execute(kc, """
import asyncio
go4 = asyncio.Event()
async def waits(): await go4.wait(); print('task done')
task = asyncio.ensure_future(waits())
""")
    r2,msgs = run_all(kc, "go4.set()\nawait task\nawait asyncio.get_running_loop().run_in_executor(None, print, 'executor')")
    assert texts(msgs, mid_of(r1)) == 'task done\n' and texts(msgs, mid_of(r2)) == 'executor\n'

def test_concurrent_writers_keep_their_cells_and_order(kc):
    "Threads of two cells and the second cell itself print at once, stdout and stderr interleaved: every line under its own cell, in its order."
    r1,_ = execute(kc, """
import threading, sys
go5 = threading.Event()
def spam(tag):
    go5.wait()
    # one write a line: print(tag, i) writes four times, and another thread may write between them
    for i in range(3000): sys.stdout.write(f'{tag} {i}\\n'); sys.stderr.write(f'{tag} {i}\\n')
t1 = threading.Thread(target=spam, args=('one',)); t1.start()
""")
    r2,msgs = run_all(kc, """
t2 = threading.Thread(target=spam, args=('two',)); t2.start()
go5.set()
for i in range(3000): sys.stdout.write(f'cell {i}\\n')
t1.join(); t2.join()
""")
    c1,c2 = mid_of(r1),mid_of(r2)
    lines = lambda tag, n: ''.join(f"{tag} {i}\n" for i in range(n))
    assert texts(msgs, c1) == texts(msgs, c1, 'stderr') == lines('one', 3000)
    mine = texts(msgs, c2)
    # the cell's own lines and its thread's arrive whole and each in order, however the two threads took turns
    assert sorted(mine.splitlines(keepends=True)) == sorted((lines('cell', 3000) + lines('two', 3000)).splitlines(keepends=True))
    for tag in ('cell', 'two'): assert ''.join(l for l in mine.splitlines(keepends=True) if l.startswith(tag)) == lines(tag, 3000)
    assert texts(msgs, c2, 'stderr') == lines('two', 3000)
    # within each thread, the stderr line follows its stdout line: the messages of each cell alternate between the streams in order
    one = [(m['content']['name'], m['content']['text']) for m in msgs if m['msg_type'] == 'stream' and parent_id(m) == c1]
    out_seen = err_seen = 0
    for name,text in one:
        n = text.count('\n')
        if name == 'stdout': out_seen += n
        else:
            err_seen += n
            assert err_seen <= out_seen
    assert out_seen == err_seen == 3000

def test_subprocess_and_fd_output(kc):
    reply,msgs = execute(kc, "import subprocess\nr = subprocess.run(['echo', 'hi'])")
    assert reply['content']['status'] == 'ok' and types(msgs) == ['status', 'execute_input', 'stream', 'status']
    assert msgs[2]['content'] == dict(name='stdout', text='hi\n')
    reply,msgs = execute(kc, "!echo hi")
    assert stdout(msgs).replace('\r\n', '\n') == 'hi\n'
    reply,msgs = execute(kc, "import os, sys\nos.write(1, b'fd one\\n'); os.write(2, b'fd two\\n')\nprint('dunder', file=sys.__stdout__)")
    assert stdout(msgs) == 'fd one\ndunder\n' and ''.join(m['content']['text'] for m in msgs if m['msg_type'] == 'stream' and m['content']['name'] == 'stderr') == 'fd two\n'

def test_c_level_output(kc):
    reply,msgs = execute(kc, "import ctypes\nctypes.CDLL(None).printf(b'from C %d\\n', 42)")
    assert stdout(msgs) == 'from C 42\n'

def test_subprocess_in_child_subshell(kc):
    reply,_ = request(kc, 'create_subshell_request', channel='control')
    sid = reply['content']['subshell_id']
    try:
        msg = kc.session.msg('execute_request', dict(code="import subprocess\nsubprocess.run(['echo', 'child'])", silent=False, store_history=True,
                                                     user_expressions={}, allow_stdin=False))
        msg['header']['subshell_id'] = sid
        kc.shell_channel.send(msg)
        mid = msg['header']['msg_id']
        assert get_reply(kc, mid)['content']['status'] == 'ok'
        assert stdout(iopub_until_idle(kc, mid)) == 'child\n'
    finally: request(kc, 'delete_subshell_request', channel='control', subshell_id=sid)

def test_thread_in_child_subshell_goes_to_child_request(kc):
    reply,_ = request(kc, 'create_subshell_request', channel='control')
    sid = reply['content']['subshell_id']
    try:
        msg = kc.session.msg('execute_request', dict(code="import threading\nt = threading.Thread(target=print, args=('child thread',))\nt.start(); t.join()",
                                                     silent=False, store_history=True, user_expressions={}, allow_stdin=False))
        msg['header']['subshell_id'] = sid
        kc.shell_channel.send(msg)
        mid = msg['header']['msg_id']
        get_reply(kc, mid)
        msgs = iopub_until_idle(kc, mid)
        assert stdout(msgs) == 'child thread\n' and msgs[0]['parent_header']['subshell_id'] == sid
    finally: request(kc, 'delete_subshell_request', channel='control', subshell_id=sid)

def test_kernel_logs_stay_out_of_user_output(kc):
    "The kernel logs a dropped message to its own stderr; that never becomes a stream message for the client."
    s = Session(key=b'wrong-key', signature_scheme='hmac-sha256')
    s.send(kc.shell_channel.socket, s.msg('execute_request', dict(code="1", silent=False, store_history=True, user_expressions={}, allow_stdin=False)))
    reply,msgs = run_all(kc, "pass")
    assert reply['content']['status'] == 'ok'
    assert [m for m in msgs if m['msg_type'] == 'stream'] == []

def test_c_output_held_in_stdio_buffer(kc):
    "C's stdout fully buffered (as on a pipe when PYTHONUNBUFFERED is unset): the kernel flushes it before the idle. Last here: it changes the kernel's C stdout."
    code = ("import ctypes\nlibc = ctypes.CDLL(None)\nout = ctypes.c_void_p.in_dll(libc, 'stdout')\nlibc.fflush(out)\n"
            "cbuf = ctypes.create_string_buffer(4096)\nassert libc.setvbuf(out, cbuf, 0, 4096) == 0\n"  # 0: _IOFBF
            "libc.printf(b'held %d\\n', 7)")
    reply,msgs = execute(kc, code)
    assert reply['content']['status'] == 'ok' and stdout(msgs) == 'held 7\n'
