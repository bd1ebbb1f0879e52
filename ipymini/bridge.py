"""IPython behind the protocol: the shell subclass, display hooks, profile and config, and the execute/complete/inspect/history handlers."""
import builtins, os, re, sys, contextlib, logging, threading, types
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.compilerop import CachingCompiler
from IPython.core.async_helpers import _asyncio_runner
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.autocall import ExitAutocall
from IPython.core.application import BaseIPythonApplication, base_aliases, base_flags
from IPython.core.shellapp import InteractiveShellApp, shell_aliases, shell_flags
from IPython.core import page
from IPython.utils.tokenutil import token_at_cursor, line_at_cursor
from traitlets import Type, Any, default
from .streams import get_parent, set_default_parent, current_parent, OutStream
from .env import env_flag, env_float
from .dap import cell_path
from .outcache import OutputBound

try: from IPython.core.completer import provisionalcompleter, rectify_completions
except ImportError: provisionalcompleter = rectify_completions = None

__all__ = ['ZMQInteractiveShell', 'IPKernelApp', 'make_shell', 'execute', 'complete', 'inspect', 'is_complete', 'history', 'env_flag', 'env_float', 'BadRequest']
log = logging.getLogger('ipymini')

SHIM = 'ipykernel.zmqshell'

def ipykernel_module(name, **attrs):
    """Put a module `name` holding `attrs` in sys.modules, unless one is there: libraries tell a notebook kernel by ipykernel's module
    names (tqdm looks for 'ipykernel.zmqshell' in sys.modules, plotly and click at the shell's and stdout's class modules) and
    import its comm class from 'ipykernel.comm'. The package `ipykernel` itself is never faked: where it is installed,
    `import ipykernel` gives it."""
    if name in sys.modules: return sys.modules[name]
    mod = sys.modules[name] = types.ModuleType(name, f"ipymini's {', '.join(attrs)} under the name libraries import them by")
    vars(mod).update(attrs)
    return mod

TYPES_KEY = '_jupyter_types_experimental'  # complete_reply metadata key for typed completions, as ipykernel names it

class BadRequest(ValueError): "A request whose fields a handler cannot use; the error reply names it."

class MiniDisplayHook(DisplayHook):
    "Sends `execute_result` with the full mimebundle instead of printing it."
    content = None
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bound = OutputBound(self)  # IPython bounds the cache by count alone; this bounds it by bytes too

    def start_displayhook(self):
        super().start_displayhook()
        self.content = dict(data={}, metadata={}, execution_count=self.prompt_count)

    def write_output_prompt(self): self.content['execution_count'] = self.prompt_count

    def write_format_data(self, format_dict, md_dict=None):
        self.content['data'],self.content['metadata'] = format_dict,md_dict or {}

    def update_user_ns(self, result):
        super().update_user_ns(result)
        if self.cache_size and self.do_full_cache and result is not self.shell.user_ns.get('_oh'): self.bound.added(self.prompt_count, result)

    def flush(self):
        "`%reset out`: IPython empties `_`, `__`, `___` in the namespace but not in `user_ns_hidden`, which then holds the last results and stops `_` updating."
        super().flush()
        if '_' not in vars(builtins): self.shell.push(dict(_=self._, __=self.__, ___=self.___), interactive=False)
        self.bound.flushed()

    def finish_displayhook(self):
        if self.content['data']: self.shell.kernel.iopub.send('execute_result', self.content, get_parent())
        self.content = None
        self._is_active = False

class MiniDisplayPublisher(DisplayPublisher):
    "Sends `display_data`, `update_display_data` and `clear_output`; hooks may intercept messages (e.g. Output widgets)."
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hooks = []

    def register_hook(self, hook): self._hooks.append(hook)
    def unregister_hook(self, hook):
        with contextlib.suppress(ValueError): self._hooks.remove(hook)

    def _send(self, msg_type, content):
        msg = dict(msg_type=msg_type, content=content)
        for hook in self._hooks:
            msg = hook(msg)
            if msg is None: return
        self.shell.kernel.iopub.send(msg_type, msg['content'], get_parent())

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        self._is_publishing = True
        try: self._send('update_display_data' if update else 'display_data', dict(data=data, metadata=metadata or {}, transient=transient or {}))
        finally: self._is_publishing = False

    def clear_output(self, wait=False): self._send('clear_output', dict(wait=wait))

class KernelExitAutocall(ExitAutocall):
    "`exit` / `quit`: ask the front end to close the kernel (or only the notebook, with `keep_kernel=True`)."
    def __call__(self, keep_kernel=False):
        self._ip.keepkernel_on_exit = keep_kernel
        self._ip.ask_exit()

class CellCompiler(CachingCompiler):
    "Compiles each cell under the file name debugger front ends compute from its code (`dap.cell_path`), as ipykernel does."
    def get_code_name(self, raw_code, transformed_code, number): return cell_path(raw_code)

class ZMQInteractiveShell(InteractiveShell):
    "An InteractiveShell that talks to a kernel's IOPub instead of a terminal; named as ipykernel's, whose name libraries look for."
    __module__ = SHIM  # plotly, click and others recognise a notebook kernel by the shell's module (see `ipykernel_module`)
    displayhook_class = Type(MiniDisplayHook)
    display_pub_class = Type(MiniDisplayPublisher)
    compiler_class = Type(CellCompiler)
    kernel = Any(None)
    readline_use = False
    keepkernel_on_exit = False
    experimental_completions = True  # IPython's typed completion API; make_shell reads IPYMINI_EXPERIMENTAL_COMPLETIONS
    _last_traceback = None
    _error_in_displayhook = None  # the error content when formatting a cell's result failed

    # ipykernel's parent API (ipywidgets' Output widget, libraries that print from threads): the request output belongs to
    def get_parent(self): return get_parent()
    def set_parent(self, parent):
        "Make `parent` the request that output belongs to, here and for code running outside any request."
        current_parent.set(parent)
        set_default_parent(parent)
    def set_thread_parent(self, parent):
        "Make `parent` the request that output of this thread (this context) belongs to; returns the token for `reset_thread_parent`."
        return current_parent.set(parent)
    def reset_thread_parent(self, token): current_parent.reset(token)

    def init_virtualenv(self): pass  # the kernel runs in whatever environment launched it
    def init_io(self): pass  # sys.stdout/err are the kernel's streams already
    def _tee(self, channel):
        # IPython would wrap our stream's write to keep all stream output in memory; IOPub already delivers it
        return contextlib.nullcontext()

    def init_environment(self):
        "As ipykernel: colour for tools that offer it, and no pagers in subprocesses, which have no terminal to page on."
        os.environ.update(TERM='xterm-color', CLICOLOR='1', FORCE_COLOR='1', CLICOLOR_FORCE='1', PAGER='cat', GIT_PAGER='cat')

    def init_hooks(self):
        super().init_hooks()
        # after `display_page` (priority 90), which shows pager text as display_data when configured
        self.set_hook('show_in_pager', page.as_hook(self.page_payload), 99)

    def page_payload(self, data, start=0, screen_lines=0, pager_cmd=None):
        "Pager output (`?`, `??`, `%less`) goes to the front end as a `page` payload."
        data = data if isinstance(data, dict) else {'text/plain': data}
        self.payload_manager.write_payload(dict(source='page', data=data, start=max(0, start)))

    @default('exiter')
    def _exiter_default(self): return KernelExitAutocall(self)

    def _showtraceback(self, etype, evalue, stb):
        content = dict(ename=getattr(etype, '__name__', str(etype)), evalue=str(evalue), traceback=stb)
        # a failure while formatting the cell's result fails the cell too, as in ipykernel (which names it NoneType)
        if self.displayhook.content is not None: self._error_in_displayhook = content
        self.kernel.iopub.send('error', content, get_parent())
        self._last_traceback = stb

    def set_next_input(self, text, replace=False):
        "Ask the front end to put `text` in the next cell; one payload per execute, the last call wins."
        self.payload_manager.write_payload(dict(source='set_next_input', text=text, replace=replace))

    def ask_exit(self):
        self.exit_now = not self.keepkernel_on_exit
        self.payload_manager.write_payload(dict(source='ask_exit', keepkernel=self.keepkernel_on_exit))

    def enable_gui(self, gui=None):
        "`%gui`, `%matplotlib`: run toolkit `gui`'s event loop while the kernel waits; None, or a backend drawn by the front end, turns it off."
        from IPython.core.error import UsageError
        from .eventloops import enable_gui
        try: enable_gui(self.kernel.loop, gui)
        except ValueError as e: raise UsageError(str(e)) from None
        self.active_eventloop = gui

class IPKernelApp(BaseIPythonApplication, InteractiveShellApp):
    """The IPython profile as ipykernel reads it: ipython_config.py, ipython_kernel_config.py, extensions, startup files, exec_lines,
    and the options a launcher appends to the command line. Named as ipykernel's, so config written for ipykernel applies."""
    name = 'ipython-kernel'  # names the config file: ipython_kernel_config.py
    aliases,flags = {**base_aliases, **shell_aliases},{**base_flags, **shell_flags}

    @default('log')
    def _log_default(self): return log  # the kernel's logger: the launcher's stderr, never a cell

    def init_crash_handler(self): pass  # a kernel's crash belongs in its log, not in a crash report
    def init_shell(self): pass

    def start_shell(self, shell, kernel):
        "Run the profile's extensions and startup code in `shell`; what they print goes to IOPub without a parent, as in ipykernel."
        self.shell = shell
        shell.configurables.append(self)
        out,err = OutStream('stdout', kernel.iopub, 1),OutStream('stderr', kernel.iopub, 2)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            for step in (self.init_path, self.init_gui_pylab, self.init_extensions, self.init_code):
                try: step()
                except Exception: log.exception("IPython startup: %s failed", step.__name__)

OPTION_RE = re.compile(r'--([A-Za-z_][\w-]*(?:\.[A-Za-z_]\w*)*)(=.*)?$', re.S)

def split_options(argv, aliases=IPKernelApp.aliases, flags=IPKernelApp.flags):
    """The words of `argv` as (IPython options the app parses, options it does not know, words that are no option at all):
    `--Class.trait=value` and `--Class.trait value` as traitlets reads them, its aliases (`--matplotlib=inline`) and flags."""
    ok,unknown,junk,i = [],[],[],0
    while i < len(argv):
        a,m = argv[i],OPTION_RE.match(argv[i])
        i += 1
        name = m and m.group(1)
        if m is None or not ('.' in name or name in aliases or name in flags):
            (unknown if m and m.group(2) else junk).append(a)
            continue
        ok.append(a)
        # `--name value`: a config option or an alias takes the next word as its value
        if m.group(2) is None and name not in flags and i < len(argv) and not argv[i].startswith('-'):
            ok.append(argv[i])
            i += 1
    return ok,unknown,junk

def load_app(argv=(), connection_file=None):
    "The IPython profile and its config with the command line's IPython options `argv` applied, or None (after a warning) when they cannot be loaded."
    try:
        app = IPKernelApp()
        app.initialize(list(argv))
        # ipykernel's -f sets this: "'IPKernelApp' in get_ipython().config" is how many libraries tell a notebook kernel
        app.config.IPKernelApp.connection_file = connection_file or ''
        return app
    except (Exception, SystemExit) as e:
        log.warning("cannot load the IPython profile or config (%s): starting without them", e)

def configured_classes(shell):
    "Names of the classes whose config this kernel reads: those of the shell's configurables and their bases."
    objs = [shell, *shell.configurables, shell.history_manager, shell.Completer, shell.display_formatter, *shell.display_formatter.formatters.values()]
    return {c.__name__ for o in objs for c in type(o).__mro__}

def make_shell(kernel, user_ns=None, argv=()):
    "Create the kernel's IPython shell, configured from the IPython profile and the command line's options `argv` as in ipykernel."
    os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    app = load_app(argv, kernel.connection_file)
    try: shell = ZMQInteractiveShell.instance(parent=app, profile_dir=app and app.profile_dir, kernel=kernel, user_ns=user_ns)
    except Exception as e:
        log.warning("IPython config rejected (%s): starting without it", e)
        ZMQInteractiveShell.clear_instance()
        app,shell = None,ZMQInteractiveShell.instance(kernel=kernel, user_ns=user_ns)
    ipykernel_module(SHIM, ZMQInteractiveShell=ZMQInteractiveShell)
    ipykernel_module('ipykernel.iostream', OutStream=OutStream)
    jedi = env_flag('IPYMINI_USE_JEDI')
    if jedi is not None: shell.Completer.use_jedi = jedi
    shell.experimental_completions = provisionalcompleter is not None and env_flag('IPYMINI_EXPERIMENTAL_COMPLETIONS', True)
    if app is not None:
        known = (configured_classes(shell) | {'IPKernelApp'}) if app.cli_config else ()  # at start only when options were given
        for sec,traits in app.cli_config.items():
            for t in traits if sec not in known else (): log.warning("ignoring command-line option --%s.%s: this kernel has no %s", sec, t, sec)
        app.start_shell(shell, kernel)
    batch_history(shell, kernel)
    return shell

EXIT_GRACE = 3.  # seconds between `exit`'s reply and the kernel's stop: a loaded machine can stall a front end for over a second
HISTORY_DELAY = 0.5  # seconds after a cell before its input is written to the history database

def batch_history(shell, kernel):
    "Write history a moment after a cell, for all the cells run meanwhile, not after every one: each write is a sqlite commit on IPython's saving thread."
    hm = shell.history_manager
    if hm is None or not getattr(hm, 'using_thread', False) or 'db_cache_size' in shell.config.get('HistoryManager', {}): return
    hm.db_cache_size = 1 << 30  # IPython then writes only when told (and at exit; history_request writes first, see `history`)
    timer = None
    def write():
        nonlocal timer
        timer = None
        if hm.save_flag is not None: hm.save_flag.set()
    def after_cell():
        nonlocal timer
        if threading.current_thread() is not threading.main_thread(): return  # a child subshell's cells are not in the database
        if timer is None: timer = kernel.loop.call_later(HISTORY_DELAY, write)  # busy for long: still written every HISTORY_DELAY
    shell.events.register('post_execute', after_cell)

async def execute(shell, content, cell_id=None):
    "Run an execute_request's code; returns the reply content."
    code,silent = content['code'],bool(content.get('silent', False))
    store_history = bool(content.get('store_history', not silent))
    before = shell.execution_count
    shell._last_traceback,shell._error_in_displayhook = None,None
    try: transformed,exc = shell.transform_cell(code),None
    except Exception: transformed,exc = code,sys.exc_info()
    if shell.loop_runner is not _asyncio_runner and shell.should_run_async(code, transformed_cell=transformed, preprocessing_exc_tuple=exc):
        # `%autoawait trio` and friends: IPython's own runner, which blocks this loop
        res = shell.run_cell(code, store_history=store_history, silent=silent, cell_id=cell_id)
    else:
        # awaited on the kernel's loop, so a task a cell starts keeps running after it; a cell without `await` never yields
        res = None
        try: res = await shell.run_cell_async(code, store_history=store_history, silent=silent, transformed_cell=transformed,
                                              preprocessing_exc_tuple=exc, cell_id=cell_id)
        finally:
            shell.events.trigger('post_execute')
            if not silent: shell.events.trigger('post_run_cell', res)
    dh_err = shell._error_in_displayhook
    if res.success and dh_err is None: reply = dict(status='ok')
    else:
        err = res.error_before_exec if res.error_before_exec is not None else res.error_in_exec
        ename,evalue = (type(err).__name__,str(err)) if err is not None or dh_err is None else (dh_err['ename'],dh_err['evalue'])
        reply = dict(status='error', ename=ename, evalue=evalue, traceback=shell._last_traceback or [],
                     engine_info=dict(engine_uuid=shell.kernel.wire.session, engine_id=-1, method='execute'))
    # the number this cell took (cells that ran meanwhile, after `unlock`, took later ones); else the last one taken, as ipykernel
    reply['execution_count'] = res.execution_count if res.execution_count is not None and store_history and not silent else before - 1
    exprs = content.get('user_expressions') or {}
    reply['user_expressions'] = shell.user_expressions(exprs) if reply['status'] == 'ok' and isinstance(exprs, dict) else {}
    reply['payload'] = shell.payload_manager.read_payload()
    shell.payload_manager.clear_payload()
    # `exit` ends the kernel as in ipykernel, a moment after this cell's reply and idle: a front end that reads the reply only while
    # the kernel lives (jupyter console) acts on its ask_exit payload first, and usually sends shutdown_request, which ends it sooner
    if shell.exit_now: shell.kernel.loop.call_later(EXIT_GRACE, shell.kernel.request_stop)
    return reply

def complete(shell, content):
    "complete_request: IPython's typed completions (as ipykernel sends them) or, with those off, its line completer."
    code,pos = content['code'],content.get('cursor_pos')
    if pos is None: pos = len(code)
    if shell.experimental_completions:
        with provisionalcompleter(): comps = list(rectify_completions(code, shell.Completer.completions(code, pos)))
        start,end = (comps[0].start,comps[0].end) if comps else (pos,pos)
        types = [dict(start=c.start, end=c.end, text=c.text, type=c.type, signature=c.signature) for c in comps]
        return dict(status='ok', matches=[c.text for c in comps], cursor_start=start, cursor_end=end, metadata={TYPES_KEY: types})
    line,offset = line_at_cursor(code, pos)
    txt,matches = shell.complete('', line, pos - offset)
    return dict(status='ok', matches=matches, cursor_start=pos - len(txt), cursor_end=pos, metadata={})

def inspect(shell, content):
    "inspect_request: IPython's mime inspector on the name at the cursor."
    code,pos = content['code'],content.get('cursor_pos')
    if pos is None: pos = len(code)
    omit = content.get('omit_sections') or ()
    if not isinstance(omit, (list, tuple)) or not all(isinstance(s, str) for s in omit): raise BadRequest("inspect_request: 'omit_sections' must be a list of strings")
    try: bundle = shell.object_inspect_mime(token_at_cursor(code, pos), detail_level=content.get('detail_level') or 0, omit_sections=omit)
    except KeyError: return dict(status='ok', found=False, data={}, metadata={})  # IPython's "no such object"
    if not shell.enable_html_pager: bundle.pop('text/html', None)
    return dict(status='ok', found=True, data=bundle, metadata={})

def is_complete(shell, content):
    "is_complete_request: IPython's input transformer decides complete, incomplete (with the next line's indent) or invalid."
    status,indent = shell.input_transformer_manager.check_complete(content['code'])
    reply = dict(status=status)
    if status == 'incomplete': reply['indent'] = ' ' * (indent or 0)
    return reply

NONE = type(None)
HISTORY_FIELDS = dict(hist_access_type=(str,), output=(bool,), raw=(bool,), session=(int,), start=(int,), stop=(int, NONE),
                      n=(int, NONE), pattern=(str,), unique=(bool,))

def history(source, content):
    "history_request: tail, range or search through `source`, a `history.Reader` (the parent's) or a child subshell's `ChildHistory`."
    for k,ts in HISTORY_FIELDS.items():
        v = content.get(k)
        if k in content and (not isinstance(v, ts) or (isinstance(v, bool) and bool not in ts) or (k == 'n' and v is not None and v < 0)):
            raise BadRequest(f"history_request: '{k}' must be {' or '.join('null' if t is NONE else t.__name__ for t in ts)}" + (" >= 0" if k == 'n' else ''))
    kind = content.get('hist_access_type', 'tail')
    output,raw = content.get('output', False),content.get('raw', True)
    if kind == 'tail': hist = source.get_tail(content.get('n'), raw=raw, output=output)
    elif kind == 'range':
        session = content.get('session', 0)
        # the current session's rows carry the number they were asked by (0, or the session's own), as ipykernel's do
        cur = source.session
        rows = source.get_range(session, content.get('start', 0), content.get('stop'), raw=raw, output=output)
        hist = [(session if s == cur and session in (0, cur) else s, *rest) for s,*rest in rows]
    elif kind == 'search': hist = source.search(content.get('pattern', '*'), raw=raw, output=output, n=content.get('n'), unique=content.get('unique', False))
    else: hist = []
    return dict(status='ok', history=list(hist))
