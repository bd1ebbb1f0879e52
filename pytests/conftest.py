import sys, os, pytest
sys.path.insert(0, os.path.dirname(__file__))
from kernel_utils import start_kernel

# tests of more than 10 s (`pytest --durations=30`), in modules that are otherwise quick: marked `slow` here, by name
SLOW = {'test_e2e_clients.py::test_kernel_gateway'}

def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.rsplit('/', 1)[-1].split('[')[0] in SLOW: item.add_marker(pytest.mark.slow)

@pytest.fixture(scope='module')
def kernel():
    "One kernel shared by a module's tests: (km, kc)."
    with start_kernel() as (km,kc): yield km,kc

@pytest.fixture
def kc(kernel):
    "The shared kernel's client (helpers match messages by parent id, so leftovers of earlier tests do no harm)."
    return kernel[1]
