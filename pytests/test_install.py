"""`python -m ipymini install` in each mode, seen by `jupyter kernelspec list` and startable by KernelManager."""
import json, os, subprocess, sys, shutil
import pytest
from kernel_utils import start_kernel, execute, TIMEOUT

def run(*args, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **(env or {})})

def kernelspecs(env):
    p = run('-m', 'jupyter', 'kernelspec', 'list', '--json', env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)['kernelspecs']

def check_spec(spec_dir, display_name='Python 3 (ipymini)'):
    with open(os.path.join(spec_dir, 'kernel.json')) as f: spec = json.load(f)
    assert spec['argv'] == [sys.executable, '-m', 'ipymini', '-f', '{connection_file}']
    assert spec['display_name'] == display_name and spec['language'] == 'python'
    assert spec['interrupt_mode'] == 'signal' and spec['kernel_protocol_version'] == '5.5' and spec['metadata']['debugger'] is True

def test_install_prefix(tmp_path):
    p = run('-m', 'ipymini', 'install', '--prefix', str(tmp_path), '--name', 'ipymini-prefix')
    assert p.returncode == 0, p.stderr
    dest = tmp_path/'share'/'jupyter'/'kernels'/'ipymini-prefix'
    check_spec(dest, 'ipymini-prefix')
    specs = kernelspecs(dict(JUPYTER_PATH=str(tmp_path/'share'/'jupyter')))
    assert specs['ipymini-prefix']['resource_dir'] == str(dest)

def test_install_user(tmp_path, monkeypatch):
    env = dict(JUPYTER_DATA_DIR=str(tmp_path/'data'), JUPYTER_PREFER_ENV_PATH='0')  # user dir before the venv's, as outside a venv
    p = run('-m', 'ipymini', 'install', '--user', '--display-name', 'Mini', env=env)
    assert p.returncode == 0, p.stderr
    dest = tmp_path/'data'/'kernels'/'ipymini'
    check_spec(dest, 'Mini')
    assert kernelspecs(env)['ipymini']['resource_dir'] == str(dest)
    # what JupyterLab does to start the kernel it lists: KernelManager by name
    for k,v in env.items(): monkeypatch.setenv(k, v)
    with start_kernel() as (km,kc):
        assert km.kernel_spec.resource_dir == str(dest) and km.kernel_spec.display_name == 'Mini'
        reply,_ = execute(kc, "40 + 2")
        assert reply['content']['status'] == 'ok'

def test_install_sys_prefix():
    name = 'ipymini-sys-prefix-test'
    dest = os.path.join(sys.prefix, 'share', 'jupyter', 'kernels', name)
    try:
        p = run('-m', 'ipymini', 'install', '--sys-prefix', '--name', name)
        assert p.returncode == 0, p.stderr
        check_spec(dest, name)
        assert kernelspecs({})[name]['resource_dir'] == dest
    finally: shutil.rmtree(dest, ignore_errors=True)

def test_install_env(tmp_path):
    p = run('-m', 'ipymini', 'install', '--prefix', str(tmp_path), '--env', 'IPYMINI_X', '1')
    assert p.returncode == 0, p.stderr
    with open(tmp_path/'share'/'jupyter'/'kernels'/'ipymini'/'kernel.json') as f: assert json.load(f)['env'] == dict(IPYMINI_X='1')

def test_wheel_data_kernelspec():
    "The kernelspec shipped as wheel data launches `python -m ipymini` from the environment it is installed in."
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, 'share', 'jupyter', 'kernels', 'ipymini', 'kernel.json')) as f: spec = json.load(f)
    assert spec['argv'] == ['python', '-m', 'ipymini', '-f', '{connection_file}'] and spec['kernel_protocol_version'] == '5.5'

@pytest.mark.parametrize('name', ['two words', 'a/b', '../up', '..', '.', '', 'caf\u00e9', '\u212aelvin', 'x\n', 'semi;colon'])
def test_install_rejects_bad_names(tmp_path, name):
    "A name `jupyter kernelspec` would not accept (or that names no folder of its own) gets one line on stderr, exit 1 and no files."
    p = run('-m', 'ipymini', 'install', '--prefix', str(tmp_path), '--name', name)
    assert p.returncode == 1 and p.stdout == ''
    assert p.stderr == f"ipymini: invalid kernelspec name {name!r}: use ASCII letters, digits, '.', '_' and '-' only\n"
    assert list(tmp_path.iterdir()) == []

def test_install_accepts_every_valid_character(tmp_path):
    name = 'Py-3.11_mini'
    p = run('-m', 'ipymini', 'install', '--prefix', str(tmp_path), '--name', name)
    assert p.returncode == 0 and p.stdout == f"Installed kernelspec {name} in {tmp_path/'share'/'jupyter'/'kernels'/name}\n"
    dest = tmp_path/'share'/'jupyter'/'kernels'/name
    assert kernelspecs(dict(JUPYTER_PATH=str(tmp_path/'share'/'jupyter')))[name.lower()]['resource_dir'] == str(dest)
