"""Argument checks of the worker's public methods, and the per-function facts
``add_task`` looks up for every task."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import Any

from ._record import IS_ASYNC, WANTS_PROGRESS
from ._status import TaskStatus

# Per-function facts, looked up on every add_task: (flags). Bounded so that
# re-run notebook cells defining new functions cannot grow it forever. Keys are
# functions only: a bound method is cached by its function and a partial or a
# callable object is not cached, so the cache never keeps a user's object alive.
func_flags: dict[Any, int] = {}


def flags_for(func: Callable[..., Any]) -> int:
    key: Any = func.__func__ if type(func) is MethodType else func
    try:
        return func_flags[key]
    except (KeyError, TypeError):
        pass
    flags = IS_ASYNC if inspect.iscoroutinefunction(func) else 0
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "progress_callback" in params:
        flags |= WANTS_PROGRESS
    if type(key) in CACHEABLE:
        if len(func_flags) >= 4096:
            func_flags.clear()
        func_flags[key] = flags
    return flags


CACHEABLE = (FunctionType, BuiltinFunctionType)


def check_timeout(timeout: object, what: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, got {timeout!r}")
    value = float(timeout)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive, finite number of seconds, got {timeout!r}")
    return value


def check_limit(limit: object) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    return limit


def check_max_workers(max_workers: object) -> int:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int):
        raise TypeError(f"max_workers must be an int, got {max_workers!r}")
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
    return max_workers


def check_max_history(max_history: object) -> int:
    if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 0:
        raise ValueError(f"max_history must be a non-negative int, got {max_history!r}")
    return max_history


def parse_statuses(status: object) -> list[TaskStatus] | None:
    if status is None:
        return None
    if isinstance(status, (str, TaskStatus)):
        return [TaskStatus.parse(status)]
    if isinstance(status, Iterable):
        return list(dict.fromkeys(TaskStatus.parse(s) for s in status))
    raise TypeError(f"status must be a TaskStatus, its string value, or a collection of them, got {status!r}")
