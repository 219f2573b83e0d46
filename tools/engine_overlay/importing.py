"""`overlay import`: adopt an existing fork, turning its commits on the pinned base into a series.

The commits between the base (found as `overlay apply` finds it, or `--base`) and the
branch tip become `git format-patch` files (author, date and message kept, an
`Upstream-Status: Pending` line added where the message has none), appended to the
engine's series. A commit whose patch-id (`git patch-id --stable`) is already in the
series is skipped, so a second run imports only the new commits.

Everything is computed and checked before the first write: each new patch is parsed
and planned in memory on its commit's parent, exactly as `overlay apply` will read
it, and must give the commit's own tree; then the whole series is planned on the
base and compared with the tip's tree (a difference is a warning: the series may
hold patches of its own). The checkout is only read.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import gitops, paths
from .errors import CheckFailed, OverlayError
from .export import _file_name
from .locking import atomic_write

if TYPE_CHECKING:
    from .config import Engine, Pin, Project
    from .series import Patch
    from .tree import GitTreeState, TreeState


@dataclass
class ImportedCommit:
    commit: str
    patch: str
    subject: str


@dataclass
class SkippedCommit:
    commit: str
    subject: str
    reason: str
    patch: str | None = None  # the series entry that already holds the change


@dataclass
class ImportResult:
    engine: str
    base: str  # the base commit
    base_ref: str  # what named it: a tag, the pinned commit, or --base
    branch: str | None  # None on a detached HEAD
    tip: str
    series: str
    imported: list[ImportedCommit] = field(default_factory=list)
    skipped: list[SkippedCommit] = field(default_factory=list)
    verified: bool = False  # the whole series on the base gives exactly the tip's tree
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Commit:
    sha: str
    parents: list[str]
    message: str

    @property
    def subject(self) -> str:
        """The first paragraph on one line, as git's `%s`."""
        return " ".join(self.message.strip("\n").split("\n\n", 1)[0].split("\n")).strip()

    @property
    def label(self) -> str:
        return f"{self.sha[:12]} ({self.subject[:60]})"


# Every option that shapes the patch text is given, so neither the checkout's nor the
# user's git configuration changes it (prefixes, context, order, headers, signatures).
_CONFIG = ("-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false", "-c", "diff.suppressBlankEmpty=false",
           "-c", "i18n.logOutputEncoding=UTF-8", "-c", "log.mailmap=false", "-c", "log.showSignature=false")
_DIFF = ("-M", "--binary", "--full-index", "--src-prefix=a/", "--dst-prefix=b/", "--no-relative", "-U3",
         "--inter-hunk-context=0", "--diff-algorithm=myers", "-O/dev/null", "--no-ext-diff", "--no-textconv",
         "--stat=72", "--summary")
_FORMAT_PATCH = ("format-patch", "--stdout", "--no-signature", "--no-numbered", "--subject-prefix=PATCH",
                 "--no-attach", "--no-thread", "--no-to", "--no-cc", "--no-add-header", "--no-from", "--no-base",
                 "--no-signoff", "--no-cover-letter", "--no-notes", "--encode-email-headers")
# a merge (--flatten): format-patch skips merges; `git log --pretty=email` writes the same message form
_MERGE_LOG = ("log", "-1", "--pretty=email", "--diff-merges=first-parent", "-p", "--no-notes", "--no-mailmap",
              "--no-show-signature", "--no-decorate", "--no-color")

_UPSTREAM_STATUS = re.compile(r"(?im)^upstream-status:")
_TRAILER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*: ")
_LEADING_NUMBER = re.compile(r"^(\d+)-")


def import_fork(project: Project, engine: str, checkout: Path, base: str | None = None, branch: str | None = None,
                flatten: bool = False) -> ImportResult:
    """Append the fork's commits on the base to *engine*'s series (see the module docstring)."""
    eng = project.engine(engine)
    pin = eng.pin()
    repo = gitops.open_repo(Path(checkout))
    root = gitops.work_root(repo)
    busy = gitops.operation_in_progress(repo)
    if busy:
        raise OverlayError(f"the repository is in the middle of {busy}", path=root,
                           hint=f"finish or abort the {busy} first (see `git status`)")
    tip, branch_name = _tip(repo, branch)
    what = f"branch {branch_name}" if branch_name else "HEAD"
    base_sha, base_ref = _find_base(repo, eng, pin, tip, what, base)
    commits = _commits(repo, base_sha, tip, what, flatten)
    series_path = eng.series
    directory = series_path.parent
    result = ImportResult(eng.name, base_sha, base_ref, branch_name, tip, str(series_path))
    entries, series_text = _series_entries(series_path)
    known = _known_patch_ids(repo, directory, series_path, entries)
    taken = {name for name, _reverse in entries}
    number = _last_number([name for name, _reverse in entries])
    new: list[tuple[_Commit, str, Path, bytes]] = []  # commit, name, path, patch bytes
    for commit in commits:
        raw = _patch_text(repo, commit)
        ids = _patch_ids(repo, raw) if raw.strip() else []
        if not ids:
            result.skipped.append(SkippedCommit(commit.sha, commit.subject, "empty commit: no change to import"))
            continue
        holder = _take(known, ids)
        if holder is not None:
            result.skipped.append(SkippedCommit(commit.sha, commit.subject, f"already in the series as {holder}",
                                                holder))
            continue
        _check_message(commit, root, result.warnings)
        name, number = _free_name(directory, taken, number, commit.subject)
        taken.add(name)
        path = paths.safe_join(directory, paths.check_name(name, "patch file name"), series_path)
        new.append((commit, name, path, _with_upstream_status(raw, commit)))
    parsed = _check_patches(repo, new)
    result.verified, problems = _check_series(repo, eng, pin, base_sha, base_ref, tip, what, parsed)
    result.warnings += problems
    if new:
        _write(series_path, series_text, new)
    result.imported = [ImportedCommit(commit.sha, name, commit.subject) for commit, name, _path, _raw in new]
    return result


# -- what to import -----------------------------------------------------------------------------

def _tip(repo, branch: str | None) -> tuple[str, str | None]:
    root = gitops.work_root(repo)
    if branch is None:
        sha = gitops.head_sha(repo)
        if sha is None:
            raise OverlayError("the checkout has no commits", path=root, hint="import needs a fork with commits")
        return sha, gitops.current_branch(repo)
    if not gitops.valid_branch_name(branch):
        raise OverlayError(f"--branch {branch!r} is not a valid branch name", path=root,
                           hint="name a local branch of the checkout (see `git branch`)")
    sha = gitops.rev_parse(repo, f"refs/heads/{branch}")
    if sha is None:
        raise OverlayError(f"branch {branch} does not exist", path=root,
                           hint="name a local branch of the checkout (see `git branch`)")
    return sha, branch


def _find_base(repo, eng: Engine, pin: Pin, tip: str, what: str, base: str | None) -> tuple[str, str]:
    """The base commit and what named it: *base*, or the first of the pin's tags and
    commit that is an ancestor of the tip (as `overlay apply` checks a checkout)."""
    from .apply import version_tags

    root = gitops.work_root(repo)
    if base is not None:
        if not base or base.startswith("-") or any(c in base for c in "\0\n\r"):
            raise OverlayError(f"--base {base!r} is not a revision", path=root,
                               hint="give the tag, branch or commit id of the upstream release the fork started from")
        sha = gitops.rev_parse(repo, base)
        if sha is None:
            raise OverlayError(f"--base {base}: no such commit in the checkout", path=root,
                               hint="give the tag, branch or commit id of the upstream release the fork started from")
        if not gitops.is_ancestor(repo, sha, tip):
            raise OverlayError(f"--base {base} ({sha[:12]}) is not an ancestor of {what}", path=root,
                               hint="give the upstream commit the fork's commits are on top of")
        return sha, base
    candidates = version_tags(eng.name, pin.version)
    if pin.source.commit:
        candidates.append(pin.source.commit)
    for rev in candidates:
        sha = gitops.rev_parse(repo, rev)
        if sha and gitops.is_ancestor(repo, sha, tip):
            return sha, rev.removeprefix("refs/tags/")
    tried = ", ".join(f"tag {c.removeprefix('refs/tags/')}" if c.startswith("refs/") else f"commit {c}"
                      for c in candidates)
    raise OverlayError(f"cannot find the base of {what}: none of {tried} is an ancestor of it "
                       f"({eng.name} {pin.version})", path=root,
                       hint="pass --base REF: the upstream tag or commit the fork's commits are on top of")


def _commits(repo, base: str, tip: str, what: str, flatten: bool) -> list[_Commit]:
    """The commits from *base* (exclusive) to *tip*, oldest first: all of them, which must
    not include a merge, or with *flatten* the first-parent chain (merges included)."""
    root = gitops.work_root(repo)
    order = ["--first-parent"] if flatten else []
    shas = gitops.run(repo, "rev-list", "--reverse", "--topo-order", *order, f"{base}..{tip}", "--").decode().split()
    reader = gitops.ObjectReader(repo)
    try:
        commits = [_read_commit(reader, sha, root) for sha in shas]
    finally:
        reader.close()
    if not flatten:
        merge = next((c for c in commits if len(c.parents) > 1), None)
        if merge is not None:
            raise OverlayError(f"{merge.label} between the base and {what} is a merge commit", path=root,
                               hint="rebase the fork onto the base to make its history linear, or pass --flatten "
                               "to import each merge as one patch of its first-parent diff")
    previous = base
    for commit in commits:
        if not commit.parents or commit.parents[0] != previous:
            raise OverlayError(f"the first-parent history of {what} does not start at the base {base[:12]}: "
                               f"{commit.label} follows {(commit.parents or ['nothing'])[0][:12]}", path=root,
                               hint="pass --base with the commit the fork's first-parent history starts from")
        previous = commit.sha
    return commits


def _read_commit(reader, sha: str, root: Path) -> _Commit:
    found = reader.read(sha)
    if found is None or found[1] != "commit":
        raise OverlayError(f"commit {sha[:12]} is missing from the repository", path=root,
                           hint="run `git fsck`; the repository is incomplete")
    head, _, message = found[2].partition(b"\n\n")
    parents = [line.split()[1].decode() for line in head.split(b"\n") if line.startswith(b"parent ")]
    return _Commit(sha, parents, message.decode("utf-8", errors="replace"))


def _check_message(commit: _Commit, root: Path, warnings: list[str]) -> None:
    """Refuse a message with a line that starts a diff or a new message where it is read back
    (the patch would not be the commit); warn of a `---` line, where the message read back ends."""
    from .series import is_from_line

    lines = commit.message.split("\n")
    for number, line in enumerate(lines):
        if (line.startswith(("diff --git ", "Index: ")) or is_from_line(line.encode() + b"\n")
                or (line.startswith("--- ") and number + 1 < len(lines) and lines[number + 1].startswith("+++ "))):
            raise OverlayError(f"the message of commit {commit.label} has a line that starts a diff or a new "
                               f"message: {line[:60]!r}", path=root,
                               hint="`git am` and `overlay apply` would not read the patch as the commit: reword "
                               "the commit (`git rebase -i`), then import again")
    if any(re.match(r"---(\s|$)", line) for line in lines[1:]):
        warnings.append(f"the message of commit {commit.label} has a `---` line: the patch file keeps the whole "
                        "message, but `overlay apply` (like `git am`) ends the commit message there")


def _patch_text(repo, commit: _Commit) -> bytes:
    """The commit as one `git format-patch` message (a merge: its first-parent diff)."""
    if len(commit.parents) > 1:
        return gitops.run(repo, *_CONFIG, *_MERGE_LOG, *_DIFF, commit.sha, "--")
    return gitops.run(repo, *_CONFIG, *_FORMAT_PATCH, *_DIFF, "-1", commit.sha, "--")


def _patch_ids(repo, raw: bytes) -> list[str]:
    """`git patch-id --stable` of every message in *raw* (none for a patch without a diff)."""
    out = gitops.run(repo, "patch-id", "--stable", input=raw)
    return [line.split()[0].decode() for line in out.splitlines() if line.strip()]


def _with_upstream_status(raw: bytes, commit: _Commit) -> bytes:
    """*raw* with `Upstream-Status: Pending` ending the message (before the `---` that
    starts the diffstat), unless the message has an Upstream-Status line already."""
    if _UPSTREAM_STATUS.search(commit.message):
        return raw
    diff = re.search(rb"^diff --git ", raw, re.M)
    head = raw[:diff.start()] if diff else raw
    marker = head.rfind(b"\n---\n")
    if marker == -1:
        raise CheckFailed(f"commit {commit.label}: git format-patch wrote no `---` separator",
                          hint="report this: the patch text is not what git format-patch writes")
    before = raw[:marker + 1]
    body = before.split(b"\n\n", 1)[1] if b"\n\n" in before else b""  # the message after the headers
    paragraph = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    trailers = bool(body.strip()) and all(_TRAILER.match(line) for line in paragraph.split(b"\n"))
    gap = b"" if not body.strip() or trailers else b"\n"  # join a trailer block, else a paragraph of its own
    return before + gap + b"Upstream-Status: Pending\n" + raw[marker + 1:]


# -- the series as it is ------------------------------------------------------------------------

def _series_entries(series_path: Path) -> tuple[list[tuple[str, bool]], str]:
    """The (name, reversed) entries of the series and its text ('' when there is no series file yet)."""
    from .series import parse_series

    if not os.path.lexists(series_path):
        return [], ""
    if series_path.is_symlink() or not series_path.is_file():
        raise OverlayError("the series file is a symlink or not a regular file", path=series_path,
                           hint="the tool never writes through links; make it a plain file")
    series, problems = parse_series(series_path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise OverlayError(errors[0].message, path=errors[0].file, line=errors[0].line,
                           hint="fix the series file (run `overlay lint`)")
    return [(entry.name, entry.reverse) for entry in series.entries], series_path.read_text(encoding="utf-8")


def _known_patch_ids(repo, directory: Path, series_path: Path,
                     entries: list[tuple[str, bool]]) -> dict[str, list[str]]:
    """patch-id -> the series entries holding it, once per occurrence (a mailbox holds several);
    an entry applied reversed (`-R`) holds the opposite change, which no fork commit is."""
    from .series import parse_patch

    known: dict[str, list[str]] = {}
    for name, reverse in entries:
        if reverse:
            continue
        path = paths.safe_join(directory, name, series_path)
        if not path.is_file():
            raise OverlayError(f"patch '{name}' listed in the series does not exist", path=series_path,
                               hint="add the file or remove the line from the series")
        for patch_id in _patch_ids(repo, parse_patch(path, name).raw):
            known.setdefault(patch_id, []).append(name)
    return known


def _take(known: dict[str, list[str]], ids: list[str]) -> str | None:
    """The entry holding the change with *ids*, used up (a change made twice in the fork is
    in the series twice), or None when the series does not hold it."""
    need = Counter(ids)
    if any(len(known.get(pid, [])) < count for pid, count in need.items()):
        return None
    holders = [known[pid].pop(0) for pid in ids]
    return holders[0]


def _last_number(entries: list[str]) -> int:
    """New patches are numbered after the series' entries (and after their own numbers)."""
    numbers = [int(m.group(1)) for name in entries if (m := _LEADING_NUMBER.match(name.rsplit("/", 1)[-1]))]
    return max([len(entries), *numbers])


def _free_name(directory: Path, taken: set[str], number: int, subject: str) -> tuple[str, int]:
    while True:
        number += 1
        name = _file_name(number, subject)
        if name not in taken and not os.path.lexists(directory / name):
            return name, number


# -- checks before any write --------------------------------------------------------------------

def _check_patches(repo, new: list[tuple[_Commit, str, Path, bytes]]) -> list[Patch]:
    """Each new patch as `overlay apply` reads it, planned on its commit's parent: it must parse
    cleanly, be one message with an Upstream-Status, and give exactly the commit's tree."""
    from .plan import plan
    from .series import parse_patch_bytes
    from .tree import GitTreeState

    root = gitops.work_root(repo)
    parsed: list[Patch] = []
    previous: tuple[str, GitTreeState] | None = None  # the last commit's tree: the next one's parent, usually
    try:
        for commit, name, path, raw in new:
            patch = parse_patch_bytes(raw, path, name)
            errors = [p for p in patch.problems if p.severity == "error"]
            if errors or patch.more or not patch.upstream_status:
                why = (errors[0].message if errors else "it reads as several messages" if patch.more
                       else "no Upstream-Status line is found in it")
                raise CheckFailed(f"commit {commit.label} does not make a usable patch: {why}", path=root,
                                  hint="its message probably holds a line that starts a diff or a new message "
                                  "(`diff --git`, `From <sha> …`): reword the commit, or pass --base after it")
            parent = commit.parents[0]
            if previous is not None and previous[0] == parent:
                base = previous[1]
            else:
                if previous is not None:
                    previous[1].close()
                base = GitTreeState(repo, parent)
            previous = None
            try:
                expected = GitTreeState(repo, commit.sha)
                previous = (commit.sha, expected)
                outcome = plan(base, [(patch, False)], [])
                differs = _differences(repo, base, expected, parent, commit.sha) if outcome.ok else None
            except OverlayError as exc:
                raise CheckFailed(f"commit {commit.label}: its patch does not apply to its parent: {exc.message}",
                                  path=root) from None
            finally:
                base.close()
            if not outcome.ok:
                failed = outcome.patches[0]
                raise CheckFailed(f"commit {commit.label}: its patch does not apply to its parent "
                                  f"({failed.status}{': ' + failed.message if failed.message else ''})", path=root,
                                  hint="report this with the commit: git format-patch wrote a patch git cannot apply")
            if differs:
                raise CheckFailed(f"commit {commit.label}: its patch does not give the commit's tree "
                                  f"({len(differs)} path(s) differ, e.g. {differs[0]!r})", path=root,
                                  hint="report this with the commit")
            parsed.append(patch)
    finally:
        if previous is not None:
            previous[1].close()
    return parsed


def _differences(repo, planned: TreeState, expected: TreeState, old: str, new: str) -> list[str]:
    """Paths where *planned* (the tree at *old* plus planned changes) is not *expected* (*new*)."""
    out = gitops.run(repo, "diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", old, new, "--")
    names = {p for p in out.decode(errors="surrogateescape").split("\0") if p} | set(planned.changes)
    return sorted(p for p in names if planned.read(p) != expected.read(p))


def _check_series(repo, eng: Engine, pin: Pin, base: str, base_ref: str, tip: str, what: str,
                  new: list[Patch]) -> tuple[bool, list[str]]:
    """Whether the whole series (as it will be) on the base gives exactly the tip's tree;
    a warning saying how it does not (the series may hold patches that are not the fork's)."""
    from .apply import engine_payload
    from .plan import plan
    from .tree import GitTreeState

    try:
        payload = engine_payload(eng, pin)
    except OverlayError as exc:
        return False, [f"the series was not checked against {what}: {exc.message}"]
    patches = payload.patches + [(patch, False) for patch in new]
    state, expected = GitTreeState(repo, base), GitTreeState(repo, tip)
    try:
        try:
            outcome = plan(state, patches, [], payload.replaces)
        except OverlayError as exc:
            return False, [f"the series does not apply on {base_ref}: {exc.message}"]
        if not outcome.ok:
            bad = next(p for p in outcome.patches if p.status not in ("applied", "offset", "3-way"))
            return False, [f"the series does not apply cleanly on {base_ref}: {bad.name} is {bad.status}"]
        differs = _differences(repo, state, expected, base, tip)
    finally:
        state.close()
        expected.close()
    if differs:
        return False, [f"the series on {base_ref} does not give the tree of {what}: {len(differs)} path(s) "
                       f"differ, e.g. {differs[0]!r} (the series holds changes that are not the fork's, "
                       "or a change was recognised as already imported)"]
    return True, []


# -- writing ------------------------------------------------------------------------------------

def _write(series_path: Path, series_text: str, new: list[tuple[_Commit, str, Path, bytes]]) -> None:
    """The patch files, then the series (so a reader never sees an entry without its file);
    on a failure the files written so far are removed again."""
    written: list[Path] = []
    try:
        for _commit, _name, path, raw in new:
            atomic_write(path, raw)
            written.append(path)
        if series_text and not series_text.endswith("\n"):
            series_text += "\n"
        atomic_write(series_path, series_text + "".join(f"{name}\n" for _c, name, _p, _r in new))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
