"""The dashboard's insight parts at the Python level: ETAs (``_eta``), the timeline feed and starved
spans (``_timeline``), notifications (``_notify``) and their hooks in ``TaskDashboard`` and
``%task config``.

The widget's comm records what it publishes, buffers included, and its timer is a controlled
clock (as in test_dashboard.py), so every flush is driven by the test.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("anywidget")

import comm
import ipywidgets
from helpers import wait_for_progress, wait_for_status

from task_worker import AsyncTaskWorker, report_progress
from task_worker._dashboard import _ESM_PARTS, TaskDashboard
from task_worker._eta import EtaTracker, queue_estimate
from task_worker._notify import NotifySettings, check_notify_after, parse_notify
from task_worker._timeline import StarveRecorder, TimelineFeed


# ------------------------------------------------------------------ harness
class RecordingComm(comm.DummyComm):
    """A comm with no kernel that keeps a JSON copy of what it publishes, and its buffers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.published: list[tuple[str, Any, list[bytes]]] = []
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        self.published.append((msg_type, json.loads(json.dumps(data)),
                               [bytes(b) for b in buffers or ()]))


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    yield
    ipywidgets.Widget.close_all()


class FakeClock:
    """A controlled clock and ``call_later``: timers fire only in ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.handles: list[list[Any]] = []  # [when, fn, args, cancelled]

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Any:
        entry = [self.now + delay, fn, args, False]
        self.handles.append(entry)

        class Handle:
            def cancel(self) -> None:
                entry[3] = True

        return Handle()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while True:
            due = [h for h in self.handles if not h[3] and h[0] <= self.now + 1e-9]
            if not due:
                return
            entry = min(due, key=lambda h: h[0])
            entry[3] = True
            entry[1](*entry[2])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_dashboard(worker: AsyncTaskWorker, clock: FakeClock, **options: Any) -> TaskDashboard:
    return TaskDashboard(worker, _clock=clock, _call_later=clock.call_later, **options)


def sent(dash: Any) -> list[tuple[dict[str, Any], list[bytes]]]:
    """Custom messages the dashboard sent since the last call, with their buffers."""
    out = [(data["content"], buffers) for kind, data, buffers in dash.comm.published
           if kind == "comm_msg" and data.get("method") == "custom"]
    seen = getattr(dash, "_test_seen", 0)
    dash._test_seen = len(out)
    return out[seen:]


def patches(dash: Any) -> list[dict[str, Any]]:
    return [m for m, _ in sent(dash) if m["type"] == "patch"]


def frontend(dash: Any, content: dict[str, Any]) -> None:
    dash._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def frontend_update(dash: Any, state: dict[str, Any]) -> None:
    dash._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                      "buffers": []})


async def hold(gate: asyncio.Event) -> str:
    await gate.wait()
    return "done"


async def fail_after(gate: asyncio.Event) -> None:
    await gate.wait()
    raise ValueError("bad")


# ---------------------------------------------------------------------- ETA
def test_eta_says_nothing_until_the_estimate_means_something() -> None:
    eta = EtaTracker(min_progress=0.08, min_elapsed=3.0)
    start = 100.0
    assert not eta.observe("a", start, 0.05, start + 1)  # too little progress, too early
    assert eta.shown("a") is None
    assert not eta.observe("a", start, 0.10, start + 2)  # enough progress, still too early
    assert eta.shown("a") is None
    assert eta.observe("a", start, 0.20, start + 4)  # 5 % a second for 4 s: 16 s left
    assert eta.shown("a") == pytest.approx(start + 4 + 16, rel=0.05)


def test_eta_follows_each_tasks_own_recent_rate() -> None:
    eta = EtaTracker(half_life=2.0, min_elapsed=0.0)
    # Two tasks of very different speeds: each gets its own estimate.
    for t in range(1, 6):
        eta.observe("fast", 0.0, 0.10 * t, float(t))
        eta.observe("slow", 0.0, 0.01 * t, float(t))
    fast, slow = eta.shown("fast"), eta.shown("slow")
    assert fast is not None and slow is not None
    assert fast == pytest.approx(5 + 5, rel=0.05)
    assert slow == pytest.approx(5 + 95, rel=0.05)
    # "fast" slows down to 1 %/s: the smoothed rate follows within a few half-lives.
    p = 0.5
    for t in range(6, 30):
        p += 0.01
        eta.observe("fast", 0.0, p, float(t))
    later = eta.shown("fast")
    assert later is not None
    assert later - 29 == pytest.approx((1 - p) / 0.01, rel=0.15)


def test_eta_is_not_resent_for_tiny_moves_and_resets_when_progress_goes_back() -> None:
    eta = EtaTracker(min_elapsed=0.0)
    assert eta.observe("a", 0.0, 0.5, 10.0)  # 5 %/s: 10 s left
    assert not eta.observe("a", 0.0, 0.55, 11.0)  # same rate: nothing new to say
    assert eta.observe("a", 0.0, 0.55, 30.0)  # stalled for 19 s: the estimate moves
    assert eta.observe("a", 25.0, 0.1, 31.0) or eta.shown("a") is not None  # restarted
    eta.drop("a")
    assert "a" not in eta and eta.shown("a") is None
    eta.observe("b", 0.0, 0.5, 10.0)
    eta.retain(["c"])
    assert len(eta) == 0


def test_eta_gives_nothing_for_a_stalled_or_finished_task() -> None:
    eta = EtaTracker(min_elapsed=0.0, half_life=0.5)
    eta.observe("a", 0.0, 0.5, 1.0)
    for t in range(2, 40):
        eta.observe("a", 0.0, 0.5, float(t))  # no progress any more: the rate decays to ~0
    shown = eta.shown("a")
    assert shown is None or shown - 39 > 1e6
    eta.observe("b", 0.0, 1.0, 1.0)
    assert eta.shown("b") is None


def test_eta_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="half_life"):
        EtaTracker(half_life=0)
    with pytest.raises(ValueError, match="min_progress"):
        EtaTracker(min_progress=math.nan)


def test_queue_estimate_only_when_it_can_honestly_be_computed() -> None:
    assert queue_estimate([10.0, 20.0], pending=0, running=2) == 20.0
    assert queue_estimate([10.0, 20.0], pending=1, running=2) is None  # a waiting task: unknown
    assert queue_estimate([10.0, None], pending=0, running=2) is None  # one running without ETA
    assert queue_estimate([10.0], pending=0, running=2) is None  # a running task not shown
    assert queue_estimate([], pending=0, running=0) is None


async def test_dashboard_sends_a_running_tasks_eta_and_the_queue_estimate(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    step = asyncio.Event()
    gate = asyncio.Event()

    async def halfway() -> None:
        report_progress(0.25)
        await step.wait()
        report_progress(0.5)
        await gate.wait()

    reached = wait_for_progress(worker, "half", 0.25)
    await worker.add_task(halfway, task_id="half")
    await reached
    dash = make_dashboard(worker, clock)
    dash.flush()
    sent(dash)
    # The default tracker: nothing yet (the task ran for milliseconds, not 3 s).
    second = wait_for_progress(worker, "half", 0.5)
    step.set()
    await second
    clock.advance(1)
    [patch] = patches(dash)
    assert patch["progress"] == [["half", 50.0]]
    assert "eta" not in patch and "eta" not in dash.header
    # With no minimum run time the same progress is an estimate: a finish time, soon.
    dash._eta = EtaTracker(min_elapsed=0.0)
    before = time.time() * 1000
    dash._dirty["half"] = worker.get_task_info("half")  # type: ignore[assignment]
    dash.flush()
    [patch] = patches(dash)
    [[task_id, finish]] = patch["eta"]
    assert task_id == "half" and finish >= before
    # Nothing pending and every running task estimated: the header says when all is done.
    assert patch["header"]["eta"] == finish
    # A waiting task makes the queue's end unknowable: the header estimate goes.
    await worker.add_task(hold, gate, task_id="w1")
    await worker.add_task(hold, gate, task_id="w2")
    await worker.add_task(hold, gate, task_id="w3")
    await worker.add_task(hold, gate, task_id="queued")
    clock.advance(1)
    assert "eta" not in dash.header
    # A new view gets the estimate in its snapshot.
    frontend(dash, {"type": "sync"})
    [snapshot] = [m for m, _ in sent(dash) if m["type"] == "snapshot"]
    assert snapshot["eta"] == [["half", finish]]
    gate.set()
    await worker.join()
    clock.advance(1)
    assert "half" not in dash._eta  # finished: forgotten
    dash.close()


# ----------------------------------------------------------------- timeline
def decode(buffer: bytes, count: int) -> list[tuple[float, float, float]]:
    values = struct.unpack(f"<{3 * count}d", buffer)
    return [values[3 * i: 3 * i + 3] for i in range(count)]


async def test_timeline_is_sent_in_full_on_request_then_only_changes(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    done_id = await worker.add_task(hold, asyncio.Event(), task_id="early")
    await worker.cancel_task(done_id)
    await worker.add_task(hold, gate, task_id="run")
    await wait_for_status(worker, "run", "running")
    dash = make_dashboard(worker, clock)
    dash.flush()
    await worker.add_task(hold, gate, task_id="before-open")
    clock.advance(1)
    assert all("timeline" not in p for p in patches(dash))  # nobody asked: nothing recorded
    assert not dash._timeline._changed

    frontend(dash, {"type": "timeline"})
    [(full, buffers)] = [(m, b) for m, b in sent(dash) if m["type"] == "timeline"]
    assert full["ids"] == ["early", "run", "before-open"]  # oldest first
    assert full["status"][:2] == "xr" and full["status"][2] in "pr"
    assert full["count"] == 3 and len(buffers) == 1 and len(buffers[0]) == 3 * 3 * 8
    rows = decode(buffers[0], 3)
    info = worker.get_task_info("run")
    assert info is not None and info.started_ts is not None
    assert rows[1][0] == pytest.approx(info.created_ts * 1000)
    assert rows[1][1] == pytest.approx(info.started_ts * 1000)
    assert math.isnan(rows[1][2])  # not finished
    early = worker.get_task_info("early")
    assert early is not None and early.started_ts is None
    assert math.isnan(rows[0][1]) and not math.isnan(rows[0][2])  # cancelled while pending

    # From now on, changes ride in the coalesced patches: only what changed.
    gate.set()
    await worker.join()
    await worker.add_task(hold, asyncio.Event(), task_id="new")
    clock.advance(1)
    [patch] = patches(dash)
    delta = patch["timeline"]
    assert delta["ids"] == ["run", "before-open", "new"]
    assert delta["status"] in ("ccr", "ccp")
    assert len(delta["times"]) == 9 and delta["times"][2] is not None  # "run" finished
    worker.clear()  # finished tasks leave the history: the timeline drops them
    clock.advance(1)
    [patch] = patches(dash)
    assert patch["timeline"]["remove"] == ["before-open", "early", "run"]
    dash.close()


async def test_timeline_is_offered_by_the_table_only_and_costs_nothing_for_progress(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    await worker.add_task(hold, gate, task_id="solo")
    single = make_dashboard(worker, clock, task_id="solo")
    frontend(single, {"type": "timeline"})
    assert [m for m, _ in sent(single) if m["type"] == "timeline"] == []
    single.close()
    gate.set()
    await worker.join()


def test_timeline_feed_caps_names_and_keeps_starved_spans() -> None:
    w = AsyncTaskWorker()
    feed = TimelineFeed(w)
    feed.note_starved(1.0, 2.5)
    msg, buffers = feed.full()
    assert msg["count"] == 0 and buffers == [b""]
    assert msg["starved"] == [[1000.0, 2500.0]]
    feed.note_starved(3.0, 4.0)
    assert feed.take_delta() == {"starved": [[3000.0, 4000.0]]}
    assert feed.take_delta() is None
    assert feed.starved == [(1.0, 2.5), (3.0, 4.0)]


async def test_starve_recorder_records_a_blocked_loop_and_stops_when_idle() -> None:
    loop = asyncio.get_running_loop()
    spans: list[tuple[float, float]] = []
    got = loop.create_future()
    busy = True

    def on_starved(start: float, end: float) -> None:
        spans.append((start, end))
        if not got.done():
            got.set_result(None)

    rec = StarveRecorder(loop, lambda: busy, on_starved, interval=0.01, threshold=0.15)
    rec.arm()
    rec.arm()  # idempotent
    assert rec.armed
    # Block the loop as a blocking cell would (this sleep *is* the thing under test).
    loop.call_soon(time.sleep, 0.3)
    await asyncio.wait_for(got, 10)
    [(start, end)] = spans
    assert end - start >= 0.15
    busy = False
    stopped = loop.create_future()
    loop.call_later(0.05, stopped.set_result, None)
    await stopped
    assert not rec.armed  # nothing running: the heartbeat stopped by itself
    rec.stop()


async def test_dashboard_records_starvation_while_tasks_run_and_sends_it(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    dash = make_dashboard(worker, clock)
    frontend(dash, {"type": "timeline"})
    sent(dash)
    await worker.add_task(hold, gate, task_id="busy")
    await wait_for_status(worker, "busy", "running")
    rec = dash._starve
    assert rec is not None and rec.armed  # a task started: the heartbeat runs
    rec.threshold = 0.1
    recorded = asyncio.get_running_loop().create_future()
    original = dash._on_starved

    def spy(start: float, end: float) -> None:
        original(start, end)
        if not recorded.done():
            recorded.set_result(None)

    dash._on_starved = spy  # type: ignore[method-assign]
    # A blocking callback (as a blocking cell): the loop is starved; that is what is measured.
    asyncio.get_running_loop().call_soon(time.sleep, 0.4)
    await asyncio.wait_for(recorded, 10)
    clock.advance(1)
    starved = [s for p in patches(dash) for s in p.get("timeline", {}).get("starved", [])]
    assert starved and starved[0][1] - starved[0][0] >= 100
    gate.set()
    await worker.join()
    dash.close()
    assert not rec.armed


# ------------------------------------------------------------ notifications
def test_parse_notify_accepts_outcomes_and_refuses_the_rest() -> None:
    assert parse_notify("failed,completed") == "completed,failed"
    assert parse_notify(" Failed ") == "failed"
    assert parse_notify("all") == "completed,failed"
    assert parse_notify(["completed"]) == "completed"
    for off in ("", "none", "off", None, []):
        assert parse_notify(off) == ""
    for bad in ("cancelled", "failed,oops", 3, [1], b"failed"):
        with pytest.raises(ValueError):
            parse_notify(bad)
    assert check_notify_after(0) == 0.0
    for bad_after in (-1, math.inf, "10", True):
        with pytest.raises(ValueError):
            check_notify_after(bad_after)


async def test_finished_tasks_to_notify_ride_in_patches_never_cancelled_ones(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    ok_gate, bad_gate, stop_gate = asyncio.Event(), asyncio.Event(), asyncio.Event()
    dash = make_dashboard(worker, clock, notify="failed,completed")
    await worker.add_task(hold, ok_gate, task_id="ok")
    await worker.add_task(fail_after, bad_gate, task_id="bad")
    await worker.add_task(hold, stop_gate, task_id="stopped")
    await wait_for_status(worker, "stopped", "running")
    clock.advance(1)
    sent(dash)
    ok_gate.set()
    bad_gate.set()
    await worker.cancel_task("stopped")
    await worker.join()
    clock.advance(1)
    finished = [f for p in patches(dash) for f in p.get("finished", [])]
    assert sorted((f[0], f[2]) for f in finished) == [("bad", "failed"), ("ok", "completed")]
    for task_id, name, _status, ran_ms, completed_ms in finished:
        info = worker.get_task_info(task_id)
        assert info is not None and info.completed_ts is not None and info.started_ts is not None
        assert name == task_id or name == info.name
        assert ran_ms == round((info.completed_ts - info.started_ts) * 1000)
        assert completed_ms == int(info.completed_ts * 1000)
    # Only failures: a completed task is not announced; off: nothing at all.
    dash.notify = "failed"
    await worker.add_task(hold, asyncio.Event(), task_id="x")
    await worker.cancel_task("x")
    done = await worker.add_task(hold, ok_gate)  # the gate is open: completes at once
    await worker.wait(done)
    clock.advance(1)
    assert [f for p in patches(dash) for f in p.get("finished", [])] == []
    dash.close()


async def test_notify_is_settable_from_the_front_end_and_checked(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    dash = make_dashboard(worker, clock)
    assert dash.notify == "" and dash.notify_after == 10.0
    frontend_update(dash, {"notify": "completed,failed"})
    assert dash.notify == "completed,failed"
    frontend_update(dash, {"notify": "explode"})  # refused, the kernel's value is echoed back
    assert dash.notify == "completed,failed"
    echoes = [d["state"] for k, d, _ in dash.comm.published
              if k == "comm_msg" and d.get("method") == "echo_update"]
    assert {"notify": "completed,failed"} in echoes
    frontend_update(dash, {"notify_after": 0})  # kernel-owned: ignored
    assert dash.notify_after == 10.0
    with pytest.raises(ValueError):
        dash.notify = "sometimes"
    with pytest.raises(ValueError):
        dash.notify_after = -1
    assert dash.notify == "completed,failed" and dash.notify_after == 10.0
    dash.close()


async def test_single_task_view_announces_its_own_task(worker: AsyncTaskWorker, clock: FakeClock) -> None:
    gate = asyncio.Event()
    await worker.add_task(fail_after, gate, task_id="mine")
    await worker.add_task(fail_after, gate, task_id="other")
    view = make_dashboard(worker, clock, task_id="mine", notify="failed")
    gate.set()
    await worker.join()
    clock.advance(1)
    finished = [f for p in patches(view) for f in p.get("finished", [])]
    assert [f[0] for f in finished] == ["mine"]
    view.close()


async def test_session_settings_reach_every_follower_or_change_nothing(
        worker: AsyncTaskWorker, clock: FakeClock) -> None:
    settings = NotifySettings()
    a, b = make_dashboard(worker, clock), make_dashboard(worker, clock)
    settings.follow(a)
    settings.update(kinds="failed", after=2)
    settings.follow(b)
    assert (a.notify, a.notify_after, b.notify, b.notify_after) == ("failed", 2.0, "failed", 2.0)
    with pytest.raises(ValueError):
        settings.update(kinds="completed", after=-5)
    assert (settings.kinds, settings.after, a.notify) == ("failed", 2.0, "failed")
    b.close()
    settings.update(kinds="none")  # a closed follower is left alone
    assert a.notify == "" and b.notify == "failed"
    a.close()


def test_task_config_notify_reaches_the_sessions_views_or_changes_nothing(
        capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.error import UsageError
    from IPython.testing import globalipapp

    from task_worker import _extension

    ip = globalipapp.get_ipython()
    _extension.load(ip, widgets=True)
    try:
        magics = ip.magics_manager.registry["TaskMagics"]
        ip.run_line_magic("task", "config notify=failed,completed notify_after=2.5")
        assert "notify=completed,failed notify_after=2.5" in capsys.readouterr().out
        ip.run_line_magic("tasks", "")
        [dash] = magics.dashboards
        assert (dash.notify, dash.notify_after) == ("completed,failed", 2.5)
        worker = dash.worker
        before = worker.max_workers
        for bad in ("notify=sometimes", "notify=failed notify_after=-1", "notify_after=soon",
                    f"max_workers={before + 1} notify=bogus"):
            with pytest.raises(UsageError):
                ip.run_line_magic("task", f"config {bad}")
        assert (dash.notify, dash.notify_after, worker.max_workers) == ("completed,failed", 2.5, before)
        ip.run_cell_magic("task", "-n notified_cell", "notified_value = 1")
        from IPython.core.async_helpers import get_asyncio_loop

        task_id = worker.get_all_tasks(limit=1)[0].id
        get_asyncio_loop().run_until_complete(worker.wait(task_id))
        view = magics.views.get(worker, task_id)
        assert view is not None and view.dashboard.notify == "completed,failed"
        ip.run_line_magic("task", "config notify=none")
        assert dash.notify == "" and view.dashboard.notify == ""
        assert "notify=none notify_after=2.5" in capsys.readouterr().out
    finally:
        _extension.unload(ip)


def test_the_front_end_is_concatenated_with_the_insight_parts_first() -> None:
    assert _ESM_PARTS[-1] == "dashboard.js"
    assert {"eta.js", "timeline.js", "notify.js"} <= set(_ESM_PARTS)
    esm = TaskDashboard._esm
    for needed in ("function insightInit", "function notifyFinished", "function etaText",
                   "window.focus()", "apputils:notify"):
        assert needed in esm
