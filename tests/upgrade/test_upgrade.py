"""preview-upgrade / upgrade / export / diff-upstream on synthetic upstream releases.

The upstream is a real git repository with tags v1.0 and v2.0; the engine pins
both as git sources, so `overlay fetch` clones it like any remote.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import diff_of, git, make_repo, write_patch


def module(name: str, body: str = "", extra_top: str = "") -> str:
    lines = [extra_top] if extra_top else []
    lines += [f"# {name} line {i}" for i in range(1, 21)]
    lines += ["def f(x):", "    a = 1", "    b = 2", "    c = 3", "    d = 4", "    e = 5", "    g = 6",
              "    h = 7", "    i = 8", body or "    return x", ""]
    return "\n".join(lines) + "\n"


V1 = {"pkg/a.py": module("a"), "pkg/b.py": module("b"), "pkg/c.py": module("c"), "pkg/d.py": module("d"),
      "pkg/e.py": module("e")}


@pytest.fixture
def scenario(tmp_path):
    up = make_repo(tmp_path / "upstream", V1, tag="v1.0")
    patches = {
        "0001-clean.patch": diff_of(up, "pkg/a.py", V1["pkg/a.py"].replace("# a line 5", "# a line five"), "a"),
        "0002-offset.patch": diff_of(up, "pkg/b.py", V1["pkg/b.py"].replace("# b line 10", "# b line ten"), "b"),
        "0003-conflict.patch": diff_of(up, "pkg/c.py", V1["pkg/c.py"].replace("# c line 7", "# c line SEVEN"), "c"),
        "0004-merged.patch": diff_of(up, "pkg/d.py", V1["pkg/d.py"].replace("# d line 3", "# d line three"), "d"),
        "0005-touched.patch": diff_of(up, "pkg/e.py", V1["pkg/e.py"].replace("    i = 8", "    i = 88"), "e"),
    }
    v2 = dict(V1)
    v2["pkg/b.py"] = module("b", extra_top="# new upstream header\n# two lines")
    v2["pkg/c.py"] = V1["pkg/c.py"].replace("# c line 7", "# c line 7 (upstream)")
    v2["pkg/d.py"] = V1["pkg/d.py"].replace("# d line 3", "# d line three")
    v2["pkg/e.py"] = V1["pkg/e.py"].replace("    a = 1", "    a = 100")  # same function, far away
    for path, content in v2.items():
        (up / path).write_text(content)
    git(up, "commit", "-qam", "release 2.0")
    git(up, "tag", "v2.0")
    c1, c2 = git(up, "rev-parse", "v1.0^{commit}").strip(), git(up, "rev-parse", "v2.0^{commit}").strip()
    project = tmp_path / "proj"
    project.mkdir()
    (project / "VERSIONS.toml").write_text(f"""# the engine under test
[eng]
version = "1.0"  # default pin
[eng.pins."1.0"]
kind = "git"
url = "{up}"
tag = "v1.0"
commit = "{c1}"
[eng.pins."2.0"]
kind = "git"
url = "{up}"
tag = "v2.0"
commit = "{c2}"
""")
    series_dir = project / "patches" / "eng"
    for name, diff in patches.items():
        write_patch(series_dir, name, diff)
    (series_dir / "series").write_text("# eng series\n" + "".join(f"{n}\n" for n in patches))
    return project


def test_preview_predicts_every_outcome(scenario, run_cli):
    before = (scenario / "VERSIONS.toml").read_text()
    assert run_cli("fetch", "eng", project=scenario)[0] == 0
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "2.0", project=scenario)
    assert code == 1, out
    statuses = {p["name"]: p["status"] for p in data["report"]["patches"]}
    assert statuses == {"0001-clean.patch": "applied", "0002-offset.patch": "offset",
                        "0003-conflict.patch": "failed", "0004-merged.patch": "already-applied",
                        "0005-touched.patch": "applied"}
    offset = data["report"]["patches"][1]["files"][0]["hunks"][0]["offset"]
    assert offset == 2
    touched = {(t["patch"], t["what"]) for t in data["touched"]}
    assert ("0005-touched.patch", "function f changed upstream") in touched
    assert not any(t["patch"] == "0001-clean.patch" for t in data["touched"])
    assert any("drop 0004-merged.patch" in s for s in data["suggestions"])
    # read-only: nothing in the project or the fetched trees changed
    assert (scenario / "VERSIONS.toml").read_text() == before
    code, out, data2 = run_cli("--format", "json", "fetch", "eng", "--version", "2.0", project=scenario)
    tree = Path(data2["tree"])
    assert not [b for b in git(tree, "branch", "--format=%(refname:short)").split() if b.startswith("overlay")]
    assert git(tree, "status", "--porcelain") == ""

    # the upgrade meets exactly what the preview predicted
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--to", "2.0", project=scenario)
    assert code == 1 and result["status"] == "conflict" and result["patch"] == "0003-conflict.patch"
    conflicted = (tree / "pkg/c.py").read_text()
    assert "<<<<<<< upstream" in conflicted and ">>>>>>> 0003-conflict.patch" in conflicted
    code, out, _ = run_cli("upgrade", "eng", "--continue", project=scenario)
    assert code == 1 and "unresolved: pkg/c.py" in out  # markers still there
    (tree / "pkg/c.py").write_text(V1["pkg/c.py"].replace("# c line 7", "# c line SEVEN (upstream)"))
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--continue", project=scenario)
    assert code == 0, out
    assert result["status"] == "upgraded" and result["done"] == [
        "0001-clean.patch", "0002-offset.patch", "0003-conflict.patch", "0005-touched.patch"]
    assert result["dropped"] == [["0004-merged.patch", "already upstream in eng 2.0"]]
    versions = (scenario / "VERSIONS.toml").read_text()
    assert 'version = "2.0"  # default pin' in versions and versions.startswith("# the engine under test")
    series = (scenario / "patches/eng/series").read_text()
    assert "# dropped 0004-merged.patch: already upstream in eng 2.0" in series
    assert not (scenario / "patches/eng/0004-merged.patch").exists()
    refreshed = (scenario / "patches/eng/0003-conflict.patch").read_text()
    assert "+# c line SEVEN (upstream)" in refreshed and refreshed.startswith("From 0000000000000000000000000000000")
    assert "Upstream-Status: Pending" in refreshed
    # the branch was rebuilt from the refreshed series: status is clean on the new pin
    code, out, status = run_cli("--format", "json", "status", "eng", project=scenario)
    assert code == 0, out
    assert {p["status"] for p in status["patches"]} == {"applied"}
    # export of the unchanged branch: zero diff, twice
    snapshot = {p.name: p.read_bytes() for p in (scenario / "patches/eng").iterdir()}
    for _ in range(2):
        assert run_cli("export", "eng", project=scenario)[0] == 0
        assert {p.name: p.read_bytes() for p in (scenario / "patches/eng").iterdir()} == snapshot


def test_abort_after_manual_edit_keeps_the_edit(scenario, run_cli):
    run_cli("fetch", "eng", "--version", "2.0", project=scenario)
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--to", "2.0", project=scenario)
    assert code == 1
    tree = Path(run_cli("--format", "json", "fetch", "eng", "--version", "2.0", project=scenario)[2]["tree"])
    (tree / "pkg/c.py").write_text("my careful half-done resolution\n")
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--abort", project=scenario)
    assert code == 0 and result["status"] == "aborted"
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD").strip() == "upstream"
    assert git(tree, "status", "--porcelain") == ""
    assert "overlay/eng-2.0" not in git(tree, "branch")
    saved = result["saved"]
    assert git(tree, "show", f"{saved}:pkg/c.py") == "my careful half-done resolution\n"
    assert 'version = "1.0"' in (scenario / "VERSIONS.toml").read_text()


def test_skip_leaves_the_patch_out_and_says_so(scenario, run_cli):
    code, _, _ = run_cli("upgrade", "eng", "--to", "2.0", project=scenario)
    assert code == 1
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--skip", project=scenario)
    assert code == 0, out
    assert "0003-conflict.patch" not in result["done"]
    series = (scenario / "patches/eng/series").read_text()
    assert "# skipped 0003-conflict.patch during the upgrade to 2.0" in series


def test_diff_upstream_shows_only_touched_files(scenario, run_cli):
    code, out, data = run_cli("--format", "json", "diff-upstream", "eng", "--from", "1.0", "--to", "2.0",
                              project=scenario)
    assert code == 0, out
    changed = {f["path"] for f in data["files"]}
    assert changed == {"pkg/b.py", "pkg/c.py", "pkg/d.py", "pkg/e.py"}  # a.py unchanged upstream
    c_diff = next(f["diff"] for f in data["files"] if f["path"] == "pkg/c.py")
    assert "-# c line 7\n+# c line 7 (upstream)" in c_diff


def test_export_after_hand_commit_adds_a_patch(scenario, run_cli):
    assert run_cli("fetch", "eng", project=scenario)[0] == 0
    code, out, data = run_cli("--format", "json", "fetch", "eng", project=scenario)
    tree = Path(data["tree"])
    assert run_cli("apply", "eng", project=scenario)[0] == 0
    (tree / "pkg/a.py").write_text((tree / "pkg/a.py").read_text() + "# a downstream addition\n")
    git(tree, "commit", "-qam", "Add a downstream line to a.py")
    code, out, result = run_cli("--format", "json", "export", "eng", project=scenario)
    assert code == 0, out
    assert result["added"] == ["0006-Add-a-downstream-line-to-a-py.patch"]
    new = (scenario / "patches/eng" / result["added"][0]).read_text()
    assert "Subject: [PATCH] Add a downstream line to a.py" in new and "+# a downstream addition" in new
    assert (scenario / "patches/eng/series").read_text().splitlines()[-1] == result["added"][0]


def test_applies_to_serves_several_pins(scenario, run_cli):
    series_dir = scenario / "patches/eng"
    only_v1 = series_dir / "0001-clean.patch"
    only_v1.write_text(only_v1.read_text().replace("Upstream-Status: Pending\n",
                                                   "Upstream-Status: Pending\nApplies-To: <2.0\n"))
    (series_dir / "series").write_text("0001-clean.patch\n0002-offset.patch\n")
    assert run_cli("fetch", "eng", "--version", "2.0", project=scenario)[0] == 0
    code, out, data = run_cli("--format", "json", "apply", "eng", "--version", "2.0", project=scenario)
    assert code == 0, out
    assert {p["name"]: p["status"] for p in data["patches"]} == {
        "0002-offset.patch": "offset", "0001-clean.patch": "skipped"}
    # export on the 2.0 branch keeps the entry that serves the other pin
    before = (series_dir / "series").read_text()
    assert run_cli("export", "eng", "--version", "2.0", project=scenario)[0] == 0
    assert (series_dir / "series").read_text() == before


def test_export_regenerates_a_diffstat_the_patch_had(scenario, run_cli):
    patch = scenario / "patches/eng/0002-offset.patch"
    text = patch.read_text()
    patch.write_text(text.replace("---\ndiff --git", "---\n pkg/b.py | 2 +-\n 1 file changed, 1 insertion(+), "
                                  "1 deletion(-)\n\ndiff --git", 1))
    (scenario / "patches/eng/series").write_text("0001-clean.patch\n0002-offset.patch\n")
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--to", "2.0", project=scenario)
    assert code == 0, out
    refreshed = patch.read_text()
    assert " pkg/b.py | 2 +-\n 1 file changed, 1 insertion(+), 1 deletion(-)\n\ndiff --git" in refreshed
    assert "@@ -7,7 +7,7 @@" in text and "@@ -9,7 +9,7 @@" in refreshed  # the real change: 2 lines down


def test_upgrade_of_a_copied_file_merges_the_new_upstream_source(tmp_path, run_cli):
    source = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(30))
    up = make_repo(tmp_path / "upstream", {"pkg/runner.py": source}, tag="v1.0")
    git(up, "checkout", "-q", "-b", "derive")
    derived = source.replace("def f15():\n    return 15\n", "def f15():\n    # ---- Omni-new ----\n"
                             "    hidden = 1\n    # ---- Omni-new ----\n    return 15\n")
    (up / "pkg/npu_runner.py").write_text(derived)
    git(up, "add", "-A")
    git(up, "commit", "-qm", "derive")
    diff = git(up, "diff", "-C", "--find-copies-harder", "--full-index", "v1.0", "HEAD")
    assert "copy from pkg/runner.py" in diff
    git(up, "checkout", "-q", "main")
    (up / "pkg/runner.py").write_text(source.replace("    return 15\n", "    return 15 + 0  # 2.0\n")
                                      .replace("    return 2\n", "    return 2  # 2.0\n"))
    git(up, "commit", "-qam", "2.0")
    git(up, "tag", "v2.0")
    c1, c2 = git(up, "rev-parse", "v1.0").strip(), git(up, "rev-parse", "v2.0").strip()
    project = tmp_path / "proj"
    write_patch(project / "patches/eng", "0001-derive.patch", diff)
    (project / "patches/eng/series").write_text("0001-derive.patch\n")
    (project / "VERSIONS.toml").write_text(
        f'[eng]\nversion = "1.0"\n[eng.pins."1.0"]\nkind = "git"\nurl = "{up}"\ntag = "v1.0"\ncommit = "{c1}"\n'
        f'[eng.pins."2.0"]\nkind = "git"\nurl = "{up}"\ntag = "v2.0"\ncommit = "{c2}"\n')
    assert run_cli("fetch", "eng", project=project)[0] == 0
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--to", "2.0", project=project)
    assert code == 1 and result["status"] == "conflict", out
    tree = Path(run_cli("--format", "json", "fetch", "eng", "--version", "2.0", project=project)[2]["tree"])
    merged = (tree / "pkg/npu_runner.py").read_text()
    assert merged.count("<<<<<<<") == 1  # one conflict around f15, not the whole file
    assert "    return 2  # 2.0\n" in merged  # upstream's other change merged in
    resolved = re.sub(r"<<<<<<< upstream\n.*?>>>>>>> 0001-derive.patch\n",
                      "    # ---- Omni-new ----\n    hidden = 1\n    # ---- Omni-new ----\n    return 15 + 0  # 2.0\n",
                      merged, flags=re.S)
    (tree / "pkg/npu_runner.py").write_text(resolved)
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--continue", project=project)
    assert code == 0, out
    refreshed = (project / "patches/eng/0001-derive.patch").read_text()
    assert "copy from pkg/runner.py\ncopy to pkg/npu_runner.py" in refreshed
    assert refreshed.count("\n+") < 10  # only our lines, not a whole new file
