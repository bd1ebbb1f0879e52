import sys, os, pytest
sys.path.insert(0, os.path.dirname(__file__))
from kernel_utils import start_kernel

@pytest.fixture(scope='module')
def kernel():
    "One kernel shared by a module's tests: (km, kc)."
    with start_kernel() as (km,kc): yield km,kc

@pytest.fixture
def kc(kernel):
    "The shared kernel's client (helpers match messages by parent id, so leftovers of earlier tests do no harm)."
    return kernel[1]
