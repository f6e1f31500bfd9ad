"""The README's two commands: the demo command starts the demo whoever runs it (root included), and
the test command never touches the user's ``.venv``."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import _free_port, _isolated_env  # tests/ is on sys.path (rootdir conftest)

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CI_SCRIPT = (REPO / ".ci" / "run").read_text()


def _two_commands() -> list[str]:
    """The command lines of the README's "Two commands" block (comments dropped)."""
    section = README.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the Two commands section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def _demo_jupyter_argv() -> list[str]:
    (demo,) = [line for line in _two_commands() if "jupyter" in line]
    steps = [shlex.split(step) for step in demo.split("&&")]
    assert steps[0][:3] == ["python3", "-m", "venv"] and steps[0][3] == ".venv"
    assert steps[1][0] == ".venv/bin/pip" and '.[demo]' in steps[1], steps[1]
    jupyter = steps[-1]
    assert jupyter[0] == ".venv/bin/jupyter", jupyter
    return jupyter[1:]


def _get_json(url: str) -> Any:
    # The server logs its URL just before it accepts connections: retry a refused one briefly.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 20
    while True:
        try:
            with opener.open(url, timeout=30) as response:
                return json.load(response)
        except ConnectionRefusedError:
            pass
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} refused connections for 20 s")
        time.sleep(0.1)


def test_demo_extra_exists() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r"^demo = \[", pyproject, re.M), "the demo command installs .[demo]"


def test_demo_command_starts_jupyter_with_the_notebook_for_this_user(tmp_path: Path) -> None:
    """The README's `jupyter lab ...` as written (this environment's jupyter for `.venv/bin/jupyter`),
    plus only what keeps a test isolated: no browser, a free port, no token, no outbound requests.
    As root (CI, containers) JupyterLab exits at once unless the command allows it."""
    args = _demo_jupyter_argv()
    notebook = next(a for a in args if a.endswith(".ipynb"))
    assert (REPO / notebook).is_file(), f"the demo opens {notebook}, which does not exist"
    port = _free_port()
    jupyter = str(Path(sys.executable).parent / "jupyter")
    isolation = [
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        "--IdentityProvider.token=", "--ServerApp.password=",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    proc = subprocess.Popen([jupyter, *args, *isolation], cwd=REPO, env=_isolated_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    log: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            log.append(line)
            if f"127.0.0.1:{port}/" in line:  # the line after "is running at:"
                ready.set()
        ready.set()  # exited

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        ready.wait(90)
        assert proc.poll() is None, "the demo's jupyter lab exited:\n" + "".join(log)
        # Given a notebook file, jupyter serves that notebook's folder and opens it.
        name = Path(notebook).name
        assert _get_json(f"http://127.0.0.1:{port}/api/contents/{name}?content=0")["type"] == "notebook"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_ci_script_makes_only_its_own_environments() -> None:
    """`bash .ci/run` must never remove or rebuild the user's `.venv` (the demo's environment)."""
    targets = re.findall(r"^\s*fresh_venv\s+(\S+)", CI_SCRIPT, re.M)
    targets += re.findall(r'^\s*venv="?([^"\s]+)', CI_SCRIPT, re.M)
    assert targets, "expected .ci/run to build its environments with fresh_venv"
    for target in targets:
        assert target.strip('"').startswith((".venv-ci", "$venv")), target
    for removed in re.findall(r"rm -rf\s+(\S+)", CI_SCRIPT):
        assert removed in ('"$1"',), f".ci/run removes {removed}"


@pytest.mark.parametrize("line", _two_commands())
def test_two_commands_are_the_ones_documented(line: str) -> None:
    assert line.startswith(("python3 -m venv .venv", "bash .ci/run")), line
