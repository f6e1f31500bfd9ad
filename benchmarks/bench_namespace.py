"""What a %%task body's own namespace costs: tight loops in a plain dict (a normal
cell's globals) against a ``TaskNamespace`` over the same notebook dict.

    python benchmarks/bench_namespace.py

Three loops of N iterations: at the top level of the body (every iteration
assigns two names), in a function defined in the body reading a builtin and a
notebook name each iteration (global lookups), and in a function using only
locals. Best of 7 runs, cell and task interleaved. Then what one ``sync()`` (the
copy to the notebook that runs before each cell and every 0.1 s while bodies
run) costs for a body that holds 1,000 names, none or all of them changed.
"""

from __future__ import annotations

import builtins
import sys
import time
from typing import Any

from task_worker._namespace import TaskNamespace, task_namespace

N = 1_000_000
REPEAT = 7

TOP_LEVEL = """
total = 0
for i in range(N):
    total += i
"""

DEFINE = """
def with_globals(n):
    s = 0
    for j in range(n):
        s += abs(j) + K
    return s

def locals_only(n):
    s = 0
    for j in range(n):
        s += j
    return s
"""


def run_once(code: Any, ns: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    exec(code, ns)
    return time.perf_counter() - t0


def main() -> None:
    top = compile(TOP_LEVEL, "<body>", "exec")
    define = compile(DEFINE, "<body>", "exec")
    loops = {
        "top-level loop": top,
        "function, global lookups": compile("with_globals(N)", "<body>", "exec"),
        "function, locals only": compile("locals_only(N)", "<body>", "exec"),
    }
    namespaces: dict[str, dict[str, Any]] = {}
    for label in ("cell", "task"):
        user: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", "N": N, "K": 1}
        namespaces[label] = user if label == "cell" else task_namespace(user)
        exec(define, namespaces[label])
    print(f"Python {sys.version.split()[0]}, N = {N:,}, best of {REPEAT} interleaved runs")
    print(f"{'loop':28} {'cell (ms)':>10} {'task (ms)':>10} {'ratio':>6}")
    for what, code in loops.items():
        best = {"cell": float("inf"), "task": float("inf")}
        for _ in range(REPEAT):  # interleaved, so both see the same machine load
            for label, ns in namespaces.items():
                best[label] = min(best[label], run_once(code, ns))
        print(f"{what:28} {best['cell'] * 1000:10.1f} {best['task'] * 1000:10.1f} "
              f"{best['task'] / best['cell']:6.2f}")
    task = namespaces["task"]
    assert isinstance(task, TaskNamespace)
    names = [f"name_{k}" for k in range(1000)]
    for name in names:
        dict.__setitem__(task, name, object())
    task.sync()
    for changed in (False, True):
        best_sync = float("inf")
        for _ in range(REPEAT):
            if changed:
                for name in names:
                    dict.__setitem__(task, name, object())
            t0 = time.perf_counter()
            task.sync()
            best_sync = min(best_sync, time.perf_counter() - t0)
        label = "all changed" if changed else "none changed"
        print(f"sync of 1,000 names, {label:13} {best_sync * 1e6:8.0f} us")


if __name__ == "__main__":
    main()
