"""`overlay import`: a fork's commits on the pinned base become a series that `overlay apply`
turns back into exactly the fork's tree; a second run imports only new commits."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import GIT_ENV, git, make_project, make_repo, write_tree

BINARY = bytes(range(256)) * 4 + b"\0\0tail"
UNICODE_MESSAGE = "Ünïcödé: grüße an 日本\n\nThe body explains why.\n---\nA line after a dashed line.\n"


def commit(repo: Path, message: str, *, author: str | None = None, date: str | None = None) -> str:
    git(repo, "add", "-A")
    env = {**os.environ, **GIT_ENV}
    if date:
        env["GIT_AUTHOR_DATE"] = date
    args = ["git", "commit", "-q", "--allow-empty", "-m", message] + ([f"--author={author}"] if author else [])
    subprocess.run(args, cwd=repo, check=True, capture_output=True, env=env)
    return git(repo, "rev-parse", "HEAD").strip()


def make_fork(root: Path, tag: str | None = "v1.0.0") -> Path:
    """An upstream release (tagged) with a fork's commits on top: every kind of change."""
    repo = make_repo(root, {
        "a.txt": "one\ntwo\nthree\n",
        "old_name.py": "".join(f"line {i}\n" for i in range(40)),
        "run.sh": "#!/bin/sh\necho hi\n",
        "gone.txt": "to be deleted\n",
        "pkg/mod.py": "x = 1\n",
    }, tag=tag)
    write_tree(repo, {"new.txt": "a new file\n"})
    commit(repo, "Add new.txt", author="Ada Dev <ada@example.com>", date="2024-03-04T05:06:07+02:00")
    git(repo, "mv", "old_name.py", "pkg/new_name.py")
    commit(repo, "Rename old_name.py into pkg")
    (repo / "run.sh").chmod(0o755)
    commit(repo, "Make run.sh executable")
    (repo / "gone.txt").unlink()
    commit(repo, "Delete gone.txt")
    (repo / "link").symlink_to("a.txt")
    commit(repo, "Add a symlink")
    write_tree(repo, {"data.bin": BINARY})
    commit(repo, "Add a binary file")
    write_tree(repo, {"a.txt": "one\ntwo ü\nthree\n"})
    commit(repo, UNICODE_MESSAGE)
    write_tree(repo, {"pkg/mod.py": "x = 2\n"})
    commit(repo, "Change mod\n\nUpstream-Status: Submitted [https://example.org/pr/1]\n")
    return repo


def tree_of(repo: Path, rev: str = "HEAD") -> str:
    return git(repo, "rev-parse", f"{rev}^{{tree}}").strip()


def fresh_clone(source: Path, dest: Path, base: str = "v1.0.0") -> Path:
    git(source.parent, "clone", "-q", str(source), str(dest))
    git(dest, "checkout", "-q", "-b", "base", base)
    return dest


def do_import(run_cli, project: Path, fork: Path, *extra: str):
    return run_cli("--format", "json", "import", "demo", "--checkout", str(fork), *extra, project=project)


def series_names(project: Path) -> list[str]:
    return (project / "patches/demo/series").read_text().split()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def setup(tmp_path):
    return make_project(tmp_path / "proj", {}), make_fork(tmp_path / "fork")


def test_import_then_apply_gives_the_fork_tree(tmp_path, run_cli, setup):
    project, fork = setup
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    names = series_names(project)
    assert names == [
        "0001-Add-new-txt.patch", "0002-Rename-old-name-py-into-pkg.patch", "0003-Make-run-sh-executable.patch",
        "0004-Delete-gone-txt.patch", "0005-Add-a-symlink.patch", "0006-Add-a-binary-file.patch",
        "0007-n-c-d-gr-e-an.patch", "0008-Change-mod.patch",
    ]
    assert data["command"] == "import" and data["schema"] == 1 and data["engine"] == "demo"
    assert data["base"] == git(fork, "rev-parse", "v1.0.0").strip() and data["base_ref"] == "v1.0.0"
    assert [item["patch"] for item in data["imported"]] == names
    assert data["imported"][0]["commit"] == git(fork, "rev-parse", "HEAD~7").strip()
    assert data["skipped"] == [] and data["series"] == str(project / "patches/demo/series")
    assert data["verified"] is True
    # the message's `---` line: kept in the file, but apply (like git am) ends the message there
    assert len(data["warnings"]) == 1 and "`---` line" in data["warnings"][0]
    assert data["imported"][6]["commit"][:12] in data["warnings"][0]
    directory = project / "patches/demo"
    texts = {name: (directory / name).read_bytes() for name in names}
    for name, text in texts.items():
        assert text.count(b"\nUpstream-Status: ") == 1, name
    first = texts[names[0]].decode()
    assert "From: Ada Dev <ada@example.com>" in first and "Date: Mon, 4 Mar 2024 05:06:07 +0200" in first
    assert "rename from old_name.py\nrename to pkg/new_name.py" in texts[names[1]].decode()
    assert "old mode 100644\nnew mode 100755" in texts[names[2]].decode()
    assert "deleted file mode 100644" in texts[names[3]].decode()
    assert "new file mode 120000" in texts[names[4]].decode()
    assert "GIT binary patch" in texts[names[5]].decode()
    assert b"Upstream-Status: Submitted [https://example.org/pr/1]" in texts[names[7]]
    assert b"index " in texts[names[0]] and b"-- \n" not in texts[names[0]]  # full index, no signature

    code, out, lint = run_cli("--format", "json", "lint", project=project)
    assert code == 0 and lint["errors"] == 0, out
    assert not [p for p in lint["problems"] if "patches/demo" in (p["file"] or "")], lint["problems"]

    target = fresh_clone(fork, tmp_path / "target")
    code, out, report = run_cli("--format", "json", "apply", "demo", "--checkout", str(target), project=project)
    assert code == 0, out
    assert [p["status"] for p in report["patches"]] == ["applied"] * 8
    assert tree_of(target) == tree_of(fork)
    # author, date and message came through
    log = git(target, "log", "--format=%an <%ae> %aI%n%s", "-8", "--reverse").splitlines()
    assert log[0] == "Ada Dev <ada@example.com> 2024-03-04T05:06:07+02:00" and log[1] == "Add new.txt"
    assert log[13] == "Ünïcödé: grüße an 日本"


def test_rerun_imports_nothing_and_then_only_new_commits(run_cli, setup):
    project, fork = setup
    assert do_import(run_cli, project, fork)[0] == 0
    directory = project / "patches/demo"
    before = snapshot(directory)
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    assert data["imported"] == [] and len(data["skipped"]) == 8
    assert [s["patch"] for s in data["skipped"]] == series_names(project)
    assert all(s["reason"].startswith("already in the series") for s in data["skipped"])
    assert data["verified"] is True
    assert snapshot(directory) == before
    write_tree(fork, {"later.txt": "later\n"})
    sha = commit(fork, "A later change")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    assert data["imported"] == [{"commit": sha, "patch": "0009-A-later-change.patch", "subject": "A later change"}]
    assert len(data["skipped"]) == 8 and data["verified"] is True
    assert series_names(project)[-1] == "0009-A-later-change.patch"
    assert {k: v for k, v in snapshot(directory).items() if k in before and k != "series"} == \
        {k: v for k, v in before.items() if k != "series"}


def test_human_report_names_each_commit(run_cli, setup):
    project, fork = setup
    code, out, _ = run_cli("import", "demo", "--checkout", str(fork), project=project)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("imported ") and lines[0].endswith("Add new.txt -> 0001-Add-new-txt.patch")
    assert "8 commit(s) imported, 0 skipped, from v1.0.0" in out and "exactly the fork's tree" in out
    code, out, _ = run_cli("import", "demo", "--checkout", str(fork), project=project)
    assert code == 0 and out.count("\nskipped  ") + out.startswith("skipped  ") == 8, out
    assert "already in the series as 0001-Add-new-txt.patch" in out


def test_a_change_made_again_after_its_revert_is_imported(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n"})
    write_tree(fork, {"a.txt": "a\nb\n"})
    commit(fork, "Add b")
    git(fork, "revert", "--no-edit", "HEAD")
    assert do_import(run_cli, project, fork)[0] == 0
    write_tree(fork, {"a.txt": "a\nb\n"})
    sha = commit(fork, "Add b again")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    assert [i["commit"] for i in data["imported"]] == [sha] and data["verified"] is True
    target = fresh_clone(fork, tmp_path / "target")
    assert run_cli("apply", "demo", "--checkout", str(target), project=project)[0] == 0
    assert tree_of(target) == tree_of(fork)


def test_a_merge_is_refused_and_flatten_imports_it(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n", "b.txt": "b\n"})
    write_tree(fork, {"a.txt": "a\nfork\n"})
    commit(fork, "Fork change")
    git(fork, "checkout", "-q", "-b", "side", "v1.0.0")
    write_tree(fork, {"b.txt": "b\nside\n", "side/new.txt": "side\n"})
    commit(fork, "Side change")
    git(fork, "checkout", "-q", "main")
    git(fork, "merge", "-q", "--no-ff", "-m", "Merge side into the fork", "side")
    merge = git(fork, "rev-parse", "HEAD").strip()
    write_tree(fork, {"a.txt": "a\nfork\nafter\n"})
    commit(fork, "After the merge")
    directory = project / "patches/demo"
    before = snapshot(directory)
    code, out, data = do_import(run_cli, project, fork)
    assert code == 2 and "Traceback" not in out, out
    assert merge[:12] in data["error"]["message"] and "merge commit" in data["error"]["message"]
    assert "--flatten" in data["error"]["hint"]
    assert snapshot(directory) == before
    code, out, data = do_import(run_cli, project, fork, "--flatten")
    assert code == 0, out
    assert [i["subject"] for i in data["imported"]] == ["Fork change", "Merge side into the fork", "After the merge"]
    assert data["imported"][1]["commit"] == merge and data["verified"] is True
    merge_patch = (directory / data["imported"][1]["patch"]).read_text()
    assert "side/new.txt" in merge_patch and "Upstream-Status: Pending" in merge_patch
    assert run_cli("--format", "json", "lint", project=project)[2]["errors"] == 0
    target = fresh_clone(fork, tmp_path / "target")
    code, out, _ = run_cli("apply", "demo", "--checkout", str(target), project=project)
    assert code == 0, out
    assert tree_of(target) == tree_of(fork)
    # re-running with --flatten recognises all three, the merge too
    code, out, data = do_import(run_cli, project, fork, "--flatten")
    assert code == 0 and data["imported"] == [] and len(data["skipped"]) == 3, out


def test_base_option_when_the_fork_has_no_tag(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n"}, tag=None)
    base = git(fork, "rev-parse", "HEAD").strip()
    write_tree(fork, {"a.txt": "a\nb\n"})
    commit(fork, "Change a")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 2 and "Traceback" not in out, out
    message = data["error"]["message"]
    assert "upstream/demo-1.0.0" in message and "v1.0.0" in message and "commit " + "0" * 40 in message
    assert "--base" in data["error"]["hint"]
    assert series_names(project) == []
    code, out, data = do_import(run_cli, project, fork, "--base", base[:10])
    assert code == 0, out
    assert data["base"] == base and data["base_ref"] == base[:10] and len(data["imported"]) == 1
    code, out, data = do_import(run_cli, project, fork, "--base", "no-such-ref")
    assert code == 2 and "no-such-ref" in data["error"]["message"], out
    code, out, data = do_import(run_cli, project, fork, "--base", "--output=/tmp/x")
    assert code == 2 and "not a revision" in data["error"]["message"], out


def test_base_not_below_the_tip_is_refused(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n"})
    git(fork, "checkout", "-q", "-b", "other")
    write_tree(fork, {"o.txt": "o\n"})
    other = commit(fork, "Other")
    git(fork, "checkout", "-q", "main")
    code, out, data = do_import(run_cli, project, fork, "--base", other)
    assert code == 2 and "not an ancestor" in data["error"]["message"], out


def test_branch_option_and_default_current_branch(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n"})
    git(fork, "checkout", "-q", "-b", "feature")
    write_tree(fork, {"f.txt": "f\n"})
    sha = commit(fork, "Feature")
    git(fork, "checkout", "-q", "main")
    code, out, data = do_import(run_cli, project, fork)  # main: nothing on top of the base
    assert code == 0 and data["imported"] == [] and data["branch"] == "main", out
    code, out, data = do_import(run_cli, project, fork, "--branch", "feature")
    assert code == 0 and [i["commit"] for i in data["imported"]] == [sha] and data["branch"] == "feature", out
    assert git(fork, "symbolic-ref", "--short", "HEAD").strip() == "main"
    code, out, data = do_import(run_cli, project, fork, "--branch", "nope")
    assert code == 2 and "branch nope does not exist" in data["error"]["message"], out
    code, out, data = do_import(run_cli, project, fork, "--branch", "-bad")
    assert code == 2 and "not a valid branch name" in data["error"]["message"], out


@pytest.mark.parametrize("subject", ["../../evil", "/abs/olute", ".git/hooks/post-commit", "..", "series"])
def test_hostile_subjects_make_safe_file_names(tmp_path, run_cli, subject):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n"})
    write_tree(fork, {"a.txt": "a\nb\n"})
    commit(fork, subject)
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    name = data["imported"][0]["patch"]
    assert "/" not in name and name.startswith("0001-") and name.endswith(".patch") and ".." not in name
    directory = project / "patches/demo"
    assert sorted(p.name for p in directory.iterdir()) == sorted([name, "series"])
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["VERSIONS.toml", "patches"]
    assert not (tmp_path / "evil.patch").exists()


def test_numbering_follows_existing_entries_and_skips_taken_names(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    directory = project / "patches/demo"
    fork = make_fork(tmp_path / "fork")
    # an existing entry numbered 0005 and a stray file in the way of the next name
    existing = git(fork, "diff", "v1.0.0", "HEAD", "--", "pkg/mod.py")
    (directory / "0005-mine.patch").write_text("Subject: mine\nUpstream-Status: Pending\n\n" + existing)
    (directory / "series").write_text("# my series\n0005-mine.patch\n")
    (directory / "0006-Add-new-txt.patch").write_text("stray\n")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    names = series_names(project)
    assert names[:3] == ["#", "my", "series"] and names[3] == "0005-mine.patch"
    # the fork's "Change mod" commit is the change 0005-mine.patch already holds
    assert [s["patch"] for s in data["skipped"]] == ["0005-mine.patch"]
    assert names[4] == "0007-Add-new-txt.patch" and len(names) == 4 + 7
    assert (directory / "0006-Add-new-txt.patch").read_text() == "stray\n"


def test_an_existing_series_that_is_not_the_forks_is_a_warning(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n", "b.txt": "b\n"})
    write_tree(fork, {"b.txt": "b\nother\n"})
    git(fork, "add", "-A")
    diff = git(fork, "diff", "--cached")
    git(fork, "reset", "-q", "--hard")
    directory = project / "patches/demo"
    (directory / "0001-other.patch").write_text("Subject: other\nUpstream-Status: Pending\n\n" + diff)
    (directory / "series").write_text("0001-other.patch\n")
    write_tree(fork, {"a.txt": "a\nfork\n"})
    commit(fork, "Fork change")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    assert data["verified"] is False and "does not give the tree" in data["warnings"][0]
    assert "'b.txt'" in data["warnings"][0]
    assert series_names(project) == ["0001-other.patch", "0002-Fork-change.patch"]


@pytest.mark.parametrize("line", ["diff --git a/x b/x", "Index: x", "--- a/x\n+++ b/x",
                                  "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001"])
def test_a_message_that_would_read_as_a_diff_is_refused(tmp_path, run_cli, line):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n"})
    write_tree(fork, {"a.txt": "a\nb\n"})
    sha = commit(fork, f"Tricky\n\nSee:\n{line}\nmore\n")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 2 and "Traceback" not in out, out
    assert sha[:12] in data["error"]["message"] and "reword" in data["error"]["hint"]
    assert sorted(p.name for p in (project / "patches/demo").iterdir()) == ["series"]
    assert series_names(project) == []


def test_empty_commits_are_skipped(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n"})
    commit(fork, "Nothing at all")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    assert data["imported"] == [] and data["skipped"][0]["reason"].startswith("empty commit")
    assert series_names(project) == []


def test_a_repository_in_the_middle_of_a_merge_is_refused(run_cli, setup):
    project, fork = setup
    (fork / ".git" / "MERGE_HEAD").write_text(git(fork, "rev-parse", "HEAD"))
    code, out, data = do_import(run_cli, project, fork)
    assert code == 2 and "in the middle of a merge" in data["error"]["message"], out
    assert series_names(project) == []


def test_a_dirty_checkout_is_only_read(run_cli, setup):
    project, fork = setup
    write_tree(fork, {"a.txt": "uncommitted\n", "untracked.txt": "u\n"})
    status = git(fork, "status", "--porcelain")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0 and len(data["imported"]) == 8, out
    assert git(fork, "status", "--porcelain") == status
    assert (fork / "a.txt").read_text() == "uncommitted\n"


def test_hooks_of_the_checkout_never_run(tmp_path, run_cli, setup):
    project, fork = setup
    marker = tmp_path / "hook-ran"
    for hook in ("post-checkout", "pre-commit", "post-rewrite", "reference-transaction"):
        path = fork / ".git" / "hooks" / hook
        path.write_text(f"#!/bin/sh\ntouch {marker}\n")
        path.chmod(0o755)
    git(fork, "config", "core.fsmonitor", f"touch {marker}; false")
    assert do_import(run_cli, project, fork)[0] == 0
    assert not marker.exists()


def test_not_a_checkout_is_a_usage_error(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    (tmp_path / "plain").mkdir()
    code, out, data = do_import(run_cli, project, tmp_path / "plain")
    assert code == 2 and "not a git repository" in data["error"]["message"], out


def test_a_reversed_series_entry_does_not_count_as_imported(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    fork = make_repo(tmp_path / "fork", {"a.txt": "a\n"})
    write_tree(fork, {"a.txt": "a\nb\n"})
    sha = commit(fork, "Add b")
    directory = project / "patches/demo"
    (directory / "0001-add-b.patch").write_bytes(git(fork, "format-patch", "--stdout", "-1", "HEAD").encode())
    (directory / "series").write_text("0001-add-b.patch -R\n")
    code, out, data = do_import(run_cli, project, fork)
    assert code == 0, out
    assert [i["commit"] for i in data["imported"]] == [sha] and data["skipped"] == []
    assert data["verified"] is False and data["warnings"]
