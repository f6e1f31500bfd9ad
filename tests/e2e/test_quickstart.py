"""The quickstart notebook in a real browser (JupyterLab 4 and Notebook 7).

Runs every cell of ``notebooks/01-quickstart.ipynb`` in the page, then checks what a newcomer would
see: the dashboard lists the tasks, their bars advance, the ticker's late lines land in its own cell
and nowhere else, and a click on its Cancel button turns it ``cancelled`` within 2 s and really stops
it. The notebook's own final cell (after ``await worker.join()``) then confirms the cancel from the
kernel's side. No console error, no dialog, no request off 127.0.0.1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .harness import (
    Browser,
    JupyterServer,
    assert_page_clean,
    code_cell,
    copy_notebook,
    open_notebook,
    output_texts,
    run_all_cells,
)

if TYPE_CHECKING:
    from playwright.sync_api import Locator

NOTEBOOK = "01-quickstart.ipynb"
TICK = re.compile(r"tick (\d+)/30")
#: Cancel must show in the row within this many milliseconds of the click.
CANCEL_SHOWS_WITHIN_MS = 2_000
#: The ticker prints every 0.5 s: this much silence after the cancel proves it stopped.
SILENCE_S = 1.5


def ticks(area: Locator) -> list[int]:
    """The tick numbers printed in ``area`` so far."""
    return [int(n) for n in TICK.findall(area.text_content() or "")]


def aria_value(bar: Locator) -> float:
    return float(bar.get_attribute("aria-valuenow") or "nan")


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_quickstart_runs_live_in_the_browser(
    app: str, jupyter: Callable[[str], JupyterServer], browser: Browser, notebook_root: Path,
) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the fixtures skip

    b = browser
    page = b.page
    copy_notebook(NOTEBOOK, notebook_root)
    server = jupyter(app)
    open_notebook(b, server, NOTEBOOK)
    b.screenshot("opened")

    run_all_cells(b)
    ticker_cell = code_cell(b, "%%task -n ticker")
    ticker_out = ticker_cell.locator(".jp-Cell-outputArea")
    ticker_view = ticker_out.locator('.tw-dashboard.tw-single .tw-row[data-task-id="ticker"]')
    expect(ticker_view).to_have_attribute("data-status", "running", timeout=30_000)

    # The dashboard (%tasks) lists the session's tasks, with live counts.
    dash = page.locator(".tw-dashboard:not(.tw-single)")
    expect(dash).to_have_count(1, timeout=30_000)
    for task_id in ("ticker", "squares", "sleeper"):
        expect(dash.locator(f'.tw-row[data-task-id="{task_id}"]')).to_have_count(1, timeout=15_000)
    expect(dash.locator('.tw-row[data-task-id="sleeper"]')).to_have_attribute(
        "data-status", "cancelled", timeout=15_000)
    expect(dash.locator("[data-count-running]")).not_to_have_attribute("data-count-running", "0")

    # Bars advance: the ticker's bar in the dashboard, read twice.
    bar = dash.locator('.tw-row[data-task-id="ticker"] [role="progressbar"]')
    first = aria_value(bar)
    assert 0 <= first <= 100
    page.wait_for_function(
        "([el, v]) => Number(el.getAttribute('aria-valuenow')) > v", arg=[bar.element_handle(), first],
        timeout=10_000)
    # The thread task finished: its bar is full.
    squares = dash.locator('.tw-row[data-task-id="squares"]')
    expect(squares).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(squares.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "100")
    b.screenshot("dashboard-running", dash)

    # Late output: the ticker's cell finished at once, yet its lines keep arriving there, after
    # the cells below it ran ("squares returned" is printed by a later cell).
    expect(code_cell(b, 'await task_worker.wait("squares")').locator(".jp-Cell-outputArea")).to_contain_text(
        "squares returned", timeout=20_000)
    seen = ticks(ticker_out)
    assert seen, "the ticker printed nothing into its own cell"
    page.wait_for_function(
        "([el, n]) => (el.textContent.match(/tick \\d+\\/30/g) || []).length > n",
        arg=[ticker_out.element_handle(), len(seen)], timeout=10_000)
    b.screenshot("ticker-late-output", ticker_cell)
    holders = [i for i, text in enumerate(output_texts(b)) if TICK.search(text)]
    assert len(holders) == 1, f"tick lines appear in the outputs of cells {holders}, not only the ticker's"

    # Cancel from the dashboard: the row says so within 2 s, and the ticker really stops.
    cancel = dash.locator('.tw-row[data-task-id="ticker"] .tw-cancel')
    expect(cancel).to_have_text("Cancel")
    expect(cancel).to_be_enabled()
    clicked = time.monotonic()
    cancel.click()
    expect(dash.locator('.tw-row[data-task-id="ticker"]')).to_have_attribute(
        "data-status", "cancelled", timeout=CANCEL_SHOWS_WITHIN_MS)
    shown_after = time.monotonic() - clicked
    expect(ticker_view).to_have_attribute("data-status", "cancelled", timeout=CANCEL_SHOWS_WITHIN_MS)
    expect(cancel).to_be_disabled()
    at_cancel = ticks(ticker_out)
    assert max(at_cancel) < 30, "the ticker had already finished: nothing was left to cancel"
    b.screenshot("ticker-cancelled", dash)

    # The notebook's checks ran after `await worker.join()`, so the kernel agrees it was cancelled.
    last = code_cell(b, "All checks passed").locator(".jp-Cell-outputArea")
    expect(last).to_contain_text("All checks passed: ticker cancelled", timeout=30_000)
    # A line printed just before the cancel may still be on its way; after that, silence over
    # three print periods proves no new line comes.
    settled = ticks(ticker_out)
    assert max(settled) <= max(at_cancel) + 1, f"the ticker went on after its cancel: {settled}"
    page.wait_for_timeout(SILENCE_S * 1000)
    assert ticks(ticker_out) == settled, "the ticker kept printing after its cancel"
    assert settled == list(range(1, len(settled) + 1)), f"tick lines lost or out of order: {settled}"
    expect(dash.locator("[data-count-cancelled]")).to_have_attribute("data-count-cancelled", "2")
    b.screenshot("final", last)
    print(f"[{app}] cancel shown {shown_after * 1000:.0f} ms after the click")

    assert_page_clean(b)
