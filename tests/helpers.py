"""Test helpers that synchronise on worker events, never on sleeps.

Import them as ``from helpers import wait_for_status`` (``tests/`` is on
``sys.path``: the rootdir ``conftest.py`` lives there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import task_worker


async def wait_until(
    worker: task_worker.AsyncTaskWorker, condition: Callable[[], bool], *, timeout: float = 30.0,
) -> None:
    """Return once ``condition()`` holds, checking it now and after each of the worker's
    events (no polling). ``timeout`` is only a safety net for a broken test."""
    if condition():
        return
    done = asyncio.get_running_loop().create_future()

    def check(_event: task_worker.TaskEvent) -> None:
        if not done.done() and condition():
            done.set_result(None)

    unsubscribe = worker.subscribe(check)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        unsubscribe()


async def wait_for_status(
    worker: task_worker.AsyncTaskWorker, task_id: str, *statuses: task_worker.TaskStatus | str,
    timeout: float = 30.0,
) -> task_worker.TaskInfo:
    """The snapshot of ``task_id`` once its status is one of ``statuses``."""
    wanted = {task_worker.TaskStatus.parse(s) for s in statuses}

    def reached() -> bool:
        info = worker.get_task_info(task_id)
        return info is not None and info.status in wanted

    await wait_until(worker, reached, timeout=timeout)
    info = worker.get_task_info(task_id)
    assert info is not None
    return info


async def wait_for_progress(
    worker: task_worker.AsyncTaskWorker, task_id: str, at_least: float, *, timeout: float = 30.0,
) -> task_worker.TaskInfo:
    """The snapshot of ``task_id`` once its progress is ``>= at_least`` (or it ended).

    At once if its current snapshot shows that; otherwise on the event that
    does, which subscribers registered before this call have then received too.
    """
    done = asyncio.get_running_loop().create_future()

    def check(event: task_worker.TaskEvent) -> None:
        info = event.info
        if not done.done() and info is not None and (info.progress >= at_least or info.done):
            done.set_result(info)

    unsubscribe = worker.subscribe(check, task_id=task_id)
    try:
        info = worker.get_task_info(task_id)
        if info is not None and (info.progress >= at_least or info.done):
            return info
        return await asyncio.wait_for(done, timeout)  # type: ignore[no-any-return]
    finally:
        unsubscribe()


async def next_dispatch() -> None:
    """Let the worker start what it can: ``add_task`` defers starting to the next
    loop turn (so that a burst starts in priority order), and one yield runs it."""
    await asyncio.sleep(0)
