"""``TaskDashboard``: a live view of a worker's tasks, as one anywidget model (this module
imports anywidget; which rows to show, each row's JSON and the text table are in ``_table``).

The kernel side (this module) listens to the worker's events, decides which
rows are shown and sends only what changed, at most once per ``interval``
(0.1 s). The browser side (``static/dashboard.js`` and ``dashboard.css``)
renders the rows, ticks elapsed times by itself and sends button clicks back.

Protocol (custom messages on the widget's comm):

* kernel -> browser ``{"type": "patch", "seq", "now", "upsert": [row...],
  "progress": [[id, percent]...], "remove": [id...], "header": {...}}``; only
  the keys that carry something are present. ``"snapshot"`` messages carry
  ``rows`` (all of them) instead and replace the browser's state. Patches may
  also carry ``"eta": [[id, finish_ms or null]...]`` (``_eta``), ``"finished":
  [[id, name, status, ran_ms, completed_ms]...]`` (tasks to notify, ``_notify``)
  and ``"timeline"`` (changes since the last flush, ``_timeline``); the header
  may carry ``"eta"`` (the whole queue's estimated finish). ``{"type":
  "timeline"}`` messages carry the full timeline, with one binary buffer.
* browser -> kernel ``{"type": "sync"}`` (a view asks for a snapshot when it
  renders, so a view opened late shows the current state), ``{"type":
  "timeline"}`` (the timeline tab opened: send it in full, then its changes),
  ``{"type": "cancel", "id"}``, ``{"type": "cancel_all"}``, ``{"type": "clear_finished"}``,
  ``{"type": "details", "id", "view"}`` (a view asks for a task's details; the
  reply ``{"type": "details", "id", "view", "details"}`` goes to every view of
  the model, as all comm messages do, and only the view whose token ``view`` it
  carries shows it; ``details`` is ``None`` for a task the worker no longer
  knows; see ``_details``).
  The filters (``status_filter``, and ``text_filter``, see ``_search``) and the
  Notify toggle (``notify``) are the only synced state the browser may set. A
  state update carrying anything else (``_rows``,
  ``_header``, ``task_id``, ``note``, ...) has those keys ignored, and an
  invalid filter is refused: the kernel keeps its value and sends it back to
  every view as the echo of that update.

Stable hooks for browser tests (kept exact on purpose):

* the root element has class ``tw-dashboard``, plus ``tw-single`` in
  single-task mode;
* each task row has ``data-task-id`` and ``data-status`` (class ``tw-row``);
* its Cancel button has class ``tw-cancel`` and text ``Cancel``; it is
  enabled only while the task is pending or running;
* its progress bar has ``role="progressbar"`` and ``aria-valuenow`` (0..100,
  0.1 resolution);
* header counts are elements with ``data-count-<status>`` whose value is the count
  (for example ``data-count-running="3"``);
* ``tw-cancel-all``, ``tw-clear-finished`` (buttons), ``tw-filter`` (a
  ``select``), ``tw-more`` (the "N more" line), ``tw-note`` (the note text),
  ``tw-error`` (a failed task's message) and ``tw-traceback`` (a ``details``);
* a ``%%task`` view's output area (an ``ipywidgets.Output``) has class
  ``tw-task-output``;
* a row's details pane (opened by clicking the row) has class ``tw-details``
  and ``data-task-id``; each of its fields is a ``[data-field=NAME]`` element;
  column headers that sort have ``data-sort`` (the key) and ``aria-sort``; the
  text filter box has class ``tw-search``.

Every piece of user text (names, ids, metadata, errors, tracebacks) is set with
``textContent`` in the browser, never parsed as HTML.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import anywidget
import traitlets as t

from ._details import MAX_ID, task_details
from ._eta import EtaTracker, queue_estimate
from ._events import EventKind, TaskEvent
from ._info import TaskInfo
from ._notify import MAX_FINISHED_PER_PATCH, NOTIFY_AFTER, check_notify_after, parse_notify
from ._search import check_text_filter, select_matching
from ._status import TaskStatus
from ._table import (
    TERMINAL_VALUES,
    cancel_all,
    check_filter,
    epoch_ms,
    make_row,
    only_progress_differs,
    progress_percent,
    row_order,
    select_rows,
    text_table,
    worker_text,
)
from ._timeline import StarveRecorder, TimelineFeed
from ._worker import AsyncTaskWorker

logger = logging.getLogger("task_worker")

_STATIC = pathlib.Path(__file__).parent / "static"
#: The browser side, concatenated into one ES module in this order: each feature's
#: script defines top-level functions that ``dashboard.js`` (last: it has the
#: ``export default``) uses.
_ESM_PARTS: tuple[str, ...] = ("details.js", "eta.js", "timeline.js", "notify.js", "dashboard.js")

#: The synced traits the browser may set, with their checks; everything else it sends is ignored.
_FRONTEND_TRAITS: dict[str, Callable[[object], str]] = {
    "status_filter": check_filter, "text_filter": check_text_filter, "notify": parse_notify}
_PROGRESS = EventKind.PROGRESS
_FINISHED = EventKind.FINISHED
_REMOVED = EventKind.REMOVED
_STARTED = EventKind.STARTED
_RUNNING = TaskStatus.RUNNING


class _Handle(Protocol):
    def cancel(self) -> object: ...


CallLater = Callable[[float, Callable[..., object], Any], _Handle]


class _FilterError(t.TraitError, ValueError):
    """An invalid ``status_filter``, ``notify`` or ``notify_after`` (a ``ValueError`` that
    traitlets rolls back)."""


def _flush_ref(ref: weakref.ReferenceType[TaskDashboard]) -> None:
    # Timers hold the dashboard weakly: a pending flush must not keep it alive.
    dash = ref()
    if dash is not None:
        dash._timer_fired()


class TaskDashboard(anywidget.AnyWidget):
    """A live table of a worker's tasks, with a Cancel button per task.

    Args:
        worker: The ``AsyncTaskWorker`` to show.
        task_id: Show only this task, compactly (single-task mode, used by
            ``%%task`` cells): no header, no controls.
        max_rows: Rows shown at most; the rest are counted in an "N more" line.
        status_filter: Show only tasks with this status (``""``: all).
            Settable, also from the browser's filter menu.
        text_filter: Show only tasks whose name, id or metadata contain this text
            (ignoring case; ``""``: all), chosen among all the worker's tasks.
            Settable, also from the browser's filter box.
        interval: Shortest time in seconds between two updates sent to the browser.

    Rows: running tasks first, then pending ones in the order they will
    start, then the most recently finished. Updates are coalesced: at most
    one message per ``interval`` whatever the task rate, carrying only the
    rows that changed. ``close()`` unsubscribes from the worker; a
    dashboard that is garbage collected unsubscribes too (the worker only
    holds it weakly).
    """

    # The package files' text, not their paths: for a path anywidget 0.11
    # connects a lambda holding the widget to a class-level file watcher
    # signal, so no instance could ever be garbage collected.
    _esm = "\n".join((_STATIC / part).read_text(encoding="utf-8") for part in _ESM_PARTS)
    _css = (_STATIC / "dashboard.css").read_text(encoding="utf-8")

    task_id = t.Unicode("").tag(sync=True)
    status_filter = t.Unicode("").tag(sync=True)
    text_filter = t.Unicode("").tag(sync=True)
    #: A short line of text shown under the table (the %%task view sets it when starved).
    note = t.Unicode("").tag(sync=True)
    #: Outcomes to notify in the browser when a task finishes ("", "completed", "failed" or
    #: "completed,failed"; see ``_notify``). Settable, also from the browser's Notify toggle.
    notify = t.Unicode("").tag(sync=True)
    #: Seconds a task must have run to be notified while the page is visible.
    notify_after = t.Float(NOTIFY_AFTER).tag(sync=True)
    # Full state for a new front end (comm_open / request_state). Mutated in
    # place on every flush so that it is current without being re-sent.
    _rows = t.Dict().tag(sync=True)
    _header = t.Dict().tag(sync=True)

    def __init__(
        self,
        worker: AsyncTaskWorker,
        *,
        task_id: str | None = None,
        max_rows: int = 200,
        status_filter: str = "",
        text_filter: str = "",
        interval: float = 0.1,
        _clock: Callable[[], float] | None = None,
        _call_later: CallLater | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(worker, AsyncTaskWorker):
            raise TypeError(f"TaskDashboard needs an AsyncTaskWorker, got {worker!r}")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be a positive int, got {max_rows!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (
                0 <= interval <= 60):
            raise ValueError(f"interval must be a number of seconds in [0, 60], got {interval!r}")
        if task_id is not None:
            if not isinstance(task_id, str) or not task_id:
                raise TypeError(f"task_id must be a non-empty str or None, got {task_id!r}")
            if task_id not in worker:
                raise KeyError(f"no task with id {task_id!r}")
        status_filter = check_filter(status_filter)
        text_filter = check_text_filter(text_filter)
        self._worker = worker
        self._single = task_id
        self._max_rows = max_rows
        self._interval = float(interval)
        self._clock = _clock or time.monotonic
        self._call_later_hook = _call_later
        self._closed = False
        self._ready = False  # trait observers fire during super().__init__
        self._handle: _Handle | None = None
        self._last_flush = -float("inf")
        self._seq = 0
        self._dirty: dict[str, TaskInfo] = {}
        self._membership_dirty = False
        self._recent: OrderedDict[str, TaskInfo] = OrderedDict()
        self._selecting_filter = status_filter
        self._text = text_filter
        self._matching = 0  # tasks matching the text filter, at the last selection
        self._eta = EtaTracker()
        self._timeline = TimelineFeed(worker)
        self._starve: StarveRecorder | None = None
        self._finished_notes: list[list[Any]] = []
        self._fill_recent(status_filter)
        infos = self._select(status_filter)
        rows = {info.id: make_row(info) for info in infos}
        header = self._make_header(len(rows), status_filter)
        super().__init__(
            task_id=task_id or "", status_filter=status_filter, text_filter=text_filter, _rows=rows,
            _header=header, **kwargs)
        self._rows_state: dict[str, dict[str, Any]] = self._rows
        self._header_state: dict[str, Any] = self._header
        self.on_msg(self._on_frontend_msg)
        self._unsubscribe = _subscribe_weakly(self, worker)
        self._ready = True

    # ------------------------------------------------------------ queries
    @property
    def worker(self) -> AsyncTaskWorker:
        """The worker shown."""
        return self._worker

    @property
    def max_rows(self) -> int:
        """Rows shown at most."""
        return self._max_rows

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows as the browser has them (after the last flush), in display order."""
        return sorted(self._rows_state.values(), key=row_order)

    @property
    def header(self) -> dict[str, Any]:
        """Counts per status, busy / max workers, running, shown and hidden rows."""
        return dict(self._header_state)

    def __repr__(self) -> str:
        what = f"task {self._single!r}" if self._single else f"{len(self._rows_state)} rows"
        state = "closed" if self._closed else "live"
        return f"<TaskDashboard {state} {what} of {self._worker!r}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data["text/plain"] = self.text()
        return data, metadata

    def text(self) -> str:
        """The rows as a plain-text table (what a text-only front end shows)."""
        if self._single:
            info = self._worker.get_task_info(self._single)
            return text_table([info] if info is not None else [])
        return worker_text(self._worker, self._max_rows)

    # ------------------------------------------------------------ actions
    def cancel_all(self) -> int:
        """Cancel every pending, then every running task (without waiting).
        Returns how many were asked to cancel."""
        return len(cancel_all(self._worker))

    def clear_finished(self) -> int:
        """Drop finished tasks from the worker's history; returns how many."""
        return self._worker.clear()

    def flush(self) -> None:
        """Send pending changes now instead of at the next tick."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._flush()

    def close(self) -> None:
        """Stop listening to the worker, cancel the timer and close the widget."""
        if not getattr(self, "_closed", True):
            self._closed = True
            unsubscribe = getattr(self, "_unsubscribe", None)
            if unsubscribe is not None:
                unsubscribe()
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self._dirty.clear()
            if self._starve is not None:
                self._starve.stop()
        super().close()

    # ------------------------------------------------------------- events
    def _on_event(self, event: TaskEvent) -> None:
        kind, info = event
        if info is None:  # WORKER: header only
            if not self._single:
                self._schedule()
            return
        task_id = info.id
        if kind is _FINISHED and self.notify:
            self._note_finished(info)
        if self._single is not None:
            if task_id != self._single:
                return
            if kind is not _REMOVED:  # a dropped task keeps its last row
                self._schedule()
            return
        if kind is _PROGRESS:
            if task_id in self._rows_state:
                self._dirty[task_id] = info
                self._schedule()
            return
        if kind is _REMOVED:  # (the feed records nothing until a view opened the timeline)
            self._timeline.note_removed(task_id)
        else:
            self._timeline.note(info)
        if kind is _STARTED:
            self._watch_starvation()
        if kind is _FINISHED:
            flt = self.status_filter
            if not flt or flt == info.status.value:
                recent = self._recent
                recent[task_id] = info
                if len(recent) > self._max_rows:
                    recent.popitem(last=False)
        elif kind is _REMOVED:
            self._recent.pop(task_id, None)
        self._membership_dirty = True
        self._schedule()

    def _schedule(self) -> None:
        if self._handle is not None or self._closed or not self._ready:
            return
        delay = max(0.0, self._last_flush + self._interval - self._clock())
        hook = self._call_later_hook
        if hook is not None:
            self._handle = hook(delay, _flush_ref, weakref.ref(self))
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            # No loop (a reconfiguration from plain synchronous code): send now.
            self._flush()
            return
        self._handle = loop.call_later(delay, _flush_ref, weakref.ref(self))

    def _timer_fired(self) -> None:
        self._handle = None
        self._flush()

    # -------------------------------------------------------------- flush
    def _fill_recent(self, status_filter: str) -> None:
        self._recent.clear()
        if self._single is not None or status_filter not in ("", *TERMINAL_VALUES):
            return
        statuses = TERMINAL_VALUES if not status_filter else (status_filter,)
        infos = self._worker.get_all_tasks(status=statuses, limit=self._max_rows)
        for info in sorted(infos, key=lambda i: i.completed_ts or 0.0):
            self._recent[info.id] = info

    def _select(self, status_filter: str) -> list[TaskInfo]:
        if self._single is not None:
            # A task dropped from the history keeps its last row.
            info = self._worker.get_task_info(self._single)
            return [info] if info is not None else []
        if self._text:
            infos, self._matching = select_matching(
                self._worker, status_filter, self._text, self._max_rows)
            return infos
        return select_rows(self._worker, status_filter, self._max_rows,
                            reversed(self._recent.values()))

    def _make_header(self, shown: int, status_filter: str) -> dict[str, Any]:
        if self._single is not None:
            return {}
        s = self._worker.stats()
        counts = {k.value: v for k, v in s.counts.items()}
        if self._text:
            matching = self._matching
        else:
            matching = counts[status_filter] if status_filter else s.total
        header = {
            "running": s.running, "busy": s.busy, "max_workers": s.max_workers,
            "counts": counts, "total": s.total, "shown": shown,
            "more": max(0, matching - shown),
        }
        eta = self._queue_eta(counts["pending"], counts["running"])
        if eta is not None:
            header["eta"] = eta
        return header

    def _flush(self) -> None:
        self._last_flush = self._clock()
        if self._closed:
            return
        rows = self._rows_state
        dirty, self._dirty = self._dirty, {}
        upsert: list[dict[str, Any]] = []
        progress: list[list[Any]] = []
        remove: list[str] = []
        eta: list[list[Any]] = []
        now = time.time()
        if self._membership_dirty or self._single is not None:
            self._membership_dirty = False
            infos = self._select(self.status_filter)
            if self._single is None:
                wanted = {info.id for info in infos}
                remove = [task_id for task_id in rows if task_id not in wanted]
                for task_id in remove:
                    del rows[task_id]
                    self._eta.drop(task_id)
        else:
            infos = []
            for task_id, info in dirty.items():
                old = rows.get(task_id)
                if old is None:
                    continue
                self._track_eta(info, now, eta)
                if old["status"] != info.status.value:
                    infos.append(info)
                    continue
                # Progress of a row otherwise unchanged: no need to rebuild it.
                pct = progress_percent(info)
                if pct != old["progress"]:
                    old["progress"] = pct
                    progress.append([task_id, pct])
        for info in infos:
            self._track_eta(info, now, eta)
            new = make_row(info)
            old = rows.get(info.id)
            if old == new:
                continue
            rows[info.id] = new
            if old is not None and only_progress_differs(old, new):
                progress.append([new["id"], new["progress"]])
            else:
                upsert.append(new)
        msg: dict[str, Any] = {}
        header = self._make_header(len(rows), self.status_filter)
        if header != self._header_state:
            self._header_state.clear()
            self._header_state.update(header)
            msg["header"] = header
        if upsert:
            msg["upsert"] = upsert
        if progress:
            msg["progress"] = progress
        if remove:
            msg["remove"] = remove
        if eta:
            msg["eta"] = eta
        if self._finished_notes:
            msg["finished"], self._finished_notes = self._finished_notes, []
        if self._timeline.active:
            delta = self._timeline.take_delta()
            if delta is not None:
                msg["timeline"] = delta
        if msg:
            self._seq += 1
            msg.update(type="patch", seq=self._seq, now=epoch_ms(time.time()))
            self.send(msg)

    def _send_snapshot(self) -> None:
        self.flush()
        eta = [[task_id, epoch_ms(self._eta.shown(task_id))] for task_id in self._rows_state
               if self._eta.shown(task_id) is not None]
        self.send({
            "type": "snapshot", "seq": self._seq, "now": epoch_ms(time.time()),
            "rows": list(self._rows_state.values()), "header": dict(self._header_state),
            "eta": eta,
        })

    # ------------------------------------------- ETA, timeline, notifications
    def _track_eta(self, info: TaskInfo, now: float, out: list[list[Any]]) -> None:
        # At most once per shown row per flush: never on the worker's hot path.
        task_id = info.id
        if info.status is _RUNNING:
            if self._eta.observe(task_id, info.started_ts, info.progress, now):
                out.append([task_id, epoch_ms(self._eta.shown(task_id))])
        elif task_id in self._eta:
            self._eta.drop(task_id)

    def _queue_eta(self, pending: int, running: int) -> int | None:
        rows = getattr(self, "_rows_state", None)
        if rows is None or not running:
            return None
        shown = self._eta.shown
        at = queue_estimate((shown(r["id"]) for r in rows.values() if r["status"] == "running"),
                            pending=pending, running=running)
        return epoch_ms(at)

    def _note_finished(self, info: TaskInfo) -> None:
        # Only the outcomes asked for: "completed" and/or "failed", never "cancelled" (see _notify).
        status = info.status
        if status.value not in self.notify.split(","):
            return
        if len(self._finished_notes) >= MAX_FINISHED_PER_PATCH:
            return
        started, completed = info.started_ts, info.completed_ts
        ran = 0 if started is None or completed is None else max(0, round((completed - started) * 1000))
        self._finished_notes.append([info.id, info.name[:120], status.value, ran, epoch_ms(completed)])
        self._schedule()

    def _send_timeline(self) -> None:
        self.flush()
        msg, buffers = self._timeline.full()
        msg["seq"] = self._seq
        self.send(msg, buffers)

    def _watch_starvation(self) -> None:
        loop = self._worker.loop
        if self._starve is not None and self._starve.loop is not loop:
            self._starve.stop()  # the worker was restarted on another loop
            self._starve = None
        if self._starve is None:
            if loop is None:
                return
            ref = weakref.ref(self)
            worker = self._worker

            def busy() -> bool:
                dash = ref()
                return dash is not None and not dash._closed and worker.stats().busy > 0

            def on_starved(start: float, end: float) -> None:
                dash = ref()
                if dash is not None:
                    dash._on_starved(start, end)

            self._starve = StarveRecorder(loop, busy, on_starved)
        self._starve.arm()

    def _on_starved(self, start: float, end: float) -> None:
        self._timeline.note_starved(start, end)
        if self._timeline.active:
            self._schedule()

    # ---------------------------------------------------------- front end
    @t.validate("status_filter")
    def _valid_filter(self, proposal: Any) -> str:
        try:
            return check_filter(proposal["value"])
        except ValueError as exc:
            # A TraitError (that is also the ValueError callers expect) makes
            # traitlets roll back when validation runs at the end of a hold.
            raise _FilterError(str(exc)) from None

    def set_state(self, sync_data: Mapping[str, Any]) -> None:
        """Apply a state update from the browser (ipywidgets calls this for every
        ``update`` message of the comm).

        The browser owns only ``status_filter``: other keys are ignored, so the
        rows, header and task id new views receive are always the kernel's. An
        invalid filter changes nothing. What was refused is sent back with the
        kernel's values to every view, as the echo of this update (the sender
        waits for that echo), so the sender is back in sync too.
        """
        accepted: dict[str, Any] = {}
        refused: list[str] = []
        for name, value in sync_data.items():
            check = _FRONTEND_TRAITS.get(name)
            if check is None:
                if name in self.keys:
                    logger.warning("TaskDashboard: ignoring %r from the front end (kernel-owned)", name)
                    refused.append(name)
                continue
            try:
                accepted[name] = check(value)
            except ValueError as exc:
                logger.warning("TaskDashboard: refusing a front-end value: %s", exc)
                refused.append(name)
        if accepted:
            super().set_state(accepted)
        if refused:
            # Plain JSON (no binary buffers among these traits).
            self._send({"method": "echo_update", "state": self.get_state(refused), "buffer_paths": []})

    @t.validate("text_filter")
    def _valid_text_filter(self, proposal: Any) -> str:
        try:
            return check_text_filter(proposal["value"])
        except ValueError as exc:
            raise _FilterError(str(exc)) from None

    @t.validate("notify")
    def _valid_notify(self, proposal: Any) -> str:
        try:
            return parse_notify(proposal["value"])
        except ValueError as exc:
            raise _FilterError(str(exc)) from None

    @t.validate("notify_after")
    def _valid_notify_after(self, proposal: Any) -> float:
        try:
            return check_notify_after(proposal["value"])
        except ValueError as exc:
            raise _FilterError(str(exc)) from None

    @t.observe("status_filter")
    def _filter_changed(self, change: Any) -> None:
        if self._single is not None:
            return
        self._fill_recent(change["new"])
        self._membership_dirty = True
        self._schedule()

    @t.observe("text_filter")
    def _text_filter_changed(self, change: Any) -> None:
        self._text = change["new"]
        if self._single is not None:
            return
        self._membership_dirty = True
        self._schedule()

    def details(self, task_id: str) -> dict[str, Any] | None:
        """What the details pane shows for ``task_id`` (see ``_details.task_details``);
        ``None`` for an unknown task, or another task than a single-task view's own."""
        if self._single is not None and task_id != self._single:
            return None
        return task_details(self._worker, task_id)

    def _send_details(self, content: dict[str, Any]) -> None:
        # Front-end values may be anything: a wrong one gets no reply at all.
        task_id, view = content.get("id"), content.get("view")
        if not (isinstance(task_id, str) and 0 < len(task_id) <= MAX_ID
                and isinstance(view, str) and 0 < len(view) <= 64):
            logger.debug("TaskDashboard: ignoring a bad details request %r", content)
            return
        if self._single is not None and task_id != self._single:
            return
        self.send({"type": "details", "id": task_id, "view": view, "details": self.details(task_id)})

    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict) or self._closed:
            return
        kind = content.get("type")
        if kind == "cancel":
            task_id = content.get("id")
            if isinstance(task_id, str) and (self._single is None or task_id == self._single):
                self._worker.cancel_task_nowait(task_id)
        elif kind == "sync":
            self._send_snapshot()
        elif kind == "details":
            self._send_details(content)
        elif self._single is not None:
            return  # the compact view has no other controls
        elif kind == "cancel_all":
            self.cancel_all()
        elif kind == "clear_finished":
            self.clear_finished()
        elif kind == "timeline":
            self._send_timeline()
        else:
            logger.debug("TaskDashboard: ignoring front-end message %r", content)


def _subscribe_weakly(dash: TaskDashboard, worker: AsyncTaskWorker) -> Callable[[], None]:
    """Subscribe ``dash._on_event`` holding ``dash`` weakly; returns the unsubscriber.

    The subscription ends on ``close()``, or when the dashboard is collected.
    """
    ref = weakref.ref(dash)
    unsubscribe: Callable[[], None]
    # Fast path for the common case, progress of a task not shown: the rows dict
    # is mutated in place, never replaced, so it can be captured here.
    shown: dict[str, Any] = dash._rows_state
    single: str | None = dash._single

    def on_event(event: TaskEvent) -> None:
        kind, info = event
        if info is not None and (
                info.id != single if single is not None else kind is _PROGRESS and info.id not in shown):
            return
        target = ref()
        if target is None:
            unsubscribe()
            return
        target._on_event(event)

    # A single-task view subscribes to its own task only: a notebook with many
    # %%task cells costs nothing extra per event.
    unsubscribe = worker.subscribe(on_event, task_id=single)
    finalizer = weakref.finalize(dash, unsubscribe)
    finalizer.atexit = False
    return finalizer  # calling it unsubscribes once and detaches the finalizer


__all__ = ["TaskDashboard"]
