"""The only module that talks to git (through gitpython's command wrapper).

Commits for a whole series are written in one `git fast-import` stream: one
process instead of one `git am` per patch, and the branch ref only appears
when every commit exists, so an interrupted run never leaves half a branch.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import git

from .errors import OverlayError

ZERO_SHA = "0" * 40


@dataclass
class CommitSpec:
    message: str
    author_name: str
    author_email: str
    author_time: int  # seconds since the epoch
    author_tz: str  # "+0000"
    changes: dict[str, tuple[bytes | None, int]] = field(default_factory=dict)  # path -> (content|None, mode)


def open_repo(path: Path) -> git.Repo:
    path = Path(path)
    if not path.exists():
        raise OverlayError("checkout not found", path=path, hint="give the path of a git checkout")
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise OverlayError("not a git repository", path=path,
                           hint="run `git init` there, or use --installed for an installed package") from exc
    if repo.bare:
        raise OverlayError("bare repository: a work tree is needed", path=path)
    return repo


def work_root(repo: git.Repo) -> Path:
    return Path(repo.working_tree_dir)


def git_dir(repo: git.Repo) -> Path:
    return Path(repo.git_dir)


def dirty_paths(repo: git.Repo) -> list[str]:
    """Modified, staged or untracked (not ignored) paths; empty for a clean tree."""
    # read-only: no opportunistic index refresh (it can leave index.lock behind on a full disk)
    out = repo.git.execute(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=all", "-z"])
    return [entry[3:] for entry in out.split("\0") if entry]


def current_branch(repo: git.Repo) -> str | None:
    try:
        return repo.active_branch.name
    except TypeError:  # detached HEAD
        return None


def head_sha(repo: git.Repo) -> str | None:
    try:
        return repo.head.commit.hexsha
    except ValueError:  # no commits yet
        return None


def rev_parse(repo: git.Repo, rev: str) -> str | None:
    try:
        return repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
    except git.GitCommandError:
        return None


def branch_exists(repo: git.Repo, name: str) -> bool:
    return rev_parse(repo, f"refs/heads/{name}") is not None


def is_ancestor(repo: git.Repo, ancestor: str, rev: str) -> bool:
    try:
        repo.git.merge_base("--is-ancestor", ancestor, rev)
        return True
    except git.GitCommandError:
        return False


def read_blob(repo: git.Repo, sha: str) -> bytes | None:
    """Content of a blob named by a full or abbreviated sha, or None if absent."""
    try:
        full = repo.git.rev_parse("--verify", "--quiet", f"{sha}^{{blob}}")
    except git.GitCommandError:
        return None
    return repo.odb.stream(bytes.fromhex(full)).read()


def read_at(repo: git.Repo, rev: str, path: str) -> bytes | None:
    """Exact bytes of *path* at *rev* (None if absent); read from the object store."""
    try:
        blob = repo.commit(rev).tree / path
    except (KeyError, ValueError, git.BadName):
        return None
    return blob.data_stream.read() if blob.type == "blob" else None


def merge_file(ours: bytes, base: bytes, theirs: bytes, labels=("ours", "base", "theirs")) -> tuple[bytes, int]:
    """3-way merge of one file with `git merge-file`; returns (result, number of conflicts)."""
    with tempfile.TemporaryDirectory(prefix="overlay-merge-") as tmp:
        paths = []
        for name, data in zip(("ours", "base", "theirs"), (ours, base, theirs), strict=True):
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(str(path))
        proc = subprocess.run(
            ["git", "merge-file", "-p", "-L", labels[0], "-L", labels[1], "-L", labels[2], *paths],
            capture_output=True, check=False,
        )
    if proc.returncode < 0 or proc.returncode > 127:
        raise OverlayError(f"git merge-file failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout, proc.returncode


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def fast_import(repo: git.Repo, ref: str, parent: str, commits: list[CommitSpec],
                committer: tuple[str, str] | None = None) -> list[str]:
    """Write *commits* on top of *parent* and point *ref* at the last; return their shas."""
    if not commits:
        return []
    stream = bytearray()
    for number, spec in enumerate(commits, 1):
        name, mail = committer or (spec.author_name, spec.author_email)
        stream += b"commit %s\nmark :%d\n" % (ref.encode(), number)
        stream += b"author %s <%s> %d %s\n" % (
            spec.author_name.encode(), spec.author_email.encode(), spec.author_time, spec.author_tz.encode())
        stream += b"committer %s <%s> %d %s\n" % (name.encode(), mail.encode(), spec.author_time, spec.author_tz.encode())
        stream += _data(spec.message.encode())
        stream += b"from %s\n" % (parent.encode() if number == 1 else b":%d" % (number - 1))
        for path, (content, mode) in sorted(spec.changes.items()):
            quoted = _quote(path)
            if content is None:
                stream += b"D %s\n" % quoted
            else:
                stream += b"M %o inline %s\n" % (mode, quoted)
                stream += _data(content)
        stream += b"\n"
    with tempfile.TemporaryDirectory(prefix="overlay-import-") as tmp:
        marks = Path(tmp) / "marks"
        stream_file = Path(tmp) / "stream"
        stream_file.write_bytes(bytes(stream))
        with open(stream_file, "rb") as handle:
            try:
                repo.git.fast_import("--quiet", "--force", f"--export-marks={marks}", istream=handle)
            except git.GitCommandError as exc:
                raise OverlayError(f"git fast-import failed: {exc.stderr.strip()}",
                                   path=work_root(repo)) from exc
        shas = {}
        for line in marks.read_text().splitlines():
            mark, sha = line.split()
            shas[int(mark[1:])] = sha
    return [shas[i] for i in range(1, len(commits) + 1)]


def _quote(path: str) -> bytes:
    raw = path.encode("utf-8", errors="surrogateescape")
    if any(c in raw for c in b'"\n\\') or raw.startswith(b" "):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n") + b'"'
    return raw


def checkout(repo: git.Repo, branch: str, force: bool = False) -> None:
    args = ["-f"] if force else []
    repo.git.checkout(*args, branch)


def restore(repo: git.Repo, branch: str | None, sha: str) -> None:
    """Put the checkout back at *branch* (or detached) on *sha*, index and files included."""
    if branch:
        repo.git.checkout("-f", branch)
        repo.git.reset("--hard", sha)
    else:
        repo.git.checkout("-f", "--detach", sha)


def delete_branch(repo: git.Repo, name: str) -> None:
    if branch_exists(repo, name):
        repo.git.branch("-D", name)


def create_branch(repo: git.Repo, name: str, sha: str) -> None:
    repo.git.branch("-f", name, sha)


def init_repo(path: Path, branch: str = "upstream") -> git.Repo:
    repo = git.Repo.init(path, initial_branch=branch)
    with repo.config_writer() as cfg:
        cfg.set_value("core", "autocrlf", "false")
        cfg.set_value("user", "name", "engine-overlay")
        cfg.set_value("user", "email", "engine-overlay@localhost")
    # keep upstream bytes as they are: no end-of-line or filter conversion
    info = Path(repo.git_dir) / "info"
    info.mkdir(exist_ok=True)
    (info / "attributes").write_text("* -text -filter -ident\n")
    return repo


UPSTREAM_DATE = "2000-01-01T00:00:00+00:00"  # fixed: the same archive always gives the same commit


def commit_all(repo: git.Repo, message: str, exclude: tuple[str, ...] = ()) -> str:
    """Stage everything (upstream .gitignore files notwithstanding) and commit deterministically."""
    if exclude:
        info = Path(repo.git_dir) / "info" / "exclude"
        info.write_text("".join(f"{pattern}\n" for pattern in exclude))
    pathspec = ["."] + [f":(exclude,glob)**/{p}" for p in exclude] + [f":(exclude,glob){p}" for p in exclude]
    repo.git.add("-A", "-f", "--", *pathspec)
    env = {
        "GIT_AUTHOR_NAME": "engine-overlay", "GIT_AUTHOR_EMAIL": "engine-overlay@localhost",
        "GIT_COMMITTER_NAME": "engine-overlay", "GIT_COMMITTER_EMAIL": "engine-overlay@localhost",
        "GIT_AUTHOR_DATE": UPSTREAM_DATE, "GIT_COMMITTER_DATE": UPSTREAM_DATE,
    }
    repo.git.commit("-q", "--no-verify", "-m", message, env={**os.environ, **env})
    return repo.head.commit.hexsha
