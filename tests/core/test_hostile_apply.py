"""Hostile and unusual input to `overlay apply` on a git checkout: every case is refused the way
`git apply` refuses it (or better), the checkout and the user's files stay exactly as they were."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine_overlay import gitops, hunks
from engine_overlay.series import Hunk, parse_patch_bytes
from helpers import diff_of, git, make_project, make_repo, repo_state, write_patch

BASE = {"pkg/a.py": "".join(f"line {i}\n" for i in range(1, 21)), "pkg/b.py": "alpha\nbeta\ngamma\ndelta\n",
        "f": "a file\n"}


@pytest.fixture
def upstream(tmp_path) -> Path:
    return make_repo(tmp_path / "upstream", BASE)


def _apply(run_cli, project, repo, *extra):
    return run_cli("--format", "json", "apply", "demo", "--checkout", str(repo), *extra, project=project)


def _refused(run_cli, tmp_path, upstream, diff: str, words: str, name: str = "p") -> dict:
    project = make_project(tmp_path / f"proj-{name}", {"0001-x.patch": diff})
    before = repo_state(upstream)
    code, out, data = _apply(run_cli, project, upstream)
    assert code == 1, out
    assert data["patches"][0]["status"] == "failed"
    assert words in out, out
    assert repo_state(upstream) == before
    return data


# -- class 6: destinations checked before the first write, as git apply checks them --------------

def test_rename_onto_an_existing_file_is_refused(tmp_path, upstream, run_cli):
    diff = ("diff --git a/pkg/a.py b/pkg/b.py\nsimilarity index 100%\nrename from pkg/a.py\nrename to pkg/b.py\n")
    _refused(run_cli, tmp_path, upstream, diff, "already exists")


def test_copy_onto_an_existing_file_is_refused(tmp_path, upstream, run_cli):
    diff = ("diff --git a/pkg/a.py b/pkg/b.py\nsimilarity index 100%\ncopy from pkg/a.py\ncopy to pkg/b.py\n")
    _refused(run_cli, tmp_path, upstream, diff, "already exists")


def test_creating_below_a_file_never_deletes_the_file(tmp_path, upstream, run_cli):
    diff = ("diff --git a/f/x b/f/x\nnew file mode 100644\n--- /dev/null\n+++ b/f/x\n@@ -0,0 +1 @@\n+x\n")
    _refused(run_cli, tmp_path, upstream, diff, "'f' is a file")
    assert (upstream / "f").read_text() == "a file\n"


def test_writing_through_a_symlink_an_earlier_patch_created_is_refused(tmp_path, upstream, run_cli):
    outside = tmp_path / "outside"
    outside.mkdir()
    link = (f"diff --git a/d b/d\nnew file mode 120000\n--- /dev/null\n+++ b/d\n@@ -0,0 +1 @@\n+{outside}\n"
            "\\ No newline at end of file\n")
    through = "diff --git a/d/evil b/d/evil\nnew file mode 100644\n--- /dev/null\n+++ b/d/evil\n@@ -0,0 +1 @@\n+x\n"
    project = make_project(tmp_path / "proj", {"0001-link.patch": link, "0002-through.patch": through})
    before = repo_state(upstream)
    code, out, data = _apply(run_cli, project, upstream)
    assert code == 1 and [p["status"] for p in data["patches"]] == ["applied", "failed"], out
    assert "beyond a symbolic link" in out
    assert list(outside.iterdir()) == [] and repo_state(upstream) == before


def test_a_mode_change_to_a_symlink_is_a_type_change_git_refuses(tmp_path, upstream, run_cli):
    diff = "diff --git a/pkg/b.py b/pkg/b.py\nold mode 100644\nnew mode 120000\n"
    _refused(run_cli, tmp_path, upstream, diff, "does not match old mode")


def test_strip_deeper_than_the_path_is_refused(tmp_path, upstream, run_cli):
    diff = "--- a/b.py\n+++ b/b.py\n@@ -1,2 +1,2 @@\n alpha\n-beta\n+BETA\n"
    project = make_project(tmp_path / "proj", {"0001-x.patch": diff})
    (project / "patches/demo/series").write_text("0001-x.patch -p3\n")
    before = repo_state(upstream)
    code, out, _ = _apply(run_cli, project, upstream)
    assert code == 1 and repo_state(upstream) == before, out


def test_an_ignored_file_in_the_way_is_neither_overwritten_nor_deleted(tmp_path, upstream, run_cli):
    (upstream / ".gitignore").write_text("build.log\n")
    git(upstream, "add", ".gitignore")
    git(upstream, "commit", "-qm", "ignore")
    git(upstream, "tag", "-f", "v1.0.0")
    (upstream / "build.log").write_text("the user's log\n")
    diff = ("diff --git a/build.log b/build.log\nnew file mode 100644\n--- /dev/null\n+++ b/build.log\n"
            "@@ -0,0 +1 @@\n+from the patch\n")
    project = make_project(tmp_path / "proj", {"0001-x.patch": diff})
    code, out, _ = _apply(run_cli, project, upstream)
    assert code == 2 and "already exists in the working directory" in out, out
    assert (upstream / "build.log").read_text() == "the user's log\n"
    assert not gitops.branch_exists(gitops.open_repo(upstream), "overlay/demo-1.0.0")


@pytest.mark.parametrize("failure", ["warning", "missing"])
def test_a_checkout_that_could_not_write_is_detected_and_restored(tmp_path, upstream, run_cli, monkeypatch,
                                                                   failure):
    # stands in for a checkout into a read-only directory (as root, the test cannot make one): git
    # warns and exits 0, leaving an old file, or a new file is simply not there
    diff = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    new = "diff --git a/pkg/new.py b/pkg/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/pkg/new.py\n@@ -0,0 +1 @@\n+n\n"
    project = make_project(tmp_path / "proj", {"0001-b.patch": diff, "0002-new.patch": new})
    before = repo_state(upstream)
    real = gitops._proc

    def checkout(repo, args, input=None):
        proc = real(repo, args, input)
        if args[:1] in (["checkout"], ["read-tree"]) and "-f" not in args and proc.returncode == 0:  # the switch
            if failure == "warning":
                (upstream / "pkg/b.py").write_text(BASE["pkg/b.py"])
                proc.stderr = b"warning: unable to unlink 'pkg/b.py': Permission denied\n"
            else:
                (upstream / "pkg/new.py").unlink()
        return proc

    monkeypatch.setattr(gitops, "_proc", checkout)
    code, out, _ = _apply(run_cli, project, upstream)
    assert code == 1 and "restored" in out, out
    assert repo_state(upstream) == before


# -- class 5: atomicity -------------------------------------------------------------------------

def test_a_stopped_cherry_pick_is_refused(tmp_path, upstream, run_cli):
    project = make_project(tmp_path / "proj", {"0001-x.patch": diff_of(upstream, "f", "changed\n", "x")})
    git(upstream, "checkout", "-q", "-b", "side")
    (upstream / "pkg/b.py").write_text("side\n")
    git(upstream, "commit", "-qam", "side")
    git(upstream, "checkout", "-q", "main")
    (upstream / "pkg/b.py").write_text("main\n")
    git(upstream, "commit", "-qam", "main")
    git(upstream, "tag", "-f", "v1.0.0")
    import subprocess

    assert subprocess.run(["git", "cherry-pick", "side"], cwd=upstream, capture_output=True).returncode != 0
    git(upstream, "checkout", "HEAD", "--", "pkg/b.py")  # a clean tree, the cherry-pick still stopped
    assert git(upstream, "status", "--porcelain") == ""
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 2 and "in the middle of a cherry-pick" in out, out
    assert not gitops.branch_exists(gitops.open_repo(upstream), "overlay/demo-1.0.0")


@pytest.mark.parametrize("marker", ["rebase-merge/", "rebase-apply/", "MERGE_HEAD", "REVERT_HEAD", "BISECT_LOG",
                                    "sequencer/"])
def test_a_repository_mid_operation_is_refused(tmp_path, upstream, run_cli, marker):
    project = make_project(tmp_path / "proj", {"0001-x.patch": diff_of(upstream, "f", "changed\n", "x")})
    where = upstream / ".git" / marker.rstrip("/")
    if marker.endswith("/"):
        where.mkdir()
    else:
        where.write_text(git(upstream, "rev-parse", "HEAD"))
    code, out, _ = run_cli("apply", "demo", "--checkout", str(upstream), project=project)
    assert code == 2 and "in the middle of" in out, out


def test_a_failed_rebuild_keeps_the_old_branch(tmp_path, upstream, run_cli):
    good = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    project = make_project(tmp_path / "proj", {"0001-b.patch": good})
    assert _apply(run_cli, project, upstream)[0] == 0
    tip = git(upstream, "rev-parse", "overlay/demo-1.0.0").strip()
    bad = "--- a/pkg/b.py\n+++ b/pkg/b.py\n@@ -1,2 +1,2 @@\n not-there\n-nope\n+yes\n"
    write_patch(project / "patches/demo", "0002-bad.patch", bad)
    (project / "patches/demo/series").write_text("0001-b.patch\n0002-bad.patch\n")
    before = repo_state(upstream)
    code, out, _ = _apply(run_cli, project, upstream, "--rebuild")
    assert code == 1, out
    assert repo_state(upstream) == before
    assert git(upstream, "rev-parse", "overlay/demo-1.0.0").strip() == tip


def test_rebuild_refuses_a_branch_with_the_users_commits_on_top(tmp_path, upstream, run_cli):
    good = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    project = make_project(tmp_path / "proj", {"0001-b.patch": good})
    assert _apply(run_cli, project, upstream)[0] == 0
    (upstream / "mine.txt").write_text("my work\n")
    git(upstream, "add", "mine.txt")
    git(upstream, "commit", "-qm", "my own commit")
    mine = git(upstream, "rev-parse", "HEAD").strip()
    write_patch(project / "patches/demo", "0002-c.patch", diff_of(upstream, "f", "changed\n", "c"))
    (project / "patches/demo/series").write_text("0001-b.patch\n0002-c.patch\n")
    code, out, _ = _apply(run_cli, project, upstream, "--rebuild")
    assert code == 1 and "not overlay commits" in out, out
    assert git(upstream, "rev-parse", "overlay/demo-1.0.0").strip() == mine


def test_a_successful_rebuild_keeps_the_previous_tip_under_refs_overlay(tmp_path, upstream, run_cli):
    project = make_project(tmp_path / "proj", {"0001-b.patch": diff_of(upstream, "pkg/b.py", "B\n", "b")})
    assert _apply(run_cli, project, upstream)[0] == 0
    tip = git(upstream, "rev-parse", "overlay/demo-1.0.0").strip()
    write_patch(project / "patches/demo", "0002-c.patch", diff_of(upstream, "f", "changed\n", "c"))
    (project / "patches/demo/series").write_text("0001-b.patch\n0002-c.patch\n")
    code, out, _ = _apply(run_cli, project, upstream, "--rebuild")
    assert code == 0, out
    assert git(upstream, "rev-parse", "refs/overlay/previous/overlay/demo-1.0.0").strip() == tip
    assert git(upstream, "status", "--porcelain") == "" and (upstream / "f").read_text() == "changed\n"


# -- class 4: patch files that are symlinks --------------------------------------------------------

def test_a_patch_file_that_is_a_symlink_is_not_read(tmp_path, upstream, run_cli):
    secret = tmp_path / "secret"
    secret.write_text("diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a file\n+TOKEN=hunter2\n")
    project = make_project(tmp_path / "proj", {})
    os.symlink(secret, project / "patches/demo/0001-link.patch")
    (project / "patches/demo/series").write_text("0001-link.patch\n")
    before = repo_state(upstream)
    code, out, _ = _apply(run_cli, project, upstream)
    assert code == 2 and "symlink" in out and "hunter2" not in out
    assert repo_state(upstream) == before


# -- class 9, 10, 11: bounded work and one clear error ---------------------------------------------

def test_a_huge_stated_line_costs_no_search(monkeypatch):
    calls = []
    real = hunks._matches
    monkeypatch.setattr(hunks, "_matches", lambda *a: calls.append(1) or real(*a))
    hunk = Hunk(10 ** 12, 3, 10 ** 12, 3, [b"b\n", b"c\n", b"d\n"], [b"b\n", b"C\n", b"d\n"], 1, 1, 1)
    content, _ = hunks.apply_hunks(b"a\nb\nc\nd\ne\nf\ng\n", [hunk])
    assert content == b"a\nb\nC\nd\ne\nf\ng\n" and len(calls) < 20


@pytest.mark.parametrize("text", [
    '--- "a/\\u00e9.py"\n+++ "b/\\u00e9.py"\n@@ -1 +1 @@\n-x\n+y\n',
    '--- "a/\\x41.py"\n+++ "b/\\x41.py"\n@@ -1 +1 @@\n-x\n+y\n',
    'diff --git "a/\\303\\251 \\"q\\".py" "b/\\303\\251 \\"q\\".py"\n--- "a/\\303\\251 \\"q\\".py"\n'
    '+++ "b/\\303\\251 \\"q\\".py"\n@@ -1 +1 @@\n-x\n+y\n',
    f"--- a/x.py\n+++ b/x.py\n@@ -{'9' * 5000},1 +1,{'7' * 5000} @@\n-x\n+y\n",
    "diff --git a/x b/x\nold mode 0o755\nnew mode 100644\n",
    "diff --git a/x b/x\nGIT binary patch\nliteral 99999999999999\nzcmV\n\n",
])
def test_odd_patch_text_parses_or_is_one_problem(text):
    patch = parse_patch_bytes(text.encode(), Path("x.patch"), "x.patch")
    assert all(p.file == "x.patch" for p in patch.problems)


def test_an_invalid_dep3_date_is_no_date(tmp_path, upstream, run_cli):
    project = make_project(tmp_path / "proj", {})
    (project / "patches/demo/0001-x.patch").write_text(
        "Description: fix\nLast-Update: 2024-13-45\nUpstream-Status: Pending\n---\n"
        + diff_of(upstream, "f", "changed\n", "x"))
    (project / "patches/demo/series").write_text("0001-x.patch\n")
    code, out, _ = _apply(run_cli, project, upstream)
    assert code == 0, out


def test_a_removal_that_does_not_match_is_failed_not_already_applied(tmp_path, upstream, run_cli):
    diff = "--- a/pkg/b.py\n+++ b/pkg/b.py\n@@ -1,3 +1,2 @@\n alpha\n-not here\n gamma\n"
    data = _refused(run_cli, tmp_path, upstream, diff, "failed")
    assert "already" not in str(data["patches"][0])


def test_check_gives_every_patch_its_own_verdict(tmp_path, upstream, run_cli):
    good = diff_of(upstream, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    broken = "--- a/pkg/a.py\n+++ b/pkg/a.py\n@@ -1,3 +1,3 @@\n line 1\n-line 2\n"  # truncated
    link = "diff --git a/f b/f\nold mode 100644\nnew mode 120000\n"
    later = diff_of(upstream, "f", "changed\n", "c")
    project = make_project(tmp_path / "proj", {"0001-good.patch": good, "0002-broken.patch": broken,
                                              "0003-link.patch": link, "0004-later.patch": later})
    for extra in (("--check",), ()):
        code, out, data = _apply(run_cli, project, upstream, *extra)
        assert code == 1, out
        assert [p["status"] for p in data["patches"]] == ["applied", "failed", "failed", "applied"]
        assert "0002-broken.patch:" in data["patches"][1]["message"]
    assert data["branch"] is None and not gitops.branch_exists(gitops.open_repo(upstream), "overlay/demo-1.0.0")


@pytest.mark.parametrize("name", ["my series", "fix.lock", "a..b"])
def test_a_series_directory_that_is_no_branch_name_gets_a_clear_error(tmp_path, upstream, run_cli, name):
    series = tmp_path / name
    write_patch(series, "0001-b.patch", diff_of(upstream, "pkg/b.py", "B\n", "b"))
    (series / "series").write_text("0001-b.patch\n")
    code, out, _ = run_cli("apply", "--series", str(series), "--checkout", str(upstream))
    assert code == 2 and "not a valid git branch name" in out and "--branch" in out, out
    code, out, _ = run_cli("apply", "--series", str(series), "--checkout", str(upstream), "--branch", "ok")
    assert code == 0, out


@pytest.mark.parametrize("path", ["./m.py", "pkg//b.py", "pkg/"])
def test_paths_git_would_not_store_are_refused_or_normalized(tmp_path, upstream, run_cli, path):
    diff = f"--- a/{path}\n+++ b/{path}\n@@ -0,0 +1 @@\n+x\n"
    project = make_project(tmp_path / "proj", {"0001-x.patch": diff})
    before = repo_state(upstream)
    code, out, _ = _apply(run_cli, project, upstream)
    if code == 0:  # `a//b` squashed to `a/b`: the tree must be valid (fsck) and hold that name
        git(upstream, "fsck", "--strict")
    else:
        assert code in (1, 2) and repo_state(upstream) == before, out


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_a_compressed_patch_that_inflates_without_bound_is_refused(tmp_path, suffix, monkeypatch):
    import bz2
    import gzip
    import lzma

    from engine_overlay import series
    from engine_overlay.errors import OverlayError

    monkeypatch.setattr(series, "MAX_PATCH_BYTES", 1 << 20)  # the bound, made small for the test
    bomb = b"+" * (8 << 20)
    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix]
    path = tmp_path / f"bomb.patch{suffix}"
    path.write_bytes(compress(bomb))
    with pytest.raises(OverlayError, match="inflates to more than 1 MiB"):
        series.parse_patch(path)
    small = tmp_path / f"ok.patch{suffix}"
    small.write_bytes(compress(b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n") + compress(b""))
    assert series.parse_patch(small).files[0].hunks


def test_a_sparse_checkout_never_hides_a_patched_file(tmp_path, upstream, run_cli):
    git(upstream, "sparse-checkout", "set", "--no-cone", "/f")
    assert not (upstream / "pkg/b.py").exists()
    project = make_project(tmp_path / "proj", {"0001-b.patch": "--- a/pkg/b.py\n+++ b/pkg/b.py\n@@ -1,2 +1,2 @@\n"
                                                                " alpha\n-beta\n+BETA\n"})
    code, out, _ = _apply(run_cli, project, upstream)
    assert code == 1 and "sparse" in out, out
    assert not gitops.branch_exists(gitops.open_repo(upstream), "overlay/demo-1.0.0")


def test_branch_names_are_judged_as_git_judges_them():
    import random
    import subprocess

    rng = random.Random(5)
    parts = ["a", "b", ".", "/", "-", "@", "{", "}", "~", "^", ":", " ", "lock", ".lock", "..", "\\", "[", "*", "é"]
    for _ in range(400):
        name = "".join(rng.choice(parts) for _ in range(rng.randint(1, 6)))
        if name == "@":  # git reads `@` as HEAD; as a branch to create it is refused here
            continue
        expected = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True).returncode == 0
        assert gitops.valid_branch_name(name) == expected, name
