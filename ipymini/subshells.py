"""Execution queues: each subshell runs its requests strictly in order on one thread's asyncio loop.

The parent subshell runs on the main thread; child subshells (JEP 91) each get a thread, a loop, an execution count and
the IPython per-cell state of their own (see `PerSubshell`), and share the user namespace with the parent."""
import asyncio, contextlib, contextvars, fnmatch, logging, threading, uuid, weakref
from collections import deque
from IPython.core.payload import PayloadManager
from IPython.core.history import extract_hist_ranges
from .history import Reader
from .streams import current_parent
from .channels import Loop
from .wire import error_content

__all__ = ['STOP_ABORTING', 'Subshell', 'ChildSubshell', 'Subshells']
log = logging.getLogger('ipymini')

STOP_ABORTING = object()  # queued behind the requests to abort after an error

class Subshell:
    "A queue of shell requests run one at a time on `loop` by `kernel.process`; `submit` may be called from any thread."
    def __init__(self, kernel, sid=None, loop=None):
        self.kernel,self.sid,self.loop = kernel,sid,loop
        self.inbox,self.waiter,self.task,self.sleeping = deque(),None,None,False
        self.aborting,self.cell_task,self.deleted,self.closing,self.finished = False,None,False,False,False
        self.detached = set()  # cells that called `unlock` and still run, each in the runner task it had

    def submit(self, msg):
        self.inbox.append(msg)
        # wake the loop only when its runner sleeps: a runner at work finds the message itself (each wake-up is a write
        # that hands the GIL to the loop's thread, so a burst of requests made one each)
        if self.sleeping: self.loop.call_soon_threadsafe(self._wake)

    def _wake(self):
        if self.waiter is not None and not self.waiter.done(): self.waiter.set_result(None)

    def start(self): self.task = self.loop.create_task(self.run())

    async def run(self):
        "Serve the inbox until the subshell is deleted (or closed) and its inbox is empty, or until the running cell unlocks it."
        me = asyncio.current_task()
        while True:
            if not self.inbox:
                if self.deleted or self.closing:
                    # cells that unlocked the queue have their reply and idle still to send: the thread's loop must run until they end
                    self.detached = {t for t in self.detached if not t.done()}
                    if self.detached:
                        await asyncio.wait(self.detached)
                        continue
                    self.finished = True
                    return
                self.waiter = self.loop.create_future()
                self.sleeping = True  # then look again: a request submitted before this was set is in the inbox now
                if not self.inbox and not (self.deleted or self.closing): await self.waiter
                self.sleeping = False
                continue
            msg = self.inbox.popleft()
            if msg is STOP_ABORTING: self.aborting = False
            elif self.deleted: self.kernel.not_found(msg, f"subshell {self.sid} was deleted")
            else:
                try: await self.kernel.process(self, msg)
                except Exception: log.exception("error processing %s", msg.get('msg_type'))
                if me is not self.task:  # the cell unlocked the queue: another runner serves it now
                    self.detached.discard(me)
                    return

    def unlock(self):
        "From the running cell: it carries on in the background, and a new runner task starts on the requests queued behind it."
        self.detached.add(self.cell_task)
        self.cell_task = None
        self.task = self.loop.create_task(self.run())
        self._wake()

    def close(self):
        "Take no more requests (the caller stops routing them here); the queue is served to its end, then the subshell ends."
        self.closing = True
        self.loop.call_soon_threadsafe(self._wake)

    def abort_queued(self, timeout=0.):
        "After an error: abort the execute requests received so far (and for `timeout` seconds more)."
        self.aborting = True
        stop = lambda: self.submit(STOP_ABORTING)
        if timeout > 0: self.loop.call_later(timeout, stop)
        else: self.kernel.shell_ch.call(stop)

# ---- IPython's per-cell state, per subshell ----
class _Local(threading.local): state = None  # a child subshell's thread holds its subshell's state here
_local = _Local()
_MISSING = object()

class PerSubshell:
    "A class attribute whose value, on a child subshell's thread, is that subshell's own (the parent's is the usual one)."
    def __init__(self, cls, name):
        orig = next((c.__dict__[name] for c in cls.__mro__ if name in c.__dict__), _MISSING)
        self.name = name
        if hasattr(orig, '__get__'): self.parent_get,self.parent_set = orig.__get__,orig.__set__  # a trait
        else:
            def parent_get(obj, cls=None):
                if obj is None: return self
                try: return obj.__dict__[name]
                except KeyError:
                    if orig is _MISSING: raise AttributeError(name) from None
                    return orig
            self.parent_get,self.parent_set = parent_get,lambda obj, value: obj.__dict__.__setitem__(name, value)
        setattr(cls, name, self)

    def __get__(self, obj, cls=None):
        st = _local.state
        if st is None or obj is None: return self.parent_get(obj, cls)
        return st[self.name]

    def __set__(self, obj, value):
        st = _local.state
        if st is None: self.parent_set(obj, value)
        else: st[self.name] = value

class PerCell:
    """A class attribute whose value is the running cell's own: a contextvar, so each runner task (one per cell that unlocked its
    queue, see `Subshell.unlock`) and what it starts see the value set there. None until set."""
    def __init__(self, cls, name):
        self.var = contextvars.ContextVar(f'ipymini.{name}', default=None)
        setattr(cls, name, self)

    def __get__(self, obj, cls=None): return self if obj is None else self.var.get()
    def __set__(self, obj, value): self.var.set(value)

class _Discard(dict):
    "A mapping that keeps nothing."
    def __getitem__(self, k): return []
    def __setitem__(self, k, v): pass

class ChildHistory:
    """A child subshell's history: its own cells this session, kept in memory; earlier sessions are read from the parent's database
    through a `history.Reader` (never IPython's reading methods, which are unsafe off the main thread)."""
    def __init__(self, hm):
        self.hm,self.reader,self.outputs,self.exceptions,self.output_hist_reprs = hm,Reader(hm),_Discard(),_Discard(),_Discard()
        self.cells = []  # (execution count, transformed source, raw source)

    @property
    def session(self): return self.hm.session_number

    def store_inputs(self, line_num, source, source_raw=None): self.cells.append((line_num, source, source if source_raw is None else source_raw))
    def store_output(self, line_num): pass

    def _rows(self, cells, raw=True, output=False):
        "Cells as IPython's history rows: (session, line, input), or (session, line, (input, output)) with `output`; outputs are not kept."
        s = self.hm.session_number
        return [(s, n, (r if raw else t, None) if output else (r if raw else t)) for n,t,r in cells]

    def get_tail(self, n=10, raw=True, output=False, include_latest=False):
        if n is None: n = 10
        return self._rows(self.cells[-n:] if n else [], raw, output)

    def get_range(self, session=0, start=1, stop=None, raw=True, output=False):
        if session not in (0, self.hm.session_number): return self.reader.get_range(session, start, stop, raw, output)
        return self._rows([c for c in self.cells if c[0] >= start and (stop is None or c[0] < stop)], raw, output)

    def get_range_by_str(self, rangestr, raw=True, output=False):
        "`%history 4-6 ~1/2` in a child subshell: each range through `get_range`."
        for sess,start,stop in extract_hist_ranges(rangestr): yield from self.get_range(sess, start, stop, raw=raw, output=output)

    def search(self, pattern='*', raw=True, search_raw=True, output=False, n=None, unique=False):
        found = [c for c in self.cells if fnmatch.fnmatchcase(c[2] if search_raw else c[1], pattern)]
        if unique: found = list({c[2 if raw else 1]: c for c in found}.values())
        return self._rows(found[-n:] if n else found, raw, output)

    def __getattr__(self, name): return getattr(self.hm, name)

SHELL_STATE = ('execution_count', 'payload_manager', 'history_manager', '_last_traceback', 'last_execution_succeeded', 'last_execution_result')
HOOK_STATE = ('content', '_is_active', 'cache_size')

def _per_subshell_state(shell):
    "Make the shell's and displayhook's per-cell attributes per subshell; enter IPython's traps once for the whole process."
    for n in SHELL_STATE: PerSubshell(type(shell), n)
    for n in HOOK_STATE: PerSubshell(type(shell.displayhook), n)
    # the ExecutionResult a cell's value and errors go to: a cell that unlocked its queue keeps its own while later cells run
    PerCell(type(shell.displayhook), 'exec_result')
    # Several threads run cells: the traps' enter/exit counting would undo the builtins and displayhook under a running cell
    shell.builtin_trap.__enter__()
    shell.display_trap.__enter__()

def _child_state(shell):
    # cache_size=0: `_`, `__`, `_N` and Out stay the parent's
    return dict(execution_count=1, payload_manager=PayloadManager(parent=shell), history_manager=ChildHistory(shell.history_manager),
                _last_traceback=None, last_execution_succeeded=True, last_execution_result=None,
                content=None, _is_active=False, cache_size=0)

class ChildSubshell(Subshell):
    "A subshell with a thread and asyncio loop of its own; deleting it stops it after interrupting a running cell."
    def __init__(self, kernel):
        super().__init__(kernel, str(uuid.uuid4()), Loop())
        self.lock,self.state = threading.Lock(),_child_state(kernel.shell)
        self.thread = threading.Thread(target=self._main, name=f'ipymini-subshell-{self.sid[:8]}', daemon=True)

    def start(self): contextvars.Context().run(self.thread.start)  # its thread belongs to no request: each one sets its own parent

    def submit(self, msg):
        with self.lock:
            if not self.deleted: return super().submit(msg)
        if msg is not STOP_ABORTING: self.kernel.not_found(msg, f"subshell {self.sid} was deleted")

    def _main(self):
        asyncio.set_event_loop(self.loop)
        _local.state = self.state
        while not self.finished:
            # the runner, or (after `unlock`) a cell still running in the runner it replaced: the loop runs both
            if self.task is None or self.task.done(): self.task = self.loop.create_task(self.run())
            # an interrupt that arrives just as a cell ends lands here instead: serve on
            try: self.loop.run_until_complete(self.task)
            except BaseException as e: log.warning("subshell %s: %r outside a cell", self.sid, e)
        self.loop.close()

    def delete(self):
        "Take no more requests; interrupt the running cell; queued requests get SubshellNotFound; the thread then ends."
        with self.lock: self.deleted = True
        self.kernel.interrupts.reach(self)
        self.kernel.interrupts.cancel_detached(self)  # cells that unlocked the queue end too (a repeated cancel is harmless)
        try: self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError: pass  # its thread is gone already

class Subshells:
    """The kernel's subshells: the parent (on the main thread), the children by id (JEP 91), and the temporary ones that `subshell()`
    routes a client's later requests to. Children are created and deleted on the control thread; the shell thread reads them."""
    def __init__(self, kernel):
        self.kernel,self.parent,self.by_id = kernel,None,{}  # subshell_id -> ChildSubshell
        self.routes = {}  # client session -> the temporary subshells opened for it, newest last
        self.temporary = weakref.WeakSet()  # temporary subshells, until their thread ends

    def start(self, loop):
        "Start the parent subshell on the main thread's `loop`, and make IPython's per-cell state per subshell."
        _per_subshell_state(self.kernel.shell)
        self.parent = Subshell(self.kernel, None, loop)
        self.parent.start()

    def children(self): return [*self.by_id.values(), *self.temporary]

    def for_msg(self, msg):
        "The subshell a shell message names in its header's `subshell_id` (JEP 91): None names the parent; None if there is no such subshell."
        sid = msg['header'].get('subshell_id')
        if sid is None:  # the parent, unless a cell of this client's session opened a temporary subshell (see `temporary`)
            session = msg['header'].get('session')
            temp = self.routes.get(session) if self.routes and isinstance(session, str) else None
            return temp[-1] if temp else self.parent
        return self.by_id.get(sid) if isinstance(sid, str) else None

    def running(self):
        "The subshell whose cell runs in the current task, or None when called from anywhere else."
        try: task = asyncio.current_task()
        except RuntimeError: return None  # no loop runs in this thread
        if task is None: return None
        return next((s for s in [self.parent, *self.children()] if s.cell_task is task), None)

    def unlock(self):
        "From a running cell: let the requests queued behind it start while it goes on awaiting; False outside a cell."
        sub = self.running()
        if sub is None: return False
        sub.unlock()
        return True

    @contextlib.contextmanager
    def open_temporary(self):
        "While the body runs, later requests from the running cell's client session go to a new subshell, which ends after the body."
        parent = current_parent.get()
        session = parent and parent['header'].get('session')
        if not isinstance(session, str): raise RuntimeError("subshell() routes the requests of the client that ran the cell: call it inside a cell")
        sub = ChildSubshell(self.kernel)
        sub.start()
        self.temporary.add(sub)
        # the shell thread reads the routes as it receives each request: each update replaces a tuple, so every read sees a whole one
        self.routes[session] = self.routes.get(session, ()) + (sub,)
        try: yield sub.sid
        finally:
            rest = tuple(s for s in self.routes.get(session, ()) if s is not sub)
            if rest: self.routes[session] = rest
            else: self.routes.pop(session, None)
            self.kernel.shell_ch.call(sub.close)  # on the shell thread, after every request it routed here: they are served first

    # ---- control handlers ----
    def create(self, msg):
        sub = ChildSubshell(self.kernel)
        sub.start()
        self.by_id[sub.sid] = sub
        return dict(status='ok', subshell_id=sub.sid)

    def delete(self, msg):
        sid = msg['content'].get('subshell_id')
        if not isinstance(sid, str): return error_content('BadRequest', "delete_subshell_request: 'subshell_id' must be a str")
        sub = self.by_id.pop(sid, None)
        if sub is None: return error_content('SubshellNotFound', f"no subshell {sid!r}")
        sub.delete()
        return dict(status='ok')

    def list(self, msg): return dict(status='ok', subshell_id=list(self.by_id))
