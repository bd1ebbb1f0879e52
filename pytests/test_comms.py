"""Comms through the `comm` package: open, msg and close both ways, binary buffers, comm_info, ordering with executes."""
import ast, uuid
import pytest
from kernel_utils import execute, request, get_reply, iopub_until_idle, types, stdout, parent_id, TIMEOUT

def comm_send(kc, msg_type, buffers=(), metadata=None, **content):
    "Send a comm message on shell as a front end does; returns its IOPub messages up to idle (comm messages have no reply)."
    msg = kc.session.msg(msg_type, content, metadata=metadata)
    msg['buffers'] = list(buffers)
    kc.shell_channel.send(msg)
    return iopub_until_idle(kc, msg['header']['msg_id'])

def comms_of(msgs, msg_type=None):
    "The comm messages among `msgs` (content, buffers as bytes)."
    return [(m['msg_type'], m['content'], [bytes(b) for b in m['buffers']]) for m in msgs
            if m['msg_type'].startswith('comm_') and (msg_type is None or m['msg_type'] == msg_type)]

def value(kc, expr):
    "`expr` evaluated in the kernel (a Python literal), through user_expressions."
    reply,_ = execute(kc, "", user_expressions=dict(v=f"repr({expr})"))
    return ast.literal_eval(ast.literal_eval(reply['content']['user_expressions']['v']['data']['text/plain']))

def test_kernel_opens_sends_closes(kc):
    reply,msgs = execute(kc, """from comm import create_comm
c = create_comm(target_name='t-out', data=dict(a=1), metadata=dict(m=2), buffers=[b'open-buf'])
c.send(dict(b=2), buffers=[memoryview(b'msg-buf'), bytearray(b'\\x00\\xff')])
c.close(dict(bye=True))""")
    assert reply['content']['status'] == 'ok'
    comms = comms_of(msgs)
    cid = comms[0][1]['comm_id']
    assert comms == [('comm_open', dict(data=dict(a=1), comm_id=cid, target_name='t-out', target_module=None), [b'open-buf']),
                     ('comm_msg', dict(data=dict(b=2), comm_id=cid), [b'msg-buf', b'\x00\xff']),
                     ('comm_close', dict(data=dict(bye=True), comm_id=cid), [])]
    opened = next(m for m in msgs if m['msg_type'] == 'comm_open')
    assert opened['metadata'] == dict(m=2) and all(parent_id(m) == reply['parent_header']['msg_id'] for m in msgs)

ECHO = """import comm
log = []
def echo_target(c, msg):
    log.append(('open', msg['content']['data'], [b.tobytes() for b in msg['buffers']]))
    def on_msg(m):
        log.append(('msg', m['content']['data'], [b.tobytes() for b in m['buffers']]))
        print('got', m['content']['data'])
        c.send(dict(echo=m['content']['data']), buffers=[b.tobytes()[::-1] for b in m['buffers']])
    c.on_msg(on_msg)
    c.on_close(lambda m: log.append(('close', m['content']['data'])))
comm.get_comm_manager().register_target('echo', echo_target)"""

def test_client_opens_sends_closes(kc):
    reply,_ = execute(kc, ECHO)
    assert reply['content']['status'] == 'ok'
    cid = uuid.uuid4().hex
    msgs = comm_send(kc, 'comm_open', [b'hello'], comm_id=cid, target_name='echo', data=dict(x=1))
    assert types(msgs) == ['status', 'status']
    msgs = comm_send(kc, 'comm_msg', [b'abc', b'\x01\x02'], comm_id=cid, data=dict(n=5))
    # output of the callback and the comm's own messages are parented to the comm_msg that triggered them
    assert types(msgs) == ['status', 'stream', 'comm_msg', 'status'] and stdout(msgs) == "got {'n': 5}\n"
    assert comms_of(msgs) == [('comm_msg', dict(data=dict(echo=dict(n=5)), comm_id=cid), [b'cba', b'\x02\x01'])]
    msgs = comm_send(kc, 'comm_close', comm_id=cid, data=dict(done=1))
    assert types(msgs) == ['status', 'status']
    assert value(kc, 'log') == [('open', {'x': 1}, [b'hello']), ('msg', {'n': 5}, [b'abc', b'\x01\x02']), ('close', {'done': 1})]
    assert value(kc, f"'{cid}' in comm.get_comm_manager().comms") is False

def test_unknown_target_is_closed(kc):
    cid = uuid.uuid4().hex
    msgs = comm_send(kc, 'comm_open', comm_id=cid, target_name='no-such-target', data={})
    assert comms_of(msgs) == [('comm_close', dict(data={}, comm_id=cid), [])]

def test_msg_to_unknown_comm_is_ignored(kc):
    "The comm package's warning reaches the message's stderr, as in ipykernel (whose root logger, like ipymini's, has no handler)."
    msgs = comm_send(kc, 'comm_msg', comm_id='nope', data={})
    assert types(msgs) == ['status', 'stream', 'status'] and msgs[1]['content'] == dict(name='stderr', text='No such comm: nope\n')

@pytest.mark.parametrize('content', [dict(data={}), dict(comm_id=5, data={}), dict(comm_id='x', target_name=None)])
def test_bad_comm_messages_dropped(kc, content):
    "Malformed comm messages are dropped (they have no reply), and the kernel answers the next request."
    comm_send(kc, 'comm_open', **content)
    comm_send(kc, 'comm_msg', **content)
    reply,msgs = execute(kc, "print('alive')")
    assert reply['content']['status'] == 'ok' and stdout(msgs) == 'alive\n'

def test_comm_info(kc):
    execute(kc, ECHO)
    execute(kc, "import comm\ncomm.get_comm_manager().register_target('other', lambda c, m: None)")
    ids = dict(echo=uuid.uuid4().hex, other=uuid.uuid4().hex)
    for t,cid in ids.items(): comm_send(kc, 'comm_open', comm_id=cid, target_name=t, data={})
    reply,msgs = request(kc, 'comm_info_request', target_name='echo')
    c = reply['content']
    assert reply['msg_type'] == 'comm_info_reply' and c['status'] == 'ok' and ids['echo'] in c['comms']
    assert all(v == dict(target_name='echo') for v in c['comms'].values()) and ids['other'] not in c['comms']
    reply,_ = request(kc, 'comm_info_request')
    assert {ids['echo']: dict(target_name='echo'), ids['other']: dict(target_name='other')}.items() <= reply['content']['comms'].items()
    reply,_ = request(kc, 'comm_info_request', target_name=3)
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'BadRequest'
    for cid in ids.values(): comm_send(kc, 'comm_close', comm_id=cid, data={})
    reply,_ = request(kc, 'comm_info_request', target_name='echo')
    assert ids['echo'] not in reply['content']['comms']

def test_comm_msg_runs_in_order_with_execute(kc):
    "A comm_msg sent right after an execute is handled after it, as in ipykernel: the callback sees what the cell set."
    execute(kc, ECHO)
    cid = uuid.uuid4().hex
    comm_send(kc, 'comm_open', comm_id=cid, target_name='echo', data={})
    execute(kc, "def on_msg(m): print('flag is', flag)\ncomm.get_comm_manager().get_comm(%r).on_msg(on_msg)" % cid)
    exec_id = kc.execute("import time\ntime.sleep(0.3)\nflag = 'set'")
    msgs = comm_send(kc, 'comm_msg', comm_id=cid, data={})
    assert stdout(msgs) == 'flag is set\n'
    assert get_reply(kc, exec_id)['content']['status'] == 'ok'
