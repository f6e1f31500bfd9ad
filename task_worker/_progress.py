"""Progress reporting from inside a task: ``report_progress`` and its ContextVar."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._record import TaskRecord

# Set by the worker in each task's own context; copied into threads the task
# starts through ``asyncio.to_thread`` (which copies the context).
current_record: ContextVar[TaskRecord | None] = ContextVar("task_worker_current", default=None)


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
    rec = current_record.get()
    if rec is None:
        raise RuntimeError("report_progress() was called outside a task_worker task")
    rec.owner._report(rec, check_fraction(fraction))


def current_task_id() -> str | None:
    """The id of the task whose code is running, or ``None`` outside a task."""
    rec = current_record.get()
    return None if rec is None else rec.id


__all__ = ["report_progress", "current_task_id", "check_fraction", "current_record"]
