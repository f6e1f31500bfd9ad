"""Throughput, latency, memory and query cost of AsyncTaskWorker, against raw-asyncio floors and peers.

Run: ``python benchmarks/bench_worker.py`` (``--quick`` for N = 10,000 only, one process;
``--no-peers`` for task_worker and the floors only).

Each measurement runs in ``--processes`` fresh processes (3 by default); the
tables show the median. Within one process everything runs on one loop, back
to back, so the ratios hold on a noisy machine: a row's time divided by the
time of the ``asyncio.gather`` + ``Semaphore(10)`` floor measured in the same
process (<= 1.0 means at least as fast as the floor); the table shows the
median of those per-process ratios.

Peers, measured in the same processes when installed (``pip install
"task_worker[bench]"``), skipped with a note otherwise:

* aiojobs ``Scheduler(limit=10)``: ``spawn`` each coroutine, then
  ``wait_and_close()``. It has no progress, no history and no ids, so it has
  no "with progress" row and keeps no finished records.
* async-task-worker 0.4.4 ``AsyncTaskWorker(max_workers=10)`` (the project
  this one's API follows): ``add_task`` each function, then wait until the
  last body ran (a counter in the body: its ``wait_for_tasks`` costs more
  than the tasks). Progress goes through its ``progress_callback`` argument.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import importlib.metadata
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from task_worker import AsyncTaskWorker, TaskStatus, report_progress

CONCURRENCY = 10


async def noop() -> None:
    return None


async def noop_progress() -> None:
    report_progress(0.5)


# ------------------------------------------------------------------ floors
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


async def floor_task_per_job(n: int) -> float:
    """The design's own floor: a heap of jobs, each started in an asyncio Task of its
    own (eagerly on Python 3.12+, as the worker does), at most 10 at once, the next
    one started by the one that finishes. No records, ids, contexts or history."""
    loop = asyncio.get_running_loop()
    heap: list[int] = []
    done = loop.create_future()
    running = finished = 0
    starting = False
    eager = sys.version_info >= (3, 12)
    make: Any = asyncio.Task

    async def job() -> None:
        nonlocal running, finished
        await noop()
        running -= 1
        finished += 1
        if finished == n:
            done.set_result(None)
        elif not starting:
            start()

    def start() -> None:
        nonlocal running, starting
        starting = True
        try:
            while running < CONCURRENCY and heap:
                heapq.heappop(heap)
                running += 1
                if eager:
                    make(job(), loop=loop, eager_start=True)
                else:
                    loop.create_task(job())  # noqa: RUF006 - the loop holds it until it ran
        finally:
            starting = False

    t0 = time.perf_counter()
    for i in range(n):
        heapq.heappush(heap, i)
    loop.call_soon(start)
    await done
    return time.perf_counter() - t0


# ------------------------------------------------------------------ task_worker
async def worker_run(n: int, func: Callable[[], Awaitable[None]]) -> float:
    async with AsyncTaskWorker(max_workers=CONCURRENCY, max_history=n) as w:
        t0 = time.perf_counter()
        for _ in range(n):
            await w.add_task(func)
        await w.join()
        elapsed = time.perf_counter() - t0
    return elapsed


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
    """``await add_task(body, t0)`` on an idle worker to the first line of ``body``."""
    out: list[float] = []
    async with AsyncTaskWorker(max_workers=CONCURRENCY) as w:
        async def body(t0: float) -> None:
            out.append(time.perf_counter() - t0)

        for _ in range(100):  # warm-up
            await w.wait(await w.add_task(body, time.perf_counter()))
        out.clear()
        for _ in range(samples):
            await w.wait(await w.add_task(body, time.perf_counter()))
    return _p50_p99(out)


def _p50_p99(out: list[float]) -> tuple[float, float]:
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

    async def uneven(i: int) -> None:
        for _ in range(i % 3):
            await asyncio.sleep(0)

    async with AsyncTaskWorker(max_workers=CONCURRENCY, max_history=n) as w:
        # Tasks that finish out of creation order: the listing has to sort.
        for i in range(n):
            w.add_task_nowait(uneven, i)
        await w.join()
        best = min(_time(lambda: w.get_all_tasks(status=TaskStatus.COMPLETED)) for _ in range(5))
        count = len(w.get_all_tasks(status=TaskStatus.COMPLETED))
        rows.append((f"get_all_tasks(status=COMPLETED), finished out of creation order "
                     f"({count:,} returned)", best))
    return rows


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ peers
class Peer:
    """A comparable library, measured the same way (see the module docstring)."""

    name = ""
    dist = ""
    submit = ""  # how a task is handed over, for the latency row
    has_progress = False
    keeps_history = False

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    async def run(self, n: int, progress: bool) -> float:
        raise NotImplementedError

    async def start_latency(self, samples: int) -> tuple[float, float]:
        raise NotImplementedError

    async def memory_per_pending(self, n: int) -> float:
        raise NotImplementedError

    async def memory_per_finished(self, n: int) -> float:
        raise NotImplementedError


class Aiojobs(Peer):
    name = "aiojobs `Scheduler(limit=10)`"
    dist = "aiojobs"
    submit = "spawn(f())"

    async def run(self, n: int, progress: bool) -> float:
        import aiojobs

        scheduler = aiojobs.Scheduler(limit=CONCURRENCY, pending_limit=n, wait_timeout=None)
        t0 = time.perf_counter()
        for _ in range(n):
            await scheduler.spawn(noop())
        await scheduler.wait_and_close()
        return time.perf_counter() - t0

    async def start_latency(self, samples: int) -> tuple[float, float]:
        import aiojobs

        out: list[float] = []

        async def body(t0: float) -> None:
            out.append(time.perf_counter() - t0)

        async with aiojobs.Scheduler(limit=CONCURRENCY) as scheduler:
            for _ in range(100):  # warm-up
                await (await scheduler.spawn(body(time.perf_counter()))).wait()
            out.clear()
            for _ in range(samples):
                await (await scheduler.spawn(body(time.perf_counter()))).wait()
        return _p50_p99(out)

    async def memory_per_pending(self, n: int) -> float:
        import aiojobs

        gate = asyncio.Event()
        scheduler = aiojobs.Scheduler(limit=1, pending_limit=n + 1, wait_timeout=None)
        await scheduler.spawn(gate.wait())
        await asyncio.sleep(0)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            await scheduler.spawn(noop())
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        gate.set()
        await scheduler.wait_and_close()
        return used / n


class AsyncTaskWorker044(Peer):
    name = "async-task-worker 0.4.4 `AsyncTaskWorker(max_workers=10)`"
    dist = "async-task-worker"
    submit = "add_task(f)"
    has_progress = True
    keeps_history = True

    def version(self) -> str | None:
        v = super().version()
        return v if v == "0.4.4" else None  # the version the tables name

    @staticmethod
    def _worker(max_workers: int = CONCURRENCY) -> Any:
        from async_task_worker import AsyncTaskWorker as Peer044

        return Peer044(max_workers=max_workers)

    async def run(self, n: int, progress: bool) -> float:
        done = asyncio.Event()
        count = 0

        async def body() -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        async def body_progress(progress_callback: Callable[[float], None]) -> None:
            nonlocal count
            progress_callback(0.5)
            count += 1
            if count == n:
                done.set()

        w = self._worker()
        await w.start()
        try:
            func = body_progress if progress else body
            t0 = time.perf_counter()
            for _ in range(n):
                await w.add_task(func)
            await done.wait()
            return time.perf_counter() - t0
        finally:
            await w.stop()

    async def start_latency(self, samples: int) -> tuple[float, float]:
        out: list[float] = []

        async def body(t0: float) -> None:
            out.append(time.perf_counter() - t0)

        w = self._worker()
        await w.start()
        try:
            for _ in range(100):  # warm-up
                await w.get_task_future(await w.add_task(body, time.perf_counter()))
            out.clear()
            for _ in range(samples):
                await (await w.get_task_future(await w.add_task(body, time.perf_counter())))
        finally:
            await w.stop()
        return _p50_p99(out)

    async def memory_per_pending(self, n: int) -> float:
        gate, started = asyncio.Event(), asyncio.Event()

        async def blocker() -> None:
            started.set()
            await gate.wait()

        w = self._worker(max_workers=1)
        await w.start()
        try:
            await w.add_task(blocker)
            await started.wait()
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                await w.add_task(noop)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            gate.set()
        finally:
            await w.stop(timeout=1)
        return used / n

    async def memory_per_finished(self, n: int) -> float:
        done = asyncio.Event()
        count = 0

        async def body() -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        w = self._worker()
        await w.start()
        try:
            await w.get_task_future(await w.add_task(noop))  # warm caches
            w.tasks.clear()
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                await w.add_task(body)
            await done.wait()
            for _ in range(3):
                await asyncio.sleep(0)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
        finally:
            await w.stop()
        return used / n


PEERS: tuple[Peer, ...] = (Aiojobs(), AsyncTaskWorker044())


def available_peers() -> tuple[list[Peer], list[str]]:
    """The peers installed, and a note for each one that is not."""
    found, notes = [], []
    for peer in PEERS:
        if peer.version() is None:
            notes.append(f"{peer.dist} {'0.4.4 ' if peer.dist == 'async-task-worker' else ''}is not "
                         f"installed: skipped (pip install \"task_worker[bench]\")")
        elif peer.dist == "async-task-worker" and sys.version_info < (3, 11):
            notes.append("async-task-worker 0.4.4 needs Python 3.11+ (asyncio.timeout): skipped")
        else:
            found.append(peer)
    return found, notes


# ------------------------------------------------------------------ one process
async def measure(sizes: list[int], repeat: int, with_peers: bool = True) -> dict[str, Any]:
    """Everything, in this process: what one child prints as JSON."""
    peers = available_peers()[0] if with_peers else []
    out: dict[str, Any] = {"python": sys.version.split()[0], "throughput": {}, "values": {}}

    async def best(make: Callable[[], Awaitable[float]]) -> float:
        times = []
        for _ in range(repeat):
            gc.collect()
            times.append(await make())
        return min(times)

    # One small untimed round of everything first: imports, caches and the
    # interpreter's specialisation are then warm for every row alike.
    await floor_gather(1000)
    await floor_priority_queue(1000)
    await floor_task_per_job(1000)
    await worker_run(1000, noop)
    await worker_run(1000, noop_progress)
    for peer in peers:
        await peer.run(1000, False)
    for n in sizes:
        rows: list[tuple[str, float]] = [
            ("floor: gather + Semaphore(10)", await best(partial(floor_gather, n))),
            ("floor: PriorityQueue + 10 consumers", await best(partial(floor_priority_queue, n))),
            ("floor: heap + one Task per job, 10 at once", await best(partial(floor_task_per_job, n))),
            ("task_worker `AsyncTaskWorker(max_workers=10)`", await best(partial(worker_run, n, noop))),
            ("the same, `report_progress` in each task", await best(partial(worker_run, n, noop_progress))),
        ]
        for peer in peers:
            rows.append((peer.name, await best(partial(peer.run, n, False))))
            if peer.has_progress:
                rows.append((f"the same, progress in each task ({peer.dist})",
                             await best(partial(peer.run, n, True))))
        out["throughput"][str(n)] = rows

    n = max(sizes)
    values: dict[str, tuple[float, str]] = out["values"]
    values[f"task_worker: bytes per pending task (N = {n:,}, tracemalloc)"] = (
        await memory_per_pending(n), "B")
    values[f"task_worker: bytes kept per finished record (N = {n:,})"] = (await memory_per_finished(n), "B")
    p50, p99 = await start_latency(1000)
    values["task_worker: `await add_task(f)` to the first line of `f`, idle worker, p50"] = (p50 * 1e6, "us")
    values["task_worker: the same, p99"] = (p99 * 1e6, "us")
    for label, t in await query_cost(n):
        values[f"task_worker: {label}"] = (t * 1e3, "ms")
    for peer in peers:
        values[f"{peer.dist}: bytes per pending task (N = {n:,}, tracemalloc)"] = (
            await peer.memory_per_pending(n), "B")
        if peer.keeps_history:
            values[f"{peer.dist}: bytes kept per finished record (N = {n:,})"] = (
                await peer.memory_per_finished(n), "B")
        p50, p99 = await peer.start_latency(1000)
        values[f"{peer.dist}: `await` {peer.submit} to the first line of `f`, idle, p50"] = (p50 * 1e6, "us")
        values[f"{peer.dist}: the same, p99"] = (p99 * 1e6, "us")
    return out


# ------------------------------------------------------------------ report
def report(runs: list[dict[str, Any]], sizes: list[int], with_peers: bool = True) -> None:
    notes = available_peers()[1] if with_peers else ["peers not measured (--no-peers)"]
    print(f"Python {runs[0]['python']}, {sys.platform}; median of {len(runs)} fresh process(es)")
    for note in notes:
        print(f"note: {note}")
    print()
    for n in sizes:
        per_run = [dict(r["throughput"][str(n)]) for r in runs]
        labels = [label for label, _ in runs[0]["throughput"][str(n)]]
        gather = "floor: gather + Semaphore(10)"
        print(f"N = {n:,} no-op tasks, concurrency 10")
        print(f"| {'what':62} | {'time (s)':>9} | {'tasks/s':>10} | {'/ gather floor':>14} |")
        print(f"|{'-' * 64}|{'-' * 11}|{'-' * 12}|{'-' * 16}|")
        for label in labels:
            t = statistics.median(r[label] for r in per_run)
            ratio = statistics.median(r[label] / r[gather] for r in per_run)
            print(f"| {label:62} | {t:9.3f} | {n / t:10,.0f} | {ratio:14.2f} |")
        print()
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        print(f"Per-task time at N = {large:,} / at N = {small:,} (flat: 1.0)")
        print("| what | ratio |")
        print("|---|---|")
        for label, _ in runs[0]["throughput"][str(large)]:
            ratio = statistics.median(
                (dict(r["throughput"][str(large)])[label] / large)
                / (dict(r["throughput"][str(small)])[label] / small) for r in runs)
            print(f"| {label} | {ratio:.2f} |")
        print()
    print("| measurement | median |")
    print("|---|---|")
    for key, (_, unit) in runs[0]["values"].items():
        value = statistics.median(r["values"][key][0] for r in runs)
        print(f"| {key} | {value:,.3f} ms |" if unit == "ms" else f"| {key} | {value:,.0f} {unit} |")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 10,000 only, one process")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes to take the median of")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs inside a process")
    parser.add_argument("--no-peers", action="store_true", help="measure task_worker and the floors only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else [10_000] if args.quick else [10_000, 100_000])
    if args.child:
        print(json.dumps(asyncio.run(measure(sizes, args.repeat, not args.no_peers))))
        return
    processes = 1 if args.quick else args.processes
    runs = []
    for i in range(processes):
        print(f"process {i + 1} of {processes}...", file=sys.stderr, flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--sizes", ",".join(map(str, sizes)),
             "--repeat", str(args.repeat), *(["--no-peers"] if args.no_peers else [])],
            check=True, capture_output=True, text=True)
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    report(runs, sizes, not args.no_peers)


if __name__ == "__main__":
    main()
