from __future__ import annotations

import json

import pytest

from engine_overlay.errors import OverlayError


@pytest.fixture
def tree(tmp_path, write, runner_src, run):
    root = tmp_path / "tree"
    write(root, "runner.py", runner_src)
    result = run("markers", "snapshot", "--root", root, "-o", tmp_path / "snap.json")
    assert result.exit_code == 0 and result.data["blocks"] == 3
    return root


def test_snapshot_command_writes_file(tmp_path, tree):
    data = json.loads((tmp_path / "snap.json").read_text())
    assert data["format"] == "engine-overlay-markers" and len(data["blocks"]) == 3


def test_check_markers_json_schema_when_intact(tmp_path, tree, run):
    result = run("check-markers", "--against", tmp_path / "snap.json", "--root", tree)
    assert result.exit_code == 0
    d = result.data
    assert d["command"] == "check-markers" and d["ok"] is True
    assert set(d) >= {"blocks", "problems", "waivers", "summary"}
    for b in d["blocks"]:
        assert {"status", "file", "start_line", "kind", "new_file", "new_start_line", "similarity"} <= set(b)
    assert [(b["status"], b["file"], b["start_line"], b["kind"]) for b in d["blocks"]] == [
        ("intact", "runner.py", 11, "fenced"), ("intact", "runner.py", 20, "fenced"), ("intact", "runner.py", 28, "inline")]


def test_check_markers_exit_1_and_problems(tmp_path, tree, run, write, runner_src):
    write(tree, "runner.py", runner_src.replace("torch.zeros(16)", "torch.zeros(8)"))
    write(tree, "bad.py", "def f():\n    # ---- Omni-new ----\n    x = 1\n")
    result = run("check-markers", "--against", tmp_path / "snap.json", "--root", tree)
    assert result.exit_code == 1
    d = result.data
    assert d["ok"] is False and d["summary"]["modified"] == 1
    first = d["blocks"][0]
    assert first["status"] == "modified" and first["new_file"] == "runner.py" and 0 < first["similarity"] < 1
    assert d["problems"] == [{"file": "bad.py", "line": 2, "message": d["problems"][0]["message"],
                              "severity": "error", "hint": d["problems"][0]["hint"]}]


def test_check_markers_human_table(tmp_path, tree, run, write, runner_src):
    write(tree, "runner.py", runner_src.replace("  # Omni-specific", ""))
    result = run("check-markers", "--against", tmp_path / "snap.json", "--root", tree, fmt="human")
    assert result.exit_code == 1
    assert "lost" in result.output and "runner.py:28" in result.output and "markers-removed" in result.output
    assert "FAILED" in result.output


def test_waivers_option(tmp_path, tree, run, write, runner_src):
    write(tree, "runner.py", runner_src.replace("torch.zeros(16)", "torch.zeros(8)"))
    (tmp_path / "w.toml").write_text('[[waiver]]\nid = "talker-init"\nreason = "r"\nupstream = "https://x"\n')
    result = run("check-markers", "--against", tmp_path / "snap.json", "--root", tree, "--waivers", tmp_path / "w.toml")
    assert result.exit_code == 0 and result.data["blocks"][0]["waived"] is True


def test_tags_option(tmp_path, write, run):
    root = tmp_path / "t"
    write(root, "a.py", "def f():\n    # --- kilocode_change ---\n    a = 1\n    # --- kilocode_change ---\n")
    result = run("markers", "snapshot", "--root", root, "-o", tmp_path / "s.json", "--tags", "kilocode_change")
    assert result.data["blocks"] == 1


def test_bad_snapshot_is_overlay_error(tmp_path, tree, run):
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(OverlayError):
        run("check-markers", "--against", tmp_path / "bad.json", "--root", tree)


def test_transplant_command(tmp_path, write, run):
    old = write(tmp_path, "old.py", "def f():\n    a = 1\n    return a\n")
    new = write(tmp_path, "new.py", "import os\n\n\ndef f():\n    a = 1\n    return a\n")
    marked = write(tmp_path, "m.py", "def f():\n    a = 1\n    # ---- Omni-new ----\n    a += 1\n    # ---- Omni-new ----\n    return a\n")
    result = run("transplant", "--old-base", old, "--new-base", new, marked, "-o", tmp_path / "out.py")
    assert result.exit_code == 0, result.output
    assert result.data["written"] is True and result.data["conflicts"] == []
    assert (tmp_path / "out.py").read_text().startswith("import os\n")
