"""The output cache (`Out`, `_oh`, `_N`, `___`) bounded by bytes as well as by count: IPython keeps the last 1000 results
whatever their size, so thirty cells ending in a big array hold thirty arrays. Past `IPYMINI_OUTPUT_CACHE_MB` the oldest
results are dropped; `_` and `__` always stay."""
import sys
from .env import env_float

__all__ = ['result_bytes', 'OutputBound']

def result_bytes(obj, depth=2, items=1000):
    "Roughly the bytes `obj` holds: a buffer's `nbytes` (numpy, pandas, torch, memoryview), a frame's columns, else its size with its items' `depth` levels down."
    try:
        if isinstance(obj, (str, bytes, bytearray, int, float)): return sys.getsizeof(obj)
        if isinstance(getattr(type(obj), 'nbytes', None), (property, type(memoryview.nbytes))) or type(obj).__module__.startswith(('numpy', 'pandas', 'torch')):
            n = getattr(obj, 'nbytes', None)
            if isinstance(n, int): return n + sys.getsizeof(obj, 0)
        mu = getattr(type(obj), 'memory_usage', None)
        if callable(mu) and type(obj).__module__.startswith('pandas'): return int(obj.memory_usage(index=True).sum())
        n = sys.getsizeof(obj, 0)
        if depth and isinstance(obj, (list, tuple, set, frozenset, dict)):
            it = obj.items() if isinstance(obj, dict) else obj
            for i,x in enumerate(it):
                if i >= items: break
                n += sum(result_bytes(o, depth-1, items) for o in x) if isinstance(obj, dict) else result_bytes(x, depth-1, items)
        return n
    except Exception: return 0  # a result whose size cannot be told counts for nothing, as in IPython's count-only cache

class OutputBound:
    "Drops the oldest cached results of `displayhook` once the newest ones hold more than `limit` bytes; keeps the sizes it saw."
    def __init__(self, displayhook, limit=None):
        self.dh,self.sizes,self.warned = displayhook,{},False
        self.limit = int(env_float('IPYMINI_OUTPUT_CACHE_MB', 16.) * 2**20) if limit is None else limit

    def added(self, n, result):
        "Result `n` (`Out[n]`) was just cached: measure it, then drop what the bound leaves out."
        if not self.limit: return
        self.sizes[n] = result_bytes(result)
        del result
        if not self._drop(): return
        trim()  # after `_drop` returned: no frame of ours still holds a dropped result
        if not self.warned:
            self.warned = True
            print(f"ipymini: the output cache holds at most {self.limit / 2**20:g} MB of results (IPYMINI_OUTPUT_CACHE_MB); "
                  f"older ones are dropped from Out, `_` and `__` stay", file=sys.stderr)

    def _drop(self):
        ns = self.dh.shell.user_ns
        oh = ns.get('_oh', {})
        for k in [k for k in self.sizes if k not in oh]: del self.sizes[k]  # gone already: IPython's cull, `%reset out`, `del Out[k]`
        seen,total,kept,drop = set(),0,0,[]
        for k in sorted(oh, reverse=True):
            if id(oh[k]) in seen: continue  # one object under several numbers counts once
            seen.add(id(oh[k]))
            total += self.sizes.get(k, 0)
            if total > self.limit and kept >= 2: drop.append(k)
            else: kept += 1
        if not drop: return False
        keep_ids = {id(v) for k,v in oh.items() if k not in drop}
        for k in drop:
            del oh[k]
            self.sizes.pop(k, None)
            ns.pop(f'_{k}', None)
            self.dh.shell.user_ns_hidden.pop(f'_{k}', None)
        if id(self.dh.___) not in keep_ids and ns.get('___') is self.dh.___:  # `___`, unless the user set it, goes with its number
            self.dh.___ = ''
            self.dh.shell.push({'___': ''}, interactive=False)  # in user_ns_hidden too, where IPython tells its `___` from the user's
        return True

    def flushed(self):
        "`%reset out` emptied the cache: forget the sizes and give the freed memory back."
        self.sizes.clear()
        trim()

_trim = None
def trim():
    "Give memory freed in the heap back to the system (glibc's `malloc_trim`): freed results otherwise stay resident, to be reused."
    global _trim
    if _trim is None:
        try:
            import ctypes
            _trim = ctypes.CDLL(None).malloc_trim
        except (ImportError, OSError, AttributeError): _trim = False
    if _trim: _trim(0)
