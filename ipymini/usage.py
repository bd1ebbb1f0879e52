"""`usage_request` on control: host and kernel CPU and memory, in the shape jupyter-resource-usage reads (needs psutil)."""
import os, socket, time

__all__ = ['setup']

class _Usage:
    "Keeps psutil's Process objects between requests: CPU percentages are measured from one call to the next."
    def __init__(self): self.procs,self.primed = {},False

    def __call__(self, msg):
        try: import psutil
        except ImportError: raise ModuleNotFoundError("usage_request needs psutil, which is not installed (pip install psutil)") from None
        me = psutil.Process()
        try: kids = me.children(recursive=True)
        except psutil.Error: kids = []
        self.procs = {p.pid: self.procs.get(p.pid, p) for p in [me, *kids]}
        if not self.primed:  # the first cpu_percent of each counter means nothing: take a short sample once
            psutil.cpu_percent()
            for p in self.procs.values(): _metric(p, 'cpu_percent')
            self.primed = True
            time.sleep(0.05)
        mem = 'pss' if hasattr(me.memory_full_info(), 'pss') else 'rss'
        res = dict(status='ok', hostname=socket.gethostname(), pid=os.getpid(), cpu_count=psutil.cpu_count(logical=True),
                   kernel_cpu=sum(_metric(p, 'cpu_percent') for p in self.procs.values()),
                   kernel_memory=sum(_metric(p, 'memory_full_info', mem) for p in self.procs.values()),
                   host_virtual_memory=psutil.virtual_memory()._asdict())
        host_cpu = psutil.cpu_percent()
        if host_cpu: res['host_cpu_percent'] = host_cpu  # 0.0 means "no sample yet" to psutil; the front end hides a missing one
        return res

def _metric(proc, name, field=None):
    "One number from a process that may have exited meanwhile (then 0)."
    try: v = getattr(proc, name)()
    except Exception: return 0
    return getattr(v, field) if field else v

def setup(kernel): kernel.control_handlers['usage_request'] = _Usage()
