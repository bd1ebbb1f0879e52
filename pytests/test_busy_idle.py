"""Every request gets exactly one busy and one idle on IOPub, whatever happens to it: answered on a socket's thread, run, failed,
aborted, interrupted, cancelled, on a deleted or unknown subshell, malformed, or the shutdown itself.

Each test reads every IOPub message (none skipped), counts the status messages of each request it sent, and first lets every
thread that published for them finish what it was doing (`settle`), so a second idle would be seen."""
import time, uuid
import pytest
from kernel_utils import start_kernel, send, interrupt, get_reply, parent_id, states, stdout, TIMEOUT
from test_subshells import shell_replies, gate

class Seen:
    "Every IOPub message read in a test, in order."
    def __init__(self, kc): self.kc,self.msgs = kc,[]
    def read_until(self, done):
        deadline = time.monotonic() + TIMEOUT
        while not done(): self.msgs.append(self.kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic())))
    def of(self, mid): return [m for m in self.msgs if parent_id(m) == mid]
    def idle(self, *ids): self.read_until(lambda: all('idle' in states(self.of(i)) for i in ids))
    def stream(self, mid, text): self.read_until(lambda: text in stdout(self.of(mid)))

@pytest.fixture
def seen(kc): return Seen(kc)

def request(kc, msg_type, sid=None, channel='shell', **content):
    "Send any request (or other message) with exactly `content`, on subshell `sid`; returns its msg_id."
    msg = kc.session.msg(msg_type, content)
    if sid is not None: msg['header']['subshell_id'] = sid
    getattr(kc, f'{channel}_channel').send(msg)
    return msg['header']['msg_id']

def send_control(kc, msg_type, **content): return request(kc, msg_type, channel='control', **content)

def create(kc, seen):
    mid = send_control(kc, 'create_subshell_request')
    sid = get_reply(kc, mid, 'control')['content']['subshell_id']
    seen.idle(mid)
    return sid

def settle(kc, seen, *sids):
    "Let the shell and control threads, the main thread and the subshells `sids` each finish a request, and read their idles."
    ids = [request(kc, 'kernel_info_request'), send(kc, None, "pass"), *[send(kc, s, "pass") for s in sids]]
    c = send_control(kc, 'kernel_info_request')
    shell_replies(kc, ids)
    get_reply(kc, c, 'control')
    seen.idle(c, *ids)

def check(seen, ids):
    "Each of `ids` has one busy, first, and one idle, last, among its IOPub messages."
    for i in ids:
        msgs = seen.of(i)
        assert states(msgs) == ['busy', 'idle'], (i, [(m['msg_type'], m['content'].get('execution_state')) for m in msgs])
        assert msgs[0]['msg_type'] == msgs[-1]['msg_type'] == 'status'

def test_requests_answered_on_socket_threads(kc, seen):
    shell = [request(kc, t, **c) for t,c in [('kernel_info_request', {}), ('connect_request', {}), ('comm_info_request', {}),
             ('complete_request', dict(code='impo', cursor_pos=4)), ('inspect_request', dict(code='len', cursor_pos=3, detail_level=0)),
             ('is_complete_request', dict(code='x = (')), ('history_request', dict(hist_access_type='tail', n=1, output=False, raw=True)),
             ('no_such_request', {})]]
    ctrl = [send_control(kc, t) for t in ('kernel_info_request', 'connect_request', 'list_subshell_request', 'usage_request',
                                          'interrupt_request', 'no_such_request')]
    replies = shell_replies(kc, shell)
    assert [replies[i]['content']['status'] for i in shell] == ['ok'] * 5 + ['incomplete', 'ok', 'error']
    assert replies[shell[-1]]['content']['ename'] == 'UnknownMessageType'
    assert [get_reply(kc, c, 'control')['content']['status'] for c in ctrl] == ['ok'] * 5 + ['error']
    seen.idle(*shell, *ctrl)
    settle(kc, seen)
    check(seen, shell + ctrl)

def test_executes_run_fail_and_abort(kc, seen, tmp_path):
    ok = [send(kc, None, "1"), send(kc, None, "print('x')", silent=True), send(kc, None, "2", store_history=False),
          send(kc, None, "1/0", stop_on_error=False)]
    # an error with stop_on_error aborts what is queued behind it; the gate makes sure they are queued
    failing,aborted = send(kc, None, gate(tmp_path/'go') + "1/0"),[send(kc, None, "'never'") for _ in range(3)]
    replies = shell_replies(kc, [*ok, request(kc, 'kernel_info_request')])
    open(tmp_path/'go', 'w').close()
    shell_replies(kc, [failing, *aborted], replies)
    assert [replies[i]['content']['status'] for i in [*ok, failing, *aborted]] == ['ok'] * 3 + ['error'] * 2 + ['aborted'] * 3
    seen.idle(*ok, failing, *aborted)
    settle(kc, seen)
    check(seen, [*ok, failing, *aborted])

@pytest.mark.parametrize('code', ["import time\nprint('started')\nwhile True: time.sleep(0.001)",
                                  "import asyncio\nprint('started')\nawait asyncio.sleep(60)",
                                  "import asyncio\nfrom ipymini import unlock\nunlock()\nprint('started')\nawait asyncio.sleep(60)"],
                         ids=['sync', 'async', 'unlocked'])
@pytest.mark.parametrize('where', ['parent', 'child'])
def test_interrupted(kc, seen, code, where):
    sid = create(kc, seen) if where == 'child' else None
    mid = send(kc, sid, code)
    seen.stream(mid, 'started')
    assert interrupt(kc)['content'] == dict(status='ok')
    assert shell_replies(kc, [mid])[mid]['content']['ename'] == 'KeyboardInterrupt'
    seen.idle(mid)
    settle(kc, seen, *[sid] if sid else [])
    check(seen, [mid])
    if sid: get_reply(kc, send_control(kc, 'delete_subshell_request', subshell_id=sid), 'control')

def test_deleted_subshell(kc, seen):
    "The running cell, an unlocked one, the queued requests and those sent after the delete: each one busy and one idle."
    sid,other = create(kc, seen),create(kc, seen)
    unlocked = send(kc, sid, "import asyncio, time\nfrom ipymini import unlock\nunlock()\nprint('unlocked')\nawait asyncio.sleep(60)")
    seen.stream(unlocked, 'unlocked')
    running = send(kc, sid, "print('running')\nwhile True: time.sleep(0.001)")
    queued = [send(kc, sid, "'never'"), request(kc, 'comm_open', sid, comm_id=uuid.uuid4().hex, target_name='none', data={})]
    seen.stream(running, 'running')
    d = send_control(kc, 'delete_subshell_request', subshell_id=sid)
    assert get_reply(kc, d, 'control')['content'] == dict(status='ok')
    after = [send(kc, sid, "'never'"), request(kc, 'kernel_info_request', sid), request(kc, 'comm_msg', sid, comm_id='x', data={})]
    answered = [unlocked, running, queued[0], *after[:2]]
    replies = shell_replies(kc, answered)
    assert [replies[i]['content']['ename'] for i in answered] == ['KeyboardInterrupt'] * 2 + ['SubshellNotFound'] * 3
    seen.idle(d, unlocked, running, *queued, *after)
    # the subshell's thread is gone: nothing of it can still publish
    name = f'ipymini-subshell-{sid[:8]}'
    j = send(kc, None, f"import threading\nfor t in threading.enumerate():\n    if t.name == {name!r}: t.join({TIMEOUT})\n"
                       f"assert {name!r} not in [t.name for t in threading.enumerate()]")
    assert shell_replies(kc, [j])[j]['content']['status'] == 'ok'
    settle(kc, seen, other)
    check(seen, [d, unlocked, running, *queued, *after])
    get_reply(kc, send_control(kc, 'delete_subshell_request', subshell_id=other), 'control')

@pytest.mark.parametrize('bad', ['no-such-subshell', 5, ['x'], {}])
def test_unknown_subshell(kc, seen, bad):
    ids = [send(kc, bad, "'never'"), request(kc, 'complete_request', bad, code='x', cursor_pos=1),
           request(kc, 'comm_msg', bad, comm_id='x', data={})]
    replies = shell_replies(kc, ids[:2])
    assert [replies[i]['content']['ename'] for i in ids[:2]] == ['SubshellNotFound'] * 2
    seen.idle(*ids)
    settle(kc, seen)
    check(seen, ids)

def test_bad_requests(kc, seen):
    "Signed requests whose content the kernel cannot use get an error reply, with busy and idle, on shell and on control."
    shell = [request(kc, 'execute_request', code=5), request(kc, 'complete_request', code='x', cursor_pos=9),
             request(kc, 'inspect_request', code='len', cursor_pos=-1), request(kc, 'execute_request', code='1', silent='yes')]
    ctrl = [send_control(kc, 'delete_subshell_request'), send_control(kc, 'delete_subshell_request', subshell_id='no-such-subshell')]
    replies = shell_replies(kc, shell)
    assert [replies[i]['content']['ename'] for i in shell] == ['BadRequest'] * 4
    assert [get_reply(kc, c, 'control')['content']['ename'] for c in ctrl] == ['BadRequest', 'SubshellNotFound']
    seen.idle(*shell, *ctrl)
    settle(kc, seen)
    check(seen, shell + ctrl)

def test_comm_messages(kc, seen):
    "Comm messages are not requests, but are handled in turn on a subshell like executes: busy and idle each."
    cid = uuid.uuid4().hex
    ids = [request(kc, 'comm_open', comm_id=cid, target_name='no-such-target', data={}), request(kc, 'comm_msg', comm_id=cid, data={}),
           request(kc, 'comm_close', comm_id=cid, data={})]
    seen.idle(*ids)
    settle(kc, seen)
    check(seen, ids)

@pytest.mark.parametrize('channel', ['shell', 'control'])
def test_shutdown(channel):
    "The shutdown_request's own busy and idle go out before the kernel ends, with a cell running and requests queued behind it."
    with start_kernel() as (km,kc):
        seen = Seen(kc)
        running = send(kc, None, "import asyncio\nprint('started')\nawait asyncio.sleep(60)")
        seen.stream(running, 'started')
        mid = request(kc, 'shutdown_request', channel=channel, restart=False)
        assert get_reply(kc, mid, channel)['content'] == dict(status='ok', restart=False)
        seen.idle(mid)
        assert km.provisioner.process.wait(TIMEOUT) == 0
        # what the kernel sent before it ended is all there is
        seen.read_until(lambda: kc.iopub_channel.msg_ready() is False)
        check(seen, [mid])
