"""A ``%%task`` body's own namespace: its names are its own, and reach the notebook.

Each body runs with ``exec``/``eval`` in a ``TaskNamespace``: a ``dict``
subclass, so CPython (3.10 to 3.13) routes the body's module-level name
operations through it instead of the fast exact-dict paths:

- ``STORE_NAME``, ``DELETE_NAME`` and ``from m import *`` call ``__setitem__`` /
  ``__delitem__``: the value is kept here (another task's ``for i`` cannot
  change this task's ``i``) and mirrored into the notebook's namespace at once
  (another cell can watch a growing ``results`` list).
- ``LOAD_NAME``, and ``LOAD_GLOBAL`` in functions defined in the body (their
  ``__globals__`` is this namespace), call ``__missing__`` for names the body
  has not assigned: the builtins the notebook does not shadow, then the
  notebook's namespace, live (a ``TaskBuiltins`` dict whose ``__missing__`` is
  the notebook's).
- Class bodies look globals up with the exact-dict API (no ``__missing__``);
  they fall through to ``__builtins__``, which is that same ``TaskBuiltins``.
- ``STORE_GLOBAL`` (``global x`` in a nested function) and ``globals().update()``
  bypass ``__setitem__``; ``finish()`` copies what they changed when the body
  ends. ``%%task`` refuses ``global`` in nested scopes (see ``_magics``) because
  such a function, called after the task ended, would write here unseen.

Both ``__missing__`` methods are bound ``__getitem__`` methods of dicts (C
functions, not descriptors, so CPython calls them with the key alone): a lookup
that falls through costs no Python frame and, for a builtin, no exception. That
needs two small classes per namespace, made by ``task_namespace``. The price: a
builtin the notebook starts or stops shadowing while the body runs is not
noticed (the copy is taken when the cell runs).
"""

from __future__ import annotations

import builtins
from typing import Any

_MISSING = object()


def is_dunder(name: object) -> bool:
    """``__name__``-style names: module metadata, never mirrored to the notebook."""
    return isinstance(name, str) and len(name) > 4 and name.startswith("__") and name.endswith("__")


class TaskNamespace(dict[str, Any]):
    """The globals of one ``%%task`` body (see the module docstring for the rules).

    Made by ``task_namespace(user_ns)``. While the body runs, names it assigns
    live here and are mirrored into ``user_ns``; other names are read from
    ``user_ns``. ``finish()`` (called when the body ends, whatever the outcome)
    copies what was not mirrored and detaches: afterwards the functions the body
    defined read and assign the notebook's names, as a normal cell's functions do.
    """

    __slots__ = ("_detached", "_mirrored", "_plain", "_user")

    _user: dict[str, Any]
    #: name -> the value last mirrored into ``_user`` (to tell later changes apart).
    _mirrored: dict[str, Any]
    _detached: bool
    #: Names already mirrored once (not dunders): the fast path of ``__setitem__``.
    _plain: set[str]

    def __setitem__(self, name: str, value: Any, _set: Any = dict.__setitem__) -> None:
        # The hot path of every assignment at the top level of a body: kept short.
        _set(self, name, value)
        if name in self._plain:
            self._user[name] = value
            self._mirrored[name] = value
        elif not is_dunder(name):
            if self._detached:
                dict.pop(self, name, None)
            else:
                self._plain.add(name)
                self._mirrored[name] = value
            self._user[name] = value

    def __delitem__(self, name: str) -> None:
        found = dict.pop(self, name, _MISSING) is not _MISSING
        if not is_dunder(name):
            self._mirrored.pop(name, None)
            found = self._user.pop(name, _MISSING) is not _MISSING or found
        if not found:
            raise KeyError(name)

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

    def finish(self) -> None:
        """The body ended: copy to the notebook the names whose value changed without
        being mirrored (``globals().update()``, ``STORE_GLOBAL``, an assignment cut
        short between its two stores by ``ThreadInterrupted``), then detach. A name
        whose mirrored value the notebook has since replaced keeps the notebook's
        value. Safe to call twice."""
        if self._detached:
            return
        user, mirrored = self._user, self._mirrored
        own = [(k, v) for k, v in dict.items(self) if not is_dunder(k)]
        for name, value in own:
            if mirrored.get(name, _MISSING) is not value:
                user[name] = value
        self._detached = True
        self._plain.clear()  # from now on assignments go to the notebook only
        for name, _ in own:
            dict.pop(self, name, None)
        mirrored.clear()

    def __repr__(self) -> str:
        names = sorted(str(k) for k in dict.keys(self) if not is_dunder(k))
        return f"<TaskNamespace {'detached' if self._detached else 'own: ' + ', '.join(names)}>"


def task_namespace(user_ns: dict[str, Any]) -> TaskNamespace:
    """A fresh namespace for one body, reading through to ``user_ns``.

    Lookups the body's own names miss go to a copy of the notebook's builtins
    (taken now: in a cell, IPython's ``get_ipython`` is among them) without the
    names the notebook shadows now, then to ``user_ns``, live. That copy is also
    the body's ``__builtins__``, so class bodies (which skip ``__missing__`` of
    their globals) see the notebook's names too. Both steps are C lookups.
    """
    source = user_ns.get("__builtins__", builtins)
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
    ns._plain = set()
    for name, value in user_ns.items():
        if is_dunder(name) and name != "__builtins__":
            dict.__setitem__(ns, name, value)  # __name__ etc.: the module's identity
    dict.__setitem__(ns, "__builtins__", own_builtins)
    return ns


__all__ = ["TaskNamespace", "is_dunder", "task_namespace"]
