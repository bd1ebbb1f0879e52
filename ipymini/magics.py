"""The magics ipykernel adds to IPython's: %connect_info, %qtconsole, %autosave, %edit (%ed), %clear, %less, %more, %man, %subshell;
and %gui and %matplotlib, whose failure to load a toolkit is one UsageError line in the cell (IPython's %gui logs it, which a kernel's
user may never see, and %matplotlib shows a traceback)."""
import importlib.util, json, os, subprocess, sys, threading
from pathlib import Path
from IPython.core import page
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magics import CodeMagics, MacroToEdit
from IPython.core.magics.basic import BasicMagics
from IPython.core.magics.pylab import PylabMagics
from IPython.utils import openpy
from IPython.utils.process import arg_split

__all__ = ['KernelMagics', 'setup']

@magics_class
class KernelMagics(Magics):
    "Magics for a shell behind a kernel: pagers and editors belong to the front end, and other clients may attach."
    kernel = None

    @line_magic
    def gui(self, parameter_s=''):
        _,arg = self.parse_options(parameter_s, '')
        self.shell.enable_gui(arg or None)
    gui.__doc__ = BasicMagics.gui.__doc__

    @line_magic
    def matplotlib(self, line=''):
        before = self.shell.pylab_gui_select
        try: return self.shell.magics_manager.registry['PylabMagics'].matplotlib(line)
        except ImportError as e:  # matplotlib's: the toolkit is missing, or no display for it
            self.shell.pylab_gui_select = before  # a toolkit that failed to load is not the session's choice
            raise UsageError(f"%matplotlib {line.strip()}: {e}") from None
    matplotlib.__doc__ = PylabMagics.matplotlib.__doc__

    @line_magic
    def edit(self, parameter_s='', last_call=None):
        """Ask the front end to open a file in its editor: `%edit name` (an object's source file, at its line), `%edit file.py`, `%edit 1-5`
        (history lines, in a new file). Options as in IPython's %edit: -n LINE, -p (what the last %edit opened), -r (raw history).
        The edited code is not run when the editor closes: the kernel cannot tell when that is."""
        opts,args = self.parse_options(parameter_s, 'prn:')
        try: filename,lineno,_ = CodeMagics._find_edit_target(self.shell, args, opts, last_call or ['', ''])
        except MacroToEdit: return print("%edit cannot edit a macro through a front end: print the macro and edit its text in a cell")
        # an absolute path: the front end's working directory may not be the kernel's
        self.shell.payload_manager.write_payload(dict(source='edit_magic', filename=str(Path(filename).resolve()), line_number=lineno))

    @line_magic
    def clear(self, arg_s):
        "Clear the terminal (of a console front end)."
        self.shell.system('clear' if os.name == 'posix' else 'cls')

    @line_magic
    def less(self, arg_s):
        "Show a file in the front end's pager; .py files are syntax-highlighted."
        if not arg_s: raise UsageError("Missing filename.")
        if arg_s.endswith('.py'): text = self.shell.pycolorize(openpy.read_py_file(arg_s, skip_encoding_cookie=False))
        else: text = Path(arg_s).read_text()
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
        try: info = Path(cf).read_text()
        except (OSError, TypeError) as e: return print(f"cannot read the connection file {cf!r}: {e}", file=sys.stderr)
        from jupyter_core.paths import jupyter_runtime_dir
        name = Path(cf).name if str(Path(cf).resolve().parent) == str(Path(jupyter_runtime_dir()).resolve()) else cf
        print(info + "\n")
        print(f"Paste the above JSON into a file, and connect with:\n    $> jupyter <app> --existing <file>\nor, if you are local, "
              f"you can connect with just:\n    $> jupyter <app> --existing {name}\nor even just:\n    $> jupyter <app> --existing\n"
              f"if this is the most recent Jupyter kernel you have started.")

    @line_magic
    def qtconsole(self, arg_s):
        "Open a Jupyter QtConsole attached to this kernel (extra arguments go to its command line)."
        cf = getattr(self.kernel, 'connection_file', None)
        if importlib.util.find_spec('qtconsole') is None: return print("%qtconsole: qtconsole is not installed (pip install qtconsole)", file=sys.stderr)
        if not cf: return print("%qtconsole: this kernel has no connection file to attach to", file=sys.stderr)
        # a session of its own: interrupting the kernel's process group must not reach the console
        subprocess.Popen([sys.executable, '-c', 'from qtconsole.qtconsoleapp import main; main()', '--existing', cf, *arg_split(arg_s, os.name == 'posix')],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

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
        from .subshells import running_subshell
        k = self.kernel
        sub = running_subshell(k)
        print(f"subshell id: {sub.sid if sub is not None else 'unknown'}")
        print(f"thread id: {threading.get_ident()}")
        print(f"main thread id: {threading.main_thread().ident}")
        print(f"pid: {os.getpid()}")
        print(f"thread count: {threading.active_count()}")
        print(f"subshell list: {list(getattr(k, 'subshells', {}))}")

def setup(kernel):
    "Register the kernel magics on the kernel's shell, as ipykernel's shell has them."
    magics = KernelMagics(kernel.shell)
    magics.kernel = kernel
    kernel.shell.register_magics(magics)
    kernel.shell.magics_manager.register_alias('ed', 'edit')
