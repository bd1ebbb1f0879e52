"""Jupyter Enterprise Gateway (EG) launches: `python -m ipymini --RemoteProcessProxy.kernel-id ID --RemoteProcessProxy.response-address
IP:PORT --RemoteProcessProxy.public-key KEY --RemoteProcessProxy.port-range LOW..HIGH` (or the short forms `--kernel-id`, ... that
container bootstrap scripts pass). As EG's own launcher does: the five kernel ports and a communication port are picked in the range,
the connection info (with pid, pgid, comm_port, kernel_id) goes back to EG encrypted for its public key, and the `ipymini-gateway`
thread serves the communication port, where EG sends signals (interrupt, stop, liveness polls) and shutdown."""
import base64, json, logging, os, random, re, signal, socket, sys, threading, uuid
from .lifecycle import lead_process_group

__all__ = ['LaunchError', 'kernel_json', 'split_args', 'Launch', 'payload', 'serve']
log = logging.getLogger('ipymini')

class LaunchError(Exception): "A launch by EG that cannot go on, told in one line."

NAMES = ('kernel-id', 'response-address', 'public-key', 'port-range', 'spark-context-initialization-mode')
PREFIX = '--RemoteProcessProxy.'
PORTS = ('shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port')
IP = '0.0.0.0'  # as EG's launcher: EG reaches the kernel at the address of the host it started it on
CONNECT_TIMEOUT = 10  # seconds to reach EG's response address: a wrong one is an error, never a hang
REQUEST_TIMEOUT = 5  # seconds a client of the communication port has to send its request (EG's own listener waits as long)
MAX_REQUEST = 1 << 16
LAUNCHER_VERSION = 1  # the payload format EG's launchers send: {"version", "key", "conn_info"}

# EG's process proxies that run a kernel from a kernelspec: how each starts ipymini, and the launcher EG's own image keeps for the containers
PROXIES = dict(distributed='distributed.DistributedProcessProxy', kubernetes='k8s.KubernetesProcessProxy',
               docker='docker_swarm.DockerProcessProxy', swarm='docker_swarm.DockerSwarmProcessProxy')
LAUNCHERS = dict(kubernetes='/usr/local/share/jupyter/kernels/python_kubernetes/scripts/launch_kubernetes.py',
                 docker='/usr/local/share/jupyter/kernels/python_docker/scripts/launch_docker.py',
                 swarm='/usr/local/share/jupyter/kernels/python_docker/scripts/launch_docker.py')

def kernel_json(proxy, python=None, image=None, launcher=None, display_name=None, env=None):
    """The kernel.json EG starts ipymini from with its `proxy` (a key of PROXIES). distributed: EG runs `python -m ipymini` on a remote
    host (`python` there: default this interpreter); kubernetes, docker, swarm: EG's `launcher` script starts a container of `image`
    (built from docker/Dockerfile), whose bootstrap runs `python -m ipymini` with the same options."""
    if proxy not in PROXIES: raise LaunchError(f"unknown process proxy {proxy!r}: use one of {', '.join(PROXIES)}")
    opts = lambda *ns: [w for n in ns for w in (PREFIX + n, '{' + n.replace('-', '_') + '}')]
    meta = dict(process_proxy=dict(class_name='enterprise_gateway.services.processproxies.' + PROXIES[proxy]), debugger=True)
    if proxy == 'distributed':
        if image or launcher: raise LaunchError("--image and --launcher are for container proxies (kubernetes, docker, swarm)")
        argv = [python or sys.executable, '-m', 'ipymini', *opts('kernel-id', 'response-address', 'public-key', 'port-range'),
                PREFIX + 'spark-context-initialization-mode', 'none']
    else:
        if not image: raise LaunchError(f"a {proxy} kernelspec needs --image: the kernel image EG starts (see docker/Dockerfile)")
        meta['process_proxy']['config'] = dict(image_name=image)
        # the launcher runs where EG runs, with EG's Python (it needs EG's kubernetes or docker client), as in EG's own kernelspecs
        argv = [python or 'python', launcher or LAUNCHERS[proxy], *opts('kernel-id', 'port-range', 'response-address', 'public-key')]
    spec = dict(argv=argv, display_name=display_name or f"Python 3 (ipymini, {proxy})", language='python', interrupt_mode='signal',
                metadata=meta)
    if env: spec['env'] = dict(env)
    return spec

def split_args(argv):
    "(EG's launch options found in `argv` as {name: value}, the other words): `--RemoteProcessProxy.name value`, `--name=value`, ..."
    opts,rest,i = {},[],0
    while i < len(argv):
        a,i = argv[i],i + 1
        word,eq,val = a.partition('=')
        name = word[len(PREFIX):] if word.startswith(PREFIX) else word[2:] if word.startswith('--') else None
        if name not in NAMES:
            rest.append(a)
            continue
        if not eq:  # `--name value`; a missing value (the next word is an option) stays missing
            val = argv[i] if i < len(argv) and not argv[i].startswith('--') else None
            i += val is not None
        opts[name] = val
    return opts,rest

def parse_range(s):
    "`LOW..HIGH` as (low, high); (0, 0) when it imposes none (no range, or equal ends as EG's `0..0`)."
    if not s: return 0,0
    m = re.fullmatch(r'(\d+)\.\.(\d+)', s.strip())
    if not m: raise LaunchError(f"invalid port range {s!r}: expected LOW..HIGH, e.g. 40000..41000 (0..0: any ports)")
    lo,hi = int(m[1]),int(m[2])
    if lo == hi: return 0,0
    if not 0 < lo < hi <= 65535: raise LaunchError(f"invalid port range {s!r}: expected 1 <= LOW < HIGH <= 65535")
    if hi - lo + 1 < len(PORTS) + 1:
        raise LaunchError(f"port range {s} holds {hi - lo + 1} ports: the kernel needs {len(PORTS) + 1} (its five, EG's communication port)")
    return lo,hi

def parse_address(s):
    "EG's response address `IP:PORT` as (ip, port)."
    ip,_,port = (s or '').rpartition(':')
    if not ip or not port.isdigit() or not 0 < int(port) < 65536: raise LaunchError(f"invalid response address {s!r}: expected IP:PORT")
    return ip,int(port)

def import_key(s):
    "EG's RSA public key, given as base64 DER (a PEM's body, without its header lines)."
    try: from Cryptodome.PublicKey import RSA
    except ImportError: raise LaunchError("Enterprise Gateway launches need pycryptodomex: pip install 'ipymini[gateway]'") from None
    try: key = RSA.import_key(base64.b64decode(s, validate=True))
    except (ValueError, IndexError, TypeError) as e:
        raise LaunchError(f"the public key is not an RSA key in base64 DER: {e or type(e).__name__}") from None
    if key.has_private(): raise LaunchError("the public key is a private key: pass EG's public key")
    return key

def payload(info, key):
    "EG's launcher reply (version 1): `info` as JSON, AES-128-ECB with PKCS7 padding under a fresh key, that key wrapped by RSA PKCS#1 v1.5."
    # ECB and PKCS#1 v1.5 are EG's protocol, not a choice made here: its ResponseManager decrypts exactly this
    from Cryptodome.Cipher import AES, PKCS1_v1_5
    from Cryptodome.Random import get_random_bytes
    from Cryptodome.Util.Padding import pad
    aes = get_random_bytes(16)
    conn = AES.new(aes, AES.MODE_ECB).encrypt(pad(json.dumps(info).encode(), 16))
    b64 = lambda b: base64.b64encode(b).decode()
    out = dict(version=LAUNCHER_VERSION, key=b64(PKCS1_v1_5.new(key).encrypt(aes)), conn_info=b64(conn))
    return base64.b64encode(json.dumps(out).encode())

def free_sockets(n, lo, hi):
    "`n` TCP sockets bound to distinct free ports in lo..hi (any free ports when lo..hi is 0..0)."
    socks,ports = [],random.sample(range(lo, hi + 1), hi - lo + 1) if hi else [0] * n  # port 0: the system picks a free one
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try: s.bind((IP, p))
        except OSError:
            s.close()
            continue
        socks.append(s)
        if len(socks) == n: return socks
    for s in socks: s.close()
    raise LaunchError(f"fewer than {n} free ports in the port range {lo}..{hi}")

class Launch:
    "One launch by EG: its options checked (`LaunchError`), then `connection` for the kernel's ports and `announce` to tell EG of them."
    def __init__(self, opts):
        for n in ('kernel-id', 'response-address', 'public-key'):
            if not opts.get(n):
                raise LaunchError(f"Enterprise Gateway launch without --{n} (or {PREFIX}{n}): it needs a kernel id, response address, public key")
        self.kernel_id,self.addr = opts['kernel-id'],parse_address(opts['response-address'])
        self.range,self.key = parse_range(opts.get('port-range')),import_key(opts['public-key'])
        if (mode := opts.get('spark-context-initialization-mode')) not in (None, 'none'):
            log.warning("ignoring --spark-context-initialization-mode %s: ipymini creates no Spark context", mode)
        self.comm = None

    def connection(self):
        """Connection info for the kernel: a fresh key and five free ports in the range (any without one), picked as EG's launcher picks
        them, so EG hears back before the kernel has loaded IPython; the communication port is bound and listening."""
        socks = free_sockets(len(PORTS) + 1, *self.range)
        self.comm = socks.pop()
        self.comm.listen(16)
        ports = [s.getsockname()[1] for s in socks]
        for s in socks: s.close()  # never listened on: the kernel binds them next, and EG's sockets connect (and retry) meanwhile
        return dict(zip(PORTS, ports), ip=IP, key=str(uuid.uuid4()), transport='tcp', signature_scheme='hmac-sha256', kernel_name='')

    def announce(self, cfg):
        "Serve the communication port, then send EG connection info `cfg` over one connection to its response address."
        lead_process_group()  # before the pgid is reported: EG signals the group
        info = dict(cfg, pid=os.getpid(), pgid=os.getpgid(0), comm_port=self.comm.getsockname()[1], kernel_id=self.kernel_id)
        threading.Thread(target=serve, args=(self.comm,), name='ipymini-gateway', daemon=True).start()
        try:
            with socket.create_connection(self.addr, timeout=CONNECT_TIMEOUT) as s: s.sendall(payload(info, self.key))
        except OSError as e:
            raise LaunchError(f"cannot send the connection info to {self.addr[0]}:{self.addr[1]}: {e.strerror or e}") from None

def read_request(conn):
    "The JSON object a client sent on one connection (it closes its end when done), or None."
    conn.settimeout(REQUEST_TIMEOUT)
    data = b''
    try:
        while len(data) <= MAX_REQUEST and (chunk := conn.recv(4096)): data += chunk
        if not data: return None  # a connection that sent nothing (a port check): nothing to do
        req = json.loads(data)
    except (OSError, ValueError) as e: return log.warning("communication port: dropped a request (%s)", e)
    if not isinstance(req, dict): return log.warning("communication port: dropped a request that is not a JSON object")
    return req

def handle(req):
    """`{'signum': N}`: signal N to this process (0: a liveness poll; 2 reaches the kernel's SIGINT handler); `{'shutdown': 1}`: stop.
    True to stop serving."""
    signum = req.get('signum') or 0
    if not isinstance(signum, int):
        log.warning("communication port: bad signum %r", signum)
        signum = 0
    if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # no cell to interrupt yet, and Python's own handler would end the start
        log.info("communication port: interrupt before the kernel is up, ignored")
    elif signum:
        log.info("communication port: signal %d", signum)
        try: os.kill(os.getpid(), signum)  # SIGTERM: the kernel's clean stop (lifecycle)
        except (OSError, ValueError) as e: log.warning("communication port: cannot send signal %d: %s", signum, e)
    if not req.get('shutdown'): return False
    log.info("communication port: shutdown")
    os.kill(os.getpid(), signal.SIGTERM)  # EG takes a closed communication port for a kernel gone: no kernel stays behind unreachable
    return True

def serve(sock):
    "The communication port's thread: one JSON request per connection, until a shutdown."
    while True:
        try: conn,_ = sock.accept()
        except OSError: return
        with conn: req = read_request(conn)
        if req is not None and handle(req): return sock.close()
