"""``DaskExecutor``: run task bodies on a Dask cluster through a ``distributed.Client``.

The worker keeps the queue, the slots (``max_workers``), statuses, timeouts and
events; only the body runs on the cluster. One executor exists per client (so
``add_task(..., executor=client)`` called 10,000 times shares one), and all of
its Dask calls happen on the client's event loop: the worker's own loop for an
``asynchronous=True`` client made in the notebook, the client's thread for a
synchronous one. Traffic between the two loops is batched per loop turn.

Per task:

* submission: ``client.submit`` of a small wrapper (``_remote_call``) with a
  fresh key named after the function, so the Dask dashboard groups by name;
* results: futures that finish together are fetched with one ``gather``
  (while one gather is in flight the next batch accumulates);
* errors: re-raised with the remote traceback, as ``Future.result()`` does;
* progress: on the Dask worker, ``task_worker.report_progress`` finds a
  ``_RemoteReporter`` in its ContextVar. It sends at most one message per
  ``PROGRESS_INTERVAL`` per task (plus one trailing message for the latest
  value) with ``Worker.log_event`` on a topic this executor subscribed to;
  the executor merges what arrives in one loop turn into one ``report`` call
  per task;
* cancel (also timeout and ``stop``): a cancelled ``run`` cancels the Dask
  future, or drops the job if it was not submitted yet. The Dask worker then
  moves the executing key to its ``cancelled`` state, and two things stop the
  body there: the reporter checks that state (a local dict lookup, no
  network) on every call and raises ``CancelledError``, so cooperative code
  stops at its next ``report_progress``; and ``_CancelPlugin``, a
  ``WorkerPlugin`` installed once per executor, sees the transition, cancels
  an async body's task, and raises ``ThreadInterrupted`` in a sync body's
  thread if it still runs ``INJECT_AFTER`` seconds later (as locally: a
  cooperative body stops first, and a C call finishes first).
* what comes back: a result travels in a ``_Result`` envelope whose Dask
  serializer turns a failure to pickle (on the Dask worker) or to unpickle (in
  the client) into a clear task failure; an exception that cannot travel as
  itself (its ``str``/``repr``/pickling raises) is replaced by a
  ``RuntimeError`` naming it, with the remote traceback; a ``SystemExit`` or
  ``KeyboardInterrupt`` from a body travels inside ``_Carried`` (Dask would
  shut the Dask worker down) and fails the task as it would locally.
* a Dask worker process that dies mid-task: Dask retries the key elsewhere
  (``distributed.scheduler.allowed-failures`` times), then the future errs
  with ``KilledWorker`` and the task fails with it. A client that closes or
  loses its scheduler cancels its futures: the task fails with a message
  saying so. Either way ``run`` never hangs.

Dask calls used beyond the basics (``submit``, ``gather``, ``cancel``):
``Future.exception(asynchronous=True)`` to wait without fetching,
``Client.subscribe_topic`` / ``Worker.log_event`` for progress,
``Worker.state.tasks[key].state`` and ``WorkerPlugin.transition`` for cancel.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import pickle
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import tblib.pickling_support  # type: ignore[import-untyped]
from dask.sizeof import sizeof
from distributed import Client, WorkerPlugin, get_worker
from distributed.core import collect_causes
from distributed.protocol import pickle as dask_pickle
from distributed.protocol.serialize import dask_deserialize, dask_serialize, deserialize, serialize

from ._interrupt import INJECT_AFTER, ThreadInterrupted, clear_in_thread, raise_in_thread
from ._progress import check_fraction, current_sink
from ._record import WANTS_PROGRESS
from ._worker import _flags_for

logger = logging.getLogger("task_worker")

#: Seconds between two progress messages of one remote task.
PROGRESS_INTERVAL = 0.1

_THIS_FILE = os.path.abspath(__file__)

#: Worker-side states of a key whose body is (still) wanted.
_ALIVE_STATES = frozenset({"executing", "long-running"})

# Kinds of messages a worker loop sends to the client loop.
_SUBMIT = 0
_CANCEL = 1


def _key_prefix(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    # Dask groups keys by the part before the first "-"; keep the name clean.
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "task"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _declares_progress_callback(func: Callable[..., Any]) -> bool:
    """Whether ``func`` has a ``progress_callback`` parameter (the worker's cached check)."""
    return bool(_flags_for(func) & WANTS_PROGRESS)


def _is_worker_progress_callback(value: object) -> bool:
    # The core injects its own ``progress_callback`` closure into kwargs when the
    # function declares that parameter; it cannot run on the cluster. See the
    # report: the core should leave this to the executor.
    return (getattr(value, "__module__", None) == "task_worker._worker"
            and getattr(value, "__name__", None) == "progress_callback")


class _Job:
    """One task body on its way to, on, or back from the cluster."""

    __slots__ = (
        "args",
        "cancelled",
        "done",
        "func",
        "future",
        "key",
        "kwargs",
        "loop",
        "report",
        "task_id",
    )

    def __init__(
        self, key: str, task_id: str | None, func: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any], report: Callable[[float], None], loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.key = key
        self.task_id = task_id
        self.func: Callable[..., Any] | None = func
        self.args = args
        self.kwargs = kwargs
        self.report = report
        self.loop = loop  # the worker's loop, where ``done`` lives
        self.done: asyncio.Future[Any] = loop.create_future()
        self.future: Any = None  # the distributed.Future, once submitted
        self.cancelled = False


class DaskExecutor:
    """Runs task bodies on a Dask cluster (``AsyncTaskWorker(executor=client)``).

    Usually made for you: pass a ``distributed.Client`` (asynchronous or not)
    as ``executor=``. ``DaskExecutor(client)`` returns the one executor of that
    client. ``task_worker`` must be installed on the Dask workers.

    Raises:
        TypeError: ``client`` is not a ``distributed.Client``.
    """

    _by_client: ClassVar[weakref.WeakKeyDictionary[Any, DaskExecutor]] = weakref.WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __new__(cls, client: Any) -> DaskExecutor:
        if not isinstance(client, Client):
            raise TypeError(f"DaskExecutor needs a distributed.Client, got {client!r}")
        with cls._lock:
            self = cls._by_client.get(client)
            if self is None:
                self = super().__new__(cls)
                self._setup(client)
                cls._by_client[client] = self
        return self

    def _setup(self, client: Any) -> None:
        # Weak: the executor must not keep a closed, dropped client alive. Jobs
        # in flight keep it alive through their futures.
        self._client_ref = weakref.ref(client)
        self._topic = f"task_worker-progress-{uuid.uuid4().hex}"
        self._subscribed = False
        # None, then the registering future, then True (see _register_plugin).
        self._plugin: asyncio.Future[None] | bool | None = None
        # Filled from any thread, drained on the client loop.
        self._inbox: deque[tuple[int, _Job]] = deque()
        self._inbox_scheduled = False
        # Client-loop state.
        self._jobs: dict[str, _Job] = {}  # submitted, not yet settled
        self._watchers: set[asyncio.Task[None]] = set()
        self._ready: list[_Job] = []
        self._gathering = False
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        self._progress: dict[str, tuple[_Job, float]] = {}
        self._progress_scheduled = False

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` this executor submits to."""
        client = self._client_ref()
        if client is None:
            raise RuntimeError("the distributed.Client of this DaskExecutor was garbage-collected")
        return client

    @property
    def progress_topic(self) -> str:
        """The Dask event topic remote progress travels on (see ``Client.get_events``)."""
        return self._topic

    def __repr__(self) -> str:
        client = self._client_ref()
        where = getattr(getattr(client, "scheduler", None), "address", None) if client else None
        return f"<DaskExecutor {where or client!r} in_flight={len(self._jobs)}>"

    # ------------------------------------------------------- worker-loop side
    async def run(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        report: Callable[[float], None],
    ) -> Any:
        """Run ``func(*args, **kwargs)`` on the cluster and return its result.

        Awaited by the worker inside the task's own asyncio task. Cancelling it
        (cancel, timeout, stop) cancels the Dask future, then re-raises.
        """
        client = self.client
        if client.status not in ("running", "connecting", "newly-created"):
            raise RuntimeError(f"the distributed.Client is {client.status}; it cannot run tasks")
        if self._plugin is not True:
            await self._register_plugin(client)
        sink = current_sink.get()
        task_id = sink.id if sink is not None else None
        given = kwargs.get("progress_callback", _WANTS_PROGRESS)
        if given is _WANTS_PROGRESS or _is_worker_progress_callback(given):
            # The function may declare ``progress_callback``: give it a remote one.
            if _declares_progress_callback(func):
                kwargs = {**kwargs, "progress_callback": _WANTS_PROGRESS}
        job = _Job(f"{_key_prefix(func)}-{uuid.uuid4().hex}", task_id, func, args,
                   kwargs, report, asyncio.get_running_loop())
        self._post(_SUBMIT, job)
        try:
            return await job.done
        except asyncio.CancelledError:
            # The task was cancelled, timed out or the worker stops: stop the
            # remote body too (or never submit it), then let the worker see it.
            job.cancelled = True
            self._post(_CANCEL, job)
            raise

    async def _register_plugin(self, client: Any) -> None:
        """Install ``_CancelPlugin`` on the Dask workers, once per executor.

        Best effort: without it, cancellation still reaches cooperative code
        through ``report_progress``.
        """
        if self._plugin is None:
            self._plugin = asyncio.ensure_future(self._do_register_plugin(client))
        if isinstance(self._plugin, asyncio.Future) and self._plugin.get_loop() is _running_loop():
            await asyncio.shield(self._plugin)

    async def _do_register_plugin(self, client: Any) -> None:
        try:
            if client.asynchronous:
                await client.register_plugin(_CancelPlugin(), name=_PLUGIN_NAME)
            else:
                await asyncio.to_thread(client.register_plugin, _CancelPlugin(), _PLUGIN_NAME)
        except Exception:
            logger.warning("task_worker: could not install the cancel plugin on the Dask "
                           "workers; only bodies that call report_progress stop when cancelled",
                           exc_info=True)
        self._plugin = True

    def _post(self, kind: int, job: _Job) -> None:
        """Hand ``job`` to the client loop; one wake-up per burst (any thread)."""
        loop: asyncio.AbstractEventLoop = self.client.loop.asyncio_loop
        if kind == _SUBMIT and not loop.is_running():
            raise RuntimeError(
                "the event loop of the distributed.Client is not running (an asynchronous "
                "Client must be made on the loop the worker runs on)")
        self._inbox.append((kind, job))
        if self._inbox_scheduled:
            return
        self._inbox_scheduled = True
        if _running_loop() is loop:
            loop.call_soon(self._drain)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._drain)

    # ------------------------------------------------------- client-loop side
    def _drain(self) -> None:
        self._inbox_scheduled = False  # before popping: a racing _post schedules again
        inbox = self._inbox
        client = self._client_ref()
        while inbox:
            kind, job = inbox.popleft()
            if kind == _SUBMIT:
                if not job.cancelled:
                    self._submit(client, job)
            elif job.future is not None:
                self._cancel_future(client, job)

    def _submit(self, client: Any, job: _Job) -> None:
        if client is None:
            self._settle(job, False, RuntimeError("the distributed.Client was garbage-collected"))
            return
        if not self._subscribed:
            client.subscribe_topic(self._topic, self._on_event)
            self._subscribed = True
        func, args, kwargs = job.func, job.args, job.kwargs
        job.func, job.args, job.kwargs = None, (), {}  # the future holds them now
        try:
            job.future = client.submit(
                _remote_call, job.task_id, job.key, self._topic, func, args, kwargs,
                key=job.key, pure=False)
        except BaseException as exc:  # user __reduce__ code can raise anything
            # Pickling the arguments runs user code (``__reduce__``): whatever it
            # raises, even SystemExit, fails this task and never this loop.
            self._settle(job, False, _submit_error(exc))
            return
        self._jobs[job.key] = job
        task = asyncio.get_running_loop().create_task(self._watch(client, job))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _cancel_future(self, client: Any, job: _Job) -> None:
        fut = job.future
        job.future = None
        self._jobs.pop(job.key, None)
        if client is None or fut.done():
            return
        self._spawn(client.cancel([fut], asynchronous=True), quiet=True)

    def _spawn(self, coro: Any, quiet: bool = False) -> None:
        """Run ``coro`` on the client loop, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        if quiet:
            task.add_done_callback(_quiet_done)

    async def _watch(self, client: Any, job: _Job) -> None:
        # Whatever happens here, the job is settled: run() must never hang.
        try:
            await self._watch_one(client, job)
        except asyncio.CancelledError:
            self._settle(job, False, RuntimeError(
                "the distributed.Client's event loop stopped before the task finished"))
            raise
        except Exception as exc:  # pragma: no cover - a bug here, or in distributed
            self._settle(job, False, exc)

    async def _watch_one(self, client: Any, job: _Job) -> None:
        fut = job.future
        # Wait for the key to finish, err or be cancelled, without fetching data.
        await fut.exception(asynchronous=True)
        if job.cancelled or job.future is None:
            return  # we cancelled it; run() already raised
        status = fut.status
        if status == "finished":
            self._ready.append(job)
            if not self._gathering:
                self._gathering = True
                self._spawn(self._gather(client))
            return
        self._jobs.pop(job.key, None)
        job.future = None
        if status == "cancelled" or fut.cancelled():
            state = getattr(fut, "_state", None)
            reason = getattr(getattr(state, "exception", None), "reason", None)
            self._settle(job, False, RuntimeError(
                f"the Dask future {job.key!r} was cancelled outside task_worker"
                f"{f' ({reason})' if reason else ''}; the task cannot finish"))
            return
        try:
            await client.gather([fut], asynchronous=True)  # raises the remote error
        except Exception as exc:
            self._settle(job, False, _remote_only(exc))
        else:  # pragma: no cover - an erred future always raises
            self._settle(job, False, RuntimeError(f"Dask future {job.key!r} ended {status!r}"))

    async def _gather(self, client: Any) -> None:
        # One gather at a time: futures finishing meanwhile form the next batch.
        batch: list[_Job] = []
        try:
            while self._ready:
                batch, self._ready = [j for j in self._ready if j.future is not None], []
                if not batch:
                    continue
                try:
                    results = await client.gather([j.future for j in batch], asynchronous=True)
                except Exception:
                    results = None  # one bad key (lost, cancelled meanwhile): fetch each alone
                for i, job in enumerate(batch):
                    if job.future is None:
                        continue  # cancelled meanwhile
                    if results is not None:
                        ok, value = _unwrap(results[i])
                    else:
                        try:
                            fetched = await client.gather([job.future], asynchronous=True)
                        except Exception as exc:
                            ok, value = False, _remote_only(exc)
                        else:
                            ok, value = _unwrap(fetched[0])
                    self._jobs.pop(job.key, None)
                    job.future = None  # releases the key on the cluster
                    self._settle(job, ok, value)
                batch = []
        except BaseException:
            for job in batch + self._ready:
                self._settle(job, False, RuntimeError(
                    "the distributed.Client's event loop stopped before the task's result arrived"))
            self._ready = []
            raise
        finally:
            self._gathering = False

    def _settle(self, job: _Job, ok: bool, value: Any) -> None:
        """Resolve ``job.done`` on its worker loop; one wake-up per loop per turn."""
        loop = job.loop
        if _running_loop() is loop:
            _resolve(job, ok, value)
            return
        if loop.is_closed():
            return
        box = self._outbox.get(loop)
        if box is None:
            box = self._outbox[loop] = []
            asyncio.get_running_loop().call_soon(self._flush_outbox, loop)
        box.append((job, ok, value))

    def _flush_outbox(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._outbox.pop(loop, [])
        if items and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve_many, items)

    def _on_event(self, event: tuple[float, Any]) -> None:
        """A progress message arrived (client loop): keep the latest per task."""
        try:
            key, fraction = event[1]
        except (TypeError, ValueError):
            return
        job = self._jobs.get(key)
        if job is None:
            return
        self._progress[key] = (job, fraction)
        if not self._progress_scheduled:
            self._progress_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_progress)

    def _flush_progress(self) -> None:
        self._progress_scheduled = False
        pending, self._progress = self._progress, {}
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, float]]] = {}
        for job, fraction in pending.values():
            by_loop.setdefault(job.loop, []).append((job, fraction))
        here = _running_loop()
        for loop, items in by_loop.items():
            if loop is here:
                _apply_progress(items)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_apply_progress, items)


def _submit_error(exc: BaseException) -> Exception:
    """A clear error for a task Dask refused to take (usually: it cannot be pickled)."""
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    kind = TypeError if isinstance(root, (TypeError, pickle.PicklingError)) else RuntimeError
    err = kind(f"could not send the task to the Dask cluster: {_describe(root)}")
    err.__cause__ = exc
    return err


def _describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` without trusting its ``__str__`` (user code)."""
    name = type(exc).__qualname__
    try:
        text = str(exc)
    except BaseException:  # a broken __str__ must not break error reporting
        return f"{name} (whose str() raised)"
    return f"{name}: {text}" if text else name


def _remote_only(exc: BaseException) -> BaseException:
    """Drop the client's own frames (``gather`` re-raising) from a remote error's traceback.

    A ``_Carried`` error gives back the exception it carries (``SystemExit``, say).
    """
    import distributed

    local = (os.path.dirname(os.path.abspath(distributed.__file__)) + os.sep, _THIS_FILE)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(local):
        tb = tb.tb_next
    if isinstance(exc, _Carried) and len(exc.args) == 1 and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    return exc.with_traceback(tb)


def _unwrap(value: Any) -> tuple[bool, Any]:
    """``(ok, value)`` of what ``gather`` returned for one of our keys."""
    if isinstance(value, _Result):
        return True, value.value
    if isinstance(value, _Unfetchable):
        kind = TypeError if value.pickling_error else RuntimeError
        return False, kind(value.message)
    # Not wrapped: the Dask worker runs another version of task_worker.
    return True, value


def _resolve_many(items: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in items:
        _resolve(job, ok, value)


def _resolve(job: _Job, ok: bool, value: Any) -> None:
    done = job.done
    if done.done():
        return
    if ok:
        done.set_result(value)
        return
    try:
        done.set_exception(value)
    except TypeError:  # StopIteration cannot be raised into a Future
        err = RuntimeError(f"the task raised {_describe(value)}")
        err.__cause__ = value
        done.set_exception(err)


def _apply_progress(items: list[tuple[_Job, float]]) -> None:
    for job, fraction in items:
        if job.done.done() or job.cancelled:
            continue
        try:
            job.report(check_fraction(fraction))
        except (asyncio.CancelledError, TypeError, ValueError):
            pass  # the task is being cancelled (its run() raises), or a bogus value


def _quiet_done(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed cancel is not worth a log line


# ---------------------------------------------------------------- remote side
class _WantsProgress:
    """Placeholder sent in kwargs: replaced on the Dask worker by a progress callback."""

    def __reduce__(self) -> str:
        return "_WANTS_PROGRESS"


_WANTS_PROGRESS = _WantsProgress()


class _RemoteReporter:
    """Stands in for the task's record on a Dask worker, and stops its body there.

    A ``ProgressSink``: ``report_progress`` calls ``report(x)``;
    ``current_task_id`` reads ``.id``. Sends are rate-limited to one per
    ``PROGRESS_INTERVAL`` with a trailing send of the latest value.

    ``interrupt_soon()`` (called by ``_CancelPlugin`` when the Dask worker
    cancels the key) stops a body that never reports: ``ThreadInterrupted`` is
    raised in a sync body's thread after a grace period (as the local worker
    does), an async body's task is cancelled on its private loop.
    """

    __slots__ = (
        "_closed",
        "_ident",
        "_ilock",
        "_interrupted",
        "_key",
        "_lock",
        "_next_at",
        "_sent",
        "_task",
        "_timer",
        "_topic",
        "_value",
        "_worker",
        "id",
    )

    def __init__(self, task_id: str | None, worker: Any, key: str, topic: str) -> None:
        self.id = task_id
        self._worker = worker
        self._key = key
        self._topic = topic
        self._lock = threading.Lock()
        self._value: float | None = None
        self._sent: float | None = None
        self._next_at = 0.0
        self._timer = False
        self._closed = False
        # Interruption: the body's thread while it runs, its asyncio task if async.
        self._ilock = threading.Lock()
        self._ident = 0
        self._task: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._interrupted = False

    def stopped(self) -> bool:
        """Whether the body was stopped by a cancel (interrupted, or the key is no longer wanted)."""
        return self._interrupted or self.cancelled()

    @property
    def stop_requested(self) -> bool:
        """``ProgressSink.stop_requested``: the body was told to stop."""
        return self.stopped()

    def cancelled(self) -> bool:
        """Whether the Dask worker no longer wants this key (cancelled, released)."""
        try:
            ts = self._worker.state.tasks.get(self._key)
        except AttributeError:  # pragma: no cover - a future distributed without WorkerState
            return False
        return ts is None or ts.state not in _ALIVE_STATES

    def report(self, fraction: float) -> None:
        """``ProgressSink.report``: rate-limited send to the kernel (any thread)."""
        if self.cancelled():
            raise asyncio.CancelledError(f"task {self.id!r} was cancelled")
        now = time.monotonic()
        with self._lock:
            self._value = fraction
            if now >= self._next_at:
                self._next_at = now + PROGRESS_INTERVAL
                send = True
            else:
                send = False
                if not self._timer:
                    self._timer = True
                    loop = self._worker.loop.asyncio_loop
                    loop.call_soon_threadsafe(loop.call_later, self._next_at - now, self._flush)
        if send:
            self._send(fraction)

    def progress_callback(self, fraction: float) -> None:
        """The ``progress_callback`` argument given to functions that declare one."""
        self.report(check_fraction(fraction))

    def _flush(self) -> None:  # on the Dask worker's loop
        with self._lock:
            self._timer = False
            value = self._value
            if self._closed or value is None or value == self._sent:
                return
            now = time.monotonic()
            if now < self._next_at:
                # A report sent directly since this timer was armed: wait for the next slot.
                self._timer = True
                self._worker.loop.asyncio_loop.call_later(self._next_at - now, self._flush)
                return
            self._next_at = now + PROGRESS_INTERVAL
        self._send(value)

    def _send(self, fraction: float) -> None:
        self._sent = fraction
        self._worker.log_event(self._topic, [self._key, fraction])

    # -- interruption
    def attach(self) -> None:
        """The body starts in this thread: make it interruptible."""
        with self._ilock:
            self._ident = threading.get_ident()
        with _running_lock:
            _running[self._key] = self

    def detach(self) -> None:
        """The body returned: no interruption may land any more; drop a trailing send."""
        self._closed = True
        with _running_lock:
            if _running.get(self._key) is self:
                del _running[self._key]
        with self._ilock:
            if self._ident:
                self._ident = 0
                clear_in_thread(threading.get_ident())
            self._task = None

    def run_async(self, awaitable: Awaitable[Any]) -> Any:
        """Run an async body to completion on a private loop in this thread."""
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(_await(awaitable))
            with self._ilock:
                self._task = (loop, task)
                if self._interrupted:
                    task.cancel()
            return loop.run_until_complete(task)
        finally:
            with self._ilock:
                self._task = None
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def interrupt_soon(self) -> None:
        """The key was cancelled: stop the body, the way the local worker stops its bodies.

        An async body is cancelled at once (it stops at its next ``await``). A
        sync body first gets ``INJECT_AFTER`` seconds to stop at its next
        ``report_progress`` (which raises ``CancelledError`` from now on), so
        that a cooperative body's own cleanup is not hit by an asynchronous
        exception; ``ThreadInterrupted`` is raised only if it still runs then.
        """
        with self._ilock:
            async_body = self._task is not None
        if async_body:
            self.interrupt()
            return
        loop = self._worker.loop.asyncio_loop
        loop.call_soon_threadsafe(loop.call_later, INJECT_AFTER, self.interrupt)

    def interrupt(self) -> None:
        """Stop the body (once): cancel its asyncio task, or raise ``ThreadInterrupted`` in it."""
        with self._ilock:
            if self._interrupted or not self._ident:
                return
            self._interrupted = True
            if self._task is not None:
                loop, task = self._task
                loop.call_soon_threadsafe(task.cancel)
            else:
                raise_in_thread(self._ident)


# Bodies running in this (Dask worker) process, by key: what _CancelPlugin stops.
_running: dict[str, _RemoteReporter] = {}
_running_lock = threading.Lock()

_PLUGIN_NAME = "task_worker-cancel"


class _CancelPlugin(WorkerPlugin):
    """On each Dask worker: interrupt a task_worker body whose key gets cancelled."""

    name = _PLUGIN_NAME
    idempotent = True

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "cancelled" or (start in _ALIVE_STATES and finish in ("released", "forgotten")):
            reporter = _running.get(key) if _running else None
            if reporter is not None:
                reporter.interrupt_soon()


def _remote_call(
    task_id: str | None, key: str, topic: str, func: Callable[..., Any],
    args: tuple[Any, ...], kwargs: dict[str, Any],
) -> _Result:
    """Runs on the Dask worker: the task body with ``report_progress`` wired up.

    What leaves it can always travel back: the result goes in a ``_Result``
    envelope, and an exception that cannot travel as itself is replaced (see
    ``_fit_for_travel``).
    """
    reporter = _RemoteReporter(task_id, get_worker(), key, topic)
    failure: BaseException | None = None
    try:
        reporter.attach()
        try:
            if reporter.cancelled():  # cancelled before it started
                raise asyncio.CancelledError(f"task {task_id!r} was cancelled")
            # A fresh context: the Dask worker thread's own context is reused by other keys.
            result = contextvars.copy_context().run(_call, reporter, func, args, kwargs)
        finally:
            reporter.detach()  # from here on no interruption can land
    except (asyncio.CancelledError, ThreadInterrupted) as exc:
        if reporter.stopped():
            raise  # our own cancellation: the client has stopped listening
        failure = _fit_for_travel(exc)
    except BaseException as exc:  # every outcome must reach the client
        failure = _fit_for_travel(exc)
    else:
        return _Result(result)
    # Raised here, outside the except clauses: no unpicklable __context__ rides along.
    raise failure


def _call(reporter: _RemoteReporter, func: Callable[..., Any], args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    current_sink.set(reporter)
    if kwargs.get("progress_callback") is _WANTS_PROGRESS:
        kwargs = {**kwargs, "progress_callback": reporter.progress_callback}
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        # A coroutine function (or a function returning an awaitable): run it on a
        # private loop in this Dask worker thread, so CPU-bound async code never
        # blocks the Dask worker's own event loop.
        result = reporter.run_async(result)
    return result


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


# ------------------------------------------------- what travels back, safely
class _Carried(Exception):
    """Carries a ``BaseException`` a body raised (``SystemExit``, ``KeyboardInterrupt``...).

    Dask lets ``SystemExit`` and ``KeyboardInterrupt`` from a task shut the Dask
    worker down, so the body's exception travels inside this one; the client
    unwraps it (``_remote_only``), and the task fails with it as it would locally.
    """


def _fit_for_travel(exc: BaseException) -> BaseException:
    """``exc``, or what to raise instead so that the client gets a clear error.

    Dask sends a task's exception back by pickling it, after calling its
    ``str()`` and ``repr()``; user code in any of these can raise (even a
    ``BaseException``), which Dask reports confusingly or not at all. The
    replacement keeps the remote traceback.
    """
    sent = exc if isinstance(exc, Exception) else _Carried(exc).with_traceback(exc.__traceback__)
    problem = _travel_problem(sent)
    if problem is None:
        return sent
    err = RuntimeError(
        f"the task failed on the Dask worker with an exception that could not be sent back "
        f"({problem}): {_describe(exc)}")
    return err.with_traceback(exc.__traceback__)


def _travel_problem(exc: BaseException) -> str | None:
    """Why ``exc`` cannot travel to the client as itself (a round trip as Dask makes it), or None."""
    try:
        # As Dask's error_message() does: exceptions pickle with their traceback
        # and causes, and tblib rebuilds some that plain pickle cannot.
        tblib.pickling_support.install(exc, *collect_causes(exc))
    except BaseException as why:  # a class whose __reduce_ex__ lookup raises, say
        return f"preparing it for pickling raised {_describe(why)}"
    steps: tuple[tuple[str, Callable[[Any], Any]], ...] = (
        ("its str()", str), ("its repr()", repr), ("pickling it", dask_pickle.dumps))
    data: Any = exc
    for what, step in steps:
        try:
            data = step(exc)
        except BaseException as why:  # user code: anything can come out
            return f"{what} raised {_describe(why)}"
    try:
        dask_pickle.loads(data)
    except BaseException as why:
        return f"unpickling it raised {_describe(why)}"
    return None


class _Result:
    """A body's return value on its way back to the client.

    Serialized by Dask with the functions below, which run Dask's own
    serialization of the value but turn a failure on either side (pickling on
    the Dask worker, unpickling in the client) into an ``_Unfetchable``:
    otherwise a ``__reduce__`` raising ``KeyboardInterrupt`` kills the Dask
    worker's connection, and the task would never finish.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Unfetchable:
    """Stands for a result that could not be sent back or received: the task fails with ``message``."""

    __slots__ = ("message", "pickling_error")

    def __init__(self, message: str, pickling_error: bool) -> None:
        self.message = message
        self.pickling_error = pickling_error

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Unfetchable, (self.message, self.pickling_error))


def _unfetchable(value_type: str, problem: str, why: BaseException) -> _Unfetchable:
    cause = why.__cause__ or why  # serialize() wraps the pickling error in its own TypeError
    return _Unfetchable(
        f"the task finished on the Dask worker, but its result (a {value_type}) could not be "
        f"{problem} {_describe(cause)}",
        isinstance(cause, (TypeError, pickle.PicklingError)))


def _serialize_result(result: _Result, context: Any = None) -> tuple[dict[str, Any], list[Any]]:
    value = result.value
    try:
        header, frames = serialize(value, on_error="raise", context=context)
    except BaseException as why:  # user __reduce__ code can raise anything
        bad = _unfetchable(type(value).__qualname__, "sent back: pickling it raised", why)
        return {"ok": False, "message": bad.message, "pickling": bad.pickling_error}, []
    return {"ok": True, "value": header, "type": type(value).__qualname__}, frames


def _deserialize_result(header: dict[str, Any], frames: list[Any]) -> _Result | _Unfetchable:
    if not header.get("ok"):
        return _Unfetchable(header["message"], header["pickling"])
    try:
        return _Result(deserialize(header["value"], frames))
    except BaseException as why:  # user code (a loader) can raise anything
        return _unfetchable(header["type"], "received: unpickling it raised", why)


def _sizeof_result(result: _Result) -> int:
    return int(sizeof(result.value))  # Dask's memory accounting sees the value itself


dask_serialize.register(_Result)(_serialize_result)
dask_deserialize.register(_Result)(_deserialize_result)
sizeof.register(_Result)(_sizeof_result)


__all__ = ["DaskExecutor", "PROGRESS_INTERVAL"]
