"""IPython on the shell channel: rich output, payloads, errors, stop_on_error and top-level await, message by message."""
import base64
import pytest
from kernel_utils import start_kernel, execute, request, get_reply, iopub_until_idle, types, outputs, stdout, parent_id, wait_stream, interrupt, send
from test_subshells import gate, shell_replies, iopub_until_idles

# Fields the Jupyter messaging spec requires in each message's content
REQUIRED = dict(execute_reply={'status', 'execution_count'}, complete_reply={'status', 'matches', 'cursor_start', 'cursor_end', 'metadata'},
    inspect_reply={'status', 'found', 'data', 'metadata'}, is_complete_reply={'status'}, history_reply={'status', 'history'},
    kernel_info_reply={'status', 'protocol_version', 'implementation', 'language_info'},
    display_data={'data', 'metadata'}, update_display_data={'data', 'metadata', 'transient'}, execute_result={'execution_count', 'data', 'metadata'},
    error={'ename', 'evalue', 'traceback'}, clear_output={'wait'}, stream={'name', 'text'}, execute_input={'code', 'execution_count'},
    status={'execution_state'})

def check_spec(*msgs):
    "Assert each message carries the content fields the spec requires of its type (and of its status, for replies)."
    for m in msgs:
        c,t = m['content'],m['msg_type']
        assert REQUIRED.get(t, set()) <= set(c), f"{t} lacks {REQUIRED[t] - set(c)}"
        if t.endswith('_reply') and c['status'] == 'error': assert {'ename', 'evalue', 'traceback'} <= set(c)
        if t == 'execute_reply' and c['status'] == 'ok': assert {'user_expressions', 'payload'} <= set(c)
        if t == 'is_complete_reply' and c['status'] == 'incomplete': assert 'indent' in c
        if t == 'update_display_data': assert 'display_id' in c['transient']
        if t == 'error': assert all(isinstance(l, str) for l in c['traceback'])

def run(kc, code, **kw):
    "Execute `code`, check every message against the spec; returns (reply, IOPub outputs without status/execute_input)."
    reply,msgs = execute(kc, code, **kw)
    check_spec(reply, *msgs)
    assert types(msgs)[0] == 'status' and types(msgs)[-1] == 'status'
    return reply,outputs(msgs)

def ok(kc, code, **kw):
    "Execute `code`, which must succeed; returns its outputs."
    reply,outs = run(kc, code, **kw)
    assert reply['content']['status'] == 'ok', reply['content']
    return outs

def value(kc, expr):
    "The text/plain repr of `expr`, evaluated in the kernel."
    return execute(kc, '0', user_expressions=dict(v=expr))[0]['content']['user_expressions']['v']['data']['text/plain']

@pytest.fixture(scope='module')
def kc(tmp_path_factory):
    "A kernel with a fresh IPython profile of its own."
    with start_kernel(env=dict(IPYTHONDIR=str(tmp_path_factory.mktemp('ipython')))) as (km,kc): yield kc

# ---- rich output ----
def test_display_data_mimebundle_and_metadata(kc):
    outs = ok(kc, "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'), metadata={'a': 1})")
    assert types(outs) == ['display_data']
    assert outs[0]['content'] == dict(data={'text/plain': '<IPython.core.display.HTML object>', 'text/html': '<b>x</b>'}, metadata={'a': 1}, transient={})

def test_display_raw_bundle_keeps_every_key(kc):
    outs = ok(kc, "display({'text/plain': 'hi', 'text/html': '<i>hi</i>', 'application/json': {'a': [1]}, 'text/latex': '$x$'}, raw=True,"
                  " metadata={'text/html': {'isolated': True}})")
    assert [o['content'] for o in outs] == [dict(data={'text/plain': 'hi', 'text/html': '<i>hi</i>', 'application/json': {'a': [1]}, 'text/latex': '$x$'},
                                                 metadata={'text/html': {'isolated': True}}, transient={})]

def test_display_id_and_update(kc):
    outs = ok(kc, "h = display('a', display_id='d1')\nh.update('b')\ndisplay('c', display_id='d1', update=True)\ng = display('e', display_id=True)\ng.update('f')")
    assert types(outs) == ['display_data', 'update_display_data', 'update_display_data', 'display_data', 'update_display_data']
    c = [o['content'] for o in outs]
    assert c[0] == dict(data={'text/plain': "'a'"}, metadata={}, transient=dict(display_id='d1'))
    assert c[1] == dict(data={'text/plain': "'b'"}, metadata={}, transient=dict(display_id='d1'))
    assert c[2] == dict(data={'text/plain': "'c'"}, metadata={}, transient=dict(display_id='d1'))
    gen = c[3]['transient']['display_id']
    assert isinstance(gen, str) and len(gen) >= 16 and c[4]['transient'] == dict(display_id=gen) and c[4]['data'] == {'text/plain': "'f'"}

def test_clear_output_in_order(kc):
    outs = ok(kc, "from IPython.display import clear_output\nprint(1); clear_output(wait=True); print(2); clear_output()")
    assert [(o['msg_type'], o['content']) for o in outs] == [('stream', dict(name='stdout', text='1\n')), ('clear_output', dict(wait=True)),
                                                             ('stream', dict(name='stdout', text='2\n')), ('clear_output', dict(wait=False))]

@pytest.mark.parametrize('code,data,md', [
    ("from IPython.display import Latex; Latex('$x$')", {'text/plain': '<IPython.core.display.Latex object>', 'text/latex': '$x$'}, {}),
    ("from IPython.display import Math; Math('x^2')", {'text/plain': '<IPython.core.display.Math object>', 'text/latex': '$\\displaystyle x^2$'}, {}),
    ("from IPython.display import JSON; JSON({'a': 1})", {'text/plain': '<IPython.core.display.JSON object>', 'application/json': {'a': 1}},
     {'application/json': {'expanded': False, 'root': 'root'}}),
    ("from IPython.display import Markdown; Markdown('*m*')", {'text/plain': '<IPython.core.display.Markdown object>', 'text/markdown': '*m*'}, {}),
    ("from IPython.display import Image; Image(b'\\x89PNG\\r\\n\\x1a\\n' + b'0'*8, width=10)",
     {'text/plain': '<IPython.core.display.Image object>', 'image/png': base64.b64encode(b'\x89PNG\r\n\x1a\n' + b'0'*8).decode()}, {'image/png': {'width': 10}}),
    ("class R:\n    def _repr_mimebundle_(self, include=None, exclude=None): return {'text/html': '<p>r</p>', 'text/plain': 'r'}, {'text/html': {'k': 1}}\nR()",
     {'text/plain': 'r', 'text/html': '<p>r</p>'}, {'text/html': {'k': 1}}),
])
def test_execute_result_full_mimebundle(kc, code, data, md):
    outs = ok(kc, code)
    assert types(outs) == ['execute_result']
    c = outs[0]['content']
    assert c['data'] == data and c['metadata'] == md and isinstance(c['execution_count'], int)

def png_figure(out):
    "Check `out` is an inline matplotlib figure: a display_data with a PNG and its text repr."
    assert out['msg_type'] == 'display_data' and set(out['content']['data']) == {'text/plain', 'image/png'}
    assert out['content']['data']['text/plain'].startswith('<Figure size') and out['content']['metadata'] == {}
    assert base64.b64decode(out['content']['data']['image/png'])[:8] == b'\x89PNG\r\n\x1a\n'

def test_matplotlib_inline_is_the_default_backend(kc):
    outs = ok(kc, "import matplotlib.pyplot as plt\nplt.plot([1, 2]);")
    assert types(outs) == ['display_data']
    png_figure(outs[0])
    assert value(kc, "__import__('matplotlib').get_backend()") in ("'inline'", "'module://matplotlib_inline.backend_inline'")

def test_matplotlib_inline_magic_result_then_figure(kc):
    outs = ok(kc, "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.figure(); plt.plot([3, 1])")
    assert types(outs) == ['execute_result', 'display_data']
    assert outs[0]['content']['data']['text/plain'].startswith('[<matplotlib.lines.Line2D')
    png_figure(outs[1])

def test_matplotlib_figure_from_async_cell(kc):
    outs = ok(kc, "import asyncio, matplotlib.pyplot as plt\nawait asyncio.sleep(0)\nplt.plot([1, 3]);")
    assert types(outs) == ['display_data']
    png_figure(outs[0])

# ---- payloads ----
@pytest.mark.parametrize('code,detail', [("len?", 'Docstring'), ("len??", 'Docstring'), ("%pinfo len", 'Docstring'), ("?len", 'Docstring')])
def test_pager_payload(kc, code, detail):
    reply,outs = run(kc, code)
    assert outs == [] and reply['content']['status'] == 'ok'
    [p] = reply['content']['payload']
    assert set(p) == {'source', 'data', 'start'} and p['source'] == 'page' and p['start'] == 0
    assert list(p['data']) == ['text/plain'] and 'Signature' in p['data']['text/plain'] and detail in p['data']['text/plain']

def test_help_prints(kc):
    outs = ok(kc, "help(len)")
    assert types(outs) == ['stream'] and outs[0]['content']['text'].startswith('Help on built-in function len')

def test_set_next_input_one_payload_last_wins(kc):
    reply,_ = run(kc, "ip = get_ipython()\nip.set_next_input('a')\nip.set_next_input('b')")
    assert reply['content']['payload'] == [dict(source='set_next_input', text='b', replace=False)]
    reply,_ = run(kc, "get_ipython().set_next_input('c', replace=True)")
    assert reply['content']['payload'] == [dict(source='set_next_input', text='c', replace=True)]
    reply,_ = run(kc, "1")
    assert reply['content']['payload'] == []

def test_quit_keep_kernel_asks_the_front_end_and_stays(kc):
    reply,outs = run(kc, "quit(keep_kernel=True)")
    assert outs == [] and reply['content']['payload'] == [dict(source='ask_exit', keepkernel=True)]
    assert ok(kc, "'still here'")[0]['content']['data'] == {'text/plain': "'still here'"}

@pytest.mark.parametrize('code', ["exit", "quit()"])
def test_exit_asks_the_front_end_and_ends_the_kernel(tmp_path, code):
    with start_kernel(env=dict(IPYTHONDIR=str(tmp_path))) as (km,kc):
        reply,outs = run(kc, code)
        assert outs == [] and reply['content']['payload'] == [dict(source='ask_exit', keepkernel=False)]
        assert km.provisioner.process.wait(30) == 0

# ---- errors ----
def check_error(reply, msgs, ename, evalue=None):
    "The cell failed with `ename`: one `error` message on IOPub, the same ename/evalue/traceback in the reply."
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == ename and reply['metadata']['status'] == 'error'
    if evalue is not None: assert c['evalue'] == evalue
    errs = [m for m in msgs if m['msg_type'] == 'error']
    assert len(errs) == 1 and errs[0]['content'] == dict(ename=c['ename'], evalue=c['evalue'], traceback=c['traceback'])
    assert c['user_expressions'] == {} and c['payload'] == [] and c['engine_info']['method'] == 'execute'
    assert any(ename in line for line in c['traceback'])

def test_error_reply_matches_error_message(kc):
    reply,outs = run(kc, "print('before')\n1/0", user_expressions=dict(x='1+1'))
    assert types(outs) == ['stream', 'error']
    check_error(reply, outs, 'ZeroDivisionError', 'division by zero')
    tb = reply['content']['traceback']
    assert 'Traceback (most recent call last)' in tb[1] and tb[-1].endswith('division by zero')

def test_syntax_error(kc):
    reply,outs = run(kc, "def f(:\n    pass")
    assert types(outs) == ['error']
    check_error(reply, outs, 'SyntaxError')
    assert reply['content']['evalue'].startswith('invalid syntax') and 'def f(:' in ''.join(reply['content']['traceback'])

def test_keyboard_interrupt_raised_in_cell(kc):
    reply,outs = run(kc, "raise KeyboardInterrupt")
    assert types(outs) == ['error']
    check_error(reply, outs, 'KeyboardInterrupt', '')

def test_system_exit_is_an_error_and_kernel_lives(kc):
    reply,outs = run(kc, "raise SystemExit(3)")
    assert types(outs) == ['error', 'stream']
    check_error(reply, outs, 'SystemExit', '3')
    assert outs[1]['content']['name'] == 'stderr' and "To exit: use 'exit', 'quit', or Ctrl-D." in outs[1]['content']['text']
    assert ok(kc, "2+2")[0]['content']['data'] == {'text/plain': '4'}

def test_error_while_formatting_result_fails_cell(kc):
    reply,outs = run(kc, "class Bad:\n    def _repr_html_(self): 1/0\nBad()")
    assert types(outs) == ['error', 'execute_result']
    check_error(reply, outs, 'ZeroDivisionError', 'division by zero')
    assert outs[1]['content']['data']['text/plain'].startswith('<__main__.Bad')

def test_interrupt_running_cell(kc):
    mid = kc.execute("import time\nprint('started', flush=True)\ntime.sleep(60)")
    msgs = wait_stream(kc, mid, 'started')
    assert interrupt(kc)['content'] == dict(status='ok')
    reply = get_reply(kc, mid)
    msgs += iopub_until_idle(kc, mid)
    check_spec(reply, *msgs)
    check_error(reply, msgs, 'KeyboardInterrupt')

# ---- stop_on_error ----
def pipeline(kc, path, *requests):
    """Send requests back to back ((msg_type, content) or code to execute), the first one held until the kernel has read them all,
    so the rest are queued behind it whatever the timing (see test_subshells.collect_gated); returns their (reply, IOPub) in order."""
    ids = []
    for n,r in enumerate(requests):
        msg_type,content = exe(r) if isinstance(r, str) else r
        if n == 0: content = dict(content, code=gate(path) + content['code'])
        msg = kc.session.msg(msg_type, content)
        kc.shell_channel.send(msg)
        ids.append(msg['header']['msg_id'])
    replies = shell_replies(kc, [send(kc, None, msg_type='kernel_info_request')])
    open(path, 'w').close()
    shell_replies(kc, ids, replies)
    pub = iopub_until_idles(kc, ids)  # requests answered on the shell thread finish first: IOPub is sorted by parent
    return [(replies[i], pub[i]) for i in ids]

def check_aborted(reply, msgs):
    assert reply['msg_type'] == 'execute_reply' and reply['content'] == dict(status='aborted') and reply['metadata']['status'] == 'aborted'
    assert types(msgs) == ['status', 'status'] and [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']

def test_error_aborts_queued_executes(kc, tmp_path):
    (r1,m1),(r2,m2),(r3,m3) = pipeline(kc, tmp_path/'go', "aborted_a = 0\n1/0", "aborted_b = 1", "aborted_c = 2")
    check_error(r1, m1, 'ZeroDivisionError')
    check_aborted(r2, m2)
    check_aborted(r3, m3)
    assert value(kc, "[n for n in ('aborted_a', 'aborted_b', 'aborted_c') if n in globals()]") == "['aborted_a']"

def exe(code, **kw):
    "An execute_request for `pipeline`, with the fields jupyter_client sends by default."
    return 'execute_request',dict(dict(code=code, silent=False, store_history=True, user_expressions={}, allow_stdin=False), **kw)

def test_stop_on_error_false_keeps_queue(kc, tmp_path):
    (r1,m1),(r2,_) = pipeline(kc, tmp_path/'go', exe("1/0", stop_on_error=False), "kept = 1")
    check_error(r1, m1, 'ZeroDivisionError')
    assert r2['content']['status'] == 'ok'

def test_other_requests_answered_while_aborting(kc, tmp_path):
    res = pipeline(kc, tmp_path/'go', "1/0", ('kernel_info_request', {}), ('is_complete_request', dict(code='x = (')),
                   ('complete_request', dict(code='impo', cursor_pos=4)), "not_run = 1")
    (r1,m1),(ki,_),(ic,_),(co,_),(r5,m5) = res
    check_error(r1, m1, 'ZeroDivisionError')
    assert ki['msg_type'] == 'kernel_info_reply' and ki['content']['status'] == 'ok'
    assert ic['content'] == dict(status='incomplete', indent='')
    assert co['content']['status'] == 'ok' and 'import' in co['content']['matches']
    check_aborted(r5, m5)
    check_spec(ki, ic, co)

def test_silent_error_does_not_abort(kc, tmp_path):
    (r1,m1),(r2,_) = pipeline(kc, tmp_path/'go', exe('1/0', silent=True, store_history=False), "after_silent = 1")
    assert r1['content']['status'] == 'error' and types(m1) == ['status', 'error', 'status']
    assert r2['content']['status'] == 'ok'

def test_execution_after_abort_runs(kc, tmp_path):
    pipeline(kc, tmp_path/'go', "1/0", "2")
    assert ok(kc, "'fine'")[0]['content']['data'] == {'text/plain': "'fine'"}

# ---- top-level await and the event loop ----
def test_top_level_await(kc):
    outs = ok(kc, "import asyncio\nawait asyncio.sleep(0)\nasync def agen():\n    yield 1\n    yield 2\n[x async for x in agen()]")
    assert [o['content']['data'] for o in outs] == [{'text/plain': '[1, 2]'}]

def test_task_keeps_running_across_cells(kc):
    ok(kc, "import asyncio\nsteps = []\ngo = asyncio.Event()\nasync def worker():\n    steps.append('started')\n    await go.wait()\n"
           "    steps.append('resumed')\n    return 42\ntask = asyncio.ensure_future(worker())")
    outs = ok(kc, "await asyncio.sleep(0)\nsteps, task.done()")
    assert outs[0]['content']['data'] == {'text/plain': "(['started'], False)"}
    outs = ok(kc, "go.set()\nawait task, steps")
    assert outs[0]['content']['data'] == {'text/plain': "(42, ['started', 'resumed'])"}
