"""``task_worker.tqdm``: a tqdm whose fraction drives the current task's progress bar.

Inside a task (a ``%%task`` cell, or any task function) every ``update`` also
reports ``n / total`` through ``report_progress``; the core merges reports to at
most one event per task per loop turn, so a fast loop costs little. Outside a
task, and when ``total`` is unknown, it is plain ``tqdm.auto.tqdm``. As with
``report_progress``, an update after the task was cancelled raises
``CancelledError``, which stops a thread body at its next iteration.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm as _auto_tqdm

from ._progress import current_task_id, report_progress


class tqdm(_auto_tqdm):
    """``tqdm.auto.tqdm`` that also reports its fraction as the current task's progress."""

    def update(self, n: float | None = 1) -> bool | None:
        """Advance by ``n`` (as tqdm) and report the new fraction to the running task."""
        displayed = super().update(n)
        self._report_to_task()
        return displayed

    def reset(self, total: float | None = None) -> None:
        """Start over (as tqdm); the task's progress goes back to 0."""
        super().reset(total)
        self._report_to_task()

    def _report_to_task(self) -> None:
        total = self.total
        if not total or current_task_id() is None:
            return
        report_progress(min(self.n / total, 1.0))

    def __iter__(self) -> Any:
        # tqdm's fast iterator updates ``n`` in batches (every ``mininterval``) and
        # calls ``update`` for each batch, so reports follow at that pace.
        return super().__iter__()


__all__ = ["tqdm"]
