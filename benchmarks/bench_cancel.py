"""How long ``await cancel_task(id)`` takes to end a running body, by kind of body.

    python benchmarks/bench_cancel.py [RUNS]

Each run starts one body on an idle worker (``cancel_grace`` far longer than any
run, so no figure is the grace), waits until the body is running, then times
``await worker.cancel_task(id)`` until it returns with the body ended:

* a coroutine awaiting an event (``CancelledError`` at its ``await``);
* a thread body calling ``report_progress`` in a loop (``CancelledError`` at its
  next call);
* a thread body in a pure Python loop that never reports (interrupted with
  ``ThreadInterrupted`` after ``INJECT_AFTER`` seconds of grace to stop by itself).

The floor, measured in the same run, is cancelling a bare ``asyncio`` task that
awaits an event and awaiting it; each row prints its median and p99 and the
median's ratio to the floor (for the pure loop, the floor is ``INJECT_AFTER``,
the wait it is promised).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable

from task_worker import AsyncTaskWorker, report_progress
from task_worker._interrupt import INJECT_AFTER

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 40


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def floor_once() -> float:
    event = asyncio.Event()
    started = asyncio.Event()

    async def body() -> None:
        started.set()
        await event.wait()

    task = asyncio.ensure_future(body())
    await started.wait()
    t0 = time.perf_counter()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return time.perf_counter() - t0


async def coroutine_body(started: Callable[[], None]) -> None:
    started()
    await asyncio.Event().wait()


def progress_body(started: Callable[[], None]) -> None:
    started()
    while True:
        report_progress(0.5)


def pure_loop_body(started: Callable[[], None]) -> None:
    started()
    while True:
        pass


async def cancel_once(worker: AsyncTaskWorker, body: Callable[..., object]) -> float:
    running = threading.Event()
    tid = await worker.add_task(body, running.set)
    await asyncio.to_thread(running.wait, 30)
    t0 = time.perf_counter()
    assert await worker.cancel_task(tid)
    elapsed = time.perf_counter() - t0
    info = worker.get_task_info(tid)
    assert info is not None and info.status == "cancelled" and worker.stats().busy == 0, info
    return elapsed


async def measure(runs: int, once: Callable[[], Awaitable[float]]) -> list[float]:
    return [await once() for _ in range(runs)]


async def main() -> None:
    print(f"Python {sys.version.split()[0]}, {RUNS} runs each, times in ms")
    floor = await measure(RUNS, floor_once)
    f50 = statistics.median(floor)
    f99 = _pct(floor, 0.99)
    print(f"{'floor: cancel + await a bare asyncio task':53} p50 {f50 * 1e3:7.3f}  p99 {f99 * 1e3:7.3f}")
    async with AsyncTaskWorker(max_workers=1, cancel_grace=600) as worker:
        rows: list[tuple[str, Callable[..., object], float]] = [
            ("coroutine awaiting an event", coroutine_body, f50),
            ("thread body calling report_progress", progress_body, f50),
            (f"thread body in a pure loop (floor INJECT_AFTER {INJECT_AFTER * 1e3:.0f} ms)",
             pure_loop_body, INJECT_AFTER),
        ]
        for label, body, base in rows:
            times = await measure(RUNS, lambda body=body: cancel_once(worker, body))
            m = statistics.median(times)
            print(f"{label:53} p50 {m * 1e3:7.3f}  p99 {_pct(times, 0.99) * 1e3:7.3f}  "
                  f"{m / base:6.2f}x floor")


if __name__ == "__main__":
    asyncio.run(main())
