import sys, os, shutil, pytest
sys.path.insert(0, os.path.dirname(__file__))
from kernel_utils import start_kernel, use_private_home, home_snapshot, _home

# tests of more than 10 s (`pytest --durations=30`), in modules that are otherwise quick: marked `slow` here, by name
SLOW = {'test_e2e_clients.py::test_kernel_gateway'}
LAST = 'test_home.py::test_real_home_untouched'  # runs after every other test: it checks what they left behind

def pytest_configure(config):
    "Before any test: note the real home's Jupyter and IPython folders, then send every process the suite starts to a private home."
    home = os.path.expanduser('~')
    config.real_home = home,home_snapshot(home)
    use_private_home()

def pytest_unconfigure(config):
    if _home.get('private'): shutil.rmtree(_home['private'], ignore_errors=True)

def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.rsplit('/', 1)[-1].split('[')[0] in SLOW: item.add_marker(pytest.mark.slow)
    last = [i for i in items if i.nodeid.endswith(LAST)]
    items[:] = [i for i in items if i not in last] + last

@pytest.fixture(scope='module')
def kernel():
    "One kernel shared by a module's tests: (km, kc)."
    with start_kernel() as (km,kc): yield km,kc

@pytest.fixture
def kc(kernel):
    "The shared kernel's client (helpers match messages by parent id, so leftovers of earlier tests do no harm)."
    return kernel[1]
