"""tools/bench.py runs against the kernel as it is: a one-round smoke run of ipymini, ipykernel, the floor and ipymini at a git
revision (`--base`), no times asserted."""
import json, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent
FIGURES = ['rtt', 'pipelined', 'stream', 'nstream', 'intact', 'first', 'start', 'complete', 'rss_start', 'rss_stream', 'interrupt']

@pytest.mark.slow
def test_bench_quick_run(tmp_path):
    out = tmp_path/'bench.json'
    p = subprocess.run([sys.executable, str(REPO/'tools'/'bench.py'), '--quick', '--only', 'ipymini,ipykernel,floor', '--base', 'HEAD', '--json', str(out)],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['errors'] == [] and res['kernels']['ipymini'].startswith('ipymini ')
    assert res['kernels']['floor'] == 'floor 0'
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    assert res['kernels']['base'] == res['kernels']['ipymini'] + f' at {head}'
    for kind in ('ipymini', 'ipykernel', 'base'):
        med = res['medians'][kind]
        assert [f for f in FIGURES if med[f] is None] == [], kind
        assert med['intact'] == 1, f"{kind} lost or reordered printed lines"
    assert res['medians']['ipymini']['nstream'] <= 100
    table = p.stdout
    assert 'ipymini/ipykernel' in table and 'ipymini/base' in table and '`pass` execute, reply+idle, median (ms)' in table
