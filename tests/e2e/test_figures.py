"""Matplotlib figures from ``%%task`` bodies in a real browser (JupyterLab 4 and Notebook 7).

With ``%matplotlib inline``, a thread task (``display(fig)``) and a coroutine task (``plt.show()``)
each make a figure and hold it while other cells run (and the inline backend's post-cell flush
with them). Each figure must then be drawn, non-blank, in its own task's view, once, and no image
may appear in any other cell. Checked on the decoded ``<img>`` PNG and on a screenshot of the
element as the page paints it. No console error, no dialog, no request off 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    Browser,
    JupyterServer,
    assert_page_clean,
    code_cell,
    open_notebook,
    run_all_cells,
    write_notebook,
)

NOTEBOOK = "figures.ipynb"
CELLS = [
    "%load_ext task_worker\n"
    "import asyncio, threading, task_worker\n"
    "%matplotlib inline\n"
    "import matplotlib.pyplot as plt\n"
    "from IPython.display import display",
    "made_t = threading.Event(); go_t = threading.Event()\n"
    "made_a = asyncio.Event(); go_a = asyncio.Event()",
    "%%task -n fig_thread\n"
    "fig_t, ax_t = plt.subplots(figsize=(4, 3))\n"
    "ax_t.plot([0, 1, 4, 9], color='tab:red', linewidth=6)\n"
    "made_t.set()\n"
    "go_t.wait()\n"
    "display(fig_t)",
    "%%task -n fig_async\n"
    "fig_a, ax_a = plt.subplots(figsize=(4, 3))\n"
    "ax_a.bar([1, 2, 3], [3, 1, 2], color='tab:green')\n"
    "made_a.set()\n"
    "await go_a.wait()\n"
    "plt.show()",
    "assert made_t.wait(60)\n"
    "await asyncio.wait_for(made_a.wait(), 60)\n"
    "print('both figures made')",
    "other_cell_value = 1\n"
    "print('another cell ran')",
    "go_t.set(); go_a.set()\n"
    "await task_worker.wait('fig_thread')\n"
    "await task_worker.wait('fig_async')\n"
    "print('FIGURES DONE')",
]


def _pixels(png: bytes) -> Any:
    image = pytest.importorskip("matplotlib.image")
    return image.imread(io.BytesIO(png), format="png")


def assert_drawn(png: bytes, what: str) -> None:
    """The image shows a drawing: its pixels vary and some are strongly coloured (the data)."""
    rgb = _pixels(png)[..., :3]
    assert rgb.std() > 0.02, f"{what}: blank image (pixel std {rgb.std():.4f})"
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    assert (saturation > 0.3).sum() > 100, f"{what}: no coloured pixels, the plotted data is missing"


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_task_figures_are_drawn_in_their_own_views_only(
    app: str, jupyter: Callable[[str], JupyterServer], browser: Browser, notebook_root: Path,
) -> None:
    from playwright.sync_api import expect  # imported here: without Playwright the fixtures skip

    b = browser
    write_notebook(notebook_root, NOTEBOOK, CELLS)
    server = jupyter(app)
    open_notebook(b, server, NOTEBOOK)
    run_all_cells(b)

    last = code_cell(b, "FIGURES DONE").locator(".jp-Cell-outputArea")
    expect(last).to_contain_text("FIGURES DONE", timeout=90_000)
    for name, marker in (("thread", "%%task -n fig_thread"), ("coroutine", "%%task -n fig_async")):
        area = code_cell(b, marker).locator(".jp-Cell-outputArea")
        view = area.locator(".tw-dashboard.tw-single .tw-row")
        expect(view).to_have_attribute("data-status", "completed", timeout=30_000)
        img = area.locator("img")
        expect(img).to_have_count(1, timeout=30_000)
        src = img.get_attribute("src") or ""
        assert src.startswith("data:image/png;base64,"), f"{name}: unexpected image source {src[:40]!r}"
        assert_drawn(base64.b64decode(src.split(",", 1)[1]), f"{name} task's PNG")
        img.scroll_into_view_if_needed()
        b.page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle())
        assert_drawn(img.screenshot(), f"{name} task's image as painted")
        b.screenshot(f"{name}-figure", area)

    # The two figures are the only images on the page: none went to another cell.
    images = b.page.locator(".jp-NotebookPanel:visible .jp-CodeCell .jp-Cell-outputArea img")
    assert images.count() == 2
    assert_page_clean(b)
