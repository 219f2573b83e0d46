"""overlay apply / status on real git checkouts built in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import diff_of, git, make_project, make_repo, repo_state, write_patch

BASE = {
    "pkg/a.py": "".join(f"line {i}\n" for i in range(1, 41)),
    "pkg/b.py": "alpha\nbeta\ngamma\ndelta\n",
    "run.sh": "#!/bin/sh\necho hi\n",
}


@pytest.fixture
def upstream(tmp_path) -> Path:
    return make_repo(tmp_path / "upstream", BASE)


def test_apply_creates_branch_with_one_commit_per_patch(tmp_path, upstream, run_cli):
    d1 = diff_of(upstream, "pkg/a.py", BASE["pkg/a.py"].replace("line 5\n", "line five\n"), "a")
    d2 = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    project = make_project(tmp_path / "proj", {"0001-a.patch": d1, "0002-b.patch": d2},
                           overlay={"pkg/npu/__init__.py": "x = 1\n"})
    code, out, data = run_cli("--format", "json", "apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 0, out
    assert data["status"] == "applied"
    assert [p["status"] for p in data["patches"]] == ["applied", "applied"]
    assert data["branch"] == "overlay/demo-1.0.0"
    log = git(upstream, "log", "--format=%s|%an|%ad", "--date=iso", "main..HEAD").splitlines()
    assert len(log) == 3  # two patches + the overlay files commit
    assert log[-1].startswith("0001-a.patch|Dev|2024-01-01 10:00:00")
    body = git(upstream, "log", "-1", "--format=%B", "HEAD~2")
    assert "Overlay-Patch: 0001-a.patch" in body and "Overlay-Patch-Sha256: " in body
    assert (upstream / "pkg/a.py").read_text().count("line five") == 1
    assert (upstream / "pkg/npu/__init__.py").read_text() == "x = 1\n"
    assert git(upstream, "rev-parse", "--abbrev-ref", "HEAD").strip() == "overlay/demo-1.0.0"
    assert git(upstream, "status", "--porcelain") == ""


def test_rerun_is_a_noop_and_changed_patch_is_detected(tmp_path, upstream, run_cli):
    d1 = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    project = make_project(tmp_path / "proj", {"0001-b.patch": d1})
    assert run_cli("apply", "demo", "--checkout", str(upstream), project=project)[0] == 0
    head = git(upstream, "rev-parse", "HEAD")
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 0 and "already" in out
    assert git(upstream, "rev-parse", "HEAD") == head
    patch = project / "patches/demo/0001-b.patch"
    patch.write_text(patch.read_text().replace("because the test says so", "for another reason"))
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 1 and "changed since applied: 0001-b.patch" in out
    code, out, data = run_cli("--format", "json", "status", "demo", "--checkout", str(upstream), project=project)
    assert code == 1 and data["patches"][0]["status"] == "applied-but-changed"


def test_offsets_are_reported_never_fuzz(tmp_path, upstream, run_cli):
    diff = diff_of(upstream, "pkg/a.py", BASE["pkg/a.py"].replace("line 30\n", "line thirty\n"), "a")
    # upstream moves on: three lines inserted at the top -> the hunk is found at offset +3
    write_patch_dir = tmp_path / "proj"
    project = make_project(write_patch_dir, {"0001-a.patch": diff})
    (upstream / "pkg/a.py").write_text("new 1\nnew 2\nnew 3\n" + BASE["pkg/a.py"])
    git(upstream, "commit", "-qam", "upstream moves")
    code, out, data = run_cli("--format", "json", "apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 0, out
    hunk = data["patches"][0]["files"][0]["hunks"][0]
    assert data["patches"][0]["status"] == "offset" and hunk["offset"] == 3
    # a changed context line is never fuzzed over: without --3way it fails, as `git apply` does;
    # with it, it takes a reported 3-way merge
    git(upstream, "checkout", "-q", "main")
    git(upstream, "branch", "-D", "overlay/demo-1.0.0")
    (upstream / "pkg/a.py").write_text(BASE["pkg/a.py"].replace("line 28\n", "line 28 edited\n"))
    git(upstream, "commit", "-qam", "context edited")
    code, out, data = run_cli("--format", "json", "apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 1 and data["patches"][0]["status"] == "failed"
    code, out, data = run_cli("--format", "json", "apply", "demo", "--3way", "--checkout", str(upstream),
                              project=project)
    assert code == 0, out
    assert data["patches"][0]["status"] == "3-way"
    assert data["patches"][0]["files"][0]["hunks"][0]["status"] == "3-way"


def test_failing_patches_all_listed_and_checkout_untouched(tmp_path, upstream, run_cli):
    d1 = diff_of(upstream, "pkg/a.py", BASE["pkg/a.py"].replace("line 5\n", "line five\n"), "a")
    d2 = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    d3 = diff_of(upstream, "pkg/a.py", BASE["pkg/a.py"].replace("line 35\n", "line 35!\n"), "c")
    project = make_project(tmp_path / "proj", {"0001-a.patch": d1, "0002-b.patch": d2, "0003-c.patch": d3})
    # upstream changed the lines patches 2 and 3 touch (and their blobs are unknown: no 3-way)
    (upstream / "pkg/b.py").write_text("alpha\nbeta2\ngamma\ndelta\n")
    (upstream / "pkg/a.py").write_text(BASE["pkg/a.py"].replace("line 35\n", "line 35 upstream\n"))
    git(upstream, "commit", "-qam", "upstream edits")
    git(upstream, "tag", "-f", "v1.0.0")
    git(upstream, "reflog", "expire", "--expire=now", "--all")
    git(upstream, "gc", "-q", "--prune=now")
    before = repo_state(upstream)
    code, out, data = run_cli("--format", "json", "apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 1
    assert [p["status"] for p in data["patches"]] == ["applied", "failed", "failed"]
    assert repo_state(upstream) == before


def test_three_way_when_blob_is_known(tmp_path, upstream, run_cli):
    # the patch's preimage blob exists in the repo: a 3-way merge succeeds despite changed context
    diff = diff_of(upstream, "pkg/b.py", "alpha\nbeta\ngamma\nDELTA\n", "d")
    project = make_project(tmp_path / "proj", {"0001-d.patch": diff})
    (upstream / "pkg/b.py").write_text("alpha\nBETA (upstream)\ngamma\ndelta\n")
    git(upstream, "commit", "-qam", "upstream edits context")
    code, out, data = run_cli("--format", "json", "apply", "demo", "-3", "--checkout", str(upstream), project=project)
    assert code == 0, out
    assert data["patches"][0]["status"] == "3-way"
    assert (upstream / "pkg/b.py").read_text() == "alpha\nBETA (upstream)\ngamma\nDELTA\n"


def test_dirty_tree_refused(tmp_path, upstream, run_cli):
    project = make_project(tmp_path / "proj", {"0001-b.patch": diff_of(upstream, "pkg/b.py", "x\n", "b")})
    (upstream / "pkg/b.py").write_text("my work in progress\n")
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 2 and "uncommitted changes" in out and "Traceback" not in out
    assert (upstream / "pkg/b.py").read_text() == "my work in progress\n"
    (upstream / "untracked.txt").write_text("keep me")
    git(upstream, "checkout", "--", "pkg/b.py")
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 2 and "untracked.txt" in out


def test_base_mismatch_and_force_base(tmp_path, run_cli):
    repo = make_repo(tmp_path / "up", BASE, tag="v0.9.0")
    project = make_project(tmp_path / "proj", {"0001-b.patch": diff_of(repo, "pkg/b.py", "x\n", "b")})
    code, out, _ = run_cli("apply", "demo", "--checkout", str(repo), project=project)
    assert code == 2 and "base mismatch" in out and "--force-base" in out
    code, out, _ = run_cli("apply", "demo", "--checkout", str(repo), "--force-base", project=project)
    assert code == 0 and "base mismatch ignored" in out


def test_check_is_a_dry_run(tmp_path, upstream, run_cli):
    project = make_project(tmp_path / "proj", {"0001-b.patch": diff_of(upstream, "pkg/b.py", "x\n", "b")},
                           overlay={"pkg/new.py": "n = 1\n"})
    before = repo_state(upstream)
    code, out, data = run_cli("--format", "json", "apply", "demo", "--checkout", str(upstream), "--check",
                              project=project)
    assert code == 0 and data["status"] == "checked"
    assert data["overlay_files"] == [{"path": "pkg/new.py", "status": "add", "mode": "100644"}]
    assert repo_state(upstream) == before


def test_overlay_may_not_replace_upstream_unless_declared(tmp_path, upstream, run_cli):
    project = make_project(tmp_path / "proj", {}, overlay={"pkg/b.py": "replaced\n"})
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 2 and "would replace the upstream file pkg/b.py" in out
    project2 = make_project(tmp_path / "proj2", {}, overlay={"pkg/b.py": "replaced\n"},
                            extra='replaces = ["pkg/b.py"]')
    assert run_cli("apply", "demo", "--checkout", str(upstream), project=project2)[0] == 0
    assert (upstream / "pkg/b.py").read_text() == "replaced\n"


def test_overlay_keeps_exec_bit(tmp_path, upstream, run_cli):
    project = make_project(tmp_path / "proj", {}, overlay={"tools/run-npu.sh": "#!/bin/sh\n"})
    os.chmod(project / "overlay/demo/tools/run-npu.sh", 0o755)
    assert run_cli("apply", "demo", "--checkout", str(upstream), project=project)[0] == 0
    assert os.stat(upstream / "tools/run-npu.sh").st_mode & 0o111
    assert "100755" in git(upstream, "ls-files", "-s", "tools/run-npu.sh")


def test_path_traversal_refused(tmp_path, upstream, run_cli):
    evil = ("diff --git a/../escape.txt b/../escape.txt\nnew file mode 100644\n--- /dev/null\n"
            "+++ b/../escape.txt\n@@ -0,0 +1 @@\n+owned\n")
    project = make_project(tmp_path / "proj", {"0001-evil.patch": evil})
    before = repo_state(upstream)
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    # the patch gets its own verdict (failed, naming the path), as in a dry run; nothing is written
    assert code == 1 and "escapes the tree" in out and "0001-evil.patch" in out
    assert not (tmp_path / "escape.txt").exists()
    assert repo_state(upstream) == before


def test_symlink_escape_refused(tmp_path, run_cli):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = make_repo(tmp_path / "up", {"README": "r\n"}, tag=None)
    os.symlink(outside, repo / "linked")
    git(repo, "add", "linked")
    git(repo, "commit", "-qm", "link")
    git(repo, "tag", "v1.0.0")
    diff = ("diff --git a/linked/x.py b/linked/x.py\nnew file mode 100644\n--- /dev/null\n"
            "+++ b/linked/x.py\n@@ -0,0 +1 @@\n+owned\n")
    project = make_project(tmp_path / "proj", {"0001-link.patch": diff})
    code, out, _ = run_cli("apply", "demo", "--checkout", str(repo), project=project)
    assert code == 1 and "symbolic link" in out
    assert list(outside.iterdir()) == []
    # a symlink inside the overlay directory is refused too
    project2 = make_project(tmp_path / "proj2", {}, overlay={"pkg/ok.py": "x\n"})
    os.symlink("/etc/passwd", project2 / "overlay/demo/pkg/evil.py")
    code, out, _ = run_cli("apply", "demo", "--checkout", str(repo), project=project2)
    assert code == 2 and "symlink" in out


def test_keep_leaves_the_good_prefix(tmp_path, upstream, run_cli):
    d1 = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    bad = "--- a/pkg/b.py\n+++ b/pkg/b.py\n@@ -1,2 +1,2 @@\n not-there\n-nope\n+yes\n"
    project = make_project(tmp_path / "proj", {"0001-b.patch": d1, "0002-bad.patch": bad})
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), "--keep", project=project)
    assert code == 1
    assert git(upstream, "rev-parse", "--abbrev-ref", "HEAD").strip() == "overlay/demo-1.0.0"
    assert (upstream / "pkg/b.py").read_text() == "alpha\nBETA\ngamma\ndelta\n"


def test_lock_prevents_concurrent_runs(tmp_path, upstream, run_cli):
    import fcntl

    project = make_project(tmp_path / "proj", {"0001-b.patch": diff_of(upstream, "pkg/b.py", "x\n", "b")})
    lock = upstream / ".git/engine-overlay/lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 1 and "another overlay run" in out
    assert run_cli("apply", "demo", "--checkout", str(upstream), project=project)[0] == 0


def test_series_option_applies_foreign_series(tmp_path, upstream, run_cli):
    d1 = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    series_dir = tmp_path / "foreign" / "patches"
    write_patch(series_dir, "fix.diff", d1)
    (series_dir / "series").write_text("# foreign\nfix.diff -p1\n")
    code, out, _ = run_cli("apply", "--series", str(series_dir), "--checkout", str(upstream))
    assert code == 0, out
    assert (upstream / "pkg/b.py").read_text() == "alpha\nBETA\ngamma\ndelta\n"


def test_status_reports_pending_and_overlay_state(tmp_path, upstream, run_cli):
    d1 = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    project = make_project(tmp_path / "proj", {"0001-b.patch": d1}, overlay={"pkg/n.py": "n\n"})
    code, out, data = run_cli("--format", "json", "status", "demo", "--checkout", str(upstream), project=project)
    assert code == 1 and data["patches"][0]["status"] == "pending"
    assert data["overlay_files"][0]["status"] == "missing"
    run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    (project / "overlay/demo/pkg/n.py").write_text("changed\n")
    code, out, data = run_cli("--format", "json", "status", "demo", "--checkout", str(upstream), project=project)
    assert data["patches"][0]["status"] == "applied"
    assert data["overlay_files"][0]["status"] == "differs"


def test_rebuild_recreates_branch_after_series_change(tmp_path, upstream, run_cli):
    d1 = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    project = make_project(tmp_path / "proj", {"0001-b.patch": d1})
    assert run_cli("apply", "demo", "--checkout", str(upstream), project=project)[0] == 0
    d2 = diff_of(upstream, "pkg/a.py", BASE["pkg/a.py"].replace("line 2\n", "line two\n"), "a")
    write_patch(project / "patches/demo", "0002-a.patch", d2)
    (project / "patches/demo/series").write_text("0001-b.patch\n0002-a.patch\n")
    assert run_cli("apply", "demo", "--checkout", str(upstream), project=project)[0] == 1
    code, out, data = run_cli("--format", "json", "apply", "demo", "--checkout", str(upstream), "--rebuild",
                              project=project)
    assert code == 0, out
    assert [p["status"] for p in data["patches"]] == ["applied", "applied"]
    assert git(upstream, "rev-list", "--count", "main..HEAD").strip() == "2"
    assert "line two" in (upstream / "pkg/a.py").read_text()


def test_empty_new_file_kept_like_quilt_or_removed_like_dpkg_source(tmp_path, upstream, run_cli):
    diff = ("diff --git a/pkg/empty.txt b/pkg/empty.txt\nnew file mode 100644\nindex 0000000..e69de29\n")
    project = make_project(tmp_path / "proj", {"0001-empty.patch": diff})
    assert run_cli("apply", "demo", "--checkout", str(upstream), project=project)[0] == 0
    assert (upstream / "pkg/empty.txt").read_bytes() == b""
    git(upstream, "checkout", "-q", "main")
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), "--remove-empty", "--branch", "dpkg",
                           project=project)
    assert code == 0, out
    assert not (upstream / "pkg/empty.txt").exists()


def test_patch_without_diff_is_a_noop_and_odd_authors_are_kept(tmp_path, upstream, run_cli):
    project = make_project(tmp_path / "proj", {})
    series_dir = project / "patches/demo"
    (series_dir / "0001-empty.patch").write_text("")
    (series_dir / "0002-author.patch").write_text(
        "From: drh <>\nSubject: Fix b\n\nBecause.\n\nUpstream-Status: Pending\n---\n"
        + diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b"))
    (series_dir / "series").write_text("0001-empty.patch\n0002-author.patch\n")
    code, out, data = run_cli("--format", "json", "apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 0, out
    assert [p["status"] for p in data["patches"]] == ["applied", "applied"]
    assert git(upstream, "log", "-1", "--format=%an <%ae>").strip() == "drh <unknown@localhost>"


def test_fetched_tree_grows_from_its_tag_whatever_is_checked_out(tmp_path, run_cli):
    """Planning reads the base commit, not the checked-out branch (here: another overlay branch)."""
    from engine_overlay.apply import ApplyOptions, apply_git, series_payload
    from engine_overlay.gitops import open_repo

    repo = make_repo(tmp_path / "up", BASE)
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "pkg/b.py").write_text("other branch content\n")
    git(repo, "commit", "-qam", "unrelated work on another branch")
    series = tmp_path / "s"
    write_patch(series, "0001-b.patch", diff_of(repo, "pkg/b.py", "other branch content, patched\n", "b"))
    (series / "series").write_text("0001-b.patch\n")
    git(repo, "checkout", "-q", "main")
    patch_on_main = diff_of(repo, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    write_patch(series, "0001-b.patch", patch_on_main)
    git(repo, "checkout", "-q", "other")
    report = apply_git(open_repo(repo), series_payload(series), ApplyOptions(branch="grown"), "tree",
                       base_rev="refs/tags/v1.0.0")
    assert report.status == "applied", report
    assert git(repo, "rev-parse", "grown~1").strip() == git(repo, "rev-parse", "v1.0.0").strip()
    assert (repo / "pkg/b.py").read_text() == "alpha\nBETA\ngamma\ndelta\n"


def test_three_way_verdict_per_hunk(tmp_path, upstream, run_cli):
    new = BASE["pkg/a.py"].replace("line 5\n", "line five\n").replace("line 30\n", "line thirty\n")
    project = make_project(tmp_path / "proj", {"0001-a.patch": diff_of(upstream, "pkg/a.py", new, "a")})
    (upstream / "pkg/a.py").write_text(BASE["pkg/a.py"].replace("line 5\n", "line 5 (upstream)\n")
                                       .replace("line 28\n", "line 28 (upstream)\n"))
    git(upstream, "commit", "-qam", "upstream edits both regions")
    before = repo_state(upstream)
    code, out, data = run_cli("--format", "json", "apply", "demo", "--3way", "--checkout", str(upstream),
                              project=project)
    assert code == 1
    hunks = data["patches"][0]["files"][0]["hunks"]
    assert [(h["index"], h["status"]) for h in hunks] == [(1, "failed"), (2, "3-way")]
    assert data["patches"][0]["files"][0]["message"] == "3-way merge conflicts"
    assert repo_state(upstream) == before
