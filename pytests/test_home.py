"""The suite is hermetic: every kernel, server and client it starts writes to a private home, never the user's ~/.ipython,
~/.jupyter or ~/.local/share/jupyter."""
import os
from kernel_utils import start_kernel, execute, request, home_snapshot, _home

def value(kc, expr):
    reply,_ = execute(kc, "", user_expressions=dict(v=expr))
    return eval(reply['content']['user_expressions']['v']['data']['text/plain'])

def test_kernels_write_to_the_private_home():
    with start_kernel() as (km,kc):
        assert execute(kc, "x = 1")[0]['content']['status'] == 'ok'
        private = _home['private']
        where = value(kc, "[get_ipython().profile_dir.location, get_ipython().history_manager.hist_file.as_posix(), "
                          "__import__('jupyter_core.paths').paths.jupyter_runtime_dir(), __import__('os').path.expanduser('~')]")
        assert all(p.startswith(private + os.sep) or p == private for p in where), where
        reply,_ = request(kc, 'history_request', hist_access_type='tail', n=5, output=False, raw=True)
        assert [h[2] for h in reply['content']['history']][-1:] == ['x = 1']
    assert os.path.exists(where[1])  # the history database the kernel wrote is the private one

def test_snapshot_sees_a_write(tmp_path):
    (tmp_path/'.ipython'/'profile_default').mkdir(parents=True)
    before = home_snapshot(str(tmp_path))
    (tmp_path/'.ipython'/'profile_default'/'history.sqlite').write_bytes(b'x')
    after = home_snapshot(str(tmp_path))
    assert set(after) - set(before) == {'.ipython/profile_default/history.sqlite'}
    os.utime(tmp_path/'.ipython'/'profile_default'/'history.sqlite', ns=(1, 1))
    assert home_snapshot(str(tmp_path)) != after

def test_real_home_untouched(request):
    "Run last (conftest): no test of the suite wrote the user's Jupyter and IPython folders."
    real,before = request.config.real_home
    after = home_snapshot(real)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"tests wrote to the real home {real}: {changed[:20]}"
