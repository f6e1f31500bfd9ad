"""Per-task output routing: what a ``%%task`` body prints or displays lands in its own widget.

Frontends drop iopub output whose cell has finished, and ``with out:`` misroutes
from background code (see the facts file). So the kernel side routes instead:

* ``sys.stdout`` / ``sys.stderr`` are replaced by proxies that look up the
  current task's ``TaskOutput`` in a ContextVar and hand the text to it; any
  other code (no task, or a task without an output area) goes to the original
  stream untouched.
* ``shell.display_pub.publish`` (and ``clear_output``) are wrapped the same way,
  so ``display()`` from a task reaches the task's area.

The ContextVar is set in a copy of the submitting cell's context right before
``add_task_nowait``, which copies that context into the task (and the core copies
it again into a thread body). Code the task starts with ``asyncio.create_task``
or ``asyncio.to_thread`` inherits it; a bare ``threading.Thread`` does not.

A ``TaskOutput`` buffers writes from any thread and applies them to its
``ipywidgets.Output`` on the loop's thread, at most one ``outputs`` change per
``interval``: one comm message per batch, never one per ``print``.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

_current: contextvars.ContextVar[TaskOutput | None] = contextvars.ContextVar(
    "task_worker_output", default=None)

#: Characters of stream text kept per output area; older text is cut (the widget
#: state is resent whole on every change, so it must stay bounded).
MAX_STREAM_CHARS = 200_000
#: Output items (streams, displays, errors) kept per output area.
MAX_ITEMS = 500
_TRIMMED = "[... earlier output trimmed ...]\n"


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
        widget: The ``ipywidgets.Output`` to fill (only its ``outputs`` trait is used).
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

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._ids)} items"
        return f"<TaskOutput {state}>"

    # ------------------------------------------------------------ any thread
    def write(self, name: str, text: str) -> None:
        """Append ``text`` to the ``name`` stream (``"stdout"`` or ``"stderr"``)."""
        if text:
            self._push("stream", (name, text))

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
        if len(ids) != len(outputs):  # someone else changed the widget: forget display ids
            ids = [None] * len(outputs)
        clear_wait = self._clear_wait
        for kind, value in pending:
            if kind == "clear":
                if value:
                    clear_wait = True
                else:
                    outputs, ids = [], []
                continue
            if clear_wait:
                outputs, ids, clear_wait = [], [], False
            if kind == "stream":
                name, text = value
                last = outputs[-1] if outputs else None
                if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
                    outputs[-1] = {**last, "text": _cap(last["text"] + text)}
                else:
                    outputs.append({"output_type": "stream", "name": name, "text": _cap(text)})
                    ids.append(None)
            elif kind == "update":
                item, display_id = value
                for i, known in enumerate(ids):
                    if known == display_id:
                        outputs[i] = item
            else:
                item, display_id = value
                outputs.append(item)
                ids.append(display_id)
        if len(outputs) > MAX_ITEMS:
            outputs, ids = outputs[-MAX_ITEMS:], ids[-MAX_ITEMS:]
        self._ids = ids
        self._clear_wait = clear_wait
        self.widget.outputs = tuple(outputs)

    def close(self) -> None:
        """Stop accepting output; what is still buffered is dropped."""
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        with self._lock:
            self._pending.clear()


def _cap(text: str) -> str:
    if len(text) <= MAX_STREAM_CHARS:
        return text
    return _TRIMMED + text[len(text) - MAX_STREAM_CHARS:]


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


__all__ = ["MAX_ITEMS", "MAX_STREAM_CHARS", "OutputCapture", "StreamProxy", "TaskOutput",
           "current_output", "run_routed"]
