"""Chains: ``after=`` dependencies and ``retries=`` with backoff.

One owner for the graph and the retry policy. A task that uses neither has no
``Chain`` (``TaskRecord.chain is None``) and pays one ``is None`` test where it
ends. Parked tasks (pending, but waiting for dependencies or for a retry delay)
are kept by the task table (``TaskTable.waiting``), outside the start queue: they
hold no worker slot and are not in ``get_queue()``'s start order until eligible.

- ``RetryPolicy``: the validated ``retries`` / ``retry_delay`` / ``retry_backoff``
  / ``retry_on`` of one task, and the delay before each retry (with jitter).
- ``Chain``: the mutable chain state of one active task (its dependencies still
  unfinished, its dependents, its attempt and the errors of earlier attempts).
- ``ChainInfo``: the frozen part a ``TaskInfo`` carries (its ``chain`` field).
- ``resolve_after``: ``after=`` (ids or names) to the records or snapshots of the
  dependencies, with the add-time errors (unknown, already failed or cancelled).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from ._status import TaskStatus

if TYPE_CHECKING:
    from ._info import TaskInfo
    from ._record import TaskRecord

#: Relative jitter on every retry delay: the delay is multiplied by a random factor
#: in [1 - JITTER, 1 + JITTER], so that tasks failing together do not retry in lockstep.
JITTER = 0.1
#: Exceptions retried by default: any ``Exception`` (never ``CancelledError``,
#: which is a ``BaseException``; and a task timeout only if ``retry_on`` names it).
DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (Exception,)
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError)
_COMPLETED = TaskStatus.COMPLETED
_FAILED = TaskStatus.FAILED


class ChainInfo(NamedTuple):
    """What a ``TaskInfo`` of a task in a chain carries (``TaskInfo.chain``); plain
    tasks carry ``None``. Read it through the ``TaskInfo`` properties."""

    #: The attempt running now, or about to run after a retry delay (1-based).
    attempt: int
    max_attempts: int
    #: Ids of the tasks it waits for, in the order given to ``after=``.
    depends_on: tuple[str, ...]
    #: Human-readable: the dependencies still unfinished ("load, clean"), or
    #: ``"retry delay"`` between attempts; ``None`` when it waits for nothing.
    waiting_for: str | None
    #: The error message of each failed attempt, in order.
    attempt_errors: tuple[str, ...]
    #: When the next attempt becomes eligible (epoch seconds), during a retry delay.
    retry_at: float | None


def _check_number(value: object, what: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{what} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def _check_retry_on(retry_on: object) -> tuple[type[BaseException], ...]:
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not types:
        raise ValueError("retry_on must name at least one exception type")
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"retry_on must be an exception type or a tuple of them, got {retry_on!r}")
        if issubclass(t, asyncio.CancelledError):
            raise ValueError("retry_on cannot name CancelledError: a cancelled task is never retried")
    return types


class RetryPolicy:
    """When and how often a failed attempt is retried (validated at ``add_task``)."""

    __slots__ = ("backoff", "delay", "retries", "retry_on", "retry_timeout")

    def __init__(self, retries: object, delay: object, backoff: object, retry_on: object) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"retries must be an int, got {retries!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        self.retries = retries
        self.delay = _check_number(delay, "retry_delay", 0.0)
        self.backoff = _check_number(backoff, "retry_backoff", 1.0)
        self.retry_on = _check_retry_on(retry_on)
        #: A timeout of the whole task is retried only when ``retry_on`` names it.
        self.retry_timeout = any(t in _TIMEOUTS for t in self.retry_on)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 for the first retry): ``retry_delay *
        retry_backoff ** (attempt - 2)``, times a jitter factor in ``1 +- JITTER``."""
        base = self.delay * self.backoff ** (attempt - 2)
        return base * random.uniform(1.0 - JITTER, 1.0 + JITTER)

    def retries_error(self, exc: BaseException | None, timed_out: bool) -> bool:
        """Whether an attempt that ended with ``exc`` (``timed_out``: the task's own
        timeout) is one to retry (attempts left aside)."""
        if exc is None or isinstance(exc, asyncio.CancelledError):
            return False
        if timed_out:
            return self.retry_timeout
        return isinstance(exc, self.retry_on)


class Chain:
    """The chain state of one active task: only the worker's chain code writes it."""

    __slots__ = ("attempt", "dependents", "depends_on", "errors", "labels", "policy", "retry_at",
                 "retry_due", "unfinished")

    def __init__(self, depends_on: tuple[str, ...], unfinished: dict[str, str],
                 policy: RetryPolicy | None) -> None:
        self.depends_on = depends_on
        #: Dependency id -> its label (name), for those not completed yet.
        self.unfinished = unfinished
        self.policy = policy
        self.attempt = 1
        self.errors: list[str] = []
        #: Records waiting for this task (they may have ended since: skipped then).
        self.dependents: list[TaskRecord] | None = None
        #: During a retry delay: when the next attempt is due (epoch / loop clock).
        self.retry_at: float | None = None
        self.retry_due = 0.0

    @property
    def max_attempts(self) -> int:
        return 1 if self.policy is None else self.policy.retries + 1

    @property
    def trivial(self) -> bool:
        """A plain task that no task waits on (yet): its snapshots carry no chain. One
        with dependents carries one (attempt 1/1, no dependencies), so that views can
        tell that its cancel reason names them."""
        return (self.policy is None and not self.depends_on
                and not any(d.info is None for d in self.dependents or ()))

    def waiting_for(self) -> str | None:
        if self.unfinished:
            return ", ".join(self.unfinished.values())
        if self.retry_at is not None:
            return "retry delay"
        return None

    def freeze(self, final: bool = False) -> ChainInfo | None:
        """The ``ChainInfo`` of a snapshot taken now (``None`` for a trivial chain);
        ``final``: of the task's terminal snapshot (it waits for nothing)."""
        if self.trivial:
            return None
        if final:
            return ChainInfo(self.attempt, self.max_attempts, self.depends_on, None,
                             tuple(self.errors), None)
        return ChainInfo(self.attempt, self.max_attempts, self.depends_on, self.waiting_for(),
                         tuple(self.errors), self.retry_at)

    def add_dependent(self, rec: TaskRecord) -> None:
        if self.dependents is None:
            self.dependents = [rec]
        else:
            self.dependents.append(rec)

    def retry_delay(self, exc: BaseException | None, timed_out: bool) -> float | None:
        """Seconds before the next attempt if the failed one is to be retried, else ``None``."""
        policy = self.policy
        if policy is None or self.attempt > policy.retries or not policy.retries_error(exc, timed_out):
            return None
        return policy.delay_before(self.attempt + 1)


def active_dependents(rec: TaskRecord) -> Iterator[tuple[TaskRecord, TaskRecord]]:
    """``(dependency, dependent)`` pairs of the active tasks waiting on ``rec``,
    transitively, breadth first (each dependent once)."""
    seen: set[str] = set()
    todo: deque[TaskRecord] = deque([rec])
    while todo:
        parent = todo.popleft()
        chain = parent.chain
        if chain is None or not chain.dependents:
            continue
        for dep in chain.dependents:
            if dep.info is None and dep.id not in seen:
                seen.add(dep.id)
                yield parent, dep
                todo.append(dep)


def dependents_note(n: int) -> str:
    """The words a cancelled task's error gains when it cancels ``n`` dependents."""
    return f" (and {n} dependent task{'s' if n != 1 else ''} waiting on it)"


def _ended(status: TaskStatus) -> str:
    return "failed" if status is _FAILED else "was cancelled"


def dependency_reason(label: str, status: TaskStatus,
                      root: tuple[str, TaskStatus] | None = None) -> str:
    """The error of a dependent cancelled because its dependency ``label`` ended ``status``;
    ``root``: the task whose end started the cascade, when that is not ``label`` itself."""
    reason = f"cancelled: dependency {label!r} {_ended(status)}"
    if root is not None:
        reason += f", because {root[0]!r} {_ended(root[1])}"
    return reason


def _lookup(items: Iterable[Any], by_id: dict[str, Any], key: str,
            label: Callable[[Any], str]) -> Any:
    # Labels first (the newest task so named), then ids: a re-run ``%%task -n load``
    # cell (a generated id, named "load") is what "load" means, not its first run;
    # a task given an explicit ``task_id`` is named by it, not by its function's name.
    for item in items:
        if label(item) == key:
            return item
    return by_id.get(key)


def resolve_after(
    after: object, by_id: dict[str, TaskRecord | TaskInfo], label: Callable[[Any], str],
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Resolve ``after=`` against the table's ``by_id`` (in creation order).

    Returns the dependency ids (in order, without repeats) and the unfinished
    ones (id -> ``label(item)``, the words that name it to the user).

    Raises:
        TypeError: ``after`` is not a str or a collection of str.
        ValueError: a dependency is unknown, or already failed or was cancelled.
    """
    if isinstance(after, str):
        keys: list[str] = [after]
    else:
        try:
            keys = list(after)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(
                f"after must be a task id or name, or a collection of them, got {after!r}") from None
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"after must name tasks by id or name (str), got {k!r}")
    ids: list[str] = []
    unfinished: dict[str, str] = {}
    for key in keys:
        item = _lookup(reversed(by_id.values()), by_id, key, label)
        if item is None:
            raise ValueError(f"after: no task with id or name {key!r}")
        if item.id in ids:
            continue
        status = item.status
        if status is TaskStatus.FAILED or status is TaskStatus.CANCELLED:
            what = "failed" if status is TaskStatus.FAILED else "was cancelled"
            detail = f": {item.error}" if item.error else ""
            raise ValueError(f"after: dependency {label(item)!r} (id {item.id!r}) already {what}{detail}")
        ids.append(item.id)
        if status is not _COMPLETED:
            unfinished[item.id] = label(item)
    return tuple(ids), unfinished


__all__ = ["DEFAULT_RETRY_ON", "JITTER", "Chain", "ChainInfo", "RetryPolicy", "active_dependents",
           "dependency_reason", "dependents_note", "resolve_after"]
