"""DaskExecutor: task bodies on a real LocalCluster (2 worker processes on 127.0.0.1).

The cluster is started once for the module (it costs seconds). Remote code
synchronises with the test through ``distributed.Event``s, never sleeps; the
only sleeps are simulated work inside remote loops.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import task_worker
from task_worker import (
    AsyncTaskWorker,
    EventKind,
    TaskEvent,
    TaskStatus,
    ThreadInterrupted,
    current_task_id,
    report_progress,
)

try:
    import cloudpickle
    import dask
    import distributed
    from distributed import Client, Event, LocalCluster
except ImportError:  # pragma: no cover - the [dask] extra is part of [test]
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip("distributed is not installed", allow_module_level=True)

from task_worker._dask import DaskExecutor
from task_worker._dask_remote import PROGRESS_INTERVAL
from task_worker._executors import adapt_executor

# Dask workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(120)

#: How long a remote body or the test waits on an Event before giving up (a
#: failure, never a normal path).
PATIENCE = 60.0

#: Even with dashboard_address=None the scheduler serves HTTP (/health, /metrics) on
#: port 8787, or warns (an error under our pytest config) and picks another when it is taken.
_NO_HTTP_PORT_8787 = {"dashboard_address": "127.0.0.1:0"}

# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # One retry after a worker dies, so the killed-worker tests stay short.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1",
                               scheduler_kwargs=_NO_HTTP_PORT_8787)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def sync_client(cluster: LocalCluster) -> Iterator[Client]:
    """A synchronous Client: its event loop runs in its own thread."""
    with Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture
async def async_client(cluster: LocalCluster) -> AsyncIterator[Client]:
    """An asynchronous Client on the test's (the worker's) event loop."""
    async with Client(cluster.scheduler_address, asynchronous=True, set_as_default=False) as client:
        yield client


@pytest.fixture(params=["sync", "async"])
async def client(request: pytest.FixtureRequest, sync_client: Client,
                 cluster: LocalCluster) -> AsyncIterator[Client]:
    if request.param == "sync":
        yield sync_client
    else:
        async with Client(cluster.scheduler_address, asynchronous=True,
                          set_as_default=False) as c:
            yield c


@pytest.fixture
async def dworker(sync_client: Client) -> AsyncIterator[AsyncTaskWorker]:
    """A started worker whose tasks run on the cluster (through the sync client)."""
    async with AsyncTaskWorker(max_workers=4, executor=DaskExecutor(sync_client)) as w:
        yield w


def _event(sync_client: Client) -> Event:
    return Event(f"tw-test-{uuid.uuid4().hex}", client=sync_client)


async def _wait_event(ev: Event) -> bool:
    """Wait (in a thread: it blocks) for a distributed Event set by remote code."""
    return await asyncio.to_thread(ev.wait, PATIENCE)  # type: ignore[no-any-return]


def _progress_waiter(worker: AsyncTaskWorker, task_id: str, at_least: float = 0.0
                     ) -> tuple[asyncio.Future[float], Any]:
    """A future set by the first PROGRESS event of ``task_id`` with progress >= at_least."""
    fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_event(ev: TaskEvent) -> None:
        if (ev.kind is EventKind.PROGRESS and ev.info is not None and ev.info.id == task_id
                and ev.info.progress >= at_least and not fut.done()):
            fut.set_result(ev.info.progress)

    return fut, worker.subscribe(on_event)


# ------------------------------------------------------------ remote bodies
def remote_pid_and_id(x: int) -> tuple[int, int, str | None]:
    return x + 1, os.getpid(), current_task_id()


async def remote_async(x: int) -> tuple[int, int, str | None]:
    await asyncio.sleep(0)
    return x * 2, os.getpid(), current_task_id()


def _innermost_failure(value: int) -> None:
    raise ValueError(f"bad value {value}")


def remote_fails(value: int) -> None:
    _innermost_failure(value)


def _announce(ev: Event) -> None:
    """Set ``ev`` from a body being stopped, even if the cancel plugin's
    ``ThreadInterrupted`` (raised at most once) lands inside this call."""
    try:
        ev.set()
    except ThreadInterrupted:
        ev.set()
        raise


def remote_cooperative(stopped: Event) -> None:
    """Reports progress while it works until cancelled; says when it stopped.

    Stopped by ``report_progress`` raising ``CancelledError`` or, if that is
    too slow, by the cancel plugin raising ``ThreadInterrupted`` in its thread.
    """
    i = 0
    try:
        while True:
            report_progress(min(i / 1000, 0.99))
            i += 1
            time.sleep(0.005)  # simulated work
    except (asyncio.CancelledError, ThreadInterrupted):
        _announce(stopped)
        raise


def remote_reports_how_it_stopped(stopped: Event, by_cancelled_error: Event) -> None:
    """Reports progress every 5 ms; says whether CancelledError stopped it first."""
    i = 0
    try:
        while True:
            report_progress(min(i / 1000, 0.99))
            i += 1
            time.sleep(0.005)  # simulated work
    except asyncio.CancelledError:
        _announce(by_cancelled_error)
        _announce(stopped)
        raise
    except ThreadInterrupted:
        _announce(stopped)
        raise


def remote_cooperative_in_thread(stopped: Event) -> None:
    """The cooperative loop in a thread of its own, out of the plugin's reach:
    only ``report_progress`` raising ``CancelledError`` can stop it."""
    outcome: list[BaseException] = []

    def loop() -> None:
        i = 0
        try:
            while True:
                report_progress(min(i / 1000, 0.99))
                i += 1
                time.sleep(0.005)  # simulated work
        except asyncio.CancelledError as exc:
            outcome.append(exc)
            stopped.set()

    ctx = contextvars.copy_context()  # report_progress needs the task's context
    thread = threading.Thread(target=ctx.run, args=(loop,))
    thread.start()
    thread.join()
    raise outcome[0]


def _spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass  # pure-Python work


def remote_busy_loop(started: Event, stopped: Event) -> None:
    """Never reports progress: only an interruption stops it.

    The interruption can land anywhere once the test saw ``started``, even
    before ``started.set()`` returned here: both are inside the ``try``. The
    loop is in a function of its own: on CPython 3.13 an asynchronous
    exception raised at the backward jump of a ``while`` loop skips the
    ``except``/``finally`` around that loop in the same function (CPython
    gh-139622); the caller's handler still runs.
    """
    try:
        started.set()
        _spin(PATIENCE)
    except ThreadInterrupted:
        _announce(stopped)
        raise


async def remote_async_sleeper(started: Event, stopped: Event) -> None:
    started.set()
    try:
        await asyncio.sleep(PATIENCE)
    except asyncio.CancelledError:
        stopped.set()
        raise


def remote_chatty(calls: int, seen: Event) -> tuple[float, int]:
    """Floods report_progress, then waits until the test saw the last value."""
    t0 = time.monotonic()
    for i in range(calls):
        report_progress(i / (2 * calls))
    report_progress(0.5)
    assert seen.wait(PATIENCE), "the test never saw progress 0.5"
    return time.monotonic() - t0, calls + 1


def remote_with_callback(progress_callback: Any, seen: Event) -> str:
    progress_callback(0.25)
    assert seen.wait(PATIENCE)
    return "called back"


def remote_gate(gate: Event) -> str:
    assert gate.wait(PATIENCE), "gate never opened"
    return "gate passed"


def never_submitted_body(marker: str) -> None:
    Path(marker).write_text("ran")


def remote_dies_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return f"retried after pid {Path(marker).read_text()} died"


def remote_always_dies() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------- objects that resist travelling
class LockHolder:
    """Holds a lock: pickling it raises TypeError."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


class ReduceRaises:
    """``__reduce__`` raises ``exc_type`` (user code run by pickle)."""

    def __init__(self, exc_type: type[BaseException]) -> None:
        self.exc_type = exc_type

    def __reduce__(self) -> Any:
        raise self.exc_type("__reduce__ refused")


def _refuse_to_load(exc_type: type[BaseException]) -> None:
    raise exc_type("loading refused")


class LoadRaises:
    """Pickles fine; unpickling it (on the receiving side) raises ``exc_type``."""

    def __init__(self, exc_type: type[BaseException]) -> None:
        self.exc_type = exc_type

    def __reduce__(self) -> Any:
        return (_refuse_to_load, (self.exc_type,))


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() is broken")


class BrokenRepr(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("repr() is broken")


class HoldsALock(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class ReduceExits(Exception):
    def __reduce__(self) -> Any:
        raise SystemExit("__reduce__ exits")


class TwoArgs(Exception):
    """Plain pickle cannot rebuild it (its __init__ wants two arguments); Dask's tblib can."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def remote_returns(make: Any) -> Any:
    return make()


def remote_raises(make: Any) -> None:
    raise make()


# -------------------------------------------------------------------- tests
def test_importing_task_worker_does_not_import_dask() -> None:
    code = textwrap.dedent("""
        import sys, task_worker
        from task_worker import AsyncTaskWorker, report_progress
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_dask_workers_run_bodies_without_importing_the_kernel_side() -> None:
    # A cluster of its own: the module's Dask workers import this test module
    # (which imports the kernel side) while they unpickle the other tests' bodies.
    async with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                            dashboard_address=None, host="127.0.0.1",
                            scheduler_kwargs=_NO_HTTP_PORT_8787, asynchronous=True) as fresh, \
            Client(fresh, asynchronous=True, set_as_default=False) as client, \
            AsyncTaskWorker(executor=client) as w:
        # The body (a builtin, sent by reference) lists what its process imported.
        tid = await w.add_task(
            eval, "sorted(m for m in __import__('sys').modules if m.startswith('task_worker.'))")
        loaded = await w.wait(tid, timeout=PATIENCE)
    assert "task_worker._dask_remote" in loaded, loaded
    assert "task_worker._dask" not in loaded, loaded  # DaskExecutor stays in the kernel


def test_dask_executor_needs_a_client_and_is_one_per_client(sync_client: Client) -> None:
    with pytest.raises(TypeError, match=r"distributed\.Client, got 42"):
        DaskExecutor(42)
    ex = DaskExecutor(sync_client)
    assert DaskExecutor(sync_client) is ex
    assert ex.client is sync_client
    assert sync_client.scheduler.address in repr(ex)


def test_adapt_executor_turns_a_client_into_a_dask_executor(sync_client: Client) -> None:
    assert isinstance(adapt_executor(sync_client), DaskExecutor)


async def test_worker_executor_client_runs_every_task_on_the_cluster(sync_client: Client) -> None:
    async with AsyncTaskWorker(executor=sync_client) as w:
        tid = await w.add_task(remote_pid_and_id, 1)
        result, pid, _ = await w.wait(tid, timeout=PATIENCE)
    assert result == 2 and pid != os.getpid()


async def test_add_task_executor_client_runs_that_task_on_the_cluster(
        worker: AsyncTaskWorker, async_client: Client) -> None:
    remote = await worker.add_task(remote_pid_and_id, 1, executor=async_client)
    local = await worker.add_task(remote_pid_and_id, 1)
    assert (await worker.wait(remote, timeout=PATIENCE))[1] != os.getpid()
    assert (await worker.wait(local, timeout=PATIENCE))[1] == os.getpid()


async def test_sync_and_async_functions_run_remotely_with_their_task_id(client: Client) -> None:
    async with AsyncTaskWorker(max_workers=4, executor=DaskExecutor(client)) as w:
        sync_id = await w.add_task(remote_pid_and_id, 1)
        async_id = await w.add_task(remote_async, 21)
        await w.join()
        sync_info, async_info = w.get_task_info(sync_id), w.get_task_info(async_id)
    assert sync_info is not None and async_info is not None
    assert sync_info.status is TaskStatus.COMPLETED, sync_info.error
    assert async_info.status is TaskStatus.COMPLETED, async_info.error
    assert sync_info.result[0] == 2 and async_info.result[0] == 42
    assert sync_info.result[1] != os.getpid() and async_info.result[1] != os.getpid()
    # current_task_id() answers on the Dask worker too.
    assert sync_info.result[2] == sync_id and async_info.result[2] == async_id


async def test_dask_futures_as_arguments_are_resolved_remotely(
        dworker: AsyncTaskWorker, sync_client: Client) -> None:
    x = sync_client.submit(int, "41", pure=False)
    tid = await dworker.add_task(remote_pid_and_id, x)
    assert (await dworker.wait(tid, timeout=PATIENCE))[0] == 42


async def test_error_fails_the_task_and_keeps_the_remote_traceback(client: Client) -> None:
    async with AsyncTaskWorker(executor=DaskExecutor(client)) as w:
        tid = await w.add_task(remote_fails, 7)
        with pytest.raises(ValueError, match="bad value 7"):
            await w.wait(tid, timeout=PATIENCE)
        info = w.get_task_info(tid)
    assert info is not None and info.status is TaskStatus.FAILED
    assert info.error == "ValueError: bad value 7"
    assert isinstance(info.exception, ValueError)
    tb = info.traceback or ""
    # Both remote frames, innermost last; no frames of task_worker or of the client's gather.
    assert tb.index("remote_fails") < tb.index("_innermost_failure")
    files = _frame_files(tb)
    assert files and all(f == __file__ for f in files), tb
    assert not [f for f in files if _is_under(f, task_worker) or _is_under(f, distributed)], tb


def _frame_files(tb: str) -> list[str]:
    """The file of each frame of a formatted traceback."""
    return re.findall(r'^  File "(.+)", line \d+', tb, flags=re.MULTILINE)


def _is_under(filename: str, package: Any) -> bool:
    """Whether ``filename`` is one of ``package``'s own files (wherever it is installed)."""
    root = os.path.dirname(os.path.abspath(package.__file__))
    return os.path.commonpath([os.path.abspath(filename), root]) == root


async def test_unpicklable_argument_fails_the_task_with_dasks_error(dworker: AsyncTaskWorker) -> None:
    tid = await dworker.add_task(remote_pid_and_id, threading.Lock())
    msg = r"^could not send the task to the Dask cluster: TypeError: cannot pickle"
    with pytest.raises(TypeError, match=msg):
        await dworker.wait(tid, timeout=PATIENCE)
    info = dworker.get_task_info(tid)
    assert info is not None and info.status is TaskStatus.FAILED


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reached the running loop's exception handler during the test (must stay empty)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


async def _outcome(w: AsyncTaskWorker, func: Any, *args: Any) -> Any:
    """Run one task to its end (it must end: no hang), then check the worker is sound."""
    finished: list[TaskEvent] = []
    unsubscribe = w.subscribe(lambda ev: finished.append(ev) if ev.kind is EventKind.FINISHED else None)
    try:
        tid = await w.add_task(func, *args)
        try:
            await w.wait(tid, timeout=PATIENCE)
        except asyncio.CancelledError:
            raise
        except BaseException:  # the task's own error (SystemExit included), re-raised by wait()
            pass
        info = w.get_task_info(tid)
        assert info is not None and info.status.done, info
        await w.join()
        assert w.stats().busy == 0  # no slot leaked
        # The client (and, for an asynchronous one, this loop) still runs tasks.
        assert (await w.wait(await w.add_task(remote_pid_and_id, 1), timeout=PATIENCE))[0] == 2
    finally:
        unsubscribe()
    assert [ev.info.id for ev in finished if ev.info is not None].count(tid) == 1  # one terminal state
    return info


@pytest.mark.parametrize(("make", "error"), [
    pytest.param(LockHolder, r"^TypeError: the task finished on the Dask worker, but its result "
                 r"\(a LockHolder\) could not be sent back: pickling it raised TypeError: cannot pickle",
                 id="unpicklable"),
    pytest.param(functools.partial(ReduceRaises, ValueError),
                 r"^RuntimeError: .* could not be sent back: "
                 r"pickling it raised ValueError: __reduce__ refused",
                 id="reduce-raises"),
    # This one used to kill the Dask worker's connection: the task never ended.
    pytest.param(functools.partial(ReduceRaises, KeyboardInterrupt),
                 r"could not be sent back: pickling it raised KeyboardInterrupt: __reduce__ refused",
                 id="reduce-raises-KeyboardInterrupt"),
    pytest.param(functools.partial(LoadRaises, ValueError),
                 r"^RuntimeError: the task finished on the Dask worker, but its result \(a LoadRaises\) "
                 r"could not be received: unpickling it raised ValueError: loading refused",
                 id="load-raises"),
    # This one used to kill the client's connection to the scheduler.
    pytest.param(functools.partial(LoadRaises, SystemExit),
                 r"could not be received: unpickling it raised SystemExit: loading refused",
                 id="load-raises-SystemExit"),
])
async def test_a_result_that_cannot_travel_back_fails_the_task_clearly(
        client: Client, make: Any, error: str, loop_errors: list[dict[str, Any]]) -> None:
    async with AsyncTaskWorker(executor=DaskExecutor(client)) as w:
        info = await _outcome(w, remote_returns, make)
    assert info.status is TaskStatus.FAILED
    assert re.search(error, info.error or ""), info.error
    assert not loop_errors


@pytest.mark.parametrize(("make", "error"), [
    pytest.param(BrokenStr, r"\(its str\(\) raised RuntimeError: str\(\) is broken\): BrokenStr",
                 id="broken-str"),
    pytest.param(functools.partial(BrokenRepr, "shown"),
                 r"\(its repr\(\) raised RuntimeError: repr\(\) is broken\): BrokenRepr: shown",
                 id="broken-repr"),
    pytest.param(functools.partial(HoldsALock, "with a lock"),
                 r"\(pickling it raised TypeError: cannot pickle .*\): HoldsALock: with a lock",
                 id="unpicklable"),
    pytest.param(functools.partial(ReduceExits, "exits"),
                 r"\(pickling it raised SystemExit: __reduce__ exits\): ReduceExits: exits",
                 id="reduce-raises-SystemExit"),
])
async def test_an_exception_that_cannot_travel_back_fails_the_task_clearly(
        dworker: AsyncTaskWorker, make: Any, error: str, loop_errors: list[dict[str, Any]]) -> None:
    info = await _outcome(dworker, remote_raises, make)
    assert info.status is TaskStatus.FAILED
    prefix = "RuntimeError: the task failed on the Dask worker with an exception that could not be sent back "
    assert (info.error or "").startswith(prefix), info.error
    assert re.search(error, info.error or ""), info.error
    # The remote traceback is kept: it ends in the body that raised.
    assert "in remote_raises" in (info.traceback or ""), info.traceback
    assert not loop_errors


async def test_an_exception_dask_can_rebuild_arrives_as_itself(dworker: AsyncTaskWorker) -> None:
    info = await _outcome(dworker, remote_raises, functools.partial(TwoArgs, 3, "three"))
    assert info.error == "TwoArgs: three" and info.exception.code == 3


@pytest.mark.parametrize("make", [functools.partial(SystemExit, 2), KeyboardInterrupt],
                         ids=["SystemExit", "KeyboardInterrupt"])
async def test_system_exit_in_a_remote_body_fails_the_task_as_locally_and_spares_the_dask_worker(
        dworker: AsyncTaskWorker, sync_client: Client, make: Any) -> None:
    workers = set(sync_client.scheduler_info()["workers"])
    info = await _outcome(dworker, remote_raises, make)
    assert info.status is TaskStatus.FAILED
    assert type(info.exception) is type(make()) and info.error == _error_text(make())
    assert "in remote_raises" in (info.traceback or ""), info.traceback
    # Dask shuts a worker down on SystemExit/KeyboardInterrupt: the body's never reached it.
    assert set(sync_client.scheduler_info()["workers"]) == workers


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@pytest.mark.parametrize(("exc_type", "error"), [
    (ValueError, r"^RuntimeError: could not send the task to the Dask cluster: "
                 r"ValueError: __reduce__ refused"),
    # These used to escape into the client's event loop (the worker's own, for an
    # asynchronous client) and stop it.
    (KeyboardInterrupt, r"^RuntimeError: could not send the task to the Dask cluster: "
                        r"KeyboardInterrupt: __reduce__ refused"),
    (SystemExit, r"^RuntimeError: could not send the task to the Dask cluster: "
                 r"SystemExit: __reduce__ refused"),
])
async def test_an_argument_whose_reduce_raises_fails_the_task_and_nothing_else(
        client: Client, exc_type: type[BaseException], error: str,
        loop_errors: list[dict[str, Any]]) -> None:
    async with AsyncTaskWorker(executor=DaskExecutor(client)) as w:
        info = await _outcome(w, remote_pid_and_id, ReduceRaises(exc_type))
    assert info.status is TaskStatus.FAILED
    assert re.search(error, info.error or ""), info.error
    assert not loop_errors


async def test_progress_reaches_the_record_and_is_coalesced(
        dworker: AsyncTaskWorker, sync_client: Client) -> None:
    seen = _event(sync_client)
    calls = 5000
    tid = await dworker.add_task(remote_chatty, calls, seen)
    saw_half, unsubscribe = _progress_waiter(dworker, tid, at_least=0.5)
    try:
        # 0.5 is reported inside the rate limit window of the flood: it arrives
        # through the trailing send.
        assert await asyncio.wait_for(saw_half, PATIENCE) == 0.5
    finally:
        unsubscribe()
    seen.set()
    elapsed, reported = await dworker.wait(tid, timeout=PATIENCE)
    sent = [msg for _, msg in sync_client.get_events(DaskExecutor(sync_client).progress_topic)
            if msg[0].startswith("remote_chatty-")]
    # At most one message per PROGRESS_INTERVAL, plus the first and the trailing one.
    assert 1 <= len(sent) <= elapsed / PROGRESS_INTERVAL + 2, (len(sent), reported, elapsed)
    assert len(sent) < reported / 100


async def test_progress_callback_argument_works_remotely(
        dworker: AsyncTaskWorker, sync_client: Client) -> None:
    seen = _event(sync_client)
    tid = await dworker.add_task(remote_with_callback, seen=seen)
    got, unsubscribe = _progress_waiter(dworker, tid, at_least=0.25)
    try:
        assert await asyncio.wait_for(got, PATIENCE) == 0.25
    finally:
        unsubscribe()
    seen.set()
    assert await dworker.wait(tid, timeout=PATIENCE) == "called back"


async def test_cancel_pending_task_never_reaches_the_cluster(
        sync_client: Client, cluster: LocalCluster, tmp_path: Path) -> None:
    gate = _event(sync_client)
    marker = tmp_path / "ran"
    async with AsyncTaskWorker(max_workers=1, executor=DaskExecutor(sync_client)) as w:
        blocker = await w.add_task(remote_gate, gate)
        pending = await w.add_task(never_submitted_body, str(marker))
        assert w.get_task_info(pending).status is TaskStatus.PENDING  # type: ignore[union-attr]
        assert await w.cancel_task(pending) is True
        gate.set()
        assert await w.wait(blocker, timeout=PATIENCE) == "gate passed"
        await w.join()
        info = w.get_task_info(pending)
    assert info is not None and info.status is TaskStatus.CANCELLED
    assert not marker.exists()
    prefixes = set(cluster.scheduler.task_prefixes)
    assert "remote_gate" in prefixes  # the scheduler did see the task that ran...
    assert "never_submitted_body" not in prefixes  # ...and never the cancelled one


async def test_cancel_running_makes_the_next_remote_report_progress_raise(
        client: Client, sync_client: Client) -> None:
    stopped = _event(sync_client)
    async with AsyncTaskWorker(executor=DaskExecutor(client)) as w:
        tid = await w.add_task(remote_cooperative_in_thread, stopped)
        running, unsubscribe = _progress_waiter(w, tid)
        try:
            await asyncio.wait_for(running, PATIENCE)  # the remote loop is reporting
        finally:
            unsubscribe()
        assert await w.cancel_task(tid) is True
        info = w.get_task_info(tid)
        assert info is not None and info.status is TaskStatus.CANCELLED
        assert info.error == "cancelled"
        # Its next report_progress raised CancelledError on the Dask worker.
        assert await _wait_event(stopped)


@pytest.mark.parametrize("body", [remote_busy_loop, remote_async_sleeper])
async def test_cancel_running_interrupts_a_body_that_never_reports(
        body: Any, dworker: AsyncTaskWorker, sync_client: Client) -> None:
    started, stopped = _event(sync_client), _event(sync_client)
    tid = await dworker.add_task(body, started, stopped)
    assert await _wait_event(started)
    assert await dworker.cancel_task(tid) is True
    assert dworker.get_task_info(tid).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
    # The Dask worker cancelled the key; the plugin interrupted the body there.
    assert await _wait_event(stopped)


async def test_cancel_running_lets_a_reporting_body_stop_at_report_progress_first(
        dworker: AsyncTaskWorker, sync_client: Client) -> None:
    # As locally: ThreadInterrupted only for a body that did not stop at its next
    # report_progress within INJECT_AFTER, so a cooperative body's own
    # cleanup is not hit by an asynchronous exception.
    stopped, by_cancelled_error = _event(sync_client), _event(sync_client)
    tid = await dworker.add_task(remote_reports_how_it_stopped, stopped, by_cancelled_error)
    running, unsubscribe = _progress_waiter(dworker, tid)
    try:
        await asyncio.wait_for(running, PATIENCE)
    finally:
        unsubscribe()
    assert await dworker.cancel_task(tid) is True
    assert await _wait_event(stopped)
    assert by_cancelled_error.is_set(), "ThreadInterrupted stopped it before its next report_progress"


async def test_timeout_fails_the_task_and_stops_the_remote_loop(
        dworker: AsyncTaskWorker, sync_client: Client) -> None:
    stopped = _event(sync_client)
    tid = await dworker.add_task(remote_cooperative, stopped, timeout=0.5)
    with pytest.raises(TimeoutError, match=r"timed out after 0\.5 s"):
        await dworker.wait(tid, timeout=PATIENCE)
    info = dworker.get_task_info(tid)
    assert info is not None and info.status is TaskStatus.FAILED
    assert await _wait_event(stopped)


async def test_stop_cancels_remote_bodies(sync_client: Client) -> None:
    stopped = _event(sync_client)
    w = AsyncTaskWorker(executor=DaskExecutor(sync_client))
    await w.start()
    tid = await w.add_task(remote_cooperative, stopped)
    running, unsubscribe = _progress_waiter(w, tid)
    try:
        await asyncio.wait_for(running, PATIENCE)
    finally:
        unsubscribe()
    await w.stop(timeout=0.01)
    info = w.get_task_info(tid)
    assert info is not None and info.status is TaskStatus.CANCELLED
    assert info.error == "cancelled: the worker stopped"
    assert await _wait_event(stopped)


async def test_max_workers_bounds_tasks_in_flight_on_the_cluster(sync_client: Client) -> None:
    gate = _event(sync_client)
    async with AsyncTaskWorker(max_workers=1, executor=DaskExecutor(sync_client)) as w:
        ids = [await w.add_task(remote_gate, gate) for _ in range(3)]
        started, unsubscribe = _started_waiter(w, ids[0])
        try:
            await asyncio.wait_for(started, PATIENCE)
        finally:
            unsubscribe()
        assert w.stats().counts[TaskStatus.RUNNING] == 1
        assert w.stats().counts[TaskStatus.PENDING] == 2
        assert DaskExecutor(sync_client).in_flight <= 1
        gate.set()
        await w.join()
        assert [w.get_task_info(i).result for i in ids] == ["gate passed"] * 3  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_closing_the_client_mid_task_fails_the_task_instead_of_hanging(
        kind: str, cluster: LocalCluster, sync_client: Client) -> None:
    stopped = _event(sync_client)
    if kind == "sync":
        client = Client(cluster, set_as_default=False)
    else:
        client = await Client(cluster.scheduler_address, asynchronous=True, set_as_default=False)
    async with AsyncTaskWorker(executor=DaskExecutor(client)) as w:
        tid = await w.add_task(remote_cooperative, stopped)
        running, unsubscribe = _progress_waiter(w, tid)
        try:
            await asyncio.wait_for(running, PATIENCE)
        finally:
            unsubscribe()
        if kind == "sync":
            await asyncio.to_thread(client.close)
        else:
            await client.close()
        with pytest.raises(RuntimeError, match="cancelled outside task_worker"):
            await w.wait(tid, timeout=PATIENCE)
        # The scheduler released the closed client's key: the remote loop stopped.
        assert await _wait_event(stopped)
        # A closed client refuses new tasks clearly.
        tid2 = await w.add_task(remote_pid_and_id, 1)
        with pytest.raises(RuntimeError, match="Client is closed"):
            await w.wait(tid2, timeout=PATIENCE)


def _started_waiter(worker: AsyncTaskWorker, task_id: str) -> tuple[asyncio.Future[None], Any]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    info = worker.get_task_info(task_id)
    if info is not None and info.status is not TaskStatus.PENDING:
        fut.set_result(None)

    def on_event(ev: TaskEvent) -> None:
        if ev.kind is EventKind.STARTED and ev.info is not None and ev.info.id == task_id \
                and not fut.done():
            fut.set_result(None)

    return fut, worker.subscribe(on_event)


# These two kill Dask worker processes (the nanny restarts them): keep them last.
async def test_killed_worker_process_is_retried_by_dask(
        dworker: AsyncTaskWorker, tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    tid = await dworker.add_task(remote_dies_once, str(marker))
    result = await dworker.wait(tid, timeout=PATIENCE)
    assert result.startswith("retried after pid ")


async def test_worker_process_dying_every_time_fails_the_task_clearly(
        dworker: AsyncTaskWorker) -> None:
    tid = await dworker.add_task(remote_always_dies)
    with pytest.raises(Exception, match="died"):
        await dworker.wait(tid, timeout=PATIENCE)
    info = dworker.get_task_info(tid)
    assert info is not None and info.status is TaskStatus.FAILED
    assert info.error is not None and info.error.startswith("KilledWorker: ")


# ------------------------------------------------------- chains (after=, retries=)
def remote_flaky_once(marker: str) -> int:
    """Fails with ``ConnectionError`` the first time (no ``marker`` file yet), then returns its pid."""
    if not os.path.exists(marker):
        Path(marker).touch()
        raise ConnectionError("flaky network")
    return os.getpid()


async def test_retries_and_after_work_with_the_dask_executor(
        dworker: AsyncTaskWorker, tmp_path: Path) -> None:
    marker = str(tmp_path / "failed-once")
    first = await dworker.add_task(remote_flaky_once, marker, retries=2, retry_delay=0)
    second = await dworker.add_task(remote_pid_and_id, 5, after=first)
    assert isinstance(await dworker.wait(first, timeout=PATIENCE), int)
    assert (await dworker.wait(second, timeout=PATIENCE))[0] == 6
    info = dworker.get_task_info(first)
    assert info is not None and info.attempt == 2
    assert info.attempt_errors == ("ConnectionError: flaky network",)
    later = dworker.get_task_info(second)
    first_done = info.completed_ts
    assert later is not None and later.started_ts is not None and first_done is not None
    assert later.started_ts >= first_done
