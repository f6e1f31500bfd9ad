"""The dashboard's Timeline tab, ETAs and notifications in a real JupyterLab page (headless Chromium).

One page load, many checks: the Notify toggle asks the browser's permission on its first use; a
long task and a failing one are notified (a browser notification, observed through a wrapped
``window.Notification``, and a JupyterLab toast), a quick one on a visible page and a cancelled
one are not, a quick one on a hidden page is; clicking the notification focuses the window; a
running task shows its time left and the header when all is done; the Timeline tab draws the
tasks and the span a blocking cell starved the loop, a bar can be hovered and pinned, zoom works.
The timeline's screenshot is also copied to ``docs/timeline.png`` (the README shows it) when that
file is missing or ``TASK_WORKER_UPDATE_DOCS=1``, so that a test run leaves the checkout clean.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .harness import (
    REPO,
    Browser,
    JupyterServer,
    assert_page_clean,
    code_cell,
    open_notebook,
    write_notebook,
)

#: Records every Notification the page creates, pretends the permission was never asked until
#: ``requestPermission`` is called (Playwright grants it), and counts ``window.focus()`` calls.
WRAP_NOTIFICATION_JS = """(() => {
  const Real = window.Notification;
  if (!Real) return;
  window.__twNotes = [];
  window.__twAsked = 0;
  window.__twFocus = 0;
  function Wrapped(title, options) {
    const note = { title, body: options && options.body, tag: options && options.tag, n: null };
    window.__twNotes.push(note);
    note.n = new Real(title, options);
    return note.n;
  }
  Object.defineProperty(Wrapped, "permission", {
    get: () => (window.__twAsked ? Real.permission : "default") });
  Wrapped.requestPermission = (...args) => { window.__twAsked++; return Real.requestPermission(...args); };
  window.Notification = Wrapped;
  const focus = window.focus.bind(window);
  window.focus = () => { window.__twFocus++; focus(); };
})();"""

SETUP = [
    "%load_ext task_worker\nimport asyncio, time\nimport task_worker\n%task config notify_after=1",
    "%tasks",
]
WORK = [
    "%%task -n quick\n1 + 1",
    "%%task -n slowpoke\nfor i in range(25):\n    task_worker.report_progress((i + 1) / 25)\n"
    "    await asyncio.sleep(0.1)",
    "%%task -n eta_demo\nfor i in range(1200):\n    task_worker.report_progress((i + 1) / 1200)\n"
    "    await asyncio.sleep(0.1)",
    '%%task -n doomed\nawait asyncio.sleep(1.2)\nraise ValueError("boom")',
    # A blocking cell (once "quick" is done, so that it cannot be what makes "quick" slow).
    'await task_worker.wait("quick")\ntime.sleep(1.6)',
    'print("INSIGHT-WORK-DONE")',
]
HIDDEN = ["%%task -n hidden_quick\n2 + 2"]


#: The dashboard's module on a stub model whose kernel answers the timeline request with ``n``
#: tasks created 180 ms apart (each ran 1 s); then a patch adds one task and removes two.
#: Reports what the chart holds and draws at each zoom.
STUB_TIMELINE_JS = """async ([src, n]) => {
  const mod = (await import(URL.createObjectURL(new Blob([src], { type: "text/javascript" })))).default;
  const now = Date.now();
  const handlers = {};
  const state = { task_id: "", status_filter: "", note: "", notify: "", notify_after: 10, _rows: {},
    _header: { running: true, busy: 0, max_workers: 4, total: n, shown: 0, more: n,
               counts: { pending: 0, running: 0, completed: n, failed: 0, cancelled: 0 } } };
  const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {},
    on(name, cb) { handlers[name] = cb; }, off() {},
    send(msg) {
      if (msg.type !== "timeline") return;
      const ids = [], names = [], times = new Float64Array(3 * n);
      for (let i = 0; i < n; i++) {
        ids.push("t" + i); names.push("task " + i);
        const created = now - (n - i) * 180;
        times.set([created, created + 10, created + 1010], 3 * i);
      }
      setTimeout(() => handlers["msg:custom"]({ type: "timeline", count: n, ids, names,
        status: "c".repeat(n), now, starved: [] }, [new DataView(times.buffer)]), 0);
    } };
  const el = document.createElement("div");
  el.style.width = "900px";
  document.body.appendChild(el);
  const cleanup = mod.render({ model, el });
  const canvas = el.querySelector(".tw-tl-canvas");
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  const read = () => ({ tasks: Number(canvas.dataset.tasks), visible: Number(canvas.dataset.visible),
                        drawn: Number(canvas.dataset.drawn) });
  el.querySelector('.tw-tab[data-tab="timeline"]').click();
  const t0 = performance.now();
  while (canvas.dataset.tasks !== String(n) && performance.now() - t0 < 20000) await frame();
  await frame();
  const all = read();
  const zoom = el.querySelector(".tw-tl-zoom");
  zoom.value = "1";
  zoom.dispatchEvent(new Event("change"));
  await frame(); await frame();
  const minute = read();
  handlers["msg:custom"]({ type: "patch", seq: 1, now, timeline: {
    ids: ["fresh"], names: ["fresh"], status: "r", times: [now - 50, now - 40, null],
    remove: ["t0", "t1"] } });
  await frame(); await frame();
  const patched = read();
  cleanup();
  el.remove();
  return { all, minute, patched };
}"""


def _notes(b: Browser) -> list[str]:
    return list(b.page.evaluate("() => (window.__twNotes || []).map(n => n.title)"))


def _run_cells(b: Browser, first: int, last: int) -> None:
    """Run cells ``first``..``last`` (inclusive) without waiting for them."""
    b.page.evaluate("""([first, last]) => {
        const panel = window.jupyterapp.shell.currentWidget;
        const nb = panel.content;
        nb.activeCellIndex = first;
        nb.deselectAll();
        nb.extendContiguousSelectionTo(last);
        window.jupyterapp.commands.execute('notebook:run-cell');
    }""", [first, last])


def test_timeline_eta_and_notifications_in_jupyterlab(
    jupyter: Callable[[str], JupyterServer], browser: Browser, notebook_root: Path,
) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the fixtures skip

    b = browser
    page = b.page
    write_notebook(notebook_root, "insight.ipynb", SETUP + WORK + HIDDEN)
    server = jupyter("lab")
    b.context.grant_permissions(["notifications"], origin=server.url.rstrip("/"))
    b.context.add_init_script(WRAP_NOTIFICATION_JS)
    open_notebook(b, server, "insight.ipynb")

    # The dashboard, then the Notify toggle: its first use asks for the permission.
    _run_cells(b, 0, len(SETUP) - 1)
    dash = code_cell(b, "%tasks").locator(".tw-dashboard")
    toggle = dash.locator(".tw-notify")
    expect(toggle).to_have_attribute("aria-pressed", "false", timeout=30_000)
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("() => window.__twAsked") == 1
    expect(toggle).to_have_attribute("data-permission", "granted")

    # The work: a quick task, a 2.5 s one, a long one with progress, a failing one, a blocked loop.
    _run_cells(b, len(SETUP), len(SETUP) + len(WORK) - 1)
    expect(code_cell(b, "INSIGHT-WORK-DONE").locator(".jp-Cell-outputArea")).to_contain_text(
        "INSIGHT-WORK-DONE", timeout=60_000)
    page.wait_for_function("""() => {
        const t = (window.__twNotes || []).map(n => n.title);
        return t.includes("Task slowpoke completed") && t.includes("Task doomed failed");
    }""", timeout=60_000)
    assert not any("quick" in t for t in _notes(b)), _notes(b)  # visible page, ran < 1 s
    # The JupyterLab toast too (JupyterLab exposes its app to the page in this harness).
    expect(page.locator(".Toastify__toast", has_text="slowpoke").first).to_be_visible(timeout=10_000)

    # A running task with steady progress shows its time left; with nothing waiting, so does the
    # header for the whole queue.
    row = dash.locator('.tw-row[data-task-id="eta_demo"]')
    expect(row.locator(".tw-eta")).to_contain_text("left", timeout=30_000)
    expect(dash.locator(".tw-queue-eta")).to_contain_text("all done in ~", timeout=30_000)
    # Local wall-clock times on hover of the elapsed time.
    row.locator(".tw-col-elapsed").hover()
    assert "started " in (row.locator(".tw-col-elapsed").get_attribute("title") or "")
    b.screenshot("eta", dash)

    # The Timeline tab: every task drawn, the starved span marked, only the visible rows drawn.
    dash.locator('.tw-tab[data-tab="timeline"]').click()
    canvas = dash.locator(".tw-tl-canvas")
    expect(canvas).to_have_attribute("data-tasks", "4", timeout=30_000)
    expect(canvas).not_to_have_attribute("data-starved", "0", timeout=30_000)
    assert int(canvas.get_attribute("data-drawn") or 0) == 4
    assert dash.locator(".tw-tl-count").inner_text().startswith("4 of 4 tasks")
    expect(dash.locator(".tw-scroll")).to_be_hidden()  # the table steps aside
    # Hover the newest task's bar (top row), then click to pin it.
    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 30, box["y"] + 24 + 2 + 8)
    tip = dash.locator(".tw-tl-tip")
    expect(tip).to_be_visible()
    expect(tip).to_have_attribute("data-task-id", "doomed")
    expect(tip).to_contain_text("status: failed")
    b.screenshot("timeline", dash)
    docs_shot = REPO / "docs" / "timeline.png"
    if os.environ.get("TASK_WORKER_UPDATE_DOCS") == "1" or not docs_shot.exists():
        docs_shot.parent.mkdir(exist_ok=True)
        shutil.copyfile(b.shots[-1], docs_shot)
    page.mouse.click(box["x"] + box["width"] - 30, box["y"] + 24 + 2 + 16 + 8)
    info = dash.locator(".tw-tl-info")
    expect(info).to_have_attribute("data-task-id", "eta_demo")
    expect(info).to_contain_text("started ")
    dash.locator(".tw-tl-zoom").select_option("5")
    expect(canvas).to_have_attribute("data-visible", "4")
    dash.locator('.tw-tab[data-tab="table"]').click()
    expect(dash.locator(".tw-scroll")).to_be_visible()

    # Cancelled by the user: never notified, although it ran longer than the threshold.
    row.locator(".tw-cancel").click()
    expect(row).to_have_attribute("data-status", "cancelled", timeout=30_000)
    # A quick task while the page is hidden: notified.
    page.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", { value: "hidden", configurable: true });
        Object.defineProperty(document, "hidden", { value: true, configurable: true });
    }""")
    _run_cells(b, len(SETUP) + len(WORK), len(SETUP) + len(WORK))
    page.wait_for_function(
        "() => (window.__twNotes || []).some(n => n.title === 'Task hidden_quick completed')",
        timeout=60_000)
    titles = _notes(b)
    assert sorted(titles) == ["Task doomed failed", "Task hidden_quick completed",
                              "Task slowpoke completed"], titles
    # Clicking a notification brings the page to the front.
    page.evaluate("() => window.__twNotes[0].n.onclick()")
    assert page.evaluate("() => window.__twFocus") == 1

    # 10,000 tasks (the same module on a stub model, in this page): only the visible rows are
    # drawn, "last 1 min" keeps the tasks of that minute, a patch adds and removes tasks.
    from task_worker._dashboard import TaskDashboard

    res = page.evaluate(STUB_TIMELINE_JS, [TaskDashboard._esm, 10_000])
    assert res["all"]["tasks"] == res["all"]["visible"] == 10_000, res
    assert 10 <= res["all"]["drawn"] <= 25, res
    assert 320 <= res["minute"]["visible"] <= 345, res  # 60 s / 180 ms, give or take the edges
    assert res["patched"]["tasks"] == 9_999, res  # one added, two removed
    # The new task is in the minute (one older task may have left it meanwhile).
    assert res["patched"]["visible"] - res["minute"]["visible"] in (0, 1), res
    assert_page_clean(b)
