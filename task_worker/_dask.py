"""``DaskExecutor``: the kernel side of running task bodies on a Dask cluster.

Runs in the kernel (the process of the ``AsyncTaskWorker``); what runs on the
Dask workers is in ``_dask_remote``. The worker keeps the queue, the slots
(``max_workers``), statuses, timeouts and events; only the body runs on the
cluster. One executor exists per client (so ``add_task(..., executor=client)``
called 10,000 times shares one), and all of its Dask calls happen on the
client's event loop: the worker's own loop for an ``asynchronous=True`` client
made in the notebook, the client's thread for a synchronous one. Traffic
between the two loops is batched per loop turn.

Per task:

* submission: ``client.submit`` of ``_dask_remote.remote_call`` with a fresh
  key named after the function, so the Dask dashboard groups by name;
* results: futures that finish together are fetched with one ``gather``
  (while one gather is in flight the next batch accumulates);
* errors: re-raised with the remote traceback, as ``Future.result()`` does;
* progress: the remote reporter sends at most one message per
  ``PROGRESS_INTERVAL`` per task on a Dask event topic this executor
  subscribed to; the executor merges what arrives in one loop turn into one
  ``report`` call per task;
* cancel (also timeout and ``stop``): a cancelled ``run`` cancels the Dask
  future, or drops the job if it was not submitted yet; on the Dask worker the
  reporter and ``CancelPlugin`` (installed once per executor) stop the body;
* what comes back: the envelopes of ``_dask_remote`` (``Result``, ``Carried``)
  are opened here; a result that cannot be unpickled in the kernel fails the
  task clearly instead of breaking the client's connection;
* a Dask worker process that dies mid-task: Dask retries the key elsewhere
  (``distributed.scheduler.allowed-failures`` times), then the future errs
  with ``KilledWorker`` and the task fails with it. A client that closes or
  loses its scheduler cancels its futures: the task fails with a message
  saying so. Either way ``run`` never hangs.

Dask calls used beyond the basics (``submit``, ``gather``, ``cancel``):
``Future.exception(asynchronous=True)`` to wait without fetching,
``Client.subscribe_topic`` for progress, ``Client.register_plugin`` for cancel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import distributed
from distributed import Client
from distributed.protocol.serialize import dask_deserialize, deserialize

from . import _dask_remote
from ._dask_remote import (
    PLUGIN_NAME,
    CancelPlugin,
    Carried,
    Result,
    Unfetchable,
    describe,
    remote_call,
    unfetchable,
)
from ._progress import check_fraction, current_sink

logger = logging.getLogger("task_worker")

# Leading traceback frames of a remote error that are ours or Dask's, not the body's:
# the client's gather re-raising here, then the Dask worker running remote_call.
_NOT_THE_BODY = (
    os.path.dirname(os.path.abspath(distributed.__file__)) + os.sep,
    os.path.abspath(__file__),
    os.path.abspath(_dask_remote.__file__),
)

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

    @property
    def in_flight(self) -> int:
        """How many task bodies were submitted to the cluster and have not settled yet."""
        return len(self._jobs)

    def __repr__(self) -> str:
        client = self._client_ref()
        where = getattr(getattr(client, "scheduler", None), "address", None) if client else None
        return f"<DaskExecutor {where or client!r} in_flight={self.in_flight}>"

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
        """Install ``CancelPlugin`` on the Dask workers, once per executor.

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
                await client.register_plugin(CancelPlugin(), name=PLUGIN_NAME)
            else:
                await asyncio.to_thread(client.register_plugin, CancelPlugin(), PLUGIN_NAME)
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
                remote_call, job.task_id, job.key, self._topic, func, args, kwargs,
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
    err = kind(f"could not send the task to the Dask cluster: {describe(root)}")
    err.__cause__ = exc
    return err


def _remote_only(exc: BaseException) -> BaseException:
    """Drop the client's own frames (``gather`` re-raising) from a remote error's traceback.

    A ``Carried`` error gives back the exception it carries (``SystemExit``, say).
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_NOT_THE_BODY):
        tb = tb.tb_next
    if isinstance(exc, Carried) and len(exc.args) == 1 and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    return exc.with_traceback(tb)


def _unwrap(value: Any) -> tuple[bool, Any]:
    """``(ok, value)`` of what ``gather`` returned for one of our keys."""
    if isinstance(value, Result):
        return True, value.value
    if isinstance(value, Unfetchable):
        kind = TypeError if value.pickling_error else RuntimeError
        return False, kind(value.message)
    # Not wrapped: the Dask worker runs another version of task_worker.
    return True, value


def _deserialize_result(header: dict[str, Any], frames: list[Any]) -> Result | Unfetchable:
    """Dask's deserializer of a ``Result`` (in the kernel): never raises."""
    if not header.get("ok"):
        return Unfetchable(header["message"], header["pickling"])
    try:
        return Result(deserialize(header["value"], frames))
    except BaseException as why:  # user code (a loader) can raise anything
        return unfetchable(header["type"], "received: unpickling it raised", why)


dask_deserialize.register(Result)(_deserialize_result)


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
        err = RuntimeError(f"the task raised {describe(value)}")
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


__all__ = ["DaskExecutor"]
