"""Jupyter Enterprise Gateway (EG): ipymini launched as a remote kernel. The launch protocol against a stand-in for EG's response
socket (the payload as EG decrypts it, the ports, the communication port), bad launch options, the container bootstrap script,
the kernelspecs `install --gateway` writes; then a real EG 3.3.0 on 127.0.0.1 (DistributedProcessProxy on localhost) driving ipymini
and, as the reference, ipykernel through gateway_provisioners' launcher: start, execute, interrupt, restart, shut down, nothing
left running; and EG's own integration tests."""
import ast, contextlib, json, os, random, re, socket, subprocess, sys, time
from pathlib import Path
import pytest
import Cryptodome  # noqa: F401 (pycryptodomex, of the test extra: missing, the module fails to collect, saying so)
from jupyter_client import BlockingKernelClient
from kernel_utils import execute, outputs, wait_stream, get_reply, iopub_until_idle, TIMEOUT
from gateway_utils import ROOT, SPECS, USER, Gateway, Responder, Watch, comm, gateway_python, group
from ipymini.gateway import split_args

KEYS = {'shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port', 'ip', 'key', 'transport', 'signature_scheme', 'kernel_name',
        'pid', 'pgid', 'comm_port', 'kernel_id'}
PORTS = ('shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port')

def ipymini(*args, **kw): return subprocess.Popen([sys.executable, '-m', 'ipymini', *args], stdin=subprocess.DEVNULL, **kw)

def stop(proc):
    "End a kernel the test left running; its exit status."
    if proc.poll() is None: proc.kill()
    return proc.wait(TIMEOUT)

def client(info):
    "A client of the kernel a launch reported, ready."
    kc = BlockingKernelClient()
    kc.load_connection_info({**{k: v for k,v in info.items() if k not in ('pid', 'pgid', 'comm_port', 'kernel_id')}, 'ip': '127.0.0.1'})
    kc.start_channels()
    kc.wait_for_ready(timeout=TIMEOUT)
    return kc

@contextlib.contextmanager
def launched(port_range='0..0', short=False, equals=False):
    "ipymini started as EG starts it, reporting to a stand-in response socket: (process, connection info, responder)."
    r = Responder()
    args = r.args(port_range, short)
    if equals: args = [f'{a}={v}' for a,v in zip(args[::2], args[1::2])]
    proc = ipymini(*args)
    try:
        yield proc,r.receive(),r
    finally:
        stop(proc)
        r.close()

# ---- the launch protocol ----

@pytest.mark.parametrize('form', ['long', 'short', 'equals'])
def test_payload_is_what_eg_decrypts(form):
    "The payload as EG's ResponseManager reads it: version 1, the wrapped AES key, the connection info with pid, pgid, comm_port, kernel_id."
    with launched(short=form == 'short', equals=form == 'equals') as (proc,info,r):
        assert set(r.raw) == {'version', 'key', 'conn_info'} and r.raw['version'] == 1
        assert set(info) == KEYS and info['kernel_id'] == r.kernel_id
        assert info['pid'] == proc.pid and info['pgid'] == proc.pid  # the kernel leads its own group (setpgid), and says so
        assert (info['ip'], info['transport'], info['signature_scheme']) == ('0.0.0.0', 'tcp', 'hmac-sha256')
        assert len({info[p] for p in (*PORTS, 'comm_port')}) == 6
        kc = client(info)
        try:
            reply,msgs = execute(kc, "print('hello')\n6*7")
            assert reply['content']['status'] == 'ok'
            assert [(m['msg_type'], m['content'].get('text'), m['content'].get('data')) for m in outputs(msgs)] == [
                ('stream', 'hello\n', None), ('execute_result', None, {'text/plain': '42'})]
        finally: kc.stop_channels()

def test_ports_in_range():
    lo = random.randrange(20000, 30000)
    with launched(f'{lo}..{lo + 99}') as (proc,info,r):
        assert all(lo <= info[p] <= lo + 99 for p in (*PORTS, 'comm_port'))
        kc = client(info)
        kc.stop_channels()

def test_communication_port():
    "EG's requests, one JSON object a connection: 0 polls, 2 interrupts the running cell, junk is dropped, 15 stops the kernel."
    with launched() as (proc,info,r):
        kc = client(info)
        try:
            port = info['comm_port']
            for raw in (b'not json', b'[1, 2]', json.dumps(dict(signum='x')).encode(), b''): comm(port, None, raw)
            comm(port, dict(signum=0))
            assert execute(kc, '1 + 1')[0]['content']['status'] == 'ok'
            msg_id = kc.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
            seen = wait_stream(kc, msg_id, 'sleeping')
            comm(port, dict(signum=2))
            reply = get_reply(kc, msg_id)
            errs = [m['content'] for m in seen + iopub_until_idle(kc, msg_id) if m['msg_type'] == 'error']
            assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'KeyboardInterrupt'
            assert [e['ename'] for e in errs] == ['KeyboardInterrupt']
            assert execute(kc, '2 + 2')[1][-2]['content']['data'] == {'text/plain': '4'}
        finally: kc.stop_channels()
        comm(port, dict(signum=15))
        assert proc.wait(TIMEOUT) == 0

def test_shutdown_request_stops_the_kernel():
    "After {'shutdown': 1} EG takes the kernel for gone (its communication port no longer answers): the kernel stops too."
    with launched() as (proc,info,r):
        client(info).stop_channels()  # up: before, a stop is SIGTERM's default action
        comm(info['comm_port'], dict(shutdown=1))
        assert proc.wait(TIMEOUT) == 0

# ---- bad launch options: one line, exit 1, at once ----

def closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def private_key():
    from Cryptodome.PublicKey import RSA
    import base64
    return base64.b64encode(RSA.generate(1024).export_key('DER')).decode()

BAD = [(dict(public_key='bm90IGEga2V5'), r"the public key is not an RSA key in base64 DER"),
       (dict(public_key='%%%'), r"the public key is not an RSA key in base64 DER"),
       (dict(public_key=private_key), r"the public key is a private key"),
       (dict(public_key=None), r"launch without --public-key"),
       (dict(kernel_id=None), r"launch without --kernel-id"),
       (dict(port_range='40000..40004'), r"port range 40000\.\.40004 holds 5 ports: the kernel needs 6"),
       (dict(port_range='40000-41000'), r"invalid port range '40000-41000'"),
       (dict(port_range='41000..40000'), r"invalid port range '41000\.\.40000'"),
       (dict(response_address='localhost'), r"invalid response address 'localhost'"),
       (dict(response_address=lambda: f'127.0.0.1:{closed_port()}'), r"cannot send the connection info to 127\.0\.0\.1:\d+: Connection refused")]

def bad_launch(**over):
    "`python -m ipymini` with EG's options, some replaced (None: left out); (exit status, stderr lines, seconds taken)."
    r = Responder()
    r.close()
    vals = {'kernel_id': 'k1', 'response_address': r.address, 'public_key': r.public_key, 'port_range': '0..0'}
    vals.update({k: v() if callable(v) else v for k,v in over.items()})
    args = [w for k,v in vals.items() if v is not None for w in (f"--RemoteProcessProxy.{k.replace('_', '-')}", v)]
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, '-m', 'ipymini', *args], capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    return p.returncode,p.stderr.splitlines(),time.monotonic() - t0

@pytest.mark.parametrize('over,msg', BAD, ids=lambda x: '' if isinstance(x, str) else '-'.join(f'{k}' for k in x))
def test_bad_launch_options(over, msg):
    rc,err,took = bad_launch(**over)
    assert rc == 1 and len(err) == 1 and re.match(rf'ipymini: .*{msg}', err[0]), err
    assert took < 10

@pytest.mark.slow
def test_unanswering_response_address_times_out():
    "A response address that never accepts (its listen queue full: the connection is never set up) ends the launch after the timeout."
    from ipymini.gateway import CONNECT_TIMEOUT
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(0)
    fillers = []
    try:
        for _ in range(2):  # fill the queue: the next connection's SYN goes unanswered
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(srv.getsockname())
            fillers.append(c)
        rc,err,took = bad_launch(response_address=f'127.0.0.1:{srv.getsockname()[1]}')
    finally:
        for c in fillers: c.close()
        srv.close()
    assert rc == 1 and len(err) == 1 and re.match(r'ipymini: cannot send the connection info to 127\.0\.0\.1:\d+: timed out', err[0]), err
    assert CONNECT_TIMEOUT <= took < CONNECT_TIMEOUT + 10

# ---- the container image's bootstrap, and the image recipe ----

BOOTSTRAP = ROOT/'docker'/'bootstrap-kernel.sh'

def fake_python(d, record):
    "A `python` first on PATH that records its argv and environment, then runs this Python with them."
    d.mkdir()
    rec = f"import json, os, sys; json.dump([sys.argv[1:], dict(os.environ)], open({str(record)!r}, 'w'))"
    (d/'python').write_text(f'#!/bin/bash\n{sys.executable} -c "{rec}" "$@"\nexec {sys.executable} "$@"\n')
    (d/'python').chmod(0o755)
    return f"{d}:{os.environ['PATH']}"

def test_bootstrap_runs_ipymini_as_eg_launched_it(tmp_path):
    "The image's bootstrap, with the environment EG's container launchers give it, starts `python -m ipymini` with the options it parses."
    r,record = Responder(),tmp_path/'argv.json'
    env = {**os.environ, 'PATH': fake_python(tmp_path/'bin', record), 'KERNEL_ID': 'kid-1', 'RESPONSE_ADDRESS': r.address, 'PUBLIC_KEY': r.public_key,
           'PORT_RANGE': '0..0', 'KERNEL_SPARK_CONTEXT_INIT_MODE': 'none', 'KERNEL_LANGUAGE': 'python', 'JPY_PARENT_PID': '1'}
    proc = subprocess.Popen([str(BOOTSTRAP)], env=env, stdin=subprocess.DEVNULL)
    try:
        info = r.receive()
        assert info['kernel_id'] == 'kid-1' and info['pid'] == proc.pid  # exec: the kernel is the bootstrap's process
        argv,kenv = json.loads(record.read_text())
        assert argv[:2] == ['-m', 'ipymini'] and 'JPY_PARENT_PID' not in kenv
        assert split_args(argv[2:]) == ({'kernel-id': 'kid-1', 'port-range': '0..0', 'response-address': r.address, 'public-key': r.public_key,
                                         'spark-context-initialization-mode': 'none'}, [])
        client(info).stop_channels()
        comm(info['comm_port'], dict(shutdown=1))
        assert proc.wait(TIMEOUT) == 0
    finally:
        stop(proc)
        r.close()

def test_bootstrap_without_the_launch_environment():
    env = {k: v for k,v in os.environ.items() if k not in ('KERNEL_ID', 'RESPONSE_ADDRESS', 'PUBLIC_KEY', 'EG_RESPONSE_ADDRESS', 'EG_PUBLIC_KEY')}
    p = subprocess.run([str(BOOTSTRAP)], env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 1 and p.stderr.splitlines() == [
        "bootstrap-kernel.sh: KERNEL_ID, RESPONSE_ADDRESS and PUBLIC_KEY must be set (Enterprise Gateway's launcher sets them)"]

def test_dockerfile_copies_what_the_clone_has():
    "No docker here to build it: every file the Dockerfile copies exists in the clone, and its command is the bootstrap it installs."
    lines = (ROOT/'docker'/'Dockerfile').read_text().splitlines()
    copies = [l.split()[1:] for l in lines if l.startswith('COPY ')]
    assert copies and all((ROOT/src).exists() for *srcs,_ in copies for src in srcs)
    assert ['docker/bootstrap-kernel.sh', '/usr/local/bin/bootstrap-kernel.sh'] in copies
    assert lines[-1] == 'CMD ["/usr/local/bin/bootstrap-kernel.sh"]' and os.access(BOOTSTRAP, os.X_OK)
    assert "'/tmp/ipymini[gateway]'" in next(l for l in lines if l.startswith('RUN pip install'))

# ---- the kernelspecs ----

def install(tmp, *args):
    p = subprocess.run([sys.executable, '-m', 'ipymini', 'install', '--prefix', str(tmp), *args], capture_output=True, text=True, timeout=TIMEOUT)
    return p.returncode,p.stderr.splitlines()

def spec_of(tmp, name): return json.loads((Path(tmp)/'share'/'jupyter'/'kernels'/name/'kernel.json').read_text())

def test_install_gateway_distributed(tmp_path):
    assert install(tmp_path, '--gateway', 'distributed') == (0, [])
    spec = spec_of(tmp_path, 'ipymini_distributed')
    assert spec['argv'] == [sys.executable, '-m', 'ipymini', '--RemoteProcessProxy.kernel-id', '{kernel_id}', '--RemoteProcessProxy.response-address',
                            '{response_address}', '--RemoteProcessProxy.public-key', '{public_key}', '--RemoteProcessProxy.port-range', '{port_range}',
                            '--RemoteProcessProxy.spark-context-initialization-mode', 'none']
    cls = 'enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy'
    assert spec['metadata'] == dict(process_proxy=dict(class_name=cls), debugger=True)
    assert (spec['display_name'], spec['language']) == ('Python 3 (ipymini, distributed)', 'python')
    gw,rest = split_args(spec['argv'][3:])
    assert rest == [] and set(gw) == {'kernel-id', 'response-address', 'public-key', 'port-range', 'spark-context-initialization-mode'}

@pytest.mark.parametrize('proxy,cls,launcher', [('kubernetes', 'k8s.KubernetesProcessProxy', 'python_kubernetes/scripts/launch_kubernetes.py'),
                                                ('docker', 'docker_swarm.DockerProcessProxy', 'python_docker/scripts/launch_docker.py'),
                                                ('swarm', 'docker_swarm.DockerSwarmProcessProxy', 'python_docker/scripts/launch_docker.py')])
def test_install_gateway_containers(tmp_path, proxy, cls, launcher):
    assert install(tmp_path, '--gateway', proxy, '--image', 'example/ipymini:1', '--name', 'mini', '--python', '/opt/eg/bin/python') == (0, [])
    spec = spec_of(tmp_path, 'mini')
    assert spec['argv'] == ['/opt/eg/bin/python', f'/usr/local/share/jupyter/kernels/{launcher}', '--RemoteProcessProxy.kernel-id', '{kernel_id}',
                            '--RemoteProcessProxy.port-range', '{port_range}', '--RemoteProcessProxy.response-address', '{response_address}',
                            '--RemoteProcessProxy.public-key', '{public_key}']
    assert spec['metadata']['process_proxy'] == dict(class_name=f'enterprise_gateway.services.processproxies.{cls}',
                                                     config=dict(image_name='example/ipymini:1'))
    assert install(tmp_path, '--gateway', proxy, '--image', 'i', '--launcher', '/eg/launch.py') == (0, [])
    assert spec_of(tmp_path, f'ipymini_{proxy}')['argv'][:2] == ['python', '/eg/launch.py']

@pytest.mark.parametrize('args,err', [
    (['--gateway', 'kubernetes'], "ipymini: a kubernetes kernelspec needs --image: the kernel image EG starts (see docker/Dockerfile)"),
    (['--gateway', 'distributed', '--image', 'i'], "ipymini: --image and --launcher are for container proxies (kubernetes, docker, swarm)")])
def test_install_gateway_refuses(tmp_path, args, err):
    assert install(tmp_path, *args) == (1, [err])
    assert not (tmp_path/'share').exists()

def test_install_gateway_options_need_gateway(tmp_path):
    rc,err = install(tmp_path, '--image', 'i')
    assert rc == 2 and err[-1] == "python -m ipymini install: error: --image, --launcher and --python go with --gateway"

# ---- a real Enterprise Gateway ----

@pytest.fixture(scope='module')
def gateway(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp('eg'))
    with gw: yield gw
    assert gw.stop() == 0, gw.log.text()[-3000:]

def cell(ws, code):
    "(reply content, [(msg_type, content)] of its outputs, IOPub msg_types) of one cell run over the websocket."
    reply,iopub = ws.execute(code)
    outs = [(m['msg_type'], m['content']) for m in iopub if m['msg_type'] not in ('status', 'execute_input')]
    return reply['content'],outs,[m['msg_type'] for m in iopub]

def check_cells(ws):
    "stdout, a result, an error, as exact messages; the kernel's (pid, pgid)."
    reply,outs,types = cell(ws, "print('hello')")
    assert reply['status'] == 'ok' and outs == [('stream', dict(name='stdout', text='hello\n'))]
    assert types == ['status', 'execute_input', 'stream', 'status']
    reply,outs,_ = cell(ws, "import os\nos.getpid(), os.getpgid(0)")
    (kind,content), = outs
    assert reply['status'] == 'ok' and kind == 'execute_result' and content['execution_count'] == reply['execution_count']
    pid,pgid = ast.literal_eval(content['data']['text/plain'])
    reply,outs,_ = cell(ws, "1/0")
    assert (reply['status'], reply['ename'], reply['evalue']) == ('error', 'ZeroDivisionError', 'division by zero')
    assert [(k, c['ename'], c['evalue']) for k,c in outs] == [('error', 'ZeroDivisionError', 'division by zero')]
    return pid,pgid

def check_interrupt(gw, kid, ws):
    "A busy cell interrupted through EG's REST API ends in KeyboardInterrupt; the kernel goes on."
    msg_id = ws.send_execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    seen = ws.wait_stdout(msg_id, 'sleeping')
    assert gw.api('POST', f'/kernels/{kid}/interrupt')[0] == 204
    reply,iopub = ws.until_done(msg_id, seen)
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'KeyboardInterrupt'
    assert [m['content']['ename'] for m in iopub if m['msg_type'] == 'error'] == ['KeyboardInterrupt']
    reply,outs,_ = cell(ws, "6*7")
    assert outs == [('execute_result', dict(data={'text/plain': '42'}, metadata={}, execution_count=reply['execution_count']))]

def ports(ws): return {p: ws.request('connect_request')[0]['content'][p] for p in PORTS}

@pytest.mark.slow
@pytest.mark.timeout(900)  # the first test makes EG's venv (a minute or two), once for every suite sharing the clone
@pytest.mark.parametrize('impl', ['ipymini', 'ipykernel'])
def test_eg_lifecycle(gateway, impl):
    "Start through EG's REST API, run cells over its websocket, interrupt, restart (a new process and ports), shut down: nothing left."
    kid = gateway.start_kernel(SPECS[impl])['id']
    try:
        with gateway.channels(kid) as ws:
            assert ws.wait_ready()['content']['implementation'] == dict(ipymini='ipymini', ipykernel='ipython')[impl]
            pid,pgid = check_cells(ws)
            assert pgid == pid
            old_ports = ports(ws)
            check_interrupt(gateway, kid, ws)
        old = Watch([pid])
        status,model = gateway.api('POST', f'/kernels/{kid}/restart')
        assert status == 200 and model['id'] == kid, gateway.log.text()[-3000:]
        assert old.wait() == [], "the kernel before the restart is still running"
        with gateway.channels(kid) as ws:  # a restart ends EG's websockets to the kernel: clients open a new one
            ws.wait_ready()
            pid2,pgid2 = check_cells(ws)
            assert pid2 != pid and ports(ws) != old_ports
        left = Watch(group(pgid2))  # the kernel, and what it started in its group (ipykernel's listener, ipymini's crash watcher)
        assert gateway.api('DELETE', f'/kernels/{kid}')[0] == 204
        assert left.wait() == [], f"still running after the shutdown:\n{gateway.kernel_log(kid)}"
        assert gateway.api('GET', f'/kernels/{kid}')[0] == 404
    finally:
        if gateway.api('GET', f'/kernels/{kid}')[0] == 200: gateway.api('DELETE', f'/kernels/{kid}')

@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize('impl', ['ipymini', 'ipykernel'])
def test_eg_integration_tests(gateway, impl):
    "EG's own integration tests (enterprise_gateway.itests, shipped in its wheel) for a distributed Python kernel, run against the kernelspec."
    py = gateway_python()
    tests = next(Path(py).parent.parent.glob('lib/python3.*/site-packages/enterprise_gateway/itests/test_python_kernel.py'))
    env = {**gateway.env, 'GATEWAY_HOST': gateway.host, 'PYTHON_KERNEL_DISTRIBUTED_NAME': SPECS[impl], 'KERNEL_USERNAME': USER,
           'ITEST_HOSTNAME_PREFIX': re.escape(socket.gethostname())}  # its hostname test matches PREFIX + '*' against `hostname`
    p = subprocess.run([str(py), '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'{tests}::TestPythonKernelDistributed'], cwd=gateway.tmp, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and re.search(r'\b5 passed\b', p.stdout), p.stdout[-5000:] + p.stderr[-3000:]
