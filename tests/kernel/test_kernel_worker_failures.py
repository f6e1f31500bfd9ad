"""A task's failure can never kill a real kernel (ipykernel 7 and 6), whatever it raised
and whichever API looks at it afterwards."""

from __future__ import annotations

from .conftest import KernelSession


def test_a_task_raising_system_exit_never_kills_the_kernel_through_its_future(
        kernel: KernelSession) -> None:
    kernel.execute(
        "_kwf_worker = task_worker.AsyncTaskWorker()\n"
        "await _kwf_worker.start()\n"
        "async def _kwf_exits():\n"
        "    raise SystemExit(2)\n"
        "def _kwf_exits_in_thread():\n"
        "    raise KeyboardInterrupt\n"
        "_kwf_ids = [await _kwf_worker.add_task(_kwf_exits),\n"
        "            await _kwf_worker.add_task(_kwf_exits_in_thread)]\n"
        "await _kwf_worker.join()\n")
    # A future nobody awaits: it used to re-raise the SystemExit out of the kernel's loop.
    kernel.execute("_kwf_worker.get_task_futures(_kwf_ids)\n", timeout=20)
    r = kernel.execute(
        "for _kwf_fut in _kwf_worker.get_task_futures(_kwf_ids):\n"
        "    try:\n"
        "        await _kwf_fut\n"
        "    except RuntimeError as e:\n"
        "        print('wrapped', type(e.__cause__).__name__)\n", timeout=20)
    assert r.stdout.split("\n")[:2] == ["wrapped SystemExit", "wrapped KeyboardInterrupt"]
    r = kernel.execute("print([i.status.value for i in _kwf_worker.get_all_tasks()], 1 + 1)", timeout=20)
    assert r.stdout.strip() == "['failed', 'failed'] 2"
    kernel.execute("await _kwf_worker.stop()")
