"""Thousands of random and mutated frames at a live kernel, on shell, control and stdin, with good requests among them:
the kernel must answer every good request, run nothing unsigned, run a replayed message once, and still answer after."""
import os, random, uuid
import pytest, zmq
from hypothesis import given, settings, HealthCheck, strategies as st
from jupyter_client.session import Session
from kernel_utils import start_kernel, execute, TIMEOUT

pytestmark = pytest.mark.slow  # thousands of frames at one kernel

MARKER = f"_pwned_{uuid.uuid4().hex}"
MARK_CODE = f"globals()['{MARKER}'] = 1; open('/tmp/{MARKER}', 'w').close()"
COUNTER = '_fuzz_good'
# signed requests with random content: none of these run user code, stop or interrupt the kernel
SAFE_TYPES = ['kernel_info_request', 'complete_request', 'inspect_request', 'is_complete_request', 'history_request', 'comm_info_request',
              'connect_request', 'no_such_request', 'no_such_thing', 'input_reply', 'comm_msg', 'comm_close', 'usage_request']

class Fuzzer:
    "Raw sockets on the three channels and the figures of one run."
    def __init__(self, km):
        self.s = Session(key=km.session.key, signature_scheme=km.session.signature_scheme)
        self.socks = dict(shell=km.connect_shell(), control=km.connect_control(), stdin=km.connect_stdin())
        self.frames = self.messages = self.goods = self.executes = 0
        self.sent_goods = []  # frames of good executes, to replay
        self.replies = {}  # parent msg_id -> reply, read but not yet asked for

    def send(self, ch, frames):
        self.socks[ch].send_multipart(frames)
        self.frames += len(frames)
        self.messages += 1

    def wait_reply(self, ch, msg_id):
        "The reply to `msg_id`: replies arrive out of order (shell answers kernel_info itself while executes queue), so keep the others."
        sock,got = self.socks[ch],self.replies
        while msg_id not in got:
            assert sock.poll(int(TIMEOUT * 1000)), f"good request {msg_id} on {ch} lost"
            _,frames = self.s.feed_identities(sock.recv_multipart())
            m = self.s.deserialize(frames)
            got[m['parent_header'].get('msg_id')] = m
        return got.pop(msg_id)

    def close(self):
        for s in self.socks.values(): s.close(0)

@pytest.fixture(scope='module')
def fz(tmp_path_factory):
    log = tmp_path_factory.mktemp('fuzz')/'kernel.log'  # thousands of "dropped message" lines
    with open(log, 'w') as out, start_kernel(stderr=out) as (km,kc):
        execute(kc, f"{COUNTER} = 0")
        f = Fuzzer(km)
        yield f,kc
        f.close()

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=12)
contents = st.dictionaries(st.sampled_from(['code', 'cursor_pos', 'detail_level', 'hist_access_type', 'n', 'comm_id', 'target_name',
                                            'data', 'value', 'silent', 'restart', 'output', 'raw', 'pattern', 'start', 'stop']), json_values, max_size=6)

def mutate(d, frames):
    "Change a signed message so its signature no longer holds (or its framing breaks): flip, cut, drop, swap, or pad a frame."
    orig,frames = frames,list(frames)
    i = d.draw(st.integers(1, len(frames) - 1), label='frame')  # 0 is the delimiter; 1 the signature; 2..5 the signed JSON
    op = d.draw(st.sampled_from(['flip', 'truncate', 'drop', 'swap', 'insert', 'resign_other', 'sig_case', 'empty_sig']), label='op')
    f = frames[i]
    if op == 'flip' and f:
        j = d.draw(st.integers(0, 2**16), label='byte') % len(f)  # draws must not depend on lengths that vary between runs
        frames[i] = f[:j] + bytes([f[j] ^ d.draw(st.integers(1, 255), label='xor')]) + f[j+1:]
    elif op == 'truncate': frames[i] = f[:d.draw(st.integers(0, 2**16), label='cut') % len(f)]
    elif op == 'drop': del frames[i]
    elif op == 'swap' and i < len(frames) - 1: frames[i],frames[i+1] = frames[i+1],frames[i]
    elif op == 'insert': frames.insert(i, d.draw(st.binary(max_size=40), label='junk'))
    elif op == 'resign_other': frames[1] = Session(key=b'not-the-key').sign(frames[2:6])
    elif op == 'sig_case': frames[1] = frames[1].upper()
    else: frames[1] = b''
    if frames == orig: frames[1] = b'0' * 64  # a draw that changed nothing (a swap past the end) still breaks the signature
    return frames

@settings(max_examples=1000, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(d=st.data())
def test_fuzz(fz, d):
    f,kc = fz
    goods = []
    for _ in range(d.draw(st.integers(1, 8), label='n')):
        ch = d.draw(st.sampled_from(['shell', 'control', 'stdin']), label='channel')
        kind = d.draw(st.sampled_from(['random', 'mutated', 'unsigned', 'signed_random', 'replay']), label='kind')
        if kind == 'random': f.send(ch, d.draw(st.lists(st.binary(max_size=64), min_size=1, max_size=9), label='frames'))
        elif kind == 'mutated':
            m = f.s.msg('execute_request', dict(code=MARK_CODE, silent=False, store_history=False, user_expressions={}, allow_stdin=False))
            f.send(ch, mutate(d, f.s.serialize(m)))
        elif kind == 'unsigned':
            m = f.s.msg('execute_request', dict(code=MARK_CODE, silent=False))
            frames = f.s.serialize(m)
            frames[1] = d.draw(st.sampled_from([b'', b'0' * 64, os.urandom(32).hex().encode()]), label='sig')
            f.send(ch, frames)
        elif kind == 'signed_random':
            m = f.s.msg(d.draw(st.sampled_from(SAFE_TYPES), label='type'), d.draw(contents, label='content'))
            f.send(ch, f.s.serialize(m))
            if ch != 'stdin' and m['msg_type'].endswith('_request'): goods.append((ch, m['header']['msg_id']))  # every signed request is answered
        elif f.sent_goods: f.send('shell', random.Random(f.messages).choice(f.sent_goods))
        if d.draw(st.booleans(), label='good'):
            gch = d.draw(st.sampled_from(['shell', 'control']), label='good channel')
            if gch == 'shell':
                m = f.s.msg('execute_request', dict(code=f"{COUNTER} += 1", silent=False, store_history=False, user_expressions={}, allow_stdin=False))
                f.executes += 1
            else: m = f.s.msg('kernel_info_request', {})
            frames = f.s.serialize(m)
            f.send(gch, frames)
            if gch == 'shell': f.sent_goods.append(frames)
            goods.append((gch, m['header']['msg_id']))
    for ch,mid in goods:
        r = f.wait_reply(ch, mid)
        f.goods += 1
        assert r['msg_type'].endswith('_reply')

def test_after_fuzz(fz):
    "Run after the fuzz: still answering, nothing unsigned ran, every good execute ran exactly once."
    f,kc = fz
    reply,_ = execute(kc, "", user_expressions=dict(pwned=f"'{MARKER}' in globals()", n=COUNTER))
    ue = reply['content']['user_expressions']
    print(f"\nfuzz: {f.messages} messages, {f.frames} frames sent; {f.goods} good requests answered, 0 lost; "
          f"{f.executes} good executes, counter {ue['n']['data']['text/plain']}; unsigned executions: "
          f"{int(ue['pwned']['data']['text/plain'] == 'True' or os.path.exists(f'/tmp/{MARKER}'))}")
    assert f.messages > 5000
    assert ue['pwned']['data']['text/plain'] == 'False' and not os.path.exists(f'/tmp/{MARKER}')
    assert ue['n']['data']['text/plain'] == str(f.executes)  # replays ran no second time, and no good execute was lost
