"""Chains in the views: the rows' detail text, the text tables, the dashboard's live rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_for_status, wait_until

from task_worker import AsyncTaskWorker, EventKind, TaskStatus
from task_worker._table import chain_text, error_text, make_row, row_note, text_table

pytest.importorskip("anywidget")

import comm
import ipywidgets
from test_dashboard import FakeClock, RecordingComm, make_dashboard


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    yield
    ipywidgets.Widget.close_all()


async def _value(x: object) -> object:
    return x


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"try {self.calls} refused")
        return "ok"


async def test_plain_tasks_have_no_chain_text(worker: AsyncTaskWorker) -> None:
    tid = await worker.add_task(_value, 1)
    info = worker.get_task_info(tid)
    assert info is not None and chain_text(info) is None and row_note(info) is None
    assert "error" not in make_row(info) and "note" not in make_row(info)
    assert "(" not in text_table([info]).splitlines()[1]


async def test_waiting_task_row_and_table_say_what_it_waits_for(worker: AsyncTaskWorker) -> None:
    gate = asyncio.Event()

    async def load() -> None:
        await gate.wait()

    await worker.add_task(load, task_id="load")
    await worker.add_task(load, task_id="clean")
    train = await worker.add_task(_value, 1, after=["load", "clean"], task_id="train")
    info = worker.get_task_info(train)
    assert info is not None
    assert chain_text(info) == "waiting for load, clean"
    assert make_row(info)["note"] == "waiting for load, clean" and "error" not in make_row(info)
    assert "pending (waiting for load, clean)" in text_table([info])
    gate.set()
    await worker.wait(train)


async def test_retry_delay_counts_down_and_failure_lists_every_attempt(worker: AsyncTaskWorker) -> None:
    tid = await worker.add_task(Flaky(5), retries=2, retry_delay=0)
    with pytest.raises(ConnectionError):
        await worker.wait(tid)
    info = worker.get_task_info(tid)
    assert info is not None and chain_text(info) == "after 3 attempts"
    assert row_note(info) == "after 3 attempts" and make_row(info)["note"] == "after 3 attempts"
    assert error_text(info) == make_row(info)["error"] == (
        "ConnectionError: try 3 refused (attempt 3/3)\n"
        "attempt 1/3: ConnectionError: try 1 refused\n"
        "attempt 2/3: ConnectionError: try 2 refused")
    assert text_table([info]).splitlines()[1].split()[2:5] == ["failed", "(after", "3"]

    slow = await worker.add_task(Flaky(1), retries=3, retry_delay=10)
    await wait_until(worker, lambda: worker.get_task_info(slow).retry_at is not None)  # type: ignore[union-attr]
    delayed = worker.get_task_info(slow)
    assert delayed is not None and delayed.retry_at is not None
    at = delayed.retry_at
    assert chain_text(delayed, now=at - 9.2) == "attempt 2/4, retrying in 10 s"
    assert chain_text(delayed, now=at - 2.5) == "attempt 2/4, retrying in 3 s"
    assert chain_text(delayed, now=at + 1) == "attempt 2/4, retrying in 0 s"
    assert make_row(delayed)["status"] == "pending"
    assert worker.cancel_task_nowait(slow)


async def test_completed_after_retry_says_on_which_attempt(worker: AsyncTaskWorker) -> None:
    tid = await worker.add_task(Flaky(1), retries=3, retry_delay=0)
    await worker.wait(tid)
    info = worker.get_task_info(tid)
    assert info is not None and make_row(info)["note"] == "completed on attempt 2/4"


async def test_dashboard_rows_show_waiting_retry_and_cascade_text(
        worker: AsyncTaskWorker) -> None:
    clock = FakeClock()
    dash = make_dashboard(worker, clock)
    gate = asyncio.Event()

    async def download() -> None:
        await gate.wait()

    await worker.add_task(download, task_id="download")
    await worker.add_task(_value, 1, after="download", task_id="parse")
    await worker.add_task(_value, 2, after="parse", task_id="train")
    flaky = await worker.add_task(Flaky(1), retries=1, retry_delay=30, task_id="flaky")
    await wait_until(worker, lambda: worker.get_task_info(flaky).retry_at is not None)  # type: ignore[union-attr]
    clock.advance(1)
    rows = {r["id"]: r for r in dash.rows}
    assert rows["parse"]["status"] == "pending" and rows["parse"]["note"] == "waiting for download"
    assert rows["train"]["note"] == "waiting for parse"
    assert rows["flaky"]["status"] == "pending"
    assert rows["flaky"]["note"].startswith("attempt 2/2, retrying in ")
    # Cancelling the head of the chain: its row says how many it took along.
    assert worker.cancel_task_nowait("download")
    await wait_for_status(worker, "download", TaskStatus.CANCELLED)
    clock.advance(1)
    rows = {r["id"]: r for r in dash.rows}
    assert rows["download"]["note"] == "cancelled (and 2 dependent tasks waiting on it)"
    assert rows["parse"]["note"] == "cancelled: dependency 'download' was cancelled"
    assert rows["train"]["note"] == (
        "cancelled: dependency 'parse' was cancelled, because 'download' was cancelled")
    assert "error" not in rows["parse"]  # said once, in the note
    assert worker.cancel_task_nowait(flaky)
    dash.close()


async def test_single_task_view_follows_the_countdown(worker: AsyncTaskWorker) -> None:
    clock = FakeClock()
    kinds: list[Any] = []
    tid = await worker.add_task(Flaky(1), retries=1, retry_delay=20)
    worker.subscribe(lambda e: kinds.append(e.kind))  # before wait_until subscribes: seen first
    dash = make_dashboard(worker, clock, task_id=tid)
    await wait_until(worker, lambda: EventKind.RETRYING in kinds)
    clock.advance(1)
    [row] = dash.rows
    first = row["note"]
    assert first.startswith("attempt 2/2, retrying in "), first
    await wait_until(worker, lambda: EventKind.WAITING in kinds)  # the first countdown tick
    clock.advance(1)
    [row] = dash.rows
    assert row["note"].startswith("attempt 2/2, retrying in ") and row["note"] != first
    assert worker.cancel_task_nowait(tid)
    clock.advance(1)
    [row] = dash.rows
    assert row["status"] == "cancelled" and row["note"] == "cancelled during its retry delay"
    dash.close()


async def test_text_table_says_on_which_attempt_once(worker: AsyncTaskWorker) -> None:
    tid = await worker.add_task(Flaky(1), retries=3, retry_delay=0)
    await worker.wait(tid)
    info = worker.get_task_info(tid)
    assert info is not None and "completed (on attempt 2/4)" in text_table([info])


async def test_details_pane_lists_every_attempts_error(worker: AsyncTaskWorker) -> None:
    from task_worker._details import task_details

    tid = await worker.add_task(Flaky(5), retries=1, retry_delay=0)
    with pytest.raises(ConnectionError):
        await worker.wait(tid)
    details = task_details(worker, tid)
    assert details is not None
    assert details["error"] == ("ConnectionError: try 2 refused (attempt 2/2)\n"
                                "attempt 1/2: ConnectionError: try 1 refused")
