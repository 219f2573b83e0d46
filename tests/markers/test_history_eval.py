"""The ground truth of benchmarks/bench_markers_history.py on tiny synthetic A -> B trees.

Each case checks the truth the benchmark derives from the raw texts (and, where
the tool is known to agree, the tool's status next to it).
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from engine_overlay.markers import MarkerConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ev():
    path = ROOT / "benchmarks" / "bench_markers_history.py"
    spec = importlib.util.spec_from_file_location("bench_markers_history", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def run(ev, tmp_path: Path, a: dict[str, str], b: dict[str, str]) -> dict[int, tuple[str, str]]:
    """{baseline start line: (truth, tool status)} for the file x.py (or the only file)."""
    ta, tb = tree(tmp_path / "a", a), tree(tmp_path / "b", b)
    (tmp_path / "snaps").mkdir()
    rows, _ = ev.evaluate_pair(ta, tb, "A -> B", MarkerConfig(), tmp_path / "snaps")
    return {r.line: (r.truth, r.tool) for r in rows}


FENCED = """
class R:
    def step(self, x):
        a = upstream_one(x)
        # ---- Omni-new ----
        b = omni_thing(a, extra=True)
        c = omni_other(b)
        # ---- Omni-new ----
        return upstream_two(c)
"""


def test_unchanged_when_only_indentation_and_position_change(ev, tmp_path):
    b = """
    class R:
        def helper(self):
            return 1

        def step(self, x):
            a = upstream_one(x)
            if x:
                # ---- Omni-new ----
                b = omni_thing(a, extra=True)
                c = omni_other(b)
                # ---- Omni-new ----
            return upstream_two(c)
    """
    assert run(ev, tmp_path, {"x.py": FENCED}, {"x.py": b}) == {4: ("unchanged", "intact")}


def test_moved_to_another_file_and_to_another_function(ev, tmp_path):
    other = FENCED.replace("class R", "class S")
    b_same_file = FENCED.replace("def step", "def renamed_step")
    assert run(ev, tmp_path, {"x.py": FENCED}, {"x.py": "y = 1\n", "y.py": other})[4] == ("moved", "moved")
    tmp2 = tmp_path / "2"
    tmp2.mkdir()
    assert run(ev, tmp2, {"x.py": FENCED}, {"x.py": b_same_file})[4] == ("moved", "moved")


def test_modified_fence_pair_at_the_same_place(ev, tmp_path):
    b = FENCED.replace("extra=True", "extra=False")
    assert run(ev, tmp_path, {"x.py": FENCED}, {"x.py": b})[4] == ("modified", "modified")


def test_modified_when_both_anchors_changed_but_a_code_line_is_shared(ev, tmp_path):
    b = FENCED.replace("upstream_one(x)", "upstream_one_v2(x)").replace("upstream_two(c)", "upstream_two_v2(c)")
    b = b.replace("c = omni_other(b)", "c = omni_other(b, more=1)")
    assert run(ev, tmp_path, {"x.py": FENCED}, {"x.py": b})[4] == ("modified", "modified")


def test_lost_markers_removed(ev, tmp_path):
    b = "\n".join(ln for ln in FENCED.splitlines() if "Omni-new" not in ln)
    truth, tool = run(ev, tmp_path, {"x.py": FENCED}, {"x.py": b})[4]
    assert (truth, tool) == ("lost", "lost")


def test_lost_code_removed(ev, tmp_path):
    b = """
    class R:
        def step(self, x):
            return upstream_two(x)
    """
    assert run(ev, tmp_path, {"x.py": FENCED}, {"x.py": b})[4] == ("lost", "lost")


def test_inline_reason_text_changed_is_comment_only(ev, tmp_path):
    a = """
    def f(x):
        # OMNI: old reason
        y = compute(x)
        return y
    """
    b = """
    def f(x):
        z = 0
        # OMNI: a new, longer reason
        # spanning two lines
        y = compute(x)
        return y + z
    """
    assert run(ev, tmp_path, {"x.py": a}, {"x.py": b})[2][0] == "comment-only"


def test_whole_line_tag_kept_over_other_code_is_modified(ev, tmp_path):
    a = """
    def f(x):
        prepare(x)
        # [Omni] handle the transfer first
        r = transfer(x, mode="old")
        return r
    """
    b = """
    def f(x):
        prepare_v2(x)
        # [Omni] handle the transfer first
        reqs = pending(x)
        return reqs
    """
    # the tool ignores the tag's comment text, finds the code too different and says lost (also flagged)
    assert run(ev, tmp_path, {"x.py": a}, {"x.py": b})[3][0] == "modified"


def test_unbalanced_fences_are_their_own_bucket(ev, tmp_path):
    b = FENCED.replace("        # ---- Omni-new ----\n        b =", "        b =", 1)
    truth, _ = run(ev, tmp_path, {"x.py": FENCED}, {"x.py": b})[4]
    assert truth == "unbalanced-fences"


def test_one_to_one_duplicates(ev, tmp_path):
    a = """
    def f(x):
        a = g(x)  # Omni-new
        b = h(x)
        a = g(x)  # Omni-new
        return a
    """
    b = """
    def f(x):
        a = g(x)  # Omni-new
        b = h(x)
        return a
    """
    truths = sorted(t for t, _ in run(ev, tmp_path, {"x.py": a}, {"x.py": b}).values())
    assert truths == ["duplicate", "unchanged"]


def test_metrics_and_agreement(ev):
    Row = ev.Row
    rows = [Row("p", "f", 1, "fenced", "Omni-new", None, "intact", "", "unchanged", "", None),
            Row("p", "f", 2, "fenced", "Omni-new", None, "modified", "", "unchanged", "", None),
            Row("p", "f", 3, "fenced", "Omni-new", None, "lost", "", "lost", "", None),
            Row("p", "f", 4, "fenced", "Omni-new", None, "moved", "", "moved+modified", "", None),
            Row("p", "f", 5, "inline", "OMNI:", None, "intact", "", "comment-only", "", None)]
    m = ev.metrics(rows)
    assert m["fp_unchanged"] == (0.5, 1, 2)
    assert m["recall_lost"] == (1.0, 1, 1)
    assert m["recall_moved+modified"] == (1.0, 1, 1)
    assert m["agreement"] == (0.75, 3, 4)
