"""The only module that talks to git.

Plumbing on the apply path runs `git` directly: importing gitpython costs ~60 ms
(and a `git version` probe) on every command, more than a whole small apply.
Queries that want gitpython's object model (commits, trees, the odb) reach it
through :class:`Repo`, which creates the gitpython repository on first use.

Commits for a whole series are written in one `git fast-import` stream: one
process instead of one `git am` per patch, and the branch ref only appears
when every commit exists, so an interrupted run never leaves half a branch.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckFailed, OverlayError

if TYPE_CHECKING:
    import git

ZERO_SHA = "0" * 40


class GitFailed(CheckFailed):
    """A git command run by this module failed (exit status 1); its stderr is the message."""

    def __init__(self, args: list[str], status: int, stderr: str, path: str | Path | None) -> None:
        # the subcommand: the first word that is neither an option nor the value of `-c`
        name = next((a for a, before in zip(args, ["", *args], strict=False)
                     if not a.startswith("-") and before != "-c"), "")
        super().__init__(f"git {name} failed: {stderr.strip() or f'exit status {status}'}", path=path)
        self.command = ["git", *args]
        self.status = status
        self.stderr = stderr


class Repo:
    """A git work tree (`working_tree_dir`, `git_dir` as in gitpython).

    Attributes this class does not define (``git``, ``commit``, ``odb``, ...) are
    gitpython's, from a ``git.Repo`` created on first use.
    """

    def __init__(self, work: Path, git_dir: Path) -> None:
        self.working_tree_dir = str(work)
        self.git_dir = str(git_dir)
        self._gitpython: git.Repo | None = None

    @property
    def gitpython(self) -> git.Repo:
        if self._gitpython is None:
            self._gitpython = gitpython_repo(Path(self.working_tree_dir))
        return self._gitpython

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.gitpython, name)


@dataclass
class CommitSpec:
    message: str
    author_name: str
    author_email: str
    author_time: int  # seconds since the epoch
    author_tz: str  # "+0000"
    changes: dict[str, tuple[bytes | None, int]] = field(default_factory=dict)  # path -> (content|None, mode)


# Settings forced on every git process the tool starts (plumbing, gitpython, clones): the
# repositories it works on are untrusted, so none of their hooks, fsmonitor commands or
# the user's global hooks may run, and git never prompts.
SAFE_CONFIG = (
    ("core.hooksPath", os.devnull),
    ("core.fsmonitor", "false"),
    ("core.sshCommand", "false"),
    ("protocol.ext.allow", "never"),
    ("uploadpack.packObjectsHook", ""),
)


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a git process: the caller's, plus :data:`SAFE_CONFIG` appended to
    any `GIT_CONFIG_COUNT` settings already there (environment config beats every file)."""
    env = dict(os.environ)
    try:
        count = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    for key, value in SAFE_CONFIG:
        env[f"GIT_CONFIG_KEY_{count}"] = key
        env[f"GIT_CONFIG_VALUE_{count}"] = value
        count += 1
    env["GIT_CONFIG_COUNT"] = str(count)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    if extra:
        env.update(extra)
    return env


def git_process(args: list[str], cwd: str | Path | None, input: bytes | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `git *args*` with the safe environment; never raises for a non-zero exit."""
    return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=False,
                          env=git_env(env))


def _proc(repo, args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess:
    return git_process(args, repo.working_tree_dir, input)


def run(repo, *args: str, input: bytes | None = None) -> bytes:
    """Run git in the work tree of *repo*; its stdout, or :class:`GitFailed`."""
    proc = _proc(repo, list(args), input)
    if proc.returncode != 0:
        raise GitFailed(list(args), proc.returncode, proc.stderr.decode(errors="replace"), repo.working_tree_dir)
    return proc.stdout


def _query(repo, *args: str) -> str | None:
    """stdout (stripped) of a git query, or None when git says no (non-zero exit)."""
    proc = _proc(repo, list(args))
    return proc.stdout.decode(errors="surrogateescape").strip() if proc.returncode == 0 else None


def open_repo(path: Path) -> Repo:
    path = Path(path)
    if not path.exists():
        raise OverlayError("checkout not found", path=path, hint="give the path of a git checkout")
    proc = git_process(["rev-parse", "--is-bare-repository", "--absolute-git-dir", "--show-toplevel"], path)
    lines = proc.stdout.decode(errors="surrogateescape").splitlines()
    if lines[:1] == ["true"]:
        raise OverlayError("bare repository: a work tree is needed", path=path)
    if proc.returncode != 0 or len(lines) != 3 or Path(lines[2]).resolve() != path.resolve():
        raise OverlayError("not a git repository", path=path,
                           hint="run `git init` there, or use --installed for an installed package")
    return Repo(Path(lines[2]), Path(lines[1]))


def work_root(repo) -> Path:
    return Path(repo.working_tree_dir)


def git_dir(repo) -> Path:
    return Path(repo.git_dir)


@dataclass
class Worktree:
    """What HEAD is and what is uncommitted, from one `git status`."""

    head: str | None  # None before the first commit
    branch: str | None  # None on a detached HEAD
    dirty: list[str]  # modified, staged or untracked (not ignored) paths
    missing_or_untracked: list[str] = field(default_factory=list)  # deleted, untracked, unmerged, type changed


def worktree(repo) -> Worktree:
    """HEAD, the current branch and the uncommitted paths in one git process (one index refresh)."""
    # read-only: no opportunistic index refresh (it can leave index.lock behind on a full disk)
    out = run(repo, "--no-optional-locks", "status", "--porcelain=v2", "--branch", "--no-ahead-behind",
              "--untracked-files=all", "-z")
    head = branch = None
    dirty: list[str] = []
    serious: list[str] = []
    records = iter(out.decode(errors="surrogateescape").split("\0"))
    for record in records:
        kind = record[:2]
        if record.startswith("# branch.oid "):
            head = None if record.endswith("(initial)") else record.split()[2]
        elif record.startswith("# branch.head "):
            branch = record[len("# branch.head "):]
        elif kind in _STATUS_FIELDS:
            path = record.split(" ", _STATUS_FIELDS[kind])[-1]
            dirty.append(path)
            xy = record[2:4]
            if kind in ("? ", "u ") or "D" in xy or "T" in xy:
                serious.append(path)
            if kind == "2 ":
                next(records, None)  # a rename's source path follows as its own record
    if branch == "(detached)":  # or a branch of that name: ask
        branch = current_branch(repo)
    return Worktree(head, branch, dirty, serious)


_OPERATIONS = (("rebase-merge", "a rebase"), ("rebase-apply", "a rebase or `git am`"), ("MERGE_HEAD", "a merge"),
               ("CHERRY_PICK_HEAD", "a cherry-pick"), ("REVERT_HEAD", "a revert"), ("BISECT_LOG", "a bisect"),
               ("sequencer", "a cherry-pick or revert sequence"))


def operation_in_progress(repo) -> str | None:
    """What unfinished git operation the repository is in (rebase, am, merge, ...), if any."""
    base = git_dir(repo)
    for name, what in _OPERATIONS:
        if os.path.lexists(base / name):
            return what
    return None


def tracked_paths(repo, paths: list[str]) -> list[str]:
    """Which of *paths* the index tracks (as files, or as directories holding tracked files)."""
    if not paths:
        return []
    out = run(repo, "--literal-pathspecs", "ls-files", "-z", "--", *paths)
    found = [p for p in out.decode(errors="surrogateescape").split("\0") if p]
    return [p for p in paths if any(f == p or f.startswith(p + "/") for f in found)]


# porcelain v2 entry kind -> number of space-separated fields before the path
_STATUS_FIELDS = {"1 ": 8, "2 ": 9, "u ": 10, "? ": 1, "! ": 1}


def dirty_paths(repo) -> list[str]:
    """Modified, staged or untracked (not ignored) paths; empty for a clean tree."""
    return worktree(repo).dirty


def current_branch(repo) -> str | None:
    """The checked-out branch, None on a detached HEAD."""
    ref = _query(repo, "symbolic-ref", "-q", "HEAD")
    return ref.removeprefix("refs/heads/") if ref else None


def head_sha(repo) -> str | None:
    """None before the first commit."""
    return rev_parse(repo, "HEAD")


def rev_parse(repo, rev: str) -> str | None:
    return _query(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}") or None


_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^/|/$|\.$|^-")


def valid_branch_name(name: str) -> bool:
    """What `git check-ref-format --branch` accepts (git-check-ref-format(1): no spaces or
    control characters, `..`, `@{`, `~^:?*[\\`, no component that starts with `.` or ends
    with `.lock`, not `@`); checked here, since a git process for it costs more than the rule."""
    if not name or name == "@" or _BAD_REF.search(name):
        return False
    return not any(part.startswith(".") or part.endswith(".lock") for part in name.split("/"))


def branch_exists(repo, name: str) -> bool:
    return rev_parse(repo, f"refs/heads/{name}") is not None


def is_ancestor(repo, ancestor: str, rev: str) -> bool:
    return _query(repo, "merge-base", "--is-ancestor", ancestor, rev) is not None


def read_blob(repo, sha: str) -> bytes | None:
    """Content of a blob named by a full or abbreviated sha, or None if absent."""
    full = _query(repo, "rev-parse", "--verify", "--quiet", f"{sha}^{{blob}}")
    return run(repo, "cat-file", "blob", full) if full else None


def added_paths(repo, old: str, new: str) -> list[str]:
    """Paths that exist at *new* and not at *old*."""
    out = run(repo, "diff", "--name-only", "-z", "--no-renames", "--diff-filter=A", old, new, "--")
    return [p for p in out.decode(errors="surrogateescape").split("\0") if p]


def read_at(repo, rev: str, path: str) -> bytes | None:
    """Exact bytes of *path* at *rev* (None if absent or not a file); read from the object store."""
    proc = _proc(repo, ["cat-file", "blob", f"{rev}:{path}"])
    return proc.stdout if proc.returncode == 0 else None


def first_parent_log(repo, tip: str) -> Iterator[tuple[str, str]]:
    """(sha, message) from *tip* down the first-parent chain, read as git writes it:
    a caller that stops early (e.g. at the first non-overlay commit of a long
    history) stops git too."""
    proc = subprocess.Popen(["git", "log", "--first-parent", "-z", "--format=%H%n%B", tip],
                            cwd=repo.working_tree_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=git_env())
    try:
        pending = b""
        while chunk := proc.stdout.read1(1 << 16):
            *records, pending = (pending + chunk).split(b"\0")
            yield from map(_log_entry, records)
        if pending.strip():  # the last record has no NUL after it
            yield _log_entry(pending)
        if proc.wait() != 0:
            raise GitFailed(["log", tip], proc.returncode, proc.stderr.read().decode(errors="replace"),
                            repo.working_tree_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _log_entry(record: bytes) -> tuple[str, str]:
    sha, _, message = record.partition(b"\n")
    return sha.decode(), message.decode(errors="replace")


def merge_file(ours: bytes, base: bytes, theirs: bytes, labels=("ours", "base", "theirs")) -> tuple[bytes, int]:
    """3-way merge of one file with `git merge-file`; returns (result, number of conflicts)."""
    import tempfile  # only a 3-way apply needs it (start-up time)

    with tempfile.TemporaryDirectory(prefix="overlay-merge-") as tmp:
        paths = []
        for name, data in zip(("ours", "base", "theirs"), (ours, base, theirs), strict=True):
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(str(path))
        proc = git_process(["merge-file", "-p", "-L", labels[0], "-L", labels[1], "-L", labels[2], *paths], tmp)
    if proc.returncode < 0 or proc.returncode > 127:
        raise OverlayError(f"git merge-file failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout, proc.returncode


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def fast_import(repo, ref: str, parent: str, commits: list[CommitSpec],
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
            elif mode == 0o160000:  # a submodule: the commit it points at, no blob
                stream += b"M 160000 %s %s\n" % (gitlink_commit(content, path), quoted)
            else:
                stream += b"M %o inline %s\n" % (mode, quoted)
                stream += _data(content)
        stream += b"\n"
    stream += b"".join(b"get-mark :%d\n" % number for number in range(1, len(commits) + 1))
    # a small import stays one pack: unpacking it into loose objects is a second process
    out = run(repo, "-c", "fastimport.unpackLimit=0", "fast-import", "--quiet", "--force", input=bytes(stream))
    shas = out.decode().split()
    if len(shas) != len(commits):
        raise GitFailed(["fast-import"], 0, f"expected {len(commits)} commit ids, got {len(shas)}",
                        repo.working_tree_dir)
    return shas


def gitlink_commit(content: bytes, path: str) -> bytes:
    """The commit id in a submodule's `Subproject commit <id>` text (what patches change)."""
    match = re.fullmatch(rb"Subproject commit ([0-9a-f]{40}|[0-9a-f]{64})(-dirty)?\n?", content)
    if match is None:
        raise OverlayError(f"{path}: a submodule entry must say `Subproject commit <id>`",
                           hint="the patch leaves a submodule with other content")
    return match.group(1)


def _quote(path: str) -> bytes:
    raw = path.encode("utf-8", errors="surrogateescape")
    if any(c in raw for c in b'"\n\\') or raw.startswith(b" "):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n") + b'"'
    return raw


def checkout(repo, branch: str, force: bool = False) -> None:
    run(repo, "checkout", "-q", *(["-f"] if force else []), branch)


def switch_to(repo, branch: str) -> None:
    """Check out *branch*; a checkout that says it could not write a file fails even when
    git exits 0 (a read-only directory leaves old files behind with only a warning)."""
    proc = _proc(repo, ["checkout", "-q", branch])
    complaints = [line for line in proc.stderr.decode(errors="replace").splitlines()
                  if line.startswith(("error:", "fatal:", "warning: unable"))]
    if proc.returncode != 0 or complaints:
        raise GitFailed(["checkout", branch], proc.returncode,
                        "\n".join(complaints) or proc.stderr.decode(errors="replace"), repo.working_tree_dir)


def restore(repo, branch: str | None, sha: str) -> None:
    """Put the checkout back at *branch* (or detached) on *sha*, index and files included."""
    if branch:
        run(repo, "checkout", "-q", "-f", branch)
        run(repo, "reset", "-q", "--hard", sha)
    else:
        run(repo, "checkout", "-q", "-f", "--detach", sha)


def delete_branch(repo, name: str) -> None:
    if branch_exists(repo, name):
        run(repo, "branch", "-D", name)


def create_branch(repo, name: str, sha: str) -> None:
    run(repo, "branch", "-f", name, sha)


def command_error() -> type[Exception]:
    """gitpython's error for a git command that failed (only this module imports gitpython)."""
    import git

    return git.GitCommandError


def no_repository_errors() -> tuple[type[Exception], ...]:
    """gitpython's errors for a path that holds no repository."""
    import git

    return git.InvalidGitRepositoryError, git.NoSuchPathError


def remote_tags(url: str) -> dict[str, str]:
    """Tag name -> commit of every tag of the remote repository *url* (`git ls-remote`; an
    annotated tag is peeled to its commit)."""
    if url.startswith("-"):
        raise OverlayError(f"{url!r} is not a repository URL", path="VERSIONS.toml", hint="check the pin's url")
    proc = git_process(["ls-remote", "--tags", url], None)
    if proc.returncode != 0:
        raise OverlayError(f"cannot list the tags of {url}: {proc.stderr.decode(errors='replace').strip()}",
                           path="VERSIONS.toml", hint="check the pin's url (or --url) and the network")
    tags: dict[str, str] = {}
    peeled: dict[str, str] = {}
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        sha, _, ref = line.partition("\t")
        if not ref.startswith("refs/tags/") or not re.fullmatch(r"[0-9a-f]{40}", sha):
            continue
        name = ref[len("refs/tags/"):]
        if name.endswith("^{}"):
            peeled[name[:-3]] = sha
        else:
            tags[name] = sha
    return {name: peeled.get(name, sha) for name, sha in tags.items()}


def gitpython_repo(path: Path, search_parent_directories: bool = False) -> git.Repo:
    """A gitpython repository whose git processes run with :func:`git_env`."""
    import git

    repo = git.Repo(path, search_parent_directories=search_parent_directories)
    repo.git.update_environment(**{k: v for k, v in git_env().items() if os.environ.get(k) != v})
    return repo


def clone(source: str | Path, dest: Path, **options) -> git.Repo:
    """`git clone` (through gitpython) with :func:`git_env`; returns the safe repository."""
    import git

    git.Repo.clone_from(str(source), dest, env=git_env(), **options)
    return gitpython_repo(dest)


def init_repo(path: Path, branch: str = "upstream") -> git.Repo:
    proc = git_process(["init", "-q", f"--initial-branch={branch}", str(path)], None)
    if proc.returncode != 0:
        raise GitFailed(["init"], proc.returncode, proc.stderr.decode(errors="replace"), path)
    repo = gitpython_repo(path)
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
    repo.git.commit("-q", "--no-verify", "-m", message, env=env)
    return repo.head.commit.hexsha


# a raw tree object: `<octal mode> <name>\0<binary object id>` per entry
_TREE_ENTRY = {size: re.compile(rb"([0-7]+) ([^\0]*)\0(.{%d})" % size, re.DOTALL)
               for size in (20, 32)}


class ObjectReader:
    """One `git cat-file --batch` process for many object reads (a process per read costs ms).

    Used for planning: preimages are the stored blobs, as `git apply --index` reads them
    (no end-of-line or filter conversion), and tree objects give modes without a checkout.
    """

    def __init__(self, repo) -> None:
        self._repo = repo
        self._proc: subprocess.Popen | None = None
        self.hash_name, self.hash_size = "sha1", 20  # until an object id says otherwise

    def _start(self) -> subprocess.Popen:
        if self._proc is None:
            self._proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=self._repo.working_tree_dir,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, env=git_env())
        return self._proc

    def read(self, spec: str) -> tuple[str, str, bytes] | None:
        """(full sha, type, content) of the object *spec* names, or None when it is absent."""
        if not spec or any(c in spec for c in "\n\r\0 ") or len(spec) > 4096:
            return None
        proc = self._start()
        try:
            proc.stdin.write(spec.encode("utf-8", errors="surrogateescape") + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline()
        except (BrokenPipeError, OSError) as exc:
            raise GitFailed(["cat-file"], -1, str(exc), self._repo.working_tree_dir) from exc
        if not header:
            raise GitFailed(["cat-file"], -1, "git cat-file ended early", self._repo.working_tree_dir)
        fields = header.split()
        if len(fields) != 3:
            return None  # "<spec> missing" / "ambiguous"
        if len(fields[0]) == 64:  # a SHA-256 repository
            self.hash_name, self.hash_size = "sha256", 32
        size = int(fields[2])
        data = proc.stdout.read(size + 1)[:size]
        return fields[0].decode(), fields[1].decode(), data

    def read_many(self, shas: list[str], chunk: int = 800) -> dict[str, tuple[str, bytes]]:
        """(type, content) of many full object ids, requests pipelined (no round trip per object).
        Requests go in chunks small enough for the pipe, so neither side blocks the other."""
        proc = self._start()
        found: dict[str, tuple[str, bytes]] = {}
        for start in range(0, len(shas), chunk):
            batch = [sha for sha in shas[start:start + chunk] if sha and sha.isalnum()]
            proc.stdin.write(b"".join(sha.encode() + b"\n" for sha in batch))
            proc.stdin.flush()
            for sha in batch:
                fields = proc.stdout.readline().split()
                if len(fields) == 3:
                    size = int(fields[2])
                    found[sha] = (fields[1].decode(), proc.stdout.read(size + 1)[:size])
        return found

    def blob(self, sha: str) -> bytes | None:
        found = self.read(sha)
        return found[2] if found and found[1] == "blob" else None

    def has_blob(self, sha: str) -> bool:
        found = self.read(sha)
        return bool(found) and found[1] == "blob"

    def tree_entries(self, sha: str) -> dict[bytes, tuple[bytes, bytes]]:
        """name -> (octal mode, binary object id) of a tree object, as stored (decoded on use:
        a large directory has thousands of entries and a lookup needs one)."""
        found = self.read(sha)
        if not found or found[1] != "tree":
            return {}
        return {name: (mode, sha) for mode, name, sha in _TREE_ENTRY[self.hash_size].findall(found[2])}

    def close(self) -> None:
        if self._proc is not None:
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self._proc.wait()
            self._proc = None


def read_paths_at(repo, commit: str, paths: list[str], have: set[str] | frozenset = frozenset()
                  ) -> dict[str, tuple[str, bytes | None]]:
    """(blob id, bytes) of each of *paths* (from the top of the work tree) that is a file or a
    symlink in *commit* (what `git grep` reads there), from one `git cat-file --batch`: the trees
    on their way, one level at a time, then the blobs, each request pipelined (no process per
    file, no object read that the paths do not lead to). A blob whose id is in *have* (the
    caller holds its bytes) is not read: its bytes are None."""
    reader = ObjectReader(repo)
    entry = _TREE_ENTRY[32 if len(commit) == 64 else 20]
    try:
        head = reader.read_many([commit]).get(commit)
        tree = re.match(rb"tree ([0-9a-f]+)\n", head[1]) if head and head[0] == "commit" else None
        if tree is None:
            raise GitFailed(["cat-file", "--batch"], 1, f"{commit} is not a commit", repo.working_tree_dir)
        parts = {p: p.encode("utf-8", "surrogateescape").split(b"/") for p in dict.fromkeys(paths) if p}
        trees = {(): tree.group(1).decode()}  # directory (its components) -> tree id
        listed: dict[tuple, dict[bytes, tuple[bytes, bytes]]] = {}  # directory -> name -> (mode, id)
        level = [()]
        while level:
            found = reader.read_many(sorted({trees[d] for d in level}))
            for d in level:
                obj = found.get(trees[d])
                listed[d] = ({name: (mode, oid) for mode, name, oid in entry.findall(obj[1])}
                             if obj and obj[0] == "tree" else {})
            below = {}
            for names in parts.values():
                if len(names) > len(level[0]) + 1:
                    d, sub = tuple(names[:len(level[0])]), tuple(names[:len(level[0]) + 1])
                    hit = listed.get(d, {}).get(names[len(level[0])])
                    if hit and hit[0] == b"40000":
                        trees[sub] = hit[1].hex()
                        below[sub] = None
            level = list(below)
        blobs = {}
        for path, names in parts.items():
            hit = listed.get(tuple(names[:-1]), {}).get(names[-1])
            if hit and (hit[0].startswith(b"100") or hit[0] == b"120000"):
                blobs[path] = hit[1].hex()
        found = reader.read_many(sorted(set(blobs.values()) - set(have)))
        return {path: (oid, None if oid in have else found[oid][1]) for path, oid in blobs.items()
                if oid in have or found.get(oid, ("",))[0] == "blob"}
    finally:
        reader.close()


def switch_branch(repo, branch: str) -> None:
    """:func:`switch_to` *branch* from a clean checkout, with the work of a two-tree `git read-tree
    -m -u HEAD branch`: the entries that differ are checked and written, and HEAD is moved with a
    reflog entry as `git checkout` writes it. `git checkout` first refreshes every index entry
    (an lstat of every file of the tree, just after the caller's `git status` did the same).
    When read-tree refuses (an entry whose stat data is stale, which it does not refresh: it then
    writes nothing), `git checkout` does the switch."""
    proc = _proc(repo, ["read-tree", "-m", "-u", "HEAD", f"refs/heads/{branch}"])
    if proc.returncode != 0:
        return switch_to(repo, branch)
    complaints = [line for line in proc.stderr.decode(errors="replace").splitlines()
                  if line.startswith(("error:", "fatal:", "warning: unable"))]
    if complaints:
        raise GitFailed(["read-tree", branch], 0, "\n".join(complaints), repo.working_tree_dir)
    old = current_branch(repo) or head_sha(repo)
    run(repo, "symbolic-ref", "-m", f"checkout: moving from {old} to {branch}", "HEAD", f"refs/heads/{branch}")
