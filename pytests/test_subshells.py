"""Kernel subshells (JEP 91): create/list/delete on control, routing by the header's subshell_id, concurrency, per-subshell state."""
import re, time, uuid
import pytest
from kernel_utils import execute, request, get_reply, iopub_until_idle, types, outputs, stdout, parent_id, TIMEOUT, send, run, collect, wait_stream, states, control, interrupt

def shell_replies(kc, ids, replies=None):
    "Read shell replies (into `replies`, keyed by parent msg_id, whatever they answer) until each of `ids` has one."
    replies,deadline = {} if replies is None else replies,time.monotonic() + TIMEOUT
    while not all(i in replies for i in ids):
        m = kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        replies[parent_id(m)] = m
    return replies

def iopub_until_idles(kc, ids):
    "The IOPub messages of each of `ids`, by parent msg_id, until each has its idle."
    pub,deadline = {i: [] for i in ids},time.monotonic() + TIMEOUT
    while not all(states(msgs)[-1:] == ['idle'] for msgs in pub.values()):
        m = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if parent_id(m) in pub: pub[parent_id(m)].append(m)
    return pub

def control_during(kc, msg_type, ids, **content):
    """Send a control request while the shell requests `ids` run; returns (its reply, {id: shell reply}, {parent: IOPub messages up
    to its idle}) for it and each of `ids`. `control` would skip every IOPub message before the request's idle, and a cell it ends
    (deleting a subshell, an interrupt) may publish its error and idle before that."""
    req = kc.session.msg(msg_type, content)
    kc.control_channel.send(req)
    mid = req['header']['msg_id']
    reply = get_reply(kc, mid, 'control')
    replies = shell_replies(kc, ids)
    return reply,{i: replies[i] for i in ids},iopub_until_idles(kc, [mid, *ids])

def gate(path):
    "Code that waits until the file `path` exists: a cell held until the test has sent what must be queued behind it."
    return f"import os, time\nwhile not os.path.exists({str(path)!r}): time.sleep(0.001)\n"

def collect_gated(kc, ids, path):
    """`collect` for requests `ids`, already sent, of which one waits on `gate(path)`: `path` is created once the kernel has read
    them all (the shell thread reads a client's requests in order: a kernel_info_request sent after them is answered after)."""
    mid = send(kc, None, msg_type='kernel_info_request')
    replies = shell_replies(kc, [mid])
    open(path, 'w').close()
    shell_replies(kc, ids, replies)
    return {i: replies[i] for i in ids},iopub_until_idles(kc, ids)

def create(kc):
    reply,msgs = control(kc, 'create_subshell_request')
    assert reply['msg_type'] == 'create_subshell_reply' and states(msgs) == ['busy', 'idle']
    return reply['content']['subshell_id']

@pytest.fixture
def sid(kc):
    "A fresh child subshell, deleted afterwards."
    sid = create(kc)
    yield sid
    control(kc, 'delete_subshell_request', subshell_id=sid)

def test_kernel_info_advertises_subshells(kc):
    reply,_ = request(kc, 'kernel_info_request')
    assert 'kernel subshells' in reply['content']['supported_features'] and reply['content']['protocol_version'] == '5.5'

def test_create_list_delete(kc):
    before = control(kc, 'list_subshell_request')[0]['content']['subshell_id']
    reply,_ = control(kc, 'create_subshell_request')
    sid = reply['content']['subshell_id']
    assert reply['content'] == dict(status='ok', subshell_id=sid) and str(uuid.UUID(sid)) == sid and sid not in before
    reply,msgs = control(kc, 'list_subshell_request')
    assert reply['msg_type'] == 'list_subshell_reply' and reply['content'] == dict(status='ok', subshell_id=before + [sid])
    assert states(msgs) == ['busy', 'idle']
    reply,msgs = control(kc, 'delete_subshell_request', subshell_id=sid)
    assert reply['msg_type'] == 'delete_subshell_reply' and reply['content'] == dict(status='ok') and states(msgs) == ['busy', 'idle']
    assert control(kc, 'list_subshell_request')[0]['content'] == dict(status='ok', subshell_id=before)
    reply,msgs = run(kc, sid, "1")
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'SubshellNotFound' and types(msgs) == ['status', 'status']

@pytest.mark.parametrize('bad', ['no-such-subshell', 5, ['x']])
def test_unknown_subshell_id(kc, bad):
    reply,msgs = run(kc, bad, "print('never')")
    c = reply['content']
    assert reply['msg_type'] == 'execute_reply' and c['status'] == 'error' and c['ename'] == 'SubshellNotFound'
    assert types(msgs) == ['status', 'status'] and states(msgs) == ['busy', 'idle']
    mid = send(kc, bad, msg_type='kernel_info_request')
    reply = get_reply(kc, mid)
    assert reply['msg_type'] == 'kernel_info_reply' and reply['content']['ename'] == 'SubshellNotFound'
    assert states(iopub_until_idle(kc, mid)) == ['busy', 'idle']

def test_delete_bad_requests(kc):
    reply,msgs = control(kc, 'delete_subshell_request', subshell_id='no-such-subshell')
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'SubshellNotFound' and states(msgs) == ['busy', 'idle']
    reply,_ = control(kc, 'delete_subshell_request')
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'BadRequest'

def test_execute_on_child(kc, sid):
    execute(kc, "shared_by_parent = 21")
    reply,msgs = run(kc, sid, "import threading\nprint(threading.current_thread().name)\nshared_by_child = shared_by_parent * 2\nshared_by_child")
    mid = reply['parent_header']['msg_id']
    assert reply['content'] == dict(status='ok', execution_count=1, user_expressions={}, payload=[])
    assert types(msgs) == ['status', 'execute_input', 'stream', 'execute_result', 'status'] and all(parent_id(m) == mid for m in msgs)
    assert msgs[1]['content']['execution_count'] == 1 and stdout(msgs) == f"ipymini-subshell-{sid[:8]}\n"
    assert msgs[3]['content'] == dict(data={'text/plain': '42'}, metadata={}, execution_count=1)
    reply,_ = execute(kc, "0", user_expressions=dict(v='shared_by_child'))
    assert reply['content']['user_expressions']['v']['data'] == {'text/plain': '42'}

def test_error_in_child(kc, sid):
    reply,msgs = run(kc, sid, "1/0")
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'ZeroDivisionError' and reply['content']['execution_count'] == 1
    assert types(msgs) == ['status', 'execute_input', 'error', 'status'] and msgs[2]['content']['ename'] == 'ZeroDivisionError'
    reply,_ = run(kc, sid, "'after'")
    assert reply['content']['status'] == 'ok' and reply['content']['execution_count'] == 2

def test_per_subshell_execution_counts(kc, sid):
    n = execute(kc, "0")[0]['content']['execution_count']
    assert [run(kc, sid, "1")[0]['content']['execution_count'] for _ in range(3)] == [1, 2, 3]
    other = create(kc)
    try: assert run(kc, other, "1")[0]['content']['execution_count'] == 1
    finally: control(kc, 'delete_subshell_request', subshell_id=other)
    reply,msgs = execute(kc, "0")
    assert reply['content']['execution_count'] == n + 1 and msgs[1]['content']['execution_count'] == n + 1
    # silent and store_history=False leave the count alone, as on the parent
    run(kc, sid, "1", silent=True)
    run(kc, sid, "1", store_history=False)
    assert run(kc, sid, "1")[0]['content']['execution_count'] == 4

def test_child_leaves_parent_history_and_outputs(kc, sid):
    execute(kc, "'parent value'")
    run(kc, sid, "child_marker = 'child value'\nchild_marker")
    reply,_ = execute(kc, "pass", user_expressions=dict(u='_', out='Out[max(Out)]', last_in='In[-2]'))
    ue = reply['content']['user_expressions']
    assert ue['u']['data']['text/plain'] == "'parent value'" and ue['out']['data']['text/plain'] == "'parent value'"
    assert ue['last_in']['data']['text/plain'] == "\"'parent value'\""
    hist,_ = request(kc, 'history_request', hist_access_type='tail', n=5, raw=True, output=False)
    assert not any('child_marker' in h[2] for h in hist['content']['history'])

def test_concurrent_subshells(kc):
    "Cells on three subshells run at once: each blocks its thread until all three have started (in turn, the first would time out)."
    a,b = create(kc),create(kc)
    try:
        execute(kc, f"import threading\nall_started = threading.Barrier(3, timeout={TIMEOUT})")
        ids = [send(kc, s, "n = all_started.wait()") for s in (a, b, None)]
        replies,pub = collect(kc, ids)
        assert all(replies[i]['content']['status'] == 'ok' for i in ids)
        for i in ids:  # each request's status messages carry its own header, though all three ran at once
            assert types(pub[i]) == ['status', 'execute_input', 'status'] and states(pub[i]) == ['busy', 'idle']
            assert all(m['parent_header']['msg_id'] == i for m in pub[i])
        assert [pub[i][0]['parent_header'].get('subshell_id') for i in ids] == [a, b, None]
    finally:
        for s in (a, b): control(kc, 'delete_subshell_request', subshell_id=s)

def test_child_runs_while_parent_busy(kc, sid):
    busy = send(kc, None, "import time\nprint('parent started')\ntime.sleep(30)")
    wait_stream(kc, busy, 'parent started')
    reply,msgs = run(kc, sid, "'child answered'")
    assert reply['content']['status'] == 'ok' and msgs[-2]['content']['data'] == {'text/plain': "'child answered'"}
    interrupt(kc)
    assert get_reply(kc, busy)['content']['ename'] == 'KeyboardInterrupt'
    iopub_until_idle(kc, busy)

def test_in_order_within_subshell(kc, sid, tmp_path):
    "Requests queued behind a running cell run after it, in order."
    run(kc, sid, "order = []")
    ids = [send(kc, sid, (gate(tmp_path/'go') if i == 0 else '') + f"order.append({i})\nprint({i})") for i in range(3)]
    replies,pub = collect_gated(kc, ids, tmp_path/'go')
    assert [replies[i]['content']['execution_count'] for i in ids] == [2, 3, 4]
    assert [stdout(pub[i]) for i in ids] == ['0\n', '1\n', '2\n']
    reply,_ = run(kc, sid, "0", user_expressions=dict(order='order'))
    assert reply['content']['user_expressions']['order']['data']['text/plain'] == '[0, 1, 2]'

def test_ordered_status_within_subshell(kc, sid, tmp_path):
    "A subshell's second request, queued behind the first, goes busy only after the first went idle."
    ids = [send(kc, sid, gate(tmp_path/'go')), send(kc, sid, "1")]
    shell_replies(kc, [send(kc, None, msg_type='kernel_info_request')])  # both are queued now (see collect_gated)
    open(tmp_path/'go', 'w').close()
    seq,deadline = [],time.monotonic() + TIMEOUT
    while len([s for s in seq if s[1] == 'idle']) < 2:
        m = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if m['msg_type'] == 'status' and parent_id(m) in ids: seq.append((ids.index(parent_id(m)), m['content']['execution_state']))
    assert seq == [(0, 'busy'), (0, 'idle'), (1, 'busy'), (1, 'idle')]
    shell_replies(kc, ids)

def test_stop_on_error_is_per_subshell(kc, sid, tmp_path):
    ids = [send(kc, sid, gate(tmp_path/'go') + "1/0"), send(kc, sid, "aborted_here = 1"), send(kc, None, "parent_ran = 1")]
    replies,_ = collect_gated(kc, ids, tmp_path/'go')
    assert [replies[i]['content']['status'] for i in ids] == ['error', 'aborted', 'ok']
    assert run(kc, sid, "1")[0]['content']['status'] == 'ok'

def test_interrupt_reaches_child(kc, sid):
    mid = send(kc, sid, "import time\nprint('looping')\nwhile True: time.sleep(0.01)")
    wait_stream(kc, mid, 'looping')
    assert interrupt(kc)['content'] == dict(status='ok')
    reply = get_reply(kc, mid)
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'KeyboardInterrupt'
    msgs = iopub_until_idle(kc, mid)
    assert msgs[-2]['msg_type'] == 'error' and msgs[-2]['content']['ename'] == 'KeyboardInterrupt'
    assert run(kc, sid, "'still serving'")[0]['content']['status'] == 'ok'

def test_interrupt_reaches_async_child(kc, sid):
    mid = send(kc, sid, "import asyncio\nprint('waiting')\nawait asyncio.sleep(60)")
    wait_stream(kc, mid, 'waiting')
    interrupt(kc)
    reply = get_reply(kc, mid)
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'KeyboardInterrupt'
    iopub_until_idle(kc, mid)
    assert run(kc, sid, "'still serving'")[0]['content']['status'] == 'ok'

def test_delete_running_subshell(kc):
    sid = create(kc)
    running = send(kc, sid, "import time\nprint('looping')\nwhile True: time.sleep(0.01)")
    queued = send(kc, sid, "never_ran = 1")
    wait_stream(kc, running, 'looping')
    reply,replies,pub = control_during(kc, 'delete_subshell_request', [running, queued], subshell_id=sid)
    assert reply['content'] == dict(status='ok')
    assert replies[running]['content']['ename'] == 'KeyboardInterrupt' and states(pub[running])[-1] == 'idle'
    assert replies[queued]['content']['ename'] == 'SubshellNotFound' and types(pub[queued]) == ['status', 'status']
    assert run(kc, sid, "1")[0]['content']['ename'] == 'SubshellNotFound'
    assert sid not in control(kc, 'list_subshell_request')[0]['content']['subshell_id']
    reply,_ = execute(kc, "0", user_expressions=dict(v="'never_ran' in globals()"))
    assert reply['content']['user_expressions']['v']['data']['text/plain'] == 'False'

def test_interrupt_child_while_printing(kc, sid):
    "An interrupt that arrives while a child cell prints loses and repeats no output."
    mid = send(kc, sid, "i = 0\nwhile True:\n    i += 1\n    print(i)")
    seen = wait_stream(kc, mid, '\n100\n')
    assert interrupt(kc)['content'] == dict(status='ok')
    assert get_reply(kc, mid)['content']['ename'] == 'KeyboardInterrupt'
    msgs = seen + iopub_until_idle(kc, mid)
    text = stdout(msgs)
    held = [m['content']['data']['text/plain'] for m in msgs if m['msg_type'] in ('display_data', 'update_display_data')]
    if held:  # past the output limit (a loaded machine prints on before the interrupt lands): the file has the whole text
        with open(re.search(r'the whole text is in (\S+)\. ', held[-1])[1]) as f: text = f.read()
    lines = text.split('\n')
    n = int(lines[-2])
    assert lines == [str(i) for i in range(1, n + 1)] + [''], "output lost or repeated"
    reply,_ = run(kc, sid, "0", user_expressions=dict(i='i'))
    assert reply['content']['user_expressions']['i']['data']['text/plain'] == str(n)

def test_interrupt_child_waiting_in_input(kc, sid):
    mid = send(kc, sid, "v = input('value? ')", allow_stdin=True)
    req = kc.get_stdin_msg(timeout=TIMEOUT)
    assert req['msg_type'] == 'input_request' and parent_id(req) == mid and req['content']['prompt'] == 'value? '
    assert interrupt(kc)['content'] == dict(status='ok')
    reply = get_reply(kc, mid)
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'KeyboardInterrupt'
    iopub_until_idle(kc, mid)
    assert run(kc, sid, "'still serving'")[0]['content']['status'] == 'ok'

