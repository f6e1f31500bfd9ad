"""What a finished task hands back: its error message, its traceback without the
package's own frames, and the result ``wait()`` returns or the exception it raises."""

from __future__ import annotations

import asyncio
import os
import traceback as _tb
from typing import Any

from ._info import TaskInfo
from ._status import TaskStatus

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def type_name(exc: BaseException) -> str:
    try:
        return str(type(exc).__name__)
    except BaseException:  # a metaclass with a hostile __getattribute__
        return "exception"


def format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without the worker's own frames. Never raises."""
    try:
        te = _tb.TracebackException(type(exc), exc, exc.__traceback__)
        frames = [f for f in te.stack if not f.filename.startswith(_PKG_DIR)]
        te.stack = _tb.StackSummary.from_list(frames)
        return "".join(te.format())
    except BaseException:  # formatting runs user code (__str__, __notes__ ...)
        return f"{type_name(exc)}: <its traceback could not be formatted>\n"


def error_message(exc: BaseException) -> str:
    """``"Type: message"``, never raising: ``str(exc)`` is user code."""
    name = type_name(exc)
    try:
        text = str(exc)
    except BaseException:
        return f"{name}: <str() of the exception raised>"
    return f"{name}: {text}" if text else name


def outcome(info: TaskInfo) -> Any:
    status = info.status
    if status is TaskStatus.COMPLETED:
        return info.result
    if status is TaskStatus.FAILED:
        exc = info.exception
        assert exc is not None
        if isinstance(exc, Exception) and not isinstance(exc, StopIteration):
            raise exc
        # SystemExit, KeyboardInterrupt...: asyncio re-raises those out of the
        # event loop (killing a kernel) when they leave a coroutine. A
        # StopIteration cannot leave one (Python turns it into a RuntimeError).
        raise RuntimeError(
            f"task {info.id!r} failed with {error_message(exc)}") from exc
    raise asyncio.CancelledError(info.error or "cancelled")
