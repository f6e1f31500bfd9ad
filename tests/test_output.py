"""Per-task output routing (task_worker._output) on a real shell and real Output widgets."""

from __future__ import annotations

import asyncio
import builtins
import getpass
import io
import sys
import threading
from collections.abc import Iterator
from typing import Any

import ipywidgets
import pytest
from IPython.display import clear_output, display
from IPython.testing import globalipapp

import task_worker
from task_worker import _output
from task_worker._output import (
    OutputCapture,
    StreamProxy,
    TaskInputError,
    TaskOutput,
    current_output,
    guard_input,
    run_routed,
)


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


async def test_long_output_is_trimmed_from_a_line_start_and_says_how_much(
        sink: TaskOutput, widget: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_output, "MAX_STREAM_CHARS", 100)
    lines = [f"line {i}\n" for i in range(40)]
    for line in lines:
        sink.write("stdout", line)
    sink.flush()
    (item,) = widget.outputs
    notice, kept = item["text"].split("\n", 1)
    assert kept.startswith("line ") and kept.endswith("line 39\n") and len(kept) <= 100
    full = "".join(lines)
    assert full.endswith(kept)
    cut = full[:len(full) - len(kept)]
    assert notice == (f"[... {cut.count(chr(10))} earlier lines ({len(cut)} characters) trimmed: "
                      "this output area keeps the last 100 characters ...]")
    sink.write("stdout", "x" * 250)  # one long line: cut inside it
    sink.flush()
    notice, kept = widget.outputs[0]["text"].split("\n", 1)
    assert kept == "x" * 100
    assert notice.startswith(f"[... 40 earlier lines ({len(full) + 150} characters) trimmed")


@pytest.mark.parametrize("cap", [50, 51, 52, 53, 97, 100, 1_000])
def test_a_cut_starts_at_a_line_start_whatever_the_pieces(monkeypatch: pytest.MonkeyPatch, cap: int) -> None:
    # print() writes the text and the newline separately: a cut can fall between
    # them or inside either, and the pieces are joined at different moments.
    monkeypatch.setattr(_output, "MAX_STREAM_CHARS", cap)
    for every in (1, 7, 100):
        text = _output.CappedText()
        full = []
        for i in range(3_000):
            for piece in (str(i), "\n"):
                text.append(piece)
                full.append(piece)
            if i % every == 0:
                text.value()  # joined at this point, as a flush does
        kept, whole = text.value(), "".join(full)
        assert whole.endswith(kept) and kept.startswith(str(3_000 - kept.count("\n")))
        assert whole[len(whole) - len(kept) - 1] == "\n" and len(kept) <= cap
        assert (text.dropped_chars, text.dropped_lines) == (
            len(whole) - len(kept), whole[:len(whole) - len(kept)].count("\n"))


async def test_items_beyond_the_limit_are_dropped_with_a_line_that_counts_them(
        sink: TaskOutput, widget: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_output, "MAX_ITEMS", 3)
    for i in range(5):
        sink.display({"text/plain": str(i)}, {})
    sink.flush()
    notice, *items = widget.outputs
    assert notice == {"output_type": "stream", "name": "stdout",
                      "text": "[... 2 earlier outputs trimmed: this output area keeps the last 3 ...]\n"}
    assert [o["data"]["text/plain"] for o in items] == ["2", "3", "4"]
    sink.display({"text/plain": "5"}, {})
    sink.write("stdout", "tail")
    sink.flush()
    notice, *items = widget.outputs
    assert notice["text"].startswith("[... 4 earlier outputs trimmed")
    assert [o.get("data", {}).get("text/plain", o.get("text")) for o in items] == ["4", "5", "tail"]
    sink.clear()
    sink.write("stdout", "fresh")
    sink.flush()
    assert widget.outputs == ({"output_type": "stream", "name": "stdout", "text": "fresh"},)


def _flood(sink: TaskOutput, lines: int, flush_every: int) -> int:
    """Write ``lines`` lines as ``print`` does (text, then newline); flush every
    ``flush_every`` lines and at the end. Returns the characters written."""
    written = 0
    for i in range(lines):
        text = f"{i:06d}"
        sink.write("stdout", text)
        sink.write("stdout", "\n")
        written += len(text) + 1
        if (i + 1) % flush_every == 0:
            sink.flush()
    sink.flush()
    return written


@pytest.mark.parametrize("flush_every", [100, 1_000, 10**9])
async def test_stream_cost_is_amortised_linear_in_what_was_written(
        widget: Any, monkeypatch: pytest.MonkeyPatch, flush_every: int) -> None:
    # The issue: every write rebuilt the whole kept text (quadratic). Counted in
    # characters copied, not in time: doubling the output doubles the copies.
    cap = 5_000
    monkeypatch.setattr(_output, "MAX_STREAM_CHARS", cap)
    loop = asyncio.get_running_loop()
    costs = []
    for lines in (20_000, 40_000):
        sink = TaskOutput(widget, loop, interval=3600)
        written = _flood(sink, lines, flush_every)
        assert widget.outputs[-1]["text"].endswith(f"{lines - 1:06d}\n")
        costs.append(sink.copied_chars)
        # A flush copies at most about the kept text plus what is new, so with
        # flushes at least ``cap`` characters apart this is a few copies per character.
        per_flush = 3 * cap + 7 * flush_every
        assert sink.copied_chars <= 3 * written + per_flush * (lines // flush_every + 1)
        sink.close()
    assert costs[1] <= 2.2 * costs[0]


async def test_a_flood_while_the_loop_is_starved_keeps_the_buffer_bounded(
        sink: TaskOutput, widget: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = 1_000
    monkeypatch.setattr(_output, "MAX_STREAM_CHARS", cap)
    for i in range(100_000):  # no flush can run: this test holds the loop
        sink.write("stdout", f"{i}\n")
    buffered = sum(buf.size for kind, (_, buf) in sink._pending if kind == "stream")
    assert buffered <= 2 * cap + 10
    sink.flush()
    assert widget.outputs[0]["text"].endswith("\n99999\n")
    assert "earlier lines" in widget.outputs[0]["text"].split("\n", 1)[0]


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


# ------------------------------------------------------------------- input()
class FakeKernel:
    """ipykernel's input handling, reduced to what it does around each cell."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._sys_raw_input: Any = None
        self._save_getpass: Any = None

    def raw_input(self, prompt: str = "") -> str:
        self.asked.append(prompt)
        return "typed"

    def getpass(self, prompt: str = "", stream: Any = None) -> str:
        self.asked.append(prompt)
        return "secret"

    def cell_start(self) -> None:  # ipykernel's _forward_input
        self._sys_raw_input, builtins.input = builtins.input, self.raw_input
        self._save_getpass, getpass.getpass = getpass.getpass, self.getpass

    def cell_end(self) -> None:  # ipykernel's _restore_input
        builtins.input, getpass.getpass = self._sys_raw_input, self._save_getpass


class FakeShell:
    def __init__(self) -> None:
        self.kernel = FakeKernel()


async def _asks_in_a_task(worker: task_worker.AsyncTaskWorker) -> list[str]:
    """What ``input()`` and ``getpass()`` do in a thread body and in a coroutine body."""
    def ask() -> list[str]:
        seen = []
        for func in (builtins.input, getpass.getpass):
            try:
                seen.append(func("? "))
            except TaskInputError as exc:
                assert isinstance(exc, EOFError)
                seen.append(str(exc))
        return seen

    async def ask_async() -> list[str]:
        return ask()

    thread_id = await worker.add_task(ask)
    async_id = await worker.add_task(ask_async)
    in_thread, in_coroutine = await worker.wait(thread_id), await worker.wait(async_id)
    assert in_thread == in_coroutine
    return in_thread


def _asks_here() -> tuple[str, str]:
    """What ``input()`` and ``getpass()`` do outside tasks (a cell's own code)."""
    return builtins.input("? "), getpass.getpass("? ")


REFUSED = [_output.INPUT_REFUSED.format(what="input()"), _output.INPUT_REFUSED.format(what="getpass()")]


async def test_input_and_getpass_are_refused_in_tasks_during_and_between_cells_only(
        worker: task_worker.AsyncTaskWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtins, "input", lambda prompt="": "from stdin")
    monkeypatch.setattr(getpass, "getpass", lambda prompt="", stream=None: "pw from tty")
    real_input, real_getpass = builtins.input, getpass.getpass
    shell = FakeShell()
    kernel = shell.kernel
    kernel.cell_start()  # %load_ext runs in a cell
    undo = guard_input(shell)
    assert await _asks_in_a_task(worker) == REFUSED
    assert _asks_here() == ("typed", "secret")  # the cell itself
    kernel.cell_end()
    assert await _asks_in_a_task(worker) == REFUSED  # between cells
    assert _asks_here() == ("from stdin", "pw from tty")
    kernel.cell_start()
    assert await _asks_in_a_task(worker) == REFUSED  # a later cell
    assert _asks_here() == ("typed", "secret")
    wrapper = builtins.input
    undo()  # %unload_ext, inside a cell
    undo()
    assert "raw_input" not in vars(kernel) and "getpass" not in vars(kernel)
    assert builtins.input == kernel.raw_input and getpass.getpass == kernel.getpass
    assert wrapper("? ") == "typed"  # a leftover reference passes through
    kernel.cell_end()
    assert builtins.input is real_input and getpass.getpass is real_getpass
    assert await _asks_in_a_task(worker) == ["from stdin", "pw from tty"]
    assert kernel.asked == ["? "] * 5


async def test_the_extension_guards_input_while_loaded(
        worker: task_worker.AsyncTaskWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    from task_worker import _extension

    monkeypatch.setattr(builtins, "input", lambda prompt="": "from stdin")
    monkeypatch.setattr(getpass, "getpass", lambda prompt="", stream=None: "pw from tty")
    real_input, real_getpass = builtins.input, getpass.getpass
    shell = globalipapp.get_ipython()  # terminal IPython: no kernel swaps input
    _extension.load(shell, widgets=False)
    try:
        assert await _asks_in_a_task(worker) == REFUSED
        assert _asks_here() == ("from stdin", "pw from tty")
    finally:
        _extension.unload(shell)
    assert builtins.input is real_input and getpass.getpass is real_getpass
