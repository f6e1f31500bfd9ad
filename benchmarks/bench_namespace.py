"""What a %%task body's own namespace costs: tight loops in a plain dict (a normal
cell's globals) against a ``TaskNamespace`` over the same notebook dict.

    python benchmarks/bench_namespace.py

Three loops of N iterations: at the top level of the body (every iteration
assigns two names), in a function defined in the body reading a builtin and a
notebook name each iteration (global lookups), and in a function using only
locals. Best of 5 runs each.
"""

from __future__ import annotations

import builtins
import sys
import time
from typing import Any

from task_worker._namespace import task_namespace

N = 1_000_000

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


def best(code: Any, ns: dict[str, Any]) -> float:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        exec(code, ns)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    top = compile(TOP_LEVEL, "<body>", "exec")
    define = compile(DEFINE, "<body>", "exec")
    calls = {name: compile(f"{name}(N)", "<body>", "exec") for name in ("with_globals", "locals_only")}
    results: dict[str, dict[str, float]] = {}
    for label in ("normal cell", "%%task body"):
        user: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", "N": N, "K": 1}
        ns = user if label == "normal cell" else task_namespace(user)
        exec(define, ns)
        results[label] = {
            "top-level loop": best(top, ns),
            "function, global lookups": best(calls["with_globals"], ns),
            "function, locals only": best(calls["locals_only"], ns),
        }
    print(f"Python {sys.version.split()[0]}, N = {N:,}")
    print(f"{'loop':28} {'cell (ms)':>10} {'task (ms)':>10} {'ratio':>6}")
    for what, cell in results["normal cell"].items():
        task = results["%%task body"][what]
        print(f"{what:28} {cell * 1000:10.1f} {task * 1000:10.1f} {task / cell:6.2f}")


if __name__ == "__main__":
    main()
