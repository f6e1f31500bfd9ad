"""``TaskTable``: every task a worker knows, by id and by status, and the bounded history."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from ._info import TaskInfo
from ._queue import PendingQueue
from ._record import TaskRecord
from ._status import TaskStatus

_PENDING = TaskStatus.PENDING
_RUNNING = TaskStatus.RUNNING
_TERMINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)



def _getter(prop: Any) -> Callable[[TaskInfo], Any]:
    return prop.fget  # type: ignore[no-any-return]


# The accessors' C-level getters, as sort and filter keys.
_seq_key = _getter(TaskInfo.seq)
_completed_key = _getter(TaskInfo.completed_ts)
_created_key = _getter(TaskInfo.created_ts)


def cutoff_for(older_than: timedelta | None, now: float | None = None) -> float | None:
    """The epoch time ``older_than`` ago (``None`` for ``None``).

    Raises:
        TypeError: ``older_than`` is not a ``datetime.timedelta``.
    """
    if older_than is None:
        return None
    if not isinstance(older_than, timedelta):
        raise TypeError(f"older_than must be a datetime.timedelta, got {older_than!r}")
    return (time.time() if now is None else now) - older_than.total_seconds()


class TaskTable:
    """Every task of one worker: pending records (``pending``, in start order;
    ``waiting``: parked pending records, waiting for their dependencies or a
    retry delay before they join the queue), running records (``running``, in
    start order) and finished snapshots (per terminal status, in finishing
    order), all also by id in creation order.

    It guards one rule: at most ``max_history`` finished tasks are kept, the
    oldest finished dropped first; ``on_drop`` hears of every dropped snapshot.
    It never touches the event loop.
    """

    __slots__ = ("_by_id", "_finished", "_n_finished", "_on_drop", "_shuffled", "_tail", "add",
                 "contains", "max_history", "pending", "running", "waiting")

    def __init__(self, max_history: int, on_drop: Callable[[TaskInfo], None]) -> None:
        self.max_history = max_history
        self._on_drop = on_drop
        #: A TaskRecord while the task is pending or running, its TaskInfo once finished.
        self._by_id: dict[str, TaskRecord | TaskInfo] = {}
        #: ``contains(task_id)``: ``task_id in table`` at the cost of a C call (``add_task``'s).
        self.contains: Callable[[object], bool] = self._by_id.__contains__
        self.pending: PendingQueue[TaskRecord] = PendingQueue(index=self._by_id)
        #: ``add(rec)``: a new pending task (its id must be new). The queue's push,
        #: which also enters it here by id.
        self.add: Callable[[TaskRecord], None] = self.pending.push
        self.running: dict[str, TaskRecord] = {}
        #: Pending records not in the start queue yet (``_chains``): by id, in parking order.
        self.waiting: dict[str, TaskRecord] = {}
        self._finished: dict[TaskStatus, deque[TaskInfo]] = {s: deque() for s in _TERMINAL}
        self._n_finished = 0
        #: Per terminal status, the ``seq`` of the last snapshot appended, and the
        #: statuses whose queue is not in creation order (a task finished before
        #: an older one): the others list newest first without a sort.
        self._tail: dict[TaskStatus, int] = {s: -1 for s in _TERMINAL}
        self._shuffled: set[TaskStatus] = set()

    # ---------------------------------------------------------------- lookup
    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    @property
    def by_id(self) -> dict[str, TaskRecord | TaskInfo]:
        """Every task by id, in creation order (read only: for ``after=`` lookups)."""
        return self._by_id

    def get(self, task_id: str) -> TaskRecord | TaskInfo | None:
        """The record of an active task, the snapshot of a finished one, or ``None``."""
        return self._by_id.get(task_id)

    def counts(self) -> dict[TaskStatus, int]:
        """How many tasks per status, in O(1)."""
        finished = self._finished
        return {
            _PENDING: len(self.pending) + len(self.waiting),
            _RUNNING: len(self.running),
            TaskStatus.COMPLETED: len(finished[TaskStatus.COMPLETED]),
            TaskStatus.FAILED: len(finished[TaskStatus.FAILED]),
            TaskStatus.CANCELLED: len(finished[TaskStatus.CANCELLED]),
        }

    @property
    def idle(self) -> bool:
        """No task is pending or running."""
        return not self.pending and not self.running and not self.waiting

    # ---------------------------------------------------------------- parking
    def park(self, rec: TaskRecord) -> None:
        """Keep ``rec`` pending outside the start queue: a new task (its id must be
        new) or a running one whose attempt failed and will be retried."""
        task_id = rec.id
        if rec.status is _RUNNING:
            del self.running[task_id]
        else:
            self._by_id[task_id] = rec
        self.waiting[task_id] = rec

    def unpark(self, rec: TaskRecord) -> None:
        """``rec`` may start now: from ``waiting`` into the start queue."""
        del self.waiting[rec.id]
        self.pending.push(rec)

    # ------------------------------------------------------------ life cycle
    def finish(self, rec: TaskRecord, info: TaskInfo) -> bool:
        """``rec`` (still in its pending or running status) ended as ``info``.

        Returns whether the history is now over ``max_history``: the caller
        then calls ``trim()`` (after announcing the finish).
        """
        task_id = rec.id
        if rec.status is _PENDING:
            if self.waiting.pop(task_id, None) is None:
                self.pending.remove(rec)
        else:
            del self.running[task_id]
        self._by_id[task_id] = info
        status = info.status
        seq = _seq_key(info)
        tail = self._tail
        if seq < tail[status]:
            self._shuffled.add(status)
        tail[status] = seq
        self._finished[status].append(info)
        n = self._n_finished = self._n_finished + 1
        return n > self.max_history

    def trim(self) -> None:
        """Drop the oldest finished snapshots until at most ``max_history`` are kept."""
        queues = list(self._finished.values())
        while self._n_finished > self.max_history:
            # The oldest finished task is at the front of one of the three queues.
            oldest = min((q for q in queues if q), key=lambda q: _completed_key(q[0]))
            self._drop(oldest.popleft())

    def clear(self, cutoff: float | None = None) -> int:
        """Drop finished snapshots (those finished before ``cutoff``, if given).
        Returns how many were dropped."""
        dropped = 0
        for queue in self._finished.values():
            # Each queue is in finishing order: the ones to drop are at its front.
            while queue and (cutoff is None or _completed_key(queue[0]) < cutoff):
                self._drop(queue.popleft())
                dropped += 1
        return dropped

    def _drop(self, info: TaskInfo) -> None:
        del self._by_id[info.id]
        self._n_finished -= 1
        status = info.status
        if not self._finished[status]:  # an empty queue is in order again
            self._shuffled.discard(status)
            self._tail[status] = -1
        self._on_drop(info)

    # --------------------------------------------------------------- queries
    def query(
        self, statuses: list[TaskStatus] | None, limit: int | None, cutoff: float | None,
    ) -> list[TaskInfo]:
        """Snapshots newest (by creation) first: of these ``statuses`` (all when
        ``None``), created before ``cutoff``, at most ``limit``.

        Costs time in proportion to what it returns (per-status indexes).
        """
        if limit == 0:
            return []
        if statuses is None:
            return _newest(reversed(self._by_id.values()), limit, cutoff)
        sizes = [self._size(s) for s in statuses]
        matches = sum(sizes)
        if matches == 0:
            return []
        if limit is not None and limit * len(self._by_id) < matches * matches:
            # Few wanted and matches are common: scanning newest-first is cheaper than sorting.
            wanted = frozenset(statuses)
            return _newest((x for x in reversed(self._by_id.values()) if x.status in wanted),
                           limit, cutoff)
        items: list[TaskInfo]
        if len(statuses) == 1 and statuses[0] in self._tail and statuses[0] not in self._shuffled:
            # Finished in creation order (the common case): no sort needed.
            items = list(self._finished[statuses[0]])
            items.reverse()
        else:
            items = []
            for s in statuses:
                items.extend(self._items(s))
            items.sort(key=_seq_key, reverse=True)
        if cutoff is not None:
            items = [i for i in items if _created_key(i) < cutoff]
        return items if limit is None else items[:limit]

    def _size(self, status: TaskStatus) -> int:
        if status is _PENDING:
            return len(self.pending) + len(self.waiting)
        if status is _RUNNING:
            return len(self.running)
        return len(self._finished[status])

    def _items(self, status: TaskStatus) -> Iterable[TaskInfo]:
        if status is _PENDING:
            return [r.snapshot() for r in (*self.pending, *self.waiting.values())]
        if status is _RUNNING:
            return [r.snapshot() for r in self.running.values()]
        return self._finished[status]


def _newest(items: Iterable[TaskRecord | TaskInfo], limit: int | None,
            cutoff: float | None) -> list[TaskInfo]:
    out: list[TaskInfo] = []
    for item in items:
        info = item.snapshot() if isinstance(item, TaskRecord) else item
        if cutoff is not None and _created_key(info) >= cutoff:
            continue
        out.append(info)
        if limit is not None and len(out) >= limit:
            break
    return out


__all__ = ["TaskTable", "cutoff_for"]
