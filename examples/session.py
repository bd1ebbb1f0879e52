"""A real kernel session: start ipymini through jupyter_client as front ends do, run a few cells, print what comes back."""
import sys
from jupyter_client.manager import start_new_kernel

CELLS = ["import sys; print('Python', sys.version.split()[0])", "sum(range(10))", "from IPython.display import HTML; HTML('<b>bold</b>')",
         "1/0", "import asyncio; await asyncio.sleep(0.1); 'awaited'"]

def show(msg):
    t,c = msg['msg_type'],msg['content']
    if t == 'stream': print(f"  {c['name']}: {c['text']}", end='')
    elif t in ('execute_result', 'display_data'): print(f"  {t}: {sorted(c['data'])} -> {c['data']['text/plain']}")
    elif t == 'error': print(f"  error: {c['ename']}: {c['evalue']}")

def main(kernel_name='ipymini'):
    km,kc = start_new_kernel(kernel_name=kernel_name)
    info = kc.kernel_info(reply=True)['content']
    print(f"{info['implementation']} {info['implementation_version']}, protocol {info['protocol_version']}")
    try:
        for code in CELLS:
            print(f"In: {code}")
            reply = kc.execute_interactive(code, output_hook=show, timeout=30)
            print(f"  -> {reply['content']['status']} [{reply['content']['execution_count']}]")
    finally:
        kc.stop_channels()
        km.shutdown_kernel()

if __name__ == '__main__': main(*sys.argv[1:])
