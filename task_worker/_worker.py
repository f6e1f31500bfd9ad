"""``AsyncTaskWorker``: its lifecycle, adding, dispatching and running tasks, stopping
them (cancel, timeout, stop), and waiting. Its data structures live in ``_history``
(the task table, with the pending queue of ``_queue``) and ``_threads`` (sync bodies)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from types import CoroutineType, FunctionType, MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from ._chains import (
    DEFAULT_RETRY_ON,
    Chain,
    ChainInfo,
    RetryPolicy,
    active_dependents,
    dependency_reason,
    dependents_note,
    resolve_after,
)
from ._checks import (
    check_limit,
    check_max_history,
    check_max_workers,
    check_timeout,
    flags_for,
    func_flags,
    parse_statuses,
)
from ._events import EventHub, EventKind, Subscriber, TaskEvent
from ._history import TaskTable, cutoff_for
from ._info import TaskInfo, new_info
from ._interrupt import INJECT_AFTER
from ._outcome import error_message, format_traceback, outcome
from ._progress import check_fraction, current_sink
from ._record import IS_ASYNC, SEQ_BITS, SEQ_MASK, STEPPED, WANTS_PROGRESS, CancelReason, TaskRecord
from ._registry import registered_name, resolve
from ._status import TaskStatus
from ._threads import ThreadBodies

if TYPE_CHECKING:
    from ._dashboard import TaskDashboard

logger = logging.getLogger("task_worker")

_PY311 = sys.version_info >= (3, 11)
#: Python 3.12+: start a job's first step inside ``_dispatch`` (``asyncio.Task(eager_start=True)``).
_EAGER = sys.version_info >= (3, 12)
_Task: Any = asyncio.Task  # its eager_start parameter is unknown to type stubs before 3.12
_current_task = asyncio.current_task
_EMPTY_METADATA: Mapping[str, Any] = MappingProxyType({})
_PENDING = TaskStatus.PENDING
_RUNNING = TaskStatus.RUNNING
_COMPLETED = TaskStatus.COMPLETED
_FAILED = TaskStatus.FAILED
_CANCELLED = TaskStatus.CANCELLED
_ADDED, _STARTED, _PROGRESS, _FINISHED, _REMOVED = (
    EventKind.ADDED, EventKind.STARTED, EventKind.PROGRESS, EventKind.FINISHED, EventKind.REMOVED,
)
_CANCELLED_BY_USER = CancelReason.CANCELLED
_TIMED_OUT = CancelReason.TIMED_OUT
_WORKER_STOPPED = CancelReason.WORKER_STOPPED
_now = time.time
#: ``add_task``'s chain options. They arrive in ``**kwargs`` (so they are not the task
#: function's, exactly as explicit keyword parameters would be): five more keyword
#: parameters cost every ``add_task`` call about 0.15 us to fill in, this costs a task
#: without keyword arguments one truth test.
CHAIN_OPTIONS = frozenset({"after", "retries", "retry_delay", "retry_backoff", "retry_on"})
_chain_free = CHAIN_OPTIONS.isdisjoint
#: Seconds between two ``waiting`` events of a task in its retry delay (the countdown).
RETRY_TICK = 1.0


class WorkerStats(NamedTuple):
    """A snapshot of the worker as a whole, for views (``AsyncTaskWorker.stats()``)."""

    running: bool
    max_workers: int
    #: Slots in use: bodies running, including cancelled thread bodies still
    #: finishing a C call (they hold their slot until they return).
    busy: int
    counts: Mapping[TaskStatus, int]
    total: int
    #: Live ``subscribe()`` subscriptions (dashboards, cell views ...).
    subscribers: int = 0


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
        self._max_workers = check_max_workers(max_workers)
        self._task_timeout = check_timeout(task_timeout, "task_timeout")
        self._max_history = check_max_history(max_history)
        self._cancel_grace = check_timeout(cancel_grace, "cancel_grace") or 1.0
        self._executor_default = self._adapt_executor(executor)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._state = "new"  # new -> running -> stopping -> stopped -> running ...
        self._stopped: asyncio.Future[None] | None = None

        self._table = TaskTable(max_history, self._on_drop)
        # The asyncio task of every started body ("job"), each holding one slot.
        self._jobs: dict[asyncio.Task[None], TaskRecord] = {}
        self._threads = ThreadBodies("task_worker", self._on_abandoned_return)
        # The table's and the thread bodies' parts read on every task, at hand.
        self._pending = self._table.pending
        self._running_recs = self._table.running
        self._abandoned = self._threads.abandoned
        self._seq = itertools.count()
        # Generated ids: a per-worker random prefix and a counter ("3fa9-1b").
        self._id_prefix = secrets.token_hex(2) + "-"
        #: A caller gave an id starting with ``_id_prefix``: generated ids are checked.
        self._chosen_like_ours = False
        self._dispatch_scheduled = False
        #: 1 while an eager first step runs in _dispatch: the slot it holds.
        self._starting = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._hub = EventHub()
        self._dirty: dict[str, TaskRecord] = {}  # progress to publish this loop turn

    # ------------------------------------------------------------------ state
    @property
    def max_workers(self) -> int:
        """How many tasks may run at once. Settable; a larger value starts waiting tasks at once."""
        return self._max_workers

    @max_workers.setter
    def max_workers(self, value: int) -> None:
        self._max_workers = check_max_workers(value)
        if self._state == "running":
            self._dispatch()
        self._emit_worker()

    @property
    def task_timeout(self) -> float | None:
        """Default timeout in seconds for tasks added from now on (``None``: no timeout)."""
        return self._task_timeout

    @task_timeout.setter
    def task_timeout(self, value: float | None) -> None:
        self._task_timeout = check_timeout(value, "task_timeout")
        self._emit_worker()

    @property
    def max_history(self) -> int:
        """How many finished tasks are kept."""
        return self._max_history

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``: the worker accepts and runs tasks."""
        return self._state == "running"

    @property
    def stopping(self) -> bool:
        """True while ``stop()`` runs: no task is accepted and ``start()`` must wait for it."""
        return self._state == "stopping"

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the worker runs on, once started."""
        return self._loop

    def stats(self) -> WorkerStats:
        """Counts per status, busy slots, subscriptions and state, in O(1)."""
        return WorkerStats(self.running, self._max_workers,
                           len(self._jobs) + self._starting + self._abandoned.count,
                           MappingProxyType(self._table.counts()), len(self._table), len(self._hub))

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._table

    def __repr__(self) -> str:
        s = self.stats()
        counts = ", ".join(f"{k.value}={v}" for k, v in s.counts.items() if v)
        return (f"<AsyncTaskWorker {self._state} max_workers={self._max_workers} "
                f"busy={s.busy}{', ' + counts if counts else ''}>")

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start accepting and running tasks on the running event loop. Idempotent.

        Raises:
            RuntimeError: the worker is stopping, or runs on another (open) loop.
        """
        self._start(asyncio.get_running_loop())

    def start_nowait(self) -> None:
        """``start()`` for synchronous code running on the event loop (callbacks,
        magics, ``task_worker.get_worker()``).

        Raises:
            RuntimeError: no event loop runs in this thread, the worker is
                stopping, or it runs on another (open) loop.
        """
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
        if self._table.pending:
            self._schedule_dispatch()
        self._emit_worker()

    def _abandon_closed_loop(self) -> None:
        # The loop we ran on was closed without stop(): its tasks are gone, but
        # thread bodies may still run; they keep their slots until they return.
        for rec in list(self._table.running.values()):
            if rec.thread is not None:
                rec.thread.abandon(self._abandoned)
            self._end(rec, _CANCELLED, error="cancelled: its event loop was closed")
        for rec in list(self._table.waiting.values()):
            # Retry delays timed on the closed loop: retry now, on the new one.
            if rec.chain is not None and rec.chain.retry_at is not None and rec.info is None:
                if rec.timer is not None:
                    rec.timer.cancel()
                    rec.timer = None
                rec.chain.retry_at = None
                self._table.unpark(rec)
        self._jobs.clear()
        self._threads.close()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker.

        New tasks are refused at once and pending tasks are marked cancelled.
        Running tasks get up to ``timeout`` seconds to finish, then are
        cancelled; those that still have not finished after ``cancel_grace``
        are marked cancelled and abandoned (an abandoned thread keeps counting
        against ``max_workers`` until it returns, also after a restart).
        Returns within ``timeout + cancel_grace`` seconds (plus one loop turn
        for bodies that ignore cancellation). Safe to call again; ``start()``
        works afterwards.

        Raises:
            ValueError, TypeError: ``timeout`` is not a non-negative number.
        """
        timeout = (check_timeout(timeout, "timeout") or 0.0) if timeout else 0.0
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
        table = self._table
        try:
            # Parked tasks first (they are the dependents), each for this reason, not
            # for its dependency's: none is left to cascade to.
            parked = list(table.waiting.values())
            for rec in parked:
                if rec.chain is not None:
                    rec.chain.dependents = None
            for rec in parked:
                self._end(rec, _CANCELLED, error=(
                    "cancelled: the worker stopped before it started" if rec.started is None
                    else "cancelled: the worker stopped during its retry delay"))
            for rec in list(table.pending):
                self._end(rec, _CANCELLED, error="cancelled: the worker stopped before it started")
            table.pending.clear()
            if self._jobs and timeout:
                await asyncio.wait(set(self._jobs), timeout=timeout)
            for rec in list(table.running.values()):
                self._tell_to_stop(rec, _WORKER_STOPPED, give_up_after=None)
            if self._jobs:
                await asyncio.wait(set(self._jobs), timeout=self._cancel_grace)
            for rec in list(table.running.values()):
                self._end(rec, _CANCELLED,
                          error="cancelled: the worker stopped and the task did not unwind in time")
            if self._jobs:
                # A second cancel makes jobs waiting for a thread stuck in a C
                # call give up waiting (the thread keeps its slot, see
                # ThreadBodies.wait); they do so in one loop turn.
                for job in list(self._jobs):
                    job.cancel()
                await asyncio.sleep(0)
            if self._jobs:
                # They keep their slots (and their asyncio tasks) until they return.
                logger.warning(
                    "task_worker: %d task bodies ignored cancellation at stop(); they are abandoned",
                    len(self._jobs))
        finally:
            self._threads.close()  # bodies still running keep their threads
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
    if TYPE_CHECKING:
        # What type checkers and editors see: the chain options as the keyword
        # parameters they are. At run time they travel in ``**kwargs`` (below):
        # five more keyword parameters would cost every call, chained or not.
        async def add_task(
            self, task_func: Callable[..., Any] | str, *args: Any, priority: int = 0,
            task_id: str | None = None, metadata: Mapping[str, Any] | None = None,
            timeout: float | None = None, executor: Any = None,
            after: str | Iterable[str] | None = None, retries: int = 0, retry_delay: float = 1.0,
            retry_backoff: float = 2.0,
            retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
            **kwargs: Any,
        ) -> str: ...

        def add_task_nowait(
            self, task_func: Callable[..., Any] | str, *args: Any, priority: int = 0,
            task_id: str | None = None, metadata: Mapping[str, Any] | None = None,
            timeout: float | None = None, executor: Any = None,
            after: str | Iterable[str] | None = None, retries: int = 0, retry_delay: float = 1.0,
            retry_backoff: float = 2.0,
            retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
            **kwargs: Any,
        ) -> str: ...
    else:
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

            ``add_task(func, *args, priority=0, task_id=None, metadata=None, timeout=None,
            executor=None, after=None, retries=0, retry_delay=1.0, retry_backoff=2.0,
            retry_on=(Exception,), **kwargs)``

            Args:
                task_func: A coroutine function (runs on the loop), a plain function
                    (runs in a worker thread), or a registered task type name.
                priority: Lower runs first; equal priorities run in submission order.
                task_id: A unique id; generated when ``None``.
                metadata: Any mapping, kept (copied, read-only) with the task.
                timeout: Seconds before the task is stopped and ends ``failed`` with
                    ``TimeoutError``; defaults to the worker's ``task_timeout``.
                executor: Run this task elsewhere (a ``distributed.Client``).
                after: A task id or name, or a collection of them: the task stays
                    ``pending`` (holding no slot, ``info.waiting_for`` says for what)
                    until every one of them completed, then competes by priority as
                    usual. A name means the newest task with that name now. If one
                    fails or is cancelled, this task is cancelled (and what waits on it).
                retries: Attempts to make again after an attempt raised one of
                    ``retry_on`` (never ``CancelledError``; the task's own timeout only
                    if ``retry_on`` names ``TimeoutError``).
                retry_delay: Seconds before the first retry; each later one waits
                    ``retry_backoff`` times longer; each delay varies by +-10% (jitter).
                    The task is ``pending`` during a delay and holds no slot.
                retry_backoff: Factor (>= 1) between successive retry delays.
                retry_on: The exception type, or tuple of types, to retry.

            A function that declares a ``progress_callback`` parameter receives one;
            any task code can also call ``task_worker.report_progress``.

            Raises:
                RuntimeError: the worker is not started, or is stopping.
                TypeError: ``task_func`` is not callable (or is a coroutine object),
                    or an option has the wrong type.
                KeyError: ``task_func`` names no registered task type.
                ValueError: ``task_id`` is taken, ``timeout`` is not positive, a
                    dependency is unknown or already failed or cancelled, or a retry
                    option is out of range.
            """
            if not kwargs or _chain_free(kwargs):
                return self._add(task_func, args, kwargs, priority, task_id, metadata, timeout, executor,
                                 None)
            return self._add_chained(task_func, args, kwargs, priority, task_id, metadata, timeout,
                                     executor)

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
            if not kwargs or _chain_free(kwargs):
                return self._add(task_func, args, kwargs, priority, task_id, metadata, timeout, executor,
                                 None)
            return self._add_chained(task_func, args, kwargs, priority, task_id, metadata, timeout,
                                     executor)

    def _add(
        self, task_func: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any],
        priority: int, task_id: str | None, metadata: Mapping[str, Any] | None,
        timeout: float | None, executor: Any, chain: Chain | None,
    ) -> str:
        if type(task_func) is FunctionType:  # the common case, kept cheap
            func: Callable[..., Any] = task_func
            name = registered_name(func) or func.__name__
            flags = func_flags.get(func)
            if flags is None:
                flags = flags_for(func)
        else:
            if isinstance(task_func, CoroutineType):
                task_func.close()  # it will never run: no "never awaited" warning
                raise TypeError(
                    "add_task() needs a coroutine *function*, not a coroutine object: "
                    "pass `func, *args` instead of `func(*args)`")
            func, name = resolve(task_func)
            flags = flags_for(func)
        if type(priority) is not int:
            raise TypeError(f"priority must be an int, got {priority!r}")
        if timeout is None:
            timeout = self._task_timeout
        else:
            timeout = check_timeout(timeout, "timeout")
        if metadata is None:
            meta = _EMPTY_METADATA
        elif isinstance(metadata, Mapping):
            meta = MappingProxyType(dict(metadata))
        else:
            raise TypeError(f"metadata must be a mapping or None, got {metadata!r}")
        table = self._table
        seq = next(self._seq)
        if task_id is None:
            task_id = f"{self._id_prefix}{seq:x}"
            # Looked up only once a caller chose an id of our form: a lookup in a
            # table of 100,000 ids is a cache miss of its own.
            while self._chosen_like_ours and table.contains(task_id):
                task_id = f"{self._id_prefix}{next(self._seq):x}"
        elif type(task_id) is not str or not task_id:
            raise TypeError(f"task_id must be a non-empty str or None, got {task_id!r}")
        elif table.contains(task_id):
            raise ValueError(f"a task with id {task_id!r} already exists")
        elif task_id.startswith(self._id_prefix):
            self._chosen_like_ours = True
        if executor is not None:
            executor = self._adapt_executor(executor)
        else:
            executor = self._executor_default
        if self._state != "running":
            self._raise_not_running()
        key = (priority << SEQ_BITS) | seq
        rec = TaskRecord(self, task_id, name, func, args, kwargs or None, key, meta, timeout,
                         _now(), contextvars.copy_context(), flags, executor)
        if chain is None:
            table.add(rec)
            if not self._dispatch_scheduled:
                self._schedule_dispatch()
        else:
            self._admit(rec, chain)
        if self._hub.has_subscribers:
            self._hub.emit(TaskEvent(_ADDED, rec.snapshot()))
        return task_id

    # ------------------------------------------------- chains (after=, retries=)
    def _add_chained(
        self, task_func: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any],
        priority: int, task_id: str | None, metadata: Mapping[str, Any] | None,
        timeout: float | None, executor: Any,
    ) -> str:
        """``add_task`` with chain options, taken out of ``kwargs`` (the call's own dict)."""
        chain = self._prepare_chain(
            kwargs.pop("after", None), kwargs.pop("retries", 0), kwargs.pop("retry_delay", 1.0),
            kwargs.pop("retry_backoff", 2.0), kwargs.pop("retry_on", DEFAULT_RETRY_ON))
        return self._add(task_func, args, kwargs, priority, task_id, metadata, timeout, executor,
                         chain)

    def _prepare_chain(
        self, after: object, retries: object, retry_delay: object, retry_backoff: object,
        retry_on: object,
    ) -> Chain | None:
        """Check the chain options and resolve ``after``; registers nothing (``_admit`` does)."""
        policy = RetryPolicy(retries, retry_delay, retry_backoff, retry_on)
        if after is None:
            depends_on: tuple[str, ...] = ()
            unfinished: dict[str, str] = {}
        else:
            depends_on, unfinished = resolve_after(after, self._table.by_id, self._label)
        if not depends_on and not policy.retries:
            return None
        return Chain(depends_on, unfinished, policy if policy.retries else None)

    def _label(self, item: TaskRecord | TaskInfo) -> str:
        """How chain texts name a task: its id when the caller chose it (``%%task -n
        load`` gives id ``load``), else its name (a function's, or a re-run cell's)."""
        task_id = item.id
        return item.name if task_id.startswith(self._id_prefix) else task_id

    def _admit(self, rec: TaskRecord, chain: Chain) -> None:
        """Queue a new task with a chain: parked while dependencies are unfinished."""
        rec.chain = chain
        table = self._table
        for dep_id in chain.unfinished:
            dep = table.get(dep_id)
            assert type(dep) is TaskRecord
            if dep.chain is None:
                dep.chain = Chain((), {}, None)
            dep.chain.add_dependent(rec)
        if chain.unfinished:
            table.park(rec)
        else:
            table.add(rec)
            if not self._dispatch_scheduled:
                self._schedule_dispatch()

    def _chain_end(
        self, rec: TaskRecord, chain: Chain, status: TaskStatus, exc: BaseException | None,
        error: str | None,
    ) -> tuple[str | None, ChainInfo | None] | None:
        """A chain task is ending: ``None`` if the failed attempt is to be retried instead,
        else its final error (a cancel names the dependents it takes along) and ``ChainInfo``."""
        if status is _FAILED:
            if self._retry(rec, chain, exc, error):
                return None
            chain.errors.append(error or "failed")
        elif status is _CANCELLED and chain.dependents:
            n = sum(1 for _ in active_dependents(rec))
            if n:
                error = (error or "cancelled") + dependents_note(n)
        return error, chain.freeze(final=True)

    def _retry(self, rec: TaskRecord, chain: Chain, exc: BaseException | None,
               error: str | None) -> bool:
        """If the attempt that just failed with ``exc`` is to be retried, park the task
        for its retry delay (it holds no slot) and return True."""
        reason = rec.cancel_reason
        timed_out = reason is _TIMED_OUT
        if (reason is not None and not timed_out) or self._state != "running":
            return False
        loop = self._loop
        # Only from the attempt's own job, once its body returned: never for a body
        # abandoned after the grace period (it may still run).
        if loop is None or rec.task is None or asyncio.current_task(loop) is not rec.task:
            return False
        delay = chain.retry_delay(exc, timed_out)
        if delay is None:
            return False
        chain.errors.append(error or "failed")
        chain.attempt += 1
        chain.retry_due = loop.time() + delay
        chain.retry_at = _now() + delay
        self._table.park(rec)  # from running: the job's finally frees its slot
        rec.status = _PENDING
        rec.progress = 0.0
        rec.cancel_reason = None
        rec.thread = None
        rec.flags &= ~STEPPED  # the next attempt's job has not stepped yet
        rec.timer = loop.call_later(min(delay, RETRY_TICK), self._retry_tick, rec)
        if self._hub.has_subscribers:
            self._hub.emit(TaskEvent(EventKind.RETRYING, rec.snapshot()))
        return True

    def _retry_tick(self, rec: TaskRecord) -> None:
        """A second of a retry delay passed (a ``waiting`` event), or all of it (queue the task)."""
        rec.timer = None
        chain = rec.chain
        loop = self._loop
        if rec.info is not None or chain is None or chain.retry_at is None or loop is None:
            return
        remaining = chain.retry_due - loop.time()
        if remaining > 0.001:
            rec.timer = loop.call_later(min(remaining, RETRY_TICK), self._retry_tick, rec)
        else:
            chain.retry_at = None
            self._table.unpark(rec)
            if not self._dispatch_scheduled:
                self._schedule_dispatch()
        if self._hub.has_subscribers:
            self._hub.emit(TaskEvent(EventKind.WAITING, rec.snapshot()))

    def _settle(self, rec: TaskRecord, status: TaskStatus) -> None:
        """``rec`` ended: start its dependents whose last dependency it was, or, if it
        did not complete, cancel everything waiting on it (transitively)."""
        chain = rec.chain
        assert chain is not None
        if status is _COMPLETED:
            dependents, chain.dependents = chain.dependents or [], None
            emit = self._hub.emit if self._hub.has_subscribers else None
            for dep in dependents:
                dep_chain = dep.chain
                if dep.info is not None or dep_chain is None:
                    continue
                dep_chain.unfinished.pop(rec.id, None)
                if not dep_chain.unfinished:
                    self._table.unpark(dep)
                    if not self._dispatch_scheduled:
                        self._schedule_dispatch()
                if emit is not None:
                    emit(TaskEvent(EventKind.WAITING, dep.snapshot()))
            return
        # Breadth first and iterative (a long chain must not recurse): each dependent
        # is ended after the dependency its reason names.
        pairs = list(active_dependents(rec))
        chain.dependents = None
        for _, dep in pairs:
            if dep.chain is not None:
                dep.chain.dependents = None
        root = (self._label(rec), rec.info.status) if rec.info is not None else None
        for parent, dep in pairs:
            if dep.info is None and parent.info is not None:
                self._end(dep, _CANCELLED, error=dependency_reason(
                    self._label(parent), parent.info.status, None if parent is rec else root))

    def dependents(self, task_id: str) -> list[str]:
        """Ids of the pending tasks waiting on ``task_id`` through ``after=``, directly or
        through others (breadth first): what cancelling it would also cancel."""
        rec = self._table.get(task_id)
        if type(rec) is not TaskRecord:
            return []
        return [dep.id for _, dep in active_dependents(rec)]

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
        """Start pending tasks, in queue order, while slots are free.

        On Python 3.12+ a task's first step runs at once, inside this loop
        (``eager_start``): a body that never suspends finishes here, without a
        loop turn of its own, and its slot is taken again by the next pending
        task in this same loop. A dispatch reached from inside such a first step
        (a body that raises ``max_workers``) starts its tasks the usual way, one
        loop turn later, so eager steps never nest.
        """
        pop = self._pending.pop
        jobs = self._jobs
        running = self._running_recs
        limit = self._max_workers - self._abandoned.count
        loop = self._loop
        assert loop is not None
        eager = _EAGER and not self._starting
        while len(jobs) + self._starting < limit:
            rec = pop()
            if rec is None:
                return
            # Launch it (inline: this runs once per task). The timer first: an
            # eager first step may already end the task.
            assert rec.ctx is not None
            rec.status = _RUNNING
            rec.started = _now()
            running[rec.id] = rec
            if rec.timeout is not None:
                rec.timer = loop.call_later(rec.timeout, self._on_timeout, rec)
            if eager:
                # The slot is held by _starting during the "started" event and
                # the first step; _run sets rec.task to the job itself
                # (current_task()). Outside a running loop (max_workers set from
                # sync code) the step is only scheduled, as without eager start.
                self._starting = 1
                try:
                    if self._hub.has_subscribers:
                        self._hub.emit(TaskEvent(_STARTED, rec.snapshot()))
                    job = _Task(self._run(rec), loop=loop, context=rec.ctx, eager_start=True)
                finally:
                    self._starting = 0
                if job.done():  # finished in its first step: its slot is free again
                    rec.task = None
                else:
                    rec.task = job
                    jobs[job] = rec
                # A failed body's traceback keeps this frame: it must not name the job.
                job = None
                continue
            if _PY311:
                job = loop.create_task(self._run(rec), context=rec.ctx)
            else:  # pragma: no cover - Python 3.10
                job = rec.ctx.run(loop.create_task, self._run(rec))
            rec.task = job
            jobs[job] = rec
            if self._hub.has_subscribers:
                self._hub.emit(TaskEvent(_STARTED, rec.snapshot()))

    async def _run(self, rec: TaskRecord) -> None:
        # The job: one task's asyncio task. It releases its own slot (no done
        # callback: one loop callback less per task). Only the worker cancels
        # it, and never before this first step (see _tell_to_stop), so the
        # finally below always runs.
        rec.flags |= STEPPED
        if rec.task is None:  # an eager first step: inside the job's constructor
            rec.task = _current_task()
        try:
            if rec.cancel_reason is not None:  # told to stop before its first step
                self._end_as_told(rec)
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
                    assert self._loop is not None
                    run = rec.thread = self._threads.start(self._loop, func, args, kwargs or {})
                    ok, result = await self._threads.wait(run, INJECT_AFTER)
                    if not ok:
                        # Raised and caught in this frame: a StopIteration stays one
                        # (out of a coroutine it would become a RuntimeError).
                        raise result
                    if inspect.isawaitable(result):  # a plain function that returned a coroutine
                        result = await result
            except asyncio.CancelledError:
                reason = rec.cancel_reason
                self._end_as_told(rec)
                if reason is None:
                    raise  # not a cancellation we asked for: let it propagate
            except BaseException as exc:
                # Also ThreadInterrupted: ours when a cancel reason is set, else
                # the body raised it itself and simply failed.
                if rec.cancel_reason is not None:
                    self._end_as_told(rec)
                else:
                    self._end(rec, _FAILED, exc=exc)
            else:
                if rec.cancel_reason is not None:
                    self._end_as_told(rec)
                else:
                    self._end(rec, _COMPLETED, result=result)
        finally:
            # Release the slot and start the next task, in this same step. The
            # record lets go of its job: the job's context holds the record
            # (current_sink), and that cycle would leave every finished task's
            # Task, coroutine and context to the garbage collector.
            if self._jobs.pop(rec.task, None) is not None:  # type: ignore[arg-type]
                rec.task = None
                if self._state == "running":
                    self._dispatch()

    def _on_abandoned_return(self) -> None:
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
        if self._state == "running":
            self._dispatch()

    # --------------------------------------------------------------- progress
    def _progress_callback(self, rec: TaskRecord) -> Callable[[float], None]:
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

    # ------------------------------------------------------- stopping a task
    def _on_timeout(self, rec: TaskRecord) -> None:
        rec.timer = None
        if rec.status is _RUNNING:
            self._tell_to_stop(rec, _TIMED_OUT, give_up_after=self._cancel_grace)

    def _tell_to_stop(self, rec: TaskRecord, reason: CancelReason, give_up_after: float | None) -> None:
        """Cancel a running task's job for ``reason`` (the first reason given wins);
        after ``give_up_after`` seconds, end it even if its body has not unwound."""
        if rec.cancel_reason is None:
            rec.cancel_reason = reason
        if rec.task is not None and rec.flags & STEPPED:
            # Not before its first step: _run then sees cancel_reason itself.
            rec.task.cancel()
        if give_up_after is not None and self._loop is not None:
            self._loop.call_later(give_up_after, self._give_up_on, rec, rec.task)

    def _give_up_on(self, rec: TaskRecord, job: asyncio.Task[None] | None = None) -> None:
        """The grace period is over: end the task now; its body is abandoned. ``job``:
        the attempt told to stop (a later attempt of a retried task is left alone)."""
        if rec.info is None and (job is None or job is rec.task):
            self._end_as_told(rec, note=" (its body did not stop in time and was abandoned)")

    def _end_as_told(self, rec: TaskRecord, note: str = "") -> None:
        """End a task the worker told to stop, as its ``cancel_reason`` says."""
        reason = rec.cancel_reason
        if reason is _TIMED_OUT:
            exc = TimeoutError(f"task {rec.id!r} timed out after {rec.timeout:g} s{note}")
            self._end(rec, _FAILED, exc=exc, keep_traceback=False)
        elif reason is _WORKER_STOPPED:
            self._end(rec, _CANCELLED, error=f"cancelled: the worker stopped{note}")
        elif reason is _CANCELLED_BY_USER:
            self._end(rec, _CANCELLED, error=f"cancelled{note}")
        else:
            self._end(rec, _CANCELLED, error=f"cancelled from outside the worker{note}")

    def _end(
        self, rec: TaskRecord, status: TaskStatus, *, result: Any = None,
        exc: BaseException | None = None, error: str | None = None, keep_traceback: bool = True,
    ) -> None:
        """Move ``rec`` to its terminal ``status``, exactly once: the one place a task ends."""
        if rec.info is not None:
            return
        if rec.timer is not None:
            rec.timer.cancel()
            rec.timer = None
        tb = None
        if exc is not None:
            # User code (__str__, __repr__, __notes__ ...) that may raise: never
            # allowed to abort the ending half way.
            error = error_message(exc)
            if keep_traceback:
                tb = format_traceback(exc)
        chain = rec.chain
        chain_info = None
        if chain is not None:  # after= / retries= (_chains): the one test plain tasks pay here
            ending = self._chain_end(rec, chain, status, exc, error)
            if ending is None:
                return  # to be retried
            error, chain_info = ending
        progress = 1.0 if status is _COMPLETED else rec.progress
        key = rec.key
        info = new_info((
            rec.id, rec.name, status, key >> SEQ_BITS, progress, result, error, exc, tb,
            rec.metadata, rec.created, rec.started, _now(), key & SEQ_MASK, chain_info,
        ))
        over_cap = self._table.finish(rec, info)  # reads rec.status: still the old one
        rec.status = status
        rec.info = info
        # Drop what the record no longer needs (arguments can be large).
        rec.func = None
        rec.args = ()
        rec.kwargs = None
        rec.ctx = None
        if rec.waiter is not None and not rec.waiter.done():
            rec.waiter.set_result(info)
        if self._hub.has_subscribers:
            self._hub.emit(TaskEvent(_FINISHED, info))
        if chain is not None and chain.dependents:
            self._settle(rec, status)
        if over_cap:
            self._table.trim()
        # Running tasks first: a plain dict, the cheap test that fails most often.
        if (self._idle_waiters and not self._running_recs and not self._pending
                and not self._table.waiting):
            self._wake_idle()

    def _on_drop(self, info: TaskInfo) -> None:
        # A finished task left the history (clear() or max_history).
        if self._hub.has_subscribers:
            self._hub.emit(TaskEvent(_REMOVED, info))

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _emit_worker(self) -> None:
        if self._hub.has_subscribers:
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
                self._give_up_on(rec)
        return True

    def cancel_task_nowait(self, task_id: str) -> bool:
        """Request cancellation without waiting (for sync callers such as button handlers).

        Returns whether the task was pending or running. A pending task is
        cancelled at once; a running one is told to stop and is marked
        cancelled when it has unwound (or after ``cancel_grace``).
        """
        return self._cancel(task_id) is not None

    def _cancel(self, task_id: str) -> TaskRecord | None:
        rec = self._table.get(task_id)
        if type(rec) is not TaskRecord:
            return None
        if rec.status is _PENDING:
            self._end(rec, _CANCELLED, error="cancelled before it started" if rec.started is None
                      else "cancelled during its retry delay")
        elif rec.cancel_reason is None:
            self._tell_to_stop(rec, _CANCELLED_BY_USER, give_up_after=self._cancel_grace)
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
        timeout = check_timeout(timeout, "timeout")
        item = self._table.get(task_id)
        if item is None:
            raise KeyError(f"no task with id {task_id!r}")
        if type(item) is TaskRecord:
            info = await asyncio.wait_for(asyncio.shield(self._waiter(item)), timeout)
        else:
            info = item  # type: ignore[assignment]
        return outcome(info)

    def get_task_future(self, task_id: str) -> asyncio.Future[Any]:
        """A future resolving to the task's result (or raising its exception), as in the
        original API. Prefer ``await worker.wait(task_id)``."""
        if task_id not in self._table:
            raise KeyError(f"no task with id {task_id!r}")
        fut = asyncio.ensure_future(self.wait(task_id))
        fut.add_done_callback(_consume)
        return fut

    def get_task_futures(self, task_ids: Iterable[str]) -> list[asyncio.Future[Any]]:
        """``get_task_future`` for several ids."""
        return [self.get_task_future(t) for t in task_ids]

    async def join(self) -> None:
        """Return when no task is pending or running."""
        if self._table.idle:
            return
        assert self._loop is not None
        fut = self._loop.create_future()
        self._idle_waiters.append(fut)
        await fut

    # ----------------------------------------------------------------- queries
    def get_task_info(self, task_id: str) -> TaskInfo | None:
        """A snapshot of the task, or ``None`` for an unknown id."""
        item = self._table.get(task_id)
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

        Raises:
            ValueError: a bad ``status`` value or ``limit``.
            TypeError: ``status`` or ``older_than`` of the wrong type.
        """
        statuses = parse_statuses(status)
        if check_limit(limit) == 0:
            return []
        return self._table.query(statuses, limit, cutoff_for(older_than))

    def get_queue(self, limit: int | None = None) -> list[TaskInfo]:
        """Pending tasks in the order they will start (cost O(n log limit)), then the
        pending tasks waiting for dependencies or a retry delay (by priority, then
        submission).

        Raises:
            ValueError: ``limit`` is not a non-negative int or None.
        """
        limit = check_limit(limit)
        out = [r.snapshot() for r in self._table.pending.peek(limit)]
        waiting = self._table.waiting
        if waiting and (limit is None or len(out) < limit):
            # Parked tasks (dependencies, retry delays) start at an unknown time: after.
            parked = sorted(waiting.values(), key=_key_of)
            out.extend(r.snapshot() for r in parked[: None if limit is None else limit - len(out)])
        return out

    def get_running(self) -> list[TaskInfo]:
        """Running tasks, in the order they started."""
        return [r.snapshot() for r in self._table.running.values()]

    def clear(self, older_than: timedelta | None = None) -> int:
        """Drop finished tasks (those that finished more than ``older_than`` ago, if
        given) from the history. Pending and running tasks are never dropped.

        Returns how many were dropped.

        Raises:
            TypeError: ``older_than`` is not a ``datetime.timedelta``.
        """
        return self._table.clear(cutoff_for(older_than))

    # ------------------------------------------------------------------- views
    def dashboard(self, **options: Any) -> TaskDashboard:
        """A live ``TaskDashboard`` widget of this worker (needs ``task_worker[jupyter]``).

        Raises:
            ImportError: anywidget (``task_worker[jupyter]``) is not installed.
        """
        from ._dashboard import TaskDashboard

        return TaskDashboard(self, **options)

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

        Raises:
            TypeError: ``callback`` is not callable or ``task_id`` not a str.
        """
        return self._hub.subscribe(callback, task_id=task_id, progress=progress)


def _key_of(rec: TaskRecord) -> int:
    return rec.key


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


__all__ = ["AsyncTaskWorker", "WorkerStats"]
