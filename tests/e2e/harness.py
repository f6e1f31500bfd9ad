"""Real-browser harness: an isolated Jupyter server and a headless Chromium driven by Playwright.

Recipe: /work/shared/BROWSER_TESTS.md. The server runs on 127.0.0.1 with no token, in a temporary
root, with every outbound request (news, update checks, extension manager) turned off and every
Jupyter/IPython settings folder pointed at a temporary one. The browser is Debian's Chromium
(``/usr/bin/chromium``, or ``TASK_WORKER_CHROMIUM``), never a Playwright download. Every request and
every console error the page makes is collected, so tests can assert that nothing leaves 127.0.0.1 and
that the page logged no error. Screenshots go to ``test-artifacts/screenshots/`` (printed at the end
of the run).

The pytest fixtures built on this module live in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("TASK_WORKER_CHROMIUM", "/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    # Stops Chromium's own lookups (update and autofill services); 127.0.0.1 still resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]

#: Seconds to wait for the server to say it is running, and for the page's kernel to be ready.
SERVER_START_TIMEOUT = 60.0
KERNEL_READY_TIMEOUT_MS = 60_000

#: Errors the frontends themselves raise, ignored narrowly: (message regex, stack regex, why).
KNOWN_UPSTREAM_ERRORS = [
    (
        r"^uncaught: Cannot read properties of undefined \(reading 'schema'\)",
        r"notebook_core\.[0-9a-f]+\.js",
        # Notebook 7.6 races its settings registry at page load; nothing of ours is involved.
        "https://github.com/jupyter/notebook/issues/7862",
    ),
]

#: Every screenshot taken in this process (listed at the end of the pytest run).
TAKEN: list[Path] = []

_TWO_FRAMES_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"

_LOCAL_SCHEMES = ("data", "blob", "about", "chrome", "chrome-extension", "devtools")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _isolated_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    dirs = {
        "JUPYTER_CONFIG_DIR": home / "config",
        "JUPYTER_RUNTIME_DIR": home / "runtime",
        "JUPYTER_DATA_DIR": home / "data",
        "IPYTHONDIR": home / "ipython",
        "JUPYTERLAB_SETTINGS_DIR": home / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": home / "lab-workspaces",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    # Setting only fetchNews would still make the server check the package index for updates.
    notification = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # The kernel runs this interpreter's ipykernel (the native kernel spec), with the repo importable.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@dataclass
class JupyterServer:
    """A running ``jupyter lab`` or ``jupyter notebook`` server."""

    app: str  # "lab" or "notebook"
    url: str  # base URL, ending with "/"
    root: Path
    log: Path
    proc: subprocess.Popen[bytes]
    log_pump: threading.Thread | None = None

    def notebook_url(self, name: str) -> str:
        """URL that opens ``name`` (relative to the server root) in this frontend."""
        return self.url + (f"lab/tree/{name}" if self.app == "lab" else f"notebooks/{name}")


def start_server(app: str, root: Path, home: Path) -> JupyterServer:
    """Start ``jupyter <app>`` isolated under ``home`` serving ``root``; return once it answers."""
    port = _free_port()
    args = [
        sys.executable, "-m", "jupyterlab" if app == "lab" else "notebook",
        "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if app == "lab":
        args.append("--LabApp.expose_app_in_browser=True")
    else:
        args.append("--JupyterNotebookApp.expose_app_in_browser=True")
    env = _isolated_env(home)
    log = home / f"jupyter-{app}.log"
    logfile = log.open("wb")
    proc = subprocess.Popen(
        args, env=env, cwd=root, stdout=logfile, stderr=subprocess.PIPE,
        start_new_session=True,  # its kernels share its process group: teardown ends them all
    )
    ready = threading.Event()
    url = f"http://127.0.0.1:{port}/"

    def pump() -> None:
        # Copy the server's log to the file, and signal when it says it is running.
        assert proc.stderr is not None
        for line in proc.stderr:
            logfile.write(line)
            logfile.flush()
            if b"is running at" in line or f"127.0.0.1:{port}/".encode() in line:
                ready.set()
        ready.set()  # it exited: stop waiting
        logfile.close()

    log_pump = threading.Thread(target=pump, daemon=True, name=f"jupyter-{app}-log")
    log_pump.start()
    server = JupyterServer(app, url, root, log, proc, log_pump)
    if not ready.wait(SERVER_START_TIMEOUT) or proc.poll() is not None:
        stop_server(server)
        raise RuntimeError(f"jupyter {app} did not start; log:\n{log.read_text(errors='replace')}")
    # The log line comes just before the server accepts requests; confirm it answers.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 10
    while True:
        try:
            with opener.open(url + "api", timeout=5) as response:
                json.load(response)
            break
        except OSError:
            if time.monotonic() > deadline:
                stop_server(server)
                raise
            time.sleep(0.1)
    return server


def stop_server(server: JupyterServer) -> None:
    """Stop the server (it shuts its kernels down); then end anything left in its process group."""
    proc = server.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    try:
        os.killpg(proc.pid, 9)  # leftover kernels started by this server, if any
    except (ProcessLookupError, PermissionError):
        pass
    # Every writer of the log pipe is gone now, so the pump sees EOF and ends.
    if server.log_pump is not None:
        server.log_pump.join(10)
    if proc.stderr is not None:
        proc.stderr.close()


def copy_notebook(name: str, root: Path, clear_outputs: bool = True) -> Path:
    """Copy ``notebooks/<name>`` into ``root``, without its stored outputs (so what the page shows
    comes from this run, and stored widget views without their models cannot log errors)."""
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if clear_outputs:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        nb.metadata.pop("widgets", None)
    target = root / name
    nbformat.write(nb, target)
    return target


def write_notebook(root: Path, name: str, sources: list[str]) -> Path:
    """Write a notebook of code cells to ``root/name``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    target = root / name
    nbformat.write(nb, target)
    return target


@dataclass
class Browser:
    """A browser context and one page, with everything the page did recorded."""

    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)
    #: Console errors and uncaught exceptions, as (text, stack or source location).
    console_errors: list[tuple[str, str]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)
    shot_prefix: str = "test"

    def screenshot(self, state: str, target: Locator | None = None) -> Path:
        """Save the viewport, scrolled to ``target`` if given, as ``<test>-NN-<state>.png``."""
        if target is not None:
            try:
                target.scroll_into_view_if_needed(timeout=5000)
            except Exception:  # a screenshot must never be what fails a test
                pass
            # Cells scrolled into view are painted lazily (content-visibility): let a few frames pass.
            self.page.evaluate(_TWO_FRAMES_JS)
            self.page.wait_for_timeout(300)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.shot_prefix}-{len(self.shots):02d}-{state}.png"
        self.page.screenshot(path=str(path))
        self.shots.append(path)
        TAKEN.append(path)
        return path

    def foreign_requests(self) -> list[str]:
        """Requests (HTTP and WebSocket) that went anywhere but 127.0.0.1."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in _LOCAL_SCHEMES:
                continue
            if parts.hostname != "127.0.0.1":
                out.append(url)
        return out


_KERNEL_READY_JS = """() => {
    const app = window.jupyterapp;
    const w = app && app.shell && app.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
}"""


def open_notebook(b: Browser, server: JupyterServer, name: str) -> None:
    """Open ``name`` and wait until its kernel is connected and idle."""
    b.page.goto(server.notebook_url(name))
    b.page.wait_for_function(_KERNEL_READY_JS, timeout=KERNEL_READY_TIMEOUT_MS)


def run_all_cells(b: Browser) -> None:
    """Start "Run All Cells" without waiting for it (the promise resolves only when all cells end)."""
    b.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def cells(b: Browser) -> Locator:
    """All cells of the open notebook, in order."""
    return b.page.locator(".jp-NotebookPanel:visible .jp-Cell")


def code_cell(b: Browser, marker: str) -> Locator:
    """The code cell whose source contains ``marker``."""
    return b.page.locator(".jp-NotebookPanel:visible .jp-CodeCell").filter(
        has=b.page.locator(".jp-InputArea", has_text=marker))


def output_texts(b: Browser) -> list[str]:
    """The text of every code cell's output area, in cell order."""
    return list(b.page.evaluate("""() => Array.from(
        document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell'))
        .map(c => { const o = c.querySelector('.jp-Cell-outputArea'); return o ? o.textContent : ''; })"""))


def set_notebook_width(b: Browser, width: int) -> None:
    """Resize the window so that the open notebook's panel is ``width`` CSS pixels wide
    (JupyterLab's side panels collapsed first, as on a narrow screen)."""
    b.page.evaluate("""() => { const shell = window.jupyterapp.shell;
        if (shell.collapseLeft) shell.collapseLeft();
        if (shell.collapseRight) shell.collapseRight(); }""")
    height = b.page.viewport_size["height"] if b.page.viewport_size else 900
    viewport = width
    for _ in range(3):  # the panel's margins depend on the frontend: converge on them
        b.page.set_viewport_size({"width": viewport, "height": height})
        b.page.evaluate(_TWO_FRAMES_JS)
        panel = b.page.evaluate(
            "() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"
            ".getBoundingClientRect().width")
        if abs(panel - width) < 1:
            return
        viewport += round(width - panel)


def line_count(target: Locator) -> int:
    """How many lines the visible children of ``target`` are laid out on."""
    return int(target.evaluate("""el => {
        const tops = [];
        for (const child of el.children) {
            const r = child.getBoundingClientRect();
            if (r.width === 0 && r.height === 0) continue;
            if (!tops.some(t => Math.abs(t - (r.top + r.bottom) / 2) < r.height / 2)) {
                tops.push((r.top + r.bottom) / 2);
            }
        }
        return tops.length;
    }"""))


def unexpected_errors(b: Browser) -> list[str]:
    """Console errors and uncaught exceptions, minus the known upstream ones."""
    return [
        f"{text}\n  at {where}" for text, where in b.console_errors
        if not any(re.search(msg, text) and re.search(stack, where)
                   for msg, stack, _ in KNOWN_UPSTREAM_ERRORS)
    ]


def assert_page_clean(b: Browser) -> None:
    """No console error, no dialog, no request off 127.0.0.1."""
    errors = unexpected_errors(b)
    assert not errors, "console errors:\n" + "\n".join(errors)
    assert not b.dialogs, f"unexpected dialogs: {b.dialogs}"
    foreign = b.foreign_requests()
    assert not foreign, f"requests left 127.0.0.1: {foreign}"
    assert b.requests, "no request was recorded at all: the recorder is broken"


__all__ = [
    "Browser", "JupyterServer", "assert_page_clean", "cells", "code_cell", "copy_notebook",
    "line_count", "open_notebook", "output_texts", "run_all_cells", "set_notebook_width",
    "write_notebook",
]
