"""`overlay apply` vs `git am -3` of the same patches on the same vLLM tree, in one run.

Two series: the project's vLLM series, and a synthetic 50-patch series (one small
change each in 50 files of the vLLM tree). Both tools start from a fresh clone of
the fetched upstream tree each repeat and produce one commit per patch.
Usage: python benchmarks/bench_apply.py [--repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import measure, print_table, result, run, write_json  # noqa: E402

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


def bench(tree: Path, series: Path, work: Path, repeats: int, label: str) -> dict:
    names = [line.split()[0] for line in (series / "series").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    target = work / "target"

    def fresh():
        shutil.rmtree(target, ignore_errors=True)
        run("git", "clone", "-q", "--no-checkout", str(tree), str(target))
        run("git", "checkout", "-q", "-b", "work", "upstream/vllm-0.32.0", cwd=target)

    def overlay():
        run(sys.executable, "-m", "engine_overlay", "apply", "--series", str(series), "--checkout", str(target))

    def git_am():
        run("git", "am", "-q", "-3", *[str(series / n) for n in names], cwd=target, env=ENV)

    ours = measure(overlay, repeats, fresh)
    base = measure(git_am, repeats, fresh)
    return result(f"apply {label} ({len(names)} patches)", "wall time", ours, "git am -3", base)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patches", type=int, default=50)
    parser.add_argument("--json")
    args = parser.parse_args()
    tree = fetched_tree()
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        work = Path(tmp)
        results = [
            bench(tree, project_series(work), work, args.repeats, "vLLM series"),
            bench(tree, synthetic_series(tree, work, args.patches), work, args.repeats, "synthetic series"),
        ]
    print_table(results)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
