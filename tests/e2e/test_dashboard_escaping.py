"""Task names, ids, metadata and errors reach the page as text, never as HTML.

The notebook page holds the kernel's keys: markup injected through a task name could run code. A task
named ``<img src=x onerror=alert(1)>`` must show those characters, create no element, load nothing
and open no dialog, in the dashboard and in a ``%%task`` cell's own view.
"""

from __future__ import annotations

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

NAME = "<img src=x onerror=alert(1)>"
#: A %%task name cannot hold spaces unquoted (and IPython keeps the quotes): this one needs none.
CELL_NAME = "<svg/onload=alert(5)>"
FAILED_ID = "<svg onload=alert(3)>"
ERROR = "<script>alert(2)</script><b>bold</b>"
META = "<img src=y onerror=alert(4)>"

CELLS = [
    "%load_ext task_worker\nimport asyncio\nimport task_worker",
    f"%%task -n {CELL_NAME}\nawait asyncio.sleep(60)",
    f"""\
worker = task_worker.get_worker()

async def hold():
    await asyncio.sleep(60)

task_worker.register_task({NAME!r}, hold)  # the task's name is its registered type name
held = await worker.add_task({NAME!r})

def boom():
    raise ValueError({ERROR!r})

failed = await worker.add_task(boom, task_id={FAILED_ID!r}, metadata={{"note": {META!r}}})
try:
    await worker.wait(failed)
except ValueError:
    pass""",
    "%tasks",
    'print("ESCAPING-CELLS-DONE")',
]


def test_markup_in_task_names_and_errors_is_shown_as_text(
    jupyter: Callable[[str], JupyterServer], browser: Browser, notebook_root: Path,
) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the fixtures skip

    b = browser
    page = b.page
    write_notebook(notebook_root, "escaping.ipynb", CELLS)
    server = jupyter("lab")
    open_notebook(b, server, "escaping.ipynb")
    run_all_cells(b)
    expect(code_cell(b, "ESCAPING-CELLS-DONE").locator(".jp-Cell-outputArea")).to_contain_text(
        "ESCAPING-CELLS-DONE", timeout=30_000)

    dash = page.locator(".tw-dashboard:not(.tw-single)")
    row = dash.locator(".tw-row", has=page.locator(".tw-task-name", has_text=NAME))
    expect(row).to_have_attribute("data-status", "running", timeout=15_000)
    expect(row.locator(".tw-task-name")).to_have_text(NAME)
    cell_row = dash.locator(f'.tw-row[data-task-id="{CELL_NAME}"]')
    expect(cell_row.locator(".tw-task-name")).to_have_text(CELL_NAME)
    single = code_cell(b, "%%task -n").locator(".tw-single .tw-task-name")
    expect(single).to_have_text(CELL_NAME, timeout=15_000)

    failed = dash.locator(f'.tw-row[data-task-id="{FAILED_ID}"]')
    expect(failed).to_have_attribute("data-status", "failed", timeout=15_000)
    expect(failed.locator(".tw-task-id")).to_have_text(FAILED_ID)
    expect(failed.locator(".tw-error")).to_contain_text(ERROR)
    expect(failed.locator(".tw-meta")).to_contain_text(META)
    failed.locator(".tw-traceback summary").click()  # the traceback, one click away, is text too
    expect(failed.locator(".tw-traceback-text")).to_contain_text(ERROR)
    b.screenshot("escaped", dash)

    # Nothing was parsed as markup: no element, no handler, no load, no dialog.
    injected = page.locator(
        ".tw-dashboard img, .tw-dashboard svg, .tw-dashboard script, .tw-dashboard b, [onerror], [onload]")
    assert injected.count() == 0, injected.evaluate_all("els => els.map(e => e.outerHTML)")
    loads = [u for u in b.requests if u.rstrip("/").rsplit("/", 1)[-1] in ("x", "y")]
    assert not loads, f"the page tried to load injected sources: {loads}"
    assert_page_clean(b)  # includes: no dialog opened
