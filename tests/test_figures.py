"""Matplotlib figures of ``%%task`` bodies (task_worker._figures) on a real IPython shell.

The shell is IPython's test shell (``globalipapp``) with the real inline backend
(``%matplotlib inline``: its post-execute ``flush_figures`` runs after every
``run_cell``); its displays are recorded by replacing ``display_pub.publish``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from IPython.testing import globalipapp
from test_magics import extension, finish, outputs, run_until

from task_worker import _extension, _figures
from task_worker._figures import FigureRouting, TaskFigures, _ImportWatcher, current_figures, task_figures
from task_worker._output import TaskOutput, run_routed

plt = pytest.importorskip("matplotlib.pyplot")
IMAGE = "image/png"


@pytest.fixture
def ip() -> Iterator[Any]:
    shell = globalipapp.get_ipython()
    yield shell
    _extension.unload(shell)


@pytest.fixture
def published(ip: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the shell displayed outside any task (bundles, in order)."""
    shown: list[dict[str, Any]] = []
    monkeypatch.setattr(ip.display_pub, "publish",
                        lambda data, metadata=None, *a, **kw: shown.append(dict(data)))
    return shown


@pytest.fixture
def inline(ip: Any) -> Iterator[Any]:
    """The inline backend on, as ``%matplotlib inline`` in a notebook; off again afterwards."""
    import matplotlib
    from matplotlib_inline.backend_inline import configure_inline_support, flush_figures

    ip.run_line_magic("matplotlib", "inline")
    ip.user_ns["plt"] = plt
    assert flush_figures in ip.events.callbacks["post_execute"]
    # A terminal shell formats text only; a notebook's kernel formats PNG too.
    active = ip.display_formatter.active_types
    ip.display_formatter.active_types = [*active, IMAGE]
    try:
        yield plt
    finally:
        ip.display_formatter.active_types = active
        plt.close("all")
        configure_inline_support(ip, "agg")  # unregisters flush_figures, restores rcParams
        plt.switch_backend("agg")
        matplotlib.interactive(False)


def images(bundles: Any) -> int:
    return sum(1 for b in bundles if IMAGE in b)


def view_images(magics: Any, name: str) -> list[str]:
    return [o["data"][IMAGE] for o in outputs(magics, name)
            if o["output_type"] == "display_data" and IMAGE in o["data"]]


def _sink() -> TaskOutput:
    # A TaskOutput whose widget is a plain holder; it is never flushed in these tests.
    return TaskOutput(SimpleNamespace(outputs=()), _loop())


def _loop() -> Any:
    from IPython.core.async_helpers import get_asyncio_loop

    return get_asyncio_loop()


# ------------------------------------------------------------- through %%task
def test_cell_flush_leaves_a_running_tasks_figure_and_the_task_shows_it_once(
        ip: Any, published: list[dict[str, Any]], inline: Any) -> None:
    made = ip.user_ns["made_f1"] = threading.Event()
    gate = ip.user_ns["gate_f1"] = threading.Event()
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n plot_f1",
                          "fig_f1, ax_f1 = plt.subplots()\nax_f1.plot([1, 3, 2])\n"
                          "made_f1.set()\ngate_f1.wait()\n")
        run_until(made)
        # A cell plotting meanwhile shows its own figure only; the task's stays open.
        ip.run_cell("plt.plot([2, 2, 1]);")
        ip.run_cell("plt.close('all')")
        assert images(published) == 1
        fig = ip.user_ns["fig_f1"]
        assert plt.fignum_exists(fig.number)
        assert plt.gcf() is not fig
        gate.set()
        assert finish("plot_f1").status == "completed"
        assert len(view_images(m, "plot_f1")) == 1
        assert not plt.fignum_exists(fig.number)  # closed after the body, as after a cell
    assert images(published) == 1


def test_display_then_end_shows_once_but_a_change_after_display_shows_again(
        ip: Any, published: list[dict[str, Any]], inline: Any) -> None:
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n same_f2",
                          "from IPython.display import display\n"
                          "fig_f2, ax_f2 = plt.subplots()\nax_f2.plot([1, 2])\ndisplay(fig_f2)\n")
        ip.run_cell_magic("task", "-n changed_f2",
                          "from IPython.display import display\n"
                          "fig_g2, ax_g2 = plt.subplots()\nax_g2.plot([1, 2])\ndisplay(fig_g2)\n"
                          "ax_g2.set_title('changed')\n")
        finish("same_f2")
        finish("changed_f2")
        assert len(view_images(m, "same_f2")) == 1
        shots = view_images(m, "changed_f2")
        assert len(shots) == 2 and shots[0] != shots[1]
    assert images(published) == 0


def test_plt_show_in_a_task_shows_and_closes_only_its_own_figures(
        ip: Any, published: list[dict[str, Any]], inline: Any) -> None:
    cell_fig = plt.figure()  # a cell's figure, open while the task runs
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n show_f3",
                          "fig_f3 = plt.figure()\nplt.plot([3, 1])\nplt.show()\n"
                          "open_after_show_f3 = plt.fignum_exists(fig_f3.number)\n")
        finish("show_f3")
        assert len(view_images(m, "show_f3")) == 1
    assert ip.user_ns["open_after_show_f3"] is False
    assert plt.fignum_exists(cell_fig.number)
    assert images(published) == 0


def test_failing_body_still_shows_its_open_figure(
        ip: Any, published: list[dict[str, Any]], inline: Any) -> None:
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n fails_f4", "plt.plot([1, 5])\n1 / 0\n")
        assert finish("fails_f4").status == "failed"
        assert len(view_images(m, "fails_f4")) == 1
    assert images(published) == 0


def test_with_close_figures_off_a_task_figure_stays_open_and_no_later_cell_shows_it(
        ip: Any, published: list[dict[str, Any]], inline: Any) -> None:
    from matplotlib_inline.config import InlineBackend

    config = InlineBackend.instance()
    config.close_figures = False
    try:
        with extension(ip) as m:
            ip.run_cell_magic("task", "-n keep_f6", "fig_f6 = plt.figure()\nplt.plot([1, 4])\n")
            finish("keep_f6")
            assert len(view_images(m, "keep_f6")) == 1
            ip.run_cell("after_f6 = 1")
            fig = ip.user_ns["fig_f6"]
            assert plt.fignum_exists(fig.number) and plt.gcf() is fig  # an ordinary figure now
    finally:
        config.close_figures = True
    assert images(published) == 0


def test_without_the_inline_flush_figures_stay_open_and_become_ordinary(ip: Any) -> None:
    plt.switch_backend("agg")
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n agg_f5", "fig_f5 = plt.figure()\n")
        finish("agg_f5")
        assert view_images(m, "agg_f5") == []
        fig = ip.user_ns["fig_f5"]
        try:
            # Nobody shows figures after a cell here (as for a cell); the cell now sees it.
            assert plt.gcf() is fig
        finally:
            plt.close(fig)


# ------------------------------------------------------------- the mechanism
def test_gcf_queries_are_answered_per_task(ip: Any) -> None:
    routing = FigureRouting(ip)
    routing.install()
    made, gate = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}
    cell_fig = plt.figure()

    def body() -> None:
        with task_figures() as record:
            seen["record"] = record
            seen["fig"] = plt.figure()
            made.set()
            gate.wait(30)
            seen["gcf"] = plt.gcf()
            seen["all"] = [mg.canvas.figure for mg in _gcf().get_all_fig_managers()]
            plt.close("all")

    try:
        thread = threading.Thread(target=run_routed, args=(_sink(), body))
        thread.start()
        assert made.wait(30)
        task_fig = seen["fig"]
        assert isinstance(seen["record"], TaskFigures) and current_figures() is None
        assert task_fig.number in plt.get_fignums()  # numbers stay global
        assert plt.gcf() is cell_fig
        assert task_fig not in [mg.canvas.figure for mg in _gcf().get_all_fig_managers()]
        plt.close("all")  # a cell's close('all') spares the running task's figure
        assert plt.fignum_exists(task_fig.number)
        gate.set()
        thread.join(30)
        assert seen["gcf"] is task_fig and seen["all"] == [task_fig]
        assert not plt.fignum_exists(task_fig.number)  # the task's close('all') closed its own
        assert not _figures._owners
    finally:
        gate.set()
        routing.uninstall()
        plt.close("all")


def test_task_figures_does_nothing_without_an_output_area() -> None:
    with task_figures() as record:
        assert record is None and current_figures() is None


def test_uninstall_restores_gcf_and_the_formatter_exactly(ip: Any) -> None:
    gcf = _gcf()
    before = {name: vars(gcf)[name] for name in _figures._GcfPatch.NAMES}
    formatter_attrs = dict(vars(ip.display_formatter))
    first, second = FigureRouting(ip), FigureRouting(ip)
    first.install()
    first.install()  # idempotent
    assert first.active and vars(gcf)["get_active"] is not before["get_active"]
    second.install()
    second.uninstall()
    second.uninstall()
    assert vars(gcf)["get_active"] is not before["get_active"]  # still in use by `first`
    first.uninstall()
    assert {name: vars(gcf)[name] for name in _figures._GcfPatch.NAMES} == before
    assert dict(vars(ip.display_formatter)) == formatter_attrs


def test_a_figure_is_rendered_under_its_lock(ip: Any, inline: Any) -> None:
    routing = FigureRouting(ip)
    routing.install()
    fig = plt.figure()
    fig.add_subplot().plot([1, 2])
    held: list[bool] = []
    original = ip.display_formatter.format.__wrapped__

    def probe(obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Another thread cannot take the figure's lock while IPython renders it.
        other = threading.Thread(target=lambda: held.append(not _figures._render_lock(fig).acquire(False)))
        other.start()
        other.join(30)
        return original(obj, *args, **kwargs)

    try:
        routing.uninstall()
        ip.display_formatter.format = probe
        routing.install()
        data, _ = ip.display_formatter.format(fig)
        assert IMAGE in data and held == [True]
    finally:
        routing.uninstall()
        vars(ip.display_formatter).pop("format", None)
        plt.close(fig)


def test_import_watcher_calls_back_once_after_import_and_keeps_the_real_loader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tw_watched_mod.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls: list[int] = []
    watcher = _ImportWatcher("tw_watched_mod", lambda: calls.append(sys.modules["tw_watched_mod"].VALUE))
    sys.meta_path.insert(0, watcher)
    try:
        import inspect

        import tw_watched_mod  # type: ignore[import-not-found]

        assert calls == [7]
        assert type(tw_watched_mod.__loader__).__name__ == "SourceFileLoader"
        assert tw_watched_mod.__spec__.loader is tw_watched_mod.__loader__
        assert inspect.getsource(tw_watched_mod) == "VALUE = 7\n"
    finally:
        sys.meta_path.remove(watcher)
        sys.modules.pop("tw_watched_mod", None)


def test_loading_the_extension_imports_no_matplotlib_and_hooks_in_when_pyplot_is_imported() -> None:
    script = textwrap.dedent("""
        import sys
        from IPython.testing import globalipapp
        from task_worker import _extension
        ip = globalipapp.get_ipython()
        before = set(sys.modules)
        _extension.load(ip, widgets=True)
        state = _extension._loaded[id(ip)]
        added = [m for m in set(sys.modules) - before if m.startswith("matplotlib")]
        assert not added and "matplotlib.pyplot" not in sys.modules, added
        assert state.figures.installed and not state.figures.active
        import matplotlib
        matplotlib.use("agg")
        import matplotlib.pyplot
        assert state.figures.active
        from matplotlib._pylab_helpers import Gcf
        assert Gcf.get_active.__func__.__module__ == "task_worker._figures"
        _extension.unload(ip)
        assert Gcf.get_active.__func__.__module__ == "matplotlib._pylab_helpers"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def _gcf() -> Any:
    from matplotlib._pylab_helpers import Gcf

    return Gcf
