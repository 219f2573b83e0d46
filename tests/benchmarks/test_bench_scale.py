"""benchmarks/bench_scale.py at a tiny size: its generator and its own checks (every tool gives the
same tree, and the generator's model of it; check-markers agrees with itself). Nothing is timed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from engine_overlay.markers.snapshot import find_rg
from helpers import git, require_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_scale  # noqa: E402


@pytest.fixture
def small(tmp_path):
    require_tool(shutil.which("quilt"), "quilt", "apt-get install quilt")
    require_tool(find_rg(), "rg (the `ripgrep` dependency)", "pip install -e . installs it")
    gen = bench_scale.generate(tmp_path / "work", files=200, patches=20, marked=10)
    return gen, bench_scale.checkout(gen, tmp_path / "target")


def test_the_generated_tree_and_series(small):
    gen, target = small
    assert len(gen.names) == 20 and len(gen.marked) == 10
    assert len(git(target, "ls-files").split()) == 200
    patches = [(gen.series / name).read_text() for name in gen.names]
    assert all(p.count("diff --git ") == 3 for p in patches)  # three files each, one hunk per file
    assert all(p.count("\n@@ ") == 3 for p in patches)
    assert [i for i, p in enumerate(patches, 1) if "new file mode" in p] == [10, 20]  # every 10th
    assert sum("Omni-new" in (target / rel).read_text() for rel in gen.marked) == 10


def test_every_tool_gives_the_generators_tree(small):
    gen, target = small
    times, peaks = bench_scale.bench_apply(gen, target, dict.fromkeys(bench_scale.tools(gen, target), 1))
    assert set(times) == {"overlay apply", "git am -3", "quilt push -a", "GNU patch -p1 loop (no commits)"}
    assert all(len(v) == 1 for v in times.values()) and all(len(v) == 1 for v in peaks.values())
    assert git(target, "status", "--porcelain") == "" and git(target, "branch", "--show-current").strip() == "work"


def test_a_tool_that_leaves_another_tree_fails_the_run(small, monkeypatch):
    gen, target = small
    real = bench_scale.tools

    def tools(gen, target):  # the patch loop stops one patch early
        commands = real(gen, target)
        (gen.series / "short").write_text("".join(n + "\n" for n in gen.names[:-1]))
        loop, committed = commands["GNU patch -p1 loop (no commits)"]
        commands["GNU patch -p1 loop (no commits)"] = ([*loop[:2], loop[2].replace("series", "short"), *loop[3:]],
                                                        committed)
        return commands

    monkeypatch.setattr(bench_scale, "tools", tools)
    with pytest.raises(RuntimeError, match="generator's model|disagree"):
        bench_scale.bench_apply(gen, target, dict.fromkeys(real(gen, target), 1))


def test_the_check_markers_rows_check_their_reports(small, tmp_path):
    gen, target = small
    times = bench_scale.bench_markers(target, tmp_path, 1, len(gen.marked))
    assert {"rg", "snapshot", "rev", "first snapshot", "first rev", "cli snapshot", "cli rev"} <= set(times)
    with pytest.raises(RuntimeError, match="not 11 intact blocks"):
        bench_scale.bench_markers(target, tmp_path / "again", 1, len(gen.marked) + 1)


def test_the_script_writes_its_rows(tmp_path, small):
    out = tmp_path / "rows.json"
    assert bench_scale.main(["--files", "200", "--patches", "20", "--marked", "10", "--repeats", "1",
                             "--marker-repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["benchmarks"]
    names = {(r["name"], r["baseline"]) for r in rows}
    assert ("apply 20 patches, 200 files", "git am -3") in names
    assert {("check-markers 200 files (snapshot)", "rg --count-matches"),
            ("check-markers 200 files (git rev)", "rg --count-matches")} <= names
