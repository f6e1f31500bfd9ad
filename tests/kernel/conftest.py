"""Real kernels for the kernel tests: ipykernel 7 (this venv) and ipykernel 6
(the python in ``TASK_WORKER_K6_PYTHON``), driven with jupyter_client.

``KernelSession`` keeps every iopub message it reads (``log``) and mirrors the
widget models the kernel opens (``models``: comm id -> state), the way a
frontend would, so tests can assert on widget state and on where output went.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import skip_or_fail  # tests/conftest.py: pytest puts tests/ on sys.path

K6_ENV = "TASK_WORKER_K6_PYTHON"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes."""
    return _ANSI.sub("", text)


@dataclass
class Reply:
    """What one execute_request produced."""

    msg_id: str
    reply: dict[str, Any]
    #: Seconds from sending the request to receiving its execute_reply.
    reply_time: float
    #: iopub messages whose parent is this request (up to its ``idle``).
    iopub: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.reply["content"]["status"])

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.iopub
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.iopub
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")

    @property
    def error(self) -> str:
        c = self.reply["content"]
        return strip_ansi("\n".join(c.get("traceback", []))) if c["status"] == "error" else ""

    def widget_ids(self) -> list[str]:
        """Model ids of the widgets this cell displayed."""
        out = []
        for m in self.iopub:
            if m["msg_type"] == "display_data":
                view = m["content"]["data"].get("application/vnd.jupyter.widget-view+json")
                if view:
                    out.append(view["model_id"])
        return out


class KernelSession:
    """A started kernel and a blocking client, with a record of iopub traffic."""

    def __init__(self, km: Any, kc: Any, label: str) -> None:
        self.km = km
        self.kc = kc
        self.label = label
        self.log: list[dict[str, Any]] = []
        self.models: dict[str, dict[str, Any]] = {}
        #: Dashboard rows per comm id, kept current from the dashboard's custom messages.
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}

    def _take(self, timeout: float) -> dict[str, Any]:
        msg: dict[str, Any] = self.kc.get_iopub_msg(timeout=timeout)
        self.log.append(msg)
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "comm_open":
            state = dict(content["data"].get("state", {}))
            self.models[content["comm_id"]] = state
            if isinstance(state.get("_rows"), dict):
                self.rows[content["comm_id"]] = dict(state["_rows"])
        elif kind == "comm_msg" and content["data"].get("method") == "update":
            self.models.setdefault(content["comm_id"], {}).update(content["data"].get("state", {}))
        elif kind == "comm_msg" and content["data"].get("method") == "custom":
            self._apply_dashboard_message(content["comm_id"], content["data"].get("content") or {})
        elif kind == "comm_close":
            self.models.pop(content["comm_id"], None)
        return msg

    def _apply_dashboard_message(self, comm_id: str, msg: dict[str, Any]) -> None:
        rows = self.rows.setdefault(comm_id, {})
        if msg.get("type") == "snapshot":
            rows.clear()
            rows.update({r["id"]: r for r in msg.get("rows", [])})
        elif msg.get("type") == "patch":
            for row in msg.get("upsert", []):
                rows[row["id"]] = row
            for task_id, percent in msg.get("progress", []):
                rows.setdefault(task_id, {})["progress"] = percent
            for task_id in msg.get("remove", []):
                rows.pop(task_id, None)

    def row_status(self, dashboard: str, task_id: str) -> str | None:
        """The status a dashboard currently shows for a task."""
        return self.rows.get(dashboard, {}).get(task_id, {}).get("status")

    def execute(self, code: str, *, timeout: float = 30, allow_error: bool = False) -> Reply:
        """Run ``code``; return its reply once the kernel is idle again."""
        start = time.perf_counter()
        msg_id = self.kc.execute(code)
        reply_msg = None
        reply_time = 0.0
        deadline = start + timeout
        iopub: list[dict[str, Any]] = []
        idle = False
        while reply_msg is None or not idle:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"[{self.label}] no reply/idle for {code!r} within {timeout} s")
            if reply_msg is None:
                try:
                    r = self.kc.get_shell_msg(timeout=min(left, 0.05))
                except queue.Empty:
                    pass
                else:
                    if r["parent_header"].get("msg_id") == msg_id:
                        reply_msg = r
                        reply_time = time.perf_counter() - start
            try:
                m = self._take(timeout=0.05 if reply_msg is None else left)
            except queue.Empty:
                continue
            if m["parent_header"].get("msg_id") == msg_id:
                iopub.append(m)
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                    idle = True
        result = Reply(msg_id, reply_msg, reply_time, iopub)
        if result.status != "ok" and not allow_error:
            raise AssertionError(f"[{self.label}] cell failed:\n{code}\n{result.error}")
        return result

    def wait_for(self, predicate: Callable[[], bool], *, timeout: float = 20, what: str = "") -> None:
        """Read iopub until ``predicate()`` holds (it looks at ``log`` / ``models``)."""
        deadline = time.perf_counter() + timeout
        while not predicate():
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"[{self.label}] timed out waiting for {what or predicate}")
            try:
                self._take(timeout=left)
            except queue.Empty:
                pass

    def send_custom(self, comm_id: str, content: dict[str, Any]) -> None:
        """Send a widget custom message as a frontend does (comm_msg, method "custom")."""
        msg = self.kc.session.msg("comm_msg", {
            "comm_id": comm_id, "data": {"method": "custom", "content": content}})
        self.kc.shell_channel.send(msg)

    def children(self, model_id: str) -> list[str]:
        """Model ids of a box's children."""
        return [c.removeprefix("IPY_MODEL_") for c in self.models[model_id]["children"]]

    def output_text(self, model_id: str) -> str:
        """Everything an Output widget model shows, as text (ANSI stripped)."""
        parts = []
        for o in self.models.get(model_id, {}).get("outputs", []):
            if o["output_type"] == "stream":
                parts.append(o["text"])
            elif o["output_type"] == "error":
                parts.append("\n".join(o["traceback"]))
            else:
                parts.append(str(o.get("data", {}).get("text/plain", "")))
        return strip_ansi("".join(parts))


def _kernel_spec_dir(python: str, name: str) -> str:
    root = tempfile.mkdtemp(prefix="tw-kernels-")
    spec_dir = os.path.join(root, "kernels", name)
    os.makedirs(spec_dir)
    with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
        json.dump({"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": name, "language": "python"}, f)
    return os.path.join(root, "kernels")


@pytest.fixture(scope="module", params=["k7", "k6"])
def kernel(request: pytest.FixtureRequest) -> Iterator[KernelSession]:
    """One kernel per ipykernel version per test module, with the extension loaded."""
    jupyter_client = pytest.importorskip("jupyter_client")
    from jupyter_client.kernelspec import KernelSpecManager

    label = request.param
    if label == "k7":
        python = sys.executable
    else:
        python = os.environ.get(K6_ENV, "")
        if not python:
            skip_or_fail(f"{K6_ENV} is not set (a python with ipykernel 6.29 and task_worker)")
        if not os.path.exists(python):
            skip_or_fail(f"{K6_ENV}={python!r} does not exist")
    name = f"tw-{label}"
    ksm = KernelSpecManager(kernel_dirs=[_kernel_spec_dir(python, name)])
    km = jupyter_client.KernelManager(kernel_name=name, kernel_spec_manager=ksm)
    workdir = tempfile.mkdtemp(prefix="tw-kernel-cwd-")
    km.start_kernel(cwd=workdir, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        session = KernelSession(km, kc, label)
        r = session.execute("import ipykernel; print(ipykernel.__version__)")
        major = int(r.stdout.strip().split(".")[0])
        assert major == (7 if label == "k7" else 6), f"{label} runs ipykernel {r.stdout.strip()}"
        session.execute("%load_ext task_worker\nimport asyncio, threading, time, task_worker")
        yield session
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
