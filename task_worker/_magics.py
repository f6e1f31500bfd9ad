"""``%%task``, ``%task`` and ``%tasks``: parse the line, make one call into the library.

``%%task`` compiles the cell at once (a ``SyntaxError`` or a bad option is
reported before any task is created), hands a runner to the session worker with
``add_task_nowait`` in a context routed to the cell's output area, and displays
the task's view. The cell returns as soon as the task is queued. Values are
checked by the worker; its ``TypeError``/``ValueError`` reach the user as a
``UsageError`` with the worker's message.
"""

from __future__ import annotations

import builtins
import keyword
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import _session
from ._cellcode import cell_number, compile_cell, make_runner, user_traceback
from ._cellview import CellViews
from ._namespace import LiveNamespaces
from ._notify import NotifySettings
from ._output import TaskOutput, run_routed
from ._status import TaskStatus
from ._table import cancel_all, chain_text, text_table
from ._worker import AsyncTaskWorker

#: Rows ``%task list`` prints unless told otherwise.
LIST_LIMIT = 50


def _unquote(text: str) -> str:
    # IPython's magic argument splitting keeps quotes: -n "two words" -> two words
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _wants_help(tokens: list[str]) -> bool:
    return any(t in ("-h", "--help") for t in tokens)


@contextmanager
def _worker_refusals(what: str) -> Iterator[None]:
    """Turn the worker's ``TypeError``/``ValueError`` (a bad value) into a ``UsageError``."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: {exc}") from None


def _exception_types(text: str, user_ns: dict[str, Any]) -> tuple[Any, ...]:
    """``--retry-on`` names to the objects they name: in the notebook, then the builtins."""
    found = []
    for name in (n.strip() for n in _unquote(text).split(",")):
        head, *rest = name.split(".")
        if not head.isidentifier() or not all(part.isidentifier() for part in rest):
            raise UsageError(f"%%task: --retry-on needs exception names, got {name!r}")
        try:
            obj = user_ns[head] if head in user_ns else getattr(builtins, head)
            for part in rest:
                obj = getattr(obj, part)
        except (KeyError, AttributeError):
            raise UsageError(f"%%task: --retry-on: no exception named {name!r} here") from None
        found.append(obj)
    return tuple(found)


def _chain_options(args: Any, user_ns: dict[str, Any]) -> dict[str, Any]:
    """``add_task``'s ``after=`` / ``retries=`` options from ``%%task`` arguments (only those
    given: a plain cell makes a plain task). The worker checks the values."""
    options: dict[str, Any] = {}
    if args.after:
        names = [_unquote(n.strip()) for item in args.after for n in _unquote(item).split(",")]
        if not all(names):
            raise UsageError(f"%%task: --after needs task names or ids, got {','.join(args.after)!r}")
        options["after"] = names
    if args.retries:
        options["retries"] = args.retries
    for key in ("retry_delay", "retry_backoff", "retry_on"):
        value = getattr(args, key)
        if value is not None:
            if not args.retries:
                raise UsageError(f"%%task: --{key.replace('_', '-')} needs --retries")
            options[key] = _exception_types(value, user_ns) if key == "retry_on" else value
    return options


# ----------------------------------------------------------------------- magics
@magics_class
class TaskMagics(Magics):
    """The task magics of one shell.

    Args:
        shell: The IPython shell.
        views: Where ``%%task`` views are kept (closed on unload).
        widgets: Show each task in a widget view with its own output area; ``None``
            decides by whether the shell has a kernel (terminal IPython has none:
            output then goes to the terminal as usual).
        check_environment: Called before each task is submitted (warnings shown once).
    """

    def __init__(self, shell: Any, *, views: CellViews | None = None, widgets: bool | None = None,
                 check_environment: Callable[[], None] | None = None) -> None:
        super().__init__(shell)
        self._ip: Any = shell
        self.views = views if views is not None else CellViews(shell)
        self.widgets = getattr(shell, "kernel", None) is not None if widgets is None else widgets
        self.check_environment = check_environment
        #: The namespaces of the running bodies, synced to the notebook (the
        #: extension also syncs them before each cell).
        self.live = LiveNamespaces()
        #: Dashboards shown by ``%tasks`` (closed on unload).
        self.dashboards: list[Any] = []
        #: The session's notification choice (``%task config notify=... notify_after=...``),
        #: followed by ``%tasks`` dashboards and ``%%task`` views.
        self.notify = NotifySettings()
        #: ``%task COMMAND``: the method that parses and runs it.
        self._commands: dict[str, Any] = {
            "list": self._task_list, "cancel": self._task_cancel,
            "result": self._task_result, "config": self._task_config, "show": self._task_show,
        }

    # ------------------------------------------------------------ %%task / %task
    @magic_arguments(name="%task")  # type: ignore[untyped-decorator]
    @argument("-p", "--priority", type=int, default=0,
              help="Lower runs first (default 0).")  # type: ignore[untyped-decorator]
    @argument("-n", "--name", default=None,
              help="The task's name. %%task cancel/result and task_worker.wait take a name to mean "
                   "the newest task with that name (after a re-run, the new run).")  # type: ignore[untyped-decorator]
    @argument("-t", "--timeout", type=float, default=None, metavar="SECONDS",
              help="Stop the task after this many seconds (it ends failed with TimeoutError).")  # type: ignore[untyped-decorator]
    @argument("-o", "--out", default=None, metavar="VAR",
              help="On success, store the result in the user namespace as VAR.")  # type: ignore[untyped-decorator]
    @argument("-a", "--after", action="append", default=None, metavar="NAMES",
              help="Start only once these tasks completed: names of other %%%%task cells or ids, "
                   "comma-separated (repeatable). If one fails or is cancelled, this task is "
                   "cancelled.")  # type: ignore[untyped-decorator]
    @argument("-r", "--retries", type=int, default=0, metavar="N",
              help="Run the body again, up to N more times, when it raises an Exception.")  # type: ignore[untyped-decorator]
    @argument("--retry-delay", type=float, default=None, metavar="SECONDS",
              help="Seconds before the first retry (default 1); the task holds no slot meanwhile.")  # type: ignore[untyped-decorator]
    @argument("--retry-backoff", type=float, default=None, metavar="FACTOR",
              help="Each later retry waits FACTOR times longer (default 2).")  # type: ignore[untyped-decorator]
    @argument("--retry-on", default=None, metavar="EXCEPTIONS",
              help="Retry only these exception types (comma-separated names, looked up in the "
                   "notebook, then the builtins; dotted names work), e.g. ConnectionError,TimeoutError.")  # type: ignore[untyped-decorator]
    @argument("--thread", action="store_true",
              help="Run the body in a worker thread (default for a body without top-level await).")  # type: ignore[untyped-decorator]
    @argument("--async", dest="run_async", action="store_true",
              help="Run the body as a coroutine on the kernel's loop (default with top-level await).")  # type: ignore[untyped-decorator]
    @line_cell_magic
    def task(self, line: str, cell: str | None = None) -> Any:
        """%%task [options]: run the cell in the background as a task of the session worker.

        The cell returns at once and shows the task's view: status, progress,
        elapsed time, a Cancel button and the task's own output area. Names the
        body assigns are its own (another task cannot change them) and reach the
        user namespace before each cell you run, about every 0.1 s while the body
        runs, and when it ends; the value of a final expression is the
        task's result. Inside the body, ``task_worker.report_progress(x)`` and
        ``task_worker.tqdm`` drive the progress bar. Get the result later with
        ``await task_worker.wait(NAME)`` or ``%task result NAME``.

        %task manages the tasks (``%task COMMAND -h`` for a command's options):

          %task list [-s STATUS] [-l N]     table of tasks, newest first
          %task cancel NAME_OR_ID ...       cancel tasks and what waits on them (``--all``: every
                                            active task)
          %task result NAME_OR_ID           the result, or the error with its traceback
          %task config [max_workers=N] [timeout=SECONDS|none] [notify=failed,completed|none]
                       [notify_after=SECONDS]
          %task show [NAME_OR_ID]           a task's live view here (default: the newest task)
        """
        if cell is None:
            return self._task_line(line)
        return self._task_cell(line, cell)

    def _task_cell(self, line: str, cell: str) -> None:
        if _wants_help(line.split()):
            print(self.task.parser.format_help())
            return
        args = parse_argstring(self.task, line)
        if args.thread and args.run_async:
            raise UsageError("%%task: --thread and --async exclude each other")
        if args.name is not None:
            args.name = _unquote(args.name)
        if args.name is not None and not args.name.strip():
            raise UsageError("%%task: --name must not be empty")
        if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
            raise UsageError(f"%%task: --out needs a variable name, got {args.out!r}")
        if not cell.strip():
            raise UsageError("%%task: the cell is empty; put the code to run below the %%task line")
        code = compile_cell(self._ip, cell)  # SyntaxError propagates as is
        run_async = args.run_async or (code.is_async and not args.thread)
        worker = self._worker()
        if self.check_environment is not None:
            self.check_environment()
        number = cell_number(self._ip)
        name = args.name if args.name is not None else f"In[{number}]"
        task_id = args.name if args.name is not None and args.name not in worker else None
        runner = make_runner(code, self._ip.user_ns, run_async=run_async, name=name, out=args.out,
                             live=self.live, loop=worker.loop)
        options = dict(
            priority=args.priority, task_id=task_id, timeout=args.timeout,
            metadata={"source": "%%task", "cell": number,
                      "mode": "async" if run_async else "thread"},
        )
        options.update(_chain_options(args, self._ip.user_ns))
        if not self.widgets:
            with _worker_refusals("%%task"):
                task_id = worker.add_task_nowait(runner, **options)
            print(f"task {name!r} (id {task_id}) submitted; "
                  f"`%task list`, `%task result {name}`, `await task_worker.wait({name!r})`")
            return None
        self._submit_with_view(worker, runner, options, show_result=not code.quiet)
        return None

    def _submit_with_view(self, worker: AsyncTaskWorker, runner: Callable[..., Any],
                          options: dict[str, Any], *, show_result: bool) -> None:
        import ipywidgets
        from IPython.display import display

        assert worker.loop is not None
        # The widget comes once the worker accepted the task: a refused one creates
        # nothing. The sink only touches its widget when it flushes, on the loop,
        # which cannot run before this synchronous code returns.
        sink = TaskOutput(None, worker.loop)
        try:
            with _worker_refusals("%%task"):
                task_id = run_routed(sink, worker.add_task_nowait, runner, **options)
        except BaseException:
            sink.close()
            raise
        try:
            output = sink.widget = ipywidgets.Output()
        except BaseException:
            worker.cancel_task_nowait(task_id)
            sink.close()
            raise
        try:
            view = self.views.create(worker, task_id, output, sink, show_result=show_result)
        except BaseException:
            worker.cancel_task_nowait(task_id)
            sink.close()
            output.close()
            raise
        self.notify.follow(view.dashboard)
        display(view)

    def _worker(self) -> AsyncTaskWorker:
        """The session worker, started (terminal IPython: on IPython's asyncio loop)."""
        worker = _session.get_worker()
        if worker.running:
            return worker
        from IPython.core.async_helpers import get_asyncio_loop

        loop = get_asyncio_loop()
        if loop.is_running():
            raise UsageError("the session's task worker is stopping; run the cell again in a moment")
        loop.run_until_complete(worker.start())
        return worker

    def _task_line(self, line: str) -> Any:
        command, _, rest = line.strip().partition(" ")
        if not command or command in ("-h", "--help"):
            print(self._line_help())
            return None
        method = self._commands.get(command)
        if method is None:
            raise UsageError(f"%task: unknown command {command!r} (one of {', '.join(self._commands)}; "
                             "%task -h for help)")
        if _wants_help(rest.split()):
            print(method.parser.format_help())
            return None
        return method(rest)

    def _line_help(self) -> str:
        lines = ["Manage the session's background tasks (see also %%task and %tasks).", ""]
        for method in self._commands.values():
            usage = " ".join(method.parser.format_usage().replace("::", "").split())  # one line
            lines.append(f"  {usage}\n      {method.parser.description.strip().splitlines()[0]}")
        lines.append("\n%task COMMAND -h shows a command's options.")
        return "\n".join(lines)

    def _resolve(self, worker: AsyncTaskWorker, name_or_id: str) -> str:
        try:
            return _session.resolve_task_id(name_or_id, worker)
        except KeyError:
            raise UsageError(f"no task with id or name {name_or_id!r} (see %task list)") from None

    @magic_arguments(name="task list")  # type: ignore[untyped-decorator]
    @argument("-s", "--status", action="append", default=None,
              help="Only tasks with this status (repeatable).")  # type: ignore[untyped-decorator]
    @argument("-l", "--limit", type=int, default=LIST_LIMIT,
              help=f"At most this many rows (default {LIST_LIMIT}; 0 for all).")  # type: ignore[untyped-decorator]
    def _task_list(self, line: str) -> None:
        """Print a table of tasks, newest first."""
        args = parse_argstring(self._task_list, line)
        worker = self._worker()
        with _worker_refusals("%task list"):
            infos = worker.get_all_tasks(status=args.status, limit=args.limit or None)
        if args.status is None:
            matching = len(worker)
        else:  # the worker accepted them: they parse
            counts = worker.stats().counts
            matching = sum(counts[s] for s in {TaskStatus.parse(s) for s in args.status})
        print(text_table(infos, total=matching))

    @magic_arguments(name="task cancel")  # type: ignore[untyped-decorator]
    @argument("tasks", nargs="*", metavar="NAME_OR_ID")  # type: ignore[untyped-decorator]
    @argument("--all", action="store_true",
              help="Cancel every pending and running task.")  # type: ignore[untyped-decorator]
    def _task_cancel(self, line: str) -> None:
        """Cancel pending or running tasks by name or id, or --all."""
        args = parse_argstring(self._task_cancel, line)
        if args.all == bool(args.tasks):
            raise UsageError("%task cancel: give task names or ids, or --all (not both)")
        worker = self._worker()
        dependents: list[str] = []
        if args.all:
            cancelled = cancel_all(worker)
        else:
            ids = [self._resolve(worker, n) for n in args.tasks]  # all resolved before any is cancelled
            # What waits on them (after=) is cancelled with them: say so.
            for i in ids:
                dependents += [d for d in worker.dependents(i) if d not in ids and d not in dependents]
            cancelled = [i for i in ids if worker.cancel_task_nowait(i)]
        print(f"cancelled {len(cancelled)} task(s)" + (f": {', '.join(cancelled)}" if cancelled else ""))
        if dependents and cancelled:
            print(f"and {len(dependents)} task(s) waiting on them: {', '.join(dependents)}")

    @magic_arguments(name="task result")  # type: ignore[untyped-decorator]
    @argument("task", metavar="NAME_OR_ID")  # type: ignore[untyped-decorator]
    def _task_result(self, line: str) -> Any:
        """Show a task's result, or its error with traceback."""
        args = parse_argstring(self._task_result, line)
        worker = self._worker()
        info = worker.get_task_info(self._resolve(worker, args.task))
        assert info is not None
        status = info.status
        if status is TaskStatus.COMPLETED:
            return info.result
        if status is TaskStatus.FAILED:
            exc = info.exception
            if exc is None:
                print(f"task {info.name!r} failed: {info.error}\n{info.traceback or ''}")
                return None
            self._ip.showtraceback((type(exc), exc, user_traceback(exc.__traceback__)))
            return None
        if status is TaskStatus.CANCELLED:
            print(f"task {info.name!r} was {info.error or 'cancelled'}")
            return None
        state = chain_text(info)  # "waiting for load", "attempt 2/4, retrying in 3 s" ...
        print(f"task {info.name!r} is {status.value}{', ' + state if state else ''} "
              f"({info.progress:.0%}); "
              f"`await task_worker.wait({info.id!r})` waits for it")
        return None

    @magic_arguments(name="task config")  # type: ignore[untyped-decorator]
    @argument("settings", nargs="*", metavar="KEY=VALUE",
              help="max_workers=N, timeout=SECONDS or timeout=none, notify=failed,completed (or "
                   "failed, completed, all, none: browser notifications when tasks finish while "
                   "the page is hidden or after a long run), notify_after=SECONDS (default "
                   "10).")  # type: ignore[untyped-decorator]
    def _task_config(self, line: str) -> None:
        """Show the worker's settings, or set them: max_workers=N timeout=SECONDS|none
        notify=failed,completed|none notify_after=SECONDS."""
        args = parse_argstring(self._task_config, line)
        changes: dict[str, Any] = {}
        notify: dict[str, Any] = {}
        for item in args.settings:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"%task config: expected KEY=VALUE, got {item!r}")
            try:
                if key == "max_workers":
                    changes["max_workers"] = int(value)
                elif key == "timeout":
                    changes["task_timeout"] = None if value.lower() in ("none", "") else float(value)
                elif key == "notify":
                    notify["kinds"] = value
                elif key == "notify_after":
                    notify["after"] = float(value)
                else:
                    raise UsageError(f"%task config: unknown setting {key!r} "
                                     "(max_workers, timeout, notify, notify_after)")
            except ValueError:
                raise UsageError(f"%task config: {key} needs a number, got {value!r}") from None
        # The notification choice is checked before anything changes (it is applied last).
        try:
            NotifySettings(notify.get("kinds", self.notify.kinds), notify.get("after", self.notify.after))
        except ValueError as exc:
            raise UsageError(f"%task config: {exc}") from None
        worker = self._worker()
        self._configure(worker, changes)
        if notify:
            self.notify.update(**notify)
        timeout = "none" if worker.task_timeout is None else f"{worker.task_timeout:g}"
        print(f"max_workers={worker.max_workers} timeout={timeout} "
              f"notify={self.notify.kinds or 'none'} notify_after={self.notify.after:g}")

    @staticmethod
    def _configure(worker: AsyncTaskWorker, changes: dict[str, Any]) -> None:
        """Apply all of ``changes`` or none: the timeout first (it only affects tasks
        added later, so it can be put back), ``max_workers`` last (a larger value
        starts waiting tasks at once)."""
        old_timeout = worker.task_timeout
        with _worker_refusals("%task config"):
            try:
                if "task_timeout" in changes:
                    worker.task_timeout = changes["task_timeout"]
                if "max_workers" in changes:
                    worker.max_workers = changes["max_workers"]
            except (TypeError, ValueError):
                worker.task_timeout = old_timeout
                raise

    @magic_arguments(name="task show")  # type: ignore[untyped-decorator]
    @argument("task", nargs="?", default=None, metavar="NAME_OR_ID",
              help="The task (default: the most recently added one).")  # type: ignore[untyped-decorator]
    def _task_show(self, line: str) -> None:
        """Show a task's live view in this cell: status, progress, Cancel, and for a %%task its
        whole output so far, then live. For a notebook that was not saved or a cell that is gone."""
        args = parse_argstring(self._task_show, line)
        worker = self._worker()
        if args.task is None:
            newest = worker.get_all_tasks(limit=1)
            if not newest:
                raise UsageError("%task show: there are no tasks yet")
            task_id = newest[0].id
        else:
            task_id = self._resolve(worker, _unquote(args.task))
        if self.widgets:
            from IPython.display import display

            view = self.views.get(worker, task_id)
            if view is not None and not view.closed:
                display(view)  # the same widgets: every view of them is live
                return
            try:
                from ._dashboard import TaskDashboard

                dashboard = TaskDashboard(worker, task_id=task_id)
            except ImportError:
                pass
            else:
                self.dashboards.append(dashboard)
                display(dashboard)
                return
        from ._details import details_text, task_details

        details = task_details(worker, task_id)
        print(details_text(details) if details is not None else f"task {task_id!r} is no longer known")

    # ------------------------------------------------------------------- %tasks
    @line_magic
    def tasks(self, line: str) -> None:
        """Display the live dashboard of the session's tasks (a text table where widgets
        are unavailable)."""
        if line.strip():
            raise UsageError("%tasks takes no arguments (see %task -h)")
        worker = self._worker()
        if self.widgets:
            try:
                dashboard = worker.dashboard()
            except ImportError:
                dashboard = None
            if dashboard is not None:
                from IPython.display import display

                self.dashboards.append(dashboard)
                self.notify.follow(dashboard)
                display(dashboard)
                return
        print(text_table(worker.get_all_tasks(limit=LIST_LIMIT), total=len(worker)))

    def close_widgets(self) -> None:
        """Close the dashboards ``%tasks`` showed and every ``%%task`` view."""
        dashboards, self.dashboards = self.dashboards, []
        for d in dashboards:
            d.close()
        self.views.close_all()


__all__ = ["TaskMagics"]
