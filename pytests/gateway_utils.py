"""Helpers for the Enterprise Gateway (EG) tests and tools/gateway_bench.py: EG's own venv (EG 3.3.0 pins an older Jupyter stack than
the kernel's), a real EG on 127.0.0.1 with kernelspecs for its DistributedProcessProxy (ipymini's from `install --gateway distributed`,
ipykernel's through gateway_provisioners' launcher), a client of its REST API and kernel websockets, and a stand-in for EG's response
socket that decrypts what a launcher sends back."""
import base64, contextlib, fcntl, glob, hashlib, importlib.util, json, os, pwd, re, select, shutil, socket, subprocess, sys, threading
import time, uuid, urllib.error, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT/'.venv-gateway'
REQS = Path(__file__).parent/'gateway-requirements.txt'
TIMEOUT = float(os.environ.get('IPYMINI_TEST_TIMEOUT', 30)) * 2
USER = 'ipymini-test'  # KERNEL_USERNAME of the start requests: EG refuses root
SPECS = dict(ipymini='ipymini_distributed', ipykernel='ipykernel_distributed')
PROXY = 'enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy'

# ---- EG's venv ----

def python311():
    "A Python 3.11 (what EG 3.3.0 supports): pyenv's, the system's, or on PATH (as .ci/run's python_for), or None."
    home = pwd.getpwuid(os.getuid()).pw_dir  # the real one: the tests' HOME is private, and pyenv's shims would look there
    found = [*sorted(glob.glob(f'{home}/.pyenv/versions/3.11.*/bin/python3.11')), '/usr/local/bin/python3.11', '/usr/bin/python3.11',
             shutil.which('python3.11')]
    ok = lambda p: subprocess.run([p, '-c', 'import sys, venv; assert sys.version_info[:2] == (3, 11)'], capture_output=True).returncode == 0
    return next((p for p in found if p and os.access(p, os.X_OK) and ok(p)), None)

def gateway_python():
    """The Python of .venv-gateway (in the clone), made from gateway-requirements.txt the first time and whenever that file changes.
    Under a lock held in the folder: suites that run side by side share it, and one makes it while the others wait."""
    VENV.mkdir(exist_ok=True)
    want,stamp,py = hashlib.sha256(REQS.read_bytes()).hexdigest(),VENV/'.requirements',VENV/'bin'/'python'
    with open(VENV/'.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if py.exists() and stamp.exists() and stamp.read_text() == want: return py
        base = python311()
        if base is None: raise RuntimeError("Enterprise Gateway 3.3.0 needs Python 3.11 (with venv): none on PATH, in pyenv or in /usr/bin")
        for p in VENV.iterdir():
            if p.name != '.lock': shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for cmd in ([base, '-m', 'venv', str(VENV)], [str(py), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '-r', str(REQS)]):
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if p.returncode: raise RuntimeError(f"making {VENV} failed: {' '.join(cmd)}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
        stamp.write_text(want)
    return py

# ---- kernelspecs ----

def assemble_launcher(dest):
    """gateway_provisioners' launch_ipykernel.py (the reference launcher for ipykernel) in `dest`, with the server_listener.py it
    imports, as its kernelspec installers put them together (the package ships a placeholder beside the launcher); returns its path."""
    spec = importlib.util.find_spec('gateway_provisioners')
    if spec is None: raise RuntimeError("gateway_provisioners missing: pip install -e '.[test]'")
    src = Path(spec.origin).parent/'kernel-launchers'
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(src/'python'/'scripts'/'launch_ipykernel.py', dest)
    shutil.copy(src/'shared'/'scripts'/'server_listener.py', dest)
    return dest/'launch_ipykernel.py'

def make_specs(share):
    "EG's distributed kernelspecs under `share`/kernels: ipymini's written by `install --gateway distributed`, ipykernel's with its launcher."
    # EG starts a kernel with the spec's env and the request's KERNEL_* variables, not its own environment: the kernels' own
    # private home and IPython dir, so that no kernel writes the user's ~/.ipython
    tmp = share.parent.parent
    env = dict(HOME=str(tmp/'home'), IPYTHONDIR=str(tmp/'ipython'))
    cmd = [sys.executable, '-m', 'ipymini', 'install', '--gateway', 'distributed', '--prefix', str(tmp), '--name', SPECS['ipymini'],
           *(w for kv in env.items() for w in ('--env', *kv))]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode: raise RuntimeError(f"install --gateway failed: {p.stderr}")
    opts = [w for n in ('kernel-id', 'port-range', 'response-address', 'public-key') for w in (f'--{n}', '{' + n.replace('-', '_') + '}')]
    d = share/'kernels'/SPECS['ipykernel']
    spec = dict(argv=[sys.executable, str(assemble_launcher(d/'scripts')), *opts, '--spark-context-initialization-mode', 'none',
                      '--kernel-class-name', 'ipykernel.ipkernel.IPythonKernel'],
                display_name='Python 3 (ipykernel, distributed)', language='python', metadata=dict(process_proxy=dict(class_name=PROXY)), env=env)
    (d/'kernel.json').write_text(json.dumps(spec, indent=1))

# ---- a running EG ----

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def http(method, url, body=None, timeout=TIMEOUT):
    "(status, parsed JSON or None) of one HTTP request."
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: raw,status = r.read(),r.status
    except urllib.error.HTTPError as e: raw,status = e.read(),e.code
    return status,(json.loads(raw) if raw.strip() else None)

class Log:
    "A process's output, read by a thread into a list; `wait(pattern)` blocks until a line matches, on each line read, not on a clock."
    def __init__(self, pipe, path):
        self.lines,self.cond,self.ended = [],threading.Condition(),False
        self.thread = threading.Thread(target=self._read, args=(pipe, path), daemon=True)
        self.thread.start()

    def _read(self, pipe, path):
        with open(path, 'w') as f:
            for line in pipe:
                f.write(line)
                with self.cond:
                    self.lines.append(line)
                    self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def text(self): return ''.join(self.lines)

    def wait(self, pattern, timeout=TIMEOUT):
        rx,deadline = re.compile(pattern),time.monotonic() + timeout
        with self.cond:
            while not (m := next((m for l in self.lines if (m := rx.search(l))), None)):
                if self.ended: raise RuntimeError(f"ended without printing {pattern!r}:\n{self.text()[-4000:]}")
                if not self.cond.wait(deadline - time.monotonic()):
                    raise TimeoutError(f"{pattern!r} not printed in {timeout} s:\n{self.text()[-4000:]}")
            return m

class Gateway:
    "An EG on 127.0.0.1 (`start`, `stop`), its kernelspecs and logs in `tmp`; REST calls relative to /api."
    def __init__(self, tmp, poll_interval=None):
        self.tmp,self.port = Path(tmp),free_port()
        self.host = f'127.0.0.1:{self.port}'
        share = self.tmp/'share'/'jupyter'
        make_specs(share)
        dirs = dict(JUPYTER_CONFIG_DIR='config', JUPYTER_DATA_DIR='data', JUPYTER_RUNTIME_DIR='runtime', IPYTHONDIR='ipython', HOME='home',
                    EG_KERNEL_LOG_DIR='kernel-logs')
        for v in dirs.values(): (self.tmp/v).mkdir(exist_ok=True)
        self.env = {**{k: v for k,v in os.environ.items() if not k.startswith(('JPY_', 'JUPYTER_', 'EG_'))},
                    **{k: str(self.tmp/v) for k,v in dirs.items()},
                    'JUPYTER_PATH': str(share), 'EG_RESPONSE_IP': '127.0.0.1', 'EG_RESPONSE_PORT': str(free_port()), 'PYTHONUNBUFFERED': '1'}
        if poll_interval is not None: self.env['EG_POLL_INTERVAL'] = str(poll_interval)
        self.proc = self.log = None

    def start(self):
        eg = gateway_python().parent/'jupyter-enterprisegateway'
        args = [str(eg), '--ip=127.0.0.1', f'--port={self.port}', '--port_retries=0', '--EnterpriseGatewayApp.remote_hosts=localhost',
                '--KernelSpecManager.ensure_native_kernel=False', '--log-level=DEBUG']
        self.proc = subprocess.Popen(args, cwd=self.tmp, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.log = Log(self.proc.stdout, self.tmp/'gateway.log')
        self.log.wait(rf'is available at http://127\.0\.0\.1:{self.port}')
        return self

    def stop(self):
        "Stop EG as an operator does (SIGTERM: it shuts its kernels down); its exit status, after its output is read."
        if self.proc is None or self.proc.poll() is not None: return self.proc and self.proc.returncode
        self.proc.terminate()
        try: rc = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            rc = self.proc.wait(TIMEOUT)
        self.log.thread.join(TIMEOUT)
        return rc

    def __enter__(self): return self.start()
    def __exit__(self, *exc): self.stop()

    def api(self, method, path, body=None): return http(method, f'http://{self.host}/api{path}', body)

    def start_kernel(self, name, env=None):
        "POST /api/kernels: the new kernel's model (fails with EG's reason otherwise)."
        status,model = self.api('POST', '/kernels', dict(name=name, env=dict(KERNEL_USERNAME=USER, **(env or {}))))
        assert status == 201, f"start {name}: {status} {model}\n{self.log.text()[-4000:]}"
        return model

    def kernel_log(self, kid):
        "What the kernel printed: EG sends a distributed kernel's output to EG_KERNEL_LOG_DIR/kernel-ID.log."
        with contextlib.suppress(OSError): return (self.tmp/'kernel-logs'/f'kernel-{kid}.log').read_text()
        return ''

    def channels(self, kid): return KernelSocket(f'ws://{self.host}/api/kernels/{kid}/channels')

class KernelSocket:
    "One websocket to a kernel through EG: send requests, wait for exact messages by parent."
    def __init__(self, url):
        import websocket
        self.conn = websocket.create_connection(url, timeout=TIMEOUT)

    def close(self): self.conn.close()
    def __enter__(self): return self
    def __exit__(self, *exc): self.close()

    def send(self, msg_type, content, channel='shell'):
        "Send a request; returns its msg_id."
        msg_id = uuid.uuid4().hex
        hdr = dict(msg_id=msg_id, msg_type=msg_type, username=USER, session=uuid.uuid4().hex, date='2024-01-01T00:00:00Z', version='5.3')
        self.conn.send(json.dumps(dict(header=hdr, parent_header={}, metadata={}, content=content, channel=channel, buffers=[])))
        return msg_id

    def messages(self, msg_id):
        "The messages parented to `msg_id`, as they come."
        while True:
            m = json.loads(self.conn.recv())
            if m['parent_header'].get('msg_id') == msg_id: yield m

    def wait_stdout(self, msg_id, text):
        "Wait until request `msg_id` has printed `text` (its cell then runs user code); returns its messages so far."
        seen = []
        for m in self.messages(msg_id):
            seen.append(m)
            if text in ''.join(m['content']['text'] for m in seen if m['msg_type'] == 'stream'): return seen

    def until_done(self, msg_id, seen=()):
        "(reply, IOPub messages) of request `msg_id`, once both its reply and its idle status came (`seen`: its messages read before)."
        reply,iopub = next((m for m in seen if m['channel'] != 'iopub'), None),[m for m in seen if m['channel'] == 'iopub']
        for m in self.messages(msg_id):
            if m['channel'] == 'iopub': iopub.append(m)
            elif m['msg_type'].endswith('_reply'): reply = m
            if reply and iopub and iopub[-1]['msg_type'] == 'status' and iopub[-1]['content']['execution_state'] == 'idle': return reply,iopub

    def request(self, msg_type, channel='shell', **content): return self.until_done(self.send(msg_type, content, channel))

    def execute(self, code): return self.until_done(self.send_execute(code))

    def send_execute(self, code):
        content = dict(code=code, silent=False, store_history=True, user_expressions={}, allow_stdin=False, stop_on_error=True)
        return self.send('execute_request', content)

    def wait_ready(self):
        "kernel_info until the kernel answers (EG's websocket may open before the kernel reads its channels): its reply."
        return self.request('kernel_info_request')[0]

def outputs(iopub): return [(m['msg_type'], m['content']) for m in iopub if m['msg_type'] not in ('status', 'execute_input')]

# ---- the processes a kernel leaves ----

def group(pgid):
    "Live processes of process group `pgid` (zombies are ended: only their parent's wait is left)."
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try:
            with open(f'/proc/{d}/stat', 'rb') as f: st = f.read()
        except OSError: continue
        f = st[st.rindex(b')') + 2:].split()
        if int(f[2]) == pgid and f[0] != b'Z': out.append(int(d))
    return out

class Watch:
    "pidfds of processes, to wait for their end without polling."
    def __init__(self, pids): self.fds = {p: os.pidfd_open(p) for p in pids}

    def wait(self, timeout=TIMEOUT):
        "The pids still alive after `timeout` seconds (a pidfd is readable once its process has ended)."
        deadline,left = time.monotonic() + timeout,dict(self.fds)
        while left:
            ready,_,_ = select.select(list(left.values()), [], [], max(0, deadline - time.monotonic()))
            if not ready: break
            left = {p: fd for p,fd in left.items() if fd not in ready}
        for fd in self.fds.values(): os.close(fd)
        return sorted(left)

# ---- a stand-in for EG's response socket ----

class Responder:
    "EG's end of a launch: an RSA key pair and a response address; `receive` decrypts the payload a launcher sends, as EG's ResponseManager."
    def __init__(self):
        from Cryptodome.PublicKey import RSA
        self.rsa = RSA.generate(2048)
        self.public_key = base64.b64encode(self.rsa.publickey().export_key('DER')).decode()
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(4)
        self.address = f'127.0.0.1:{self.sock.getsockname()[1]}'
        self.raw = None

    def args(self, port_range='0..0', short=False):
        "The launch options EG's kernelspec passes (`short`: the container bootstrap's `--kernel-id` forms)."
        self.kernel_id = str(uuid.uuid4())
        vals = {'kernel-id': self.kernel_id, 'response-address': self.address, 'public-key': self.public_key, 'port-range': port_range,
                'spark-context-initialization-mode': 'none'}
        return [w for n,v in vals.items() for w in ('--' + n if short else '--RemoteProcessProxy.' + n, v)]

    def receive(self, timeout=TIMEOUT):
        "The connection info of the next launcher that reports, decrypted; `raw` keeps the outer JSON."
        from Cryptodome.Cipher import AES, PKCS1_v1_5
        from Cryptodome.Util.Padding import unpad
        self.sock.settimeout(timeout)
        conn,_ = self.sock.accept()
        with conn:
            conn.settimeout(timeout)
            data = b''
            while (chunk := conn.recv(65536)): data += chunk
        self.raw = json.loads(base64.b64decode(data))
        aes = PKCS1_v1_5.new(self.rsa).decrypt(base64.b64decode(self.raw['key']), None)
        assert aes is not None and len(aes) == 16, "the AES key did not unwrap"
        return json.loads(unpad(AES.new(aes, AES.MODE_ECB).decrypt(base64.b64decode(self.raw['conn_info'])), 16))

    def close(self): self.sock.close()

def comm(port, req, raw=None):
    "Send one request to a kernel's communication port, as EG does: one connection, the JSON, then close."
    with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT) as s: s.sendall(raw if raw is not None else json.dumps(req).encode())
