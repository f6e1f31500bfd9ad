"""Task details (``_details``), the text filter (``_search``), thread CPU time (``_threads``) and
the dashboard's details / text-filter protocol, at the Python level (a recording comm)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from typing import Any

import pytest
from helpers import wait_for_status

from task_worker import AsyncTaskWorker, TaskStatus
from task_worker._details import (
    ARGS_RELEASED,
    CPU_ASYNC,
    details_text,
    format_arguments,
    output_tail,
    safe_repr,
    task_details,
)
from task_worker._search import MAX_TEXT_FILTER, check_text_filter, matches, select_matching
from task_worker._threads import CpuLog


class Hostile:
    """An object whose repr raises a BaseException (as a broken user class may)."""

    def __repr__(self) -> str:
        raise KeyboardInterrupt("repr")


class Big:
    """Stands for a large argument (a 1 GB array): only a weak reference may outlive the task."""


def spin_until(gate: threading.Event, big: Any, text: str, *, flag: str = "x") -> str:
    # Burn some CPU first, so that the thread's CPU clock has something to show.
    deadline = time.thread_time() + 0.05
    while time.thread_time() < deadline:
        pass
    gate.wait(30)
    return "ok"


async def sleeper(gate: asyncio.Event) -> None:
    await gate.wait()


async def failing() -> None:
    raise ValueError("broken <b>thing</b>")


@pytest.fixture
async def worker() -> Any:
    w = AsyncTaskWorker(max_workers=2)
    await w.start()
    try:
        yield w
    finally:
        for info in w.get_all_tasks(status=("pending", "running")):
            w.cancel_task_nowait(info.id)
        await w.stop(timeout=2)


# ------------------------------------------------------------------ details
async def test_a_running_thread_body_shows_its_arguments_and_cpu_time_and_a_finished_one_keeps_only_cpu(
        worker: AsyncTaskWorker) -> None:
    gate = threading.Event()
    big = Big()
    ref = weakref.ref(big)
    task_id = await worker.add_task(spin_until, gate, big, "x" * 5000, flag=Hostile(),
                                    metadata={"owner": "ana", "n": 3})
    await wait_for_status(worker, task_id, "running")
    details = task_details(worker, task_id)
    assert details is not None
    assert details["status"] == "running" and details["name"] == "spin_until"
    args = details["arguments"]
    assert "Big object" in args and "flag=<Hostile object: repr() raised KeyboardInterrupt>" in args
    assert len(args) <= 500 and "x" * 5000 not in args  # long values are abbreviated
    assert details["metadata"] == [["owner", "ana"], ["n", "3"]]
    assert details["started"] is not None and details["completed"] is None
    assert details["run_time"] is not None and details["queue_wait"] is not None
    # While it runs (Linux reads another thread's CPU clock): the CPU it used so far.
    assert details["cpu"] is None or details["cpu"] >= 0
    gate.set()
    info = await wait_for_status(worker, task_id, "completed")
    del big
    gc.collect()
    assert ref() is None, "a finished task (and its details) keep no reference to its arguments"
    done = task_details(worker, task_id)
    assert done is not None
    assert done["arguments"] == ARGS_RELEASED
    assert info.elapsed is not None
    cpu = done["cpu"]
    assert cpu is not None and 0.04 <= cpu <= info.elapsed + 0.05, (cpu, info.elapsed)
    assert done["cpu_text"].endswith(" s")
    assert done["run_time"] == pytest.approx(info.completed_ts - info.started_ts)  # type: ignore[operator]


async def test_a_coroutine_says_cpu_time_is_not_measurable_and_a_pending_task_waits(
        worker: AsyncTaskWorker) -> None:
    worker.max_workers = 1
    gate = asyncio.Event()
    first = await worker.add_task(sleeper, gate)
    second = await worker.add_task(sleeper, gate, priority=3)
    await wait_for_status(worker, first, "running")
    running = task_details(worker, first)
    pending = task_details(worker, second)
    assert running is not None and pending is not None
    assert running["cpu"] is None and running["cpu_text"] == CPU_ASYNC
    assert pending["started"] is None and pending["run_time"] is None
    assert pending["queue_wait"] >= 0 and pending["priority"] == 3 and pending["cpu_text"] == "-"
    gate.set()
    await wait_for_status(worker, second, "completed")
    assert task_details(worker, "no-such-task") is None


async def test_a_failed_task_shows_its_error_and_full_traceback(worker: AsyncTaskWorker) -> None:
    task_id = await worker.add_task(failing)
    await wait_for_status(worker, task_id, "failed")
    details = task_details(worker, task_id)
    assert details is not None
    assert details["error"] == "ValueError: broken <b>thing</b>"
    assert "raise ValueError" in details["traceback"] and "Traceback" in details["traceback"]
    text = details_text(details)
    assert "failing" in text and "raise ValueError" in text and "arguments: " in text


def test_safe_repr_and_arguments_never_raise_and_stay_short() -> None:
    class Exits:
        def __repr__(self) -> str:
            raise SystemExit(1)

    shown = safe_repr(Exits())
    assert shown == "<Exits object: repr() raised SystemExit>"
    assert len(safe_repr(list(range(100_000)))) < 100
    assert format_arguments((), None) == "(none)"
    assert format_arguments((1,), {"progress_callback": print, "k": "v"}) == "1, k='v'"


def test_output_tail_keeps_the_last_lines_of_streams_displays_and_errors() -> None:
    outputs = (
        {"output_type": "stream", "name": "stdout", "text": "".join(f"line {i}\n" for i in range(30))},
        {"output_type": "display_data", "data": {"text/plain": "<Figure>", "image/png": "..."}},
        {"output_type": "display_data", "data": {"image/png": "..."}},
        {"output_type": "error", "ename": "ValueError", "evalue": "bad"},
    )
    tail = output_tail(outputs, lines=5).split("\n")
    assert tail == ["line 28", "line 29", "<Figure>", "[display: image/png]", "ValueError: bad"]
    assert output_tail(()) == ""


def test_cpu_log_is_bounded_and_forgets_the_oldest() -> None:
    log = CpuLog(limit=3)
    for i in range(5):
        log.record(f"t{i}", float(i))
    assert len(log) == 3 and log.get("t1") is None and log.get("t4") == 4.0


# -------------------------------------------------------------- text filter
def test_text_filter_values_are_checked() -> None:
    assert check_text_filter("  needle ") == "needle" and check_text_filter(None) == ""
    for bad in (3, ["x"], "x" * (MAX_TEXT_FILTER + 1)):
        with pytest.raises(ValueError):
            check_text_filter(bad)


async def test_the_text_filter_finds_matches_among_all_tasks_not_only_the_rows_shown(
        worker: AsyncTaskWorker) -> None:
    async def quick(n: int) -> int:
        return n

    # The match is the oldest of 300 finished tasks: with max_rows=20 the browser never holds it.
    needle_id = await worker.add_task(quick, 0, metadata={"dataset": "Needle-7"})
    ids = [await worker.add_task(quick, i) for i in range(1, 300)]
    await wait_for_status(worker, ids[-1], "completed")
    await worker.join()
    rows, total = select_matching(worker, "", "needle", 20)
    assert [r.id for r in rows] == [needle_id] and total == 1
    info = worker.get_task_info(needle_id)
    assert info is not None and matches(info, "dataset=needle") and not matches(info, "haystack")
    rows, total = select_matching(worker, "", "quick", 20)
    assert len(rows) == 20 and total == 300
    # Most recently finished first, as without a filter.
    completed = [r.completed_ts for r in rows]
    assert completed == sorted(completed, reverse=True)
    rows, total = select_matching(worker, "failed", "quick", 20)
    assert rows == [] and total == 0


# ------------------------------------------------------------- the widget
pytest.importorskip("anywidget")

from test_dashboard import (  # noqa: E402
    FakeClock,
    frontend,
    frontend_update,
    make_dashboard,
    recording_comm,  # noqa: F401  (autouse fixture: a comm that records)
    sent_state,
    take,
)


async def test_the_dashboard_answers_a_details_request_only_when_it_is_valid_and_names_the_view(
        worker: AsyncTaskWorker) -> None:
    clock = FakeClock()
    task_id = await worker.add_task(failing)
    other = await worker.add_task(failing)
    await wait_for_status(worker, other, "failed")
    dash = make_dashboard(worker, clock)
    single = make_dashboard(worker, clock, task_id=task_id)
    take(dash), take(single)
    for bad in ({"type": "details"}, {"type": "details", "id": task_id},
                {"type": "details", "id": 5, "view": "v1"}, {"type": "details", "id": task_id, "view": 7},
                {"type": "details", "id": "x" * 2000, "view": "v1"},
                {"type": "details", "id": task_id, "view": "v" * 100}, ["details"]):
        frontend(dash, bad)  # type: ignore[arg-type]
    assert take(dash) == []
    frontend(dash, {"type": "details", "id": task_id, "view": "v1"})
    (reply,) = take(dash)
    assert reply["type"] == "details" and reply["view"] == "v1" and reply["id"] == task_id
    assert reply["details"]["error"] == "ValueError: broken <b>thing</b>"
    frontend(dash, {"type": "details", "id": "gone", "view": "v1"})
    (reply,) = take(dash)
    assert reply["details"] is None
    # A task's own view answers about its task only.
    frontend(single, {"type": "details", "id": other, "view": "v2"})
    assert take(single) == []
    frontend(single, {"type": "details", "id": task_id, "view": "v2"})
    (reply,) = take(single)
    assert reply["details"]["id"] == task_id


async def test_the_text_filter_is_settable_from_the_front_end_and_counts_what_it_hides(
        worker: AsyncTaskWorker) -> None:
    clock = FakeClock()

    async def quick(n: int) -> int:
        return n

    first = await worker.add_task(quick, 0, task_id="alpha-0")
    for i in range(1, 30):
        await worker.add_task(quick, i, task_id=f"beta-{i}")
    await worker.join()
    dash = make_dashboard(worker, clock, max_rows=10)
    assert first not in {r["id"] for r in dash.rows}
    frontend_update(dash, {"text_filter": "ALPHA"})
    assert dash.text_filter == "ALPHA"
    clock.advance(1)
    assert [r["id"] for r in dash.rows] == [first]
    assert dash.header["more"] == 0 and dash.header["shown"] == 1
    dash.text_filter = "beta"
    clock.advance(1)
    assert len(dash.rows) == 10 and dash.header["more"] == 19
    # A wrong value from the front end changes nothing and is sent back.
    frontend_update(dash, {"text_filter": 42})
    frontend_update(dash, {"text_filter": "x" * 1000})
    assert dash.text_filter == "beta"
    assert sent_state(dash, "echo_update")[-1] == {"text_filter": "beta"}
    with pytest.raises(ValueError):
        dash.text_filter = "y" * 1000
    dash.text_filter = ""
    clock.advance(1)
    assert len(dash.rows) == 10 and dash.header["more"] == 20
    # New tasks that match appear; those that do not, do not.
    dash.text_filter = "gamma"
    clock.advance(1)
    assert dash.rows == []
    gamma = await worker.add_task(quick, 99, task_id="gamma-1")
    await wait_for_status(worker, gamma, TaskStatus.COMPLETED)
    clock.advance(1)
    assert [r["id"] for r in dash.rows] == [gamma]


def test_the_details_script_renders_user_text_only_as_text() -> None:
    import pathlib

    import task_worker
    from task_worker._dashboard import _ESM_PARTS

    js = (pathlib.Path(task_worker.__file__).parent / "static" / "details.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js
    assert _ESM_PARTS.index("details.js") < _ESM_PARTS.index("dashboard.js")
