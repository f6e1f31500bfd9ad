"""Per-task output routing (task_worker._output) on a real shell and real Output widgets."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from collections.abc import Iterator
from typing import Any

import ipywidgets
import pytest
from IPython.display import clear_output, display
from IPython.testing import globalipapp

from task_worker import _output
from task_worker._output import OutputCapture, StreamProxy, TaskOutput, current_output, run_routed


@pytest.fixture
def ip() -> Any:
    return globalipapp.get_ipython()


@pytest.fixture
def widget() -> Iterator[Any]:
    out = ipywidgets.Output()
    yield out
    out.close()


@pytest.fixture
async def sink(widget: Any) -> Any:
    return TaskOutput(widget, asyncio.get_running_loop(), interval=0.01)


class Recorder(io.StringIO):
    """A stand-in original stream with an extra attribute, to see forwarding."""

    encoding = "rot13-ish"


async def test_writes_are_merged_into_one_widget_update_per_flush(sink: TaskOutput, widget: Any) -> None:
    changes: list[Any] = []
    widget.observe(changes.append, names="outputs")
    for i in range(100):
        sink.write("stdout", f"{i},")
    sink.write("stderr", "oops")
    sink.flush()
    assert len(changes) == 1
    assert widget.outputs == (
        {"output_type": "stream", "name": "stdout", "text": ",".join(map(str, range(100))) + ","},
        {"output_type": "stream", "name": "stderr", "text": "oops"},
    )
    sink.write("stderr", "!")  # continues the last stream item
    sink.flush()
    assert widget.outputs[-1]["text"] == "oops!" and len(widget.outputs) == 2


async def test_buffered_output_is_flushed_by_the_loop_on_its_own(sink: TaskOutput, widget: Any) -> None:
    flushed = asyncio.get_running_loop().create_future()
    widget.observe(lambda change: flushed.done() or flushed.set_result(change["new"]), names="outputs")
    sink.write("stdout", "hello")
    assert widget.outputs == ()  # not yet: batched
    assert (await asyncio.wait_for(flushed, 5))[0]["text"] == "hello"


async def test_writes_from_threads_reach_the_widget(sink: TaskOutput, widget: Any) -> None:
    flushed = asyncio.get_running_loop().create_future()

    def on_change(change: Any) -> None:
        if sum(len(o["text"]) for o in change["new"]) == 4 * 50 and not flushed.done():
            flushed.set_result(None)

    widget.observe(on_change, names="outputs")

    def body() -> None:
        for _ in range(50):
            sink.write("stdout", "x")

    threads = [threading.Thread(target=body) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    await asyncio.wait_for(flushed, 5)
    assert widget.outputs == ({"output_type": "stream", "name": "stdout", "text": "x" * 200},)


async def test_display_update_replaces_the_item_with_that_display_id(sink: TaskOutput, widget: Any) -> None:
    sink.display({"text/plain": "v1"}, {}, transient={"display_id": "d"})
    sink.write("stdout", "between")
    sink.flush()
    sink.display({"text/plain": "v2"}, {}, transient={"display_id": "d"}, update=True)
    sink.flush()
    assert [o.get("data", {}).get("text/plain") for o in widget.outputs] == ["v2", None]


async def test_clear_now_and_clear_wait(sink: TaskOutput, widget: Any) -> None:
    sink.write("stdout", "old")
    sink.clear()
    sink.write("stdout", "new")
    sink.flush()
    assert widget.outputs == ({"output_type": "stream", "name": "stdout", "text": "new"},)
    sink.clear(wait=True)
    sink.flush()
    assert len(widget.outputs) == 1  # kept until the next output arrives
    sink.write("stdout", "newer")
    sink.flush()
    assert widget.outputs == ({"output_type": "stream", "name": "stdout", "text": "newer"},)


async def test_long_output_is_trimmed_from_the_start(
        sink: TaskOutput, widget: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_output, "MAX_STREAM_CHARS", 10)
    monkeypatch.setattr(_output, "MAX_ITEMS", 3)
    sink.write("stdout", "0123456789abcdef")
    sink.flush()
    assert widget.outputs[0]["text"].endswith("6789abcdef")
    assert widget.outputs[0]["text"].startswith("[... earlier output trimmed")
    for i in range(5):
        sink.display({"text/plain": str(i)}, {})
    sink.flush()
    assert [o["data"]["text/plain"] for o in widget.outputs] == ["2", "3", "4"]


async def test_closed_output_drops_writes_and_is_no_longer_current(sink: TaskOutput, widget: Any) -> None:
    sink.write("stdout", "pending")
    sink.close()
    sink.write("stdout", "after")
    sink.flush()
    assert widget.outputs == ()
    assert run_routed(sink, current_output) is None


def test_run_routed_sets_the_output_only_inside() -> None:
    marker = object()
    assert run_routed(marker, lambda: _output._current.get()) is marker  # type: ignore[arg-type]
    assert _output._current.get() is None


def test_stream_proxy_forwards_everything_outside_a_task() -> None:
    original = Recorder()
    proxy = StreamProxy(original, "stdout")  # type: ignore[arg-type]
    assert proxy.write("plain") == 5
    proxy.writelines(["a", "b"])
    proxy.flush()
    assert original.getvalue() == "plainab"
    assert proxy.encoding == "rot13-ish"  # other attributes are the original's


async def test_stream_proxy_routes_inside_a_task_and_checks_type(sink: TaskOutput, widget: Any) -> None:
    original = Recorder()
    proxy = StreamProxy(original, "stderr")  # type: ignore[arg-type]

    def task_code() -> None:
        proxy.write("routed")
        with pytest.raises(TypeError):
            proxy.write(b"bytes")  # type: ignore[arg-type]

    run_routed(sink, task_code)
    sink.flush()
    assert original.getvalue() == ""
    assert widget.outputs == ({"output_type": "stream", "name": "stderr", "text": "routed"},)


async def test_capture_routes_print_display_and_clear_output_of_a_task(
        ip: Any, sink: TaskOutput, widget: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", Recorder())
    published: list[Any] = []
    monkeypatch.setattr(ip.display_pub, "publish", lambda data, metadata=None, **kw: published.append(data))
    capture = OutputCapture(ip)
    capture.install()
    try:
        def task_code() -> None:
            print("hello from task")
            display({"text/plain": "shown"}, raw=True)
            clear_output(wait=True)
            display({"text/plain": "replacement"}, raw=True)

        run_routed(sink, task_code)
        print("not a task")
        display({"text/plain": "cell display"}, raw=True)
    finally:
        capture.uninstall()
    sink.flush()
    assert widget.outputs == ({"output_type": "display_data", "data": {"text/plain": "replacement"},
                               "metadata": {}},)
    assert sys.stdout.getvalue() == "not a task\n"  # type: ignore[attr-defined]
    assert published == [{"text/plain": "cell display"}]


def test_uninstall_restores_exactly(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", Recorder())
    monkeypatch.setattr(sys, "stderr", Recorder())
    stdout, stderr, pub_attrs = sys.stdout, sys.stderr, dict(vars(ip.display_pub))
    capture = OutputCapture(ip)
    capture.install()
    capture.install()  # idempotent
    assert isinstance(sys.stdout, StreamProxy) and "publish" in vars(ip.display_pub)
    capture.uninstall()
    capture.uninstall()
    assert sys.stdout is stdout and sys.stderr is stderr
    assert dict(vars(ip.display_pub)) == pub_attrs


def test_uninstall_leaves_a_later_wrapper_in_place_and_passes_through(
        ip: Any, sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Recorder()
    monkeypatch.setattr(sys, "stdout", original)
    capture = OutputCapture(ip)
    capture.install()
    proxy = sys.stdout
    wrapper = StreamProxy(proxy, "stdout")  # type: ignore[arg-type]  # someone wraps us
    monkeypatch.setattr(sys, "stdout", wrapper)
    capture.uninstall()
    assert sys.stdout is wrapper
    run_routed(None, print, "after uninstall")
    assert original.getvalue() == "after uninstall\n"
