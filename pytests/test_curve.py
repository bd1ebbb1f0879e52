"""CurveZMQ: with keys in the connection file every socket is encrypted; a client with the right server key is served, one
with a wrong key or none gets nothing. Sockets bind only the connection file's IP."""
import json, uuid
import pytest, zmq, psutil
from jupyter_client.session import Session
from kernel_utils import start_kernel, execute, request, check_kernelspec, TIMEOUT

pytestmark = pytest.mark.skipif(not zmq.has('curve'), reason="libzmq without CurveZMQ")
SILENCE_MS = 1000  # how long a client that must get nothing listens

@pytest.fixture(scope='module')
def ck():
    with start_kernel(transport_encryption='required') as (km,kc): yield km,kc

def test_kernelspec_declares_curve():
    assert 'curve' in check_kernelspec().metadata['supported_encryption']

def test_encrypted_client_works(ck):
    km,kc = ck
    with open(km.connection_file) as f: info = json.load(f)
    assert info['curve_publickey'] and info['curve_secretkey']
    reply,msgs = execute(kc, "print('secret'); 6*7")
    assert reply['content']['status'] == 'ok' and [m['msg_type'] for m in msgs][-3:] == ['stream', 'execute_result', 'status']
    assert kc.hb_channel.is_beating()

def dealer(km, serverkey):
    "A DEALER on the control port with a key pair of its own; encrypted to `serverkey` (plaintext when None)."
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    if serverkey is not None:
        s.curve_publickey,s.curve_secretkey = zmq.curve_keypair()
        s.curve_serverkey = serverkey
    s.connect(f"tcp://{km.ip}:{km.control_port}")
    return s

def ask(km, sock, timeout_ms):
    "Send a signed kernel_info_request; the reply, or None when nothing came within `timeout_ms`."
    sess = Session(key=km.session.key, signature_scheme=km.session.signature_scheme)
    sock.sndtimeo = int(timeout_ms)  # a refused handshake can leave the socket no peer to queue for: a send would block for good
    try: sess.send(sock, sess.msg('kernel_info_request', {}))
    except zmq.Again: return None
    if not sock.poll(timeout_ms): return None
    _,frames = sess.feed_identities(sock.recv_multipart())
    return sess.deserialize(frames)

def test_right_server_key_any_client_key(ck):
    km,_ = ck
    s = dealer(km, km.curve_publickey)
    try: assert ask(km, s, TIMEOUT * 1000)['content']['implementation'] == 'ipymini'
    finally: s.close()

@pytest.mark.parametrize('key', ['wrong', 'plaintext'])
def test_wrong_key_gets_nothing(ck, key):
    km,kc = ck
    s = dealer(km, zmq.curve_keypair()[0] if key == 'wrong' else None)
    try: assert ask(km, s, SILENCE_MS) is None
    finally: s.close()
    sub = zmq.Context.instance().socket(zmq.SUB)  # nor is IOPub readable: no welcome, no output
    sub.linger = 0
    if key == 'wrong': sub.curve_publickey,sub.curve_secretkey,sub.curve_serverkey = *zmq.curve_keypair(),zmq.curve_keypair()[0]
    sub.setsockopt(zmq.SUBSCRIBE, b'')
    sub.connect(f"tcp://{km.ip}:{km.iopub_port}")
    try:
        execute(kc, "print('not for you')")
        assert not sub.poll(SILENCE_MS)
    finally: sub.close()
    assert request(kc, 'kernel_info_request')[0]['content']['status'] == 'ok'  # the right client is still served

def test_plaintext_without_keys(kernel):
    "No keys in the connection file: plaintext, as before."
    km,_ = kernel
    assert km.curve_publickey is None
    s = dealer(km, None)
    try: assert ask(km, s, TIMEOUT * 1000)['content']['status'] == 'ok'
    finally: s.close()

def test_binds_only_given_ip(ck):
    km,_ = ck
    listening = [c.laddr for c in psutil.Process(km.provisioner.process.pid).net_connections('inet') if c.status == psutil.CONN_LISTEN]
    assert sorted(a.port for a in listening) == sorted(km.get_connection_info()[p] for p in ('shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'))
    assert {a.ip for a in listening} == {'127.0.0.1'}
