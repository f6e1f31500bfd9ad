"""Matplotlib figures made by a ``%%task`` body: drawn in the task's own output area, once.

The problem: matplotlib's inline backend runs ``flush_figures`` on the main
thread after every cell. It draws every open pyplot figure into *that* cell and
closes them all, including a figure a task's thread is drawing at that moment
(the frontend gets a blank image) or has not shown yet (it turns up under the
wrong cell).

The mechanism: pyplot keeps its figures in one registry,
``matplotlib._pylab_helpers.Gcf``, and ``plt.show()``, the inline flush,
``plt.close("all")`` and ``plt.gcf()`` all ask it for "all figures" or "the
active figure". While a ``%%task`` body runs (``task_figures``), every pyplot
figure it creates is marked as that task's, and those registry questions are
answered per context: a task's code sees only its own figures; all other code
(cells, the inline flush) sees only the figures no running task owns. So

* the flush after another cell neither draws nor closes a task's figures;
* ``plt.show()`` in a task displays (into the task's area) and closes only the
  task's figures, and ``plt.gcf()`` / ``plt.plot()`` use the task's current one;
* when the body ends, whatever the outcome, its figures still open are displayed
  in its area and closed, as the inline backend does after a cell; a figure the
  body already displayed exactly as it now looks is not shown again;
* IPython formats (renders) a figure under a per-figure lock, so two threads
  never draw the same figure at once.

Figure numbers stay global (``plt.figure(1)`` is the same figure everywhere).
Nothing here imports matplotlib: the hooks go in when ``matplotlib.pyplot`` is
imported (at once if it already is, otherwise through a one-shot import watcher),
so sessions that never plot pay nothing.
"""

from __future__ import annotations

import contextvars
import importlib.abc
import importlib.machinery
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ._output import current_output

PYPLOT = "matplotlib.pyplot"
_INLINE = "matplotlib_inline.backend_inline"

#: The figure record of the ``%%task`` body whose code is running, if any.
_current: contextvars.ContextVar[TaskFigures | None] = contextvars.ContextVar(
    "task_worker_figures", default=None)

_lock = threading.Lock()
#: Figure -> the task that created it (entries go when the task's body ends).
_owners: weakref.WeakKeyDictionary[Any, TaskFigures] = weakref.WeakKeyDictionary()
#: Figure -> the lock held while IPython renders it.
_render_locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()


class TaskFigures:
    """The pyplot figures of one ``%%task`` body run (see ``task_figures``)."""

    def __init__(self) -> None:
        #: False once the body ended: its figures are then ordinary figures again.
        self.active = True
        # Figure -> the mime bundle this task last rendered for it.
        self._shown: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<TaskFigures {'active' if self.active else 'ended'}, {len(self.figures())} open>"

    def figures(self) -> list[Any]:
        """This task's pyplot figures that are still open, oldest first."""
        gcf = _gcf_class()
        if gcf is None:
            return []
        return [m.canvas.figure for m in list(gcf.figs.values()) if _owner(m.canvas.figure) is self]

    def note_shown(self, figure: Any, data: Mapping[str, Any]) -> None:
        """Record that ``figure`` was rendered as ``data`` for this task's output."""
        self._shown[figure] = dict(data)

    def finish(self) -> None:
        """The body ended: show its open figures in its area (once), close them as the
        inline backend would, and give up ownership."""
        try:
            self._flush()
        finally:
            with _lock:
                self.active = False
                for fig in [f for f, owner in _owners.items() if owner is self]:
                    del _owners[fig]

    def _flush(self) -> None:
        figures = self.figures()
        inline = _inline_flush_active()
        if not figures or inline is None:
            return
        shell = _shell()
        from IPython.display import publish_display_data

        for fig in figures:
            try:
                before = self._shown.get(fig)
                data, metadata = shell.display_formatter.format(fig)
                if not data or before == data:
                    continue
                metadata = dict(metadata or {})
                metadata.update(_figure_metadata(inline, fig))
                publish_display_data(data, metadata)  # type: ignore[no-untyped-call]
            except Exception as exc:  # show it where the figure should have been
                _report(exc)
        # Shown here: the backend's queue for the next cell's flush must not show them again.
        queued = getattr(inline.show, "_to_draw", None)
        if isinstance(queued, list):
            inline.show._to_draw = [f for f in queued if f not in figures]
        if inline.InlineBackend.instance().close_figures:
            gcf = _gcf_class()
            for fig in figures:
                gcf.destroy_fig(fig)


def current_figures() -> TaskFigures | None:
    """The figure record of the ``%%task`` body whose code is running, if it is still running."""
    record = _current.get()
    return record if record is not None and record.active else None


@contextmanager
def task_figures() -> Iterator[TaskFigures | None]:
    """Run a ``%%task`` body's code inside this: the pyplot figures it creates are
    its own, and those still open at the end are shown in its output area.

    Does nothing (yields ``None``) for code without a task output area.
    """
    if current_output() is None:
        yield None
        return
    record = TaskFigures()
    token = _current.set(record)
    try:
        yield record
    finally:
        try:
            record.finish()
        finally:
            _current.reset(token)


def _owner(fig: Any) -> TaskFigures | None:
    owner = _owners.get(fig)
    return owner if owner is not None and owner.active else None


def _visible(managers: list[Any]) -> list[Any]:
    """The figure managers the running code may see: its task's, or the unowned ones."""
    if not _owners:
        return managers
    me = current_figures()
    return [m for m in managers if _owner(m.canvas.figure) is me]


def _gcf_class() -> Any:
    module = sys.modules.get("matplotlib._pylab_helpers")
    return None if module is None else module.Gcf


def _shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def _inline_flush_active() -> ModuleType | None:
    """The inline backend module if it shows figures after each cell in this shell."""
    inline = sys.modules.get(_INLINE)
    if inline is None:
        return None
    from IPython.core.interactiveshell import InteractiveShell

    if not InteractiveShell.initialized():
        return None
    callbacks = InteractiveShell.instance().events.callbacks.get("post_execute", [])
    return inline if inline.flush_figures in callbacks else None


def _figure_metadata(inline: ModuleType, fig: Any) -> dict[str, Any]:
    # The inline backend's "needs_background" hint for transparent figures (private helper).
    fetch = getattr(inline, "_fetch_figure_metadata", None)
    try:
        return dict(fetch(fig) or {}) if fetch is not None else {}
    except Exception:
        return {}


def _report(exc: BaseException) -> None:
    out = current_output()
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    if out is not None:
        out.error(type(exc).__name__, str(exc), [line.rstrip("\n") for line in lines])
    else:  # pragma: no cover - only called from a task with an output area
        sys.stderr.write("".join(lines))


def _render_lock(fig: Any) -> threading.RLock:
    with _lock:
        lock = _render_locks.get(fig)
        if lock is None:
            lock = _render_locks[fig] = threading.RLock()
        return lock


# --------------------------------------------------------------- pyplot's registry
class _GcfPatch:
    """Context-aware replacements for four of ``Gcf``'s class methods; installed
    once per process however many shells use them (reference counted)."""

    NAMES = ("get_all_fig_managers", "get_active", "destroy_all", "_set_new_active_manager")

    def __init__(self) -> None:
        self.users = 0
        self.saved: dict[str, Any] = {}

    def acquire(self) -> None:
        with _lock:
            self.users += 1
            if self.users > 1:
                return
            gcf = _gcf_class()
            self.saved = {name: vars(gcf)[name] for name in self.NAMES}
            originals = {name: method.__func__ for name, method in self.saved.items()}
            for name, func in _replacements(originals).items():
                setattr(gcf, name, classmethod(func))

    def release(self) -> None:
        with _lock:
            if self.users == 0:
                return
            self.users -= 1
            if self.users:
                return
            gcf = _gcf_class()
            for name, method in self.saved.items():
                setattr(gcf, name, method)
            self.saved = {}

    @property
    def installed(self) -> bool:
        """Whether ``Gcf`` currently carries the replacements."""
        return self.users > 0


def _replacements(orig: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    get_all, get_active, destroy_all, set_new = (orig[name] for name in _GcfPatch.NAMES)

    def get_all_fig_managers(cls: Any) -> list[Any]:
        return _visible(get_all(cls))

    def get_active_(cls: Any) -> Any:
        if not _owners:
            return get_active(cls)
        managers = _visible(list(cls.figs.values()))
        return managers[-1] if managers else None

    def destroy_all_(cls: Any) -> None:
        if not _owners:
            destroy_all(cls)
            return
        for manager in _visible(list(cls.figs.values())):
            cls.destroy(manager)

    def set_new_active_manager(cls: Any, manager: Any) -> Any:
        record = current_figures()
        if record is not None:
            # Owned before it enters the registry: a flush running now cannot take it.
            with _lock:
                _owners[manager.canvas.figure] = record
        return set_new(cls, manager)

    return {"get_all_fig_managers": get_all_fig_managers, "get_active": get_active_,
            "destroy_all": destroy_all_, "_set_new_active_manager": set_new_active_manager}


_gcf_patch = _GcfPatch()


# ------------------------------------------------------------------ import watcher
class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Calls ``callback`` once, right after the module ``name`` has been imported."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module"):
            spec.loader = _NotifyingLoader(loader, self.callback)
        return spec


class _NotifyingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, callback: Callable[[], None]) -> None:
        self.loader = loader
        self.callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self.loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its real loader (inspect, importlib.resources use it).
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.callback()


# ------------------------------------------------------------------ per shell
class FigureRouting:
    """Installs the figure hooks for one shell (``install``) and removes them exactly
    (``uninstall``): the ``Gcf`` replacements and a wrapper around the shell's
    ``display_formatter.format`` that renders figures under their lock."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.installed = False
        #: True once the hooks are in (pyplot has been imported).
        self.active = False
        self._watcher: _ImportWatcher | None = None
        self._formatter: Any = None
        self._saved_format: Any = None
        self._wrapper: _FormatWrapper | None = None
        self._state_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "active" if self.active else "waiting for pyplot" if self.installed else "off"
        return f"<FigureRouting {state}>"

    def install(self) -> None:
        """Start routing figures (now if pyplot is imported, else when it is). Idempotent."""
        if self.installed:
            return
        self.installed = True
        if PYPLOT in sys.modules:
            self._activate()
            return
        self._watcher = _ImportWatcher(PYPLOT, self._activate)
        sys.meta_path.insert(0, self._watcher)

    def _activate(self) -> None:
        with self._state_lock:
            self._remove_watcher()
            if not self.installed or self.active:
                return
            _gcf_patch.acquire()
            formatter = self._formatter = self.shell.display_formatter
            self._saved_format = vars(formatter).get("format", _MISSING)
            self._wrapper = formatter.format = _FormatWrapper(formatter.format)
            self.active = True

    def _remove_watcher(self) -> None:
        if self._watcher is not None:
            try:
                sys.meta_path.remove(self._watcher)
            except ValueError:
                pass
            self._watcher = None

    def uninstall(self) -> None:
        """Stop routing and put back what ``install`` replaced. Idempotent."""
        with self._state_lock:
            self._remove_watcher()
            if self.active:
                _gcf_patch.release()
                formatter = self._formatter
                if vars(formatter).get("format") is not self._wrapper:
                    # Someone wrapped ours since: leave theirs in place; ours passes through.
                    self._wrapper.passthrough = True  # type: ignore[union-attr]
                elif self._saved_format is _MISSING:
                    vars(formatter).pop("format", None)
                else:
                    formatter.format = self._saved_format
                self._wrapper = None
                self._formatter = self._saved_format = None
                self.active = False
            self.installed = False


_MISSING = object()


class _FormatWrapper:
    """Stands in for ``display_formatter.format``: renders a figure under its lock and
    notes what a task rendered (to show a figure at the body's end only if it changed)."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.__wrapped__ = original
        #: True once uninstalled while someone else's wrapper sits on top of it.
        self.passthrough = False

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        original = self.__wrapped__
        figure_module = sys.modules.get("matplotlib.figure")
        if self.passthrough or figure_module is None or not isinstance(obj, figure_module.Figure):
            return original(obj, *args, **kwargs)
        with _render_lock(obj):
            result = original(obj, *args, **kwargs)
        record = current_figures()
        if record is not None and isinstance(result, tuple) and result and result[0]:
            record.note_shown(obj, result[0])
        return result


__all__ = ["FigureRouting", "TaskFigures", "current_figures", "task_figures"]
