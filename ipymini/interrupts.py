"""Interrupts: SIGINT and everything it reaches. The handler on the main thread, the relay that wakes that thread whichever
thread the OS delivered the signal to, the cell it interrupts (KeyboardInterrupt into running code, cancellation of an
awaiting async cell), child subshells' cells (which get no signal), the retry when the signal lands in the kernel's own output
code, and the KeyboardInterrupt traceback the user sees. Other parts register here: `on_interrupt` (the debugger resumes a
stopped cell first), `unsafe` (modules a KeyboardInterrupt must not cut through) and `relayed` (other signals the relay
thread handles: lifecycle's SIGTERM and SIGUSR1)."""
import _thread, asyncio, contextlib, ctypes, itertools, logging, os, signal, sys, threading, time, traceback, types
from .stdin import DebuggerInterrupted
from . import asyncrun

__all__ = ['Interrupts', 'user_tb', 'show_tb', 'interrupt_thread']

KICK = getattr(signal, 'SIGRTMAX', None)  # a signal no one else uses, to wake the main thread for a SIGINT another thread caught
log = logging.getLogger('ipymini')
RETRY = 0.002  # seconds before an interrupt that landed in the kernel's output code is delivered again

def user_tb(tb):
    "`tb` without its trailing frames that hide themselves (the signal handler, input()), each entry with a line number."
    entries = []
    while tb is not None: entries,tb = entries + [tb],tb.tb_next
    # an interrupt in a debugger's prompt: the user's frames end where the debugger's trace function was called
    entries = list(itertools.takewhile(lambda t: t.tb_frame.f_globals.get('__name__') != 'bdb', entries)) or entries
    while len(entries) > 1 and entries[-1].tb_frame.f_locals.get('__tracebackhide__'): entries.pop()
    out = None
    for t in reversed(entries):
        lasti,line = t.tb_lasti,t.tb_lineno
        # 3.11 gives no line to some instructions (a loop's jump back), where an interrupt often lands; IPython needs one
        if line is None: lasti,line = next(((2*i, p[0]) for i,p in reversed(list(enumerate(t.tb_frame.f_code.co_positions())))
                                            if 2*i <= t.tb_lasti and p[0] is not None), (0, t.tb_frame.f_code.co_firstlineno))
        out = types.TracebackType(out, t.tb_frame, lasti, line)
    return out

def show_tb(shell, etype, value, tb, tb_offset=None):
    "Show a traceback as IPython does, or plainly where IPython cannot format it (a frame stopped at an instruction with no line)."
    shell._get_exc_info((etype, value, tb))  # sys.last_* for %tb and %debug
    try: stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    except Exception:
        for _ in range(shell.InteractiveTB.tb_offset if tb_offset is None else tb_offset):  # IPython's own frames, as it skips them
            if tb is not None and tb.tb_next is not None: tb = tb.tb_next
        stb = traceback.format_exception(etype, value, tb)
    shell._showtraceback(etype, value, stb)

def interrupt_thread(ident):
    "Raise KeyboardInterrupt in thread `ident` when it next runs Python code (a blocking C call finishes first)."
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt))
    asyncrun.wake(ident)  # a cell in `asyncio.run` may sleep in its loop's select(): the exception lands once that returns

def current_task():
    try: return asyncio.current_task()
    except RuntimeError: return None

class Interrupts:
    "SIGINT for one kernel: `install` on the main thread, `send` for interrupt_request, `reach` for a child subshell's cell."
    def __init__(self, kernel):
        self.kernel,self.retrying = kernel,False
        # modules whose state a KeyboardInterrupt must not cut through: a SIGINT landing in them is delivered again a moment later
        self.unsafe = {'ipymini.iopub', 'ipymini.channels', 'ipymini.wire', 'ipymini.streams'}
        self.on_interrupt = []  # called first on every SIGINT, on the main thread
        self.cancelled = set()  # cell tasks `cancel_cell` cancelled, until their CancelledError is reported as the interrupt
        self.quit_debugger = set()  # cell tasks whose debugger prompt was interrupted: their error aborts nothing
        self.relayed = {}  # signal number -> what the relay thread calls when it arrives (lifecycle: SIGTERM, SIGUSR1)
        self.wakeup = None  # the relay's end of the signal wakeup pipe, once it runs
        self.forking = threading.local()  # per forking thread: the signals `_fork_begins` blocked

    def install(self):
        "On the main thread: handle SIGINT, wake the main thread for it whichever thread the OS delivers it to, report interrupts."
        self.report()  # a cell is cancelled without a SIGINT too: deleting its subshell, interrupting a child subshell
        if threading.current_thread() is not threading.main_thread(): return
        signal.signal(signal.SIGINT, self.on_sigint)
        os.register_at_fork(before=self._fork_begins, after_in_parent=self._fork_ends, after_in_child=self._plain_child)
        if KICK is None: return
        # Linux may deliver a process-wide signal to any thread (e.g. one running at that moment): Python then runs the handler only
        # when the main thread next runs bytecode, which a main thread asleep in time.sleep() or select() may not do for minutes
        r,w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self.wakeup = w
        signal.signal(KICK, lambda signum, frame: None)
        _thread.start_new_thread(self._relay, (r,))
        self.kernel.after_execute.append(lambda msg: self.relays())  # a cell's closed loop left no wakeup fd: the relay's again

    def handled(self):
        "The signals whose handlers are the kernel's: SIGINT, KICK and the relayed ones; a forked child gets Python's for each."
        return {signal.SIGINT, KICK, *self.relayed} - {None}

    def _fork_begins(self):
        """Before a fork: block, in the forking thread, the signals whose handlers are the kernel's. The child inherits the mask, so a
        signal sent to it before `_plain_child` ran (a pool terminated while its worker starts) waits for Python's own handling
        instead of running the kernel's: its C handler would write it into the wakeup pipe the kernel's relay reads."""
        sigs = self.handled()
        self.forking.blocked = sigs - signal.pthread_sigmask(signal.SIG_BLOCK, sigs)  # (those the thread had blocked stay so)

    def _fork_ends(self):
        "After a fork, in the parent and last in the child: unblock what `_fork_begins` blocked; a pending signal is handled now."
        blocked,self.forking.blocked = getattr(self.forking, 'blocked', set()),set()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    def _plain_child(self):
        """In a forked child (multiprocessing's workers, `os.fork` in a cell): Python's own signal handling, as a child of ipykernel
        has. SIGINT raises KeyboardInterrupt; the relayed signals (lifecycle's SIGTERM and SIGUSR1) end it; and no wakeup fd, whose
        pipe it shares with the kernel: the relay would take the child's signals for the kernel's (a worker's SIGTERM stopped it)."""
        try:
            with contextlib.suppress(ValueError):  # (the forking thread is the child's main thread)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                for sig in self.handled() - {signal.SIGINT}: signal.signal(sig, signal.SIG_DFL)
        finally: self._fork_ends()

    def relays(self):
        """Whether the relay hears signals now, i.e. holds the signal wakeup fd; on the main thread (else False). User code's
        `loop.add_signal_handler` takes the fd, and a loop that closes leaves none (-1): the relay takes it back then (a main thread
        asleep would never see a signal another thread caught), while a user's loop that holds it keeps it."""
        if self.wakeup is None or threading.current_thread() is not threading.main_thread(): return False
        fd = signal.set_wakeup_fd(self.wakeup, warn_on_full_buffer=False)
        if fd not in (-1, self.wakeup): signal.set_wakeup_fd(fd)  # the user's: theirs again
        return fd == self.wakeup

    def send(self):
        "interrupt_request: SIGINT to the kernel's process group when it leads one (as jupyter_client's killpg does), else to the kernel."
        pid = os.getpid()
        if hasattr(os, 'killpg') and os.getpgid(0) == pid: os.killpg(pid, signal.SIGINT)
        else: os.kill(pid, signal.SIGINT)

    def _relay(self, fd):
        """A thread reading the signal wakeup pipe: it calls what `relayed` names for a signal, here, whatever the main thread is doing;
        after each SIGINT, it kicks the main thread out of any blocking call (no-op if it is awake)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, KICK})
        main = threading.main_thread().ident
        while data := os.read(fd, 64):
            for signum in sorted(set(data) & self.relayed.keys()):
                try: self.relayed[signum]()
                except Exception: log.exception("handling signal %d", signum)  # the relay stays: SIGINT needs it
            if signal.SIGINT not in data: continue
            with contextlib.suppress(RuntimeError): self.kernel.loop.call_soon_threadsafe(lambda: None)  # a main thread about to select() wakes too
            signal.pthread_kill(main, KICK)
            time.sleep(0.02)
            signal.pthread_kill(main, KICK)  # again: the first can land just before a blocking call starts

    def in_output_code(self, frame):
        "True when the interrupted `frame` is in the kernel's output code, called from user code (IPython's frames are the boundary)."
        while frame is not None:
            mod = frame.f_globals.get('__name__', '')
            if mod in self.unsafe: return True
            if mod.startswith('IPython.'): return False
            frame = frame.f_back
        return False

    def on_sigint(self, signum, frame):
        "SIGINT, on the main thread: KeyboardInterrupt into a running sync cell (or its pending input), cancel an awaiting async cell."
        __tracebackhide__ = True
        self.report()
        if self.retrying: self.retrying = False
        else:
            for f in self.on_interrupt: f()
            for sub in self.kernel.subshells.children(): self.reach(sub)  # child subshells' threads get no signal
        sub,loop = self.kernel.subshells.parent,self.kernel.loop
        task = sub.cell_task
        if task is None: return self.cancel_detached(sub)  # no cell in front: those that unlocked the queue, if any
        if asyncio.current_task(loop) is not task: return loop.call_soon_threadsafe(self.cancel_cell, sub, task)
        if not self.in_output_code(frame): raise KeyboardInterrupt
        # the cell is inside the kernel's output code (e.g. print -> IOPub): raising there could send text twice; retry shortly
        self.retrying = True
        _thread.start_new_thread(self._resignal, ())  # not threading's: its locks may be held by the code this signal interrupted

    def _resignal(self):
        time.sleep(RETRY)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def reach(self, sub, task=None):
        "Interrupt child subshell `sub`'s running cell: KeyboardInterrupt in code running now, cancellation of an async cell that is waiting."
        if task is None: task = sub.cell_task
        if task is None: return self.cancel_detached(sub)
        if task is not sub.cell_task: return
        if asyncio.current_task(sub.loop) is task:
            # raised inside the output machinery, the interrupt could send text twice: as for the main thread, retry shortly
            if self.in_output_code(sys._current_frames().get(sub.thread.ident)): return threading.Timer(RETRY, self.reach, (sub, task)).start()
            if self.kernel.stdin is not None: self.kernel.stdin.interrupt(sub.thread.ident)  # an input() it waits in raises KeyboardInterrupt
            return interrupt_thread(sub.thread.ident)
        with contextlib.suppress(RuntimeError): sub.loop.call_soon_threadsafe(self.cancel_cell, sub, task)  # RuntimeError: its loop just closed

    def cancel_detached(self, sub):
        "Cancel the cells of `sub` that unlocked its queue (see `Subshell.unlock`)."
        for task in list(sub.detached):
            with contextlib.suppress(RuntimeError): sub.loop.call_soon_threadsafe(self.cancel_cell, sub, task)

    def cancel_cell(self, sub, task):
        "On `sub`'s loop: cancel the async cell that `task` runs, if still running; it is reported as a KeyboardInterrupt."
        if (task is not sub.cell_task and task not in sub.detached) or task.done(): return
        while task.cancelling(): task.uncancel()  # left over by a cell that swallowed a cancel (3.11's TaskGroup does)
        self.cancelled.add(task)
        task.cancel()

    def ended(self, task):
        "After cell `task` ended in an interrupt outside the user's code: forget its cancel."
        self.cancelled.discard(task)
        if task.cancelling(): task.uncancel()

    def keeps_queue(self, task):
        "Whether cell `task`'s error leaves the queue alone (its debugger prompt was interrupted); forgets it."
        keep = task in self.quit_debugger
        self.quit_debugger.discard(task)
        return keep

    def report(self):
        "Have IPython report interrupts and cancelled cells through `_show`, unless the user set exception handlers of their own."
        shell = self.kernel.shell
        if not shell.custom_exceptions: shell.set_custom_exc((KeyboardInterrupt, asyncio.CancelledError, DebuggerInterrupted), self._show)

    def _show(self, shell, etype, value, tb, tb_offset=None):
        "IPython's handler for these exceptions out of user code: an interrupt shows as a KeyboardInterrupt in the user's frames."
        if etype is KeyboardInterrupt: return show_tb(shell, etype, value, user_tb(tb), tb_offset)
        task = current_task()
        if issubclass(etype, DebuggerInterrupted): self.quit_debugger.add(task)
        # a CancelledError is the interrupt only when `cancel_cell` asked for it; IPython caught it inside the user's code
        elif task not in self.cancelled: return show_tb(shell, etype, value, tb, tb_offset)
        else: self.ended(task)
        show_tb(shell, KeyboardInterrupt, KeyboardInterrupt(), user_tb(tb), tb_offset)
        if shell.displayhook.exec_result is not None: shell.displayhook.exec_result.error_in_exec = KeyboardInterrupt()
