"""A task's details, as text: what the dashboard's details pane and ``%task show`` print.

``task_details(worker, task_id)`` gathers, on demand (never on the worker's hot path):
id, name, status, priority, metadata, a short safe repr of the arguments, timestamps,
queue wait and run time, CPU time where it can be measured, the error with its full
traceback, and for ``%%task`` tasks the last lines of the task's output area.

What a finished task shows is what the worker keeps cheaply: its ``TaskInfo`` (no
arguments: the worker drops them when a task ends, so that a finished task does not
keep a large argument alive), the CPU seconds of a thread body (a float, kept by the
worker's thread pool), and the output area of a ``%%task`` view. The arguments are
read from the worker's record of the task while it is pending or running
(``active_arguments``), the same record the worker drops at the end.

Everything is plain JSON (strings, numbers, ``None``): the browser shows it with
``textContent``. User code that runs here (``__repr__`` of arguments and metadata)
may raise anything: it yields a placeholder, never an exception.
"""

from __future__ import annotations

import reprlib
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._info import TaskInfo
from ._record import IS_ASYNC
from ._status import TaskStatus
from ._table import _name_cells, epoch_ms, error_text

if TYPE_CHECKING:
    from ._cellview import CellViews
    from ._worker import AsyncTaskWorker

#: Longest arguments text, metadata value, error, traceback and output tail, in characters.
MAX_ARGS = 500
MAX_META_VALUE = 200
MAX_ERROR = 2_000
MAX_TRACEBACK = 20_000
MAX_OUTPUT = 4_000
#: Lines of a ``%%task``'s output shown in its details.
OUTPUT_LINES = 20
#: Longest task id a details request may carry.
MAX_ID = 1_000

ARGS_RELEASED = "(released when the task finished: a finished task keeps no reference to its arguments)"
CPU_ASYNC = "n/a (a coroutine: it shares the event loop's thread with every other task)"
CPU_REMOTE = "n/a (ran in another process)"
CPU_UNKNOWN = "n/a"

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlong = 40
_repr.maxlevel = 3


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_repr(value: Any, limit: int = MAX_ARGS) -> str:
    """A short ``repr`` of ``value`` (containers and long strings abbreviated), or a
    placeholder naming its type when its ``__repr__`` raises (anything)."""
    try:
        text = _repr.repr(value)
    except BaseException as exc:  # (user code: a placeholder, never an error)
        try:
            kind = type(value).__name__
        except BaseException:
            kind = "object"
        text = f"<{kind} object: repr() raised {type(exc).__name__}>"
    return _clip(text, limit)


def format_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any] | None) -> str:
    """``(a, b, key=value)`` as a short, safe text (``(none)`` without arguments)."""
    parts = [safe_repr(a, MAX_ARGS) for a in args]
    for key, value in (kwargs or {}).items():
        if key == "progress_callback":
            continue  # the worker's own
        parts.append(f"{key}={safe_repr(value, MAX_ARGS)}")
    return _clip(", ".join(parts), MAX_ARGS) if parts else "(none)"


def _record(worker: AsyncTaskWorker, task_id: str) -> Any:
    """The worker's record of a pending or running task (``None`` once it finished).

    Reads the worker's task table, the one place that has it. Getting a record never
    changes anything, and no code here keeps it beyond the call."""
    table = getattr(worker, "_table", None)
    item = table.get(task_id) if table is not None else None
    return None if item is None or isinstance(item, TaskInfo) else item


def active_arguments(worker: AsyncTaskWorker, task_id: str) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The positional and keyword arguments of a pending or running task; ``None`` once
    it finished (the worker drops them then) or for an unknown id."""
    rec = _record(worker, task_id)
    if rec is None:
        return None
    return tuple(getattr(rec, "args", ())), dict(getattr(rec, "kwargs", None) or {})


def cpu_text(worker: AsyncTaskWorker, info: TaskInfo) -> tuple[float | None, str]:
    """The CPU seconds the task's body used (so far, while it runs) and the text shown.

    Measured for thread bodies only, by ``time.thread_time()`` in the body's own thread.
    A coroutine shares the loop's thread with every other task: no honest figure."""
    if info.started_ts is None:
        return None, "-"
    rec = _record(worker, info.id)
    if rec is not None:
        if getattr(rec, "executor", None) is not None:
            return None, CPU_REMOTE
        run = getattr(rec, "thread", None)
        if run is not None:
            seconds = run.cpu_seconds()
            return seconds, CPU_UNKNOWN if seconds is None else f"{seconds:.3f} s"
        flags = getattr(rec, "flags", 0)
        return None, CPU_ASYNC if flags & IS_ASYNC else CPU_UNKNOWN
    bodies = getattr(worker, "_threads", None)
    log = getattr(bodies, "cpu", None)
    seconds = log.get(info.id) if log is not None else None
    if seconds is not None:
        return seconds, f"{seconds:.3f} s"
    if info.metadata.get("mode") == "async":
        return None, CPU_ASYNC
    return None, CPU_UNKNOWN


# --------------------------------------------------------- %%task output areas
_views: weakref.WeakSet[CellViews] = weakref.WeakSet()


def register_views(views: CellViews) -> None:
    """Let details find the output areas of ``views`` (held weakly; ``unregister_views``)."""
    _views.add(views)


def unregister_views(views: CellViews) -> None:
    """Stop looking in ``views`` (its extension unloaded)."""
    _views.discard(views)


def output_widget(worker: AsyncTaskWorker, task_id: str) -> Any:
    """The ``ipywidgets.Output`` of a ``%%task``'s view, if one is open."""
    for views in list(_views):
        view = views.get(worker, task_id)
        if view is not None and not view.closed:
            return view.output
    return None


def _item_text(item: Mapping[str, Any]) -> str:
    kind = item.get("output_type")
    if kind == "stream":
        return str(item.get("text", ""))
    if kind == "error":
        return f"{item.get('ename', 'Error')}: {item.get('evalue', '')}\n"
    data = item.get("data") or {}
    plain = data.get("text/plain") if isinstance(data, Mapping) else None
    if isinstance(plain, str):
        return plain if plain.endswith("\n") else plain + "\n"
    kinds = ", ".join(sorted(data)) if isinstance(data, Mapping) else "?"
    return f"[display: {kinds}]\n"


def output_tail(outputs: Any, lines: int = OUTPUT_LINES) -> str:
    """The last ``lines`` lines of an output area's items (streams as printed, displays
    by their text, errors by their message), at most ``MAX_OUTPUT`` characters."""
    pieces: list[str] = []
    count = 0
    for item in reversed(tuple(outputs or ())):
        if not isinstance(item, Mapping):
            continue
        text = _item_text(item)
        pieces.append(text)
        count += text.count("\n")
        if count > lines or sum(map(len, pieces)) > MAX_OUTPUT:
            break
    text = "".join(reversed(pieces))
    kept = text.rstrip("\n").split("\n")[-lines:]
    out = "\n".join(kept)
    return out if len(out) <= MAX_OUTPUT else "…" + out[-(MAX_OUTPUT - 1):]


# ------------------------------------------------------------------ details
def _seconds(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


def task_details(worker: AsyncTaskWorker, task_id: str, *, now: float | None = None) -> dict[str, Any] | None:
    """Everything the details pane shows about ``task_id`` (plain JSON), or ``None`` for
    a task the worker does not know (any more).

    Keys: ``id``, ``name``, ``status``, ``priority``, ``progress`` (percent), ``metadata``
    (``[key, text]`` pairs), ``arguments``, ``created`` / ``started`` / ``completed``
    (epoch ms; the browser shows local wall-clock time), ``queue_wait`` and ``run_time``
    (seconds, so far while it waits or runs), ``cpu`` (seconds or ``None``) and
    ``cpu_text``, ``error``, ``traceback``, and ``output`` (a ``%%task``'s last lines)."""
    import time

    info = worker.get_task_info(task_id)
    if info is None:
        return None
    now = time.time() if now is None else now
    started, completed = info.started_ts, info.completed_ts
    arguments = active_arguments(worker, task_id)
    cpu, cpu_shown = cpu_text(worker, info)
    details: dict[str, Any] = {
        "id": info.id,
        "name": info.name,
        "status": info.status.value,
        "priority": info.priority,
        "progress": round(info.progress * 1000) / 10,
        "metadata": [[_clip(str(k), MAX_META_VALUE),
                      _clip(v, MAX_META_VALUE) if isinstance(v, str) else safe_repr(v, MAX_META_VALUE)]
                     for k, v in info.metadata.items()],
        "arguments": format_arguments(*arguments) if arguments is not None else ARGS_RELEASED,
        "created": epoch_ms(info.created_ts),
        "started": epoch_ms(started),
        "completed": epoch_ms(completed),
        "queue_wait": _seconds(info.created_ts, started if started is not None else (
            completed if completed is not None else now)),
        "run_time": _seconds(started, completed if completed is not None else now),
        "cpu": cpu,
        "cpu_text": cpu_shown,
    }
    error = error_text(info)  # after several attempts (retries=), every attempt's error
    if error:
        details["error"] = _clip(error, MAX_ERROR)
    if info.traceback and info.status is TaskStatus.FAILED:
        details["traceback"] = _clip(_name_cells(info.traceback), MAX_TRACEBACK)
    widget = output_widget(worker, task_id)
    if widget is not None:
        details["output"] = output_tail(widget.outputs)
    return details


def details_text(details: Mapping[str, Any]) -> str:
    """The details as plain text (local wall-clock times), for a terminal or ``text/plain``."""
    import datetime

    def when(ms: int | None) -> str:
        if ms is None:
            return "-"
        return datetime.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    lines = [
        f"task {details['name']!r} (id {details['id']}): {details['status']}, "
        f"priority {details['priority']}, {details['progress']:.1f}%",
        f"  arguments: {details['arguments']}",
    ]
    for key, value in details["metadata"]:
        lines.append(f"  metadata {key}: {value}")
    lines += [
        f"  created {when(details['created'])}, started {when(details['started'])}, "
        f"finished {when(details['completed'])}",
        f"  queue wait {secs(details['queue_wait'])}, run time {secs(details['run_time'])}, "
        f"CPU {details['cpu_text']}",
    ]
    if details.get("error"):
        lines.append(f"  error: {details['error']}")
    if details.get("traceback"):
        lines.append(details["traceback"].rstrip("\n"))
    if details.get("output"):
        lines.append("  last output:")
        lines += [f"    {line}" for line in details["output"].split("\n")]
    return "\n".join(lines)


__all__ = [
    "ARGS_RELEASED", "CPU_ASYNC", "MAX_ID", "active_arguments", "cpu_text", "details_text",
    "format_arguments", "output_tail", "output_widget", "register_views", "safe_repr",
    "task_details", "unregister_views",
]
