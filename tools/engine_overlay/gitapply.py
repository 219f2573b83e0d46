"""Apply one patch of `diff --git` entries exactly as `git apply --index` does (apply.c, git 2.39).

The rules that decide which tree comes out, and which patches are refused:

* every entry is checked and applied in memory before anything is written;
  renames and copies read their source from the tree before the patch, other
  entries read the result of an earlier entry for the same path (git's fn_table);
  deletions (and rename sources) happen first, then every result is written in
  order, so a swap of two files by two renames comes out right;
* a hunk matches only byte for byte (no fuzz, lines end at LF only); it is
  searched from its new-side line, one line after, one before, and so on, over
  the whole file, but never across lines an earlier hunk wrote; a hunk starting
  at line 0 or 1 must match at the start, one without trailing context at the end;
* creating an existing path, a path below a file or a symlink, a type change in
  a single entry, a deletion that leaves content: refused, as git refuses them;
* binary patches: literal and delta data checked against the `index` blob ids.

The 3-way fallback (`git am -3`) and the already-applied verdict are this
project's additions: they only ever turn git's refusal into a reported result.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from . import hunks as H
from .errors import OverlayError
from .gitdiff import apply_delta
from .paths import parents
from .report import ALREADY, APPLIED, FAILED, OFFSET, THREE_WAY, FileResult
from .series import FilePatch, Hunk, split_lines
from .threeway import three_way
from .tree import MODE_FILE, MODE_GITLINK, TreeState, is_link

_TO_BE_DELETED, _WAS_DELETED = "to-be-deleted", "was-deleted"
_GITLINK = re.compile(rb"Subproject commit ([0-9a-f]{40}|[0-9a-f]{64})(-dirty)?\n?")
_TYPE = 0o170000


@dataclass
class _Entry:
    fp: FilePatch
    old: str | None
    new: str | None
    is_new: bool
    is_delete: bool
    is_rename: bool
    is_copy: bool
    old_mode: int | None
    new_mode: int | None
    index_old: str | None
    index_new: str | None
    binary: list = field(default_factory=list)
    reverse: bool = False
    result: bytes | None = None

    @property
    def action(self) -> str:
        if self.is_new:
            return "create"
        if self.is_delete:
            return "delete"
        return "rename" if self.is_rename else "copy" if self.is_copy else "modify"

    @property
    def shown(self) -> str:
        return (self.old if self.is_delete else self.new) or self.old or self.new or "?"


def _entry(fp: FilePatch, reverse: bool) -> _Entry:
    e = _Entry(fp, fp.old_path, fp.new_path, fp.new_file, fp.deleted, fp.rename, fp.copy, fp.old_mode,
               fp.new_mode, fp.index_old, fp.index_new, list(fp.binary_hunks), reverse)
    if reverse:  # git's reverse_patches
        e.old, e.new = e.new, e.old
        e.old_mode, e.new_mode = e.new_mode, e.old_mode
        e.is_new, e.is_delete = e.is_delete, e.is_new
        e.index_old, e.index_new = e.index_new, e.index_old
    return e


class _Refused(Exception):
    def __init__(self, message: str, hunks: list[H.HunkResult] | None = None, status: str = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.hunks = hunks or []
        self.status = status


def blob_id(data: bytes, hash_name: str = "sha1") -> str:
    return hashlib.new(hash_name, b"blob %d\0" % len(data) + data).hexdigest()


# -- text hunks ----------------------------------------------------------------------------------

_SPACE = b" \t\n\r\x0b\x0c"


def _line_matches(have: bytes, want: bytes, last: bool) -> bool:
    if have == want:
        return True
    # git compares the preimage's bytes and whitespace-blind line hashes: a last preimage line
    # without its newline also matches the line that has it (and trailing whitespace)
    return last and not want.endswith(b"\n") and have.startswith(want) and not have[len(want):].strip(_SPACE)


def _match(lines: list[bytes], patched: list[bool], pre: list[bytes], at: int, match_end: bool) -> bool:
    n = len(pre)
    if at + n > len(lines) or (match_end and at + n != len(lines)):
        return False
    if match_end and n and not pre[-1].endswith(b"\n") and lines[-1] != pre[-1]:
        return False  # at the end, the whole preimage must be the file's last bytes
    for i in range(n):
        if patched[at + i] or not _line_matches(lines[at + i], pre[i], i == n - 1):
            return False
    return True


def _find_pos(lines: list[bytes], patched: list[bool], pre: list[bytes], line: int,
              match_beginning: bool, match_end: bool) -> int | None:
    total = len(lines)
    if match_beginning:
        return 0 if _match(lines, patched, pre, 0, match_end) else None
    if match_end:
        at = total - len(pre)
        return at if at >= 0 and _match(lines, patched, pre, at, True) else None
    line = min(max(line, 0), total)
    if _match(lines, patched, pre, line, False):
        return line
    first = pre[0] if pre else None
    for distance in range(1, total + 1):
        for at in (line + distance, line - distance):
            if 0 <= at <= total and (first is None or (at < total and _line_matches(lines[at], first, len(pre) == 1))) \
                    and _match(lines, patched, pre, at, False):
                return at
    return None


def apply_text(content: bytes, hunks: list[Hunk], reverse: bool = False) -> tuple[bytes | None, list[H.HunkResult]]:
    """Apply *hunks* to *content* with git's matching rules; (None, results) when one fails."""
    lines = split_lines(content)
    patched = [False] * len(lines)
    results: list[H.HunkResult] = []
    failed = False
    for number, hunk in enumerate(hunks, 1):
        pre, post = (hunk.new, hunk.old) if reverse else (hunk.old, hunk.new)
        oldpos, newpos = (hunk.new_start, hunk.old_start) if reverse else (hunk.old_start, hunk.new_start)
        match_beginning = oldpos <= 1
        match_end = hunk.trailing == 0
        guess = newpos - 1 if newpos else 0
        at = _find_pos(lines, patched, pre, guess, match_beginning, match_end)
        if at is None:
            results.append(H.HunkResult(number, H.FAILED, 0, hunk.line))
            failed = True
            continue
        offset = at - guess
        results.append(H.HunkResult(number, H.CLEAN if offset == 0 else H.OFFSET, offset, hunk.line, at + 1))
        lines[at:at + len(pre)] = post
        patched[at:at + len(pre)] = [True] * len(post)
    if failed:
        return None, results
    return b"".join(lines), results


def already_applied(content: bytes, hunks: list[Hunk]) -> bool:
    """The change is present (by git's hunk rules); see :func:`hunks.already_applied`."""
    return H.already_applied(content, hunks, apply_text)


# -- binary --------------------------------------------------------------------------------------

def _apply_binary(e: _Entry, image: bytes, state: TreeState) -> bytes:
    size = 64 if state.hash_name == "sha256" else 40
    name = e.old or e.new
    if not (e.index_old and e.index_new and len(e.index_old) == size and len(e.index_new) == size):
        raise _Refused(f"cannot apply binary patch to '{name}' without full index line")
    if e.old is not None:
        if blob_id(image, state.hash_name) != e.index_old:
            raise _Refused(f"the patch applies to '{name}', which does not match the current contents")
    elif image:
        raise _Refused(f"the patch applies to an empty '{name}' but it is not empty")
    if set(e.index_new) == {"0"}:
        return b""
    stored = state.blob(e.index_new)
    if stored is not None:
        return stored
    hunks = e.binary
    if e.reverse:
        if len(hunks) < 2:
            raise _Refused(f"cannot reverse-apply a binary patch without the reverse hunk to '{name}'")
        hunks = hunks[1:]
    if not hunks:
        raise _Refused(f"missing binary patch data for '{name}'")
    hunk = hunks[0]
    result = hunk.data if hunk.method == "literal" else apply_delta(image, hunk.data)
    if result is None:
        raise _Refused(f"binary patch does not apply to '{name}'")
    if blob_id(result, state.hash_name) != e.index_new:
        raise _Refused(f"binary patch to '{name}' creates incorrect result")
    return result


# -- one patch -----------------------------------------------------------------------------------

class GitPatchPlan:
    """Checks and applies the entries of one patch against *state*; see the module docstring."""

    def __init__(self, state: TreeState, files: list[FilePatch], reverse: bool, origin: str,
                 three_way: bool = False) -> None:
        self.state = state
        self.three_way = three_way
        self.origin = origin
        self.entries = [_entry(fp, reverse) for fp in files]
        self.fn: dict[str, object] = {}
        for e in self.entries:
            if e.old is not None and (e.new is None or e.is_rename):
                self.fn[e.old] = _TO_BE_DELETED
        self.removed_links = {e.old for e in self.entries
                              if e.old and is_link(e.old_mode) and (e.is_rename or e.is_delete)}
        self.kept_links = {e.new for e in self.entries if e.new and is_link(e.new_mode)}

    def run(self) -> tuple[list[FileResult], dict[str, tuple[bytes | None, int]]]:
        results = [self._check(e) for e in self.entries]
        if any(r.status != APPLIED and r.status != OFFSET and r.status != THREE_WAY for r in results):
            return results, {}
        changes: dict[str, tuple[bytes | None, int]] = {}
        for e in self.entries:
            if e.is_delete or e.is_rename:
                changes[e.old] = (None, e.old_mode or MODE_FILE)
        for e in self.entries:
            if not e.is_delete:
                changes[e.new] = (e.result, e.new_mode)
        problem = layout_problem(self.state, changes)
        if problem:
            path, message = problem
            results = [FileResult(r.path, r.action, FAILED, r.hunks, message) if r.path == path else r
                       for r in results]
            if all(r.status != FAILED for r in results):
                results.append(FileResult(path, "modify", FAILED, message=message))
            return results, {}
        return results, changes

    def _check(self, e: _Entry) -> FileResult:
        try:
            hunks, status = self._check_entry(e)
        except _Refused as exc:
            return FileResult(e.shown, e.action, exc.status, exc.hunks, exc.message)
        except OverlayError as exc:  # a name no tree may hold (.git, .., absolute)
            return FileResult(e.shown, e.action, FAILED, message=exc.message)
        return FileResult(e.shown, e.action, status, hunks)

    def _previous(self, e: _Entry):
        if e.is_copy or e.is_rename:
            return None  # git patches do not depend on the order
        previous = self.fn.get(e.old)
        if previous == _TO_BE_DELETED:
            return None
        if previous == _WAS_DELETED:
            raise _Refused(f"path {e.old} has been renamed/deleted")
        return previous

    def _check_entry(self, e: _Entry) -> tuple[list[H.HunkResult], str]:
        state = self.state
        for name in (e.old, e.new):
            if name is not None:
                state.check(name, self.origin, e.fp.line)
        image = b""
        if e.old is not None:
            previous = self._previous(e)
            if previous is not None:
                image, st_mode = previous.result, previous.new_mode
            else:
                found = state.read(e.old, self.origin, e.fp.line)
                if found is None:
                    raise _Refused(f"{e.old}: does not exist in index")
                image, st_mode = found
            if e.old_mode is None:
                e.old_mode = st_mode
            if (st_mode ^ e.old_mode) & _TYPE:
                raise _Refused(f"{e.old}: wrong type")
            if e.new_mode is None and not e.is_delete:
                e.new_mode = st_mode
        ok_if_exists = self.fn.get(e.new) in (_WAS_DELETED, _TO_BE_DELETED)
        if e.new is not None and (e.is_new or e.is_rename or e.is_copy):
            if not ok_if_exists and state.kind(e.new) in ("file", "link"):
                existing = state.read(e.new, self.origin, e.fp.line)
                if e.is_new and existing is not None and not e.binary:
                    wanted = apply_text(b"", e.fp.hunks, e.reverse)[0]
                    if wanted is not None and existing[0] == wanted:
                        raise _Refused("file already exists with this content", status=ALREADY)
                raise _Refused(f"{e.new}: already exists in index")
            if e.new_mode is None:
                e.new_mode = MODE_FILE if e.is_new else e.old_mode
        if e.new is not None and e.old is not None:
            if e.new_mode is None:
                e.new_mode = e.old_mode
            if (e.old_mode ^ e.new_mode) & _TYPE:
                raise _Refused(f"new mode ({e.new_mode:o}) of {e.new} does not match old mode ({e.old_mode:o})"
                               + ("" if e.new == e.old else f" of {e.old}"))
        if e.new is not None and self._beyond_symlink(e.new):
            raise _Refused(f"affected file '{e.new}' is beyond a symbolic link")
        hunks: list[H.HunkResult] = []
        status = APPLIED
        if e.fp.binary:
            result = _apply_binary(e, image, state)
        elif e.fp.hunks:
            result, hunks = apply_text(image, e.fp.hunks, e.reverse)
            if result is None:
                result, hunks, status = self._fallback(e, image, hunks)
            elif any(h.status == H.OFFSET for h in hunks):
                status = OFFSET
        else:
            result = image
        if e.is_delete and result:
            raise _Refused("removal patch leaves file contents", hunks)
        if not e.is_delete and e.new_mode == MODE_GITLINK and not _GITLINK.fullmatch(result):
            raise _Refused(f"{e.new}: a submodule entry must say `Subproject commit <id>`", hunks)
        e.result = result
        if e.new is not None:
            self.fn[e.new] = e
        if e.new is None or e.is_rename:
            self.fn[e.old] = _WAS_DELETED
        return hunks, status

    def _fallback(self, e: _Entry, image: bytes, hunks: list[H.HunkResult]):
        if not e.reverse and already_applied(image, e.fp.hunks):
            raise _Refused("change already present", H.present(hunks), status=ALREADY)
        merged, colliding = (three_way(image, e.fp, self.state.blob, apply_text)
                             if self.three_way and not e.reverse else (None, None))
        hunks = H.three_way_verdicts(hunks, colliding, merged is not None)
        if merged is None:
            raise _Refused("3-way merge conflicts" if colliding is not None else "", hunks)
        return merged, hunks, THREE_WAY

    def _beyond_symlink(self, name: str) -> bool:
        for parent in reversed(parents(name)):  # the nearest first, as git looks
            if parent in self.kept_links:
                return True
            if parent in self.removed_links:
                continue
            if self.state.kind(parent) == "link":
                return True
        return False


def layout_problem(state: TreeState, changes: dict[str, tuple[bytes | None, int]]) -> tuple[str, str] | None:
    """A written path that the result needs below a file or a symlink, or where a directory stays
    (no tree can hold it, and writing it would go through a link): (path, message) or None."""
    after = state.fork()
    after.commit(changes)
    final = after.changes
    written = sorted(p for p, (content, _m) in changes.items() if content is not None)
    for path in written:
        for parent in parents(path):
            if parent in final:
                content, mode = final[parent]
                kind = None if content is None else ("link" if is_link(mode) else "file")
            else:
                kind = state.base_kind(parent)
                if kind == "dir" or kind is None:
                    continue
            if kind == "link":
                return path, f"affected file '{path}' is beyond a symbolic link"
            if kind is not None:
                return path, f"{path}: cannot create it, '{parent}' is a file"
    for path in written:
        if after.written_below(path):
            return path, f"{path}: already exists in working directory (a directory)"
        if state.base_kind(path) == "dir" and any(final.get(p, (b"", 0))[0] is not None
                                                   for p in state.base_files_under(path)):
            return path, f"{path}: already exists in working directory (a directory)"
    return None
