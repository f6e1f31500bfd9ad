"""The %%task cell view's formatting of outcomes, through a real IPython shell's formatters.

A task's result is formatted with user code (``_repr_*_``, ``__repr__``, registered printers):
its errors must come back to the view, never be printed by IPython into whichever cell is
current, and never escape.
"""

from __future__ import annotations

from typing import Any

import pytest
from IPython.testing import globalipapp

from task_worker._cellview import CellViews, format_result


@pytest.fixture
def formatter() -> Any:
    """A display formatter with every format active, as in a kernel (the terminal test shell
    only activates text/plain)."""
    from IPython.core.formatters import DisplayFormatter

    f = DisplayFormatter(parent=globalipapp.get_ipython())
    assert f.formatters["text/html"].enabled
    return f


class Fine:
    def _repr_html_(self) -> str:
        return "<b>fine</b>"

    def _repr_markdown_(self) -> str:
        return "**fine**"

    def __repr__(self) -> str:
        return "Fine()"


class BadHTML:
    def _repr_html_(self) -> str:
        raise ValueError("html boom")

    def __repr__(self) -> str:
        return "BadHTML()"


class BadRepr:
    def __repr__(self) -> str:
        raise ValueError("repr boom")


class BadBundle:
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        raise RuntimeError("bundle boom")

    def _repr_html_(self) -> str:
        return "<i>html</i>"


class BadJSON:
    def _repr_json_(self) -> Any:
        return {"not json": object()}

    def __repr__(self) -> str:
        return "BadJSON()"


class Exits:
    def _repr_html_(self) -> str:
        raise SystemExit(3)


def test_format_result_is_ipythons_format_for_well_behaved_values(formatter: Any) -> None:
    for value in (Fine(), 42, "text", [1, 2]):
        data, metadata, errors = format_result(formatter, value)
        assert (data, metadata) == tuple(formatter.format(value))
        assert errors == []


def test_a_raising_repr_html_keeps_the_other_formats_and_is_returned_not_printed(
        formatter: Any, capsys: pytest.CaptureFixture[str]) -> None:
    data, _, errors = format_result(formatter, BadHTML())
    assert data == {"text/plain": "BadHTML()"}
    assert [str(e) for e in errors] == ["html boom"]
    assert capsys.readouterr() == ("", "")  # IPython's own handler would print the traceback


def test_a_raising_repr_leaves_no_text_and_reports_the_error(formatter: Any) -> None:
    data, _, errors = format_result(formatter, BadRepr())
    assert "text/plain" not in data
    assert [type(e) for e in errors] == [ValueError]


def test_a_raising_mimebundle_falls_back_to_the_repr_methods(formatter: Any) -> None:
    data, _, errors = format_result(formatter, BadBundle())
    assert data["text/html"] == "<i>html</i>" and "text/plain" in data
    assert [str(e) for e in errors] == ["bundle boom"]


def test_a_base_exception_from_a_repr_is_reported_not_raised(formatter: Any) -> None:
    data, _, errors = format_result(formatter, Exits())
    assert "text/plain" in data
    assert [type(e) for e in errors] == [SystemExit]


def test_an_exception_whose_str_raises_is_still_formatted() -> None:
    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("str boom")

    try:
        raise BadStr()
    except BadStr as exc:
        caught = exc
    ename, evalue, lines = CellViews(globalipapp.get_ipython())._format_error(caught)
    assert ename == "BadStr" and "str() failed" in evalue
    assert lines


def test_a_representation_the_browser_cannot_receive_is_dropped_and_reported(formatter: Any) -> None:
    data, _, errors = format_result(formatter, BadJSON())
    assert data == {"text/plain": "BadJSON()"}
    assert len(errors) == 1 and "application/json" in str(errors[0])
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16  # bytes travel (base64), as the kernel sends them

    class Picture:
        def _repr_png_(self) -> bytes:
            return png

    data, _, errors = format_result(formatter, Picture())
    assert "image/png" in data and errors == []
