"""Helpers shared by the benchmark scripts: timing, subprocess cold starts, report tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best_rate(fn, items: int, *, repeats: int = 5, min_time: float = 0.2) -> dict:
    """Calls fn() in a loop for >= min_time per repeat; returns median / best items per second."""
    fn()  # warm-up (compile, caches)
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        rates.append(items * n / dt)
    return {"median_per_s": statistics.median(rates), "best_per_s": max(rates), "repeats": repeats}


def run_python(code: str, env: dict | None = None, timeout: float = 900) -> dict:
    """Runs code in a fresh interpreter (truly cold) and parses the JSON it prints last."""
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[f"{c:,.0f}" if isinstance(c, float) and abs(c) >= 100 else (f"{c:.3g}" if isinstance(c, float) else str(c)) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in cells[1:]])


def write_json(path: str | None, result: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
