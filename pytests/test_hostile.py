"""Bad input on shell, control and stdin: each is logged, answered with an error reply where it can be, never executed
unsigned, a replay runs once, and the next good message is answered. Also IOPub under a flood and a slow subscriber."""
import json, os, uuid
import pytest, zmq, psutil
from jupyter_client.session import Session
from kernel_utils import start_kernel, execute, request, get_reply, iopub_until_idle, types, parent_id, stdout, TIMEOUT

MAX = 1_000_000  # IPYMINI_MAX_MESSAGE_BYTES for the module's kernel

@pytest.fixture(scope='module')
def hk(tmp_path_factory):
    "A kernel whose stderr (its log) goes to a file: (km, kc, log path)."
    log = tmp_path_factory.mktemp('hostile')/'kernel.log'
    with open(log, 'w') as f, start_kernel(env=dict(IPYMINI_MAX_MESSAGE_BYTES=str(MAX)), stderr=f) as (km,kc): yield km,kc,log

class Raw:
    "A raw DEALER on one of the kernel's channels, signing with the kernel's key (or any other)."
    def __init__(self, km, channel, key=None):
        self.sock = getattr(km, f'connect_{channel}')()
        self.s = Session(key=km.session.key if key is None else key, signature_scheme=km.session.signature_scheme)

    def msg(self, msg_type, content=None, **kw): return self.s.msg(msg_type, {} if content is None else content, **kw)

    def frames(self, msg):
        "The frames after the routing identity: delimiter, signature, header, parent, metadata, content."
        return self.s.serialize(msg)

    def sign(self, parts):
        "A delimiter and a valid signature in front of four raw (possibly broken) JSON frames."
        return [b'<IDS|MSG>', self.s.sign(parts), *parts]

    def send(self, frames): self.sock.send_multipart(frames)

    def recv(self, timeout=TIMEOUT):
        assert self.sock.poll(int(timeout * 1000)), "no reply"
        _,frames = self.s.feed_identities(self.sock.recv_multipart())
        return self.s.deserialize(frames)

    def answered(self, msg_type='kernel_info_request'):
        "Send a good request: its reply must be the next message here (nothing came back for the bad one before it)."
        m = self.msg(msg_type)
        self.send(self.frames(m))
        r = self.recv()
        assert r['parent_header']['msg_id'] == m['header']['msg_id'] and r['msg_type'] == msg_type.replace('_request', '_reply')
        return r

    def close(self): self.sock.close(0)

@pytest.fixture(params=['shell', 'control'])  # stdin has no requests to answer: see test_input_after_garbage_on_stdin
def raw(request, hk):
    r = Raw(hk[0], request.param)
    yield r
    r.close()

def header(raw, msg_type='kernel_info_request'): return raw.s.pack(raw.msg(msg_type)['header'])

def dropped_cases(raw):
    "Messages no reply can be addressed to: unsigned, wrongly signed, misframed, or with an unreadable header."
    good = raw.frames(raw.msg('kernel_info_request'))
    h = header(raw)
    other = Session(key=b'not-the-key', signature_scheme='hmac-sha256')
    return dict(
        wrong_signature=[good[0], b'0' * 64, *good[2:]],
        no_signature=[good[0], b'', *good[2:]],
        other_key=other.serialize(other.msg('kernel_info_request', {})),
        too_few_frames=good[:4],
        no_delimiter=good[1:],
        header_not_json=raw.sign([b'{"msg_type": "' + uuid.uuid4().hex.encode(), b'{}', b'{}', b'{}']),  # unique: the same signature twice is a replay
        header_not_utf8=raw.sign([b'\xff\xfe' + h, b'{}', b'{}', b'{}']),
        header_not_object=raw.sign([f'["{uuid.uuid4().hex}"]'.encode(), b'{}', b'{}', b'{}']),
        msg_type_not_string=raw.sign([h.replace(b'"kernel_info_request"', b'42'), b'{}', b'{}', b'{}']),
        only_delimiter=[b'<IDS|MSG>'],
        empty_frames=[b'', b''],
        garbage=[os.urandom(64) for _ in range(7)],
    )

def test_dropped_and_next_answered(raw):
    for name,frames in dropped_cases(raw).items():
        raw.send(frames)
        raw.answered()  # the next message back is the good request's reply: the bad one got none

ERRORS = [  # (what is sent, ename, words of evalue)
    ('content_not_json', 'BadMessage', 'content is not valid JSON'),
    ('content_not_utf8', 'BadMessage', 'content is not valid UTF-8'),
    ('content_not_object', 'BadMessage', 'content must be a JSON object, not list'),
    ('parent_not_object', 'BadMessage', 'parent_header must be a JSON object'),
    ('metadata_not_object', 'BadMessage', 'metadata must be a JSON object'),
    ('unknown_request', 'UnknownMessageType', "unknown message type 'no_such_request'"),
]

def error_case(raw, name):
    h = header(raw, 'no_such_request' if name == 'unknown_request' else 'kernel_info_request')
    parts = dict(content_not_json=[h, b'{}', b'{}', b'{"a": '], content_not_utf8=[h, b'{}', b'{}', b'{"a": "\xff"}'],
                 content_not_object=[h, b'{}', b'{}', b'[1, 2]'], parent_not_object=[h, b'"x"', b'{}', b'{}'],
                 metadata_not_object=[h, b'{}', b'null', b'{}'], unknown_request=[h, b'{}', b'{}', b'{}'])[name]
    return json.loads(h)['msg_id'],raw.sign(parts)

@pytest.mark.parametrize('name,ename,words', ERRORS, ids=[e[0] for e in ERRORS])
def test_error_reply_then_next_answered(raw, name, ename, words):
    mid,frames = error_case(raw, name)
    raw.send(frames)
    r = raw.recv()
    assert r['parent_header']['msg_id'] == mid and r['msg_type'] == r['parent_header']['msg_type'].replace('_request', '_reply')
    c = r['content']
    assert c['status'] == 'error' and c['ename'] == ename and words in c['evalue'], c
    raw.answered()

def marker_code(marker):
    "Code that leaves a trace (a variable and a file) if it ever runs."
    return f"globals()['{marker}'] = 1; open(r'/tmp/{marker}', 'w').close()"

def ran(kc, marker):
    reply,_ = execute(kc, "", user_expressions=dict(ran=f"'{marker}' in globals()"))
    return reply['content']['user_expressions']['ran']['data']['text/plain'] == 'True' or os.path.exists(f'/tmp/{marker}')

def execute_content(code, **kw): return {**dict(code=code, silent=False, store_history=False, user_expressions={}, allow_stdin=False), **kw}

BAD_FIELDS = [  # content, words of evalue
    (dict(code=42), "'code' must be a str"),
    (dict(), "'code' must be a str"),
    (execute_content('{m}', silent='yes'), "'silent' must be a bool"),
    (execute_content('{m}', user_expressions=[1]), "'user_expressions' must be a dict"),
    (execute_content('{m}', store_history=1), "'store_history' must be a bool"),
]

@pytest.mark.parametrize('content,words', BAD_FIELDS, ids=['code_int', 'code_missing', 'silent_str', 'user_expressions_list', 'store_history_int'])
def test_execute_bad_fields(hk, content, words):
    km,kc,_ = hk
    raw = Raw(km, 'shell')
    marker = f"m_{uuid.uuid4().hex}"
    content = {k: (v.format(m=marker_code(marker)) if isinstance(v, str) else v) for k,v in content.items()}
    m = raw.msg('execute_request', content)
    raw.send(raw.frames(m))
    r = raw.recv()
    assert r['parent_header']['msg_id'] == m['header']['msg_id'] and r['msg_type'] == 'execute_reply'
    assert r['content']['status'] == 'error' and r['content']['ename'] == 'BadRequest' and words in r['content']['evalue']
    raw.answered()
    raw.close()
    assert not ran(kc, marker)

@pytest.mark.parametrize('msg_type', ['complete_request', 'inspect_request'])
@pytest.mark.parametrize('pos,words', [(99, 'past the end of the code'), (-1, "'cursor_pos' must be a non-negative int"), ('3', "'cursor_pos' must be")])
def test_cursor_pos_out_of_range(kc, msg_type, pos, words):
    reply,msgs = request(kc, msg_type, code='abc', cursor_pos=pos)
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == 'BadRequest' and words in c['evalue']
    assert [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']
    good,_ = request(kc, msg_type, code='abc', cursor_pos=3)
    assert good['content']['status'] == 'ok'

def test_non_request_unknown_type_dropped(raw):
    raw.send(raw.frames(raw.msg('no_such_thing')))
    raw.answered()

def test_unsigned_never_executed(hk):
    km,kc,_ = hk
    raw = Raw(km, 'shell')
    marker = f"m_{uuid.uuid4().hex}"
    m = raw.msg('execute_request', execute_content(marker_code(marker)))
    good = raw.frames(m)
    wrong = Session(key=b'wrong', signature_scheme='hmac-sha256')
    for frames in ([good[0], b'', *good[2:]], [good[0], b'f' * 64, *good[2:]], wrong.serialize(m),
                   [good[0], good[1], good[2].replace(b'"execute_request"', b'"execute_request" '), *good[3:]],  # header touched
                   [good[0], good[1], *good[2:5], good[5].replace(b'globals', b'GLOBALS')]):  # content touched
        raw.send(frames)
    raw.answered()
    raw.close()
    assert not ran(kc, marker)

def test_replayed_signature_runs_once(hk):
    km,kc,_ = hk
    raw = Raw(km, 'shell')
    name = f"n_{uuid.uuid4().hex}"
    execute(kc, f"{name} = 0")
    m = raw.msg('execute_request', execute_content(f"{name} += 1"))
    frames = raw.frames(m)
    for _ in range(3): raw.send(frames)
    raw.send([*frames, b'extra buffer'])  # buffers are not signed: the same signature with another frame is still a replay
    r = raw.recv()
    assert r['parent_header']['msg_id'] == m['header']['msg_id'] and r['content']['status'] == 'ok'
    raw.answered()  # the next reply is the good request's: the replays got none
    raw.close()
    reply,_ = execute(kc, "", user_expressions=dict(n=name))
    assert reply['content']['user_expressions']['n']['data']['text/plain'] == '1'

def test_too_large_answered_not_run(hk):
    km,kc,_ = hk
    raw = Raw(km, 'shell')
    marker = f"m_{uuid.uuid4().hex}"
    m = raw.msg('execute_request', execute_content(marker_code(marker) + '#' + 'x' * MAX))
    raw.send(raw.frames(m))
    r = raw.recv()
    c = r['content']
    assert r['parent_header']['msg_id'] == m['header']['msg_id'] and r['msg_type'] == 'execute_reply'
    assert c['status'] == 'error' and c['ename'] == 'MessageTooLarge' and f'larger than {MAX} bytes' in c['evalue']
    raw.answered()
    m = raw.msg('execute_request', execute_content(marker_code(marker) + '#' + 'x' * (2 * MAX)))
    raw.send(raw.frames(m))  # past twice the limit: libzmq drops the connection before the message is whole
    raw.close()
    raw = Raw(km, 'shell')  # what the old connection still had queued went down with it; a new one is served
    raw.answered()
    raw.close()
    assert not ran(kc, marker)

def test_lone_surrogate_round_trips(hk):
    "Half a surrogate pair, from a client's JSON escape or from user code, has no UTF-8 form: it goes back escaped, the reply valid."
    km,kc,_ = hk
    reply,msgs = execute(kc, "print('\\ud800')")
    assert reply['content']['status'] == 'ok' and stdout(msgs) == '\ud800\n'
    raw = Raw(km, 'shell')
    h = header(raw, 'execute_request')
    raw.send(raw.sign([h, b'{}', b'{}', b'{"code": "print(len(\'\\\\udcff\'))  # \\ud83d", "silent": false}']))
    r,mid = raw.recv(),json.loads(h)['msg_id']
    assert r['parent_header']['msg_id'] == mid and r['msg_type'] == 'execute_reply'
    assert r['content']['status'] == 'error' and 'surrogate' in r['content']['evalue'], r['content']  # Python cannot compile it
    msgs = iopub_until_idle(kc, mid)
    assert types(msgs)[:2] == ['status', 'execute_input'] and msgs[-1]['content']['execution_state'] == 'idle' and msgs[1]['content']['code'] == "print(len('\\udcff'))  # \ud83d"
    raw.answered()
    raw.close()

def test_input_after_garbage_on_stdin(hk):
    pytest.importorskip('ipymini.stdin')  # input() support lives there
    km,kc,_ = hk
    raw = Raw(km, 'stdin')
    for frames in dropped_cases(raw).values(): raw.send(frames)
    raw.send(raw.sign([header(raw, 'input_reply'), b'{}', b'{}', b'{"value": 5}']))  # a reply to no request
    for name,*_ in ERRORS: raw.send(error_case(raw, name)[1])
    mid,frames = error_case(raw, 'content_not_json')
    raw.send(frames)
    while raw.recv()['parent_header']['msg_id'] != mid: pass  # stdin has read all of the above
    raw.close()
    msg_id = kc.execute("v = input('name? ')", allow_stdin=True)
    req = kc.get_stdin_msg(timeout=TIMEOUT)
    assert req['msg_type'] == 'input_request' and req['content']['prompt'] == 'name? '
    kc.input('ipymini')
    assert get_reply(kc, msg_id)['content']['status'] == 'ok'
    reply,_ = execute(kc, "", user_expressions=dict(v='v'))
    assert reply['content']['user_expressions']['v']['data']['text/plain'] == "'ipymini'"

def test_each_problem_logged(hk):
    km,kc,log = hk
    raw = Raw(km, 'control')
    cases = dropped_cases(raw)
    for name in ('wrong_signature', 'too_few_frames', 'no_delimiter', 'header_not_json'): raw.send(cases[name])
    m = raw.msg('kernel_info_request')
    raw.send(raw.frames(m))
    raw.send(raw.frames(m))  # a replay
    raw.recv()
    raw.answered()
    raw.close()
    text = log.read_text()
    for words in ('invalid message signature', 'too few frames', 'missing <IDS|MSG> delimiter', 'header is not valid JSON', 'replayed message signature'):
        assert f"control: dropped message" in text and words in text, words

# ---- IOPub under a flood ----

def test_flood_nothing_lost(kc):
    "A cell printing as fast as it can, read by a client that keeps up: every line arrives, in order, then idle."
    reply,msgs = execute(kc, "for i in range(200_000): print(i)", timeout=120)
    assert reply['content']['status'] == 'ok'
    assert stdout(msgs) == ''.join(f"{i}\n" for i in range(200_000))
    assert types(msgs)[:2] == ['status', 'execute_input'] and msgs[-1]['content']['execution_state'] == 'idle'

def test_flood_displays_nothing_lost(kc):
    reply,msgs = execute(kc, "from IPython.display import display\nfor i in range(3000): display(i)", timeout=120)
    assert [m['content']['data']['text/plain'] for m in msgs if m['msg_type'] == 'display_data'] == [str(i) for i in range(3000)]

def slow_sub(km):
    "A subscriber that reads nothing until told: its queue fills at once."
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.RCVBUF, 4096)
    sub.setsockopt(zmq.SUBSCRIBE, b'')
    sub.connect(f"tcp://{km.ip}:{km.iopub_port}")
    s = Session(key=km.session.key, signature_scheme=km.session.signature_scheme)
    assert sub.poll(int(TIMEOUT * 1000))
    return sub,s

def read_until_idle(sub, s, msg_id):
    out = []
    while True:
        assert sub.poll(int(TIMEOUT * 1000)), f"no idle; got {[m['msg_type'] for m in out][-5:]}"
        _,frames = s.feed_identities(sub.recv_multipart())
        m = s.deserialize(frames)
        if parent_id(m) != msg_id: continue
        out.append(m)
        if m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle': return out

FLOOD_ENV = dict(IPYMINI_IOPUB_HWM='8', IPYMINI_IOPUB_BUFFER_MB='4', IPYMINI_IOPUB_STALL_S='60',
                 IPYMINI_OUTPUT_LIMIT_MB='0')  # the flood reaches IOPub's flow control, not held back by the output limit

def test_slow_subscriber_bounded_and_status_kept():
    "A subscriber that reads nothing while a cell prints 200 MB: kernel memory stays bounded, output is dropped with a note, status is not."
    with start_kernel(env=FLOOD_ENV) as (km,kc):
        sub,s = slow_sub(km)
        proc = psutil.Process(km.provisioner.process.pid)
        before = proc.memory_info().rss
        msg_id = kc.execute("s = 'x' * (1 << 20) + '\\n'\nfor i in range(200): print(s, end='')")
        assert get_reply(kc, msg_id, timeout=120)['content']['status'] == 'ok'  # shell replies do not wait for IOPub
        grown = proc.memory_info().rss - before
        assert grown < 60 * 2**20, f"kernel grew {grown >> 20} MB"
        for got in (read_until_idle(sub, s, msg_id), iopub_until_idle(kc, msg_id)):
            assert [m['content']['execution_state'] for m in got if m['msg_type'] == 'status'] == ['busy', 'idle']
            assert types(got)[:2] == ['status', 'execute_input']
            notes = [m for m in got if m['msg_type'] == 'stream' and m['content']['name'] == 'stderr']
            assert len(notes) == 1 and 'bytes of output dropped' in notes[0]['content']['text'] and got[-2] is notes[0]
            n = len(stdout(got))
            assert 0 < n < 200 * (1 << 20)
        reply,msgs = execute(kc, "print('after')")  # the client catches up, and nothing is lost any more
        assert stdout(msgs) == 'after\n'
        sub.close(0)

def test_stalled_subscriber_left_behind():
    "A subscriber that takes nothing for IPYMINI_IOPUB_STALL_S no longer holds up the others."
    with start_kernel(env=dict(FLOOD_ENV, IPYMINI_IOPUB_STALL_S='1')) as (km,kc):
        sub,s = slow_sub(km)
        reply,msgs = execute(kc, "s = 'x' * (1 << 20) + '\\n'\nfor i in range(50): print(s, end='')", timeout=60)
        assert reply['content']['status'] == 'ok' and msgs[-1]['content']['execution_state'] == 'idle'
        reply,msgs = execute(kc, "print('next')")
        assert stdout(msgs) == 'next\n'
        sub.close(0)
