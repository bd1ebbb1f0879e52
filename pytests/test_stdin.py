"""stdin: input() and getpass() ask the front end with input_request and return its input_reply."""
import queue
import pytest
from kernel_utils import start_kernel, execute, get_reply, iopub_until_idle, types, outputs, stdout, parent_id, wait_file, TIMEOUT

def ask(kc, code, **kw):
    "Run `code`, which asks for input; returns (execute msg_id, the input_request)."
    msg_id = kc.execute(code, allow_stdin=True, **kw)
    req = kc.get_stdin_msg(timeout=TIMEOUT)
    assert req['msg_type'] == 'input_request' and parent_id(req) == msg_id
    return msg_id,req

def answer(kc, req, value):
    "Send an input_reply naming the input_request it answers, as JupyterLab does."
    kc.stdin_channel.send(kc.session.msg('input_reply', dict(value=value), parent=req['header']))

def finish(kc, msg_id): return get_reply(kc, msg_id),iopub_until_idle(kc, msg_id)

def test_input(kc):
    msg_id,req = ask(kc, "name = input('name? ')\nprint('hello', name)")
    assert req['content'] == dict(prompt='name? ', password=False)
    answer(kc, req, 'Ada')
    reply,msgs = finish(kc, msg_id)
    assert reply['content']['status'] == 'ok'
    assert types(msgs) == ['status', 'execute_input', 'stream', 'status'] and stdout(msgs) == 'hello Ada\n'

def test_reply_without_parent_goes_to_the_pending_request(kc):
    "jupyter_client's `kc.input` sends no parent header: the value still reaches the waiting input()."
    msg_id,req = ask(kc, "v = input()\nv.upper()")
    assert req['content'] == dict(prompt='', password=False)
    kc.input('quiet')
    reply,msgs = finish(kc, msg_id)
    assert [m['content']['data']['text/plain'] for m in msgs if m['msg_type'] == 'execute_result'] == ["'QUIET'"]

def test_getpass(kc):
    msg_id,req = ask(kc, "import getpass\nsecret = getpass.getpass()\nprint(len(secret))")
    assert req['content'] == dict(prompt='Password: ', password=True)
    answer(kc, req, 'hunter2')
    reply,msgs = finish(kc, msg_id)
    assert reply['content']['status'] == 'ok' and stdout(msgs) == '7\n'

def test_getpass_prompt(kc):
    msg_id,req = ask(kc, "import getpass\nt = getpass.getpass('token: ')")
    assert req['content'] == dict(prompt='token: ', password=True)
    answer(kc, req, 'x')
    assert finish(kc, msg_id)[0]['content']['status'] == 'ok'

def test_raw_input_on_kernel(kc):
    "`get_ipython().kernel.raw_input` and `.getpass`, which libraries written for ipykernel call."
    msg_id,req = ask(kc, "k = get_ipython().kernel\nprint(k.raw_input('a: ') + k.getpass('b: '))")
    assert req['content'] == dict(prompt='a: ', password=False)
    answer(kc, req, 'one')
    req2 = kc.get_stdin_msg(timeout=TIMEOUT)
    assert req2['content'] == dict(prompt='b: ', password=True) and parent_id(req2) == msg_id
    answer(kc, req2, 'two')
    reply,msgs = finish(kc, msg_id)
    assert stdout(msgs) == 'onetwo\n'

@pytest.mark.parametrize('code,caller', [("input('x')", 'raw_input'), ("import getpass; getpass.getpass()", 'getpass')])
def test_no_stdin(kc, code, caller):
    reply,msgs = execute(kc, code, allow_stdin=False, stop_on_error=False)
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == 'StdinNotImplementedError'
    assert c['evalue'] == f"{caller} was called, but this frontend does not support input requests."
    assert types(msgs) == ['status', 'execute_input', 'error', 'status'] and msgs[2]['content']['ename'] == 'StdinNotImplementedError'
    with pytest.raises(queue.Empty): kc.get_stdin_msg(timeout=0.2)

def test_eof(kc):
    msg_id,req = ask(kc, "input()", stop_on_error=False)
    answer(kc, req, '\x04')
    reply,_ = finish(kc, msg_id)
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'EOFError'

def test_bad_and_stale_replies(kc):
    "A reply nobody waits for is dropped; a non-string value reads as ''; the kernel carries on."
    kc.stdin_channel.send(kc.session.msg('input_reply', dict(value='stale'), parent=dict(msg_id='no-such-request')))
    msg_id,req = ask(kc, "v = input('n: ')\nprint(repr(v))")
    answer(kc, req, 42)
    reply,msgs = finish(kc, msg_id)
    assert reply['content']['status'] == 'ok' and stdout(msgs) == "''\n"

def test_input_from_thread(kc):
    "A thread the cell started asks under that cell."
    msg_id,req = ask(kc, "import threading\nr = []\nt = threading.Thread(target=lambda: r.append(input('t: ')))\nt.start(); t.join()\nprint(r)")
    assert req['content'] == dict(prompt='t: ', password=False)
    answer(kc, req, 'from thread')
    reply,msgs = finish(kc, msg_id)
    assert stdout(msgs) == "['from thread']\n"

def test_output_before_prompt_is_flushed():
    "With stream batching held for minutes, text printed before input() still reaches the client before the reply is sent."
    with start_kernel(env=dict(IPYMINI_STREAM_FLUSH_MS='600000')) as (km,kc):
        msg_id,req = ask(kc, "print('before', end='')\nx = input('> ')\nprint('after')")
        while True:
            m = kc.get_iopub_msg(timeout=TIMEOUT)
            if parent_id(m) == msg_id and m['msg_type'] == 'stream': break
        assert m['content'] == dict(name='stdout', text='before')
        answer(kc, req, 'y')
        reply,msgs = finish(kc, msg_id)
        assert reply['content']['status'] == 'ok' and stdout(msgs) == 'after\n'

LATER = """import threading, getpass, os, time
def later(gate, out):
    while not os.path.exists(gate): time.sleep(0.01)
    outcome = []
    for ask in (input, getpass.getpass):
        try: outcome.append(repr(ask('later? ')))
        except Exception as e: outcome.append(type(e).__name__)
    with open(out + '.tmp', 'w') as f: f.write(' '.join(outcome))
    os.replace(out + '.tmp', out)
threading.Thread(target=later, args=(GATE, OUT)).start()"""

@pytest.mark.parametrize('name', ['ipymini', 'python3'])
def test_input_after_its_cell_is_pythons_own(name, tmp_path):
    "A thread that asks for input after its cell ended gets Python's own input() and getpass() (here on an empty stdin), as in ipykernel."
    import subprocess
    gate,out = tmp_path/'gate',tmp_path/'out'
    with start_kernel(kernel_name=None if name == 'ipymini' else name, stdin=subprocess.DEVNULL) as (km,kc):
        code = LATER.replace('GATE, OUT', f'{str(gate)!r}, {str(out)!r}')
        assert execute(kc, code, allow_stdin=True)[0]['content']['status'] == 'ok'
        gate.touch()  # the cell has ended: its idle came
        assert wait_file(out) == "EOFError EOFError"
        with pytest.raises(queue.Empty): kc.get_stdin_msg(timeout=0.2)  # nothing asked the front end
