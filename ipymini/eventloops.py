"""GUI event loops (`%gui qt`, `%matplotlib tk`, ...): while the kernel's main loop has nothing to do, the toolkit's loop runs.

asyncio's loop blocks in its selector's `select(timeout)` when it waits for work. With a GUI enabled, that selector is wrapped:
a `select` that would block runs the toolkit's loop instead, until the selector's own fd (epoll/kqueue, readable as soon as
any fd the asyncio loop watches is: its self-pipe, which `call_soon_threadsafe` and the SIGINT relay write to, and any reader
a cell added) is readable or asyncio's next timer is due. The toolkit then waits in its own poll, so an idle kernel costs
what the toolkit costs. Nothing of a toolkit is imported until it is asked for."""
import logging, math, os, sys, threading, traceback

__all__ = ['enable_gui', 'NO_LOOP', 'LOOPS']
log = logging.getLogger('ipymini')

# backends that draw in the front end or into the cell: they need no loop of the kernel's ('asyncio': the kernel's loop is one)
NO_LOOP = {None, 'inline', 'nbagg', 'notebook', 'webagg', 'widget', 'ipympl', 'asyncio', 'agg'}
POLL = 0.05  # seconds between looks at the asyncio loop where its selector has no fd to watch (Windows' select)

class GuiSelector:
    "Wraps the main loop's selector: a `select` that would block runs `gui`'s loop until the selector's fd is ready or the timeout passes."
    def __init__(self, sel, gui): self.sel,self.gui = sel,gui
    def __getattr__(self, name): return getattr(self.sel, name)

    def select(self, timeout=None):
        if timeout is not None and timeout <= 0: return self.sel.select(timeout)
        ready = self.sel.select(0)
        if ready: return ready
        hook = sys.excepthook  # IPython's own while a cell runs; Python's default between cells, under which PyQt aborts
        if hook is sys.__excepthook__: sys.excepthook = _show_error
        try: self.gui.wait(timeout)
        except Exception:  # a toolkit that fails here would fail at every wait: the kernel goes on without it
            log.exception("%s event loop failed; turning it off", self.gui.name)
            self.gui.loop._selector = self.sel
            return self.sel.select(timeout)
        finally:
            if sys.excepthook is _show_error: sys.excepthook = hook
        return self.sel.select(0)

def _fd(loop):
    "The fd that is readable while the asyncio loop has I/O waiting, or None where the selector has none."
    try: return loop._selector.fileno()
    except (AttributeError, NotImplementedError): return None

def _ms(timeout): return None if timeout is None else max(1, math.ceil(timeout * 1000))

def _show_error(etype, value, tb):
    "sys.excepthook while a toolkit's loop runs: an error in one of its callbacks is printed to the latest cell, and the loop goes on."
    traceback.print_exception(etype, value, tb, file=sys.stderr)

class Gui:
    "A toolkit's loop: `wait(timeout)` runs it until the asyncio loop has work (`fd` readable) or `timeout` seconds pass."
    name = None
    def __init__(self, loop, gui): self.loop,self.fd,self.gui = loop,_fd(loop),gui
    def poll_timeout(self, timeout): return timeout if self.fd is not None else POLL if timeout is None else min(timeout, POLL)

QT_APIS = dict(qt5=('pyqt5', 'PyQt5', 'pyside2', 'PySide2'), qt6=('pyqt6', 'PyQt6', 'pyside6', 'PySide6'))

def _choose_qt(gui):
    "For `qt5`/`qt6`, point IPython's Qt loader at an installed binding of that major version (unless QT_API or a loaded binding decides)."
    import importlib.util
    if gui not in QT_APIS or 'QT_API' in os.environ: return
    api = QT_APIS[gui]
    for env,mod in zip(api[::2], api[1::2]):
        if importlib.util.find_spec(mod) is not None: return os.environ.__setitem__('QT_API', env)

QT_PROBE = "from IPython.external.qt_for_kernel import QtGui; QtGui.QApplication([' '])"

def check_qt(gui='qt'):
    "Raise RuntimeError where Qt would abort this process as it starts (a platform plugin without its system libraries, no display)."
    _choose_qt(gui)
    from IPython.external.qt_for_kernel import QtGui
    if QtGui.QApplication.instance() is None: _probe_qt()  # else Qt runs already

def _probe_qt():
    "Start a QApplication in a child process: Qt that cannot start aborts the process trying, with no exception to catch."
    import subprocess
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}  # the child finds the modules this process does
    try: r = subprocess.run([sys.executable, '-c', QT_PROBE], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e: return log.warning("could not check that Qt starts: %s", e)
    if r.returncode == 0: return
    said = next((l.strip() for l in r.stderr.splitlines() if l.strip()), f"exit status {r.returncode}")
    raise RuntimeError(f"Qt would abort the kernel: {said}")

class QtLoop(Gui):
    "Qt: a QEventLoop that a QSocketNotifier on the asyncio loop's fd, or a single-shot timer, quits."
    name = 'qt'
    def __init__(self, loop, gui):
        super().__init__(loop, gui)
        check_qt(gui)
        from IPython.external.qt_for_kernel import QtCore, enum_helper
        from IPython.lib.guisupport import get_app_qt4
        self.app = get_app_qt4([' '])
        self.qloop = QtCore.QEventLoop(self.app)
        self.timer = QtCore.QTimer(self.app)
        self.timer.setSingleShot(True)
        self.timer.setTimerType(enum_helper('QtCore.Qt.TimerType').PreciseTimer)  # never before asyncio's timer is due
        self.timer.timeout.connect(self.qloop.quit)
        self.notifier = None
        if self.fd is not None:
            self.notifier = QtCore.QSocketNotifier(self.fd, enum_helper('QtCore.QSocketNotifier.Type').Read, self.app)
            self.notifier.setEnabled(False)
            self.notifier.activated.connect(self.qloop.quit)  # Qt's own slot: no Python runs to wake the kernel

    def wait(self, timeout):
        timeout = self.poll_timeout(timeout)
        if timeout is not None: self.timer.start(_ms(timeout))
        if self.notifier is not None: self.notifier.setEnabled(True)
        try: self.qloop.exec() if hasattr(self.qloop, 'exec') else self.qloop.exec_()
        finally:
            if self.notifier is not None: self.notifier.setEnabled(False)
            self.timer.stop()

class TkLoop(Gui):
    "Tk: Tcl's event loop, one event at a time, until a file handler on the asyncio loop's fd or an `after` timer fires."
    name = 'tk'
    def __init__(self, loop, gui):
        super().__init__(loop, gui)
        import tkinter
        self.tcl,self.ready = tkinter.Tcl(),False  # no window of its own: windows the user opens get their events from the same loop
        if not hasattr(self.tcl.tk, 'createfilehandler'): self.fd = None  # Windows' Tcl watches no fds: poll
        if self.fd is not None: self.tcl.tk.createfilehandler(self.fd, tkinter.READABLE, self._set)

    def _set(self, *args): self.ready = True

    def wait(self, timeout):
        timeout,self.ready = self.poll_timeout(timeout),False
        timer = self.tcl.after(_ms(timeout), self._set) if timeout is not None else None
        try:
            while not self.ready: self.tcl.dooneevent(0)  # blocks (without the GIL) until an event is handled
        finally:
            if timer is not None: self.tcl.after_cancel(timer)

class GLibLoop(Gui):
    "GTK 3/4: a GLib main loop, quit by an fd watch on the asyncio loop's fd or a timeout."
    name = 'gtk'
    def __init__(self, loop, gui):
        super().__init__(loop, gui)
        import gi
        if gui in ('gtk3', 'gtk4'): gi.require_version('Gtk', f'{gui[-1]}.0')
        from gi.repository import GLib
        self.GLib,self.mainloop = GLib,GLib.MainLoop()

    def _quit(self, *args):
        self.mainloop.quit()
        return False  # remove the source

    def wait(self, timeout):
        GLib,timeout,sources = self.GLib,self.poll_timeout(timeout),[]
        if self.fd is not None: sources.append(GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, self.fd, GLib.IOCondition.IN, self._quit))
        if timeout is not None: sources.append(GLib.timeout_add(_ms(timeout), self._quit))
        try: self.mainloop.run()
        finally:
            for s in sources: GLib.source_remove(s)

class WxLoop(Gui):
    "wx: wx has no fd watch, so its loop runs in slices of at most POLL seconds (as ipykernel's poll interval)."
    name = 'wx'
    def __init__(self, loop, gui):
        super().__init__(loop, gui)
        import signal
        handler = signal.getsignal(signal.SIGINT)
        try:
            import wx
            self.fd,self.app = None,wx.App.Get() or wx.App(redirect=False)
        finally: signal.signal(signal.SIGINT, handler)  # wx on GTK resets it: the kernel's interrupts would end the process
        self.evloop = wx.GUIEventLoop()
        self.timer = wx.Timer()
        self.timer.Bind(wx.EVT_TIMER, lambda e: self.evloop.Exit())

    def wait(self, timeout):
        self.timer.StartOnce(_ms(self.poll_timeout(timeout)))
        try: self.evloop.Run()
        finally: self.timer.Stop()

LOOPS = dict(qt=QtLoop, qt5=QtLoop, qt6=QtLoop, tk=TkLoop, gtk=GLibLoop, gtk3=GLibLoop, gtk4=GLibLoop, wx=WxLoop)
TOOLKITS = dict(qt="Qt (PyQt6, PySide6, PyQt5 or PySide2)", tk="Tk (Python's tkinter)", gtk="GTK (PyGObject)", wx="wx (wxPython)")

def current(loop):
    "The GUI loop running while `loop` waits, or None."
    sel = getattr(loop, '_selector', None)
    return sel.gui if isinstance(sel, GuiSelector) else None

def disable(loop):
    "Stop running a toolkit's loop while `loop` waits (its windows stay, and stop answering)."
    sel = loop._selector
    if isinstance(sel, GuiSelector): loop._selector = sel.sel

def enable_gui(loop, gui):
    "Run toolkit `gui`'s event loop whenever asyncio loop `loop` waits; a name in NO_LOOP (or None) turns it off. ValueError: why not."
    if gui in NO_LOOP: return disable(loop)
    if gui in ('osx', 'macosx'): raise ValueError("the macOS event loop is not supported by ipymini; use %gui qt or %gui tk")
    if gui not in LOOPS:
        known,off = ', '.join(sorted(LOOPS)),', '.join(sorted(NO_LOOP - {None}))
        raise ValueError(f"unknown GUI {gui!r}; use one of {known}, or, for no event loop, {off}")
    if threading.current_thread() is not threading.main_thread():
        raise ValueError(f"%gui {gui} must run in the main subshell: the GUI loop runs on the main thread")
    cls,cur = LOOPS[gui],current(loop)
    if cur is not None:
        if isinstance(cur, cls) and (cur.gui == gui or {cur.gui, gui} & {'qt', 'gtk'}): return  # `qt` is whichever Qt is on
        raise ValueError(f"the {cur.gui} event loop is on; turn it off with %gui before enabling {gui}")
    try: g = cls(loop, gui)
    except ImportError as e: raise ValueError(f"%gui {gui}: {TOOLKITS[cls.name]} is not installed ({e})") from None
    except Exception as e: raise ValueError(f"%gui {gui}: cannot start the {cls.name} event loop: {e}") from None
    loop._selector = GuiSelector(loop._selector, g)
