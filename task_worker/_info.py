"""``TaskInfo``: an immutable snapshot of one task."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._status import TaskStatus

if TYPE_CHECKING:
    from ._chains import ChainInfo

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
    Read its fields by name (``info.status``, ``info.completed_ts``): the
    accessors cost what indexing costs. The order of the fields is the
    constructor's and is private to this module.
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
        chain: ChainInfo | None = None,
    ) -> TaskInfo:
        return _tuple_new(
            cls,
            (id, name, status, priority, progress, result, error, exception, traceback,
             metadata, created, started, completed, seq, chain),
        )

    @classmethod
    def _make(cls, values: tuple[Any, ...]) -> TaskInfo:
        return _tuple_new(cls, values)

    # Fields by name: C-level ``itemgetter`` properties, as cheap as indexing,
    # so that no code (worker, views, tests) ever indexes a snapshot by position.
    # Type checkers see the typed properties below.
    if TYPE_CHECKING:
        @property
        def id(self) -> str:
            """The task id (generated unless given to ``add_task``)."""

        @property
        def name(self) -> str:
            """The registered task type, or the function's name."""

        @property
        def status(self) -> TaskStatus:
            """The task's ``TaskStatus`` when the snapshot was taken."""

        @property
        def priority(self) -> int:
            """Lower numbers run first."""

        @property
        def progress(self) -> float:
            """Fraction done, in [0, 1]; 1.0 once completed."""

        @property
        def result(self) -> Any:
            """The return value of a completed task, else ``None``."""

        @property
        def error(self) -> str | None:
            """A message for a failed or cancelled task (``"timed out after N s"`` on timeout)."""

        @property
        def exception(self) -> BaseException | None:
            """The exception a failed task raised (``TimeoutError`` on timeout)."""

        @property
        def traceback(self) -> str | None:
            """The formatted traceback of a failed task."""

        @property
        def metadata(self) -> Mapping[str, Any]:
            """Read-only view of the metadata given to ``add_task``."""

        @property
        def created_ts(self) -> float:
            """When ``add_task`` accepted the task (epoch seconds)."""

        @property
        def started_ts(self) -> float | None:
            """When it started running (epoch seconds), or ``None``."""

        @property
        def completed_ts(self) -> float | None:
            """When it finished (epoch seconds), or ``None``."""

        @property
        def seq(self) -> int:
            """Creation order within its worker (increasing)."""

        @property
        def chain(self) -> ChainInfo | None:
            """``after=`` / ``retries=`` state (``None`` for a plain task); read it
            through ``attempt``, ``max_attempts``, ``depends_on``, ``waiting_for``,
            ``attempt_errors`` and ``retry_at``."""
    else:
        id = property(itemgetter(0), doc='The task id (generated unless given to ``add_task``).')
        name = property(itemgetter(1), doc="The registered task type, or the function's name.")
        status = property(itemgetter(2), doc="The task's ``TaskStatus`` when the snapshot was taken.")
        priority = property(itemgetter(3), doc='Lower numbers run first.')
        progress = property(itemgetter(4), doc='Fraction done, in [0, 1]; 1.0 once completed.')
        result = property(itemgetter(5), doc='The return value of a completed task, else ``None``.')
        error = property(itemgetter(6), doc=(
            'A message for a failed or cancelled task (``"timed out after N s"`` on timeout).'))
        exception = property(itemgetter(7), doc=(
            "The exception a failed task raised (``TimeoutError`` on timeout)."))
        traceback = property(itemgetter(8), doc='The formatted traceback of a failed task.')
        metadata = property(itemgetter(9), doc='Read-only view of the metadata given to ``add_task``.')
        created_ts = property(itemgetter(10), doc='When ``add_task`` accepted the task (epoch seconds).')
        started_ts = property(itemgetter(11), doc='When it started running (epoch seconds), or ``None``.')
        completed_ts = property(itemgetter(12), doc='When it finished (epoch seconds), or ``None``.')
        seq = property(itemgetter(13), doc='Creation order within its worker (increasing).')
        chain = property(itemgetter(14), doc=(
            "``after=`` / ``retries=`` state (``None`` for a plain task); read it through "
            "``attempt``, ``max_attempts``, ``depends_on``, ``waiting_for``, ``attempt_errors`` "
            "and ``retry_at``."))

    # ------------------------------------------------- chains (after=, retries=)
    @property
    def attempt(self) -> int:
        """The attempt running now, or about to run after a retry delay, or the last
        one made (1-based; 1 for a task without ``retries``)."""
        chain = self.chain
        return 1 if chain is None else chain.attempt

    @property
    def max_attempts(self) -> int:
        """``retries + 1`` (1 for a task without ``retries``)."""
        chain = self.chain
        return 1 if chain is None else chain.max_attempts

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Ids of the tasks given to ``after=`` (empty for a task without dependencies)."""
        chain = self.chain
        return () if chain is None else chain.depends_on

    @property
    def waiting_for(self) -> str | None:
        """What a pending task waits for besides a free slot, in words: its unfinished
        dependencies by name (``"load, clean"``), or ``"retry delay"`` between attempts
        (see ``retry_at``). ``None`` when it waits for nothing (or is not pending)."""
        chain = self.chain
        return None if chain is None else chain.waiting_for

    @property
    def retry_at(self) -> float | None:
        """During a retry delay, when the next attempt becomes eligible (epoch seconds)."""
        chain = self.chain
        return None if chain is None else chain.retry_at

    @property
    def attempt_errors(self) -> tuple[str, ...]:
        """The error message of every failed attempt, oldest first: a task that failed
        after three attempts has three. Empty while no attempt failed."""
        chain = self.chain
        if chain is not None:
            return chain.attempt_errors
        error = self.error
        return (error,) if error is not None and self.status is TaskStatus.FAILED else ()

    @property
    def created_at(self) -> datetime:
        """When ``add_task`` accepted the task (timezone-aware, UTC)."""
        return datetime.fromtimestamp(self.created_ts, timezone.utc)

    @property
    def started_at(self) -> datetime | None:
        """When the task started running (timezone-aware), or ``None``."""
        return _aware(self.started_ts)

    @property
    def completed_at(self) -> datetime | None:
        """When the task reached its terminal state (timezone-aware), or ``None``."""
        return _aware(self.completed_ts)

    @property
    def elapsed(self) -> float | None:
        """Seconds run so far (until now for a running task), or ``None`` if it never started."""
        started = self.started_ts
        if started is None:
            return None
        end = self.completed_ts
        return float((time.time() if end is None else end) - started)

    @property
    def done(self) -> bool:
        """True once the task is completed, failed or cancelled."""
        return self.status.done

    def __repr__(self) -> str:
        extra = f", error={self.error!r}" if self.error else ""
        return (
            f"TaskInfo(id={self.id!r}, name={self.name!r}, status={self.status.value!r}, "
            f"priority={self.priority}, progress={self.progress:.3g}{extra})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskInfo._make, (tuple(self),))

    def __copy__(self) -> TaskInfo:
        return self

    def __deepcopy__(self, memo: object) -> TaskInfo:
        return self


#: ``new_info((id, name, status, ...))``: a snapshot from its fields in constructor
#: order, at the cost of one C call (the worker builds one per task and event).
new_info: Callable[[tuple[Any, ...]], TaskInfo] = partial(_tuple_new, TaskInfo)

