"""The command line: each mistake gets one clear line on stderr and a non-zero exit, never a traceback."""
import json, os, socket, subprocess, sys
import pytest
from kernel_utils import TIMEOUT

def run(*args):
    return subprocess.run([sys.executable, '-m', 'ipymini', *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT)

def one_line(p, *words):
    "Failed, with a single stderr line holding `words`, no traceback and nothing on stdout."
    assert p.returncode != 0 and p.stdout == ''
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and 'Traceback' not in p.stderr, p.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]

def conn(tmp_path, **kw):
    cfg = {**dict(shell_port=0, iopub_port=0, stdin_port=0, control_port=0, hb_port=0, ip='127.0.0.1', key='k', transport='tcp',
                  signature_scheme='hmac-sha256'), **kw}
    path = tmp_path/'conn.json'
    path.write_text(json.dumps(cfg))
    return path

def test_missing_connection_file(tmp_path):
    one_line(run('-f', tmp_path/'nope.json'), 'ipymini:', 'cannot read connection file', 'No such file or directory')

def test_unreadable_connection_file(tmp_path):
    one_line(run('-f', tmp_path), 'cannot read connection file', 'Is a directory')  # a directory: unreadable even for root

@pytest.mark.parametrize('text,words', [('{"shell_port": 1', 'is not valid JSON'), ('[1, 2]', 'must hold a JSON object'),
    ('{"shell_port": "x"}', 'shell_port must be an integer'), ('{"key": 5}', 'key must be a string'), ('\xff', 'not valid JSON')])
def test_malformed_connection_file(tmp_path, text, words):
    path = tmp_path/'conn.json'
    path.write_bytes(text.encode('latin-1'))
    one_line(run('-f', path), 'connection file', words)

@pytest.mark.parametrize('kw,words', [(dict(transport='udp'), "unsupported transport 'udp'"), (dict(signature_scheme='md5'), 'unsupported signature_scheme'),
    (dict(signature_scheme='hmac-nope'), 'unsupported signature_scheme'), (dict(curve_secretkey='x', curve_publickey='y'), 'bad CurveZMQ keys')])
def test_bad_connection_values(tmp_path, kw, words):
    one_line(run('-f', conn(tmp_path, **kw)), words)

def test_port_taken(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        port = s.getsockname()[1]
        one_line(run('-f', conn(tmp_path, control_port=port)), 'cannot bind control_port', str(port), 'Address already in use')

def test_ip_not_local(tmp_path):
    one_line(run('-f', conn(tmp_path, ip='192.0.2.1')), 'cannot bind')  # an address of no interface here: nothing is sent to it

@pytest.mark.parametrize('args', [['--bogus'], ['-f'], ['install', '--bogus'], ['install', '--user', '--sys-prefix'], ['extra-arg']])
def test_bad_flags(args):
    p = run(*args)
    assert p.returncode == 2
    one_line(p, 'error:')

def test_unwritable_prefix(tmp_path):
    f = tmp_path/'file'
    f.write_text('')
    one_line(run('install', '--prefix', f), 'cannot install the kernelspec', 'Not a directory')

def test_help():
    p = run('--help')
    assert p.returncode == 0 and '--connection-file' in p.stdout
