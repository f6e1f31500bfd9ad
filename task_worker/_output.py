"""Per-task output routing: what a ``%%task`` body prints or displays lands in its own widget.

Frontends drop iopub output whose cell has finished, and ``with out:`` misroutes
from background code (see the facts file). So the kernel side routes instead:

* ``sys.stdout`` / ``sys.stderr`` are replaced by proxies that look up the
  current task's ``TaskOutput`` in a ContextVar and hand the text to it; any
  other code (no task, or a task without an output area) goes to the original
  stream untouched.
* ``shell.display_pub.publish`` (and ``clear_output``) are wrapped the same way,
  so ``display()`` from a task reaches the task's area.

``input()`` and ``getpass.getpass()`` inside a task raise ``TaskInputError`` at
once (``guard_input``): a task has no cell waiting for an answer.

The ContextVar is set in a copy of the submitting cell's context right before
``add_task_nowait``, which copies that context into the task (and the core copies
it again into a thread body). Code the task starts with ``asyncio.create_task``
or ``asyncio.to_thread`` inherits it; a bare ``threading.Thread`` does not.

A ``TaskOutput`` buffers writes from any thread and applies them to its
``ipywidgets.Output`` on the loop's thread, at most one ``outputs`` change per
``interval``: one comm message per batch, never one per ``print``.

Stream text costs amortised O(characters written): a write appends its text to
a list (O(1) under a lock), a flush joins the new pieces once, and what is kept
is capped at ``MAX_STREAM_CHARS`` per stream item (a flood is cut while it is
still buffered, so a starved loop never meets an unbounded backlog either). A
flush therefore copies at most about ``2 * MAX_STREAM_CHARS`` plus the new text:
about 1 ms on the loop for a full area, sending the widget state included. What was cut is said in the
output area itself: its first line reads ``[... N earlier lines (M characters)
trimmed ...]``; items beyond ``MAX_ITEMS`` are dropped the same way, with a
line that counts them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import functools
import getpass
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO, TypeVar

from ._progress import current_sink

T = TypeVar("T")

_current: contextvars.ContextVar[TaskOutput | None] = contextvars.ContextVar(
    "task_worker_output", default=None)

#: Characters of stream text kept per stream item; older text is cut (the widget
#: state is resent whole on every change, so it must stay bounded).
MAX_STREAM_CHARS = 200_000
#: Output items (streams, displays, errors) kept per output area.
MAX_ITEMS = 500
#: A cut moves to the next line start when one is this close, so the first kept line is whole.
LINE_ALIGN = 1_000


def trimmed_notice(chars: int, lines: int) -> str:
    """The line that replaces ``chars`` characters (``lines`` lines) cut from a stream."""
    what = f"{lines:,} earlier lines ({chars:,} characters)" if lines else f"{chars:,} earlier characters"
    return f"[... {what} trimmed: this output area keeps the last {MAX_STREAM_CHARS:,} characters ...]\n"


def items_notice(count: int) -> str:
    """The line that stands for ``count`` output items dropped from the start."""
    return f"[... {count:,} earlier outputs trimmed: this output area keeps the last {MAX_ITEMS:,} ...]\n"


class CappedText:
    """The last ``MAX_STREAM_CHARS`` characters of a stream, kept in amortised
    O(1) per character written.

    ``append`` only adds a piece to a list; pieces are joined when the text is
    read (``value``) or when they reach twice the cap (then the oldest part is
    cut). ``copied`` counts the characters copied into new strings, the cost
    measure the tests check.
    """

    __slots__ = ("copied", "dropped_chars", "dropped_lines", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.dropped_chars = 0
        self.dropped_lines = 0
        self.copied = 0

    def append(self, text: str) -> None:
        """Add ``text`` at the end (cutting the start once far over the cap)."""
        self.parts.append(text)
        self.size += len(text)
        if self.size > 2 * MAX_STREAM_CHARS:
            self._compact()

    def extend(self, other: CappedText) -> None:
        """Add everything ``other`` holds (and what it already cut) at the end."""
        self.dropped_chars += other.dropped_chars
        self.dropped_lines += other.dropped_lines
        self.copied += other.copied
        self.parts.extend(other.parts)
        self.size += other.size
        if self.size > 2 * MAX_STREAM_CHARS:
            self._compact()

    def value(self) -> str:
        """The kept text: at most ``MAX_STREAM_CHARS`` characters."""
        self._compact()
        return self.parts[0] if self.parts else ""

    def shown(self) -> str:
        """The kept text, after a notice line when something was cut."""
        text = self.value()
        if not self.dropped_chars:
            return text
        shown = trimmed_notice(self.dropped_chars, self.dropped_lines) + text
        self.copied += len(shown)
        return shown

    def _compact(self) -> None:
        parts = self.parts
        if len(parts) <= 1 and self.size <= MAX_STREAM_CHARS:
            return
        excess = self.size - MAX_STREAM_CHARS
        start = 0
        last_cut = "\n"  # the last character cut so far ("\n": we are at a line start)
        while excess > 0 and len(parts[start]) <= excess:  # whole pieces first: no copy
            piece = parts[start]
            self._drop(piece, len(piece))
            excess -= len(piece)
            start += 1
            last_cut = piece[-1:] or last_cut
        rest = parts[start:]
        text = rest[0] if len(rest) == 1 else "".join(rest)
        if len(rest) > 1:
            self.copied += len(text)
        cut = max(excess, 0)
        if cut:
            last_cut = text[cut - 1]
        if last_cut != "\n":  # cut inside a line: start at the next line if it is close
            newline = text.find("\n", cut, cut + LINE_ALIGN)
            if newline != -1 and newline + 1 < len(text):
                cut = newline + 1
        if cut:
            self._drop(text, cut)
            text = text[cut:]
            self.copied += len(text)
        self.parts = [text] if text else []
        self.size = len(text)

    def _drop(self, piece: str, end: int) -> None:
        self.dropped_chars += end
        self.dropped_lines += piece.count("\n", 0, end)


class _StreamItem:
    """The stream item at the end of the output area that writes to ``name`` extend."""

    __slots__ = ("dirty", "item", "name", "text")

    def __init__(self, name: str, text: CappedText) -> None:
        self.name = name
        self.text = text
        #: The dict in ``widget.outputs`` (a placeholder until rendered).
        self.item: dict[str, Any] = {"output_type": "stream", "name": name, "text": ""}
        self.dirty = True

    def render(self) -> dict[str, Any]:
        """A new item with the current text (the widget's trait needs a new value)."""
        self.item = {"output_type": "stream", "name": self.name, "text": self.text.shown()}
        self.dirty = False
        return self.item


def current_output() -> TaskOutput | None:
    """The output area of the task whose code is running, if it has one."""
    out = _current.get()
    return None if out is None or out.closed else out


def run_routed(output: TaskOutput | None, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``func`` in a copy of the current context in which output goes to ``output``.

    Tasks added inside ``func`` (the core copies the context at ``add_task``)
    inherit the routing; the caller's own context is unchanged.
    """
    ctx = contextvars.copy_context()

    def call() -> T:
        _current.set(output)
        return func(*args, **kwargs)

    return ctx.run(call)


class TaskOutput:
    """The output area of one task: an ``ipywidgets.Output`` fed in batches.

    ``write`` / ``display`` / ``error`` / ``clear`` may be called from any thread;
    the widget is only touched on ``loop``'s thread.

    Args:
        widget: The ``ipywidgets.Output`` to fill (only its ``outputs`` trait is used);
            it may be set later, as ``self.widget``, until the loop first flushes.
        loop: The loop whose thread owns the widget.
        interval: Seconds between two widget updates at most.
    """

    def __init__(self, widget: Any, loop: asyncio.AbstractEventLoop, *, interval: float = 0.1) -> None:
        self.widget = widget
        self.loop = loop
        self.interval = interval
        self.closed = False
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Any]] = []
        self._scheduled = False
        self._handle: asyncio.TimerHandle | None = None
        # display_id of each item of widget.outputs (parallel list), for update_display.
        self._ids: list[str | None] = []
        # clear_output(wait=True) seen: clear when the next output arrives (maybe in a later batch).
        self._clear_wait = False
        # The stream item at the end of widget.outputs that new stream text extends.
        self._tail: _StreamItem | None = None
        # Items dropped from the start (MAX_ITEMS), and the notice item standing for them.
        self._items_dropped = 0
        self._notice: dict[str, Any] | None = None
        # Characters copied by stream items already replaced (see ``copied_chars``).
        self._copied_done = 0

    @property
    def copied_chars(self) -> int:
        """Characters of stream text copied into new strings so far, by writes and
        flushes: a cost measure, a few per character written plus at most about
        ``2 * MAX_STREAM_CHARS`` per flush."""
        with self._lock:
            pending = sum(v[1].copied for k, v in self._pending if k == "stream")
        tail = self._tail.text.copied if self._tail is not None else 0
        return self._copied_done + tail + pending

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._ids)} items"
        return f"<TaskOutput {state}>"

    # ------------------------------------------------------------ any thread
    def write(self, name: str, text: str) -> None:
        """Append ``text`` to the ``name`` stream (``"stdout"`` or ``"stderr"``).

        O(1) amortised: consecutive writes to one stream share one buffer, which
        is joined on the loop at the next flush (and cut to the cap meanwhile).
        """
        if not text or self.closed:
            return
        with self._lock:
            pending = self._pending
            if pending and pending[-1][0] == "stream" and pending[-1][1][0] == name:
                pending[-1][1][1].append(text)
                return  # already scheduled: the first write of the batch did it
            buffer = CappedText()
            buffer.append(text)
            pending.append(("stream", (name, buffer)))
            if self._scheduled:
                return
            self._scheduled = True
        self._wake()

    def display(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None, *,
                transient: Mapping[str, Any] | None = None, update: bool = False) -> None:
        """Append display data (a mime bundle), or replace the item with the same
        ``display_id`` when ``update`` is true."""
        display_id = (transient or {}).get("display_id")
        item = {"output_type": "display_data", "data": dict(data), "metadata": dict(metadata or {})}
        self._push("update" if update and display_id else "display", (item, display_id))

    def error(self, ename: str, evalue: str, traceback: list[str]) -> None:
        """Append an error (a formatted traceback, one string per line, ANSI colours allowed)."""
        item = {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": list(traceback)}
        self._push("display", (item, None))

    def clear(self, wait: bool = False) -> None:
        """Clear the area (with ``wait``, only when the next output arrives)."""
        self._push("clear", wait)

    def _push(self, kind: str, value: Any) -> None:
        if self.closed:
            return
        with self._lock:
            self._pending.append((kind, value))
            if self._scheduled:
                return
            self._scheduled = True
        self._wake()

    def _wake(self) -> None:
        try:
            if _on_loop_thread(self.loop):
                self._schedule()
            else:
                self.loop.call_soon_threadsafe(self._schedule)
        except RuntimeError:  # the loop is closed: nobody will ever show it
            self.closed = True

    # ------------------------------------------------------------ loop thread
    def _schedule(self) -> None:
        if not self.closed and self._handle is None:
            self._handle = self.loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Apply everything buffered to the widget now (on the loop's thread)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        with self._lock:
            pending, self._pending = self._pending, []
            self._scheduled = False
        if not pending or self.closed:
            return
        outputs = list(self.widget.outputs)
        ids = self._ids
        if len(ids) != len(outputs):  # someone else changed the widget: forget what we knew
            ids = [None] * len(outputs)
            self._retire_tail()
            self._notice = None
        if self._notice is not None and outputs and outputs[0] is self._notice:
            outputs, ids = outputs[1:], ids[1:]  # put back, recounted, at the end
        clear_wait = self._clear_wait
        for kind, value in pending:
            if kind == "clear":
                if value:
                    clear_wait = True
                else:
                    outputs, ids = self._cleared()
                continue
            if clear_wait:
                outputs, ids = self._cleared()
                clear_wait = False
            if kind == "stream":
                self._write_stream(outputs, ids, *value)
                continue
            self._settle(outputs)
            if kind == "update":
                item, display_id = value
                for i, known in enumerate(ids):
                    if known == display_id:
                        outputs[i] = item
            else:
                item, display_id = value
                outputs.append(item)
                ids.append(display_id)
        self._settle(outputs, keep=True)
        if len(outputs) > MAX_ITEMS:
            over = len(outputs) - MAX_ITEMS
            self._items_dropped += over
            outputs, ids = outputs[over:], ids[over:]
        self._notice = None
        if self._items_dropped:
            self._notice = {"output_type": "stream", "name": "stdout",
                            "text": items_notice(self._items_dropped)}
            outputs.insert(0, self._notice)
            ids.insert(0, None)
        self._ids = ids
        self._clear_wait = clear_wait
        self.widget.outputs = tuple(outputs)

    def _write_stream(self, outputs: list[Any], ids: list[str | None], name: str,
                      text: CappedText) -> None:
        tail = self._tail
        if tail is not None and tail.name == name and outputs and outputs[-1] is tail.item:
            tail.text.extend(text)  # the common case: more text for the last item
            tail.dirty = True
            return
        self._settle(outputs)
        last = outputs[-1] if outputs else None
        if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
            # A stream item we did not make: continue its text.
            head = CappedText()
            head.append(str(last.get("text", "")))
            head.extend(text)
            text = head
        else:
            outputs.append(None)
            ids.append(None)
        tail = self._tail = _StreamItem(name, text)
        outputs[-1] = tail.item  # a placeholder, rendered by ``_settle``

    def _settle(self, outputs: list[Any], *, keep: bool = False) -> None:
        """Render the tracked stream item if new text reached it, and stop tracking
        it unless ``keep`` (more output comes after it)."""
        tail = self._tail
        if tail is None:
            return
        if outputs and outputs[-1] is tail.item:
            if tail.dirty:
                outputs[-1] = tail.render()
            if keep:
                return
        self._retire_tail()

    def _retire_tail(self) -> None:
        if self._tail is not None:
            self._copied_done += self._tail.text.copied
            self._tail = None

    def _cleared(self) -> tuple[list[Any], list[str | None]]:
        self._retire_tail()
        self._items_dropped = 0
        return [], []

    def close(self) -> None:
        """Stop accepting output; what is still buffered is dropped."""
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        with self._lock:
            self._pending.clear()


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        # Not running (terminal IPython between cells): the loop's thread is the main one.
        return threading.current_thread() is threading.main_thread()


class StreamProxy:
    """Stands in for ``sys.stdout`` / ``sys.stderr``: text written by a task with an
    output area goes there; everything else goes to the original stream."""

    def __init__(self, original: TextIO, name: str) -> None:
        self._original = original
        self._name = name
        #: False once uninstalled but still referenced (someone wrapped us): pure pass-through.
        self.active = True

    @property
    def original(self) -> TextIO:
        """The stream this proxy forwards to."""
        return self._original

    def _target(self) -> TaskOutput | None:
        return current_output() if self.active else None

    def write(self, text: str) -> int:
        """Write to the current task's output area, or to the original stream."""
        out = self._target()
        if out is None:
            return self._original.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        out.write(self._name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        """Write each of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flush the original stream (a task's area is flushed in batches on the loop)."""
        if self._target() is None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        # Everything else (encoding, isatty, fileno, set_parent, ...) is the original's.
        return getattr(self._original, name)

    def __repr__(self) -> str:
        return f"<task_worker StreamProxy {self._name} -> {self._original!r}>"


class OutputCapture:
    """Installs the stream proxies and the ``display_pub`` wrappers on a shell,
    and removes them exactly (``uninstall``)."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.installed = False
        self._stdout: StreamProxy | None = None
        self._stderr: StreamProxy | None = None
        self._pub: Any = None
        self._saved_attrs: dict[str, Any] = {}

    def install(self) -> None:
        """Start routing. Idempotent."""
        if self.installed:
            return
        self._stdout = StreamProxy(sys.stdout, "stdout")
        self._stderr = StreamProxy(sys.stderr, "stderr")
        pub = self._pub = self.shell.display_pub
        missing = object()
        # Remember instance attributes (not class methods) so uninstall restores exactly.
        self._saved_attrs = {name: vars(pub).get(name, missing) for name in ("publish", "clear_output")}
        self._missing = missing
        pub.publish = _wrap_publish(pub.publish)
        pub.clear_output = _wrap_clear_output(pub.clear_output)
        sys.stdout = self._stdout
        sys.stderr = self._stderr
        self.installed = True

    def uninstall(self) -> None:
        """Stop routing and put back what ``install`` replaced. Idempotent.

        If someone replaced ``sys.stdout`` after us (wrapping our proxy), their
        stream is left in place and our proxy becomes a pure pass-through.
        """
        if not self.installed:
            return
        for proxy, attr in ((self._stdout, "stdout"), (self._stderr, "stderr")):
            assert proxy is not None
            proxy.active = False
            if getattr(sys, attr) is proxy:
                setattr(sys, attr, proxy.original)
        pub = self._pub
        for name, value in self._saved_attrs.items():
            if value is self._missing:
                vars(pub).pop(name, None)
            else:
                setattr(pub, name, value)
        self._saved_attrs = {}
        self.installed = False


def _wrap_publish(original: Callable[..., Any]) -> Callable[..., Any]:
    def publish(data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None,
                *args: Any, **kwargs: Any) -> Any:
        out = current_output()
        if out is None:
            return original(data, metadata, *args, **kwargs)
        out.display(data, metadata, transient=kwargs.get("transient"), update=bool(kwargs.get("update")))
        return None

    publish.__wrapped__ = original  # type: ignore[attr-defined]
    return publish


def _wrap_clear_output(original: Callable[..., Any]) -> Callable[..., Any]:
    def clear_output(wait: bool = False) -> Any:
        out = current_output()
        if out is None:
            return original(wait)
        out.clear(wait)
        return None

    clear_output.__wrapped__ = original  # type: ignore[attr-defined]
    return clear_output


INPUT_REFUSED = (
    "{what} cannot read from the keyboard inside a task: a task runs in the background, with no "
    "cell waiting for an answer. Ask for the value in a normal cell before starting the task and "
    "use it in the task, or let the task read it from a widget (e.g. ipywidgets.Text)."
)


class TaskInputError(EOFError):
    """``input()`` or ``getpass.getpass()`` was called inside a task.

    An ``EOFError`` (what ``input()`` raises when there is no input), so code that
    treats end of input as "no answer" keeps working.
    """


def guard_input(shell: Any) -> Callable[[], None]:
    """Make ``input()`` and ``getpass.getpass()`` raise ``TaskInputError`` inside
    tasks (unchanged elsewhere); returns the function that undoes it exactly.

    ipykernel sets ``builtins.input`` / ``getpass.getpass`` to the kernel's
    ``raw_input`` / ``getpass`` for each cell and afterwards puts back what it
    saved (``_sys_raw_input`` / ``_save_getpass``), so all of these are wrapped:
    a task is refused during a cell and between cells alike.
    """
    active = True
    targets: list[tuple[Any, str, str]] = [(builtins, "input", "input()"),
                                           (getpass, "getpass", "getpass()")]
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        targets += [(kernel, "raw_input", "input()"), (kernel, "getpass", "getpass()"),
                    (kernel, "_sys_raw_input", "input()"), (kernel, "_save_getpass", "getpass()")]

    def wrap(func: Callable[..., Any], what: str) -> Callable[..., Any]:
        @functools.wraps(func)
        def refuse_in_task(*args: Any, **kwargs: Any) -> Any:
            if active and current_sink.get() is not None:
                raise TaskInputError(INPUT_REFUSED.format(what=what))
            return func(*args, **kwargs)

        refuse_in_task.__task_worker_guard__ = undo  # type: ignore[attr-defined]
        return refuse_in_task

    def ours(func: Any) -> bool:
        return getattr(func, "__task_worker_guard__", None) is undo

    def undo() -> None:
        nonlocal active
        if not active:
            return
        active = False  # wrappers still referenced somewhere pass through from now on
        for obj, attr, _ in targets:
            value: Any = getattr(obj, attr, None)
            if not ours(value):
                continue  # replaced after us: leave it
            while ours(value):
                value = value.__wrapped__
            if obj is kernel and attr in ("raw_input", "getpass"):
                vars(obj).pop(attr, None)  # the class's method again
            else:
                setattr(obj, attr, value)

    for obj, attr, what in targets:
        value = getattr(obj, attr, None)
        if callable(value) and not ours(value):
            setattr(obj, attr, wrap(value, what))
    return undo


__all__ = ["INPUT_REFUSED", "MAX_ITEMS", "MAX_STREAM_CHARS", "CappedText", "OutputCapture", "StreamProxy",
           "TaskInputError", "TaskOutput", "current_output", "guard_input", "items_notice", "run_routed",
           "trimmed_notice"]
