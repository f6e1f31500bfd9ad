"""``AsyncTaskWorker``: the priority queue, the bounded pool and the task lifecycle."""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import inspect
import itertools
import logging
import math
import operator
import os
import secrets
import sys
import threading
import time
import traceback as _tb
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from types import (
    BuiltinFunctionType,
    CoroutineType,
    FunctionType,
    MappingProxyType,
    MethodType,
    TracebackType,
)
from typing import Any, NamedTuple

from ._events import EventHub, EventKind, Subscriber, TaskEvent
from ._info import TaskInfo
from ._interrupt import INJECT_AFTER
from ._progress import current_sink
from ._record import (
    CANCEL,
    IS_ASYNC,
    SEQ_BITS,
    SEQ_MASK,
    SHUTDOWN,
    STEPPED,
    TIMEOUT,
    WANTS_PROGRESS,
    TaskRecord,
)
from ._registry import _names as _registered_names
from ._registry import resolve
from ._status import TaskStatus
from ._threads import AbandonedThreads, BodyThreads, ThreadRun

logger = logging.getLogger("task_worker")

_PY311 = sys.version_info >= (3, 11)
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_EMPTY_METADATA: Mapping[str, Any] = MappingProxyType({})
_PENDING = TaskStatus.PENDING
_RUNNING = TaskStatus.RUNNING
_COMPLETED = TaskStatus.COMPLETED
_FAILED = TaskStatus.FAILED
_CANCELLED = TaskStatus.CANCELLED
_TERMINAL = (_COMPLETED, _FAILED, _CANCELLED)
_ADDED, _STARTED, _PROGRESS, _FINISHED = (
    EventKind.ADDED, EventKind.STARTED, EventKind.PROGRESS, EventKind.FINISHED,
)
_now = time.time

# Per-function facts, looked up on every add_task: (flags). Bounded so that
# re-run notebook cells defining new functions cannot grow it forever. Keys are
# functions only: a bound method is cached by its function and a partial or a
# callable object is not cached, so the cache never keeps a user's object alive.
_func_flags: dict[Any, int] = {}


def _flags_for(func: Callable[..., Any]) -> int:
    key: Any = func.__func__ if type(func) is MethodType else func
    try:
        return _func_flags[key]
    except (KeyError, TypeError):
        pass
    flags = IS_ASYNC if inspect.iscoroutinefunction(func) else 0
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "progress_callback" in params:
        flags |= WANTS_PROGRESS
    if type(key) in _CACHEABLE:
        if len(_func_flags) >= 4096:
            _func_flags.clear()
        _func_flags[key] = flags
    return flags


_CACHEABLE = (FunctionType, BuiltinFunctionType)


def _check_timeout(timeout: object, what: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, got {timeout!r}")
    value = float(timeout)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive, finite number of seconds, got {timeout!r}")
    return value


def _check_max_workers(max_workers: object) -> int:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int):
        raise TypeError(f"max_workers must be an int, got {max_workers!r}")
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
    return max_workers


def _type_name(exc: BaseException) -> str:
    try:
        return str(type(exc).__name__)
    except BaseException:  # a metaclass with a hostile __getattribute__
        return "exception"


def _format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without the worker's own frames. Never raises."""
    try:
        te = _tb.TracebackException(type(exc), exc, exc.__traceback__)
        frames = [f for f in te.stack if not f.filename.startswith(_PKG_DIR)]
        te.stack = _tb.StackSummary.from_list(frames)
        return "".join(te.format())
    except BaseException:  # formatting runs user code (__str__, __notes__ ...)
        return f"{_type_name(exc)}: <its traceback could not be formatted>\n"


def _error_message(exc: BaseException) -> str:
    """``"Type: message"``, never raising: ``str(exc)`` is user code."""
    name = _type_name(exc)
    try:
        text = str(exc)
    except BaseException:
        return f"{name}: <str() of the exception raised>"
    return f"{name}: {text}" if text else name


class WorkerStats(NamedTuple):
    """A snapshot of the worker as a whole, for views (``AsyncTaskWorker.stats()``)."""

    running: bool
    max_workers: int
    #: Slots in use: bodies running, including cancelled thread bodies still
    #: finishing a C call (they hold their slot until they return).
    busy: int
    counts: Mapping[TaskStatus, int]
    total: int


class AsyncTaskWorker:
    """Runs task functions on the running asyncio loop, at most ``max_workers`` at once.

    Tasks wait in a priority queue (lower ``priority`` first, then submission
    order). Coroutine functions run on the loop; plain functions run in a worker
    thread so they never block it. Every task ends in exactly one of
    ``completed``, ``failed`` or ``cancelled``.

    Args:
        max_workers: How many tasks may run at once (>= 1).
        task_timeout: Default timeout in seconds for every task, or ``None``.
        max_history: Finished tasks kept for inspection; the oldest are dropped first.
        cancel_grace: Seconds ``cancel_task`` / ``stop`` wait for a cancelled body to
            unwind before marking it cancelled anyway. A body that refuses (a thread
            inside a long C call, a coroutine that swallows ``CancelledError``) keeps
            its worker slot until it really returns; its outcome is then discarded.
        executor: Where tasks run by default: ``None`` for this process, or a
            ``distributed.Client`` (see the Dask section of the README).
    """

    def __init__(
        self,
        max_workers: int = 10,
        task_timeout: float | None = None,
        *,
        max_history: int = 10_000,
        cancel_grace: float = 1.0,
        executor: Any = None,
    ) -> None:
        self._max_workers = _check_max_workers(max_workers)
        self._task_timeout = _check_timeout(task_timeout, "task_timeout")
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 0:
            raise ValueError(f"max_history must be a non-negative int, got {max_history!r}")
        self._max_history = max_history
        self._cancel_grace = _check_timeout(cancel_grace, "cancel_grace") or 1.0
        self._executor_default = self._adapt_executor(executor)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._state = "new"  # new -> running -> stopping -> stopped -> running ...
        self._stopped: asyncio.Future[None] | None = None

        # Every known task, in creation order: a TaskRecord while active, its
        # frozen TaskInfo once finished.
        self._tasks: dict[str, TaskRecord | TaskInfo] = {}
        # The queue: a heap of keys (plain ints: cheap to compare, invisible to
        # the garbage collector) and the pending records by key, in creation order.
        self._heap: list[int] = []
        self._queued: dict[int, TaskRecord] = {}
        self._stale = 0  # heap keys whose task is no longer pending
        self._running: dict[str, TaskRecord] = {}
        # Finished snapshots per terminal status, in the order they finished.
        self._finished: dict[TaskStatus, deque[TaskInfo]] = {s: deque() for s in _TERMINAL}
        self._n_finished = 0
        # Job tasks alive, each holding one worker slot.
        self._active: dict[asyncio.Task[None], TaskRecord] = {}
        self._seq = itertools.count()
        # Generated ids: a per-worker random prefix and a counter ("3fa9-1b").
        self._id_prefix = secrets.token_hex(2) + "-"
        self._dispatch_scheduled = False
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._hub = EventHub()
        self._dirty: dict[str, TaskRecord] = {}  # progress to publish this loop turn
        self._threads: BodyThreads | None = None
        self._threads_closer: weakref.finalize[[], AsyncTaskWorker] | None = None
        # Abandoned thread bodies still running (nobody waits for them any more):
        # each keeps its slot until its thread returns and says so.
        self._abandoned = AbandonedThreads(self._thread_freed)

    # ------------------------------------------------------------------ state
    @property
    def max_workers(self) -> int:
        """How many tasks may run at once. Settable; a larger value starts waiting tasks at once."""
        return self._max_workers

    @max_workers.setter
    def max_workers(self, value: int) -> None:
        self._max_workers = _check_max_workers(value)
        if self._state == "running":
            self._dispatch()
        self._emit_worker()

    @property
    def task_timeout(self) -> float | None:
        """Default timeout in seconds for tasks added from now on (``None``: no timeout)."""
        return self._task_timeout

    @task_timeout.setter
    def task_timeout(self, value: float | None) -> None:
        self._task_timeout = _check_timeout(value, "task_timeout")
        self._emit_worker()

    @property
    def max_history(self) -> int:
        """How many finished tasks are kept."""
        return self._max_history

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``: tasks can be added."""
        return self._state == "running"

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the worker runs on, once started."""
        return self._loop

    def stats(self) -> WorkerStats:
        """Counts per status, busy slots and state, in O(1)."""
        counts = {
            _PENDING: len(self._queued),
            _RUNNING: len(self._running),
            _COMPLETED: len(self._finished[_COMPLETED]),
            _FAILED: len(self._finished[_FAILED]),
            _CANCELLED: len(self._finished[_CANCELLED]),
        }
        return WorkerStats(self.running, self._max_workers, len(self._active) + self._abandoned.count,
                           MappingProxyType(counts), len(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __repr__(self) -> str:
        s = self.stats()
        counts = ", ".join(f"{k.value}={v}" for k, v in s.counts.items() if v)
        return (f"<AsyncTaskWorker {self._state} max_workers={self._max_workers} "
                f"busy={s.busy}{', ' + counts if counts else ''}>")

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start accepting and running tasks on the running event loop. Idempotent."""
        self._start(asyncio.get_running_loop())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._state == "running":
            if loop is self._loop:
                return
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError(
                    "this AsyncTaskWorker already runs on another event loop; "
                    "stop() it there first or create a new worker")
            self._abandon_closed_loop()
        if self._state == "stopping":
            raise RuntimeError("the worker is stopping; await stop() before start()")
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._state = "running"
        self._stopped = None
        if self._heap:
            self._schedule_dispatch()
        self._emit_worker()

    def _abandon_closed_loop(self) -> None:
        # The loop we ran on was closed without stop(): its tasks are gone, but
        # thread bodies may still run; they keep their slots until they return.
        for rec in list(self._running.values()):
            if rec.thread is not None:
                rec.thread.abandon(self._abandoned)
            self._finish(rec, _CANCELLED, error="cancelled: its event loop was closed")
        self._active.clear()
        self._close_threads()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker.

        New tasks are refused at once and pending tasks are marked cancelled.
        Running tasks get up to ``timeout`` seconds to finish, then are
        cancelled; those that still have not finished after ``cancel_grace``
        are marked cancelled and abandoned (an abandoned thread keeps counting
        against ``max_workers`` until it returns, also after a restart).
        Returns within ``timeout + cancel_grace`` seconds (plus one loop
        turn). Safe to call again; ``start()`` works afterwards.
        """
        timeout = (_check_timeout(timeout, "timeout") or 0.0) if timeout else 0.0
        if self._state in ("new", "stopped"):
            return
        if self._state == "stopping":
            assert self._stopped is not None
            await asyncio.shield(self._stopped)
            return
        loop = self._loop
        assert loop is not None
        self._state = "stopping"
        self._stopped = loop.create_future()
        self._emit_worker()
        try:
            for rec in list(self._queued.values()):
                self._finish(rec, _CANCELLED, error="cancelled: the worker stopped before it started")
            self._heap.clear()
            self._stale = 0
            if self._active and timeout:
                await asyncio.wait(set(self._active), timeout=timeout)
            for rec in list(self._running.values()):
                self._interrupt(rec, SHUTDOWN, force_after=None)
            if self._active:
                await asyncio.wait(set(self._active), timeout=self._cancel_grace)
            for rec in list(self._running.values()):
                self._finish(rec, _CANCELLED,
                             error="cancelled: the worker stopped and the task did not unwind in time")
            if self._active:
                # A second cancel makes job tasks waiting for a thread stuck in a
                # C call give up waiting (the thread keeps its slot, see
                # _abandoned); they do so in one loop turn, inside the budget of
                # timeout + cancel_grace.
                for job in list(self._active):
                    job.cancel()
                await asyncio.sleep(0)
            if self._active:
                # They keep their slots (and their asyncio tasks) until they return.
                logger.warning(
                    "task_worker: %d task bodies ignored cancellation at stop(); they are abandoned",
                    len(self._active))
        finally:
            self._close_threads()  # bodies still running keep their threads
            self._state = "stopped"
            self._stopped.set_result(None)
            self._wake_idle()
            self._emit_worker()

    async def __aenter__(self) -> AsyncTaskWorker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ adding
    async def add_task(
        self,
        task_func: Callable[..., Any] | str,
        *args: Any,
        priority: int = 0,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        executor: Any = None,
        **kwargs: Any,
    ) -> str:
        """Queue ``task_func(*args, **kwargs)`` and return its task id.

        Args:
            task_func: A coroutine function (runs on the loop), a plain function
                (runs in a worker thread), or a registered task type name.
            priority: Lower runs first; equal priorities run in submission order.
            task_id: A unique id; generated when ``None``.
            metadata: Any mapping, kept (copied, read-only) with the task.
            timeout: Seconds before the task is stopped and ends ``failed`` with
                ``TimeoutError``; defaults to the worker's ``task_timeout``.
            executor: Run this task elsewhere (a ``distributed.Client``).

        A function that declares a ``progress_callback`` parameter receives one;
        any task code can also call ``task_worker.report_progress``.

        Raises:
            RuntimeError: the worker is not started, or is stopping.
            TypeError: ``task_func`` is not callable (or is a coroutine object),
                or an option has the wrong type.
            KeyError: ``task_func`` names no registered task type.
            ValueError: ``task_id`` is taken, or ``timeout`` is not positive.
        """
        return self._add(task_func, args, kwargs, priority, task_id, metadata, timeout, executor)

    def add_task_nowait(
        self,
        task_func: Callable[..., Any] | str,
        *args: Any,
        priority: int = 0,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        executor: Any = None,
        **kwargs: Any,
    ) -> str:
        """``add_task`` for synchronous callers on the loop's thread (callbacks, magics)."""
        return self._add(task_func, args, kwargs, priority, task_id, metadata, timeout, executor)

    def _add(
        self, task_func: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any],
        priority: int, task_id: str | None, metadata: Mapping[str, Any] | None,
        timeout: float | None, executor: Any,
    ) -> str:
        if type(task_func) is FunctionType:  # the common case, kept cheap
            func: Callable[..., Any] = task_func
            name = _registered_names.get(func) or func.__name__
            flags = _func_flags.get(func)
            if flags is None:
                flags = _flags_for(func)
        else:
            if isinstance(task_func, CoroutineType):
                task_func.close()  # it will never run: no "never awaited" warning
                raise TypeError(
                    "add_task() needs a coroutine *function*, not a coroutine object: "
                    "pass `func, *args` instead of `func(*args)`")
            func, name = resolve(task_func)
            flags = _flags_for(func)
        if type(priority) is not int:
            raise TypeError(f"priority must be an int, got {priority!r}")
        if timeout is None:
            timeout = self._task_timeout
        else:
            timeout = _check_timeout(timeout, "timeout")
        if metadata is None:
            meta = _EMPTY_METADATA
        elif isinstance(metadata, Mapping):
            meta = MappingProxyType(dict(metadata))
        else:
            raise TypeError(f"metadata must be a mapping or None, got {metadata!r}")
        tasks = self._tasks
        seq = next(self._seq)
        if task_id is None:
            task_id = f"{self._id_prefix}{seq:x}"
            while task_id in tasks:  # a caller chose an id of our form
                task_id = f"{self._id_prefix}{next(self._seq):x}"
        elif type(task_id) is not str or not task_id:
            raise TypeError(f"task_id must be a non-empty str or None, got {task_id!r}")
        elif task_id in tasks:
            raise ValueError(f"a task with id {task_id!r} already exists")
        if executor is not None:
            executor = self._adapt_executor(executor)
        else:
            executor = self._executor_default
        if self._state != "running":
            self._raise_not_running()
        key = (priority << SEQ_BITS) | seq
        rec = TaskRecord(self, task_id, name, func, args, kwargs or None, key, meta, timeout,
                         _now(), contextvars.copy_context(), flags, executor)
        tasks[task_id] = rec
        self._queued[key] = rec
        heapq.heappush(self._heap, key)
        if not self._dispatch_scheduled:
            self._schedule_dispatch()
        if self._hub.active:
            self._hub.emit(TaskEvent(_ADDED, rec.snapshot()))
        return task_id

    def _raise_not_running(self) -> None:
        if self._state == "new":
            raise RuntimeError(
                "the worker is not started: `await worker.start()` first, "
                "or use `async with AsyncTaskWorker() as worker:`")
        raise RuntimeError(
            f"the worker is {self._state}: it accepts no new tasks; "
            "`await worker.start()` to use it again")

    @staticmethod
    def _adapt_executor(executor: Any) -> Any:
        if executor is None:
            return None
        from ._executors import adapt_executor

        return adapt_executor(executor)

    # ---------------------------------------------------------------- running
    def _schedule_dispatch(self) -> None:
        # Deferred to the next loop turn so that a burst of add_task calls is
        # started in priority order, not in the order the first few arrived.
        self._dispatch_scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._dispatch_soon)

    def _dispatch_soon(self) -> None:
        self._dispatch_scheduled = False
        if self._state == "running":
            self._dispatch()

    def _dispatch(self) -> None:
        heap = self._heap
        queued = self._queued
        active = self._active
        limit = self._max_workers - self._abandoned.count
        while heap and len(active) < limit:
            rec = queued.pop(heapq.heappop(heap), None)
            if rec is None:
                self._stale -= 1
                continue
            self._launch(rec)

    def _launch(self, rec: TaskRecord) -> None:
        loop = self._loop
        assert loop is not None and rec.ctx is not None
        rec.status = _RUNNING
        rec.started = _now()
        self._running[rec.id] = rec
        if _PY311:
            task = loop.create_task(self._run(rec), context=rec.ctx)
        else:  # pragma: no cover - Python 3.10
            task = rec.ctx.run(loop.create_task, self._run(rec))
        rec.task = task
        self._active[task] = rec
        if rec.timeout is not None:
            rec.timer = loop.call_later(rec.timeout, self._on_timeout, rec)
        if self._hub.active:
            self._hub.emit(TaskEvent(_STARTED, rec.snapshot()))

    async def _run(self, rec: TaskRecord) -> None:
        # The job's asyncio task. It releases its own slot (no done callback:
        # one loop callback less per task). Only the worker cancels it, and
        # never before this first step (see _interrupt), so the finally below
        # always runs.
        rec.flags |= STEPPED
        try:
            if rec.cancel_reason is not None:  # cancelled before its first step
                self._finish_stopped(rec)
                return
            current_sink.set(rec)
            func = rec.func
            assert func is not None
            args, kwargs = rec.args, rec.kwargs
            # A remote executor passes its own progress_callback: a closure over
            # this worker cannot travel to another process.
            if (rec.flags & WANTS_PROGRESS and rec.executor is None
                    and not (kwargs and "progress_callback" in kwargs)):
                kwargs = {**(kwargs or {}), "progress_callback": self._progress_callback(rec)}
            try:
                if rec.executor is not None:
                    result = await rec.executor.run(func, args, kwargs or {}, self._progress_callback(rec))
                elif rec.flags & IS_ASYNC:
                    result = await (func(*args, **kwargs) if kwargs else func(*args))
                else:
                    ok, result = await self._run_in_thread(rec, func, args, kwargs or {})
                    if not ok:
                        # Raised and caught in this frame: a StopIteration stays one
                        # (out of a coroutine it would become a RuntimeError).
                        raise result
                    if inspect.isawaitable(result):  # a plain function that returned a coroutine
                        result = await result
            except asyncio.CancelledError:
                reason = rec.cancel_reason
                self._finish_stopped(rec)
                if reason is None:
                    raise  # not a cancellation we asked for: let it propagate
            except BaseException as exc:
                # Also ThreadInterrupted: ours when a cancel reason is set, else
                # the body raised it itself and simply failed.
                if rec.cancel_reason is not None:
                    self._finish_stopped(rec)
                else:
                    self._finish(rec, _FAILED, exc=exc)
            else:
                if rec.cancel_reason is not None:
                    self._finish_stopped(rec)
                else:
                    self._finish(rec, _COMPLETED, result=result)
        finally:
            # Release the slot and start the next task, in this same step.
            if self._active.pop(rec.task, None) is not None and self._heap:  # type: ignore[arg-type]
                if self._state == "running":
                    self._dispatch()

    async def _run_in_thread(
        self, rec: TaskRecord, func: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[bool, Any]:
        """Run a sync body in its own thread; ``(True, result)`` or ``(False, exception)``."""
        loop = self._loop
        assert loop is not None
        threads = self._threads
        if threads is None:
            threads = self._open_threads()
        run = ThreadRun(loop.create_future())
        rec.thread = run
        # The thread gets a copy of the task's context: report_progress and
        # output routing work there, as with asyncio.to_thread.
        ctx = contextvars.copy_context()
        threads.submit(ctx.run, run.main, loop, func, args, kwargs)
        try:
            return await asyncio.shield(run.done)
        except asyncio.CancelledError:
            run.request_stop()
            loop.call_later(INJECT_AFTER, run.inject)
            # Hold the worker slot until the thread has really stopped, so that
            # no more than max_workers bodies ever run.
            try:
                await asyncio.shield(run.done)
            except asyncio.CancelledError:
                # Cancelled again (stop): stop waiting, but the thread keeps
                # counting against max_workers until it returns.
                run.abandon(self._abandoned)
                raise
            raise

    def _open_threads(self) -> BodyThreads:
        threads = self._threads = BodyThreads("task_worker")
        # A worker dropped without stop(): its idle threads exit with it.
        self._threads_closer = weakref.finalize(self, threads.shutdown)
        return threads

    def _close_threads(self) -> None:
        if self._threads_closer is not None:
            self._threads_closer()  # shuts the threads down, once
            self._threads_closer = None
        self._threads = None

    def _thread_freed(self) -> None:
        # Called in an abandoned body's thread once it returned and gave its
        # slot back: start waiting tasks on whatever loop the worker runs on now.
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._dispatch_soon_unflagged)
        except RuntimeError:  # closed: the next start() dispatches
            pass

    def _dispatch_soon_unflagged(self) -> None:
        if self._heap and self._state == "running":
            self._dispatch()

    def _progress_callback(self, rec: TaskRecord) -> Callable[[float], None]:
        from ._progress import check_fraction

        def progress_callback(fraction: float) -> None:
            self._report(rec, check_fraction(fraction))

        return progress_callback

    def _report(self, rec: TaskRecord, fraction: float) -> None:
        """Record progress (any thread). Events are merged to one per task per loop turn."""
        if rec.cancel_reason is not None:
            raise asyncio.CancelledError(f"task {rec.id!r} was cancelled")
        if rec.info is not None:
            return  # finished (a detached body still reporting)
        rec.progress = fraction
        hub = self._hub
        if not hub.progress_wanted and rec.id not in hub.task_progress:
            return
        dirty = self._dirty
        if rec.id in dirty:
            return
        first = not dirty
        dirty[rec.id] = rec
        if first:
            assert self._loop is not None
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._flush_progress)
            else:
                self._loop.call_soon_threadsafe(self._flush_progress)

    def _flush_progress(self) -> None:
        dirty, self._dirty = self._dirty, {}
        emit = self._hub.emit
        for rec in dirty.values():
            if rec.info is None:
                emit(TaskEvent(_PROGRESS, rec.snapshot()))

    def _on_timeout(self, rec: TaskRecord) -> None:
        rec.timer = None
        if rec.status is _RUNNING:
            self._interrupt(rec, TIMEOUT, force_after=self._cancel_grace)

    def _interrupt(self, rec: TaskRecord, reason: str, force_after: float | None) -> None:
        if rec.cancel_reason is None:
            rec.cancel_reason = reason
        if rec.task is not None and rec.flags & STEPPED:
            # Not before its first step: _run then sees cancel_reason itself.
            rec.task.cancel()
        if force_after is not None and self._loop is not None:
            self._loop.call_later(force_after, self._force_finish, rec)

    def _force_finish(self, rec: TaskRecord) -> None:
        if rec.info is None:
            self._finish_stopped(rec, note=" (its body did not stop in time and was abandoned)")

    def _finish_stopped(self, rec: TaskRecord, note: str = "") -> None:
        reason = rec.cancel_reason
        if reason == TIMEOUT:
            exc = TimeoutError(f"task {rec.id!r} timed out after {rec.timeout:g} s{note}")
            self._finish(rec, _FAILED, exc=exc, keep_traceback=False)
        elif reason == SHUTDOWN:
            self._finish(rec, _CANCELLED, error=f"cancelled: the worker stopped{note}")
        elif reason == CANCEL:
            self._finish(rec, _CANCELLED, error=f"cancelled{note}")
        else:
            self._finish(rec, _CANCELLED, error=f"cancelled from outside the worker{note}")

    def _finish(
        self, rec: TaskRecord, status: TaskStatus, *, result: Any = None,
        exc: BaseException | None = None, error: str | None = None, keep_traceback: bool = True,
    ) -> None:
        """Move ``rec`` to its terminal ``status`` exactly once."""
        if rec.info is not None:
            return
        prev = rec.status
        if prev is _PENDING:
            del self._queued[rec.key]
            self._stale += 1
            if self._stale > 1024 and self._stale * 2 > len(self._heap):
                self._compact_heap()
        else:
            del self._running[rec.id]
        if rec.timer is not None:
            rec.timer.cancel()
            rec.timer = None
        rec.status = status
        tb = None
        if exc is not None:
            # User code (__str__, __repr__, __notes__ ...) that may raise: never
            # allowed to abort the finish half way.
            error = _error_message(exc)
            if keep_traceback:
                tb = _format_traceback(exc)
        progress = 1.0 if status is _COMPLETED else rec.progress
        key = rec.key
        info = TaskInfo._make((
            rec.id, rec.name, status, key >> SEQ_BITS, progress, result, error, exc, tb,
            rec.metadata, rec.created, rec.started, _now(), key & SEQ_MASK,
        ))
        rec.info = info
        # Drop what the record no longer needs (arguments can be large).
        rec.func = None
        rec.args = ()
        rec.kwargs = None
        rec.ctx = None
        self._tasks[rec.id] = info
        self._finished[status].append(info)
        self._n_finished += 1
        if rec.waiter is not None and not rec.waiter.done():
            rec.waiter.set_result(info)
        if self._hub.active:
            self._hub.emit(TaskEvent(_FINISHED, info))
        if self._n_finished > self._max_history:
            self._trim_history()
        if self._idle_waiters and not self._queued and not self._running:
            self._wake_idle()

    def _compact_heap(self) -> None:
        queued = self._queued
        self._heap = [k for k in self._heap if k in queued]
        heapq.heapify(self._heap)
        self._stale = 0

    def _trim_history(self) -> None:
        queues = [q for q in self._finished.values()]
        while self._n_finished > self._max_history:
            # The oldest finished task is at the front of one of the three queues.
            oldest = min((q for q in queues if q), key=lambda q: q[0][12])
            self._drop(oldest.popleft())

    def _drop(self, info: TaskInfo) -> None:
        del self._tasks[info[0]]
        self._n_finished -= 1
        if self._hub.active:
            self._hub.emit(TaskEvent(EventKind.REMOVED, info))

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _emit_worker(self) -> None:
        if self._hub.active:
            self._hub.emit(TaskEvent(EventKind.WORKER, None))

    # ------------------------------------------------------------- cancelling
    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a pending or running task.

        A pending task is removed from the queue and never starts. A running
        coroutine gets ``CancelledError`` at its next ``await``; a running
        thread body is interrupted (see ``report_progress`` and the README's
        note on C calls). Returns once the task has finished unwinding, or
        after ``cancel_grace`` seconds if it refuses (it is then marked
        cancelled and abandoned).

        Returns:
            True if the task was pending or running and is now cancelled;
            False for an unknown or already finished task.
        """
        rec = self._cancel(task_id)
        if rec is None:
            return False
        if rec.info is None:
            fut = self._waiter(rec)
            try:
                await asyncio.wait_for(asyncio.shield(fut), self._cancel_grace)
            except asyncio.TimeoutError:
                self._force_finish(rec)
        return True

    def cancel_task_nowait(self, task_id: str) -> bool:
        """Request cancellation without waiting (for sync callers such as button handlers).

        Returns whether the task was pending or running. A pending task is
        cancelled at once; a running one is told to stop and is marked
        cancelled when it has unwound (or after ``cancel_grace``).
        """
        return self._cancel(task_id) is not None

    def _cancel(self, task_id: str) -> TaskRecord | None:
        rec = self._tasks.get(task_id)
        if type(rec) is not TaskRecord:
            return None
        if rec.status is _PENDING:
            self._finish(rec, _CANCELLED, error="cancelled before it started")
        elif rec.cancel_reason is None:
            self._interrupt(rec, CANCEL, force_after=self._cancel_grace)
        return rec

    # ---------------------------------------------------------------- waiting
    def _waiter(self, rec: TaskRecord) -> asyncio.Future[TaskInfo]:
        if rec.waiter is None:
            assert self._loop is not None
            rec.waiter = self._loop.create_future()
        return rec.waiter

    async def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for a task and return its result.

        Raises:
            KeyError: unknown task id.
            ValueError, TypeError: ``timeout`` is not a positive number or None.
            asyncio.CancelledError: the task was cancelled.
            TimeoutError: ``timeout`` seconds passed first (the task goes on).
            Exception: whatever the task raised (``TimeoutError`` if it timed out).
            RuntimeError: the task raised a ``BaseException`` that is not an
                ``Exception`` (``SystemExit``, ``KeyboardInterrupt`` ...) or a
                ``StopIteration``, which is its ``__cause__``: raised as it is, it
                would stop the event loop (or could not leave a coroutine).
        """
        timeout = _check_timeout(timeout, "timeout")
        item = self._tasks.get(task_id)
        if item is None:
            raise KeyError(f"no task with id {task_id!r}")
        if type(item) is TaskRecord:
            info = await asyncio.wait_for(asyncio.shield(self._waiter(item)), timeout)
        else:
            info = item  # type: ignore[assignment]
        return _outcome(info)

    def get_task_future(self, task_id: str) -> asyncio.Future[Any]:
        """A future resolving to the task's result (or raising its exception), as in the
        original API. Prefer ``await worker.wait(task_id)``."""
        if task_id not in self._tasks:
            raise KeyError(f"no task with id {task_id!r}")
        fut = asyncio.ensure_future(self.wait(task_id))
        fut.add_done_callback(_consume)
        return fut

    def get_task_futures(self, task_ids: Iterable[str]) -> list[asyncio.Future[Any]]:
        """``get_task_future`` for several ids."""
        return [self.get_task_future(t) for t in task_ids]

    async def join(self) -> None:
        """Return when no task is pending or running."""
        if not self._queued and not self._running:
            return
        assert self._loop is not None
        fut = self._loop.create_future()
        self._idle_waiters.append(fut)
        await fut

    # ----------------------------------------------------------------- queries
    def get_task_info(self, task_id: str) -> TaskInfo | None:
        """A snapshot of the task, or ``None`` for an unknown id."""
        item = self._tasks.get(task_id)
        if item is None or isinstance(item, TaskInfo):
            return item
        return item.snapshot()

    def get_all_tasks(
        self,
        status: TaskStatus | str | Collection[TaskStatus | str] | None = None,
        limit: int | None = None,
        older_than: timedelta | None = None,
    ) -> list[TaskInfo]:
        """Snapshots of known tasks, newest (by creation) first.

        Args:
            status: Keep only this status (a ``TaskStatus`` or its value) or these statuses.
            limit: Return at most this many (the newest).
            older_than: Keep only tasks created more than this long ago.

        Costs time in proportion to what it returns (per-status indexes).
        """
        statuses = _parse_statuses(status)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
            if limit == 0:
                return []
        cutoff = None
        if older_than is not None:
            if not isinstance(older_than, timedelta):
                raise TypeError(f"older_than must be a datetime.timedelta, got {older_than!r}")
            cutoff = _now() - older_than.total_seconds()

        if statuses is None:
            return _newest(reversed(self._tasks.values()), limit, cutoff)
        sizes = self._index_sizes(statuses)
        matches = sum(sizes)
        if matches == 0:
            return []
        total = len(self._tasks)
        if limit is not None and limit * total < matches * matches:
            # Few wanted and matches are common: scanning newest-first is cheaper than sorting.
            wanted = frozenset(statuses)
            it = (x for x in reversed(self._tasks.values()) if x.status in wanted)
            return _newest(it, limit, cutoff)
        items: list[TaskInfo] = []
        for s in statuses:
            items.extend(self._index_items(s))
        items.sort(key=_seq_key, reverse=True)
        if cutoff is not None:
            items = [i for i in items if i[10] < cutoff]
        return items if limit is None else items[:limit]

    def get_queue(self, limit: int | None = None) -> list[TaskInfo]:
        """Pending tasks in the order they will start (cost O(n log limit)).

        Raises:
            ValueError: ``limit`` is not a non-negative int or None.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
        queued = self._queued
        if limit is None:
            keys = sorted(queued)
        else:
            # Walk the heap lazily, smallest first: O((limit + stale) log n).
            heap = self._heap
            size = len(heap)
            keys = []
            frontier = [(heap[0], 0)] if heap else []
            while frontier and len(keys) < limit:
                key, i = heapq.heappop(frontier)
                if key in queued:
                    keys.append(key)
                for child in (2 * i + 1, 2 * i + 2):
                    if child < size:
                        heapq.heappush(frontier, (heap[child], child))
        return [queued[k].snapshot() for k in keys]

    def get_running(self) -> list[TaskInfo]:
        """Running tasks, in the order they started."""
        return [r.snapshot() for r in self._running.values()]

    def _index_sizes(self, statuses: list[TaskStatus]) -> list[int]:
        out = []
        for s in statuses:
            if s is _PENDING:
                out.append(len(self._queued))
            elif s is _RUNNING:
                out.append(len(self._running))
            else:
                out.append(len(self._finished[s]))
        return out

    def _index_items(self, status: TaskStatus) -> Iterable[TaskInfo]:
        if status is _PENDING:
            return [r.snapshot() for r in self._queued.values()]
        if status is _RUNNING:
            return [r.snapshot() for r in self._running.values()]
        return self._finished[status]

    def clear(self, older_than: timedelta | None = None) -> int:
        """Drop finished tasks (those that finished more than ``older_than`` ago, if
        given) from the history. Pending and running tasks are never dropped.

        Returns how many were dropped.
        """
        cutoff = None
        if older_than is not None:
            if not isinstance(older_than, timedelta):
                raise TypeError(f"older_than must be a datetime.timedelta, got {older_than!r}")
            cutoff = _now() - older_than.total_seconds()
        dropped = 0
        for queue in self._finished.values():
            # Each queue is in finishing order: the ones to drop are at its front.
            while queue and (cutoff is None or queue[0][12] < cutoff):
                self._drop(queue.popleft())
                dropped += 1
        return dropped

    # ------------------------------------------------------------------- views
    def dashboard(self, **options: Any) -> Any:
        """A live ``TaskDashboard`` widget of this worker (needs ``task_worker[jupyter]``)."""
        from ._dashboard import TaskDashboard

        factory: Any = TaskDashboard
        return factory(self, **options)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        # display(worker) shows a live dashboard, with a text table as fallback.
        from ._table import worker_mimebundle

        return worker_mimebundle(self, include, exclude)

    # ------------------------------------------------------------------ events
    def subscribe(
        self, callback: Subscriber, *, task_id: str | None = None, progress: bool = True,
    ) -> Callable[[], None]:
        """Call ``callback(event)`` for every change; returns a function that unsubscribes.

        Events (``TaskEvent``) carry a ``kind`` and a ``TaskInfo`` snapshot.
        Status changes are delivered once each, in order; progress events are
        merged to at most one per task per loop turn. Callbacks run on the
        loop's thread and must not block; one that raises (anything, even
        ``SystemExit``) is logged and stays subscribed.

        Args:
            task_id: Only events of this task (a per-cell view), at O(1) cost
                per event whatever the number of such subscribers.
            progress: ``False`` to receive no progress events. When nobody
                wants them, ``report_progress`` only stores the value.
        """
        return self._hub.subscribe(callback, task_id=task_id, progress=progress)


# Creation order of a snapshot (C-level getter: this key runs once per item sorted).
_seq_key = operator.itemgetter(13)


def _newest(items: Iterable[TaskRecord | TaskInfo], limit: int | None,
            cutoff: float | None) -> list[TaskInfo]:
    out: list[TaskInfo] = []
    for item in items:
        info = item.snapshot() if isinstance(item, TaskRecord) else item
        if cutoff is not None and info[10] >= cutoff:
            continue
        out.append(info)
        if limit is not None and len(out) >= limit:
            break
    return out


def _parse_statuses(status: object) -> list[TaskStatus] | None:
    if status is None:
        return None
    if isinstance(status, (str, TaskStatus)):
        return [TaskStatus.parse(status)]
    if isinstance(status, Iterable):
        return list(dict.fromkeys(TaskStatus.parse(s) for s in status))
    raise TypeError(f"status must be a TaskStatus, its string value, or a collection of them, got {status!r}")


def _outcome(info: TaskInfo) -> Any:
    status = info[2]
    if status is _COMPLETED:
        return info[5]
    if status is _FAILED:
        exc = info[7]
        if isinstance(exc, Exception) and not isinstance(exc, StopIteration):
            raise exc
        # SystemExit, KeyboardInterrupt...: asyncio re-raises those out of the
        # event loop (killing a kernel) when they leave a coroutine. A
        # StopIteration cannot leave one (Python turns it into a RuntimeError).
        raise RuntimeError(
            f"task {info[0]!r} failed with {_error_message(exc)}") from exc
    raise asyncio.CancelledError(info[6] or "cancelled")


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


__all__ = ["AsyncTaskWorker", "WorkerStats"]
