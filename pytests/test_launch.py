"""Launch configuration: the kernel honours the cwd and env given to KernelManager and the env of its kernel.json."""
import os, subprocess, sys
from kernel_utils import start_kernel, execute, TIMEOUT

def value(kc, expr):
    reply,_ = execute(kc, "", user_expressions=dict(v=expr))
    return reply['content']['user_expressions']['v']['data']['text/plain']

def test_cwd_and_env(tmp_path):
    with start_kernel(cwd=str(tmp_path), env=dict(IPYMINI_LAUNCH_TEST='from-manager')) as (km,kc):
        assert value(kc, "__import__('os').getcwd()") == repr(str(tmp_path))
        assert value(kc, "__import__('os').environ.get('IPYMINI_LAUNCH_TEST')") == "'from-manager'"

def test_kernel_json_env(tmp_path, monkeypatch):
    p = subprocess.run([sys.executable, '-m', 'ipymini', 'install', '--prefix', str(tmp_path), '--name', 'ipymini-env-test',
                        '--env', 'IPYMINI_SPEC_VAR', 'from-kernel-json'], capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    monkeypatch.setenv('JUPYTER_PATH', str(tmp_path/'share'/'jupyter'))
    import kernel_utils
    monkeypatch.setattr(kernel_utils, 'KERNEL_NAME', 'ipymini-env-test')
    with start_kernel() as (km,kc):
        assert km.kernel_spec.env == dict(IPYMINI_SPEC_VAR='from-kernel-json')
        assert value(kc, "__import__('os').environ.get('IPYMINI_SPEC_VAR')") == "'from-kernel-json'"
