"""Estimated time remaining: per task, from its own smoothed progress rate; for the whole queue
only when that can honestly be computed.

No widget imports. The dashboard feeds ``EtaTracker.observe`` with the progress of the rows it
shows, at most once per flush (never per ``report_progress`` call), so the worker's hot path
pays nothing.

Why per task: tasks of very different lengths make a global average meaningless (the reason
Dask's dashboard shows no ETA). Each task's rate is an exponentially weighted moving average of
its progress per second, weighted by time (a half-life in seconds), so a task that speeds up or
slows down is followed within a few half-lives. An estimate is given only once it means
something: the task has made ``min_progress`` and run ``min_elapsed`` seconds, its smoothed rate
is positive, and the result is below ``MAX_ETA``. Otherwise: nothing, rather than nonsense.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

#: An estimate longer than this (30 days) is not shown.
MAX_ETA = 30 * 86_400.0
#: A new estimate replaces the one shown only when it moved by this fraction of the time left ...
RESEND_FRACTION = 0.02
#: ... or by this many seconds, whichever is larger (so the browser is not told every flush).
RESEND_SECONDS = 1.0


@dataclass
class _Track:
    first: float  # epoch seconds of the first sample (the task's start)
    last: float  # epoch seconds of the latest sample
    progress: float  # progress at ``last``
    rate: float | None  # smoothed progress per second
    samples: int
    shown: float | None  # the estimate last handed out (epoch seconds of the finish)


class EtaTracker:
    """Smoothed progress rates of running tasks, and the finish times they imply.

    Args:
        half_life: Seconds after which an old rate counts half (the smoothing).
        min_progress: No estimate below this progress (a fraction).
        min_elapsed: No estimate before the task ran this many seconds.
    """

    def __init__(self, *, half_life: float = 10.0, min_progress: float = 0.02,
                 min_elapsed: float = 3.0) -> None:
        for name, value in (("half_life", half_life), ("min_progress", min_progress),
                            ("min_elapsed", min_elapsed)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if half_life <= 0:
            raise ValueError(f"half_life must be > 0, got {half_life!r}")
        self.half_life = float(half_life)
        self.min_progress = float(min_progress)
        self.min_elapsed = float(min_elapsed)
        self._tracks: dict[str, _Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tracks

    def observe(self, task_id: str, started: float | None, progress: float, now: float) -> bool:
        """Record that ``task_id`` (started at epoch ``started``) is at ``progress`` at epoch
        ``now``. Returns True when the estimate to show changed (see ``shown``)."""
        track = self._tracks.get(task_id)
        before = None if track is None else track.shown
        if track is None or progress < track.progress:
            # New, or progress went backwards (a restarted loop): start over. The task's start
            # is the natural first sample (progress 0 at ``started``).
            if started is not None and started < now:
                track = _Track(started, started, 0.0, None, 1, None)
            else:
                track = _Track(now, now, progress, None, 1, None)
            self._tracks[task_id] = track
        dt = now - track.last
        if dt > 0:
            inst = (progress - track.progress) / dt
            if track.rate is None:
                track.rate = inst
            else:
                weight = 1.0 - 0.5 ** (dt / self.half_life)
                track.rate += weight * (inst - track.rate)
            track.last = now
            track.progress = progress
            track.samples += 1
            self._show(track, self._estimate(track, now), now)
        return track.shown != before

    def shown(self, task_id: str) -> float | None:
        """The estimated finish of ``task_id`` (epoch seconds) as last handed out, or ``None``."""
        track = self._tracks.get(task_id)
        return None if track is None else track.shown

    def drop(self, task_id: str) -> None:
        """Forget a task (it finished, or is no longer shown)."""
        self._tracks.pop(task_id, None)

    def retain(self, task_ids: Iterable[str]) -> None:
        """Forget every task not in ``task_ids``."""
        keep = set(task_ids)
        for task_id in [t for t in self._tracks if t not in keep]:
            del self._tracks[task_id]

    def _estimate(self, track: _Track, now: float) -> float | None:
        rate = track.rate
        if (rate is None or rate <= 0 or track.samples < 2 or track.progress < self.min_progress
                or now - track.first < self.min_elapsed or track.progress >= 1.0):
            return None
        remaining = (1.0 - track.progress) / rate
        if not math.isfinite(remaining) or remaining > MAX_ETA:
            return None
        return now + remaining

    @staticmethod
    def _show(track: _Track, estimate: float | None, now: float) -> None:
        old = track.shown
        if estimate is not None and old is not None and abs(estimate - old) < max(
                RESEND_SECONDS, RESEND_FRACTION * max(0.0, old - now)):
            return  # moved too little to be worth a message
        track.shown = estimate


def queue_estimate(finishes: Iterable[float | None], *, pending: int, running: int) -> float | None:
    """When the whole queue will be done (epoch seconds), or ``None`` when that cannot be said.

    Honest only when no task waits (a pending task's length is unknown: nothing in the worker
    says how long it will take) and every one of the ``running`` tasks has an estimate: then the
    queue is done when the last of them is.
    """
    if pending or running <= 0:
        return None
    values = list(finishes)
    if len(values) != running or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


__all__ = ["EtaTracker", "queue_estimate"]
