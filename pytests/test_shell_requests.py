"""complete, inspect, is_complete and history requests, answered by IPython's machinery as in ipykernel."""
import os
import pytest
from kernel_utils import start_kernel, execute, request, get_reply, iopub_until_idle, types, stdout, parent_id
from test_shell import check_spec, ok

@pytest.fixture(scope='module')
def kc(tmp_path_factory):
    "A kernel with an empty history of its own, and a few names to complete and inspect."
    with start_kernel(env=dict(IPYTHONDIR=str(tmp_path_factory.mktemp('ipython')))) as (km,kc):
        ok(kc, "import os\nnäme_ünï = 1\ndef fn(a, b=2):\n    'Add things.'\n    return a")
        yield kc

def req(kc, msg_type, **content):
    "Send a shell request; check busy/idle around it and the spec's fields; returns the reply content."
    reply,msgs = request(kc, msg_type, **content)
    assert reply['msg_type'] == msg_type.replace('_request', '_reply')
    assert [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']
    check_spec(reply)
    return reply['content']

# ---- complete ----
def complete(kc, code, pos=None): return req(kc, 'complete_request', code=code, cursor_pos=len(code) if pos is None else pos)

def test_complete_attribute_with_types(kc):
    c = complete(kc, "os.pa")
    assert c['status'] == 'ok' and (c['cursor_start'], c['cursor_end']) == (3, 5)
    assert {'path', 'pathsep', 'pardir'} <= set(c['matches']) and all(m.startswith('pa') for m in c['matches'])
    typed = c['metadata']['_jupyter_types_experimental']
    assert [t['text'] for t in typed] == c['matches'] and all(set(t) == {'start', 'end', 'text', 'type', 'signature'} for t in typed)
    assert dict((t['text'], t['type']) for t in typed)['path'] == 'module'

def test_complete_counts_code_points(kc):
    # the protocol counts unicode code points: an astral character is one, not two UTF-16 units
    c = complete(kc, "'😀'; os.pa")
    assert (c['cursor_start'], c['cursor_end']) == (8, 10) and 'path' in c['matches']
    c = complete(kc, "x = 'é'; näme_ü")
    assert c['matches'] == ['näme_ünï'] and (c['cursor_start'], c['cursor_end']) == (9, 15)

def test_complete_multiline_and_mid_code(kc):
    c = complete(kc, "fn(1)\nos.pa")
    assert (c['cursor_start'], c['cursor_end']) == (9, 11) and 'path' in c['matches']
    c = complete(kc, "os.pa\nx = 1", 5)
    assert (c['cursor_start'], c['cursor_end']) == (3, 5) and 'path' in c['matches']

def test_complete_magic(kc):
    c = complete(kc, "%tim")
    assert {'%time', '%timeit'} <= set(c['matches']) and c['cursor_start'] == 0 and c['cursor_end'] == 4

def test_complete_nothing(kc):
    c = complete(kc, "zzqq_nothing")
    assert c == dict(status='ok', matches=[], cursor_start=12, cursor_end=12, metadata={'_jupyter_types_experimental': []})

def test_complete_without_cursor_pos(kc):
    reply,_ = request(kc, 'complete_request', code="os.pa")
    assert reply['content']['cursor_end'] == 5 and 'path' in reply['content']['matches']

# ---- inspect ----
def inspect(kc, code, pos=None, level=0): return req(kc, 'inspect_request', code=code, cursor_pos=len(code) if pos is None else pos, detail_level=level)

def test_inspect_detail_0(kc):
    c = inspect(kc, "fn")
    assert c['found'] is True and c['metadata'] == {} and list(c['data']) == ['text/plain']  # no HTML unless enable_html_pager, as ipykernel
    text = c['data']['text/plain']
    assert 'Signature' in text and 'Add things.' in text and 'Source' not in text

def test_inspect_detail_1_shows_source(kc):
    text = inspect(kc, "fn", level=1)['data']['text/plain']
    assert 'Source' in text and 'return' in text

def test_inspect_name_under_cursor(kc):
    c = inspect(kc, "x = fn(1, os.path)", 5)
    assert c['found'] and 'Add things.' in c['data']['text/plain']
    text = inspect(kc, "x = fn(1, os.path)", 14)['data']['text/plain']
    assert 'module' in text and 'posixpath' in text

@pytest.mark.parametrize('code', ["no_such_name_here", "", "   "])
def test_inspect_unknown(kc, code):
    assert inspect(kc, code) == dict(status='ok', found=False, data={}, metadata={})

def test_inspect_bad_omit_sections(kc):
    reply,_ = request(kc, 'inspect_request', code='fn', cursor_pos=2, detail_level=0, omit_sections='nope')
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == 'BadRequest' and 'omit_sections' in c['evalue']

# ---- is_complete ----
@pytest.mark.parametrize('code,expect', [
    ("x = 1", dict(status='complete')),
    ("for i in range(3):", dict(status='incomplete', indent='    ')),
    ("if 1:\n    if 2:", dict(status='incomplete', indent='        ')),
    ("x = (1,", dict(status='incomplete', indent='')),
    ("x = )", dict(status='invalid')),
    ("%time 1", dict(status='complete')),
])
def test_is_complete(kc, code, expect):
    assert req(kc, 'is_complete_request', code=code) == expect

# ---- history ----
def hist(kc, **content):
    content = dict(dict(output=False, raw=True), **content)
    return [tuple(e) if not isinstance(e[2], list) else (e[0], e[1], tuple(e[2])) for e in req(kc, 'history_request', **content)['history']]

@pytest.fixture(scope='module')
def cells(kc):
    "Code run in this module's kernel after the setup cell, in order."
    code = ["h_a = 'alpha'", "h_b = 'beta'", "%time h_c = 'gamma'", "h_a = 'alpha'"]
    for c in code: ok(kc, c)
    return code

def test_history_range_current_session(kc, cells):
    h = hist(kc, hist_access_type='range', session=0, start=1, stop=None)
    assert [e[2] for e in h][:5] == ["import os\nnäme_ünï = 1\ndef fn(a, b=2):\n    'Add things.'\n    return a", *cells]
    assert all(e[0] == 0 for e in h) and [e[1] for e in h] == list(range(1, len(h) + 1))

def test_history_range_stop_and_transformed(kc, cells):
    h = hist(kc, hist_access_type='range', session=0, start=2, stop=5, raw=False)
    assert [e[1] for e in h] == [2, 3, 4]
    assert h[2][2].startswith("get_ipython().run_line_magic('time'")
    assert hist(kc, hist_access_type='range', session=0, start=4, stop=5, raw=True)[0][2] == "%time h_c = 'gamma'"

def test_history_range_returns_what_just_ran(kc, cells):
    ok(kc, "just_ran = 1")
    assert hist(kc, hist_access_type='range', session=0, start=-1)[-1][2] == "just_ran = 1"

def test_history_range_with_output(kc, cells):
    h = hist(kc, hist_access_type='range', session=0, start=2, stop=3, output=True)
    assert h == [(0, 2, ("h_a = 'alpha'", None))]

def test_history_tail(kc, cells):
    ok(kc, "tail_x = 1")
    ok(kc, "tail_y = 2")
    h = hist(kc, hist_access_type='tail', n=2)
    assert [e[2] for e in h] == ["tail_x = 1", "tail_y = 2"] and h[0][0] == h[1][0] >= 1 and h[1][1] == h[0][1] + 1

def test_history_tail_default_n(kc, cells):
    for i in range(4): ok(kc, f"more_{i} = {i}")
    h = hist(kc, hist_access_type='tail')
    assert len(h) == 10 and h[-1][2] == "more_3 = 3"

def test_history_search(kc, cells):
    h = hist(kc, hist_access_type='search', pattern="h_a*")
    assert [e[2] for e in h] == ["h_a = 'alpha'", "h_a = 'alpha'"]
    assert [e[2] for e in hist(kc, hist_access_type='search', pattern="h_a*", unique=True)] == ["h_a = 'alpha'"]
    assert [e[2] for e in hist(kc, hist_access_type='search', pattern="*h_*", n=2)] == ["%time h_c = 'gamma'", "h_a = 'alpha'"]
    assert hist(kc, hist_access_type='search', pattern="nothing matches*") == []

def test_history_unknown_access_type(kc):
    assert hist(kc, hist_access_type='sideways') == []

@pytest.mark.parametrize('bad,field', [(dict(n='3'), 'n'), (dict(n=-1), 'n'), (dict(output='yes'), 'output'), (dict(start=1.5), 'start'),
                                       (dict(pattern=3), 'pattern'), (dict(hist_access_type=None), 'hist_access_type')])
def test_history_bad_fields(kc, bad, field):
    reply,msgs = request(kc, 'history_request', **dict(dict(hist_access_type='tail', output=False, raw=True, n=1), **bad))
    c = reply['content']
    assert c['status'] == 'error' and c['ename'] == 'BadRequest' and f"'{field}'" in c['evalue']
    assert [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']
    assert hist(kc, hist_access_type='tail', n=1)  # still serving

def test_history_while_a_cell_runs(kc, tmp_path):
    "history_request is answered on the shell thread while the main thread runs a cell, and sees that cell's input."
    flag = tmp_path / 'go'
    code = f"import os, time\nprint('running', flush=True)\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.01)"
    mid = kc.execute(code)
    seen = []
    while 'running' not in stdout(seen):
        m = kc.get_iopub_msg(timeout=30)
        if parent_id(m) == mid: seen.append(m)
    msg = kc.session.msg('history_request', dict(hist_access_type='tail', n=1, output=False, raw=True))
    kc.shell_channel.send(msg)
    reply = get_reply(kc, msg['header']['msg_id'])
    flag.write_text('')
    assert get_reply(kc, mid)['content']['status'] == 'ok'
    assert [e[2] for e in reply['content']['history']] == [code]
    ok(kc, "after_running = 1")
    assert [e[2] for e in hist(kc, hist_access_type='tail', n=2)] == [code, "after_running = 1"]
