"""``%%task``, ``%task`` and ``%tasks``: parse the line, make one call into the library.

``%%task`` compiles the cell at once (a ``SyntaxError`` or a bad option is
reported before anything is created), hands a runner to the session worker with
``add_task_nowait`` in a context routed to the cell's output area, and displays
the task's view. The cell returns as soon as the task is queued.
"""

from __future__ import annotations
import __future__

import ast
import asyncio
import inspect
import keyword
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    argument,
    magic_arguments,
    parse_argstring,
)
from IPython.utils.text import dedent

from . import _session
from ._cellview import CellViews, user_traceback
from ._figures import task_figures
from ._namespace import DELETE_HELPER, LiveNamespaces, task_namespace
from ._output import TaskOutput, run_routed
from ._status import TaskStatus
from ._table import text_table
from ._worker import AsyncTaskWorker

_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag
_COMPILE_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

#: Rows ``%task list`` prints unless told otherwise.
LIST_LIMIT = 50


# --------------------------------------------------------------------- compiling
@dataclass(frozen=True)
class CellCode:
    """A cell body compiled for a task: the statements, then the final expression
    (whose value is the task's result), both compiled from one source under one
    filename that IPython maps back to the cell in tracebacks."""

    body: CodeType | None
    last: CodeType | None
    is_async: bool
    filename: str
    #: The cell ends with ``;``: its value is not displayed (as in IPython).
    quiet: bool

    async def run_async(self, ns: dict[str, Any]) -> Any:
        """Run in ``ns`` on the running loop and return the final expression's value."""
        if self.body is not None:
            ret = eval(self.body, ns)
            if self.body.co_flags & inspect.CO_COROUTINE:
                await ret
        if self.last is None:
            return None
        value = eval(self.last, ns)
        if self.last.co_flags & inspect.CO_COROUTINE:
            value = await value
        return value

    def run_sync(self, ns: dict[str, Any]) -> Any:
        """Run in ``ns`` (a body without top-level ``await``) and return the final value."""
        if self.is_async:
            # --thread with top-level await: the body gets its own loop in its thread.
            return asyncio.run(self.run_async(ns))
        if self.body is not None:
            eval(self.body, ns)
        return None if self.last is None else eval(self.last, ns)


def cell_number(shell: Any) -> int:
    """The number of the cell running now (``In[N]``).

    IPython 9 increments ``execution_count`` before running a cell, older
    versions after: the current ``ExecutionResult`` knows the right one.
    """
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    count = getattr(result, "execution_count", None)
    return count if isinstance(count, int) else int(shell.execution_count)


def _unquote(text: str) -> str:
    # IPython's magic argument splitting keeps quotes: -n "two words" -> two words
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def compile_cell(shell: Any, cell: str) -> CellCode:
    """Compile ``cell`` as IPython would, allowing top-level ``await``.

    A top-level ``global`` statement is dropped (it changes nothing in a cell).
    A top-level ``del x`` first asks the task namespace to remove ``x`` from the
    notebook (see ``_namespace``).

    Raises:
        SyntaxError: the cell is not valid Python (after IPython's transforms).
        UsageError: the cell needs something a task body cannot keep the rules
            for (``global`` inside a function or class defined in it).
    """
    source = shell.transform_cell(cell)
    filename = shell.compile.cache(source, cell_number(shell), raw_code=cell)
    # Future imports of earlier cells apply, as in a normal cell; this module's do not.
    flags = _COMPILE_FLAGS | (getattr(shell.compile, "flags", 0) & _FUTURE_FLAGS)
    whole = compile(source, filename, "exec", flags=flags, dont_inherit=True)
    tree = _TopLevelDel().visit(_TopLevelGlobals().visit(ast.parse(source, filename)))
    _refuse_nested_global(tree)
    nodes = tree.body
    last = None
    if nodes and isinstance(nodes[-1], ast.Expr):
        last = compile(ast.Expression(nodes[-1].value), filename, "eval", flags=flags, dont_inherit=True)
        nodes = nodes[:-1]
    body = None
    if nodes:
        body = compile(ast.Module(nodes, type_ignores=[]), filename, "exec", flags=flags, dont_inherit=True)
    try:
        from IPython.core.displayhook import DisplayHook

        quiet = bool(DisplayHook.semicolon_at_end_of_expression(source))
    except Exception:  # tokenizer trouble: show the value
        quiet = False
    return CellCode(body, last, bool(whole.co_flags & inspect.CO_COROUTINE), filename, quiet)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


class _TopLevelGlobals(ast.NodeTransformer):
    """Replace the body's own ``global`` statements (not those of nested scopes) by ``pass``."""

    def visit_Global(self, node: ast.Global) -> ast.AST:
        return ast.copy_location(ast.Pass(), node)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, _SCOPES):
            return node
        return super().generic_visit(node)


class _TopLevelDel(ast.NodeTransformer):
    """``del a, b[0]`` at the top level of the body (not in nested scopes) becomes
    ``if __task_worker_del__('a'): del a`` then ``del b[0]``: the task namespace
    removes ``a`` from the notebook and says whether the ``del`` must still run."""

    def visit_Delete(self, node: ast.Delete) -> list[ast.stmt]:
        stmts: list[ast.stmt] = []
        for target in _flat_targets(node.targets):
            if isinstance(target, ast.Name):
                helper = ast.Call(ast.Name(DELETE_HELPER, ast.Load()), [ast.Constant(target.id)], [])
                stmt: ast.stmt = ast.If(helper, [ast.Delete([target])], [])
            else:
                stmt = ast.Delete([target])
            stmts.append(ast.fix_missing_locations(ast.copy_location(stmt, target)))
        return stmts

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, _SCOPES):
            return node
        return super().generic_visit(node)


def _flat_targets(targets: list[ast.expr]) -> list[ast.expr]:
    # `del (a, [b, c])` deletes a, b, c in that order.
    flat: list[ast.expr] = []
    for target in targets:
        if isinstance(target, (ast.Tuple, ast.List)):
            flat.extend(_flat_targets(target.elts))
        else:
            flat.append(target)
    return flat


def _refuse_nested_global(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):  # top-level ones are gone: this one is nested
            raise UsageError(
                f"%%task: line {node.lineno}: `global {', '.join(node.names)}` inside a function "
                "or class defined in a task body is not supported: called after the task "
                "ended, it would assign the task's namespace, not the notebook's. Define that "
                "function in a normal cell, or return the value and assign it at the top level "
                "of the body.")


def make_runner(code: CellCode, user_ns: dict[str, Any], *, run_async: bool, name: str,
                out: str | None, live: LiveNamespaces | None = None,
                loop: asyncio.AbstractEventLoop | None = None) -> Callable[..., Any]:
    """The task function for a compiled cell: a coroutine function (runs on the loop)
    or a plain one (runs in a worker thread), named ``name``.

    The body runs in its own ``TaskNamespace`` over ``user_ns`` (made now, in the
    submitting cell), which is finished when the body ends, whatever the outcome.
    With ``live``, the namespace is synced to ``user_ns`` while the body runs
    (a thread body needs ``loop``, the worker's loop, for the periodic sync).
    """
    ns = task_namespace(user_ns)
    if live is None:
        live = LiveNamespaces()  # a private one: syncs only on the periodic tick and at the end
    runner: Callable[..., Any]
    if run_async:
        async def run_cell_async() -> Any:
            try:
                live.start(ns, asyncio.get_running_loop())
                with task_figures():  # its pyplot figures: its own, shown in its area
                    value = await code.run_async(ns)
            finally:
                live.finish(ns)
            if out is not None:
                user_ns[out] = value
            return value

        runner = run_cell_async
    else:
        def run_cell_in_thread() -> Any:
            try:  # start inside: a cancellation injected right away must not leave it running
                live.start(ns, loop)
                with task_figures():
                    value = code.run_sync(ns)
            finally:
                live.finish(ns)
            if out is not None:
                user_ns[out] = value
            return value

        runner = run_cell_in_thread
    runner.__name__ = runner.__qualname__ = name
    return runner


# ---------------------------------------------------------------------- options
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
@argument("--thread", action="store_true",
          help="Run the body in a worker thread (default for a body without top-level await).")  # type: ignore[untyped-decorator]
@argument("--async", dest="run_async", action="store_true",
          help="Run the body as a coroutine on the kernel's loop (default with top-level await).")  # type: ignore[untyped-decorator]
def _cell_options() -> None:
    """%%task [options]: run the cell in the background as a task of the session worker.

    The cell returns at once and shows the task's view: status, progress,
    elapsed time, a Cancel button and the task's own output area. Names the
    body assigns are its own (another task cannot change them) and reach the
    user namespace before each cell you run, about every 0.1 s while the body
    runs, and when it ends; the value of a final expression is the
    task's result. Inside the body, ``task_worker.report_progress(x)`` and
    ``task_worker.tqdm`` drive the progress bar. Get the result later with
    ``await task_worker.wait(NAME)`` or ``%task result NAME``.
    """


def _line_parser() -> MagicArgumentParser:
    parser = MagicArgumentParser(
        prog="task",
        description="Manage the session's background tasks (see also %%task and %tasks).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    lst = sub.add_parser("list", help="Print a table of tasks, newest first.",
                         description="Print a table of tasks, newest first.")
    lst.add_argument("-s", "--status", action="append", default=None,
                     help="Only tasks with this status (repeatable).")
    lst.add_argument("-l", "--limit", type=int, default=LIST_LIMIT,
                     help=f"At most this many rows (default {LIST_LIMIT}; 0 for all).")
    cancel = sub.add_parser("cancel", help="Cancel tasks by name or id, or --all.",
                            description="Cancel pending or running tasks by name or id.")
    cancel.add_argument("tasks", nargs="*", metavar="NAME_OR_ID")
    cancel.add_argument("--all", action="store_true", help="Cancel every pending and running task.")
    result = sub.add_parser("result", help="Show a task's result, or its error with traceback.",
                            description="Show a task's result, or its error with traceback.")
    result.add_argument("task", metavar="NAME_OR_ID")
    config = sub.add_parser(
        "config", help="Show or set max_workers=N and timeout=SECONDS (or none).",
        description="Show the worker's settings, or set them: max_workers=N timeout=SECONDS|none.")
    config.add_argument("settings", nargs="*", metavar="KEY=VALUE")
    return parser


def _wants_help(tokens: list[str]) -> bool:
    return any(t in ("-h", "--help") for t in tokens)


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
        self._parser = _line_parser()

    # ------------------------------------------------------------ %%task / %task
    @line_cell_magic
    def task(self, line: str, cell: str | None = None) -> Any:
        """Run a cell as a background task (``%%task``), or manage tasks (``%task``).

        %task list [-s STATUS] [-l N]     table of tasks, newest first
        %task cancel NAME_OR_ID ...       cancel tasks (``--all``: every active task)
        %task result NAME_OR_ID           the result, or the error with its traceback
        %task config [max_workers=N] [timeout=SECONDS|none]
        %task -h, %%task -h               help
        """
        if cell is None:
            return self._task_line(line)
        return self._task_cell(line, cell)

    def _task_cell(self, line: str, cell: str) -> None:
        if _wants_help(line.split()):
            print(_cell_options.parser.format_help())
            return
        args = parse_argstring(_cell_options, line)
        if args.thread and args.run_async:
            raise UsageError("%%task: --thread and --async exclude each other")
        if args.timeout is not None and (not math.isfinite(args.timeout) or args.timeout <= 0):
            raise UsageError(f"%%task: --timeout must be a positive number of seconds, got {args.timeout}")
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
        if not self.widgets:
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
        output = ipywidgets.Output()
        sink = TaskOutput(output, worker.loop)
        try:
            task_id = run_routed(sink, worker.add_task_nowait, runner, **options)
        except BaseException:
            sink.close()
            output.close()
            raise
        try:
            view = self.views.create(worker, task_id, output, sink, show_result=show_result)
        except BaseException:
            worker.cancel_task_nowait(task_id)
            sink.close()
            output.close()
            raise
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
        tokens = line.split()
        if not tokens or tokens[0] in ("-h", "--help"):
            print(self._parser.format_help())
            return None
        if _wants_help(tokens):
            sub = self._parser._subparsers._group_actions[0].choices.get(tokens[0])  # type: ignore[union-attr]
            print((sub or self._parser).format_help())
            return None
        args = self._parser.parse_argstring(line)
        worker = self._worker()
        if args.command == "list":
            if args.limit < 0:
                raise UsageError(f"%task list: --limit must be >= 0, got {args.limit}")
            try:
                statuses = None if args.status is None else [TaskStatus.parse(s) for s in args.status]
            except ValueError as exc:
                raise UsageError(f"%task list: {exc}") from None
            infos = worker.get_all_tasks(status=statuses, limit=args.limit or None)
            counts = worker.stats().counts
            matching = len(worker) if statuses is None else sum(counts[s] for s in set(statuses))
            print(text_table(infos, total=matching))
            return None
        if args.command == "cancel":
            return self._cancel(worker, args.tasks, args.all)
        if args.command == "result":
            return self._result(worker, args.task)
        if args.command == "config":
            return self._config(worker, args.settings)
        raise UsageError(f"%task: unknown command {args.command!r}")  # pragma: no cover

    def _resolve(self, worker: AsyncTaskWorker, name_or_id: str) -> str:
        try:
            return _session.resolve_task_id(name_or_id, worker)
        except KeyError:
            raise UsageError(f"no task with id or name {name_or_id!r} (see %task list)") from None

    def _cancel(self, worker: AsyncTaskWorker, names: list[str], everything: bool) -> None:
        if everything == bool(names):
            raise UsageError("%task cancel: give task names or ids, or --all (not both)")
        if everything:
            ids = [i.id for i in worker.get_all_tasks(status=(TaskStatus.PENDING, TaskStatus.RUNNING))]
        else:
            ids = [self._resolve(worker, n) for n in names]  # all resolved before any is cancelled
        cancelled = [i for i in ids if worker.cancel_task_nowait(i)]
        print(f"cancelled {len(cancelled)} task(s)" + (f": {', '.join(cancelled)}" if cancelled else ""))

    def _result(self, worker: AsyncTaskWorker, name_or_id: str) -> Any:
        info = worker.get_task_info(self._resolve(worker, name_or_id))
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
        print(f"task {info.name!r} is {status.value} ({info.progress:.0%}); "
              f"`await task_worker.wait({info.id!r})` waits for it")
        return None

    def _config(self, worker: AsyncTaskWorker, settings: list[str]) -> None:
        changes: dict[str, Any] = {}
        for item in settings:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"%task config: expected KEY=VALUE, got {item!r}")
            if key == "max_workers":
                try:
                    n = int(value)
                except ValueError:
                    raise UsageError(f"%task config: max_workers needs an int, got {value!r}") from None
                if n < 1:
                    raise UsageError(f"%task config: max_workers must be at least 1, got {n}")
                changes["max_workers"] = n
            elif key == "timeout":
                if value.lower() in ("none", ""):
                    changes["task_timeout"] = None
                    continue
                try:
                    t = float(value)
                except ValueError:
                    raise UsageError(f"%task config: timeout needs seconds or none, got {value!r}") from None
                if not math.isfinite(t) or t <= 0:
                    raise UsageError(f"%task config: timeout must be positive, got {value!r}")
                changes["task_timeout"] = t
            else:
                raise UsageError(f"%task config: unknown setting {key!r} (max_workers, timeout)")
        for attr, value in changes.items():  # all validated: apply
            setattr(worker, attr, value)
        timeout = "none" if worker.task_timeout is None else f"{worker.task_timeout:g}"
        print(f"max_workers={worker.max_workers} timeout={timeout}")

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
                display(dashboard)
                return
        print(text_table(worker.get_all_tasks(limit=LIST_LIMIT), total=len(worker)))

    def close_widgets(self) -> None:
        """Close the dashboards ``%tasks`` showed and every ``%%task`` view."""
        dashboards, self.dashboards = self.dashboards, []
        for d in dashboards:
            d.close()
        self.views.close_all()


TaskMagics.task.__doc__ = dedent(TaskMagics.task.__doc__ or "") + "\n" + (
    _cell_options.parser.format_help())


__all__ = ["CellCode", "TaskMagics", "compile_cell", "make_runner"]
