from __future__ import annotations

import datetime as dt

import pytest

from engine_overlay.errors import OverlayError
from engine_overlay.markers.check import check_markers
from engine_overlay.markers.snapshot import read_snapshot, take_snapshot
from engine_overlay.markers.waivers import load_waivers

TODAY = dt.date(2026, 5, 1)


@pytest.fixture
def changed_tree(tmp_path, write, runner_src):
    """Baseline snapshot, then the talker block modified and the execute_model block removed."""
    tree = tmp_path / "tree"
    write(tree, "runner.py", runner_src)
    take_snapshot(tree).write(tmp_path / "base.json")
    start = runner_src.index("        #  ---")
    end = runner_src.index("        return out")
    new = runner_src.replace("torch.zeros(16)", "torch.zeros(32)")  # same length: indices still hold
    write(tree, "runner.py", new[:start] + new[end:])
    return tree, tmp_path / "base.json"


def check(tree, snap, waivers):
    return check_markers(tree, str(snap), waivers_path=waivers, today=TODAY)


def test_waivers_by_id_and_by_file_qualname_hash(tmp_path, changed_tree):
    tree, snap = changed_tree
    lost = next(b for b in read_snapshot(snap).blocks if b.qualname.endswith("execute_model"))
    w = tmp_path / "waivers.toml"
    w.write_text(
        '[[waiver]]\nid = "talker-init"\nreason = "bigger buffer"\nupstream = "https://example.org/pr/1"\n\n'
        f'[[waiver]]\nfile = "runner.py"\nqualname = "NPUModelRunner.execute_model"\nhash = "{lost.hash[:10]}"\n'
        'reason = "talker moved upstream"\nexpires = 2026-12-31\n'
    )
    report = check(tree, snap, w)
    assert [(b.status, b.waived) for b in report.blocks if b.status != "intact"] == [("modified", True), ("lost", True)]
    assert report.ok
    assert [s.status for s in report.waivers] == ["applied", "applied"]
    assert report.blocks[0].waiver == "bigger buffer"


def test_unwaived_change_still_fails(tmp_path, changed_tree):
    tree, snap = changed_tree
    w = tmp_path / "waivers.toml"
    w.write_text('[[waiver]]\nid = "talker-init"\nreason = "bigger buffer"\nexpires = 2026-12-31\n')
    report = check(tree, snap, w)
    assert not report.ok and [b.label for b in report.blocks if b.failing] == ["NPUModelRunner.execute_model"]


def test_expired_waiver_does_not_count(tmp_path, changed_tree):
    tree, snap = changed_tree
    w = tmp_path / "waivers.toml"
    w.write_text('[[waiver]]\nid = "talker-init"\nreason = "temporary"\nexpires = 2026-04-30\n')
    report = check(tree, snap, w)
    assert report.blocks[0].status == "modified" and not report.blocks[0].waived
    assert report.waivers[0].status == "expired"
    assert any("expired on 2026-04-30" in p.message for p in report.problems)


def test_stale_waivers_are_reported(tmp_path, changed_tree):
    tree, snap = changed_tree
    inline = next(b for b in read_snapshot(snap).blocks if b.kind == "inline")
    w = tmp_path / "waivers.toml"
    w.write_text(
        f'[[waiver]]\nfile = "runner.py"\nqualname = "{inline.qualname}"\nhash = "{inline.hash}"\n'
        'reason = "was changed once"\nupstream = "https://example.org/x"\n\n'
        '[[waiver]]\nid = "gone-block"\nreason = "old"\nupstream = "https://example.org/y"\n'
    )
    report = check(tree, snap, w)
    assert [s.status for s in report.waivers] == ["stale", "stale"]
    messages = [p.message for p in report.problems if p.severity == "warning"]
    assert any("intact again" in m for m in messages) and any("no such block" in m for m in messages)


@pytest.mark.parametrize("text, needle", [
    ("[[waiver]\n", "not valid TOML"),
    ('[[waiver]]\nid = "a"\nupstream = "u"\n', "reason is required"),
    ('[[waiver]]\nid = "a"\nreason = "r"\n', "upstream link or an expiry"),
    ('[[waiver]]\nfile = "a.py"\nreason = "r"\nupstream = "u"\n', "file + qualname + hash"),
    ('[[waiver]]\nid = "a"\nreason = "r"\nexpires = "soon"\n', "must be a date"),
    ('[[waiver]]\nid = "a"\nreason = "r"\nupstream = "u"\ncolour = "red"\n', "unknown key"),
    ('[[waiver]]\nfile = "a.py"\nqualname = ""\nhash = "abc"\nreason = "r"\nupstream = "u"\n', "at least 8"),
    ('waivers = 1\n', "unknown top-level"),
])
def test_malformed_waiver_file(tmp_path, text, needle):
    w = tmp_path / "w.toml"
    w.write_text(text)
    with pytest.raises(OverlayError) as e:
        load_waivers(w)
    assert needle in e.value.message and e.value.path == str(w)
