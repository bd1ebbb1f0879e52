"""stdin: `input()` and `getpass()` ask the front end with `input_request` and wait for its `input_reply`."""
import bdb, builtins, getpass, logging, sys, threading
from IPython.core.error import StdinNotImplementedError
from .streams import get_parent, current_parent, flush_files

__all__ = ['Stdin', 'DebuggerInterrupted', 'setup']
log = logging.getLogger('ipymini')

class DebuggerInterrupted(Exception):
    """An interrupt while a debugger (pdb, breakpoint(), %debug) waits for a command: it ends the cell, reported as a KeyboardInterrupt,
    and the cells queued behind it run (the user stopped the debugger, not the queue). Not a KeyboardInterrupt, which the debugger catches."""

def interrupted():
    """The exception for an interrupted input(). A debugger asking for its next command catches KeyboardInterrupt and asks again, so
    the cell would never end: the debugger quits instead, and the cell ends with the interrupt."""
    f = sys._getframe(2)
    while f is not None and not isinstance(f.f_locals.get('self'), bdb.Bdb): f = f.f_back
    if f is None: return KeyboardInterrupt("Interrupted by user")
    f.f_locals['self'].set_quit()
    return DebuggerInterrupted("Interrupted by user")

class Waiter:
    "One pending input_request: the thread asking blocks on `event` until a reply or an interrupt sets it."
    def __init__(self):
        self.event,self.value,self.interrupted,self.thread = threading.Event(),None,False,threading.get_ident()

_input,_getpass = builtins.input,getpass.getpass  # Python's own, for input() called outside a running cell

class Stdin:
    """Forwards input requests of whatever thread asks, addressed to the request current there; replies come on the stdin thread.
    As in ipykernel, only code running for an execute request that is still running asks the front end: anywhere else (a thread
    still going after its cell ended, a comm handler, startup code) `input` and `getpass` are Python's own."""
    def __init__(self, kernel):
        self.kernel,self.pending = kernel,{}  # input_request msg_id -> Waiter, oldest first
        self.running = set()  # msg_ids of the execute requests running now, on any subshell

    def in_cell(self):
        "Whether the code calling here runs for an execute request that is still running."
        parent = current_parent.get()
        return parent is not None and parent.get('msg_type') == 'execute_request' and parent.get('msg_id') in self.running

    def request(self, prompt='', password=False, caller='input'):
        "Send an input_request for the current execute request and return the reply's value."
        __tracebackhide__ = True  # tracebacks end at the user's input() call
        parent = get_parent()
        if parent is None or not parent.get('content', {}).get('allow_stdin', False):
            raise StdinNotImplementedError(f"{caller} was called, but this frontend does not support input requests.")
        k = self.kernel
        flush_files(sys.stdout, sys.stderr)
        self._iopub_barrier()
        hdr = k.wire.header('input_request')
        w = self.pending[hdr['msg_id']] = Waiter()
        # jupyter_client's stdin socket has the shell socket's identity, so the execute request's idents reach it
        k.stdin_ch.send(k.wire.serialize('input_request', dict(prompt=str(prompt), password=bool(password)), parent,
                                         idents=parent.get('idents', ()), header=hdr))
        try: w.event.wait()
        except KeyboardInterrupt: raise interrupted() from None
        finally: self.pending.pop(hdr['msg_id'], None)
        if w.interrupted: raise interrupted()
        if w.value == '\x04': raise EOFError
        return w.value

    def _iopub_barrier(self):
        "Wait until the IOPub thread has sent what is queued, so output printed before a prompt reaches the client first."
        ch = self.kernel.iopub.channel
        if not ch.is_alive() or threading.get_ident() == ch.ident: return
        done = threading.Event()
        ch.call(done.set)
        done.wait(1)

    def on_reply(self, msg):
        "input_reply, on the stdin thread: hand the value to the request it answers (the oldest pending when it names none)."
        mid = msg.get('parent_header', {}).get('msg_id')
        if mid: w = self.pending.get(mid)
        else: w = next(iter(list(self.pending.values())), None)
        if w is None: return log.warning("stdin: input_reply to no pending input_request (%s)", mid)
        value = msg['content'].get('value', '')
        if not isinstance(value, str):
            log.warning("stdin: input_reply value is %s, not a string", type(value).__name__)
            value = ''
        w.value = value
        w.event.set()

    def interrupt(self, thread=None):
        "Make pending input() calls (of thread ident `thread`, or all) raise KeyboardInterrupt."
        for w in list(self.pending.values()):
            if thread is None or w.thread == thread:
                w.interrupted = True
                w.event.set()

    def input(self, prompt=''):
        "`input` for user code: in a running cell the front end is asked for the line; elsewhere Python's own."
        __tracebackhide__ = True
        return self.request(prompt, caller='raw_input') if self.in_cell() else _input(prompt)

    def getpass(self, prompt='Password: ', stream=None):
        "`getpass.getpass` for user code: in a running cell the front end is asked for a hidden value; elsewhere Python's own."
        __tracebackhide__ = True
        return self.request(prompt, password=True, caller='getpass') if self.in_cell() else _getpass(prompt, stream)

def setup(kernel):
    kernel.stdin = st = Stdin(kernel)
    kernel.stdin_handlers['input_reply'] = st.on_reply
    kernel.before_execute.append(lambda msg: st.running.add(msg['msg_id']))
    kernel.after_execute.append(lambda msg: st.running.discard(msg['msg_id']))
    # installed once: each call resolves the request current in its thread, so a cell pays nothing for it
    builtins.input,getpass.getpass = st.input,st.getpass
