"""The dashboard in real kernels (ipykernel 7 and 6), driven with jupyter_client through the
shared ``KernelSession`` harness (``conftest.py``).

1,000 tasks report progress as fast as they can for 2 s while a dashboard is
displayed: the dashboard's comm must carry at most about 10 messages per
second, and no iopub message may be lost (the cell's output, its reply, its
``idle``, and the dashboard's final state all arrive). Then: front-end state
updates, traceback naming, and results whose repr raises.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import KernelSession, strip_ansi

pytest.importorskip("jupyter_client")
pytest.importorskip("anywidget")
pytest.importorskip("ipykernel")


FLAT_OUT_SETUP = """
from task_worker import AsyncTaskWorker, report_progress

flat_w = AsyncTaskWorker(max_workers=1000)
await flat_w.start()
flat_dash = flat_w.dashboard()
display(flat_dash)

async def flat_spin(seconds):
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (t := loop.time() - start) < seconds:
        report_progress(t / seconds)
        await asyncio.sleep(0)
"""

FLAT_OUT_START = """
flat_t0 = time.perf_counter()
for _ in range(1000):
    flat_w.add_task_nowait(flat_spin, 2.0)
"""

FLAT_OUT_JOIN = """
await flat_w.join()
print("joined after", round(time.perf_counter() - flat_t0, 2), "s")
"""


def _dashboard_messages(kernel: KernelSession, comm_id: str, since: int = 0) -> list[dict[str, Any]]:
    return [m for m in kernel.log[since:]
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id]


def _final_header_seen(kernel: KernelSession, comm_id: str) -> bool:
    headers = [m["content"]["data"]["content"]["header"] for m in _dashboard_messages(kernel, comm_id)
               if m["content"]["data"].get("method") == "custom"
               and "header" in m["content"]["data"]["content"]]
    return bool(headers) and headers[-1]["counts"]["completed"] == 1000 and headers[-1]["busy"] == 0


@pytest.mark.timeout(120)
def test_thousand_tasks_progressing_flat_out_send_few_messages_and_lose_nothing(
        kernel: KernelSession) -> None:
    setup = kernel.execute(FLAT_OUT_SETUP)
    [model_id] = setup.widget_ids()
    assert len(kernel.rows[model_id]) == 0  # the comm_open's state: no tasks yet

    start = len(kernel.log)
    t0 = time.monotonic()
    kernel.execute(FLAT_OUT_START)
    joined = kernel.execute(FLAT_OUT_JOIN, timeout=90)
    wall = time.monotonic() - t0
    # The last flush comes up to 0.1 s after the last change: wait for it, on its message.
    kernel.wait_for(lambda: _final_header_seen(kernel, model_id), what="the final header")

    assert joined.stdout.startswith("joined after"), joined.stdout
    ours = _dashboard_messages(kernel, model_id, start)
    patches = [m["content"]["data"]["content"] for m in ours
               if m["content"]["data"]["method"] == "custom"]
    assert len(patches) == len(ours)  # rows travel as patches, never as trait updates
    print(f"[{kernel.label}] {len(patches)} dashboard messages in {wall:.2f} s ({joined.stdout.strip()})")
    assert 5 <= len(patches) <= 10 * wall + 3
    every = [m["content"]["data"]["content"] for m in _dashboard_messages(kernel, model_id)]
    assert [p["seq"] for p in every] == list(range(1, len(every) + 1))  # none lost
    rows = kernel.rows[model_id]  # the harness applied every patch, as a browser does
    assert len(rows) == 200 and {r["status"] for r in rows.values()} == {"completed"}
    assert {r["progress"] for r in rows.values()} == {100.0}
    kernel.execute("flat_dash.close(); await flat_w.stop()")


# ------------------------------------------------ state updates from the front end
def _send_comm(kernel: KernelSession, comm_id: str, data: dict[str, Any]) -> None:
    """Send a comm_msg on the shell channel exactly as a frontend does."""
    kernel.kc.shell_channel.send(kernel.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data}))


def _comm_msgs(kernel: KernelSession, comm_id: str, method: str, since: int) -> list[dict[str, Any]]:
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


def test_front_end_updates_cannot_wedge_or_forge_the_dashboard(kernel: KernelSession) -> None:
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


def test_a_failed_task_cell_is_named_the_same_in_its_output_and_in_the_dashboard(
        kernel: KernelSession) -> None:
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


def test_a_result_whose_repr_raises_is_shown_safely_in_its_own_view(kernel: KernelSession) -> None:
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
