"""Progress reporting from inside a task: ``report_progress`` and the current task's sink.

Whoever runs a task body sets ``current_sink`` in the body's context: the local
worker sets the task's record, the Dask executor's remote runner sets a reporter
that sends the value back to the kernel. Code the body runs (``report_progress``,
tqdm bars, output routing) only ever talks to that ``ProgressSink``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol


class ProgressSink(Protocol):
    """Where the progress of the task whose code is running goes."""

    @property
    def id(self) -> str | None:
        """The task's id (``None`` where the runner does not know it)."""
        ...

    @property
    def stop_requested(self) -> bool:
        """True once the task was asked to stop (cancelled, timed out, worker stopping)."""
        ...

    def report(self, fraction: float) -> None:
        """Record ``fraction`` (already checked and clamped to [0, 1]); any thread.

        Raises:
            asyncio.CancelledError: the task was cancelled (or timed out); the
                body should let it propagate and stop.
        """
        ...


# Set in each task body's own context; copied into threads the task starts
# through ``asyncio.to_thread`` (which copies the context).
current_sink: ContextVar[ProgressSink | None] = ContextVar("task_worker_current", default=None)


def check_fraction(fraction: Any) -> float:
    """Validate a progress value and clamp it to [0, 1]."""
    if type(fraction) is not float:
        if isinstance(fraction, bool) or not hasattr(fraction, "__float__") or isinstance(fraction, complex):
            raise TypeError(f"progress must be a real number in [0, 1], got {fraction!r}")
        try:
            fraction = float(fraction)
        except OverflowError:  # an int (or Fraction) beyond float range: clamped as documented
            return 1.0 if fraction > 0 else 0.0
    if fraction != fraction:  # NaN
        raise ValueError("progress must be a number in [0, 1], got NaN")
    if fraction < 0.0:
        return 0.0
    if fraction > 1.0:
        return 1.0
    return fraction  # type: ignore[no-any-return]


def report_progress(fraction: float) -> None:
    """Report the current task's progress as a fraction in [0, 1].

    Works from any code a task runs: its coroutine, functions it calls, sync
    task bodies in their worker thread, and threads started with
    ``asyncio.to_thread``. Values outside [0, 1] are clamped (also numbers
    beyond float range).

    Raises:
        TypeError: ``fraction`` is not a real number.
        ValueError: ``fraction`` is NaN.
        asyncio.CancelledError: the task was cancelled (or timed out); let it
            propagate so the task stops.
        RuntimeError: called outside a task.
    """
    sink = current_sink.get()
    if sink is None:
        raise RuntimeError("report_progress() was called outside a task_worker task")
    sink.report(check_fraction(fraction))


def current_task_id() -> str | None:
    """The id of the task whose code is running, or ``None`` outside a task."""
    sink = current_sink.get()
    return None if sink is None else sink.id


__all__ = ["ProgressSink", "check_fraction", "current_sink", "current_task_id", "report_progress"]
