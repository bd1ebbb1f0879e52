"""ipywidgets 8 over comms: widget models opened from Python, state from the front end observed in Python, Output, interact."""
import uuid
import pytest
from kernel_utils import execute, types, stdout, parent_id
from test_comms import comm_send, value

pytest.importorskip('ipywidgets')

def opened(msgs, model):
    "The comm_open messages of widget models named `model`."
    return [m for m in msgs if m['msg_type'] == 'comm_open' and m['content']['data']['state'].get('_model_name') == model]

def update(kc, comm_id, buffers=(), buffer_paths=(), **state):
    "A front end's state update for widget `comm_id`; returns the IOPub messages it caused, up to idle."
    return comm_send(kc, 'comm_msg', buffers, comm_id=comm_id, data=dict(method='update', state=state, buffer_paths=list(buffer_paths)))

def output_ids(msgs):
    "The msg_id values an Output widget announced (the request whose output it captures, '' when it stops)."
    return [m['content']['data']['state']['msg_id'] for m in msgs if m['msg_type'] == 'comm_msg' and 'msg_id' in m['content']['data'].get('state', {})]

def test_slider_state_from_front_end(kc):
    reply,msgs = execute(kc, "import ipywidgets as w\ns = w.IntSlider(value=3)\nseen = []\ns.observe(lambda ch: seen.append(ch['new']), 'value')\ns")
    assert reply['content']['status'] == 'ok'
    [sl] = opened(msgs, 'IntSliderModel')
    assert sl['content']['target_name'] == 'jupyter.widget' and sl['content']['data']['state']['value'] == 3
    cid = sl['content']['comm_id']
    [res] = [m for m in msgs if m['msg_type'] == 'execute_result']
    assert res['content']['data']['application/vnd.jupyter.widget-view+json']['model_id'] == cid
    msgs = update(kc, cid, value=7)
    # ipywidgets 8 echoes the accepted state back, parented to the update
    assert types(msgs) == ['status', 'comm_msg', 'status']
    assert msgs[1]['content']['data'] == dict(method='echo_update', state=dict(value=7), buffer_paths=[])
    assert value(kc, "(seen, s.value)") == ([7], 7)
    reply,msgs = execute(kc, "s.value = 9")
    assert [m['content']['data'] for m in msgs if m['msg_type'] == 'comm_msg'] == [dict(method='update', state=dict(value=9), buffer_paths=[])]

def test_binary_state_from_front_end(kc):
    reply,msgs = execute(kc, "import ipywidgets as w\nimg = w.Image(format='png')")
    [im] = opened(msgs, 'ImageModel')
    data = bytes(range(256))
    update(kc, im['content']['comm_id'], buffers=[data], buffer_paths=[['value']])
    assert value(kc, "bytes(img.value)") == data

def test_binary_state_to_front_end(kc):
    reply,msgs = execute(kc, "import ipywidgets as w\nimg2 = w.Image(value=bytes([1, 2, 3]), format='png')")
    [im] = opened(msgs, 'ImageModel')
    assert im['content']['data']['buffer_paths'] == [['value']] and [bytes(b) for b in im['buffers']] == [b'\x01\x02\x03']

def test_output_widget_captures(kc):
    reply,msgs = execute(kc, "import ipywidgets as w\nout = w.Output()\ndisplay(out)\nwith out: print('inside')\nprint('outside')")
    mid = reply['parent_header']['msg_id']
    assert types(msgs) == ['status', 'execute_input', 'comm_open', 'comm_open', 'display_data', 'comm_msg', 'stream', 'comm_msg', 'stream', 'status']
    # the front end routes output parented to the announced msg_id into the widget: the print inside comes between the two
    assert output_ids(msgs) == [mid, ''] and [m['content']['text'] for m in msgs if m['msg_type'] == 'stream'] == ['inside\n', 'outside\n']
    assert all(parent_id(m) == mid for m in msgs)

def test_interact(kc):
    reply,msgs = execute(kc, "from ipywidgets import interact\ndef f(x): print('x =', x)\nui = interact(f, x=5)")
    mid = reply['parent_header']['msg_id']
    assert reply['content']['status'] == 'ok' and stdout(msgs) == 'x = 5\n'
    [sl] = opened(msgs, 'IntSliderModel')
    assert sl['content']['data']['state']['value'] == 5 and output_ids(msgs) == [mid, '']
    assert 'clear_output' in types(msgs) and any(m['msg_type'] == 'display_data' for m in msgs)
    msgs = update(kc, sl['content']['comm_id'], value=8)
    uid = parent_id(msgs[0])
    # the function runs again on the update; its output is parented to the update and announced to the Output widget
    assert stdout(msgs) == 'x = 8\n' and output_ids(msgs) == [uid, ''] and all(parent_id(m) == uid for m in msgs)

def test_control_comm_request_states(kc):
    reply,msgs = execute(kc, "import ipywidgets as w\ns2 = w.IntSlider(value=11)")
    [sl] = opened(msgs, 'IntSliderModel')
    cid = uuid.uuid4().hex
    comm_send(kc, 'comm_open', metadata=dict(version='1.0.0'), comm_id=cid, target_name='jupyter.widget.control', data={})
    msgs = comm_send(kc, 'comm_msg', comm_id=cid, data=dict(method='request_states'))
    [st] = [m for m in msgs if m['msg_type'] == 'comm_msg']
    assert st['content']['comm_id'] == cid and st['content']['data']['method'] == 'update_states'
    assert st['content']['data']['states'][sl['content']['comm_id']]['state']['value'] == 11
