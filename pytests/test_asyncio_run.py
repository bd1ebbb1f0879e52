"""`asyncio.run()` in a cell runs as in a script (ipykernel refuses it: "cannot be called from a running event loop"), while the
kernel's own loop, top-level await and tasks started from cells work as before."""
from kernel_utils import (start_kernel, execute, get_reply, iopub_until_idle, interrupt, outputs, stdout, wait_stream, control, run,
                          send)

def ok(kc, code, sid=None):
    "Run `code` (on subshell `sid`), which must succeed; returns (reply content, IOPub outputs)."
    reply,msgs = run(kc, sid, code)
    assert reply['content']['status'] == 'ok', reply['content']
    return reply['content'],outputs(msgs)

def result(outs): return next(m['content']['data']['text/plain'] for m in outs if m['msg_type'] == 'execute_result')

def test_runs_to_completion_and_closes(kc):
    code = """import asyncio
async def agen():
    try:
        yield 1
        yield 2
    finally: print('async generator closed')
async def main():
    global loop, it
    loop = asyncio.get_running_loop()
    it = agen()
    await it.__anext__()  # left open: asyncio.run shuts it down
    return await loop.run_in_executor(None, sum, [20, 22])
asyncio.run(main())"""
    _,outs = ok(kc, code)
    assert result(outs) == '42' and stdout(outs) == "async generator closed\n"
    _,outs = ok(kc, "loop.is_closed(), loop._default_executor is None or loop._default_executor._shutdown, asyncio.get_event_loop() is not loop")
    assert result(outs) == '(True, True, True)'

def test_exception_comes_back(kc):
    reply,msgs = execute(kc, "import asyncio\nasync def bad(): raise ValueError('from the coroutine')\nasyncio.run(bad())")
    c = reply['content']
    assert c['status'] == 'error' and (c['ename'],c['evalue']) == ('ValueError', 'from the coroutine')

def test_output_of_its_tasks_goes_to_the_cell(kc):
    code = """import asyncio
from IPython.display import display
async def child(n):
    await asyncio.sleep(0)
    print('task', n)
    display({'text/plain': f'shown by {n}'}, raw=True)
async def main():
    await asyncio.gather(*(asyncio.create_task(child(i)) for i in range(2)))
asyncio.run(main())"""
    msg_id = kc.execute(code)
    assert get_reply(kc, msg_id)['content']['status'] == 'ok'
    outs = outputs(iopub_until_idle(kc, msg_id))  # every output is parented to the cell and arrives before its idle
    assert stdout(outs) == "task 0\ntask 1\n"
    assert [m['content']['data'] for m in outs if m['msg_type'] == 'display_data'] == [{'text/plain': 'shown by 0'}, {'text/plain': 'shown by 1'}]

def test_interrupt_cancels_its_main_task(kc):
    code = """import asyncio
async def main():
    try:
        print('waiting', flush=True)
        await asyncio.sleep(600)
    finally: print('main task cleaned up')
asyncio.run(main())"""
    msg_id = kc.execute(code)
    wait_stream(kc, msg_id, 'waiting')
    interrupt(kc)
    c = get_reply(kc, msg_id)['content']
    assert c['status'] == 'error' and c['ename'] == 'KeyboardInterrupt'
    outs = outputs(iopub_until_idle(kc, msg_id))
    assert 'main task cleaned up\n' in stdout(outs) and [m['content']['ename'] for m in outs if m['msg_type'] == 'error'] == ['KeyboardInterrupt']
    _,outs = ok(kc, "async def again(): return 'second run'\nasyncio.run(again())")
    assert result(outs) == "'second run'"

def test_tasks_on_the_kernel_loop_keep_running(kc):
    "create_task, ensure_future and get_event_loop().create_task from a synchronous cell run on the kernel's loop across cells."
    ok(kc, """import asyncio
ev = asyncio.Event()
async def waiter(name):
    await ev.wait()
    return name
tasks = [asyncio.create_task(waiter('create_task')), asyncio.ensure_future(waiter('ensure_future')),
         asyncio.get_event_loop().create_task(waiter('loop.create_task'))]""")
    ok(kc, "async def quick(): return 1\nasyncio.run(quick())")  # a nested run leaves the kernel's loop and its tasks alone
    _,outs = ok(kc, "[t.done() for t in tasks]")
    assert result(outs) == '[False, False, False]'
    ok(kc, "ev.set()")
    _,outs = ok(kc, "await asyncio.gather(*tasks)")
    assert result(outs) == "['create_task', 'ensure_future', 'loop.create_task']"

def test_nested_run_raises_the_standard_error(kc):
    code = "import asyncio\nasync def inner(): pass\nasync def outer(): asyncio.run(inner())\nasyncio.run(outer())"
    reply,_ = execute(kc, code)
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == 'RuntimeError' and 'cannot be called from a running event loop' in c['evalue']

def test_outside_a_cell_it_is_plain_python(kc):
    code = """import asyncio, threading, subprocess, sys
async def where(): return type(asyncio.get_running_loop()).__module__
out = []
t = threading.Thread(target=lambda: out.append(asyncio.run(where())))
t.start()
t.join()
out.append(subprocess.run([sys.executable, '-c', 'import asyncio\\nasync def f(): return 7\\nprint(asyncio.run(f()))'],
                          capture_output=True, text=True).stdout.strip())
out"""
    _,outs = ok(kc, code)
    assert result(outs) == "['asyncio.unix_events', '7']"

def test_library_wrapping_asyncio_run(kc, tmp_path):
    "A library whose synchronous API wraps asyncio.run works when called from a cell."
    (tmp_path/'syncapi.py').write_text("import asyncio\nasync def _fetch(n):\n    await asyncio.sleep(0)\n    return n * 2\n"
                                      "def fetch(n): return asyncio.run(_fetch(n))\n")
    _,outs = ok(kc, f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport syncapi\nsyncapi.fetch(21)")
    assert result(outs) == '42'

def test_in_a_child_subshell(kc):
    sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
    try:
        _,outs = ok(kc, "import asyncio\nasync def main():\n    await asyncio.sleep(0)\n    return 'child'\nasyncio.run(main())", sid)
        assert result(outs) == "'child'"
        msg_id = send(kc, sid, "async def main():\n    print('child waits', flush=True)\n    await asyncio.sleep(600)\nasyncio.run(main())")
        wait_stream(kc, msg_id, 'child waits')
        interrupt(kc)
        c = get_reply(kc, msg_id)['content']
        assert c['status'] == 'error' and c['ename'] == 'KeyboardInterrupt'
        iopub_until_idle(kc, msg_id)
    finally: control(kc, 'delete_subshell_request', subshell_id=sid)

def test_setting_turns_it_off(tmp_path):
    with start_kernel(env=dict(IPYMINI_ASYNCIO_RUN='0', IPYTHONDIR=str(tmp_path))) as (km,kc):
        reply,_ = execute(kc, "import asyncio\nasync def f(): pass\nasyncio.run(f())")
        c = reply['content']
        assert c['status'] == 'error' and c['evalue'] == 'asyncio.run() cannot be called from a running event loop'
