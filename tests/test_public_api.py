"""The package's public surface: __all__ matches what is importable, imports stay light."""

from __future__ import annotations

import subprocess
import sys

import task_worker


def test_all_names_are_importable_and_public_names_are_in_all() -> None:
    for name in task_worker.__all__:
        assert getattr(task_worker, name) is not None, name
    public = {n for n in dir(task_worker) if not n.startswith("_")}
    # Submodule names are attributes of the package once imported; they are not API.
    modules = {n for n in public if type(getattr(task_worker, n)).__name__ == "module"}
    assert public - modules <= set(task_worker.__all__) | {"annotations", "TYPE_CHECKING", "Any"}


def test_task_input_error_is_the_one_tasks_raise() -> None:
    from task_worker._output import TaskInputError

    assert task_worker.TaskInputError is TaskInputError
    assert issubclass(task_worker.TaskInputError, EOFError)


def test_import_touches_neither_ipython_nor_widgets_nor_dask() -> None:
    code = (
        "import sys, task_worker; "
        "heavy = [m for m in ('IPython', 'ipywidgets', 'anywidget', 'dask', 'distributed', 'tqdm') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_py_typed_is_shipped() -> None:
    from importlib.resources import files

    assert files("task_worker").joinpath("py.typed").is_file()
