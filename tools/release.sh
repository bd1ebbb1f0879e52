#!/usr/bin/env bash
# Build the sdist and wheel into dist/, then check the wheel as a user would get it:
# it carries the kernelspec and LICENSE, and a fresh venv that installs the wheel (and jupyter_client, the front ends'
# library, which the kernel does not need) lists "ipymini" and runs a cell.
# Run from a clone after README's test command: `tools/release.sh` (it uses .venv/bin/python, or $PYTHON, which needs `build`).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
command -v "$py" >/dev/null || { echo "no $py: run README's test command first, or set PYTHON to a Python with 'build' installed" >&2; exit 1; }
rm -rf dist
"$py" -m build --sdist --wheel --outdir dist . >/dev/null
wheel=$(ls dist/ipymini-*.whl)
echo "built: $(ls dist | tr '\n' ' ')"
"$py" - "$wheel" <<'PY'
import sys, zipfile, json
names = zipfile.ZipFile(sys.argv[1]).namelist()
spec = [n for n in names if n.endswith('data/share/jupyter/kernels/ipymini/kernel.json')]
assert spec, "the wheel has no kernelspec"
assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names), "the wheel has no LICENSE"
argv = json.loads(zipfile.ZipFile(sys.argv[1]).read(spec[0]))['argv']
assert argv[1:3] == ['-m', 'ipymini'], argv
print(f"kernelspec in wheel: {spec[0]}")
PY
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
"$py" -m venv "$venv"
"$venv/bin/pip" install -q "$wheel" jupyter_client
specs=$("$venv/bin/jupyter" kernelspec list 2>/dev/null)
echo "$specs"
grep -q '^ *ipymini ' <<<"$specs" || { echo "ipymini not in jupyter kernelspec list" >&2; exit 1; }
"$venv/bin/python" - <<'PY'
from jupyter_client.manager import start_new_kernel
km,kc = start_new_kernel(kernel_name='ipymini')
try:
    out = []
    reply = kc.execute_interactive("print(6 * 7)", output_hook=lambda m: out.append(m['content'].get('text', '')), timeout=60)
    assert reply['content']['status'] == 'ok' and ''.join(out) == '42\n', (reply['content'], out)
    print("wheel-installed kernel ran a cell: 42")
finally:
    kc.stop_channels()
    km.shutdown_kernel()
PY
echo "release check passed"
