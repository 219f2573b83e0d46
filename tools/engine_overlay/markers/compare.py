"""Classify each baseline block against the current tree.

``intact``: same body (whitespace-insensitive) in the same file and scope;
``modified``: a similar body at the same place; ``moved``: same or similar body
in another scope or file; ``lost``: gone, with the reason; ``added``: new in the
current tree. Matching is one-to-one and tries exact hashes before similarity,
so an unchanged block is never reported as changed because its lines shifted.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import re
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from .snapshot import Block, Snapshot

MODIFIED_MIN = 0.5  # same file and scope: at least this similar to count as the same block
MOVED_MIN = 0.8  # another file: must be this similar
SAME_FILE_MOVED_MIN = 0.6  # another scope of the same file (moved and edited on the way)
ANCHORED_FLOOR = 0.4  # same scope, anchored at the same code lines: below this it is another block
ELSEWHERE_MIN_CHARS = 12  # bodies shorter than this are too generic to find unmarked elsewhere
ELSEWHERE_SCANS = 16  # lost blocks searched for file by file; for more, one pass indexes the tree
FAILING = ("modified", "moved", "lost")
PAIR_BUDGET = 10_000  # similarity pairs a pass scores exhaustively; beyond, only likely candidates
NEAR = 8  # over budget: this many free blocks on each side, by position in the same scope
LIKELY = 16  # over budget: and this many sharing the most words or anchors
COMMON = 32  # over budget: a word or anchor held by more current blocks than this says nothing
WORD = re.compile(r"\w{3,}")

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


def renamed_files(baseline: Snapshot, current: Snapshot) -> dict[str, str]:
    """Baseline files that were renamed: gone from the current tree, while a file that held no
    marked block before now holds blocks of the same scopes and bodies (the most such blocks)."""
    if not current.listed():  # no listing of the current tree: nothing can be said to be gone
        return {}
    before = {b.file for b in baseline.blocks}
    marked_now = {c.file for c in current.blocks}  # files holding a block are there
    gone = {rel for rel in before - marked_now if not current.holds(rel)}
    if not gone:
        return {}
    keys: dict[tuple, Counter] = defaultdict(Counter)  # (qualname, hash) -> new files holding it
    for c in current.blocks:
        if c.file not in before:
            keys[(c.qualname, c.hash)][c.file] += 1
    renames: dict[str, str] = {}
    for old in sorted(gone):
        votes: Counter[str] = Counter()
        for b in baseline.blocks:
            if b.file == old:
                votes.update(keys.get((b.qualname, b.hash), Counter()).keys())
        if votes:
            target, _count = max(votes.items(), key=lambda item: (item[1], item[0]))
            if target not in renames.values():
                renames[old] = target
    return renames


def compare(baseline: Snapshot, current: Snapshot) -> list[BlockResult]:
    """Match baseline blocks to current blocks one-to-one and classify both sides; a block in a
    renamed file is matched at its new path (intact there when unchanged)."""
    renames = renamed_files(baseline, current)
    base = [dataclasses.replace(b, file=renames[b.file]) if b.file in renames else b for b in baseline.blocks]
    originals = list(baseline.blocks)
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

    finder = _UnmarkedFinder(current, base)

    def exact(key, skip: set[int]) -> None:
        slots: dict[tuple, deque[int]] = {}
        for j in sorted(free, key=lambda j: (cur[j].file, cur[j].start_line)):
            slots.setdefault(key(cur[j]), deque()).append(j)
        for i, b in enumerate(base):
            if i not in pair and i not in skip and slots.get(key(b)):
                take(i, slots[key(b)].popleft())

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
    fenced: dict[tuple, list[int]] = defaultdict(list)  # (file, qualname, inline tag, body line) -> blocks
    for j, c in enumerate(cur):
        if c.kind == "fenced":
            for tag in dict.fromkeys(t.tag for t in c.inline_tags):
                for line in dict.fromkeys(c.body):
                    fenced[(c.file, c.qualname, tag, line)].append(j)
    wrapped: dict[int, int] = {}
    for i, b in enumerate(base):
        if i in pair or b.kind != "inline" or not b.body:
            continue
        j = next((j for j in fenced.get((b.file, b.qualname, b.tag, b.body[0]), ())
                  if _contains(cur[j].body, b.body)), None)
        if j is not None:
            wrapped[i] = j
    stays |= set(wrapped)

    # 3. similar body, one assignment over every candidate pair: the strongest pairs are taken
    #    first wherever they are, so a block moved to another method (and edited) is not lost to
    #    a weak look-alike left in its old place; below a floor a pair is no match at all
    cands: list[tuple[float, int, int, int]] = []
    todo = [i for i in range(len(base)) if i not in pair and i not in stays]
    for same_place in (True, False):
        for i, j in _candidates(base, cur, todo, sorted(free), same_place):
            b, c = base[i], cur[j]
            least = (MODIFIED_MIN if same_place else SAME_FILE_MOVED_MIN if b.file == c.file else MOVED_MIN)
            if same_place and _anchored(b, c):
                least = min(least, ANCHORED_FLOOR)
            if not same_place and difflib.SequenceMatcher(None, "\n".join(b.body), "\n".join(c.body)).quick_ratio() < least:
                continue
            score = similarity(b.body, c.body)
            if score >= least:
                cands.append((score, 0 if same_place else 1, i, j))
    for _score, _where, i, j in sorted(cands, key=lambda t: (-t[0], t[1], t[2], t[3])):
        if i not in pair and j in free:
            take(i, j)

    results: list[BlockResult] = []
    for i, b in enumerate(base):
        r = BlockResult("lost", originals[i].file, b.start_line, b.kind, b.tag, b.qualname, b.hash, b.id)
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


def _place(x: Block) -> tuple[str, str]:
    return x.file, x.qualname


def _keys(x: Block) -> set:
    words = {w for line in x.body for w in WORD.findall(line)}
    return {*words, *(("before", a) for a in x.anchors_before[:1]), *(("after", a) for a in x.anchors_after[:1])}


def _candidates(base: list[Block], cur: list[Block], todo: list[int], free: list[int], same_place: bool):
    """The (baseline, current) pairs pass 3 scores: in the same scope, or elsewhere.

    Every pair while the pass stays within PAIR_BUDGET; beyond (thousands of changed
    blocks, say) only likely ones — the NEAR nearest by position in the same scope, and
    the LIKELY sharing the most words or anchors — so the similarity work grows
    linearly, not with the product of the two block counts.
    """
    by_place: dict[tuple, list[int]] = defaultdict(list)
    for j in sorted(free, key=lambda j: cur[j].start_line):
        by_place[_place(cur[j])].append(j)
    here = {i: len(by_place.get(_place(base[i]), ())) for i in todo}
    if sum(here[i] if same_place else len(free) - here[i] for i in todo) <= PAIR_BUDGET:
        for i in todo:
            own = _place(base[i])
            for place, js in by_place.items():
                if (place == own) == same_place:
                    yield from ((i, j) for j in js)
        return
    holders: dict[object, list[int]] = defaultdict(list)
    for j in free:
        for key in _keys(cur[j]):
            holders[key].append(j)
    todo_at: dict[tuple, list[int]] = defaultdict(list)
    for i in sorted(todo, key=lambda i: base[i].start_line):
        todo_at[_place(base[i])].append(i)
    for place, group in todo_at.items():
        pool = by_place.get(place, [])  # in line order
        for rank, i in enumerate(group):
            near: set[int] = set()
            if same_place:  # the same rank among the scope's free current blocks, scaled to their number
                at = rank * len(pool) // len(group)
                near.update(pool[max(0, at - NEAR):at + NEAR + 1])
            shared: Counter[int] = Counter()
            for key in _keys(base[i]):
                if len(holders.get(key, ())) <= COMMON:
                    shared.update(holders.get(key, ()))
            near.update(j for j, _ in shared.most_common(LIKELY))
            for j in sorted(near):
                if (_place(cur[j]) == _place(base[i])) == same_place:
                    yield i, j


class _Lines:
    """A file's non-blank lines without whitespace, and where each occurs: finding a body
    costs the occurrences of its rarest line, not a scan of the file per block."""

    def __init__(self, lines: list[str]) -> None:
        code = [(n, "".join(ln.split())) for n, ln in enumerate(lines, 1) if ln.strip()]
        self.numbers = [n for n, _ in code]
        self.keys = [k for _, k in code]
        self.where: dict[str, list[int]] = defaultdict(list)
        for idx, key in enumerate(self.keys):
            self.where[key].append(idx)

    def find(self, body: list[str], skip) -> int | None:
        """First 1-based line where the whitespace-insensitive *body* starts and ``skip(line)`` is false."""
        want = [ln.replace(" ", "") for ln in body]
        k = min(range(len(want)), key=lambda k: len(self.where.get(want[k], ())))
        for pos in self.where.get(want[k], ()):
            start = pos - k
            if start >= 0 and self.keys[start:start + len(want)] == want and not skip(self.numbers[start]):
                return self.numbers[start]
        return None


def _covered(spans: list[tuple[int, int]]):
    """Is a line inside one of *spans*? Merged and bisected, as inline spans may overlap."""
    merged: list[list[int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    starts = [first for first, _ in merged]

    def inside(line: int) -> bool:
        k = bisect.bisect_right(starts, line) - 1
        return k >= 0 and line <= merged[k][1]

    return inside


class _UnmarkedFinder:
    """Finds a lost block's code without its markers: same file first, then the other files."""

    def __init__(self, current: Snapshot, blocks: list[Block]) -> None:
        self.current = current
        self._probes = {_probe(b).replace(" ", "") for b in blocks if b.body}
        self._index: dict[str, list[str]] | None = None  # probe key -> files holding such a line
        self._scans = 0
        self._files: dict[str, _Lines | None] = {}
        spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for c in current.blocks:
            spans[c.file].append((c.start_line, c.end_line))
        self._marked = {rel: _covered(s) for rel, s in spans.items()}
        self._located: dict[int, tuple[str, tuple[str, int] | None]] = {}

    def _unmarked_at(self, rel: str, lines: _Lines, body: list[str]) -> int | None:
        """First occurrence of *body* in *rel* that is not part of a current marked block."""
        return lines.find(body, self._marked.get(rel, lambda _line: False))

    def _file_lines(self, rel: str) -> _Lines | None:
        if rel not in self._files:
            text = self.current.read_source(rel)
            self._files[rel] = None if text is None else _Lines(text.splitlines())
        return self._files[rel]

    def _lines_with(self, rel: str, probe: str) -> _Lines | None:
        """*rel*'s lines when its text holds *probe* (kept for the next block), else None."""
        text = self.current.read_source(rel)
        if text is None or probe not in text:
            return None
        self._files[rel] = _Lines(text.splitlines())
        return self._files[rel]

    def _indexed(self, key: str) -> list[str]:
        """The files with a line whose key is *key*: one pass over the tree, for the baseline's
        probes only, so many lost blocks cost one read of each file instead of one each."""
        if self._index is None:
            self._index = defaultdict(list)
            for rel in self.current.files:
                text = self.current.read_source(rel)
                for found in {"".join(ln.split()) for ln in (text or "").splitlines()} & self._probes:
                    self._index[found].append(rel)
        return self._index.get(key, [])

    def locate(self, b: Block) -> tuple[str, tuple[str, int] | None]:
        if id(b) not in self._located:
            self._located[id(b)] = self._locate(b)
        return self._located[id(b)]

    def _locate(self, b: Block) -> tuple[str, tuple[str, int] | None]:
        if not b.body:
            return "code-removed", None
        lines = self._file_lines(b.file)
        if lines is not None:
            at = self._unmarked_at(b.file, lines, b.body)
            if at:
                return LOST_MARKERS_REMOVED, (b.file, at)
        if sum(len(x) for x in b.body) < ELSEWHERE_MIN_CHARS:
            return LOST_CODE_REMOVED, None
        probe = _probe(b)
        self._scans += 1
        files = self.current.files if self._scans <= ELSEWHERE_SCANS else self._indexed(probe.replace(" ", ""))
        for rel in files:
            if rel == b.file:
                continue
            lines = self._files[rel] if rel in self._files else self._lines_with(rel, probe)
            at = lines and self._unmarked_at(rel, lines, b.body)
            if at:
                return LOST_UNMARKED_ELSEWHERE, (rel, at)
        return LOST_CODE_REMOVED, None


def _probe(b: Block) -> str:
    return max(b.body, key=len)


def _contains(body: list[str], part: list[str]) -> bool:
    """True when *part* appears as consecutive lines of *body*."""
    n = len(part)
    return any(body[k:k + n] == part for k in range(len(body) - n + 1))
