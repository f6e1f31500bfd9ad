"""Running a blocking task body in a worker thread, and interrupting it.

A sync body cannot be cancelled the asyncio way. Two mechanisms stop it:
``report_progress`` raises ``CancelledError`` at its next call, and for code
that does not report within ``INJECT_AFTER`` seconds, the worker raises
``ThreadInterrupted`` inside the thread with ``PyThreadState_SetAsyncExc``.
That exception is delivered between two bytecodes: a C call in progress
(``time.sleep``, a socket read, a long numpy operation) finishes first, and a
bare ``except:`` in user code can swallow it.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Callable
from typing import Any

_PROTO_SET = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)
_PROTO_CLEAR = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_set_async_exc = _PROTO_SET(("PyThreadState_SetAsyncExc", ctypes.pythonapi))
# Same C function with a NULL exception: clears a pending one.
_clear_async_exc = _PROTO_CLEAR(("PyThreadState_SetAsyncExc", ctypes.pythonapi))


#: Seconds a cancelled body gets to stop cooperatively before the interruption
#: is injected (well inside the 100 ms promised for pure-Python loops).
INJECT_AFTER = 0.05


class ThreadInterrupted(BaseException):
    """Raised inside a task's worker thread when the task is cancelled or times out.

    A ``BaseException`` (like ``CancelledError``) so that ``except Exception``
    in task code does not swallow it.
    """


class ThreadRun:
    """One sync body in one worker thread: where it runs and whether it may be interrupted."""

    __slots__ = ("_ident", "_injected", "_lock", "_requested", "done")

    def __init__(self, done: asyncio.Future[tuple[bool, Any]]) -> None:
        self._lock = threading.Lock()
        self._ident = 0
        self._requested = False
        self._injected = False
        #: Resolved on the loop with ``(ok, value_or_exception)`` when the thread is finished.
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
                    self._ident = threading.get_ident()
                outcome = (True, func(*args, **kwargs))
            finally:
                # From here on no interruption may land: executor internals would
                # receive it. Clear a pending one under the lock the injector holds.
                with self._lock:
                    self._ident = 0
                    _clear_async_exc(threading.get_ident(), None)
        except BaseException as exc:
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(_resolve, self.done, outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
            pass

    def request_stop(self) -> None:
        """Ask the body to stop: it never starts if it has not yet, and
        ``report_progress`` raises ``CancelledError`` from now on (the worker
        sets the task's cancel reason)."""
        with self._lock:
            self._requested = True

    def inject(self) -> None:
        """Raise ``ThreadInterrupted`` in the body's thread (once), if it still runs.

        Used only after a grace period: an asynchronous exception can land
        anywhere, including inside a library holding a lock, so bodies that
        stop cooperatively are left to do so first.
        """
        with self._lock:
            if self._ident and not self._injected:
                self._injected = True
                _set_async_exc(self._ident, ThreadInterrupted)


def _resolve(fut: asyncio.Future[tuple[bool, Any]], outcome: tuple[bool, Any]) -> None:
    if not fut.done():
        fut.set_result(outcome)
