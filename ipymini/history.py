"""history_request, read safely from any thread and on every IPython the package admits.

The requests are answered on the shell thread, also while a cell runs. IPython's HistoryManager is not safe to read from there:
its sqlite connection belongs to the main thread (IPython before 9 opens it without `check_same_thread=False`), and each of its
reading methods treats any sqlite error, a thread check or a lock among them, as a corrupt database and renames the user's
file to `history-corrupt-*.sqlite`. So this module never touches that connection or those methods: the current session comes
from IPython's in-memory input lists, which hold every cell of it, and earlier sessions from a read-only connection of its
own, opened per request. An error there is the request's error reply; the database is never moved or written."""
import contextlib, fnmatch, sqlite3, urllib.parse
from pathlib import Path

__all__ = ['Reader', 'HistoryUnavailable']

class HistoryUnavailable(RuntimeError): "The history database could not be read; the reply names why."

class Reader:
    "Reads history for `hm`, an IPython HistoryManager: this session from its memory, earlier ones from its database file."
    def __init__(self, hm): self.hm = hm

    @property
    def session(self): return self.hm.session_number

    def _memory(self, raw, output, start=1, stop=None):
        "This session's rows, line `start` up to `stop` (excluded), as (session, line, input or (input, output))."
        hm = self.hm
        hist,outs = (hm.input_hist_raw if raw else hm.input_hist_parsed)[:],hm.output_hist_reprs
        stop = len(hist) if stop is None else min(stop, len(hist))
        return [(self.session, i, (hist[i], outs.get(i)) if output else hist[i]) for i in range(max(start, 1), stop)]

    def _db(self, where, params, raw, output):
        "Rows of earlier sessions from the database: `where` filters them (the current session is always left out)."
        path = getattr(self.hm, 'hist_file', None)
        if not getattr(self.hm, 'enabled', True) or path is None or str(path) == ':memory:' or not Path(path).is_file(): return []
        src = 'history.source_raw' if raw else 'history.source'
        cols = f"{src}, output_history.output" if output else src
        sql = (f"SELECT history.session, history.line, {cols} FROM history" +
               (" LEFT JOIN output_history USING (session, line)" if output else "") + f" WHERE history.session != ? {where}")
        uri = 'file:' + urllib.parse.quote(str(Path(path).resolve())) + '?mode=ro'
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)) as db:
                rows = db.execute(sql, (self.session, *params)).fetchall()
        except sqlite3.Error as e: raise HistoryUnavailable(f"cannot read the history database {path}: {e}") from None
        return [(s, l, (i, o)) for s,l,i,o in rows] if output else [tuple(r) for r in rows]

    def get_tail(self, n=10, raw=True, output=False):
        "The last `n` cells, oldest first: this session's, then earlier sessions' as far as needed."
        if n is None: n = 10
        rows = self._memory(raw, output)[-n:] if n else []
        if len(rows) < n:
            rows = self._db("ORDER BY history.session DESC, history.line DESC LIMIT ?", (n - len(rows),), raw, output)[::-1] + rows
        return rows

    def get_range(self, session=0, start=1, stop=None, raw=True, output=False):
        "Cells `start` to `stop` (excluded) of `session`: 0 or this session's number is this one, a negative number counts back from it."
        if session <= 0: session += self.session
        if session == self.session:
            n = len(self.hm.input_hist_raw)
            if start < 0: start += n
            if stop is not None and stop < 0: stop += n
            return self._memory(raw, output, start, stop or None)
        where,params = ("AND history.session == ? AND history.line >= ?", (session, start))
        if stop: where,params = where + " AND history.line < ?",params + (stop,)
        return self._db(where + " ORDER BY history.line", params, raw, output)

    def search(self, pattern='*', raw=True, search_raw=True, output=False, n=None, unique=False):
        """Cells whose input matches glob `pattern`, oldest first (this session's matched with fnmatch, which reads `[!x]` where sqlite's
        GLOB reads `[^x]`); `unique`: the latest of each input; `n`: the last `n`."""
        col = 'source_raw' if search_raw else 'source'
        rows = self._db(f"AND history.{col} GLOB ? ORDER BY history.session, history.line", (pattern,), raw, output)
        mine = self._memory(search_raw, False)
        found = {line for _,line,text in mine if fnmatch.fnmatchcase(text, pattern)}
        rows += [r for r in self._memory(raw, output) if r[1] in found]
        if unique:
            latest = {(r[2][0] if output else r[2]): r for r in rows}  # later rows replace earlier ones with the same input
            rows = sorted(latest.values(), key=lambda r: r[:2])
        if n is None: return rows
        return rows[-n:] if n else []
