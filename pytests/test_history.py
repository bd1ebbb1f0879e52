"""history_request reads the history database safely: from the shell thread, while a cell runs or not. IPython's own reading
methods are never called off the main thread: where its connection refuses other threads (IPython before 9 opened it so; any
IPython does with `HistoryAccessor.connection_options = {}`), they hit sqlite's thread check and rename the user's database to
history-corrupt-*.sqlite. The kernels here are configured so."""
import os, glob, pytest
from kernel_utils import start_kernel, execute, request, get_reply, send, wait_stream, iopub_until_idle, TIMEOUT

def rows(kc, **content):
    reply,msgs = request(kc, 'history_request', **dict(dict(output=False, raw=True), **content))
    assert reply['content']['status'] == 'ok', reply['content']
    assert [m['content']['execution_state'] for m in msgs] == ['busy', 'idle']
    return [[s, l, tuple(i) if isinstance(i, list) else i] for s,l,i in reply['content']['history']]

def session(ipdir, cells):
    "A kernel on IPYTHONDIR `ipdir` that runs `cells` and shuts down cleanly, so they are in the database."
    with start_kernel(env=dict(IPYTHONDIR=str(ipdir))) as (km,kc):
        for c in cells: assert execute(kc, c)[0]['content']['status'] == 'ok'
        reply,_ = request(kc, 'shutdown_request', channel='control', restart=False)
        assert reply['content']['status'] == 'ok'
        assert km.provisioner.process.wait(TIMEOUT) == 0

@pytest.fixture(scope='module')
def two_sessions(tmp_path_factory):
    "An IPython dir whose database holds an earlier session's two cells, its connection refusing other threads (as IPython 8 opened it)."
    ipdir = tmp_path_factory.mktemp('ipython')
    (ipdir/'profile_default').mkdir()
    (ipdir/'profile_default'/'ipython_kernel_config.py').write_text("c.HistoryAccessor.connection_options = {}\n")
    session(ipdir, ["a1 = 1", "a2 = 2"])
    db = ipdir/'profile_default'/'history.sqlite'
    assert db.is_file()
    return ipdir,db

def check(kc, earlier, mine):
    "Every kind of history_request, with this session's cells `mine` (the first is 'b1 = 1')."
    tail = rows(kc, hist_access_type='tail', n=2 + len(mine))
    me = tail[-1][0]
    assert me == earlier + 1 and [r[2] for r in tail] == ['a1 = 1', 'a2 = 2', *mine] and tail[0][:2] == [earlier, 1]
    assert rows(kc, hist_access_type='range', session=earlier, start=1, stop=None) == [[earlier, 1, 'a1 = 1'], [earlier, 2, 'a2 = 2']]
    assert rows(kc, hist_access_type='range', session=-1, start=2, stop=3) == [[earlier, 2, 'a2 = 2']]
    assert rows(kc, hist_access_type='range', session=earlier, start=1, stop=2, output=True) == [[earlier, 1, ('a1 = 1', None)]]
    assert rows(kc, hist_access_type='search', pattern='a*') == [[earlier, 1, 'a1 = 1'], [earlier, 2, 'a2 = 2']]
    assert rows(kc, hist_access_type='search', pattern='[ab]1 = 1', n=1) == [[me, 1, 'b1 = 1']]
    assert rows(kc, hist_access_type='range', session=0, start=1, stop=2) == [[0, 1, 'b1 = 1']]

def test_history_of_earlier_sessions_read_safely(two_sessions, tmp_path):
    ipdir,db = two_sessions
    ino = db.stat().st_ino
    with start_kernel(env=dict(IPYTHONDIR=str(ipdir))) as (km,kc):
        assert execute(kc, "b1 = 1")[0]['content']['status'] == 'ok'
        earlier = rows(kc, hist_access_type='tail', n=3)[0][0]
        check(kc, earlier, ["b1 = 1"])
        # and while a cell runs on the main thread, which IPython's connection belongs to
        gate = tmp_path/'gate'
        code = f"import os, time\nprint('running', flush=True)\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)"
        mid = send(kc, None, code)
        wait_stream(kc, mid, 'running')
        check(kc, earlier, ["b1 = 1", code])
        gate.touch()
        assert get_reply(kc, mid)['content']['status'] == 'ok'
        iopub_until_idle(kc, mid)
        assert execute(kc, "%history -n -g a1")[0]['content']['status'] == 'ok'  # IPython's own reading, on the main thread
    assert db.stat().st_ino == ino and glob.glob(str(ipdir/'profile_default'/'history-corrupt*')) == []

def test_history_in_memory(tmp_path):
    "With --HistoryManager.hist_file=:memory: (nbclient, papermill) there is no earlier session; this one's cells are there."
    with start_kernel(env=dict(IPYTHONDIR=str(tmp_path)), extra_arguments=['--HistoryManager.hist_file=:memory:']) as (km,kc):
        for c in ("m1 = 1", "m2 = 2"): assert execute(kc, c)[0]['content']['status'] == 'ok'
        tail = rows(kc, hist_access_type='tail', n=5)
        assert [r[1:] for r in tail] == [[1, 'm1 = 1'], [2, 'm2 = 2']]
        assert rows(kc, hist_access_type='search', pattern='m2*') == [[tail[0][0], 2, 'm2 = 2']]
        assert rows(kc, hist_access_type='range', session=-1, start=1, stop=None) == []
    assert not os.path.exists(tmp_path/'profile_default'/'history.sqlite')
