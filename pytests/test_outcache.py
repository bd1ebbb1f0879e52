"""The output cache bounded by bytes (IPYMINI_OUTPUT_CACHE_MB, default 16): cells ending in big arrays no longer pile up in `Out`;
`_`, `__` and the newest `Out[n]` stay; `%reset -f out` gives the memory back. ipykernel (IPython's count-only cache) keeps them all."""
import sys, pytest
from kernel_utils import start_kernel, execute, stdout

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason="resident memory read from /proc/self/statm")
pytest.importorskip('numpy')
MB = 2**20
ARRAY = "np.ones(1 << 20)"  # 8 MB, every page touched
NOTE = ("ipymini: the output cache holds at most 16 MB of results (IPYMINI_OUTPUT_CACHE_MB); older ones are dropped from Out, "
        "`_` and `__` stay\n")

def rss(kc):
    "The kernel's resident bytes, read without running a cell (a user expression leaves `_` and `Out` alone)."
    reply,_ = execute(kc, "", user_expressions={'r': "int(open('/proc/self/statm').read().split()[1]) * __import__('os').sysconf('SC_PAGE_SIZE')"})
    return int(reply['content']['user_expressions']['r']['data']['text/plain'])

def stderr(msgs): return ''.join(m['content']['text'] for m in msgs if m['msg_type'] == 'stream' and m['content']['name'] == 'stderr')

def test_thirty_big_results_stay_within_three_arrays():
    with start_kernel() as (km,kc):
        execute(kc, "import numpy as np")
        start = rss(kc)
        errs = [stderr(execute(kc, ARRAY)[1]) for _ in range(30)]
        assert errs[:2] == ['', ''] and errs[2] == NOTE and set(errs[3:]) == {''}  # the third result is the first one dropped; said once
        held = rss(kc) - start
        assert held < 3 * 8 * MB, held / MB
        n = execute(kc, "")[0]['content']['execution_count']
        out = stdout(execute(kc, "print(sorted(Out), _ is Out[max(Out)], __ is Out[min(Out)], repr(___), _.shape, __.sum())")[1])
        assert out == f"[{n - 1}, {n}] True True '' (1048576,) 1048576.0\n"
        execute(kc, "%reset -f out")
        assert rss(kc) - start < 8 * MB  # the memory is given back, not only made reusable
        assert stdout(execute(kc, "np.zeros(3)\n")[1]) == '' and stdout(execute(kc, "print(_.shape, len(Out))")[1]) == "(3,) 1\n"

def test_small_results_are_all_kept():
    with start_kernel() as (km,kc):
        for i in range(40): execute(kc, f"{i} * 1000")
        assert stdout(execute(kc, "print(len(Out), Out[max(Out)], _, __, ___)")[1]) == "40 39000 39000 38000 37000\n"

def test_a_result_above_the_bound_alone_is_still_underscore():
    with start_kernel() as (km,kc):
        execute(kc, "import numpy as np")
        execute(kc, "[np.ones(1 << 20) for _ in range(3)]")  # 24 MB in one list
        execute(kc, "np.ones(3)")
        assert stdout(execute(kc, "print(len(__), _.shape, len(Out))")[1]) == "3 (3,) 2\n"

def test_zero_keeps_ipythons_count_only_bound():
    with start_kernel(env=dict(IPYMINI_OUTPUT_CACHE_MB='0')) as (km,kc):
        execute(kc, "import numpy as np")
        for _ in range(4): assert stderr(execute(kc, "np.ones(1 << 18)")[1]) == ''
        assert stdout(execute(kc, "print(len(Out))")[1]) == "4\n"

def test_a_bad_setting_warns_and_uses_the_default(tmp_path):
    log = tmp_path/'kernel.log'
    with open(log, 'w') as f, start_kernel(env=dict(IPYMINI_OUTPUT_CACHE_MB='lots'), stderr=f) as (km,kc):
        execute(kc, "import numpy as np")
        errs = [stderr(execute(kc, ARRAY)[1]) for _ in range(3)]
    assert errs[2] == NOTE
    assert "IPYMINI_OUTPUT_CACHE_MB='lots' is not a number >= 0.0: using 16.0" in log.read_text()

def test_ipykernel_keeps_every_result():
    "The reference: IPython's cache under ipykernel holds each array until a thousand results are cached."
    with start_kernel(kernel_name='python3') as (km,kc):
        execute(kc, "import numpy as np")
        start = rss(kc)
        for _ in range(6): execute(kc, ARRAY)
        assert rss(kc) - start >= 6 * 8 * MB
        assert stdout(execute(kc, "print(len(Out))")[1]) == "6\n"
