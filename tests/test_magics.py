"""%%task, %task and %tasks through a real IPython shell (IPython.testing.globalipapp).

This shell is a terminal shell: its asyncio loop runs only while a cell awaits
(or while ``finish`` below drives it). The extension is loaded inside each test
body, not in a fixture: pytest re-installs its own sys.stdout between test
phases, which would bypass the stream proxies.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from IPython.core.async_helpers import get_asyncio_loop
from IPython.core.error import UsageError
from IPython.testing import globalipapp

import task_worker
from task_worker import _extension, _session
from task_worker._magics import TaskMagics
from task_worker._table import text_table


@pytest.fixture
def ip() -> Iterator[Any]:
    shell = globalipapp.get_ipython()  # rebound to the shell after the first call
    shell.user_ns["task_worker"] = task_worker
    shell.user_ns["asyncio"] = asyncio
    shell.user_ns["threading"] = threading
    yield shell
    _extension.unload(shell)  # in case a test failed half-way


@contextmanager
def extension(ip: Any, *, widgets: bool = True) -> Iterator[TaskMagics]:
    """Load the extension (with widget views and output routing unless told otherwise)."""
    _extension.load(ip, widgets=widgets)
    try:
        yield ip.magics_manager.registry["TaskMagics"]
    finally:
        _extension.unload(ip)


def finish(name: str) -> task_worker.TaskInfo:
    """Run IPython's loop until the task ``name`` is done; return its final info."""
    worker = task_worker.get_worker()
    task_id = _session.resolve_task_id(name, worker)

    async def done() -> task_worker.TaskInfo:
        try:
            await worker.wait(task_id)
        except (Exception, asyncio.CancelledError):
            pass
        info = worker.get_task_info(task_id)
        assert info is not None
        return info

    return get_asyncio_loop().run_until_complete(done())


def run_until(event: threading.Event) -> None:
    """Run IPython's loop until ``event`` (set by a task body) is set."""
    assert get_asyncio_loop().run_until_complete(asyncio.to_thread(event.wait, 10))


def outputs(magics: TaskMagics, name: str) -> tuple[dict[str, Any], ...]:
    worker = task_worker.get_worker()
    view = magics.views.get(worker, _session.resolve_task_id(name, worker))
    assert view is not None
    return tuple(view.output.outputs)


def text_of(outs: tuple[dict[str, Any], ...]) -> str:
    return "".join(o.get("text", "") for o in outs if o["output_type"] == "stream")


# ------------------------------------------------------------------- running
def test_cell_returns_before_body_runs_and_result_is_shown(ip: Any) -> None:
    gate = ip.user_ns["gate"] = threading.Event()
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n answer", "gate.wait()\nx = 41\nx + 1\n")
        info = task_worker.get_worker().get_task_info("answer")
        assert info is not None and not info.done  # the cell returned; the body waits
        gate.set()
        info = finish("answer")
        assert info.status == "completed" and info.result == 42
        assert ip.user_ns["x"] == 41
        shown = [o for o in outputs(m, "answer") if o["output_type"] == "display_data"]
        assert [o["data"]["text/plain"] for o in shown] == ["42"]


def test_default_mode_thread_without_await_and_loop_with_await(ip: Any) -> None:
    with extension(ip):
        ip.run_cell_magic("task", "-n in_thread", "where_sync = threading.current_thread().name")
        ip.run_cell_magic("task", "-n on_loop",
                          "await asyncio.sleep(0)\nwhere_async = threading.current_thread().name")
        assert finish("in_thread").metadata["mode"] == "thread"
        assert finish("on_loop").metadata["mode"] == "async"
    assert ip.user_ns["where_sync"].startswith("task_worker")
    assert ip.user_ns["where_async"] == threading.main_thread().name


def test_thread_and_async_options_force_the_mode(ip: Any) -> None:
    with extension(ip):
        ip.run_cell_magic("task", "-n forced_async --async", "where_a = threading.current_thread().name")
        ip.run_cell_magic("task", "-n forced_thread --thread",
                          "await asyncio.sleep(0)\nwhere_t = threading.current_thread().name\n'ok'")
        assert finish("forced_async").metadata["mode"] == "async"
        info = finish("forced_thread")
        assert info.metadata["mode"] == "thread" and info.result == "ok"
    assert ip.user_ns["where_a"] == threading.main_thread().name
    assert ip.user_ns["where_t"].startswith("task_worker")


def test_name_is_the_id_when_free_else_a_generated_id_with_that_name(ip: Any) -> None:
    with extension(ip):
        ip.run_cell_magic("task", "-n twice", "1")
        ip.run_cell_magic("task", "-n twice", "2")
        infos = task_worker.get_worker().get_all_tasks()
        assert [i.name for i in infos] == ["twice", "twice"]
        assert infos[1].id == "twice" and infos[0].id != "twice"
        assert finish(infos[0].id).result == 2


def test_priority_orders_the_queue(ip: Any) -> None:
    ip.user_ns["order"] = []
    with extension(ip):
        ip.run_line_magic("task", "config max_workers=1")
        for name, prio in (("low", 5), ("high", -1), ("mid", 0)):
            ip.run_cell_magic("task", f"-n {name} -p {prio}", f"order.append({name!r})")
        get_asyncio_loop().run_until_complete(task_worker.get_worker().join())
    assert ip.user_ns["order"] == ["high", "mid", "low"]


def test_timeout_option_fails_the_task_and_shows_timeout_error(ip: Any) -> None:
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n slowpoke -t 0.2", "await asyncio.sleep(30)")
        info = finish("slowpoke")
        assert info.status == "failed" and isinstance(info.exception, TimeoutError)
        (err,) = [o for o in outputs(m, "slowpoke") if o["output_type"] == "error"]
        assert err["ename"] == "TimeoutError"


def test_out_option_stores_result_only_on_success(ip: Any) -> None:
    ip.user_ns.pop("stored", None)
    ip.user_ns.pop("not_stored", None)
    with extension(ip):
        ip.run_cell_magic("task", "-n ok -o stored", "'value'")
        ip.run_cell_magic("task", "-n bad -o not_stored", "1/0")
        finish("ok")
        finish("bad")
    assert ip.user_ns["stored"] == "value"
    assert "not_stored" not in ip.user_ns


def test_trailing_semicolon_keeps_result_but_does_not_show_it(ip: Any) -> None:
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n quiet", "5;")
        assert finish("quiet").result == 5
        assert outputs(m, "quiet") == ()


def test_report_progress_in_the_body_moves_the_task(ip: Any) -> None:
    reached = ip.user_ns["reached"] = threading.Event()
    gate = ip.user_ns["gate"] = threading.Event()
    with extension(ip):
        ip.run_cell_magic("task", "-n halfway",
                          "task_worker.report_progress(0.5)\nreached.set()\ngate.wait()")
        run_until(reached)
        info = task_worker.get_worker().get_task_info("halfway")
        assert info is not None and info.progress == 0.5 and info.status == "running"
        gate.set()
        assert finish("halfway").progress == 1.0


# -------------------------------------------------------------------- errors
def test_syntax_error_is_raised_at_once_and_no_task_is_created(ip: Any) -> None:
    with extension(ip):
        with pytest.raises(SyntaxError):
            ip.run_cell_magic("task", "-n broken", "x = (\n")
        assert len(task_worker.get_worker()) == 0


@pytest.mark.parametrize("line, cell", [
    ("-p high", "1"),
    ("--bogus", "1"),
    ("-t -1", "1"),
    ("-t nan", "1"),
    ("--thread --async", "1"),
    ("-o 1x", "1"),
    ("-o class", "1"),
    ("", "   \n"),
])
def test_bad_option_raises_usage_error_and_no_task_is_created(ip: Any, line: str, cell: str) -> None:
    with extension(ip):
        with pytest.raises(UsageError):
            ip.run_cell_magic("task", line, cell)
        assert len(task_worker.get_worker()) == 0


@pytest.mark.parametrize("line, worker_says", [
    ("-t -1", "timeout must be a positive, finite number of seconds, got -1.0"),
    ("-t nan", "timeout must be a positive, finite number of seconds, got nan"),
])
@pytest.mark.parametrize("widgets", [True, False])
def test_values_are_checked_by_the_worker_and_its_message_is_the_usage_error(
        ip: Any, monkeypatch: pytest.MonkeyPatch, line: str, worker_says: str, widgets: bool) -> None:
    import ipywidgets

    made: list[Any] = []

    class CountedOutput(ipywidgets.Output):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

    monkeypatch.setattr(ipywidgets, "Output", CountedOutput)
    with extension(ip, widgets=widgets) as m:
        with pytest.raises(UsageError) as caught:
            ip.run_cell_magic("task", line, "1")
        assert str(caught.value) == f"%%task: {worker_says}"
        assert len(task_worker.get_worker()) == 0 and len(m.views) == 0
        assert made == []  # not even a widget made and closed again
        ip.run_cell_magic("task", "-n accepted", "1")  # the counter counts
        assert len(made) == widgets


@pytest.mark.parametrize("line, worker_says", [
    ("list -l -1", "%task list: limit must be a non-negative int or None, got -1"),
    ("list -s nonsense", "%task list: unknown task status 'nonsense'"),
    ("config timeout=-1", "%task config: task_timeout must be a positive, finite number of seconds"),
    ("config max_workers=0", "%task config: max_workers must be at least 1, got 0"),
])
def test_task_commands_pass_values_to_the_worker_and_show_its_refusal(
        ip: Any, line: str, worker_says: str) -> None:
    with extension(ip):
        with pytest.raises(UsageError) as caught:
            ip.run_line_magic("task", line)
        assert str(caught.value).startswith(worker_says)


def test_config_changes_nothing_when_the_worker_refuses_a_later_setting(ip: Any) -> None:
    with extension(ip):
        worker = task_worker.get_worker()
        before = (worker.max_workers, worker.task_timeout)
        for bad in ("timeout=5 max_workers=0", "max_workers=0 timeout=5", "timeout=5 max_workers=x"):
            with pytest.raises(UsageError):
                ip.run_line_magic("task", f"config {bad}")
            assert (worker.max_workers, worker.task_timeout) == before


def test_options_are_declared_on_the_magic_and_each_command_on_its_method(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # IPython's %%script way: the parser hangs on the magic, whose help is its docstring.
    assert "--priority" in TaskMagics.task.parser.format_help()
    assert TaskMagics.task.__doc__ == TaskMagics.task.parser.format_help()
    with extension(ip):
        for command, option in (("list", "--status"), ("cancel", "--all"), ("result", "NAME_OR_ID"),
                                ("config", "KEY=VALUE")):
            ip.run_line_magic("task", f"{command} -h")
            out = capsys.readouterr().out
            assert f"%task {command}" in out and option in out
        ip.run_line_magic("task", "-h")
        overview = capsys.readouterr().out
        assert all(f"%task {c}" in overview for c in ("list", "cancel", "result", "config"))
        assert len(task_worker.get_worker()) == 0


def test_cancel_all_cancels_pending_tasks_before_running_ones(ip: Any) -> None:
    from task_worker._table import cancel_all

    async def scenario() -> tuple[list[str], list[str]]:
        worker = task_worker.AsyncTaskWorker(max_workers=1)
        started = asyncio.Event()

        async def body() -> None:
            started.set()
            await asyncio.sleep(60)

        async with worker:
            # The later task runs first (lower priority value): newest-first order
            # would cancel the running one before the pending one.
            waiting = worker.add_task_nowait(body, priority=10, task_id="waiting")
            running = worker.add_task_nowait(body, priority=0, task_id="running")
            await started.wait()
            order = cancel_all(worker)
            for task_id in (waiting, running):
                with pytest.raises(asyncio.CancelledError):
                    await worker.wait(task_id)
            return order, [running, waiting]

    order, (running, waiting) = get_asyncio_loop().run_until_complete(scenario())
    assert order == [waiting, running]


def test_failure_shows_traceback_naming_the_cell_line(ip: Any) -> None:
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n boom", "a = 1\nb = 0\na / b\n")
        info = finish("boom")
        assert info.status == "failed" and isinstance(info.exception, ZeroDivisionError)
        (err,) = [o for o in outputs(m, "boom") if o["output_type"] == "error"]
        text = "\n".join(err["traceback"])
        assert "Cell In[" in text and "line 3" in text and "a / b" in text
        assert "task_worker" not in text  # the worker's and the runner's frames are hidden
        assert "a / b" in (info.traceback or "")


# ----------------------------------------------------------- output routing
def test_print_stderr_and_display_from_a_thread_body_go_to_the_task_area(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n chatty", (
            "import sys\n"
            "from IPython.display import display\n"
            "print('out from thread')\n"
            "print('err from thread', file=sys.stderr)\n"
            "display({'text/html': '<b>shown</b>', 'text/plain': 'shown'}, raw=True)\n"))
        finish("chatty")
        outs = outputs(m, "chatty")
    assert {"output_type": "stream", "name": "stdout", "text": "out from thread\n"} in outs
    assert {"output_type": "stream", "name": "stderr", "text": "err from thread\n"} in outs
    assert any(o["output_type"] == "display_data" and o["data"].get("text/html") == "<b>shown</b>"
               for o in outs)
    captured = capsys.readouterr()
    assert "from thread" not in captured.out + captured.err
    assert "shown" not in captured.out


def test_late_output_after_the_cell_finished_goes_to_the_task_area_only(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with extension(ip) as m:
        ip.run_cell("ev = asyncio.Event()\nlate_started = asyncio.Event()")
        ip.run_cell_magic("task", "-n late",
                          "print('early')\nlate_started.set()\nawait ev.wait()\nprint('late output')")
        ip.run_cell("await late_started.wait()")  # the task started and waits
        ip.run_cell("print('another cell')")
        ip.run_cell("ev.set()\nawait task_worker.wait('late')")
        assert text_of(outputs(m, "late")) == "early\nlate output\n"
    out = capsys.readouterr().out
    assert "another cell" in out
    assert "late output" not in out and "early" not in out


# --------------------------------------------------------------- %task ...
def test_task_cancel_by_name_stops_a_running_thread_body(ip: Any) -> None:
    started = ip.user_ns["started"] = threading.Event()
    with extension(ip):
        ip.run_cell_magic("task", "-n spinner",
                          "import time\nstarted.set()\nwhile True:\n    time.sleep(0.01)")
        run_until(started)
        ip.run_line_magic("task", "cancel spinner")
        assert finish("spinner").status == "cancelled"


def test_task_cancel_all_and_unknown_names(ip: Any) -> None:
    with extension(ip):
        for name in ("p1", "p2"):
            ip.run_cell_magic("task", f"-n {name}", "1")
        with pytest.raises(UsageError):
            ip.run_line_magic("task", "cancel p1 nosuch")  # nothing is cancelled
        worker = task_worker.get_worker()
        assert all(i.status == "pending" for i in worker.get_all_tasks())
        with pytest.raises(UsageError):
            ip.run_line_magic("task", "cancel")
        ip.run_line_magic("task", "cancel --all")
        assert all(i.status == "cancelled" for i in worker.get_all_tasks())


def test_task_list_prints_a_table(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with extension(ip):
        ip.run_cell_magic("task", "-n listed", "1")
        finish("listed")
        ip.run_line_magic("task", "list")
        out = capsys.readouterr().out
        assert "listed" in out and "completed" in out and "STATUS" in out
        ip.run_line_magic("task", "list -s pending")
        assert "no tasks" in capsys.readouterr().out
        # The dashboard's text table, word for word (one table for every text view).
        ip.run_cell_magic("task", "-n listed2", "2")
        finish("listed2")
        worker = task_worker.get_worker()
        capsys.readouterr()  # the cell's own view
        ip.run_line_magic("task", "list")
        assert capsys.readouterr().out == text_table(worker.get_all_tasks()) + "\n"
        # What --limit leaves out is counted, among the tasks the status filter selects.
        ip.run_line_magic("task", "list --limit 1")
        out = capsys.readouterr().out
        assert out.splitlines()[0].split() == ["ID", "NAME", "STATUS", "PRIO", "PROGRESS", "ELAPSED",
                                               "ERROR"]
        assert out.endswith("\n... 1 more\n"), out
        ip.run_line_magic("task", "list -s completed --limit 2")
        assert "more" not in capsys.readouterr().out
        with pytest.raises(UsageError):
            ip.run_line_magic("task", "list -s nonsense")


def test_task_result_returns_value_or_shows_traceback(
        ip: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[Any] = []
    monkeypatch.setattr(ip, "showtraceback", lambda exc_tuple=None, **kw: shown.append(exc_tuple))
    with extension(ip):
        ip.run_cell_magic("task", "-n good", "'fine'")
        ip.run_cell_magic("task", "-n broken", "x = 1\n1 / 0")
        finish("good")
        finish("broken")
        assert ip.run_line_magic("task", "result good") == "fine"
        assert ip.run_line_magic("task", "result broken") is None
        ((etype, exc, tb),) = shown
        assert etype is ZeroDivisionError and isinstance(exc, ZeroDivisionError)
        assert tb.tb_frame.f_code.co_filename.startswith(("<ipython-input", "/"))
        assert tb.tb_lineno == 2  # the cell's own frame comes first
        ip.run_cell_magic("task", "-n waiting", "1")
        ip.run_line_magic("task", "result waiting")
        assert "pending" in capsys.readouterr().out
        with pytest.raises(UsageError):
            ip.run_line_magic("task", "result nosuch")


def test_task_config_sets_worker_options_or_changes_nothing(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with extension(ip):
        worker = task_worker.get_worker()
        ip.run_line_magic("task", "config max_workers=3 timeout=2.5")
        assert (worker.max_workers, worker.task_timeout) == (3, 2.5)
        for bad in ("max_workers=5 timeout=-1", "max_workers=0", "speed=9", "max_workers", "timeout=x"):
            with pytest.raises(UsageError):
                ip.run_line_magic("task", f"config {bad}")
        assert (worker.max_workers, worker.task_timeout) == (3, 2.5)
        ip.run_line_magic("task", "config timeout=none")
        assert worker.task_timeout is None
        assert "max_workers=3 timeout=none" in capsys.readouterr().out


def test_help_is_printed_and_creates_no_task(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with extension(ip):
        ip.run_line_magic("task", "-h")
        assert "cancel" in capsys.readouterr().out
        ip.run_line_magic("task", "cancel -h")
        assert "--all" in capsys.readouterr().out
        ip.run_cell_magic("task", "-h", "print('never')")
        out = capsys.readouterr().out
        assert "--priority" in out and "--timeout" in out and "%%task" in out
        assert len(task_worker.get_worker()) == 0
        with pytest.raises(UsageError):
            ip.run_line_magic("task", "frobnicate")


def test_tasks_shows_the_dashboard_or_a_text_table(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with extension(ip) as m:
        # In a cell that awaits, as the loop runs during kernel cells.
        ip.run_cell("await asyncio.sleep(0)\n%tasks").raise_error()
        assert len(m.dashboards) == 1
        assert type(m.dashboards[0]).__name__ == "TaskDashboard"
        dashboard = m.dashboards[0]
    assert dashboard.closed  # unload closed it
    with extension(ip, widgets=False):
        ip.run_cell_magic("task", "-n plain", "1")
        capsys.readouterr()
        ip.run_line_magic("tasks", "")
        assert "plain" in capsys.readouterr().out


# ------------------------------------------------------- load, unload, env
def test_unload_restores_streams_display_pub_magics_and_events(ip: Any) -> None:
    stdout, stderr = sys.stdout, sys.stderr
    pub_attrs = dict(vars(ip.display_pub))
    callbacks = {k: list(v) for k, v in ip.events.callbacks.items()}
    line_magics = set(ip.magics_manager.magics["line"])
    cell_magics = set(ip.magics_manager.magics["cell"])
    registry = set(ip.magics_manager.registry)
    with extension(ip) as m:
        assert sys.stdout is not stdout and "publish" in vars(ip.display_pub)
        ip.run_cell_magic("task", "-n viewed", "1")
        worker = task_worker.get_worker()
        view = m.views.get(worker, "viewed")
        assert view is not None
    assert sys.stdout is stdout and sys.stderr is stderr
    assert dict(vars(ip.display_pub)) == pub_attrs
    assert {k: list(v) for k, v in ip.events.callbacks.items()} == callbacks
    assert set(ip.magics_manager.magics["line"]) == line_magics
    assert set(ip.magics_manager.magics["cell"]) == cell_magics
    assert set(ip.magics_manager.registry) == registry
    assert view.closed and view.output.comm is None and view.dashboard.closed
    assert not worker.running and _session.peek_worker() is None


def test_reload_ext_gives_a_fresh_working_extension(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("load_ext", "task_worker")
    try:
        first = task_worker.get_worker()
        ip.run_line_magic("reload_ext", "task_worker")
        assert not first.running
        ip.run_cell_magic("task", "-n after_reload", "'again'")
        assert finish("after_reload").result == "again"
        assert "after_reload" in capsys.readouterr().out  # terminal mode: a line, no widget
    finally:
        ip.run_line_magic("unload_ext", "task_worker")
    assert "task" not in ip.magics_manager.magics["cell"]


def test_terminal_without_gui_asyncio_explains_once(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with extension(ip, widgets=False):
        ip.run_cell_magic("task", "-n t1", "1")
        ip.run_cell_magic("task", "-n t2", "1")
    assert capsys.readouterr().err.count("%gui asyncio") == 1


def test_terminal_with_gui_asyncio_says_nothing(
        ip: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ip, "active_eventloop", "asyncio", raising=False)
    with extension(ip, widgets=False):
        ip.run_cell_magic("task", "-n t1", "1")
    assert "%gui asyncio" not in capsys.readouterr().err


def test_nest_asyncio_is_detected_and_warned_about_once(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_asyncio_loop(), "_nest_patched", True, raising=False)
    with pytest.warns(_extension.NestAsyncioWarning, match="nest_asyncio"):
        _extension.load(ip, widgets=False)
    try:
        ip.run_cell_magic("task", "-n still_runs", "'yes'")  # no second warning (warnings are errors)
        assert finish("still_runs").result == "yes"
    finally:
        _extension.unload(ip)


def test_nest_asyncio_detection_also_sees_the_pure_python_task(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not _extension.nest_asyncio_applied()
    monkeypatch.setattr(asyncio, "Task", asyncio.tasks._PyTask)  # type: ignore[attr-defined]
    assert _extension.nest_asyncio_applied()


def test_import_task_worker_does_not_import_ipython() -> None:
    import subprocess

    code = "import sys, task_worker; print('IPython' in sys.modules, 'ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


# ------------------------------------------------------------------ starved
async def test_loop_lag_monitor_notices_a_blocked_loop_and_stops_with_its_last_view() -> None:
    import time

    from task_worker._cellview import LoopLagMonitor

    loop = asyncio.get_running_loop()
    monitor = LoopLagMonitor(loop, interval=0.01, threshold=0.2)
    assert not monitor.armed  # no heartbeat while nothing is watched
    lag = loop.create_future()

    class View:
        def note_starved(self, seconds: float) -> None:
            if not lag.done():
                lag.set_result(seconds)

    view = View()
    monitor.watch(view)  # type: ignore[arg-type]
    time.sleep(0.3)  # noqa: ASYNC251 - the point: a cell running blocking code
    assert await asyncio.wait_for(lag, 5) >= 0.2
    monitor.unwatch(view)  # type: ignore[arg-type]
    assert not monitor.armed


def test_a_starved_task_says_so_in_its_view(ip: Any) -> None:
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n starving", "1")
        view = m.views.get(task_worker.get_worker(), "starving")
        assert view is not None and view.dashboard.note == ""
        view.note_starved(2.5)
        assert "starved" in view.dashboard.note and "2.5 s" in view.dashboard.note


def test_quoted_name_loses_its_quotes_and_unnamed_tasks_use_the_cell_number(ip: Any) -> None:
    with extension(ip):
        ip.run_cell_magic("task", '-n "two words"', "1 + 1")
        assert finish("two words").status == "completed"
        result = ip.run_cell("%%task\n40 + 2", store_history=True)
        assert result.error_in_exec is None
        info = finish(f"In[{result.execution_count}]")
        assert info.result == 42
        assert info.metadata["cell"] == result.execution_count


# ------------------------------------------------- names mean the newest run
def test_rerun_named_cell_means_the_new_run_for_result_wait_and_cancel(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    rerun_gate = ip.user_ns["rerun_gate"] = threading.Event()
    with extension(ip):
        worker = task_worker.get_worker()
        ip.run_cell_magic("task", "-n crunch", "'first run'")
        assert finish("crunch").result == "first run"
        ip.run_cell_magic("task", "-n crunch", "rerun_gate.wait()\n'second run'")
        second = worker.get_all_tasks()[0]
        assert second.name == "crunch" and second.id != "crunch"  # the first run kept the id
        assert _session.resolve_task_id("crunch", worker) == second.id
        capsys.readouterr()
        assert ip.run_line_magic("task", "result crunch") is None  # not the first run's value
        assert "is pending" in capsys.readouterr().out or "is running" in capsys.readouterr().out
        rerun_gate.set()
        assert get_asyncio_loop().run_until_complete(task_worker.wait("crunch")) == "second run"

        ip.run_cell_magic("task", "-n crunch", "await asyncio.sleep(60)")
        third = worker.get_all_tasks()[0]
        ip.run_line_magic("task", "cancel crunch")
        assert f"cancelled 1 task(s): {third.id}" in capsys.readouterr().out
        assert finish(third.id).status == "cancelled"
        first = worker.get_task_info("crunch")
        assert first is not None and first.result == "first run"  # untouched


def test_a_name_never_resolves_to_another_tasks_id(ip: Any) -> None:
    with extension(ip):
        worker = task_worker.get_worker()

        async def unrelated() -> str:
            return "unrelated"

        worker.add_task_nowait(unrelated, task_id="shadow")  # id "shadow", name "unrelated"
        ip.run_cell_magic("task", "-n shadow", "'named shadow'")
        named = worker.get_all_tasks()[0]
        assert named.name == "shadow" and named.id != "shadow"
        assert _session.resolve_task_id("shadow", worker) == named.id
        assert ip.run_line_magic("task", "result shadow") is None  # pending: not "unrelated"
        assert get_asyncio_loop().run_until_complete(task_worker.wait("shadow")) == "named shadow"
        # An id still works when no task has that name.
        assert _session.resolve_task_id(named.id, worker) == named.id
        with pytest.raises(KeyError):
            _session.resolve_task_id("nothing by that name", worker)


# --------------------------------------------------- each body's namespace
def test_two_concurrent_for_loops_keep_their_own_loop_variable(ip: Any) -> None:
    ip.user_ns["seen_by_a"] = []
    ip.user_ns["seen_by_b"] = []
    with extension(ip):
        ip.run_cell_magic("task", "-n loop_a",
                          "for i in range(5):\n    await asyncio.sleep(0)\n    seen_by_a.append(i)\n")
        ip.run_cell_magic("task", "-n loop_b",
                          "for i in range(100, 105):\n    await asyncio.sleep(0)\n    seen_by_b.append(i)\n")
        assert finish("loop_a").status == "completed" and finish("loop_b").status == "completed"
    assert ip.user_ns["seen_by_a"] == [0, 1, 2, 3, 4]
    assert ip.user_ns["seen_by_b"] == [100, 101, 102, 103, 104]
    assert ip.user_ns["i"] in (4, 104)  # the loop variable reached the notebook


def test_two_concurrent_thread_bodies_keep_their_own_names(ip: Any) -> None:
    assigned = ip.user_ns["assigned_by_a"] = threading.Event()
    turn_a = ip.user_ns["turn_a"] = threading.Event()
    with extension(ip):
        # a assigns `mine` and waits while b assigns it too and ends.
        ip.run_cell_magic("task", "-n thread_a",
                          "mine = 'a'\nassigned_by_a.set()\nturn_a.wait()\nkept_by_a = mine")
        run_until(assigned)
        ip.run_cell("pass")  # a cell: a's names reach the notebook first
        assert ip.user_ns["mine"] == "a"
        ip.run_cell_magic("task", "-n thread_b", "mine = 'b'\nkept_by_b = mine")
        finish("thread_b")
        assert ip.user_ns["mine"] == "b"
        turn_a.set()
        finish("thread_a")
    assert (ip.user_ns["kept_by_a"], ip.user_ns["kept_by_b"]) == ("a", "b")
    assert ip.user_ns["mine"] == "b"  # a did not change it since: b's value is kept


def test_assigned_names_reach_the_notebook_while_the_body_runs(ip: Any) -> None:
    halfway = ip.user_ns["halfway"] = threading.Event()
    gate = ip.user_ns["gate"] = threading.Event()
    with extension(ip):
        ip.run_cell_magic("task", "-n grower", (
            "growing = []\n"
            "for step in range(3):\n"
            "    growing.append(step)\n"
            "    if step == 1:\n"
            "        halfway.set()\n"
            "        gate.wait()\n"))
        try:
            run_until(halfway)
            # A cell run meanwhile sees them (they are synced before every cell).
            ip.run_cell("peeked = (list(growing), step)").raise_error()
            assert ip.user_ns["peeked"] == ([0, 1], 1)
        finally:
            gate.set()
        assert finish("grower").status == "completed"
    assert ip.user_ns["growing"] == [0, 1, 2] and ip.user_ns["step"] == 2


def test_reads_functions_and_classes_work_as_in_a_normal_cell(ip: Any) -> None:
    ip.user_ns["base"] = 10
    with extension(ip):
        ip.run_cell_magic("task", "-n defines", (
            "offset = 5\n"
            "def shifted(x):\n"
            "    return x + base + offset\n"
            "class Box:\n"
            "    size = base                 # a class body reads a notebook name\n"
            "    def total(self):\n"
            "        return shifted(self.size)\n"
            "squares = [n * n for n in range(offset)]\n"
            "from string import *           # star imports reach the notebook too\n"
            "Box().total(), Box.__module__, len(squares)\n"))
        assert finish("defines").result == (25, "__main__", 5)
    assert ip.user_ns["ascii_lowercase"] == "abcdefghijklmnopqrstuvwxyz"
    shifted = ip.user_ns["shifted"]
    assert shifted(1) == 16
    # Once the body ended, its functions see the notebook's current values, as a cell's do.
    ip.user_ns["base"], ip.user_ns["offset"] = 100, 0
    assert shifted(1) == 101
    assert ip.user_ns["Box"]().total() == 110  # size was read when the class was made


def test_names_reach_the_notebook_whatever_the_outcome(ip: Any) -> None:
    for name in ("before_failure", "via_update", "before_cancel"):
        ip.user_ns.pop(name, None)
    with extension(ip):
        ip.run_cell_magic("task", "-n fails",
                          "before_failure = 1\nglobals().update(via_update=2)\n1 / 0")
        assert finish("fails").status == "failed"
        ip.run_cell("cancelled_started = asyncio.Event()")
        ip.run_cell_magic("task", "-n cancelled",
                          "before_cancel = 3\ncancelled_started.set()\nawait asyncio.sleep(60)")
        ip.run_cell("await cancelled_started.wait()").raise_error()  # it started
        ip.run_line_magic("task", "cancel cancelled")
        assert finish("cancelled").status == "cancelled"
    assert (ip.user_ns["before_failure"], ip.user_ns["via_update"], ip.user_ns["before_cancel"]) == (1, 2, 3)


def test_a_notebook_value_set_meanwhile_is_not_clobbered_at_the_end(ip: Any) -> None:
    assigned = ip.user_ns["assigned"] = threading.Event()
    gate = ip.user_ns["gate"] = threading.Event()
    with extension(ip):
        ip.run_cell_magic("task", "-n stale", "contested = 'task'\nassigned.set()\ngate.wait()")
        run_until(assigned)
        ip.run_cell("contested = 'notebook'")
        gate.set()
        finish("stale")
    assert ip.user_ns["contested"] == "notebook"


def test_del_and_a_top_level_global_act_on_the_notebook(ip: Any) -> None:
    ip.user_ns["doomed"] = 1
    reached = ip.user_ns["reached"] = threading.Event()
    gate = ip.user_ns["gate"] = threading.Event()
    with extension(ip):
        ip.run_cell_magic("task", "-n globals_and_del",
                          "del doomed\nglobal top_level\ntop_level = 'live'\nreached.set()\ngate.wait()")
        try:
            run_until(reached)
            assert "doomed" not in ip.user_ns  # at once
            ip.run_cell("pass")
            assert ip.user_ns["top_level"] == "live"
        finally:
            gate.set()
        assert finish("globals_and_del").status == "completed"


def test_running_bodies_reach_the_notebook_on_the_loop_without_a_cell(ip: Any) -> None:
    reached = ip.user_ns["tick_reached"] = threading.Event()
    gate = ip.user_ns["tick_gate"] = threading.Event()
    with extension(ip) as m:
        assert not m.live.ticking  # nothing runs: no periodic sync
        ip.run_cell_magic("task", "-n ticked", "ticked_value = 'seen'\ntick_reached.set()\ntick_gate.wait()")
        try:
            run_until(reached)
            assert "ticked_value" not in ip.user_ns  # not at once: no cell ran, no tick yet
            get_asyncio_loop().run_until_complete(m.live.next_tick())
            assert ip.user_ns["ticked_value"] == "seen"
        finally:
            gate.set()
        assert finish("ticked").status == "completed"
        if m.live.ticking:  # one more tick, which finds no body
            get_asyncio_loop().run_until_complete(m.live.next_tick())
        assert not m.live.ticking and len(m.live) == 0  # the chain ended with the last body


def test_while_it_runs_the_task_wins_for_names_it_changes_only(ip: Any) -> None:
    step = ip.user_ns["rule_step"] = threading.Event()
    gate = ip.user_ns["rule_gate"] = threading.Event()
    with extension(ip):
        ip.run_cell_magic("task", "-n rules", (
            "rule_kept = rule_rebound = rule_dropped = 'task'\n"
            "rule_step.set()\nrule_gate.wait()\n"
            "rule_rebound = 'task again'\n"
            "del globals()['rule_dropped']\n"))
        try:
            run_until(step)
            ip.run_cell("rule_kept = rule_rebound = 'notebook'").raise_error()
        finally:
            gate.set()
        assert finish("rules").status == "completed"
    assert ip.user_ns["rule_kept"] == "notebook"  # the task did not change it since
    assert ip.user_ns["rule_rebound"] == "task again"  # it did
    assert "rule_dropped" not in ip.user_ns  # deleted by the task, and still its value


def test_syncing_a_thread_body_while_it_adds_and_removes_names_is_safe(ip: Any) -> None:
    started = ip.user_ns["churn_started"] = threading.Event()
    with extension(ip):
        ip.run_cell_magic("task", "-n churn", (
            "churn_started.set()\n"
            "for k in range(200_000):\n"
            "    globals()[f'churn_{k % 2000}'] = k\n"
            "    if k % 3 == 0:\n"
            "        del globals()[f'churn_{k % 2000}']\n"))
        run_until(started)
        for _ in range(20):  # each cell syncs while the thread changes the dict
            ip.run_cell("pass").raise_error()
        assert finish("churn").status == "completed"
    expected = {f"churn_{k % 2000}": k for k in range(198_000, 200_000) if k % 3}
    synced = {k: v for k, v in ip.user_ns.items() if k.startswith("churn_") and k[6:].isdigit()}
    assert synced == expected


def test_del_at_the_top_level_of_a_body(ip: Any) -> None:
    ip.user_ns.update(del_nb_a=1, del_nb_b=2, del_box={"k": 1})
    with extension(ip):
        ip.run_cell_magic("task", "-n deleter", (
            "del_own = 1\n"
            "del del_own, (del_nb_a, [del_box['k'], del_nb_b])\n"
            "def local_del():\n"
            "    del_nb_c = 3\n"
            "    del del_nb_c           # a function's local: not the notebook's\n"
            "local_del()\n"
            "'del_own' in globals(), 'del_nb_a' in globals()\n"))
        assert finish("deleter").result == (False, False)
        ip.run_cell_magic("task", "-n del_missing", "x_before = 1\ndel never_defined_anywhere\n")
        info = finish("del_missing")
        assert info.status == "failed" and isinstance(info.exception, NameError)
        assert "name 'never_defined_anywhere' is not defined" in str(info.exception)
        assert info.traceback is not None and "line 2" in info.traceback  # the cell's own line
    for name in ("del_own", "del_nb_a", "del_nb_b"):
        assert name not in ip.user_ns
    assert ip.user_ns["del_box"] == {}


def test_assignments_use_dicts_own_slots() -> None:
    """Module-level assignments in a body cost what they cost in a cell: an override of either
    method would put Python code or a method lookup on every STORE_NAME (measured, not asserted
    here: `python benchmarks/bench_namespace.py`)."""
    from task_worker._namespace import TaskNamespace, task_namespace

    assert TaskNamespace.__setitem__ is dict.__setitem__
    assert TaskNamespace.__delitem__ is dict.__delitem__
    ns = task_namespace({"__builtins__": __builtins__})
    assert type(ns).__setitem__ is dict.__setitem__ and type(ns).__delitem__ is dict.__delitem__


def test_global_in_a_function_defined_in_the_body_is_refused_at_once(ip: Any) -> None:
    with extension(ip):
        with pytest.raises(UsageError, match=r"line 3: `global counter`"):
            ip.run_cell_magic("task", "-n refused",
                              "counter = 0\ndef bump():\n    global counter\n    counter += 1\n")
        assert len(task_worker.get_worker()) == 0


def test_a_tight_loop_in_a_body_gives_the_cells_result(ip: Any) -> None:
    cell = "acc = 0\nfor j in range(200_000):\n    acc += j\n"
    with extension(ip):
        ip.run_cell_magic("task", "-n tight --async", cell + "acc")
        assert finish("tight").result == sum(range(200_000))
        ip.run_cell("pass")  # a cell syncs the body's names (it has ended anyway)
        assert ip.user_ns["acc"] == sum(range(200_000)) and ip.user_ns["j"] == 199_999


# ------------------------------------------------------ the name task_worker
def test_load_names_the_module_in_the_notebook_unless_taken_and_unload_removes_it(ip: Any) -> None:
    ip.user_ns.pop("task_worker", None)
    try:
        with extension(ip):
            assert ip.user_ns["task_worker"] is task_worker
            ip.run_cell_magic("task", "-n uses_the_name", "task_worker.report_progress(0.5)\n'ok'")
            assert finish("uses_the_name").result == "ok"
        assert "task_worker" not in ip.user_ns
        with extension(ip):
            ip.user_ns["task_worker"] = "rebound by the user"
        assert ip.user_ns["task_worker"] == "rebound by the user"  # not ours any more: kept
        with extension(ip):
            assert ip.user_ns["task_worker"] == "rebound by the user"  # taken: left alone
        assert ip.user_ns["task_worker"] == "rebound by the user"
    finally:
        ip.user_ns["task_worker"] = task_worker


def test_dunder_names_stay_in_the_task_and_shadowed_builtins_come_from_the_notebook(ip: Any) -> None:
    ip.user_ns["max"] = "the notebook's max"
    try:
        with extension(ip):
            ip.run_cell_magic("task", "-n dunders", "__doc__ = 'task doc'\n(max, min([2, 1]), __doc__)")
            assert finish("dunders").result == ("the notebook's max", 1, "task doc")
        assert ip.user_ns.get("__doc__") != "task doc"
    finally:
        del ip.user_ns["max"]


def test_line_magics_and_shell_escapes_in_a_body_use_its_namespace(ip: Any) -> None:
    with extension(ip):
        ip.run_cell_magic("task", "-n magic_body", (
            "factor = 3\n%time timed_value = factor * 2\nechoed = !echo hi\nechoed[0], timed_value"))
        info = finish("magic_body")
        assert info.status == "completed" and info.result == ("hi", 6)
    assert ip.user_ns["timed_value"] == 6


# ------------------------------------------------------------- %task show
def test_task_show_displays_the_live_view_of_a_task_in_any_cell(
        ip: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    shown: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    with extension(ip) as m:
        with pytest.raises(UsageError, match="no tasks yet"):
            ip.run_line_magic("task", "show")
        ip.run_cell_magic("task", "-n shown_cell", "for k in range(30):\n    print('show line', k)\n")
        finish("shown_cell")
        worker = task_worker.get_worker()
        view = m.views.get(worker, "shown_cell")
        assert view is not None and shown == [view]  # the cell's own view
        ip.run_line_magic("task", "show shown_cell")
        # The same view again: the same widget models, so the output so far and what follows.
        assert shown[-1] is view and len(shown) == 2
        assert "show line 29" in text_of(tuple(view.output.outputs))

        async def plain() -> str:
            return "plain"

        plain_id = worker.add_task_nowait(plain, task_id="plain-one")
        ip.run_line_magic("task", "show")  # the most recent task: not a %%task one
        dashboard = shown[-1]
        assert type(dashboard).__name__ == "TaskDashboard" and dashboard.task_id == plain_id
        assert dashboard in m.dashboards
        with pytest.raises(UsageError, match="no task with id or name"):
            ip.run_line_magic("task", "show nosuch")
        ip.run_line_magic("task", "show -h")
        assert "NAME_OR_ID" in capsys.readouterr().out
    assert dashboard.closed  # unload closed it


def test_task_show_prints_the_details_where_widgets_cannot_render(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with extension(ip, widgets=False):
        ip.run_cell_magic("task", "-n textual", "1 / 0")
        finish("textual")
        capsys.readouterr()
        ip.run_line_magic("task", "show textual")
        out = capsys.readouterr().out
        assert "task 'textual'" in out and "failed" in out and "ZeroDivisionError" in out
        assert "CPU" in out and "arguments" in out


def test_a_task_cells_details_include_the_last_lines_of_its_output(ip: Any) -> None:
    from task_worker._details import task_details

    with extension(ip):
        ip.run_cell_magic("task", "-n tail_lines", "for k in range(50):\n    print('tail line', k)\n")
        finish("tail_lines")
        worker = task_worker.get_worker()
        details = task_details(worker, "tail_lines")
        assert details is not None
        lines = details["output"].split("\n")
        assert lines[-1] == "tail line 49" and len(lines) == 20
        assert details["cpu"] is not None and details["cpu_text"].endswith(" s")  # a thread body
