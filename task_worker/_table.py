"""What a view of a worker shows, without widgets: which rows, each row's JSON, and the text table.

Pure functions over ``TaskInfo`` snapshots, shared by the dashboard widget
(``_dashboard.py``), ``display(worker)`` (``worker_mimebundle``) and ``%task list``.
Imports no IPython, ipywidgets or anywidget (``worker_mimebundle`` looks for
them only when called).
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._info import TaskInfo
from ._status import TaskStatus

if TYPE_CHECKING:
    from ._worker import AsyncTaskWorker

#: Longest error / traceback / metadata text sent to the browser, in characters.
MAX_ERROR = 2_000
MAX_TRACEBACK = 20_000
MAX_META = 300
STATUS_VALUES = tuple(s.value for s in TaskStatus)
#: The status values of finished tasks (completed, failed, cancelled).
TERMINAL_VALUES = tuple(s.value for s in TaskStatus if s.done)


# ---------------------------------------------------------------- plain text
def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}:{sec:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_table(infos: Iterable[TaskInfo], *, max_rows: int | None = None,
               total: int | None = None) -> str:
    """A plain-text table of tasks (id, name, status, priority, progress, elapsed, error).

    A task in a chain (``after=`` / ``retries=``) has its ``chain_text`` after
    its status: ``pending (waiting for load, clean)``, ``running (attempt 2/4)``.

    The one text table: ``%task list``, ``%tasks`` without widgets, and the
    ``text/plain`` of the dashboard and of ``display(worker)`` all print it.
    Shows at most ``max_rows`` rows (all when ``None``). A last line says how
    many more there were: those beyond ``max_rows``, or, given ``total`` (how
    many tasks ``infos`` was taken from), those not in ``infos`` at all.
    """
    header = ("ID", "NAME", "STATUS", "PRIO", "PROGRESS", "ELAPSED", "ERROR")
    rows: list[tuple[str, ...]] = []
    more = 0
    for info in infos:
        if max_rows is not None and len(rows) >= max_rows:
            more += 1
            continue
        shown = shown_error(info)
        error = shown.splitlines()[0] if shown else ""
        note = chain_text(info) if info.chain is not None else None
        status = info.status.value
        if note is not None:  # "completed (on attempt 2/4)", not "completed (completed on ...)"
            status = f"{status} ({note.removeprefix(status + ' ')})"
        rows.append((
            _clip(info.id, 24), _clip(info.name, 30), _clip(status, 50), str(info.priority),
            f"{info.progress * 100:5.1f}%", _fmt_seconds(info.elapsed), _clip(error, 60),
        ))
    if total is not None:
        more = max(more, total - len(rows))
    if not rows:
        return "(no tasks)" if not more else f"(no tasks shown)\n... {more} more"
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in (header, *rows)]
    if more:
        lines.append(f"... {more} more")
    return "\n".join(lines)


def worker_summary(worker: AsyncTaskWorker) -> str:
    """One line: running or stopped, busy slots, and the count of each status."""
    s = worker.stats()
    counts = ", ".join(f"{k.value} {v}" for k, v in s.counts.items() if v) or "no tasks"
    state = "running" if s.running else "stopped"
    return f"AsyncTaskWorker ({state}, {s.busy}/{s.max_workers} busy): {counts}"


def worker_text(worker: AsyncTaskWorker, max_rows: int = 20) -> str:
    """The worker's summary line over the text table of the rows a dashboard would show."""
    infos = select_rows(worker, "", max_rows)
    return f"{worker_summary(worker)}\n{text_table(infos, total=worker.stats().total)}"


# ----------------------------------------------------------------- row logic
def select_rows(
    worker: AsyncTaskWorker, status_filter: str, max_rows: int,
    finished: Iterable[TaskInfo] | None = None,
) -> list[TaskInfo]:
    """Running first (in start order), then pending (in start order), then ``finished``
    (most recent first; queried when ``None``), restricted to ``status_filter`` and
    capped to ``max_rows``. Costs O(rows) plus the worker's ``get_queue(limit)``."""
    out: list[TaskInfo] = []
    if status_filter in ("", "running"):
        out.extend(worker.get_running()[:max_rows])
    budget = max_rows - len(out)
    if budget > 0 and status_filter in ("", "pending"):
        out.extend(worker.get_queue(budget))
    budget = max_rows - len(out)
    if budget > 0 and status_filter in ("", *TERMINAL_VALUES):
        if finished is None:
            statuses = TERMINAL_VALUES if not status_filter else (status_filter,)
            finished = worker.get_all_tasks(status=statuses, limit=budget)
        for info in finished:
            if budget <= 0:
                break
            out.append(info)
            budget -= 1
    return out


def check_filter(value: object) -> str:
    """``value`` as a status filter: ``""`` for all (also ``None`` and ``"all"``), else a
    status value. Raises ``ValueError`` naming the choices for anything else."""
    if value is None or value == "" or value == "all":
        return ""
    try:
        return TaskStatus.parse(value).value
    except ValueError:
        raise ValueError(
            f"status_filter must be '' (all) or one of {', '.join(STATUS_VALUES)}; got {value!r}"
        ) from None


_ORDER = {"running": 0, "pending": 1}


def row_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Sort key of a JSON row: running by start, pending by priority, then the latest finished."""
    group = _ORDER.get(row["status"], 2)
    if group == 0:
        return (0, row["started"] or 0, row["seq"])
    if group == 1:
        return (1, row["priority"], row["seq"])
    return (2, -(row["completed"] or 0), -row["seq"])


def _meta_text(metadata: Mapping[str, Any]) -> str:
    if not metadata:
        return ""
    parts = []
    for key, value in metadata.items():
        try:
            shown = value if isinstance(value, str) else repr(value)
        except BaseException:  # a broken __repr__ (whatever it raises) must not break the dashboard
            shown = f"<{type(value).__name__}>"
        parts.append(f"{key}={_clip(shown, 80)}")
    return _clip(", ".join(parts), MAX_META)


#: A frame line of a formatted traceback (also inside an exception group's ``|`` margin).
_FRAME_LINE = re.compile(
    r'^(?P<lead>[ |]*)File "(?P<file>[^"\n]+)", line (?P<line>\d+)(?:, in (?P<func>[^\n]*))?$',
    re.MULTILINE)


def _name_cells(text: str) -> str:
    """``text`` (a formatted traceback) with notebook cells named as IPython names them.

    Code run from a cell (a ``%%task`` body, a function defined in a cell) is
    compiled under a temporary file name (``.../ipykernel_<pid>/<hash>.py``);
    IPython's own tracebacks show it as ``Cell In[N], line L``, through its
    compiler's ``format_code_name``. The same mapping here makes a row's traceback
    name the cell as the output area does. Without an IPython shell, or for files
    that are no cell, the text is unchanged.
    """
    ipython = sys.modules.get("IPython")  # never imported here: only used when already loaded
    shell = ipython.get_ipython() if ipython is not None else None
    format_code_name = getattr(getattr(shell, "compile", None), "format_code_name", None)
    if format_code_name is None or 'File "' not in text:
        return text

    def rename(match: re.Match[str]) -> str:
        try:
            named = format_code_name(match["file"])
        except Exception:  # a custom compiler: keep the file name
            named = None
        if not named:
            return match[0]
        label, name = named
        where = f"{match['lead']}{label} {name}, line {match['line']}"
        func = match["func"]
        return where if func is None or func == "<module>" else f"{where}, in {func}"

    return _FRAME_LINE.sub(rename, text)


def shown_error(info: TaskInfo) -> str | None:
    """The task's error message, unless it only repeats its status (a plain cancel says
    "cancelled", which the status already shows)."""
    error = info.error
    if error and error.strip().lower() == info.status.value:
        return None
    return error


def chain_text(info: TaskInfo, now: float | None = None) -> str | None:
    """What a task of a chain (``after=`` / ``retries=``) is at, in words, or ``None``.

    ``waiting for load, clean`` (pending on dependencies), ``attempt 2/4, retrying in
    3 s`` (a retry delay, counted down to ``now``), ``attempt 2/4`` (running or queued
    again), ``completed on attempt 2/4``, ``after 3 attempts`` (failed). The one
    wording of the dashboard rows, the ``%%task`` cell view and the text tables.
    """
    chain = info.chain
    if chain is None:
        return None
    attempt, most = chain.attempt, chain.max_attempts
    status = info.status
    if status is TaskStatus.PENDING:
        if chain.retry_at is not None:
            left = max(0, math.ceil(chain.retry_at - (time.time() if now is None else now)))
            return f"attempt {attempt}/{most}, retrying in {left} s"
        if chain.waiting_for is not None:
            return f"waiting for {chain.waiting_for}"
        return f"attempt {attempt}/{most}" if attempt > 1 else None
    if most == 1:
        return None
    if status is TaskStatus.RUNNING:
        return f"attempt {attempt}/{most}"
    if status is TaskStatus.COMPLETED:
        return f"completed on attempt {attempt}/{most}" if attempt > 1 else None
    if status is TaskStatus.FAILED and attempt > 1:
        return f"after {attempt} attempts"
    return None


def row_note(info: TaskInfo) -> str | None:
    """The note a row of a task in a chain shows in both views (the dashboard and the
    task's own view): its ``chain_text``, or, once cancelled, the reason (the dependency
    that failed, or how many dependents it took along). ``None`` for a plain task."""
    if info.chain is None:
        return None
    if info.status is TaskStatus.CANCELLED:
        return shown_error(info)
    return chain_text(info)


def error_text(info: TaskInfo) -> str | None:
    """A row's error: ``shown_error``, except that a task that failed after several
    attempts lists the earlier attempts' errors under the last one."""
    error = shown_error(info)
    chain = info.chain
    if chain is None or info.status is not TaskStatus.FAILED or not error:
        return error
    errors = chain.attempt_errors
    if len(errors) < 2:
        return error
    most = chain.max_attempts
    earlier = "\n".join(f"attempt {i}/{most}: {e}" for i, e in enumerate(errors[:-1], 1))
    return f"{error} (attempt {len(errors)}/{most})\n{earlier}"


def epoch_ms(ts: float | None) -> int | None:
    """Epoch seconds as integer milliseconds (what the browser's clock counts in)."""
    return None if ts is None else int(ts * 1000)


def progress_percent(info: TaskInfo) -> float:
    """The task's progress in percent, rounded to the 0.1 the view shows."""
    return round(info.progress * 1000) / 10


def make_row(info: TaskInfo) -> dict[str, Any]:
    """The JSON row the browser renders for one task (percent rounded to 0.1)."""
    status = info.status
    row: dict[str, Any] = {
        "id": info.id,
        "name": info.name,
        "status": status.value,
        "priority": info.priority,
        "progress": progress_percent(info),
        "seq": info.seq,
        "created": epoch_ms(info.created_ts),
        "started": epoch_ms(info.started_ts),
        "completed": epoch_ms(info.completed_ts),
    }
    meta = _meta_text(info.metadata)
    if meta:
        row["meta"] = meta
    if info.chain is None:
        error = shown_error(info)
    else:  # a chain's note ("waiting for load"), shown by the task's own view too
        note = row_note(info)
        if note:
            row["note"] = _clip(note, MAX_ERROR)
        error = error_text(info) if status is not TaskStatus.CANCELLED else None
    if error:
        row["error"] = _clip(error, MAX_ERROR)
    traceback = info.traceback
    if traceback and status is TaskStatus.FAILED:
        row["traceback"] = _clip(_name_cells(traceback), MAX_TRACEBACK)
    return row


def only_progress_differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True if two rows of one task differ at most in their progress."""
    if old.keys() != new.keys():
        return False
    return all(old[k] == new[k] for k in new if k != "progress")


# ------------------------------------------------------- display(worker)
def worker_mimebundle(worker: AsyncTaskWorker, include: Any = None, exclude: Any = None) -> Any:
    """What ``display(worker)`` shows: a live dashboard plus a ``text/plain`` table.

    Only the text table when widgets cannot render here (ipywidgets or
    anywidget missing, or no kernel, as in terminal IPython), so that no
    widget is created that nothing could ever show or close.
    """
    text = worker_text(worker)
    data: dict[str, Any] = {"text/plain": text}
    metadata: dict[str, Any] = {}
    if widgets_can_render():
        from ._dashboard import TaskDashboard

        bundle = TaskDashboard(worker)._repr_mimebundle_()
        if bundle is not None:
            data, metadata = bundle
            data["text/plain"] = text
    if include:
        data = {k: v for k, v in data.items() if k in include}
    if exclude:
        data = {k: v for k, v in data.items() if k not in exclude}
    return data, metadata


def widgets_can_render() -> bool:
    """True in a kernel with ipywidgets and anywidget installed (imports them to find out)."""
    try:
        import anywidget  # noqa: F401
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def cancel_all(worker: AsyncTaskWorker) -> list[str]:
    """Cancel every pending, then every running task of ``worker`` without waiting: the one
    "cancel all" of ``%task cancel --all`` and the dashboard's button. Pending tasks go first, so
    none of them starts in a slot a cancelled one frees. Returns the ids asked to cancel."""
    cancelled: list[str] = []
    for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
        for info in worker.get_all_tasks(status=status):
            if worker.cancel_task_nowait(info.id):
                cancelled.append(info.id)
    return cancelled


__all__ = [
    "cancel_all", "chain_text",
    "check_filter", "epoch_ms", "make_row", "only_progress_differs", "progress_percent",
    "error_text", "row_note", "row_order", "select_rows", "shown_error", "text_table", "widgets_can_render",
    "worker_mimebundle", "worker_summary", "worker_text",
]
