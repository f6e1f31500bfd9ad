"""The session's default worker, shared by the Python API and the IPython extension."""

from __future__ import annotations

import asyncio
from typing import Any

from ._worker import AsyncTaskWorker

_default: AsyncTaskWorker | None = None


def get_worker() -> AsyncTaskWorker:
    """The session's worker (created on first use).

    In a running event loop (a notebook cell) it is started on that loop, so
    ``add_task`` works at once.
    """
    global _default
    if _default is None:
        _default = AsyncTaskWorker()
    if not _default.running and not _default.stopping:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return _default  # no loop here: the caller starts it (``await worker.start()``)
        _default.start_nowait()
    return _default


def set_worker(worker: AsyncTaskWorker | None) -> None:
    """Replace the session's worker (``None`` forgets it; it is not stopped)."""
    global _default
    if worker is not None and not isinstance(worker, AsyncTaskWorker):
        raise TypeError(f"set_worker() needs an AsyncTaskWorker or None, got {worker!r}")
    _default = worker


def peek_worker() -> AsyncTaskWorker | None:
    """The session's worker if one exists, without creating it."""
    return _default


def resolve_task_id(name_or_id: str, worker: AsyncTaskWorker | None = None) -> str:
    """The id of the newest task named ``name_or_id``, or, when no task has that
    name, ``name_or_id`` itself if it is a task id.

    Names come first so that a name always means the newest task with that name
    (a re-run ``%%task -n crunch`` cell, whose first run kept ``crunch`` as its
    id), and never a different task that merely has that id.

    Raises:
        KeyError: no task has that name or id.
    """
    w = worker or get_worker()
    for info in w.get_all_tasks():  # newest first
        if info.name == name_or_id:
            return info.id
    if name_or_id in w:
        return name_or_id
    raise KeyError(f"no task with name or id {name_or_id!r}")


async def wait(name_or_id: str, timeout: float | None = None) -> Any:
    """``await task_worker.wait("name")``: the result of a session task, by name (the
    newest task with that name) or by id.

    Raises what ``AsyncTaskWorker.wait`` raises.
    """
    w = get_worker()
    return await w.wait(resolve_task_id(name_or_id, w), timeout)
