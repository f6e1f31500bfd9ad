"""The dashboard's timeline data: when each task was created, started and finished, and when the
loop was starved; sent compactly, and only while a view has the timeline open.

No widget imports. ``TimelineFeed`` is fed by the dashboard's event handler with the status
events it already receives (never progress: the worker's hot path pays nothing more). Until a
browser view first opens the timeline it records nothing. Then it sends:

* once per request, a full message: ``{"type": "timeline", "ids": [...], "names": [...],
  "status": "prcfx...", "starved": [[start_ms, end_ms]...], "count": n}`` plus one binary buffer
  of ``3 * n`` float64 (created, started, completed per task, epoch milliseconds, NaN when
  unknown), O(tasks the worker knows), for up to 10,000 tasks;
* then, inside the dashboard's coalesced patches, only what changed since the last flush:
  ``"timeline": {"ids", "names", "status", "times": [c, s, e, ...] (null when unknown),
  "remove": [...], "starved": [...]}``.

``StarveRecorder`` is a heartbeat on the loop, armed only while the worker runs tasks, that
records the spans during which the loop was blocked (a beat ``threshold`` seconds late), as the
``%%task`` view's ``LoopLagMonitor`` does for its note.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._info import TaskInfo
from ._status import TaskStatus

if TYPE_CHECKING:
    from ._worker import AsyncTaskWorker

#: One letter per status in the ``status`` strings (pending, running, completed, failed, cancelled).
STATUS_CODES: dict[TaskStatus, str] = {
    TaskStatus.PENDING: "p", TaskStatus.RUNNING: "r", TaskStatus.COMPLETED: "c",
    TaskStatus.FAILED: "f", TaskStatus.CANCELLED: "x",
}
#: Starved spans kept (the oldest are dropped first).
MAX_STARVED = 1_000
#: Tasks in the full timeline at most (the newest); the browser keeps as many.
MAX_TASKS = 10_000
#: Longest task name sent to the timeline, in characters.
MAX_NAME = 120
#: A heartbeat that fires this much later than asked means the loop was blocked (as ``_cellview``).
STARVED_AFTER = 1.0
HEARTBEAT = 0.25

_NAN = math.nan


def _ms(ts: float | None) -> float | None:
    return None if ts is None else round(ts * 1000.0, 1)


def _name(info: TaskInfo) -> str:
    name = info.name
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


class TimelineFeed:
    """The timeline's data for one dashboard: a full snapshot on request, then deltas.

    Args:
        worker: The worker whose tasks are drawn.
    """

    def __init__(self, worker: AsyncTaskWorker) -> None:
        self._worker = worker
        #: True once a view asked for the timeline: from then on changes are recorded.
        self.active = False
        self._changed: dict[str, TaskInfo] = {}
        self._removed: set[str] = set()
        self._starved: deque[tuple[float, float]] = deque(maxlen=MAX_STARVED)
        self._new_starved: list[tuple[float, float]] = []

    @property
    def starved(self) -> list[tuple[float, float]]:
        """The starved spans recorded, as (start, end) epoch seconds, oldest first."""
        return list(self._starved)

    def note(self, info: TaskInfo) -> None:
        """A task was added, started or finished (the dashboard calls this for status events)."""
        if self.active:
            task_id = info.id
            self._changed[task_id] = info
            self._removed.discard(task_id)

    def note_removed(self, task_id: str) -> None:
        """A finished task was dropped from the worker's history."""
        if self.active:
            self._changed.pop(task_id, None)
            self._removed.add(task_id)

    def note_starved(self, start: float, end: float) -> None:
        """The loop was blocked from ``start`` to ``end`` (epoch seconds)."""
        span = (start, end)
        self._starved.append(span)
        if self.active:
            self._new_starved.append(span)

    def full(self) -> tuple[dict[str, Any], list[bytes]]:
        """Every task the worker knows, as columns plus one float64 buffer; activates the feed.

        Pending changes are dropped: the snapshot includes them.
        """
        self.active = True
        self._changed.clear()
        self._removed.clear()
        self._new_starved.clear()
        infos = self._worker.get_all_tasks(limit=MAX_TASKS)  # newest first
        infos.reverse()
        times = array("d")
        ids: list[str] = []
        names: list[str] = []
        codes: list[str] = []
        for info in infos:
            ids.append(info.id)
            names.append(_name(info))
            codes.append(STATUS_CODES[info.status])
            started, completed = info.started_ts, info.completed_ts
            times.append(info.created_ts * 1000.0)
            times.append(_NAN if started is None else started * 1000.0)
            times.append(_NAN if completed is None else completed * 1000.0)
        msg = {
            "type": "timeline", "count": len(ids), "ids": ids, "names": names,
            "status": "".join(codes), "now": round(time.time() * 1000.0),
            "starved": [[_ms(a), _ms(b)] for a, b in self._starved],
        }
        if sys.byteorder == "big":
            times.byteswap()  # the browser reads little-endian
        return msg, [times.tobytes()]

    def take_delta(self) -> dict[str, Any] | None:
        """What changed since the last call (or ``full()``), or ``None``."""
        if not (self._changed or self._removed or self._new_starved):
            return None
        delta: dict[str, Any] = {}
        if self._changed:
            infos = sorted(self._changed.values(), key=lambda i: i.seq)
            self._changed = {}
            delta["ids"] = [i.id for i in infos]
            delta["names"] = [_name(i) for i in infos]
            delta["status"] = "".join(STATUS_CODES[i.status] for i in infos)
            times: list[float | None] = []
            for i in infos:
                times += (_ms(i.created_ts), _ms(i.started_ts), _ms(i.completed_ts))
            delta["times"] = times
        if self._removed:
            delta["remove"] = sorted(self._removed)
            self._removed = set()
        if self._new_starved:
            delta["starved"] = [[_ms(a), _ms(b)] for a, b in self._new_starved]
            self._new_starved = []
        return delta


class StarveRecorder:
    """A heartbeat on ``loop`` while ``busy()`` says tasks run; calls ``on_starved(start, end)``
    (epoch seconds) for each beat that came ``threshold`` seconds or more late.

    ``arm()`` is cheap to call often (the dashboard calls it when a task starts); the heartbeat
    stops by itself at the first beat that finds nothing running.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, busy: Callable[[], bool],
                 on_starved: Callable[[float, float], object], *, interval: float = HEARTBEAT,
                 threshold: float = STARVED_AFTER, clock: Callable[[], float] = time.time) -> None:
        self.loop = loop
        self.interval = interval
        self.threshold = threshold
        self._busy = busy
        self._on_starved = on_starved
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def armed(self) -> bool:
        """True while a heartbeat is scheduled."""
        return self._handle is not None

    def arm(self) -> None:
        """Start the heartbeat unless it runs (or the loop is closed)."""
        if self._handle is None and not self.loop.is_closed():
            self._due = self.loop.time() + self.interval
            self._handle = self.loop.call_later(self.interval, self._beat)

    def stop(self) -> None:
        """Cancel the heartbeat."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _beat(self) -> None:
        self._handle = None
        lag = self.loop.time() - self._due
        if lag >= self.threshold:
            end = self._clock()
            self._on_starved(end - lag, end)
        if self._busy():
            self.arm()


__all__ = ["STATUS_CODES", "StarveRecorder", "TimelineFeed"]
