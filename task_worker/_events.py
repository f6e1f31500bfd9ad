"""Worker events and the subscriber list that delivers them."""

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


class EventHub:
    """Subscribers of one worker. Callbacks run on the loop's thread, in order;
    one that raises is logged and the others still run."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        if not callable(callback):
            raise TypeError(f"subscribe() needs a callable, got {callback!r}")
        self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            subs = list(self._subscribers)
            if callback in subs:
                subs.remove(callback)
                self._subscribers = tuple(subs)

        return unsubscribe

    def emit(self, event: TaskEvent) -> None:
        # Iterate over the tuple that was current at emit time: a callback may
        # subscribe or unsubscribe without disturbing this delivery.
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                logger.exception("task_worker event subscriber %r raised; it stays subscribed", callback)
