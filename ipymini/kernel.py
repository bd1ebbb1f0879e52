"""The kernel: binds the sockets, owns the threads and every Kernel field, and routes each message to its handler.

The optional parts plug in through named hook points, each a table or a list declared in `Kernel.__init__`: the handler tables
(`shell_handlers`, `control_handlers`, `queued_handlers`, `stdin_handlers`), `features`, `before_execute` / `after_execute`, and
`interrupts.on_interrupt`. Each part's module has a `setup(kernel)`, run once IPython is up (EXTENSIONS)."""
import _thread, asyncio, contextlib, importlib, itertools, json, logging, os, sys, threading, time
from collections.abc import Mapping
import zmq
from . import __version__
from .wire import Wire, WireError, now_iso, error_content, PROTOCOL_VERSION, MAX_FRAME
from .channels import Channel, Loop, defer_wakes, wake_deferred, bind, BindError
from .iopub import IOPub
from . import iopub
from .streams import OutStream, set_default_parent, get_parent, current_parent
from .subshells import Subshells
from .interrupts import Interrupts
from . import bridge, lifecycle, history, crash
from .env import env_float

__all__ = ['Kernel', 'KernelStartError', 'reply_type']
log = logging.getLogger('ipymini')

# The parts of the kernel beyond the core: each module's `setup(kernel)` registers its handlers once IPython is up
EXTENSIONS = ['debugger', 'usage', 'stdin', 'comms', 'streams', 'magics', 'asyncrun', 'crash', 'memlimit']

# threads the kernel cannot serve without: one that dies on an exception stops the kernel (see `Kernel.on_thread_death`)
VITAL = ('ipymini-shell', 'ipymini-control', 'ipymini-stdin', 'ipymini-iopub', 'ipymini-heartbeat', 'ipymini-fdcapture')

STOP_GRACE = 3  # seconds a cell that will not return gets once the kernel is asked to stop
FINISH_GRACE = 20  # seconds more for the exit itself (IPython's exit operations, atexit handlers, the last replies): then it is cut short
REPLY_HWM = 1 << 16  # replies queued per client on shell, control and stdin (libzmq's default is 1,000)

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

class ParentIdents(Mapping):
    "`kernel._parent_ident`: 'shell' and 'control' -> the identities of the request current on that channel, read when asked."
    def __init__(self, kernel): self.kernel = kernel
    def __getitem__(self, channel):
        if channel not in ('shell', 'control'): raise KeyError(channel)
        msg = self.kernel.get_parent(channel)
        return msg['idents'] if msg and 'idents' in msg else b''
    def __iter__(self): return iter(('shell', 'control'))
    def __len__(self): return 2

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
        # the heartbeat's echo stops when `hb_stop` sends TERMINATE to its steering socket (a PAIR over inproc)
        self.hb_stop,self.hb_steer = self.ctx.socket(zmq.PAIR),self.ctx.socket(zmq.PAIR)
        self.hb_stop.bind('inproc://ipymini-heartbeat')
        self.hb_steer.connect('inproc://ipymini-heartbeat')
        self.hb_thread,self.hb_stops = threading.Thread(target=self._heartbeat, name='ipymini-heartbeat', daemon=True),itertools.count()
        self.subshells,self.interrupts = Subshells(self),Interrupts(self)
        # ---- hook points: handler tables (msg_type -> handler), filled here and by the parts' `setup` ----
        self.shell_handlers = dict(kernel_info_request=self.kernel_info, connect_request=self.connect_info,
            complete_request=self.on_complete, inspect_request=self.on_inspect, is_complete_request=self.on_is_complete,
            history_request=self.on_history, comm_info_request=self.comm_info, shutdown_request=self.on_shutdown)
        self.control_handlers = dict(kernel_info_request=self.kernel_info, connect_request=self.connect_info,
            shutdown_request=self.on_shutdown, interrupt_request=self.on_interrupt, create_subshell_request=self.subshells.create,
            delete_subshell_request=self.subshells.delete, list_subshell_request=self.subshells.list)
        # requests run in order on a subshell's thread, beside execute (comm messages join them): msg_type -> async fn(sub, msg)
        self.queued_handlers = dict(execute_request=self.do_execute)
        self.stdin_handlers = {}  # msg_type -> fn(msg), on the stdin thread
        self.features = ['kernel subshells']  # kernel_info supported_features, added to by the parts that provide them
        self.before_execute,self.after_execute = [],[]  # fn(msg) around each execute, on its subshell's thread; after: before its idle
        # ---- the parts' objects, set by their `setup` (None: that part is off) ----
        self.debugger = self.stdin = self.comm_manager = self.fd_capture = None
        self.debugger_enabled = False  # kernel_info's `debugger`: true once the debugger part is set up
        # ---- set by `start`, on the main thread ----
        self.loop = self.done = self.shell = self.history = None  # history: the reader history_request uses (see history.py)
        self.stop_on_error_timeout = 0.
        self.control_parent = None  # the latest control request, for `get_parent('control')`
        self.stops,self.tearing_down = itertools.count(),False  # next(stops) is 0 for the first request to stop only
        self.exit_status = 0  # the process's, once it stops: 1 after a vital thread died
        if connection_file and unbound: self._write_connection_file()

    def _bind(self, sock, port):
        # a frame past twice the message limit costs its sender the connection, before it fills memory; up to that, an error reply
        if sock.type == zmq.ROUTER:
            sock.setsockopt(zmq.MAXMSGSIZE, 2 * MAX_FRAME)
            # a ROUTER drops a reply its client's queue has no room for, silently: room for a client that pipelines thousands
            sock.setsockopt(zmq.SNDHWM, REPLY_HWM)
        if sock.type == zmq.XPUB: sock.setsockopt(zmq.SNDHWM, iopub.HWM)  # before bind: the listener copies its options then
        try: self.cfg[port] = bind(sock, self.cfg, port)
        except BindError as e: raise KernelStartError(str(e)) from None
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

    def error_reply(self, ch, msg, ename, evalue): self.reply(ch, msg, error_content(ename, evalue))

    def answer_error(self, ch, msg, ename, evalue):
        "busy, an error reply naming the problem, idle: for a request that cannot be served."
        self.status('busy', msg)
        self.error_reply(ch, msg, ename, evalue)
        self.status('idle', msg)

    def not_found(self, msg, evalue):
        "The answer to a shell message whose subshell does not exist: busy, error reply (for a request), idle."
        log.warning("shell: %s for missing subshell: %s", msg['msg_type'], evalue)
        if msg['msg_type'].endswith('_request'): return self.answer_error(self.shell_ch, msg, 'SubshellNotFound', evalue)
        self.status('busy', msg)
        self.status('idle', msg)

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
                self.answer_error(ch, dict(msg_type=t, idents=e.idents, header=hdr), e.ename, str(e))

    def run_handler(self, ch, msg, handler):
        """busy, reply, idle around a request answered on the socket's own thread. The request is the current parent meanwhile, so
        what its handler prints (a property that prints while being completed or inspected) goes out under it, before its idle."""
        self.status('busy', msg)
        token = current_parent.set(msg)
        try:
            if handler is None: self.error_reply(ch, msg, 'UnknownMessageType', f"unknown message type {msg['msg_type']!r}")
            else:
                content = handler(msg)
                if content is not None: self.reply(ch, msg, content)
        except Exception as e:
            log.exception("error handling %s", msg['msg_type'])
            self.error_reply(ch, msg, type(e).__name__, str(e))
        finally: current_parent.reset(token)
        self.status('idle', msg)

    def on_shell(self, frames):
        msg = self.parse(frames, self.shell_ch)
        if msg is None: return
        t = msg['msg_type']
        sub = self.subshells.for_msg(msg)
        if sub is None: return self.not_found(msg, f"no subshell {msg['header'].get('subshell_id')!r}")
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
        "execute_request: execute_input, the cell through IPython, the reply; the `before_execute` and `after_execute` hooks around them."
        c,shell,ints = msg['content'],self.shell,self.interrupts
        if sub.sid is None: set_default_parent(msg)
        for f in self.before_execute: f(msg)
        try:
            md = dict(started=now_iso(), dependencies_met=True, engine=self.wire.session)
            if not c.get('silent'): self.iopub.send('execute_input', dict(code=c['code'], execution_count=shell.execution_count), msg)
            sub.cell_task = task = asyncio.current_task()
            try: reply = await bridge.execute(shell, c, cell_id=msg['metadata'].get('cellId'))
            except (KeyboardInterrupt, asyncio.CancelledError):
                # the interrupt landed outside the user's code (IPython reports those inside it itself)
                ints.ended(task)
                shell.showtraceback((KeyboardInterrupt, KeyboardInterrupt(), None))
                reply = dict(status='error', ename='KeyboardInterrupt', evalue='', traceback=shell._last_traceback or [],
                             execution_count=shell.execution_count - 1, user_expressions={}, payload=[])
            finally:
                if sub.cell_task is task: sub.cell_task = None  # else the cell unlocked the queue and another cell is in front
            defer_wakes()  # the user's code is done: the threads sending the reply and idle are woken once both are queued
            md['status'] = reply['status']
            self.reply(self.shell_ch, msg, reply, metadata=md)
            # an error aborts what is queued, unless the cell had unlocked the queue (the requests behind it no longer wait on it)
            # or its debugger prompt was interrupted (the user stopped the debugger, not the queue)
            keep = ints.keeps_queue(task) or task in sub.detached
            if reply['status'] == 'error' and c.get('stop_on_error', True) and not c.get('silent') and not keep:
                sub.abort_queued(self.stop_on_error_timeout)
        finally:
            for f in self.after_execute: f(msg)

    # ---- shell and control handlers ----
    def kernel_info(self, msg):
        return dict(status='ok', protocol_version=PROTOCOL_VERSION, implementation='ipymini', implementation_version=__version__,
            language_info=dict(name='python', version=sys.version.split()[0], mimetype='text/x-python',
                codemirror_mode=dict(name='ipython', version=3), pygments_lexer='ipython3', nbconvert_exporter='python', file_extension='.py'),
            banner=self.shell.banner, help_links=HELP_LINKS, debugger=self.debugger_enabled, supported_features=list(self.features))

    def get_parent(self, channel='shell'):
        "ipykernel's API: the request current on `channel` (on 'shell': the one that output here and now belongs to)."
        return self.control_parent if channel == 'control' else get_parent()

    @property
    def _parent_ident(self):
        "ipykernel's private map, which JupyterLab extensions read: channel -> the zmq identities of its current request (b'' for none)."
        return ParentIdents(self)

    def connect_info(self, msg): return dict(status='ok', **{p: self.cfg[p] for p in PORTS})
    def on_complete(self, msg): return bridge.complete(self.shell, msg['content'])
    def on_inspect(self, msg): return bridge.inspect(self.shell, msg['content'])
    def on_is_complete(self, msg): return bridge.is_complete(self.shell, msg['content'])
    def on_history(self, msg):
        "history_request: the history of the subshell it names (a child's own cells; the parent's through `self.history`)."
        sub = self.subshells.for_msg(msg)
        if sub is None: raise LookupError(f"no subshell {msg['header'].get('subshell_id')!r}")
        return bridge.history(sub.state['history_manager'] if sub.sid else self.history, msg['content'])
    def comm_info(self, msg): return dict(status='ok', comms={})

    def on_shutdown(self, msg):
        restart = bool(msg['content'].get('restart', False))
        ch = self.control_ch if threading.current_thread() is self.control_ch else self.shell_ch
        self.reply(ch, msg, dict(status='ok', restart=restart))
        ch.call(self.request_stop)  # after this request's idle status is queued

    def on_interrupt(self, msg):
        self.interrupts.send()
        return dict(status='ok')

    # ---- letting a running cell step aside (also `from ipymini import unlock, subshell`) ----
    def unlock(self):
        "Called in a running cell: requests queued behind it start while it goes on awaiting; its output stays its own. False outside a cell."
        return self.subshells.unlock()

    def subshell(self):
        "Context manager for a running cell: while its body runs, later requests from the same client run in a temporary subshell."
        return self.subshells.open_temporary()

    # ipykernel's names for input, used by some libraries
    def raw_input(self, prompt=''): return self.stdin.input(prompt)
    def getpass(self, prompt='Password: ', stream=None): return self.stdin.getpass(prompt, stream)

    # ---- lifecycle ----
    def request_stop(self):
        """Stop after the current message; a cell that will not return is cut short after a grace period. Safe in a signal handler and
        from any thread: it takes no lock (the code a signal interrupts may hold one) and acts on its first call only."""
        if next(self.stops): return
        self.loop.call_soon_threadsafe(lambda: self.done.done() or self.done.set_result(None))
        _thread.start_new_thread(self._hard_exit, ())  # not threading's Timer: its locks may be held by the code a signal interrupted

    def _hard_exit(self):
        time.sleep(STOP_GRACE)
        if not self.tearing_down:
            log.warning("main thread still busy after shutdown; exiting")
            self.teardown()
        else:  # the main thread got there first and is finishing: it ends well within this, but must not hang the process
            time.sleep(self.exit_timeout)
            log.error("exit unfinished %g s after the stop (IPYMINI_EXIT_TIMEOUT); ending the process", STOP_GRACE + self.exit_timeout)
            lifecycle.dump_stacks()
        crash.stopped()
        os._exit(self.exit_status)

    def on_thread_death(self, args, hook=threading.excepthook):
        """`threading.excepthook`: a vital thread of the kernel that dies on an exception is logged with its traceback and stops the
        kernel (exit status 1), so the front end sees it gone and can restart it, instead of a kernel that half answers. Any other
        thread's exception is printed as Python does, to the stderr of the cell that started it."""
        t = args.thread
        if t is None or t.name not in VITAL or args.exc_type is SystemExit: return hook(args)
        log.critical("thread %s died; stopping the kernel", t.name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        self.exit_status = 1
        self.request_stop()

    def teardown(self):
        if self.tearing_down: return
        self.tearing_down = True
        lifecycle.end_children(spare={crash.watcher_pid()})
        self.iopub.flush()
        chans = (self.shell_ch, self.control_ch, self.stdin_ch, self.iopub.channel)
        for ch in chans: ch.stop()
        for ch in chans: ch.join(2)
        # replies still queued in libzmq (the shutdown_reply, the last idle) go out before the process ends
        if any(ch.is_alive() for ch in chans): return
        for ch in chans: ch.sock.close()
        self.stop_heartbeat()
        if self.hb_thread.is_alive(): self.hb_thread.join(2)  # it has read the TERMINATE: a PAIR that closes right after sending can lose what it sent
        self.hb_stop.close()
        t = threading.Thread(target=self.ctx.term, daemon=True)
        t.start()
        t.join(2)

    def start(self):
        "Start the socket threads and IPython; the caller then runs `main` on the main thread's loop."
        self.loop = Loop()
        asyncio.set_event_loop(self.loop)
        self.done = self.loop.create_future()
        self.stop_on_error_timeout = env_float('IPYMINI_STOP_ON_ERROR_TIMEOUT', 0.)
        self.exit_timeout = env_float('IPYMINI_EXIT_TIMEOUT', FINISH_GRACE)
        threading.excepthook = self.on_thread_death
        self.iopub.start()
        self.hb_thread.start()
        self.shell = bridge.make_shell(self, argv=self.argv)
        self.history = history.Reader(self.shell.history_manager)
        sys.stdout,sys.stderr = OutStream('stdout', self.iopub, 1),OutStream('stderr', self.iopub, 2)
        sys.displayhook = self.shell.displayhook
        self.subshells.start(self.loop)
        for name in EXTENSIONS: importlib.import_module(f'.{name}', __package__).setup(self)
        self.interrupts.install()
        lifecycle.setup(self, crash.fault_fd())
        for ch in (self.shell_ch, self.control_ch, self.stdin_ch): ch.start()

    def _heartbeat(self):
        "The heartbeat thread: the echo runs inside libzmq (no Python, no GIL, per beat) until `stop_heartbeat`, then its sockets close."
        # a heartbeat that stops answering while the kernel serves is the kernel's death: see `on_thread_death`
        try: zmq.proxy_steerable(self.hb_sock, self.hb_sock, None, self.hb_steer)
        except zmq.ZMQError:
            if not self.tearing_down: raise
        else:
            if not self.tearing_down: raise RuntimeError("the heartbeat stopped while the kernel serves")
        finally:
            self.hb_sock.close(0)
            self.hb_steer.close(0)

    def stop_heartbeat(self):
        "End the heartbeat's echo (teardown; a test, to see the kernel stop on it); acts on its first call only."
        if next(self.hb_stops): return
        with contextlib.suppress(zmq.ZMQError): self.hb_stop.send(b'TERMINATE', zmq.NOBLOCK)  # (EAGAIN: its thread is gone)

    def run(self):
        "Serve until shutdown; then save history, run exit handlers and leave."
        self.start()
        try: self.loop.run_until_complete(self.done)
        finally:
            try: self.shell.atexit_operations()
            except Exception: log.exception("error in IPython's exit operations")
            self.teardown()
