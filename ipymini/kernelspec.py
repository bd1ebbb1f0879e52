"""The kernelspec: what `python -m ipymini install` writes so Jupyter front ends can list and start ipymini."""
import json, os, re, sys, shutil, tempfile
import zmq
from jupyter_core.paths import jupyter_data_dir, SYSTEM_JUPYTER_PATH

__all__ = ['kernel_json', 'check_name', 'install', 'InstallError']

class InstallError(Exception): "An install that cannot happen, told to the user in one line."

def kernel_json(python=None, display_name="Python 3 (ipymini)", env=None):
    "The kernel.json dict, launching ipymini with `python` (default: this interpreter)."
    spec = dict(argv=[python or sys.executable, "-m", "ipymini", "-f", "{connection_file}"], display_name=display_name, language="python",
                interrupt_mode="signal", kernel_protocol_version="5.5", metadata=dict(debugger=True))
    # a launcher hands CurveZMQ keys only to kernels that say they take them; that needs a libzmq built with libsodium
    if zmq.has('curve'): spec['metadata']['supported_encryption'] = ['curve']
    if env: spec['env'] = dict(env)
    return spec

def kernels_dir(user=False, prefix=None, sys_prefix=False):
    "Where kernelspecs go for the chosen install mode."
    if user: return os.path.join(jupyter_data_dir(), 'kernels')
    if sys_prefix: prefix = sys.prefix
    if prefix: return os.path.join(prefix, 'share', 'jupyter', 'kernels')
    return os.path.join(SYSTEM_JUPYTER_PATH[0], 'kernels')

def check_name(name):
    "Raise InstallError unless `name` is a kernelspec name `jupyter kernelspec` accepts: ASCII letters, digits, '.', '_', '-'."
    # jupyter_client's own pattern, minus what it lets through by accident: a trailing newline ($), non-ASCII letters that fold to
    # ASCII ones under IGNORECASE, and '.' or '..', which name a folder that is not a kernelspec of its own
    if not re.fullmatch(r'[A-Za-z0-9._-]+', name) or not name.strip('.'):
        raise InstallError(f"invalid kernelspec name {name!r}: use ASCII letters, digits, '.', '_' and '-' only")

def install(name="ipymini", user=False, prefix=None, sys_prefix=False, display_name=None, env=None, spec=None):
    "Write the kernelspec (`spec`, default `kernel_json`'s); returns the folder it went to."
    check_name(name)
    dest = os.path.join(kernels_dir(user, prefix, sys_prefix), name)
    spec = spec or kernel_json(display_name=display_name or ("Python 3 (ipymini)" if name == "ipymini" else name), env=env)
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(dest))
        with open(os.path.join(tmp, 'kernel.json'), 'w') as f: json.dump(spec, f, indent=1)
        if os.path.isdir(dest): shutil.rmtree(dest)
        os.replace(tmp, dest)
        os.chmod(dest, 0o755)
    except OSError as e: raise InstallError(f"cannot install the kernelspec into {os.path.dirname(dest)}: {e.strerror}") from None
    return dest
