"""A ``%%task`` cell's code: compiled as IPython would, run as a task body, and its traceback trimmed.

``compile_cell`` turns the cell into a ``CellCode``, ``make_runner`` into the task
function, and ``user_traceback`` drops the frames before the cell's own, finding
the runner's frames by this module's own file name.
"""

from __future__ import annotations
import __future__

import ast
import asyncio
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, TracebackType
from typing import Any

from IPython.core.error import UsageError

from ._figures import task_figures
from ._namespace import DELETE_HELPER, LiveNamespaces, TaskNamespace, task_namespace

_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag
_COMPILE_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

#: This module runs the cell's code objects: the frame right after its last one is the cell's.
_THIS_FILE = os.path.abspath(__file__)
_PKG_DIR = os.path.dirname(_THIS_FILE) + os.sep


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

        quiet = bool(DisplayHook.semicolon_at_end_of_expression(source))  # type: ignore[no-untyped-call]
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

    def namespace() -> TaskNamespace:
        # A retried attempt (--retries) runs again: in a new namespace, as a new run
        # of the cell would (the previous one was finished and detached).
        nonlocal ns
        if ns.detached:
            ns = task_namespace(user_ns, like=ns)
        return ns

    if live is None:
        live = LiveNamespaces()  # a private one: syncs only on the periodic tick and at the end
    runner: Callable[..., Any]
    if run_async:
        async def run_cell_async() -> Any:
            ns = namespace()
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
            ns = namespace()
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


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """The part of ``tb`` that is the user's: from the cell's own frame on.

    The frames before it (the worker, the cell runner, and whoever re-raised the
    stored exception since, e.g. ``await wait(...)``) mean nothing to the user.
    A traceback that never passed through a cell runner loses only its leading
    frames from this package.
    """
    after_runner = None
    t = tb
    while t is not None:
        if t.tb_frame.f_code.co_filename == _THIS_FILE:
            after_runner = t.tb_next
        t = t.tb_next
    if after_runner is not None:
        return after_runner
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PKG_DIR):
        tb = tb.tb_next
    return tb


__all__ = ["CellCode", "cell_number", "compile_cell", "make_runner", "user_traceback"]
