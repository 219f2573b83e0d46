"""gitops against real repositories: which directories count as a checkout, and
what it reports about branches and objects (the apply path relies on these)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine_overlay import gitops
from engine_overlay.errors import OverlayError
from helpers import git, make_repo


def test_open_repo_accepts_the_work_tree_root_only(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"pkg/a.py": "a = 1\n"})
    repo = gitops.open_repo(root)
    assert gitops.work_root(repo) == root.resolve()
    assert gitops.git_dir(repo) == (root / ".git").resolve()
    # a subdirectory of a checkout is not a checkout: applying there would patch the parent
    with pytest.raises(OverlayError, match="not a git repository"):
        gitops.open_repo(root / "pkg")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(OverlayError, match="not a git repository"):
        gitops.open_repo(plain)
    with pytest.raises(OverlayError, match="checkout not found"):
        gitops.open_repo(tmp_path / "missing")


def test_open_repo_refuses_a_bare_repository(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"a.py": "a = 1\n"})
    git(tmp_path, "clone", "-q", "--bare", str(root), str(tmp_path / "bare.git"))
    with pytest.raises(OverlayError, match="bare repository"):
        gitops.open_repo(tmp_path / "bare.git")


def test_branch_named_like_a_tag_and_detached_head(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"a.py": "a = 1\n"}, tag="v1.0.0")
    git(root, "checkout", "-q", "-b", "v1.0.0")  # same name as the tag: `--short` would say heads/v1.0.0
    repo = gitops.open_repo(root)
    assert gitops.current_branch(repo) == "v1.0.0"
    head = gitops.head_sha(repo)
    git(root, "checkout", "-q", "--detach", head)
    assert gitops.current_branch(repo) is None
    assert gitops.rev_parse(repo, "refs/tags/v1.0.0") == head
    assert gitops.rev_parse(repo, "refs/tags/nope") is None
    assert gitops.branch_exists(repo, "v1.0.0") and not gitops.branch_exists(repo, "nope")


def test_objects_and_git_failures(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"a.py": "a = 1\n", "d/b.py": "b = 2\n"})
    repo = gitops.open_repo(root)
    assert gitops.read_at(repo, "HEAD", "d/b.py") == b"b = 2\n"
    assert gitops.read_at(repo, "HEAD", "d") is None  # a directory is not a file
    assert gitops.read_at(repo, "HEAD", "missing.py") is None
    blob = git(root, "rev-parse", "HEAD:a.py").strip()
    assert gitops.read_blob(repo, blob[:10]) == b"a = 1\n"
    assert gitops.read_blob(repo, "0" * 40) is None
    with pytest.raises(gitops.GitFailed, match="git checkout failed") as info:
        gitops.checkout(repo, "no-such-branch")
    assert info.value.exit_code == 1 and info.value.path == str(root.resolve())
    assert gitops.dirty_paths(repo) == []
    (root / "new.txt").write_text("x\n")
    assert gitops.dirty_paths(repo) == ["new.txt"]


def test_first_parent_log_follows_the_first_parent_and_stops_early(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"a.py": "a = 0\n"})
    base = git(root, "rev-parse", "HEAD").strip()
    git(root, "checkout", "-q", "-b", "side")
    git(root, "commit", "-q", "--allow-empty", "-m", "side commit")
    git(root, "checkout", "-q", "-")
    for i in range(1, 4):
        (root / "a.py").write_text(f"a = {i}\n")
        git(root, "commit", "-q", "-am", f"change {i}\n\nbody line\nOverlay-Patch: p{i}.patch")
    git(root, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    repo = gitops.open_repo(root)
    log = list(gitops.first_parent_log(repo, "HEAD"))
    assert [message.splitlines()[0] for _, message in log] == [
        "merge side", "change 3", "change 2", "change 1", "upstream"]
    assert log[-1][0] == base and "Overlay-Patch: p3.patch" in log[1][1]
    walk = gitops.first_parent_log(repo, "HEAD")
    assert next(walk)[1].startswith("merge side")
    walk.close()  # stopping early stops git; nothing is left running
    with pytest.raises(gitops.GitFailed, match="git log failed"):
        list(gitops.first_parent_log(repo, "no-such-rev"))


def test_worktree_reads_head_branch_and_every_kind_of_change(tmp_path: Path) -> None:
    """One `git status` answers what apply asks first: HEAD, the branch, what is uncommitted."""
    empty = tmp_path / "empty"
    git(tmp_path, "init", "-q", "-b", "trunk", str(empty))
    state = gitops.worktree(gitops.open_repo(empty))
    assert (state.head, state.branch, state.dirty) == (None, "trunk", [])

    root = make_repo(tmp_path / "repo", {"a.py": "a = 1\n", "b.py": "b = 1\n", "c d.py": "c = 1\n"})
    repo = gitops.open_repo(root)
    head = git(root, "rev-parse", "HEAD").strip()
    state = gitops.worktree(repo)
    assert (state.head, state.branch, state.dirty) == (head, git(root, "branch", "--show-current").strip(), [])

    (root / "a.py").write_text("a = 2\n")  # modified
    git(root, "mv", "b.py", "renamed.py")  # staged rename: two paths in one entry
    (root / "c d.py").unlink()  # deleted, a space in the name
    (root / "new dir").mkdir()
    (root / "new dir" / "x.txt").write_text("x\n")  # untracked in an untracked directory
    (root / "ignored.log").write_text("x\n")
    (root / ".gitignore").write_text("*.log\n")
    state = gitops.worktree(repo)
    assert sorted(state.dirty) == [".gitignore", "a.py", "c d.py", "new dir/x.txt", "renamed.py"]

    git(root, "checkout", "-q", "-f", "--detach", head)
    git(root, "clean", "-qfdx")
    state = gitops.worktree(repo)
    assert (state.head, state.branch, state.dirty) == (head, None, [])


def test_only_gitops_starts_git_or_imports_gitpython():
    """Every git process must carry the safe settings (hooks and fsmonitor off): one module starts them."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "tools" / "engine_overlay"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "gitops.py":
            continue
        tree = ast.parse(path.read_text())
        guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in guarded:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == "git" or n.startswith("git.") for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports gitpython")
            if (isinstance(node, (ast.List, ast.Tuple)) and node.elts and isinstance(node.elts[0], ast.Constant)
                    and node.elts[0].value == "git"):  # ["git", ...]: a command line
                offenders.append(f"{path.name}:{node.lineno} builds a git command line")
    assert offenders == []


def test_read_paths_at_reads_files_and_links_of_a_commit_in_one_process(tmp_path: Path, monkeypatch) -> None:
    names = {"a.py": "a = 1\n", "dir/b c.py": "b\n", "dir/ü.py": "u\n", "dir/deeper/x\ny.py": "nl\n",
             "other/z.py": "z\n"}
    root = make_repo(tmp_path / "repo", names)
    (root / "link.py").symlink_to("a.py")
    git(root, "add", "link.py")
    git(root, "commit", "-qm", "link")
    head = git(root, "rev-parse", "HEAD").strip()
    for name in names:
        (root / name).write_text("changed since\n")  # read from the commit, not the work tree
    repo = gitops.open_repo(root)
    started = []
    real = gitops.subprocess.Popen
    monkeypatch.setattr(gitops.subprocess, "Popen", lambda *a, **k: started.append(a[0]) or real(*a, **k))
    asked = [*names, "link.py", "missing.py", "dir", "a.py/x", "dir/deeper/none.py"]
    found = gitops.read_paths_at(repo, head, asked)
    assert {path: data for path, (_oid, data) in found.items()} == {
        **{name: text.encode() for name, text in names.items()}, "link.py": b"a.py"}
    assert len(started) == 1 and started[0][:3] == ["git", "cat-file", "--batch"]
    oid = found["a.py"][0]
    assert oid == git(root, "rev-parse", "HEAD:a.py").strip()
    again = gitops.read_paths_at(repo, head, ["a.py", "other/z.py"], {oid})
    assert again == {"a.py": (oid, None), "other/z.py": found["other/z.py"]}  # a blob the caller has


def test_switch_branch_moves_head_and_files_like_checkout(tmp_path: Path, monkeypatch) -> None:
    root = make_repo(tmp_path / "repo", {"a.py": "a = 1\n", "gone.py": "g\n", "same.py": "s\n"})
    git(root, "checkout", "-q", "-b", "next")
    (root / "a.py").write_text("a = 2\n")
    (root / "gone.py").unlink()
    (root / "new" / "n.py").parent.mkdir()
    (root / "new" / "n.py").write_text("n\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "next")
    git(root, "checkout", "-q", "main")
    repo = gitops.open_repo(root)
    commands = []
    real = gitops._proc
    monkeypatch.setattr(gitops, "_proc", lambda repo, args, input=None: commands.append(args[0]) or real(repo, args, input))
    gitops.switch_branch(repo, "next")
    assert "checkout" not in commands and "read-tree" in commands  # no second refresh of every file
    assert gitops.current_branch(repo) == "next" and git(root, "status", "--porcelain") == ""
    assert (root / "a.py").read_text() == "a = 2\n" and not (root / "gone.py").exists()
    assert (root / "new" / "n.py").read_text() == "n\n"
    assert git(root, "reflog", "-1", "--format=%gs", "HEAD").strip() == "checkout: moving from main to next"
    assert git(root, "rev-parse", "--abbrev-ref", "@{-1}").strip() == "main"  # `git checkout -` works

    # stale stat data for a file the switch rewrites (touched, same content): read-tree would
    # refuse it ("not uptodate") and writes nothing; checkout refreshes the entry and switches
    git(root, "checkout", "-q", "main")
    os.utime(root / "a.py", (1, 1))
    commands.clear()
    gitops.switch_branch(repo, "next")
    assert commands[:2] == ["read-tree", "checkout"]
    assert gitops.current_branch(repo) == "next" and (root / "a.py").read_text() == "a = 2\n"
    assert git(root, "status", "--porcelain") == ""
