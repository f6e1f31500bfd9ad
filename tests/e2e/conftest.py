"""Fixtures for the real-browser tests: ``chromium``, ``jupyter`` (server factory), ``browser``.

Without Chromium or Playwright these tests skip with the reason; under ``CI=true`` they fail
(``skip_or_fail`` from tests/conftest.py). Screenshots are listed at the end of the run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import skip_or_fail  # tests/conftest.py: pytest puts tests/ on sys.path

from .harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    TAKEN,
    Browser,
    JupyterServer,
    start_server,
    stop_server,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Browser tests are slow; give them their own bound well below the global 300 s.
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.timeout(180))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TAKEN:
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(TAKEN)} screenshots of the browser tests' states in {SCREENSHOTS}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the Chromium binary; skips (or fails under CI) when it or Playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("Playwright for Python is not installed (pip install playwright)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        skip_or_fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run browser tests")
    return CHROMIUM


@pytest.fixture
def notebook_root(tmp_path: Path) -> Path:
    """The (empty) folder the Jupyter server serves; tests put their notebooks there."""
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def jupyter(tmp_path: Path, notebook_root: Path) -> Iterator[Callable[[str], JupyterServer]]:
    """Factory: ``jupyter("lab")`` or ``jupyter("notebook")`` starts an isolated server on
    ``notebook_root``; every server started is stopped afterwards."""
    servers: list[JupyterServer] = []

    def start(app: str) -> JupyterServer:
        if app not in ("lab", "notebook"):
            raise ValueError(f"app must be 'lab' or 'notebook', got {app!r}")
        server = start_server(app, notebook_root, tmp_path / f"home-{app}")
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop_server(server)


@pytest.fixture
def browser(chromium: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """A headless Chromium page on a fresh profile, recording requests, console errors and dialogs."""
    from playwright.sync_api import sync_playwright

    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    for old in SCREENSHOTS.glob(f"{prefix}-*.png") if SCREENSHOTS.is_dir() else []:
        old.unlink()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            b = Browser(context, page, shot_prefix=prefix)
            context.on("request", lambda r: b.requests.append(r.url))
            page.on("websocket", lambda ws: b.requests.append(ws.url))
            page.on("console", lambda m: b.console_errors.append(
                (m.text, json.dumps(m.location))) if m.type == "error" else None)
            page.on("pageerror", lambda e: b.console_errors.append((f"uncaught: {e}", e.stack or "")))

            def on_dialog(dialog: Any) -> None:
                b.dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", on_dialog)
            yield b
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                b.screenshot("failure")
        finally:
            context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Expose the call outcome to fixtures, so the browser fixture can screenshot a failure.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]

