"""Cells that step aside: `unlock()` lets queued requests start, `subshell()` routes a client's later requests to a temporary subshell."""
import subprocess, sys
import pytest
from jupyter_client.session import Session
from kernel_utils import (execute, request, get_reply, iopub_until_idle, types, stdout, parent_id, send, run, collect, wait_stream,
                          control, interrupt, states, TIMEOUT)
from test_subshells import control_during, gate, collect_gated

def expr(reply, name): return reply['content']['user_expressions'][name]['data']['text/plain']

@pytest.fixture(params=['parent', 'child'])
def where(request, kc):
    "Run on the parent subshell, and on a child subshell deleted afterwards."
    if request.param == 'parent': yield None
    else:
        sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
        yield sid
        control(kc, 'delete_subshell_request', subshell_id=sid)

UNLOCKED = "import asyncio\nfrom ipymini import unlock\nev = asyncio.Event()\nprint('unlocked', unlock())\nawait ev.wait()\nprint('A done')"

def test_unlock_lets_the_next_execute_run(kc, where):
    a = send(kc, where, UNLOCKED)
    seen = wait_stream(kc, a, 'unlocked True\n')
    b = send(kc, where, "print('B ran')")
    rb = get_reply(kc, b)  # before A's reply, which would be skipped here and missed below
    pb = iopub_until_idle(kc, b)
    assert rb['content']['status'] == 'ok' and types(pb) == ['status', 'execute_input', 'stream', 'status'] and stdout(pb) == 'B ran\n'
    c = send(kc, where, "ev.set()")
    replies,pub = collect(kc, [a, c])
    ra,rc = replies[a]['content'],replies[c]['content']
    assert ra['status'] == rc['status'] == 'ok'
    assert types(seen + pub[a]) == ['status', 'execute_input', 'stream', 'stream', 'status']
    assert stdout(seen + pub[a]) == 'unlocked True\nA done\n', "A's output stays A's"
    # each cell keeps the number it started with
    assert [ra['execution_count'] + 1, ra['execution_count'] + 2] == [rb['content']['execution_count'], rc['execution_count']]
    assert pb[1]['content']['execution_count'] == rb['content']['execution_count']

def test_unlock_outside_a_cell_is_false(kc):
    code = ("import asyncio, threading\nfrom ipymini import unlock\nr = []\nt = threading.Thread(target=lambda: r.append(unlock()))\n"
            "t.start(); t.join()\nasync def f(): return unlock()\nr.append(await asyncio.create_task(f()))")
    reply,_ = execute(kc, code, user_expressions=dict(r='r', same='get_ipython().kernel.unlock.__func__ is type(get_ipython().kernel).unlock'))
    assert expr(reply, 'r') == '[False, False]' and expr(reply, 'same') == 'True'
    out = subprocess.run([sys.executable, '-c', "import ipymini; print(ipymini.unlock())"], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout == 'False\n'

def test_interrupt_reaches_an_unlocked_cell(kc, where):
    a = send(kc, where, "import asyncio\nfrom ipymini import unlock\nunlock()\nprint('waiting')\nawait asyncio.sleep(60)")
    wait_stream(kc, a, 'waiting')
    assert interrupt(kc)['content'] == dict(status='ok')
    c = get_reply(kc, a)['content']
    assert c['status'] == 'error' and c['ename'] == 'KeyboardInterrupt'
    errs = [m['content'] for m in iopub_until_idle(kc, a) if m['msg_type'] == 'error']
    assert [e['ename'] for e in errs] == ['KeyboardInterrupt']
    assert run(kc, where, "'still serving'")[0]['content']['status'] == 'ok'

def test_unlocked_cell_keeps_its_outcome(kc, where):
    "Interrupted after a later cell ran, a cell that unlocked its queue reports KeyboardInterrupt in its reply as in its error."
    a = send(kc, where, "import asyncio\nfrom ipymini import unlock\nunlock()\nprint('waiting')\nawait asyncio.sleep(60)")
    wait_stream(kc, a, 'waiting')
    assert run(kc, where, "'b'")[0]['content']['status'] == 'ok'
    assert interrupt(kc)['content'] == dict(status='ok')
    c = get_reply(kc, a)['content']
    errs = [m['content'] for m in iopub_until_idle(kc, a) if m['msg_type'] == 'error']
    assert c['ename'] == 'KeyboardInterrupt' and errs == [dict(ename=c['ename'], evalue=c['evalue'], traceback=c['traceback'])]

def test_error_after_unlock_aborts_nothing(kc, tmp_path):
    a = send(kc, None, "import asyncio\nfrom ipymini import unlock\nev,a_runner = asyncio.Event(),asyncio.current_task()\nunlock()\n"
                       "print('waiting')\nawait ev.wait()\n1/0")
    wait_stream(kc, a, 'waiting')
    # B lets A fail and waits until A's runner is done (reply, idle and any abort are behind it), while C is queued behind B
    b,c = send(kc, None, gate(tmp_path/'go') + "ev.set()\nawait asyncio.wait([a_runner])"),send(kc, None, "'after'")
    replies,_ = collect_gated(kc, [a, b, c], tmp_path/'go')
    assert replies[a]['content']['ename'] == 'ZeroDivisionError'
    assert replies[b]['content']['status'] == replies[c]['content']['status'] == 'ok'

AWAIT_UNLOCKED = "import asyncio\nfrom ipymini import unlock\nunlock()\nprint('waiting')\nawait asyncio.sleep(60)"

def delete_while(kc, sid, ids):
    "Delete subshell `sid` while its cells `ids` run; returns the shell replies and IOPub messages of the cells."
    reply,replies,pub = control_during(kc, 'delete_subshell_request', ids, subshell_id=sid)
    assert reply['content'] == dict(status='ok') and states(pub[reply['parent_header']['msg_id']]) == ['busy', 'idle']
    return replies,pub

def thread_count(kc, sid):
    "How many threads of subshell `sid` are left, once each has had TIMEOUT seconds to end."
    name = f'ipymini-subshell-{sid[:8]}'
    reply,_ = execute(kc, f"import threading\nfor t in threading.enumerate():\n    if t.name == {name!r}: t.join({TIMEOUT})",
                      user_expressions=dict(n=f"sum(t.name == {name!r} for t in threading.enumerate())"))
    return int(expr(reply, 'n'))

def test_unlocked_child_ends_with_its_subshell(kc):
    sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
    a = send(kc, sid, AWAIT_UNLOCKED)
    seen = wait_stream(kc, a, 'waiting')
    replies,pub = delete_while(kc, sid, [a])
    assert replies[a]['content']['ename'] == 'KeyboardInterrupt'
    assert types(seen + pub[a]) == ['status', 'execute_input', 'stream', 'error', 'status']
    assert thread_count(kc, sid) == 0

def test_unlocked_child_ends_idle_every_time(kc):
    "Create, unlock, delete, many times: each cell has its reply, one error and one busy and idle (a reader that skipped"
    " messages before the delete's idle lost them about 1 run in 7)."
    for i in range(40):
        sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
        a = send(kc, sid, AWAIT_UNLOCKED)
        seen = wait_stream(kc, a, 'waiting')
        replies,pub = delete_while(kc, sid, [a])
        assert replies[a]['content']['ename'] == 'KeyboardInterrupt', i
        assert types(seen + pub[a]) == ['status', 'execute_input', 'stream', 'error', 'status'], i
        assert pub[a][-2]['content']['ename'] == 'KeyboardInterrupt'

def test_deleted_subshell_waits_for_every_unlocked_cell(kc):
    "The subshell's thread runs on until each cell that unlocked it has sent its reply and idle, even after the runner it left ended."
    sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
    a = send(kc, sid, "import asyncio\nfrom ipymini import unlock\nev = asyncio.Event()\nunlock()\nprint('waiting')\nawait ev.wait()")
    wait_stream(kc, a, 'waiting')
    # B unlocks too, then A ends: the thread's loop is left running the third runner while B awaits in the second; cancelled, B
    # takes several turns of the loop to end, and the third runner ends at once
    b = send(kc, sid, "unlock()\nprint('waiting')\ntry: await asyncio.sleep(60)\n"
                      "finally:\n    for _ in range(10): await asyncio.sleep(0)\n    print('cleaned up')")
    seen = wait_stream(kc, b, 'waiting')
    c = send(kc, sid, "ev.set()")
    replies,_ = collect(kc, [a, c])
    assert replies[a]['content']['status'] == replies[c]['content']['status'] == 'ok'
    replies,pub = delete_while(kc, sid, [b])
    assert replies[b]['content']['status'] == 'error'
    assert types(seen + pub[b]) == ['status', 'execute_input', 'stream', 'stream', 'error', 'status']
    assert stdout(pub[b]) == 'cleaned up\n' and pub[b][-2]['content']['ename'] == 'KeyboardInterrupt'
    assert thread_count(kc, sid) == 0

# the temporary subshell is another thread with its own loop: it sets the cell's asyncio.Event through the cell's loop
BACKGROUND = ("import asyncio, threading\nfrom ipymini import subshell\nev2,order,loop = asyncio.Event(),[],asyncio.get_running_loop()\n"
              "with subshell() as s:\n    print('routing', s)\n    await ev2.wait()\norder.append('A')")

def test_subshell_routes_this_clients_later_requests(kernel, kc):
    km,_ = kernel
    a = send(kc, None, BACKGROUND)
    sid = stdout(wait_stream(kc, a, '\n')).split()[1]
    name = f'ipymini-subshell-{sid[:8]}'
    reply,msgs = run(kc, None, "threading.current_thread().name")  # runs now, beside the awaiting cell
    assert reply['content']['status'] == 'ok' and reply['content']['execution_count'] == 1
    assert [m['content']['data']['text/plain'] for m in msgs if m['msg_type'] == 'execute_result'] == [repr(name)]
    assert sid not in control(kc, 'list_subshell_request')[0]['content']['subshell_id']
    # another client session (a session of its own, as each front end has; it names the client's sockets too)
    other = km.client(session=Session(key=km.session.key, signature_scheme=km.session.signature_scheme))
    other.start_channels()
    try:
        other.wait_for_ready(timeout=TIMEOUT)
        d = other.execute("order.append(threading.current_thread().name)")
        e = send(kc, None, "order.append('E')\nloop.call_soon_threadsafe(ev2.set)")
        replies,pub = collect(kc, [e, a])  # A goes on as soon as E sets its event: either reply may come first
        assert replies[e]['content']['status'] == replies[a]['content']['status'] == 'ok' and stdout(pub[a]) == ''
        assert get_reply(other, d)['content']['status'] == 'ok'
        iopub_until_idle(other, d)
    finally: other.stop_channels()
    code = f"for t in threading.enumerate():\n    if t.name == {name!r}: t.join({TIMEOUT})"
    reply,_ = execute(kc, code, user_expressions=dict(order='order', thread='threading.current_thread().name',
                                                      left=f"[t.name for t in threading.enumerate() if t.name == {name!r}]"))
    assert expr(reply, 'order') == "['E', 'A', 'MainThread']" and expr(reply, 'thread') == "'MainThread'" and expr(reply, 'left') == '[]'

def test_subshell_serves_its_queue_before_ending(kc, tmp_path):
    "Requests routed to the temporary subshell while the body ran are served after it ends, in order."
    a = send(kc, None, "import asyncio, threading\nfrom ipymini import subshell\n"
                       "ev3,left,loop = asyncio.Event(),threading.Event(),asyncio.get_running_loop()\n"
                       "with subshell():\n    print('routing')\n    await ev3.wait()\nleft.set()")
    wait_stream(kc, a, 'routing')
    # B, on the temporary subshell, ends A's body and goes on until A has left it (the subshell is closing); C is queued behind B
    b = send(kc, None, gate(tmp_path/'go') + f"loop.call_soon_threadsafe(ev3.set)\nassert left.wait({TIMEOUT})\nfor i in range(3): print(i)")
    c = send(kc, None, "print('queued')")
    replies,pub = collect_gated(kc, [a, b, c], tmp_path/'go')
    assert all(r['content']['status'] == 'ok' for r in replies.values())
    assert (stdout(pub[b]),stdout(pub[c])) == ('0\n1\n2\n', 'queued\n')

def test_subshell_needs_a_cell(kc):
    out = subprocess.run([sys.executable, '-c', "import ipymini\ntry: ipymini.subshell()\nexcept RuntimeError as e: print('error', e)"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout.startswith('error ')

def test_kernel_in_every_subshell(kc, where):
    reply,_ = run(kc, where, "k = get_ipython().kernel", user_expressions=dict(k='type(k).__module__, callable(k.unlock), callable(k.subshell)'))
    assert expr(reply, 'k') == "('ipymini.kernel', True, True)"

def test_history_per_subshell(kc):
    sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
    try:
        for code in ("x_child = 1", "x_child + 1", "print(x_child)"): assert run(kc, sid, code)[0]['content']['status'] == 'ok'
        def hist(sid, **content):
            mid = send(kc, sid, msg_type='history_request', **dict(dict(output=False, raw=True), **content))
            reply = get_reply(kc, mid)
            iopub_until_idle(kc, mid)
            assert reply['content']['status'] == 'ok'
            return reply['content']['history']
        tail = hist(sid, hist_access_type='tail', n=2)
        session = tail[0][0]
        assert tail == [[session, 2, 'x_child + 1'], [session, 3, 'print(x_child)']]
        # range rows carry the session number they were asked by, as the parent's do
        assert hist(sid, hist_access_type='range', session=0, start=1, stop=3) == [[0, 1, 'x_child = 1'], [0, 2, 'x_child + 1']]
        assert hist(sid, hist_access_type='range', session=session, start=2, stop=3) == [[session, 2, 'x_child + 1']]
        assert hist(sid, hist_access_type='search', pattern='x_child*', output=True) == [[session, 1, ['x_child = 1', None]], [session, 2, ['x_child + 1', None]]]
        assert not any('x_child' in row[2] for row in hist(None, hist_access_type='tail', n=50)), "the parent's history is its own"
        mid = send(kc, 'no-such-subshell', msg_type='history_request', hist_access_type='tail', n=1, output=False, raw=True)
        assert get_reply(kc, mid)['content']['ename'] == 'SubshellNotFound'
    finally: control(kc, 'delete_subshell_request', subshell_id=sid)
