"""Interrupts: SIGINT from the kernel manager and interrupt_request on control stop a running cell with KeyboardInterrupt."""
import time
import pytest
from kernel_utils import execute, get_reply, iopub_until_idle, types, stdout, parent_id, TIMEOUT, wait_stream, interrupt

def send_interrupt(km, kc, how):
    "Interrupt the kernel as front ends do: a signal from the kernel manager, or interrupt_request on control."
    if how == 'signal': return km.interrupt_kernel()
    reply = interrupt(kc)
    assert reply['msg_type'] == 'interrupt_reply' and reply['content'] == dict(status='ok')

def check_interrupted(kc, msg_id, sent, seen=()):
    "The cell ends in a KeyboardInterrupt error and reply; returns the latency from `sent` and all its IOPub messages."
    reply = get_reply(kc, msg_id)
    latency = time.perf_counter() - sent
    msgs = [*seen, *iopub_until_idle(kc, msg_id)]
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == 'KeyboardInterrupt' and reply['metadata']['status'] == 'error'
    errs = [m['content'] for m in msgs if m['msg_type'] == 'error']
    assert [e['ename'] for e in errs] == ['KeyboardInterrupt']
    assert any('KeyboardInterrupt' in l for l in errs[0]['traceback'])
    after,amsgs = execute(kc, "print('still here')")
    assert after['content']['status'] == 'ok' and stdout(amsgs) == 'still here\n'
    return latency,msgs

# Interrupted cells are sent with stop_on_error=False: aborting what follows an error is not what these tests are about, and the
# follow-up cell each test runs must not depend on how that abort window closes.
HOW = ['signal', 'request']
# each prints 'started' in the statement that then blocks: IPython compiles a cell statement by statement, and an interrupt landing
# in its compiler rather than in the user's code is reported with IPython's frames
CELLS = dict(
    loop="import itertools\nfor i in itertools.count():\n    if not i: print('started', flush=True)",
    sleep="import time\nfor t in [60]:\n    print('started', flush=True)\n    time.sleep(t)",
    await_sleep="import asyncio\nfor t in [60]:\n    print('started', flush=True)\n    await asyncio.sleep(t)")

@pytest.mark.parametrize('how', HOW)
@pytest.mark.parametrize('cell', list(CELLS))
def test_interrupt_running_cell(kernel, cell, how):
    km,kc = kernel
    msg_id = kc.execute(CELLS[cell], stop_on_error=False)
    seen = wait_stream(kc, msg_id, 'started')
    sent = time.perf_counter()
    send_interrupt(km, kc, how)
    latency,msgs = check_interrupted(kc, msg_id, sent, seen)
    assert [t for t in types(msgs) if t != 'stream'] == ['status', 'execute_input', 'error', 'status']
    assert stdout(msgs) == 'started\n' and '_on_sigint' not in ''.join(msgs[-2]['content']['traceback'])  # ends in the user's code
    print(f"\ninterrupt latency ({cell}, {how}): {latency*1000:.1f} ms")

@pytest.mark.parametrize('how', HOW)
def test_interrupt_pending_input(kernel, how):
    km,kc = kernel
    msg_id = kc.execute("x = input('never answered: ')", allow_stdin=True, stop_on_error=False)
    req = kc.get_stdin_msg(timeout=TIMEOUT)
    assert req['msg_type'] == 'input_request' and parent_id(req) == msg_id
    sent = time.perf_counter()
    send_interrupt(km, kc, how)
    latency,msgs = check_interrupted(kc, msg_id, sent)
    assert types(msgs) == ['status', 'execute_input', 'error', 'status']
    assert msgs[2]['content']['evalue'] == 'Interrupted by user'
    # a late answer to the abandoned prompt is dropped, and the next prompt gets its own answer
    kc.stdin_channel.send(kc.session.msg('input_reply', dict(value='late'), parent=req['header']))
    msg_id = kc.execute("print(input('again: '))", allow_stdin=True)
    req = kc.get_stdin_msg(timeout=TIMEOUT)
    kc.stdin_channel.send(kc.session.msg('input_reply', dict(value='fresh'), parent=req['header']))
    get_reply(kc, msg_id)
    assert stdout(iopub_until_idle(kc, msg_id)) == 'fresh\n'
    print(f"\ninterrupt latency (input, {how}): {latency*1000:.1f} ms")

@pytest.mark.parametrize('how', HOW)
def test_interrupt_when_idle(kernel, how):
    km,kc = kernel
    before,_ = execute(kc, "n_before = 1")
    send_interrupt(km, kc, how)
    reply,msgs = execute(kc, "print('fine')")
    assert reply['content']['status'] == 'ok' and stdout(msgs) == 'fine\n'
    assert reply['content']['execution_count'] == before['content']['execution_count'] + 1

def test_async_state_after_interrupt(kernel):
    "After a cancelled async cell, asyncio's own cancellation machinery (timeout, TaskGroup) still behaves."
    km,kc = kernel
    msg_id = kc.execute(CELLS['await_sleep'], stop_on_error=False)
    wait_stream(kc, msg_id, 'started')
    km.interrupt_kernel()
    check_interrupted(kc, msg_id, time.perf_counter())
    code = """import asyncio
try:
    async with asyncio.timeout(0.01): await asyncio.sleep(5)
except TimeoutError: print('timed out')
async def boom(): raise ValueError('x')
try:
    async with asyncio.TaskGroup() as tg: tg.create_task(boom()); tg.create_task(asyncio.sleep(5))
except* ValueError: print('group failed')"""
    reply,msgs = execute(kc, code)
    assert reply['content']['status'] == 'ok' and stdout(msgs) == 'timed out\ngroup failed\n'

def test_user_cancelled_error_keeps_its_name(kc):
    "A CancelledError the user's code raises itself is not mistaken for an interrupt."
    reply,msgs = execute(kc, "import asyncio\nasync def f(): raise asyncio.CancelledError('mine')\nawait f()")
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == 'CancelledError' and c['evalue'] == 'mine'

def test_interrupt_reaches_child_processes(kernel, tmp_path):
    "The kernel leads its process group (jupyter_client starts it in a new session): interrupt_request signals the group."
    km,kc = kernel
    mark = tmp_path/'child-got'
    code = f"""import subprocess, sys
child = subprocess.Popen([sys.executable, '-c', '''
import signal, sys, time
def on_int(*a):
    open({str(mark)!r}, 'w').write('SIGINT')
    sys.exit(7)
signal.signal(signal.SIGINT, on_int)
print("ready", flush=True)
time.sleep(60)'''], stdout=subprocess.PIPE, text=True)
print(child.stdout.readline(), end='', flush=True)
child.wait()"""
    msg_id = kc.execute(code, stop_on_error=False)
    wait_stream(kc, msg_id, 'ready')
    send_interrupt(km, kc, 'request')
    check_interrupted(kc, msg_id, time.perf_counter())
    # the child's exit status can be lost to the KeyboardInterrupt racing its waitpid, so it reports through a file
    reply,msgs = execute(kc, f"child.wait(timeout=10)\nprint(open({str(mark)!r}).read())")
    assert stdout(msgs) == 'SIGINT\n'
