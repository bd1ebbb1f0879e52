"""Memory near the limit: the running cell gets a MemoryError naming the memory in use and the limit, and the kernel lives on,
where the out-of-memory killer would end it. The limit is `IPYMINI_MEMORY_LIMIT` ('2G', '512M', '100k', bytes; '0' or 'off': none),
else `SHARE` of the memory cgroup's (v2 `memory.max`, v1 `memory.limit_in_bytes`, the tightest over the kernel's cgroup and its
parents). At start and before each execute, the soft RLIMIT_DATA becomes what the process maps now plus what the limit leaves of
its resident memory: an allocation past it fails in C, as malloc failing, and Python raises MemoryError where it happened."""
import os, re, logging
from .outcache import trim
try: import resource
except ImportError: resource = None  # Windows

__all__ = ['parse_size', 'memory_cgroups', 'cgroup_limit', 'fmt', 'MemLimit', 'setup']
log = logging.getLogger('ipymini')

SHARE = 0.9  # of the cgroup's limit: the cell gets its MemoryError before the out-of-memory killer comes
RESERVE = 32 << 20  # room a cell always gets, and the error's report, even when what the cells hold is at the limit
NO_LIMIT = 1 << 62  # v1 tells "no limit" as the largest page-aligned long (9223372036854771712)
UNITS = dict(k=1 << 10, m=1 << 20, g=1 << 30, t=1 << 40)
PAGE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096

def parse_size(v):
    "Bytes in '2G', '512M', '1.5g', '100k', '2GB', '123' (units of 1024); None for '0' or 'off'; ValueError for anything else."
    s = v.strip().lower()
    if s == 'off': return None
    m = re.fullmatch(r'(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])i?)?b?', s)
    if not m: raise ValueError(v)
    return int(float(m[1]) * UNITS.get(m[2], 1)) or None

def fmt(n):
    "`n` bytes for a person: '1.9 GB', '512.0 MB', '100 kB'."
    if n >= 1 << 30: return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.1f} MB" if n >= 1 << 20 else f"{n / 2**10:.0f} kB"

def _read(path):
    try:
        with open(path) as f: return f.read()
    except OSError: return None

def _unescape(s): return re.sub(r'\\([0-7]{3})', lambda m: chr(int(m[1], 8)), s)  # mountinfo writes ' ' as '\040'

def memory_cgroups(proc='/proc/self'):
    "(folder, its hierarchy's mount point, whether v2) of each memory cgroup the process at `proc` is in, from its cgroup and mountinfo."
    rows = [l.split(':', 2) for l in (_read(f'{proc}/cgroup') or '').splitlines() if l.count(':') >= 2]
    v1 = next((p for _,c,p in rows if 'memory' in c.split(',')), None)
    v2 = next((p for h,c,p in rows if h == '0' and c == ''), None)
    for line in (_read(f'{proc}/mountinfo') or '').splitlines():
        pre,_,post = line.partition(' - ')
        f,g = pre.split(),post.split()
        if len(f) < 5 or len(g) < 3: continue
        root,point,fs,opts = _unescape(f[3]),_unescape(f[4]),g[0],g[2].split(',')
        if fs == 'cgroup' and 'memory' in opts and v1 is not None: path,is2 = v1,False
        elif fs == 'cgroup2' and v2 is not None: path,is2 = v2,True
        else: continue
        if root != '/' and path != root and not path.startswith(root + '/'): continue  # a mount of another part of the tree
        yield os.path.normpath(point + '/' + (path[len(root):] if root != '/' else path)),os.path.normpath(point),is2

def cgroup_limit(proc='/proc/self'):
    "(bytes, file) of the tightest memory limit over the cgroup of the process at `proc` and its parents; None where none is set."
    for d,point,is2 in memory_cgroups(proc):
        knob,found = 'memory.max' if is2 else 'memory.limit_in_bytes',None
        while True:  # each parent's limit holds for its children too
            v = (_read(os.path.join(d, knob)) or '').strip()
            if v.isdigit() and int(v) < NO_LIMIT and (found is None or int(v) < found[0]): found = int(v),os.path.join(d, knob)
            if d == point or len(d) <= 1: break
            d = os.path.dirname(d)
        if found: return found
    return None

class MemLimit:
    "The soft RLIMIT_DATA that keeps the kernel's resident memory within `limit` bytes; `source` says where the limit came from."
    def __init__(self, limit, source, prev=None, reserve=RESERVE):
        "`prev`: IPython's handler of the custom exceptions set before, which keeps them."
        self.limit,self.source,self.prev,self.reserve = limit,source,prev,min(reserve, max(limit // 16, 1 << 20))
        soft,self.hard = resource.getrlimit(resource.RLIMIT_DATA)
        # a soft limit set before the kernel started (`ulimit -d`) stays the ceiling
        self.cap = min(x for x in (soft, self.hard, NO_LIMIT) if x != resource.RLIM_INFINITY)
        self.fd = os.open('/proc/self/statm', os.O_RDONLY | os.O_CLOEXEC)
        self.failed = False

    def usage(self):
        "(bytes mapped as data, as RLIMIT_DATA counts them; resident bytes) of this process now."
        f = os.pread(self.fd, 128, 0).split()
        return int(f[5]) * PAGE,int(f[1]) * PAGE

    def arm(self, room=None):
        "The soft limit: what is mapped now plus `room` (default: what the limit leaves of the resident memory, at least `reserve`)."
        try:
            data,rss = self.usage()
            if room is None and rss > self.limit * 3 // 4:  # freed memory counts as in use until it is given back
                trim()
                data,rss = self.usage()
            if room is None: room = max(self.limit - rss, self.reserve)
            resource.setrlimit(resource.RLIMIT_DATA, (min(data + room, self.cap), self.hard))
        except (OSError, ValueError) as e:
            if not self.failed: log.warning("cannot set the memory limit: %s", e)
            self.failed = True

    def before_execute(self, msg): self.arm()

    def message(self, value):
        "The error's text: the memory in use, the limit and where it came from, then what the allocation said, if anything."
        try: rss = self.usage()[1]
        except OSError: rss = 0
        said = str(value)
        return f"cell needed more memory: {fmt(rss)} in use of the {fmt(self.limit)} limit ({self.source})" + (f"; {said}" if said else '')

    def show(self, shell, etype, value, tb, tb_offset=None):
        "IPython's handler for a MemoryError out of a cell: the error, renamed to say what the limit is, shown as IPython shows errors."
        if not issubclass(etype, MemoryError): return self.prev(etype, value, tb, tb_offset=tb_offset)
        self.arm(self.reserve)  # room to report it, whatever the cell still holds; the next execute sets the limit again
        err = MemoryError(self.message(value)).with_traceback(tb)  # a new one: numpy's MemoryError makes its text from its fields
        err.__cause__,err.__context__,err.__suppress_context__ = value.__cause__,value.__context__,value.__suppress_context__
        res = shell.displayhook.exec_result
        if res is not None and res.error_in_exec is value: res.error_in_exec = err  # the reply's ename and evalue
        shell.showtraceback((MemoryError, err, tb), tb_offset=tb_offset)

def limit_from_env():
    """(bytes, source, cgroup file) of the limit in effect, or None: `IPYMINI_MEMORY_LIMIT`, else the cgroup's; a bad setting is
    logged and ignored."""
    v = os.environ.get('IPYMINI_MEMORY_LIMIT', '').strip()
    if v and v.lower() != 'auto':
        try: n = parse_size(v)
        except ValueError: log.warning("IPYMINI_MEMORY_LIMIT=%r is not a size such as 2G, 512M or 0: using the cgroup's limit, if any", v)
        else: return (n, 'IPYMINI_MEMORY_LIMIT', None) if n else None
    found = cgroup_limit()
    if not found: return None
    n,path = found
    return int(n * SHARE),f"{SHARE:.0%} of the {fmt(n)} {os.path.basename(path)} of the kernel's cgroup",path

def setup(kernel):
    "When a limit is in effect: the soft RLIMIT_DATA set now and before each execute, and a cell's MemoryError told as such."
    if not hasattr(resource, 'RLIMIT_DATA') or not os.path.exists('/proc/self/statm'): return  # Linux's
    found = limit_from_env()
    if not found: return
    shell,(n,source,path) = kernel.shell,found
    kernel.interrupts.report()  # IPython has one handler for its custom exceptions: the interrupts' first, then ours beside them
    excs = shell.custom_exceptions
    if MemoryError in excs: return log.warning("a handler of MemoryError is set already: the memory limit is off")
    ml = MemLimit(n, source, shell.CustomTB)
    log.info("memory limit %s (%s)", fmt(n), path or source)
    shell.set_custom_exc(tuple(excs) + (MemoryError,), ml.show)
    ml.arm()
    kernel.before_execute.append(ml.before_execute)
