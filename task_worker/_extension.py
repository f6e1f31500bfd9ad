"""``%load_ext task_worker`` / ``%unload_ext task_worker``: install and remove the extension.

Loading registers ``TaskMagics``, syncs the running bodies' namespaces to the
notebook before every cell (a ``pre_run_cell`` event), installs the output routing (in a kernel),
the ``input()`` guard and the tqdm bridge (``_output.guard_input``, ``_tqdm``),
names the ``task_worker`` module in the user namespace (unless the name is taken),
creates the session worker (started on the running loop, or on IPython's asyncio
loop in the terminal) and checks the environment once: nest_asyncio applied, or
a terminal whose loop does not run between cells. Unloading undoes all of it:
the worker is stopped (bounded), streams, ``display_pub``, ``input()`` and tqdm
are restored, the magics are unregistered and every widget the extension made is closed.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _session
from ._figures import FigureRouting
from ._magics import TaskMagics
from ._output import OutputCapture, guard_input

#: Seconds ``unload`` lets running tasks unwind (after being cancelled) before abandoning them.
STOP_TIMEOUT = 0.0

NEST_ASYNCIO_WARNING = (
    "task_worker: nest_asyncio has been applied in this process. It is not needed for "
    "task_worker (the kernel's loop already runs and top-level await works) and it is "
    "harmful: on ipykernel 7 a button click or a cell sent while a nested run_until_complete "
    "is active can be lost (no reply, the notebook hangs), an interrupt during a nested run "
    "lands in background tasks, and tasks run about 1.7x slower (pure-Python asyncio.Task). "
    "Tasks still run; stop applying nest_asyncio if you can."
)

TERMINAL_HINT = (
    "task_worker: IPython's event loop is not running between cells here, so background "
    "tasks only progress while a cell runs `await ...`. Run `%gui asyncio` to let them run "
    "while IPython waits at the prompt (not available with --simple-prompt or piped input)."
)


class NestAsyncioWarning(RuntimeWarning):
    """nest_asyncio was applied in the process (warned once per load)."""


def nest_asyncio_applied(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """True if nest_asyncio (or a fork) patched asyncio or ``loop``: the pure-Python
    ``asyncio.Task`` was installed, or the loop carries ``_nest_patched``."""
    py_task = getattr(asyncio.tasks, "_PyTask", None)
    c_task = getattr(asyncio.tasks, "_CTask", None)
    if c_task is not None and py_task is not None and asyncio.Task is py_task:
        return True
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    return bool(getattr(loop, "_nest_patched", False))


@dataclass
class _Loaded:
    """What ``load`` installed on one shell, so that ``unload`` can undo it."""

    shell: Any
    magics: TaskMagics
    capture: OutputCapture | None
    warned: set[str] = field(default_factory=set)
    #: Undo functions of the other hooks (input() guard, tqdm bridge), last first.
    undo: list[Callable[[], None]] = field(default_factory=list)
    #: ``load`` put the ``task_worker`` module in the user namespace (the name was free).
    named: bool = False
    #: Matplotlib figures of %%task bodies shown in their own areas (with ``capture``).
    figures: FigureRouting | None = None

    def check_environment(self) -> None:
        """Warn (once each) about nest_asyncio and a terminal loop that does not run."""
        worker = _session.peek_worker()
        loop = worker.loop if worker is not None else None
        if "nest" not in self.warned and nest_asyncio_applied(loop):
            self.warned.add("nest")
            warnings.warn(NEST_ASYNCIO_WARNING, NestAsyncioWarning, stacklevel=2)
        if "terminal" not in self.warned and _terminal_loop_idle(self.shell):
            self.warned.add("terminal")
            print(TERMINAL_HINT, file=sys.stderr)


def _terminal_loop_idle(shell: Any) -> bool:
    # A kernel's loop always runs; a terminal's runs at the prompt only with %gui asyncio.
    if getattr(shell, "kernel", None) is not None:
        return False
    return getattr(shell, "active_eventloop", None) != "asyncio"


_loaded: dict[int, _Loaded] = {}
# Stops still running after unload (kept referenced until they finish).
_stopping: set[asyncio.Future[None]] = set()


def load(ip: Any, *, widgets: bool | None = None) -> None:
    """Install the extension on ``ip`` (idempotent).

    Args:
        ip: The shell.
        widgets: Show ``%%task`` cells as widget views with their own output
            areas, routing task output there. ``None`` (the default) decides by
            whether the shell has a kernel; terminal IPython has none, and task
            output then goes to the terminal.
    """
    if id(ip) in _loaded:
        return
    if widgets is None:
        widgets = getattr(ip, "kernel", None) is not None
    if widgets:
        # Import the widget stack now, so that the first %%task cell returns at once.
        import ipywidgets  # noqa: F401

        from ._dashboard import TaskDashboard  # noqa: F401
    capture = OutputCapture(ip) if widgets else None
    magics = TaskMagics(ip, widgets=widgets)
    state = _Loaded(ip, magics, capture, figures=FigureRouting(ip) if widgets else None)
    magics.check_environment = state.check_environment
    if capture is not None:
        capture.install()
    if state.figures is not None:
        state.figures.install()
    try:
        _install_hooks(state)
        ip.events.register("pre_run_cell", magics.live.sync_all)
        state.undo.append(lambda: ip.events.unregister("pre_run_cell", magics.live.sync_all))
        ip.register_magics(magics)
        magics._worker()  # create and start the session worker
    except BaseException:
        _undo(state)
        raise
    _loaded[id(ip)] = state
    state.named = _name_module(ip)
    state.check_environment()


def unload(ip: Any) -> None:
    """Undo ``load``: stop the session worker (bounded), restore streams and
    ``display_pub``, unregister the magics and close the extension's widgets."""
    state = _loaded.pop(id(ip), None)
    if state is None:
        return
    _undo(state)
    worker = _session.peek_worker()
    if worker is None:
        return
    _session.set_worker(None)
    stop = worker.stop(timeout=STOP_TIMEOUT)
    loop = worker.loop
    if loop is None or loop.is_closed():
        stop.close()
        return
    if loop.is_running():
        # A kernel: we are inside a cell on that loop; the stop finishes in the background.
        fut = asyncio.ensure_future(stop, loop=loop)
        _stopping.add(fut)
        fut.add_done_callback(_stop_done)
    else:
        loop.run_until_complete(stop)


def _stop_done(fut: asyncio.Future[None]) -> None:
    _stopping.discard(fut)
    if not fut.cancelled() and fut.exception() is not None:
        import logging

        logging.getLogger("task_worker").error("stopping the worker on unload failed",
                                               exc_info=fut.exception())


def _install_hooks(state: _Loaded) -> None:
    # input()/getpass() refused in tasks; tqdm bars in tasks drive their progress.
    state.undo.append(guard_input(state.shell))
    try:
        from ._tqdm import drive_task_progress
    except ImportError:  # tqdm is not installed: nothing to drive
        return
    state.undo.append(drive_task_progress())


def _name_module(ip: Any) -> bool:
    # README examples use `task_worker.report_progress(...)` and `await task_worker.wait(...)`
    # right after `%load_ext task_worker`: give the notebook that name unless it is taken.
    import task_worker

    user_ns = ip.user_ns
    if "task_worker" in user_ns:
        return False
    user_ns["task_worker"] = task_worker
    return True


def _undo(state: _Loaded) -> None:
    if state.named:
        import task_worker

        if state.shell.user_ns.get("task_worker") is task_worker:  # still ours
            del state.shell.user_ns["task_worker"]
    state.magics.close_widgets()
    state.magics.live.close()
    if state.figures is not None:
        state.figures.uninstall()
    if state.capture is not None:
        state.capture.uninstall()
    while state.undo:
        state.undo.pop()()
    _unregister_magics(state.shell, state.magics)


def _unregister_magics(ip: Any, magics: TaskMagics) -> None:
    manager = ip.magics_manager
    for kind in ("line", "cell"):
        table = manager.magics[kind]
        for name in [n for n, f in table.items() if getattr(f, "__self__", None) is magics]:
            del table[name]
    for name in [n for n, m in manager.registry.items() if m is magics]:
        del manager.registry[name]


__all__ = ["NEST_ASYNCIO_WARNING", "NestAsyncioWarning", "TERMINAL_HINT", "load",
           "nest_asyncio_applied", "unload"]
