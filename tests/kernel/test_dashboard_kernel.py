"""The dashboard in a real ipykernel (this venv's, 7.x), driven with jupyter_client.

1,000 tasks report progress as fast as they can for 2 s while a dashboard is
displayed: the dashboard's comm must carry at most about 10 messages per
second, and no iopub message may be lost (the cell's output, its reply, its
``idle``, and the dashboard's final state all arrive).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import strip_ansi

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("anywidget")
pytest.importorskip("ipykernel")


class DashKernel:
    """A kernel plus a blocking client that keeps every iopub message it reads."""

    def __init__(self, km: Any, kc: Any) -> None:
        self.km, self.kc = km, kc
        self.iopub: list[dict[str, Any]] = []

    def run(self, code: str, timeout: float = 30) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Execute ``code``; return its execute_reply and the iopub messages read until
        its ``idle`` (the reply and the idle must both arrive: nothing lost)."""
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + timeout
        start = len(self.iopub)
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no idle for {code[:60]!r} within {timeout} s")
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            self.iopub.append(msg)
            idle = (msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == msg_id
                    and msg["content"]["execution_state"] == "idle")
        reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        assert reply["parent_header"]["msg_id"] == msg_id
        if reply["content"]["status"] != "ok":
            raise AssertionError("\n".join(reply["content"].get("traceback", [])))
        return reply, self.iopub[start:]

    def drain(self, seconds: float) -> None:
        """Read iopub for ``seconds`` more (late widget messages)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.iopub.append(self.kc.get_iopub_msg(timeout=remaining))
            except queue.Empty:
                pass


@pytest.fixture
def dash_kernel(tmp_path: Any) -> Iterator[DashKernel]:
    """A fresh kernel on this venv's python, isolated from the user's IPython profile."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / "tw-dash"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "task_worker dashboard test", "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    km = KernelManager(kernel_name="tw-dash", kernel_spec_manager=ksm)
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        yield DashKernel(km, kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


SETUP = """
import asyncio, time
from task_worker import AsyncTaskWorker, report_progress

w = AsyncTaskWorker(max_workers=1000)
await w.start()
dash = w.dashboard()
display(dash)

async def spin(seconds):
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (t := loop.time() - start) < seconds:
        report_progress(t / seconds)
        await asyncio.sleep(0)
"""

START = """
t0 = time.perf_counter()
for _ in range(1000):
    w.add_task_nowait(spin, 2.0)
"""

JOIN = """
await w.join()
print("joined after", round(time.perf_counter() - t0, 2), "s")
"""


def _apply(rows: dict[str, dict[str, Any]], content: dict[str, Any]) -> None:
    if content["type"] == "snapshot":
        rows.clear()
        rows.update({r["id"]: r for r in content["rows"]})
        return
    for task_id in content.get("remove", []):
        rows.pop(task_id, None)
    for row in content.get("upsert", []):
        rows[row["id"]] = row
    for task_id, pct in content.get("progress", []):
        rows[task_id]["progress"] = pct


@pytest.mark.timeout(60)
def test_thousand_tasks_progressing_flat_out_send_few_messages_and_lose_nothing(
        dash_kernel: DashKernel) -> None:
    _, setup_io = dash_kernel.run(SETUP)
    views = [m["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for m in setup_io if m["msg_type"] == "display_data"]
    assert len(views) == 1
    model_id = views[0]
    opened = [m for m in setup_io
              if m["msg_type"] == "comm_open" and m["content"]["comm_id"] == model_id]
    rows = dict(opened[0]["content"]["data"]["state"]["_rows"])

    start = len(dash_kernel.iopub)
    t0 = time.monotonic()
    dash_kernel.run(START)
    _, join_io = dash_kernel.run(JOIN)
    wall = time.monotonic() - t0
    dash_kernel.drain(0.5)  # the last flush comes up to 0.1 s after the last change

    stdout = "".join(m["content"]["text"] for m in join_io if m["msg_type"] == "stream")
    assert stdout.startswith("joined after"), stdout
    ours = [m for m in dash_kernel.iopub[start:]
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == model_id]
    patches = [m["content"]["data"]["content"] for m in ours
               if m["content"]["data"]["method"] == "custom"]
    assert len(patches) == len(ours)  # rows travel as patches, never as trait updates
    print(f"{len(patches)} dashboard messages in {wall:.2f} s ({stdout.strip()})")
    assert 5 <= len(patches) <= 10 * wall + 3
    every = [m["content"]["data"]["content"] for m in dash_kernel.iopub
             if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == model_id]
    assert [p["seq"] for p in every] == list(range(1, len(every) + 1))  # none lost
    for content in every:
        _apply(rows, content)
    header = next(p["header"] for p in reversed(patches) if "header" in p)
    assert header["counts"]["completed"] == 1000 and header["busy"] == 0
    assert len(rows) == 200 and {r["status"] for r in rows.values()} == {"completed"}
    assert {r["progress"] for r in rows.values()} == {100.0}


# ------------------------------------------------ state updates from the front end
def _send_comm(kernel: Any, comm_id: str, data: dict[str, Any]) -> None:
    """Send a comm_msg on the shell channel exactly as a frontend does."""
    kernel.kc.shell_channel.send(kernel.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data}))


def _comm_msgs(kernel: Any, comm_id: str, method: str, since: int) -> list[dict[str, Any]]:
    return [m["content"]["data"] for m in kernel.log[since:]
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
            and m["content"]["data"].get("method") == method]


FORGED_SETUP = """
fe_gate = asyncio.Event()
fe_worker = task_worker.AsyncTaskWorker(max_workers=2)
await fe_worker.start()

async def fe_hold():
    await fe_gate.wait()

fe_first = await fe_worker.add_task(fe_hold, task_id="fe-first")
fe_dash = fe_worker.dashboard(status_filter="running")
display(fe_dash)
"""


def test_front_end_updates_cannot_wedge_or_forge_the_dashboard(kernel: Any) -> None:
    """Real comm ``update`` messages, as a browser sends them: an invalid filter is refused (the
    kernel keeps its value and echoes it back) and the dashboard goes on updating; kernel-owned
    state (rows, header, task id) sent by the front end never reaches the model or new views."""
    setup = kernel.execute(FORGED_SETUP)
    [dash_id] = setup.widget_ids()
    start = len(kernel.log)
    _send_comm(kernel, dash_id, {"method": "update", "state": {"status_filter": "bogus"},
                                 "buffer_paths": []})
    forged = {"forged": {"id": "forged", "name": "forged", "status": "running", "priority": 0,
                         "progress": 0, "seq": 0, "created": 0, "started": 0, "completed": None}}
    _send_comm(kernel, dash_id, {"method": "update", "buffer_paths": [], "state": {
        "_rows": forged, "_header": {"total": 99}, "task_id": "fe-first", "note": "forged"}})
    # Shell messages are handled in order: this cell runs after both updates.
    r = kernel.execute("print(repr(fe_dash.status_filter), fe_dash.task_id == '', "
                       "sorted(fe_dash.get_state()['_rows']), fe_dash.note == '')")
    assert r.stdout.split() == ["'running'", "True", "['fe-first']", "True"], r.stdout
    echoes = _comm_msgs(kernel, dash_id, "echo_update", start)
    assert {"status_filter": "running"} in [e["state"] for e in echoes]
    [back] = [e["state"] for e in echoes if "_rows" in e["state"]]  # the kernel's values
    assert set(back["_rows"]) == {"fe-first"} and back["task_id"] == "" and back["note"] == ""
    # The dashboard still updates: a new running task reaches it as a patch.
    kernel.execute("fe_second = await fe_worker.add_task(fe_hold, task_id='fe-second')")
    kernel.wait_for(lambda: kernel.row_status(dash_id, "fe-second") == "running", what="fe-second row")
    # A view opened now (request_state) gets the kernel's rows, nothing forged.
    since = len(kernel.log)
    _send_comm(kernel, dash_id, {"method": "request_state"})
    kernel.wait_for(lambda: bool(_comm_msgs(kernel, dash_id, "update", since)), what="state reply")
    state = _comm_msgs(kernel, dash_id, "update", since)[-1]["state"]
    assert set(state["_rows"]) == {"fe-first", "fe-second"}
    assert state["task_id"] == "" and state["status_filter"] == "running"
    assert state["_header"]["counts"]["running"] == 2
    kernel.execute("fe_gate.set(); await fe_worker.join(); fe_dash.close(); await fe_worker.stop()")


def test_a_failed_task_cell_is_named_the_same_in_its_output_and_in_the_dashboard(kernel: Any) -> None:
    """The dashboard row's traceback says ``Cell In[N], line L`` where the task's output area does,
    never the temporary file the cell was compiled into."""
    r = kernel.execute("%%task -n tb_naming\ntb_naming_x = 1\nraise ValueError('tb naming')")
    number = r.reply["content"]["execution_count"]
    [view] = r.widget_ids()
    _single, output = kernel.children(view)
    kernel.wait_for(lambda: "tb naming" in kernel.output_text(output), what="the traceback in the output")
    assert f"Cell In[{number}], line 2" in kernel.output_text(output)
    dash = kernel.execute("%tasks").widget_ids()[0]
    rows = [row for row in kernel.rows[dash].values() if row["name"] == "tb_naming"]
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    traceback = rows[0]["traceback"]
    assert f"  Cell In[{number}], line 2\n    raise ValueError('tb naming')\n" in traceback, traceback
    assert "ipykernel_" not in traceback and 'File "' not in traceback, traceback


BAD_HTML = """%%task -n bad_html_result
class BadHTML:
    def _repr_html_(self):
        raise ValueError("html boom")

    def __repr__(self):
        return "BadHTML()"

BadHTML()"""

BAD_REPR = """%%task -n bad_repr_result
class BadRepr:
    def __repr__(self):
        raise ValueError("repr boom")

BadRepr()"""


BAD_JSON = """%%task -n bad_json_result
class BadJSON:
    def _repr_json_(self):
        return {"not json": object()}

    def __repr__(self):
        return "BadJSON()"

BadJSON()"""


def test_a_result_whose_repr_raises_is_shown_safely_in_its_own_view(kernel: Any) -> None:
    """A task result whose ``_repr_html_`` or ``__repr__`` raises: the view shows what could be
    formatted (or a placeholder) and the formatting error, in the task's own output area; nothing
    goes to another cell as an error, and the kernel carries on."""
    start = len(kernel.log)
    views = {}
    for name, code in (("html", BAD_HTML), ("repr", BAD_REPR), ("json", BAD_JSON)):
        [view] = kernel.execute(code).widget_ids()
        views[name] = kernel.children(view)[1]
    kernel.wait_for(lambda: "html boom" in kernel.output_text(views["html"])
                    and "repr boom" in kernel.output_text(views["repr"])
                    and "BadJSON()" in kernel.output_text(views["json"]), what="the three outcomes")
    html = kernel.models[views["html"]]["outputs"]
    assert [o["output_type"] for o in html] == ["error", "display_data"], html
    assert html[1]["data"] == {"text/plain": "BadHTML()"}
    shown = kernel.models[views["repr"]]["outputs"]
    assert [o["output_type"] for o in shown] == ["error", "display_data"], shown
    placeholder = shown[1]["data"]["text/plain"]
    assert "BadRepr object" in placeholder and "ValueError" in placeholder, placeholder
    # A format that cannot travel as JSON is dropped (said in an error item); the rest is shown.
    json_out = kernel.models[views["json"]]["outputs"]
    assert [o["output_type"] for o in json_out] == ["error", "display_data"], json_out
    assert json_out[1]["data"] == {"text/plain": "BadJSON()"}
    errors = [m for m in kernel.log[start:] if m["msg_type"] == "error"]
    assert errors == [], [strip_ansi("\n".join(m["content"]["traceback"])) for m in errors]
    r = kernel.execute("print(task_worker.get_worker().get_task_info("
                       "task_worker._session.resolve_task_id('bad_repr_result', task_worker.get_worker()))"
                       ".status.value)")
    assert r.stdout.strip() == "completed"
