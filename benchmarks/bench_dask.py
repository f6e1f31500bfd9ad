"""10,000 small tasks on a Dask LocalCluster: through ``AsyncTaskWorker`` vs plain
``client.submit`` + ``client.gather``, in the same run and on the same cluster.

    python benchmarks/bench_dask.py [--tasks 10000] [--max-workers 10000] [--rounds 2]
                                    [--client async|sync]

Prints the time of each way, per round, and the ratio of the best times
(worker / plain; the target is at most 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from distributed import Client, LocalCluster

from task_worker import AsyncTaskWorker
from task_worker._dask import DaskExecutor


def inc(x: int) -> int:
    """The small task: all cost is overhead."""
    return x + 1


async def plain(client: Client, n: int) -> float:
    """``client.submit`` each, then one ``gather``."""
    t0 = time.perf_counter()
    futures = [client.submit(inc, i, pure=False) for i in range(n)]
    if client.asynchronous:
        results = await client.gather(futures)
    else:  # a synchronous client blocks: keep the loop free
        results = await asyncio.to_thread(client.gather, futures)
    elapsed = time.perf_counter() - t0
    assert results == list(range(1, n + 1))
    return elapsed


async def through_worker(client: Client, n: int, max_workers: int) -> float:
    """``add_task`` each on a worker whose executor is the client, then ``join``."""
    # DaskExecutor(client) is what ``executor=client`` turns into.
    async with AsyncTaskWorker(max_workers=max_workers, executor=DaskExecutor(client)) as worker:
        t0 = time.perf_counter()
        ids = [worker.add_task_nowait(inc, i) for i in range(n)]
        await worker.join()
        elapsed = time.perf_counter() - t0
        results = [worker.get_task_info(i).result for i in ids]  # type: ignore[union-attr]
    assert results == list(range(1, n + 1)), "some tasks did not complete"
    return elapsed


async def main(n: int, max_workers: int, rounds: int, kind: str) -> None:
    async with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                            dashboard_address=None, host="127.0.0.1",
                            # the scheduler's HTTP server: a free port, not 8787
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                            asynchronous=True) as cluster:
        if kind == "async":
            client = await Client(cluster, asynchronous=True)
        else:
            client = await asyncio.to_thread(Client, cluster.scheduler_address)
        try:
            print(f"{n} tasks, {kind} client, max_workers={max_workers}")
            await plain(client, 100)  # warm up both workers
            best_plain = best_worker = float("inf")
            for r in range(rounds):
                tp = await plain(client, n)
                tw = await through_worker(client, n, max_workers)
                best_plain, best_worker = min(best_plain, tp), min(best_worker, tw)
                print(f"round {r + 1}: plain submit+gather {tp:6.2f} s   "
                      f"through AsyncTaskWorker {tw:6.2f} s   ratio {tw / tp:.2f}")
            print(f"best of {rounds}: plain {best_plain:.2f} s ({n / best_plain:.0f} tasks/s), "
                  f"worker {best_worker:.2f} s ({n / best_worker:.0f} tasks/s), "
                  f"ratio {best_worker / best_plain:.2f} (target <= 1.5)")
        finally:
            if kind == "async":
                await client.close()
            else:
                await asyncio.to_thread(client.close)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--max-workers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--client", choices=["async", "sync"], default="async")
    opts = parser.parse_args()
    asyncio.run(main(opts.tasks, opts.max_workers, opts.rounds, opts.client))
