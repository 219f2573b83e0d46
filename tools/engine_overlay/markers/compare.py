"""Classify each baseline block against the current tree.

``intact``: same body (whitespace-insensitive) in the same file and scope;
``modified``: a similar body at the same place; ``moved``: same or similar body
in another scope or file; ``lost``: gone, with the reason; ``added``: new in the
current tree. Matching is one-to-one and tries exact hashes before similarity,
so an unchanged block is never reported as changed because its lines shifted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from .snapshot import Block, Snapshot

MODIFIED_MIN = 0.5  # same file and scope: at least this similar to count as the same block
MOVED_MIN = 0.8  # another scope or file: must be this similar
ELSEWHERE_MIN_CHARS = 12  # bodies shorter than this are too generic to find unmarked elsewhere
FAILING = ("modified", "moved", "lost")

LOST_CODE_REMOVED = "code-removed"
LOST_MARKERS_REMOVED = "markers-removed"
LOST_UNMARKED_ELSEWHERE = "unmarked-elsewhere"


@dataclass
class BlockResult:
    """One row of the report: a baseline block (or a new one) and what became of it."""

    status: str  # intact | modified | moved | lost | added
    file: str
    start_line: int
    kind: str
    tag: str
    qualname: str
    hash: str
    id: str | None = None
    new_file: str | None = None
    new_start_line: int | None = None
    new_qualname: str | None = None
    similarity: float | None = None
    lost_kind: str | None = None
    enclosing_changed: bool = False
    waived: bool = False
    waiver: str | None = None
    diff: list[str] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        return self.status in FAILING and not self.waived

    @property
    def label(self) -> str:
        return self.id or self.qualname or "<module>"


def similarity(a: list[str], b: list[str]) -> float:
    """0..1 similarity of two normalised bodies (characters for small bodies, lines for big)."""
    if a == b:
        return 1.0
    ta, tb = "\n".join(a), "\n".join(b)
    if len(ta) + len(tb) > 8000:
        sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    else:
        sm = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    return round(sm.ratio(), 3)


def _diff(a: Block, b: Block) -> list[str]:
    return list(difflib.unified_diff(a.body, b.body, f"{a.file}:{a.start_line}",
                                     f"{b.file}:{b.start_line}", n=1, lineterm=""))


def _anchored(a: Block, b: Block) -> bool:
    return bool((a.anchors_before and a.anchors_before[:1] == b.anchors_before[:1])
                or (a.anchors_after and a.anchors_after[:1] == b.anchors_after[:1]))


def compare(baseline: Snapshot, current: Snapshot) -> list[BlockResult]:
    """Match baseline blocks to current blocks one-to-one and classify both sides."""
    base = list(baseline.blocks)
    cur = list(current.blocks)
    pair: dict[int, int] = {}  # baseline index -> current index
    free = set(range(len(cur)))

    def take(i: int, j: int) -> None:
        pair[i] = j
        free.discard(j)

    # 1. explicit ids, when one baseline and one current block carry the id
    base_ids: dict[str, list[int]] = {}
    for i, b in enumerate(base):
        if b.id:
            base_ids.setdefault(b.id, []).append(i)
    cur_ids: dict[str, list[int]] = {}
    for j, c in enumerate(cur):
        if c.id:
            cur_ids.setdefault(c.id, []).append(j)
    for bid, idx in base_ids.items():
        if len(idx) == 1 and len(cur_ids.get(bid, [])) == 1:
            take(idx[0], cur_ids[bid][0])

    finder = _UnmarkedFinder(current)

    def exact(key, skip: set[int]) -> None:
        slots: dict[tuple, list[int]] = {}
        for j in sorted(free, key=lambda j: (cur[j].file, cur[j].start_line)):
            slots.setdefault(key(cur[j]), []).append(j)
        for i, b in enumerate(base):
            if i not in pair and i not in skip and slots.get(key(b)):
                take(i, slots[key(b)].pop(0))

    # 2. exact body: same file+scope, then same file, then anywhere (in line order) — but a
    #    block whose code is still in its file without markers lost its markers: never "moved"
    exact(lambda x: (x.file, x.qualname, x.hash), set())
    exact(lambda x: (x.file, x.hash), set())
    marked_scopes = {(c.file, c.qualname, c.kind, c.tag) for j, c in enumerate(cur) if j in free}
    stays = {i for i, b in enumerate(base) if i not in pair
             and (b.file, b.qualname, b.kind, b.tag) not in marked_scopes  # its scope kept no such marker
             and finder.locate(b)[0] == LOST_MARKERS_REMOVED}
    exact(lambda x: (x.hash,), stays)

    # an inline-tagged line that a new fence now wraps, tag and code unchanged, is intact
    wrapped: dict[int, int] = {}
    for i, b in enumerate(base):
        if i in pair or b.kind != "inline" or not b.body:
            continue
        for j, c in enumerate(cur):
            if (c.kind == "fenced" and c.file == b.file and c.qualname == b.qualname
                    and any(t.tag == b.tag for t in c.inline_tags) and _contains(c.body, b.body)):
                wrapped[i] = j
                break
    stays |= set(wrapped)

    # 3. similar body: same file+scope (or anchored in place), then elsewhere
    for same_place in (True, False):
        cands: list[tuple[float, int, int]] = []
        for i, b in enumerate(base):
            if i in pair or i in stays:
                continue
            for j in free:
                c = cur[j]
                here = c.file == b.file and c.qualname == b.qualname
                if here != same_place:
                    continue
                if not same_place and difflib.SequenceMatcher(None, "\n".join(b.body), "\n".join(c.body)).quick_ratio() < MOVED_MIN:
                    continue
                s = similarity(b.body, c.body)
                if s >= (MODIFIED_MIN if same_place else MOVED_MIN) or (same_place and s > 0 and _anchored(b, c)):
                    cands.append((s, i, j))
        for _s, i, j in sorted(cands, key=lambda t: (-t[0], t[1], t[2])):
            if i not in pair and j in free:
                take(i, j)

    results: list[BlockResult] = []
    for i, b in enumerate(base):
        r = BlockResult("lost", b.file, b.start_line, b.kind, b.tag, b.qualname, b.hash, b.id)
        if i in wrapped:
            c = cur[wrapped[i]]
            r.status, r.similarity = "intact", 1.0
            r.new_file, r.new_start_line, r.new_qualname = c.file, c.start_line, c.qualname
        elif i in pair:
            c = cur[pair[i]]
            r.new_file, r.new_start_line, r.new_qualname = c.file, c.start_line, c.qualname
            r.similarity = 1.0 if c.hash == b.hash else similarity(b.body, c.body)
            here = c.file == b.file and c.qualname == b.qualname
            if here:
                r.status = "intact" if c.hash == b.hash else "modified"
            else:
                r.status = "moved"
            if r.similarity < 1.0:
                r.diff = _diff(b, c)
            if r.status == "intact" and b.enclosing_hash and c.enclosing_hash and b.enclosing_hash != c.enclosing_hash:
                r.enclosing_changed = True
        else:
            r.lost_kind, where = finder.locate(b)
            if where:
                r.new_file, r.new_start_line = where
        results.append(r)
    for j in sorted(free, key=lambda j: (cur[j].file, cur[j].start_line)):
        c = cur[j]
        results.append(BlockResult("added", c.file, c.start_line, c.kind, c.tag, c.qualname, c.hash, c.id,
                                   new_file=c.file, new_start_line=c.start_line, new_qualname=c.qualname))
    return results


class _UnmarkedFinder:
    """Finds a lost block's code without its markers: same file first, then the other files."""

    def __init__(self, current: Snapshot) -> None:
        self.current = current
        self._keys: dict[str, list[str] | None] = {}
        self._marked: dict[str, list[tuple[int, int]]] = {}
        for c in current.blocks:
            self._marked.setdefault(c.file, []).append((c.start_line, c.end_line))

    def _unmarked_at(self, rel: str, lines: list[str], body: list[str]) -> int | None:
        """First occurrence of *body* in *rel* that is not part of a current marked block."""
        spans = self._marked.get(rel, [])
        at = self._find(lines, body)
        while at is not None:
            if not any(s <= at <= e for s, e in spans):
                return at
            nxt = self._find(lines[at:], body)
            at = None if nxt is None else nxt + at
        return None

    def _file_keys(self, rel: str) -> list[str] | None:
        if rel not in self._keys:
            text = self.current.read_source(rel)
            self._keys[rel] = None if text is None else text.splitlines()
        return self._keys[rel]

    @staticmethod
    def _find(lines: list[str], body: list[str]) -> int | None:
        """1-based line where the whitespace-insensitive body starts (blank lines skipped)."""
        want = [ln.replace(" ", "") for ln in body]
        code = [(n + 1, "".join(ln.split())) for n, ln in enumerate(lines) if ln.strip()]
        keys = [k for _, k in code]
        for idx in range(len(keys) - len(want) + 1):
            if keys[idx] == want[0] and keys[idx:idx + len(want)] == want:
                return code[idx][0]
        return None

    def locate(self, b: Block) -> tuple[str, tuple[str, int] | None]:
        if not b.body:
            return "code-removed", None
        lines = self._file_keys(b.file)
        if lines is not None:
            at = self._unmarked_at(b.file, lines, b.body)
            if at:
                return LOST_MARKERS_REMOVED, (b.file, at)
        if sum(len(x) for x in b.body) < ELSEWHERE_MIN_CHARS:
            return LOST_CODE_REMOVED, None
        probe = max(b.body, key=len)
        for rel in self.current.files:
            if rel == b.file:
                continue
            text = self.current.sources.get(rel)
            if text is None:
                if self.current.root is None:
                    continue
                try:
                    raw = (self.current.root / rel).read_bytes()
                except OSError:
                    continue
                if probe.encode() not in raw:
                    continue
                text = raw.decode("utf-8", "replace")
            elif probe not in text:
                continue
            at = self._unmarked_at(rel, text.splitlines(), b.body)
            if at:
                return LOST_UNMARKED_ELSEWHERE, (rel, at)
        return LOST_CODE_REMOVED, None


def _contains(body: list[str], part: list[str]) -> bool:
    """True when *part* appears as consecutive lines of *body*."""
    n = len(part)
    return any(body[k:k + n] == part for k in range(len(body) - n + 1))
