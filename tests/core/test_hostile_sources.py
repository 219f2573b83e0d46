"""Hostile archives: `overlay fetch` refuses every member that could leave the tree or
plant git metadata, with one error (exit 2) and nothing left behind."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from engine_overlay import sources
from engine_overlay.errors import OverlayError
from helpers import diff_of, git, make_repo, write_patch, write_tree

SAFE = {"PKG-INFO": b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n", "pkg/__init__.py": b"x = 1\n"}


def tar_bytes(entries: list[tuple]) -> bytes:
    """(name, data) regular files, or (name, type, linkname) links/specials, in this order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry[0])
            if len(entry) == 2:
                data = entry[1]
                info.size, info.mode = len(data), 0o755 if data.startswith(b"#!") else 0o644
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = entry[1], entry[2]
                tar.addfile(info)
    return buf.getvalue()


def sdist(*extra: tuple) -> bytes:
    return tar_bytes([(f"pkg-1.0/{rel}", data) for rel, data in SAFE.items()] + list(extra))


def wheel(*extra: tuple[str, bytes, int]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/__init__.py", "x = 1\n")
        for name, data, mode in extra:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def project(tmp_path: Path, data: bytes, kind: str = "sdist") -> Path:
    """A project pinning *data*, already in the download cache (so no index is asked)."""
    file = "pkg-1.0.tar.gz" if kind == "sdist" else "pkg-1.0-py3-none-any.whl"
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    (downloads / file).write_bytes(data)
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "VERSIONS.toml").write_text(f"""[pkg]
version = "1.0"
[pkg.pins."1.0"]
kind = "{kind}"
file = "{file}"
sha256 = "{hashlib.sha256(data).hexdigest()}"
index = "http://127.0.0.1:9"
""")
    (root / "patches/pkg").mkdir(parents=True, exist_ok=True)
    (root / "patches/pkg/series").write_text("")
    return root


def refused(tmp_path: Path, run_cli, data: bytes, member: str, kind: str = "sdist") -> str:
    code, out, _ = run_cli("fetch", "pkg", project=project(tmp_path, data, kind))
    assert code == 2, out
    assert "Traceback" not in out and member in out and "pkg-1.0" in out, out
    cache = tmp_path / "cache"
    assert not (cache / "trees").exists() or list((cache / "trees").iterdir()) == []  # no tree, no staging
    assert list((cache / "downloads").iterdir()) == []  # the unusable archive is not kept
    return out


@pytest.fixture
def outside(tmp_path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


def test_a_shipped_git_hook_is_refused(tmp_path, run_cli, outside):
    marker = outside / "hook-ran"
    hook = f"#!/bin/sh\ntouch {marker}\n".encode()
    data = sdist(("pkg-1.0/.git/hooks/post-commit", hook),
                 ("pkg-1.0/.git/config", f"[core]\n\tfsmonitor = touch {marker}\n".encode()))
    out = refused(tmp_path, run_cli, data, "pkg-1.0/.git/hooks/post-commit")
    assert ".git" in out and not marker.exists()


@pytest.mark.parametrize("name", ["pkg-1.0/sub/.git", "pkg-1.0/sub/.GIT", "pkg-1.0/sub/.git. ", ".git"])
def test_a_git_file_pointing_at_another_repository_is_refused(tmp_path, run_cli, name):
    other = make_repo(tmp_path / "other", {"a.txt": "a\n"})
    head = git(other, "rev-parse", "HEAD")
    refused(tmp_path, run_cli, sdist((name, f"gitdir: {other / '.git'}\n".encode())), name)
    assert git(other, "rev-parse", "HEAD") == head and git(other, "status", "--porcelain") == ""


def test_links_and_names_leaving_the_tree_are_refused(tmp_path, run_cli, outside):
    cases = [
        ("pkg-1.0/link", [("pkg-1.0/link", tarfile.SYMTYPE, str(outside)), ("pkg-1.0/link/evil", b"evil\n")]),
        ("pkg-1.0/up", [("pkg-1.0/up", tarfile.SYMTYPE, "../..")]),
        # each step stays inside, but `a` is itself a link: the chain would end above the tree
        ("pkg-1.0/b", [("pkg-1.0/a", tarfile.SYMTYPE, "."), ("pkg-1.0/b", tarfile.SYMTYPE, "a/..")]),
        ("pkg-1.0/in/evil.py", [("pkg-1.0/in", tarfile.SYMTYPE, "pkg"), ("pkg-1.0/in/evil.py", b"evil\n")]),
        ("pkg-1.0/hooks", [("pkg-1.0/hooks", tarfile.SYMTYPE, ".git/hooks")]),
        ("pkg-1.0/passwd", [("pkg-1.0/passwd", tarfile.LNKTYPE, "/etc/passwd")]),
        ("pkg-1.0/h", [("pkg-1.0/h", tarfile.LNKTYPE, "../outside/x")]),
        ("pkg-1.0/h", [("pkg-1.0/h", tarfile.LNKTYPE, "pkg-1.0/later"), ("pkg-1.0/later", b"x\n")]),
        (f"{outside}/abs", [(f"{outside}/abs", b"evil\n")]),
        ("pkg-1.0/../../evil", [("pkg-1.0/../../evil", b"evil\n")]),
        ("pkg-1.0/dev", [("pkg-1.0/dev", tarfile.CHRTYPE, "")]),
        ("pkg-1.0/fifo", [("pkg-1.0/fifo", tarfile.FIFOTYPE, "")]),
    ]
    for member, entries in cases:
        refused(tmp_path, run_cli, sdist(*entries), member)
        assert list(outside.iterdir()) == [], member
        assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_zip_members_leaving_the_tree_or_symlinks_are_refused(tmp_path, run_cli, outside):
    refused(tmp_path, run_cli, wheel(("../x", b"evil\n", 0o100644)), "../x", kind="wheel")
    assert not (tmp_path / "cache" / "trees" / "x").exists()
    refused(tmp_path, run_cli, wheel(("pkg/link", str(outside).encode(), 0o120777)), "pkg/link", kind="wheel")
    refused(tmp_path, run_cli, wheel(("pkg/.git/config", b"[core]\n", 0o100644)), "pkg/.git/config", kind="wheel")
    assert list(outside.iterdir()) == []


def test_safe_links_and_dot_slash_names_are_kept(tmp_path, run_cli):
    data = tar_bytes([("./pkg-1.0/", tarfile.DIRTYPE, ""), ("./pkg-1.0/pkg/__init__.py", b"x = 1\n"),
                      ("./pkg-1.0/run.sh", b"#!/bin/sh\n"), ("./pkg-1.0/alias.py", tarfile.SYMTYPE, "pkg/__init__.py"),
                      ("./pkg-1.0/copy.py", tarfile.LNKTYPE, "./pkg-1.0/pkg/__init__.py")])
    code, out, result = run_cli("--format", "json", "fetch", "pkg", project=project(tmp_path, data))
    assert code == 0, out
    tree = Path(result["tree"])
    assert os.readlink(tree / "alias.py") == "pkg/__init__.py"
    assert (tree / "copy.py").read_bytes() == b"x = 1\n" and not (tree / "copy.py").is_symlink()
    assert (tree / "run.sh").stat().st_mode & stat.S_IXUSR
    assert sorted(git(tree, "ls-files").split()) == ["alias.py", "copy.py", "pkg/__init__.py", "run.sh"]


def test_cache_paths_are_checked_and_rmtree_stays_in_the_cache(tmp_path, run_cli, outside):
    for engine, version in (("../x", "1"), ("a/b", "1"), ("-x", "1"), ("a\0b", "1"), ("x", "1/../../y")):
        with pytest.raises(OverlayError):
            sources.tree_path(engine, version)
    (outside / "keep.txt").write_text("mine\n")
    root = project(tmp_path, sdist())
    trees = tmp_path / "cache" / "trees"
    trees.mkdir(parents=True)
    (trees / "pkg-1.0").symlink_to(outside)  # a planted link where the tree would be
    code, out, _ = run_cli("fetch", "pkg", project=root)
    assert code == 2 and "symlink" in out and "Traceback" not in out
    assert (outside / "keep.txt").read_text() == "mine\n"
    (trees / "pkg-1.0").unlink()
    with pytest.raises(OverlayError, match="not a directory inside the cache"):
        sources._remove_tree(outside)
    assert (outside / "keep.txt").exists()


@pytest.mark.parametrize("with_base", [True, False], ids=["merge", "rej"])
def test_upgrade_conflict_never_writes_through_an_upstream_symlink(tmp_path, run_cli, outside, with_base):
    """v2.0 replaced the directory `pkg/link` by a symlink to somewhere else: the conflict
    (merge markers with a base, a .rej without) must not land there."""
    body = "".join(f"line {i}\n" for i in range(10))
    up = make_repo(tmp_path / "up", {"pkg/link/x.py": body, "pkg/a.py": "a\n"}, tag="v1.0")
    diff = diff_of(up, "pkg/link/x.py", body.replace("line 5", "line FIVE"), "x")
    if not with_base:
        diff = "".join(line for line in diff.splitlines(keepends=True) if not line.startswith("index "))
    (outside / "x.py").write_text("theirs\n")
    git(up, "rm", "-rq", "pkg/link")
    (up / "pkg/link").symlink_to(outside)
    git(up, "add", "-A")
    git(up, "commit", "-qm", "release 2.0")
    git(up, "tag", "v2.0")
    root = tmp_path / "proj"
    pins = "".join(f'[eng.pins."{v}"]\nkind = "git"\nurl = "{up}"\ntag = "v{v}"\n'
                   f'commit = "{git(up, "rev-parse", f"v{v}^{{commit}}").strip()}"\n' for v in ("1.0", "2.0"))
    write_tree(root, {"VERSIONS.toml": f'[eng]\nversion = "1.0"\n{pins}', "patches/eng/series": "0001-x.patch\n"})
    write_patch(root / "patches/eng", "0001-x.patch", diff)
    code, out, result = run_cli("--format", "json", "upgrade", "eng", "--to", "2.0", project=root)
    assert code == 1 and result["status"] == "conflict", out
    assert sorted(p.name for p in outside.iterdir()) == ["x.py"]
    assert (outside / "x.py").read_text() == "theirs\n"
    assert any("nothing written" in f and "symlink" in f for f in result["files"]), result["files"]
