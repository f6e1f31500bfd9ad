"""Property-based reliability test: random add / cancel / release / timeout / stop sequences.

Checks, for every generated sequence: each task reaches exactly one terminal
state, exactly once (counting FINISHED events); a task cancelled while pending
never starts; concurrency never exceeds max_workers; with one worker every
start picks the smallest (priority, submission order) among the waiting tasks;
after stop() nothing is pending or running and no asyncio task is left over.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from task_worker import AsyncTaskWorker, EventKind, TaskEvent, TaskStatus

KINDS = ("ok", "fail", "gate", "forever", "sync_gate", "timeout")

op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(KINDS), st.integers(-2, 2)),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("release"), st.integers(0, 40)),
    st.tuples(st.just("tick"), st.integers(1, 3)),
    st.tuples(st.just("restart"), st.just(0)),
)


@dataclass
class Model:
    max_workers: int
    running_bodies: int = 0
    peak: int = 0
    started_bodies: set[str] = field(default_factory=set)
    finished_events: dict[str, int] = field(default_factory=dict)
    pending: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (priority, seq)
    order_violations: list[str] = field(default_factory=list)
    cancelled_while_pending: set[str] = field(default_factory=set)

    def on_event(self, event: TaskEvent) -> None:
        info = event.info
        if info is None:
            return
        key = (info.priority, info[13])
        if event.kind == EventKind.ADDED:
            self.pending[info.id] = key
        elif event.kind == EventKind.STARTED:
            if self.max_workers == 1 and self.pending and key != min(self.pending.values()):
                self.order_violations.append(info.id)
            self.pending.pop(info.id, None)
        elif event.kind == EventKind.FINISHED:
            if info.id in self.pending and info.status == TaskStatus.CANCELLED:
                self.cancelled_while_pending.add(info.id)
            self.pending.pop(info.id, None)
            self.finished_events[info.id] = self.finished_events.get(info.id, 0) + 1


async def scenario(ops: list[tuple[object, ...]], max_workers: int) -> None:
    model = Model(max_workers)
    worker = AsyncTaskWorker(max_workers=max_workers, cancel_grace=0.02)
    worker.subscribe(model.on_event)
    baseline = asyncio.all_tasks()
    await worker.start()
    ids: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    tgates: dict[str, threading.Event] = {}

    lock = threading.Lock()  # sync bodies count from their worker threads
    sync_live: set[str] = set()  # sync bodies started and not yet released

    def enter(tid: str) -> None:
        with lock:
            model.started_bodies.add(tid)
            model.running_bodies += 1
            model.peak = max(model.peak, model.running_bodies + len(sync_live))

    def leave() -> None:
        with lock:
            model.running_bodies -= 1

    def enter_sync(tid: str) -> None:
        with lock:
            model.started_bodies.add(tid)
            sync_live.add(tid)
            model.peak = max(model.peak, model.running_bodies + len(sync_live))

    async def body(tid: str, kind: str) -> str:
        enter(tid)
        try:
            if kind == "fail":
                raise ValueError(tid)
            if kind == "gate":
                await gates[tid].wait()
            if kind in ("forever", "timeout"):
                await asyncio.Event().wait()
            return tid
        finally:
            leave()

    def sync_body(tid: str) -> str:
        # Waits in a C call, which a cancellation cannot interrupt: such a body
        # lives until the test releases it, whatever the worker says, and must
        # keep its slot until then (even across stop() and start()).
        enter_sync(tid)
        tgates[tid].wait()
        return tid

    for item in ops:
        name = item[0]
        if name == "add" and worker.running:
            kind, prio = item[1], item[2]
            tid = f"t{len(ids)}"
            if kind == "sync_gate":
                tgates[tid] = threading.Event()
                await worker.add_task(sync_body, tid, priority=prio, task_id=tid)
            else:
                gates[tid] = asyncio.Event()
                timeout = 0.005 if kind == "timeout" else None
                await worker.add_task(body, tid, kind, priority=prio, task_id=tid, timeout=timeout)
            ids.append(tid)
        elif name == "cancel" and ids:
            await worker.cancel_task(ids[item[1] % len(ids)])  # type: ignore[operator]
        elif name == "release" and ids:
            tid = ids[item[1] % len(ids)]  # type: ignore[operator]
            if tid in gates:
                gates[tid].set()
            else:
                with lock:
                    tgates[tid].set()
                    sync_live.discard(tid)
        elif name == "tick":
            for _ in range(item[1]):  # type: ignore[call-overload]
                await asyncio.sleep(0)
        elif name == "restart":
            await worker.stop(timeout=0.01)
            await worker.start()

    await worker.stop(timeout=0.01)
    for ev in tgates.values():
        ev.set()

    stats = worker.stats()
    assert stats.counts[TaskStatus.PENDING] == 0 and stats.counts[TaskStatus.RUNNING] == 0
    for tid in ids:
        info = worker.get_task_info(tid)
        assert info is not None and info.done, info
        assert model.finished_events.get(tid) == 1, (tid, model.finished_events.get(tid))
    assert not (model.cancelled_while_pending & model.started_bodies)
    assert model.peak <= max_workers
    assert model.order_violations == []
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - baseline == set()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=40), max_workers=st.sampled_from([1, 2, 3]))
def test_random_operation_sequences_keep_every_invariant(
    ops: list[tuple[object, ...]], max_workers: int,
) -> None:
    asyncio.run(scenario(ops, max_workers))
