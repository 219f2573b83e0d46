"""Marked blocks with hostile input: snapshots and waivers naming files outside the root,
wrong JSON types and deep nesting, symlinks in the tree, and files built to make the
grammar or the pairing quadratic."""

from __future__ import annotations

import json
import os
import time

import pytest

from engine_overlay.markers.compare import compare
from engine_overlay.markers.grammar import MarkerConfig
from engine_overlay.markers.snapshot import snapshot_from_texts, take_snapshot


@pytest.fixture
def snapped(tmp_path, write, runner_src, run):
    """A tree with runner.py, its snapshot as JSON data, and a writer for forged copies."""
    root = tmp_path / "tree"
    write(root, "runner.py", runner_src)
    assert run("markers", "snapshot", "--root", root, "-o", tmp_path / "snap.json").exit_code == 0
    data = json.loads((tmp_path / "snap.json").read_text())

    def forged(change) -> str:
        copy = json.loads(json.dumps(data))
        change(copy)
        path = tmp_path / "forged.json"
        path.write_text(json.dumps(copy))
        return str(path)

    return root, data, forged


def check(run_cli, against, root, *extra):
    return run_cli("check-markers", "--against", str(against), "--root", str(root), *extra)


# --- no file outside the root is ever read --------------------------------------------------------

@pytest.mark.parametrize("name", ["absolute", "../secret.py", "a/../../secret.py", "./runner.py"])
def test_snapshot_file_names_stay_inside_the_root(tmp_path, snapped, run_cli, runner_src, name):
    root, _, forged = snapped
    secret = tmp_path / "secret.py"
    secret.write_text(runner_src.replace("  # Omni-specific", ""))  # the block, unmarked: would be "found"
    name = str(secret) if name == "absolute" else name
    path = forged(lambda d: d["blocks"][2].update(file=name))
    code, out, _ = check(run_cli, path, root)
    assert code == 2 and "forged.json" in out and "block #3" in out and "Traceback" not in out, out
    assert "secret.py:" not in out


def test_symlinked_files_are_not_scanned(tmp_path, write, runner_src):
    write(tmp_path, "outside/secret.py", runner_src)
    root = tmp_path / "tree"
    write(root, "plain.py", "x = 1\n")
    os.symlink(tmp_path / "outside/secret.py", root / "link.py")
    assert take_snapshot(root).blocks == [] and take_snapshot(root, use_rg=False).blocks == []


def test_waiver_file_names_stay_inside_the_root(tmp_path, snapped, run_cli):
    root, _, _ = snapped
    waivers = tmp_path / "w.toml"
    waivers.write_text('[[waiver]]\nfile = "/etc/passwd"\nqualname = "x"\nhash = "0123456789"\n'
                       'reason = "r"\nupstream = "https://x"\n')
    code, out, _ = check(run_cli, tmp_path / "snap.json", root, "--waivers", str(waivers))
    assert code == 2 and "w.toml" in out and "waiver #1" in out and "escapes" in out, out


# --- wrong types and deep nesting: one clear error naming the file ----------------------------------

@pytest.mark.parametrize("change", [
    lambda d: d.update(blocks={"a": 1}),
    lambda d: d.update(blocks=[[1, 2]]),
    lambda d: d["blocks"][0].update(file=5),
    lambda d: d["blocks"][0].update(start_line="11"),
    lambda d: d["blocks"][0].update(body=[1, 2]),
    lambda d: d["blocks"][0].update(hash=None),
    lambda d: d["blocks"][0].update(inline_tags=[{"line": 1}]),
    lambda d: d["blocks"][0].update(inline_tags="x"),
    lambda d: d["blocks"][0].update(anchors_before={"a": "b"}),
    lambda d: d["blocks"][0].update(surprise=1),
    lambda d: d["blocks"][0].pop("file"),
    lambda d: d.update(problems={"x": 1}),
    lambda d: d.update(problems=[{"file": "a.py", "line": "x", "message": "m", "severity": "error", "hint": None}]),
    lambda d: d.update(config=[]),
    lambda d: d["config"].update(tags=5),
], ids=["blocks-dict", "block-list", "file-int", "line-str", "body-ints", "hash-null", "inline-partial",
        "inline-str", "anchors-dict", "unknown-key", "missing-file", "problems-dict", "problem-line", "config-list",
        "tags-int"])
def test_wrong_snapshot_types_are_one_error(snapped, run_cli, change):
    root, _, forged = snapped
    code, out, _ = check(run_cli, forged(change), root)
    assert code == 2 and "forged.json" in out and "Traceback" not in out, out


@pytest.mark.parametrize("text", ['{"format": "engine-overlay-markers", "version": 1, "blocks": '
                                  + "[" * 100_000 + "]" * 100_000 + "}",
                                  "[" * 100_000 + "]" * 100_000,
                                  '{"format": "engine-overlay-markers", "version": 1, "blocks": [], "x": 1'
                                  + "9" * 10_000 + "}"])
def test_deep_or_huge_snapshot_json_is_one_error(tmp_path, snapped, run_cli, text):
    root, _, _ = snapped
    (tmp_path / "deep.json").write_text(text)
    code, out, _ = check(run_cli, tmp_path / "deep.json", root)
    assert code == 2 and "deep.json" in out and "Traceback" not in out, out


@pytest.mark.parametrize("text", ["waiver = 5\n", "[[waiver]]\nfile = 5\n", "a = " + "[" * 100_000 + "]" * 100_000,
                                  "[[waiver]]\nid = \"x\"\nreason = \"r\"\nexpires = 12:00:00\n"])
def test_wrong_waiver_types_are_one_error(tmp_path, snapped, run_cli, text):
    root, _, _ = snapped
    (tmp_path / "w.toml").write_text(text)
    code, out, _ = check(run_cli, tmp_path / "snap.json", root, "--waivers", str(tmp_path / "w.toml"))
    assert code == 2 and "w.toml" in out and "Traceback" not in out, out


# --- near-linear: time for 4N never far above 4x the time for N -------------------------------------

def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _scales(make, n: int) -> tuple[float, float]:
    small, large = make(n), make(4 * n)
    return _best(small), _best(large)


def test_adjacent_fences_snapshot_near_linear(tmp_path):
    def make(n):
        root = tmp_path / str(n)
        root.mkdir()
        (root / "a.py").write_text("x = 1\n" + "# ---- Omni-new ----\n" * n)
        return lambda: take_snapshot(root, use_rg=False)

    small, large = _scales(make, 10_000)  # 4N: 40,000 fences back to back
    assert large < 8 * small + 0.5, (small, large)


@pytest.mark.parametrize("shape", ["tag-lines", "functions", "unpaired"])
def test_grammar_shapes_near_linear(shape):
    config = MarkerConfig()

    def make(n):
        if shape == "tag-lines":  # whole-line inline tags, each looking ahead to the one code line
            text = "x = 1\n" + "# Omni-new: note\n" * n + "y = 2\n"
        elif shape == "functions":  # a block per function: the enclosing scope of each
            text = "".join(f"def f{i}():\n    # ---- Omni-new ----\n    x = {i}\n    # ---- Omni-new ----\n"
                           for i in range(n // 2))
        else:  # fences that never pair: every problem names the fence lines
            text = "".join(f"{' ' * (i % 2)}# ---- Omni-new ----\n" for i in range(n))
        return lambda: snapshot_from_texts({"a.py": text}, config)

    small, large = _scales(make, 5_000)
    assert large < 8 * small + 0.5, (small, large)


@pytest.mark.parametrize("shape", ["modified", "moved", "lost"])
def test_pairing_near_linear(tmp_path, shape):
    config = MarkerConfig()

    def make(n):
        def block(i, extra=""):
            return f"def f():\n    # ---- Omni-new ----\n    value_{i} = compute({i}{extra})\n    # ---- Omni-new ----\n"

        if shape == "modified":  # every block of one scope changed: candidates in the same place
            old = {"a.py": "".join(f"# ---- Omni-new ----\nvalue_{i} = compute({i})\n# ---- Omni-new ----\n"
                                   for i in range(n))}
            new = {"a.py": old["a.py"].replace(")\n", ", extra)\n")}
        elif shape == "moved":  # every block moved to another file and changed
            old = {f"a{i}.py": block(i) for i in range(n)}
            new = {f"b{i}.py": block(i, ", x") for i in range(n)}
        else:  # every block lost its markers
            old = {"a.py": "".join(f"x = 1\n{block(i)}" for i in range(n))}
            new = {"a.py": "".join(f"x = 1\ndef f():\n    value_{i} = compute({i})\n" for i in range(n))}
        base, cur = snapshot_from_texts(old, config), snapshot_from_texts(new, config)

        def run():
            results = compare(base, cur)
            assert {r.status for r in results} == {"modified": {"modified"}, "moved": {"moved"},
                                                   "lost": {"lost"}}[shape]
        return run

    small, large = _scales(make, 150)
    assert large < 8 * small + 0.5, (small, large)

