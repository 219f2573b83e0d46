"""check-markers over a whole tree vs ripgrep counting the same tags on the same files.

Usage: python benchmarks/bench_check_markers.py --tree DIR [--repeats 5] [--json PATH]

The timed step is what `overlay check-markers --against SNAPSHOT` does: scan the
tree, read the snapshot, compare (the snapshot is taken once beforehand, untimed).
It is measured twice: with the ripgrep pre-filter (the default: the `ripgrep`
dependency puts `rg` beside the Python running the tool) and with the pure-Python
bytes pre-filter. The baseline is one `rg --count-matches` run over the same globs.
Medians of --repeats runs.

Without rg the baseline and the fast path cannot be measured: under CI=true that is a
failure (exit 2); elsewhere only the pure-Python pre-filter is measured, with no baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine_overlay.markers.check import check_markers
from engine_overlay.markers.grammar import MarkerConfig
from engine_overlay.markers.snapshot import find_rg, list_files, take_snapshot


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rg_command(rg: str, tree: Path, config: MarkerConfig) -> list[str]:
    cmd = [rg, "--no-config", "--count-matches", "--fixed-strings", "--no-ignore", "--hidden"]
    for tag in sorted(set(config.tags) | set(config.inline_tags)):
        cmd += ["-e", tag]
    for g in config.globs:
        cmd += ["--glob", g]
    return [*cmd, str(tree)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, required=True, help="tree to check (e.g. the fetched vLLM 0.32.0 sources)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write results as {'benchmarks': [...]}")
    args = ap.parse_args(argv)
    rg_path = find_rg()
    if rg_path is None:
        message = ("rg (ripgrep) not found beside this Python or on PATH: no baseline and no fast path; "
                   "install the tool with its dependencies (pip install -e .) or `pip install ripgrep`")
        if os.environ.get("CI") == "true":
            print(f"error: {message}", file=sys.stderr)
            return 2
        print(f"warning: {message}; measuring the pure-Python pre-filter only", file=sys.stderr)
    config = MarkerConfig()
    files = list_files(args.tree, None, config)
    with tempfile.TemporaryDirectory() as tmp:
        snap_path = Path(tmp) / "snapshot.json"
        snap = take_snapshot(args.tree, None, config)
        snap.write(snap_path)

        def run_check(use_rg):
            report = check_markers(args.tree, snap_path, config, use_rg=use_rg)
            assert report.ok, "a tree compared with its own snapshot must be intact"

        pure = median_seconds(lambda: run_check(False), args.repeats)
        if rg_path is not None:
            cmd = rg_command(rg_path, args.tree, config)
            rg = median_seconds(lambda: subprocess.run(cmd, capture_output=True), args.repeats)
            fast = median_seconds(lambda: run_check(None), args.repeats)

    print(f"tree: {args.tree} ({len(files)} files matching {', '.join(config.globs)}, {len(snap.blocks)} marked blocks)")
    if rg_path is None:
        print(f"check-markers (pure-Python pre-filter): {pure:.3f} s  (no rg: no baseline)")
        if args.json:
            row = {"name": "check_markers_tree_pure_python", "metric": "median_wall_time", "value": round(pure, 4),
                   "baseline": "rg --count-matches", "baseline_value": None, "ratio": None, "unit": "s"}
            args.json.write_text(json.dumps({"benchmarks": [row]}, indent=2) + "\n")
        return 0
    print(f"rg: {rg_path}")
    print(f"rg --count-matches:                   {rg:.3f} s")
    print(f"check-markers (rg pre-filter):        {fast:.3f} s  ratio {fast / rg:.2f}x")
    print(f"check-markers (pure-Python pre-filter): {pure:.3f} s  ratio {pure / rg:.2f}x")
    if args.json:
        rows = [
            {"name": "check_markers_tree", "metric": "median_wall_time", "value": round(fast, 4),
             "baseline": "rg --count-matches", "baseline_value": round(rg, 4), "ratio": round(fast / rg, 2), "unit": "s"},
            {"name": "check_markers_tree_pure_python", "metric": "median_wall_time", "value": round(pure, 4),
             "baseline": "rg --count-matches", "baseline_value": round(rg, 4), "ratio": round(pure / rg, 2), "unit": "s"},
        ]
        args.json.write_text(json.dumps({"benchmarks": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
