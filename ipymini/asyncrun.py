"""`asyncio.run()` in a cell: run as in a script, in a fresh event loop, while the kernel's own loop waits for the cell.

A cell runs inside the kernel's asyncio loop, so the standard `asyncio.run` refuses ("cannot be called from a running event
loop"). Called from a cell, it runs the coroutine to completion in a new loop on the same thread, with the kernel's loop set
aside for that time, exactly as a synchronous call in a script blocks: the result or exception comes back, the loop is closed,
async generators and the default executor are shut down. The coroutine and its tasks run in a copy of the cell's context, so
their output goes to the cell. Anywhere else (a thread of the user's, a coroutine already under `asyncio.run`, a forked child)
it is the standard `asyncio.run`."""
import asyncio, threading
from asyncio import events
from .channels import Loop
from .env import env_flag

__all__ = ['run', 'wake', 'setup']

_run = asyncio.run
nested_loops = {}  # thread ident -> the loop `run` runs there now: an interrupt of that thread wakes it

def run(main, **kwargs):
    "`asyncio.run(main)`, which also works in a cell: see the module's docstring."
    kernel_loop = events._get_running_loop()
    if not isinstance(kernel_loop, Loop): return _run(main, **kwargs)  # not in a cell: the standard behaviour, errors included
    me = threading.get_ident()
    events._set_running_loop(None)
    try:
        with asyncio.Runner(**kwargs) as runner:
            nested_loops[me] = runner.get_loop()
            return runner.run(main)
    finally:
        nested_loops.pop(me, None)
        events._set_running_loop(kernel_loop)
        events.set_event_loop(kernel_loop)  # the runner cleared the thread's loop when it closed

def wake(ident):
    "Wake the loop `run` runs on thread `ident`, if any: an exception set asynchronously in that thread lands once it leaves select()."
    loop = nested_loops.get(ident)
    if loop is not None and not loop.is_closed():
        try: loop.call_soon_threadsafe(lambda: None)
        except RuntimeError: pass  # closed meanwhile

def setup(kernel):
    "Install `run` as `asyncio.run`, unless IPYMINI_ASYNCIO_RUN=0."
    if env_flag('IPYMINI_ASYNCIO_RUN', True): asyncio.run = asyncio.runners.run = run
