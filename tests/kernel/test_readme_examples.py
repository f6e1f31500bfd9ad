"""Every ```python example of the README runs as written (issue 14.7).

Notebook examples run in order in one fresh kernel per ipykernel version, as a
reader pastes them into a new notebook: nothing is imported or loaded before
the first block. Each cell must succeed, and so must every task the cells
started. An example that is a complete script (it calls ``asyncio.run``) runs
as a script in a fresh Python, and the values its ``print(...)  # comment``
lines promise must appear in its output.

An example that cannot run here is marked in the README with
``<!-- not-run: reason -->`` on the line before it; ``NOT_RUN`` lists the
reasons the README may give, so that the list stays short and visible.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import skip_or_fail

from .conftest import K6_ENV, KernelSession, _kernel_spec_dir

README = Path(__file__).resolve().parents[2] / "README.md"

#: The only examples the README may mark as not run, by the reason it gives.
NOT_RUN = {
    "needs a Dask cluster; tests/test_dask.py runs the same calls on a real LocalCluster",
}

_NOT_RUN_MARK = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->")
_PROMISE = re.compile(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$")


@dataclass(frozen=True)
class Example:
    """One ```python block of the README."""

    line: int  # of the opening fence, 1-based
    code: str
    not_run: str | None  # the reason given in a not-run mark

    @property
    def is_script(self) -> bool:
        return "asyncio.run(" in self.code

    def __str__(self) -> str:
        return f"README.md line {self.line}"


def readme_examples() -> list[Example]:
    """The README's ```python blocks, in order."""
    lines = README.read_text(encoding="utf-8").splitlines()
    examples = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            previous = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            mark = _NOT_RUN_MARK.search(previous)
            examples.append(Example(start + 1, "\n".join(lines[start + 1:j]) + "\n",
                                    mark.group(1) if mark else None))
            i = j
        i += 1
    return examples


def test_the_readme_has_examples_and_marks_only_the_listed_ones_not_run() -> None:
    examples = readme_examples()
    assert any(e.is_script for e in examples)
    assert any(e.code.startswith("%%task") for e in examples)
    assert {e.not_run for e in examples if e.not_run is not None} == NOT_RUN


@pytest.mark.parametrize("example", [e for e in readme_examples() if e.is_script and not e.not_run],
                         ids=str)
def test_script_example_runs_and_prints_what_it_promises(example: Example) -> None:
    with tempfile.TemporaryDirectory(prefix="tw-readme-") as cwd:
        done = subprocess.run([sys.executable, "-c", example.code], cwd=cwd, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, f"{example} failed:\n{done.stderr}"
    promised = [m.group(1) for m in map(_PROMISE.match, example.code.splitlines()) if m]
    assert promised, f"{example}: no `print(...)  # expected` line to check"
    for text in promised:
        assert text in done.stdout, f"{example} promised {text!r}; printed:\n{done.stdout}"


@pytest.fixture(scope="module", params=["k7", "k6"])
def fresh_kernel(request: pytest.FixtureRequest) -> Iterator[KernelSession]:
    """A kernel with nothing loaded or imported, as a new notebook has."""
    jupyter_client = pytest.importorskip("jupyter_client")
    from jupyter_client.kernelspec import KernelSpecManager

    label = request.param
    python = sys.executable if label == "k7" else os.environ.get(K6_ENV, "")
    if not python or not os.path.exists(python):
        skip_or_fail(f"{K6_ENV} is not set to a python with ipykernel 6.29 and task_worker")
    name = f"tw-readme-{label}"
    ksm = KernelSpecManager(kernel_dirs=[_kernel_spec_dir(python, name)])
    km = jupyter_client.KernelManager(kernel_name=name, kernel_spec_manager=ksm)
    km.start_kernel(cwd=tempfile.mkdtemp(prefix="tw-readme-cwd-"),
                    env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        yield KernelSession(km, kc, label)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_notebook_examples_run_in_order_in_a_fresh_kernel(fresh_kernel: KernelSession) -> None:
    examples = [e for e in readme_examples() if not e.is_script and not e.not_run]
    assert examples[0].code.strip() == "%load_ext task_worker"
    for example in examples:
        reply = fresh_kernel.execute(example.code, timeout=120, allow_error=True)
        assert reply.status == "ok", f"{example} failed in the {fresh_kernel.label} kernel:\n{reply.error}"
    # The tasks the examples started must have succeeded too (their errors stay in their views).
    check = fresh_kernel.execute(
        "import asyncio as _asyncio, task_worker as _tw\n"
        "await _asyncio.wait_for(_tw.get_worker().join(), 120)\n"
        "print([(i.name, i.status.value, i.error) for i in _tw.get_worker().get_all_tasks()\n"
        "       if i.status.value != 'completed'])\n", timeout=180)
    assert check.stdout.strip() == "[]", f"tasks from README examples did not complete: {check.stdout}"
