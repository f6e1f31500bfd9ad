"""Benchmark output routing under a flood: kernel reply latency while a ``%%task``
prints 100,000 short lines, and the task's duration against the same prints in a
foreground cell.

    python benchmarks/bench_output_flood.py [--lines 100000] [--python PYTHON] [--runs 3]

A real ipykernel (``--python``, default this interpreter) driven with
jupyter_client, with ``%load_ext task_worker``. Measured:

* foreground: a plain cell printing ``--lines`` lines (time inside the kernel,
  and until its reply and ``idle`` reached this client);
* flood: ``%%task`` with the same loop (a thread body; its output goes to the
  task's Output widget). While it runs, this client sends ``1 + 1`` cells one
  after the other (each once the previous replied, 20 ms apart) and records how
  long each takes to reply: p50 / p99 / max. The task's duration is its
  started-to-completed time from the worker; "widget" is the time until the last
  line printed is in the Output widget's state as seen by this client.
* ``TaskOutput.flush`` is timed inside the kernel: how long each flush (joining
  the text and sending the widget state) took on the loop, wall time, so it
  includes waiting for the GIL while the task's thread prints.

The ratios printed are task duration / foreground duration, and the worst reply
against the 0.25 s target.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import queue
import sys
import tempfile
import time
from typing import Any

TARGET_REPLY = 0.25

# Times every TaskOutput.flush (it runs on the kernel's loop and sends the widget state).
KERNEL_SETUP = r"""
import time, task_worker
from task_worker import _output
_flushes = []
_orig_flush = _output.TaskOutput.flush

def _timed_flush(self):
    t = time.perf_counter()
    _orig_flush(self)
    _flushes.append(time.perf_counter() - t)

_output.TaskOutput.flush = _timed_flush
"""


class Kernel:
    """A started kernel, a blocking client and a mirror of widget ``outputs``."""

    def __init__(self, python: str) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        self.tmp = tempfile.TemporaryDirectory()
        spec = pathlib.Path(self.tmp.name) / "kernels" / "bench"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "bench", "language": "python"}))
        ksm = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
        self.km = KernelManager(kernel_name="bench", kernel_spec_manager=ksm)
        self.km.start_kernel(cwd=self.tmp.name,
                             env={**os.environ, "IPYTHONDIR": str(pathlib.Path(self.tmp.name) / "ipy")})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        #: comm id -> the ``outputs`` state of Output widgets.
        self.outputs: dict[str, list[dict[str, Any]]] = {}
        self.stream_chars = 0

    def _take(self, timeout: float) -> dict[str, Any]:
        msg: dict[str, Any] = self.kc.get_iopub_msg(timeout=timeout)
        kind, content = msg["msg_type"], msg["content"]
        if kind in ("comm_open", "comm_msg"):
            state = content.get("data", {}).get("state", {})
            if "outputs" in state:
                self.outputs[content["comm_id"]] = state["outputs"]
        elif kind == "stream":
            self.stream_chars += len(content["text"])
        return msg

    def run(self, code: str, timeout: float = 300) -> tuple[float, list[dict[str, Any]]]:
        """Execute ``code``; (seconds until its reply, its iopub messages up to ``idle``)."""
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code)
        reply_at = None
        idle = False
        mine: list[dict[str, Any]] = []
        deadline = t0 + timeout
        while reply_at is None or not idle:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no reply for {code!r}")
            if reply_at is None:
                try:
                    reply = self.kc.get_shell_msg(timeout=0.005)
                except queue.Empty:
                    pass
                else:
                    if reply["parent_header"].get("msg_id") == msg_id:
                        reply_at = time.perf_counter() - t0
                        if reply["content"]["status"] != "ok":
                            raise RuntimeError("\n".join(reply["content"].get("traceback", [])))
            try:
                msg = self._take(timeout=0.005 if reply_at is None else 1.0)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                mine.append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
        return reply_at, mine

    def value(self, expr: str) -> Any:
        _, io = self.run(f"print(__import__('json').dumps({expr}))")
        text = "".join(m["content"]["text"] for m in io if m["msg_type"] == "stream")
        return json.loads(text.strip().splitlines()[-1])

    def drain(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            try:
                self._take(timeout=left)
            except queue.Empty:
                return

    def widget_text_ends_with(self, suffix: str) -> bool:
        for outputs in self.outputs.values():
            streams = [o for o in outputs if o.get("output_type") == "stream"]
            if streams and streams[-1]["text"].endswith(suffix):
                return True
        return False

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        self.tmp.cleanup()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def foreground(k: Kernel, lines: int) -> dict[str, float]:
    reply, _ = k.run(f"_t0 = time.perf_counter()\nfor _i in range({lines}):\n    print(_i)\n"
                     "_fg = time.perf_counter() - _t0")
    return {"kernel": float(k.value("_fg")), "reply": reply}


def flood(k: Kernel, lines: int, run: int) -> dict[str, Any]:
    name = f"flood{run}"
    k.outputs.clear()
    t0 = time.perf_counter()
    k.run(f"%%task -n {name}\nfor _j in range({lines}):\n    print(_j)\n")
    latencies: list[float] = []
    status = "running"
    while status in ("pending", "running"):
        for _ in range(5):
            latencies.append(k.run("1 + 1")[0])
            time.sleep(0.02)
        status = k.value(f"task_worker.get_worker().get_task_info({name!r}).status.value")
    seen_last = time.perf_counter()
    deadline = seen_last + 60
    while not k.widget_text_ends_with(f"\n{lines - 1}\n") and time.perf_counter() < deadline:
        k.drain(0.05)
    widget = time.perf_counter() - t0 if k.widget_text_ends_with(f"\n{lines - 1}\n") else float("nan")
    info = k.value(f"(lambda i: [i.status.value, i.elapsed])"
                   f"(task_worker.get_worker().get_task_info({name!r}))")
    return {"status": info[0], "task": float(info[1]), "widget": widget, "latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--python", default=sys.executable, help="the kernel's interpreter")
    parser.add_argument("--runs", type=int, default=3, help="flood runs (latencies pooled)")
    opts = parser.parse_args()

    k = Kernel(os.path.abspath(opts.python) if os.sep in opts.python else opts.python)
    try:
        k.run("%load_ext task_worker\nimport ipykernel")
        k.run(KERNEL_SETUP)
        version = k.value("ipykernel.__version__")
        fg = foreground(k, opts.lines)
        runs = [flood(k, opts.lines, i) for i in range(opts.runs)]
        flushes = k.value("[len(_flushes), sorted(_flushes)[len(_flushes) // 2], max(_flushes)]")
    finally:
        k.close()

    lat = [x for r in runs for x in r["latencies"]]
    task = min(r["task"] for r in runs)
    print(f"\noutput flood: {opts.lines:,} lines, ipykernel {version}, "
          f"python {sys.version.split()[0]} (client)")
    print(f"foreground cell printing them: {fg['kernel']:.2f} s in the kernel, "
          f"{fg['reply']:.2f} s to its reply")
    for i, r in enumerate(runs):
        print(f"%%task run {i}: {r['status']}, {r['task']:.2f} s (started to completed), "
              f"last line in the widget after {r['widget']:.2f} s")
    print(f"`1 + 1` replies during the flood (n={len(lat)}): p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
    print(f"TaskOutput.flush on the kernel's loop (n={flushes[0]}): median {flushes[1] * 1000:.1f} ms, "
          f"max {flushes[2] * 1000:.1f} ms")
    print(f"ratios: task / foreground = {task / fg['kernel']:.2f}x; "
          f"max reply / {TARGET_REPLY:g} s target = {max(lat) / TARGET_REPLY:.2f}")


if __name__ == "__main__":
    main()
