"""Matplotlib figures from ``%%task`` bodies through real kernels (ipykernel 7 and 6), with
``%matplotlib inline``: a task's figure arrives drawn (non-blank PNG) in the task's Output widget,
once, and never in another cell's output, even when other cells (and their post-execute figure
flush, ``plt.show()`` and ``plt.close("all")``) run while the task holds the figure open.

The tests run in order on one kernel per version; each uses its own variable names.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest

from .conftest import KernelSession, Reply

IMAGE = "image/png"


@pytest.fixture(scope="module")
def plotting(kernel: KernelSession) -> KernelSession:
    """The module's kernel with the inline backend on and pyplot imported (after the extension)."""
    r = kernel.execute("import importlib.util; print(importlib.util.find_spec('matplotlib') is not None)")
    if r.stdout.strip() != "True":
        pytest.skip(f"[{kernel.label}] matplotlib is not installed in this kernel's environment")
    kernel.execute("%matplotlib inline\nimport matplotlib.pyplot as plt\nfrom IPython.display import display")
    return kernel


def _output_of(kernel: KernelSession, reply: Reply) -> str:
    (box,) = reply.widget_ids()
    _, output = kernel.children(box)
    assert kernel.models[output].get("_model_name") == "OutputModel"
    return output


def _images_in_widget(kernel: KernelSession, output: str) -> list[str]:
    return [o["data"][IMAGE] for o in kernel.models.get(output, {}).get("outputs", [])
            if o.get("output_type") == "display_data" and IMAGE in o.get("data", {})]


def _images_in_cells(kernel: KernelSession) -> dict[str, int]:
    """Cell (request msg_id) -> number of PNG images iopub sent as that cell's output."""
    found: dict[str, int] = {}
    for m in kernel.log:
        if m["msg_type"] in ("display_data", "execute_result", "update_display_data") \
                and IMAGE in m["content"].get("data", {}):
            parent = m["parent_header"].get("msg_id", "")
            found[parent] = found.get(parent, 0) + 1
    return found


def _pixels(png_b64: str) -> Any:
    image = pytest.importorskip("matplotlib.image")
    return image.imread(io.BytesIO(base64.b64decode(png_b64)), format="png")


def assert_drawn(png_b64: str) -> None:
    """The PNG shows a drawing: its pixels vary, and some are strongly coloured (the data)."""
    rgb = _pixels(png_b64)[..., :3]
    assert rgb.std() > 0.02, f"blank image (pixel std {rgb.std():.4f})"
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    assert (saturation > 0.3).sum() > 100, "no coloured pixels: the plotted data is missing"


def _wait_images(kernel: KernelSession, output: str, n: int) -> list[str]:
    kernel.wait_for(lambda: len(_images_in_widget(kernel, output)) >= n, timeout=60,
                    what=f"{n} image(s) in the task's Output widget")
    return _images_in_widget(kernel, output)


def _finish(kernel: KernelSession, name: str) -> None:
    """Wait for the task, then push what its output area still buffers into the widget now
    (the area updates in batches), so every image the task produced has reached the widget."""
    kernel.execute(
        f"await task_worker.wait({name!r})\n"
        "get_ipython().magics_manager.registry['TaskMagics'].views.get(\n"
        f"    task_worker.get_worker(), {name!r}).sink.flush()", timeout=60)


def test_display_fig_from_a_thread_task_draws_in_its_view_while_other_cells_run(
        plotting: KernelSession) -> None:
    k = plotting
    k.execute("fig_made_t = threading.Event(); fig_go_t = threading.Event()")
    cell = k.execute(
        "%%task -n fig_thread\n"
        "fig_t, ax_t = plt.subplots()\n"
        "ax_t.plot([0, 1, 4, 9], color='tab:red', linewidth=6)\n"
        "fig_made_t.set()\n"
        "fig_go_t.wait()\n"
        "print('open when displayed:', plt.fignum_exists(fig_t.number))\n"
        "display(fig_t)\n")
    output = _output_of(k, cell)
    # Other cells run while the task holds its figure: their post-execute flush, an explicit
    # plt.show() of a cell's own figure and plt.close('all') must leave the task's figure alone.
    k.execute("assert fig_made_t.wait(60)")
    own = k.execute("plt.plot([3, 1, 2], color='tab:blue', linewidth=6);\nplt.show()")
    k.execute("plt.close('all')")
    k.execute("fig_go_t.set()")
    images = _wait_images(k, output, 1)
    _finish(k, "fig_thread")
    images = _images_in_widget(k, output)
    assert len(images) == 1, f"the task's figure was shown {len(images)} times in its view"
    assert_drawn(images[0])
    assert "open when displayed: True" in k.output_text(output)
    # Only the cell that plotted its own figure has an image; the task's went nowhere else.
    assert _images_in_cells(k) == {own.msg_id: 1}
    assert k.execute("print(plt.fignum_exists(fig_t.number))").stdout.strip() == "False"


def test_plt_show_in_a_coroutine_task_draws_in_its_view_only(plotting: KernelSession) -> None:
    k = plotting
    before = _images_in_cells(k)
    k.execute("fig_made_a = asyncio.Event(); fig_go_a = asyncio.Event()")
    cell = k.execute(
        "%%task -n fig_async\n"
        "fig_a, ax_a = plt.subplots()\n"
        "ax_a.bar([1, 2, 3], [3, 1, 2], color='tab:green')\n"
        "fig_made_a.set()\n"
        "await fig_go_a.wait()\n"
        "plt.show()\n")
    output = _output_of(k, cell)
    k.execute("await asyncio.wait_for(fig_made_a.wait(), 60)")
    k.execute("x_between_a = 1")
    k.execute("fig_go_a.set()")
    _wait_images(k, output, 1)
    _finish(k, "fig_async")
    images = _images_in_widget(k, output)
    assert len(images) == 1, f"the task's figure was shown {len(images)} times in its view"
    assert_drawn(images[0])
    assert _images_in_cells(k) == before
    assert k.execute("print(plt.fignum_exists(fig_a.number))").stdout.strip() == "False"


def test_figure_left_open_by_a_thread_body_is_shown_once_when_it_ends(plotting: KernelSession) -> None:
    k = plotting
    before = _images_in_cells(k)
    k.execute("fig_made_o = threading.Event(); fig_go_o = threading.Event()")
    cell = k.execute(
        "%%task -n fig_open\n"
        "fig_o, ax_o = plt.subplots()\n"
        "ax_o.scatter([1, 2, 3], [2, 3, 1], s=400, color='tab:purple')\n"
        "fig_made_o.set()\n"
        "fig_go_o.wait()\n")
    output = _output_of(k, cell)
    k.execute("assert fig_made_o.wait(60)")
    k.execute("y_between_o = 2")
    k.execute("fig_go_o.set()")
    _wait_images(k, output, 1)
    _finish(k, "fig_open")
    images = _images_in_widget(k, output)
    assert len(images) == 1
    assert_drawn(images[0])
    assert _images_in_cells(k) == before
    assert k.execute("print(plt.fignum_exists(fig_o.number))").stdout.strip() == "False"


def test_pyplot_state_calls_in_a_coroutine_task_use_its_own_figure(plotting: KernelSession) -> None:
    k = plotting
    before = _images_in_cells(k)
    k.execute("fig_made_s = asyncio.Event(); fig_go_s = asyncio.Event()")
    cell = k.execute(
        "%%task -n fig_state\n"
        "plt.figure()\n"
        "plt.plot([5, 3, 8], color='tab:orange', linewidth=6)\n"
        "fig_made_s.set()\n"
        "await fig_go_s.wait()\n"
        "plt.title('from the task')\n"
        "num_s = plt.gcf().number\n")
    output = _output_of(k, cell)
    k.execute("await asyncio.wait_for(fig_made_s.wait(), 60)")
    # A cell plotting with pyplot's state machine meanwhile gets its own figure, not the task's.
    own = k.execute("plt.plot([1, 2, 1], color='tab:blue', linewidth=6)\nmain_num_s = plt.gcf().number")
    k.execute("fig_go_s.set()")
    _wait_images(k, output, 1)
    _finish(k, "fig_state")
    images = _images_in_widget(k, output)
    assert len(images) == 1
    assert_drawn(images[0])
    assert _images_in_cells(k) == {**before, own.msg_id: 1}
    nums = k.execute("print(num_s != main_num_s, plt.get_fignums())").stdout.strip()
    assert nums == "True []"
