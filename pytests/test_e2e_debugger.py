"""JupyterLab's debugger in headless Chromium on ipymini, driven as a user drives it: breakpoint, stop, Variables, Next, Continue."""
import re, pytest
from test_e2e_lab import lab, nb  # noqa: F401 (fixtures: a JupyterLab server; Chromium on a new ipymini notebook)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

STDOUT = '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stdout"]'

def toggle(nb, on):
    "Turn the debugger on or off with the notebook toolbar's bug button; returns the debugger's sidebar."
    bug = nb.page.locator('.jp-NotebookPanel-toolbar .jp-DebuggerBugButton')
    nb.expect(bug).to_have_attribute('aria-pressed', str(not on).lower())
    bug.click()
    nb.expect(bug).to_have_attribute('aria-pressed', str(on).lower())
    return nb.page.locator('.jp-DebuggerSidebar')

def break_at(nb, cell, line):
    "Click the breakpoint gutter of `cell` next to its `line` (from 1), and see the breakpoint's dot there."
    # one gutter element per line, after a hidden spacer: element `line` is level with line number `line`
    nb.expect(nb.cell(cell).locator('.cm-lineNumbers > .cm-gutterElement').nth(line)).to_have_text(str(line))
    mark = nb.cell(cell).locator('div.cm-breakpoint-gutter > .cm-gutterElement').nth(line)
    mark.click()
    nb.expect(mark.locator('.cm-breakpoint-icon')).to_be_visible()

def panels(bar):
    "Locators of the Breakpoints panel's cell names and lines, the Call Stack's frame locations, and the Variables' names and values."
    return (*[bar.locator(f'.jp-Debugger{k}') for k in ('Breakpoint-source', 'Breakpoint-line', 'CallstackFrame-location')],
            *[bar.locator(f'.jp-DebuggerVariables-body .jp-DebuggerVariables-{k}') for k in ('name', 'detail')])

def test_breakpoint_variables_next_continue(nb):
    "Cells are named `Cell [n]` in the Call Stack and Breakpoints panels, as with ipykernel; Variables lists the function's locals."
    page,expect = nb.page,nb.expect
    nb.run('def add(a, b):\n    c = a + b\n    return c * 2')
    bar = toggle(nb, True)
    expect(bar).to_be_visible()
    sources,lines,locations,names,details = panels(bar)
    break_at(nb, 0, 2)
    expect(sources).to_have_text(['Cell [1]'])
    expect(lines).to_have_text(['2'])
    i = nb.ncells - 1
    out = nb.run('print(add(2, 3))', wait=False)
    expect(bar.locator('.jp-DebuggerCallstackFrame-name')).to_have_text(['add', '<module>'])
    expect(locations).to_have_text(['Cell [1]:2', 'Cell [*]:1'])  # the calling cell is still running
    expect(names).to_have_text(['a', 'b'])
    expect(details).to_have_text(['2', '3'])
    bar.locator('[data-command="debugger:next"]').click()
    expect(locations).to_have_text(['Cell [1]:3', 'Cell [*]:1'])
    expect(names).to_have_text(['a', 'b', 'c'])
    expect(details).to_have_text(['2', '3', '5'])
    nb.shot('debugger.png')
    bar.locator('[data-command="debugger:continue"]').click()
    nb.finished(i)
    expect(out.locator(STDOUT)).to_have_text('10')
    expect(page.locator('.jp-Notebook-ExecutionIndicator')).to_have_attribute('data-status', 'idle')
    expect(locations).to_have_count(0)
    toggle(nb, False)
    out = nb.run('print(add(4, 5))')  # the breakpoint went with the debugger: the cell just runs
    expect(out.locator(STDOUT)).to_have_text('18')
    expect(page.locator('.jp-Notebook-ExecutionIndicator')).to_have_attribute('data-status', 'idle')

def test_breakpoint_after_a_restart(nb):
    "After Kernel > Restart the breakpoint is on the new kernel's file of the cell, still named `Cell [n]`, and hit."
    page,expect = nb.page,nb.expect
    bar = toggle(nb, True)
    sources,lines,locations,names,details = panels(bar)
    break_at(nb, 0, 2)
    expect(sources).to_have_text(['Cell [1]'])
    page.locator('.lm-MenuBar-itemLabel', has_text='Kernel').click()
    page.locator('.lm-Menu-itemLabel', has_text='Restart Kernel…').first.click()
    page.locator('.jp-Dialog-button.jp-mod-accept').click()
    out = nb.run('import os\nprint(os.getpid())', wait=False)
    pid = out.locator(STDOUT)
    expect(pid).to_have_text(re.compile(r'^\d+\s*$'))
    # the front end moved the breakpoint to the new kernel's folder of cell files
    expect(bar.locator('.jp-DebuggerBreakpoint')).to_have_attribute('title', re.compile(rf'/ipykernel_{pid.inner_text().strip()}/\d+\.py$'))
    expect(sources).to_have_text(['Cell [1]'])
    nb.cell(0).locator('.cm-content').click()
    page.keyboard.press('Shift+Enter')  # the function again, in the new kernel: Cell [2]
    expect(nb.cell(0).locator('.jp-InputArea-prompt')).to_have_text('[2]:')
    out = nb.run('print(add(20, 1))', wait=False)
    expect(locations).to_have_text(['Cell [2]:2', 'Cell [*]:1'])
    expect(sources).to_have_text(['Cell [2]'])
    expect(lines).to_have_text(['2'])
    expect(names).to_have_text(['a', 'b'])
    expect(details).to_have_text(['20', '1'])
    bar.locator('[data-command="debugger:continue"]').click()
    expect(out.locator(STDOUT)).to_have_text('42')
    expect(page.locator('.jp-Notebook-ExecutionIndicator')).to_have_attribute('data-status', 'idle')
    toggle(nb, False)
