"""Chains: ``after=`` dependencies and ``retries=`` with backoff (``_chains`` and the worker)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import next_dispatch, wait_for_status, wait_until

from task_worker import AsyncTaskWorker, EventKind, TaskEvent, TaskStatus, report_progress, task
from task_worker._chains import JITTER, RetryPolicy

PENDING, RUNNING = TaskStatus.PENDING, TaskStatus.RUNNING
COMPLETED, FAILED, CANCELLED = TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED


async def _value(x: object) -> object:
    return x


def _gated() -> tuple[asyncio.Event, Callable[..., Any]]:
    gate = asyncio.Event()

    async def gated(x: object = None) -> object:
        await gate.wait()
        return x

    return gate, gated


class Flaky:
    """Fails its first ``failures`` calls with ``exc_type``, then returns ``value``."""

    def __init__(self, failures: int, exc_type: type[BaseException] = ValueError,
                 value: object = "ok") -> None:
        self.failures = failures
        self.exc_type = exc_type
        self.value = value
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc_type(f"failure {self.calls}")
        return self.value


class Recorder:
    def __init__(self, worker: AsyncTaskWorker) -> None:
        self.events: list[TaskEvent] = []
        self.unsubscribe = worker.subscribe(self.events.append)

    def kinds(self, task_id: str) -> list[EventKind]:
        return [e.kind for e in self.events if e.info is not None and e.info.id == task_id]


# ---------------------------------------------------------------- plain tasks
async def test_plain_task_reads_one_attempt_no_dependencies(worker: AsyncTaskWorker) -> None:
    tid = await worker.add_task(_value, 1)
    pending = worker.get_task_info(tid)
    assert pending is not None and pending.chain is None
    await worker.wait(tid)
    info = worker.get_task_info(tid)
    assert info is not None
    assert (info.attempt, info.max_attempts, info.depends_on, info.waiting_for, info.retry_at,
            info.attempt_errors, info.chain) == (1, 1, (), None, None, (), None)

    async def boom() -> None:
        raise ValueError("plain boom")

    fid = await worker.add_task(boom)
    with pytest.raises(ValueError):
        await worker.wait(fid)
    failed = worker.get_task_info(fid)
    assert failed is not None and failed.attempt_errors == ("ValueError: plain boom",)


# --------------------------------------------------------------- dependencies
async def test_dependent_waits_pending_and_starts_after_its_dependency_completed(
        worker: AsyncTaskWorker) -> None:
    gate, gated = _gated()
    load = await worker.add_task(gated, "data", task_id="load")
    train = await worker.add_task(_value, "model", after="load")
    await wait_for_status(worker, load, RUNNING)
    info = worker.get_task_info(train)
    assert info is not None
    assert info.status is PENDING and info.waiting_for == "load" and info.depends_on == ("load",)
    assert worker.stats().counts[PENDING] == 1 and worker.stats().busy == 1
    assert [i.id for i in worker.get_queue()] == [train]
    gate.set()
    assert await worker.wait(train) == "model"
    done_load, done_train = worker.get_task_info(load), worker.get_task_info(train)
    assert done_load is not None and done_train is not None
    assert done_train.started_ts is not None and done_load.completed_ts is not None
    assert done_train.started_ts >= done_load.completed_ts
    assert done_train.waiting_for is None and done_train.depends_on == ("load",)


async def test_waiting_task_holds_no_slot(worker: AsyncTaskWorker) -> None:
    worker.max_workers = 2
    gate, gated = _gated()
    first = await worker.add_task(gated, task_id="first")
    waiter = await worker.add_task(_value, 1, after=first)
    other_gate, other = _gated()
    later = await worker.add_task(other, task_id="later")  # added after the waiter
    await wait_for_status(worker, later, RUNNING)  # the second slot is free for it
    assert worker.get_task_info(waiter).status is PENDING  # type: ignore[union-attr]
    gate.set()
    other_gate.set()
    assert await worker.wait(waiter) == 1


async def test_eligible_dependent_competes_by_priority(worker: AsyncTaskWorker) -> None:
    worker.max_workers = 1
    gate, gated = _gated()
    first = await worker.add_task(gated)
    await wait_for_status(worker, first, RUNNING)
    dependent = await worker.add_task(_value, "dep", after=first, priority=0)
    urgent = await worker.add_task(_value, "urgent", priority=-1)
    gate.set()
    await worker.join()
    d, u = worker.get_task_info(dependent), worker.get_task_info(urgent)
    assert d is not None and u is not None and d.started_ts is not None and u.started_ts is not None
    assert u.started_ts <= d.started_ts and u.seq > d.seq


async def test_several_dependencies_and_waiting_text_shrinks(worker: AsyncTaskWorker) -> None:
    rec = Recorder(worker)
    load_gate, load_body = _gated()
    clean_gate, clean_body = _gated()
    load = await worker.add_task(load_body, task_id="load-id")
    clean = await worker.add_task(clean_body, task_id="clean-id")
    train = await worker.add_task(_value, 3, after=[load, clean, load])  # repeats count once
    info = worker.get_task_info(train)
    assert info is not None and info.depends_on == (load, clean)
    assert info.waiting_for == "load-id, clean-id"  # ids the caller chose name them
    load_gate.set()
    await wait_for_status(worker, load, COMPLETED)
    await wait_until(worker, lambda: EventKind.WAITING in rec.kinds(train))
    info = worker.get_task_info(train)
    assert info is not None and info.status is PENDING and info.waiting_for == "clean-id"
    clean_gate.set()
    assert await worker.wait(train) == 3
    assert rec.kinds(train).count(EventKind.FINISHED) == 1


async def test_after_resolves_names_to_the_newest_task(worker: AsyncTaskWorker) -> None:
    async def fetch(x: object) -> object:
        return x

    old = await worker.add_task(fetch, "old")
    await worker.wait(old)
    gate = asyncio.Event()

    async def fetch_again() -> None:
        await gate.wait()

    newer = await worker.add_task(fetch_again)
    # Name of a function: the newest task named "fetch_again"; "fetch" is the completed one.
    waits = await worker.add_task(_value, 1, after="fetch_again")
    at_once = await worker.add_task(_value, 2, after="fetch")
    assert worker.get_task_info(waits).depends_on == (newer,)  # type: ignore[union-attr]
    assert await worker.wait(at_once) == 2  # a completed dependency: starts at once
    assert worker.get_task_info(waits).status is PENDING  # type: ignore[union-attr]
    gate.set()
    assert await worker.wait(waits) == 1


@pytest.mark.parametrize(("after", "error", "match"), [
    ("nope", ValueError, "no task with id or name 'nope'"),
    (["ok", "nope"], ValueError, "'nope'"),
    (5, TypeError, "after must be"),
    ([5], TypeError, "by id or name"),
])
async def test_bad_after_is_a_clear_error_and_creates_nothing(
        worker: AsyncTaskWorker, after: object, error: type[Exception], match: str) -> None:
    await worker.wait(await worker.add_task(_value, 1, task_id="ok"))
    before = len(worker)
    with pytest.raises(error, match=match):
        await worker.add_task(_value, 2, after=after, task_id="new")
    assert len(worker) == before and "new" not in worker


async def test_dependency_already_failed_or_cancelled_is_refused(worker: AsyncTaskWorker) -> None:
    async def broken() -> None:
        raise RuntimeError("disk full")

    failed = await worker.add_task(broken, task_id="broken")
    with pytest.raises(RuntimeError):
        await worker.wait(failed)
    _gate, gated = _gated()
    cancelled = await worker.add_task(gated, task_id="gone")
    await worker.cancel_task(cancelled)
    before = len(worker)
    with pytest.raises(ValueError,
                       match=r"dependency 'broken' \(id 'broken'\) already failed: RuntimeError: disk full"):
        worker.add_task_nowait(_value, 1, after="broken")
    with pytest.raises(ValueError, match="already was cancelled"):
        worker.add_task_nowait(_value, 1, after=["gone"])
    assert len(worker) == before


async def test_failed_dependency_cancels_dependents_transitively(worker: AsyncTaskWorker) -> None:
    rec = Recorder(worker)
    gate = asyncio.Event()

    async def load() -> None:
        await gate.wait()
        raise OSError("network down")

    a = await worker.add_task(load, task_id="load")
    b = await worker.add_task(_value, 1, after=a, task_id="parse")
    c = await worker.add_task(_value, 2, after=b, task_id="train")
    d = await worker.add_task(_value, 3, after=[a, c], task_id="report")
    gate.set()
    await worker.join()
    assert worker.get_task_info(a).status is FAILED  # type: ignore[union-attr]
    reasons = {t: worker.get_task_info(t) for t in (b, c, d)}
    assert reasons[b].error == "cancelled: dependency 'load' failed"  # type: ignore[union-attr]
    assert reasons[c].error == (  # type: ignore[union-attr]
        "cancelled: dependency 'parse' was cancelled, because 'load' failed")
    assert reasons[d].error == "cancelled: dependency 'load' failed"  # type: ignore[union-attr]
    for t in (a, b, c, d):
        assert rec.kinds(t).count(EventKind.FINISHED) == 1
        assert EventKind.STARTED not in rec.kinds(t) or t == a


async def test_cancelling_a_task_cancels_what_waits_on_it_and_says_how_many(
        worker: AsyncTaskWorker) -> None:
    _gate, gated = _gated()
    a = await worker.add_task(gated, task_id="download")
    b = await worker.add_task(_value, 1, after=a)
    c = await worker.add_task(_value, 2, after=b)
    assert worker.dependents(a) == [b, c]
    assert worker.dependents(c) == [] and worker.dependents("unknown") == []
    assert await worker.cancel_task(a)
    info = worker.get_task_info(a)
    assert info is not None and info.status is CANCELLED
    assert info.error is not None and info.error.endswith("(and 2 dependent tasks waiting on it)")
    assert worker.get_task_info(b).error == "cancelled: dependency 'download' was cancelled"  # type: ignore[union-attr]
    assert worker.get_task_info(c).status is CANCELLED  # type: ignore[union-attr]
    assert worker.dependents(a) == []


async def test_cancelling_a_waiting_dependent_leaves_its_dependency_alone(worker: AsyncTaskWorker) -> None:
    gate, gated = _gated()
    a = await worker.add_task(gated, 7)
    b = await worker.add_task(_value, 1, after=a)
    assert worker.cancel_task_nowait(b)
    assert worker.get_task_info(b).status is CANCELLED  # type: ignore[union-attr]
    assert worker.stats().counts[PENDING] == 0 or worker.get_task_info(a).status is PENDING  # type: ignore[union-attr]
    gate.set()
    assert await worker.wait(a) == 7
    assert worker.get_task_info(a).chain is None  # type: ignore[union-attr]


async def test_long_chain_cancels_without_recursion(worker: AsyncTaskWorker) -> None:
    _gate, gated = _gated()
    ids = [await worker.add_task(gated)]
    for _ in range(3000):
        ids.append(worker.add_task_nowait(_value, 0, after=ids[-1]))
    assert await worker.cancel_task(ids[0])
    assert all(worker.get_task_info(t).status is CANCELLED for t in ids)  # type: ignore[union-attr]
    assert worker.stats().counts[PENDING] == 0


# -------------------------------------------------------------------- retries
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"retries": -1}, ValueError, "retries must be >= 0"),
    ({"retries": "3"}, TypeError, "retries must be an int"),
    ({"retries": True}, TypeError, "retries must be an int"),
    ({"retries": 1, "retry_delay": -1}, ValueError, "retry_delay must be a finite number >= 0"),
    ({"retries": 1, "retry_delay": math.nan}, ValueError, "retry_delay"),
    ({"retries": 1, "retry_delay": "1"}, TypeError, "retry_delay must be a number"),
    ({"retries": 1, "retry_backoff": 0.5}, ValueError, "retry_backoff must be a finite number >= 1"),
    ({"retries": 1, "retry_on": "ValueError"}, TypeError, "retry_on must be an exception type"),
    ({"retries": 1, "retry_on": ()}, ValueError, "at least one"),
    ({"retries": 1, "retry_on": (ValueError, asyncio.CancelledError)}, ValueError, "never retried"),
    ({"retry_delay": -5}, ValueError, "retry_delay"),  # checked even without retries
])
async def test_bad_retry_options_are_clear_errors_and_create_nothing(
        worker: AsyncTaskWorker, kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        await worker.add_task(_value, 1, task_id="x", **kwargs)
    assert len(worker) == 0


async def test_flaky_task_succeeds_on_retry_with_one_finished_event(worker: AsyncTaskWorker) -> None:
    rec = Recorder(worker)
    flaky = Flaky(2)
    tid = await worker.add_task(flaky, retries=3, retry_delay=0)
    assert await worker.wait(tid) == "ok"
    info = worker.get_task_info(tid)
    assert info is not None and info.status is COMPLETED
    assert (info.attempt, info.max_attempts) == (3, 4)
    assert info.attempt_errors == ("ValueError: failure 1", "ValueError: failure 2")
    kinds = rec.kinds(tid)
    assert kinds.count(EventKind.STARTED) == 3 and kinds.count(EventKind.RETRYING) == 2
    assert kinds.count(EventKind.FINISHED) == 1 and kinds[-1] is EventKind.FINISHED
    retrying = [e.info for e in rec.events if e.kind is EventKind.RETRYING]
    assert [(i.status, i.attempt) for i in retrying if i is not None] == [(PENDING, 2), (PENDING, 3)]


async def test_final_failure_keeps_every_attempts_error(worker: AsyncTaskWorker) -> None:
    tid = await worker.add_task(Flaky(10), retries=2, retry_delay=0)
    with pytest.raises(ValueError, match="failure 3"):
        await worker.wait(tid)
    info = worker.get_task_info(tid)
    assert info is not None and info.status is FAILED and info.error == "ValueError: failure 3"
    assert (info.attempt, info.max_attempts) == (3, 3)
    assert info.attempt_errors == ("ValueError: failure 1", "ValueError: failure 2", "ValueError: failure 3")
    assert info.waiting_for is None and info.retry_at is None


async def test_only_retry_on_exceptions_are_retried(worker: AsyncTaskWorker) -> None:
    flaky = Flaky(1, KeyError)
    tid = await worker.add_task(flaky, retries=3, retry_delay=0, retry_on=(ValueError, OSError))
    with pytest.raises(KeyError):
        await worker.wait(tid)
    assert flaky.calls == 1
    # A BaseException that is not an Exception is not retried by default.
    kb = Flaky(1, KeyboardInterrupt)
    kid = await worker.add_task(kb, retries=3, retry_delay=0)
    with pytest.raises(RuntimeError):
        await worker.wait(kid)
    assert kb.calls == 1


async def test_cancelled_attempt_is_never_retried(worker: AsyncTaskWorker) -> None:
    started = asyncio.Event()
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    tid = await worker.add_task(slow, retries=5, retry_delay=0, retry_on=BaseException)
    await started.wait()
    assert await worker.cancel_task(tid)
    info = worker.get_task_info(tid)
    assert info is not None and info.status is CANCELLED and calls == 1 and info.attempt == 1


async def test_task_timeout_is_retried_only_when_retry_on_names_it(worker: AsyncTaskWorker) -> None:
    calls = {"default": 0, "named": 0}

    async def hangs(which: str) -> str:
        calls[which] += 1
        if calls[which] == 1:
            await asyncio.Event().wait()
        return which

    plain = await worker.add_task(hangs, "default", timeout=0.05, retries=2, retry_delay=0)
    with pytest.raises(TimeoutError):
        await worker.wait(plain)
    assert calls["default"] == 1
    named = await worker.add_task(hangs, "named", timeout=0.05, retries=2, retry_delay=0,
                                  retry_on=TimeoutError)
    assert await worker.wait(named) == "named"
    info = worker.get_task_info(named)
    assert info is not None and info.attempt == 2 and "timed out" in info.attempt_errors[0]


async def test_retry_delay_holds_no_slot_and_counts_down(worker: AsyncTaskWorker) -> None:
    worker.max_workers = 1
    rec = Recorder(worker)
    release = asyncio.Event()
    progress_seen: list[float] = []

    async def flaky() -> str:
        progress_seen.append(worker.get_task_info(tid).progress)  # type: ignore[union-attr]
        report_progress(0.5)
        if len(progress_seen) == 1:
            raise ConnectionError("rate limited")
        return "done"

    before = time.time()
    tid = await worker.add_task(flaky, retries=1, retry_delay=2.5, retry_backoff=3)
    info = await wait_for_status(worker, tid, PENDING, RUNNING, COMPLETED)
    await wait_until(worker, lambda: EventKind.RETRYING in rec.kinds(tid))
    info = worker.get_task_info(tid)
    assert info is not None and info.status is PENDING and info.waiting_for == "retry delay"
    assert info.attempt == 2 and info.progress == 0.0 and info.retry_at is not None
    assert before + 2.5 * (1 - JITTER) <= info.retry_at <= time.time() + 2.5 * (1 + JITTER)
    assert worker.stats().busy == 0 and worker.stats().counts[RUNNING] == 0
    # The free slot runs another task meanwhile.

    async def other() -> str:
        await release.wait()
        return "other"

    oid = await worker.add_task(other)
    await wait_for_status(worker, oid, RUNNING)
    release.set()
    assert await worker.wait(oid) == "other"
    # A countdown event about each second, then the second attempt.
    assert await worker.wait(tid) == "done"
    assert rec.kinds(tid).count(EventKind.WAITING) >= 2
    assert progress_seen == [0.0, 0.0]


async def test_cancel_during_retry_delay_leaves_no_timer(worker: AsyncTaskWorker) -> None:
    flaky = Flaky(1)
    tid = await worker.add_task(flaky, retries=1, retry_delay=30)
    info = await wait_for_status(worker, tid, PENDING, FAILED)
    await wait_until(worker, lambda: worker.get_task_info(tid).waiting_for == "retry delay")  # type: ignore[union-attr]
    record = worker._table.get(tid)
    assert record is not None and record.timer is not None  # type: ignore[union-attr]
    timer = record.timer  # type: ignore[union-attr]
    assert await worker.cancel_task(tid)
    info = worker.get_task_info(tid)
    assert info is not None and info.status is CANCELLED and info.attempt == 2
    assert timer.cancelled() and flaky.calls == 1 and not worker._table.waiting


async def test_backoff_multiplies_each_delay_within_the_jitter() -> None:
    policy = RetryPolicy(5, 2.0, 3.0, (Exception,))
    for attempt, base in ((2, 2.0), (3, 6.0), (4, 18.0)):
        for _ in range(50):
            assert base * (1 - JITTER) <= policy.delay_before(attempt) <= base * (1 + JITTER)


async def test_thread_bodies_and_registered_types_retry_and_chain(worker: AsyncTaskWorker) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def sync_flaky(n: int) -> int:
        with lock:
            calls.append(n)
            if len(calls) < 2:
                raise OSError("flaky disk")
        return n * 2

    @task("double-it")
    def double(n: int) -> int:
        return n * 2

    t1 = await worker.add_task(sync_flaky, 21, retries=2, retry_delay=0)
    t2 = await worker.add_task("double-it", 5, after=t1, retries=1)
    assert await worker.wait(t2) == 10
    assert await worker.wait(t1) == 42 and len(calls) == 2
    info = worker.get_task_info(t2)
    assert info is not None and info.depends_on == (t1,) and info.max_attempts == 2


async def test_join_waits_for_dependents_and_retries(worker: AsyncTaskWorker) -> None:
    gate, gated = _gated()
    a = await worker.add_task(gated)
    b = await worker.add_task(Flaky(1), after=a, retries=1, retry_delay=0)
    joined = asyncio.ensure_future(worker.join())
    await next_dispatch()
    assert not joined.done()
    gate.set()
    await asyncio.wait_for(joined, 30)
    assert worker.get_task_info(b).status is COMPLETED  # type: ignore[union-attr]


async def test_stop_cancels_waiting_and_delayed_tasks(worker: AsyncTaskWorker) -> None:
    rec = Recorder(worker)
    gate, gated = _gated()
    a = await worker.add_task(gated)
    b = await worker.add_task(_value, 1, after=a)
    b2 = await worker.add_task(_value, 2, after=b)
    c = await worker.add_task(Flaky(1), retries=1, retry_delay=30)
    await wait_until(worker, lambda: worker.get_task_info(c).waiting_for == "retry delay")  # type: ignore[union-attr]
    handle = worker._table.get(c).timer  # type: ignore[union-attr]
    await worker.stop(timeout=0)
    assert worker.get_task_info(b).error == "cancelled: the worker stopped before it started"  # type: ignore[union-attr]
    assert worker.get_task_info(b2).error == "cancelled: the worker stopped before it started"  # type: ignore[union-attr]
    assert worker.get_task_info(c).error == "cancelled: the worker stopped during its retry delay"  # type: ignore[union-attr]
    assert handle is not None and handle.cancelled()
    for t in (a, b, b2, c):
        assert worker.get_task_info(t).done  # type: ignore[union-attr]
        assert rec.kinds(t).count(EventKind.FINISHED) == 1
    gate.set()


async def test_chain_options_are_not_passed_to_the_task_function(worker: AsyncTaskWorker) -> None:
    async def takes(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    first = await worker.add_task(takes, x=1)
    assert await worker.wait(first) == {"x": 1}
    second = worker.add_task_nowait(takes, y=2, after=first, retries=1, retry_delay=0, retry_backoff=1,
                                    retry_on=ValueError)
    assert await worker.wait(second) == {"y": 2}
    info = worker.get_task_info(second)
    assert info is not None and info.depends_on == (first,) and info.max_attempts == 2
