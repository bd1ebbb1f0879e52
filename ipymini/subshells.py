"""Execution queues: each subshell runs its requests strictly in order on one thread's asyncio loop."""
import asyncio, logging
from collections import deque

__all__ = ['STOP_ABORTING', 'Subshell']
log = logging.getLogger('ipymini')

STOP_ABORTING = object()  # queued behind the requests to abort after an error

class Subshell:
    "A queue of shell requests run one at a time on `loop` by `kernel.process`; `submit` may be called from any thread."
    def __init__(self, kernel, sid=None, loop=None):
        self.kernel,self.sid,self.loop = kernel,sid,loop
        self.inbox,self.waiter,self.task = deque(),None,None
        self.aborting,self.cell_task,self.execution_count = False,None,0

    def submit(self, msg):
        self.inbox.append(msg)
        self.loop.call_soon_threadsafe(self._wake)

    def _wake(self):
        if self.waiter is not None and not self.waiter.done(): self.waiter.set_result(None)

    def start(self): self.task = self.loop.create_task(self.run())

    async def run(self):
        while True:
            if not self.inbox:
                self.waiter = self.loop.create_future()
                await self.waiter
                continue
            msg = self.inbox.popleft()
            if msg is STOP_ABORTING: self.aborting = False
            else:
                try: await self.kernel.process(self, msg)
                except Exception: log.exception("error processing %s", msg.get('msg_type'))

    def abort_queued(self, timeout=0.):
        "After an error: abort the execute requests received so far (and for `timeout` seconds more)."
        self.aborting = True
        stop = lambda: self.submit(STOP_ABORTING)
        if timeout > 0: self.loop.call_later(timeout, stop)
        else: self.kernel.shell_ch.call(stop)
