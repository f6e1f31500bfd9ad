"""Where a task body runs when it does not run in this process.

The worker talks to a remote executor through one coroutine method,
``run(func, args, kwargs, report) -> result``: it is awaited inside the task's
own asyncio task, so cancellation and timeouts reach it as ``CancelledError``
(the executor must then cancel the remote work and re-raise), and ``report``
is a callable taking a progress fraction, to be called on the loop's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TaskExecutor(Protocol):
    """Runs task bodies somewhere else (for example on a Dask cluster)."""

    async def run(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        report: Callable[[float], None],
    ) -> Any: ...


def adapt_executor(executor: object) -> TaskExecutor:
    """Turn what the user passed as ``executor=`` into a ``TaskExecutor``.

    Raises:
        TypeError: it is neither a ``TaskExecutor`` nor a ``distributed.Client``.
    """
    if isinstance(executor, TaskExecutor):
        return executor
    module = type(executor).__module__ or ""
    if module.split(".")[0] == "distributed" and type(executor).__name__ == "Client":
        from ._dask import DaskExecutor  # imported only when a Client is given

        return DaskExecutor(executor)
    raise TypeError(
        f"executor must be a distributed.Client or a TaskExecutor, got {executor!r}")
