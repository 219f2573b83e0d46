"""`overlay apply` vs `git am -3` of the same patches on the same vLLM tree, in one run.

Two series: the project's vLLM series, and a synthetic 50-patch series (one small
change each in 50 files of the vLLM tree). Both tools start from a fresh, settled
clone of the fetched upstream tree each repeat (the two alternate, so load on the
machine hits both alike) and produce one commit per patch.

Also reported: the cost of each further patch (the slope between the two series,
start-up removed), and two floors measured on the same trees: the start-up of any
click-based Python CLI (the interpreter plus `import click`), and the git work any
apply that refuses a dirty tree and works on its own branch must do (a `git status`
and a branch switch that rewrites the patched files), each against `git am -3`.
Usage: python benchmarks/bench_apply.py [--repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import measure, print_table, result, run, summary, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b"}


def fetched_tree() -> Path:
    out = run(sys.executable, "-m", "engine_overlay", "--project", str(ROOT), "--format", "json", "fetch", "vllm")
    return Path(json.loads(out)["tree"])


def synthetic_series(tree: Path, work: Path, count: int) -> Path:
    """`count` format-patch files, each changing one line in a different .py file."""
    scratch = work / "synthetic"
    run("git", "clone", "-q", str(tree), str(scratch))
    run("git", "checkout", "-q", "-b", "synthetic", "upstream/vllm-0.32.0", cwd=scratch)
    files = sorted(p for p in (scratch / "vllm" / "model_executor" / "models").glob("*.py")
                   if p.stat().st_size > 2000)[:count]
    for number, path in enumerate(files, 1):
        lines = path.read_text().splitlines(keepends=True)
        lines.insert(len(lines) // 2, f"# synthetic downstream change {number}\n")
        path.write_text("".join(lines))
        run("git", "commit", "-qam", f"synthetic change {number}\n\nUpstream-Status: Inappropriate [benchmark]",
            cwd=scratch, env=ENV)
    out = work / "synthetic-patches"
    run("git", "format-patch", "-q", "--zero-commit", "--no-signature", "-o", str(out),
        "upstream/vllm-0.32.0..synthetic", cwd=scratch)
    (out / "series").write_text("".join(p.name + "\n" for p in sorted(out.glob("*.patch"))))
    return out


def project_series(work: Path, version: str = "0.32.0") -> Path:
    """The vLLM series for *version* (patches whose Applies-To excludes it left out)."""
    from packaging.specifiers import SpecifierSet

    from engine_overlay.series import parse_patch, parse_series

    src = ROOT / "patches" / "vllm"
    out = work / "vllm-patches"
    shutil.copytree(src, out)
    series, _ = parse_series(out / "series")
    keep = []
    for entry in series.entries:
        spec = parse_patch(out / entry.name).applies_to
        if spec is None or SpecifierSet(spec).contains(version, prereleases=True):
            keep.append(entry.name)
    (out / "series").write_text("".join(f"{name}\n" for name in keep))
    return out


def python_env(work: Path) -> dict:
    """The environment `overlay` runs in: bytecode cached as in any installed package.

    Some machines set PYTHONDONTWRITEBYTECODE=1, which would make every run compile
    the whole package from source again; the cache goes to a scratch directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def bench(tree: Path, series: Path, work: Path, repeats: int, label: str) -> tuple[dict, dict, dict, dict, int]:
    """Median wall times of both tools, measured alternately on identical fresh checkouts:
    (result row, ours, git am, the git work any apply needs, number of patches)."""
    names = [line.split()[0] for line in (series / "series").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    target = work / "target"
    env = python_env(work)

    def fresh():
        shutil.rmtree(target, ignore_errors=True)
        run("git", "clone", "-q", "--no-checkout", str(tree), str(target))
        run("git", "checkout", "-q", "-b", "work", "upstream/vllm-0.32.0", cwd=target)
        # settle the checkout as any tree a user works in is: files written in the same
        # second as the index are "racily clean" and make every git command of either
        # tool re-hash them until some command writes the index in a later second
        # (`git status` does; `git update-index --refresh` does not when nothing changed)
        time.sleep(1.01 - time.time() % 1)
        run("git", "status", "--porcelain", cwd=target)
        os.sync()  # the clone's writes are flushed now, not during the timed run

    def overlay():
        run(sys.executable, "-m", "engine_overlay", "apply", "--series", str(series), "--checkout", str(target),
            env=env)

    def git_am():
        run("git", "am", "-q", "-3", *[str(series / n) for n in names], cwd=target, env=ENV)

    def required_git_work():
        """On the tree git am just patched: the dirty check and a switch to a branch that
        differs in the patched files (back to the upstream commit, the same work as forward)."""
        run("git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=all", cwd=target)
        run("git", "checkout", "-q", "-b", "floor", "upstream/vllm-0.32.0", cwd=target)

    fresh()
    overlay()  # warm-up: bytecode cache, page cache
    ours, base, floor = [], [], []
    for _ in range(repeats):
        for fn, times in ((overlay, ours), (git_am, base), (required_git_work, floor)):
            if fn is not required_git_work:
                fresh()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    ours_m, base_m = summary(ours), summary(base)
    row = result(f"apply {label} ({len(names)} patches)", "wall time", ours_m, "git am -3", base_m)
    return row, ours_m, base_m, summary(floor), len(names)


def startup_floor(work: Path, repeats: int) -> dict:
    """What any click-based Python CLI pays before doing anything: the interpreter plus click."""
    env = python_env(work)
    return measure(lambda: run(sys.executable, "-c", "import click", env=env), repeats)


def per_patch(large: dict, small: dict, extra: int) -> dict:
    """Cost of each further patch: the slope between two series, fixed start-up cost removed."""
    slope = {k: (large[k] - small[k]) / extra for k in ("median", "min", "max")}
    slope["min"], slope["max"] = sorted((slope["min"], slope["max"]))
    return slope


def _added(a: dict, b: dict) -> dict:
    """Two independent costs paid one after the other."""
    return {k: a[k] + b[k] for k in ("median", "min", "max")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patches", type=int, default=50)
    parser.add_argument("--json")
    args = parser.parse_args()
    tree = fetched_tree()
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        work = Path(tmp)
        small, small_ours, small_base, git_floor, small_n = bench(tree, project_series(work), work,
                                                                  args.repeats, "vLLM series")
        large, large_ours, large_base, _, large_n = bench(tree, synthetic_series(tree, work, args.patches), work,
                                                          args.repeats, "synthetic series")
        floor = startup_floor(work, args.repeats)
    extra = large_n - small_n
    results = [
        small, large,
        result("apply: cost per further patch", "wall time / patch", per_patch(large_ours, small_ours, extra),
               "git am -3", per_patch(large_base, small_base, extra)),
        result("start-up floor (python + import click)", "wall time", floor, "git am -3 vLLM series", small_base),
        result("git floor (status + branch switch)", "wall time", git_floor, "git am -3 vLLM series", small_base),
        result("both floors together", "wall time", _added(floor, git_floor), "git am -3 vLLM series", small_base),
    ]
    print_table(results)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
