"""The debugger, kernel side: `debug_request` on control carries one DAP request; the kernel answers Jupyter's extensions and the
requests that need its view of the user's namespace, and forwards the rest to debugpy running in-process (see `dap`)."""
import os, sys, re, types, reprlib, threading, itertools, linecache, logging, importlib.util, ast
from concurrent.futures import Future, TimeoutError as FutureTimeout
from .streams import get_parent
from .dap import DAPClient, HASH_SEED, TMP_SUFFIX, TIMEOUT, tmp_prefix, make_tmp_dir, cell_path, hide_thread

__all__ = ['Debugger', 'setup']
log = logging.getLogger('ipymini')

START_TIMEOUT = 30  # debugpy.listen starts the adapter process: a cold start of a loaded machine takes seconds

NO_SESSION = "the debugger is not started: send 'initialize' first"
LOCAL_WITH_SESSION = {'attach', 'configurationDone', 'setBreakpoints'}  # answered here, but only in a session; forwarded ones all need one

HIDDEN_RE = re.compile(r'^(__.*__|_+|_i+|_i?\d+|_[oid]h)$')  # dunders and IPython's output/input history names

def _repr_limits():
    r = reprlib.Repr()
    r.maxlevel,r.maxstring,r.maxlong,r.maxother = 3,1000,1000,1000
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 100
    return r

REPR = _repr_limits()  # a huge list costs its first 100 items here, not a full repr on the control thread

def _safe_repr(v):
    try: return REPR.repr(v)
    except Exception as e: return f"<repr failed: {type(e).__name__}>"

def _expandable(v):
    try:
        if isinstance(v, (dict, list, tuple, set, frozenset)): return bool(v)
        d = getattr(v, '__dict__', None)
        return isinstance(d, dict) and bool(d) and not callable(v) and not isinstance(v, types.ModuleType)
    except Exception: return False

class Variables:
    "The user's namespace as DAP variables while nothing is stopped: references stay valid until the next `inspectVariables`."
    MAX = 500
    def __init__(self): self.refs = {}

    def var(self, name, value, expr):
        ref = 0
        if _expandable(value):
            ref = len(self.refs) + 1
            self.refs[ref] = value,expr
        d = dict(name=name, value=_safe_repr(value), type=type(value).__name__, variablesReference=ref)
        if expr: d['evaluateName'] = expr
        return d

    def children(self, ref):
        v,expr = self.refs.get(ref, (None, None))
        if isinstance(v, dict): items = ((_safe_repr(k), x, f"{expr}[{k!r}]") for k,x in v.items())
        elif isinstance(v, (list, tuple)): items = ((str(i), x, f"{expr}[{i}]") for i,x in enumerate(v))
        elif isinstance(v, (set, frozenset)): items = ((str(i), x, None) for i,x in enumerate(v))
        elif v is not None: items = ((k, x, f"{expr}.{k}") for k,x in list(vars(v).items()))
        else: items = ()
        return [self.var(*o) for o in itertools.islice(items, self.MAX)]

class Debugger:
    "debug_request handlers: most DAP requests go to debugpy's adapter; the Jupyter extensions are answered here."
    def __init__(self, kernel):
        self.kernel,self.shell = kernel,kernel.shell
        self.client,self.endpoint,self.started,self.attached = None,None,False,False
        self.breakpoints,self.stopped = {},set()
        self.caps,self.removed_transforms,self.sender,self.owner = None,[],None,None
        self.explorer = Variables()
        self.initialized = threading.Event()
        # files of everything loaded before the user's code: frames in them are the kernel's, hidden from stack traces and steps
        self.internal = sorted({f for m in list(sys.modules.values()) if isinstance(f := getattr(m, '__file__', None), str)} |
                               {os.path.dirname(os.path.abspath(__file__))})
        self.local = dict(initialize=self.initialize, attach=self.attach, disconnect=self.disconnect, terminate=self.terminate,
            configurationDone=self.configuration_done, debugInfo=self.debug_info, dumpCell=self.dump_cell, source=self.source,
            setBreakpoints=self.set_breakpoints, inspectVariables=self.inspect_variables, variables=self.variables,
            richInspectVariables=self.rich_inspect, copyToGlobals=self.copy_to_globals, modules=self.modules)

    # ---- the control handler ----
    def on_request(self, msg):
        "Answer one debug_request with the DAP response as the debug_reply's content."
        req,self.sender = msg['content'],(msg.get('header') or {}).get('session')  # one control request at a time
        if not isinstance(req, dict) or not isinstance(req.get('command'), str) or not req['command']:
            return dict(type='response', request_seq=0, success=False, command='', message="debug_request: 'command' must be a non-empty string")
        if not isinstance(req.get('seq', 0), int): req['seq'] = 0
        if req.get('arguments') is None: req['arguments'] = {}
        if not isinstance(req['arguments'], dict): return self.fail(req, "'arguments' must be an object")
        fn = self.local.get(req['command'])
        if req['command'] == 'launch': return self.fail(req, "the kernel is debugged in-process: use 'attach'")
        if not self.started and (fn is None or req['command'] in LOCAL_WITH_SESSION): return self.fail(req, NO_SESSION)
        try: return fn(req) if fn else self.forward(req)
        except (TimeoutError, ConnectionError) as e: return self.fail(req, f"{req['command']}: {e}")
        except Exception as e:
            log.exception("debug request %s", req['command'])
            return self.fail(req, f"{req['command']}: {type(e).__name__}: {e}")

    def respond(self, req, body=None, **kw):
        return dict(type='response', request_seq=req['seq'], success=True, command=req['command'], body=body or {}, **kw)

    def fail(self, req, message):
        return dict(type='response', request_seq=req.get('seq', 0), success=False, command=req.get('command', ''), message=message)

    def forward(self, req, arguments=None, command=None):
        "Send `req` to debugpy under our own seq; its response goes back under the client's."
        if self.client is None or self.client.closed: raise ConnectionError("the connection to debugpy is closed")
        rep = dict(self.client.request(command or req['command'], req['arguments'] if arguments is None else arguments))
        rep['request_seq'] = req['seq']
        if command: rep['command'] = req['command']
        return rep

    # `stopped` follows debugpy's messages in the order it sent them, on the reader thread: a step's response may come after
    # the step's `stopped` event, so clearing on the control thread once a response is in would forget a thread stopped again
    def on_response(self, rep):
        "A continue resumes every stopped thread, and debugpy sends no `continued` event for it (it does for a step)."
        if rep.get('command') == 'continue' and rep.get('success'): self.stopped.clear()

    def on_event(self, event):
        "On the reader thread: keep track of stopped threads, then publish the event."
        name,body = event.get('event'),event.get('body') or {}
        if name == 'initialized': self.initialized.set()
        elif name == 'stopped' and isinstance(body.get('threadId'), int): self.stopped.add(body['threadId'])
        elif name == 'continued':
            if body.get('allThreadsContinued', True): self.stopped.clear()
            else: self.stopped.discard(body.get('threadId'))
        elif name in ('terminated', 'exited'): self.stopped.clear()
        self.kernel.iopub.send('debug_event', event, get_parent())

    # ---- starting and stopping ----
    def _listen(self):
        "On the main thread, as ipykernel does: debugpy traces the thread that starts it, and the cells run there."
        os.environ.setdefault('PYDEVD_DISABLE_FILE_VALIDATION', '1')  # else a frozen-modules warning lands in the user's output
        import debugpy
        debugpy.configure(subProcess=False)  # a kernel's child processes are not the user's debug session
        return debugpy.listen(('127.0.0.1', 0))

    def _ensure_listening(self):
        if self.endpoint: return self.endpoint
        fut = Future()
        def run():
            if not fut.set_running_or_notify_cancel(): return
            try: fut.set_result(self._listen())
            except BaseException as e: fut.set_exception(e)
        self.kernel.loop.call_soon_threadsafe(run)
        try: self.endpoint = fut.result(START_TIMEOUT)
        except FutureTimeout:
            fut.cancel()
            raise TimeoutError(f"debugpy did not start within {START_TIMEOUT} s (is a cell still running?)") from None
        return self.endpoint

    def _hide_kernel_threads(self):
        "The kernel's own threads are not the user's: subshell threads run cells, so they stay visible."
        k = self.kernel
        for t in (k.shell_ch, k.control_ch, k.stdin_ch, k.iopub.channel): hide_thread(t)
        for t in threading.enumerate():
            if t.name.startswith('ipymini-') and not t.name.startswith('ipymini-subshell-'): hide_thread(t)
        save = getattr(self.shell.history_manager, 'save_thread', None)
        if save is not None: hide_thread(save)

    def resume_for_interrupt(self):
        "On the main thread, in the SIGINT handler: let the stopped threads run, and tell front ends they do."
        client,stopped = self.client,sorted(self.stopped)
        if not stopped or client is None or client.closed: return
        client.send('continue', dict(threadId='*'), answer=False)
        self.stopped.clear()
        for tid in stopped: self.kernel.iopub.send('debug_event', dict(seq=0, type='event', event='continued',
                                                                      body=dict(threadId=tid, allThreadsContinued=True)), get_parent())

    def initialize(self, req):
        if self.started:
            # another client session joins the running one; the same session again is refused as debugpy refuses it, which
            # JupyterLab relies on: after a restart it starts twice at once, and a second success has it set breakpoints twice
            if self.sender is None or self.sender != self.owner: return self.respond(req, self.caps)
            return self.fail(req, "Invalid message: Session is already initialized")
        self._hide_kernel_threads()
        host,port = self._ensure_listening()
        # the kernel delivers a SIGINT that lands in debugpy's tracer again a moment later (a KeyboardInterrupt raised there ends
        # debugging for the thread); by then `resume_for_interrupt` has the cell running user code again
        self.kernel.interrupts.unsafe.update(n for n in list(sys.modules) if n == 'pydevd' or n.startswith(('_pydevd', '_pydev_')))
        make_tmp_dir()
        self.initialized.clear()
        self.client = DAPClient(host, port, self.on_event, self.on_response)
        rep = self.forward(req)
        if not rep.get('success'):
            self.client.close()
            return rep
        self.caps,self.started,self.attached,self.owner = rep.get('body') or {},True,False,self.sender
        # the line numbers of the compiled cell must be those of the dumped cell
        from IPython.core.inputtransformer2 import leading_empty_lines
        cleanup = self.shell.input_transformer_manager.cleanup_transforms
        if leading_empty_lines in cleanup:
            cleanup.remove(leading_empty_lines)
            self.removed_transforms.append(leading_empty_lines)
        return rep

    def attach(self, req):
        if self.attached: return self.respond(req)
        host,port = self.endpoint
        args = dict(req['arguments'], connect=dict(host=host, port=port), redirectOutput=False,
                    rules=[dict(path=p, include=False) for p in self.internal])
        if not args.get('justMyCode'): args.setdefault('debugOptions', ['DebugStdLib'])
        # debugpy answers attach only after configurationDone, which it asks for with the initialized event
        seq = self.client.send('attach', args)
        if not self.initialized.wait(TIMEOUT): raise TimeoutError("debugpy sent no 'initialized' event")
        done = self.client.request('configurationDone')
        if not done.get('success'): return self.fail(req, done.get('message', 'configurationDone failed'))
        rep = dict(self.client.wait(seq))
        rep['request_seq'] = req['seq']
        self.attached = bool(rep.get('success'))
        return rep

    def configuration_done(self, req):
        # done during attach; front ends send it again when they restore their breakpoints
        return self.respond(req)

    def _stop(self):
        if self.client: self.client.close()
        self.client,self.started,self.attached,self.owner = None,False,False,None
        self.breakpoints,self.stopped = {},set()
        cleanup = self.shell.input_transformer_manager.cleanup_transforms
        while self.removed_transforms: cleanup.insert(0, self.removed_transforms.pop())

    def disconnect(self, req):
        if not self.started: return self.respond(req)
        # never let a front end end the kernel process through its debugger
        args = dict(req['arguments'], terminateDebuggee=False, restart=False)
        try: rep = self.forward(req, args)
        finally: self._stop()
        return rep

    def terminate(self, req):
        "The kernel outlives its debug sessions: terminate ends the session (threads resume, breakpoints go), not the process."
        if not self.started: return self.respond(req)
        # debugpy publishes 'terminated' before it answers the disconnect
        try: self.forward(req, dict(terminateDebuggee=False, restart=False), command='disconnect')
        finally: self._stop()
        return self.respond(req)

    # ---- the Jupyter extensions and the requests that need a kernel's view ----
    def debug_info(self, req):
        return self.respond(req, dict(isStarted=self.started, hashMethod='Murmur2', hashSeed=HASH_SEED, tmpFilePrefix=tmp_prefix(),
            tmpFileSuffix=TMP_SUFFIX, breakpoints=[dict(source=s, breakpoints=b) for s,b in self.breakpoints.items()],
            stoppedThreads=sorted(self.stopped), richRendering=True, exceptionPaths=['Python Exceptions'], copyToGlobals=True))

    def dump_cell(self, req):
        code = req['arguments'].get('code')
        if not isinstance(code, str): return self.fail(req, "dumpCell: 'code' must be a string")
        path = cell_path(code)
        make_tmp_dir()
        with open(path, 'w', encoding='utf-8') as f: f.write(code)
        return self.respond(req, dict(sourcePath=path))

    def source(self, req):
        src = req['arguments'].get('source')
        path = src.get('path') if isinstance(src, dict) else None
        if not isinstance(path, str): return self.fail(req, "source: 'source.path' must be a string")
        try:
            with open(path, encoding='utf-8') as f: return self.respond(req, dict(content=f.read()))
        except (OSError, ValueError): pass
        lines = linecache.cache.get(path)  # a cell that ran but was never dumped
        if lines: return self.respond(req, dict(content=''.join(lines[2])))
        return self.fail(req, f"source unavailable: {path}")

    def set_breakpoints(self, req):
        src = req['arguments'].get('source')
        path = src.get('path') if isinstance(src, dict) else None
        rep = self.forward(req)
        if rep.get('success') and isinstance(path, str):
            # debugpy may move a breakpoint (e.g. off a blank line): remember where it really is
            bps = [dict(line=b['line']) for b in (rep.get('body') or {}).get('breakpoints', []) if isinstance(b.get('line'), int)]
            if bps: self.breakpoints[path] = bps
            else: self.breakpoints.pop(path, None)
        return rep

    def visible(self, name): return not (HIDDEN_RE.match(name) or name in self.shell.user_ns_hidden)

    def inspect_variables(self, req):
        self.explorer = Variables()
        ns = list(self.shell.user_ns.items())
        return self.respond(req, dict(variables=[self.explorer.var(k, v, k) for k,v in ns if isinstance(k, str) and self.visible(k)]))

    def variables(self, req):
        if not self.stopped:
            ref = req['arguments'].get('variablesReference')
            return self.respond(req, dict(variables=self.explorer.children(ref) if isinstance(ref, int) else []))
        rep = self.forward(req)
        body = rep.get('body')
        if isinstance(body, dict) and isinstance(body.get('variables'), list):
            body['variables'] = [v for v in body['variables'] if self.visible(str(v.get('name', '')))]
        return rep

    def rich_inspect(self, req):
        name = req['arguments'].get('variableName')
        if not isinstance(name, str) or not name.isidentifier():
            # pydevd's groupings ("special variables", ...) have no rich form
            return self.respond(req, dict(data={}, metadata={})) if isinstance(name, str) else self.fail(req, "'variableName' must be a string")
        data,md = {},{}
        if not self.stopped:
            res = self.shell.user_expressions({name: name})[name]
            if res.get('status') == 'ok': data,md = res.get('data', {}),res.get('metadata', {})
        else:
            expr = f"__import__('IPython').get_ipython().display_formatter.format({name})"
            args = dict(expression=expr, frameId=req['arguments'].get('frameId'), context='clipboard')
            rep = self.forward(req, args, command='evaluate')
            if not rep.get('success'): return rep
            try: data,md = ast.literal_eval(rep['body']['result'])
            except (ValueError, SyntaxError, TypeError, KeyError) as e: return self.fail(req, f"richInspectVariables: unreadable result ({e})")
        return self.respond(req, dict(data=data, metadata={k: v for k,v in md.items() if k in data}))

    def copy_to_globals(self, req):
        a = req['arguments']
        src,dst = a.get('srcVariableName'),a.get('dstVariableName')
        if not (isinstance(src, str) and src.isidentifier() and isinstance(dst, str) and dst.isidentifier()):
            return self.fail(req, "copyToGlobals: 'srcVariableName' and 'dstVariableName' must be identifiers")
        if not self.stopped: return self.fail(req, "copyToGlobals: no thread is stopped")
        args = dict(expression=f"__import__('IPython').get_ipython().user_ns[{dst!r}]", value=src, frameId=a.get('srcFrameId'))
        return self.forward(req, args, command='setExpression')

    def modules(self, req):
        a = req['arguments']
        mods = list(sys.modules.values())
        start,count = a.get('startModule', 0),a.get('moduleCount', 0)
        if not isinstance(start, int) or start < 0: start = 0
        stop = start + count if isinstance(count, int) and count > 0 else len(mods)
        out = []
        for i,m in enumerate(mods[start:stop], start):
            path = getattr(getattr(m, '__spec__', None), 'origin', None)
            if isinstance(path, str) and path.endswith('.py'): out.append(dict(id=i, name=m.__name__, path=path))
        return self.respond(req, dict(modules=out, totalModules=len(mods)))

def setup(kernel):
    "Register debug_request, and resume a stopped cell first on an interrupt. (Cells are compiled under `dap.cell_path`, see bridge.)"
    if importlib.util.find_spec('debugpy') is None: return log.info("debugpy is not installed: no debugger")
    dbg = kernel.debugger = Debugger(kernel)
    kernel.control_handlers['debug_request'] = dbg.on_request
    kernel.interrupts.on_interrupt.append(dbg.resume_for_interrupt)
    kernel.debugger_enabled = True
    kernel.features.append('debugger')
