"""Benchmark the TaskDashboard: messages per second and kernel CPU with 1,000 tasks
progressing, and headless Chromium's time to render 10,000 rows.

    python benchmarks/bench_dashboard.py [--tasks 1000] [--seconds 3] [--no-browser]

Kernel part: a real ipykernel (this interpreter's) driven with jupyter_client.
In each scenario ``--tasks`` coroutine tasks report progress for ``--seconds``,
either flat out (``report_progress`` then ``await asyncio.sleep(0)``, the loop
saturated) or paced (every 50 ms), once without and once with a dashboard
displayed. Measured: dashboard comm messages and bytes per second (counted on
iopub), progress reports the tasks managed, kernel CPU (``process_time``) per
wall second, time spent inside the dashboard's event handler and flush
(instrumented), and how long a trivial cell takes to reply meanwhile.

Browser part: dashboard.js rendered in headless Chromium (/usr/bin/chromium,
via Playwright) with a stub model holding 10,000 rows, timed to layout and to
the second animation frame.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Any

STATIC = pathlib.Path(__file__).resolve().parents[1] / "task_worker" / "static"

KERNEL_SETUP = r"""
import asyncio, json, time
from task_worker import AsyncTaskWorker, report_progress
from task_worker import _dashboard

_acc = {"event": 0.0, "flush": 0.0, "events": 0}
_cls = _dashboard.TaskDashboard
_orig_event, _orig_flush = _cls._on_event, _cls._flush

def _timed_event(self, event):
    t = time.perf_counter()
    _orig_event(self, event)
    _acc["event"] += time.perf_counter() - t
    _acc["events"] += 1

def _timed_flush(self):
    t = time.perf_counter()
    _orig_flush(self)
    _acc["flush"] += time.perf_counter() - t

_cls._on_event, _cls._flush = _timed_event, _timed_flush

async def spin(seconds, pause):
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while (t := loop.time() - start) < seconds:
        report_progress(t / seconds)
        n += 1
        await asyncio.sleep(pause)
    return n
"""

KERNEL_START = r"""
_w = AsyncTaskWorker(max_workers={tasks})
await _w.start()
_dash = _w.dashboard() if {with_dash} else None
if _dash is not None:
    display(_dash)
_acc.update(event=0.0, flush=0.0, events=0)
_ids = [_w.add_task_nowait(spin, {seconds}, {pause}) for _ in range({tasks})]
_t0, _c0 = time.perf_counter(), time.process_time()
"""

KERNEL_JOIN = r"""
await _w.join()
_wall, _cpu = time.perf_counter() - _t0, time.process_time() - _c0
_reports = sum(_w.get_task_info(i).result for i in _ids)
print("RESULT " + json.dumps(dict(wall=_wall, cpu=_cpu, reports=_reports, **_acc)))
if _dash is not None:
    _dash.close()
await _w.stop()
"""


class Kernel:
    def __init__(self) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        self.tmp = tempfile.TemporaryDirectory()
        spec = pathlib.Path(self.tmp.name) / "kernels" / "bench"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "bench", "language": "python"}))
        ksm = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
        self.km = KernelManager(kernel_name="bench", kernel_spec_manager=ksm)
        self.km.start_kernel(env={**os.environ, "IPYTHONDIR": str(pathlib.Path(self.tmp.name) / "ipy")})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.iopub: list[dict[str, Any]] = []

    def send(self, code: str) -> str:
        return str(self.kc.execute(code))

    def wait(self, msg_id: str, timeout: float = 120) -> tuple[float, list[dict[str, Any]]]:
        """Read iopub until ``msg_id``'s idle; returns (seconds to reply, its iopub)."""
        t0 = time.perf_counter()
        start = len(self.iopub)
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            self.iopub.append(msg)
            if (msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == msg_id
                    and msg["content"]["execution_state"] == "idle"):
                break
        reply = self.kc.get_shell_msg(timeout=timeout)
        if reply["content"]["status"] != "ok":
            raise RuntimeError("\n".join(reply["content"].get("traceback", [])))
        return time.perf_counter() - t0, self.iopub[start:]

    def run(self, code: str) -> tuple[float, list[dict[str, Any]]]:
        return self.wait(self.send(code))

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        self.tmp.cleanup()


def scenario(k: Kernel, tasks: int, seconds: float, pause: float, with_dash: bool) -> dict[str, Any]:
    _, start_io = k.run(KERNEL_START.format(tasks=tasks, seconds=seconds, pause=pause,
                                            with_dash=with_dash))
    model_ids = [m["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
                 for m in start_io if m["msg_type"] == "display_data"]
    mark = len(k.iopub)
    # Trivial cells while the tasks run: how long until each replies?
    latencies = []
    t_end = time.monotonic() + seconds - 0.5
    while time.monotonic() < t_end:
        time.sleep(0.25)
        latencies.append(k.run("1 + 1")[0])
    _, join_io = k.run(KERNEL_JOIN)
    line = next(m["content"]["text"] for m in join_io
                if m["msg_type"] == "stream" and "RESULT " in m["content"]["text"])
    result = json.loads(line.split("RESULT ", 1)[1].splitlines()[0])
    msgs = [m for m in k.iopub[mark:]
            if m["msg_type"] == "comm_msg" and model_ids and m["content"]["comm_id"] == model_ids[0]]
    size = sum(len(json.dumps(m["content"])) for m in msgs)
    wall = result["wall"]
    return {
        "mode": "flat out" if pause == 0 else f"every {pause * 1000:.0f} ms",
        "dashboard": "yes" if with_dash else "no",
        "msgs/s": len(msgs) / wall,
        "kB/s": size / wall / 1000,
        "reports/s": result["reports"] / wall,
        "cpu/wall": result["cpu"] / wall,
        "dash %": 100 * (result["event"] + result["flush"]) / wall,
        "cell reply ms (median, max)": f"{sorted(latencies)[len(latencies) // 2] * 1000:.0f}, "
                                       f"{max(latencies) * 1000:.0f}",
    }


BROWSER_JS = r"""
async ([src, css, n]) => {
  const style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  const mod = (await import(url)).default;
  const now = Date.now();
  const rows = {};
  const statuses = ["running", "pending", "completed", "failed", "cancelled"];
  for (let i = 0; i < n; i++) {
    const status = statuses[i % 5];
    rows["t" + i] = { id: "t" + i, name: "task <b>" + i + "</b>", status, priority: i % 7,
      progress: (i % 1000) / 10, seq: i, created: now - 5000,
      started: status === "pending" ? null : now - 4000,
      completed: ["completed", "failed", "cancelled"].includes(status) ? now - 1000 : null,
      error: status === "failed" ? "ValueError: nope" : undefined,
      traceback: status === "failed" ? "Traceback (most recent call last):\n  ..." : undefined };
  }
  const state = { task_id: "", status_filter: "", note: "", _rows: rows,
    _header: { running: true, busy: 4, max_workers: 4, total: n, shown: n, more: 0,
               counts: { pending: n / 5, running: n / 5, completed: n / 5, failed: n / 5,
                         cancelled: n / 5 } } };
  const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {},
    on() {}, off() {}, send() {} };
  const el = document.createElement("div");
  document.body.appendChild(el);
  const t0 = performance.now();
  const cleanup = mod.render({ model, el });
  const tjs = performance.now();
  el.getBoundingClientRect();
  void document.body.offsetHeight;
  const t1 = performance.now();
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const t2 = performance.now();
  const count = el.querySelectorAll(".tw-row[data-task-id]").length;
  const injected = el.querySelectorAll("b").length;
  cleanup();
  return { script: tjs - t0, layout: t1 - t0, frame: t2 - t0, count, injected };
}
"""


TIMELINE_JS = r"""
async ([src, css, n]) => {
  const style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  const mod = (await import(url)).default;
  const now = Date.now();
  const handlers = {};
  const codes = "prcfx";
  const state = { task_id: "", status_filter: "", note: "", notify: "", notify_after: 10, _rows: {},
    _header: { running: true, busy: 4, max_workers: 4, total: n, shown: 0, more: n,
               counts: { pending: 0, running: 0, completed: n, failed: 0, cancelled: 0 } } };
  let asked = 0;
  const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {},
    on(name, cb) { handlers[name] = cb; }, off() {},
    send(msg) {
      if (msg.type !== "timeline") return;
      asked = performance.now();
      // What the kernel answers: columns plus one float64 buffer (created, started, completed).
      const ids = [], names = [], times = new Float64Array(3 * n);
      let status = "";
      for (let i = 0; i < n; i++) {
        ids.push("t" + i);
        names.push("task " + (i % 50));
        status += codes[i % 5];
        const created = now - 600000 + i * 55;
        times[3 * i] = created;
        times[3 * i + 1] = i % 5 === 0 ? NaN : created + 500;
        times[3 * i + 2] = i % 5 < 2 ? NaN : created + 500 + (i % 97) * 40;
      }
      const full = { type: "timeline", count: n, ids, names, status, now,
                     starved: [[now - 300000, now - 298000], [now - 60000, now - 57000]] };
      setTimeout(() => handlers["msg:custom"](full, [new DataView(times.buffer)]), 0);
    } };
  const el = document.createElement("div");
  el.style.width = "1100px";
  document.body.appendChild(el);
  const cleanup = mod.render({ model, el });
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  const t0 = performance.now();
  el.querySelector('.tw-tab[data-tab="timeline"]').click();
  const canvas = el.querySelector(".tw-tl-canvas");
  while (canvas.dataset.tasks !== String(n)) {
    await frame();
    if (performance.now() - t0 > 30000) throw new Error("no timeline after 30 s");
  }
  const t1 = performance.now();
  await frame();
  // One more frame after scrolling half way: what a redraw of the visible rows costs.
  const scroller = el.querySelector(".tw-tl-scroll");
  const t2 = performance.now();
  scroller.scrollTop = scroller.scrollHeight / 2;
  scroller.dispatchEvent(new Event("scroll"));
  await frame();
  const t3 = performance.now();
  const drawn = Number(canvas.dataset.drawn);
  cleanup();
  return { open: t1 - t0, decodeDraw: t1 - asked, scroll: t3 - t2, drawn, tasks: n };
}
"""


def timeline_render(n: int) -> dict[str, Any] | None:
    """The timeline tab of a dashboard whose worker knows ``n`` tasks: from the click to the
    drawn chart (decode the columns, sort, draw the visible rows), and one scrolled redraw."""
    chromium = "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists(chromium):
        return None
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
    src, css = dashboard_source()
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True,
                                                   args=args)
        try:
            page = ctx.new_page()
            page.set_content("<!doctype html><html><body></body></html>")
            page.evaluate(TIMELINE_JS, [src, css, 200])  # warm up
            runs = [page.evaluate(TIMELINE_JS, [src, css, n]) for _ in range(3)]
        finally:
            ctx.close()
    best: dict[str, Any] = min(runs, key=lambda r: r["open"])
    assert best["tasks"] == n and 0 < best["drawn"] < 40, best  # only the visible rows
    return best


def dashboard_source() -> tuple[str, str]:
    """The dashboard's ES module (its static parts concatenated, as the widget does) and CSS."""
    sys.path.insert(0, str(STATIC.parents[1]))
    from task_worker._dashboard import _ESM_PARTS

    src = "\n".join((STATIC / part).read_text() for part in _ESM_PARTS)
    return src, (STATIC / "dashboard.css").read_text()


def browser_render(n: int) -> dict[str, Any] | None:
    chromium = "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists(chromium):
        return None
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
    src, css = dashboard_source()
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True,
                                                   args=args)
        try:
            page = ctx.new_page()
            page.set_content("<!doctype html><html><body></body></html>")
            page.evaluate(BROWSER_JS, [src, css, 200])  # warm up (module compile)
            runs = [page.evaluate(BROWSER_JS, [src, css, n]) for _ in range(3)]
        finally:
            ctx.close()
    best: dict[str, Any] = min(runs, key=lambda r: r["frame"])
    assert best["count"] == n and best["injected"] == 0, best
    return best


def table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    cells = [[c for c in cols]] + [[f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c])
                                     for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rows", type=int, default=10_000, help="rows for the browser render")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--browser-only", action="store_true")
    opts = parser.parse_args()
    if opts.browser_only:
        print(browser_render(opts.rows))
        print(timeline_render(opts.rows))
        return

    k = Kernel()
    try:
        k.run(KERNEL_SETUP)
        results = [scenario(k, opts.tasks, opts.seconds, pause, with_dash)
                   for pause in (0.0, 0.05) for with_dash in (False, True)]
    finally:
        k.close()
    print(f"\n{opts.tasks} tasks reporting progress for {opts.seconds:g} s, real ipykernel "
          f"(python {sys.version.split()[0]}):")
    print(table(results))
    print("  msgs/s, kB/s: dashboard comm messages on iopub; reports/s: report_progress calls made;"
          "\n  cpu/wall: kernel process CPU seconds per second; dash %: wall time inside the"
          "\n  dashboard's event handler and flush (incl. sending); cell reply ms: a `1 + 1` cell"
          " sent meanwhile.")
    if not opts.no_browser:
        res = browser_render(opts.rows)
        if res is None:
            print("\nbrowser: skipped (playwright or /usr/bin/chromium missing)")
        else:
            print(f"\nheadless Chromium, dashboard.js with {opts.rows} rows (best of 3): "
                  f"render+layout {res['layout']:.0f} ms, to second frame {res['frame']:.0f} ms")
        tl = timeline_render(opts.rows)
        if tl is not None:
            print(f"timeline tab with {opts.rows} tasks (best of 3): click to drawn {tl['open']:.0f} ms "
                  f"(decode+sort+draw {tl['decodeDraw']:.0f} ms, {tl['drawn']} rows drawn), "
                  f"scrolled redraw {tl['scroll']:.0f} ms")


if __name__ == "__main__":
    main()
