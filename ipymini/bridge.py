"""IPython behind the protocol: the shell subclass, display hooks, and the execute/complete/inspect/history handlers."""
import os, sys, contextlib, asyncio
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.autocall import ExitAutocall
from IPython.core import page
from traitlets import Type, Any, default
from .streams import get_parent

__all__ = ['MiniShell', 'execute', 'complete', 'inspect', 'is_complete', 'history']

class MiniDisplayHook(DisplayHook):
    "Sends `execute_result` with the full mimebundle instead of printing it."
    def start_displayhook(self):
        super().start_displayhook()
        self.content = dict(data={}, metadata={}, execution_count=self.prompt_count)

    def write_output_prompt(self): self.content['execution_count'] = self.prompt_count

    def write_format_data(self, format_dict, md_dict=None):
        self.content['data'],self.content['metadata'] = format_dict,md_dict or {}

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

class MiniShell(InteractiveShell):
    "An InteractiveShell that talks to a kernel's IOPub instead of a terminal."
    displayhook_class = Type(MiniDisplayHook)
    display_pub_class = Type(MiniDisplayPublisher)
    kernel = Any(None)
    readline_use = False
    keepkernel_on_exit = False

    def init_virtualenv(self): pass  # the kernel runs in whatever environment launched it
    def init_io(self): pass  # sys.stdout/stderr are the kernel's streams already
    def _tee(self, channel):
        # IPython would wrap our stream's write to keep all stream output in memory; IOPub already delivers it
        return contextlib.nullcontext()

    @default('exiter')
    def _exiter_default(self): return KernelExitAutocall(self)

    def _showtraceback(self, etype, evalue, stb):
        content = dict(ename=getattr(etype, '__name__', str(etype)), evalue=str(evalue), traceback=stb)
        self.kernel.iopub.send('error', content, get_parent())
        self._last_traceback = stb

    def set_next_input(self, text, replace=False):
        "Ask the front end to put `text` in the next cell; one payload per execute, the last one wins."
        pm = self.payload_manager
        pm._payload = [p for p in pm._payload if p.get('source') != 'set_next_input']
        pm.write_payload(dict(source='set_next_input', text=text, replace=replace))

    def ask_exit(self):
        self.exit_now = True
        self.payload_manager.write_payload(dict(source='ask_exit', keepkernel=self.keepkernel_on_exit), single=False)

    def enable_gui(self, gui=None):
        if gui not in (None, 'inline'): print(f"ipymini has no event loop integration for {gui!r}; use %matplotlib inline", file=sys.stderr)

def _page(strng, start=0, screen_lines=0, pager_cmd=None):
    "Pager output (`?`, `??`, `help`) goes to the front end as a `page` payload."
    shell = InteractiveShell.instance()
    data = strng if isinstance(strng, dict) else {'text/plain': strng}
    shell.payload_manager.write_payload(dict(source='page', data=data, start=start))

def make_shell(kernel, user_ns=None):
    "Create the kernel's IPython shell, configured from the usual IPython config files and profile."
    os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    shell = MiniShell.instance(kernel=kernel, user_ns=user_ns)
    page.page = _page
    return shell

def _error_content(shell, err):
    return dict(status='error', ename=type(err).__name__, evalue=str(err), traceback=getattr(shell, '_last_traceback', None) or [])

async def execute(shell, content, cell_id=None):
    "Run an execute_request's code; returns the reply content."
    code,silent = content['code'],bool(content.get('silent', False))
    store_history = bool(content.get('store_history', not silent))
    shell._last_traceback = None
    try: transformed,exc = shell.transform_cell(code),None
    except Exception: transformed,exc = code,sys.exc_info()
    if shell.should_run_async(code, transformed_cell=transformed, preprocessing_exc_tuple=exc):
        res = await shell.run_cell_async(code, store_history=store_history, silent=silent, transformed_cell=transformed,
                                         preprocessing_exc_tuple=exc, cell_id=cell_id)
    else: res = shell.run_cell(code, store_history=store_history, silent=silent, cell_id=cell_id)
    err = res.error_before_exec or res.error_in_exec
    reply = dict(status='ok') if res.success else _error_content(shell, err)
    reply['execution_count'] = shell.execution_count - 1
    exprs = content.get('user_expressions') or {}
    reply['user_expressions'] = shell.user_expressions(exprs) if res.success and isinstance(exprs, dict) else {}
    reply['payload'] = shell.payload_manager.read_payload()
    shell.payload_manager.clear_payload()
    if not res.success: reply['engine_info'] = dict(engine_uuid=shell.kernel.wire.session, engine_id=0, method='execute')
    return reply

def complete(shell, content):
    code,pos = content['code'],content.get('cursor_pos')
    if pos is None: pos = len(code)
    txt,matches = shell.complete('', code, pos)
    return dict(status='ok', matches=matches, cursor_start=pos - len(txt), cursor_end=pos, metadata={})

def inspect(shell, content):
    from IPython.utils.tokenutil import token_at_cursor
    code,pos = content['code'],content.get('cursor_pos', len(content['code']))
    name = token_at_cursor(code, pos)
    try: bundle = shell.object_inspect_mime(name, detail_level=content.get('detail_level', 0))
    except Exception: bundle = None
    if not bundle: return dict(status='ok', found=False, data={}, metadata={})
    return dict(status='ok', found=True, data=bundle, metadata={})

def is_complete(shell, content):
    status,indent = shell.input_transformer_manager.check_complete(content['code'])
    reply = dict(status=status)
    if status == 'incomplete': reply['indent'] = ' ' * (indent or 0)
    return reply

def history(shell, content):
    hm,kind = shell.history_manager,content.get('hist_access_type', 'tail')
    output,raw = bool(content.get('output', False)),bool(content.get('raw', True))
    if kind == 'tail': hist = hm.get_tail(content.get('n', 10), raw=raw, output=output, include_latest=True)
    elif kind == 'range':
        hist = hm.get_range(content.get('session', 0), content.get('start', 0), content.get('stop', None), raw=raw, output=output)
    elif kind == 'search':
        hist = hm.search(content.get('pattern', '*'), raw=raw, output=output, n=content.get('n'), unique=bool(content.get('unique', False)))
    else: hist = []
    return dict(status='ok', history=list(hist))
