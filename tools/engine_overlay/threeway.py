"""The 3-way fallback (`apply -3`, `git am -3`): a file whose hunks do not match is merged
from the preimage blob its `index` line names, with `git merge-file`."""

from __future__ import annotations

from collections.abc import Callable

from . import hunks as H
from .gitops import merge_file
from .series import FilePatch, Hunk

BlobReader = Callable[[str], bytes | None]  # abbreviated blob id -> content
HunkApplier = Callable[[bytes, list[Hunk]], tuple[bytes | None, list[H.HunkResult]]]


def three_way(current: bytes, fp: FilePatch, read_blob: BlobReader | None,
              apply: HunkApplier) -> tuple[bytes | None, list[bool] | None]:
    """(merged content or None on conflict, per hunk: does it collide with an upstream change?);
    (None, None) when no 3-way merge is possible at all (no blob, or the patch does not apply to it).

    Per hunk, the verdict comes from merging that hunk alone into *current*: the same merge the
    whole file gets, so the per-hunk verdicts match it."""
    if read_blob is None or not fp.index_old or set(fp.index_old) == {"0"}:
        return None, None
    base = read_blob(fp.index_old)
    if base is None:
        return None, None
    theirs, results = apply(base, fp.hunks)
    if theirs is None or any(r.status != H.CLEAN for r in results):
        return None, None
    merged, conflicts = merge_file(current, base, theirs)
    if conflicts == 0:
        return merged, [False] * len(fp.hunks)
    colliding = []
    for hunk in fp.hunks:
        alone, _ = apply(base, [hunk])
        colliding.append(alone is None or merge_file(current, base, alone)[1] > 0)
    return None, colliding
