"""The magics ipykernel adds to IPython's: %connect_info, %qtconsole, %autosave, %edit (%ed), %clear, %less, %more, %man, %subshell;
and %gui and %matplotlib, whose failure to load a toolkit is one UsageError line in the cell (IPython's %gui logs it, which a kernel's
user may never see, and %matplotlib shows a traceback)."""
import os, sys, threading
from IPython.core import page
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

__all__ = ['KernelMagics', 'setup']

@magics_class
class KernelMagics(Magics):
    "Magics for a shell behind a kernel: pagers and editors belong to the front end, and other clients may attach."
    kernel = None

    @line_magic
    def gui(self, parameter_s=''):
        """Run a GUI toolkit's event loop whenever no cell runs, so its windows and timers stay alive: `%gui qt` (or qt5, qt6),
        `%gui tk`, `%gui gtk3` (gtk, gtk4), `%gui wx`. `%gui` alone turns it off; `%gui asyncio` needs nothing (the kernel's loop
        is asyncio's). A toolkit that cannot load is one UsageError line."""
        _,arg = self.parse_options(parameter_s, '')
        self.shell.enable_gui(arg or None)

    _pylab = None
    @line_magic
    def matplotlib(self, line=''):
        """IPython's %matplotlib (`%matplotlib -l` lists the backends): `inline` draws figures into the cell, `qt` or `tk` opens
        windows (with `%gui` of that toolkit), `widget`/`ipympl` draws in the front end. A toolkit that cannot load is one UsageError
        line, and is not kept as the session's choice."""
        if self._pylab is None:
            from IPython.core.magics.pylab import PylabMagics  # loaded at first use, as IPython loads its own magics
            self._pylab = PylabMagics(self.shell)
        before,arg = self.shell.pylab_gui_select,(line.split() or [''])[-1].lower()
        if arg.startswith('qt'):  # before matplotlib switches to a Qt backend, whose first figure would abort a Qt that cannot start
            from .eventloops import check_qt
            try: check_qt(arg if arg in ('qt5', 'qt6') else 'qt')
            except ImportError: pass  # no Qt binding: matplotlib says so
            except RuntimeError as e: raise UsageError(f"%matplotlib {line.strip()}: {e}") from None
        try: return self._pylab.matplotlib(line)
        except ImportError as e:  # matplotlib's: the toolkit is missing, or there is no display for it
            self.shell.pylab_gui_select = before
            raise UsageError(f"%matplotlib {line.strip()}: {e}") from None

    @line_magic
    def edit(self, parameter_s='', last_call=None):
        """Ask the front end to open a file in its editor: `%edit name` (an object's source file, at its line), `%edit file.py`, `%edit 1-5`
        (history lines, in a new file). Options as in IPython's %edit: -n LINE, -p (what the last %edit opened), -r (raw history).
        The edited code is not run when the editor closes: the kernel cannot tell when that is."""
        from IPython.core.magics import CodeMagics, MacroToEdit
        opts,args = self.parse_options(parameter_s, 'prn:')
        try: filename,lineno,_ = CodeMagics._find_edit_target(self.shell, args, opts, last_call or ['', ''])
        except MacroToEdit: return print("%edit cannot edit a macro through a front end: print the macro and edit its text in a cell")
        # an absolute path: the front end's working directory may not be the kernel's
        self.shell.payload_manager.write_payload(dict(source='edit_magic', filename=os.path.realpath(filename), line_number=lineno))

    @line_magic
    def clear(self, arg_s):
        "Clear the terminal (of a console front end)."
        self.shell.system('clear' if os.name == 'posix' else 'cls')

    @line_magic
    def less(self, arg_s):
        "Show a file in the front end's pager; .py files are syntax-highlighted."
        if not arg_s: raise UsageError("Missing filename.")
        if arg_s.endswith('.py'):
            from IPython.utils import openpy
            text = self.shell.pycolorize(openpy.read_py_file(arg_s, skip_encoding_cookie=False))
        else:
            with open(arg_s) as f: text = f.read()
        page.page(text)

    more = line_magic('more')(less)

    if os.name == 'posix':
        @line_magic
        def man(self, arg_s):
            "Show the man page of a command in the front end's pager."
            page.page(self.shell.getoutput(f'man {arg_s} | col -b', split=False))

    @line_magic
    def connect_info(self, arg_s):
        "Print this kernel's connection file and how another client (e.g. `jupyter console --existing`) attaches to it."
        cf = getattr(self.kernel, 'connection_file', None)
        try:
            with open(cf) as f: info = f.read()
        except (OSError, TypeError) as e: return print(f"cannot read the connection file {cf!r}: {e}", file=sys.stderr)
        from jupyter_core.paths import jupyter_runtime_dir
        # in the runtime folder, where `--existing` looks, its name is enough
        name = os.path.basename(cf) if os.path.dirname(os.path.realpath(cf)) == os.path.realpath(jupyter_runtime_dir()) else cf
        print(info + "\n")
        print(f"Paste the above JSON into a file, and connect with:\n    $> jupyter <app> --existing <file>\nor, if you are local, "
              f"you can connect with just:\n    $> jupyter <app> --existing {name}\nor even just:\n    $> jupyter <app> --existing\n"
              f"if this is the most recent Jupyter kernel you have started.")

    @line_magic
    def qtconsole(self, arg_s):
        "Open a Jupyter QtConsole attached to this kernel (extra arguments go to its command line)."
        import importlib.util, subprocess
        from IPython.utils.process import arg_split
        cf = getattr(self.kernel, 'connection_file', None)
        if importlib.util.find_spec('qtconsole') is None:
            return print("%qtconsole: qtconsole is not installed (pip install qtconsole)", file=sys.stderr)
        if not cf: return print("%qtconsole: this kernel has no connection file to attach to", file=sys.stderr)
        # a session of its own: interrupting the kernel's process group must not reach the console
        cmd = [sys.executable, '-c', 'from qtconsole.qtconsoleapp import main; main()', '--existing', cf, *arg_split(arg_s, os.name == 'posix')]
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    @line_magic
    def autosave(self, arg_s):
        """Set the classic notebook's autosave interval, in seconds (`%autosave 0` turns it off); other front ends ignore it."""
        try: interval = int(arg_s)
        except ValueError: raise UsageError(f"%autosave requires an integer, got {arg_s!r}") from None
        from IPython.display import Javascript, display
        display(Javascript(f"IPython.notebook.set_autosave_interval({1000 * interval})"), include=['application/javascript'])
        print(f"Autosaving every {interval} seconds" if interval else "Autosave disabled")

    @line_magic
    def subshell(self, arg_s):
        "Print the subshell this cell runs in (JEP 91), its thread, and the kernel's subshells."
        k = self.kernel
        sub = k.subshells.running()
        print(f"subshell id: {sub.sid if sub is not None else 'unknown'}")
        print(f"thread id: {threading.get_ident()}")
        print(f"main thread id: {threading.main_thread().ident}")
        print(f"pid: {os.getpid()}")
        print(f"thread count: {threading.active_count()}")
        print(f"subshell list: {list(k.subshells.by_id)}")

def setup(kernel):
    "Register the kernel magics on the kernel's shell, as ipykernel's shell has them."
    magics = KernelMagics(kernel.shell)
    magics.kernel = kernel
    kernel.shell.register_magics(magics)
    kernel.shell.magics_manager.register_alias('ed', 'edit')
