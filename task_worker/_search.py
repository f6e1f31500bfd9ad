"""The dashboard's text filter: which tasks match a piece of text (name, id, metadata).

The browser holds only the rows shown (``max_rows``), so filtering there would hide
matches among the other tasks: the text travels to the kernel as the dashboard's
``text_filter`` trait (checked like ``status_filter``) and the kernel picks the rows,
in the dashboard's usual order, from every task it knows. That costs O(tasks known)
per refresh while a filter is set (O(rows shown) otherwise); the browser stays
O(rows shown). Pure functions over ``TaskInfo`` snapshots; imports no widgets.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._info import TaskInfo
from ._table import TERMINAL_VALUES

if TYPE_CHECKING:
    from ._worker import AsyncTaskWorker

#: Longest text filter accepted, in characters.
MAX_TEXT_FILTER = 200


def check_text_filter(value: object) -> str:
    """``value`` as a text filter: a string of at most ``MAX_TEXT_FILTER`` characters, stripped
    (``None`` means no filter). Raises ``ValueError`` showing the bad value otherwise."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"text_filter must be a string, got {type(value).__name__} {value!r:.80}")
    if len(value) > MAX_TEXT_FILTER:
        raise ValueError(f"text_filter is at most {MAX_TEXT_FILTER} characters, got {len(value)}")
    return value.strip()


def _meta_matches(metadata: Mapping[str, Any], needle: str) -> bool:
    for key, value in metadata.items():
        if needle in str(key).lower():
            return True
        if isinstance(value, str):
            text = value
        elif isinstance(value, (int, float)):
            text = str(value)
        else:
            try:
                text = repr(value)
            except BaseException:  # (a broken __repr__ must not break the dashboard)
                continue
        if needle in f"{key}={text}".lower():
            return True
    return False


def matches(info: TaskInfo, needle: str) -> bool:
    """True if ``needle`` (already lower-case) is in the task's name, id or metadata
    (``key=value`` as the row shows it), ignoring case."""
    return (needle in info.name.lower() or needle in info.id.lower()
            or (bool(info.metadata) and _meta_matches(info.metadata, needle)))


def _completed(info: TaskInfo) -> float:
    return info.completed_ts or 0.0


def select_matching(worker: AsyncTaskWorker, status_filter: str, text: str,
                    max_rows: int) -> tuple[list[TaskInfo], int]:
    """The rows a dashboard shows under a text filter, and how many tasks match in all.

    The usual order: running (in start order), pending (in start order), then finished,
    most recently finished first; restricted to ``status_filter`` and capped to
    ``max_rows``. Scans every task the worker knows: O(tasks) plus sorting the matches.
    """
    needle = text.lower()
    out: list[TaskInfo] = []
    total = 0
    if status_filter in ("", "running"):
        found = [i for i in worker.get_running() if matches(i, needle)]
        total += len(found)
        out.extend(found[:max_rows])
    if status_filter in ("", "pending"):
        found = [i for i in worker.get_queue() if matches(i, needle)]
        total += len(found)
        out.extend(found[:max(0, max_rows - len(out))])
    if status_filter in ("", *TERMINAL_VALUES):
        statuses = TERMINAL_VALUES if not status_filter else (status_filter,)
        found = [i for i in worker.get_all_tasks(status=statuses) if matches(i, needle)]
        total += len(found)
        budget = max_rows - len(out)
        if budget > 0:
            out.extend(heapq.nlargest(budget, found, key=_completed))
    return out, total


__all__ = ["MAX_TEXT_FILTER", "check_text_filter", "matches", "select_matching"]
