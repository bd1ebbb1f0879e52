"""Runaway output (IPYMINI_OUTPUT_LIMIT_MB, default 4): past the limit a request's stream sends no more text; the whole text goes
to a file, and one display (updated, same display_id) says how much was held back, where the file is, and shows the last
lines. ipykernel sends every line as stream text."""
import os, re, time, pytest
from kernel_utils import start_kernel, execute, get_reply, iopub_until_idle, interrupt, types, TIMEOUT

LIMIT = 0.05  # MB: 52428 characters
CHARS = int(LIMIT * 2**20)
NOTE = re.compile(r"\[ipymini: ([\d,]+) more characters of (stdout|stderr) held back past 0\.05 MB of output \(IPYMINI_OUTPUT_LIMIT_MB\); "
                  r"the whole text is in (\S+)\. The last lines:\]\n")

def lines(n, start=0): return ''.join(f'{i}\n' for i in range(start, n))

def streamed(msgs, name='stdout'): return ''.join(m['content']['text'] for m in msgs if m['msg_type'] == 'stream' and m['content']['name'] == name)

def shown(msgs):
    "The overflow displays: [(msg_type, display_id, text)]"
    return [(m['msg_type'], m['content']['transient']['display_id'], m['content']['data']['text/plain'])
            for m in msgs if m['msg_type'] in ('display_data', 'update_display_data')]

def check_overflow(msgs, full, name='stdout', whole_lines=True):
    "Head streamed (at a line's end when the text that crossed the limit had one) within the limit, then one display updated to the end; the file holds every character. Returns the path."
    head = streamed(msgs, name)
    assert full.startswith(head) and (head.endswith('\n') or not whole_lines) and CHARS - 10 <= len(head) <= CHARS
    ds = [d for d in shown(msgs) if f' of {name} held' in d[2]]
    assert ds[0][0] == 'display_data' and {t for t,_,_ in ds[1:]} <= {'update_display_data'} and len({i for _,i,_ in ds}) == 1
    first_display = next(i for i,m in enumerate(msgs) if m['msg_type'] == 'display_data' and f' of {name} held' in m['content']['data']['text/plain'])
    last_stream = max(i for i,m in enumerate(msgs) if m['msg_type'] == 'stream' and m['content']['name'] == name)
    assert last_stream < first_display  # the head, then the display that follows it
    m = NOTE.match(ds[-1][2])
    assert m and m[2] == name and int(m[1].replace(',', '')) == len(full) - len(head)
    tail = ds[-1][2][m.end():]
    assert full.endswith(tail) and 0 < len(tail) <= 1 << 15 and (full[:-len(tail)].endswith('\n') or '\n' not in full[:-1][-len(tail):])  # from a line's start
    with open(m[3], encoding='utf-8') as f: assert f.read() == full
    return m[3]

@pytest.fixture(scope='module')
def kc():
    with start_kernel(env=dict(IPYMINI_OUTPUT_LIMIT_MB=str(LIMIT))) as (km,kc): yield kc

def test_runaway_print_is_held_back_to_a_file(kc):
    reply,msgs = execute(kc, "for i in range(200000): print(i)")
    assert reply['content']['status'] == 'ok'
    assert types(msgs).count('status') == 2 and types(msgs)[0] == 'status' and types(msgs)[-1] == 'status'
    path = check_overflow(msgs, lines(200000))
    assert os.path.dirname(path) == os.path.join(os.environ['JUPYTER_RUNTIME_DIR'], 'ipymini-output')
    assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0  # the user's alone

def test_next_cell_has_its_own_budget(kc):
    execute(kc, "for i in range(20000): print(i)")
    reply,msgs = execute(kc, "print('after')")
    assert streamed(msgs) == 'after\n' and not shown(msgs)
    code = "lim = get_ipython().kernel.iopub.limit\nheld = len(lim.sent), len(lim.over)\nprint(held)"
    assert streamed(execute(kc, code)[1]) == '(0, 0)\n'  # every ended request forgotten: nothing held for it

def test_under_the_limit_nothing_changes(kc):
    reply,msgs = execute(kc, f"import sys\nfor i in range(5000): print(i)\nsys.stdout.write('x' * {CHARS - len(lines(5000))})")
    assert streamed(msgs) == lines(5000) + 'x' * (CHARS - len(lines(5000))) and not shown(msgs)

def test_stdout_and_stderr_each_their_own(kc):
    reply,msgs = execute(kc, "import sys\nfor i in range(20000): print(i); print(i, file=sys.stderr)")
    check_overflow(msgs, lines(20000), 'stdout', whole_lines=False)  # print's two writes, interleaved: the limit may fall between
    check_overflow(msgs, lines(20000), 'stderr', whole_lines=False)

def test_one_big_write(kc):
    reply,msgs = execute(kc, "print('y' * 200000)")
    check_overflow(msgs, 'y' * 200000 + '\n', whole_lines=False)  # no line's end to cut at: the head is the line's start

def test_interrupt_lands_during_runaway_output(kc):
    msg_id = kc.execute("while True: print('z' * 99)")
    while True:  # wait until the output is past the limit: the display says so
        m = kc.get_iopub_msg(timeout=TIMEOUT)
        if m['parent_header'].get('msg_id') == msg_id and m['msg_type'] == 'display_data': break
    interrupt(kc)
    reply = get_reply(kc, msg_id)
    assert reply['content']['status'] == 'error' and reply['content']['ename'] == 'KeyboardInterrupt'
    rest = iopub_until_idle(kc, msg_id)
    last = shown(rest)[-1][2]
    # print writes the text and then its end: the interrupt may land between the two
    assert NOTE.match(last) and last.endswith(('z' * 99 + '\n', 'z' * 99))
    assert streamed(execute(kc, "print('alive')")[1]) == 'alive\n'

def test_old_files_removed(tmp_path):
    out = tmp_path/'runtime'/'ipymini-output'
    out.mkdir(parents=True)
    old,recent = out/'old-stdout.txt',out/'recent-stdout.txt'
    for p,days in ((old, 8), (recent, 6)):
        p.write_text('x')
        t = time.time() - days * 86400
        os.utime(p, (t, t))
    with start_kernel(env=dict(IPYMINI_OUTPUT_LIMIT_MB=str(LIMIT), JUPYTER_RUNTIME_DIR=str(tmp_path/'runtime'))) as (km,kc):
        check_overflow(execute(kc, "for i in range(20000): print(i)")[1], lines(20000))
    assert not old.exists() and recent.exists()

def test_zero_turns_it_off():
    with start_kernel(env=dict(IPYMINI_OUTPUT_LIMIT_MB='0')) as (km,kc):
        reply,msgs = execute(kc, "for i in range(200000): print(i)")
        assert streamed(msgs) == lines(200000) and not shown(msgs)

def test_ipykernel_streams_it_all():
    "The reference: ipykernel sends every character as stream text."
    with start_kernel(kernel_name='python3') as (km,kc):
        reply,msgs = execute(kc, "for i in range(200000): print(i)")
        assert streamed(msgs) == lines(200000) and not shown(msgs)
