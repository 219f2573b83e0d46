"""`overlay preview-upgrade vllm --to 0.33.0` vs a plain `git am -3` trial of the same series
on a scratch clone of the 0.33.0 tree (clone, checkout, am, abort), in one run."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import measure, print_table, result, run, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def overlay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine_overlay", "--project", str(ROOT), *args],
                          capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--from-version", default="0.32.0")
    parser.add_argument("--to-version", default="0.33.0")
    parser.add_argument("--json")
    args = parser.parse_args()
    trees = {}
    for version in (args.from_version, args.to_version):
        trees[version] = Path(json.loads(overlay("--format", "json", "fetch", "vllm", "--version", version)
                                         .stdout)["tree"])
    series = ROOT / "patches" / "vllm"
    names = [line.split()[0] for line in (series / "series").read_text().splitlines()
             if line.strip() and not line.startswith("#")]

    def preview():
        overlay("preview-upgrade", "vllm", "--from", args.from_version, "--to", args.to_version)

    with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp:
        scratch = Path(tmp) / "scratch"

        def git_am_trial():
            shutil.rmtree(scratch, ignore_errors=True)
            run("git", "clone", "-q", "--shared", "--no-checkout", str(trees[args.to_version]), str(scratch))
            run("git", "checkout", "-q", "-b", "trial", f"upstream/vllm-{args.to_version}", cwd=scratch)
            subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "am", "-q", "-3",
                            *[str(series / n) for n in names]], cwd=scratch, capture_output=True)
            subprocess.run(["git", "am", "--abort"], cwd=scratch, capture_output=True)

        ours = measure(preview, args.repeats)
        base = measure(git_am_trial, args.repeats)
    results = [result(f"preview-upgrade vllm {args.from_version} -> {args.to_version}", "wall time", ours,
                      "git am -3 trial", base)]
    print_table(results)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
