"""Comms: the `comm` package's Comm and CommManager for this kernel, so that `comm.create_comm` and ipywidgets work."""
import logging
import comm
from comm.base_comm import BaseComm, CommManager
from .streams import get_parent
from . import bridge
from .wire import error_content

__all__ = ['Comm', 'Manager', 'setup']
log = logging.getLogger('ipymini')

class Comm(BaseComm):
    "A comm whose messages go out on IOPub, parented to the request current where they are sent."
    kernel = None  # set by `setup`; ipywidgets checks it to know a kernel is there

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        content = dict(data={} if data is None else data, comm_id=self.comm_id, **keys)
        # copied: the IOPub thread sends later, and the caller may reuse its memory meanwhile
        bufs = [b if isinstance(b, bytes) else bytes(b) for b in buffers or ()]
        self.kernel.iopub.send(msg_type, content, get_parent(), metadata, buffers=bufs)

def _for_handlers(msg):
    "The message as comm callbacks expect it: buffers as memoryviews (ipywidgets calls `.tobytes()` on them)."
    return {**msg, 'buffers': [memoryview(b) for b in msg.get('buffers') or ()]}

def _checked(msg, *fields):
    "True when the content's `fields` are strings; a bad message is logged and dropped (comm messages have no reply)."
    bad = [f for f in fields if not isinstance(msg['content'].get(f), str)]
    if bad: log.warning("shell: dropped %s: %s must be a string", msg['msg_type'], ', '.join(bad))
    return not bad

class Manager(CommManager):
    "The kernel's comms and targets; client comm messages run in order with executes, on the subshell that received them."
    async def on_open(self, sub, msg):
        if _checked(msg, 'comm_id', 'target_name'): self.comm_open(None, None, _for_handlers(msg))

    async def on_msg(self, sub, msg):
        if _checked(msg, 'comm_id'): self.comm_msg(None, None, _for_handlers(msg))

    async def on_close(self, sub, msg):
        if _checked(msg, 'comm_id'): self.comm_close(None, None, _for_handlers(msg))

    def info(self, msg):
        "comm_info_request, on the shell thread: the open comms, of one target when `target_name` is given."
        target = msg['content'].get('target_name')
        if target is not None and not isinstance(target, str):
            return error_content('BadRequest', "comm_info_request: 'target_name' must be a string")
        comms = {cid: dict(target_name=c.target_name) for cid,c in list(self.comms.items()) if target is None or c.target_name == target}
        return dict(status='ok', comms=comms)

def setup(kernel):
    Comm.kernel = kernel
    kernel.comm_manager = mgr = Manager()
    comm.create_comm = Comm
    comm.get_comm_manager = lambda: mgr
    kernel.queued_handlers.update(comm_open=mgr.on_open, comm_msg=mgr.on_msg, comm_close=mgr.on_close)
    kernel.shell_handlers['comm_info_request'] = mgr.info
    # bokeh and matplotlib's nbagg import the comm class from ipykernel
    bridge.ipykernel_module('ipykernel.comm', Comm=Comm, CommManager=Manager)
