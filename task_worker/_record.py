"""``TaskRecord``: the worker's private, mutable state of one active task."""

from __future__ import annotations

import asyncio
import contextvars
import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._info import TaskInfo, new_info
from ._status import TaskStatus

if TYPE_CHECKING:
    from ._chains import Chain
    from ._threads import ThreadRun

    class _Owner(Protocol):
        def _report(self, rec: TaskRecord, fraction: float) -> None: ...

SEQ_BITS = 40
SEQ_MASK = (1 << SEQ_BITS) - 1

#: ``flags`` bits, fixed per task at ``add_task`` time.
IS_ASYNC = 1
WANTS_PROGRESS = 2
#: Set by the job's asyncio task at its first step.
STEPPED = 4



class CancelReason(enum.Enum):
    """Why the worker told a task to stop (``TaskRecord.cancel_reason``)."""

    #: ``cancel_task`` / ``cancel_task_nowait`` (a button, ``%task cancel``).
    CANCELLED = "cancelled"
    #: Its ``timeout`` passed; it ends ``failed`` with ``TimeoutError``.
    TIMED_OUT = "timed out"
    #: ``stop()`` (or its event loop closed under it).
    WORKER_STOPPED = "worker stopped"


class TaskRecord:
    """State of a pending or running task. Only the worker writes it; the world
    sees ``TaskInfo`` snapshots. Once the task finishes, the worker keeps the
    frozen ``TaskInfo`` instead and this object is left to the garbage collector."""

    __slots__ = (
        "args",
        "cancel_reason",
        "chain",
        "created",
        "ctx",
        "executor",
        "flags",
        "func",
        "id",
        "info",
        "key",
        "kwargs",
        "metadata",
        "name",
        "owner",
        "progress",
        "started",
        "status",
        "task",
        "thread",
        "timeout",
        "timer",
        "waiter",
    )

    def __init__(
        self, owner: _Owner, task_id: str, name: str, func: Callable[..., Any],
        args: tuple[Any, ...], kwargs: dict[str, Any] | None, key: int,
        metadata: Mapping[str, Any], timeout: float | None, created: float,
        ctx: contextvars.Context, flags: int, executor: Any,
    ) -> None:
        self.owner = owner
        self.id = task_id
        self.name = name
        self.func: Callable[..., Any] | None = func
        self.args = args
        self.kwargs = kwargs  # None when empty: one dict less per queued task
        #: ``priority << SEQ_BITS | seq``: one int orders the queue and encodes both.
        self.key = key
        self.metadata = metadata
        self.timeout = timeout
        self.status = TaskStatus.PENDING
        self.progress = 0.0
        self.created = created
        self.started: float | None = None
        self.ctx: contextvars.Context | None = ctx
        self.task: asyncio.Task[None] | None = None
        self.flags = flags
        self.cancel_reason: CancelReason | None = None
        self.thread: ThreadRun | None = None
        self.waiter: asyncio.Future[TaskInfo] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.executor = executor
        #: The final snapshot, once finished.
        self.info: TaskInfo | None = None
        #: ``after=`` / ``retries=`` state (``_chains.Chain``), or ``None`` for a plain task.
        self.chain: Chain | None = None

    @property
    def stop_requested(self) -> bool:
        """``ProgressSink.stop_requested``: a cancel, timeout or stop was asked for."""
        return self.cancel_reason is not None

    def report(self, fraction: float) -> None:
        """``ProgressSink.report``: record progress (any thread)."""
        self.owner._report(self, fraction)

    def snapshot(self) -> TaskInfo:
        """A ``TaskInfo`` of the current state."""
        if self.info is not None:
            return self.info
        key = self.key
        chain = self.chain
        return new_info((
            self.id, self.name, self.status, key >> SEQ_BITS, self.progress, None, None, None,
            None, self.metadata, self.created, self.started, None, key & SEQ_MASK,
            None if chain is None else chain.freeze(),
        ))

    def __repr__(self) -> str:
        return f"<TaskRecord {self.id!r} {self.name!r} {self.status.value}>"
