"""The task registry."""

from __future__ import annotations

import pytest

from task_worker import (
    clear_registry,
    get_all_task_types,
    get_task_function,
    register_task,
    task,
    unregister_task,
)


def test_decorator_registers_and_returns_the_function() -> None:
    def f() -> int:
        return 1

    assert task("t1")(f) is f
    assert get_task_function("t1") is f
    assert "t1" in get_all_task_types()


def test_registering_again_replaces() -> None:
    register_task("t2", lambda: 1)
    g = lambda: 2  # noqa: E731
    register_task("t2", g)
    assert get_task_function("t2") is g


def test_unknown_type_is_none_and_unregister() -> None:
    assert get_task_function("missing") is None
    register_task("t3", print)
    assert unregister_task("t3") is True
    assert unregister_task("t3") is False
    clear_registry()
    assert get_all_task_types() == []


@pytest.mark.parametrize("bad", ["", "  ", 3, None])
def test_bad_type_names_raise(bad: object) -> None:
    with pytest.raises(TypeError, match="task type"):
        register_task(bad, print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="task type"):
        task(bad)  # type: ignore[arg-type]


def test_register_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        register_task("x", 3)  # type: ignore[arg-type]
    assert get_task_function("x") is None


def test_registered_name_is_the_public_reverse_lookup() -> None:
    from task_worker._registry import registered_name

    async def crunch() -> None: ...

    assert registered_name(crunch) is None
    register_task("crunch_type", crunch)
    assert registered_name(crunch) == "crunch_type"
    unregister_task("crunch_type")
    assert registered_name(crunch) is None
    register_task("again", crunch)
    clear_registry()
    assert registered_name(crunch) is None
