"""The magics ipykernel adds to IPython's, asserted on their messages: stream text, display_data, payloads, UsageErrors."""
import importlib.util, json, os, re, shutil, time, pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_core.paths import jupyter_runtime_dir
from kernel_utils import execute, outputs, stdout, start_kernel, TIMEOUT

KERNEL_MAGICS = {'autosave', 'clear', 'connect_info', 'ed', 'edit', 'gui', 'less', 'man', 'more', 'qtconsole', 'subshell'}

def run(kc, code, **kw):
    "(reply content, [(msg_type, content)] of the cell's outputs)."
    reply,msgs = execute(kc, code, **kw)
    return reply['content'],[(m['msg_type'], m['content']) for m in outputs(msgs)]

def ok(kc, code, **kw):
    reply,out = run(kc, code, **kw)
    assert reply['status'] == 'ok', reply
    return reply,out

def err(kc, code, ename, evalue, **kw):
    "The cell fails with `ename: evalue`; returns its outputs."
    reply,out = run(kc, code, **kw)
    assert (reply['status'],reply['ename'],reply['evalue']) == ('error', ename, evalue)
    return out

def usage_error(kc, code, evalue):
    "A UsageError: its one line on stderr, no traceback."
    assert err(kc, code, 'UsageError', evalue) == [('stream', dict(name='stderr', text=f'UsageError: {evalue}\n'))]

def test_connect_info(kernel):
    km,kc = kernel
    _,out = ok(kc, '%connect_info')
    cf = km.connection_file
    with open(cf) as f: info = f.read()
    name = os.path.basename(cf) if os.path.dirname(os.path.realpath(cf)) == os.path.realpath(jupyter_runtime_dir()) else cf
    text = (info + "\n\n" + "Paste the above JSON into a file, and connect with:\n    $> jupyter <app> --existing <file>\nor, if you are local, "
            f"you can connect with just:\n    $> jupyter <app> --existing {name}\nor even just:\n    $> jupyter <app> --existing\n"
            "if this is the most recent Jupyter kernel you have started.\n")
    assert out == [('stream', dict(name='stdout', text=text))]

def test_autosave(kc):
    for n,said in ((30, 'Autosaving every 30 seconds'), (0, 'Autosave disabled')):
        _,out = ok(kc, f'%autosave {n}')
        js = dict(data={'application/javascript': f'IPython.notebook.set_autosave_interval({n * 1000})'}, metadata={}, transient={})
        assert out == [('display_data', js), ('stream', dict(name='stdout', text=said + '\n'))]
    usage_error(kc, '%autosave soon', "%autosave requires an integer, got 'soon'")

def test_qtconsole(kc):
    if importlib.util.find_spec('qtconsole') is not None: pytest.skip("qtconsole is installed: %qtconsole would open a window")
    _,out = ok(kc, '%qtconsole')
    assert out == [('stream', dict(name='stderr', text="%qtconsole: qtconsole is not installed (pip install qtconsole)\n"))]

FAKE_QTCONSOLE = """import json, os, sys
def main():
    out = os.environ['FAKE_QTCONSOLE_OUT']
    with open(out + '.tmp', 'w') as f: json.dump(dict(argv=sys.argv[1:], sid=os.getsid(0), pid=os.getpid()), f)
    os.rename(out + '.tmp', out)
"""

def test_qtconsole_starts(tmp_path):
    "With qtconsole installed (a stand-in here), %qtconsole starts it on this kernel's connection file, in a session of its own."
    (tmp_path / 'qtconsole').mkdir()
    (tmp_path / 'qtconsole' / '__init__.py').write_text('')
    (tmp_path / 'qtconsole' / 'qtconsoleapp.py').write_text(FAKE_QTCONSOLE)
    out = tmp_path / 'started.json'
    with start_kernel(env=dict(PYTHONPATH=str(tmp_path), FAKE_QTCONSOLE_OUT=str(out))) as (km,kc):
        assert ok(kc, '%qtconsole --style=monokai')[1] == []
        deadline = time.monotonic() + TIMEOUT
        while not out.exists():  # the file the stand-in writes
            assert time.monotonic() < deadline, "qtconsole was not started"
            time.sleep(0.01)
        got = json.loads(out.read_text())
        assert got['argv'] == ['--existing', km.connection_file, '--style=monokai'] and got['sid'] == got['pid']

@pytest.mark.skipif(shutil.which('clear') is None, reason="no clear command")
def test_clear(kc): assert ok(kc, '%clear')[1] == [('stream', dict(name='stdout', text='\x1b[H\x1b[2J'))]

def page(text): return [dict(source='page', data={'text/plain': text}, start=0)]

def test_less_more(kc, tmp_path):
    f = tmp_path / 'notes.txt'
    f.write_text('one\ntwo\n')
    for magic in ('less', 'more'):
        reply,out = ok(kc, f'%{magic} {f}')
        assert (reply['payload'],out) == (page('one\ntwo\n'), [])
    usage_error(kc, '%less', 'Missing filename.')
    py = tmp_path / 'mod.py'
    py.write_text('x = 1\n')
    reply,_ = ok(kc, f'%less {py}')
    [p] = reply['payload']
    assert p['source'] == 'page' and '\x1b[' in p['data']['text/plain']  # syntax-highlighted
    assert re.sub(r'\x1b\[[0-9;]*m', '', p['data']['text/plain']) == 'x = 1\n'

@pytest.mark.skipif(shutil.which('man') is None, reason="no man command")
def test_man(kc):
    reply,out = ok(kc, '%man ls')
    [p] = reply['payload']
    assert (p['source'],p['start'],out) == ('page', 0, [])
    assert 'NAME' in p['data']['text/plain'] and 'ls - list directory contents' in p['data']['text/plain']

def test_edit(kc, tmp_path):
    ok(kc, 'def edited(): pass')
    reply,out = ok(kc, '%edit edited')
    [p] = reply['payload']
    assert p['source'] == 'edit_magic' and p['line_number'] == 1 and os.path.isabs(p['filename']) and out == []
    f = tmp_path / 'script.py'
    f.write_text('a = 1\nb = 2\nc = 3\n')
    reply,out = ok(kc, f'%ed -n 3 {f}')
    assert (reply['payload'],out) == ([dict(source='edit_magic', filename=str(f.resolve()), line_number='3')], [])

def test_subshell(kc):
    _,out = ok(kc, '%subshell')
    lines = stdout([dict(msg_type=t, content=c) for t,c in out]).splitlines()
    assert [l.split(':')[0] for l in lines] == ['subshell id', 'thread id', 'main thread id', 'pid', 'thread count', 'subshell list']
    assert lines[0] == 'subshell id: None' and lines[1].split(': ')[1] == lines[2].split(': ')[1] and lines[5] == 'subshell list: []'

def test_stdin_not_allowed(kc):
    for code,evalue in (('input()', "raw_input was called, but this frontend does not support input requests."),
                        ('import getpass; getpass.getpass()', "getpass was called, but this frontend does not support input requests.")):
        err(kc, code, 'StdinNotImplementedError', evalue, allow_stdin=False)

LSMAGIC = "m = get_ipython().magics_manager.lsmagic(); print(sorted(m['line']), sorted(m['cell']))"

def test_lsmagic(kc):
    "The kernel magics are listed; with ipykernel installed, the list is ipykernel's."
    _,out = ok(kc, LSMAGIC)
    listed = stdout([dict(msg_type=t, content=c) for t,c in out])
    assert all(f"'{m}'" in listed.split('] [')[0] for m in KERNEL_MAGICS)
    try: KernelSpecManager().get_kernel_spec('python3')
    except NoSuchKernel: pytest.fail("ipykernel's kernelspec python3 is missing: pip install -e '.[test]'")
    with start_kernel(kernel_name='python3') as (km,ref): _,ref_out = ok(ref, LSMAGIC)
    assert listed == stdout([dict(msg_type=t, content=c) for t,c in ref_out])

def test_outrank_ipython_magics_loaded_later(kc, tmp_path):
    "IPython loads its magic classes at first use (9.x): loading the ones that also define %gui, %matplotlib and %edit keeps the kernel's."
    for line in ('%precision 3', '%precision', '%pylab?', '%load?'): ok(kc, line)
    usage_error(kc, '%gui nonsense', "unknown GUI 'nonsense'; use one of gtk, gtk3, gtk4, qt, qt5, qt6, tk, wx, or, for no event loop, "
                                     "agg, asyncio, inline, ipympl, nbagg, notebook, webagg, widget")
    f = tmp_path / 'again.py'
    f.write_text('a = 1\n')
    reply,_ = ok(kc, f'%edit {f}')
    assert reply['payload'] == [dict(source='edit_magic', filename=str(f.resolve()), line_number=None)]
