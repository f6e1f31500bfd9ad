"""Sync task bodies in worker threads: the pool (``BodyThreads``), one body's run and
its interruption (``ThreadRun``), a worker's bodies with its abandoned ones
(``ThreadBodies``, ``AbandonedThreads``).

A sync body cannot be cancelled the asyncio way. Two mechanisms stop it:
``report_progress`` raises ``CancelledError`` at its next call, and for code
that does not report within ``INJECT_AFTER`` seconds, the worker raises
``ThreadInterrupted`` inside the thread with ``PyThreadState_SetAsyncExc``.
That exception is delivered between two bytecodes: a C call in progress
(``time.sleep``, a socket read, a long numpy operation) finishes first, and a
bare ``except:`` in user code can swallow it.

CPU time: each body measures its own ``time.thread_time()`` in its own thread
(``ThreadRun.cpu_seconds``: so far while it runs, where the platform can read
another thread's clock); a finished body's figure is kept by task id in
``ThreadBodies.cpu`` (a bounded ``CpuLog`` of floats: nothing of the task's).
The task details (``_details``) show it.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ._interrupt import INJECT_AFTER, ThreadInterrupted, clear_in_thread, raise_in_thread
from ._progress import current_sink

_thread_time = time.thread_time
#: Reads another thread's CPU clock (POSIX); absent elsewhere: no figure while a body runs.
_cpu_clock_of: Callable[[int], int] | None = getattr(time, "pthread_getcpuclockid", None)


class CpuLog:
    """The CPU time of the latest finished thread bodies, by task id (at most ``limit``;
    floats only, so a finished task keeps nothing of its own alive here)."""

    __slots__ = ("_lock", "_times", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._times: OrderedDict[str, float] = OrderedDict()

    def record(self, task_id: str, seconds: float) -> None:
        """Keep ``seconds`` for ``task_id`` (any thread), forgetting the oldest over ``limit``."""
        with self._lock:
            times = self._times
            times[task_id] = seconds
            times.move_to_end(task_id)
            if len(times) > self.limit:
                times.popitem(last=False)

    def get(self, task_id: str) -> float | None:
        """The CPU seconds the finished body of ``task_id`` used, if known."""
        with self._lock:
            return self._times.get(task_id)

    def __len__(self) -> int:
        return len(self._times)


class AbandonedThreads:
    """How many abandoned thread bodies still run, each holding a worker slot.

    The count is kept by the threads themselves, under a lock: a body's thread
    gives its slot back when it really returns, whatever became of the event
    loop that started it (stopped, closed, or replaced by another one).
    """

    __slots__ = ("_lock", "_on_release", "count")

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self.count = 0
        #: Called from the returning thread once the count went down (never raises).
        self._on_release = on_release

    def _add(self) -> None:
        with self._lock:
            self.count += 1

    def _release(self) -> None:
        with self._lock:
            self.count -= 1
        self._on_release()


class ThreadRun:
    """One sync body in one worker thread: where it runs and whether it may be interrupted."""

    __slots__ = ("_abandoned", "_cpu_ident", "_cpu_log", "_ident", "_injected", "_lock", "_requested",
                 "_returned", "cpu_start", "cpu_time", "done")

    def __init__(self, done: asyncio.Future[tuple[bool, Any]], cpu_log: CpuLog | None = None) -> None:
        self._lock = threading.Lock()
        self._cpu_log = cpu_log
        self._cpu_ident = 0
        #: The body thread's ``time.thread_time()`` when the body started, and the CPU
        #: seconds it used once it returned (``None`` until then).
        self.cpu_start = 0.0
        self.cpu_time: float | None = None
        self._ident = 0
        self._requested = False
        self._injected = False
        self._returned = False
        self._abandoned: AbandonedThreads | None = None
        #: Resolved on the loop with ``(ok, value_or_exception)`` when the thread is finished
        #: (never, once abandoned: nobody waits any more).
        self.done = done

    def main(
        self, loop: asyncio.AbstractEventLoop, func: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Thread entry point: run ``func`` and hand the outcome to the loop. Never raises."""
        outcome: tuple[bool, Any]
        try:
            try:
                with self._lock:
                    if self._requested:  # cancelled before the thread got to it
                        raise ThreadInterrupted
                    self._ident = self._cpu_ident = threading.get_ident()
                    self.cpu_start = _thread_time()
                outcome = (True, func(*args, **kwargs))
            finally:
                # From here on no interruption may land: our own code would
                # receive it. Clear a pending one under the lock the injector holds.
                with self._lock:
                    self._ident = 0
                    clear_in_thread(threading.get_ident())
                    if self._cpu_ident:
                        self.cpu_time = _thread_time() - self.cpu_start
                        self._cpu_ident = 0
        except BaseException as exc:
            outcome = (False, exc)
        self._log_cpu()
        with self._lock:
            self._returned = True
            abandoned = self._abandoned
        if abandoned is not None:
            abandoned._release()  # nobody waits for the outcome: just free the slot
            return
        try:
            loop.call_soon_threadsafe(_resolve, self.done, outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
            pass

    def _log_cpu(self) -> None:
        # In the body's thread: its context's sink is the task's record (it has the id).
        log, cpu = self._cpu_log, self.cpu_time
        if log is None or cpu is None:
            return
        task_id = getattr(current_sink.get(), "id", None)
        if isinstance(task_id, str):
            log.record(task_id, cpu)

    def cpu_seconds(self) -> float | None:
        """CPU seconds the body used: final once it returned; so far while it runs
        (where the platform can read another thread's clock); ``None`` otherwise."""
        with self._lock:
            if self.cpu_time is not None:
                return self.cpu_time
            ident = self._cpu_ident
            if not ident or _cpu_clock_of is None:
                return None
            try:
                return max(0.0, time.clock_gettime(_cpu_clock_of(ident)) - self.cpu_start)
            except (OSError, OverflowError, ValueError):  # the thread is gone, or no such clock
                return None

    def request_stop(self) -> None:
        """Ask the body to stop: it never starts if it has not yet, and
        ``report_progress`` raises ``CancelledError`` from now on (the worker
        sets the task's cancel reason)."""
        with self._lock:
            self._requested = True

    def abandon(self, counter: AbandonedThreads) -> bool:
        """Stop waiting for the body. Unless its thread already returned, it is
        counted in ``counter`` until it does. Returns whether it was counted."""
        with self._lock:
            if self._returned or self._abandoned is not None:
                return False
            self._abandoned = counter
            counter._add()  # under our lock: the thread releases only after this
            return True

    def inject(self) -> None:
        """Raise ``ThreadInterrupted`` in the body's thread (once), if it still runs.

        Used only after a grace period: an asynchronous exception can land
        anywhere, including inside a library holding a lock, so bodies that
        stop cooperatively are left to do so first.
        """
        with self._lock:
            if self._ident and not self._injected:
                self._injected = True
                raise_in_thread(self._ident)


def _resolve(fut: asyncio.Future[tuple[bool, Any]], outcome: tuple[bool, Any]) -> None:
    if not fut.done():
        fut.set_result(outcome)


_Job = tuple[Callable[..., None], tuple[Any, ...]]
_live_pools: weakref.WeakSet[BodyThreads] = weakref.WeakSet()
_atexit_registered = False


class BodyThreads:
    """The threads sync bodies run in: one thread per body, idle threads reused.

    A submitted body never waits in a queue behind others (unlike a
    ``ThreadPoolExecutor`` of fixed size): it starts at once, so a body counted
    as running is really running, and shutting down has nothing to cancel.
    The worker's slots bound how many bodies run at once.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle = 0  # threads waiting on _jobs
        self._started = 0
        self._closed = False
        global _atexit_registered
        if not _atexit_registered:
            _atexit_registered = True
            # As concurrent.futures does: wake idle threads at interpreter exit,
            # before threading joins them.
            try:
                threading._register_atexit(_shutdown_all)  # type: ignore[attr-defined]
            except RuntimeError:  # the interpreter is already shutting down
                pass
        _live_pools.add(self)

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` (which must not raise) in a thread, now."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            if self._idle:
                self._idle -= 1
                self._jobs.put((fn, args))
                return
            self._started += 1
            n = self._started
        # In a box the thread empties: Thread keeps its args until it ends.
        threading.Thread(target=self._serve, args=([(fn, args)],), name=f"{self._name}_{n}").start()

    def _serve(self, box: list[_Job]) -> None:
        job: _Job | None = box.pop()
        while job is not None:
            fn, args = job
            fn(*args)
            # Idle threads hold nothing of the last body (its context holds its task).
            job = fn = args = None  # type: ignore[assignment]
            with self._lock:
                if self._closed:
                    return
                self._idle += 1
            job = self._jobs.get()

    def shutdown(self) -> None:
        """Let idle threads exit; busy ones exit when their body returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._jobs.put(None)


class ThreadBodies:
    """The sync bodies of one worker: the pool their threads come from (opened on
    first use, shut down by ``close()`` or when this object is dropped) and the
    count of abandoned bodies that still hold a worker slot."""

    __slots__ = ("__weakref__", "_closer", "_name", "_pool", "abandoned", "cpu")

    def __init__(self, name: str, on_abandoned_return: Callable[[], None]) -> None:
        self._name = name
        #: CPU seconds of the latest finished bodies, by task id.
        self.cpu = CpuLog()
        #: Abandoned bodies still running (nobody waits for them any more): each
        #: keeps its slot until its thread returns and says so.
        self.abandoned = AbandonedThreads(on_abandoned_return)
        self._pool: BodyThreads | None = None
        self._closer: weakref.finalize[[], ThreadBodies] | None = None

    def start(
        self, loop: asyncio.AbstractEventLoop, func: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ThreadRun:
        """Start ``func(*args, **kwargs)`` in a thread now, in a copy of the current
        context (``report_progress`` and output routing work there, as with
        ``asyncio.to_thread``); ``wait`` for its outcome."""
        pool = self._pool
        if pool is None:
            pool = self._pool = BodyThreads(self._name)
            # Dropped without close(): its idle threads exit with it.
            self._closer = weakref.finalize(self, pool.shutdown)
        run = ThreadRun(loop.create_future(), self.cpu)
        ctx = contextvars.copy_context()
        pool.submit(ctx.run, run.main, loop, func, args, kwargs)
        return run

    async def wait(self, run: ThreadRun, inject_after: float = INJECT_AFTER) -> tuple[bool, Any]:
        """``(True, result)`` or ``(False, exception)`` of ``run``.

        Cancelled, it asks the body to stop, interrupts its thread after
        ``inject_after`` seconds, and keeps waiting (holding the worker slot, so
        that no more than ``max_workers`` bodies ever run) until the body
        returns; cancelled again, it abandons the body (which keeps counting in
        ``abandoned`` until it returns) and re-raises.
        """
        try:
            return await asyncio.shield(run.done)
        except asyncio.CancelledError:
            run.request_stop()
            run.done.get_loop().call_later(inject_after, run.inject)
            try:
                await asyncio.shield(run.done)
            except asyncio.CancelledError:
                run.abandon(self.abandoned)
                raise
            raise

    def close(self) -> None:
        """Let idle threads exit (busy ones exit when their body returns). Safe to repeat;
        ``start`` opens a new pool."""
        if self._closer is not None:
            self._closer()  # shuts the pool down, once
            self._closer = None
        self._pool = None


def _shutdown_all() -> None:
    for pool in list(_live_pools):
        pool.shutdown()
