"""`overlay export` names patch files after commit trailers, which anyone can write: a name
leaving the series directory, or reaching a symlink, is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import git, make_project, make_repo

BRANCH = "overlay/demo-1.0.0"


def branch_with_trailer(tmp_path: Path, name: str) -> Path:
    """A checkout whose overlay branch has one commit claiming to come from patch *name*."""
    repo = tmp_path / "up"
    if not repo.exists():
        make_repo(repo, {"a.txt": "a\n"})
    git(repo, "checkout", "-q", "-B", BRANCH, "main")
    (repo / "a.txt").write_text("a\nb\n")
    git(repo, "commit", "-q", "-am", f"change a\n\nOverlay-Patch: {name}\nOverlay-Patch-Sha256: {'0' * 64}\n")
    git(repo, "checkout", "-q", "main")
    return repo


def export(run_cli, project: Path, repo: Path):
    return run_cli("export", "demo", "--checkout", str(repo), "--branch", BRANCH, project=project)


def test_a_plain_trailer_name_is_exported(tmp_path, run_cli):
    project = make_project(tmp_path / "proj", {})
    code, out, _ = export(run_cli, project, branch_with_trailer(tmp_path, "sub/0001-a.patch"))
    assert code == 0, out
    assert "+b" in (project / "patches/demo/sub/0001-a.patch").read_text()
    assert (project / "patches/demo/series").read_text() == "sub/0001-a.patch\n"


@pytest.mark.parametrize("name", ["../../evil.patch", "ABSOLUTE", "link/x.patch", "0001-linked.patch",
                                  "series", ".git/hooks/post-commit", "a//b.patch"])
def test_trailer_names_leaving_the_series_dir_are_refused(tmp_path, run_cli, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.patch").write_text("mine\n")
    project = make_project(tmp_path / "proj", {})
    series_dir = project / "patches/demo"
    (series_dir / "link").symlink_to(outside)
    (series_dir / "0001-linked.patch").symlink_to(outside / "target.patch")
    name = str(outside / "abs.patch") if name == "ABSOLUTE" else name
    before = sorted(p.name for p in series_dir.iterdir())
    repo = branch_with_trailer(tmp_path, name)
    sha = git(repo, "rev-parse", BRANCH).strip()
    code, out, _ = export(run_cli, project, repo)
    assert code == 2 and "Traceback" not in out, out
    assert f"commit {sha[:12]}" in out and "Overlay-Patch" in out
    assert sorted(p.name for p in outside.iterdir()) == ["target.patch"]
    assert (outside / "target.patch").read_text() == "mine\n"
    assert sorted(p.name for p in series_dir.iterdir()) == before
    assert (series_dir / "series").read_text() == ""
    assert not (tmp_path / "evil.patch").exists() and not (project / "evil.patch").exists()


def test_a_mailbox_of_several_messages_exports_as_one_file(tmp_path):
    """A series entry holding several messages gives one commit each; export keeps it one file."""
    from click.testing import CliRunner

    from engine_overlay.cli import cli
    from helpers import diff_of, git, make_project, make_repo

    repo = make_repo(tmp_path / "up", {"a.txt": "one\n", "b.txt": "two\n"})
    scratch = make_repo(tmp_path / "scratch", {"a.txt": "one\n", "b.txt": "two\n"}, tag=None)
    (scratch / "a.txt").write_text("ONE\n")
    git(scratch, "commit", "-qam", "first")
    (scratch / "b.txt").write_text("TWO\n")
    git(scratch, "commit", "-qam", "second")
    mbox = git(scratch, "format-patch", "--stdout", "HEAD~2..HEAD")
    project = make_project(tmp_path / "proj", {"0001-x.patch": diff_of(repo, "a.txt", "x\n", "x")})
    (project / "patches/demo/all.mbox").write_text(mbox)
    (project / "patches/demo/series").write_text("all.mbox\n")
    run = CliRunner()
    result = run.invoke(cli, ["--project", str(project), "apply", "demo", "--checkout", str(repo)])
    assert result.exit_code == 0, result.output
    assert "all.mbox [2]" in result.output
    assert len(git(repo, "log", "--format=%H", "main..HEAD").split()) == 2
    result = run.invoke(cli, ["--project", str(project), "apply", "demo", "--checkout", str(repo)])
    assert result.exit_code == 0 and "already" in result.output, result.output
    before = (project / "patches/demo/all.mbox").read_bytes()
    result = run.invoke(cli, ["--project", str(project), "export", "demo", "--checkout", str(repo)])
    assert result.exit_code == 0, result.output
    assert (project / "patches/demo/series").read_text() == "all.mbox\n"
    assert (project / "patches/demo/all.mbox").read_bytes() == before
