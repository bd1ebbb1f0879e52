"""examples/parity.ipynb run through nbclient under ipymini and under ipykernel: the same outputs, cell by cell."""
import os, base64
import pytest
nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from kernel_utils import check_kernelspec, KERNEL_NAME

NOTEBOOK = os.path.join(os.path.dirname(__file__), '..', 'examples', 'parity.ipynb')

def run_notebook(kernel_name, ipythondir):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ['IPYTHONDIR'] = str(ipythondir)  # nbclient starts the kernel with this process's environment
    nbclient.NotebookClient(nb, kernel_name=kernel_name, allow_errors=True, timeout=60, startup_timeout=60).execute()
    return nb

def shape(out):
    "What a notebook keeps of an output, without values that differ run to run (ids, addresses, pixels, timings)."
    if out.output_type == 'stream': return ('stream', out.name, out.text)
    if out.output_type == 'error': return ('error', out.ename, out.evalue)
    return (out.output_type, tuple(sorted(out.data)))

@pytest.fixture(scope='module')
def notebooks(tmp_path_factory):
    try: KernelSpecManager().get_kernel_spec('python3')
    except NoSuchKernel: pytest.skip("ipykernel's kernelspec python3 is not installed")
    check_kernelspec()
    old = os.environ.get('IPYTHONDIR')
    try: return {k: run_notebook(k, tmp_path_factory.mktemp(k)) for k in (KERNEL_NAME, 'python3')}
    finally:
        if old is None: os.environ.pop('IPYTHONDIR', None)
        else: os.environ['IPYTHONDIR'] = old

def test_same_output_types_as_ipykernel(notebooks):
    mini,ref = notebooks[KERNEL_NAME],notebooks['python3']
    for a,b in zip(mini.cells, ref.cells):
        if a.cell_type == 'code': assert [shape(o) for o in a.outputs] == [shape(o) for o in b.outputs], a.source

def test_outputs_are_what_the_cells_make(notebooks):
    "Guard against both kernels agreeing on nothing: each cell's outputs under ipymini, spelled out."
    cells = [c for c in notebooks[KERNEL_NAME].cells if c.cell_type == 'code']
    outs = [[shape(o) for o in c.outputs] for c in cells]
    assert outs[0] == [('display_data', ('text/html', 'text/plain')), ('display_data', ('text/markdown', 'text/plain'))]
    assert outs[1] == [('display_data', ('text/plain',))] and cells[1].outputs[0].data['text/plain'] == "'second'"
    assert outs[2] == [('stream', 'stdout', 'kept\n')]
    assert outs[3] == []
    assert outs[4] == [('display_data', ('image/png', 'text/plain'))]
    assert base64.b64decode(cells[4].outputs[0].data['image/png'])[:4] == b'\x89PNG'
    assert outs[5] == [('execute_result', ('text/plain',))] and cells[5].outputs[0].data['text/plain'] == "{'a': 1}"
    assert outs[6] == []  # the pager text is a payload, which notebooks do not store
    assert outs[7] == [('error', 'ZeroDivisionError', 'division by zero')]
    assert outs[8] == [('stream', 'stdout', 'after the error\n')]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
