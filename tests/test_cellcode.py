"""Cell compilation and the traceback filter (``task_worker._cellcode``) with a real IPython shell."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import pytest
from IPython.testing import globalipapp

from task_worker import _cellcode
from task_worker._cellcode import compile_cell, make_runner, user_traceback


@pytest.fixture
def ip() -> Iterator[Any]:
    yield globalipapp.get_ipython()


def _frames(tb: TracebackType | None) -> list[tuple[str, int]]:
    out = []
    while tb is not None:
        out.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    return out


def _reraise(exc: BaseException) -> None:
    # Like `await task_worker.wait(...)`: someone outside the package re-raises the stored error.
    raise exc


def _failure(ip: Any, cell: str, *, run_async: bool) -> tuple[BaseException, str]:
    code = compile_cell(ip, cell)
    runner = make_runner(code, {}, run_async=run_async, name="cell", out=None)
    try:
        if run_async:
            asyncio.run(runner())
        else:
            runner()
    except ZeroDivisionError:
        exc = sys.exc_info()[1]
        assert exc is not None
    try:
        _reraise(exc)
    except ZeroDivisionError as again:
        return again, code.filename
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.mark.parametrize("run_async", [False, True])
def test_user_traceback_starts_at_the_cells_own_frame(ip: Any, run_async: bool) -> None:
    exc, filename = _failure(ip, "a = 1\nb = 0\na / b\n", run_async=run_async)
    frames = _frames(exc.__traceback__)
    # Before the cell's frame: this test's re-raise and the runner's frames in _cellcode.
    assert frames[0][0] == __file__
    assert any(f == _cellcode.__file__ for f, _ in frames)
    assert _frames(user_traceback(exc.__traceback__)) == [(filename, 3)]


def test_user_traceback_keeps_the_frames_the_cell_calls(ip: Any) -> None:
    ip.user_ns["divide"] = lambda x: x / 0
    code = compile_cell(ip, "x = 1\ndivide(x)")
    with pytest.raises(ZeroDivisionError) as caught:
        make_runner(code, ip.user_ns, run_async=False, name="cell", out=None)()
    frames = _frames(user_traceback(caught.value.__traceback__))
    assert frames[0] == (code.filename, 2)
    assert frames[1][0] == __file__  # the lambda, called from the cell


def test_user_traceback_without_a_cell_drops_only_the_packages_leading_frames() -> None:
    import task_worker

    async def body() -> None:
        task_worker.report_progress(float("nan"))  # refused: a ValueError raised inside the package

    worker = task_worker.AsyncTaskWorker()

    async def main() -> BaseException:
        async with worker:
            task_id = await worker.add_task(body)
            try:
                await worker.wait(task_id)
            except ValueError as exc:
                return exc
        raise AssertionError("the task did not fail")

    exc = asyncio.run(main())
    frames = _frames(user_traceback(exc.__traceback__))
    assert frames[0][0] == __file__  # this test's `await worker.wait(...)`: outside the package
    assert frames[-1][0].startswith(_cellcode._PKG_DIR)  # the package's own frame where it raised


def test_runner_frames_are_found_by_the_modules_own_file_name() -> None:
    # Moving the runner to another module would need no other change: the filter
    # reads the file name of the module it lives in.
    assert _cellcode._THIS_FILE == _cellcode.CellCode.run_async.__code__.co_filename
    assert _cellcode._THIS_FILE == make_runner.__code__.co_filename
