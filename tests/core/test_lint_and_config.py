"""overlay lint and VERSIONS.toml validation: every problem, with file:line."""

from __future__ import annotations

from pathlib import Path

from engine_overlay.config import parse_versions, write_pin
from engine_overlay.series import parse_patch, parse_series
from helpers import diff_of, make_project, make_repo, write_patch


def test_lint_reports_every_problem_with_location(tmp_path, run_cli):
    repo = make_repo(tmp_path / "up", {"a.txt": "a\nb\nc\n"})
    good = diff_of(repo, "a.txt", "a\nB\nc\n", "a")
    project = make_project(tmp_path / "proj", {"0001-good.patch": good})
    patches = project / "patches/demo"
    (patches / "0002-nohdr.patch").write_text(good)  # plain diff, no metadata at all
    (patches / "0003-trunc.patch").write_text(good.rsplit("\n", 3)[0] + "\n")  # truncated hunk
    (patches / "stray.patch").write_text(good)  # not in the series
    (patches / "series").write_text(
        "0001-good.patch\n0002-nohdr.patch\n0003-trunc.patch\n0001-good.patch\nmissing.patch\n0001-good.patch -x\n")
    code, out, data = run_cli("--format", "json", "lint", project=project)
    assert code == 1
    messages = [(Path(p["file"]).name, p["line"], p["message"]) for p in data["problems"]]
    text = "\n".join(f"{f}:{line}: {m}" for f, line, m in messages)
    assert "series:4: '0001-good.patch' listed twice (first at line 1)" in text
    assert "series:5: 'missing.patch' is listed but does not exist" in text
    assert "series:6: unknown option '-x'" in text
    assert "0002-nohdr.patch:1: missing 'Upstream-Status:'" in text
    assert "0002-nohdr.patch:1: no description" in text
    assert any(f == "0003-trunc.patch" and "truncated" in m for f, _, m in messages)
    assert "stray.patch:0: patch file is not listed in the series" in text


def test_versions_toml_errors_all_reported(tmp_path, run_cli):
    (tmp_path / "VERSIONS.toml").write_text("""[a]
version = "1.0"
colour = "blue"
[a.pins."1.0"]
kind = "sdist"
file = "a-1.0.whl"
sha256 = "xyz"
[b]
version = "2.0"
[b.pins."2.0"]
kind = "git"
url = "file:///x"
tag = "v2.0"
commit = "abc"
requires = { a = ">=3" }
""")
    project, problems = parse_versions(tmp_path / "VERSIONS.toml")
    text = "\n".join(str(p) for p in problems)
    assert "VERSIONS.toml:1: error: [a]: unknown key 'colour'" in text
    assert "sdist file must end in .tar.gz" in text
    assert "'sha256' must be 64 lowercase hex digits" in text
    assert "full 40-digit 'commit'" in text
    code, out, _ = run_cli("lint", project=tmp_path)
    assert code == 1 and "Traceback" not in out


def test_pin_pairing(tmp_path):
    (tmp_path / "VERSIONS.toml").write_text(f"""[vllm]
version = "0.32.0"
[vllm.pins."0.32.0"]
kind = "sdist"
file = "vllm-0.32.0.tar.gz"
sha256 = "{'a' * 64}"
[ascend]
version = "0.30.0rc2"
[ascend.pins."0.30.0rc2"]
kind = "sdist"
file = "ascend-0.30.0rc2.tar.gz"
sha256 = "{'b' * 64}"
requires = {{ vllm = ">=0.30,<0.31" }}
""")
    _, problems = parse_versions(tmp_path / "VERSIONS.toml")
    assert len(problems) == 1
    assert "requires vllm<0.31,>=0.30, but no pinned vllm version matches (pinned: 0.32.0)" in problems[0].message


def test_malformed_toml_is_one_clear_error(tmp_path, run_cli):
    (tmp_path / "VERSIONS.toml").write_text("[vllm\nversion = 1\n")
    code, out, _ = run_cli("apply", "vllm", project=tmp_path)
    assert code == 2 and "VERSIONS.toml:1" in out and "invalid TOML" in out and "Traceback" not in out


def test_write_pin_keeps_comments(tmp_path):
    path = tmp_path / "VERSIONS.toml"
    path.write_text('# top comment\n[e]\nversion = "1.0" # default\n[e.pins."1.0"]\nkind = "sdist"\n'
                    f'file = "e-1.0.tar.gz"\nsha256 = "{"a" * 64}"\n')
    write_pin(path, "e", "1.1", {"kind": "sdist", "file": "e-1.1.tar.gz", "sha256": "b" * 64})
    text = path.read_text()
    assert text.startswith("# top comment\n") and "# default" in text
    project, problems = parse_versions(path)
    assert not problems and project.engines["e"].version == "1.1" and set(project.engines["e"].pins) == {"1.0", "1.1"}


def test_series_and_patch_headers(tmp_path):
    series = tmp_path / "series"
    series.write_text("# comment\n\na.patch\nb.patch -p0 # trailing comment\nc.patch -p2 -R\n")
    parsed, problems = parse_series(series)
    assert not problems
    assert [(e.name, e.strip, e.reverse, e.line) for e in parsed.entries] == [
        ("a.patch", 1, False, 3), ("b.patch", 0, False, 4), ("c.patch", 2, True, 5)]
    path = write_patch(tmp_path, "x.patch", "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n", subject="Fix f")
    patch = parse_patch(path)
    assert patch.mbox and patch.subject == "Fix f" and patch.upstream_status == "Pending"
    assert patch.author == "Dev <dev@example.com>"
    assert patch.files[0].hunks[0].old == [b"a\n"] and patch.files[0].hunks[0].new == [b"b\n"]


def test_git_diff_with_mnemonic_prefixes(tmp_path):
    path = tmp_path / "m.patch"
    path.write_text("Subject: x\n\n---\ndiff --git i/src/groupmod.c w/src/groupmod.c\nindex 006eca1c..7eae4c6f 100644\n"
                    "--- i/src/groupmod.c\n+++ w/src/groupmod.c\n@@ -1 +1 @@\n-a\n+b\n")
    fp = parse_patch(path).files[0]
    assert fp.git and fp.target(1) == ("src/groupmod.c", "src/groupmod.c")


def test_lint_flags_a_pin_no_patch_applies_to(tmp_path, run_cli):
    repo = make_repo(tmp_path / "up", {"a.txt": "a\nb\nc\n"})
    project = make_project(tmp_path / "proj", {"0001-a.patch": diff_of(repo, "a.txt", "a\nB\nc\n", "a")},
                           version="0.30.0rc2")
    patch = project / "patches/demo/0001-a.patch"
    patch.write_text(patch.read_text().replace("Upstream-Status: Pending\n",
                                               "Upstream-Status: Pending\nApplies-To: >=0.30\n"))
    code, out, _ = run_cli("lint", project=project)
    assert code == 1 and "no patch of the series applies to demo 0.30.0rc2" in out


def test_lint_checks_every_message_of_a_mailbox(tmp_path, run_cli):
    from helpers import PATCH_HEAD

    repo = make_repo(tmp_path / "up", {"a.txt": "one\n", "b.txt": "two\n"})
    first = PATCH_HEAD.format(subject="first") + diff_of(repo, "a.txt", "ONE\n", "a")
    second = PATCH_HEAD.format(subject="second").replace("Upstream-Status: Pending\n", "") + diff_of(
        repo, "b.txt", "TWO\n", "b")
    project = make_project(tmp_path / "proj", {})
    (project / "patches/demo/all.mbox").write_text(first + second)
    (project / "patches/demo/series").write_text("all.mbox\n")
    code, out, _ = run_cli("lint", project=project)
    line = (first + second).splitlines().index("From: Dev <dev@example.com>", 2) + 1
    assert code == 1 and f"all.mbox:{line}: error: missing 'Upstream-Status:'" in out, out
    assert out.count("Upstream-Status") == 1
