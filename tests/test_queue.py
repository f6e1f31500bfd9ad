"""``PendingQueue`` on its own: no worker, no event loop."""

from __future__ import annotations

import random

import pytest

from task_worker._queue import PendingQueue


class Rec:
    def __init__(self, key: int) -> None:
        self.key = key
        self.id = f"r{key}"

    def __repr__(self) -> str:
        return f"Rec({self.key})"


def test_pop_returns_smallest_key_first_then_none() -> None:
    q: PendingQueue[Rec] = PendingQueue()
    recs = [Rec(k) for k in (5, 1, 3)]
    for r in recs:
        q.push(r)
    assert len(q) == 3 and q
    assert [q.pop(), q.pop(), q.pop()] == [recs[1], recs[2], recs[0]]
    assert q.pop() is None and not q


def test_removed_records_are_never_popped_or_peeked() -> None:
    q: PendingQueue[Rec] = PendingQueue()
    recs = [Rec(k) for k in range(10)]
    for r in recs:
        q.push(r)
    q.remove(recs[0])
    q.remove(recs[4])
    assert len(q) == 8
    assert q.peek() == [r for r in recs if r.key not in (0, 4)]
    assert q.peek(limit=2) == [recs[1], recs[2]]
    popped = []
    while (r := q.pop()) is not None:
        popped.append(r)
    assert popped == [r for r in recs if r.key not in (0, 4)]
    with pytest.raises(KeyError):
        q.remove(recs[4])


def test_push_enters_each_record_in_the_index_by_id() -> None:
    index: dict[str, Rec] = {}
    q: PendingQueue[Rec] = PendingQueue(index=index)
    a, b = Rec(2), Rec(1)
    q.push(a)
    q.push(b)
    assert index == {"r2": a, "r1": b}
    assert q.pop() is b and index == {"r2": a, "r1": b}  # the index's owner removes entries


def test_iteration_is_in_insertion_order_not_start_order() -> None:
    q: PendingQueue[Rec] = PendingQueue()
    recs = [Rec(k) for k in (9, 2, 7)]
    for r in recs:
        q.push(r)
    assert list(q) == recs


def test_peek_with_limit_matches_a_full_sort_whatever_was_removed() -> None:
    rng = random.Random(7)
    q: PendingQueue[Rec] = PendingQueue()
    recs = [Rec(k) for k in rng.sample(range(10_000), 500)]
    for r in recs:
        q.push(r)
    for r in rng.sample(recs, 200):
        q.remove(r)
    full = q.peek()
    assert [r.key for r in full] == sorted(r.key for r in full)
    for limit in (0, 1, 7, 300, 1000):
        assert q.peek(limit=limit) == full[:limit]


def test_stale_entries_are_compacted_once_they_are_the_majority() -> None:
    q: PendingQueue[Rec] = PendingQueue()
    recs = [Rec(k) for k in range(3 * PendingQueue.COMPACT_AFTER)]
    for r in recs:
        q.push(r)
    for r in recs[: PendingQueue.COMPACT_AFTER]:
        q.remove(r)  # stale, but not yet over the threshold
    assert q.heap_size == len(recs)
    for r in recs[PendingQueue.COMPACT_AFTER: 2 * PendingQueue.COMPACT_AFTER]:
        q.remove(r)
    # Compacted when the stale keys became more than half of the heap.
    assert q.heap_size < len(recs)
    assert q.heap_size <= 2 * len(q)
    assert q.peek() == recs[2 * PendingQueue.COMPACT_AFTER:]


def test_clear_returns_the_pending_records_and_forgets_stale_keys() -> None:
    q: PendingQueue[Rec] = PendingQueue()
    recs = [Rec(k) for k in range(4)]
    for r in recs:
        q.push(r)
    q.remove(recs[1])
    assert q.clear() == [recs[0], recs[2], recs[3]]
    assert len(q) == 0 and q.heap_size == 0 and q.pop() is None


def test_a_drained_queue_lets_go_of_the_memory_a_burst_grew() -> None:
    import tracemalloc

    index: dict[str, object] = {}  # the task table's by-id dict: it keeps its entries
    q: PendingQueue[Rec] = PendingQueue(index)
    recs = [Rec(k) for k in range(20_000)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for r in recs:
            q.push(r)
        assert tracemalloc.get_traced_memory()[0] - base > 20_000 * 20  # the burst's tables
        while q.pop() is not None:
            pass
        index.clear()  # frees its table: what is left is the queue's
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert kept < 10_000  # not the ~1.4 MB of the by-key dict a burst of 20,000 grew
    q.push(recs[0])  # and it works on
    assert q.pop() is recs[0] and q.pop() is None
