"""Output caused by a request answered on the shell or control thread (complete, inspect, history) goes out under that request,
between its busy and idle, as in ipykernel; also while a cell runs, which ipymini answers meanwhile. And ipykernel's private
`kernel._parent_ident`."""
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from kernel_utils import start_kernel, execute, request, get_reply, iopub_until_idle, send, wait_stream, parent_id, stdout, KERNEL_NAME

NOISY = """class Noisy:
    def __dir__(self):
        print('dir of Noisy')
        return ['alpha', 'beta']
    def __getattr__(self, name):
        print('getattr', name)
        if name == 'alpha': return 1
        raise AttributeError(name)
noisy = Noisy()"""

@pytest.fixture(scope='module', params=[KERNEL_NAME, 'python3'])
def both(request):
    "A kernel of each kind, ipymini and ipykernel (kernelspec python3), with `noisy` defined: (name, kc)."
    if request.param == 'python3': KernelSpecManager().get_kernel_spec('python3')
    with start_kernel(kernel_name=request.param) as (km,kc):
        assert execute(kc, NOISY)[0]['content']['status'] == 'ok'
        yield request.param,kc

def answered(kc, msg_type, **content):
    "Send a request; its reply and the exact IOPub messages parented to it, every one of them checked to be parented to it."
    reply,msgs = request(kc, msg_type, **content)
    assert all(parent_id(m) == reply['parent_header']['msg_id'] for m in msgs)
    return reply['content'],[(m['msg_type'], m['content'].get('execution_state') or m['content'].get('text')) for m in msgs]

def test_complete_output_is_its_own(both):
    name,kc = both
    c,msgs = answered(kc, 'complete_request', code='noisy.al', cursor_pos=8)
    assert 'alpha' in c['matches']
    assert msgs[0] == ('status', 'busy') and msgs[-1] == ('status', 'idle')
    assert 'dir of Noisy' in ''.join(t for k,t in msgs[1:-1] if k == 'stream')
    # the cell that defined `noisy` got none of it
    reply,later = execute(kc, 'pass')
    assert not stdout(later)

def test_inspect_output_is_its_own(both):
    name,kc = both
    c,msgs = answered(kc, 'inspect_request', code='noisy.zzz', cursor_pos=9, detail_level=0)
    assert c['status'] == 'ok' and msgs[0] == ('status', 'busy') and msgs[-1] == ('status', 'idle')
    assert 'getattr zzz' in ''.join(t for k,t in msgs[1:-1] if k == 'stream')

def test_output_of_a_completion_during_a_cell(tmp_path):
    "While a cell runs (ipymini answers completions meanwhile), what the completion prints is the completion's, not the cell's."
    gate = tmp_path/'gate'
    with start_kernel() as (km,kc):
        assert execute(kc, NOISY)[0]['content']['status'] == 'ok'
        cell = send(kc, None, f"import os, time\nprint('cell starts', flush=True)\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint('cell ends')")
        seen = wait_stream(kc, cell, 'cell starts')
        c,msgs = answered(kc, 'complete_request', code='noisy.al', cursor_pos=8)
        assert 'alpha' in c['matches'] and 'dir of Noisy' in ''.join(t for k,t in msgs if k == 'stream')
        gate.touch()
        assert get_reply(kc, cell)['content']['status'] == 'ok'
        assert stdout(seen + iopub_until_idle(kc, cell)) == 'cell starts\ncell ends\n'

def test_parent_ident(both):
    "kernel._parent_ident['shell'] is the zmq identity of the request running; ['control'] that of the latest control request."
    name,kc = both
    # the identity is the client's shell socket's: jupyter_client names it after the session
    reply,msgs = execute(kc, f"k = get_ipython().kernel\nshell = k._parent_ident['shell']\nprint(sorted(k._parent_ident), "
                             f"[bytes(i) for i in shell] == [{kc.session.bsession!r}])")
    assert reply['content']['status'] == 'ok' and stdout(msgs) == "['control', 'shell'] True\n"
