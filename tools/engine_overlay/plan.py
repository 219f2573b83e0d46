"""Plan a series in memory: per patch, per file, per hunk results and the commits to write.

Nothing here touches the target: results come from a :class:`TreeState`, so
`--check`, a failing series and a successful one all run the same code, and
every failing patch is found (not only the first).
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import hunks as H
from .errors import OverlayError
from .gitapply import GitPatchPlan, layout_problem
from .overlay_files import OverlayFile, manifest_sha256
from .report import (
    ALREADY,
    APPLIED,
    FAILED,
    OFFSET,
    THREE_WAY,
    FileResult,
    OverlayFileResult,
    PatchResult,
)
from .series import FilePatch, Patch, parse_author
from .threeway import BlobReader, three_way
from .tree import MODE_FILE, MODE_GITLINK, TreeState, is_link

TRAILER_PATCH = "Overlay-Patch"
TRAILER_SHA = "Overlay-Patch-Sha256"
TRAILER_FILES = "Overlay-Files-Sha256"


@dataclass
class PlannedCommit:
    message: str
    author: tuple[str, str]
    when: tuple[int, str]
    changes: dict[str, tuple[bytes | None, int]] = field(default_factory=dict)


@dataclass
class Plan:
    patches: list[PatchResult]
    overlay_files: list[OverlayFileResult]
    commits: list[PlannedCommit]
    overlay_sha256: str | None

    @property
    def ok(self) -> bool:
        return all(p.status in (APPLIED, OFFSET, THREE_WAY) for p in self.patches)

    def final_changes(self) -> dict[str, tuple[bytes | None, int]]:
        """What the commits leave, path by path (the last commit that touches a path wins)."""
        final: dict[str, tuple[bytes | None, int]] = {}
        for commit in self.commits:
            final.update(commit.changes)
        return final


def _choose_name(state: TreeState, fp: FilePatch, old: str | None, new: str | None, origin: str) -> str | None:
    """GNU patch's choice among the named files for a plain diff: an existing one,
    fewest path components, then shortest base name, then shortest name."""
    names = [n for n in (old, new) if n]
    existing = [n for n in names if state.exists(n, origin, fp.line)]
    pool = existing or names
    if not pool:
        return None
    return min(pool, key=lambda n: (n.count("/"), len(n.rsplit("/", 1)[-1]), len(n)))


def _apply_file(state: TreeState, patch: Patch, fp: FilePatch, strip: int, reverse: bool,
                read_blob: BlobReader | None, changes: dict) -> FileResult:
    origin = str(patch.path)
    old, new = fp.target(strip)
    if reverse:
        old, new = new, old
    creating = (fp.new_file and not reverse) or (fp.deleted and reverse) or (old is None and not fp.git)
    deleting = (fp.deleted and not reverse) or (fp.new_file and reverse) or (new is None and not fp.git)
    if fp.git:
        src = old if old else new
        dst = new if new else old
    else:
        src = dst = _choose_name(state, fp, old, new, origin)
    if src is None or dst is None:
        return FileResult("?", "modify", FAILED, message="cannot tell which file the diff is for")
    for path in {src, dst}:
        state.check(path, origin, fp.line)
    current = state.read(src, origin, fp.line)
    if current is not None and (is_link(current[1]) or current[1] == MODE_GITLINK):
        return FileResult(src, "modify", FAILED,
                          message=f"{src} is a symlink or submodule: a plain diff cannot change it")
    action = "create" if creating else "delete" if deleting else "rename" if fp.rename else "copy" if fp.copy else "modify"
    shown = dst if action != "delete" else src
    if fp.rename and src != dst and state.exists(dst, origin, fp.line):
        return FileResult(dst, "rename", FAILED, message=f"{dst}: already exists (a rename never overwrites)")
    if fp.copy and state.exists(dst, origin, fp.line):
        return FileResult(dst, "copy", FAILED, message=f"{dst}: already exists (a copy never overwrites)")
    if creating:
        if current is not None:
            wanted, _ = H.apply_hunks(b"", fp.hunks, reverse=reverse)
            if wanted is not None and current[0] == wanted:
                return FileResult(shown, action, ALREADY, message="file already exists with this content")
            return FileResult(shown, action, FAILED, message="file to create already exists")
        content, mode = b"", fp.new_mode or MODE_FILE
    elif current is None:
        return FileResult(shown, action, FAILED, message="file to patch does not exist")
    else:
        content, mode = current
    if reverse and fp.old_mode:
        mode = fp.old_mode
    elif not reverse and fp.new_mode and not creating:
        mode = fp.new_mode
    status = APPLIED
    results: list[H.HunkResult] = []
    if fp.hunks:
        patched, results = H.apply_hunks(content, fp.hunks, reverse=reverse)
        if patched is None:
            if not creating and not reverse and H.already_applied(content, fp.hunks):
                return FileResult(shown, action, ALREADY, H.present(results), "change already present")
            merged, colliding = (None, None) if reverse else three_way(content, fp, read_blob, H.apply_hunks)
            results = H.three_way_verdicts(results, colliding, merged is not None)
            if merged is None:
                return FileResult(shown, action, FAILED, results, "3-way merge conflicts"
                                  if colliding is not None else "")
            patched, status = merged, THREE_WAY
        elif any(r.status == H.OFFSET for r in results):
            status = OFFSET
        content = patched
    elif fp.binary:
        return FileResult(shown, action, FAILED, message="binary patch not supported")
    if deleting:
        if content and fp.git:
            return FileResult(shown, action, FAILED, results, "file to delete has other content")
        if content:
            changes[dst] = (content, mode)  # plain diff leaving content: keep the file
        else:
            changes[src] = (None, mode)
    else:
        if (fp.rename and not reverse) and src != dst:
            changes[src] = (None, mode)
        changes[dst] = (content, mode)
    return FileResult(shown, action, status, results)


def _plan_patch(state: TreeState, patch: Patch, reverse: bool, three_way: bool) -> tuple[list[FileResult], dict]:
    """Per-file results and the changes of one patch: git's rules for `diff --git` patches,
    GNU patch's for traditional diffs (the form decides, as it does for `git apply` vs quilt)."""
    origin = str(patch.path)
    if patch.files and all(fp.git for fp in patch.files):
        return GitPatchPlan(state, patch.files, reverse, origin, three_way).run()
    changes: dict[str, tuple[bytes | None, int]] = {}
    files: list[FileResult] = []
    scratch = state.fork()
    read_blob = state.blob if three_way else None
    for fp in patch.files:
        try:
            files.append(_apply_file(scratch, patch, fp, patch.strip, reverse, read_blob, changes))
        except OverlayError as exc:
            files.append(FileResult(fp.new_path or fp.old_path or "?", "modify", FAILED, message=exc.message))
        scratch.commit(changes)  # later files of this patch see earlier ones
    problem = layout_problem(state, changes)
    if problem is not None:
        files.append(FileResult(problem[0], "modify", FAILED, message=problem[1]))
    return files, changes


def patch_when(patch: Patch) -> tuple[int, str]:
    """The patch's date as (epoch seconds, +hhmm); 0 when it has none."""
    value = (patch.date or "").strip()[:200]
    if value:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
        if parsed is None:
            match = re.match(r"^(\d{4})-(\d\d)-(\d\d)", value)  # DEP-3 Last-Update
            try:
                parsed = datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=UTC) if match else None
            except ValueError:  # 2024-13-45: a date that does not exist is no date
                parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                offset = int(parsed.utcoffset().total_seconds() // 60)
                stamp = int(parsed.timestamp())
            except (OverflowError, ValueError, OSError):
                return 0, "+0000"
            if stamp < 0 or abs(offset) >= 24 * 60:
                return 0, "+0000"
            sign = "+" if offset >= 0 else "-"
            return stamp, f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
    return 0, "+0000"


def commit_message(patch: Patch) -> str:
    subject = patch.subject or patch.name
    body = patch.body.strip()
    message = subject + ("\n\n" + body if body else "")
    return f"{message}\n\n{TRAILER_PATCH}: {patch.name}\n{TRAILER_SHA}: {patch.sha256}\n"


def plan(state: TreeState, patches: list[tuple[Patch, bool]], overlay_files: list[OverlayFile],
         replaces: tuple[str, ...] = (), overlay_label: str = "overlay files", remove_empty: bool = False,
         three_way: bool = False) -> Plan:
    """Plan every patch (reverse flag per patch) then the overlay files, in memory.

    *remove_empty* deletes files a patch leaves empty, like `patch -E` (what
    dpkg-source does; quilt and git keep them). *three_way*: a file whose hunks do
    not match is merged from the blob its `index` line names (`git am -3`); without
    it the result is exactly `git apply`'s, or a refusal.
    """
    results: list[PatchResult] = []
    commits: list[PlannedCommit] = []
    state.prefetch({name for patch, _ in patches for fp in patch.files for name in fp.target(patch.strip) if name})
    for patch, reverse in patches:
        errors = [p for p in patch.problems if p.severity == "error"]
        if errors:  # an unparsable patch gets its own verdict; the others are still planned
            first = errors[0]
            where = f"{first.file}:{first.line}" if first.line else first.file
            more = f" (and {len(errors) - 1} more; run `overlay lint`)" if len(errors) > 1 else ""
            results.append(PatchResult(patch.label, FAILED, patch.sha256,
                                       message=f"{where}: {first.message}{more}"))
            continue
        files, changes = _plan_patch(state, patch, reverse, three_way)
        statuses = {f.status for f in files}
        if FAILED in statuses:
            status = FAILED
        elif statuses == {ALREADY}:
            status = ALREADY
        elif ALREADY in statuses:
            status = FAILED
        elif THREE_WAY in statuses:
            status = THREE_WAY
        elif OFFSET in statuses:
            status = OFFSET
        else:
            status = APPLIED
        results.append(PatchResult(patch.label, status, patch.sha256, files))
        if remove_empty:
            changes = {p: ((None, m) if c == b"" else (c, m)) for p, (c, m) in changes.items()}
        if status in (APPLIED, OFFSET, THREE_WAY):
            state.commit(changes)
            commits.append(PlannedCommit(commit_message(patch), parse_author(patch.author), patch_when(patch), changes))
    overlay_results: list[OverlayFileResult] = []
    overlay_sha = None
    if overlay_files:
        overlay_sha = manifest_sha256(overlay_files)
        changes = {}
        for item in overlay_files:
            current = state.read(item.path, str(item.source))
            content = item.content()
            if current is None:
                status = "add"
            elif item.path in replaces:
                status = "in-sync" if current == (content, item.mode) else "replace"
            else:
                raise OverlayError(
                    f"overlay file would replace the upstream file {item.path}", path=item.source,
                    hint="rename it, or declare it in the engine's `replaces` list in VERSIONS.toml",
                )
            overlay_results.append(OverlayFileResult(item.path, status, f"{item.mode:o}"))
            if status != "in-sync":
                changes[item.path] = (content, item.mode)
        problem = layout_problem(state, changes)
        if problem is not None:
            raise OverlayError(f"overlay file {problem[1]}", path=overlay_files[0].source.parent,
                               hint="an overlay file may not go through a symlink or replace a directory")
        state.commit(changes)
        message = f"{overlay_label}\n\nCopied from the overlay directory of this project.\n\n{TRAILER_FILES}: {overlay_sha}\n"
        commits.append(PlannedCommit(message, ("engine-overlay", "engine-overlay@localhost"), (0, "+0000"), changes))
    return Plan(results, overlay_results, commits, overlay_sha)


def load_patches(series_dir: Path, entries) -> list[tuple[Patch, bool]]:
    from .series import parse_patch

    out = []
    real_dir = series_dir.resolve()
    for entry in entries:
        path = series_dir / entry.name
        if not path.is_file():
            raise OverlayError(f"patch '{entry.name}' listed in the series does not exist",
                               path=series_dir / "series", line=entry.line,
                               hint="add the file or remove the line from the series")
        if path.is_symlink() or ("/" in entry.name and not path.resolve().is_relative_to(real_dir)):
            raise OverlayError(f"patch '{entry.name}' is a symlink or lies outside the series directory",
                               path=series_dir / "series", line=entry.line,
                               hint="patch files must be regular files in the series directory")
        patch = parse_patch(path, entry.name, entry.strip)
        out.extend((message, entry.reverse) for message in patch.messages)
    return out
