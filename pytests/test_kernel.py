"""The working kernel: kernel_info, connect, execute, IOPub welcome, heartbeat, signatures, shutdown."""
import json, sys, time, uuid, itertools
import pytest, zmq
from jupyter_client.session import Session
from kernel_utils import start_kernel, execute, request, get_reply, iopub_until_idle, types, outputs, parent_id, collect, stdout, TIMEOUT

def test_kernel_info(kc):
    reply,msgs = request(kc, 'kernel_info_request')
    assert reply['msg_type'] == 'kernel_info_reply'
    c = reply['content']
    assert c['status'] == 'ok' and c['implementation'] == 'ipymini' and c['protocol_version'] == '5.5'
    import ipymini
    assert c['implementation_version'] == ipymini.__version__
    li = c['language_info']
    assert li['name'] == 'python' and li['version'] == sys.version.split()[0] and li['file_extension'] == '.py'
    assert li['mimetype'] == 'text/x-python' and li['pygments_lexer'] == 'ipython3' and li['codemirror_mode'] == dict(name='ipython', version=3)
    assert 'IPython' in c['banner'] and all(set(l) == {'text', 'url'} for l in c['help_links'])
    assert isinstance(c['supported_features'], list) and isinstance(c['debugger'], bool)
    assert types(msgs) == ['status', 'status'] and [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']

def test_kernel_info_on_control(kc):
    reply,msgs = request(kc, 'kernel_info_request', channel='control')
    assert reply['msg_type'] == 'kernel_info_reply' and reply['content']['implementation'] == 'ipymini'
    assert [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']

def test_connect(kernel):
    km,kc = kernel
    reply,_ = request(kc, 'connect_request')
    ports = {k: v for k,v in km.get_connection_info().items() if k.endswith('_port')}
    assert reply['msg_type'] == 'connect_reply' and reply['content'] == dict(status='ok', **ports)

def test_execute_stream_and_result(kc):
    reply,msgs = execute(kc, "print('hello')\n6*7")
    n = reply['content']['execution_count']
    assert reply['content'] == dict(status='ok', execution_count=n, user_expressions={}, payload=[])
    assert reply['metadata']['status'] == 'ok' and 'started' in reply['metadata']
    assert types(msgs) == ['status', 'execute_input', 'stream', 'execute_result', 'status']
    assert msgs[1]['content'] == dict(code="print('hello')\n6*7", execution_count=n)
    assert msgs[2]['content'] == dict(name='stdout', text='hello\n')
    assert msgs[3]['content'] == dict(data={'text/plain': '42'}, metadata={}, execution_count=n)
    assert all(parent_id(m) == reply['parent_header']['msg_id'] for m in msgs)

def test_execution_count_increments(kc):
    a,_ = execute(kc, "1")
    b,_ = execute(kc, "2")
    assert b['content']['execution_count'] == a['content']['execution_count'] + 1

def test_stderr_and_order(kc):
    reply,msgs = execute(kc, "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')")
    streams = [(m['content']['name'], m['content']['text']) for m in outputs(msgs)]
    assert streams == [('stdout', 'a\n'), ('stderr', 'b\n'), ('stdout', 'c\n')]

def test_error(kc):
    reply,msgs = execute(kc, "1/0")
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == 'ZeroDivisionError' and c['evalue'] == 'division by zero'
    assert any('ZeroDivisionError' in l for l in c['traceback'])
    assert types(msgs) == ['status', 'execute_input', 'error', 'status']
    err = msgs[2]['content']
    assert (err['ename'], err['evalue'], err['traceback']) == (c['ename'], c['evalue'], c['traceback'])
    assert reply['metadata']['status'] == 'error'

def test_silent(kc):
    before,_ = execute(kc, "0")
    reply,msgs = execute(kc, "print('quiet'); 99", silent=True)
    assert types(msgs) == ['status', 'stream', 'status']
    after,_ = execute(kc, "0")
    assert after['content']['execution_count'] == before['content']['execution_count'] + 1

def test_store_history_false(kc):
    before,_ = execute(kc, "0")
    reply,msgs = execute(kc, "5", store_history=False)
    assert types(msgs) == ['status', 'execute_input', 'execute_result', 'status']
    after,_ = execute(kc, "0")
    assert after['content']['execution_count'] == before['content']['execution_count'] + 1

def test_user_expressions(kc):
    reply,_ = execute(kc, "x = 21", user_expressions=dict(double='x*2', bad='1/0'))
    ue = reply['content']['user_expressions']
    assert ue['double'] == dict(status='ok', data={'text/plain': '42'}, metadata={})
    assert ue['bad']['status'] == 'error' and ue['bad']['ename'] == 'ZeroDivisionError'

def test_pipelined_executes_all_answered():
    "3,000 executes sent at once by a client that reads only afterwards: every reply and every IOPub message arrives, in order."
    with start_kernel() as (km,kc):
        # raw sockets, read as fast as they come; the client's own channels go, as an IOPub subscriber that never reads holds IOPub up
        kc.stop_channels()
        pipelined(km, kc.session)

def pipelined(km, session):
    shell,sub = km.connect_shell(identity=uuid.uuid4().hex.encode()),km.connect_iopub()
    try:
        for sock in (shell, sub): sock.setsockopt(zmq.RCVHWM, 0)
        session.send(shell, 'kernel_info_request', {})
        while not sub.poll(500): session.send(shell, 'kernel_info_request', {})  # until IOPub reaches our SUB socket: its subscription is live
        ids = [session.send(shell, 'execute_request', dict(code=f"print({i})", silent=False, store_history=True, user_expressions={},
                                                              allow_stdin=False, stop_on_error=True))['header']['msg_id'] for i in range(3000)]
        replies,pub = {},{m: [] for m in ids}
        poller = zmq.Poller()
        for sock in (shell, sub): poller.register(sock, zmq.POLLIN)
        deadline,idle = time.monotonic() + 60,0
        while (len(replies) < len(ids) or idle < len(ids)) and time.monotonic() < deadline:
            for sock,_ in poller.poll(1000):
                m = session.recv(sock, mode=zmq.NOBLOCK)[1]
                if m is None or parent_id(m) not in pub: continue
                if sock is shell: replies[parent_id(m)] = m
                else:
                    pub[parent_id(m)].append(m)
                    idle += m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle'
        assert (len(ids) - len(replies), len(ids) - idle) == (0, 0), "replies or idle statuses lost"
        assert [replies[m]['content']['status'] for m in ids] == ['ok'] * len(ids)
        counts = [replies[m]['content']['execution_count'] for m in ids]
        assert counts == list(range(counts[0], counts[0] + len(ids)))
        # a cell's text may go out in two stream messages (print writes the number and the newline apart, and a flush may fall
        # between them): the messages in order, consecutive streams as one, and every cell's text exactly its own
        shapes = {i: ([t for t,_ in itertools.groupby(types(pub[m]))], stdout(pub[m])) for i,m in enumerate(ids)}
        assert {i: v for i,v in shapes.items() if v != (['status', 'execute_input', 'stream', 'status'], f"{i}\n")} == {}
    finally:
        shell.close(0)
        sub.close(0)

def test_iopub_welcome(kernel):
    km,_ = kernel
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b'')
    sub.connect(f"tcp://{km.ip}:{km.iopub_port}")
    try:
        assert sub.poll(int(TIMEOUT * 1000)), "no iopub_welcome"
        s = Session(key=km.session.key, signature_scheme=km.session.signature_scheme)
        _,frames = s.feed_identities(sub.recv_multipart())
        msg = s.deserialize(frames)
        assert msg['header']['msg_type'] == 'iopub_welcome' and msg['content'] == dict(subscription='')
    finally: sub.close(0)

def test_heartbeat(kernel):
    km,_ = kernel
    req = zmq.Context.instance().socket(zmq.REQ)
    req.connect(f"tcp://{km.ip}:{km.hb_port}")
    try:
        req.send(b'ping-ipymini')
        assert req.poll(int(TIMEOUT * 1000)) and req.recv() == b'ping-ipymini'
    finally: req.close(0)

def test_bad_signature_dropped_and_next_answered(kc):
    marker = f"unsigned_{uuid.uuid4().hex}"
    s = Session(key=b'wrong-key', signature_scheme='hmac-sha256')
    bad = s.msg('execute_request', dict(code=f"{marker} = 1", silent=False, store_history=True, user_expressions={}, allow_stdin=False))
    s.send(kc.shell_channel.socket, bad)
    reply,_ = execute(kc, "0", user_expressions=dict(ran=f"'{marker}' in globals()"))
    assert reply['content']['user_expressions']['ran']['data']['text/plain'] == 'False'

@pytest.mark.parametrize('channel,restart', [('shell', False), ('control', True)])
def test_shutdown(channel, restart):
    with start_kernel() as (km,kc):
        reply,msgs = request(kc, 'shutdown_request', channel=channel, restart=restart)
        assert reply['msg_type'] == 'shutdown_reply' and reply['content'] == dict(status='ok', restart=restart)
        assert [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']
        km.provisioner.process.wait(TIMEOUT)
        assert km.provisioner.process.returncode == 0
