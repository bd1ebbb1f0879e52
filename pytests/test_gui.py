"""GUI event loops: with `%gui qt` / `%gui tk`, a toolkit's timers fire between cells while the kernel answers every request."""
import contextlib, glob, importlib.util, os, shutil, subprocess, sys, sysconfig, time, pytest
from kernel_utils import (start_kernel, execute, get_reply, iopub_until_idle, interrupt, wait_stream, collect, send, request, stdout,
                          outputs, control, run, parent_id, TIMEOUT)

QT = dict(QT_QPA_PLATFORM='offscreen')

# a toolkit timer every 2 ms counting `ticks`; it prints 'reached N' (to the latest cell) once `ticks` reaches `watch`
TICK = """
ticks,watch = 0,5
def tick():
    global ticks, watch
    ticks += 1
    if watch is not None and ticks >= watch:
        print('reached', watch)
        watch = None
"""
TICKERS = dict(qt=TICK + "from PyQt6.QtCore import QTimer\ntimer = QTimer()\ntimer.timeout.connect(tick)\ntimer.start(2)",
               gtk3=TICK + "from gi.repository import GLib\nGLib.timeout_add(2, lambda: tick() or True)",
               wx=TICK + "import wx\ntimer = wx.Timer()\ntimer.Bind(wx.EVT_TIMER, lambda e: tick())\ntimer.Start(2)",
               tk=TICK.replace("ticks += 1", "ticks += 1\n    root.after(2, tick)") +
                  "import tkinter\nroot = tkinter.Tk()\ntkinter.Label(root, text='ipymini').pack()\nroot.after(2, tick)")

FIGURE = "import matplotlib.pyplot as plt\nfig = plt.figure()\nprint(type(fig.canvas.manager).__name__, get_ipython().active_eventloop)"

def ok(kc, code, **kw):
    "Run `code`, assert it succeeded; its IOPub messages."
    reply,msgs = execute(kc, code, **kw)
    assert reply['content']['status'] == 'ok', reply['content']
    return msgs

def ticks_between_cells(kc, code):
    "Run `code` (which sets `watch`); the timer reaches it after the cell's idle, printing to that cell."
    mid = kc.execute(code)
    assert get_reply(kc, mid)['content']['status'] == 'ok'
    assert 'reached' not in stdout(iopub_until_idle(kc, mid))  # no toolkit loop runs while a cell does
    wait_stream(kc, mid, 'reached')

def check_loop(kc, gui):
    "The toolkit's timer fires between cells, through a burst of requests, interrupts of sync, async and no cells."
    ok(kc, f'%gui {gui}')
    ticks_between_cells(kc, TICKERS[gui])
    ids = [send(kc, None, f'x = {i}') for i in range(50)] + [kc.complete('import o'), kc.kernel_info()]
    replies,_ = collect(kc, ids)
    assert [replies[i]['content']['status'] for i in ids] == ['ok'] * len(ids)
    assert 'os' in replies[ids[-2]]['content']['matches']
    ticks_between_cells(kc, 'watch = ticks + 5')
    for wait in ('await asyncio.sleep(60)', 'time.sleep(60)'):
        mid = kc.execute(f'import asyncio, time\nprint("waiting", flush=True)\n{wait}')
        wait_stream(kc, mid, 'waiting')
        assert interrupt(kc)['content']['status'] == 'ok'
        reply = get_reply(kc, mid)['content']
        assert (reply['status'],reply['ename']) == ('error', 'KeyboardInterrupt')
        iopub_until_idle(kc, mid)
    assert interrupt(kc)['content']['status'] == 'ok'  # with no cell running: the toolkit's loop is waiting
    ticks_between_cells(kc, 'watch = ticks + 5')

def check_shutdown(km, kc):
    "shutdown_request reaches a kernel waiting in a toolkit's loop; the process exits cleanly."
    proc = km.provisioner.process
    reply,_ = request(kc, 'shutdown_request', channel='control', restart=False)
    assert reply['content'] == dict(status='ok', restart=False)
    assert proc.wait(TIMEOUT) == 0

def wait_stderr(kc, mid, text):
    "Wait until request `mid` has `text` in its stderr."
    seen,deadline = '',time.monotonic() + TIMEOUT
    while text not in seen:
        m = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if parent_id(m) == mid and m['msg_type'] == 'stream' and m['content']['name'] == 'stderr': seen += m['content']['text']

def test_qt_timer_fires_between_cells():
    with start_kernel(env=QT) as (km,kc):
        check_loop(kc, 'qt')
        for line in ('%gui qt', '%gui qt6'): ok(kc, line)  # the Qt loop is on already: nothing changes
        # an error in a toolkit callback between cells is printed to the latest cell, and the loop goes on (PyQt aborts the
        # process when sys.excepthook is Python's default, as it is between cells)
        mid = kc.execute('QTimer.singleShot(1, lambda: 1/0)')
        assert get_reply(kc, mid)['content']['status'] == 'ok'
        wait_stderr(kc, mid, 'ZeroDivisionError: division by zero')
        ticks_between_cells(kc, 'watch = ticks + 5')
        assert 'FigureManagerQT qt' in stdout(ok(kc, '%matplotlib qt\n' + FIGURE))
        ok(kc, 'plt.close(fig)')
        check_shutdown(km, kc)

def test_gui_off_and_errors(kc):
    "`%gui` turns the loop off; front-end backends need none; an unknown toolkit or a missing one is one UsageError line."
    # nothing of a toolkit (or of this module) loads with the kernel
    mods = ('ipymini.eventloops', 'PyQt6', 'PyQt5', 'PySide6', 'tkinter', 'gi', 'wx')
    assert stdout(ok(kc, f"import sys; print([m for m in {mods} if m in sys.modules])")) == '[]\n'
    for line in ('%gui asyncio', '%gui', '%matplotlib inline', '%gui inline'): assert outputs(ok(kc, line)) == []
    missing = [('%gui wx', "%gui wx: wx (wxPython) is not installed (No module named 'wx')"),
               ('%matplotlib wx', "%matplotlib wx: No module named 'wx'")]
    for line,evalue in (missing if importlib.util.find_spec('wx') is None else []) + [
                        ('%gui nonsense', "unknown GUI 'nonsense'; use one of gtk, gtk3, gtk4, qt, qt5, qt6, tk, wx, or, for no event loop, "
                                          "agg, asyncio, inline, ipympl, nbagg, notebook, webagg, widget")]:
        reply,msgs = execute(kc, line)
        assert (reply['content']['status'],reply['content']['ename'],reply['content']['evalue']) == ('error', 'UsageError', evalue)
        assert [(m['msg_type'], m['content']) for m in outputs(msgs)] == [('stream', dict(name='stderr', text=f'UsageError: {evalue}\n'))]
    assert stdout(ok(kc, 'print(get_ipython().pylab_gui_select)')) == 'None\n'  # the toolkit that failed is not the session's
    # a child subshell runs on a thread of its own: the toolkit's loop belongs on the main thread
    sid = control(kc, 'create_subshell_request')[0]['content']['subshell_id']
    reply,_ = run(kc, sid, '%gui tk')
    evalue = "%gui tk must run in the main subshell: the GUI loop runs on the main thread"
    assert (reply['content']['ename'],reply['content']['evalue']) == ('UsageError', evalue)
    control(kc, 'delete_subshell_request', subshell_id=sid)

def test_qt_that_cannot_start():
    "Qt aborts a process whose platform plugin cannot load: the kernel finds out in a child process and says so in one line."
    with start_kernel(env=dict(QT_QPA_PLATFORM='nowhere')) as (km,kc):
        said = 'Qt would abort the kernel: qt.qpa.plugin: Could not find the Qt platform plugin "nowhere" in ""'
        for line,evalue in (('%gui qt', f'%gui qt: cannot start the qt event loop: {said}'), ('%matplotlib qt', f'%matplotlib qt: {said}')):
            reply,msgs = execute(kc, line)
            assert (reply['content']['ename'],reply['content']['evalue']) == ('UsageError', evalue)
        # matplotlib kept its backend, so a figure does not start Qt
        assert stdout(ok(kc, 'import matplotlib\nprint(matplotlib.get_backend())')) == 'module://matplotlib_inline.backend_inline\n'

@pytest.fixture(scope='module')
def display():
    """An Xvfb display for Tk and wx (on the first free display number, which Xvfb reports when it is ready). -noreset: by default
    Xvfb resets when its last client leaves, and a kernel connecting meanwhile (the next test's) is refused."""
    xvfb = shutil.which('Xvfb')
    if xvfb is None:
        if os.environ.get('CI'): pytest.fail("Xvfb missing: apt-get install -y xvfb", pytrace=False)
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    r,w = os.pipe()
    proc = subprocess.Popen([xvfb, '-displayfd', str(w), '-screen', '0', '640x480x24', '-nolisten', 'tcp', '-noreset'], pass_fds=(w,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as f: num = f.readline().strip()
    assert num, "Xvfb exited without a display"
    try: yield f':{num}'
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)

def test_tk_timer_fires_between_cells(display):
    if importlib.util.find_spec('_tkinter') is None:
        if os.environ.get('CI'): pytest.fail("this Python has no tkinter (Debian: apt-get install python3-tk)", pytrace=False)
        pytest.skip("this Python has no tkinter")
    with start_kernel(env=dict(DISPLAY=display)) as (km,kc):
        check_loop(kc, 'tk')
        assert 'FigureManagerTk tk' in stdout(ok(kc, '%matplotlib tk\n' + FIGURE))
        ok(kc, 'plt.close(fig)')
        check_shutdown(km, kc)

# Debian's bindings of GTK and wx (PyPI has no wheels of them for Linux): their packages, beside this Python's own
DEBIAN_BINDINGS = dict(gi=('gi', 'cairo', 'python3-gi python3-gi-cairo gir1.2-gtk-3.0'), wx=('wx', 'python3-wxgtk4.0'))
DIST = '/usr/lib/python3/dist-packages'
TYPELIBS = ('/usr/lib/girepository-1.0', f'/usr/lib/{sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"}/girepository-1.0')

def debian_binding(mod):
    "Why Debian's package of `mod` cannot serve this Python ('' when it can): missing, or built for another Python."
    if not os.path.isdir(f'{DIST}/{mod}'): return 'missing'
    if mod == 'gi' and not any(os.path.exists(f'{d}/Gtk-3.0.typelib') for d in TYPELIBS): return 'missing'
    # compiled for Debian's own Python: another minor version cannot load it
    if not glob.glob(f'{DIST}/{mod}/**/*{sysconfig.get_config_var("EXT_SUFFIX")}', recursive=True) and \
       not glob.glob(f'{DIST}/{mod}/**/*.abi3.so', recursive=True):
        return f"Debian's {mod} is built for another Python than {sys.version.split()[0]}"
    return ''

@pytest.fixture(scope='module')
def bindings(tmp_path_factory):
    "module -> PYTHONPATH env for a kernel that imports it: this Python's own install, or Debian's package linked alone into a folder."
    out,d = {},tmp_path_factory.mktemp('bindings')
    for mod,(*names,pkgs) in DEBIAN_BINDINGS.items():
        why = '' if importlib.util.find_spec(mod) is not None else debian_binding(mod)
        if why == 'missing':
            if os.environ.get('CI'): pytest.fail(f"{mod} missing: apt-get install -y {pkgs}", pytrace=False)
            out[mod] = f"{mod} is not installed (apt-get install {pkgs})"
        elif why: out[mod] = why  # skipped under CI too: no package of it exists for this Python
        elif importlib.util.find_spec(mod) is not None: out[mod] = {}
        else:
            for n in names:
                if os.path.exists(f'{DIST}/{n}'): os.symlink(f'{DIST}/{n}', d/n)
            out[mod] = dict(PYTHONPATH=str(d))
    return out

def toolkit_env(bindings, mod):
    env = bindings[mod]
    if isinstance(env, str): pytest.skip(env)
    return env

def test_gtk_timer_fires_between_cells(bindings):
    "GTK 3 through GLib's main loop."
    with start_kernel(env=toolkit_env(bindings, 'gi')) as (km,kc):
        check_loop(kc, 'gtk3')
        check_shutdown(km, kc)

def test_wx_timer_fires_between_cells(display, bindings):
    "wx on an Xvfb display."
    with start_kernel(env=dict(DISPLAY=display, **toolkit_env(bindings, 'wx'))) as (km,kc):
        check_loop(kc, 'wx')
        check_shutdown(km, kc)

def run_time(pid):
    """CPU seconds all threads of process `pid` have run, to the nanosecond (/proc's schedstat; psutil counts 10 ms clock ticks,
    and charges a whole tick to a thread that happens to run when one falls)."""
    total = 0
    for t in os.listdir(f'/proc/{pid}/task'):
        with contextlib.suppress(OSError):
            with open(f'/proc/{pid}/task/{t}/schedstat') as f: total += int(f.read().split()[0])
    return total / 1e9

def idle_cpu(km, seconds=10):
    "CPU seconds the kernel process uses over `seconds` of waiting (the measurement is the wait)."
    pid = km.provisioner.process.pid
    before = run_time(pid)
    time.sleep(seconds)
    return run_time(pid) - before

@pytest.mark.slow
@pytest.mark.parametrize('gui,bound', [(None, 0.001), ('qt', 0.02)])
def test_idle_cpu(gui, bound):
    "Idle, a kernel costs nothing; with %gui qt and no window, what Qt's own waiting costs (under 2% of a core)."
    with start_kernel(env=QT) as (km,kc):
        if gui: ok(kc, f'%gui {gui}', store_history=False)
        ok(kc, 'pass', store_history=False)
        kc.hb_channel.pause()
        used = idle_cpu(km)
        print(f"idle CPU {gui}: {used:.4f} s in 10 s")
        assert used < bound * 10, f"{used:.3f} s of CPU in 10 s idle"
