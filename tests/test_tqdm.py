"""task_worker.tqdm: a tqdm whose fraction drives the current task's progress."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest

import task_worker
from task_worker import EventKind, _tqdm


def _bar(iterable=None, **kw):  # type: ignore[no-untyped-def]
    # Every update reported: no time-based batching in tests.
    return task_worker.tqdm(iterable, file=io.StringIO(), mininterval=0, miniters=1, **kw)


async def test_iteration_inside_a_task_reports_its_fraction(worker: task_worker.AsyncTaskWorker) -> None:
    async def body() -> list[float]:
        seen = []
        for _ in _bar(range(4)):
            info = worker.get_task_info(task_worker.current_task_id() or "")
            assert info is not None
            seen.append(info.progress)
            await asyncio.sleep(0)
        return seen

    progress_events: list[float] = []
    unsubscribe = worker.subscribe(
        lambda ev: ev.kind is EventKind.PROGRESS and progress_events.append(ev.info.progress))
    task_id = await worker.add_task(body)
    # tqdm yields an item before counting it: the fraction is that of the items done.
    assert await worker.wait(task_id) == [0.0, 0.25, 0.5, 0.75]
    unsubscribe()
    assert progress_events and set(progress_events) <= {0.25, 0.5, 0.75, 1.0}


async def test_manual_updates_and_reset_in_a_thread_body(worker: task_worker.AsyncTaskWorker) -> None:
    reached = threading.Event()
    gate = threading.Event()

    def body() -> None:
        bar = _bar(total=10)
        bar.update(7)
        reached.set()
        gate.wait()
        bar.reset()
        reached.set()
        bar.close()

    task_id = await worker.add_task(body)
    await asyncio.to_thread(reached.wait, 10)
    info = worker.get_task_info(task_id)
    assert info is not None and info.progress == 0.7
    reached.clear()
    gate.set()
    await asyncio.to_thread(reached.wait, 10)
    await worker.wait(task_id)


def test_update_lets_the_cancellation_from_report_progress_through(monkeypatch: pytest.MonkeyPatch) -> None:
    # Inside a cancelled task report_progress raises CancelledError: update must not
    # swallow it (it is what stops a thread body at its next iteration). Faked here:
    # a real cancel also injects ThreadInterrupted, which may land inside tqdm's lock.
    def cancelled(fraction: float) -> None:
        raise asyncio.CancelledError("task 'x' was cancelled")

    monkeypatch.setattr(_tqdm, "current_task_id", lambda: "x")
    monkeypatch.setattr(_tqdm, "report_progress", cancelled)
    bar = _bar(total=10)
    with pytest.raises(asyncio.CancelledError):
        bar.update(1)
    bar.close()


def test_outside_a_task_it_is_plain_tqdm() -> None:
    out = io.StringIO()
    assert sum(task_worker.tqdm(range(5), file=out, mininterval=0)) == 10
    assert "5/5" in out.getvalue()
    bar = task_worker.tqdm(file=out)  # no total: nothing to report, even in a task
    bar.update(3)
    bar.close()


async def test_unknown_total_reports_nothing(worker: task_worker.AsyncTaskWorker) -> None:
    async def body() -> None:
        bar = _bar()
        bar.update(5)
        bar.close()

    task_id = await worker.add_task(body)
    await worker.wait(task_id)
    info = worker.get_task_info(task_id)
    assert info is not None and info.status == "completed"


def test_is_a_tqdm_subclass() -> None:
    from tqdm.auto import tqdm as auto_tqdm

    assert issubclass(task_worker.tqdm, auto_tqdm)


async def test_cancelling_a_thread_in_a_tight_tqdm_loop_stops_it_and_leaves_tqdm_usable(
    worker: task_worker.AsyncTaskWorker,
) -> None:
    started = threading.Event()

    def body() -> None:
        for _ in _bar(range(10**9)):
            started.set()

    task_id = await worker.add_task(body)
    await asyncio.to_thread(started.wait, 10)
    assert await worker.cancel_task(task_id) is True
    info = worker.get_task_info(task_id)
    assert info is not None and info.status == "cancelled"
    assert "abandoned" not in (info.error or "")  # it stopped, cooperatively
    # tqdm's class-level lock is free: a new bar in another thread completes.
    assert await asyncio.wait_for(asyncio.to_thread(lambda: sum(_bar(range(100)))), 10) == 4950
