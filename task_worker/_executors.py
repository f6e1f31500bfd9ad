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
    # Before the protocol check: a Client has a ``run`` method too (Client.run
    # runs a function on every Dask worker), so it would pass as a TaskExecutor.
    if _is_dask_client(executor):
        from ._dask import DaskExecutor  # imported only when a Client is given

        return DaskExecutor(executor)
    if isinstance(executor, TaskExecutor):
        return executor
    raise TypeError(
        f"executor must be a distributed.Client or a TaskExecutor, got {executor!r}")


def _is_dask_client(obj: object) -> bool:
    """Whether ``obj`` is a ``distributed.Client`` (or a subclass), without importing Dask."""
    return any(
        cls.__name__ == "Client" and (cls.__module__ or "").split(".")[0] == "distributed"
        for cls in type(obj).__mro__)
