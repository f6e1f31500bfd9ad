"""The Binder environment, rebuilt without mybinder.org: ``binder/`` alone must make the notebooks run.

mybinder.org (repo2docker) clones the repository, takes the Python version from
``binder/runtime.txt`` and runs ``pip install -r binder/requirements.txt`` from the repository's root,
which installs this package (not editable) with its extras. This test does the same in a fresh
virtual environment, from a copy of the files git would clone (so nothing else of this checkout, such
as an editable install or a ``PYTHONPATH``, can help), then executes every notebook in that
environment's own kernel with nbclient and checks each one reached its final checks. pip's cache is
reused, so after the first run this takes about a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"

pytestmark = pytest.mark.timeout(900)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: Runs in the Binder venv: execute one notebook (plus a cell asking the kernel where it runs
#: from), report errors and the text it printed.
RUNNER = textwrap.dedent("""
    import json, os, sys
    import nbformat
    from nbclient import NotebookClient

    path = sys.argv[1]
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys, task_worker; print(repr((sys.prefix, task_worker.__file__)))"))
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    printed, errors = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                printed.append(out.text)
            elif out.output_type == "error" and "raises-exception" not in cell.metadata.get("tags", []):
                errors.append(f"{out.ename}: {out.evalue}")
    kernel_prefix, package = eval(nb.cells[-1].outputs[0].text)
    print(json.dumps({"kernel_prefix": kernel_prefix, "package": package,
                      "printed": "".join(printed), "errors": errors}))
""")


def _files_git_would_clone(dest: Path) -> None:
    """Copy the tracked files, plus new files git does not ignore (so uncommitted work is tested
    too), leaving out virtual environments that happen to sit in the checkout unignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if not src.is_file():  # a deleted but still tracked file
            continue
        top = REPO / Path(name).parts[0]
        if top.is_dir() and (top / "pyvenv.cfg").exists():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _python_version() -> tuple[int, int]:
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+)\.(\d+)", runtime)
    assert match, f"binder/runtime.txt must read python-X.Y, got {runtime!r}"
    return int(match[1]), int(match[2])


def test_binder_files_are_what_repo2docker_reads() -> None:
    """The Python build pack: a runtime.txt with a Python version and a requirements.txt that
    installs this repository (a local path, so repo2docker installs it after copying the repo)."""
    assert _python_version() >= (3, 10)
    lines = [ln.split("#", 1)[0].strip() for ln in (BINDER / "requirements.txt").read_text().splitlines()]
    local = [ln for ln in lines if ln.startswith(".")]
    assert local, "binder/requirements.txt must install this repository ('.[extras]')"
    assert "demo" in local[0] and "dask" in local[0], f"the notebooks need the demo and dask extras: {local}"
    # environment.yml or a Pipfile would make repo2docker ignore requirements.txt.
    others = {"environment.yml", "Pipfile", "Pipfile.lock", "setup.py", "Project.toml", "install.R"}
    assert not others & {p.name for p in BINDER.iterdir()}


def test_binder_environment_runs_every_notebook(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files Binder would clone")
    if _python_version() != sys.version_info[:2]:
        pytest.skip(f"binder/runtime.txt asks for Python {_python_version()}, this is {sys.version_info[:2]}")
    repo = tmp_path / "repo"
    _files_git_would_clone(repo)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(tmp_path / name.lower())
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", "binder/requirements.txt"],
        cwd=repo, env=env, capture_output=True, text=True,
    )
    assert install.returncode == 0, f"installing binder/requirements.txt failed:\n{install.stderr[-4000:]}"

    notebooks = sorted((repo / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 3, notebooks
    # Each notebook in its own process and kernel, all at once: most of their time is waiting.
    procs = {
        nb.name: subprocess.Popen(
            [str(python), "-c", RUNNER, str(nb)], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for nb in notebooks
    }
    failures = []
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            failures.append(f"{name} failed in the Binder environment:\n{_ANSI.sub('', err)[-3000:]}")
            continue
        report = json.loads(out.strip().splitlines()[-1])
        # The kernel is the Binder environment's, and imports the package installed there.
        assert Path(report["kernel_prefix"]) == venv, f"{name} ran on another kernel: {report}"
        assert Path(report["package"]).is_relative_to(venv), f"task_worker came from {report['package']}"
        if report["errors"]:
            failures.append(f"{name}: {report['errors']}")
        elif "All checks passed" not in report["printed"] and name.startswith(("01", "02", "03")):
            failures.append(f"{name} did not reach its final checks")
    assert not failures, "\n\n".join(failures)
