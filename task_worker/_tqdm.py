"""tqdm bars inside tasks drive the task's progress.

Any tqdm bar created while a task runs (``tqdm.tqdm``, ``tqdm.auto``,
``tqdm.notebook``, ``trange``, ...) can drive that task's progress: the
outermost open bar with a known total does, so nested bars move the task once,
with the outer loop. ``drive_task_progress()`` (installed by ``%load_ext
task_worker``, undone by unload) hooks bar creation (``tqdm.std.tqdm.__init__``,
which every tqdm flavour runs): outside a task that costs one ContextVar lookup
per bar created and nothing per update. A driving bar gets its own ``update``,
``reset`` and ``close`` (instance attributes, so other bars pay nothing) that
report ``n / total`` when the bar redraws (tqdm's own pace, ``mininterval``), at
``reset`` and ``close``, and at every update once the task was cancelled: the
report then raises ``CancelledError``, which stops a thread body at its next
update. The bars render as usual (in a ``%%task``, in the task's output area).

``task_worker.tqdm`` is ``tqdm.auto.tqdm`` that drives the task's progress even
without the extension (with the plain worker API).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from tqdm.auto import tqdm as _auto_tqdm

from ._progress import ProgressSink, check_fraction, current_sink

#: The bar driving the task whose context this is (weakly: a dropped bar frees the place).
_driver: ContextVar[weakref.ref[Any] | None] = ContextVar("task_worker_tqdm_driver", default=None)
#: Set on a driving bar: the task it reports to.
_RECORD_ATTR = "_task_worker_record"


def attach(bar: Any) -> bool:
    """Let ``bar`` drive the current task's progress, unless an outer bar of the
    task does (or there is no task, or the bar is disabled or has no total).

    Returns:
        True if ``bar`` drives the task's progress.
    """
    rec = current_sink.get()
    if rec is None or getattr(bar, "disable", True) or not getattr(bar, "total", None):
        return False
    if bar.__dict__.get(_RECORD_ATTR) is not None:
        return True
    ref = _driver.get()
    outer = ref() if ref is not None else None
    if outer is not None and not outer.disable and outer.__dict__.get(_RECORD_ATTR) is rec:
        return False  # nested: the outer bar drives
    _driver.set(weakref.ref(bar))
    _drive(bar, rec)
    return True


def _drive(bar: Any, rec: ProgressSink) -> None:
    # Closures over a weak reference: no cycle through the bar's own __dict__.
    ref = weakref.ref(bar)
    cls = type(bar)

    def update(n: float | None = 1) -> bool | None:
        b = ref()
        assert b is not None
        displayed: bool | None = cls.update(b, n)
        if displayed or rec.stop_requested or b.n >= (b.total or float("inf")):
            _report(b, rec)
        return displayed

    def reset(total: float | None = None) -> None:
        b = ref()
        assert b is not None
        cls.reset(b, total)
        _report(b, rec)

    def close() -> None:
        b = ref()
        if b is None:
            return
        was_open = not b.disable
        cls.close(b)
        # Not after a cancel: close runs in finally blocks and __del__, and the
        # cancellation is already on its way.
        if was_open and not rec.stop_requested:
            _report(b, rec)

    setattr(bar, _RECORD_ATTR, rec)
    bar.update, bar.reset, bar.close = update, reset, close


def _report(bar: Any, rec: ProgressSink) -> None:
    total = bar.total
    if total:
        # The task the bar was made in, whichever thread or context updates it.
        rec.report(check_fraction(bar.n / total))


_installs = 0
_original_init: Callable[..., None] | None = None


def drive_task_progress() -> Callable[[], None]:
    """Make every tqdm bar created inside a task drive that task's progress
    (see the module docstring); returns the function that undoes it.

    Nested installs are counted: the hook goes when the last one is undone.
    """
    global _installs, _original_init
    import tqdm.std

    if _installs == 0:
        original = _original_init = tqdm.std.tqdm.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if current_sink.get() is not None:
                attach(self)

        __init__.__wrapped__ = original  # type: ignore[attr-defined]
        tqdm.std.tqdm.__init__ = __init__
    _installs += 1
    undone = False

    def undo() -> None:
        global _installs, _original_init
        nonlocal undone
        if undone:
            return
        undone = True
        _installs -= 1
        if _installs == 0 and _original_init is not None:
            tqdm.std.tqdm.__init__ = _original_init
            _original_init = None

    return undo


class tqdm(_auto_tqdm):
    """``tqdm.auto.tqdm`` that drives the current task's progress (the outermost
    bar, when nested), with or without the extension loaded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        attach(self)


__all__ = ["attach", "drive_task_progress", "tqdm"]
