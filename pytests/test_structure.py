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

# ---- patches of objects the package does not own (the standard library's, IPython's, other packages'), and of process state ----
ENVIRON = ('os.environ.update', 'os.environ.setdefault', 'os.environ.__setitem__')
PATCH_CALLS = {'signal.signal', 'signal.set_wakeup_fd', 'faulthandler.enable', 'faulthandler.register', 'os.dup2', 'os.register_at_fork',
               'os.setpgid', 'resource.setrlimit', 'setattr', *ENVIRON}
PATCH_METHODS = ('.setStream', '.builtin_trap.__enter__', '.display_trap.__enter__')  # a logging handler's stream; IPython's traps, kept

def dotted(e):
    "`a.b.c` for a Name/Attribute chain (a subscript shows as `[...]`), else None."
    if isinstance(e, ast.Name): return e.id
    if isinstance(e, ast.Attribute): return (d := dotted(e.value)) and f'{d}.{e.attr}'
    if isinstance(e, ast.Subscript): return (d := dotted(e.value)) and f'{d}[...]'
    return None

def patches(tree):
    "What module `tree` patches: assignments to attributes of what it imported from outside the package, and the calls in PATCH_CALLS."
    outside = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import): outside |= {(a.asname or a.name).split('.')[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and not n.level: outside |= {a.asname or a.name for a in n.names}
    found = set()
    for n in ast.walk(tree):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, (ast.AugAssign, ast.AnnAssign)) else []
        for t in [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]:
            d = isinstance(t, (ast.Attribute, ast.Subscript)) and dotted(t)
            if d and d.split('.')[0].split('[')[0] in outside: found.add(d)
        if isinstance(n, ast.Call):
            f = dotted(n.func)
            if f in ENVIRON:  # named by the variables it sets
                names = [k.arg for k in n.keywords] + [a.value for a in n.args[:1] if isinstance(a, ast.Constant)]
                found.add(f"os.environ[{','.join(names)}]")
            elif f in PATCH_CALLS:
                arg = n.args and dotted(n.args[0])
                found.add(f"{f}({arg.rsplit('.', 1)[-1]})" if f in ('signal.signal', 'setattr') and arg else f)
            elif f and f.endswith(PATCH_METHODS): found.add(next(m for m in PATCH_METHODS if f.endswith(m)))
    return found

def documented():
    "The first column of DEV.md's table of patches (section 'Patches of code the kernel does not own')."
    text = (PKG.parent/'DEV.md').read_text()
    sec = text.split('## Patches of code the kernel does not own', 1)[1].split('\n## ', 1)[0]
    return {m for row in sec.splitlines() if row.startswith('| `') for m in [row.split('|')[1].strip().strip('`')]}

def test_every_patch_is_documented():
    "DEV.md lists every patch the package makes of code it does not own, with why; and only those."
    in_code = set().union(*(patches(t) for t in modules().values()))
    assert sorted(in_code - documented()) == [], "patched but not in DEV.md's table"
    assert sorted(documented() - in_code) == [], "in DEV.md's table but not in the code"

def test_patches_catches_each_kind():
    tree = ast.parse("import builtins, signal, os\nfrom concurrent.futures import ThreadPoolExecutor\nfrom . import bridge\n"
                     "builtins.input = f\nThreadPoolExecutor.submit = g\nsignal.signal(signal.SIGINT, h)\nos.environ.update(A='1')\n"
                     "bridge.x = 1\nself.y = 2\nsys_like = 3\nh.setStream(s)\nimport sys\nsys.modules['m'] = m\nsetattr(sys, 'stdout', o)")
    assert patches(tree) == {'builtins.input', 'ThreadPoolExecutor.submit', 'signal.signal(SIGINT)', 'os.environ[A]', '.setStream',
                             'sys.modules[...]', 'setattr(sys)'}
