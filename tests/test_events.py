"""Subscriptions: order, isolation of failing callbacks, unsubscribe."""

from __future__ import annotations

import asyncio
import logging

import pytest
from helpers import wait_for_progress

from task_worker import AsyncTaskWorker, EventKind, TaskEvent


async def test_event_sequence_for_a_task(worker: AsyncTaskWorker) -> None:
    events: list[TaskEvent] = []
    worker.subscribe(events.append)

    async def body() -> int:
        return 1

    tid = await worker.add_task(body)
    await worker.wait(tid)
    assert [(e.kind, e.info.status) for e in events if e.info] == [  # type: ignore[union-attr]
        (EventKind.ADDED, "pending"),
        (EventKind.STARTED, "running"),
        (EventKind.FINISHED, "completed"),
    ]
    assert events[-1].info.result == 1  # type: ignore[union-attr]


async def test_a_raising_subscriber_is_logged_and_breaks_nothing(
    worker: AsyncTaskWorker, caplog: pytest.LogCaptureFixture,
) -> None:
    good: list[TaskEvent] = []

    def bad(event: TaskEvent) -> None:
        raise RuntimeError("subscriber bug")

    worker.subscribe(bad)
    worker.subscribe(good.append)
    with caplog.at_level(logging.ERROR, logger="task_worker"):
        tid = await worker.add_task(asyncio.sleep, 0)
        await worker.wait(tid)
    assert [e.kind for e in good if e.task_id == tid][-1] == EventKind.FINISHED
    assert "subscriber bug" in caplog.text


async def test_unsubscribe_stops_delivery_and_is_idempotent(worker: AsyncTaskWorker) -> None:
    events: list[TaskEvent] = []
    unsubscribe = worker.subscribe(events.append)
    unsubscribe()
    unsubscribe()
    await worker.wait(await worker.add_task(asyncio.sleep, 0))
    assert events == []


def test_subscribe_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        AsyncTaskWorker().subscribe(42)  # type: ignore[arg-type]


async def test_worker_and_removed_events() -> None:
    events: list[TaskEvent] = []
    w = AsyncTaskWorker()
    w.subscribe(events.append)
    await w.start()
    tid = await w.add_task(asyncio.sleep, 0)
    await w.wait(tid)
    w.clear()
    await w.stop()
    kinds = [e.kind for e in events]
    assert kinds[0] == EventKind.WORKER and kinds[-1] == EventKind.WORKER
    removed = [e for e in events if e.kind == EventKind.REMOVED]
    assert len(removed) == 1 and removed[0].task_id == tid


async def test_task_subscription_sees_only_its_task_and_progress_can_be_turned_off(
    worker: AsyncTaskWorker,
) -> None:
    from task_worker import report_progress

    gate = asyncio.Event()

    async def body() -> None:
        report_progress(0.5)
        await gate.wait()

    mine: list[TaskEvent] = []
    quiet: list[TaskEvent] = []
    a = await worker.add_task(body)
    b = await worker.add_task(body)
    worker.subscribe(mine.append, task_id=a)
    worker.subscribe(quiet.append, progress=False)
    await wait_for_progress(worker, a, 0.5)
    await wait_for_progress(worker, b, 0.5)
    gate.set()
    await worker.join()
    assert {e.task_id for e in mine} == {a}
    assert EventKind.PROGRESS in [e.kind for e in mine]
    assert EventKind.PROGRESS not in [e.kind for e in quiet]
    assert [e.kind for e in quiet if e.task_id == b][-1] == EventKind.FINISHED


async def test_without_progress_subscribers_reports_only_store_the_value(worker: AsyncTaskWorker) -> None:
    from task_worker import report_progress

    worker.subscribe(lambda e: None, progress=False)

    async def body() -> None:
        report_progress(0.3)
        assert worker._dirty == {}

    await worker.wait(await worker.add_task(body))


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, asyncio.CancelledError, RuntimeError])
@pytest.mark.parametrize("kind", ["added", "started", "finished", "removed", "worker"])
async def test_a_subscriber_raising_anything_never_leaves_the_worker_inconsistent(
    kind: str, exc_type: type[BaseException], caplog: pytest.LogCaptureFixture,
) -> None:
    def hostile(event: TaskEvent) -> None:
        if event.kind == kind:
            raise exc_type("subscriber bug")

    w = AsyncTaskWorker(max_workers=1, max_history=1)
    w.subscribe(hostile)
    with caplog.at_level(logging.ERROR, logger="task_worker"):
        await w.start()
        first = await w.add_task(asyncio.sleep, 0, result="a")  # the task exists and runs
        assert await asyncio.wait_for(w.wait(first), 10) == "a"
        second = await w.add_task(asyncio.sleep, 0, result="b")  # drops `first` (REMOVED)
        assert await asyncio.wait_for(w.wait(second), 10) == "b"
        w.max_workers = 2
        await w.stop()
    stats = w.stats()
    assert stats.counts["completed"] == 1 and stats.busy == 0 and stats.total == 1  # type: ignore[index]
    assert "subscriber bug" in caplog.text
