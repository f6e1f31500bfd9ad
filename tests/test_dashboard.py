"""TaskDashboard at the Python level: rows, patches, coalescing, front-end messages, leaks.

The widget's comm is replaced by a recording one (as ipywidgets' own tests do
with ``DummyComm``) and its timer by a controlled clock, so every flush is
driven by the test.
"""

from __future__ import annotations

import asyncio
import gc
import json
import pathlib
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("anywidget")

import comm
import ipywidgets

import task_worker
from task_worker import AsyncTaskWorker, EventKind, TaskEvent, TaskStatus, report_progress
from task_worker._dashboard import TaskDashboard
from task_worker._table import make_row, text_table, worker_mimebundle

STATIC = pathlib.Path(task_worker.__file__).parent / "static"


# ------------------------------------------------------------------ harness
class RecordingComm(comm.DummyComm):
    """A comm with no kernel that keeps (a JSON copy of) everything it publishes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.published: list[tuple[str, Any]] = []
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        self.published.append((msg_type, json.loads(json.dumps(data))))


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    yield
    ipywidgets.Widget.close_all()


class FakeHandle:
    def __init__(self, when: float, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when, self.fn, self.args, self.cancelled = when, fn, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A controlled clock and ``call_later``: timers fire only in ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.handles: list[FakeHandle] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> FakeHandle:
        handle = FakeHandle(self.now + delay, fn, args)
        self.handles.append(handle)
        return handle

    @property
    def pending(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while True:
            due = [h for h in self.pending if h.when <= self.now + 1e-9]
            if not due:
                return
            handle = min(due, key=lambda h: h.when)
            handle.cancelled = True
            handle.fn(*handle.args)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_dashboard(worker: AsyncTaskWorker, clock: FakeClock, **options: Any) -> Any:
    return TaskDashboard(worker, _clock=clock, _call_later=clock.call_later, **options)


def messages(dash: Any) -> list[dict[str, Any]]:
    """The custom messages the dashboard sent so far."""
    return [data["content"] for kind, data in dash.comm.published
            if kind == "comm_msg" and data.get("method") == "custom"]


def state_updates(dash: Any) -> list[dict[str, Any]]:
    return [data["state"] for kind, data in dash.comm.published
            if kind == "comm_msg" and data.get("method") == "update"]


def take(dash: Any) -> list[dict[str, Any]]:
    """Messages sent since the last ``take``."""
    out = messages(dash)
    seen = getattr(dash, "_test_seen", 0)
    dash._test_seen = len(out)
    return out[seen:]


def frontend(dash: Any, content: dict[str, Any]) -> None:
    """Deliver a custom message as the comm does when the browser sends one."""
    dash._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def frontend_update(dash: Any, state: dict[str, Any]) -> None:
    """Deliver a state ``update`` as the comm does when the browser saves changes."""
    dash._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                      "buffers": []})


def sent_state(dash: Any, method: str) -> list[dict[str, Any]]:
    """The states the kernel sent to the browser with ``method`` ("update" or "echo_update")."""
    return [data["state"] for kind, data in dash.comm.published
            if kind == "comm_msg" and data.get("method") == method]


async def until(worker: AsyncTaskWorker, task_id: str, status: TaskStatus) -> None:
    """Wait (on worker events, no polling) until the task reaches ``status``."""
    fut = asyncio.get_running_loop().create_future()

    def on_event(event: TaskEvent) -> None:
        if event.task_id == task_id and event.info is not None and event.info.status is status:
            if not fut.done():
                fut.set_result(None)

    unsubscribe = worker.subscribe(on_event)
    try:
        info = worker.get_task_info(task_id)
        if info is None or info.status is not status:
            await asyncio.wait_for(fut, 5)
    finally:
        unsubscribe()


def progress_delivered(worker: AsyncTaskWorker, task_id: str, value: float) -> asyncio.Future[None]:
    """A future set (on worker events) once a progress event of ``task_id`` carrying ``value``
    has been delivered; every subscriber that subscribed earlier has had it by then."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(event: TaskEvent) -> None:
        info = event.info
        if (event.kind is EventKind.PROGRESS and info is not None and info.id == task_id
                and info.progress == value and not fut.done()):
            fut.set_result(None)

    unsubscribe = worker.subscribe(on_event, task_id=task_id)
    fut.add_done_callback(lambda _: unsubscribe())
    return fut


async def blocker(gate: asyncio.Event) -> str:
    await gate.wait()
    return "done"


async def failing() -> None:
    raise ValueError("broken <b>thing</b>")


# -------------------------------------------------------------- rows & state
async def test_initial_state_orders_running_then_pending_by_priority_then_finished(clock: FakeClock) -> None:
    async with AsyncTaskWorker(max_workers=1) as worker:
        gate = asyncio.Event()
        done = await worker.add_task(blocker, asyncio.Event(), task_id="done")
        await worker.cancel_task("done")
        run = await worker.add_task(blocker, gate, task_id="run")
        await until(worker, run, TaskStatus.RUNNING)
        await worker.add_task(blocker, gate, task_id="low", priority=5)
        await worker.add_task(blocker, gate, task_id="high", priority=-1)
        dash = make_dashboard(worker, clock)
        assert [r["id"] for r in dash.rows] == ["run", "high", "low", done]
        assert [r["status"] for r in dash.rows] == ["running", "pending", "pending", "cancelled"]
        assert dash.header["counts"] == {"pending": 2, "running": 1, "completed": 0, "failed": 0,
                                         "cancelled": 1}
        assert dash.header["busy"] == 1 and dash.header["max_workers"] == 1
        # The comm_open carries this full state for the first view.
        opened = next(d for k, d in dash.comm.published if k == "comm_open")["state"]
        assert set(opened["_rows"]) == {"run", "high", "low", "done"}
        gate.set()
        dash.close()


async def test_added_task_sends_one_patch_with_only_that_row(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    first = await worker.add_task(blocker, gate, task_id="first")
    await until(worker, first, TaskStatus.RUNNING)
    dash = make_dashboard(worker, clock)
    take(dash)
    await worker.add_task(blocker, gate, task_id="second", metadata={"owner": "ann"})
    await until(worker, "second", TaskStatus.RUNNING)
    assert take(dash) == []  # nothing before the timer fires
    clock.advance(0.1)
    [patch] = take(dash)
    assert patch["type"] == "patch"
    assert [r["id"] for r in patch["upsert"]] == ["second"]
    assert patch["upsert"][0]["status"] == "running"
    assert patch["upsert"][0]["meta"] == "owner=ann"
    assert patch["header"]["counts"]["running"] == 2
    assert "remove" not in patch and "progress" not in patch
    gate.set()
    await worker.join()
    clock.advance(0.1)
    [patch] = take(dash)
    assert sorted(r["id"] for r in patch["upsert"]) == ["first", "second"]
    assert {r["status"] for r in patch["upsert"]} == {"completed"}
    dash.close()


async def test_many_progress_events_are_coalesced_into_one_message(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    reported, release = asyncio.Event(), asyncio.Event()

    async def spin() -> None:
        for i in range(1, 2001):
            report_progress(i / 4000)
            await asyncio.sleep(0)  # one merged PROGRESS event per loop turn
        reported.set()
        await release.wait()

    events = 0

    def count(event: TaskEvent) -> None:
        nonlocal events
        events += event.kind is EventKind.PROGRESS

    unsubscribe = worker.subscribe(count)
    task_id = await worker.add_task(spin)
    await until(worker, task_id, TaskStatus.RUNNING)
    dash = make_dashboard(worker, clock)
    clock.advance(1)
    take(dash)
    await reported.wait()
    unsubscribe()
    assert events >= 1000  # the dashboard really saw many events...
    assert take(dash) == []
    clock.advance(0.1)
    [patch] = take(dash)  # ...and sent one message
    assert patch["progress"] == [[task_id, 50.0]]
    assert "upsert" not in patch  # progress alone travels as [id, percent]
    release.set()
    await worker.join()
    dash.close()


async def test_progress_below_display_resolution_is_not_resent(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    step, release = asyncio.Event(), asyncio.Event()

    async def creep() -> None:
        report_progress(0.5)
        await step.wait()
        report_progress(0.50004)  # 50.004 % rounds to 50.0 %
        await release.wait()

    first = progress_delivered(worker, "creep", 0.5)
    task_id = await worker.add_task(creep, task_id="creep")
    await asyncio.wait_for(first, 5)
    dash = make_dashboard(worker, clock)
    dash.flush()  # from now on the row is only patched
    take(dash)
    assert dash.rows[0]["progress"] == 50.0
    # Subscribed after the dashboard: once this sees the event, the dashboard has seen it.
    second = progress_delivered(worker, task_id, 0.50004)
    step.set()
    await asyncio.wait_for(second, 5)
    clock.advance(1)
    assert take(dash) == []
    release.set()
    await worker.join()
    dash.close()


async def test_flushes_are_spaced_by_the_interval_and_status_changes_batched(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    dash = make_dashboard(worker, clock)
    await worker.add_task(blocker, gate, task_id="a")
    assert [h.when - clock.now for h in clock.pending] == [0.0]  # first change: flush at once
    clock.advance(0)
    assert len(take(dash)) == 1
    for name in ("b", "c", "d"):
        await worker.add_task(blocker, gate, task_id=name)
    # The next flush waits for the interval, whatever happens meanwhile.
    assert [round(h.when - clock.now, 6) for h in clock.pending] == [0.1]
    clock.advance(0.05)
    assert take(dash) == []
    clock.advance(0.05)
    [patch] = take(dash)
    assert {r["id"] for r in patch["upsert"]} == {"b", "c", "d"}
    gate.set()
    await worker.join()
    dash.close()


async def test_message_rate_stays_bounded_under_flat_out_progress(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    stop = asyncio.Event()

    async def flat_out() -> None:
        i = 0
        while not stop.is_set():
            for _ in range(100):
                i += 1
                report_progress(min(1.0, i / 2e6))
            await asyncio.sleep(0)

    ids = [await worker.add_task(flat_out) for _ in range(4)]
    dash = make_dashboard(worker, clock)
    take(dash)
    for _ in range(1000):  # one simulated second in 1 ms steps, a loop turn each
        await asyncio.sleep(0)
        clock.advance(0.001)
    sent = take(dash)
    assert 5 <= len(sent) <= 11
    assert all(len(p.get("progress", [])) <= len(ids) for p in sent)
    stop.set()
    await worker.join()
    dash.close()


async def test_failed_task_row_carries_error_and_traceback_as_text(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    dash = make_dashboard(worker, clock)
    task_id = await worker.add_task(failing, task_id="<img src=x onerror=alert(1)>")
    with pytest.raises(ValueError):
        await worker.wait(task_id)
    clock.advance(1)
    row = {r["id"]: r for r in dash.rows}[task_id]
    assert row["status"] == "failed"
    assert row["error"] == "ValueError: broken <b>thing</b>"
    assert "raise ValueError" in row["traceback"]
    assert row["id"] == "<img src=x onerror=alert(1)>"  # data, rendered with textContent
    dash.close()


def _fail_here() -> None:
    raise ValueError("from a cell")


async def test_traceback_names_notebook_cells_as_ipython_does(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    # Code compiled from a cell the way IPython and %%task do it: under a file name that
    # IPython's own tracebacks show as "Cell In[N]".
    source = "def cell_boom():\n    fail_here()\n"
    filename = ip.compile.cache(source, 4242)
    ns: dict[str, Any] = {"fail_here": _fail_here}
    exec(compile(source, filename, "exec"), ns)
    task_id = await worker.add_task(ns["cell_boom"])
    with pytest.raises(ValueError):
        await worker.wait(task_id)
    dash = make_dashboard(worker, clock)
    [row] = dash.rows
    assert filename in worker.get_task_info(task_id).traceback  # type: ignore[union-attr,operator]
    assert filename not in row["traceback"]
    assert "\n  Cell In[4242], line 2, in cell_boom\n    fail_here()\n" in row["traceback"]
    # Frames of ordinary files keep their file name.
    assert f'  File "{__file__}", line ' in row["traceback"]
    dash.close()


async def test_metadata_whose_repr_raises_even_a_base_exception_is_shown_safely(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    class Exits:
        def __repr__(self) -> str:
            raise SystemExit(3)

    class Raises:
        def __repr__(self) -> str:
            raise ValueError("repr boom")

    await worker.add_task(blocker, asyncio.Event(), metadata={"a": Exits(), "b": Raises(), "c": 1})
    dash = make_dashboard(worker, clock)  # makes the row: must not raise
    assert dash.rows[0]["meta"] == "a=<Exits>, b=<Raises>, c=1"
    dash.close()


async def test_a_cancelled_row_says_cancelled_once_unless_the_message_says_more(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    plain = await worker.add_task(blocker, asyncio.Event(), task_id="plain")
    await until(worker, plain, TaskStatus.RUNNING)
    await worker.cancel_task(plain)
    stopped = await worker.add_task(blocker, asyncio.Event(), task_id="stopped")
    await until(worker, stopped, TaskStatus.RUNNING)
    await worker.stop(timeout=0)
    dash = make_dashboard(worker, clock)
    rows = {r["id"]: r for r in dash.rows}
    assert worker.get_task_info(plain).error == "cancelled"  # type: ignore[union-attr]
    assert rows["plain"]["status"] == "cancelled" and "error" not in rows["plain"]
    assert rows["stopped"]["error"] == "cancelled: the worker stopped"
    lines = {line.split()[0]: line for line in text_table(worker.get_all_tasks()).splitlines()[1:]}
    assert lines["plain"].count("cancelled") == 1
    assert "the worker stopped" in lines["stopped"]
    dash.close()


def test_front_end_renders_user_text_only_as_text() -> None:
    js = (STATIC / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js
    assert "textContent" in js


async def test_max_rows_caps_rows_and_counts_the_rest(worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    for i in range(30):
        await worker.add_task(blocker, gate, task_id=f"t{i:02d}", priority=-i)
    dash = make_dashboard(worker, clock, max_rows=10)
    for i in (29, 28, 27, 26):
        await until(worker, f"t{i}", TaskStatus.RUNNING)
    clock.advance(1)
    rows = dash.rows
    assert len(rows) == 10
    # Lowest priorities run first; the pending rows shown are the next to start.
    assert {(r["id"], r["status"]) for r in rows[:4]} == {(f"t{i}", "running") for i in (29, 28, 27, 26)}
    assert [r["id"] for r in rows[4:]] == [f"t{i}" for i in (25, 24, 23, 22, 21, 20)]
    assert dash.header["more"] == 20 and dash.header["shown"] == 10
    gate.set()
    await worker.join()
    dash.close()


async def test_building_with_ten_thousand_tasks_makes_only_shown_rows(
        clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    from task_worker import _dashboard

    async with AsyncTaskWorker(max_workers=2) as worker:
        for i in range(10_000):
            worker.add_task_nowait(blocker, asyncio.Event(), task_id=f"t{i}")
        built = 0
        real = _dashboard.make_row

        def counting(info: Any) -> dict[str, Any]:
            nonlocal built
            built += 1
            return real(info)

        monkeypatch.setattr(_dashboard, "make_row", counting)
        dash = make_dashboard(worker, clock, max_rows=50)
        assert built == 50
        assert len(dash.get_state()["_rows"]) == 50
        assert dash.header["more"] == 10_000 - 50
        dash.close()
        await worker.stop(timeout=0.1)


async def test_status_filter_selects_rows_and_is_settable_from_the_front_end(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    ok = await worker.add_task(blocker, asyncio.Event())
    await worker.cancel_task(ok)
    bad = await worker.add_task(failing)
    with pytest.raises(ValueError):
        await worker.wait(bad)
    running = await worker.add_task(blocker, gate)
    await until(worker, running, TaskStatus.RUNNING)
    dash = make_dashboard(worker, clock)
    assert {r["id"] for r in dash.rows} == {ok, bad, running}
    # The browser sets the synced trait, as the filter menu does.
    dash.set_state({"status_filter": "failed"})
    clock.advance(1)
    assert [r["id"] for r in dash.rows] == [bad]
    assert take(dash)[-1]["remove"]
    # A new failure shows up; other finishes do not.
    bad2 = await worker.add_task(failing)
    with pytest.raises(ValueError):
        await worker.wait(bad2)
    gate.set()
    await worker.join()
    clock.advance(1)
    assert {r["id"] for r in dash.rows} == {bad, bad2}
    dash.status_filter = "all"
    assert dash.status_filter == ""
    clock.advance(1)
    assert len(dash.rows) == 4
    with pytest.raises(Exception, match="status_filter"):
        dash.status_filter = "bogus"
    dash.close()


async def test_worker_reconfiguration_updates_the_header(worker: AsyncTaskWorker, clock: FakeClock) -> None:
    dash = make_dashboard(worker, clock)
    clock.advance(1)
    take(dash)
    worker.max_workers = 7
    clock.advance(1)
    [patch] = take(dash)
    assert patch["header"]["max_workers"] == 7 and "upsert" not in patch
    await worker.stop()
    clock.advance(1)
    assert take(dash)[-1]["header"]["running"] is False
    dash.close()


async def test_state_for_a_new_front_end_is_current_without_being_resent(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    dash = make_dashboard(worker, clock)
    for i in range(3):
        await worker.add_task(blocker, asyncio.Event(), task_id=f"t{i}")
    clock.advance(1)
    await worker.cancel_task("t0")
    clock.advance(1)
    # No trait update message was sent: rows travel as patches only...
    assert not any("_rows" in s for s in state_updates(dash))
    # ...yet the state a new page requests (request_state -> get_state) is current.
    state = dash.get_state()
    assert state["_rows"] == {r["id"]: r for r in dash.rows}
    assert state["_rows"]["t0"]["status"] == "cancelled"
    assert state["_header"]["counts"]["cancelled"] == 1
    # A view that renders asks for a snapshot and gets every row.
    frontend(dash, {"type": "sync"})
    snapshot = take(dash)[-1]
    assert snapshot["type"] == "snapshot"
    assert {r["id"] for r in snapshot["rows"]} == {"t0", "t1", "t2"}
    assert snapshot["seq"] == max(m["seq"] for m in messages(dash))
    dash.close()


# ------------------------------------------------------- front-end messages
async def test_cancel_message_from_the_front_end_cancels_the_task(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    task_id = await worker.add_task(blocker, gate)
    await until(worker, task_id, TaskStatus.RUNNING)
    dash = make_dashboard(worker, clock)
    clock.advance(1)
    take(dash)
    frontend(dash, {"type": "cancel", "id": task_id})  # returns at once: cancel_task_nowait
    await until(worker, task_id, TaskStatus.CANCELLED)
    clock.advance(1)
    [patch] = take(dash)
    assert patch["upsert"][0]["status"] == "cancelled"
    # Malformed or unknown messages are ignored: nothing is cancelled, nothing is sent.
    other = await worker.add_task(blocker, gate)
    await until(worker, other, TaskStatus.RUNNING)
    clock.advance(1)
    take(dash)
    frontend(dash, {"type": "cancel", "id": 42})
    frontend(dash, {"type": "cancel", "id": [other]})
    frontend(dash, {"type": "nonsense", "id": other})
    frontend(dash, "not a dict")  # type: ignore[arg-type]
    clock.advance(1)
    assert take(dash) == []
    assert worker.get_task_info(other).status is TaskStatus.RUNNING  # type: ignore[union-attr]
    gate.set()
    await worker.join()
    dash.close()


async def test_cancel_all_and_clear_finished_from_the_front_end(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    ids = [await worker.add_task(blocker, gate) for _ in range(6)]
    await until(worker, ids[0], TaskStatus.RUNNING)
    dash = make_dashboard(worker, clock)
    frontend(dash, {"type": "cancel_all"})
    await worker.join()
    assert {worker.get_task_info(i).status for i in ids} == {TaskStatus.CANCELLED}  # type: ignore[union-attr]
    clock.advance(1)
    assert {r["status"] for r in dash.rows} == {"cancelled"}
    frontend(dash, {"type": "clear_finished"})
    assert len(worker) == 0
    clock.advance(1)
    assert dash.rows == []
    assert set(take(dash)[-1]["remove"]) == set(ids)
    dash.close()


async def test_an_invalid_filter_from_the_front_end_is_rejected_and_the_view_keeps_updating(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    dash = make_dashboard(worker, clock, status_filter="running")
    first = await worker.add_task(blocker, gate)
    await until(worker, first, TaskStatus.RUNNING)
    clock.advance(1)
    take(dash)
    frontend_update(dash, {"status_filter": "bogus"})  # must not raise (the comm would log it)
    assert dash.status_filter == "running"  # the previous value is kept...
    # ...and every view (the sender included) is told so, as the echo of its change.
    assert sent_state(dash, "echo_update")[-1] == {"status_filter": "running"}
    frontend_update(dash, {"status_filter": 7})
    assert dash.status_filter == "running"
    # The view still updates.
    second = await worker.add_task(blocker, gate)
    await until(worker, second, TaskStatus.RUNNING)
    clock.advance(1)
    [patch] = take(dash)
    assert [r["id"] for r in patch["upsert"]] == [second]
    # A valid value is still accepted (canonicalised, and echoed).
    frontend_update(dash, {"status_filter": "all"})
    assert dash.status_filter == ""
    assert sent_state(dash, "echo_update")[-1] == {"status_filter": ""}
    gate.set()
    await worker.join()
    dash.close()


async def test_python_assignment_of_an_invalid_filter_raises_and_changes_nothing(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    dash = make_dashboard(worker, clock, status_filter="failed")
    with pytest.raises(ValueError, match="status_filter must be"):
        dash.status_filter = "bogus"
    assert dash.status_filter == "failed"
    # Also when traitlets defers validation to the end of a hold (it then rolls back).
    with pytest.raises(ValueError, match="status_filter must be"):
        with dash.hold_trait_notifications():
            dash.status_filter = "bogus"
    assert dash.status_filter == "failed"
    await worker.add_task(blocker, asyncio.Event())
    clock.advance(1)  # a flush with the kept filter works
    assert dash.header["counts"]["running"] + dash.header["counts"]["pending"] == 1
    dash.close()


async def test_kernel_owned_state_from_the_front_end_is_ignored(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    real = await worker.add_task(blocker, gate, task_id="real")
    await until(worker, real, TaskStatus.RUNNING)
    dash = make_dashboard(worker, clock)
    clock.advance(1)
    before = dash.get_state()
    forged_row = {**dash.rows[0], "id": "forged", "name": "forged"}
    frontend_update(dash, {"_rows": {"forged": forged_row}, "_header": {"total": 99},
                           "task_id": "real", "note": "forged", "status_filter": "running"})
    # The front end's own setting is taken; nothing of the kernel's.
    assert dash.status_filter == "running"
    state = dash.get_state()
    assert state["_rows"] == before["_rows"] and "forged" not in state["_rows"]
    assert state["_header"] == before["_header"]
    assert state["task_id"] == "" and state["note"] == ""
    # The views get the kernel's values back (the sender is back in sync; nothing forged spreads).
    [echo] = [e for e in sent_state(dash, "echo_update") if "_rows" in e]
    assert echo["_rows"] == before["_rows"] and echo["_header"] == before["_header"]
    assert echo["task_id"] == "" and echo["note"] == ""
    # Rows still follow the worker: the dict the kernel mutates is the one new views receive.
    await worker.add_task(blocker, gate, task_id="next")
    await until(worker, "next", TaskStatus.RUNNING)
    clock.advance(1)
    assert set(dash.get_state()["_rows"]) == {"real", "next"}
    assert {r["id"] for r in dash.rows} == {"real", "next"}
    gate.set()
    await worker.join()
    dash.close()


async def test_a_single_task_view_keeps_its_task_whatever_the_front_end_sends(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    mine = await worker.add_task(blocker, gate, task_id="mine")
    await worker.add_task(blocker, gate, task_id="other")
    dash = make_dashboard(worker, clock, task_id=mine)
    frontend_update(dash, {"task_id": "other", "_rows": {}})
    assert dash.task_id == "mine"
    assert [r["id"] for r in dash.rows] == ["mine"]
    assert set(dash.get_state()["_rows"]) == {"mine"}
    gate.set()
    await worker.join()
    dash.close()


# ------------------------------------------------------------ single task
async def test_single_task_mode_shows_only_its_task(worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    mine = await worker.add_task(blocker, gate, task_id="mine")
    other = await worker.add_task(blocker, gate, task_id="other")
    await until(worker, mine, TaskStatus.RUNNING)
    dash = make_dashboard(worker, clock, task_id=mine)
    assert dash.task_id == "mine"
    assert [r["id"] for r in dash.rows] == ["mine"]
    assert dash.header == {}
    clock.advance(1)
    take(dash)
    await worker.cancel_task(other)
    clock.advance(1)
    assert take(dash) == []  # other tasks do not even schedule a flush
    # Only its own Cancel is honoured.
    frontend(dash, {"type": "cancel_all"})
    frontend(dash, {"type": "cancel", "id": other})
    frontend(dash, {"type": "clear_finished"})
    assert worker.get_task_info(mine).status is TaskStatus.RUNNING  # type: ignore[union-attr]
    frontend(dash, {"type": "cancel", "id": mine})
    await until(worker, mine, TaskStatus.CANCELLED)
    clock.advance(1)
    [patch] = take(dash)
    assert [r["status"] for r in patch["upsert"]] == ["cancelled"]
    # A task dropped from the history keeps its last row.
    worker.clear()
    clock.advance(1)
    assert [r["status"] for r in dash.rows] == ["cancelled"]
    dash.close()


async def test_single_task_note_is_a_synced_trait(worker: AsyncTaskWorker, clock: FakeClock) -> None:
    task_id = await worker.add_task(blocker, asyncio.Event())
    dash = make_dashboard(worker, clock, task_id=task_id)
    dash.note = "starved: the loop was blocked for 3.0 s"
    assert state_updates(dash)[-1] == {"note": "starved: the loop was blocked for 3.0 s"}
    dash.close()


async def test_bad_arguments_are_refused(worker: AsyncTaskWorker) -> None:
    with pytest.raises(TypeError, match="AsyncTaskWorker"):
        TaskDashboard(object())
    with pytest.raises(ValueError, match="max_rows"):
        TaskDashboard(worker, max_rows=0)
    with pytest.raises(KeyError, match="nope"):
        TaskDashboard(worker, task_id="nope")
    with pytest.raises(ValueError, match="status_filter"):
        TaskDashboard(worker, status_filter="done-ish")
    assert worker.stats().subscribers == 0


# ---------------------------------------------------------------- lifetime
async def test_close_unsubscribes_and_cancels_the_timer(worker: AsyncTaskWorker, clock: FakeClock) -> None:
    dash = make_dashboard(worker, clock)
    other = make_dashboard(worker, clock)
    assert worker.stats().subscribers == 2
    await worker.add_task(blocker, asyncio.Event())
    assert len(clock.pending) == 2
    dash.close()
    assert dash.closed and dash.comm is None
    assert worker.stats().subscribers == 1  # the other dashboard still listens
    assert len(clock.pending) == 1
    dash.close()  # idempotent
    other.close()
    assert worker.stats().subscribers == 0 and clock.pending == []


async def test_a_collected_dashboard_leaves_nothing_subscribed(worker: AsyncTaskWorker) -> None:
    dash = TaskDashboard(worker)  # real loop timers this time
    await worker.add_task(blocker, asyncio.Event())  # a flush timer is pending
    timer = dash._handle
    assert isinstance(timer, asyncio.TimerHandle)
    ref = weakref.ref(dash)
    # Close only the widget part (what ipywidgets.Widget.close_all does), not our
    # close(): the weak subscription alone must let it go.
    ipywidgets.Widget.close(dash)
    del dash
    gc.collect()
    assert ref() is None
    assert worker.stats().subscribers == 0
    timer._run()  # the orphaned timer held it weakly and now does nothing
    timer.cancel()


async def test_closed_dashboard_is_collectable(worker: AsyncTaskWorker, clock: FakeClock) -> None:
    dash = make_dashboard(worker, clock, task_id=await worker.add_task(blocker, asyncio.Event()))
    ref = weakref.ref(dash)
    dash.close()
    del dash
    gc.collect()
    assert ref() is None and worker.stats().subscribers == 0


# ------------------------------------------------------------- text output
async def test_text_table_lists_tasks_as_plain_text(worker: AsyncTaskWorker) -> None:
    assert text_table([]) == "(no tasks)"
    bad = await worker.add_task(failing, task_id="bad")
    with pytest.raises(ValueError):
        await worker.wait(bad)
    ok = await worker.add_task(blocker, asyncio.Event(), task_id="ok", priority=3)
    table = text_table(worker.get_all_tasks())
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PRIO", "PROGRESS", "ELAPSED", "ERROR"]
    assert lines[1].split()[:4] == [ok, "blocker", "running", "3"] or lines[1].split()[:4] == [
        ok, "blocker", "pending", "3"]
    assert "failed" in lines[2] and "ValueError: broken <b>thing</b>" in lines[2]
    assert text_table(worker.get_all_tasks(), max_rows=1).endswith("... 1 more")


async def test_worker_mimebundle_is_text_only_without_a_kernel(worker: AsyncTaskWorker) -> None:
    await worker.add_task(blocker, asyncio.Event(), task_id="t1")
    data, _ = worker_mimebundle(worker, None, None)
    assert list(data) == ["text/plain"]
    assert data["text/plain"].startswith("AsyncTaskWorker (running, ")
    assert "t1" in data["text/plain"]
    assert worker.stats().subscribers == 0  # no widget was made that nothing could show


async def test_worker_mimebundle_is_text_only_without_widgets(
        worker: AsyncTaskWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anywidget", None)  # import fails
    data, _ = worker_mimebundle(worker, None, None)
    assert list(data) == ["text/plain"]


async def test_worker_mimebundle_in_a_kernel_is_a_live_dashboard(
        worker: AsyncTaskWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    from task_worker import _table

    monkeypatch.setattr(_table, "widgets_can_render", lambda: True)
    data, _ = worker._repr_mimebundle_(None, None)
    assert set(data) == {"text/plain", "application/vnd.jupyter.widget-view+json"}
    assert data["text/plain"].startswith("AsyncTaskWorker")
    assert worker.stats().subscribers == 1
    data, _ = worker_mimebundle(worker, ["text/plain"], None)
    assert list(data) == ["text/plain"]


def test_make_row_rounds_progress_and_keeps_only_what_is_set() -> None:
    from task_worker._info import TaskInfo

    info = TaskInfo("a", "job", TaskStatus.RUNNING, 2, 0.123456, None, None, None, None, {},
                    10.0, 11.5, None, 7)
    assert make_row(info) == {"id": "a", "name": "job", "status": "running", "priority": 2,
                              "progress": 12.3, "seq": 7, "created": 10000, "started": 11500,
                              "completed": None}


def test_dashboard_can_be_built_without_a_running_loop() -> None:
    """Outside any loop (plain synchronous code) the dashboard builds its rows, and a
    reconfiguration flushes at once, since there is no loop to schedule a flush on."""
    w = AsyncTaskWorker()

    async def history() -> None:
        async with w:
            bad = await w.add_task(failing, task_id="bad")
            with pytest.raises(ValueError):
                await w.wait(bad)
            await w.add_task(blocker, asyncio.Event(), task_id="ok")
            await w.cancel_task("ok")

    asyncio.run(history())
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    dash = TaskDashboard(w, status_filter="failed")
    assert [r["id"] for r in dash.rows] == ["bad"]
    assert messages(dash) == []
    dash.status_filter = "cancelled"  # flushed at once: nothing left to send later
    [patch] = messages(dash)
    assert patch["remove"] == ["bad"] and [r["id"] for r in patch["upsert"]] == ["ok"]
    assert [r["id"] for r in dash.rows] == ["ok"] and dash._handle is None
    dash.close()
    del dash
    gc.collect()
    assert w.stats().subscribers == 0


def test_the_widget_class_is_defined_at_module_level() -> None:
    from task_worker import _dashboard

    assert vars(_dashboard)["TaskDashboard"] is TaskDashboard
    assert TaskDashboard.__module__ == "task_worker._dashboard"
    assert TaskDashboard.__qualname__ == "TaskDashboard"
    assert issubclass(TaskDashboard, __import__("anywidget").AnyWidget)
    assert not hasattr(_dashboard, "__getattr__")
    assert task_worker.TaskDashboard is TaskDashboard


def test_the_text_table_module_imports_no_widgets_nor_ipython() -> None:
    import subprocess

    code = ("import sys, task_worker._table; "
            "print([m for m in ('IPython', 'ipywidgets', 'anywidget', 'traitlets') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
