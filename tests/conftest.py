"""Shared fixtures: a fresh registry and session worker for every test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

import task_worker
from task_worker import _registry, _session

#: Under CI a missing optional piece (browser, second kernel) fails instead of skipping.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail under CI, where everything must be installed."""
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    saved = dict(_registry._registry)
    saved_names = dict(_registry._names)
    yield
    _registry._registry.clear()
    _registry._registry.update(saved)
    _registry._names.clear()
    _registry._names.update(saved_names)


@pytest.fixture(autouse=True)
def _fresh_session() -> Iterator[None]:
    old = _session.peek_worker()
    _session.set_worker(None)
    yield
    _session.set_worker(old)


@pytest.fixture
async def worker() -> AsyncIterator[task_worker.AsyncTaskWorker]:
    """A started worker (4 slots), always stopped afterwards (its unfinished tasks cancelled first)."""
    w = task_worker.AsyncTaskWorker(max_workers=4)
    await w.start()
    try:
        yield w
    finally:
        for info in w.get_all_tasks(status=("pending", "running")):
            w.cancel_task_nowait(info.id)
        await w.stop(timeout=1)
