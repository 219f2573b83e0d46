"""Helpers shared by the benchmark scripts: timing with median/spread and the JSON result format."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def measure(fn: Callable[[], None], repeats: int, setup: Callable[[], None] | None = None) -> dict:
    """Run *fn* *repeats* times (after *setup* each time); median and spread in seconds."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summary(times)


def summary(times: list[float]) -> dict:
    """Median and spread of wall times in seconds, in the shape :func:`result` takes."""
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": len(times)}


def result(name: str, metric: str, value: dict, baseline: str, baseline_value: dict, unit: str = "s") -> dict:
    return {
        "name": name, "metric": metric, "value": value["median"], "spread": [value["min"], value["max"]],
        "baseline": baseline, "baseline_value": baseline_value["median"],
        "baseline_spread": [baseline_value["min"], baseline_value["max"]],
        "ratio": value["median"] / baseline_value["median"], "unit": unit,
    }


def run(*cmd: str, cwd: Path | None = None, env: dict | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def write_json(path: str | None, results: list[dict]) -> None:
    if path:
        Path(path).write_text(json.dumps({"benchmarks": results}, indent=2) + "\n")


def print_table(results: list[dict]) -> None:
    print(f"{'benchmark':48} {'value':>10} {'baseline':>28} {'ratio':>7}")
    for r in results:
        print(f"{r['name']:48} {r['value']:>9.3f}{r['unit']} {r['baseline'][:18]:>18} "
              f"{r['baseline_value']:>8.3f}{r['unit']} {r['ratio']:>7.2f}")


def ideal_pipelined(stages: list[tuple[float, float]]) -> float:
    """Makespan of the pipeline's schedule with zero overhead and no
    contention: a worker runs pre-ops in order; pre-ops of item i+1 start when
    item i's device stage starts; device+post of item i start when both its
    pre-ops and item i-1 are done. ``stages``: (pre, device+post) per item."""
    pre_done = stages[0][0]
    main_free = 0.0
    for i, (_, device) in enumerate(stages):
        start = max(main_free, pre_done)
        main_free = start + device
        if i + 1 < len(stages):
            pre_done = start + stages[i + 1][0]
    return main_free
