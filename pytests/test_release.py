"""tools/release.sh: the wheel carries the kernelspec, and a fresh venv with only the wheel lists ipymini and runs a cell."""
import os, subprocess, sys, shutil
import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_release_check(tmp_path):
    # build from a copy, so the check never touches the working tree's dist/
    src = tmp_path/'src'
    shutil.copytree(HERE, src, ignore=shutil.ignore_patterns('.git', '.venv*', '.ci-logs', 'dist', 'build', '__pycache__', '*.egg-info', 'node_modules'))
    p = subprocess.run(['bash', str(src/'tools'/'release.sh')], capture_output=True, text=True, timeout=570, env={**os.environ, 'PYTHON': sys.executable})
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'kernelspec in wheel: ipymini-' in p.stdout and 'wheel-installed kernel ran a cell: 42' in p.stdout
    assert any(l.split()[:1] == ['ipymini'] for l in p.stdout.splitlines())
