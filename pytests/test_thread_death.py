"""A kernel thread that dies on an exception (shell, control, stdin, IOPub, heartbeat, fd capture) is logged with its traceback
and stops the kernel, exit status 1, so the front end's restarter brings up a new one; the kernel never half answers. A user's
thread that dies prints its traceback to the cell, as in ipykernel, and the kernel serves on."""
import os, re, pytest
from kernel_utils import start_kernel, execute, get_reply, stdout, exit_status

# how a cell breaks each thread: the thread runs the broken piece when the test then wakes it
BREAK = dict(shell="k.shell_ch.on_wake = boom", control="k.control_ch.on_wake = boom", stdin="k.stdin_ch.on_wake = boom",
             iopub="k.iopub.channel.on_wake = boom", heartbeat="k.stop_heartbeat()",
             # a child writes to fd 1 once the test says so, after the cell: no end-of-cell flush of the cell's own can drain it first
             fdcapture="import subprocess\nk.fd_capture.wait = None\nsubprocess.Popen(['sh', '-c', 'read x < go; echo wake the fd thread'])")
NAMES = dict(shell='ipymini-shell', control='ipymini-control', stdin='ipymini-stdin', iopub='ipymini-iopub', heartbeat='ipymini-heartbeat',
             fdcapture='ipymini-fdcapture')

def wake(kc, which, tmp):
    "Send the thread something to do (a thread that already died takes no notice)."
    if which == 'control': kc.control_channel.send(kc.session.msg('kernel_info_request'))
    elif which == 'stdin': kc.input('x')
    elif which == 'iopub': kc.execute("print('wake iopub')")
    elif which == 'fdcapture': (tmp/'go').write_text('now\n')

@pytest.mark.parametrize('which', list(BREAK))
def test_vital_thread_death_stops_the_kernel(which, tmp_path):
    err = tmp_path/'stderr.txt'
    os.mkfifo(tmp_path/'go')
    with start_kernel(stderr=open(err, 'w'), cwd=tmp_path) as (km,kc):
        code = f"k = get_ipython().kernel\ndef boom(*a, **kw): raise RuntimeError('broken on purpose')\n{BREAK[which]}"
        mid = kc.execute(code)
        # the shell thread dies as it wakes to send this cell's reply; the others are woken by what the test sends next
        if which != 'shell': assert get_reply(kc, mid)['content']['status'] == 'ok'
        wake(kc, which, tmp_path)
        assert exit_status(km.provisioner.process, err) == 1
        assert not km.is_alive()
    log = err.read_text()
    assert f"thread {NAMES[which]} died; stopping the kernel" in log, log
    assert 'Traceback' in log and dict(heartbeat='RuntimeError: the heartbeat stopped while the kernel serves', fdcapture="AttributeError: 'NoneType' object has no attribute 'poll'").get(
        which, 'RuntimeError: broken on purpose') in log, log

def test_user_thread_death_goes_to_the_cell():
    with start_kernel() as (km,kc):
        reply,msgs = execute(kc, "import threading\nt = threading.Thread(target=lambda: 1/0, name='mine')\nt.start()\nt.join()")
        assert reply['content']['status'] == 'ok'
        text = ''.join(m['content']['text'] for m in msgs if m['msg_type'] == 'stream' and m['content']['name'] == 'stderr')
        text = re.sub(r'\x1b\[[0-9;]*m', '', text)  # Python 3.13+ colours tracebacks under FORCE_COLOR, which the kernel sets as ipykernel does
        assert 'Exception in thread mine' in text and 'ZeroDivisionError: division by zero' in text
        assert stdout(execute(kc, "print('still serving')")[1]) == 'still serving\n'
        assert km.is_alive()
