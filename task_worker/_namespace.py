"""A ``%%task`` body's own namespace: its names are its own, and reach the notebook.

Each body runs with ``exec``/``eval`` in a ``TaskNamespace``: a ``dict``
subclass, so CPython (3.10 to 3.13) routes the body's module-level name
operations through it instead of the fast exact-dict paths:

- ``STORE_NAME``, ``DELETE_NAME``, ``STORE_GLOBAL`` and ``from m import *`` use
  ``dict``'s own C slots (the class overrides neither ``__setitem__`` nor
  ``__delitem__``: overriding either puts a Python call, or a method lookup, on
  every assignment): the value is kept here, so another task's ``for i`` cannot
  change this task's ``i``, and a top-level loop runs about as fast as in a cell.
- Names reach the notebook by ``sync()``: it copies each name whose value is not
  (identically) the one it last copied, and removes from the notebook the names
  the body deleted (if the notebook still holds the value copied). A sync runs
  before every cell the user runs, about every ``SYNC_INTERVAL`` seconds while
  bodies run (``LiveNamespaces``), and when the body ends (``finish()``).
- ``del x`` at the top level of a body is compiled (see ``_cellcode``) as
  ``if __task_worker_del__('x'): del x``: the helper removes ``x`` from the
  notebook at once, and the ``del`` runs when the task holds ``x`` itself (or
  nobody does: the usual ``NameError``, raised from the cell's own line).
- ``LOAD_NAME``, and ``LOAD_GLOBAL`` in functions defined in the body (their
  ``__globals__`` is this namespace), call ``__missing__`` for names the body
  has not assigned: the builtins the notebook does not shadow, then the
  notebook's namespace, live (a ``TaskBuiltins`` dict whose ``__missing__`` is
  the notebook's).
- Class bodies look globals up with the exact-dict API (no ``__missing__``);
  they fall through to ``__builtins__``, which is that same ``TaskBuiltins``.

Both ``__missing__`` methods are bound ``__getitem__`` methods of dicts (C
functions, not descriptors, so CPython calls them with the key alone): a lookup
that falls through costs no Python frame and, for a builtin, no exception. That
needs two small classes per namespace, made by ``task_namespace``. The price: a
builtin the notebook starts or stops shadowing while the body runs is not
noticed (the copy is taken when the cell runs).

Thread bodies change their namespace while the loop thread syncs it: a sync
reads it with one ``dict.copy`` (a C call that runs no Python code, so no other
thread runs during it) and never iterates the live dict; a lock per namespace
keeps a sync on the loop and the body thread's ``finish()`` apart.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from typing import Any

_MISSING = object()

#: Seconds between two syncs of the running bodies' namespaces (besides the one
#: before each cell and the one when a body ends).
SYNC_INTERVAL = 0.1

#: The name under which a body finds ``TaskNamespace.delete_name`` (in its builtins).
DELETE_HELPER = "__task_worker_del__"


def is_dunder(name: object) -> bool:
    """``__name__``-style names: module metadata, never copied to the notebook."""
    return isinstance(name, str) and len(name) > 4 and name.startswith("__") and name.endswith("__")


class TaskNamespace(dict[str, Any]):
    """The globals of one ``%%task`` body (see the module docstring for the rules).

    Made by ``task_namespace(user_ns)``. While the body runs, names it assigns
    live here and reach ``user_ns`` at each ``sync()``; other names are read
    from ``user_ns``. ``finish()`` (called when the body ends, whatever the
    outcome) syncs a last time and detaches: afterwards the functions the body
    defined read the notebook's names, as a normal cell's functions do.
    """

    # No __setitem__ / __delitem__ here, ever: see the module docstring.
    __slots__ = ("_detached", "_lock", "_mirrored", "_user")

    _user: dict[str, Any]
    #: name -> the value last copied into ``_user`` (to tell later changes apart).
    _mirrored: dict[str, Any]
    _detached: bool
    _lock: threading.Lock

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self._user

    def get(self, name: str, default: Any = None) -> Any:
        """``globals().get(name)`` in a body sees the notebook's names too."""
        try:
            return self[name]
        except KeyError:
            return default

    @property
    def detached(self) -> bool:
        """True once the body ended (``finish()``)."""
        return self._detached

    def sync(self) -> None:
        """Copy to the notebook each name whose value is not the one last copied
        (the task changed it since the last sync: its value wins), and remove from
        the notebook the names the task deleted since, unless the notebook holds
        another value by now. Thread-safe; does nothing once detached."""
        with self._lock:
            if not self._detached:
                self._sync()

    def _sync(self) -> None:
        user, mirrored = self._user, self._mirrored
        own = dict.copy(self)  # never iterate the live dict: a thread body may be changing it
        for name, value in own.items():
            if mirrored.get(name, _MISSING) is not value and not is_dunder(name):
                user[name] = value
                mirrored[name] = value
        for name in [n for n in mirrored if n not in own]:
            if user.get(name, _MISSING) is mirrored.pop(name):
                del user[name]

    def delete_name(self, name: str) -> bool:
        """``del name`` at the top level of the body (compiled to call this first):
        remove ``name`` from the notebook now; True when the ``del`` itself must
        still run (the task holds ``name``, or nobody does: ``NameError``)."""
        with self._lock:
            if is_dunder(name) or self._detached:  # dunders stay in the task
                return True
            self._mirrored.pop(name, None)
            in_user = self._user.pop(name, _MISSING) is not _MISSING
            return dict.__contains__(self, name) or not in_user

    def finish(self) -> None:
        """The body ended: sync a last time (so names assigned by
        ``globals().update()`` or just before an error or a cancellation reach the
        notebook too), then detach. Safe to call twice."""
        with self._lock:
            if self._detached:
                return
            self._sync()
            self._detached = True
            for name in dict.copy(self):
                if not is_dunder(name):
                    dict.pop(self, name, None)
            self._mirrored.clear()

    def __repr__(self) -> str:
        names = sorted(str(k) for k in dict.copy(self) if not is_dunder(k))
        return f"<TaskNamespace {'detached' if self._detached else 'own: ' + ', '.join(names)}>"


def task_namespace(user_ns: dict[str, Any], like: TaskNamespace | None = None) -> TaskNamespace:
    """A fresh namespace for one body, reading through to ``user_ns``.

    Lookups the body's own names miss go to a copy of the notebook's builtins
    (taken now: in a cell, IPython's ``get_ipython`` is among them) without the
    names the notebook shadows now, then to ``user_ns``, live. That copy is also
    the body's ``__builtins__``, so class bodies (which skip ``__missing__`` of
    their globals) see the notebook's names too. Both steps are C lookups.
    ``like``: copy that namespace's builtins instead (a retried attempt, which
    runs outside the submitting cell).
    """
    source = user_ns.get("__builtins__", builtins) if like is None else dict.__getitem__(like, "__builtins__")
    source_dict: dict[str, Any] = source if isinstance(source, dict) else vars(source)
    builtins_cls = type("TaskBuiltins", (dict,), {"__slots__": (), "__missing__": user_ns.__getitem__})
    own_builtins = builtins_cls(
        (k, v) for k, v in source_dict.items() if is_dunder(k) or k not in user_ns)
    cls = type("TaskNamespace", (TaskNamespace,),
               {"__slots__": (), "__missing__": own_builtins.__getitem__})
    ns: TaskNamespace = cls()
    ns._user = user_ns
    ns._mirrored = {}
    ns._detached = False
    ns._lock = threading.Lock()
    for name, value in user_ns.items():
        if is_dunder(name) and name != "__builtins__":
            dict.__setitem__(ns, name, value)  # __name__ etc.: the module's identity
    own_builtins[DELETE_HELPER] = ns.delete_name
    dict.__setitem__(ns, "__builtins__", own_builtins)
    return ns


class LiveNamespaces:
    """The namespaces of the bodies running now, synced to the notebook.

    ``start(ns, loop)`` when a body starts (from the loop or from the body's
    thread), ``finish(ns)`` when it ends. While at least one body runs, a
    ``call_later`` chain on ``loop`` syncs them all every ``interval`` seconds
    (so other tasks and widgets see what a body assigns); it ends with the last
    body, so nothing runs when no body does. ``sync_all`` (the extension calls
    it before every cell) syncs them at once, in start order.
    """

    def __init__(self, interval: float = SYNC_INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        #: id(ns) -> ns, in start order (a dict subclass is not hashable).
        self._running: dict[int, TaskNamespace] = {}
        self._armed = False
        self._handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._ticked: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._running)

    @property
    def ticking(self) -> bool:
        """True while the periodic sync is scheduled (only while some body runs)."""
        return self._armed

    def start(self, ns: TaskNamespace, loop: asyncio.AbstractEventLoop | None) -> None:
        """A body starts running in ``ns``: sync it from now on (thread-safe), every
        ``interval`` seconds on ``loop`` (none: only in ``sync_all`` and at the end)."""
        with self._lock:
            self._running[id(ns)] = ns
            if self._armed or self._closed or loop is None:
                return
            self._armed = True
        try:
            loop.call_soon_threadsafe(self._arm, loop)
        except RuntimeError:  # the loop is closed: the final sync still happens in finish()
            with self._lock:
                self._armed = False

    def finish(self, ns: TaskNamespace) -> None:
        """The body running in ``ns`` ended: ``ns.finish()`` and forget it."""
        try:
            ns.finish()
        finally:
            with self._lock:
                self._running.pop(id(ns), None)

    def sync_all(self, *_: Any) -> None:
        """Sync every running body's namespace now, in start order (any arguments,
        such as IPython's ``pre_run_cell`` info, are ignored)."""
        with self._lock:
            running = list(self._running.values())
        for ns in running:
            ns.sync()

    async def next_tick(self) -> None:
        """Return after the next periodic sync (the loop's, not one before a cell).
        Only while some body runs: otherwise there is no next one."""
        fut = asyncio.get_running_loop().create_future()
        self._ticked.append(fut)
        await fut

    def close(self) -> None:
        """Stop the periodic sync for good (the extension is unloaded); pending
        ``next_tick`` calls are cancelled."""
        with self._lock:
            self._closed = True
            handle, self._handle = self._handle, None
            self._armed = False
        if handle is not None:
            handle.cancel()
        ticked, self._ticked = self._ticked, []
        for fut in ticked:
            fut.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._closed:
                return
            self._handle = loop.call_later(self.interval, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self.sync_all()
        finally:
            with self._lock:
                if self._running and not self._closed:
                    self._handle = loop.call_later(self.interval, self._tick, loop)
                else:
                    self._handle = None
                    self._armed = False
            ticked, self._ticked = self._ticked, []
            for fut in ticked:
                if not fut.done():
                    fut.set_result(None)

    def __repr__(self) -> str:
        return f"<LiveNamespaces running={len(self._running)} ticking={self._armed}>"


__all__ = ["DELETE_HELPER", "SYNC_INTERVAL", "LiveNamespaces", "TaskNamespace", "is_dunder",
           "task_namespace"]
