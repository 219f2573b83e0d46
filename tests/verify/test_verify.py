"""`overlay verify` on real git repositories: a synthetic upstream with a base class, and a
derived-file series on top. Each upstream variant changes the base class in one way."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from engine_overlay.config import load_project
from engine_overlay.errors import OverlayError
from engine_overlay.verify import call_problems, incompatibilities, signature, verify_engine
from helpers import diff_of, git, make_project, make_repo

BASE = '''\
class Mixin:
    def helper(self, x):
        return x


class BaseRunner(Mixin):
    def __init__(self, config, device):
        self.config = config

    def execute_model(self, scheduler_output, intermediate_tensors=None):
        return scheduler_output

    def load_model(self):
        return None

    def prepare(self, batch, *, pad=0):
        return batch
'''

DERIVED = '''\
from demo_engine.runner import BaseRunner


class Derived(BaseRunner):
    def __init__(self, config, device):
        super().__init__(config, device)

    def execute_model(self, scheduler_output, intermediate_tensors=None):
        batch = super().prepare(scheduler_output, pad=1)
        return super().execute_model(batch)

    def load_model(self):
        return self.helper(1)

    # ---- Omni-new: handoff ----
    def take_handoff(self):
        return self.helper(2)
    # ---- Omni-new ----
'''


def upstream(root: Path, runner: str = BASE, extra: dict[str, str] | None = None) -> Path:
    return make_repo(root, {"demo_engine/__init__.py": "", "demo_engine/runner.py": runner, **(extra or {})})


def project_with(tmp_path: Path, derived: str = DERIVED, path: str = "demo_engine/derived.py",
                 extra: str = "") -> Path:
    scratch = upstream(tmp_path / "scratch")
    return make_project(tmp_path / "project", {"0001-derived.patch": diff_of(scratch, path, derived, "derived")},
                        extra=extra)


def verify(project: Path, checkout: Path):
    loaded = load_project(project)
    return verify_engine(loaded, loaded.engine("demo"), None, checkout)


def methods(report) -> dict[tuple[str, str], tuple[str, str]]:
    return {(m.kind, m.method): (m.status, m.detail) for m in report.methods}


def test_ok_when_base_has_every_method(tmp_path):
    report = verify(project_with(tmp_path), upstream(tmp_path / "up"))
    assert report.status == "ok", report
    assert [c.name for c in report.classes] == ["Derived"]
    assert report.classes[0].bases == ["demo 1.0.0 demo_engine.runner.BaseRunner"]
    found = methods(report)
    assert found[("override", "execute_model")] == ("ok", "")
    assert found[("override", "load_model")] == ("ok", "")
    assert found[("super-call", "prepare")] == ("ok", "")
    assert found[("super-call", "__init__")] == ("ok", "")
    assert found[("new", "take_handoff")][0] == "new"  # marked: a method of our own
    assert [c.path for c in report.compiled] == ["demo_engine/derived.py"]
    assert report.markers["blocks_found"] == 1


def test_method_removed_from_base(tmp_path):
    runner = BASE.replace("    def load_model(self):\n        return None\n\n", "")
    report = verify(project_with(tmp_path), upstream(tmp_path / "up", runner))
    assert report.status == "failed"
    status, detail = methods(report)[("override", "load_model")]
    assert status == "missing"
    assert "demo_engine.runner.BaseRunner" in detail


def test_method_renamed_in_base_is_missing_with_a_hint(tmp_path):
    runner = BASE.replace("def load_model(self)", "def load_model_v2(self)")
    report = verify(project_with(tmp_path), upstream(tmp_path / "up", runner))
    status, detail = methods(report)[("override", "load_model")]
    assert status == "missing"
    assert "renamed to load_model_v2?" in detail


def test_signature_changed_in_base(tmp_path):
    runner = BASE.replace("def execute_model(self, scheduler_output, intermediate_tensors=None)",
                          "def execute_model(self, scheduler_output, grammar_output, intermediate_tensors=None)")
    report = verify(project_with(tmp_path), upstream(tmp_path / "up", runner))
    assert report.status == "failed"
    found = methods(report)
    status, detail = found[("override", "execute_model")]
    assert status == "signature-changed"
    assert "'intermediate_tensors'" in detail and "'grammar_output'" in detail
    status, detail = found[("super-call", "execute_model")]
    assert status == "signature-changed"
    assert "required parameter 'grammar_output'" in detail


def test_super_call_to_removed_method_and_keyword_renamed(tmp_path):
    runner = BASE.replace("def prepare(self, batch, *, pad=0)", "def prepare(self, batch, *, padding=0)")
    report = verify(project_with(tmp_path), upstream(tmp_path / "up", runner))
    status, detail = methods(report)[("super-call", "prepare")]
    assert status == "signature-changed"
    assert "keyword 'pad'" in detail

    runner = BASE.replace("    def prepare(self, batch, *, pad=0):\n        return batch\n", "")
    report = verify(project_with(tmp_path / "b"), upstream(tmp_path / "up2", runner))
    assert methods(report)[("super-call", "prepare")][0] == "missing"


def test_method_found_through_the_mro_and_reexport(tmp_path):
    """The base is imported from a package that re-exports it; helper() lives in a mixin."""
    derived = DERIVED.replace("from demo_engine.runner import BaseRunner", "from demo_engine import BaseRunner")
    derived = derived.replace("    def load_model(self):", "    def helper(self, x):\n        return x\n\n"
                              "    def load_model(self):")
    up = upstream(tmp_path / "up", extra={"demo_engine/__init__.py": "from .runner import BaseRunner\n"})
    report = verify(project_with(tmp_path, derived), up)
    assert report.status == "ok", [m for m in report.methods if m.status != "ok"]
    helper = [m for m in report.methods if m.method == "helper" and m.kind == "override"]
    assert helper[0].reference == "demo_engine.runner.Mixin"


def test_unmarked_method_absent_upstream_is_missing_marked_one_is_new(tmp_path):
    derived = DERIVED + "\n    def invented(self):\n        return 1\n"
    report = verify(project_with(tmp_path, derived), upstream(tmp_path / "up"))
    assert methods(report)[("override", "invented")][0] == "missing"
    assert methods(report)[("new", "take_handoff")][0] == "new"
    assert report.status == "failed"


def test_classes_not_derived_from_upstream_are_not_checked(tmp_path):
    derived = "class Local:\n    def anything(self):\n        return super().nothing()\n"
    report = verify(project_with(tmp_path, derived), upstream(tmp_path / "up"))
    assert report.classes == [] and report.methods == []
    assert report.status == "ok"


def test_py_compile_failure(tmp_path):
    broken = DERIVED.replace("    def load_model(self):", "    def load_model(self)")
    report = verify(project_with(tmp_path, broken), upstream(tmp_path / "up"))
    assert report.status == "failed"
    [result] = report.compiled
    assert not result.ok and result.line == 12 and "SyntaxError" in result.message


def test_patch_that_does_not_apply_is_reported(tmp_path):
    scratch = upstream(tmp_path / "scratch")
    diff = diff_of(scratch, "demo_engine/runner.py", BASE.replace("return None", "return 42"), "edit")
    project = make_project(tmp_path / "project", {"0001-edit.patch": diff})
    changed = BASE.replace("    def load_model(self):\n        return None\n", "    def load(self):\n        pass\n")
    report = verify(project, upstream(tmp_path / "up", changed))
    assert report.status == "failed"
    assert [p["name"] for p in report.patches] == ["0001-edit.patch"]


def test_lost_marked_block_against_the_snapshot_fails(tmp_path, run_cli):
    project = project_with(tmp_path, extra='[demo.markers]\ntags = ["Omni-new"]\ninline_tags = ["Omni-new"]\n'
                                           'snapshot = "markers/demo.json"\n')
    up = upstream(tmp_path / "up")
    applied = upstream(tmp_path / "applied", extra={"demo_engine/derived.py": DERIVED})
    code, _, _ = run_cli("markers", "snapshot", "demo_engine/derived.py", "--root", str(applied),
                         "-o", str(project / "markers" / "demo.json"), "--tags", "Omni-new")
    assert code == 0
    assert verify(project, up).markers["summary"]["intact"] == 1
    # The series is re-made without the marked block: check-markers reports it lost.
    stripped = DERIVED.split("    # ---- Omni-new: handoff ----")[0]
    (project / "patches" / "demo" / "0001-derived.patch").unlink()
    other = project_with(tmp_path / "again", stripped)
    (other / "patches" / "demo" / "0001-derived.patch").rename(project / "patches" / "demo" / "0001-derived.patch")
    report = verify(project, up)
    assert report.status == "failed"
    assert report.markers["summary"]["lost"] == 1


# -- configuration and usage errors -------------------------------------------------------------

def test_cli_json_and_exit_codes(tmp_path, run_cli):
    project = project_with(tmp_path)
    up = upstream(tmp_path / "up")
    code, _, data = run_cli("--format", "json", "verify", "demo", "--checkout", str(up), project=project)
    assert code == 0
    assert data["schema"] == 1 and data["command"] == "verify" and data["status"] == "ok"
    assert {m["status"] for m in data["methods"]} == {"ok", "new"}
    bad = upstream(tmp_path / "bad", BASE.replace("def load_model(self)", "def load_model(self, strict)"))
    code, output, _ = run_cli("verify", "demo", "--checkout", str(bad), project=project)
    assert code == 1
    assert "signature-changed" in output and "load_model" in output and "result: failed" in output


def test_not_fetched_is_a_usage_error_naming_the_fix(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("ENGINE_OVERLAY_CACHE", str(tmp_path / "cache"))
    code, output, data = run_cli("--format", "json", "verify", "demo", project=project_with(tmp_path))
    assert code == 2
    assert data["error"]["message"] == "demo 1.0.0 has not been fetched"
    assert "overlay fetch demo --version 1.0.0" in data["error"]["hint"]


def test_checkout_without_the_pinned_upstream(tmp_path, run_cli):
    up = make_repo(tmp_path / "up", {"demo_engine/runner.py": BASE}, tag=None)
    code, output, _ = run_cli("verify", "demo", "--checkout", str(up), project=project_with(tmp_path))
    assert code == 2
    assert "no pinned upstream revision of demo 1.0.0" in output


def test_unknown_engine_and_bad_markers_table(tmp_path, run_cli):
    project = project_with(tmp_path, extra='[demo.markers]\ncolour = "red"\n')
    code, output, _ = run_cli("verify", "demo", "--checkout", str(upstream(tmp_path / "up")), project=project)
    assert code == 2 and "unknown key(s) in the markers table: colour" in output
    code, output, _ = run_cli("verify", "nope", project=project_with(tmp_path / "b"))
    assert code == 2 and "unknown engine 'nope'" in output


def test_missing_snapshot_file(tmp_path):
    project = project_with(tmp_path, extra='[demo.markers]\nsnapshot = "markers/none.json"\n')
    with pytest.raises(OverlayError, match="marker snapshot named in VERSIONS.toml does not exist"):
        verify(project, upstream(tmp_path / "up"))


def test_paired_engine_not_fetched_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_OVERLAY_CACHE", str(tmp_path / "cache"))
    extra = ""
    project = project_with(tmp_path, extra=extra)
    text = (project / "VERSIONS.toml").read_text()
    text = text.replace('commit = "' + "0" * 40 + '"\n', 'commit = "' + "0" * 40 + '"\nrequires = { base = "==2.0" }\n')
    text += ('\n[base]\nversion = "2.0"\ndistributions = ["base-pkg"]\n[base.pins."2.0"]\nkind = "sdist"\n'
             'file = "base-2.0.tar.gz"\nsha256 = "' + "a" * 64 + '"\n')
    (project / "VERSIONS.toml").write_text(text)
    derived = DERIVED.replace("from demo_engine.runner import BaseRunner", "from base_pkg.runner import BaseRunner")
    (project / "patches" / "demo" / "0001-derived.patch").unlink()
    other = project_with(tmp_path / "again", derived)
    (other / "patches" / "demo" / "0001-derived.patch").rename(project / "patches" / "demo" / "0001-derived.patch")
    report = verify(project, upstream(tmp_path / "up"))
    assert report.status == "failed"
    assert any("base 2.0 (required by demo 1.0.0) is not fetched" in p for p in report.problems)
    assert any("base base_pkg.runner.BaseRunner of Derived" in p for p in report.problems)


# -- the signature rules on their own ----------------------------------------------------------

def sig(text: str):
    node = ast.parse(text).body[0]
    return signature(node)


@pytest.mark.parametrize(("base", "derived", "expected"), [
    ("def f(self, a, b=1): pass", "def f(self, a, b=1, c=2): pass", []),
    ("def f(self, a, b=1): pass", "def f(self, a, *args, **kwargs): pass", []),
    ("def f(self, a, b=1): pass", "def f(self, a, b): pass", ["'b' has no default, the base's 'b' has one"]),
    ("def f(self, a): pass", "def f(self, a, c): pass", ["new required parameter 'c'"]),
    ("def f(self, *, k=1): pass", "def f(self): pass", ["keyword parameter 'k' of the base is missing"]),
    ("def f(self, *, k=1): pass", "def f(self, **kw): pass", []),
    ("def f(self, **kw): pass", "def f(self): pass", ["the base accepts **kwargs, this method does not"]),
    ("@staticmethod\ndef f(a): pass", "def f(self, a): pass", ["is a method, the base has a staticmethod"]),
    ("async def f(self): pass", "def f(self): pass", ["async in the base only"]),
])
def test_incompatibilities(base, derived, expected):
    assert incompatibilities(sig(base), sig(derived)) == expected


def test_call_problems():
    base = sig("def f(self, a, b=1, *, k): pass")
    call = ast.parse("super().f(1, b=2, k=3)").body[0].value
    assert call_problems(base, call) == []
    call = ast.parse("super().f(1, 2, 3, z=1)").body[0].value
    assert call_problems(base, call) == ["passes 3 positional argument(s), the base takes 2",
                                         "passes keyword 'z', the base has no such parameter",
                                         "does not pass the base's required keyword 'k'"]
    call = ast.parse("super().f(*args, **kwargs)").body[0].value
    assert call_problems(base, call) == []


def test_report_is_json_serialisable(tmp_path):
    from engine_overlay.ui import to_jsonable

    report = verify(project_with(tmp_path), upstream(tmp_path / "up"))
    data = json.loads(json.dumps(to_jsonable(report)))
    assert data["engine"] == "demo" and data["classes"][0]["name"] == "Derived"
    assert git(tmp_path / "up", "status", "--porcelain") == ""  # verify writes nothing to the checkout
