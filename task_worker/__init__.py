"""task_worker: run work in the background of a Jupyter notebook, and watch it.

``import task_worker`` imports neither IPython nor ipywidgets nor Dask; the
extension, the dashboard and the tqdm bridge load them when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._events import EventKind, TaskEvent
from ._executors import TaskExecutor
from ._info import TaskInfo
from ._interrupt import ThreadInterrupted
from ._progress import current_task_id, report_progress
from ._registry import (
    clear_registry,
    get_all_task_types,
    get_task_function,
    register_task,
    task,
    unregister_task,
)
from ._session import get_worker, set_worker, wait
from ._status import TaskStatus
from ._worker import AsyncTaskWorker, WorkerStats

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__version__ = "0.1.0"

__all__ = (
    "AsyncTaskWorker",
    "EventKind",
    "TaskEvent",
    "TaskExecutor",
    "TaskInfo",
    "TaskInputError",
    "TaskStatus",
    "ThreadInterrupted",
    "WorkerStats",
    "clear_registry",
    "current_task_id",
    "get_all_task_types",
    "get_task_function",
    "get_worker",
    "load_ipython_extension",
    "register_task",
    "report_progress",
    "set_worker",
    "task",
    "tqdm",
    "TaskDashboard",
    "unload_ipython_extension",
    "unregister_task",
    "wait",
)

_LAZY = {
    "tqdm": ("._tqdm", "tqdm"),
    "TaskDashboard": ("._dashboard", "TaskDashboard"),
    "TaskInputError": ("._output", "TaskInputError"),
}


def __getattr__(name: str) -> Any:
    # Heavy optional pieces load on first access, keeping `import task_worker` light.
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'task_worker' has no attribute {name!r}")


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext task_worker``: register ``%%task``, ``%task`` and ``%tasks``."""
    from ._extension import load

    load(ipython)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """``%unload_ext task_worker``: stop the session worker and undo everything ``load`` did."""
    from ._extension import unload

    unload(ipython)
