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
    if not _default.running:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and _default._state != "stopping":
            _default._start(loop)
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
    """Map a task id, or the name of the newest task with that name, to its id.

    Raises:
        KeyError: no task has that id or name.
    """
    w = worker or get_worker()
    if name_or_id in w:
        return name_or_id
    for info in w.get_all_tasks():
        if info.name == name_or_id:
            return info.id
    raise KeyError(f"no task with id or name {name_or_id!r}")


async def wait(name_or_id: str, timeout: float | None = None) -> Any:
    """``await task_worker.wait("name")``: the result of a session task (by id or name).

    Raises what ``AsyncTaskWorker.wait`` raises.
    """
    w = get_worker()
    return await w.wait(resolve_task_id(name_or_id, w), timeout)
