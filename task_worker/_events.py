"""Worker events and the subscriber lists that deliver them."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import NamedTuple

from ._info import TaskInfo

logger = logging.getLogger("task_worker")


class EventKind(str, enum.Enum):
    """What happened. ``PROGRESS`` events may be merged (one per task per loop
    turn); every other kind is delivered exactly once per occurrence."""

    ADDED = "added"
    STARTED = "started"
    PROGRESS = "progress"
    FINISHED = "finished"
    #: An attempt failed and will be retried (``retries=``): the task is ``pending``
    #: again, holding no slot, until its retry delay passes (``info.retry_at``).
    RETRYING = "retrying"
    #: What a pending task waits for changed (``info.waiting_for``): a dependency
    #: completed, or a retry delay counts down (about once a second) or ended.
    WAITING = "waiting"
    #: A finished task was dropped from the history (``clear()`` or ``max_history``).
    REMOVED = "removed"
    #: The worker started, stopped or was reconfigured; ``info`` is ``None``.
    WORKER = "worker"

    def __str__(self) -> str:
        return self.value


class TaskEvent(NamedTuple):
    """One change: its ``kind`` and a ``TaskInfo`` snapshot taken when it happened."""

    kind: EventKind
    info: TaskInfo | None

    @property
    def task_id(self) -> str | None:
        """The task's id, or ``None`` for worker-level events."""
        return None if self.info is None else self.info.id


Subscriber = Callable[[TaskEvent], object]
_PROGRESS = EventKind.PROGRESS


class EventHub:
    """Subscribers of one worker: to every task, or to one task; with or
    without progress events. Callbacks run on the loop's thread, in order of
    subscription; one that raises (anything, even ``SystemExit``) is logged and
    the others still run.

    ``has_subscribers`` and ``progress_wanted`` are plain attributes the worker reads
    on its hot paths, so that no subscriber means no event is even built.
    """

    __slots__ = ("_all", "_by_task", "_no_progress", "has_subscribers", "progress_wanted", "task_progress")

    def __init__(self) -> None:
        self._all: tuple[Subscriber, ...] = ()  # every event
        self._no_progress: tuple[Subscriber, ...] = ()  # every event but progress
        self._by_task: dict[str, tuple[tuple[Subscriber, bool], ...]] = {}
        self.task_progress: set[str] = set()  # tasks with a progress-wanting subscriber
        #: Any subscriber at all (status events must be built).
        self.has_subscribers = False
        #: Some subscriber wants progress of every task.
        self.progress_wanted = False

    def __len__(self) -> int:
        """How many subscriptions are live."""
        return len(self._all) + len(self._no_progress) + sum(map(len, self._by_task.values()))

    def subscribe(
        self, callback: Subscriber, *, task_id: str | None = None, progress: bool = True,
    ) -> Callable[[], None]:
        if not callable(callback):
            raise TypeError(f"subscribe() needs a callable, got {callback!r}")
        if task_id is not None and not isinstance(task_id, str):
            raise TypeError(f"task_id must be a str or None, got {task_id!r}")
        entry = (callback, bool(progress))
        if task_id is not None:
            self._by_task[task_id] = (*self._by_task.get(task_id, ()), entry)
        elif progress:
            self._all = (*self._all, callback)
        else:
            self._no_progress = (*self._no_progress, callback)
        self._refresh()
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if done:
                return
            done = True
            if task_id is not None:
                subs = list(self._by_task.get(task_id, ()))
                if entry in subs:
                    subs.remove(entry)
                if subs:
                    self._by_task[task_id] = tuple(subs)
                else:
                    self._by_task.pop(task_id, None)
            elif progress:
                self._all = _without(self._all, callback)
            else:
                self._no_progress = _without(self._no_progress, callback)
            self._refresh()

        return unsubscribe

    def _refresh(self) -> None:
        self.progress_wanted = bool(self._all)
        self.task_progress = {t for t, subs in self._by_task.items() if any(p for _, p in subs)}
        self.has_subscribers = bool(self._all or self._no_progress or self._by_task)

    def emit(self, event: TaskEvent) -> None:
        # Iterate over the tuples current at emit time: a callback may
        # subscribe or unsubscribe without disturbing this delivery.
        is_progress = event.kind is _PROGRESS
        for callback in self._all:
            _call(callback, event)
        if not is_progress:
            for callback in self._no_progress:
                _call(callback, event)
        info = event.info
        if info is not None and self._by_task:
            for callback, progress in self._by_task.get(info.id, ()):
                if progress or not is_progress:
                    _call(callback, event)


def _without(subs: tuple[Subscriber, ...], callback: Subscriber) -> tuple[Subscriber, ...]:
    out = list(subs)
    if callback in out:
        out.remove(callback)
    return tuple(out)


def _call(callback: Subscriber, event: TaskEvent) -> None:
    try:
        callback(event)
    except BaseException:
        # Even SystemExit or KeyboardInterrupt: a subscriber runs inside the
        # worker's own bookkeeping (adding, starting, finishing a task), which
        # must never stop half way, and re-raised on the loop they would stop it.
        logger.exception("task_worker event subscriber %r raised; it stays subscribed", callback)
