"""Chains in a real browser (JupyterLab 4): a ``%%task --after`` view says what it waits for, a
``--retries`` view counts its retry delay down, and the dashboard shows the same; cancelling the
head of a chain with its Cancel button says how many dependents it took along, and the dependent's
view names the dependency. One page load; screenshots go to ``test-artifacts/screenshots/``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .harness import (
    Browser,
    JupyterServer,
    assert_page_clean,
    code_cell,
    open_notebook,
    run_all_cells,
    write_notebook,
)

CELLS = [
    "%load_ext task_worker\nimport threading\ne2e_gate = threading.Event()",
    "%%task -n e2e_load\ne2e_gate.wait(300)",
    '%%task -n e2e_train --after e2e_load\nprint("trained")',
    '%%task -n e2e_flaky --retries 2 --retry-delay 60\nraise ConnectionError("flaky network")',
    "%tasks",
    'print("CHAINS-CELLS-DONE")',
]


def test_waiting_and_retry_text_is_visible_and_cancel_names_dependents(
    jupyter: Callable[[str], JupyterServer], browser: Browser, notebook_root: Path,
) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the fixtures skip

    b = browser
    page = b.page
    write_notebook(notebook_root, "chains.ipynb", CELLS)
    server = jupyter("lab")
    open_notebook(b, server, "chains.ipynb")
    run_all_cells(b)
    expect(code_cell(b, "CHAINS-CELLS-DONE").locator(".jp-Cell-outputArea")).to_contain_text(
        "CHAINS-CELLS-DONE", timeout=30_000)

    # The dependent's own view: pending, "waiting for e2e_load".
    train = code_cell(b, "%%task -n e2e_train").locator(".tw-single .tw-row")
    expect(train).to_have_attribute("data-status", "pending", timeout=15_000)
    expect(train.locator(".tw-detail")).to_have_text("waiting for e2e_load")

    # The flaky task's view: pending between attempts, with a countdown that moves.
    flaky = code_cell(b, "%%task -n e2e_flaky").locator(".tw-single .tw-row")
    countdown = re.compile(r"attempt 2/3, retrying in \d+ s")
    expect(flaky.locator(".tw-detail")).to_have_text(countdown, timeout=15_000)
    expect(flaky).to_have_attribute("data-status", "pending")
    first = flaky.locator(".tw-detail").inner_text()
    expect(flaky.locator(".tw-detail")).not_to_have_text(first, timeout=10_000)
    expect(flaky.locator(".tw-detail")).to_have_text(countdown)
    b.screenshot("retry-countdown", flaky)

    # The dashboard shows the same words.
    dash = code_cell(b, "%tasks").locator(".tw-dashboard")
    dash.scroll_into_view_if_needed()
    row = dash.locator(".tw-row", has=page.locator(".tw-task-name", has_text="e2e_train"))
    expect(row.locator(".tw-detail")).to_have_text("waiting for e2e_load", timeout=15_000)
    flaky_row = dash.locator(".tw-row", has=page.locator(".tw-task-name", has_text="e2e_flaky"))
    expect(flaky_row.locator(".tw-detail")).to_have_text(countdown)
    b.screenshot("dashboard-waiting-and-retrying", dash)

    # Cancel the head of the chain in its view: it says how many it took along.
    load = code_cell(b, "%%task -n e2e_load").locator(".tw-single .tw-row")
    load.locator(".tw-cancel").click()
    expect(load).to_have_attribute("data-status", "cancelled", timeout=15_000)
    expect(load.locator(".tw-detail")).to_contain_text("and 1 dependent task waiting on it")
    expect(train).to_have_attribute("data-status", "cancelled", timeout=15_000)
    expect(train.locator(".tw-detail")).to_have_text("cancelled: dependency 'e2e_load' was cancelled")
    b.screenshot("cancelled-chain", train)
    assert_page_clean(b)
