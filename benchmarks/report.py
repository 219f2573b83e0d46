"""Run every `benchmarks/bench_*.py` and write one report: bench-report.json and bench-report.md
(metric, this project, baseline, ratio, spread, machine info) in the working directory.

Each benchmark compares against its baseline in the same run and writes
`{"benchmarks": [...]}` with `--json PATH`; this script only collects.
Usage: python benchmarks/report.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _vllm_tree() -> str:
    out = subprocess.run([sys.executable, "-m", "engine_overlay", "--project", str(ROOT), "--format", "json",
                          "fetch", "vllm"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["tree"]


def extra_args(name: str, quick: bool) -> list[str]:
    """Per-script arguments (where a script needs an input or can run shorter)."""
    if name == "bench_check_markers":
        return ["--tree", _vllm_tree()]
    if quick and name in ("bench_apply", "bench_preview"):
        return ["--repeats", "3"]
    if quick and name in ("bench_vision_npu", "bench_scale"):
        return ["--quick"]
    return []


def machine() -> dict:
    def version(cmd: list[str]) -> str | None:
        if shutil.which(cmd[0]) is None:
            return None
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return (proc.stdout or proc.stderr).splitlines()[0].strip() if proc.returncode == 0 else None

    return {
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "git": version(["git", "--version"]),
        "rg": version(["rg", "--version"]), "quilt": version(["quilt", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def markdown(report: dict) -> str:
    lines = ["Ratio = this project / baseline (for times: below 1 is faster than the baseline).", "",
             "| benchmark | metric | this project | baseline | baseline value | ratio | spread |",
             "|---|---|---|---|---|---|---|"]
    for item in report["benchmarks"]:
        if "error" in item:
            lines.append(f"| {item['script']} | failed | — | — | — | — | {item['error'][:80]} |")
            continue
        unit = item.get("unit", "s")
        if item.get("baseline_value") is None or item.get("ratio") is None:
            lines.append(f"| {item['name']} | {item['metric']} | {item['value']:.4g} {unit} | — | — | — | |")
            continue
        spread = item.get("spread")
        spread_text = f"{spread[0]:.4g}–{spread[1]:.4g} {unit}" if spread else ""
        lines.append(f"| {item['name']} | {item['metric']} | {item['value']:.4g} {unit} | {item['baseline']} | "
                     f"{item['baseline_value']:.4g} {unit} | {item['ratio']:.3g} | {spread_text} |")
    info = report["machine"]
    lines += ["", f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}, {info['git']}, "
              f"rg: {info['rg'] or 'absent'}, quilt: {info['quilt'] or 'absent'}; {info['date']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", nargs="*", help="script names (bench_apply, ...)")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem in args.only]
    report = {"machine": machine(), "benchmarks": []}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for script in scripts:
            out = Path(tmp) / f"{script.stem}.json"
            print(f"== {script.stem}", flush=True)
            try:
                cmd = [sys.executable, str(script), "--json", str(out), *extra_args(script.stem, args.quick)]
                subprocess.run(cmd, check=True, cwd=ROOT)
                for item in json.loads(out.read_text())["benchmarks"]:
                    item = {"script": script.stem, **item}
                    if item.get("baseline_value"):
                        # one convention for the whole report: this project / baseline
                        item["ratio"] = item["value"] / item["baseline_value"]
                    report["benchmarks"].append(item)
            except (subprocess.CalledProcessError, OSError, ValueError, KeyError) as exc:
                failed += 1
                report["benchmarks"].append({"script": script.stem, "error": str(exc)})
    Path("bench-report.json").write_text(json.dumps(report, indent=2) + "\n")
    Path("bench-report.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
