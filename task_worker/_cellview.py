"""The view a ``%%task`` cell shows: the dashboard in single-task mode over the task's output area.

``TaskCellView`` composes ``TaskDashboard(worker, task_id=...)`` (name, priority,
status, progress, elapsed, Cancel, and a note line that says when the task was
starved) over an ``ipywidgets.Output`` that the task's ``TaskOutput`` fills.
``CellViews`` owns every view of one extension: one worker subscription shows
each task's result or traceback when it finishes, and one loop-lag heartbeat
(armed only while a viewed task runs) notices when the loop was blocked.
"""

from __future__ import annotations

import asyncio
import traceback as _tb
from collections.abc import Callable, Iterator
from typing import Any

from ._cellcode import user_traceback
from ._details import register_views, unregister_views
from ._events import EventKind, TaskEvent
from ._info import TaskInfo
from ._output import TaskOutput, run_routed
from ._status import TaskStatus
from ._worker import AsyncTaskWorker

#: A heartbeat that fires this much later than asked means the loop was blocked.
STARVED_AFTER = 1.0
HEARTBEAT = 0.25


class TaskCellView:
    """What one ``%%task`` cell displays; ``close()`` closes every widget it made.

    Args:
        worker: The worker running the task.
        task_id: The task shown.
        output: The task's output area (``ipywidgets.Output``), already receiving output.
        sink: The ``TaskOutput`` feeding ``output``.
        show_result: Display the task's result when it completes (a cell ending in
            ``;`` does not, as in IPython).
    """

    def __init__(self, worker: AsyncTaskWorker, task_id: str, output: Any, sink: TaskOutput, *,
                 show_result: bool = True) -> None:
        import ipywidgets

        from ._dashboard import TaskDashboard

        self.worker = worker
        self.task_id = task_id
        self.output = output
        self.sink = sink
        self.show_result = show_result
        #: Longest loop blockage seen while the task ran, in seconds (0: none).
        self.starved_for = 0.0
        self.dashboard = TaskDashboard(worker, task_id=task_id)
        # Its output area stops growing at 24em and scrolls (dashboard.css).
        output.add_class("tw-task-output")
        self.widget = ipywidgets.VBox([self.dashboard, output])
        self.closed = False

    def __repr__(self) -> str:
        return f"<TaskCellView {self.task_id!r}{' closed' if self.closed else ''}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        # Where widgets cannot render (nbclient, a terminal): the task's row as text.
        return {**data, "text/plain": self.dashboard.text()}, meta

    def note_starved(self, seconds: float) -> None:
        """Record that the loop was blocked for ``seconds`` while the task ran."""
        if self.closed or seconds < self.starved_for + 0.1:
            return
        self.starved_for = seconds
        self.dashboard.note = (
            f"starved: the event loop was blocked for {seconds:.1f} s (longest) while this task "
            "ran, e.g. by a cell running blocking code; async tasks and this view were paused")

    def finished(self, info: TaskInfo, format_value: Callable[[Any], Formatted],
                 format_error: Callable[[BaseException], tuple[str, str, list[str]]]) -> None:
        """Show the outcome in the output area: the result, or the traceback.

        Formatting runs user code (the result's ``_repr_*_`` and ``__repr__``):
        its errors are shown here, as IPython shows them under a cell, and
        whatever they raise, the view is flushed and nothing escapes to the worker.
        """
        if self.closed:
            return
        try:
            run_routed(self.sink, self._show_outcome, info, format_value, format_error)
        finally:
            self.sink.flush()

    def _show_outcome(self, info: TaskInfo, format_value: Callable[[Any], Formatted],
                      format_error: Callable[[BaseException], tuple[str, str, list[str]]]) -> None:
        if info.status is TaskStatus.COMPLETED and self.show_result and info.result is not None:
            data, metadata, errors = format_value(info.result)
            for exc in errors:
                self.sink.error(*format_error(exc))
            if errors and "text/plain" not in data:
                data["text/plain"] = _placeholder(info.result, errors[-1])
            if data:
                self.sink.display(data, metadata)
        elif info.status is TaskStatus.FAILED and info.exception is not None:
            self.sink.error(*format_error(info.exception))

    def close(self) -> None:
        """Close the widgets (the view disappears from the page) and drop pending output."""
        if self.closed:
            return
        self.closed = True
        self.sink.close()
        for w in (self.widget, self.output, self.dashboard):
            w.close()


class LoopLagMonitor:
    """A heartbeat on the loop, armed only while it has views to tell: a beat that
    comes ``threshold`` seconds late means the loop was blocked that long."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, interval: float = HEARTBEAT,
                 threshold: float = STARVED_AFTER) -> None:
        self.loop = loop
        self.interval = interval
        self.threshold = threshold
        self._views: dict[int, TaskCellView] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def armed(self) -> bool:
        """True while a heartbeat is scheduled."""
        return self._handle is not None

    def watch(self, view: TaskCellView) -> None:
        """Tell ``view`` about blockages from now on."""
        self._views[id(view)] = view
        if self._handle is None:
            self._arm()

    def unwatch(self, view: TaskCellView) -> None:
        """Stop telling ``view``; the heartbeat stops with the last view."""
        self._views.pop(id(view), None)
        if not self._views:
            self.stop()

    def stop(self) -> None:
        """Forget all views and cancel the heartbeat."""
        self._views.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        self._due = self.loop.time() + self.interval
        self._handle = self.loop.call_later(self.interval, self._beat)

    def _beat(self) -> None:
        self._handle = None
        lag = self.loop.time() - self._due
        if lag >= self.threshold:
            for view in list(self._views.values()):
                view.note_starved(lag)
        if self._views:
            self._arm()


class CellViews:
    """Every ``TaskCellView`` of one shell, with the event plumbing they share."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._views: dict[tuple[int, str], TaskCellView] = {}
        self._subscriptions: dict[int, tuple[AsyncTaskWorker, Callable[[], None]]] = {}
        self._monitors: dict[int, LoopLagMonitor] = {}

    def __len__(self) -> int:
        return len(self._views)

    def __iter__(self) -> Iterator[TaskCellView]:
        """The open views, oldest first."""
        return iter(list(self._views.values()))

    def get(self, worker: AsyncTaskWorker, task_id: str) -> TaskCellView | None:
        """The view of ``task_id``, if it has one."""
        return self._views.get((id(worker), task_id))

    def create(self, worker: AsyncTaskWorker, task_id: str, output: Any, sink: TaskOutput, *,
               show_result: bool = True) -> TaskCellView:
        """Build and keep the view of a task just added to ``worker``."""
        view = TaskCellView(worker, task_id, output, sink, show_result=show_result)
        register_views(self)  # task details show the last lines of these output areas
        key = (id(worker), task_id)
        if id(worker) not in self._subscriptions:
            # Status changes only: progress events are the dashboard's business.
            unsubscribe = worker.subscribe(lambda ev: self._on_event(worker, ev), progress=False)
            self._subscriptions[id(worker)] = (worker, unsubscribe)
        self._views[key] = view
        info = worker.get_task_info(task_id)
        if info is None or info.done:  # finished before we were listening
            if info is not None:
                view.finished(info, self._format_value, self._format_error)
        elif info.status is TaskStatus.RUNNING:
            self._monitor(worker).watch(view)
        return view

    def _monitor(self, worker: AsyncTaskWorker) -> LoopLagMonitor:
        loop = worker.loop
        assert loop is not None
        mon = self._monitors.get(id(loop))
        if mon is None or mon.loop is not loop:
            mon = self._monitors[id(loop)] = LoopLagMonitor(loop)
        return mon

    def _on_event(self, worker: AsyncTaskWorker, event: TaskEvent) -> None:
        kind = event.kind
        if kind is not EventKind.STARTED and kind is not EventKind.FINISHED:
            return
        info = event.info
        assert info is not None
        view = self._views.get((id(worker), info.id))
        if view is None:
            return
        if kind is EventKind.STARTED:
            self._monitor(worker).watch(view)
        else:
            if worker.loop is not None:
                self._monitor(worker).unwatch(view)
            view.finished(info, self._format_value, self._format_error)

    def _format_value(self, value: Any) -> Formatted:
        return format_result(self.shell.display_formatter, value)

    def _format_error(self, exc: BaseException) -> tuple[str, str, list[str]]:
        tb = user_traceback(exc.__traceback__)
        try:
            # tb_offset=0: ``tb`` already starts at the cell's frame (IPython 8
            # would otherwise skip it as if it were its own runner's frame).
            lines = self.shell.InteractiveTB.structured_traceback(type(exc), exc, tb, tb_offset=0)
        except Exception:  # a broken formatter must not hide the error
            lines = _tb.format_exception(type(exc), exc, tb)
        return type(exc).__name__, _safe_str(exc), list(lines)

    def close_all(self) -> None:
        """Close every view, unsubscribe and stop the heartbeats."""
        unregister_views(self)
        for _, unsubscribe in self._subscriptions.values():
            unsubscribe()
        self._subscriptions.clear()
        for mon in self._monitors.values():
            mon.stop()
        self._monitors.clear()
        views, self._views = list(self._views.values()), {}
        for view in views:
            view.close()


#: What ``format_result`` returns: mime data, metadata, and the errors user code raised.
Formatted = tuple[dict[str, Any], dict[str, Any], list[BaseException]]


class _Unguarded:
    """Calls one of IPython's formatters without IPython's own error handler.

    That handler (``catch_format_error``) prints the traceback with the shell's
    ``showtraceback``, which sends it to whichever cell is current and marks a
    cell that is executing as failed. Here the error is collected instead, to be
    shown in the task's own view.
    """

    def __init__(self, formatter: Any, errors: list[BaseException]) -> None:
        self.formatter = formatter
        self.errors = errors
        # The undecorated method (functools.wraps keeps it); absent: IPython handles errors.
        self.raw = getattr(type(formatter).__call__, "__wrapped__", None)

    def __call__(self, obj: Any, **kwargs: Any) -> Any:
        formatter = self.formatter
        if self.raw is None:
            return formatter(obj, **kwargs)
        try:
            result = self.raw(formatter, obj, **kwargs)
        except NotImplementedError:
            result = None
        except BaseException as exc:  # (user code: reported, not propagated)
            self.errors.append(exc)
            result = None
        try:
            return formatter._check_return(result, obj)
        except Exception as exc:  # an invalid return type (a FormatterWarning raised as an error)
            self.errors.append(exc)
            return formatter._check_return(None, obj)


def format_result(display_formatter: Any, value: Any) -> Formatted:
    """``display_formatter.format(value)`` (IPython's rules: ``_ipython_display_``,
    ``_repr_mimebundle_``, then each enabled formatter, registered printers first),
    returning the errors that user code raised instead of printing them.

    A result whose ``_repr_html_`` raises keeps its other formats; one whose
    ``__repr__`` raises has no ``text/plain``.
    """
    errors: list[BaseException] = []
    if _Unguarded(display_formatter.ipython_display_formatter, errors)(value):
        return {}, {}, errors  # it displayed itself
    data, metadata = _Unguarded(display_formatter.mimebundle_formatter, errors)(value)
    data, metadata = dict(data), dict(metadata)
    for mime, formatter in display_formatter.formatters.items():
        if mime in data:
            try:
                formatter.lookup(value)
            except KeyError:  # no printer registered for this mime: the bundle's value stands
                continue
            except Exception as exc:
                errors.append(exc)
                continue
        result = _Unguarded(formatter, errors)(value)
        meta = None
        if isinstance(result, tuple) and len(result) == 2:
            result, meta = result
        if result is not None:
            data[mime] = result
        if meta is not None:
            metadata[mime] = meta
    # What cannot travel to the browser would break the output area for good (every later
    # sync of its state would fail): drop it, and say so.
    for mime in list(data):
        try:
            _dumps(data[mime])
        except Exception as exc:
            del data[mime]
            metadata.pop(mime, None)
            errors.append(TypeError(f"the {mime} representation cannot be sent to the browser: {exc}"))
    return data, metadata, errors


def _dumps(value: Any) -> str:
    """JSON as the kernel's messages encode it (bytes, dates and numbers allowed)."""
    import json

    default: Callable[[Any], Any] | None
    try:
        from jupyter_client.jsonutil import json_default as default
    except ImportError:  # no kernel machinery: plain JSON
        default = None
    return json.dumps(value, default=default, allow_nan=False)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:  # (a broken __str__ must not hide the error)
        return f"<{type(exc).__name__}: str() failed>"


def _placeholder(value: Any, error: BaseException) -> str:
    """A ``text/plain`` stand-in for a value that could not be represented."""
    try:
        what = f"{type(value).__module__}.{type(value).__qualname__}"
    except BaseException:  # (a hostile metaclass)
        what = "unknown"
    return f"<{what} object at {id(value):#x}: its repr raised {type(error).__name__}>"


__all__ = ["CellViews", "LoopLagMonitor", "TaskCellView", "format_result"]
