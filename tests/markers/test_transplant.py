from __future__ import annotations

import re

from engine_overlay.markers.transplant import transplant

OLD_BASE = '''
class NPUModelRunner:
    def load_model(self):
        model = build(self.config)
        self.model = model
        return model

    def execute_model(self, batch):
        out = self.model(batch)
        return out
'''

MARKED = '''
class NPUModelRunner:
    def load_model(self):
        model = build(self.config)
        # ---- Omni-new: talker-init ----
        self.talker = model.talker
        # ---- Omni-new: talker-init ----
        self.model = model
        return model

    def execute_model(self, batch):
        out = self.model(batch)
        out = wrap_omni(out)  # Omni-new
        return out
'''


def files(tmp_path, write, new_base: str):
    return (write(tmp_path, "old.py", OLD_BASE), write(tmp_path, "new.py", new_base),
            write(tmp_path, "runner.py", MARKED))


def test_clean_transplant_keeps_every_block(tmp_path, write):
    new = OLD_BASE.replace("def load_model(self):", "def load_model(self, device=None):")
    new = new.replace("    def execute_model", "    def warmup(self):\n        self.execute_model(None)\n\n    def execute_model")
    old, new_p, marked = files(tmp_path, write, new)
    out = tmp_path / "out.py"
    report = transplant(old, new_p, marked, out)
    assert report.ok and report.written and report.compiles
    assert [b.status for b in report.blocks] == ["intact", "intact"]
    text = out.read_text()
    assert "def load_model(self, device=None):" in text and "self.talker = model.talker" in text and "def warmup" in text
    assert marked.read_text().lstrip("\n") == MARKED.lstrip("\n")  # input untouched when -o is given


def test_conflict_is_reported_per_block_and_not_written(tmp_path, write):
    new = OLD_BASE.replace("        self.model = model\n", "        self.model = compile_model(model)\n")
    old, new_p, marked = files(tmp_path, write, new)
    before = marked.read_text()
    report = transplant(old, new_p, marked)
    assert not report.ok and not report.written
    assert marked.read_text() == before  # never overwritten with conflict markers
    (c,) = report.conflicts
    assert c.block == "talker-init" and c.block_line == 4
    assert "        self.talker = model.talker" in c.ours
    assert "        self.model = compile_model(model)" in c.theirs


def test_force_writes_conflict_markers(tmp_path, write):
    new = OLD_BASE.replace("        self.model = model\n", "        self.model = compile_model(model)\n")
    old, new_p, marked = files(tmp_path, write, new)
    report = transplant(old, new_p, marked, force=True)
    assert report.written and re.search(r"^<<<<<<< marked$", marked.read_text(), re.M)


def test_upstream_rewrite_around_inline_tag_conflicts_on_that_block(tmp_path, write):
    new = OLD_BASE.replace("        out = self.model(batch)\n        return out\n", "        return self.model(batch)\n")
    old, new_p, marked = files(tmp_path, write, new)
    report = transplant(old, new_p, marked, tmp_path / "o.py")
    (c,) = report.conflicts
    assert (c.block, c.block_line) == ("NPUModelRunner.execute_model", 12)
    assert c.theirs == ["        return self.model(batch)"]
    assert not report.ok and not (tmp_path / "o.py").exists()


def test_result_that_does_not_compile_is_not_written(tmp_path, write):
    new = OLD_BASE.replace("    def execute_model(self, batch):", "    def execute_model(self, batch)")
    old, new_p, marked = files(tmp_path, write, new)
    out = tmp_path / "o.py"
    report = transplant(old, new_p, marked, out)
    assert report.compiles is False and not report.written and not out.exists()
