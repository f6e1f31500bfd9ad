"""Benchmark: how long a real notebook page takes to show a dashboard of a worker with 10,000 tasks.

    python benchmarks/bench_render.py [--tasks 10000] [--repeat 5] [--app lab|notebook]

End to end, in JupyterLab (or Notebook 7) in headless Chromium, through the browser-test harness
(tests/e2e/harness.py): a kernel holds a worker that knows ``--tasks`` tasks (all but 208 completed,
8 running, 200 pending). Each measured cell runs ``worker.dashboard(max_rows=R)``; the clock runs in
the page from the moment the cell is sent to the kernel until the cell's dashboard has all its rows
in the DOM and a frame has been painted. That includes the kernel building the widget (O(rows
shown)), the comm traffic and the JavaScript render. Measured for the default ``max_rows`` (200
rows shown) and for every task as a row (``max_rows=tasks``, a stress case). Then the Timeline tab
of a fresh dashboard: from the click until every task is in the chart and a frame was painted (the
kernel builds the columns of all ``--tasks`` tasks, sends them with one binary buffer, the page
decodes them and draws the visible rows). Prints the medians.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from e2e.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Browser,
    code_cell,
    open_notebook,
    start_server,
    stop_server,
    write_notebook,
)

RUNNING, PENDING = 8, 200
#: The results' key of the Timeline tab measurements.
TIMELINE_KEY = -1

SETUP = """\
import asyncio, time
from task_worker import AsyncTaskWorker

worker = AsyncTaskWorker(max_workers={running}, max_history={tasks} + 1000)
await worker.start()

async def noop(i):
    return i

async def hold():
    await asyncio.sleep(3600)

for i in range({tasks} - {running} - {pending}):
    worker.add_task_nowait(noop, i)
await worker.join()
for i in range({running} + {pending}):
    worker.add_task_nowait(hold, priority=i)
await asyncio.sleep(0.2)
print("SETUP-DONE", len(worker), worker.stats().busy)
"""

MEASURED = """\
if "dash" in globals():
    dash.close()  # the previous run's view leaves the page: each run starts from the same DOM
t0 = time.perf_counter()
dash = worker.dashboard(max_rows={rows})
print(f"BUILD {{(time.perf_counter() - t0) * 1000:.1f}} ms")
dash"""

TIMELINE = """\
if "tl" in globals():
    tl.close()
tl = worker.dashboard()
tl"""

#: Runs cell ``index`` (a fresh dashboard), then clicks its Timeline tab and resolves with the
#: milliseconds until the chart holds ``tasks`` tasks and the next frame was painted.
_TIMELINE_JS = """async ([index, tasks]) => {
    const panel = window.jupyterapp.shell.currentWidget;
    panel.content.activeCellIndex = index;
    const cell = panel.content.widgets[index].node;
    window.jupyterapp.commands.execute('notebook:run-cell');
    const frame = () => new Promise(r => requestAnimationFrame(r));
    const start = performance.now();
    let tab;
    while (!(tab = cell.querySelector('.tw-dashboard .tw-tab[data-tab="timeline"]'))
           || !cell.querySelector('.tw-dashboard .tw-row')) {
        await frame();
        if (performance.now() - start > 120000) throw new Error('no dashboard after 120 s');
    }
    const t0 = performance.now();
    tab.click();
    const canvas = cell.querySelector('.tw-tl-canvas');
    while (canvas.dataset.tasks !== String(tasks)) {
        await frame();
        if (performance.now() - t0 > 120000) throw new Error('no timeline after 120 s');
    }
    await frame();
    return performance.now() - t0;
}"""

#: Runs cell ``index`` and resolves with the milliseconds until ``rows`` rows of its dashboard are
#: in the DOM and the next frame was painted.
_MEASURE_JS = """async ([index, rows]) => {
    const panel = window.jupyterapp.shell.currentWidget;
    panel.content.activeCellIndex = index;
    const cell = panel.content.widgets[index].node;
    const t0 = performance.now();
    window.jupyterapp.commands.execute('notebook:run-cell');
    const frame = () => new Promise(r => requestAnimationFrame(r));
    while (cell.querySelectorAll('.tw-dashboard .tw-row').length < rows) {
        await frame();
        if (performance.now() - t0 > 120000) throw new Error('no dashboard after 120 s');
    }
    await frame();
    return performance.now() - t0;
}"""


def measure(app: str, tasks: int, repeat: int) -> dict[int, list[float]]:
    from playwright.sync_api import sync_playwright

    cases = [200, tasks]
    cells = [SETUP.format(tasks=tasks, running=RUNNING, pending=PENDING)]
    plan: list[tuple[int, int]] = []  # (cell index, max_rows)
    for rows in cases:
        for _ in range(repeat):
            cells.append(MEASURED.format(rows=rows))
            plan.append((len(cells) - 1, rows))
    timeline_cells = []
    for _ in range(repeat):
        cells.append(TIMELINE)
        timeline_cells.append(len(cells) - 1)
    results: dict[int, list[float]] = {rows: [] for rows in cases}
    results[TIMELINE_KEY] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        write_notebook(root, "render.ipynb", cells)
        server = start_server(app, root, Path(tmp) / "home")
        try:
            with sync_playwright() as p:
                context = p.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"), executable_path=CHROMIUM, headless=True,
                    args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
                try:
                    b = Browser(context, context.new_page())
                    open_notebook(b, server, "render.ipynb")
                    b.page.evaluate("""() => {
                        const panel = window.jupyterapp.shell.currentWidget;
                        panel.content.activeCellIndex = 0;
                        window.jupyterapp.commands.execute('notebook:run-cell');
                    }""")
                    code_cell(b, "SETUP-DONE").get_by_text("SETUP-DONE").wait_for(timeout=300_000)
                    for index, rows in plan:
                        ms = b.page.evaluate(_MEASURE_JS, [index, min(rows, tasks)])
                        output = code_cell(b, "dash = worker.dashboard").nth(index - 1).locator(
                            ".jp-Cell-outputArea").text_content() or ""
                        build = re.search(r"BUILD ([0-9.]+) ms", output)
                        results[rows].append(ms)
                        print(f"  {min(rows, tasks):>6} rows: {ms:7.1f} ms in the page "
                              f"({build[1] if build else '?'} ms of it building the widget in the kernel)")
                    for index in timeline_cells:
                        ms = b.page.evaluate(_TIMELINE_JS, [index, tasks])
                        results[TIMELINE_KEY].append(ms)
                        print(f"  timeline tab, {tasks} tasks: {ms:7.1f} ms from the click to the chart")
                finally:
                    context.close()
        finally:
            stop_server(server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--app", choices=("lab", "notebook"), default="lab")
    args = parser.parse_args()
    if args.tasks < RUNNING + PENDING:
        parser.error(f"--tasks must be at least {RUNNING + PENDING}")
    print(f"{args.app}: a dashboard of a worker knowing {args.tasks} tasks, {args.repeat} runs each")
    results = measure(args.app, args.tasks, args.repeat)
    for rows, times in results.items():
        what = (f"Timeline tab click -> {args.tasks} tasks drawn" if rows == TIMELINE_KEY
                else f"cell run -> {rows} rows rendered")
        print(f"median {statistics.median(times):7.1f} ms  (min {min(times):.1f}, max {max(times):.1f}) "
              f"{what}")


if __name__ == "__main__":
    main()
