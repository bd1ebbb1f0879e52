"""End to end with the clients people use: nbclient, `jupyter execute`, papermill, `jupyter console`, Jupyter Kernel Gateway."""
import os, sys, re, json, time, uuid, base64, signal, socket, shutil, subprocess, contextlib, importlib, urllib.request, urllib.error
from pathlib import Path
import pytest, nbformat, psutil

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT/'examples'/'tour.ipynb'
JUPYTER = str(Path(sys.executable).parent/'jupyter')
KERNEL = 'ipymini'
TIMEOUT = 60
ANSI = re.compile(r'\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r')  # terminal escape sequences (and CR), removed before matching

def need(name):
    "Import a module the `test` extra installs: missing, it is a failure that says how to install it (never a skip)."
    try: return importlib.import_module(name)
    except ImportError as e: pytest.fail(f"{name} missing ({e}): pip install -e '.[test]'", pytrace=False)

def free_port():
    "A port on 127.0.0.1 that nothing listens on right now."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def jupyter_env(tmp, **kw):
    "Environment for a Jupyter process whose config, data, runtime and IPython dirs are fresh ones under `tmp`."
    dirs = {k: Path(tmp)/v for k,v in dict(JUPYTER_CONFIG_DIR='config', JUPYTER_DATA_DIR='data', JUPYTER_RUNTIME_DIR='runtime', IPYTHONDIR='ipython').items()}
    for d in dirs.values(): d.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **{k:str(v) for k,v in dirs.items()}, 'JUPYTER_PLATFORM_DIRS': '1', 'PYTHONUNBUFFERED': '1', **kw}

def stop_tree(pid, grace=10):
    "End a process, its process group and every descendant (kernels run in their own sessions), politely first."
    try: procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess: return
    with contextlib.suppress(ProcessLookupError): os.killpg(pid, signal.SIGTERM)
    _,alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess): p.kill()
    psutil.wait_procs(alive, timeout=grace)

def http(method, url, headers=None, body=None, timeout=10):
    "(status, parsed JSON or None) of one HTTP request."
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={'Content-Type': 'application/json', **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: raw,status = r.read(),r.status
    except urllib.error.HTTPError as e: raw,status = e.read(),e.code
    return status,(json.loads(raw) if raw.strip() else None)

@contextlib.contextmanager
def serve(args, url, cwd, env, headers=None, timeout=TIMEOUT):
    "Run a server in its own process group until GET `url` answers 200; stop it and its kernels afterwards, even on failure."
    log_path = Path(cwd)/f'{Path(args[1]).name}-{uuid.uuid4().hex[:6]}.log'
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None: raise RuntimeError(f"{args[1]} exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if http('GET', url, headers, timeout=2)[0] == 200: break
            if time.monotonic() > deadline: raise TimeoutError(f"{args[1]} not answering {url} after {timeout}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)  # polling a server that is still starting: no message to wait on
        yield proc
    finally: stop_tree(proc.pid)

# ---- notebooks: nbclient, jupyter execute, papermill ----

def summary(nb):
    "Per code cell: (execution_count, [(output_type, text or sorted mime types)])."
    def one(o): return (o.output_type, o.text if o.output_type == 'stream' else o.get('ename') or sorted(o.get('data', {})))
    return [(c.execution_count, [one(o) for o in c.outputs]) for c in nb.cells if c.cell_type == 'code']

def check_tour(nb, n=10, title='squares'):
    "The tour notebook's outputs, for parameters `n` and `title`: its last four code cells, run in order."
    code = [c for c in nb.cells if c.cell_type == 'code']
    k,total,last = len(code),sum(i*i for i in range(n)),(n-1)**2
    assert summary(nb)[-4:] == [(k-3, [('stream', f'{title} {total}\n')]), (k-2, [('execute_result', ['text/html', 'text/plain'])]),
                                (k-1, [('display_data', ['image/png', 'text/plain'])]), (k, [('execute_result', ['text/plain'])])]
    html = code[-3].outputs[0].data['text/html']
    assert f'<th>{title}</th>' in html and '<tr><td>3</td><td>9</td></tr>' in html
    png = code[-2].outputs[0]
    assert base64.b64decode(png.data['image/png'])[:8] == b'\x89PNG\r\n\x1a\n' and png.data['text/plain'] == '<Figure size 400x250 with 1 Axes>'
    assert code[-1].outputs[0].data['text/plain'] == repr(f'{title}: {last}')

def test_nbclient_runs_example(tmp_path):
    from nbclient import NotebookClient
    nb = nbformat.read(EXAMPLE, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=TIMEOUT, resources=dict(metadata=dict(path=str(tmp_path)))).execute()
    assert nb.metadata.language_info.name == 'python'
    check_tour(nb)

def test_jupyter_execute_kernel_name(tmp_path):
    "`jupyter execute --kernel_name=ipymini` runs the notebook in ipymini even when the notebook names another kernel."
    nb = nbformat.read(EXAMPLE, as_version=4)
    nb.metadata.kernelspec = dict(name='python3', display_name='Python 3', language='python')
    nb.cells.append(nbformat.v4.new_code_cell('type(get_ipython().kernel).__module__.split(".")[0]'))
    nbformat.write(nb, tmp_path/'tour.ipynb')
    p = subprocess.run([JUPYTER, 'execute', f'--kernel_name={KERNEL}', '--output=done', 'tour.ipynb'], cwd=tmp_path, env=jupyter_env(tmp_path),
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert f'Executing notebook with kernel: {KERNEL}' in p.stderr
    out = nbformat.read(tmp_path/'done.ipynb', as_version=4)
    assert summary(out)[-1] == (6, [('execute_result', ['text/plain'])]) and out.cells[-1].outputs[0].data['text/plain'] == "'ipymini'"
    out.cells.pop()
    check_tour(out)

def test_jupyter_execute_errors(tmp_path):
    "An error stops `jupyter execute` with a non-zero exit naming it; with --allow-errors the error is an output and the rest runs."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in ('print("before")', 'def inverse(x): return 1/x\ninverse(0)', 'print("after")')])
    nbformat.write(nb, tmp_path/'bad.ipynb')
    def run(*flags): return subprocess.run([JUPYTER, 'execute', f'--kernel_name={KERNEL}', *flags, 'bad.ipynb'], cwd=tmp_path, env=jupyter_env(tmp_path),
                                           capture_output=True, text=True, timeout=TIMEOUT)
    p = run()
    assert p.returncode != 0 and 'ZeroDivisionError: division by zero' in ANSI.sub('', p.stderr)  # the kernel's colored traceback
    p = run('--allow-errors', '--output=done')
    assert p.returncode == 0, p.stderr
    out = nbformat.read(tmp_path/'done.ipynb', as_version=4)
    assert summary(out) == [(1, [('stream', 'before\n')]), (2, [('error', 'ZeroDivisionError')]), (3, [('stream', 'after\n')])]
    err = out.cells[1].outputs[0]
    assert err.evalue == 'division by zero' and 'inverse(0)' in ANSI.sub('', '\n'.join(err.traceback))

def test_papermill_parameters(tmp_path):
    "papermill injects a parameters cell after the tagged one and runs the notebook with ipymini."
    pm = need('papermill')
    out = pm.execute_notebook(str(EXAMPLE), str(tmp_path/'out.ipynb'), parameters=dict(n=4, title='first four'), kernel_name=KERNEL,
                              cwd=str(tmp_path), progress_bar=False, execution_timeout=TIMEOUT)
    code = [c for c in out.cells if c.cell_type == 'code']
    assert [c.metadata.get('tags', []) for c in code[:2]] == [['parameters'], ['injected-parameters']]
    assert 'n = 4\n' in code[1].source and 'title = "first four"' in code[1].source
    check_tour(out, n=4, title='first four')
    assert nbformat.read(tmp_path/'out.ipynb', as_version=4).metadata.papermill.parameters == dict(n=4, title='first four')

# ---- jupyter console, typed at in a terminal ----

class Console:
    "`jupyter console` in a pseudo-terminal; `expect` matches its output with the terminal's escape sequences removed."
    def __init__(self, tmp):
        pexpect = need('pexpect')
        # the full prompt_toolkit interface (not --simple-prompt, which has no multi-line input or completion); no cursor position queries
        env = jupyter_env(tmp, TERM='xterm', PROMPT_TOOLKIT_NO_CPR='1')
        self.child = pexpect.spawn(JUPYTER, ['console', '--kernel', KERNEL, '--no-confirm-exit'], cwd=str(tmp), env=env,
                                   encoding='utf-8', dimensions=(40, 160))
        self.raw,self.pos,self.count = '',0,1

    def text(self): return ANSI.sub('', self.raw)

    def expect(self, pat, timeout=TIMEOUT):
        "The first match of `pat` in what the console printed since the last match."
        import pexpect
        deadline = time.monotonic() + timeout
        while True:
            m = re.compile(pat).search(self.text(), self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0: raise TimeoutError(f"{pat!r} not printed; since the last match: {self.text()[self.pos:]!r}")
            with contextlib.suppress(pexpect.TIMEOUT): self.raw += self.child.read_nonblocking(65536, timeout=min(left, 0.5))

    def send(self, keys): self.child.send(keys)

    def cell(self, keys, out=None):
        "Type `keys` that end a cell; expect its `Out[n]` (a regex) if given, then the next prompt, whose number only a finished cell prints."
        self.send(keys)
        if out is not None: self.expect(rf'Out\[{self.count}\]: {out}\n')
        self.expect(rf'In \[{self.count+1}\]: ')
        self.count += 1

    def close(self):
        with contextlib.suppress(Exception):
            self.send('exit\r')
            self.child.expect(need('pexpect').EOF, timeout=10)
        stop_tree(self.child.pid)

@pytest.fixture(scope='module')
def console(tmp_path_factory):
    need('jupyter_console')  # pexpect comes with IPython: `jupyter console` is what may be missing
    con = Console(tmp_path_factory.mktemp('console'))
    try:
        con.expect(r'In \[1\]: ')
        yield con
    finally: con.close()

def test_console_expression(console): console.cell('6*7\r', out='42')

def test_console_multiline(console):
    "Enter after `def f(x):` asks the kernel (is_complete_request): the console goes on with an indented continuation line."
    console.send('def f(x):\r')
    console.expect(r'\.\.\.: ')
    console.send('return x + 1\r')  # typed without indent: f works below only if the console indented it as the kernel said
    console.expect(r'\.\.\.: ')
    console.cell('\r')
    console.cell('f(41)\r', out='42')

def test_console_tab_completion(console):
    console.cell('import collections\r')
    console.send('collections.OrderedD\t')  # one match: the kernel's completion replaces the word
    console.expect(r'collections\.OrderedDict')
    console.cell('\r', out=r'collections\.OrderedDict')

def test_console_input(console):
    "input() sends input_request; the console prompts with its text and sends what is typed back as input_reply."
    console.send('name = input("who? ")\r')
    console.expect(r'\nwho\? ')  # the console's prompt for the input_request, on its own line: not the `who? ` echoed in the typed cell
    console.cell('Ada Lovelace\r')
    console.cell('name.upper()\r', out="'ADA LOVELACE'")

# ---- Jupyter Kernel Gateway: REST to start a kernel, the websocket to run a cell ----

def ws_request(conn, msg_type, content, channel='shell'):
    "Send a request over a kernel's websocket; returns its msg_id."
    msg_id = uuid.uuid4().hex
    hdr = dict(msg_id=msg_id, msg_type=msg_type, username='test', session=uuid.uuid4().hex, date='2024-01-01T00:00:00Z', version='5.3')
    conn.send(json.dumps(dict(header=hdr, parent_header={}, metadata={}, content=content, channel=channel, buffers=[])))
    return msg_id

def ws_until_done(conn, msg_id, reply_type):
    "Messages parented to `msg_id` until both its reply and its idle status came: (reply, IOPub messages)."
    reply,iopub = None,[]
    while reply is None or not iopub or iopub[-1]['msg_type'] != 'status' or iopub[-1]['content']['execution_state'] != 'idle':
        m = json.loads(conn.recv())
        if m['parent_header'].get('msg_id') != msg_id: continue
        if m['msg_type'] == reply_type: reply = m
        elif m['channel'] == 'iopub': iopub.append(m)
    return reply,iopub

def test_kernel_gateway(tmp_path):
    websocket,_ = need('websocket'),need('kernel_gateway')
    port,token = free_port(),uuid.uuid4().hex
    base,auth = f'127.0.0.1:{port}',{'Authorization': f'token {token}'}
    args = [JUPYTER, 'kernelgateway', '--KernelGatewayApp.ip=127.0.0.1', f'--KernelGatewayApp.port={port}', '--KernelGatewayApp.port_retries=0',
            f'--KernelGatewayApp.auth_token={token}', f'--KernelGatewayApp.default_kernel_name={KERNEL}']
    with serve(args, f'http://{base}/api', tmp_path, jupyter_env(tmp_path), headers=auth):
        assert http('GET', f'http://{base}/api/kernels')[0] in (401, 403)  # the token is required
        status,specs = http('GET', f'http://{base}/api/kernelspecs', auth)
        assert status == 200 and specs['default'] == KERNEL
        status,kernel = http('POST', f'http://{base}/api/kernels', auth, {})  # no name: the gateway's default kernel
        assert status == 201 and kernel['name'] == KERNEL
        conn = websocket.create_connection(f'ws://{base}/api/kernels/{kernel["id"]}/channels', header=[f'Authorization: token {token}'], timeout=TIMEOUT)
        try:
            reply,_ = ws_until_done(conn, ws_request(conn, 'kernel_info_request', {}), 'kernel_info_reply')
            assert reply['content']['implementation'] == 'ipymini' and reply['content']['status'] == 'ok'
            code = 'import sys\nprint("hello from", sys.implementation.name)\n6*7'
            reply,iopub = ws_until_done(conn, ws_request(conn, 'execute_request', dict(code=code, silent=False, store_history=True,
                                                         user_expressions={}, allow_stdin=False, stop_on_error=True)), 'execute_reply')
        finally: conn.close()
        assert reply['content']['status'] == 'ok'
        n = reply['content']['execution_count']
        assert [(m['msg_type'], m['content'].get('execution_state')) for m in iopub] == [('status', 'busy'), ('execute_input', None),
                                                                                        ('stream', None), ('execute_result', None), ('status', 'idle')]
        assert iopub[1]['content'] == dict(code=code, execution_count=n)
        assert iopub[2]['content'] == dict(name='stdout', text='hello from cpython\n')
        assert iopub[3]['content']['data'] == {'text/plain': '42'} and iopub[3]['content']['execution_count'] == n
        assert http('DELETE', f'http://{base}/api/kernels/{kernel["id"]}', auth)[0] == 204
        assert http('GET', f'http://{base}/api/kernels/{kernel["id"]}', auth)[0] == 404
