"""Close the tab, come back later: a task's view comes back live after a page reload (JupyterLab 4 and
Notebook 7), and ``%task show`` brings back the view of a task whose view was never saved.

One notebook per frontend. A ``%%task`` that prints a line every 0.25 s runs, the notebook is saved
and the page reloads mid-task: the view is live again, with every line printed while the page was away
and new ones arriving, and its Cancel button cancels the task. Then a second ``%%task`` starts and
the tab is closed without saving and opened again: that view is gone (the file has none), and
``%task show away`` in another cell shows the task's view with its whole output so far, live, with a
working Cancel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    Browser,
    JupyterServer,
    assert_page_clean,
    code_cell,
    open_notebook,
    write_notebook,
)

TICKER = "%%task -n ticker\nfor k in range(100_000):\n    print('tick', k)\n    await asyncio.sleep(0.25)"
AWAY = "%%task -n away\nfor j in range(100_000):\n    print('away', j)\n    await asyncio.sleep(0.25)"
CELLS = ["%load_ext task_worker\nimport asyncio", TICKER, AWAY, "%task show away"]

_RUN_CELL_JS = """async (i) => {
    const app = window.jupyterapp;
    app.shell.currentWidget.content.activeCellIndex = i;
    await app.commands.execute('notebook:run-cell');
}"""


_CONNECTED_JS = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.connectionStatus === 'connected';
}"""


def reopen(b: Browser, url: str) -> None:
    """Close the tab without saving (no "leave page?" prompt) and open ``url`` in a new one,
    recording its console errors and dialogs as the ``browser`` fixture does."""
    old = b.page
    page = b.context.new_page()
    page.on("console", lambda m: b.console_errors.append(
        (m.text, json.dumps(m.location))) if m.type == "error" else None)
    page.on("pageerror", lambda e: b.console_errors.append((f"uncaught: {e}", e.stack or "")))
    page.on("websocket", lambda ws: b.requests.append(ws.url))

    def on_dialog(dialog: Any) -> None:
        b.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    old.close()  # without running "beforeunload": a closed tab
    b.page = page
    page.goto(url)
    page.wait_for_function(_CONNECTED_JS, timeout=60_000)


def run_cell(b: Browser, index: int) -> None:
    b.page.evaluate(_RUN_CELL_JS, index)


def numbers(text: str, word: str) -> list[int]:
    return [int(n) for n in re.findall(rf"\b{word} (\d+)", text)]


def wait_for_line(area, word: str, n: int) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect(area).to_contain_text(f"{word} {n}\n", timeout=30_000)


def assert_gapless(text: str, word: str) -> int:
    """Every line ``word 0`` .. ``word M`` is there, in order, once; returns ``M``."""
    seen = numbers(text, word)
    assert seen and seen == list(range(len(seen))), f"lines missing or out of order: {seen}"
    return seen[-1]


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_views_come_back_live_after_a_reload_and_task_show_brings_back_an_unsaved_one(
    app: str, jupyter: Callable[[str], JupyterServer], browser: Browser, notebook_root: Path,
) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the fixtures skip

    b = browser
    page = b.page
    write_notebook(notebook_root, "reattach.ipynb", CELLS)
    server = jupyter(app)
    open_notebook(b, server, "reattach.ipynb")
    run_cell(b, 0)
    run_cell(b, 1)
    ticker = code_cell(b, "%%task -n ticker")
    area = ticker.locator(".tw-task-output")
    wait_for_line(area, "tick", 2)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    before = max(numbers(area.inner_text(), "tick"))
    b.screenshot("before-reload", ticker)

    page.reload()
    page.wait_for_function(_CONNECTED_JS, timeout=60_000)
    ticker = code_cell(b, "%%task -n ticker")
    ticker.scroll_into_view_if_needed()
    single = ticker.locator(".tw-single")
    expect(single.locator(".tw-row")).to_have_attribute("data-status", "running", timeout=30_000)
    area = ticker.locator(".tw-task-output")
    wait_for_line(area, "tick", before + 1)
    # What was printed while the page was away is there, every line of it.
    back = assert_gapless(area.inner_text(), "tick")
    assert back > before
    # And it is live: new lines keep coming.
    wait_for_line(area, "tick", back + 2)
    b.screenshot("after-reload", ticker)
    single.locator(".tw-cancel").click()
    expect(single.locator(".tw-row")).to_have_attribute("data-status", "cancelled", timeout=30_000)
    assert_gapless(area.inner_text(), "tick")

    # A task whose view is never saved: close the tab (no save) and open the notebook again.
    run_cell(b, 2)
    wait_for_line(code_cell(b, "%%task -n away").locator(".tw-task-output"), "away", 1)
    reopen(b, server.notebook_url("reattach.ipynb"))
    away_cell = code_cell(b, "%%task -n away")
    away_cell.scroll_into_view_if_needed()
    assert away_cell.locator(".tw-dashboard").count() == 0  # gone with the tab
    run_cell(b, 3)
    shown = code_cell(b, "%task show away")
    shown.scroll_into_view_if_needed()
    expect(shown.locator(".tw-single .tw-row")).to_have_attribute("data-status", "running", timeout=30_000)
    away_area = shown.locator(".tw-task-output")
    wait_for_line(away_area, "away", 1)
    seen = assert_gapless(away_area.inner_text(), "away")
    wait_for_line(away_area, "away", seen + 2)
    b.screenshot("task-show", shown)
    shown.locator(".tw-cancel").click()
    expect(shown.locator(".tw-single .tw-row")).to_have_attribute("data-status", "cancelled",
                                                                   timeout=30_000)
    assert_page_clean(b)
