"""The kernel: binds the sockets, owns the threads, and routes each message to its handler."""
import _thread, asyncio, contextlib, importlib, itertools, json, logging, os, signal, sys, threading, time, traceback, types
import zmq
from . import __version__
from .wire import Wire, WireError, now_iso, PROTOCOL_VERSION, MAX_FRAME
from .channels import Channel, Loop, defer_wakes, wake_deferred
from .iopub import IOPub
from . import iopub
from .streams import OutStream, current_parent, set_default_parent, get_parent
from .subshells import Subshell, not_found
from .stdin import DebuggerInterrupted
from . import bridge, lifecycle, subshells
from .env import env_float

__all__ = ['Kernel', 'KernelStartError', 'reply_type']
log = logging.getLogger('ipymini')

# The parts of the kernel beyond the core: each module's `setup(kernel)` registers its handlers once IPython is up
EXTENSIONS = ['debugger', 'usage', 'stdin', 'comms', 'streams', 'subshells', 'magics', 'asyncrun']

# modules whose state a KeyboardInterrupt must not cut through: a SIGINT landing in them is delivered again a moment later
SIGINT_UNSAFE = {'ipymini.iopub', 'ipymini.channels', 'ipymini.wire', 'ipymini.streams'}

REPLY_HWM = 1 << 16  # replies queued per client on shell, control and stdin (libzmq's default is 1,000)

KICK = getattr(signal, 'SIGRTMAX', None)  # a signal no one else uses, to wake the main thread for a SIGINT another thread caught

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

def in_output_code(frame):
    "True when the interrupted `frame` is in the kernel's output code, called from user code (IPython's frames are the boundary)."
    while frame is not None:
        mod = frame.f_globals.get('__name__', '')
        if mod in SIGINT_UNSAFE: return True
        if mod.startswith('IPython.'): return False
        frame = frame.f_back
    return False

class KernelStartError(Exception): "A problem with the connection file or the ports, told to the user in one line."

PORTS = ('shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port')
HELP_LINKS = [dict(text=t, url=u) for t,u in [
    ("Python Reference", f"https://docs.python.org/{sys.version_info.major}.{sys.version_info.minor}"),
    ("IPython Reference", "https://ipython.readthedocs.io/en/stable/"), ("NumPy Reference", "https://numpy.org/doc/stable/reference/"),
    ("SciPy Reference", "https://docs.scipy.org/doc/scipy/reference/"), ("Matplotlib Reference", "https://matplotlib.org/stable/contents.html"),
    ("SymPy Reference", "http://docs.sympy.org/latest/index.html"), ("pandas Reference", "https://pandas.pydata.org/pandas-docs/stable/")]]

def reply_type(msg_type): return msg_type.rsplit('_', 1)[0] + '_reply'

def load_connection(path):
    "Read a connection file; every problem becomes a KernelStartError naming it."
    try:
        with open(path) as f: cfg = json.load(f)
    except OSError as e: raise KernelStartError(f"cannot read connection file {path}: {e.strerror}") from None
    except ValueError as e: raise KernelStartError(f"connection file {path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict): raise KernelStartError(f"connection file {path} must hold a JSON object")
    for p in PORTS:
        if not isinstance(cfg.get(p, 0), int): raise KernelStartError(f"connection file {path}: {p} must be an integer")
    if not isinstance(cfg.get('key', ''), str): raise KernelStartError(f"connection file {path}: key must be a string")
    return cfg

# Shape of the requests whose handlers read fields: field -> type (int fields are checked non-negative too)
SCHEMA = dict(execute_request=dict(code=str), complete_request=dict(code=str), inspect_request=dict(code=str),
              is_complete_request=dict(code=str))
OPTIONAL = dict(silent=bool, store_history=bool, allow_stdin=bool, stop_on_error=bool, user_expressions=dict,
                cursor_pos=int, detail_level=int)

def check_content(msg):
    "Raise WireError when a request's content lacks a field its handler needs, or a field has the wrong type."
    c = msg['content']
    for k,t in SCHEMA.get(msg['msg_type'], {}).items():
        if not isinstance(c.get(k), t): raise WireError(f"{msg['msg_type']}: '{k}' must be a {t.__name__}", ename='BadRequest')
    for k,t in OPTIONAL.items():
        v = c.get(k)
        if v is None: continue
        if not isinstance(v, t) or (t is int and (isinstance(v, bool) or v < 0)):
            raise WireError(f"{msg['msg_type']}: '{k}' must be a {'non-negative ' if t is int else ''}{t.__name__}", ename='BadRequest')
    if 'cursor_pos' in c and isinstance(c.get('code'), str) and c['cursor_pos'] is not None and c['cursor_pos'] > len(c['code']):
        raise WireError(f"{msg['msg_type']}: cursor_pos {c['cursor_pos']} is past the end of the code ({len(c['code'])})", ename='BadRequest')

class Kernel:
    "One kernel process: sockets bound from a connection file, a thread per socket, IPython on the main thread."
    def __init__(self, cfg, connection_file=None, argv=()):
        "`argv`: IPython options from the command line (`--Class.trait=value`, as launchers append them), applied to IPython's config."
        self.cfg,self.connection_file,self.argv = cfg,connection_file,argv
        try: self.wire = Wire(cfg.get('key', ''), cfg.get('signature_scheme', 'hmac-sha256'))
        except ValueError as e: raise KernelStartError(str(e)) from None
        self.ctx = zmq.Context()
        self.ctx.setsockopt(zmq.LINGER, 1000)
        types = dict(shell_port=zmq.ROUTER, control_port=zmq.ROUTER, stdin_port=zmq.ROUTER, iopub_port=zmq.XPUB, hb_port=zmq.ROUTER)
        unbound = any(not cfg.get(p) for p in PORTS)  # ports to choose: the connection file then gets the ones bound
        socks = {p: self._bind(self.ctx.socket(types[p]), p) for p in PORTS}
        self.iopub = IOPub(socks['iopub_port'], self.wire)
        self.shell_ch = Channel('shell', socks['shell_port'], self.on_shell, defers=True)
        self.control_ch = Channel('control', socks['control_port'], self.on_control)
        self.stdin_ch = Channel('stdin', socks['stdin_port'], self.on_stdin)
        self.hb_sock = socks['hb_port']
        self.shell_handlers = dict(kernel_info_request=self.kernel_info, connect_request=self.connect_info,
            complete_request=self.on_complete, inspect_request=self.on_inspect, is_complete_request=self.on_is_complete,
            history_request=self.on_history, comm_info_request=self.comm_info, shutdown_request=self.on_shutdown)
        self.control_handlers = dict(kernel_info_request=self.kernel_info, connect_request=self.connect_info,
            shutdown_request=self.on_shutdown, interrupt_request=self.on_interrupt)
        # requests run in order on a subshell's thread, beside execute (comm messages join them): msg_type -> async fn(sub, msg)
        self.queued_handlers = dict(execute_request=self.do_execute)
        self.stdin_handlers = {}  # msg_type -> fn(msg), on the stdin thread
        self.features = []  # kernel_info supported_features, added by the parts that provide them
        self.debugger_enabled = False
        self.control_parent = None  # the latest control request, for `get_parent('control')`
        self.debugger_quits = set()  # cells whose debugger prompt was interrupted: their error aborts nothing
        self.stopping = self.tearing_down = False
        if connection_file and unbound: self._write_connection_file()

    def _bind(self, sock, port):
        transport,ip = self.cfg.get('transport', 'tcp'),self.cfg.get('ip', '127.0.0.1')
        n = self.cfg.get(port, 0)
        if transport not in ('tcp', 'ipc'): raise KernelStartError(f"unsupported transport {transport!r}: use tcp or ipc")
        # a frame past twice the message limit costs its sender the connection, before it fills memory; up to that, an error reply
        if sock.type == zmq.ROUTER:
            sock.setsockopt(zmq.MAXMSGSIZE, 2 * MAX_FRAME)
            # a ROUTER drops a reply its client's queue has no room for, silently: room for a client that pipelines thousands
            sock.setsockopt(zmq.SNDHWM, REPLY_HWM)
        if sock.type == zmq.XPUB: sock.setsockopt(zmq.SNDHWM, iopub.HWM)  # before bind: the listener copies its options then
        if self.cfg.get('curve_secretkey'):  # CurveZMQ: every socket a server with the key pair the launcher wrote
            try:
                sock.curve_secretkey,sock.curve_publickey = self.cfg['curve_secretkey'].encode(),self.cfg['curve_publickey'].encode()
                sock.curve_server = True
            except (zmq.ZMQError, KeyError, AttributeError) as e: raise KernelStartError(f"bad CurveZMQ keys in the connection file: {e}") from None
        try:
            if transport == 'ipc':
                if not n: n = next(i for i in range(1, 65536) if not os.path.exists(f"{ip}-{i}"))
                sock.bind(f"ipc://{ip}-{n}")
            elif n: sock.bind(f"tcp://{ip}:{n}")
            else: n = sock.bind_to_random_port(f"tcp://{ip}")
        except zmq.ZMQError as e: raise KernelStartError(f"cannot bind {port} {n} on {transport}://{ip}: {e.strerror}") from None
        self.cfg[port] = n
        return sock

    def _write_connection_file(self):
        "The connection file with the ports bound, readable by its owner only (it holds the key); replaced whole, so no reader sees half of it."
        tmp = f"{self.connection_file}.{os.getpid()}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as f: json.dump(self.cfg, f, indent=2)
        os.replace(tmp, self.connection_file)

    # ---- sending ----
    def reply(self, ch, msg, content, msg_type=None, metadata=None):
        "Send the reply to request `msg` on channel `ch` (from any thread)."
        ch.send(self.wire.serialize(msg_type or reply_type(msg['msg_type']), content, msg, metadata, msg['idents']))

    def status(self, state, parent): self.iopub.send('status', dict(execution_state=state), parent)

    def error_reply(self, ch, msg, ename, evalue):
        self.reply(ch, msg, dict(status='error', ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]))

    # ---- receiving (on the socket threads) ----
    def parse(self, frames, ch):
        "A verified message, or None after logging (and answering, where a reply can be addressed) a bad one."
        try:
            msg = self.wire.deserialize(frames)
            try: check_content(msg)
            except WireError as e:  # a signed request with bad fields: answerable
                e.header,e.idents = msg['header'],msg['idents']
                raise
            return msg
        except WireError as e:
            hdr = e.header or {}
            log.warning("%s: dropped message %s: %s", ch.name, hdr.get('msg_type', ''), e)
            t = hdr.get('msg_type')
            if e.idents is not None and isinstance(t, str) and t.endswith('_request'):
                bad = dict(msg_type=t, idents=e.idents, header=hdr)
                self.status('busy', bad)
                self.error_reply(ch, bad, e.ename, str(e))
                self.status('idle', bad)

    def run_handler(self, ch, msg, handler):
        "busy, reply, idle around a request answered on the socket's own thread."
        self.status('busy', msg)
        try:
            if handler is None: self.error_reply(ch, msg, 'UnknownMessageType', f"unknown message type {msg['msg_type']!r}")
            else:
                content = handler(msg)
                if content is not None: self.reply(ch, msg, content)
        except Exception as e:
            log.exception("error handling %s", msg['msg_type'])
            self.error_reply(ch, msg, type(e).__name__, str(e))
        self.status('idle', msg)

    def on_shell(self, frames):
        msg = self.parse(frames, self.shell_ch)
        if msg is None: return
        t = msg['msg_type']
        sub = self.subshell_for(msg)
        if sub is None: return not_found(self, msg, f"no subshell {msg['header'].get('subshell_id')!r}")
        if t in self.queued_handlers: return sub.submit(msg)
        if t not in self.shell_handlers and not t.endswith('_request'): return log.warning("shell: dropped unknown message type %r", t)
        wake_deferred()  # a handler here can take long (a completion): the requests queued before it start now
        self.run_handler(self.shell_ch, msg, self.shell_handlers.get(t))

    def on_control(self, frames):
        msg = self.parse(frames, self.control_ch)
        if msg is None: return
        t,self.control_parent = msg['msg_type'],msg
        if t not in self.control_handlers and not t.endswith('_request'): return log.warning("control: dropped unknown message type %r", t)
        self.run_handler(self.control_ch, msg, self.control_handlers.get(t))

    def on_stdin(self, frames):
        msg = self.parse(frames, self.stdin_ch)
        if msg is None: return
        handler = self.stdin_handlers.get(msg['msg_type'])
        if handler: handler(msg)
        else: log.warning("stdin: unexpected %s", msg['msg_type'])

    def subshell_for(self, msg):
        "The subshell a shell message names in its header's `subshell_id` (JEP 91): None names the parent; None if there is no such subshell."
        sid = msg['header'].get('subshell_id')
        if sid is None:  # the parent, unless a cell of this client's session opened a temporary subshell (see `subshell`)
            session = msg['header'].get('session')
            temp = self.routes.get(session) if self.routes and isinstance(session, str) else None
            return temp[-1] if temp else self.parent_subshell
        return self.subshells.get(sid) if isinstance(sid, str) else None

    # ---- queued requests (on the subshell's thread) ----
    async def process(self, sub, msg):
        "Run one queued shell request on subshell `sub`: busy, reply, idle."
        self.status('busy', msg)
        t = msg['msg_type']
        if t == 'execute_request' and sub.aborting: self.reply(self.shell_ch, msg, dict(status='aborted'), metadata=dict(status='aborted'))
        else:
            token = current_parent.set(msg)
            try: await self.queued_handlers[t](sub, msg)
            except Exception as e:
                log.exception("error handling %s", t)
                if t.endswith('_request'): self.error_reply(self.shell_ch, msg, type(e).__name__, str(e))
            finally: current_parent.reset(token)
        try: self.status('idle', msg)
        finally: wake_deferred()  # the reply's and idle's (see do_execute)

    async def do_execute(self, sub, msg):
        c,shell = msg['content'],self.shell
        if sub.sid is None: set_default_parent(msg)
        md = dict(started=now_iso(), dependencies_met=True, engine=self.wire.session)
        if not c.get('silent'): self.iopub.send('execute_input', dict(code=c['code'], execution_count=shell.execution_count), msg)
        sub.cell_task = task = asyncio.current_task()
        try: reply = await bridge.execute(shell, c, cell_id=msg['metadata'].get('cellId'))
        except (KeyboardInterrupt, asyncio.CancelledError):
            # the interrupt landed outside the user's code (IPython reports those inside it itself)
            self.cancelled_cells.discard(task)
            if task.cancelling(): task.uncancel()
            shell.showtraceback((KeyboardInterrupt, KeyboardInterrupt(), None))
            reply = dict(status='error', ename='KeyboardInterrupt', evalue='', traceback=shell._last_traceback or [],
                         execution_count=shell.execution_count - 1, user_expressions={}, payload=[])
        finally:
            if sub.cell_task is task: sub.cell_task = None  # else the cell unlocked the queue and another cell is in front
        defer_wakes()  # the user's code is done: the threads sending the reply and idle are woken once both are queued
        md['status'] = reply['status']
        self.reply(self.shell_ch, msg, reply, metadata=md)
        # an error in a cell that unlocked the queue aborts nothing: the requests behind it are no longer waiting on it
        quit_debugger = task in self.debugger_quits
        self.debugger_quits.discard(task)
        if reply['status'] == 'error' and c.get('stop_on_error', True) and not c.get('silent') and task not in sub.detached and not quit_debugger:
            sub.abort_queued(self.stop_on_error_timeout)

    # ---- shell and control handlers ----
    def kernel_info(self, msg):
        return dict(status='ok', protocol_version=PROTOCOL_VERSION, implementation='ipymini', implementation_version=__version__,
            language_info=dict(name='python', version=sys.version.split()[0], mimetype='text/x-python',
                codemirror_mode=dict(name='ipython', version=3), pygments_lexer='ipython3', nbconvert_exporter='python', file_extension='.py'),
            banner=self.shell.banner, help_links=HELP_LINKS, debugger=self.debugger_enabled, supported_features=list(self.features))

    def get_parent(self, channel='shell'):
        "ipykernel's API: the request current on `channel` (on 'shell': the one that output here and now belongs to)."
        return self.control_parent if channel == 'control' else get_parent()

    def connect_info(self, msg): return dict(status='ok', **{p: self.cfg[p] for p in PORTS})
    def on_complete(self, msg): return bridge.complete(self.shell, msg['content'])
    def on_inspect(self, msg): return bridge.inspect(self.shell, msg['content'])
    def on_is_complete(self, msg): return bridge.is_complete(self.shell, msg['content'])
    def on_history(self, msg):
        "history_request: the history of the subshell it names (a child's own cells; the parent's is IPython's)."
        sub = self.subshell_for(msg)
        if sub is None: raise LookupError(f"no subshell {msg['header'].get('subshell_id')!r}")
        return bridge.history(sub.state['history_manager'] if sub.sid else self.shell.history_manager, msg['content'])
    def comm_info(self, msg): return dict(status='ok', comms={})

    def on_shutdown(self, msg):
        restart = bool(msg['content'].get('restart', False))
        ch = self.control_ch if threading.current_thread() is self.control_ch else self.shell_ch
        self.reply(ch, msg, dict(status='ok', restart=restart))
        ch.call(self.request_stop)  # after this request's idle status is queued

    def on_interrupt(self, msg):
        self.interrupt()
        return dict(status='ok')

    def interrupt(self):
        "interrupt_request: SIGINT to the kernel's process group when it leads one (as jupyter_client's killpg does), else to the kernel."
        pid = os.getpid()
        if hasattr(os, 'killpg') and os.getpgid(0) == pid: os.killpg(pid, signal.SIGINT)
        else: os.kill(pid, signal.SIGINT)

    _sigint_retry = False
    cancelled_cells = set()  # tasks `cancel_cell` cancelled, until their CancelledError is reported as the interrupt

    def install_sigint(self):
        "On the main thread: handle SIGINT, and wake the main thread for it whichever thread the OS delivers it to."
        signal.signal(signal.SIGINT, self._on_sigint)
        if KICK is None: return
        # Linux may deliver a process-wide signal to any thread (e.g. one running at that moment): Python then runs the handler only
        # when the main thread next runs bytecode, which a main thread asleep in time.sleep() or select() may not do for minutes
        r,w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        signal.signal(KICK, lambda signum, frame: None)
        _thread.start_new_thread(self._relay_signals, (r,))

    def _relay_signals(self, fd):
        "A thread reading the signal wakeup pipe: after each SIGINT, kick the main thread out of any blocking call (no-op if it is awake)."
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, KICK})
        main = threading.main_thread().ident
        while data := os.read(fd, 64):
            if signal.SIGINT not in data: continue
            with contextlib.suppress(RuntimeError): self.loop.call_soon_threadsafe(lambda: None)  # a main thread about to select() wakes too
            signal.pthread_kill(main, KICK)
            time.sleep(0.02)
            signal.pthread_kill(main, KICK)  # again: the first can land just before a blocking call starts

    def interrupt_subshells(self):
        "Hook called first on every SIGINT: child subshells' threads get no signal, so the subshells part extends this to reach them."

    def _on_sigint(self, signum, frame):
        "SIGINT, on the main thread: KeyboardInterrupt into a running sync cell (or its pending input), cancel an awaiting async cell."
        __tracebackhide__ = True
        self.report_interrupts()
        if self._sigint_retry: self._sigint_retry = False
        else: self.interrupt_subshells()
        sub = self.parent_subshell
        task = sub.cell_task
        if task is None: return sub.interrupt_detached()  # no cell in front: those that unlocked the queue, if any
        if asyncio.current_task(self.loop) is not task: return self.loop.call_soon_threadsafe(self.cancel_cell, sub, task)
        if not in_output_code(frame): raise KeyboardInterrupt
        # the cell is inside the kernel's output code (e.g. print -> IOPub): raising there could send text twice; retry shortly
        self._sigint_retry = True
        _thread.start_new_thread(self._resignal, ())

    def _resignal(self):
        time.sleep(0.002)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def cancel_cell(self, sub, task):
        "On `sub`'s loop: cancel the async cell that `task` runs, if still running; it is reported as a KeyboardInterrupt."
        if (task is not sub.cell_task and task not in sub.detached) or task.done(): return
        while task.cancelling(): task.uncancel()  # left over by a cell that swallowed a cancel (3.11's TaskGroup does)
        self.cancelled_cells.add(task)
        task.cancel()

    def report_interrupts(self):
        "Have IPython report interrupts and cancelled cells through `_show_interrupt`, unless the user set exception handlers of their own."
        if not self.shell.custom_exceptions: self.shell.set_custom_exc((KeyboardInterrupt, asyncio.CancelledError, DebuggerInterrupted), self._show_interrupt)

    def _show_interrupt(self, shell, etype, value, tb, tb_offset=None):
        "IPython's handler for these exceptions out of user code: an interrupt shows as a KeyboardInterrupt in the user's frames."
        if etype is KeyboardInterrupt: return show_tb(shell, etype, value, user_tb(tb), tb_offset)
        if issubclass(etype, DebuggerInterrupted):
            with contextlib.suppress(RuntimeError): self.debugger_quits.add(asyncio.current_task())
            return self._as_interrupt(shell, tb, tb_offset)
        try: task = asyncio.current_task()
        except RuntimeError: task = None
        # a CancelledError is the interrupt only when `cancel_cell` asked for it; IPython caught it inside the user's code
        if task not in self.cancelled_cells: return show_tb(shell, etype, value, tb, tb_offset)
        self.cancelled_cells.discard(task)
        if task.cancelling(): task.uncancel()
        self._as_interrupt(shell, tb, tb_offset)

    def _as_interrupt(self, shell, tb, tb_offset=None):
        "Report the cell's exception as the KeyboardInterrupt that caused it, in the user's frames."
        show_tb(shell, KeyboardInterrupt, KeyboardInterrupt(), user_tb(tb), tb_offset)
        if shell.displayhook.exec_result is not None: shell.displayhook.exec_result.error_in_exec = KeyboardInterrupt()

    # ---- letting a running cell step aside (also `from ipymini import unlock, subshell`) ----
    def unlock(self):
        "Called in a running cell: requests queued behind it start while it goes on awaiting; its output stays its own. False outside a cell."
        return subshells.unlock(self)

    def subshell(self):
        "Context manager for a running cell: while its body runs, later requests from the same client run in a temporary subshell."
        return subshells.temporary(self)

    # ---- lifecycle ----
    def request_stop(self):
        "Stop after the current message; a cell that will not return is cut short after a grace period."
        if self.stopping: return
        self.stopping = True
        self.loop.call_soon_threadsafe(lambda: self.done.done() or self.done.set_result(None))
        t = threading.Timer(3, self._hard_exit)
        t.daemon = True
        t.start()

    def _hard_exit(self):
        if self.tearing_down: return  # the main thread got there first and is finishing
        log.warning("main thread still busy after shutdown; exiting")
        self.teardown()
        os._exit(0)

    def teardown(self):
        if self.tearing_down: return
        self.tearing_down = True
        lifecycle.end_children()
        self.iopub.flush()
        chans = (self.shell_ch, self.control_ch, self.stdin_ch, self.iopub.channel)
        for ch in chans: ch.stop()
        for ch in chans: ch.join(2)
        # replies still queued in libzmq (the shutdown_reply, the last idle) go out before the process ends
        if any(ch.is_alive() for ch in chans): return
        for ch in chans: ch.sock.close()
        t = threading.Thread(target=self.ctx.term, daemon=True)
        t.start()
        t.join(2)

    def start(self):
        "Start the socket threads and IPython; the caller then runs `main` on the main thread's loop."
        self.loop = Loop()
        asyncio.set_event_loop(self.loop)
        self.done = self.loop.create_future()
        self.stop_on_error_timeout = env_float('IPYMINI_STOP_ON_ERROR_TIMEOUT', 0.)
        self.iopub.start()
        threading.Thread(target=self._heartbeat, name='ipymini-heartbeat', daemon=True).start()
        self.shell = bridge.make_shell(self, argv=self.argv)
        sys.stdout,sys.stderr = OutStream('stdout', self.iopub, 1),OutStream('stderr', self.iopub, 2)
        sys.displayhook = self.shell.displayhook
        self.parent_subshell = Subshell(self, None, self.loop)
        self.parent_subshell.start()
        for name in EXTENSIONS: importlib.import_module(f'.{name}', __package__).setup(self)
        self.report_interrupts()  # a cell is cancelled without a SIGINT too: deleting its subshell, interrupting a child subshell
        if threading.current_thread() is threading.main_thread(): self.install_sigint()
        lifecycle.setup(self)
        for ch in (self.shell_ch, self.control_ch, self.stdin_ch): ch.start()

    def _heartbeat(self):
        # the echo runs inside libzmq: no Python, no GIL, per beat
        try: zmq.proxy(self.hb_sock, self.hb_sock)
        except zmq.ZMQError: self.hb_sock.close(0)  # the context is ending

    def run(self):
        "Serve until shutdown; then save history, run exit handlers and leave."
        self.start()
        try: self.loop.run_until_complete(self.done)
        finally:
            try: self.shell.atexit_operations()
            except Exception: log.exception("error in IPython's exit operations")
            self.teardown()
