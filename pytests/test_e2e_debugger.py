"""JupyterLab's debugger in headless Chromium on ipymini, driven as a user drives it: breakpoint, stop, Variables, Next, Continue."""
import pytest
from test_e2e_lab import lab, nb  # noqa: F401 (fixtures: a JupyterLab server; Chromium on a new ipymini notebook)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

def test_breakpoint_variables_next_continue(nb):
    "Cells are named `Cell [n]` in the Call Stack and Breakpoints panels, as with ipykernel; Variables lists the function's locals."
    page,expect = nb.page,nb.expect
    nb.run('def add(a, b):\n    c = a + b\n    return c * 2')
    bug = page.locator('.jp-NotebookPanel-toolbar .jp-DebuggerBugButton')
    expect(bug).to_have_attribute('aria-pressed', 'false')
    bug.click()
    expect(bug).to_have_attribute('aria-pressed', 'true')
    bar = page.locator('.jp-DebuggerSidebar')
    expect(bar).to_be_visible()
    # a click in the breakpoint gutter of the function's cell, level with its second line
    gutter,line = nb.cell(0).locator('.cm-breakpoint-gutter').first,nb.cell(0).locator('.cm-line').nth(1)
    expect(gutter).to_be_visible()
    g,l = gutter.bounding_box(),line.bounding_box()
    page.mouse.click(g['x'] + g['width']/2, l['y'] + l['height']/2)
    bp = bar.locator('.jp-DebuggerBreakpoint')
    expect(bp.locator('.jp-DebuggerBreakpoint-source')).to_have_text(['Cell [1]'])
    expect(bp.locator('.jp-DebuggerBreakpoint-line')).to_have_text(['2'])
    i = nb.ncells - 1
    out = nb.run('print(add(2, 3))', wait=False)
    frames = bar.locator('.jp-DebuggerCallstackFrame')
    expect(frames.locator('.jp-DebuggerCallstackFrame-name')).to_have_text(['add', '<module>'])
    expect(frames.locator('.jp-DebuggerCallstackFrame-location')).to_have_text(['Cell [1]:2', 'Cell [*]:1'])  # the caller still runs
    names,details = [bar.locator(f'.jp-DebuggerVariables-body .jp-DebuggerVariables-{k}') for k in ('name', 'detail')]
    expect(names).to_have_text(['a', 'b'])
    expect(details).to_have_text(['2', '3'])
    bar.locator('[data-command="debugger:next"]').click()
    expect(frames.locator('.jp-DebuggerCallstackFrame-location')).to_have_text(['Cell [1]:3', 'Cell [*]:1'])
    expect(names).to_have_text(['a', 'b', 'c'])
    expect(details).to_have_text(['2', '3', '5'])
    nb.shot('debugger.png')
    bar.locator('[data-command="debugger:continue"]').click()
    nb.finished(i)
    expect(out.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stdout"]')).to_have_text('10')
    expect(page.locator('.jp-Notebook-ExecutionIndicator')).to_have_attribute('data-status', 'idle')
    expect(frames).to_have_count(0)
    bug.click()
    expect(bug).to_have_attribute('aria-pressed', 'false')
    out = nb.run('print(add(4, 5))')  # the breakpoint went with the debugger: the cell just runs
    expect(out.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stdout"]')).to_have_text('18')
    expect(page.locator('.jp-Notebook-ExecutionIndicator')).to_have_attribute('data-status', 'idle')
