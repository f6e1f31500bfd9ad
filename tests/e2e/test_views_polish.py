"""What a person notices in the views, checked in a real browser (JupyterLab 4 and Notebook 7).

In a notebook 800 px wide: a ``%%task`` view names its task once and labels its priority; a
cancelled row says "cancelled" once; the dashboard's header (counts and controls, "Clear finished"
included) fits on one line; a task's output area stops growing at the frontend's scrolled-output
height (24em, as a scrolled JupyterLab cell) and scrolls. Screenshots of each state go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import (
    Browser,
    JupyterServer,
    assert_page_clean,
    code_cell,
    line_count,
    open_notebook,
    run_all_cells,
    set_notebook_width,
    write_notebook,
)

#: The notebook width the header must fit in, in CSS pixels (a laptop half-screen window).
NOTEBOOK_WIDTH = 800
#: Wider notebooks checked too, up to a maximised window.
WIDER = range(840, 1401, 40)
LINES = 60

CELLS = [
    "%load_ext task_worker\nimport asyncio\nimport task_worker",
    f'%%task -n ticker\nfor n in range({LINES}):\n    print("output line", n)\nawait asyncio.sleep(120)',
    "%%task -n doomed\nawait asyncio.sleep(120)",
    "%task cancel doomed",
    "%tasks",
    'print("POLISH-CELLS-DONE")',
]


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_views_read_well_at_a_normal_notebook_width(
    app: str, jupyter: Callable[[str], JupyterServer], browser: Browser, notebook_root: Path,
) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the fixtures skip

    b = browser
    page = b.page
    write_notebook(notebook_root, "polish.ipynb", CELLS)
    server = jupyter(app)
    open_notebook(b, server, "polish.ipynb")
    set_notebook_width(b, NOTEBOOK_WIDTH)
    run_all_cells(b)
    expect(code_cell(b, "POLISH-CELLS-DONE").locator(".jp-Cell-outputArea")).to_contain_text(
        "POLISH-CELLS-DONE", timeout=30_000)

    # The single-task view: the name once, the priority labelled.
    ticker = code_cell(b, "%%task -n ticker")
    single = ticker.locator(".tw-single")
    expect(single.locator(".tw-row")).to_have_attribute("data-status", "running", timeout=15_000)
    expect(single.locator(".tw-task-name")).to_have_text("ticker")
    text = single.inner_text()
    assert text.count("ticker") == 1, text
    expect(single.locator(".tw-col-priority")).to_have_text("priority 0")

    # Its output area: capped at the frontend's scrolled-output height, and scrolling.
    area = ticker.locator(".tw-task-output")
    expect(area).to_contain_text(f"output line {LINES - 1}", timeout=15_000)
    style = area.evaluate("""el => {
        const s = getComputedStyle(el);
        return {maxHeight: parseFloat(s.maxHeight), fontSize: parseFloat(s.fontSize),
                overflowY: s.overflowY, clientHeight: el.clientHeight, scrollHeight: el.scrollHeight};
    }""")
    assert style["maxHeight"] == pytest.approx(24 * style["fontSize"], abs=1), style
    assert style["overflowY"] == "auto", style
    assert style["clientHeight"] <= style["maxHeight"] + 1, style
    assert style["scrollHeight"] > style["clientHeight"], style  # the rest is a scroll away
    b.screenshot("single-task-view", ticker)

    # The dashboard: a cancelled row says so once; the header is one line.
    dash = code_cell(b, "%tasks").locator(".tw-dashboard")
    dash.scroll_into_view_if_needed()  # cells out of view may not be rendered (windowed notebook)
    doomed = dash.locator(".tw-row", has=page.locator(".tw-task-name", has_text="doomed"))
    expect(doomed).to_have_attribute("data-status", "cancelled", timeout=15_000)
    row_text = doomed.text_content() or ""  # all of the row, rendered or not
    assert row_text.lower().count("cancelled") == 1, row_text
    header = dash.locator(".tw-header")
    expect(header.locator(".tw-clear-finished")).to_be_visible()
    b.screenshot("dashboard-header", dash)
    width = dash.evaluate("el => el.getBoundingClientRect().width")
    widths = header.evaluate("el => Array.from(el.children, c => [c.className, c.offsetWidth])")
    assert line_count(header) == 1 and line_count(header.locator(".tw-counts")) == 1, (
        f"the header wraps at a dashboard width of {width} px: {widths}")
    # And at every wider notebook (the counts' labels come back when there is room for them).
    for wider in WIDER:
        set_notebook_width(b, wider)
        dash.scroll_into_view_if_needed()
        width = dash.evaluate("el => el.getBoundingClientRect().width")
        widths = header.evaluate("el => Array.from(el.children, c => [c.className, c.offsetWidth])")
        assert line_count(header) == 1 and line_count(header.locator(".tw-counts")) == 1, (
        f"the header wraps at a dashboard width of {width} px: {widths}")
    labels = header.locator(".tw-count-label").first.evaluate("el => el.offsetWidth")
    assert labels > 20, "the counts' labels are shown in a wide notebook"
    b.screenshot("dashboard-header-wide", dash)
    # Really narrow (a side panel): the header wraps rather than overflowing the dashboard.
    set_notebook_width(b, 480)
    dash.scroll_into_view_if_needed()
    overflow = header.evaluate("el => el.scrollWidth - el.clientWidth")
    assert overflow <= 1, f"the header overflows by {overflow} px in a 480 px notebook"
    assert_page_clean(b)
