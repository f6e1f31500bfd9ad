"""report_progress and progress_callback: validation, clamping, threads, events."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from task_worker import AsyncTaskWorker, EventKind, TaskEvent, current_task_id, report_progress


def test_report_progress_outside_a_task_raises() -> None:
    with pytest.raises(RuntimeError, match="outside"):
        report_progress(0.5)


async def test_progress_callback_is_passed_only_to_functions_that_declare_it(worker: AsyncTaskWorker) -> None:
    async def wants(progress_callback):  # type: ignore[no-untyped-def]
        progress_callback(0.25)
        return "ok"

    async def does_not(**kwargs: object) -> object:
        return sorted(kwargs)

    a = await worker.add_task(wants)
    b = await worker.add_task(does_not)
    assert await worker.wait(a) == "ok"
    assert await worker.wait(b) == []


async def test_values_are_clamped_and_bad_values_raise_inside_the_task(worker: AsyncTaskWorker) -> None:
    seen: list[float] = []
    errors: list[str] = []

    async def body() -> None:
        for v in (-3, 0.5, 7):
            report_progress(v)
            seen.append(worker.get_task_info(current_task_id() or "").progress)  # type: ignore[union-attr]
        for bad in (math.nan, "half", None, True, 1j):
            try:
                report_progress(bad)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                errors.append(type(exc).__name__)

    await worker.wait(await worker.add_task(body))
    assert seen == [0.0, 0.5, 1.0]
    assert errors == ["ValueError", "TypeError", "TypeError", "TypeError", "TypeError"]


async def test_completed_task_progress_is_one(worker: AsyncTaskWorker) -> None:
    async def body() -> None:
        report_progress(0.1)

    tid = await worker.add_task(body)
    await worker.wait(tid)
    assert worker.get_task_info(tid).progress == 1.0  # type: ignore[union-attr]


async def test_failed_task_keeps_its_last_progress(worker: AsyncTaskWorker) -> None:
    async def body() -> None:
        report_progress(0.4)
        raise RuntimeError("x")

    tid = await worker.add_task(body)
    with pytest.raises(RuntimeError):
        await worker.wait(tid)
    assert worker.get_task_info(tid).progress == 0.4  # type: ignore[union-attr]


async def test_report_progress_works_in_sync_bodies_and_to_thread(worker: AsyncTaskWorker) -> None:
    seen = threading.Event()

    def sync_body() -> str:
        report_progress(0.3)
        seen.set()
        return threading.current_thread().name

    async def async_body() -> float:
        def in_thread() -> None:
            report_progress(0.7)

        await asyncio.to_thread(in_thread)
        return worker.get_task_info(current_task_id() or "").progress  # type: ignore[union-attr]

    a = await worker.add_task(sync_body)
    assert (await worker.wait(a)).startswith("task_worker")
    assert await worker.wait(await worker.add_task(async_body)) == 0.7


async def test_progress_events_are_merged_per_loop_turn_but_status_events_never(
    worker: AsyncTaskWorker,
) -> None:
    events: list[TaskEvent] = []
    unsubscribe = worker.subscribe(events.append)

    async def chatty() -> None:
        for i in range(1000):
            report_progress(i / 1000)
        await asyncio.sleep(0)
        report_progress(0.999)

    tid = await worker.add_task(chatty)
    await worker.wait(tid)
    unsubscribe()
    kinds = [e.kind for e in events if e.task_id == tid]
    assert kinds[0] == EventKind.ADDED and kinds[1] == EventKind.STARTED
    assert kinds[-1] == EventKind.FINISHED
    assert kinds.count(EventKind.FINISHED) == 1
    assert 1 <= kinds.count(EventKind.PROGRESS) <= 2
    progress_values = [e.info.progress for e in events if e.kind == EventKind.PROGRESS]  # type: ignore[union-attr]
    assert progress_values[0] == pytest.approx(0.999)


async def test_progress_from_threads_is_delivered_on_the_loop_thread(worker: AsyncTaskWorker) -> None:
    threads: set[int] = set()
    worker.subscribe(lambda e: threads.add(threading.get_ident()))

    def body() -> None:
        for i in range(100):
            report_progress(i / 100)

    await worker.wait(await worker.add_task(body))
    assert threads == {threading.get_ident()}


async def test_numbers_beyond_float_range_are_clamped_not_an_overflow_error(worker: AsyncTaskWorker) -> None:
    from fractions import Fraction

    seen: list[float] = []

    async def body() -> None:
        report_progress(10**400)
        seen.append(worker.get_task_info(current_task_id() or "").progress)  # type: ignore[union-attr]
        report_progress(-(10**400))
        seen.append(worker.get_task_info(current_task_id() or "").progress)  # type: ignore[union-attr]
        report_progress(Fraction(10**400, 3))
        seen.append(worker.get_task_info(current_task_id() or "").progress)  # type: ignore[union-attr]

    await worker.wait(await worker.add_task(body))
    assert seen == [1.0, 0.0, 1.0]
