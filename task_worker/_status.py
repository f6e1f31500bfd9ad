"""Task statuses: the one place that names them."""

from __future__ import annotations

import enum


class TaskStatus(str, enum.Enum):
    """Lifecycle state of a task.

    A ``str`` enum, so ``info.status == "completed"`` holds. ``PENDING`` and
    ``RUNNING`` are active; the other three are terminal and final: a task
    reaches exactly one of them, exactly once.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def done(self) -> bool:
        """True for the terminal states (completed, failed, cancelled)."""
        return self in _TERMINAL

    @classmethod
    def parse(cls, value: object) -> TaskStatus:
        """Return the status named by ``value`` (a ``TaskStatus`` or its string value).

        Raises:
            ValueError: ``value`` names no status.
        """
        if isinstance(value, TaskStatus):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        known = ", ".join(repr(s.value) for s in cls)
        raise ValueError(f"unknown task status {value!r}; expected one of {known}")


_TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
