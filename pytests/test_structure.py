"""The package's shape: imports run one way (no cycle), and no module rebinds another module's functions or the Kernel's methods
(optional parts plug in through the Kernel's hook points)."""
import ast, inspect, pathlib
import ipymini
from ipymini.kernel import Kernel

PKG = pathlib.Path(ipymini.__file__).parent

def modules(): return {f.stem: ast.parse(f.read_text(), str(f)) for f in sorted(PKG.glob('*.py'))}

def imports(tree):
    "The package's modules `tree` imports, anywhere in it (`from . import x`, `from .x import y`)."
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.level == 1:
            out |= {n.module.split('.')[0]} if n.module else {a.name for a in n.names if (PKG/f'{a.name}.py').exists()}
    return out

def find_cycle(graph):
    "A list of modules that import each other in a ring, or None."
    done,path = set(),[]
    def visit(m):
        if m in path: return path[path.index(m):] + [m]
        if m in done: return None
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if (c := visit(d)): return c
        path.pop()
        done.add(m)
    return next((c for m in sorted(graph) if (c := visit(m))), None)

def test_no_import_cycle():
    graph = {m: imports(t) - {m} for m,t in modules().items()}
    assert graph['kernel'] >= {'subshells', 'interrupts', 'bridge'} and not [m for m,ds in graph.items() if 'kernel' in ds and m != '__main__']
    assert find_cycle(graph) is None, find_cycle(graph)

def test_find_cycle_finds_one():
    assert find_cycle(dict(a={'b'}, b={'c'}, c={'a'})) == ['a', 'b', 'c', 'a'] and find_cycle(dict(a={'b'}, b=set())) is None

METHODS = {n for n,v in vars(Kernel).items() if inspect.isfunction(v)}

def is_kernel(e):
    "Whether expression `e` names the Kernel as the parts hold it: `kernel`, `k` or `self.kernel`."
    return (isinstance(e, ast.Name) and e.id in ('kernel', 'k')) or (isinstance(e, ast.Attribute) and e.attr == 'kernel')

def rebinds(tree, own):
    "Assignments in `tree` to a method of the Kernel, or to an attribute of another of the package's modules."
    mods = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and not n.module for a in n.names}
    found = []
    for n in ast.walk(tree):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, (ast.AugAssign, ast.AnnAssign)) else []
        for t in [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]:
            if not isinstance(t, ast.Attribute): continue
            if t.attr in METHODS and is_kernel(t.value): found.append((n.lineno, t.attr))
            if isinstance(t.value, ast.Name) and t.value.id in mods - {own}: found.append((n.lineno, f'{t.value.id}.{t.attr}'))
        if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'setattr' and isinstance(n.args[0], ast.Name) and n.args[0].id in mods:
            found.append((n.lineno, 'setattr'))
    return found

def test_no_module_rebinds_kernel_methods_or_other_modules():
    assert {m: r for m,t in modules().items() if (r := rebinds(t, m))} == {}

def test_rebinds_catches_both_kinds():
    tree = ast.parse("from . import bridge\ndef setup(kernel):\n    kernel.on_shell = None\n    bridge.execute = None\n    kernel.fine = 1")
    assert rebinds(tree, 'other') == [(3, 'on_shell'), (4, 'bridge.execute')]
