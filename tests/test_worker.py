"""AsyncTaskWorker: lifecycle, scheduling, cancellation, timeouts, failures, waiting."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import math
import threading
import time
import warnings
from datetime import timedelta, timezone

import pytest
from helpers import next_dispatch, wait_for_status, wait_until

from task_worker import AsyncTaskWorker, TaskInfo, TaskStatus, report_progress, task


async def _noop() -> None:
    return None


async def _value(x: object) -> object:
    return x


# ---------------------------------------------------------------- lifecycle
async def test_add_task_before_start_raises_and_says_what_to_do() -> None:
    w = AsyncTaskWorker()
    with pytest.raises(RuntimeError, match="start"):
        await w.add_task(_noop)
    assert len(w) == 0


async def test_add_task_after_stop_raises_then_start_again_works() -> None:
    w = AsyncTaskWorker()
    await w.start()
    await w.stop()
    with pytest.raises(RuntimeError, match="start"):
        await w.add_task(_noop)
    await w.start()
    tid = await w.add_task(_value, 5)
    assert await w.wait(tid) == 5
    await w.stop()


async def test_context_manager_starts_and_stops() -> None:
    async with AsyncTaskWorker(max_workers=2) as w:
        assert w.running
        assert await w.wait(await w.add_task(_value, 1)) == 1
    assert not w.running


async def test_second_stop_is_harmless_and_concurrent_stops_both_return() -> None:
    w = AsyncTaskWorker()
    await w.start()
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    await w.add_task(blocked)
    await asyncio.gather(w.stop(timeout=0.05), w.stop(timeout=0.05))
    await w.stop()
    assert not w.running


async def test_original_readme_quickstart_runs_unchanged() -> None:
    @task("process_data")
    async def process_data(data, progress_callback=None):  # type: ignore[no-untyped-def]
        total = len(data)
        result = []
        for i, item in enumerate(data):
            result.append(item * 2)
            if progress_callback:
                progress_callback((i + 1) / total)
            await asyncio.sleep(0)
        return result

    worker = AsyncTaskWorker(max_workers=5)
    await worker.start()
    try:
        task_id = await worker.add_task(process_data, [1, 2, 3, 4, 5], priority=0)
        await wait_for_status(worker, task_id, "completed", "failed", "cancelled")
        info = worker.get_task_info(task_id)
        assert info is not None and info.status == "completed"
        assert info.result == [2, 4, 6, 8, 10]
        assert info.progress == 1.0
        future = worker.get_task_future(task_id)
        assert await future == [2, 4, 6, 8, 10]
        futures = worker.get_task_futures([task_id])
        assert await asyncio.gather(*futures, return_exceptions=True) == [[2, 4, 6, 8, 10]]
    finally:
        await worker.stop()


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("value", [0, -1])
def test_max_workers_below_one_is_a_value_error(value: int) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        AsyncTaskWorker(max_workers=value)


def test_max_workers_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="max_workers"):
        AsyncTaskWorker(max_workers=2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 0, math.inf, math.nan])
def test_bad_task_timeout_is_a_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match="task_timeout"):
        AsyncTaskWorker(task_timeout=bad)


async def test_bad_input_to_add_task_raises_and_changes_nothing(worker: AsyncTaskWorker) -> None:
    await worker.add_task(_noop, task_id="taken")
    before = len(worker)
    with pytest.raises(TypeError, match=r"not callable|task function"):
        await worker.add_task(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already exists"):
        await worker.add_task(_noop, task_id="taken")
    with pytest.raises(TypeError, match="priority"):
        await worker.add_task(_noop, priority="high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="priority"):
        await worker.add_task(_noop, priority=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        await worker.add_task(_noop, timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        await worker.add_task(_noop, timeout=math.nan)
    with pytest.raises(TypeError, match="metadata"):
        await worker.add_task(_noop, metadata=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="task_id"):
        await worker.add_task(_noop, task_id=7)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown task type 'nope'"):
        await worker.add_task("nope")
    assert len(worker) == before
    assert worker.stats().counts[TaskStatus.PENDING] + worker.stats().counts[TaskStatus.RUNNING] <= 1


async def test_a_generated_id_never_collides_with_one_a_caller_chose_in_its_form(
    worker: AsyncTaskWorker,
) -> None:
    gate = asyncio.Event()
    first = await worker.add_task(gate.wait)
    prefix, counter = first.rsplit("-", 1)
    assert int(counter, 16) == 0  # generated ids: the worker's prefix and a hex counter
    # The next generated ids would be <prefix>-2, <prefix>-3: take them first.
    mine = [await worker.add_task(gate.wait, task_id=f"{prefix}-{n:x}") for n in (2, 3)]
    generated = [await worker.add_task(gate.wait) for _ in range(3)]
    assert len({first, *mine, *generated}) == 6
    assert all(worker.get_task_info(t) is not None for t in (first, *mine, *generated))
    gate.set()
    await worker.join()
    assert worker.stats().counts[TaskStatus.COMPLETED] == 6


async def test_coroutine_object_is_refused_and_closed_without_warning(worker: AsyncTaskWorker) -> None:
    coro = _value(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="coroutine \\*function\\*"):
            await worker.add_task(coro)  # type: ignore[arg-type]
        del coro
        gc.collect()
    assert len(worker) == 0


async def test_unknown_type_name_lists_known_ones(worker: AsyncTaskWorker) -> None:
    task("known_a")(_noop)
    with pytest.raises(KeyError, match="known_a"):
        await worker.add_task("unknown")


# ----------------------------------------------------------- scheduling
async def test_lower_priority_number_runs_first_and_ties_keep_submission_order() -> None:
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    async with AsyncTaskWorker(max_workers=1) as w:
        gate = asyncio.Event()
        await w.add_task(gate.wait)  # occupies the only slot
        for name, prio in [("c", 5), ("a1", 1), ("b", 3), ("a2", 1), ("z", -1), ("a3", 1)]:
            await w.add_task(record, name, priority=prio)
        gate.set()
        await w.join()
    assert order == ["z", "a1", "a2", "a3", "b", "c"]


async def test_burst_added_in_one_turn_starts_in_priority_order_on_an_idle_worker() -> None:
    order: list[int] = []

    async def record(p: int) -> None:
        order.append(p)

    async with AsyncTaskWorker(max_workers=1) as w:
        for p in [3, 1, 2, 0]:
            w.add_task_nowait(record, p, priority=p)
        await w.join()
    assert order == [0, 1, 2, 3]


async def test_equal_priorities_keep_submission_order_under_load() -> None:
    order: list[int] = []

    async def record(i: int) -> None:
        order.append(i)
        await asyncio.sleep(0)

    async with AsyncTaskWorker(max_workers=1) as w:
        for i in range(2000):
            await w.add_task(record, i)
        await w.join()
    assert order == list(range(2000))


async def test_concurrency_never_exceeds_max_workers_and_free_slots_fill_at_once() -> None:
    running = 0
    peak = 0
    release: list[asyncio.Event] = []

    async def body(ev: asyncio.Event) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await ev.wait()
        running -= 1

    async with AsyncTaskWorker(max_workers=3) as w:
        events = [asyncio.Event() for _ in range(9)]
        ids = [await w.add_task(body, ev) for ev in events]
        release.extend(events)
        await next_dispatch()
        assert w.stats().busy == 3
        assert [w.get_task_info(i).status for i in ids].count("running") == 3  # type: ignore[union-attr]
        # Finishing one task starts the next in the same loop pass: no polling delay.
        events[0].set()
        await w.wait(ids[0])
        assert w.get_task_info(ids[3]).status == "running"  # type: ignore[union-attr]
        for ev in events:
            ev.set()
        await w.join()
    assert peak == 3


async def test_max_workers_can_grow_at_runtime() -> None:
    async with AsyncTaskWorker(max_workers=1) as w:
        gate = asyncio.Event()
        a = await w.add_task(gate.wait)
        b = await w.add_task(gate.wait)
        await next_dispatch()
        assert w.get_task_info(b).status == "pending"  # type: ignore[union-attr]
        w.max_workers = 2
        assert w.get_task_info(b).status == "running"  # type: ignore[union-attr]
        gate.set()
        await w.join()
        assert w.get_task_info(a).status == "completed"  # type: ignore[union-attr]



async def test_a_body_that_never_suspends_runs_in_the_dispatch_turn_on_python_312() -> None:
    # Python 3.12+: the first step runs inside the (deferred) dispatch, eagerly;
    # 3.10/3.11 need one more loop turn for the job's first step.
    import sys

    ran: list[int] = []

    async def body(i: int) -> None:
        ran.append(i)

    async with AsyncTaskWorker(max_workers=2) as w:
        ids = [w.add_task_nowait(body, i) for i in range(5)]
        assert ran == []  # never inside add_task: a burst still starts in priority order
        await asyncio.sleep(0)  # the dispatch turn
        if sys.version_info >= (3, 12):
            assert ran == [0, 1, 2, 3, 4]
            assert all(w.get_task_info(i).status == "completed" for i in ids)  # type: ignore[union-attr]
        await w.join()
    assert ran == [0, 1, 2, 3, 4]


async def test_current_task_inside_a_body_is_its_own_job_in_its_first_step_and_later() -> None:
    seen: list[tuple[object, object]] = []

    async def body() -> None:
        first = asyncio.current_task()
        await asyncio.sleep(0)
        seen.append((first, asyncio.current_task()))

    async with AsyncTaskWorker(max_workers=3) as w:
        for _ in range(3):
            w.add_task_nowait(body)
        await w.join()
    assert len(seen) == 3
    assert all(first is later and first is not None for first, later in seen)
    assert len({id(first) for first, _ in seen}) == 3


async def test_a_body_cancelling_itself_in_its_first_step_ends_cancelled() -> None:
    reached: list[str] = []

    async def body() -> None:
        w.cancel_task_nowait(tid)
        reached.append("first step")
        await asyncio.sleep(0)
        reached.append("after the await")  # never: cancelled at its first await

    async with AsyncTaskWorker(max_workers=1) as w:
        tid = w.add_task_nowait(body)
        with pytest.raises(asyncio.CancelledError):
            await w.wait(tid)
    assert reached == ["first step"]


async def test_a_first_step_raising_max_workers_never_runs_more_bodies_than_allowed() -> None:
    # The dispatch reached from inside a first step must count that step's slot.
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def body(grow: bool) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running, w.stats().busy)
        if grow:
            w.max_workers = 2
        await gate.wait()
        running -= 1

    async with AsyncTaskWorker(max_workers=1) as w:
        ids = [w.add_task_nowait(body, i == 0) for i in range(4)]
        await wait_until(w, lambda: w.stats().busy == 2)
        assert [w.get_task_info(i).status for i in ids].count("running") == 2  # type: ignore[union-attr]
        assert w.stats().busy == 2
        gate.set()
        await w.join()
    assert peak == 2



def test_max_workers_raised_while_the_loop_is_not_running_starts_the_tasks_once_it_runs() -> None:
    # The dispatch then runs outside the loop: no first step can run eagerly.
    loop = asyncio.new_event_loop()
    try:
        w = AsyncTaskWorker(max_workers=1)
        loop.run_until_complete(w.start())

        async def add_blocked() -> tuple[asyncio.Event, list[str]]:
            gate = asyncio.Event()
            ids = [await w.add_task(gate.wait) for _ in range(4)]
            await next_dispatch()
            return gate, ids

        gate, ids = loop.run_until_complete(add_blocked())
        w.max_workers = 3  # from sync code, the loop stopped
        assert w.stats().busy == 3

        async def finish() -> None:
            gate.set()
            await asyncio.wait_for(w.join(), 30)  # a safety net: a lost slot would hang here

        loop.run_until_complete(finish())
        assert [w.get_task_info(i).status for i in ids] == ["completed"] * 4  # type: ignore[union-attr]
        assert w.stats().busy == 0
        loop.run_until_complete(w.stop())
    finally:
        loop.close()



async def test_the_started_event_counts_the_task_busy_and_precedes_its_finish() -> None:
    seen: list[tuple[str, str, int]] = []

    async def body() -> None:
        return None

    async with AsyncTaskWorker(max_workers=2) as w:
        w.subscribe(lambda e: seen.append((e.kind.value, e.info.id, w.stats().busy))
                    if e.info is not None else None)
        tid = w.add_task_nowait(body)
        await w.join()
    kinds = [(kind, busy) for kind, task_id, busy in seen if task_id == tid]
    assert [k for k, _ in kinds] == ["added", "started", "finished"]
    assert dict(kinds)["started"] == 1


# ---------------------------------------------------------------- results
async def test_wait_returns_result_and_join_waits_for_everything(worker: AsyncTaskWorker) -> None:
    ids = [await worker.add_task(_value, i) for i in range(10)]
    await worker.join()
    assert [await worker.wait(i) for i in ids] == list(range(10))
    assert worker.stats().counts[TaskStatus.COMPLETED] == 10


async def test_wait_unknown_id_raises_key_error(worker: AsyncTaskWorker) -> None:
    with pytest.raises(KeyError):
        await worker.wait("nope")


async def test_wait_timeout_leaves_the_task_running(worker: AsyncTaskWorker) -> None:
    gate = asyncio.Event()
    tid = await worker.add_task(gate.wait)
    with pytest.raises(asyncio.TimeoutError):
        await worker.wait(tid, timeout=0.01)
    assert worker.get_task_info(tid).status == "running"  # type: ignore[union-attr]
    gate.set()
    assert await worker.wait(tid) is True


async def test_task_info_fields_and_timestamps(worker: AsyncTaskWorker) -> None:
    tid = await worker.add_task(_value, "x", priority=3, metadata={"k": "v"})
    await worker.wait(tid)
    info = worker.get_task_info(tid)
    assert isinstance(info, TaskInfo)
    assert (info.id, info.name, info.status, info.priority) == (tid, "_value", "completed", 3)
    assert info.result == "x" and info.error is None and info.exception is None
    assert info.metadata == {"k": "v"}
    assert info.created_at.tzinfo is timezone.utc
    assert info.created_at <= info.started_at <= info.completed_at  # type: ignore[operator]
    assert info.done and info.elapsed is not None and info.elapsed >= 0
    assert "completed" in repr(info)


async def test_snapshot_cannot_corrupt_worker_state(worker: AsyncTaskWorker) -> None:
    meta = {"k": [1]}
    tid = await worker.add_task(_value, 1, metadata=meta)
    meta["k2"] = 2  # the caller's dict is copied
    info = worker.get_task_info(tid)
    assert info is not None
    with pytest.raises(TypeError):
        info.metadata["x"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        info.status = TaskStatus.FAILED  # type: ignore[misc]
    assert worker.get_task_info(tid).metadata == {"k": [1]}  # type: ignore[union-attr]


async def test_registered_name_is_the_task_name_and_type_names_work(worker: AsyncTaskWorker) -> None:
    @task("doubler")
    async def double(x: int) -> int:
        return 2 * x

    assert await double(2) == 4  # the decorator returns the function unchanged
    a = await worker.add_task("doubler", 4)
    b = await worker.add_task(double, 5)
    assert await worker.wait(a) == 8 and await worker.wait(b) == 10
    assert worker.get_task_info(a).name == "doubler"  # type: ignore[union-attr]
    assert worker.get_task_info(b).name == "doubler"  # type: ignore[union-attr]


# ---------------------------------------------------------------- failures
async def test_failing_task_records_message_exception_and_traceback(worker: AsyncTaskWorker) -> None:
    async def boom() -> None:
        raise ValueError("bad value")

    tid = await worker.add_task(boom)
    with pytest.raises(ValueError, match="bad value"):
        await worker.wait(tid)
    info = worker.get_task_info(tid)
    assert info is not None and info.status == "failed"
    assert info.error == "ValueError: bad value"
    assert isinstance(info.exception, ValueError)
    assert "in boom" in (info.traceback or "") and "task_worker/_worker.py" not in (info.traceback or "")
    # The worker goes on.
    assert await worker.wait(await worker.add_task(_value, 1)) == 1


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_keyboard_interrupt_and_system_exit_fail_the_task_not_the_worker(
    worker: AsyncTaskWorker, exc_type: type[BaseException],
) -> None:
    async def body() -> None:
        raise exc_type()

    def sync_body() -> None:
        raise exc_type()

    for func in (body, sync_body):
        tid = await worker.add_task(func)
        # Re-raised as it is, it would stop the event loop: wait() wraps it.
        with pytest.raises(RuntimeError, match=exc_type.__name__) as caught:
            await worker.wait(tid)
        assert isinstance(caught.value.__cause__, exc_type)
        info = worker.get_task_info(tid)
        assert info is not None and info.status == "failed" and isinstance(info.exception, exc_type)
    assert await worker.wait(await worker.add_task(_value, 2)) == 2


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_task_base_exception_never_reaches_the_event_loop_through_any_api(
    exc_type: type[BaseException],
) -> None:
    # Its own loop: before the fix the loop died with the task's exception.
    async def body() -> None:
        raise exc_type()

    def sync_body() -> None:
        raise exc_type()

    async def main() -> list[BaseException]:
        seen: list[BaseException] = []
        async with AsyncTaskWorker(max_workers=2) as w:
            w.subscribe(lambda event: None)
            ids = [await w.add_task(body), await w.add_task(sync_body)]
            futures = w.get_task_futures(ids)  # taken before the tasks fail
            await w.join()
            futures += w.get_task_futures(ids)  # and after
            w.get_task_future(ids[0])  # one nobody awaits
            for fut in futures:
                try:
                    await fut
                except RuntimeError as exc:
                    seen.append(exc)
            for tid in ids:
                with pytest.raises(RuntimeError):
                    await w.wait(tid)
            await asyncio.sleep(0)
        return seen

    try:
        seen = asyncio.run(main())
    except BaseException as exc:  # the defect: the loop died
        pytest.fail(f"the event loop died with {exc!r}")
    assert len(seen) == 4 and all(isinstance(e.__cause__, exc_type) for e in seen)


async def test_unretrieved_failures_never_reach_asyncio_exception_handler() -> None:
    seen: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    try:
        async with AsyncTaskWorker() as w:
            async def boom() -> None:
                raise RuntimeError("nobody waits for me")

            for _ in range(5):
                await w.add_task(boom)
            w.get_task_future(await w.add_task(boom))  # a future nobody awaits
            await w.join()
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert seen == []


# ---------------------------------------------------------------- timeouts
async def test_per_task_timeout_fails_with_timeout_error(worker: AsyncTaskWorker) -> None:
    tid = await worker.add_task(asyncio.sleep, 30, timeout=0.05)
    with pytest.raises(TimeoutError):
        await worker.wait(tid)
    info = worker.get_task_info(tid)
    assert info is not None and info.status == "failed"
    assert isinstance(info.exception, TimeoutError)
    assert "timed out after 0.05 s" in (info.error or "")


async def test_worker_task_timeout_applies_to_every_task() -> None:
    async with AsyncTaskWorker(task_timeout=0.05) as w:
        tid = await w.add_task(asyncio.sleep, 30)
        with pytest.raises(TimeoutError):
            await w.wait(tid)
        fast = await w.add_task(_value, 3)
        assert await w.wait(fast) == 3


async def test_timeout_stops_a_thread_body(worker: AsyncTaskWorker) -> None:
    stopped = threading.Event()

    def spin() -> None:
        try:
            while True:
                pass
        finally:
            stopped.set()

    tid = await worker.add_task(spin, timeout=0.05)
    with pytest.raises(TimeoutError):
        await worker.wait(tid)
    assert stopped.wait(5)


# ------------------------------------------------------------ cancellation
async def test_cancel_pending_task_never_runs() -> None:
    ran: list[str] = []

    async def body(name: str) -> None:
        ran.append(name)

    async with AsyncTaskWorker(max_workers=1) as w:
        gate = asyncio.Event()
        await w.add_task(gate.wait)
        victim = await w.add_task(body, "victim")
        other = await w.add_task(body, "other")
        assert await w.cancel_task(victim) is True
        assert w.get_task_info(victim).status == "cancelled"  # type: ignore[union-attr]
        gate.set()
        await w.wait(other)
        await w.join()
    assert ran == ["other"]


async def test_cancel_running_coroutine_delivers_cancelled_error(worker: AsyncTaskWorker) -> None:
    started = asyncio.Event()
    saw_cancel = asyncio.Event()

    async def body() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    tid = await worker.add_task(body)
    await started.wait()
    assert await worker.cancel_task(tid) is True
    assert saw_cancel.is_set()
    assert worker.get_task_info(tid).status == "cancelled"  # type: ignore[union-attr]
    with pytest.raises(asyncio.CancelledError):
        await worker.wait(tid)


async def test_cancel_unknown_or_finished_returns_false(worker: AsyncTaskWorker) -> None:
    assert await worker.cancel_task("nope") is False
    tid = await worker.add_task(_value, 1)
    await worker.wait(tid)
    assert await worker.cancel_task(tid) is False
    assert worker.cancel_task_nowait(tid) is False


async def test_cancel_thread_pure_python_loop_is_interrupted_not_abandoned() -> None:
    # A grace far longer than the test: only the injected interrupt can end the
    # body before cancel_task returns. How fast it does is measured, not asserted:
    # `python benchmarks/bench_cancel.py`.
    started = threading.Event()
    stopped = threading.Event()

    def spin() -> None:
        started.set()
        try:
            while True:
                pass
        finally:
            stopped.set()

    async with AsyncTaskWorker(max_workers=1, cancel_grace=120) as w:
        tid = await w.add_task(spin)
        await asyncio.to_thread(started.wait, 5)
        t0 = time.perf_counter()
        assert await w.cancel_task(tid) is True
        elapsed = time.perf_counter() - t0
        assert stopped.is_set()
        assert w.get_task_info(tid).status == "cancelled"  # type: ignore[union-attr]
        assert w.stats().busy == 0
        assert elapsed < 60, elapsed  # far from the grace: it was not waited out


async def test_cancel_thread_that_reports_progress_raises_at_next_report(worker: AsyncTaskWorker) -> None:
    started = threading.Event()
    raised: list[BaseException] = []

    def cooperative() -> None:
        started.set()
        try:
            while True:
                report_progress(0.5)
        except BaseException as exc:
            raised.append(exc)
            raise

    tid = await worker.add_task(cooperative)
    await asyncio.to_thread(started.wait, 5)
    assert await worker.cancel_task(tid) is True
    assert len(raised) == 1
    assert worker.get_task_info(tid).status == "cancelled"  # type: ignore[union-attr]


async def test_thread_in_c_call_is_marked_cancelled_after_grace_and_keeps_its_slot() -> None:
    release = threading.Event()
    started = threading.Event()

    def c_call() -> str:
        started.set()
        release.wait()  # a C call: the interruption waits for it to return
        return "done"

    async with AsyncTaskWorker(max_workers=1, cancel_grace=0.05) as w:
        tid = await w.add_task(c_call)
        await asyncio.to_thread(started.wait, 5)
        assert await w.cancel_task(tid) is True
        assert w.get_task_info(tid).status == "cancelled"  # type: ignore[union-attr]
        assert "abandoned" in (w.get_task_info(tid).error or "")  # type: ignore[union-attr]
        nxt = await w.add_task(_value, 1)
        await next_dispatch()
        # the slot is still held by the thread finishing its C call
        assert w.stats().busy == 1
        assert w.get_task_info(nxt).status == "pending"  # type: ignore[union-attr]
        release.set()
        assert await w.wait(nxt) == 1
        assert w.get_task_info(tid).status == "cancelled"  # type: ignore[union-attr]


async def test_coroutine_refusing_cancel_is_marked_cancelled_after_grace() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # refuses

    async with AsyncTaskWorker(max_workers=1, cancel_grace=0.05) as w:
        tid = await w.add_task(stubborn)
        await started.wait()
        t0 = time.perf_counter()
        assert await w.cancel_task(tid) is True
        assert time.perf_counter() - t0 < 1.0
        assert w.get_task_info(tid).status == "cancelled"  # type: ignore[union-attr]
        release.set()


# -------------------------------------------------------------------- stop
async def test_stop_cancels_pending_and_running_and_leaves_no_asyncio_task() -> None:
    before = asyncio.all_tasks()
    w = AsyncTaskWorker(max_workers=2, cancel_grace=0.2)
    await w.start()
    ids = [await w.add_task(asyncio.sleep, 30) for _ in range(5)]
    await next_dispatch()
    t0 = time.perf_counter()
    await w.stop(timeout=0.1)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, elapsed  # timeout + grace (0.3 s), never the bodies' 30 s
    statuses = [w.get_task_info(i).status for i in ids]  # type: ignore[union-attr]
    assert statuses == ["cancelled"] * 5
    assert w.stats().counts[TaskStatus.PENDING] == 0 and w.stats().counts[TaskStatus.RUNNING] == 0
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


async def test_stop_lets_running_tasks_finish_within_timeout() -> None:
    w = AsyncTaskWorker()
    await w.start()
    gate = asyncio.Event()

    async def body() -> str:
        await gate.wait()
        return "finished"

    tid = await w.add_task(body)
    await wait_for_status(w, tid, "running")
    asyncio.get_running_loop().call_soon(gate.set)
    await w.stop(timeout=5)
    assert w.get_task_info(tid).status == "completed"  # type: ignore[union-attr]


async def test_stop_with_a_stuck_thread_returns_in_bounded_time() -> None:
    release = threading.Event()
    started = threading.Event()

    def c_call() -> None:
        started.set()
        release.wait()

    w = AsyncTaskWorker(max_workers=1, cancel_grace=0.1)
    await w.start()
    tid = await w.add_task(c_call)
    await asyncio.to_thread(started.wait, 5)
    t0 = time.perf_counter()
    await w.stop(timeout=0.1)
    assert time.perf_counter() - t0 < 10  # bounded: the thread never returns by itself
    assert w.get_task_info(tid).status == "cancelled"  # type: ignore[union-attr]
    # The abandoned thread still holds the only slot after a restart...
    await w.start()
    nxt = await w.add_task(_value, "next")
    await next_dispatch()
    assert w.stats().busy == 1
    assert w.get_task_info(nxt).status == "pending"  # type: ignore[union-attr]
    # ...until its C call returns.
    release.set()
    assert await w.wait(nxt) == "next"
    await w.stop()


async def test_bodies_launched_before_max_workers_shrinks_all_run_and_free_their_slots() -> None:
    # Three thread bodies launched with max_workers=3, then max_workers=1 before
    # their threads exist: each must really start (none queued behind a smaller
    # pool), and after stop() abandons them each frees its slot when it returns.
    release = threading.Event()
    started: list[str] = []
    all_started = threading.Event()
    lock = threading.Lock()

    def blocked(tag: str) -> str:
        with lock:
            started.append(tag)
            if len(started) == 3:
                all_started.set()
        release.wait()  # a C call: cancellation cannot interrupt it
        return tag

    w = AsyncTaskWorker(max_workers=3, cancel_grace=0.05)
    await w.start()
    for tag in "abc":
        await w.add_task(blocked, tag)
    await next_dispatch()  # launched (their asyncio tasks exist), threads not yet asked for
    w.max_workers = 1
    assert await asyncio.to_thread(all_started.wait, 10), started
    await w.stop(timeout=0.01)
    assert w.stats().busy == 3  # abandoned, still running
    release.set()
    await w.start()
    # It can only start once every abandoned body has returned and freed its slot.
    nxt = await w.add_task(_value, "next")
    assert await w.wait(nxt, timeout=10) == "next"
    assert w.stats().busy == 0
    await w.stop()


def test_a_thread_abandoned_on_a_closed_loop_frees_its_slot_for_the_next_loop() -> None:
    release = threading.Event()
    started = threading.Event()
    w = AsyncTaskWorker(max_workers=1, cancel_grace=0.05)

    def blocked() -> None:
        started.set()
        release.wait()

    async def first() -> None:
        await w.start()
        await w.add_task(blocked)
        await asyncio.to_thread(started.wait, 10)
        await w.stop(timeout=0.01)
        assert w.stats().busy == 1

    async def second() -> object:
        await w.start()
        nxt = await w.add_task(_value, "ran")
        try:
            return await w.wait(nxt, timeout=10)
        finally:
            await w.stop()

    asyncio.run(first())
    release.set()  # returns while no loop runs: it cannot report to the closed one
    assert asyncio.run(second()) == "ran"
    assert w.stats().busy == 0


async def test_stop_with_a_body_swallowing_cancellation_keeps_its_time_bound() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass

    w = AsyncTaskWorker(max_workers=1, cancel_grace=2.0)
    await w.start()
    await w.add_task(stubborn)
    await started.wait()
    t0 = time.perf_counter()
    await w.stop(timeout=0.05)
    elapsed = time.perf_counter() - t0
    release.set()
    await asyncio.sleep(0)
    # Promised: timeout + cancel_grace (2.05 s); it used to take timeout + 2 * cancel_grace (4.05 s).
    assert 2.0 <= elapsed < 3.0, elapsed


# ---------------------------------------------------------------- context
async def test_each_task_runs_in_the_context_captured_at_add_task(worker: AsyncTaskWorker) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def read() -> str:
        return var.get()

    def read_sync() -> str:
        return var.get()

    var.set("first")
    a = await worker.add_task(read)
    b = await worker.add_task(read_sync)
    var.set("second")
    c = await worker.add_task(read)
    assert [await worker.wait(x) for x in (a, b, c)] == ["first", "first", "second"]


# ----------------------------------------------------------------- queries
async def test_get_all_tasks_filters_newest_first_and_limit() -> None:
    async with AsyncTaskWorker(max_workers=2) as w:
        async def boom() -> None:
            raise ValueError

        ok = [await w.add_task(_value, i) for i in range(5)]
        bad = [await w.add_task(boom) for _ in range(3)]
        await w.join()
        all_ids = [i.id for i in w.get_all_tasks()]
        assert all_ids == list(reversed(ok + bad))
        assert [i.id for i in w.get_all_tasks(status="completed")] == list(reversed(ok))
        assert [i.id for i in w.get_all_tasks(status=TaskStatus.FAILED)] == list(reversed(bad))
        assert [i.id for i in w.get_all_tasks(status=["failed", "completed"], limit=4)] == \
            list(reversed(ok + bad))[:4]
        assert [i.id for i in w.get_all_tasks(status="completed", limit=2)] == list(reversed(ok))[:2]
        assert w.get_all_tasks(status="cancelled") == []
        assert w.get_all_tasks(older_than=timedelta(hours=1)) == []
        assert len(w.get_all_tasks(older_than=timedelta(0))) == 8
        with pytest.raises(ValueError, match="unknown task status"):
            w.get_all_tasks(status="done")
        with pytest.raises(ValueError, match="limit"):
            w.get_all_tasks(limit=-1)


async def test_get_queue_lists_pending_in_start_order() -> None:
    async with AsyncTaskWorker(max_workers=1) as w:
        gate = asyncio.Event()
        await w.add_task(gate.wait)
        await next_dispatch()
        ids = {p: await w.add_task(_value, p, priority=p) for p in (5, 1, 3)}
        assert [i.id for i in w.get_queue()] == [ids[1], ids[3], ids[5]]
        assert [i.id for i in w.get_queue(limit=1)] == [ids[1]]
        # get_all_tasks is newest-first by creation, whatever the status
        assert [i.id for i in w.get_all_tasks(status="pending")] == [ids[3], ids[1], ids[5]]
        gate.set()


async def test_history_is_bounded_oldest_first_and_clear_drops_finished() -> None:
    async with AsyncTaskWorker(max_history=5) as w:
        gate = asyncio.Event()
        keep_running = await w.add_task(gate.wait)
        ids = [await w.add_task(_value, i) for i in range(8)]
        await wait_until(w, lambda: w.stats().counts[TaskStatus.COMPLETED] == 5
                         and not w.stats().counts[TaskStatus.PENDING] and len(w.get_running()) == 1)
        known = [t.id for t in w.get_all_tasks()]
        assert keep_running in known
        assert [i for i in ids if i in known] == ids[-5:]
        assert w.clear() == 5
        assert [t.id for t in w.get_all_tasks()] == [keep_running]
        gate.set()
        await w.join()
        assert w.clear(older_than=timedelta(hours=1)) == 0


async def test_get_queue_with_limit_walks_past_cancelled_entries() -> None:
    async with AsyncTaskWorker(max_workers=1) as w:
        gate = asyncio.Event()
        await w.add_task(gate.wait)
        await next_dispatch()
        ids = [await w.add_task(_value, i, priority=i % 7) for i in range(200)]
        for tid in ids[::3]:
            await w.cancel_task(tid)
        expected = [i.id for i in w.get_queue()]
        assert len(expected) == 200 - len(ids[::3])
        for limit in (0, 1, 5, 50, 500):
            assert [i.id for i in w.get_queue(limit=limit)] == expected[:limit]
        gate.set()


async def test_get_queue_rejects_a_bad_limit_like_get_all_tasks(worker: AsyncTaskWorker) -> None:
    for bad in (-1, "a", 1.5, True):
        with pytest.raises(ValueError, match="limit"):
            worker.get_queue(limit=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="limit"):
            worker.get_all_tasks(limit=bad)  # type: ignore[arg-type]
    assert worker.get_queue(limit=0) == []


async def test_wait_rejects_a_bad_timeout_for_active_and_finished_tasks(worker: AsyncTaskWorker) -> None:
    gate = asyncio.Event()
    done = await worker.add_task(_value, 1)
    await worker.wait(done)
    pending = await worker.add_task(gate.wait)
    for tid in (done, pending):
        with pytest.raises(ValueError, match="timeout"):
            await worker.wait(tid, timeout=-1)
        with pytest.raises(TypeError, match="timeout"):
            await worker.wait(tid, timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        await worker.wait("no such task", timeout=0)  # validation first
    gate.set()


# ------------------------------------------------------ hostile exceptions
class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class _BrokenStrBase(Exception):
    def __str__(self) -> str:
        raise SystemExit("str() exits")


def _raise_broken(exc_type: type[BaseException]) -> None:
    raise exc_type()


async def _raise_broken_async(exc_type: type[BaseException]) -> None:
    raise exc_type()


@pytest.mark.parametrize("exc_type", [_BrokenStr, _BrokenStrBase])
async def test_an_exception_with_a_raising_str_still_finishes_the_task(
    exc_type: type[BaseException],
) -> None:
    seen: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    finished: list[str] = []
    try:
        async with AsyncTaskWorker(max_workers=2) as w:
            w.subscribe(lambda e: finished.append(e.task_id) if e.kind == "finished" else None)
            ids = [await w.add_task(_raise_broken_async, exc_type),
                   await w.add_task(_raise_broken, exc_type)]
            for tid in ids:
                try:
                    await asyncio.wait_for(w.wait(tid), 10)
                except exc_type:
                    pass
                info = w.get_task_info(tid)
                assert info is not None and info.status == "failed"
                assert info.error is not None and exc_type.__name__ in info.error
                assert isinstance(info.exception, exc_type)
                assert info.traceback is not None
            assert w.stats().counts[TaskStatus.FAILED] == 2
            assert sorted(finished) == sorted(ids)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert seen == []


async def test_a_thread_body_raising_thread_interrupted_itself_just_fails() -> None:
    from task_worker import ThreadInterrupted

    seen: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))

    def body() -> None:
        raise ThreadInterrupted("raised by the body, not by a cancel")

    try:
        async with AsyncTaskWorker() as w:
            tid = await w.add_task(body)
            await w.join()
            info = w.get_task_info(tid)
            assert info is not None and info.status == "failed"
            assert isinstance(info.exception, ThreadInterrupted)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert seen == []


async def test_a_thread_body_raising_stop_iteration_is_reported_as_such(worker: AsyncTaskWorker) -> None:
    def body() -> None:
        raise StopIteration("exhausted")

    tid = await worker.add_task(body)
    with pytest.raises(RuntimeError, match="failed with StopIteration: exhausted") as caught:
        await worker.wait(tid)  # a StopIteration cannot leave a coroutine as it is
    assert isinstance(caught.value.__cause__, StopIteration)
    info = worker.get_task_info(tid)
    assert info is not None and info.error == "StopIteration: exhausted"
    assert isinstance(info.exception, StopIteration)


async def test_a_result_whose_repr_raises_completes_and_reaches_every_subscriber(
    worker: AsyncTaskWorker,
) -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise SystemExit("repr() exits")

        __str__ = __repr__

    hostile = Hostile()
    shown: list[str] = []

    def view(event: object) -> None:  # a view that renders results
        info = getattr(event, "info", None)
        if info is not None and info.status == "completed":
            shown.append(repr(info.result))

    worker.subscribe(view)
    worker.subscribe(lambda event: shown.append("after"))

    async def body() -> Hostile:
        return hostile

    tid = await worker.add_task(body)
    assert await worker.wait(tid) is hostile
    info = worker.get_task_info(tid)
    assert info is not None and info.status == "completed" and "completed" in repr(info)
    assert worker.stats().counts[TaskStatus.COMPLETED] == 1
    assert shown.count("after") == 3  # added, started, finished: the raising view stopped nothing



async def test_idle_body_threads_exit_at_stop_and_busy_ones_when_their_body_returns() -> None:
    gates = {"idle": threading.Event(), "busy": threading.Event()}
    started = threading.Barrier(3)

    threads: dict[str, threading.Thread] = {}

    def body(which: str) -> threading.Thread:
        threads[which] = threading.current_thread()
        started.wait(10)
        gates[which].wait()  # a C call: stop() cannot interrupt it
        return threading.current_thread()

    w = AsyncTaskWorker(max_workers=2, cancel_grace=0.05)
    await w.start()
    try:
        first = await w.add_task(body, "idle")
        await w.add_task(body, "busy")
        await asyncio.to_thread(started.wait, 10)
        gates["idle"].set()
        idle = await w.wait(first)
        busy = [threads["busy"]]
        assert idle is threads["idle"] and busy[0] is not idle
        await w.stop(timeout=0.01)
        await asyncio.to_thread(idle.join, 10)
        assert not idle.is_alive() and busy[0].is_alive()
        gates["busy"].set()
        await asyncio.to_thread(busy[0].join, 10)
        assert not busy[0].is_alive() and w.stats().busy == 0
    finally:
        for gate in gates.values():
            gate.set()
        await w.stop()


async def test_a_bound_method_or_partial_task_does_not_keep_its_object_alive(worker: AsyncTaskWorker) -> None:
    import functools
    import weakref

    class Holder:
        async def run(self) -> int:
            return 1

    async def ignore(_: object) -> None:
        return None

    holder = Holder()
    ref = weakref.ref(holder)
    assert await worker.wait(await worker.add_task(holder.run)) == 1
    assert await worker.wait(await worker.add_task(functools.partial(ignore, holder))) is None
    del holder
    gc.collect()
    assert ref() is None  # the per-function cache held it until 4096 other functions came by



async def test_a_finished_task_leaves_no_reference_cycle_for_the_garbage_collector(
    worker: AsyncTaskWorker,
) -> None:
    # Each finished task's asyncio Task, coroutine and context must be freed by
    # reference counting: left in a cycle, 100,000 of them make the garbage
    # collector's full passes dominate the worker's cost (issue 11).
    import weakref

    jobs: list[weakref.ref[asyncio.Task[object]]] = []

    async def body(fail: bool) -> None:
        jobs.append(weakref.ref(asyncio.current_task()))  # type: ignore[arg-type]
        report_progress(0.5)  # binds the record into the job's context
        if fail:
            raise ValueError("boom")

    gc.collect()
    gc.disable()
    try:
        for fail in (False, True):
            await worker.add_task(body, fail)
        await worker.join()
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(jobs) == 2
        assert [ref() for ref in jobs] == [None, None]
    finally:
        gc.enable()


# ------------------------------------------------------ public state for views
async def test_stats_counts_live_subscriptions(worker: AsyncTaskWorker) -> None:
    assert worker.stats().subscribers == 0
    off_all = worker.subscribe(lambda e: None)
    off_one = worker.subscribe(lambda e: None, task_id="x", progress=False)
    assert worker.stats().subscribers == 2
    off_all()
    off_all()  # unsubscribing twice counts once
    assert worker.stats().subscribers == 1
    off_one()
    assert worker.stats().subscribers == 0


async def test_start_nowait_starts_on_the_running_loop_and_refuses_while_stopping() -> None:
    w = AsyncTaskWorker(cancel_grace=0.05)
    assert not w.running and not w.stopping
    w.start_nowait()
    assert w.running and w.loop is asyncio.get_running_loop()
    w.start_nowait()  # idempotent
    gate = asyncio.Event()
    await w.add_task(gate.wait)
    await next_dispatch()
    stopping = asyncio.ensure_future(w.stop(timeout=0.01))
    await next_dispatch()
    assert w.stopping and not w.running
    with pytest.raises(RuntimeError, match="stopping"):
        w.start_nowait()
    await stopping
    assert not w.stopping
    w.start_nowait()
    assert w.running
    await w.stop()


def test_start_nowait_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        AsyncTaskWorker().start_nowait()


async def test_cancel_reasons_are_typed_and_each_ends_the_task_its_own_way() -> None:
    from task_worker._record import CancelReason

    assert {r.value for r in CancelReason} == {"cancelled", "timed out", "worker stopped"}
    async with AsyncTaskWorker(cancel_grace=5) as w:
        cancelled = await w.add_task(asyncio.sleep, 30)
        timed_out = await w.add_task(asyncio.sleep, 30, timeout=0.05)
        stopped = await w.add_task(asyncio.sleep, 30)
        await wait_for_status(w, cancelled, "running")
        await w.cancel_task(cancelled)
        await wait_for_status(w, timed_out, "failed")
    info = {t: w.get_task_info(t) for t in (cancelled, timed_out, stopped)}
    assert info[cancelled].error == "cancelled"  # type: ignore[union-attr]
    assert isinstance(info[timed_out].exception, TimeoutError)  # type: ignore[union-attr]
    assert info[stopped].error == "cancelled: the worker stopped"  # type: ignore[union-attr]
