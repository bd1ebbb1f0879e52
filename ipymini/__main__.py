"""Command line: `python -m ipymini -f CONNECTION_FILE` runs a kernel; `python -m ipymini install` installs the kernelspec."""
import argparse, logging, os, sys, warnings
from . import __version__

class _Parser(argparse.ArgumentParser):
    def error(self, message): self.exit(2, f"{self.prog}: error: {message}\n")

def install_main(argv):
    p = _Parser(prog="python -m ipymini install", description="Install the ipymini kernelspec so Jupyter can find it.")
    g = p.add_mutually_exclusive_group()
    g.add_argument('--user', action='store_true', help="install for the current user")
    g.add_argument('--sys-prefix', action='store_true', help="install into this Python's prefix (e.g. the venv)")
    g.add_argument('--prefix', metavar='DIR', help="install into DIR/share/jupyter/kernels")
    p.add_argument('--name', default='ipymini', help="kernelspec name (default: ipymini)")
    p.add_argument('--display-name', help="name shown in front ends (default: 'Python 3 (ipymini)')")
    p.add_argument('--env', nargs=2, metavar=('NAME', 'VALUE'), action='append', help="environment variable set for the kernel")
    from .gateway import PROXIES, kernel_json, LaunchError
    p.add_argument('--gateway', choices=list(PROXIES), help="a kernelspec for Jupyter Enterprise Gateway's process proxy of that name (default name: ipymini_PROXY)")
    p.add_argument('--image', help="--gateway kubernetes/docker/swarm: the kernel image (built from docker/Dockerfile)")
    p.add_argument('--launcher', help="--gateway kubernetes/docker/swarm: EG's launch script (default: where EG's images keep it)")
    p.add_argument('--python', help="--gateway: the Python the kernelspec runs (distributed: on the remote hosts, default this one; else EG's, default python)")
    a = p.parse_args(argv)
    name = a.name if a.name != 'ipymini' or not a.gateway else f"ipymini_{a.gateway}"
    if not a.gateway and (a.image or a.launcher or a.python): p.error("--image, --launcher and --python go with --gateway")
    from .kernelspec import install, InstallError
    try:
        spec = a.gateway and kernel_json(a.gateway, python=a.python, image=a.image, launcher=a.launcher, display_name=a.display_name, env=a.env)
        dest = install(name, user=a.user, prefix=a.prefix, sys_prefix=a.sys_prefix, display_name=a.display_name, env=a.env, spec=spec)
    except (InstallError, LaunchError) as e: p.exit(1, f"ipymini: {e}\n")
    print(f"Installed kernelspec {name} in {dest}")

def kernel_main(argv):
    p = _Parser(prog="python -m ipymini", description="Run the ipymini Jupyter kernel. Subcommand: install.")
    p.add_argument('-f', '--connection-file', metavar='FILE', help="connection file written by the launcher")
    p.add_argument('--debug', action='store_true', help="log informational messages too (child processes ended, a missing debugpy, ...)")
    p.add_argument('--version', action='version', version=__version__)
    p.epilog = ("IPython options (--Class.trait=value, --matplotlib=inline, ...) apply as in ipykernel; others get a warning. Enterprise Gateway "
                "starts it with --RemoteProcessProxy.kernel-id, .response-address, .public-key and .port-range (or --kernel-id, ...): see README.")
    from . import gateway
    gw,argv = gateway.split_args(argv)  # Enterprise Gateway's launch options (see gateway.py)
    a,extra = p.parse_known_args(argv)
    setup_log(a.debug)
    if gw and a.connection_file: p.error("-f and Enterprise Gateway's launch options exclude each other")
    try: launch = gateway.Launch(gw) if gw else None
    except gateway.LaunchError as e: p.exit(1, f"ipymini: {e}\n")
    from . import crash
    crash.start()  # before the sockets and threads exist: see crash.py
    try:
        if launch: launch.announce(cfg := launch.connection())  # EG hears back while IPython loads
    except gateway.LaunchError as e: p.exit(1, f"ipymini: {e}\n")
    from .bridge import split_options
    opts,unknown,junk = split_options(extra)
    if junk: p.error(f"unrecognized arguments: {' '.join(junk)}")
    for o in unknown: logging.getLogger('ipymini').warning("ignoring command-line option %s: not an IPython option", o)
    from .kernel import Kernel, KernelStartError, load_connection
    try:
        if launch: path = None
        elif a.connection_file: cfg,path = load_connection(a.connection_file),a.connection_file
        else: cfg,path = new_connection()
        kernel = Kernel(cfg, path, opts)
    except KernelStartError as e: p.exit(1, f"ipymini: {e}\n")
    except OSError as e: p.exit(1, f"ipymini: cannot write connection file {e.filename}: {e.strerror}\n")
    if not (a.connection_file or launch): print(f"ipymini: connect with --existing {os.path.basename(path)}", file=sys.__stderr__)
    kernel.run()
    return kernel.exit_status

def setup_log(debug=False):
    "The kernel's own log goes to the launcher's stderr through the 'ipymini' logger alone: the root logger stays the user's, as in ipykernel."
    h = logging.StreamHandler(sys.__stderr__)
    h.setFormatter(logging.Formatter("[ipymini %(levelname)s %(asctime)s] %(message)s"))
    log = logging.getLogger('ipymini')
    log.addHandler(h)
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False

def new_connection():
    "A fresh connection (random ports, new key) written to Jupyter's runtime dir, for `python -m ipymini` run by hand."
    import uuid
    with warnings.catch_warnings():  # jupyter_core 5 warns, at import, of a change of paths coming in 6: not this command's to tell
        warnings.simplefilter('ignore', DeprecationWarning)
        from jupyter_core.paths import jupyter_runtime_dir
    d = jupyter_runtime_dir()
    os.makedirs(d, exist_ok=True)
    cfg = dict(transport='tcp', ip='127.0.0.1', key=uuid.uuid4().hex, signature_scheme='hmac-sha256', kernel_name='ipymini')
    return cfg,os.path.join(d, f"kernel-ipymini-{os.getpid()}.json")

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['install']: return install_main(argv[1:])
    status = kernel_main(argv)
    import atexit
    atexit._run_exitfuncs()
    from .streams import flush_files
    flush_files(sys.__stdout__, sys.__stderr__)  # the launcher that reads them may be gone
    from .crash import stopped
    stopped()
    os._exit(status)  # the sockets' threads are done; skip a finalizer that could wait on them

if __name__ == '__main__': main()
