"""The registry of task functions by type name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_registry: dict[str, Callable[..., Any]] = {}
# Reverse map so a registered function shows its type name as the task's name.
_names: dict[Callable[..., Any], str] = {}


#: ``registered_name(func)``: the type name ``func`` was registered under, or
#: ``None``. (The reverse map's own ``get``: the worker calls it for every task.)
registered_name: Callable[[Callable[..., Any]], str | None] = _names.get


def _check_type_name(task_type: object) -> str:
    if not isinstance(task_type, str) or not task_type.strip():
        raise TypeError(f"a task type must be a non-empty string, got {task_type!r}")
    return task_type


def register_task(task_type: str, func: Callable[..., Any]) -> None:
    """Register ``func`` under ``task_type``; registering a name again replaces it.

    Raises:
        TypeError: ``task_type`` is not a non-empty string or ``func`` is not callable.
    """
    _check_type_name(task_type)
    if not callable(func):
        raise TypeError(f"register_task() needs a callable, got {func!r}")
    old = _registry.get(task_type)
    if old is not None and _names.get(old) == task_type:
        del _names[old]
    _registry[task_type] = func
    try:
        _names[func] = task_type
    except TypeError:  # unhashable callable: it still runs, it just keeps its own name
        pass


def task(task_type: str) -> Callable[[F], F]:
    """Decorator: register the function under ``task_type`` and return it unchanged.

    >>> @task("double")
    ... async def double(x):
    ...     return 2 * x
    """
    _check_type_name(task_type)

    def decorator(func: F) -> F:
        register_task(task_type, func)
        return func

    return decorator


def get_task_function(task_type: str) -> Callable[..., Any] | None:
    """The function registered under ``task_type``, or ``None``."""
    return _registry.get(task_type)


def get_all_task_types() -> list[str]:
    """All registered type names, sorted."""
    return sorted(_registry)


def unregister_task(task_type: str) -> bool:
    """Remove ``task_type`` from the registry; returns whether it was there."""
    func = _registry.pop(task_type, None)
    if func is None:
        return False
    if _names.get(func) == task_type:
        del _names[func]
    return True


def clear_registry() -> None:
    """Remove every registered task type (for tests and fresh sessions)."""
    _registry.clear()
    _names.clear()


def resolve(task_func: object) -> tuple[Callable[..., Any], str]:
    """Turn ``add_task``'s first argument into ``(function, display name)``."""
    if isinstance(task_func, str):
        func = _registry.get(task_func)
        if func is None:
            known = ", ".join(sorted(_registry)) or "none are registered"
            raise KeyError(f"unknown task type {task_func!r}; registered types: {known}")
        return func, task_func
    if not callable(task_func):
        raise TypeError(
            f"add_task() needs a task function or a registered task type name, got {task_func!r}"
        )
    try:
        name = _names.get(task_func)
    except TypeError:
        name = None
    if name is None:
        name = getattr(task_func, "__name__", None)
        if name is None:
            name = type(task_func).__name__
    return task_func, name
