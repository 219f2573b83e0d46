from __future__ import annotations

import json
import os

import pytest

from engine_overlay.errors import OverlayError
from engine_overlay.markers import snapshot
from engine_overlay.markers.grammar import MarkerConfig
from engine_overlay.markers.snapshot import find_rg, read_snapshot, take_snapshot
from helpers import require_tool


def require_rg() -> str:
    """The rg binary; a missing one skips locally but fails under CI=true (the `ripgrep`
    dependency installs it: a missing tool there is a broken install, never a skip)."""
    return require_tool(find_rg(), "rg (the `ripgrep` dependency, beside this Python or on PATH)",
                        "pip install -e . installs it")


def test_snapshot_records_blocks(write, tmp_path, runner_src):
    write(tmp_path, "worker/runner.py", runner_src)
    write(tmp_path, "docs/notes.md", "# ---- Omni-new ----\nnot code\n")  # outside the globs
    snap = take_snapshot(tmp_path)
    assert snap.problems == []
    got = [(b.file, b.kind, b.start_line, b.end_line, b.qualname, b.id) for b in snap.blocks]
    assert got == [
        ("worker/runner.py", "fenced", 11, 14, "NPUModelRunner.load_model", "talker-init"),
        ("worker/runner.py", "fenced", 20, 24, "NPUModelRunner.execute_model", None),
        ("worker/runner.py", "inline", 28, 28, "NPUModelRunner.sample", None),
    ]
    talker = snap.blocks[0]
    assert talker.body == ["self.talker = model.talker", "self.talker_buffer = torch.zeros(16)"]
    assert talker.anchors_before == ["model = build(self.config)", "def load_model(self):"]
    assert talker.anchors_after == ["self.model = model", "return model"]
    assert len(talker.hash) == 16 and talker.enclosing_hash


def test_hash_is_whitespace_insensitive(write, tmp_path, runner_src):
    write(tmp_path, "a.py", runner_src)
    reformatted = runner_src.replace("torch.zeros(16)", "torch.zeros( 16 )").replace(
        "        self.talker = model.talker\n", "\n        self.talker  =  model.talker\n\n")
    write(tmp_path, "b.py", reformatted)
    snap = take_snapshot(tmp_path)
    a, b = (x for x in snap.blocks if x.id == "talker-init")
    assert a.hash == b.hash


def test_snapshot_file_is_deterministic(write, tmp_path, runner_src):
    tree = tmp_path / "tree"
    write(tree, "z.py", runner_src)
    write(tree, "a/b.py", runner_src)
    take_snapshot(tree).write(tmp_path / "s1.json")
    take_snapshot(tree).write(tmp_path / "s2.json")
    one = (tmp_path / "s1.json").read_bytes()
    assert one == (tmp_path / "s2.json").read_bytes()
    data = json.loads(one)
    assert [b["file"] for b in data["blocks"]] == ["a/b.py"] * 3 + ["z.py"] * 3
    assert str(tmp_path) not in one.decode()  # no absolute paths
    again = read_snapshot(tmp_path / "s1.json")
    assert [b.hash for b in again.blocks] == [b["hash"] for b in data["blocks"]]


def test_paths_restrict_the_scan(write, tmp_path, runner_src):
    write(tmp_path, "a/x.py", runner_src)
    write(tmp_path, "b/y.py", runner_src)
    assert {b.file for b in take_snapshot(tmp_path, ["b"]).blocks} == {"b/y.py"}
    with pytest.raises(OverlayError):
        take_snapshot(tmp_path, ["missing"])


def test_python_and_ripgrep_prefilters_agree(write, tmp_path, runner_src, monkeypatch):
    require_rg()
    write(tmp_path, "a.py", runner_src)
    write(tmp_path, ".hidden/b.py", runner_src)
    write(tmp_path, "c.py", "x = 1\n")
    (tmp_path / ".gitignore").write_text("a.py\n")
    with monkeypatch.context() as patched:  # the default takes the fast path: ripgrep, not Python
        patched.setattr(snapshot, "_python_filter", lambda *a: pytest.fail("the Python pre-filter ran"))
        fast = take_snapshot(tmp_path, use_rg=None)
    slow = take_snapshot(tmp_path, use_rg=False)
    assert fast.to_dict() == slow.to_dict()
    assert {b.file for b in fast.blocks} == {"a.py", ".hidden/b.py"}


def test_rg_beside_this_python_is_found_without_path(monkeypatch):
    """`overlay` run by its full path (venv not activated): the `ripgrep` dependency's rg in the
    environment's bin/ is still found."""
    rg = require_rg()
    monkeypatch.setenv("PATH", "")
    beside = find_rg()
    if beside is None and os.environ.get("CI") != "true":
        pytest.skip(f"rg is only on PATH here ({rg}), not installed beside this Python")
    assert beside is not None and os.access(beside, os.X_OK)


def test_globs_from_config(write, tmp_path):
    write(tmp_path, "k.txt", "# ---- Omni-new ----\nx\n# ---- Omni-new ----\n")
    write(tmp_path, "k.py", "# ---- Omni-new ----\nx = 1\n# ---- Omni-new ----\n")
    snap = take_snapshot(tmp_path, config=MarkerConfig(globs=("*.txt",)))
    assert [b.file for b in snap.blocks] == ["k.txt"]


@pytest.mark.parametrize("content, needle", [
    ("{not json", "invalid JSON"),
    ('{"format": "something-else"}', "not a marker snapshot"),
    ('{"format": "engine-overlay-markers", "version": 99}', "unsupported snapshot version"),
    ('{"format": "engine-overlay-markers", "version": 1, "config": {}}', "malformed snapshot"),
    ('{"format": "engine-overlay-markers", "version": 1, "blocks": [{"file": "a.py"}]}', "malformed snapshot"),
])
def test_malformed_snapshot_is_one_clear_error(tmp_path, content, needle):
    path = tmp_path / "snap.json"
    path.write_text(content)
    with pytest.raises(OverlayError) as e:
        read_snapshot(path)
    assert needle in e.value.message and e.value.path == str(path) and e.value.hint
