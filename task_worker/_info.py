"""``TaskInfo``: an immutable snapshot of one task."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

from ._status import TaskStatus

_tuple_new = tuple.__new__


def _aware(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


class TaskInfo(tuple):  # type: ignore[type-arg]
    """A frozen snapshot of a task's state.

    Returned by ``get_task_info`` / ``get_all_tasks`` and carried by events. It
    never changes after it was taken: ask the worker again for fresher state.
    Holding one cannot corrupt the worker (``metadata`` is a read-only mapping).

    A tuple underneath (like a named tuple) so that a finished task's record
    *is* its snapshot: cheap to keep by the ten thousand and free to hand out.
    Layout (the dashboard reads it positionally): 0 id, 1 name, 2 status,
    3 priority, 4 progress, 5 result, 6 error, 7 exception, 8 traceback,
    9 metadata, 10 created, 11 started, 12 completed (epoch seconds), 13 seq
    (creation order).
    """

    __slots__ = ()

    def __new__(
        cls,
        id: str,
        name: str,
        status: TaskStatus,
        priority: int,
        progress: float,
        result: Any,
        error: str | None,
        exception: BaseException | None,
        traceback: str | None,
        metadata: Mapping[str, Any],
        created: float,
        started: float | None,
        completed: float | None,
        seq: int,
    ) -> TaskInfo:
        return _tuple_new(
            cls,
            (id, name, status, priority, progress, result, error, exception, traceback,
             metadata, created, started, completed, seq),
        )

    # Positional layout; the worker builds snapshots with ``_make`` for speed.
    @classmethod
    def _make(cls, values: tuple[Any, ...]) -> TaskInfo:
        return _tuple_new(cls, values)

    @property
    def id(self) -> str:
        """The task id (generated unless given to ``add_task``)."""
        return self[0]  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        """The registered task type, or the function's name."""
        return self[1]  # type: ignore[no-any-return]

    @property
    def status(self) -> TaskStatus:
        """The task's ``TaskStatus`` when the snapshot was taken."""
        return self[2]  # type: ignore[no-any-return]

    @property
    def priority(self) -> int:
        """Lower numbers run first."""
        return self[3]  # type: ignore[no-any-return]

    @property
    def progress(self) -> float:
        """Fraction done, in [0, 1]; 1.0 once completed."""
        return self[4]  # type: ignore[no-any-return]

    @property
    def result(self) -> Any:
        """The return value of a completed task, else ``None``."""
        return self[5]

    @property
    def error(self) -> str | None:
        """A message for a failed or cancelled task (``"timed out after N s"`` on timeout)."""
        return self[6]  # type: ignore[no-any-return]

    @property
    def exception(self) -> BaseException | None:
        """The exception a failed task raised (``TimeoutError`` on timeout)."""
        return self[7]  # type: ignore[no-any-return]

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of a failed task."""
        return self[8]  # type: ignore[no-any-return]

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Read-only view of the metadata given to ``add_task``."""
        return self[9]  # type: ignore[no-any-return]

    # The raw values behind the datetimes, and the creation order: C-level
    # getters, as cheap as indexing, for views and the worker's own hot paths.
    created_ts = property(itemgetter(10), doc="When ``add_task`` accepted the task (epoch seconds).")
    started_ts = property(itemgetter(11), doc="When it started running (epoch seconds), or ``None``.")
    completed_ts = property(itemgetter(12), doc="When it finished (epoch seconds), or ``None``.")
    seq = property(itemgetter(13), doc="Creation order within its worker (increasing).")

    @property
    def created_at(self) -> datetime:
        """When ``add_task`` accepted the task (timezone-aware, UTC)."""
        return datetime.fromtimestamp(self[10], timezone.utc)

    @property
    def started_at(self) -> datetime | None:
        """When the task started running (timezone-aware), or ``None``."""
        return _aware(self[11])

    @property
    def completed_at(self) -> datetime | None:
        """When the task reached its terminal state (timezone-aware), or ``None``."""
        return _aware(self[12])

    @property
    def elapsed(self) -> float | None:
        """Seconds run so far (until now for a running task), or ``None`` if it never started."""
        started = self[11]
        if started is None:
            return None
        end = self[12]
        return float((time.time() if end is None else end) - started)

    @property
    def done(self) -> bool:
        """True once the task is completed, failed or cancelled."""
        return self[2].done  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        extra = f", error={self[6]!r}" if self[6] else ""
        return (
            f"TaskInfo(id={self[0]!r}, name={self[1]!r}, status={self[2].value!r}, "
            f"priority={self[3]}, progress={self[4]:.3g}{extra})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskInfo._make, (tuple(self),))

    def __copy__(self) -> TaskInfo:
        return self

    def __deepcopy__(self, memo: object) -> TaskInfo:
        return self

