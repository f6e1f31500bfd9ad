"""``%%task --after/--retries`` through real kernels (ipykernel 7 and 6): the dependent's view
says what it waits for, then the retry countdown, and the chain completes in order."""

from __future__ import annotations

from typing import Any

from .conftest import KernelSession, Reply


def _dashboard(kernel: KernelSession, reply: Reply) -> str:
    (box,) = reply.widget_ids()
    dashboard, _output = kernel.children(box)
    return dashboard


def _row(kernel: KernelSession, dashboard: str, task_id: str) -> dict[str, Any]:
    return kernel.rows.get(dashboard, {}).get(task_id, {})


def _details_seen(kernel: KernelSession, dashboard: str) -> list[str]:
    """Every note the dashboard sent for its rows, in order."""
    seen = []
    for msg in kernel.log:
        content = msg["content"]
        if msg["msg_type"] != "comm_msg" or content.get("comm_id") != dashboard:
            continue
        data = content["data"].get("content") or {}
        for row in data.get("upsert", []) + data.get("rows", []):
            if row.get("note"):
                seen.append(row["note"])
    return seen


def test_after_and_retries_in_a_kernel(kernel: KernelSession) -> None:
    kernel.execute("kc_gate = threading.Event()\nkc_tries = []")
    kernel.execute("%%task -n kc_load\nkc_gate.wait(60)\nkc_rows = [1, 2, 3]")
    train = kernel.execute(
        "%%task -n kc_train --after kc_load --retries 2 --retry-delay 1.5\n"
        "kc_tries.append(len(kc_rows))\n"
        "if len(kc_tries) == 1:\n"
        "    raise ConnectionError('flaky step')\n"
        "sum(kc_rows)\n")
    dashboard = _dashboard(kernel, train)
    kernel.wait_for(lambda: _row(kernel, dashboard, "kc_train").get("note") == "waiting for kc_load",
                    what="the waiting text in the dependent's view")
    assert _row(kernel, dashboard, "kc_train")["status"] == "pending"
    kernel.execute("kc_gate.set()")
    kernel.wait_for(lambda: _row(kernel, dashboard, "kc_train").get("status") == "completed",
                    timeout=60, what="the dependent completed after one retry")
    seen = _details_seen(kernel, dashboard)
    assert any(t.startswith("attempt 2/3, retrying in ") for t in seen), seen
    assert _row(kernel, dashboard, "kc_train")["note"] == "completed on attempt 2/3"
    check = kernel.execute(
        "info = task_worker.get_worker().get_task_info('kc_train')\n"
        "print(info.result, info.attempt, info.attempt_errors, kc_tries)")
    assert check.stdout.strip() == "6 2 ('ConnectionError: flaky step',) [3, 3]"

    # A failed dependency cancels the dependent; %task cancel names the dependents it takes along.
    kernel.execute("kc_gate2 = threading.Event()")
    kernel.execute("%%task -n kc_head\nkc_gate2.wait(60)\nraise OSError('disk full')")
    tail = kernel.execute("%%task -n kc_tail --after kc_head\nprint('never')")
    tail_dash = _dashboard(kernel, tail)
    kernel.execute("kc_gate2.set()")
    kernel.wait_for(lambda: _row(kernel, tail_dash, "kc_tail").get("status") == "cancelled",
                    timeout=60, what="the dependent of a failed task cancelled")
    assert _row(kernel, tail_dash, "kc_tail")["note"] == "cancelled: dependency 'kc_head' failed"
    refused = kernel.execute("%%task -n kc_late --after kc_head\n1", allow_error=True)
    assert "already failed" in refused.error or "already failed" in refused.stderr
