"""Apply hunks to bytes with zero fuzz: exact context, offsets allowed and reported.

This is the in-memory core of `overlay apply`: every hunk is matched exactly
(like `patch -F0`), searched outward from its stated line, and a hunk that
does not match is a failure — never a silent misplacement.
"""

from __future__ import annotations

from dataclasses import dataclass

from .series import Hunk, split_lines  # lines end at LF only

CLEAN, OFFSET, THREE_WAY, FAILED, ALREADY = "clean", "offset", "3-way", "failed", "already-applied"


@dataclass
class HunkResult:
    index: int  # 1-based hunk number within its file
    status: str  # clean | offset | 3-way | failed | already-applied
    offset: int = 0  # lines between the stated and the found position
    line: int = 0  # the hunk's @@ line in the patch file
    at: int = 0  # 1-based line in the target where it applied (0 if failed)


def _matches(lines: list[bytes], pattern: list[bytes], at: int) -> bool:
    if at < 0 or at + len(pattern) > len(lines):
        return False
    return lines[at:at + len(pattern)] == pattern


def locate(
    lines: list[bytes], hunk: Hunk, pattern: list[bytes], guess: int, floor: int, context: int
) -> int | None:
    """Find *pattern* nearest to *guess* (never before *floor*), like GNU patch at fuzz 0.

    A hunk with less leading context than the patch's context size lies at the
    start of the file and may only match there (both short: the whole file); one
    with short trailing context may only match at the end.
    """
    if not pattern:
        return guess if floor <= guess <= len(lines) else None
    start = hunk.old_start if pattern is hunk.old else hunk.new_start
    if hunk.leading < context and start <= 1:
        if hunk.trailing < context and len(pattern) != len(lines):
            return None
        return 0 if floor == 0 and _matches(lines, pattern, 0) else None
    if hunk.trailing < context:
        at = len(lines) - len(pattern)
        return at if at >= floor and _matches(lines, pattern, at) else None
    guess = min(max(guess, floor), len(lines))  # a huge stated line costs nothing: search from the end
    limit = max(guess - floor, len(lines) - guess) + 1
    for distance in range(limit):
        for at in ((guess,) if distance == 0 else (guess + distance, guess - distance)):
            if at >= floor and _matches(lines, pattern, at):
                return at
    return None


def apply_hunks(content: bytes, hunks: list[Hunk], reverse: bool = False) -> tuple[bytes | None, list[HunkResult]]:
    """Apply *hunks* in order; return (new content or None if any hunk failed, results)."""
    lines = split_lines(content)
    out: list[bytes] = []
    pos = 0
    offset = 0
    results: list[HunkResult] = []
    failed = False
    context = max((max(h.leading, h.trailing) for h in hunks), default=0)
    for number, hunk in enumerate(hunks, 1):
        old, new = (hunk.new, hunk.old) if reverse else (hunk.old, hunk.new)
        start = (hunk.new_start if reverse else hunk.old_start)
        stated = start - 1 if old else start  # `-5,0` inserts after line 5
        guess = max(stated + offset, pos)
        at = locate(lines, hunk, old, guess, pos, context)
        if at is None:
            results.append(HunkResult(number, FAILED, 0, hunk.line))
            failed = True
            continue
        offset = at - stated
        results.append(HunkResult(number, CLEAN if offset == 0 else OFFSET, offset, hunk.line, at + 1))
        out.extend(lines[pos:at])
        out.extend(new)
        pos = at + len(old)
    if failed:
        return None, results
    out.extend(lines[pos:])
    return b"".join(out), results


def already_applied(content: bytes, hunks: list[Hunk], apply=None) -> bool:
    """True when every hunk's result is already present: the reverse patch applies by *apply*'s
    rules (GNU patch's by default; git's for git patches). A hunk that only removes lines is no
    evidence: its reverse matches wherever its context is."""
    if not hunks or any(len(h.new) == h.leading + h.trailing for h in hunks):
        return False
    result, _ = (apply or apply_hunks)(content, hunks, reverse=True)
    return result is not None


def present(results: list[HunkResult]) -> list[HunkResult]:
    """Hunk results of a change that is already there: each hunk is present, none failed."""
    return [HunkResult(r.index, ALREADY, 0, r.line, r.at) for r in results]


def three_way_verdicts(results: list[HunkResult], colliding: list[bool] | None, merged: bool) -> list[HunkResult]:
    """Per hunk after a 3-way attempt: a hunk that did not match is `3-way` when the file merged
    or that hunk alone merges, `failed` when it collides; unchanged when no merge could run."""
    out = []
    for number, r in enumerate(results):
        status = r.status
        if status == FAILED and (merged or colliding is not None):
            status = THREE_WAY if merged or not colliding[number] else FAILED
        out.append(HunkResult(r.index, status, r.offset, r.line, r.at))
    return out
