"""`overlay export`: regenerate patches/<engine>/ from the commits of an overlay branch.

Churn-free by construction: a patch whose diff did not change (ignoring the
volatile `index` lines) keeps its file byte for byte; a changed patch keeps its
metadata header and gets the new diff; the series file is only rewritten when
the order changed. Exporting an unchanged branch twice is a zero diff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import gitops, paths
from .apply import applied_commits
from .errors import OverlayError
from .locking import atomic_write
from .series import parse_series

if TYPE_CHECKING:
    import git

# volatile lines: blob ids change whenever an earlier patch does; similarity is informational
_INDEX = re.compile(rb"^(index [0-9a-f]+\.\.[0-9a-f]+( \d+)?|(dis)?similarity index \d+%)\n", re.M)
_DIFF_START = re.compile(rb"^(diff --git |--- )", re.M)


@dataclass
class ExportResult:
    engine: str
    branch: str
    written: list[str] = field(default_factory=list)  # patch files whose diff changed
    unchanged: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    series_changed: bool = False


_DIFF_OPTS = ("--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/", "--abbrev=12")


def commit_diff(repo: git.Repo, commit: str, copies: list[tuple[str, str]] = ()) -> bytes:
    """The diff of one commit in a stable form (renames detected, context of 3).

    *copies* are the (source, destination) pairs the patch declared with `copy from`
    / `copy to`: git's copy detection cannot be told which source was meant, so those
    files are diffed against their declared source — the patch keeps holding only
    its own lines, and the next upgrade stays a 3-way problem.
    """
    excludes = [f":(exclude,literal){dst}" for _src, dst in copies]
    rest = repo.git.diff(*_DIFF_OPTS, "-M", f"{commit}^", commit, "--", ".", *excludes,
                         stdout_as_string=False, strip_newline_in_stdout=False)
    if not copies:
        return rest
    sections = {}
    for chunk in re.split(rb"(?m)^(?=diff --git )", rest):
        if chunk:
            match = re.match(rb"diff --git \S+ b/(\S+)", chunk)
            sections[match.group(1).decode() if match else chunk[:80].decode(errors="replace")] = chunk
    for src, dst in copies:
        body = repo.git.diff(*_DIFF_OPTS, f"{commit}^:{src}", f"{commit}:{dst}", stdout_as_string=False,
                             strip_newline_in_stdout=False)
        body = re.sub(rb"\A[^\n]*\n", b"", body)  # git's own header line names the blobs' paths
        sections[dst] = (f"diff --git a/{src} b/{dst}\ncopy from {src}\ncopy to {dst}\n".encode() + body)
    return b"".join(sections[key] for key in sorted(sections))


def _declared_copies(path: Path) -> list[tuple[str, str]]:
    from .series import parse_patch

    if not path.is_file():
        return []
    patch = parse_patch(path)
    pairs = []
    for fp in patch.files:
        src, dst = fp.target(patch.strip)
        if fp.copy and src and dst:
            pairs.append((src, dst))
    return pairs


def _normalise(diff: bytes) -> bytes:
    return _INDEX.sub(b"", diff)


def split_patch(raw: bytes) -> tuple[bytes, bytes, bool]:
    """(header, diff, had a diffstat) of a patch file; an mbox header ends with `---`."""
    match = _DIFF_START.search(raw)
    if match is None:
        return raw, b"", False
    head = raw[:match.start()]
    marker = head.rfind(b"\n---\n")
    had_stat = False
    if marker != -1:
        had_stat = bool(head[marker + 5:].strip())
        head = head[:marker + 5]  # the diffstat is regenerated with the diff
    return head, raw[match.start():], had_stat


def commit_stat(repo: git.Repo, commit: str) -> bytes:
    """The diffstat `git format-patch` writes (width 72, with the summary), then a blank line."""
    stat = repo.git.diff("--stat=72", "--summary", "-M", f"{commit}^", commit, stdout_as_string=False,
                         strip_newline_in_stdout=False)
    return stat + b"\n" if stat else b""


def _new_patch_header(repo: git.Repo, commit: str) -> bytes:
    c = repo.commit(commit)
    lines = [line for line in c.message.splitlines() if not line.startswith("Overlay-")]
    subject, body = lines[0] if lines else "change", "\n".join(lines[1:]).strip()
    if "Upstream-Status:" not in body:
        body = (body + "\n\n" if body else "") + "Upstream-Status: Pending"
    date = c.authored_datetime.strftime("%a, %d %b %Y %H:%M:%S %z")
    return (f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            f"From: {c.author.name} <{c.author.email}>\nDate: {date}\nSubject: [PATCH] {subject}\n\n"
            f"{body}\n---\n").encode()


def _file_name(number: int, subject: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", subject).strip("-")[:52].rstrip("-") or "change"
    return f"{number:04d}-{slug}.patch"


def _keep_other_pins(directory: Path, old_names: list[str], names: list[str]) -> list[str]:
    """Series entries not on this branch because their `Applies-To` excludes its pin stay put."""
    from .series import parse_patch

    on_branch = set(names)
    kept = []
    for name in old_names:
        path = directory / name
        if name in on_branch or (path.is_file() and parse_patch(path, name).applies_to):
            kept.append(name)
    return kept + [n for n in names if n not in set(kept)]


def _mailbox_groups(targets: list[tuple[str, str, Path]]) -> dict[str, list[str]]:
    """Series entries that gave several commits (a mailbox of several messages): name -> commits."""
    commits: dict[str, list[str]] = {}
    for name, commit_sha, _path in targets:
        commits.setdefault(name, []).append(commit_sha)
    return {name: shas for name, shas in commits.items() if len(shas) > 1}


def _export_mailbox(repo: git.Repo, path: Path, commits: list[str]) -> bool:
    """Keep a mailbox whose messages' diffs did not change (True); else write it again, one
    `git format-patch` message per commit, as `git am` will read it back."""
    from .series import split_lines, split_mailbox

    diffs = [commit_diff(repo, sha) for sha in commits]
    if path.exists():
        messages = split_mailbox(split_lines(path.read_bytes()))
        old = [re.sub(rb"(?<=\n)-- \n[^\n]*\n*\Z", b"", split_patch(b"".join(message))[1])  # the signature
               for message in messages if _DIFF_START.search(b"".join(message))]
        if len(old) == len(diffs) and all(_normalise(a) == _normalise(b) for a, b in zip(old, diffs, strict=True)):
            return True
    parts = [repo.git.format_patch("--stdout", "-1", "--no-signature", sha, stdout_as_string=False,
                                   strip_newline_in_stdout=False) for sha in commits]
    atomic_write(path, b"".join(parts))
    return False


def _patch_path(repo: git.Repo, series_path: Path, name: str, commit: str) -> Path:
    """Where the patch named by *commit*'s `Overlay-Patch` trailer goes: commit messages are
    untrusted, so the name must stay in the series directory, not be the series file, and
    reach no symlink (which atomic_write would replace, or a read would follow)."""
    try:
        path = paths.safe_join(series_path.parent, name)
    except OverlayError as exc:
        raise OverlayError(f"commit {commit[:12]} names the patch {name!r} in its Overlay-Patch trailer: "
                           f"{exc.message}", path=gitops.work_root(repo),
                           hint="the trailer must be a patch file name inside the series directory: "
                           "fix the commit message, or apply the series again") from None
    if path == series_path:
        raise OverlayError(f"commit {commit[:12]} names the series file in its Overlay-Patch trailer",
                           path=gitops.work_root(repo), hint="fix the commit message, or apply the series again")
    return path


def export(repo: git.Repo, engine: str, series_path: Path, branch: str) -> ExportResult:
    if not gitops.branch_exists(repo, branch):
        raise OverlayError(f"branch {branch} does not exist", path=gitops.work_root(repo),
                           hint=f"apply the series first (`overlay apply {engine}`) or pass --branch")
    series, _ = parse_series(series_path) if series_path.exists() else (None, [])
    directory = series_path.parent
    # commits made by hand on top of the overlay commits become new patches
    extra = []
    commit = repo.commit(f"refs/heads/{branch}")
    while "\nOverlay-" not in commit.message:
        if not commit.parents:
            raise OverlayError(f"branch {branch} has no overlay commits", path=gitops.work_root(repo),
                               hint="export works on a branch made by `overlay apply`")
        extra.append(commit.hexsha)
        commit = commit.parents[0]
    extra.reverse()
    applied, _, _ = applied_commits(repo, commit.hexsha)
    result = ExportResult(engine, branch)
    names: list[str] = []
    targets = [(name, commit_sha, _patch_path(repo, series_path, name, commit_sha))  # all before any write
               for name, _sha, commit_sha in applied]
    mailboxes = _mailbox_groups(targets)
    for name, commit_sha, path in targets:
        if name in mailboxes:  # a file of several messages: one commit each
            if name not in names:
                names.append(name)
                (result.unchanged if _export_mailbox(repo, path, mailboxes[name]) else result.written).append(name)
            continue
        diff = commit_diff(repo, commit_sha, _declared_copies(path))
        names.append(name)
        if path.exists():
            head, old_diff, had_stat = split_patch(path.read_bytes())
            if _normalise(old_diff) == _normalise(diff):
                result.unchanged.append(name)
                continue
        else:
            head, had_stat = _new_patch_header(repo, commit_sha), True
        atomic_write(path, head + (commit_stat(repo, commit_sha) if had_stat else b"") + diff)
        result.written.append(name)
    for commit_sha in extra:
        subject = repo.commit(commit_sha).summary
        name = _file_name(len(names) + 1, subject)
        atomic_write(_patch_path(repo, series_path, name, commit_sha), _new_patch_header(repo, commit_sha) + commit_stat(repo, commit_sha)
                     + commit_diff(repo, commit_sha))
        names.append(name)
        result.added.append(name)
    old_names = [e.name for e in series.entries] if series else []
    names = _keep_other_pins(directory, old_names, names)
    if names != old_names:
        comments = [line for line in series_path.read_text().splitlines() if line.startswith("#")] \
            if series_path.exists() else []
        atomic_write(series_path, "\n".join(comments + names) + "\n")
        result.series_changed = True
        result.removed = [n for n in old_names if n not in names]
    return result
