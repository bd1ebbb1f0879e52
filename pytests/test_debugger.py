"""The debugger: DAP in debug_request/debug_reply on control, debug_event on IOPub, breakpoints in dumped cells."""
import os, time, queue, tempfile, pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from kernel_utils import TIMEOUT, get_reply, types, stdout, start_kernel
from ipymini.dap import murmur2

SEED = 0xC70F6907
CELL = "def f(x):\n    y = x * 2\n    return y + 1\nprint(f(20))\n"
FUNC = "def f(x):\n    y = x * 2\n    z = y + 1\n    return z\nprint(f(20))\n"

class Debug:
    "A debugger front end on one kernel: DAP requests on control; every IOPub message is kept until a wait takes it."
    def __init__(self, kc): self.kc,self.seq,self.kept = kc,0,[]

    def iopub(self, pred, timeout=TIMEOUT, what='message'):
        "Take the first IOPub message (kept or arriving) for which `pred` holds."
        deadline = time.monotonic() + timeout
        while True:
            for i,m in enumerate(self.kept):
                if pred(m): return self.kept.pop(i)
            left = deadline - time.monotonic()
            if left <= 0: raise AssertionError(f"no {what} on IOPub; kept: {[(m['msg_type'], m['content']) for m in self.kept]}")
            try: self.kept.append(self.kc.get_iopub_msg(timeout=min(left, 0.5)))
            except queue.Empty: pass

    def event(self, name, timeout=TIMEOUT):
        return self.iopub(lambda m: m['msg_type'] == 'debug_event' and m['content']['event'] == name, timeout, f'{name} event')['content']

    def until_idle(self, msg_id):
        "The IOPub messages parented to `msg_id`, up to its idle status."
        out = []
        while not out or out[-1]['msg_type'] != 'status' or out[-1]['content']['execution_state'] != 'idle':
            out.append(self.iopub(lambda m: m['parent_header'].get('msg_id') == msg_id, what=f'message for {msg_id}'))
        return out

    def request(self, command, **arguments):
        "Send one DAP request; check the reply's envelope, and busy/idle for it on IOPub; return the DAP response."
        self.seq += 1
        msg = self.kc.session.msg('debug_request', dict(type='request', seq=self.seq, command=command, arguments=arguments))
        self.kc.control_channel.send(msg)
        mid = msg['header']['msg_id']
        reply = get_reply(self.kc, mid, 'control')
        assert reply['msg_type'] == 'debug_reply'
        assert types(self.until_idle(mid)) == ['status', 'status']
        rep = reply['content']
        assert (rep['type'],rep['command'],rep['request_seq']) == ('response', command, self.seq), rep
        return rep

    def ok(self, command, **arguments):
        rep = self.request(command, **arguments)
        assert rep['success'] is True, rep
        return rep.get('body', {})

    def execute(self, code): return self.kc.execute(code)

    def finish(self, msg_id):
        "The execute_reply content and the cell's IOPub messages up to idle."
        return get_reply(self.kc, msg_id, timeout=TIMEOUT)['content'],self.until_idle(msg_id)

    def start(self):
        if self.ok('debugInfo')['isStarted']: return
        body = self.ok('initialize', clientID='pytest', clientName='pytest', adapterID='python', pathFormat='path',
                       linesStartAt1=True, columnsStartAt1=True, supportsVariableType=True, supportsVariablePaging=True)
        assert body['supportsConfigurationDoneRequest'] is True and body['supportsSetExpression'] is True
        self.ok('attach')

    def stop_at(self, code, lines):
        "Dump `code`, break at `lines`, run it: (execute msg_id, cell path, thread id) once it has stopped."
        path = self.ok('dumpCell', code=code)['sourcePath']
        bps = self.ok('setBreakpoints', source=dict(path=path), breakpoints=[dict(line=l) for l in lines], sourceModified=False)['breakpoints']
        assert [(b['verified'], b['line']) for b in bps] == [(True, l) for l in lines]
        mid = self.execute(code)
        ev = self.event('stopped')
        assert ev['body']['reason'] == 'breakpoint'
        return mid,path,ev['body']['threadId']

    def frames(self, tid): return self.ok('stackTrace', threadId=tid)['stackFrames']

    def locals(self, frame_id):
        scopes = self.ok('scopes', frameId=frame_id)['scopes']
        assert [s['name'] for s in scopes] == ['Locals', 'Globals']
        return {v['name']: v['value'] for v in self.ok('variables', variablesReference=scopes[0]['variablesReference'])['variables']}

    def clear(self, path): assert self.ok('setBreakpoints', source=dict(path=path), breakpoints=[], sourceModified=False)['breakpoints'] == []

@pytest.fixture(scope='module')
def dbg(kernel): return Debug(kernel[1])

@pytest.fixture
def started(dbg):
    dbg.start()
    yield dbg
    dbg.kept.clear()

def test_kernel_info_advertises_debugger(dbg):
    msg = dbg.kc.session.msg('kernel_info_request', {})
    dbg.kc.shell_channel.send(msg)
    c = get_reply(dbg.kc, msg['header']['msg_id'])['content']
    assert c['debugger'] is True and 'debugger' in c['supported_features']

def test_debug_info_before_start(kernel, dbg):
    info = dbg.ok('debugInfo')
    prefix = info.pop('tmpFilePrefix')
    assert info == dict(isStarted=False, hashMethod='Murmur2', hashSeed=SEED, tmpFileSuffix='.py', breakpoints=[], stoppedThreads=[],
                        richRendering=True, exceptionPaths=['Python Exceptions'], copyToGlobals=True)
    # JupyterLab names a source `Cell [n]` only when its path contains `ipykernel_`: the folder is named as ipykernel names its own
    assert prefix == os.path.join(tempfile.gettempdir(), f'ipykernel_{kernel[0].provisioner.process.pid}') + os.sep
    for cmd in ('stackTrace', 'setBreakpoints', 'attach', 'continue'):
        rep = dbg.request(cmd, threadId=1)
        assert rep['success'] is False and 'not started' in rep['message']

def test_debugpy_loads_only_when_the_debugger_starts(dbg):
    reply,io = dbg.finish(dbg.execute("import sys; print('debugpy' in sys.modules)"))
    assert reply['status'] == 'ok' and stdout(io) == 'False\n'

def test_murmur2_matches_front_ends():
    # values of the hash JupyterLab computes (and ipykernel's compiler) for these strings with the advertised seed
    for s,h in [('', 3990065800), ('a', 2167009006), ('print(1)\n', 3089598676), ("x = 'é€'", 2749374090)]: assert murmur2(s.encode(), SEED) == h

def test_dump_cell_and_source(dbg):
    prefix = dbg.ok('debugInfo')['tmpFilePrefix']
    path = dbg.ok('dumpCell', code=CELL)['sourcePath']
    assert path == f"{prefix}{murmur2(CELL.encode(), SEED)}.py"
    with open(path, encoding='utf-8') as f: assert f.read() == CELL
    assert dbg.ok('source', source=dict(path=path), sourceReference=0) == dict(content=CELL)
    rep = dbg.request('source', source=dict(path=prefix + 'missing.py'), sourceReference=0)
    assert rep['success'] is False and 'unavailable' in rep['message']
    assert dbg.request('dumpCell', code=3)['success'] is False

def ipykernel_manager():
    "ipykernel (kernelspec python3) started as front ends start it, to compare with."
    try: KernelSpecManager().get_kernel_spec('python3')
    except NoSuchKernel: pytest.fail("ipykernel's kernelspec python3 is missing: pip install -e '.[test]'")
    return start_kernel(kernel_name='python3')

def test_cell_files_named_as_ipykernel_names_them(kernel, dbg):
    "debugInfo's file scheme is ipykernel's with the kernel's own pid: a cell's file is the same path but for the pid."
    def scheme(km, info):
        pid = str(km.provisioner.process.pid)
        return {k: v.replace(pid, 'PID') if k == 'tmpFilePrefix' else v for k,v in info.items() if k.startswith(('tmp', 'hash'))}
    mine = scheme(kernel[0], dbg.ok('debugInfo'))
    with ipykernel_manager() as (km,kc): theirs = scheme(km, Debug(kc).ok('debugInfo'))
    assert mine == theirs
    prefix = mine['tmpFilePrefix'].replace('PID', str(kernel[0].provisioner.process.pid))
    assert dbg.ok('dumpCell', code=CELL)['sourcePath'] == f"{prefix}{murmur2(CELL.encode(), SEED)}.py"

def test_edited_cell_gets_its_own_file(started):
    "A breakpoint is set on the file of the code as it is now: an edited cell stops there, the older version's file stays as it was."
    old,new = CELL,CELL.replace('y + 1', 'y + 2')
    old_path = started.ok('dumpCell', code=old)['sourcePath']
    mid,path,tid = started.stop_at(new, [3])
    assert path != old_path and [(f['line'], f['source']['path']) for f in started.frames(tid)] == [(3, path), (4, path)]
    with open(old_path, encoding='utf-8') as f: assert f.read() == old
    started.clear(path)
    started.ok('continue', threadId=tid)
    reply,io = started.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == '42\n'

def test_breakpoints_after_a_restart():
    "A restarted kernel is a new process: its cell files move to its own folder, and a breakpoint set there is hit."
    with start_kernel() as (km,kc):
        dbg = Debug(kc)
        before = dbg.ok('debugInfo')['tmpFilePrefix']
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=TIMEOUT)
        prefix = dbg.ok('debugInfo')['tmpFilePrefix']
        assert prefix == os.path.join(tempfile.gettempdir(), f'ipykernel_{km.provisioner.process.pid}') + os.sep != before
        dbg.start()
        mid,path,tid = dbg.stop_at(CELL, [2])
        assert path.startswith(prefix) and dbg.frames(tid)[0]['line'] == 2
        dbg.clear(path)
        dbg.ok('continue', threadId=tid)
        reply,io = dbg.finish(mid)
        assert reply['status'] == 'ok' and stdout(io) == '41\n'

def test_initialize_attach_configuration_done(started):
    assert started.ok('debugInfo')['isStarted'] is True
    assert started.ok('configurationDone') == {}
    args = dict(clientID='other', adapterID='python', pathFormat='path', linesStartAt1=True, columnsStartAt1=True)
    # the session that started debugging, again: refused as debugpy (and so ipykernel) refuses it
    assert started.request('initialize', **args) == dict(type='response', request_seq=started.seq, success=False, command='initialize',
                                                          message="Invalid message: Session is already initialized")
    # another client session (a second front end, a reloaded page) joins the running debug session
    other = Debug(started.kc)
    other.kept = started.kept
    other.kc.session.session,mine = 'another-front-end',other.kc.session.session
    try: again = other.ok('initialize', **args)
    finally: other.kc.session.session = mine
    assert again['supportsConfigurationDoneRequest'] is True and other.ok('attach') == {}

def test_set_breakpoints_listed_in_debug_info(started):
    path = started.ok('dumpCell', code=CELL)['sourcePath']
    bps = started.ok('setBreakpoints', source=dict(path=path), breakpoints=[dict(line=2), dict(line=3)], sourceModified=False)['breakpoints']
    assert [(b['verified'], b['line'], b['source']['path']) for b in bps] == [(True, 2, path), (True, 3, path)]
    assert dict(source=path, breakpoints=[dict(line=2), dict(line=3)]) in started.ok('debugInfo')['breakpoints']
    started.clear(path)
    assert all(b['source'] != path for b in started.ok('debugInfo')['breakpoints'])

def test_set_exception_breakpoints(started):
    code = "try:\n    raise KeyError('boom')\nexcept KeyError:\n    print('caught')\n"
    started.ok('dumpCell', code=code)
    assert started.request('setExceptionBreakpoints', filters=['raised'])['success'] is True
    mid = started.execute(code)
    ev = started.event('stopped')
    assert ev['body']['reason'] == 'exception'
    top = started.frames(ev['body']['threadId'])[0]
    assert top['line'] == 2
    started.ok('setExceptionBreakpoints', filters=[])
    started.ok('continue', threadId=ev['body']['threadId'])
    reply,io = started.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == 'caught\n'

def test_breakpoint_stop_inspect_evaluate_continue(started):
    mid,path,tid = started.stop_at(CELL, [3])
    # the stack is the user's: the cell's frames only, none of the kernel's, IPython's or asyncio's
    frames = started.frames(tid)
    assert [(f['name'], f['line'], f['source']['path']) for f in frames] == [('f', 3, path), ('<module>', 4, path)]
    assert started.ok('debugInfo')['stoppedThreads'] == [tid]
    assert started.locals(frames[0]['id']) == dict(x='20', y='40')
    assert started.ok('evaluate', expression='x + y', frameId=frames[0]['id'], context='repl')['result'] == '60'
    assert started.ok('richInspectVariables', variableName='y', frameId=frames[0]['id']) == dict(data={'text/plain': '40'}, metadata={})
    started.ok('copyToGlobals', srcVariableName='y', dstVariableName='y_copy', srcFrameId=frames[0]['id'])
    # the control and shell channels still answer while the cell is stopped
    for ch in ('control', 'shell'):
        msg = started.kc.session.msg('kernel_info_request', {})
        getattr(started.kc, f'{ch}_channel').send(msg)
        assert get_reply(started.kc, msg['header']['msg_id'], ch)['content']['status'] == 'ok'
    started.clear(path)
    assert started.ok('continue', threadId=tid)['allThreadsContinued'] is True
    reply,io = started.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == '41\n'
    # a continue request implies the thread runs again: DAP sends no 'continued' event for it
    assert [m['content']['event'] for m in io if m['msg_type'] == 'debug_event' and m['content']['event'] != 'module'] == []
    assert started.ok('debugInfo')['stoppedThreads'] == []
    reply,io = started.finish(started.execute('y_copy'))
    assert [m['content']['data']['text/plain'] for m in io if m['msg_type'] == 'execute_result'] == ['40']

def test_next_step_in_step_out(started):
    mid,path,tid = started.stop_at(CELL, [4])
    assert started.frames(tid)[0]['line'] == 4
    started.clear(path)
    steps = [('stepIn', 'f', 2), ('next', 'f', 3), ('stepOut', '<module>', 4)]
    for cmd,name,line in steps:
        started.ok(cmd, threadId=tid)
        assert started.event('stopped')['body']['reason'] == 'step'
        top = started.frames(tid)[0]
        assert (cmd, top['name'], top['line']) == (cmd, name, line)
    started.ok('continue', threadId=tid)
    reply,io = started.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == '41\n'

def var(name, value, type_, ref=0): return dict(name=name, value=value, type=type_, evaluateName=name, variablesReference=ref)

def lab_stop(dbg, tid, path, stack):
    "What JupyterLab asks on each `stopped` event: the stack, the top frame's scopes, their Locals. Returns (top frame id, Locals)."
    frames = dbg.frames(tid)
    assert [(f['name'], f['line'], f['source']['path']) for f in frames] == [(n, l, path) for n,l in stack]
    scopes = dbg.ok('scopes', frameId=frames[0]['id'])['scopes']
    assert [(s['name'], s.get('presentationHint')) for s in scopes] == [('Locals', 'locals'), ('Globals', None)]
    return frames[0]['id'],dbg.ok('variables', variablesReference=scopes[0]['variablesReference'])['variables']

def lab_step(dbg, cmd, tid):
    "A step as JupyterLab sees it: an empty reply, a `continued` event, then a `stopped` event."
    assert dbg.ok(cmd, threadId=tid) == {}
    assert dbg.event('continued')['body'] == dict(threadId=tid, allThreadsContinued=True)
    assert dbg.event('stopped')['body'] == dict(reason='step', threadId=tid, preserveFocusHint=False, allThreadsStopped=True)

def lab_flow(dbg):
    "Breakpoint on line 2 of a function; stepIn, next, rich inspection and copyToGlobals of a local, stepOut, continue."
    mid,path,tid = dbg.stop_at(FUNC, [2])
    assert lab_stop(dbg, tid, path, [('f', 2), ('<module>', 5)])[1] == [var('x', '20', 'int')]
    lab_step(dbg, 'stepIn', tid)  # nothing to step into on `y = x * 2`: the next line
    assert lab_stop(dbg, tid, path, [('f', 3), ('<module>', 5)])[1] == [var('x', '20', 'int'), var('y', '40', 'int')]
    lab_step(dbg, 'next', tid)
    fid,local = lab_stop(dbg, tid, path, [('f', 4), ('<module>', 5)])
    assert local == [var('x', '20', 'int'), var('y', '40', 'int'), var('z', '41', 'int')]
    assert dbg.ok('debugInfo')['stoppedThreads'] == [tid]
    assert dbg.ok('richInspectVariables', variableName='z', frameId=fid) == dict(data={'text/plain': '41'}, metadata={})
    assert dbg.ok('copyToGlobals', srcVariableName='z', dstVariableName='z_copy', srcFrameId=fid) == dict(
        value='41', type='int', presentationHint={}, variablesReference=0)
    lab_step(dbg, 'stepOut', tid)
    assert var('z_copy', '41', 'int') in lab_stop(dbg, tid, path, [('<module>', 5)])[1]
    dbg.clear(path)
    assert dbg.ok('continue', threadId=tid) == dict(allThreadsContinued=True)
    reply,io = dbg.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == '41\n'
    assert dbg.ok('debugInfo')['stoppedThreads'] == []
    reply,io = dbg.finish(dbg.execute('print(z_copy)'))
    assert stdout(io) == '41\n'

def test_jupyterlab_stepping_flow(started): lab_flow(started)

# Runs in the kernel before its debug session: each step's reply is handed to the control thread only after debugpy's
# `stopped` event for that step was handled, an order debugpy may send them in (it resumes the thread before it answers)
HOLD_STEP_REPLIES = """
def _hold_step_replies():
    import threading, ipymini.debugger as D
    stopped,steps = threading.Event(),set()
    send,wait,on_event = D.DAPClient.send,D.DAPClient.wait,D.Debugger.on_event
    def held_send(self, command, arguments=None, answer=True):
        step = command in ('stepIn', 'next', 'stepOut')
        if step: stopped.clear()
        seq = send(self, command, arguments, answer)
        if step: steps.add(seq)
        return seq
    def held_wait(self, seq, timeout=D.TIMEOUT):
        rep = wait(self, seq, timeout)
        if seq in steps: stopped.wait(timeout)
        return rep
    def seen(self, event):
        on_event(self, event)
        if event.get('event') == 'stopped': stopped.set()
    D.DAPClient.send,D.DAPClient.wait,D.Debugger.on_event = held_send,held_wait,seen
_hold_step_replies()
"""

def test_stepping_flow_when_the_stop_comes_before_the_step_reply():
    "A thread stopped again before its step's reply is in is still stopped: its Locals come from debugpy, not the namespace."
    with start_kernel() as (km,kc):
        dbg = Debug(kc)
        reply,_ = dbg.finish(dbg.execute(HOLD_STEP_REPLIES))
        assert reply['status'] == 'ok'
        dbg.start()
        lab_flow(dbg)

def test_pause_then_evaluate_to_end_a_loop(started):
    code = "import time\nstop = False\nprint('looping')\nwhile not stop:\n    time.sleep(0.01)\nprint('left the loop')\n"
    path = started.ok('dumpCell', code=code)['sourcePath']
    mid = started.execute(code)
    started.iopub(lambda m: m['msg_type'] == 'stream' and m['parent_header'].get('msg_id') == mid, what='looping')
    started.ok('pause', threadId=1)
    ev = started.event('stopped')
    assert ev['body']['reason'] == 'pause'
    top = started.frames(ev['body']['threadId'])[0]
    assert (top['name'], top['source']['path']) == ('<module>', path) and top['line'] in (4, 5)
    started.ok('evaluate', expression='stop = True', frameId=top['id'], context='repl')
    started.ok('continue', threadId=ev['body']['threadId'])
    reply,io = started.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == 'left the loop\n'

def test_interrupt_while_stopped_resumes_then_interrupts(started):
    code = "import time\nx = 1\nwhile True:\n    time.sleep(0.01)\n"
    mid,path,tid = started.stop_at(code, [2])
    started.clear(path)
    msg = started.kc.session.msg('interrupt_request', {})
    started.kc.control_channel.send(msg)
    assert get_reply(started.kc, msg['header']['msg_id'], 'control')['content']['status'] == 'ok'
    assert started.event('continued')['body'] == dict(threadId=tid, allThreadsContinued=True)  # the front end did not ask: it is told
    reply,io = started.finish(mid)
    assert (reply['status'], reply['ename']) == ('error', 'KeyboardInterrupt')
    assert started.ok('debugInfo')['stoppedThreads'] == []
    # debugging goes on: the interrupt did not land inside the debugger's tracer
    mid,path,tid = started.stop_at(CELL, [3])
    started.clear(path)
    started.ok('continue', threadId=tid)
    reply,io = started.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == '41\n'

def test_inspect_variables_while_running(started):
    reply,_ = started.finish(started.execute("alpha = 7\nbeta = {'k': [1, 2]}\nbig = list(range(10**6))"))
    assert reply['status'] == 'ok'
    vs = {v['name']: v for v in started.ok('inspectVariables')['variables']}
    assert {k: (v['value'], v['type']) for k,v in vs.items() if k in ('alpha', 'beta')} == dict(alpha=('7', 'int'), beta=("{'k': [1, 2]}", 'dict'))
    assert not {'In', 'Out', 'get_ipython', 'exit', 'quit', '_', '_i', '__name__', '__builtins__'} & set(vs)
    assert vs['alpha']['variablesReference'] == 0
    assert vs['big']['value'].startswith('[0, 1, 2') and vs['big']['value'].endswith('...]') and len(vs['big']['value']) < 1000
    kids = started.ok('variables', variablesReference=vs['beta']['variablesReference'])['variables']
    assert [(v['name'], v['value'], v['evaluateName']) for v in kids] == [("'k'", '[1, 2]', "beta['k']")]
    grandkids = started.ok('variables', variablesReference=kids[0]['variablesReference'])['variables']
    assert [(v['name'], v['value'], v['evaluateName']) for v in grandkids] == [('0', '1', "beta['k'][0]"), ('1', '2', "beta['k'][1]")]
    assert started.ok('richInspectVariables', variableName='alpha') == dict(data={'text/plain': '7'}, metadata={})
    assert started.ok('richInspectVariables', variableName='special variables') == dict(data={}, metadata={})
    rep = started.request('copyToGlobals', srcVariableName='alpha', dstVariableName='gamma', srcFrameId=1)
    assert rep['success'] is False and 'stopped' in rep['message']

def test_modules(started):
    body = started.ok('modules')
    mods = {m['name']: m['path'] for m in body['modules']}
    assert mods['ipymini.kernel'].endswith(os.path.join('ipymini', 'kernel.py'))
    assert body['totalModules'] >= len(body['modules']) > 10
    assert len(started.ok('modules', startModule=0, moduleCount=5)['modules']) <= 5

def test_bad_debug_requests_get_error_responses(started):
    for content in (dict(type='request', seq=1), dict(type='request', seq=1, command=7), dict(type='request', seq=1, command='evaluate', arguments=[1])):
        msg = started.kc.session.msg('debug_request', content)
        started.kc.control_channel.send(msg)
        reply = get_reply(started.kc, msg['header']['msg_id'], 'control')
        assert reply['msg_type'] == 'debug_reply' and reply['content']['success'] is False and reply['content']['message']
    assert started.request('noSuchCommand')['success'] is False
    assert 'attach' in started.request('launch', program='x.py')['message']
    assert started.ok('debugInfo')['isStarted'] is True

def test_terminate_ends_the_session_not_the_kernel(started):
    mid,path,tid = started.stop_at(CELL, [3])
    started.ok('terminate')
    started.event('terminated')
    reply,io = started.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == '41\n'
    info = started.ok('debugInfo')
    assert (info['isStarted'], info['breakpoints'], info['stoppedThreads']) == (False, [], [])
    reply,io = started.finish(started.execute(CELL))  # no session, no breakpoint: the cell just runs
    assert reply['status'] == 'ok' and stdout(io) == '41\n'

def test_disconnect_then_start_again(started):
    path = started.ok('dumpCell', code=CELL)['sourcePath']
    started.ok('setBreakpoints', source=dict(path=path), breakpoints=[dict(line=3)], sourceModified=False)
    started.ok('disconnect', restart=False, terminateDebuggee=True)  # the kernel ignores terminateDebuggee: it outlives its debug sessions
    info = started.ok('debugInfo')
    assert (info['isStarted'], info['breakpoints']) == (False, [])
    reply,io = started.finish(started.execute(CELL))
    assert reply['status'] == 'ok' and stdout(io) == '41\n'
    started.start()
    mid,path,tid = started.stop_at(CELL, [2])
    assert started.frames(tid)[0]['line'] == 2
    started.clear(path)
    started.ok('continue', threadId=tid)
    reply,io = started.finish(mid)
    assert reply['status'] == 'ok' and stdout(io) == '41\n'

def test_shutdown_removes_cell_files(kernel, dbg):
    # last in this module: it ends the module's kernel
    prefix = dbg.ok('debugInfo')['tmpFilePrefix']
    assert os.path.isdir(prefix)
    msg = dbg.kc.session.msg('shutdown_request', dict(restart=False))
    dbg.kc.control_channel.send(msg)
    assert get_reply(dbg.kc, msg['header']['msg_id'], 'control')['content']['status'] == 'ok'
    assert kernel[0].provisioner.process.wait(timeout=TIMEOUT) == 0
    assert not os.path.exists(prefix)
