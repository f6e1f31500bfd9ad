"""Throughput, latency, memory and query cost of AsyncTaskWorker, against raw-asyncio floors.

Run: ``python benchmarks/bench_worker.py`` (``--quick`` for N = 10,000 only).

Everything is measured in one process, on one loop, back to back, so the ratios
hold on a noisy machine: the worker's time divided by the floor's time (<= 1.0
means at least as fast as the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable

from task_worker import AsyncTaskWorker, TaskStatus, report_progress

CONCURRENCY = 10


async def noop() -> None:
    return None


async def noop_progress() -> None:
    report_progress(0.5)


async def floor_gather(n: int) -> float:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with sem:
            await noop()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


async def floor_priority_queue(n: int) -> float:
    queue: asyncio.PriorityQueue[tuple[int, int, Callable[[], Awaitable[None]] | None]] = (
        asyncio.PriorityQueue())

    async def consumer() -> None:
        while True:
            _, _, job = await queue.get()
            if job is None:
                return
            await job()

    t0 = time.perf_counter()
    consumers = [asyncio.create_task(consumer()) for _ in range(CONCURRENCY)]
    for i in range(n):
        queue.put_nowait((0, i, noop))
    for i in range(CONCURRENCY):
        queue.put_nowait((1, n + i, None))
    await asyncio.gather(*consumers)
    return time.perf_counter() - t0


async def worker_run(n: int, func: Callable[[], Awaitable[None]]) -> float:
    async with AsyncTaskWorker(max_workers=CONCURRENCY, max_history=n) as w:
        t0 = time.perf_counter()
        for _ in range(n):
            await w.add_task(func)
        await w.join()
        elapsed = time.perf_counter() - t0
    return elapsed


async def best_of(repeat: int, make: Callable[[], Awaitable[float]]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(await make())
    return min(times)


async def throughput(n: int, repeat: int) -> list[tuple[str, float]]:
    rows = []
    rows.append(("floor: gather + Semaphore(10)", await best_of(repeat, lambda: floor_gather(n))))
    rows.append(("floor: PriorityQueue + 10 consumers",
                 await best_of(repeat, lambda: floor_priority_queue(n))))
    rows.append(("AsyncTaskWorker(max_workers=10)", await best_of(repeat, lambda: worker_run(n, noop))))
    rows.append(("AsyncTaskWorker, report_progress in each task",
                 await best_of(repeat, lambda: worker_run(n, noop_progress))))
    return rows


async def memory_per_pending(n: int) -> float:
    gate = asyncio.Event()
    async with AsyncTaskWorker(max_workers=1, max_history=n + 1) as w:
        await w.add_task(gate.wait)
        await asyncio.sleep(0)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            w.add_task_nowait(noop)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        gate.set()
        await w.stop(timeout=0.1)
    return used / n


async def memory_per_finished(n: int) -> float:
    async with AsyncTaskWorker(max_workers=CONCURRENCY, max_history=n) as w:
        await w.wait(await w.add_task(noop))  # warm caches
        w.clear()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            w.add_task_nowait(noop)
        await w.join()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    return used / n


async def start_latency(samples: int) -> tuple[float, float]:
    out: list[float] = []
    async with AsyncTaskWorker(max_workers=CONCURRENCY) as w:
        async def body(t0: float) -> None:
            out.append(time.perf_counter() - t0)

        for _ in range(100):  # warm-up
            await w.wait(await w.add_task(body, time.perf_counter()))
        out.clear()
        for _ in range(samples):
            await w.wait(await w.add_task(body, time.perf_counter()))
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


async def query_cost(n: int) -> list[tuple[str, float]]:
    rows = []
    async with AsyncTaskWorker(max_workers=CONCURRENCY, max_history=n) as w:
        for _ in range(n):
            w.add_task_nowait(noop)
        await w.join()

        def timed(label: str, **kw: object) -> None:
            best = min(_time(lambda: w.get_all_tasks(**kw)) for _ in range(5))  # type: ignore[arg-type]
            count = len(w.get_all_tasks(**kw))  # type: ignore[arg-type]
            rows.append((f"{label} ({count:,} returned)", best))

        timed("get_all_tasks(status=COMPLETED)", status=TaskStatus.COMPLETED)
        timed("get_all_tasks(status=FAILED)", status=TaskStatus.FAILED)
        timed("get_all_tasks(status=COMPLETED, limit=10)", status=TaskStatus.COMPLETED, limit=10)
        timed("get_all_tasks(limit=10)", limit=10)
    return rows


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def main(sizes: list[int], repeat: int) -> None:
    print(f"Python {sys.version.split()[0]}, {sys.platform}; best of {repeat} runs\n")
    for n in sizes:
        rows = await throughput(n, repeat)
        gather_t, pq_t = rows[0][1], rows[1][1]
        print(f"N = {n:,} no-op tasks, concurrency 10")
        print(f"| {'what':46} | {'time (s)':>9} | {'tasks/s':>9} | {'/ gather':>8} | {'/ PQueue':>8} |")
        print(f"|{'-' * 48}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 10}|")
        for label, t in rows:
            print(f"| {label:46} | {t:9.3f} | {n / t:9,.0f} | {t / gather_t:8.2f} | {t / pq_t:8.2f} |")
        print()
    n = max(sizes)
    pending = await memory_per_pending(n)
    finished = await memory_per_finished(n)
    p50, p99 = await start_latency(1000)
    print("| measurement | value |")
    print("|---|---|")
    print(f"| bytes per pending task (N = {n:,}, tracemalloc) | {pending:,.0f} B |")
    print(f"| bytes kept per finished record (N = {n:,}) | {finished:,.0f} B |")
    print(f"| add_task-to-start latency, idle worker, p50 | {p50 * 1e6:,.0f} us |")
    print(f"| add_task-to-start latency, idle worker, p99 | {p99 * 1e6:,.0f} us |")
    for label, t in await query_cost(n):
        print(f"| {label} | {t * 1e3:.3f} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N = 10,000 only, one repeat")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [10_000, 100_000]
    asyncio.run(main(sizes, 1 if args.quick else 3))
