"""Runs killed with SIGKILL at random points leave the original state, the applied
state, or a journal that --abort / --continue resolve. Nothing else."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from helpers import git, make_project, make_repo, repo_state, snapshot_tree

N_FILES = 40


def big_project(tmp_path):
    files = {f"pkg/m{i}.py": "".join(f"v{j} = {j}\n" for j in range(50)) for i in range(N_FILES)}
    repo = make_repo(tmp_path / "up", files)
    patches = {}
    for i in range(N_FILES):
        path = f"pkg/m{i}.py"
        diff = (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -10,7 +10,7 @@\n"
                " v9 = 9\n v10 = 10\n v11 = 11\n-v12 = 12\n+v12 = 'patched'\n v13 = 13\n v14 = 14\n v15 = 15\n")
        patches[f"{i:04d}-m{i}.patch"] = diff
    project = make_project(tmp_path / "proj", patches, overlay={"pkg/npu/new.py": "x = 1\n"})
    return repo, project


def overlay(project, *args, check=False):
    return subprocess.run([sys.executable, "-m", "engine_overlay", "--project", str(project), *args],
                          capture_output=True, text=True, check=check)


def test_journal_left_behind_blocks_and_abort_restores(tmp_path):
    repo, project = big_project(tmp_path)
    before = repo_state(repo)
    journal = repo / ".git/engine-overlay/journal.json"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"phase": "checkout", "branch": "overlay/demo-1.0.0", "orig_branch": "main", '
                       f'"orig_head": "{before["head"]}"}}')
    git(repo, "branch", "overlay/demo-1.0.0")
    proc = overlay(project, "apply", "demo", "--checkout", str(repo))
    assert proc.returncode == 1 and "--abort" in proc.stderr and "Traceback" not in proc.stderr
    proc = overlay(project, "apply", "demo", "--checkout", str(repo), "--abort")
    assert proc.returncode == 0, proc.stderr
    assert repo_state(repo) == before and not journal.exists()


def test_abort_removes_files_a_cut_short_checkout_wrote(tmp_path):
    """A checkout of the overlay branch that died mid-way (disk full) leaves files the
    original commit does not have; --abort removes those it wrote (whole or cut short)
    and never a file whose content is not the branch's."""
    repo, project = big_project(tmp_path)
    before = repo_state(repo)
    proc = overlay(project, "apply", "demo", "--checkout", str(repo))
    assert proc.returncode == 0, proc.stderr
    git(repo, "checkout", "-q", "main")
    journal = repo / ".git/engine-overlay/journal.json"
    journal.write_text('{"phase": "checkout", "branch": "overlay/demo-1.0.0", "orig_branch": "main", '
                       f'"orig_head": "{before["head"]}"}}')
    new = repo / "pkg/npu/new.py"
    new.parent.mkdir(parents=True)
    new.write_text("x =")  # the first bytes of the overlay file, then the disk filled up
    assert overlay(project, "apply", "demo", "--checkout", str(repo), "--abort").returncode == 0
    assert repo_state(repo) == before and not (repo / "pkg/npu").exists()

    assert overlay(project, "apply", "demo", "--checkout", str(repo)).returncode == 0
    git(repo, "checkout", "-q", "main")
    journal.write_text('{"phase": "checkout", "branch": "overlay/demo-1.0.0", "orig_branch": "main", '
                       f'"orig_head": "{before["head"]}"}}')
    new.parent.mkdir(parents=True)
    new.write_text("my own notes\n")  # not what the branch holds: somebody else's file
    assert overlay(project, "apply", "demo", "--checkout", str(repo), "--abort").returncode == 0
    assert new.read_text() == "my own notes\n"


def test_corrupt_journal_names_the_file(tmp_path):
    repo, project = big_project(tmp_path)
    journal = repo / ".git/engine-overlay/journal.json"
    journal.parent.mkdir(parents=True)
    journal.write_text("{not json")
    proc = overlay(project, "apply", "demo", "--checkout", str(repo))
    assert proc.returncode == 2 and "journal.json" in proc.stderr and "Traceback" not in proc.stderr


def test_kill_at_random_points(tmp_path):
    repo, project = big_project(tmp_path)
    before = repo_state(repo)
    # the applied state, for comparison: the same commits are deterministic
    reference = tmp_path / "reference"
    subprocess.run(["git", "clone", "-q", str(repo), str(reference)], check=True)
    git(reference, "tag", "v1.0.0", "origin/main") if not git(reference, "tag").strip() else None
    assert overlay(project, "apply", "demo", "--checkout", str(reference)).returncode == 0
    applied_files = snapshot_tree(reference)
    applied_head = git(reference, "rev-parse", "HEAD").strip()

    rng = random.Random(1234)
    outcomes = {"untouched": 0, "applied": 0, "aborted": 0}
    for _trial in range(12):
        proc = subprocess.Popen([sys.executable, "-m", "engine_overlay", "--project", str(project), "apply", "demo",
                                 "--checkout", str(repo)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.2))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        journal = repo / ".git/engine-overlay/journal.json"
        if journal.exists():
            result = overlay(project, "apply", "demo", "--checkout", str(repo), "--abort")
            assert result.returncode == 0, result.stderr
            outcomes["aborted"] += 1
            assert repo_state(repo) == before
        elif git(repo, "rev-parse", "HEAD").strip() == before["head"]:
            outcomes["untouched"] += 1
            state = repo_state(repo)
            assert state["files"] == before["files"] and state["status"] == ""
            assert "overlay/demo-1.0.0" not in state["branches"]
        else:
            outcomes["applied"] += 1
            assert git(repo, "rev-parse", "HEAD").strip() == applied_head
            assert snapshot_tree(repo) == applied_files and git(repo, "status", "--porcelain") == ""
        # reset for the next trial
        git(repo, "checkout", "-q", "-f", "main")
        if "overlay/demo-1.0.0" in git(repo, "branch"):
            git(repo, "branch", "-q", "-D", "overlay/demo-1.0.0")
        assert repo_state(repo) == before
    assert sum(outcomes.values()) == 12
