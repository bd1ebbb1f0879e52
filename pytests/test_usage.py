"""usage_request on control: host and kernel CPU and memory, as jupyter-resource-usage reads them; an error reply naming psutil without it."""
import os, socket
import psutil
from kernel_utils import start_kernel, request

def test_usage(kernel):
    km,kc = kernel
    reply,msgs = request(kc, 'usage_request', channel='control')
    c = reply['content']
    assert reply['msg_type'] == 'usage_reply' and c['status'] == 'ok'
    assert c['hostname'] == socket.gethostname() and c['pid'] == km.provisioner.process.pid
    assert c['cpu_count'] == psutil.cpu_count(logical=True)
    assert isinstance(c['kernel_cpu'], (int, float)) and c['kernel_cpu'] >= 0
    assert 10 * 2**20 < c['kernel_memory'] < psutil.virtual_memory().total
    vm = c['host_virtual_memory']
    assert {'total', 'available', 'percent', 'used', 'free'} <= set(vm) and vm['total'] == psutil.virtual_memory().total
    assert 'host_cpu_percent' not in c or 0 < c['host_cpu_percent'] <= 100
    assert [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']

def test_usage_counts_children(kernel):
    "A child of the kernel holding 200 MB shows in kernel_memory."
    km,kc = kernel
    before = request(kc, 'usage_request', channel='control')[0]['content']['kernel_memory']
    reply,_ = request(kc, 'execute_request', code="import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', "
                      "'import sys; b = bytearray(200 << 20); b[::4096] = b\"x\" * len(b[::4096]); print(1, flush=True); sys.stdin.read()'], "
                      "stdin=subprocess.PIPE, stdout=subprocess.PIPE)\nchild.stdout.readline()", silent=False)
    assert reply['content']['status'] == 'ok'
    after = request(kc, 'usage_request', channel='control')[0]['content']['kernel_memory']
    request(kc, 'execute_request', code="child.kill(); child.wait()", silent=False)
    assert after - before > 150 * 2**20

def test_usage_without_psutil(tmp_path):
    (tmp_path/'psutil').mkdir()
    (tmp_path/'psutil'/'__init__.py').write_text("raise ImportError('no psutil here')\n")
    env = dict(PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')]))
    with start_kernel(env=env) as (km,kc):
        reply,msgs = request(kc, 'usage_request', channel='control')
        c = reply['content']
        assert reply['msg_type'] == 'usage_reply' and c['status'] == 'error'
        assert c['ename'] == 'ModuleNotFoundError' and 'psutil' in c['evalue']
        assert request(kc, 'kernel_info_request', channel='control')[0]['content']['status'] == 'ok'
