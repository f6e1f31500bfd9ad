"""Task details, column sort and the text filter, in a real browser (JupyterLab 4).

One notebook, one page load: a ``%%task`` that prints and fails (its own view shows its row once,
without repeating the error or the metadata, and a click opens its details: the traceback naming the
cell, the last lines of its output); a dashboard with ``max_rows=20`` over 61 tasks, sorted by
clicking column headers, and filtered by a text that only the oldest task matches (a row the
browser did not hold: the kernel picks the matches); then that task's details pane. The details
pane of the ``%%task`` view is also saved as ``docs/details.png`` for the README when that file is
missing or ``TASK_WORKER_UPDATE_DOCS=1`` (a test run leaves the checkout clean).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .harness import (
    REPO,
    Browser,
    JupyterServer,
    assert_page_clean,
    code_cell,
    open_notebook,
    run_all_cells,
    write_notebook,
)

DOCS_SHOT = REPO / "docs" / "details.png"

CELLS = [
    "%load_ext task_worker\nimport asyncio\nimport task_worker",
    '%%task -n detailed\ntotal = sum(i * i for i in range(3_000_000))\nprint("hello from the task")\n'
    'print("second line")\ntotal / 0',
    """\
worker = task_worker.get_worker()

def named(name):
    async def body(n, label, gate):
        await gate.wait()
        return n
    body.__name__ = body.__qualname__ = name
    return body

gate_ins = asyncio.Event()
gate_ins.set()
await worker.add_task(named("zeta_needle"), 0, "the one to find", gate_ins,
                      metadata={"dataset": "survey-2026", "owner": "ana"}, task_id="needle-0")
for i in range(1, 61):
    await worker.add_task(named(f"job_{i:02d}"), i, "x" * 400, gate_ins, priority=i % 5,
                          metadata={"dataset": f"batch-{i % 3}"})
await worker.join()
dash = worker.dashboard(max_rows=20)
dash""",
    'print("DETAILS-CELLS-DONE")',
]


def row_names(dash) -> list[str]:  # type: ignore[no-untyped-def]
    return list(dash.locator(".tw-body .tw-row .tw-task-name").all_text_contents())


def test_details_sort_and_filter(
    jupyter: Callable[[str], JupyterServer], browser: Browser, notebook_root: Path,
) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the fixtures skip

    b = browser
    write_notebook(notebook_root, "details.ipynb", CELLS)
    server = jupyter("lab")
    open_notebook(b, server, "details.ipynb")
    run_all_cells(b)
    expect(code_cell(b, "DETAILS-CELLS-DONE").locator(".jp-Cell-outputArea")).to_contain_text(
        "DETAILS-CELLS-DONE", timeout=60_000)

    # A %%task's own view: the row once, no repeated error, no metadata line; details on click.
    cell = code_cell(b, "%%task -n detailed")
    single = cell.locator(".tw-single")
    row = single.locator(".tw-row")
    expect(row).to_have_attribute("data-status", "failed", timeout=15_000)
    expect(cell.locator(".tw-task-output")).to_contain_text("ZeroDivisionError")
    assert single.locator(".tw-error, .tw-traceback").count() == 0
    expect(single.locator(".tw-meta")).to_be_hidden()
    row.locator(".tw-col-status").click()
    pane = single.locator(".tw-details")
    expect(pane).to_have_attribute("data-task-id", "detailed")
    expect(pane.locator('[data-field="traceback"]')).to_contain_text("Cell In[", timeout=15_000)
    expect(pane.locator('[data-field="traceback"]')).to_contain_text("total / 0")
    expect(pane.locator('[data-field="output"]')).to_have_text(
        "hello from the task\nsecond line\nZeroDivisionError: division by zero")
    cpu = pane.locator('[data-field="cpu"] dd').inner_text()
    assert cpu.endswith(" s"), cpu  # a thread body: measured
    expect(pane.locator('[data-field="meta-mode"] dd')).to_have_text("thread")
    b.screenshot("single-task-details", cell)
    if os.environ.get("TASK_WORKER_UPDATE_DOCS") == "1" or not DOCS_SHOT.exists():
        DOCS_SHOT.parent.mkdir(exist_ok=True)
        single.screenshot(path=str(DOCS_SHOT))  # the README's picture of the details pane
    row.locator(".tw-col-status").click()  # a second click closes it
    expect(single.locator(".tw-details")).to_have_count(0)

    # The dashboard: 20 of 61 rows; sort by clicking column headers.
    dash = code_cell(b, "worker.dashboard(max_rows=20)").locator(".tw-dashboard")
    dash.scroll_into_view_if_needed()
    expect(dash.locator(".tw-body .tw-row")).to_have_count(20, timeout=15_000)
    default_order = row_names(dash)
    prio = dash.locator('.tw-headrow [data-sort="priority"]')
    prio.click()
    expect(prio).to_have_attribute("aria-sort", "ascending")
    prios = [int(t) for t in dash.locator(".tw-body .tw-col-priority").all_text_contents()]
    assert prios == sorted(prios), prios
    # Stable: equal priorities keep the kernel's order (most recently finished first).
    by_prio = row_names(dash)
    for p in set(prios):
        same = [n for n, q in zip(by_prio, prios, strict=True) if q == p]
        assert same == [n for n in default_order if n in same], (p, same)
    prio.click()
    expect(prio).to_have_attribute("aria-sort", "descending")
    prios = [int(t) for t in dash.locator(".tw-body .tw-col-priority").all_text_contents()]
    assert prios == sorted(prios, reverse=True), prios
    name_head = dash.locator('.tw-headrow [data-sort="name"]')
    on_title = {"x": 6, "y": 6}  # the word "Task" (the filter box shares the header cell)
    name_head.click(position=on_title)
    expect(prio).to_have_attribute("aria-sort", "none")
    assert row_names(dash) == sorted(default_order)
    dash.locator(".tw-search").click()  # clicking the filter box does not sort
    expect(name_head).to_have_attribute("aria-sort", "ascending")
    name_head.click(position=on_title)
    name_head.click(position=on_title)  # third click: back to the kernel's order
    expect(name_head).to_have_attribute("aria-sort", "none")
    assert row_names(dash) == default_order

    # The text filter: the kernel finds the oldest task, which the browser did not hold.
    assert "zeta_needle" not in default_order
    search = dash.locator(".tw-search")
    search.fill("SURVEY-2026")  # metadata, any case
    expect(dash.locator(".tw-body .tw-row")).to_have_count(1, timeout=15_000)
    expect(dash.locator(".tw-body .tw-row .tw-task-name")).to_have_text("zeta_needle")
    expect(dash.locator(".tw-more")).to_be_hidden()
    b.screenshot("filtered", dash)
    search.fill("job_0")  # names: job_01 .. job_09
    expect(dash.locator(".tw-body .tw-row")).to_have_count(9, timeout=15_000)

    # Its details, in place under the row.
    search.fill("needle-0")  # ids too
    needle = dash.locator('.tw-row[data-task-id="needle-0"]')
    expect(dash.locator(".tw-body .tw-row")).to_have_count(1, timeout=15_000)
    needle.locator(".tw-task-name").click()
    pane = needle.locator(".tw-details")
    expect(pane.locator('[data-field="status"] dd')).to_have_text("completed (100.0%)", timeout=15_000)
    expect(pane.locator('[data-field="arguments"] dd')).to_contain_text("released when the task finished")
    expect(pane.locator('[data-field="meta-dataset"] dd')).to_have_text("survey-2026")
    expect(pane.locator('[data-field="cpu"] dd')).to_contain_text("n/a")
    started = pane.locator('[data-field="started"] dd').inner_text()
    assert ":" in started, started  # a local wall-clock time
    b.screenshot("details-pane", dash)
    search.fill("")
    expect(dash.locator(".tw-body .tw-row")).to_have_count(20, timeout=15_000)
    assert_page_clean(b)
