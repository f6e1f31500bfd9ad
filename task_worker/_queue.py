"""``PendingQueue``: the worker's pending tasks, in the order they will start."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar


class _Keyed(Protocol):
    #: ``priority << SEQ_BITS | seq``: smaller starts first; unique per worker.
    key: int
    id: str


R = TypeVar("R", bound=_Keyed)


class PendingQueue(Generic[R]):
    """Records waiting to start, smallest ``key`` first (``key`` encodes priority, then
    submission order).

    A heap of plain int keys (cheap to compare, invisible to the garbage
    collector) beside a dict of the records by key, in insertion order. Removing
    a record (a cancelled pending task) leaves its key in the heap as a stale
    entry, skipped when popped; once stale keys are many and the majority, the
    heap is rebuilt without them, so its size stays within twice the live count.

    ``index``, if given, is a dict that ``push`` also enters each record in, by
    its ``id`` (the task table's: one call per new task instead of two).
    """

    __slots__ = ("_heap", "_index", "_records", "_stale")

    #: Stale keys tolerated before a compaction is considered.
    COMPACT_AFTER = 1024

    def __init__(self, index: dict[str, Any] | None = None) -> None:
        self._heap: list[int] = []
        self._records: dict[int, R] = {}
        self._index: dict[str, Any] = {} if index is None else index
        self._stale = 0

    def __len__(self) -> int:
        """How many records are pending (stale heap entries excluded)."""
        return len(self._records)

    def __bool__(self) -> bool:
        return bool(self._records)

    def __iter__(self) -> Iterator[R]:
        """The pending records in insertion order (not start order)."""
        return iter(self._records.values())

    @property
    def heap_size(self) -> int:
        """Keys in the heap, stale ones included (for tests of compaction)."""
        return len(self._heap)

    def push(self, rec: R) -> None:
        """Queue ``rec`` (its ``key`` must be new) and enter it in ``index``."""
        key = rec.key
        self._records[key] = rec
        self._index[rec.id] = rec
        heapq.heappush(self._heap, key)

    def pop(self) -> R | None:
        """Remove and return the record to start next, or ``None`` when none is pending."""
        heap = self._heap
        records = self._records
        while heap:
            rec = records.pop(heapq.heappop(heap), None)
            if rec is not None:
                return rec
            self._stale -= 1
        # Drained: a dict never shrinks, so let go of the table a burst grew
        # (52 B per task of a 100,000-task burst, kept for as long as the worker).
        self._records = {}
        return None

    def remove(self, rec: R) -> None:
        """Take a pending ``rec`` out of the queue.

        Raises:
            KeyError: ``rec`` is not pending here.
        """
        del self._records[rec.key]
        self._stale += 1
        if self._stale > self.COMPACT_AFTER and self._stale * 2 > len(self._heap):
            self._compact()

    def _compact(self) -> None:
        records = self._records
        self._heap = [k for k in self._heap if k in records]
        heapq.heapify(self._heap)
        self._stale = 0

    def peek(self, limit: int | None = None) -> list[R]:
        """The pending records in start order, at most ``limit`` of them, without removing any.

        Costs O(n log n) for all of them, O((limit + stale) log n) with a limit.
        """
        records = self._records
        if limit is None:
            return [records[k] for k in sorted(records)]
        # Walk the heap lazily, smallest first.
        heap = self._heap
        size = len(heap)
        out: list[R] = []
        frontier = [(heap[0], 0)] if heap else []
        while frontier and len(out) < limit:
            key, i = heapq.heappop(frontier)
            rec = records.get(key)
            if rec is not None:
                out.append(rec)
            for child in (2 * i + 1, 2 * i + 2):
                if child < size:
                    heapq.heappush(frontier, (heap[child], child))
        return out

    def clear(self) -> list[R]:
        """Empty the queue; returns the records that were pending, in insertion order."""
        out = list(self._records.values())
        self._records.clear()
        self._heap.clear()
        self._stale = 0
        return out


__all__ = ["PendingQueue"]
