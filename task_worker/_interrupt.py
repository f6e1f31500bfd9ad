"""Interrupting a thread that runs a task body: the one mechanism for local and remote bodies.

A sync body cannot be cancelled the asyncio way. ``raise_in_thread`` asks CPython
(``PyThreadState_SetAsyncExc``) to raise ``ThreadInterrupted`` in that thread
between two bytecodes: a C call in progress (``time.sleep``, a socket read, a
long numpy operation) finishes first, and a bare ``except:`` in user code can
swallow it. Callers give a body ``INJECT_AFTER`` seconds to stop cooperatively
(``report_progress`` raises ``CancelledError`` once its task is cancelled) before
interrupting it, because the exception can land anywhere, even inside a library
holding a lock.
"""

from __future__ import annotations

import ctypes

_PROTO_SET = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)
_PROTO_CLEAR = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_set_async_exc = _PROTO_SET(("PyThreadState_SetAsyncExc", ctypes.pythonapi))
# The same C function with a NULL exception: clears a pending one.
_clear_async_exc = _PROTO_CLEAR(("PyThreadState_SetAsyncExc", ctypes.pythonapi))

#: Seconds a cancelled body gets to stop cooperatively before the interruption
#: is injected (well inside the 100 ms promised for pure-Python loops).
INJECT_AFTER = 0.05


class ThreadInterrupted(BaseException):
    """Raised inside a task's worker thread when the task is cancelled or times out.

    A ``BaseException`` (like ``CancelledError``) so that ``except Exception``
    in task code does not swallow it.
    """


def raise_in_thread(ident: int) -> bool:
    """Schedule ``ThreadInterrupted`` in the thread ``ident``; True if that thread exists."""
    return bool(_set_async_exc(ident, ThreadInterrupted))


def clear_in_thread(ident: int) -> None:
    """Drop an interruption scheduled in ``ident`` that has not been raised yet
    (call it from that thread once its body returned, before it runs anything else)."""
    _clear_async_exc(ident, None)


__all__ = ["INJECT_AFTER", "ThreadInterrupted", "clear_in_thread", "raise_in_thread"]
