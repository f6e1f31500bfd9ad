"""The part of the Dask executor that runs on the Dask workers (never in the kernel).

``remote_call`` runs a task body there with ``report_progress`` wired to a
``RemoteReporter`` (a ``ProgressSink`` that sends progress back on a Dask event
topic), ``CancelPlugin`` interrupts bodies whose key gets cancelled, and the
envelopes (``Result``, ``Carried``) make sure whatever the body returns or
raises can travel back. The kernel side (``_dask.DaskExecutor``) imports this
module only to name these objects in what it submits.

Stopping a body: once the Dask worker moves the key out of its executing state,
the reporter's ``report`` raises ``CancelledError`` (a local dict lookup, no
network), so cooperative code stops at its next ``report_progress``; and
``CancelPlugin`` cancels an async body's task, or raises ``ThreadInterrupted``
(``_interrupt.raise_in_thread``) in a sync body's thread if it still runs
``INJECT_AFTER`` seconds later, as the local worker does.
"""

# Dask's pickle and dispatch helpers are untyped.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import asyncio
import contextvars
import inspect
import pickle
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tblib.pickling_support  # type: ignore[import-untyped]
from dask.sizeof import sizeof
from distributed import WorkerPlugin, get_worker
from distributed.core import collect_causes
from distributed.protocol import pickle as dask_pickle
from distributed.protocol.serialize import dask_serialize, serialize

from ._interrupt import INJECT_AFTER, ThreadInterrupted, clear_in_thread, raise_in_thread
from ._progress import check_fraction, current_sink

#: Seconds between two progress messages of one remote task.
PROGRESS_INTERVAL = 0.1

#: The name ``CancelPlugin`` is registered under (once per cluster and executor).
PLUGIN_NAME = "task_worker-cancel"

#: Worker-side states of a key whose body is (still) wanted.
_ALIVE_STATES = frozenset({"executing", "long-running"})


class RemoteReporter:
    """The ``ProgressSink`` of a task body on a Dask worker; also stops that body.

    ``report_progress`` calls ``report(x)``; ``current_task_id`` reads ``id``.
    Sends are rate-limited to one per ``PROGRESS_INTERVAL`` with a trailing
    send of the latest value.

    ``interrupt_soon()`` (called by ``CancelPlugin`` when the Dask worker
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

    @property
    def stop_requested(self) -> bool:
        """``ProgressSink.stop_requested``: interrupted, or the key is no longer wanted."""
        return self._interrupted or self.cancelled()

    def cancelled(self) -> bool:
        """Whether the Dask worker no longer wants this key (cancelled, released)."""
        try:
            ts = self._worker.state.tasks.get(self._key)
        except AttributeError:  # pragma: no cover - a future distributed without WorkerState
            return False
        return ts is None or ts.state not in _ALIVE_STATES

    def report(self, fraction: float) -> None:
        """``ProgressSink.report``: rate-limited send to the kernel (any thread).

        Raises:
            asyncio.CancelledError: the Dask worker cancelled this key.
        """
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


# Bodies running in this (Dask worker) process, by key: what CancelPlugin stops.
_running: dict[str, RemoteReporter] = {}
_running_lock = threading.Lock()


class CancelPlugin(WorkerPlugin):
    """On each Dask worker: interrupt a task_worker body whose key gets cancelled."""

    name = PLUGIN_NAME
    idempotent = True

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "cancelled" or (start in _ALIVE_STATES and finish in ("released", "forgotten")):
            reporter = _running.get(key) if _running else None
            if reporter is not None:
                reporter.interrupt_soon()


def remote_call(
    task_id: str | None, key: str, topic: str, func: Callable[..., Any],
    args: tuple[Any, ...], kwargs: dict[str, Any],
) -> Result:
    """Runs on the Dask worker: the task body with ``report_progress`` wired up.

    What leaves it can always travel back: the result goes in a ``Result``
    envelope, and an exception that cannot travel as itself is replaced (see
    ``fit_for_travel``).
    """
    reporter = RemoteReporter(task_id, get_worker(), key, topic)
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
        if reporter.stop_requested:
            raise  # our own cancellation: the client has stopped listening
        failure = fit_for_travel(exc)
    except BaseException as exc:  # every outcome must reach the client
        failure = fit_for_travel(exc)
    else:
        return Result(result)
    # Raised here, outside the except clauses: no unpicklable __context__ rides along.
    raise failure


def _call(reporter: RemoteReporter, func: Callable[..., Any], args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    current_sink.set(reporter)
    if "progress_callback" not in kwargs and _declares_progress_callback(func):
        kwargs = {**kwargs, "progress_callback": reporter.progress_callback}
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        # A coroutine function (or a function returning an awaitable): run it on a
        # private loop in this Dask worker thread, so CPU-bound async code never
        # blocks the Dask worker's own event loop.
        result = reporter.run_async(result)
    return result


def _declares_progress_callback(func: Callable[..., Any]) -> bool:
    """Whether ``func`` has a ``progress_callback`` parameter (then it is given one)."""
    try:
        return "progress_callback" in inspect.signature(func).parameters
    except (TypeError, ValueError):  # no signature (some builtins): it declares nothing
        return False


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


# ------------------------------------------------- what travels back, safely
class Carried(Exception):
    """Carries a ``BaseException`` a body raised (``SystemExit``, ``KeyboardInterrupt``...).

    Dask lets ``SystemExit`` and ``KeyboardInterrupt`` from a task shut the Dask
    worker down, so the body's exception travels inside this one; the kernel
    side unwraps it, and the task fails with it as it would locally.
    """


def fit_for_travel(exc: BaseException) -> BaseException:
    """``exc``, or what to raise instead so that the client gets a clear error.

    Dask sends a task's exception back by pickling it, after calling its
    ``str()`` and ``repr()``; user code in any of these can raise (even a
    ``BaseException``), which Dask reports confusingly or not at all. The
    replacement keeps the remote traceback.
    """
    sent = exc if isinstance(exc, Exception) else Carried(exc).with_traceback(exc.__traceback__)
    problem = _travel_problem(sent)
    if problem is None:
        return sent
    err = RuntimeError(
        f"the task failed on the Dask worker with an exception that could not be sent back "
        f"({problem}): {describe(exc)}")
    return err.with_traceback(exc.__traceback__)


def _travel_problem(exc: BaseException) -> str | None:
    """Why ``exc`` cannot travel to the client as itself (a round trip as Dask makes it), or None."""
    try:
        # As Dask's error_message() does: exceptions pickle with their traceback
        # and causes, and tblib rebuilds some that plain pickle cannot.
        tblib.pickling_support.install(exc, *collect_causes(exc))
    except BaseException as why:  # a class whose __reduce_ex__ lookup raises, say
        return f"preparing it for pickling raised {describe(why)}"
    steps: tuple[tuple[str, Callable[[Any], Any]], ...] = (
        ("its str()", str), ("its repr()", repr), ("pickling it", dask_pickle.dumps))
    data: Any = exc
    for what, step in steps:
        try:
            data = step(exc)
        except BaseException as why:  # user code: anything can come out
            return f"{what} raised {describe(why)}"
    try:
        dask_pickle.loads(data)
    except BaseException as why:
        return f"unpickling it raised {describe(why)}"
    return None


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` without trusting its ``__str__`` (user code)."""
    name = type(exc).__qualname__
    try:
        text = str(exc)
    except BaseException:  # a broken __str__ must not break error reporting
        return f"{name} (whose str() raised)"
    return f"{name}: {text}" if text else name


class Result:
    """A body's return value on its way back to the client.

    Serialized by Dask with ``serialize_result`` (here) and the kernel side's
    ``deserialize_result``, which run Dask's own serialization of the value
    but turn a failure on either side (pickling on the Dask worker, unpickling
    in the client) into an ``Unfetchable``: otherwise a ``__reduce__`` raising
    ``KeyboardInterrupt`` kills the Dask worker's connection, and the task
    would never finish.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Unfetchable:
    """Stands for a result that could not be sent back or received: the task fails with ``message``."""

    __slots__ = ("message", "pickling_error")

    def __init__(self, message: str, pickling_error: bool) -> None:
        self.message = message
        self.pickling_error = pickling_error

    def __reduce__(self) -> tuple[Any, ...]:
        return (Unfetchable, (self.message, self.pickling_error))


def unfetchable(value_type: str, problem: str, why: BaseException) -> Unfetchable:
    """The ``Unfetchable`` for a value of type ``value_type`` that could not be ``problem``."""
    cause = why.__cause__ or why  # serialize() wraps the pickling error in its own TypeError
    return Unfetchable(
        f"the task finished on the Dask worker, but its result (a {value_type}) could not be "
        f"{problem} {describe(cause)}",
        isinstance(cause, (TypeError, pickle.PicklingError)))


def serialize_result(result: Result, context: Any = None) -> tuple[dict[str, Any], list[Any]]:
    """Dask's serializer of a ``Result`` (on the Dask worker): never raises."""
    value = result.value
    try:
        header, frames = serialize(value, on_error="raise", context=context)
    except BaseException as why:  # user __reduce__ code can raise anything
        bad = unfetchable(type(value).__qualname__, "sent back: pickling it raised", why)
        return {"ok": False, "message": bad.message, "pickling": bad.pickling_error}, []
    return {"ok": True, "value": header, "type": type(value).__qualname__}, frames


def _sizeof_result(result: Result) -> int:
    return int(sizeof(result.value))  # Dask's memory accounting sees the value itself


dask_serialize.register(Result)(serialize_result)
sizeof.register(Result)(_sizeof_result)


__all__ = [
    "PLUGIN_NAME",
    "PROGRESS_INTERVAL",
    "CancelPlugin",
    "Carried",
    "RemoteReporter",
    "Result",
    "Unfetchable",
    "describe",
    "fit_for_travel",
    "remote_call",
    "serialize_result",
    "unfetchable",
]
