from __future__ import annotations

import git
import pytest

from engine_overlay.errors import OverlayError
from engine_overlay.markers.check import check_markers
from engine_overlay.markers.compare import similarity
from engine_overlay.markers.snapshot import take_snapshot


def baseline(tmp_path, write, files: dict[str, str]):
    tree = tmp_path / "tree"
    for rel, text in files.items():
        write(tree, rel, text)
    snap = tmp_path / "base.json"
    take_snapshot(tree).write(snap)
    return tree, snap


def by_status(report):
    return sorted((b.status, b.file, b.start_line, b.lost_kind) for b in report.blocks)


def upstream_upgrade(src: str) -> str:
    """What an upstream re-sync does around the blocks: new imports, renamed locals, new methods."""
    return (src.replace("import torch\n", "import os\nimport torch\nfrom vllm.config import VllmConfig\n")
            .replace('self.device = "npu"', 'self.device = os.environ.get("DEV", "npu")\n        self.cache = {}')
            .replace("out = self.model(batch)", "hidden = self.model(batch)\n        out = hidden")
            .replace("    def sample(self", "    def warmup(self):\n        pass\n\n    def sample(self"))


def test_unchanged_blocks_are_intact_after_upstream_changes(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    write(tree, "runner.py", upstream_upgrade(runner_src))
    report = check_markers(tree, str(snap))
    assert [b.status for b in report.blocks] == ["intact"] * 3
    assert report.ok
    assert [b.new_start_line - b.start_line for b in report.blocks] == [3, 4, 7]
    # the enclosing function of the execute_model block was changed by upstream around it
    assert [b.enclosing_changed for b in report.blocks] == [False, True, False]


def test_modified_block_has_similarity_and_diff(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    write(tree, "runner.py", runner_src.replace("torch.zeros(16)", "torch.zeros(32)"))
    report = check_markers(tree, str(snap))
    talker = report.blocks[0]
    assert talker.status == "modified" and 0.8 < talker.similarity < 1.0
    assert "-self.talker_buffer = torch.zeros(16)" in talker.diff
    assert "+self.talker_buffer = torch.zeros(32)" in talker.diff
    assert not report.ok


def test_modified_heavily_but_in_place_is_modified_not_lost(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    new = runner_src.replace("out = self.talker(out)\n            out = wrap_omni(out)", "out = talk(out, mode=2)")
    write(tree, "runner.py", new)
    blk = check_markers(tree, str(snap)).blocks[1]
    assert blk.status == "modified" and blk.similarity < 0.8


def test_moved_to_another_function_and_file(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    block = runner_src[runner_src.index("        #  ---"):runner_src.index("        return out")]
    new = runner_src.replace(block, "")
    write(tree, "runner.py", new)
    write(tree, "helpers.py", "class Talker:\n    def run(self, out):\n" + block + "        return out\n")
    report = check_markers(tree, str(snap))
    moved = report.blocks[1]
    assert (moved.status, moved.new_file, moved.new_qualname, moved.similarity) == ("moved", "helpers.py", "Talker.run", 1.0)
    assert [b.status for b in report.blocks] == ["intact", "moved", "intact"]
    assert not report.ok


def test_lost_code_removed(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    start = runner_src.index("        # ---- Omni-new: talker-init")
    end = runner_src.index("        self.model = model")
    write(tree, "runner.py", runner_src[:start] + runner_src[end:])
    blk = check_markers(tree, str(snap)).blocks[0]
    assert (blk.status, blk.lost_kind, blk.new_file) == ("lost", "code-removed", None)


def test_lost_markers_removed_code_still_there(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    write(tree, "runner.py", runner_src.replace("        # ---- Omni-new: talker-init ----\n", "")
          .replace("  # Omni-specific", ""))
    report = check_markers(tree, str(snap))
    got = [(b.status, b.lost_kind, b.new_start_line) for b in report.blocks]
    assert got[0] == ("lost", "markers-removed", 11)
    assert got[2] == ("lost", "markers-removed", 26)


def test_lost_code_present_unmarked_elsewhere(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src, "other.py": "x = 1\n"})
    start = runner_src.index("        # ---- Omni-new: talker-init")
    end = runner_src.index("        self.model = model")
    write(tree, "runner.py", runner_src[:start] + runner_src[end:])
    write(tree, "other.py", "def setup(self, model):\n    self.talker = model.talker\n    self.talker_buffer = torch.zeros(16)\n")
    blk = check_markers(tree, str(snap)).blocks[0]
    assert (blk.status, blk.lost_kind, blk.new_file, blk.new_start_line) == ("lost", "unmarked-elsewhere", "other.py", 2)


def test_added_block(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    write(tree, "runner.py", runner_src.replace("        return tokens", "        tokens = fix(tokens)  # OMNI: fix\n        return tokens"))
    report = check_markers(tree, str(snap))
    assert by_status(report)[0] == ("added", "runner.py", 29, None)
    assert report.ok  # new blocks are reported, not failures


def test_id_match_survives_rename_of_enclosing_function(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    write(tree, "runner.py", runner_src.replace("def load_model", "def load_weights"))
    blk = check_markers(tree, str(snap)).blocks[0]
    assert (blk.status, blk.id, blk.new_qualname) == ("moved", "talker-init", "NPUModelRunner.load_weights")


def test_duplicate_identical_blocks_match_one_to_one(tmp_path, write):
    src = "def f():\n    a = 1  # Omni-new\n    a = 1  # Omni-new\n"
    tree, snap = baseline(tmp_path, write, {"d.py": src})
    write(tree, "d.py", "def f():\n    a = 1  # Omni-new\n")
    assert sorted(b.status for b in check_markers(tree, str(snap)).blocks) == ["intact", "lost"]


def test_grammar_problem_fails_the_check(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    write(tree, "broken.py", "def f():\n    # ---- Omni-new ----\n    x = 1\n")
    report = check_markers(tree, str(snap))
    assert not report.ok and [(p.file, p.line) for p in report.problems] == [("broken.py", 2)]


def test_against_git_revision(tmp_path, write, runner_src):
    repo_dir = tmp_path / "repo"
    write(repo_dir, "pkg/runner.py", runner_src)
    write(repo_dir, "pkg/README.md", "# ---- Omni-new ----\n")
    repo = git.Repo.init(repo_dir)
    with repo:
        repo.git.add(".")
        repo.git.commit("-m", "base", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})
        repo.create_tag("v1")
    write(repo_dir, "pkg/runner.py", upstream_upgrade(runner_src).replace("torch.zeros(16)", "torch.ones(16)"))
    report = check_markers(repo_dir / "pkg", "v1")
    assert [(b.status, b.file) for b in report.blocks] == [
        ("modified", "runner.py"), ("intact", "runner.py"), ("intact", "runner.py")]
    with pytest.raises(OverlayError) as e:
        check_markers(repo_dir / "pkg", "no-such-rev")
    assert "neither a snapshot file nor a git revision" in e.value.message


def test_similarity_bounds():
    assert similarity(["a = 1"], ["a = 1"]) == 1.0
    assert similarity(["a = 1"], ["completely different"]) < 0.5


def test_identical_marked_copy_elsewhere_is_not_unmarked_code(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src, "copy.py": runner_src})
    start = runner_src.index("        # ---- Omni-new: talker-init")
    end = runner_src.index("        self.model = model")
    write(tree, "runner.py", runner_src[:start] + runner_src[end:])
    report = check_markers(tree, str(snap))
    lost = [b for b in report.blocks if b.status == "lost"]
    assert [(b.file, b.lost_kind) for b in lost] == [("runner.py", "code-removed")]


def test_duplicate_ids_fall_back_to_body_matching(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"a.py": runner_src, "b.py": runner_src})
    start = runner_src.index("        # ---- Omni-new: talker-init")
    end = runner_src.index("        self.model = model")
    write(tree, "b.py", runner_src[:start] + runner_src[end:])
    report = check_markers(tree, str(snap))
    assert [(b.file, b.status) for b in report.blocks if b.id] == [("a.py", "intact"), ("b.py", "lost")]


def test_marker_removed_in_place_is_not_a_move_to_another_file(tmp_path, write):
    """Regression (vllm-omni 0.14.0 -> 0.16.0): a short tagged line that loses its tag in its
    file, while another file gains the same tagged line, is "markers removed" + "added"."""
    tree, snap = baseline(tmp_path, write, {
        "x.py": "def make(a):\n    return dict(\n        a=a,\n        multimodal_outputs=None,  # Omni-new\n    )\n",
        "y.py": "def other(b):\n    return dict(\n        b=b,\n    )\n",
    })
    write(tree, "x.py", "def make(a):\n    return dict(\n        a=a,\n        multimodal_outputs=None,\n    )\n")
    write(tree, "y.py", "def other(b):\n    return dict(\n        b=b,\n"
                        "        multimodal_outputs=None,  # Omni-new: new here\n    )\n")
    report = check_markers(tree, str(snap))
    assert by_status(report) == [("added", "y.py", 4, None), ("lost", "x.py", 4, "markers-removed")]


def test_unpaired_fences_record_no_guessed_blocks(tmp_path, write):
    """Regression (vllm-omni 0.28.0rc1): with one fence deleted, pairing by position would turn
    upstream code between two real blocks into a "block"; none is recorded, the error says where."""
    text = ("class R:\n    def step(self, out):\n        a = upstream_1()\n        b = omni_1()\n"
            "        #  ---- Omni-new ----\n        c = upstream_2()\n        d = upstream_3()\n"
            "        #  ---- Omni-new ----\n        e = omni_2()\n        #  ---- Omni-new ----\n"
            "        return out\n")
    write(tmp_path / "t", "r.py", text)
    snapshot = take_snapshot(tmp_path / "t")
    assert snapshot.blocks == []
    assert len(snapshot.problems) == 1
    assert "fences at lines 5, 8, 10" in snapshot.problems[0].hint


def test_inline_block_wrapped_by_a_new_fence_is_intact(tmp_path, write):
    """Regression (vllm-omni 0.26.0rc1 -> 0.26.0): the tagged lines are unchanged, only a fence
    was added around them (and another line): intact, and the fenced block is added."""
    tree, snap = baseline(tmp_path, write, {"g.py": (
        "def run(model_kwargs, tokens, req_ids):\n    x = 1\n"
        "    # [Omni] Pass token counts per request\n    model_kwargs['seq_token_counts'] = tokens\n"
        "    return x\n")})
    write(tree, "g.py", "def run(model_kwargs, tokens, req_ids):\n    x = 1\n    # ---- Omni-new ----\n"
                        "    # [Omni] Pass token counts per request\n    model_kwargs['seq_token_counts'] = tokens\n"
                        "    model_kwargs['request_ids'] = list(req_ids)\n    # ---- Omni-new ----\n    return x\n")
    report = check_markers(tree, str(snap))
    assert by_status(report) == [("added", "g.py", 3, None), ("intact", "g.py", 3, None)]


def test_blocks_of_a_renamed_file_are_intact_at_the_new_path(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src, "other.py": "x = 1\n"})
    (tree / "runner.py").rename(tree / "npu_runner.py")
    report = check_markers(tree, str(snap))
    assert [(b.status, b.file, b.new_file) for b in report.blocks] == [("intact", "runner.py", "npu_runner.py")] * 3
    assert report.ok


def test_a_renamed_file_with_an_edited_block_reports_that_block_modified_not_moved(tmp_path, write, runner_src):
    tree, snap = baseline(tmp_path, write, {"runner.py": runner_src})
    (tree / "runner.py").unlink()
    write(tree, "pkg/runner.py", upstream_upgrade(runner_src).replace('self.device = os.environ.get("DEV", "npu")',
                                                                      'self.device = os.environ.get("DEV", "npu2")'))
    report = check_markers(tree, str(snap))
    statuses = sorted(b.status for b in report.blocks)
    assert "moved" not in statuses and "lost" not in statuses, [(b.status, b.file, b.new_file) for b in report.blocks]
    assert all(b.new_file == "pkg/runner.py" for b in report.blocks)


PAIRING_BASE = '''
class Runner:
    def execute_model(self, batch):
        out = self.model(batch)
        # ---- Omni-new ----
        if self.talker is not None:
            out = self.talker(out)
            out = wrap_omni(out, mode="talker")
        # ---- Omni-new ----
        return out

    def sample(self, logits):
        return logits.argmax(-1)
'''


def test_a_removed_block_beside_an_unrelated_new_one_is_lost_and_the_new_one_added(tmp_path, write):
    tree, snap = baseline(tmp_path, write, {"runner.py": PAIRING_BASE})
    write(tree, "runner.py", PAIRING_BASE.replace('''        if self.talker is not None:
            out = self.talker(out)
            out = wrap_omni(out, mode="talker")''', '''        cache_stats.record(batch.size)'''))
    report = check_markers(tree, str(snap))
    assert sorted(b.status for b in report.blocks) == ["added", "lost"], [(b.status, b.similarity) for b in report.blocks]


def test_a_block_moved_to_another_method_and_edited_is_moved(tmp_path, write):
    """Similarity ~0.7 with its new copy: below the 0.8 a move to another file needs."""
    tree, snap = baseline(tmp_path, write, {"runner.py": PAIRING_BASE})
    moved = PAIRING_BASE.replace('''        # ---- Omni-new ----
        if self.talker is not None:
            out = self.talker(out)
            out = wrap_omni(out, mode="talker")
        # ---- Omni-new ----
        return out''', '''        return out''').replace('''        return logits.argmax(-1)''', '''        out = logits
        # ---- Omni-new ----
        if self.talker is not None and logits.dim() > 1:
            out = self.talker(out, cache=self.cache)
            out = wrap_omni(out, mode="sampler")
        # ---- Omni-new ----
        return out.argmax(-1)''')
    write(tree, "runner.py", moved)
    report = check_markers(tree, str(snap))
    assert [(b.status, b.new_qualname) for b in report.blocks] == [("moved", "Runner.sample")], \
        [(b.status, b.qualname, b.new_qualname, b.similarity) for b in report.blocks]
