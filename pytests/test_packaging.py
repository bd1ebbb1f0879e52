"""The wheel and sdist as built: LICENSE and the kernelspec inside, no tests or caches; runtime dependencies are what ipymini imports."""
import ast, re, subprocess, sys, tarfile, tomllib, zipfile
from importlib.metadata import packages_distributions
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent
CACHES = re.compile(r'(^|/)(__pycache__|\.pytest_cache|\.hypothesis|\.venv|\.git|dist|build|node_modules)/|\.pyc$|\.egg-info')

def norm(name): return re.sub(r'[-_.]+', '-', name).lower()

@pytest.fixture(scope='module')
def built(tmp_path_factory):
    "{'wheel': names in the wheel, 'sdist': names in the sdist (without the top folder), 'metadata': the wheel's METADATA}."
    out = tmp_path_factory.mktemp('dist')
    p = subprocess.run([sys.executable, '-m', 'build', '--sdist', '--wheel', '--outdir', str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    whl, = out.glob('ipymini-*.whl')
    sdist, = out.glob('ipymini-*.tar.gz')
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    with tarfile.open(sdist) as t: snames = [n.split('/', 1)[1] for n in t.getnames() if '/' in n]
    return dict(wheel=names, sdist=snames, metadata=meta)

def test_wheel_contents(built):
    names = built['wheel']
    assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names)
    assert any(n.endswith('.data/data/share/jupyter/kernels/ipymini/kernel.json') for n in names)
    assert sorted(n for n in names if n.startswith('ipymini/')) == sorted(f'ipymini/{p.name}' for p in (REPO/'ipymini').glob('*.py'))
    assert [n for n in names if CACHES.search(n) or 'pytests/' in n or n.startswith('tools/')] == []

def test_sdist_contents(built):
    names = built['sdist']
    assert {'LICENSE', 'pyproject.toml', 'README.md', 'share/jupyter/kernels/ipymini/kernel.json', 'ipymini/__init__.py'} <= set(names)
    assert [n for n in names if CACHES.search(n) or n.startswith(('pytests/', 'tools/', 'docs/', '.ci/'))] == []

def imported(path):
    "(required, optional) top-level modules a file imports; optional ones are imported in a `try` that catches ImportError."
    tree,optional = ast.parse(path.read_text()),set()
    def top(n):
        if isinstance(n, ast.Import): return {a.name.split('.')[0] for a in n.names}
        if isinstance(n, ast.ImportFrom) and not n.level: return {n.module.split('.')[0]}
        return set()
    for t in ast.walk(tree):
        if isinstance(t, ast.Try) and any(isinstance(h.type, ast.Name) and h.type.id in ('ImportError', 'ModuleNotFoundError') for h in t.handlers):
            for s in t.body: optional |= {m for n in ast.walk(s) for m in top(n)}
    every = {m for n in ast.walk(tree) for m in top(n)}
    # a module named in a string as matplotlib's backend (`module://pkg.mod`) is imported by matplotlib on the kernel's behalf
    every |= {m.group(1) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
              for m in [re.match(r'module://(\w+)', n.value)] if m}
    return every - optional, optional

# GUI toolkits: imported only when a cell starts that toolkit's event loop (`%gui wx`), so the user installs the one they use
TOOLKITS = {'gi', 'wx'}

def declared(reqs): return {norm(re.match(r'[A-Za-z0-9_.-]+', r).group()) for r in reqs if 'extra ==' not in r}

def test_dependencies_are_the_imports():
    "pyproject's dependencies are exactly the distributions of the third-party modules ipymini/ imports."
    required = set().union(*(imported(p)[0] for p in (REPO/'ipymini').glob('*.py')))
    third = {m for m in required if m not in sys.stdlib_module_names and m != 'ipymini'} - TOOLKITS
    dists = packages_distributions()
    missing = sorted(m for m in third if m not in dists)
    assert missing == [], f"not installed here, cannot map to a distribution: {missing}"
    deps = tomllib.loads((REPO/'pyproject.toml').read_text())['project']['dependencies']
    assert declared(deps) == {norm(dists[m][0]) for m in third}

def test_wheel_declares_them(built):
    reqs = [l.split(':', 1)[1].strip() for l in built['metadata'].splitlines() if l.startswith('Requires-Dist:')]
    deps = tomllib.loads((REPO/'pyproject.toml').read_text())['project']['dependencies']
    assert declared(reqs) == declared(deps)
    assert 'License-Expression: BSD-3-Clause' in built['metadata']

def test_lowest_versions_are_the_floors():
    "CI's lowest-versions job installs exactly each dependency's floor: every dependency has one (`>=`), and .ci/lowest.txt pins it."
    deps = tomllib.loads((REPO/'pyproject.toml').read_text())['project']['dependencies']
    floors = {norm(m.group(1)): m.group(2) for d in deps for m in [re.fullmatch(r'([A-Za-z0-9_.-]+)>=([\w.]+)', d)]}
    assert len(floors) == len(deps), f"a dependency without a plain >= floor: {deps}"
    pins = [l.split('==') for l in (REPO/'.ci'/'lowest.txt').read_text().splitlines() if l.strip() and not l.startswith('#')]
    padded = lambda v: tuple(int(x) for x in v.split('.')) + (0,) * (3 - len(v.split('.')))
    assert {norm(n): padded(v) for n,v in pins} == {n: padded(v) for n,v in floors.items()}
