"""Run the notebooks and store them with the outputs a reader should see.

Usage: ``python notebooks/store_outputs.py [NAME.ipynb ...]`` (all notebooks when none is named),
in an environment with ``.[test]`` installed.

A ``%%task`` cell or ``%tasks`` displays a live widget; its ``text/plain`` fallback (what GitHub and
other widget-less readers show) is taken when the cell runs, when every task is still "pending".
After the last cell, this script waits for the session's tasks to end, then replaces each view's
``text/plain`` with the view's own text at that moment: the same final state the widget shows in a
browser once the notebook has run. The widgets' final state is stored too (notebook metadata), so
JupyterLab can draw the views without a kernel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

#: Runs in the notebook's kernel after its last cell; prints model id -> final text.
FINAL_TEXTS = """
import json as _tw_json
import asyncio as _tw_asyncio
import task_worker as _tw
_tw_magics = get_ipython().magics_manager.registry.get("TaskMagics")
_tw_final = {}
if _tw_magics is not None:
    try:
        await _tw_asyncio.wait_for(_tw.get_worker().join(), 120)
    except _tw_asyncio.TimeoutError:
        pass
    for _tw_view in list(_tw_magics.views):
        _tw_final[_tw_view.widget.model_id] = _tw_view.dashboard.text()
# Every dashboard still open: from %tasks, and those a cell displayed itself.
import gc as _tw_gc
for _tw_dash in [_o for _o in _tw_gc.get_objects() if isinstance(_o, _tw.TaskDashboard)]:
    if not _tw_dash.closed and _tw_dash.model_id:
        _tw_final[_tw_dash.model_id] = _tw_dash.text()
print(_tw_json.dumps(_tw_final))
"""


def _final_texts(client: NotebookClient) -> dict[str, str]:
    cell = nbformat.v4.new_code_cell(FINAL_TEXTS)
    client.nb.cells.append(cell)  # nbclient stores outputs by index; removed again below
    try:
        client.execute_cell(cell, len(client.nb.cells) - 1)
    finally:
        client.nb.cells.pop()
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    errors = [o for o in cell.outputs if o.get("output_type") == "error"]
    if errors:
        raise RuntimeError(f"collecting the final texts failed: {errors[0].get('evalue')}")
    return dict(json.loads(text.strip().splitlines()[-1]))


def store(path: Path) -> int:
    """Execute ``path`` in place; return how many view outputs got their final text."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        finals = _final_texts(client)
        client.set_widgets_metadata()
    replaced = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data: dict[str, Any] = output.get("data", {})
            model = data.get(WIDGET_VIEW, {}).get("model_id")
            if model in finals:
                data["text/plain"] = finals[model]
                replaced += 1
    nbformat.write(nb, path)
    return replaced


def main(argv: list[str]) -> None:
    names = argv or sorted(p.name for p in HERE.glob("[0-9]*.ipynb"))
    for name in names:
        replaced = store(HERE / name)
        print(f"{name}: executed, {replaced} view(s) stored with their final text")


if __name__ == "__main__":
    main(sys.argv[1:])
