"""Enterprise Gateway timings, ipymini beside ipykernel in one run: from EG's start request to the first execute reply, from a restart
request to the first reply after it, and a shutdown (DELETE answered; every process of the kernel gone). A real EG 3.3.0 on 127.0.0.1
(pytests/gateway_utils.py: its own venv, DistributedProcessProxy on localhost), once with EG's default EG_POLL_INTERVAL (0.5 s) and
once with a small one. Medians of N rounds, the order of the kernels rotating, after one start of each that is not counted.

    .venv/bin/python tools/gateway_bench.py [--rounds N] [--poll 0.5,0.05] [--json PATH]"""
import argparse, json, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent/'pytests'))
from kernel_utils import use_private_home
from gateway_utils import SPECS, Gateway, Watch, group

def first_reply(gw, kid):
    "Open the kernel's websocket and run `1`: the execute_reply's arrival (monotonic), and the kernel's process group."
    with gw.channels(kid) as ws:
        reply,iopub = ws.execute('import os; os.getpgid(0)')
        t = time.monotonic()
        assert reply['content']['status'] == 'ok', reply
        return t,int(next(m for m in iopub if m['msg_type'] == 'execute_result')['content']['data']['text/plain'])

def round_(gw, impl):
    "One kernel's life: {figure: seconds}."
    t0 = time.monotonic()
    kid = gw.start_kernel(SPECS[impl])['id']
    t1,_ = first_reply(gw, kid)
    t2 = time.monotonic()
    status,_ = gw.api('POST', f'/kernels/{kid}/restart')
    assert status == 200, status
    t3,pgid = first_reply(gw, kid)
    left = Watch(group(pgid))
    t4 = time.monotonic()
    assert gw.api('DELETE', f'/kernels/{kid}')[0] == 204
    t5 = time.monotonic()
    assert left.wait() == [], "processes left after the shutdown"
    return {'start to first execute reply': t1 - t0, 'restart to first execute reply': t3 - t2, 'shutdown (DELETE answered)': t5 - t4,
            'shutdown (every process gone)': time.monotonic() - t4}

def bench(poll, rounds):
    "{impl: {figure: [seconds]}} for one EG with EG_POLL_INTERVAL `poll`."
    out = {impl: {} for impl in SPECS}
    with tempfile.TemporaryDirectory(prefix='ipymini-gwbench-') as tmp, Gateway(tmp, poll_interval=poll) as gw:
        for impl in SPECS: round_(gw, impl)  # EG's first start makes its key pair; each kernel's files come into the page cache
        for i in range(rounds):
            for impl in (list(SPECS) if i % 2 == 0 else list(SPECS)[::-1]):
                for k,v in round_(gw, impl).items(): out[impl].setdefault(k, []).append(v)
    return out

def table(poll, res):
    rows = [f"EG_POLL_INTERVAL={poll} s, medians of {len(next(iter(res['ipymini'].values())))} rounds (ms)",
            f"{'figure':34} {'ipymini':>8} {'ipykernel':>10} {'ipymini/ipykernel':>18}"]
    for k in res['ipymini']:
        a,b = statistics.median(res['ipymini'][k]) * 1e3,statistics.median(res['ipykernel'][k]) * 1e3
        rows.append(f"{k:34} {a:8.0f} {b:10.0f} {a / b:17.2f}x")
    return '\n'.join(rows)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--poll', default='0.5,0.05', help="EG_POLL_INTERVAL values, one EG each (comma-separated seconds)")
    p.add_argument('--json', help="write every sample here")
    a = p.parse_args()
    use_private_home()  # the kernels' IPython and Jupyter folders go to a temp dir, not the user's
    every = {}
    for poll in a.poll.split(','):
        every[poll] = res = bench(float(poll), a.rounds)
        print(table(poll, res), flush=True)
        print()
    if a.json: Path(a.json).write_text(json.dumps(every, indent=1))

if __name__ == '__main__': main()
