"""Notifications when tasks finish: which outcomes, after how long, and the session's choice.

No widget imports. A dashboard's ``notify`` trait holds the outcomes to notify ("completed",
"failed", both, or none) and ``notify_after`` the threshold in seconds; the kernel sends the
finished tasks that match in its coalesced patches, and the browser (``static/notify.js``)
decides: it notifies when the page is hidden or the task ran at least ``notify_after`` seconds.
A cancelled task is never notified (the user cancelled it, or it was cancelled with the worker).

``NotifySettings`` is one session's choice (``%task config notify=failed,completed
notify_after=10``), pushed to the dashboards that follow it (``%tasks`` dashboards and
``%%task`` views).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

#: The outcomes a notification can be asked for, in their canonical order.
NOTIFY_KINDS = ("completed", "failed")
#: Default threshold: a task that ran this many seconds is notified even on a visible page.
NOTIFY_AFTER = 10.0
#: At most this many finished tasks per patch (a burst is summed up in one notification anyway).
MAX_FINISHED_PER_PATCH = 50


def parse_notify(value: object) -> str:
    """``value`` as a canonical notify setting: ``""`` (off), ``"completed"``, ``"failed"`` or
    ``"completed,failed"``.

    Accepts a comma-separated string (``"failed,completed"``, ``"all"``, ``"none"``, ``"off"``,
    ``""``), an iterable of those words, or ``None`` (off). Raises ``ValueError`` naming the
    choices for anything else.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        words = [w.strip().lower() for w in value.split(",")]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):
        words = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"notify must name outcomes ({', '.join(NOTIFY_KINDS)}), got {value!r}")
            words.append(item.strip().lower())
    else:
        raise ValueError(f"notify must be a string like 'failed,completed' or 'none', got {value!r}")
    kinds: set[str] = set()
    for word in words:
        if word in ("", "none", "off"):
            continue
        if word == "all":
            kinds.update(NOTIFY_KINDS)
        elif word in NOTIFY_KINDS:
            kinds.add(word)
        else:
            raise ValueError(
                f"notify takes {', '.join(NOTIFY_KINDS)}, all or none (comma-separated), got {value!r}")
    return ",".join(k for k in NOTIFY_KINDS if k in kinds)


def check_notify_after(value: object) -> float:
    """``value`` as a threshold in seconds (a finite number >= 0); ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise ValueError(f"notify_after must be a number of seconds >= 0, got {value!r}")
    return float(value)


class _Notifiable(Protocol):
    notify: str
    notify_after: float


class NotifySettings:
    """One session's notification choice, applied to every dashboard that ``follow``s it.

    ``kinds`` is a canonical notify setting (``""``: off); ``after`` the threshold in seconds.
    Dashboards are held weakly: following costs nothing once a view is gone.
    """

    def __init__(self, kinds: object = "", after: object = NOTIFY_AFTER) -> None:
        self.kinds = parse_notify(kinds)
        self.after = check_notify_after(after)
        self._followers: weakref.WeakSet[Any] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<NotifySettings notify={self.kinds or 'none'!r} notify_after={self.after:g}>"

    def follow(self, dashboard: _Notifiable) -> None:
        """Apply the current choice to ``dashboard`` now and at every later ``update``."""
        self._followers.add(dashboard)
        self._apply(dashboard)

    def update(self, kinds: object = None, after: object = None) -> None:
        """Change the choice (``None``: keep that part) and apply it to every follower.

        Both values are checked first: a bad one raises ``ValueError`` and changes nothing.
        """
        new_kinds = self.kinds if kinds is None else parse_notify(kinds)
        new_after = self.after if after is None else check_notify_after(after)
        self.kinds, self.after = new_kinds, new_after
        for dashboard in list(self._followers):
            self._apply(dashboard)

    def _apply(self, dashboard: _Notifiable) -> None:
        if getattr(dashboard, "closed", False):
            return
        dashboard.notify_after = self.after
        dashboard.notify = self.kinds


__all__ = ["NOTIFY_AFTER", "NOTIFY_KINDS", "NotifySettings", "check_notify_after", "parse_notify"]
