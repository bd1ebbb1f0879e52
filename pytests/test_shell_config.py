"""IPython configuration (profile config files, startup files, extensions, exec_lines) and the IPYMINI_ environment flags."""
import time, textwrap
import pytest
from kernel_utils import start_kernel, execute, request, types, TIMEOUT
from test_shell import run, ok, value, pipeline, check_error, check_aborted, check_spec

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))

@pytest.fixture(scope='module')
def profile(tmp_path_factory):
    "An IPYTHONDIR whose default profile has config in both files, two startup files and an extension on PYTHONPATH."
    d = tmp_path_factory.mktemp('ipython')
    prof,lib = d / 'profile_default',d / 'lib'
    write(prof / 'ipython_config.py', "c.InteractiveShell.ast_node_interactivity = 'all'\n")
    write(prof / 'ipython_kernel_config.py', """\
        c.IPKernelApp.exec_lines = ['from_exec_lines = 7', 'print("exec line ran")']
        c.InteractiveShellApp.extensions = ['ipymini_test_ext']
        c.ZMQInteractiveShell.display_page = True
        """)
    write(prof / 'startup' / '00-first.py', "from_startup = ['00']\n")
    write(prof / 'startup' / '10-second.py', "from_startup.append('10')\nprint('startup ran')\n")
    write(lib / 'ipymini_test_ext.py', """\
        def load_ipython_extension(ip):
            ip.user_ns['ext_loaded'] = True
            ip.register_magic_function(lambda line: 'magic:' + line, 'line', 'hello')
        """)
    return dict(IPYTHONDIR=str(d), PYTHONPATH=str(lib))

@pytest.fixture(scope='module')
def ckc(profile):
    with start_kernel(env=profile) as (km,kc): yield kc

def test_startup_files_exec_lines_and_extension(ckc):
    assert value(ckc, "(from_startup, from_exec_lines, ext_loaded)") == "(['00', '10'], 7, True)"
    assert ok(ckc, "%hello world")[0]['content']['data'] == {'text/plain': "'magic:world'"}

def test_base_config_applies(ckc):
    outs = ok(ckc, "1\n2")  # ast_node_interactivity = 'all' from ipython_config.py
    assert types(outs) == ['execute_result', 'execute_result'] and [o['content']['data']['text/plain'] for o in outs] == ['1', '2']

def test_display_page_config_shows_pager_output(ckc):
    reply,outs = run(ckc, "len?")
    assert reply['content']['payload'] == [] and types(outs) == ['display_data']
    assert 'Signature' in outs[0]['content']['data']['text/plain']

def test_startup_names_hidden_from_who(ckc):
    outs = ok(ckc, "%who_ls")
    assert 'from_startup' not in outs[0]['content']['data']['text/plain']

def test_broken_config_still_starts(tmp_path):
    write(tmp_path / 'ipd' / 'profile_default' / 'ipython_kernel_config.py', "raise RuntimeError('broken config')\n")
    write(tmp_path / 'ipd' / 'profile_default' / 'startup' / '00.py', "1/0\n")
    with start_kernel(env=dict(IPYTHONDIR=str(tmp_path / 'ipd'))) as (km,kc):
        assert ok(kc, "'alive'")[0]['content']['data'] == {'text/plain': "'alive'"}

# ---- environment flags ----
def started(env, tmp_path):
    "A kernel with `env`, its stderr in a file: returns the context manager and the file's path."
    err = tmp_path / 'stderr.txt'
    return start_kernel(env=dict(IPYTHONDIR=str(tmp_path / 'ipd'), **env), stderr=open(err, 'w')),err

def test_flags_off(tmp_path):
    cm,_ = started(dict(IPYMINI_USE_JEDI='0', IPYMINI_EXPERIMENTAL_COMPLETIONS='0'), tmp_path)
    with cm as (km,kc):
        assert value(kc, "get_ipython().Completer.use_jedi") == 'False'
        ok(kc, "import os")  # without jedi, completion reads the live namespace only
        reply,_ = request(kc, 'complete_request', code="import os\nos.pa", cursor_pos=15)
        c = reply['content']
        check_spec(reply)
        assert c['metadata'] == {} and '.path' in c['matches'] and (c['cursor_start'], c['cursor_end']) == (12, 15)

def test_flags_on(tmp_path):
    cm,_ = started(dict(IPYMINI_USE_JEDI='1', IPYMINI_EXPERIMENTAL_COMPLETIONS='1'), tmp_path)
    with cm as (km,kc):
        assert value(kc, "get_ipython().Completer.use_jedi") == 'True'
        c = request(kc, 'complete_request', code="import os\nos.pa", cursor_pos=15)[0]['content']
        assert '_jupyter_types_experimental' in c['metadata'] and 'path' in c['matches']

BAD = dict(IPYMINI_USE_JEDI='maybe', IPYMINI_EXPERIMENTAL_COMPLETIONS='2', IPYMINI_STOP_ON_ERROR_TIMEOUT='soon',
           IPYMINI_CAPTURE_FD='sometimes', IPYMINI_STREAM_FLUSH_MS='fast', IPYMINI_IOPUB_HWM='0', IPYMINI_IOPUB_BUFFER_MB='-1',
           IPYMINI_IOPUB_STALL_S='inf', IPYMINI_MAX_MESSAGE_BYTES='lots', IPYMINI_DEBUG_TIMEOUT='nan', IPYMINI_ASYNCIO_RUN='perhaps',
           IPYMINI_OUTPUT_LIMIT_MB='huge', IPYMINI_OUTPUT_CACHE_MB='-3')

def test_bad_flag_values_warn_and_use_defaults(tmp_path):
    cm,err = started(BAD, tmp_path)
    with cm as (km,kc):
        assert value(kc, "get_ipython().Completer.use_jedi") == value(kc, "__import__('IPython').core.completer.JEDI_INSTALLED")
        c = request(kc, 'complete_request', code="1", cursor_pos=1)[0]['content']
        assert '_jupyter_types_experimental' in c['metadata']
        check_error(*execute(kc, "1/0"), 'ZeroDivisionError')
        assert execute(kc, "'runs'")[0]['content']['status'] == 'ok'  # timeout 0: nothing queued, nothing aborted
        code = "import os\nos.system('echo from-fd-1')"  # fds still captured: the subprocess's output is the cell's
        assert 'from-fd-1' in ''.join(m['content'].get('text', '') for m in execute(kc, code)[1])
        ok(kc, "import asyncio\nasync def f(): return 'run'\nran = asyncio.run(f())")  # asyncio.run in cells: on
        assert value(kc, "ran") == "'run'"
        ok(kc, "from ipymini import iopub, wire, debugger")
        assert value(kc, "iopub.FLUSH_DELAY, iopub.HWM, iopub.BUFFER >> 20, iopub.STALL, wire.MAX_FRAME >> 20, debugger.TIMEOUT") \
            == '(0.01, 128, 32, 10.0, 256, 10.0)'
        assert value(kc, "get_ipython().kernel.iopub.limit.limit >> 20, get_ipython().displayhook.bound.limit >> 20") == '(4, 16)'
    log = err.read_text()
    for name,v in BAD.items(): assert f"{name}='{v}'" in log, log
    assert 'Traceback' not in log

def test_capture_fd_off(tmp_path):
    "IPYMINI_CAPTURE_FD=0: output written to fd 1 by a subprocess is not the cell's (it goes where the kernel's stdout goes)."
    cm,_ = started(dict(IPYMINI_CAPTURE_FD='0'), tmp_path)
    with cm as (km,kc):
        reply,msgs = execute(kc, "import os\nos.system('echo from-fd-1')\nprint('from print')")
        assert reply['content']['status'] == 'ok'
        assert [m['content']['text'] for m in msgs if m['msg_type'] == 'stream'] == ['from print\n']
        assert value(kc, "get_ipython().kernel.fd_capture is None") == 'True'

def test_stop_on_error_timeout_keeps_aborting(tmp_path):
    cm,_ = started(dict(IPYMINI_STOP_ON_ERROR_TIMEOUT='1'), tmp_path)
    with cm as (km,kc):
        check_error(*execute(kc, "1/0"), 'ZeroDivisionError')
        statuses = []
        while not statuses or statuses[-1] != 'ok':  # sent after the error's reply: aborted for a second, then run
            statuses.append(execute(kc, "'late'")[0]['content']['status'])
            if statuses[-1] == 'aborted': time.sleep(0.05)  # pace the retries, not a wait on the kernel
        assert statuses[0] == 'aborted' and set(statuses[:-1]) == {'aborted'}
        (r1,m1),(r2,m2) = pipeline(kc, tmp_path/'gate', "1/0", "queued = 1")
        check_aborted(r2, m2)
