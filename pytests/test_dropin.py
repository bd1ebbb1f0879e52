"""Drop-in for ipykernel: libraries that recognise a notebook kernel by ipykernel's names pick their notebook mode, and the kernel
API, logging, forked children, debugger prompts and `exit` behave as under ipykernel. Where a test says "as ipykernel", the same
cell runs on both kernels (ipykernel's kernelspec `python3` is installed with the test extra)."""
import os, sys, json, signal, time, subprocess, contextlib
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from kernel_utils import (start_kernel, execute, get_reply, iopub_until_idle, interrupt, outputs, stdout, types, parent_id, collect,
                          kernel_ports, TIMEOUT, KERNEL_NAME)

KERNELS = [KERNEL_NAME, 'python3']

@pytest.fixture(scope='module', params=KERNELS)
def both(request):
    "A kernel of each kind, ipymini and ipykernel: (name, kc)."
    if request.param == 'python3':
        try: KernelSpecManager().get_kernel_spec('python3')
        except NoSuchKernel: pytest.fail("ipykernel's kernelspec python3 is missing: pip install -e '.[test]'")
    with start_kernel(kernel_name=request.param) as (km,kc): yield request.param,kc

def ok(kc, code, **kw):
    "Run `code`, which must succeed; returns its IOPub outputs."
    reply,msgs = execute(kc, code, **kw)
    assert reply['content']['status'] == 'ok', reply['content']
    return outputs(msgs)

def text(msgs, name='stdout'): return ''.join(m['content']['text'] for m in msgs if m['msg_type'] == 'stream' and m['content']['name'] == name)

# ---- how libraries recognise a notebook kernel ----
DETECT = """import sys
ip = get_ipython()
print(type(ip).__name__, type(ip).__module__.startswith('ipykernel.'), 'IPKernelApp' in ip.config, 'ipykernel.zmqshell' in sys.modules,
      sys.stdout.encoding, hasattr(ip.kernel, 'get_parent'))"""

def test_notebook_checks_as_ipykernel(both):
    assert text(ok(both[1], DETECT)) == "ZMQInteractiveShell True True True UTF-8 True\n"

def test_real_ipykernel_still_imports(kc):
    "The package ipykernel is never faked: where it is installed, importing it gives it."
    out = text(ok(kc, "import ipykernel, ipykernel.kernelspec; print(ipykernel.__file__.endswith('ipykernel/__init__.py'), ipykernel.kernelspec.KERNEL_NAME)"))
    assert out == "True python3\n"

def test_tqdm_auto_gives_the_widget_bar(both):
    outs = ok(both[1], "from tqdm.auto import tqdm\nfor i in tqdm(range(3)): pass")
    opens = [m for m in outs if m['msg_type'] == 'comm_open']
    assert opens and {m['content']['target_name'] for m in opens} == {'jupyter.widget'}
    assert any(m['content']['data']['state'].get('_model_name') == 'FloatProgressModel' for m in opens)
    views = [m for m in outs if m['msg_type'] == 'display_data']
    assert len(views) == 1 and 'application/vnd.jupyter.widget-view+json' in views[0]['content']['data']
    assert not text(outs, 'stderr')  # no console bar on stderr

def test_rich_renders_html(both):
    outs = ok(both[1], "from rich.console import Console\nConsole().print('[bold]hi[/bold]')")
    assert types(outs) == ['display_data'] and sorted(outs[0]['content']['data']) == ['text/html', 'text/plain']
    assert '<span style="font-weight: bold">hi</span>' in outs[0]['content']['data']['text/html']

def test_plotly_sends_its_mimetype_only(both):
    outs = ok(both[1], "import plotly.io as pio, plotly.graph_objects as go\nprint(pio.renderers.default)\ngo.Figure(data=[go.Bar(y=[1, 2])]).show()")
    assert text(outs) == "plotly_mimetype\n"
    shown = [m for m in outs if m['msg_type'] == 'display_data']
    assert len(shown) == 1 and list(shown[0]['content']['data']) == ['application/vnd.plotly.v1+json']

# ---- ipykernel's parent API ----
def test_parent_api(both):
    kc = both[1]
    msg_id = kc.execute("ip = get_ipython()\nprint(ip.get_parent()['header']['msg_id'], ip.kernel.get_parent()['header']['msg_id'], "
                        "ip.kernel.get_parent('shell')['header']['msg_type'])")
    get_reply(kc, msg_id)
    assert stdout(iopub_until_idle(kc, msg_id)) == f"{msg_id} {msg_id} execute_request\n"

def test_thread_parent_routes_output(both):
    "A thread that sets a parent prints to that request; after `reset_thread_parent`, to the cell that started it."
    kc = both[1]
    first = kc.execute("import threading\nip = get_ipython()\nfirst = ip.get_parent()")
    get_reply(kc, first)
    iopub_until_idle(kc, first)
    code = ("def work():\n    token = ip.set_thread_parent(first)\n    print('to the first cell')\n    ip.reset_thread_parent(token)\n"
            "    print('to this cell')\nt = threading.Thread(target=work)\nt.start()\nt.join()")
    second = kc.execute(code)
    get_reply(kc, second)
    msgs = []  # every IOPub message up to the second cell's idle, whatever its parent
    while not (msgs and parent_id(msgs[-1]) == second and msgs[-1]['msg_type'] == 'status' and msgs[-1]['content']['execution_state'] == 'idle'):
        msgs.append(kc.get_iopub_msg(timeout=TIMEOUT))
    assert stdout([m for m in msgs if parent_id(m) == second]) == "to this cell\n"
    assert stdout([m for m in msgs if parent_id(m) == first]) == "to the first cell\n"

def test_output_widget_from_a_thread(kc):
    "ipywidgets' Output widget, entered in a thread the cell started, captures that thread's print for the cell's widget."
    code = ("import threading, ipywidgets as w\nout = w.Output()\ndisplay(out)\n"
            "def work():\n    with out: print('captured')\nt = threading.Thread(target=work)\nt.start()\nt.join()")
    msg_id = kc.execute(code)
    get_reply(kc, msg_id)
    msgs = iopub_until_idle(kc, msg_id)
    ids = [m['content']['data']['state']['msg_id'] for m in msgs if m['msg_type'] == 'comm_msg' and 'msg_id' in m['content']['data'].get('state', {})]
    assert ids == [msg_id, '']  # the widget takes the cell's output while the thread is in `with out`, then lets go
    assert stdout(msgs) == "captured\n"

# ---- logging ----
def test_logging_reaches_the_cell(both):
    kc = both[1]
    outs = ok(kc, "import logging\nlogging.getLogger('some.library').warning('careful')")
    assert text(outs, 'stderr') == "careful\n"
    outs = ok(kc, "logging.basicConfig(level=logging.INFO)\nlogging.info('hello')\nlogging.getLogger('x').debug('hidden')")
    assert text(outs, 'stderr') == "INFO:root:hello\n"

def test_bokeh_validation_warning_reaches_the_cell(kc):
    code = "import bokeh.plotting as bp\nfrom bokeh.io import output_notebook, show\noutput_notebook(hide_banner=True)\nshow(bp.figure())"
    assert "W-1000 (MISSING_RENDERERS): Plot has no renderers" in text(ok(kc, code), 'stderr')

def test_kernel_log_stays_out_of_cells(tmp_path):
    "The kernel's own records go to its logger (the launcher's stderr), not through the root logger into a cell."
    with start_kernel(env=dict(IPYTHONDIR=str(tmp_path))) as (km,kc):
        outs = ok(kc, "import logging\nlogging.basicConfig(level=logging.DEBUG)\nk = logging.getLogger('ipymini')\n"
                      "k.warning('kernel note')\nprint(k.propagate, [type(h).__name__ for h in logging.getLogger().handlers])")
        assert text(outs) == "False ['StreamHandler']\n" and 'kernel note' not in text(outs, 'stderr')

# ---- forked children ----
# Python 3.12 and later warn of fork() in a process with threads (any kernel's): the same text on both kernels, not the point here
QUIET_FORK = "import warnings\nwarnings.filterwarnings('ignore', 'This process .* is multi-threaded', DeprecationWarning)\n"
FORK = QUIET_FORK + """import os, sys
pid = os.fork()
if pid == 0:
    print('child out')
    sys.stderr.write('child err\\n')
    os._exit(0)
os.waitpid(pid, 0)"""

def test_forked_child_output_reaches_the_cell(kc):
    msg_id = kc.execute(FORK)
    get_reply(kc, msg_id)
    msgs = iopub_until_idle(kc, msg_id)
    assert text(msgs) == "child out\n" and text(msgs, 'stderr') == "child err\n"

def test_multiprocessing_output_reaches_the_cell(kc):
    code = (QUIET_FORK + "import multiprocessing as mp\ndef work(x): print('worker', x)\np = mp.Process(target=work, args=(1,))\np.start()\np.join()\n"
            "with mp.Pool(2) as pool: pool.map(work, [2, 3])")
    msg_id = kc.execute(code)
    get_reply(kc, msg_id)
    lines = text(iopub_until_idle(kc, msg_id)).splitlines()
    assert lines[0] == 'worker 1' and sorted(lines[1:]) == ['worker 2', 'worker 3']

CHILD_SIGNALS = QUIET_FORK + """import os, signal, time
def child(sig):
    pid = os.fork()
    if pid == 0:
        try:
            os.kill(os.getpid(), sig)
            time.sleep(60)
        except KeyboardInterrupt: os._exit(3)
        os._exit(7)
    return os.waitpid(pid, 0)[1]
print([child(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)])"""

def test_forked_child_signals_as_ipykernel(both):
    "A forked child's SIGTERM and SIGUSR1 end it, its SIGINT is a KeyboardInterrupt, as under ipykernel, and none reaches the kernel."
    assert text(ok(both[1], CHILD_SIGNALS)) == f"{[int(signal.SIGTERM), int(signal.SIGUSR1), 3 << 8]}\n"  # waitpid statuses: two signals, exit 3
    assert text(ok(both[1], "print('still here')")) == "still here\n"

# a startup file's fork hook, which runs in a forked child before the kernel's own: it holds the child there until the cell lets it go
HOLD = """import os
held = {}
def _hold():
    if 'fd' in held: os.read(held['fd'], 1)
os.register_at_fork(after_in_child=_hold)"""
SIGNAL_WHILE_HELD = QUIET_FORK + """import os, signal
def child(sig):
    r,w = os.pipe()
    held['fd'] = r
    pid = os.fork()
    if pid == 0: os._exit(7)
    del held['fd']
    os.kill(pid, sig)
    os.write(w, b'x')
    os.close(r), os.close(w)
    return os.waitpid(pid, 0)[1]
print([child(s) for s in (signal.SIGTERM, signal.SIGUSR1)])"""

@pytest.mark.parametrize('name', KERNELS)
def test_signal_to_a_starting_child_as_ipykernel(name, tmp_path):
    """A signal that reaches a forked child before the kernel's fork hooks ran in it (a multiprocessing pool terminated while a worker
    starts) ends the child as under ipykernel, and does not reach the kernel (the kernel's handlers in the child would hand it on)."""
    (tmp_path/'profile_default'/'startup').mkdir(parents=True)
    (tmp_path/'profile_default'/'startup'/'00-hold.py').write_text(HOLD)
    with start_kernel(env=dict(IPYTHONDIR=str(tmp_path)), kernel_name=None if name == KERNEL_NAME else name) as (km,kc):
        assert text(ok(kc, SIGNAL_WHILE_HELD)) == f"{[int(signal.SIGTERM), int(signal.SIGUSR1)]}\n"  # waitpid statuses: both signals
        assert text(ok(kc, "print('still here')")) == "still here\n"

# ---- debugger prompts and interrupts ----
@pytest.mark.parametrize('code', ["import pdb; pdb.set_trace()\nprint('not reached')", "def f(x):\n    breakpoint()\n    return x\nf(1)",
                                  "%debug"])
def test_interrupt_ends_a_debugger_prompt(kc, code):
    if code == "%debug": assert execute(kc, "1/0")[0]['content']['ename'] == 'ZeroDivisionError'  # what %debug then opens
    msg_id = kc.execute(code, allow_stdin=True)
    req = kc.get_stdin_msg(timeout=TIMEOUT)
    assert parent_id(req) == msg_id and req['content']['prompt'].strip() in ('(Pdb)', 'ipdb>')
    queued = kc.execute("print('queued cell ran')")
    interrupt(kc)
    replies,pub = collect(kc, [msg_id, queued])
    c = replies[msg_id]['content']
    assert c['status'] == 'error' and c['ename'] == 'KeyboardInterrupt'
    errors = [m for m in pub[msg_id] if m['msg_type'] == 'error']
    assert len(errors) == 1 and errors[0]['content']['ename'] == 'KeyboardInterrupt' and 'not reached' not in stdout(pub[msg_id])
    assert replies[queued]['content']['status'] == 'ok' and stdout(pub[queued]) == "queued cell ran\n"
    assert text(ok(kc, "import sys; print(sys.gettrace())")) == "None\n"  # the debugger is gone

# ---- history ----
def test_range_history_carries_the_session_asked_for(kc):
    ok(kc, "x = 'range history'")
    tail = get_reply(kc, kc.history(hist_access_type='tail', n=1, output=False, raw=True))['content']['history']
    session = tail[-1][0]
    assert session > 0
    rows = get_reply(kc, kc.history(hist_access_type='range', session=session, start=1, stop=None, output=False, raw=True))['content']['history']
    assert rows and {r[0] for r in rows} == {session} and [session, tail[-1][1], "x = 'range history'"] in rows

# ---- the command line ----
def kernel_process(tmp_path, *args, cfg=None):
    "`python -m ipymini -f FILE ARGS` started by hand, its stderr kept: (process, connection file)."
    from jupyter_client.connect import write_connection_file
    path = str(tmp_path/'kernel.json')
    if cfg is None: write_connection_file(path, key=b'k3y', **kernel_ports())
    else: (tmp_path/'kernel.json').write_text(json.dumps(cfg))
    env = {**os.environ, 'IPYTHONDIR': str(tmp_path/'ipython'), 'JUPYTER_RUNTIME_DIR': str(tmp_path/'runtime')}
    p = subprocess.Popen([sys.executable, '-m', 'ipymini', '-f', path, *args], stderr=subprocess.PIPE, text=True, env=env)
    return p,path

@contextlib.contextmanager
def client(path, proc):
    "A client of the kernel of connection file `path`, which ends the kernel afterwards."
    from jupyter_client import BlockingKernelClient
    kc = BlockingKernelClient()
    kc.load_connection_file(path)
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        yield kc
    finally:
        with contextlib.suppress(Exception): kc.shutdown()
        kc.stop_channels()
        try: proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired: proc.kill()

def test_ipython_options_on_the_command_line(tmp_path):
    "Options launchers append (nbclient: --HistoryManager.hist_file=:memory:) apply; unknown ones get a warning, never an exit."
    p,path = kernel_process(tmp_path, '--HistoryManager.hist_file=:memory:', '--InteractiveShell.xmode=Plain', '--IPKernelApp.matplotlib=inline',
                            '--colors=nocolor', '--Foo.bar=1', '--no-such-alias=2')
    with client(path, p) as kc:
        out = text(ok(kc, "ip = get_ipython()\nprint(ip.history_manager.hist_file, ip.InteractiveTB.mode, ip.config.IPKernelApp.matplotlib, ip.colors)"))
        assert out == ":memory: Plain inline nocolor\n"
    err = p.stderr.read()
    assert "ignoring command-line option --Foo.bar: this kernel has no Foo" in err
    assert "ignoring command-line option --no-such-alias=2: not an IPython option" in err and 'Traceback' not in err

def test_connection_file_without_ports_is_written(tmp_path):
    p,path = kernel_process(tmp_path, cfg=dict(ip='127.0.0.1', key='k3y', transport='tcp', signature_scheme='hmac-sha256'))
    deadline = time.monotonic() + TIMEOUT
    while 'shell_port' not in (cfg := json.loads(open(path).read())):  # the kernel rewrites the file once its ports are bound
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() is not None else "connection file not rewritten"
        time.sleep(0.01)
    with client(path, p) as kc:
        assert all(isinstance(cfg[k], int) and cfg[k] > 0 for k in ('shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'))
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert text(ok(kc, "print('connected')")) == "connected\n"

def test_without_connection_file_writes_one_to_connect_to(tmp_path):
    "`python -m ipymini` alone writes a 0600 connection file in Jupyter's runtime dir and says how to connect."
    from jupyter_client import find_connection_file
    env = {**os.environ, 'IPYTHONDIR': str(tmp_path/'ipython'), 'JUPYTER_RUNTIME_DIR': str(tmp_path/'runtime')}
    p = subprocess.Popen([sys.executable, '-m', 'ipymini'], stderr=subprocess.PIPE, text=True, env=env)
    line = p.stderr.readline()
    assert line.startswith("ipymini: connect with --existing kernel-ipymini-"), line
    name = line.split('--existing ')[1].strip()
    path = find_connection_file(name, path=str(tmp_path/'runtime'))
    assert os.stat(path).st_mode & 0o777 == 0o600
    with client(path, p) as kc: assert text(ok(kc, "print('by hand')")) == "by hand\n"

def test_version():
    import ipymini
    p = subprocess.run([sys.executable, '-m', 'ipymini', '--version'], capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0 and p.stdout.strip() == ipymini.__version__

# ---- jupyter console's exit ----
def test_exit_ends_jupyter_console(tmp_path):
    pexpect = pytest.importorskip('pexpect')
    env = {**os.environ, 'IPYTHONDIR': str(tmp_path/'ipython'), 'JUPYTER_RUNTIME_DIR': str(tmp_path/'runtime'), 'TERM': 'dumb'}
    # a kernel already up: a console that starts its own counts it dead until its heartbeat's first answer, and skips a reply meanwhile
    with start_kernel() as (km,kc):
        con = pexpect.spawn(os.path.join(os.path.dirname(sys.executable), 'jupyter'), ['console', '--existing', km.connection_file, '--simple-prompt', '--no-confirm-exit'],
                            env=env, encoding='utf-8', timeout=TIMEOUT)
        try:
            con.expect(r'In \[1\]: ')
            con.send('exit\r')
            con.expect(pexpect.EOF)  # the console ended: it read the ask_exit payload, as with ipykernel
        finally:
            con.close(force=True)
        km.provisioner.process.wait(TIMEOUT)  # and the kernel with it: the console asked it to shut down
        assert not km.is_alive()

# ---- a notebook of everyday library cells through nbclient, ipymini installed as `python3` ----
LIBRARY_CELLS = [
    "print(get_ipython().history_manager.hist_file)",  # nbclient appends --HistoryManager.hist_file=:memory: for python3
    "from tqdm.auto import tqdm\nfor i in tqdm(range(3)): pass",
    "from rich.console import Console\nConsole().print('[bold]rich[/bold]')",
    "import plotly.graph_objects as go\ngo.Figure(data=[go.Bar(y=[1, 2])]).show()",
    "import pandas as pd\npd.DataFrame(dict(a=[1, 2], b=['x', 'y']))",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
    "import ipywidgets as w\nw.IntSlider(3)",
    "import logging\nlogging.getLogger('lib').warning('a library warns')",
    "from IPython.display import HTML, Markdown, display\ndisplay(HTML('<b>html</b>'), Markdown('*md*'))",
    "import sys\nprint('out'); print('err', file=sys.stderr)",
    "1/0",
]

def shape(out):
    "What a notebook keeps of an output, without the values that differ run to run."
    if out.output_type == 'stream': return ('stream', out.name)
    if out.output_type == 'error': return ('error', out.ename)
    return (out.output_type, tuple(sorted(out.data)))

def run_library_notebook(tmp_path, monkeypatch, jupyter_path=None):
    nbformat,nbclient = pytest.importorskip('nbformat'),pytest.importorskip('nbclient')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in LIBRARY_CELLS])
    (tmp_path/'ipython').mkdir(parents=True)
    monkeypatch.setenv('IPYTHONDIR', str(tmp_path/'ipython'))
    if jupyter_path: monkeypatch.setenv('JUPYTER_PATH', str(jupyter_path))
    else: monkeypatch.delenv('JUPYTER_PATH', raising=False)
    nbclient.NotebookClient(nb, kernel_name='python3', allow_errors=True).execute()  # nbclient's defaults otherwise
    return [[shape(o) for o in c.outputs] for c in nb.cells],nb

def test_library_notebook_as_ipykernel(tmp_path, monkeypatch):
    p = subprocess.run([sys.executable, '-m', 'ipymini', 'install', '--prefix', str(tmp_path/'prefix'), '--name', 'python3'],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    mini,nb = run_library_notebook(tmp_path/'mini', monkeypatch, tmp_path/'prefix'/'share'/'jupyter')
    assert nb.metadata.get('language_info', {}).get('name') == 'python'
    assert nb.cells[0].outputs[0].text == ':memory:\n'
    ref,_ = run_library_notebook(tmp_path/'ref', monkeypatch)
    for code,a,b in zip(LIBRARY_CELLS, mini, ref): assert a == b, code
    assert mini[1][-1] == ('display_data', ('application/vnd.jupyter.widget-view+json', 'text/plain'))
    assert mini[3] == [('display_data', ('application/vnd.plotly.v1+json',))] and mini[7] == [('stream', 'stderr')]

def test_click_keeps_its_colours(both):
    "click strips ANSI colours unless it writes to a terminal or to ipykernel's stream class."
    outs = ok(both[1], "import click\nclick.secho('coloured', fg='red')")
    assert text(outs) == "\x1b[31mcoloured\x1b[0m\n"
