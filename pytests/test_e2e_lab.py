"""JupyterLab in headless Chromium: open a notebook on ipymini, run cells, answer input(), move a widget, look at the page."""
import os, re, json, shutil, contextlib, uuid
from pathlib import Path
import pytest
from test_e2e_clients import need, free_port, jupyter_env, serve, JUPYTER

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
TIMEOUT_MS = 60_000
DISPLAY_NAME = 'Python 3 (ipymini)'
# Debian's chromium, never a browser download: no sandbox (root), nothing fetched in the background
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--no-first-run', '--disable-quic']
# Lab settings for a quiet, deterministic page: no news or update toasts, every cell rendered (no virtual scrolling)
LAB_SETTINGS = {'apputils-extension/notification': dict(fetchNews='false', checkForUpdates=False),
                'notebook-extension/tracker': dict(windowingMode='none')}
# where to write the screenshots README shows: `IPYMINI_SCREENSHOTS=docs/screenshots pytest -m browser` refreshes them
SHOTS = os.environ.get('IPYMINI_SCREENSHOTS')

def chromium():
    "Debian's chromium: missing, the browser tests skip, or fail under CI (which installs it)."
    path = shutil.which('chromium')
    if path: return path
    if os.environ.get('CI'): pytest.fail("chromium missing: apt-get install -y chromium", pytrace=False)
    pytest.skip("chromium missing: apt-get install -y chromium")

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 with its own config, data and runtime dirs: yields (url with token, notebook dir, temp dir)."
    chromium(), need('playwright.sync_api')  # before the server starts: no browser, no server
    tmp = tmp_path_factory.mktemp('lab')
    env,root = jupyter_env(tmp),tmp/'notebooks'
    root.mkdir()
    for name,v in LAB_SETTINGS.items():
        f = Path(env['JUPYTER_CONFIG_DIR'])/'lab'/'user-settings'/'@jupyterlab'/f'{name}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(v))
    port,token = free_port(),uuid.uuid4().hex
    args = [JUPYTER, 'lab', '--no-browser', '--allow-root', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}', '--ServerApp.port_retries=0',
            f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}', '--LabApp.news_url=None', '--LabApp.extension_manager=readonly',
            '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate']
    with serve(args, f'http://127.0.0.1:{port}/api/status?token={token}', tmp, env): yield f'http://127.0.0.1:{port}/lab?token={token}',root,tmp

class Notebook:
    "A notebook open in the page; `run` types code into its last (empty) cell and runs it with Shift+Enter."
    def __init__(self, page, shots):
        self.page,self.shots,self.ncells = page,shots,1
        from playwright.sync_api import expect
        self.expect = expect

    def cell(self, i): return self.page.locator('.jp-Notebook .jp-Cell').nth(i)

    def run(self, code, wait=True):
        "Run `code` in a new cell; returns the cell's output area (once the cell finished, unless `wait` is False)."
        i = self.ncells - 1
        self.cell(i).locator('.cm-content').click()
        self.page.keyboard.insert_text(code)  # inserted, not typed: the editor adds no indent or closing brackets of its own
        self.expect(self.cell(i).locator('.cm-content')).to_have_text(code.replace('\n', ''))
        self.page.keyboard.press('Shift+Enter')
        self.ncells += 1
        if wait: self.finished(i)
        return self.cell(i).locator('.jp-OutputArea')

    def finished(self, i):
        "Wait until cell `i` shows its execution count: cells run once each, in order, so that is i+1."
        self.expect(self.cell(i).locator('.jp-InputArea-prompt')).to_have_text(f'[{i+1}]:')

    def shot(self, name, **kw):
        "Save a screenshot in the test's temp dir, and under $IPYMINI_SCREENSHOTS when set."
        self.page.screenshot(path=self.shots/name, **kw)
        if SHOTS: shutil.copy(self.shots/name, Path(SHOTS)/name)

@pytest.fixture(scope='module')
def nb(lab):
    "Chromium on a new notebook created from the launcher's ipymini card, its kernel idle."
    pw = need('playwright.sync_api')
    url,root,tmp = lab
    with pw.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp/'chromium-profile'), executable_path=chromium(), headless=True, args=CHROMIUM_ARGS,
                                                   viewport=dict(width=1280, height=900))
        try:
            page = ctx.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            pw.expect.set_options(timeout=TIMEOUT_MS)
            page.goto(url)
            card = page.locator(f'.jp-LauncherCard[data-category="Notebook"][title="{DISPLAY_NAME}"]')
            pw.expect(card).to_be_visible()
            notebook = Notebook(page, tmp)
            notebook.shot('lab-launcher.png')
            card.click()
            pw.expect(page.locator('.jp-NotebookPanel-toolbar .jp-Toolbar-kernelName')).to_have_text(DISPLAY_NAME)
            pw.expect(page.locator('.jp-Notebook-ExecutionIndicator')).to_have_attribute('data-status', 'idle')
            page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current').click()  # fold the file browser away: more room for the notebook
            yield notebook
        except Exception:
            with contextlib.suppress(Exception): page.screenshot(path=tmp/'failure.png')
            raise
        finally: ctx.close()
        assert (root/'Untitled.ipynb').exists()

def test_kernel_is_ipymini(nb):
    out = nb.run('import sys\nprint(type(get_ipython().kernel).__module__.split(".")[0], sys.version_info[0])')
    nb.expect(out).to_have_text('ipymini 3')
    nb.expect(nb.page.locator('.jp-StatusBar-TextItem', has_text=DISPLAY_NAME)).to_have_text(f'{DISPLAY_NAME} | Idle')

def test_print(nb):
    out = nb.run('for i in range(3):\n    print(f"line {i}")')
    nb.expect(out.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stdout"]')).to_have_text('line 0\nline 1\nline 2')

def test_html_table(nb):
    "An object with _repr_html_ (as a pandas DataFrame has) shows as a table."
    out = nb.run('class Table:\n'
                 '    def __init__(self, rows): self.rows = rows\n'
                 '    def _repr_html_(self):\n'
                 '        body = "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a,b in self.rows)\n'
                 '        return f"<table><thead><tr><th>planet</th><th>moons</th></tr></thead><tbody>{body}</tbody></table>"\n'
                 'Table([("Earth", 1), ("Mars", 2), ("Jupiter", 95)])')
    table = out.locator('.jp-RenderedHTMLCommon table')
    nb.expect(table.locator('th')).to_have_text(['planet', 'moons'])
    nb.expect(table.locator('tbody tr')).to_have_text(['Earth1', 'Mars2', 'Jupiter95'])
    nb.expect(nb.cell(nb.ncells - 2).locator('.jp-OutputPrompt')).to_have_text(f'[{nb.ncells - 1}]:')  # an execute_result, numbered

def test_matplotlib_plot(nb):
    out = nb.run('import matplotlib.pyplot as plt\n'
                 'fig,ax = plt.subplots(figsize=(4, 2.5))\n'
                 'ax.plot([0, 1, 2, 3], [0, 1, 4, 9], marker="o")\n'
                 'ax.set_title("squares");')
    img = out.locator('.jp-RenderedImage img')
    nb.expect(img).to_have_attribute('src', re.compile(r'^data:image/png;base64,'))
    w,h = img.evaluate('i => [i.naturalWidth, i.naturalHeight]')
    assert w > h > 150  # the browser decoded a real picture, wider than tall like the figure (the inline backend crops it tight)

def test_error(nb):
    out = nb.run('def inverse(x): return 1/x\ninverse(0)')
    err = out.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
    nb.expect(err).to_contain_text('ZeroDivisionError')
    nb.expect(err).to_contain_text('division by zero')
    nb.expect(err).to_contain_text('inverse(0)')

def test_input(nb):
    "input() shows a prompt in the output area; what is typed there comes back to Python."
    i = nb.ncells - 1
    out = nb.run('name = input("Your name: ")\nprint(f"Hello, {name}!")', wait=False)
    box = out.locator('.jp-Stdin')
    nb.expect(box.locator('.jp-Stdin-prompt')).to_have_text('Your name: ')
    box.locator('input.jp-Stdin-input').fill('Ada')
    box.locator('input.jp-Stdin-input').press('Enter')
    nb.finished(i)
    nb.expect(out.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stdout"]').last).to_have_text('Hello, Ada!')

def test_widget_slider(nb):
    "An ipywidgets slider renders; dragging it to the end sets the value Python reads, and Python's observer saw the change."
    out = nb.run('import ipywidgets as widgets\n'
                 'slider = widgets.IntSlider(value=3, min=0, max=10, description="n")\n'
                 'seen = []\n'
                 'slider.observe(lambda change: seen.append(change.new), "value")\n'
                 'slider')
    nb.expect(out.locator('.widget-readout')).to_have_text('3')
    handle = out.locator('.widget-slider .noUi-handle')
    track = out.locator('.widget-slider .noUi-base').bounding_box()
    box = handle.bounding_box()
    nb.page.mouse.move(box['x'] + box['width']/2, box['y'] + box['height']/2)
    nb.page.mouse.down()
    nb.page.mouse.move(track['x'] + track['width'] + 40, box['y'] + box['height']/2, steps=10)
    nb.page.mouse.up()
    nb.expect(out.locator('.widget-readout')).to_have_text('10')
    res = nb.run('print(slider.value, seen[-1])')
    nb.expect(res).to_have_text('10 10')
    nb.page.set_viewport_size(dict(width=1280, height=1560))  # the whole notebook in one picture
    nb.page.locator('.jp-NotebookPanel .jp-WindowedPanel-outer').evaluate('e => e.scrollTop = 0')
    nb.expect(nb.cell(0)).to_be_in_viewport()
    nb.shot('lab-notebook.png')
