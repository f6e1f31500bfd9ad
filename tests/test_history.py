"""``TaskTable`` on its own: no worker, no event loop."""

from __future__ import annotations

import contextvars
from datetime import timedelta
from types import MappingProxyType

import pytest

from task_worker import TaskInfo, TaskStatus
from task_worker._history import TaskTable, cutoff_for
from task_worker._record import SEQ_BITS, TaskRecord

P, R, C, F, X = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.COMPLETED,
                 TaskStatus.FAILED, TaskStatus.CANCELLED)


class Owner:
    def _report(self, rec: TaskRecord, fraction: float) -> None:
        raise AssertionError("not used here")


def make(seq: int, *, priority: int = 0, created: float | None = None) -> TaskRecord:
    return TaskRecord(Owner(), f"t{seq}", "job", print, (), None, (priority << SEQ_BITS) | seq,
                      MappingProxyType({}), None, float(seq) if created is None else created,
                      contextvars.copy_context(), 0, None)


def finish(table: TaskTable, rec: TaskRecord, status: TaskStatus, at: float) -> TaskInfo:
    info = TaskInfo(rec.id, rec.name, status, 0, 1.0, None, None, None, None, rec.metadata,
                    rec.created, rec.started, at, rec.key & ((1 << SEQ_BITS) - 1))
    if table.finish(rec, info):
        table.trim()
    rec.status = status
    return info


def start(table: TaskTable, rec: TaskRecord) -> None:
    assert table.pending.pop() is rec
    rec.status = R
    table.running[rec.id] = rec


def test_counts_follow_a_task_from_pending_to_finished() -> None:
    table = TaskTable(10, lambda info: None)
    a, b = make(0), make(1)
    table.add(a)
    table.add(b)
    assert table.counts()[P] == 2 and len(table) == 2 and "t0" in table
    start(table, a)
    assert table.counts()[P] == 1 and table.counts()[R] == 1 and not table.idle
    info = finish(table, a, C, 100.0)
    assert table.get("t0") is info and table.counts()[C] == 1 and table.counts()[R] == 0
    finish(table, b, X, 101.0)  # cancelled while pending
    assert table.counts() == {P: 0, R: 0, C: 1, F: 0, X: 1} and table.idle


def test_history_is_trimmed_oldest_finished_first_and_each_drop_is_reported() -> None:
    dropped: list[str] = []
    table = TaskTable(2, lambda info: dropped.append(info.id))
    recs = [make(i) for i in range(4)]
    for r in recs:
        table.add(r)
    # Finished out of creation order, across statuses.
    finish(table, recs[2], F, 10.0)
    finish(table, recs[0], C, 11.0)
    assert dropped == []
    finish(table, recs[3], X, 12.0)
    assert dropped == ["t2"]  # the oldest *finished*, not the oldest created
    finish(table, recs[1], C, 13.0)
    assert dropped == ["t2", "t0"]
    assert [i.id for i in table.query(None, None, None)] == ["t3", "t1"]


def test_clear_drops_only_finished_before_the_cutoff() -> None:
    dropped: list[str] = []
    table = TaskTable(100, lambda info: dropped.append(info.id))
    recs = [make(i) for i in range(4)]
    for r in recs:
        table.add(r)
    finish(table, recs[0], C, 10.0)
    finish(table, recs[1], F, 20.0)
    finish(table, recs[2], X, 30.0)
    assert table.clear(cutoff=25.0) == 2 and sorted(dropped) == ["t0", "t1"]
    assert table.clear() == 1 and "t3" in table  # pending tasks stay
    assert table.counts()[P] == 1


def test_query_by_status_limit_and_cutoff_is_newest_created_first() -> None:
    table = TaskTable(100, lambda info: None)
    recs = [make(i, created=float(i)) for i in range(10)]
    for r in recs:
        table.add(r)
    for r in recs[:6]:
        start(table, r)
    for r in recs[:4]:
        finish(table, r, C if r.key % 2 else F, 50.0 - r.key)
    ids = lambda infos: [i.id for i in infos]  # noqa: E731
    assert ids(table.query(None, None, None)) == [f"t{i}" for i in range(9, -1, -1)]
    assert ids(table.query([C], None, None)) == ["t3", "t1"]
    assert ids(table.query([C, F], 3, None)) == ["t3", "t2", "t1"]
    assert ids(table.query([P, R], None, 7.0)) == ["t6", "t5", "t4"]
    assert ids(table.query([P], 1, None)) == ["t9"]
    assert table.query([C], 0, None) == []
    assert table.query([X], None, None) == []


def test_cutoff_for_validates_and_subtracts() -> None:
    assert cutoff_for(None) is None
    assert cutoff_for(timedelta(seconds=5), now=100.0) == 95.0
    with pytest.raises(TypeError, match="timedelta"):
        cutoff_for(5)  # type: ignore[arg-type]


def test_a_status_listing_is_newest_created_first_whatever_the_finishing_order() -> None:
    # One status in creation order is listed without a sort; a task finishing
    # before an older one must switch that status back to sorting, and a queue
    # emptied by clear() is in order again.
    table = TaskTable(100, lambda info: None)
    recs = [make(i) for i in range(8)]
    for r in recs:
        table.add(r)
    ids = lambda infos: [i.id for i in infos]  # noqa: E731
    for r in recs[:3]:
        finish(table, r, C, 10.0 + r.key)
    assert ids(table.query([C], None, None)) == ["t2", "t1", "t0"]
    assert ids(table.query([C], 2, None)) == ["t2", "t1"]
    finish(table, recs[5], C, 20.0)
    finish(table, recs[4], C, 21.0)  # older than the last one finished
    finish(table, recs[3], F, 22.0)  # another status keeps its own order
    assert ids(table.query([C], None, None)) == ["t5", "t4", "t2", "t1", "t0"]
    assert ids(table.query([C], None, 4.5)) == ["t4", "t2", "t1", "t0"]
    assert ids(table.query([F], None, None)) == ["t3"]
    assert table.clear() == 6
    finish(table, recs[7], C, 30.0)
    finish(table, recs[6], C, 31.0)
    assert ids(table.query([C], None, None)) == ["t7", "t6"]
