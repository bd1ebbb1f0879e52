"""Memory near the limit (IPYMINI_MEMORY_LIMIT, else 90% of the memory cgroup's): the cell gets a MemoryError naming the memory in
use and the limit, and the kernel runs the next cell. ipykernel in the same cgroup is ended by the out-of-memory killer."""
import os, re, resource, signal, sys, contextlib, pytest
from kernel_utils import (memory_cgroup, inside, start_kernel, execute, run, control, interrupt, get_reply, iopub_until_idle, wait_stream,
                          stdout, types, states, TIMEOUT)
from ipymini.memlimit import parse_size, cgroup_limit, fmt

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason="RLIMIT_DATA and /proc/self/statm are Linux's")
ANSI = re.compile(r'\x1b\[[0-9;]*m')
MB = 2**20
IN_USE = r"cell needed more memory: (\d+\.\d) MB in use of the "

def rss(kc):
    "The kernel's resident bytes, from a user expression."
    expr = "int(open('/proc/self/statm').read().split()[1]) * __import__('os').sysconf('SC_PAGE_SIZE')"
    reply,_ = execute(kc, "", user_expressions={'r': expr})
    return int(reply['content']['user_expressions']['r']['data']['text/plain'])

def memory_error(kc, code, evalue, sid=None):
    """Run `code` (on subshell `sid`), which passes the limit: its reply and its one IOPub error are a MemoryError whose text matches
    `evalue` (a regex); returns the memory in use it names, in MB."""
    reply,msgs = run(kc, sid, code)
    c = reply['content']
    assert (c['status'], c['ename']) == ('error', 'MemoryError'), c
    assert re.fullmatch(evalue, c['evalue']), c['evalue']
    assert types(msgs) == ['status', 'execute_input', 'error', 'status'] and states(msgs) == ['busy', 'idle']
    err = msgs[2]['content']
    assert (err['ename'], err['evalue'], err['traceback']) == (c['ename'], c['evalue'], c['traceback'])
    assert ANSI.sub('', err['traceback'][-1]) == f"MemoryError: {c['evalue']}"
    return float(re.match(IN_USE, c['evalue'])[1])

def runs(kc): assert stdout(execute(kc, "print(6 * 7)")[1]) == "42\n"

def test_the_setting_gives_the_cell_a_memory_error():
    limit = IN_USE + r"300\.0 MB limit \(IPYMINI_MEMORY_LIMIT\)"
    with start_kernel(env=dict(IPYMINI_MEMORY_LIMIT='300M')) as (km,kc):
        start = rss(kc)
        assert memory_error(kc, "b'x' * (1 << 30)", limit) < 100  # one allocation of 1 GB: refused whole, nothing was taken
        runs(kc)
        assert memory_error(kc, "blocks = [b'x' * (16 << 20) for _ in range(64)]", limit) < 100  # the list went with the cell's frame
        assert rss(kc) - start < 32 * MB  # and its memory went back
        assert memory_error(kc, "kept = []\nwhile True: kept.append(b'x' * (1 << 20))", limit) > 250  # a global keeps what it got
        assert stdout(execute(kc, "print(len(kept) > 200)")[1]) == "True\n"  # a cell still runs at the limit
        execute(kc, "del kept")
        assert stdout(execute(kc, "big = b'x' * (200 << 20); print(len(big) >> 20)")[1]) == "200\n"  # freed memory is room again
        pid = km.provisioner.process.pid
        assert stdout(execute(kc, "import os; print(os.getpid())")[1]) == f"{pid}\n"

def test_numpy_arrays_past_the_limit():
    "numpy's own MemoryError (which names the array) becomes a MemoryError naming the limit too, its text after."
    pytest.importorskip('numpy')
    limit = IN_USE + r"300\.0 MB limit \(IPYMINI_MEMORY_LIMIT\); "
    with start_kernel(env=dict(IPYMINI_MEMORY_LIMIT='300M')) as (km,kc):
        execute(kc, "import numpy as np")
        said = "Unable to allocate 8.00 GiB for an array with shape (1073741824,) and data type float64"
        memory_error(kc, "np.ones(1 << 30)", limit + re.escape(said))
        memory_error(kc, "np.empty(1 << 30)", limit + "Unable to allocate 8.00 GiB .*")  # mapped, never touched: counted all the same
        memory_error(kc, "arrays = [np.ones(1 << 21) for _ in range(100)]", limit + "Unable to allocate 16.0 MiB .*")
        assert stdout(execute(kc, "print(np.ones(1 << 24).sum())")[1]) == "16777216.0\n"  # 128 MB fits again

def test_an_interrupt_is_still_a_keyboard_interrupt():
    "IPython keeps one handler for its custom exceptions: the memory limit adds MemoryError beside the interrupts' own."
    with start_kernel(env=dict(IPYMINI_MEMORY_LIMIT='1G')) as (km,kc):
        mid = kc.execute("print('spinning', flush=True)\nwhile True: pass")
        wait_stream(kc, mid, 'spinning')
        interrupt(kc)
        assert get_reply(kc, mid)['content']['ename'] == 'KeyboardInterrupt'
        assert [m['content']['ename'] for m in iopub_until_idle(kc, mid) if m['msg_type'] == 'error'] == ['KeyboardInterrupt']
        assert execute(kc, "raise MemoryError('mine')")[0]['content']['evalue'].endswith(" limit (IPYMINI_MEMORY_LIMIT); mine")
        runs(kc)

def test_a_child_subshells_cell_too():
    with start_kernel(env=dict(IPYMINI_MEMORY_LIMIT='300M')) as (km,kc):
        sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
        memory_error(kc, "blocks = [b'x' * (16 << 20) for _ in range(64)]", IN_USE + r"300\.0 MB limit \(IPYMINI_MEMORY_LIMIT\)", sid)
        assert stdout(run(kc, sid, "print(6 * 7)")[1]) == "42\n"
        runs(kc)

DATA = "import resource; print(resource.getrlimit(resource.RLIMIT_DATA))"

def test_off_and_zero_leave_the_rlimit_alone():
    for v in ('off', '0'):
        with start_kernel(env=dict(IPYMINI_MEMORY_LIMIT=v)) as (km,kc):
            assert stdout(execute(kc, DATA)[1]) == f"{resource.getrlimit(resource.RLIMIT_DATA)}\n"

def test_a_bad_setting_is_logged_and_ignored(tmp_path):
    log = tmp_path/'kernel.log'
    with open(log, 'w') as f, start_kernel(env=dict(IPYMINI_MEMORY_LIMIT='lots'), stderr=f) as (km,kc):
        runs(kc)
        runs(kc)
    assert log.read_text().count("IPYMINI_MEMORY_LIMIT='lots' is not a size such as 2G, 512M or 0: using the cgroup's limit, if any") == 1

# ---- the cgroup's limit, in a cgroup the test makes ----
CELL = "blocks = [b'x' * (64 << 20) for _ in range(16)]"  # 1 GB, in a cgroup of 300 MB

def test_a_cgroups_limit_gives_a_memory_error():
    "A kernel started in a cgroup of 300 MB limits itself to 270 MB: the cell that asks for 1 GB gets a MemoryError, not the OOM killer."
    with memory_cgroup(300 << 20) as cg, contextlib.ExitStack() as stack:
        with inside(cg): km,kc = stack.enter_context(start_kernel(env=dict(IPYMINI_MEMORY_LIMIT='')))
        knob = os.path.basename(cgroup_limit(f'/proc/{km.provisioner.process.pid}')[1])
        memory_error(kc, CELL, IN_USE + rf"270\.0 MB limit \(90% of the 300\.0 MB {knob} of the kernel's cgroup\)")
        runs(kc)
        assert km.is_alive()

def test_ipykernel_in_the_same_cgroup_is_killed():
    "The reference: ipykernel has no limit of its own, and the out-of-memory killer ends it (the front end sees a dead kernel)."
    with memory_cgroup(300 << 20) as cg, contextlib.ExitStack() as stack:
        with inside(cg): km,kc = stack.enter_context(start_kernel(kernel_name='python3'))
        kc.execute(CELL)
        assert km.provisioner.process.wait(TIMEOUT) == -signal.SIGKILL

# ---- the parts, on their own ----
def test_parse_size():
    sizes = {'2G': 2 << 30, '512M': 512 << 20, '100k': 100 << 10, '1.5g': 3 << 29, '2GB': 2 << 30, '2GiB': 2 << 30, ' 123 ': 123,
             '0': None, 'off': None, 'OFF': None, '0.0': None}
    assert {v: parse_size(v) for v in sizes} == sizes
    for bad in ('lots', '-1', '2X', '', 'G', '1e9', '2 G B'):
        with pytest.raises(ValueError): parse_size(bad)
    assert (fmt(2 << 30), fmt(300 << 20), fmt(100 << 10)) == ('2.0 GB', '300.0 MB', '100 kB')

def proc(tmp_path, cgroup, mounts, files):
    "A fake /proc/<pid> (its `cgroup` and `mountinfo`, mount points under `tmp_path`) and cgroup files: returns its folder."
    (p := tmp_path/'proc').mkdir()
    (p/'cgroup').write_text(cgroup)
    (p/'mountinfo').write_text(''.join(l.format(t=tmp_path) + '\n' for l in mounts))
    for name,text in files.items():
        (tmp_path/name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path/name).write_text(text + '\n')
    return str(p)

SYS = "22 28 0:21 / /sys rw,nosuid - sysfs sysfs rw"
V2 = "30 23 0:26 / {t}/cg rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot"
V1 = "35 31 0:32 {root} {t}/memory rw,relatime - cgroup cgroup rw,memory"
HYBRID = ["9:memory:/user/1", "1:name=systemd:/user/1", "0::/user/1"]

SCOPE = 'cg/user.slice/session-1.scope/memory.max'
CASES = {  # /proc/<pid>/cgroup, mountinfo, the cgroup files: the limit found, the file it was in
    'v2': (["0::/user.slice/session-1.scope"], [SYS, V2], {SCOPE: '536870912', 'cg/user.slice/memory.max': '1073741824'},
           (512 << 20, SCOPE)),
    'v2 parent': (["0::/user.slice/session-1.scope"], [V2], {SCOPE: 'max', 'cg/user.slice/memory.max': '1073741824'},
                  (1 << 30, 'cg/user.slice/memory.max')),
    'v2 none': (["0::/user.slice"], [V2], {'cg/user.slice/memory.max': 'max'}, None),
    'v1': (HYBRID, [V1.replace('{root}', '/'), V2], {'memory/user/1/memory.limit_in_bytes': '2147483648'},
           (2 << 30, 'memory/user/1/memory.limit_in_bytes')),
    'v1 docker': (["4:memory:/docker/abc", "0::/"], [V1.replace('{root}', '/docker/abc')], {'memory/memory.limit_in_bytes': '4294967296'},
                  (4 << 30, 'memory/memory.limit_in_bytes')),
    'v1 unlimited': (HYBRID, [V1.replace('{root}', '/')], {'memory/user/1/memory.limit_in_bytes': '9223372036854771712'}, None),
    'hybrid': (HYBRID, [V2, V1.replace('{root}', '/')], {'memory/user/1/memory.limit_in_bytes': '9223372036854771712'}, None),
    'space': (["0::/a"], [V2.replace('/cg', '/my\\040cg')], {'my cg/a/memory.max': '1048576'}, (1 << 20, 'my cg/a/memory.max')),
    'no cgroup': ([], [SYS], {}, None)}

@pytest.mark.parametrize('case', list(CASES))
def test_cgroup_limit(tmp_path, case):
    cgroup,mounts,files,want = CASES[case]
    got = cgroup_limit(proc(tmp_path, ''.join(l + '\n' for l in cgroup), mounts, files))
    assert got == (want and (want[0], str(tmp_path/want[1])))
