"""tqdm bars in tasks drive the task's progress: ``task_worker.tqdm`` always, and
every tqdm flavour while ``drive_task_progress`` is installed (the extension does)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tqdm as tqdm_pkg
import tqdm.auto
import tqdm.notebook
import tqdm.std
from IPython.testing import globalipapp

import task_worker
from task_worker import EventKind, _extension, _tqdm, _worker


def _bar(iterable: Any = None, **kw: Any) -> Any:
    # Every update redraws (and so reports): no time-based batching in tests.
    return task_worker.tqdm(iterable, file=io.StringIO(), mininterval=0, miniters=1, **kw)


@pytest.fixture
def hooked() -> Iterator[None]:
    undo = _tqdm.drive_task_progress()
    try:
        yield
    finally:
        undo()


def _progress(worker: task_worker.AsyncTaskWorker) -> float:
    info = worker.get_task_info(task_worker.current_task_id() or "")
    assert info is not None
    return info.progress


def _driving(bar: Any) -> bool:
    return "update" in vars(bar)


async def test_iteration_inside_a_task_reports_its_fraction(worker: task_worker.AsyncTaskWorker) -> None:
    async def body() -> list[float]:
        seen = []
        for _ in _bar(range(4)):
            seen.append(_progress(worker))
            await asyncio.sleep(0)
        return seen

    progress_events: list[float] = []
    unsubscribe = worker.subscribe(
        lambda ev: ev.kind is EventKind.PROGRESS and progress_events.append(ev.info.progress))
    task_id = await worker.add_task(body)
    # tqdm yields an item before counting it: the fraction is that of the items done.
    assert await worker.wait(task_id) == [0.0, 0.25, 0.5, 0.75]
    unsubscribe()
    assert progress_events and set(progress_events) <= {0.25, 0.5, 0.75, 1.0}


async def test_manual_updates_and_reset_in_a_thread_body(worker: task_worker.AsyncTaskWorker) -> None:
    def body() -> list[float]:
        bar = _bar(total=10)
        bar.update(7)
        seen = [_progress(worker)]
        bar.reset()
        seen.append(_progress(worker))
        bar.update(2)
        seen.append(_progress(worker))
        bar.close()
        return seen

    task_id = await worker.add_task(body)
    assert await worker.wait(task_id) == [0.7, 0.0, 0.2]


async def test_an_update_in_a_cancelled_task_raises_cancelled_error(
        worker: task_worker.AsyncTaskWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the cooperative stop may end the body here: no injected ThreadInterrupted.
    monkeypatch.setattr(_worker, "INJECT_AFTER", 3600.0)
    reached, gate = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def body() -> None:
        bar = _bar(total=10)
        reached.set()
        gate.wait()
        try:
            bar.update(1)
        except BaseException as exc:
            raised.append(exc)
            raise

    task_id = await worker.add_task(body)
    await asyncio.to_thread(reached.wait, 30)
    assert worker.cancel_task_nowait(task_id)
    gate.set()
    await worker.join()
    info = worker.get_task_info(task_id)
    assert info is not None and info.status == "cancelled"
    assert len(raised) == 1 and type(raised[0]) is asyncio.CancelledError


def test_outside_a_task_it_is_plain_tqdm() -> None:
    out = io.StringIO()
    bar = task_worker.tqdm(range(5), file=out, mininterval=0)
    assert isinstance(bar, tqdm.auto.tqdm) and not _driving(bar)
    assert sum(bar) == 10
    assert "5/5" in out.getvalue()


async def test_unknown_total_reports_nothing(worker: task_worker.AsyncTaskWorker) -> None:
    events: list[float] = []
    unsubscribe = worker.subscribe(
        lambda ev: ev.kind is EventKind.PROGRESS and events.append(ev.info.progress))

    async def body() -> tuple[bool, float]:
        bar = _bar()
        bar.update(5)
        bar.close()
        return _driving(bar), _progress(worker)

    task_id = await worker.add_task(body)
    assert await worker.wait(task_id) == (False, 0.0)
    unsubscribe()
    assert events == []


FLAVOURS: dict[str, Callable[..., Any]] = {
    "tqdm.tqdm": lambda it, **kw: tqdm_pkg.tqdm(it, file=io.StringIO(), **kw),
    "tqdm.trange": lambda it, **kw: tqdm_pkg.trange(len(it), file=io.StringIO(), **kw),
    "tqdm.auto.tqdm": lambda it, **kw: tqdm.auto.tqdm(it, file=io.StringIO(), **kw),
    "tqdm.notebook.tqdm": lambda it, **kw: tqdm.notebook.tqdm(it, display=False, **kw),
}


@pytest.mark.parametrize("flavour", list(FLAVOURS))
@pytest.mark.usefixtures("hooked")
async def test_plain_tqdm_bars_made_in_a_task_drive_its_progress(
        worker: task_worker.AsyncTaskWorker, flavour: str) -> None:
    make = FLAVOURS[flavour]

    def body() -> list[float]:
        seen = []
        for _ in make(range(4), mininterval=0):
            seen.append(_progress(worker))
        seen.append(_progress(worker))  # after close
        return seen

    task_id = await worker.add_task(body)
    assert await worker.wait(task_id) == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.usefixtures("hooked")
async def test_nested_bars_drive_with_the_outermost(worker: task_worker.AsyncTaskWorker) -> None:
    async def body() -> list[float]:
        seen = []
        for _ in tqdm_pkg.tqdm(range(2), file=io.StringIO(), mininterval=0):
            for _ in tqdm_pkg.tqdm(range(5), file=io.StringIO(), mininterval=0):
                seen.append(_progress(worker))
                await asyncio.sleep(0)
        # The outer bar closed: a later bar drives again.
        for _ in tqdm_pkg.tqdm(range(2), file=io.StringIO(), mininterval=0):
            seen.append(_progress(worker))
        return seen

    task_id = await worker.add_task(body)
    assert await worker.wait(task_id) == [0.0] * 5 + [0.5] * 5 + [1.0, 0.5]


@pytest.mark.usefixtures("hooked")
def test_bars_outside_tasks_are_left_alone() -> None:
    bar = tqdm_pkg.tqdm(range(3), file=io.StringIO())
    assert not _driving(bar) and "_task_worker_record" not in vars(bar)
    assert list(bar) == [0, 1, 2]


def test_drive_task_progress_undoes_exactly_and_counts_installs() -> None:
    original = tqdm.std.tqdm.__init__
    first = _tqdm.drive_task_progress()
    second = _tqdm.drive_task_progress()
    hooked_init = tqdm.std.tqdm.__init__
    assert hooked_init is not original
    first()
    first()  # idempotent
    assert tqdm.std.tqdm.__init__ is hooked_init  # still installed once
    second()
    assert tqdm.std.tqdm.__init__ is original


def test_the_extension_drives_tqdm_while_loaded() -> None:
    ip = globalipapp.get_ipython()
    original = tqdm.std.tqdm.__init__
    _extension.load(ip, widgets=False)
    try:
        assert tqdm.std.tqdm.__init__ is not original
    finally:
        _extension.unload(ip)
    assert tqdm.std.tqdm.__init__ is original


@pytest.mark.parametrize("flavour", ["task_worker.tqdm", "tqdm.tqdm (hooked)"])
async def test_cancelling_a_thread_in_a_tight_tqdm_loop_stops_it_and_leaves_tqdm_usable(
    worker: task_worker.AsyncTaskWorker, flavour: str,
) -> None:
    undo = _tqdm.drive_task_progress() if flavour != "task_worker.tqdm" else None
    started = threading.Event()

    def make(n: int) -> Any:
        if undo is None:
            return _bar(range(n))
        return tqdm_pkg.tqdm(range(n), file=io.StringIO(), mininterval=0, miniters=1)

    def body() -> None:
        for _ in make(10**9):
            started.set()

    try:
        task_id = await worker.add_task(body)
        await asyncio.to_thread(started.wait, 10)
        assert await worker.cancel_task(task_id) is True
        info = worker.get_task_info(task_id)
        assert info is not None and info.status == "cancelled"
        assert "abandoned" not in (info.error or "")  # it stopped, cooperatively
        # tqdm's class-level lock is free: a new bar in another thread completes.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: sum(make(100))), 10) == 4950
    finally:
        if undo is not None:
            undo()
