"""check-markers on the real release history of vllm-omni, against an independent ground truth.

Usage: python benchmarks/bench_markers_history.py [--json PATH] [--finals] [--refresh-index] [--offline]

Data. vllm-omni keeps downstream blocks (``# ---- Omni-new ----`` fences and
inline tags such as ``# [Omni]``, ``# OMNI:``) in files it copies from vLLM /
vllm-ascend and re-syncs them release after release. Every release is a wheel
on PyPI. The chain is every wheel of the index (rc and final, ordered by PEP 440
version), or with ``--finals`` the final releases plus the newest rc. The index
(PEP 691 JSON) is cached on first use, so a warm cache always measures the same
chain; ``--refresh-index`` re-reads it. Each wheel is checked against the
index's sha256 (a mismatch deletes it and stops), its ``.py`` files are
extracted once. Cache: ``<user cache>/engine-overlay/eval/vllm-omni/``.

Measured. For each consecutive pair A -> B: ``take_snapshot(A)`` (default
MarkerConfig), written to a file, then ``check_markers(B, against=<that file>)``.

Ground truth. Computed per baseline block from the raw text of A and B, without
the tool's matcher or similarity scores (only the block's location -- file,
first and last line, kind, tag, id -- is taken from A's snapshot; the rest is
read here with an own fence scanner and an own ``ast`` walk):

* ``R`` = the block's raw lines in A, fences (or the tag line(s)) included,
  each stripped of leading/trailing whitespace ("normalised for indentation
  only"; blank lines kept). Body = R without the fences / the tag comment.
* scope = qualname (``Class.method``) of the innermost ``def``/``class`` whose
  span holds the block's first line (after the header's first line).
* Passes over all blocks, strongest evidence first; each B marker line (opening
  fence or tagged line) is assigned to at most one baseline block:
  1. R verbatim in the same file and scope -> ``unchanged``;
  2. R verbatim in the same file, another scope -> ``moved``;
  3. inline block whose code line is unchanged in the same scope and still
     carries a configured tag, only the tag word / reason text differs ->
     ``comment-only`` (ambiguous);
  4. whole-line inline tag: the tag comment line is verbatim in the same
     scope, the code under it differs -> ``modified``;
  5. equal once all whitespace and blank lines are ignored, same scope ->
     ``whitespace-only`` (ambiguous; the tool's documented normalisation
     calls it intact);
  6. a fence pair of the same file with the same id, or in the same scope
     with the same nearest code line before the opening / after the closing
     fence, or in the same scope sharing a 12+ char code line -> ``modified``
     (same id in another scope -> ``moved+modified``; the same body between
     re-spelled fences -> ``refenced``, ambiguous);
     inline: a line with the same tag in the same scope next to the same code
     line -> ``modified``;
  7. R verbatim in another file -> ``moved``, or ``unchanged`` when A's file is gone from B
     and the other file is new in B, same scope (a renamed file);
  8. a fence pair elsewhere (other scope or file) at the same 12+ char anchor
     code line that shares a 12+ char code line -> ``moved+modified``;
  9. else ``duplicate`` (identical copies of R in the same scope competed
     for fewer occurrences there; ambiguous) or ``lost``, with a sub-kind:
     ``markers-removed`` (the code is still in the file, unmarked),
     ``unmarked-elsewhere``, ``code-removed``.
* ``unbalanced-fences`` (ambiguous): A's or B's file has an odd or
  indentation-mismatched fence sequence, so which lines form a block is not
  defined by the text; the textual verdict is kept in the detail.

Ambiguous truths accept any tool status and are excluded from the rates;
``moved+modified`` accepts any flagged status (moved vs lost there depends on
the tool's similarity threshold).

Metrics over the whole chain: recall (= the tool reports the block as not
intact) of lost, moved and modified blocks; false-positive rate = share of
``unchanged`` blocks the tool reports as not intact; exact status agreement.
Every disagreement (pair, file, line, tool status, truth) is printed and put in
the JSON ``details``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.version import Version

from engine_overlay.markers import MarkerConfig, check_markers, take_snapshot
from engine_overlay.sources import cache_dir

PROJECT = "vllm-omni"
INDEX_URL = f"https://pypi.org/simple/{PROJECT}/"
NAME = "check-markers on vllm-omni history"
AMBIGUOUS = ("whitespace-only", "comment-only", "refenced", "duplicate", "unbalanced-fences")
FLAGGED = ("modified", "moved", "lost")


# --- data: index, wheels, trees ----------------------------------------------------------------

def eval_dir() -> Path:
    return cache_dir() / "eval" / PROJECT


def load_index(refresh: bool, offline: bool) -> dict:
    path = eval_dir() / "index.json"
    if path.is_file() and not refresh:
        return json.loads(path.read_text())
    if offline:
        raise SystemExit(f"no cached index at {path} (run once without --offline)")
    req = urllib.request.Request(INDEX_URL, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        data = json.loads(resp.read())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return data


def wheel_version(filename: str) -> Version:
    return Version(filename.split("-")[1])


def select_wheels(index: dict, finals: bool) -> list[dict]:
    wheels = [f for f in index["files"] if f["filename"].endswith("-py3-none-any.whl") and not f.get("yanked")]
    wheels.sort(key=lambda f: wheel_version(f["filename"]))
    if finals:
        final = [f for f in wheels if not wheel_version(f["filename"]).is_prerelease]
        newest = wheels[-1]
        if wheel_version(newest["filename"]).is_prerelease:
            final.append(newest)
        wheels = final
    return wheels


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(entry: dict, offline: bool) -> Path:
    """The wheel, downloaded once; its sha256 must equal the index's digest (else deleted, error)."""
    want = entry["hashes"]["sha256"]
    path = eval_dir() / "wheels" / entry["filename"]
    if path.is_file():
        if sha256_file(path) == want:
            return path
        path.unlink()
    if offline:
        raise SystemExit(f"{entry['filename']} is not cached (run once without --offline)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with urllib.request.urlopen(entry["url"], timeout=120) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)
    got = sha256_file(tmp)
    if got != want:
        tmp.unlink()
        raise SystemExit(f"sha256 mismatch for {entry['filename']}: expected {want}, got {got}")
    os.replace(tmp, path)
    return path


def extract_tree(wheel: Path, version: str) -> Path:
    """The wheel's .py files under trees/<version> (extracted once, atomically)."""
    dest = eval_dir() / "trees" / version
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=dest.parent))
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            parts = name.split("/")
            if not name.endswith(".py") or name.startswith("/") or ".." in parts:
                continue
            target = tmp.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
    os.replace(tmp, dest)
    return dest


# --- ground truth: text helpers (no use of the tool's matcher) -----------------------------------

FENCE_RE = r"^\s*#\s*-{3,}\s*(?:%s)(?:\s*:\s*(?P<id>[^\s-][^\s]*?))?\s*-*\s*$"
CLOSER = re.compile(r"^\s*#\s*-{20,}\s*$")


@dataclass
class FencePair:
    start: int  # 1-based, opening fence
    end: int  # closing fence
    id: str | None


@dataclass
class SourceFile:
    """One file's lines, stripped keys, scopes and fence pairs (computed lazily)."""

    text: str
    tags: tuple[str, ...]
    lines: list[str] = field(init=False)
    keys: list[str] = field(init=False)
    _scopes: list[tuple[int, int, str]] | None = field(default=None, init=False)
    _pairs: tuple[list[FencePair], bool] | None = field(default=None, init=False)
    _compact: tuple[list[str], list[int]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.lines = self.text.splitlines()
        self.keys = [ln.strip() for ln in self.lines]

    def scope_at(self, line: int) -> str:
        """Qualname of the innermost def/class holding *line* after its first line ('' = module)."""
        if self._scopes is None:
            self._scopes = []
            try:
                tree = ast.parse(self.text)
            except (SyntaxError, ValueError):
                tree = None

            def visit(node: ast.AST, prefix: str) -> None:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        q = f"{prefix}.{child.name}" if prefix else child.name
                        start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                        self._scopes.append((start, child.end_lineno or child.lineno, q))
                        visit(child, q)
                    else:
                        visit(child, prefix)

            if tree is not None:
                visit(tree, "")
        best: tuple[int, int, str] | None = None
        for s, e, q in self._scopes:
            if s < line <= e and (best is None or s >= best[0]):
                best = (s, e, q)
        return best[2] if best else ""

    def fence_pairs(self) -> tuple[list[FencePair], bool]:
        """Fence pairs by position (own scanner) and whether the sequence is balanced."""
        if self._pairs is None:
            fence = re.compile(FENCE_RE % "|".join(re.escape(t) for t in self.tags))
            pairs: list[FencePair] = []
            balanced = True
            open_: tuple[int, int, str | None] | None = None
            for n, ln in enumerate(self.lines, 1):
                m = fence.match(ln)
                if not m and not (open_ and CLOSER.match(ln)):
                    continue
                indent = len(ln) - len(ln.lstrip())
                if open_ is None:
                    open_ = (n, indent, m["id"])
                    continue
                if indent != open_[1]:
                    balanced = False
                pairs.append(FencePair(open_[0], n, open_[2]))
                open_ = None
            if open_ is not None:
                balanced = False
            self._pairs = (pairs, balanced)
        return self._pairs

    def compact(self) -> tuple[list[str], list[int]]:
        """Keys with all whitespace removed and blank lines dropped, with their line numbers."""
        if self._compact is None:
            keys, nums = [], []
            for n, k in enumerate(self.keys, 1):
                if k:
                    keys.append("".join(k.split()))
                    nums.append(n)
            self._compact = (keys, nums)
        return self._compact

    def code_line(self, line: int, step: int) -> str | None:
        """The nearest non-blank, non-comment line from *line* in direction *step*, stripped."""
        while 1 <= line <= len(self.keys):
            k = self.keys[line - 1]
            if k and not k.startswith("#"):
                return k
            line += step
        return None


def find_all(keys: list[str], seq: list[str]) -> list[int]:
    """0-based indexes where *seq* occurs contiguously in *keys*."""
    if not seq:
        return []
    first, n = seq[0], len(seq)
    return [i for i, k in enumerate(keys) if k == first and keys[i:i + n] == seq]


def strip_tag_comment(line: str, tag: str) -> str:
    """*line* without the comment that carries *tag* (for inline tags)."""
    pos = line.find(tag)
    hash_pos = line.rfind("#", 0, pos) if pos >= 0 else -1
    return line[:hash_pos].strip() if hash_pos >= 0 else line.strip()


@dataclass
class BaseBlock:
    """A baseline block as the ground truth sees it."""

    file: str
    start: int
    end: int
    kind: str  # fenced | inline
    tag: str
    id: str | None
    raw: list[str]  # stripped lines, markers included
    body: list[str]  # stripped lines without the fences / without the tag comment
    scope: str
    before: str | None
    after: str | None
    truth: str = ""
    detail: str = ""
    where: str | None = None


def base_block(src: SourceFile, file: str, start: int, end: int, kind: str, tag: str, bid: str | None) -> BaseBlock:
    raw = src.keys[start - 1:end]
    if kind == "fenced":
        body = raw[1:-1]
    elif start == end:
        body = [strip_tag_comment(src.lines[start - 1], tag)]
    else:
        body = raw[1:]
    return BaseBlock(file, start, end, kind, tag, bid, raw, body, src.scope_at(start),
                     src.code_line(start - 1, -1), src.code_line(end + 1, 1))


class Tree:
    """B's .py files, read on demand."""

    def __init__(self, root: Path, tags: tuple[str, ...]) -> None:
        self.root = root
        self.tags = tags
        self.files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
        self._src: dict[str, SourceFile | None] = {}
        self._text: dict[str, str] = {}

    def text(self, rel: str) -> str | None:
        if rel not in self._text:
            try:
                self._text[rel] = (self.root / rel).read_bytes().decode("utf-8", "replace")
            except OSError:
                return None
        return self._text[rel]

    def source(self, rel: str) -> SourceFile | None:
        if rel not in self._src:
            text = self.text(rel)
            self._src[rel] = None if text is None else SourceFile(text, self.tags)
        return self._src[rel]


def classify(blocks: list[BaseBlock], a_unbalanced: set[str], tree: Tree, inline_tags: tuple[str, ...],
             a_files: set[str] | None = None) -> None:
    """Set ``truth`` (and ``detail``/``where``) on every baseline block from the raw texts.

    Passes, each over all still-unclassified blocks, so a stronger kind of
    evidence is never pre-empted by a weaker one of another block. A B line
    (opening fence / tagged line) is assigned to at most one baseline block.
    """
    used: set[tuple[str, int]] = set()  # (file, 1-based line) of B markers already assigned
    present = set(tree.files)
    had_candidates: set[int] = set()
    open_ = [i for i in range(len(blocks))]

    def run(step) -> None:
        nonlocal open_
        for i in open_:
            step(i, blocks[i])
        open_ = [i for i in open_ if not blocks[i].truth]

    def verbatim(same_file: bool, same_scope: bool):
        def step(i: int, b: BaseBlock) -> None:
            rels = [b.file] if same_file else [r for r in tree.files if r != b.file]
            probe = max(b.raw, key=len)
            for rel in rels:
                text = tree.text(rel)
                if text is None or probe not in text:
                    continue
                src = tree.source(rel)
                for h in find_all(src.keys, b.raw):
                    if same_file and (src.scope_at(h + 1) == b.scope) != same_scope:
                        continue
                    if (rel, h + 1) in used:
                        if same_file and same_scope:  # an identical copy in the same scope took it
                            had_candidates.add(i)
                        continue
                    used.add((rel, h + 1))
                    b.where = f"{rel}:{h + 1}"
                    renamed = (not same_file and a_files is not None and b.file not in present
                               and rel not in a_files and src.scope_at(h + 1) == b.scope)
                    if (same_file and same_scope) or renamed:  # a renamed file is followed
                        b.truth = "unchanged"
                        b.detail = "renamed file" if renamed else b.detail
                    else:
                        b.truth = "moved"
                        b.detail = ("same file, scope " + (src.scope_at(h + 1) or "<module>")) if same_file else "other file"
                    return
        return step

    run(verbatim(True, True))
    run(verbatim(True, False))
    run(lambda i, b: _comment_only(b, tree.source(b.file), used, inline_tags))
    run(lambda i, b: _tag_line_kept(b, tree.source(b.file), used))
    run(lambda i, b: _whitespace_only(b, tree.source(b.file), used))
    for how in ("id", "anchor", "shared-line"):
        run(lambda i, b, how=how: _fence_in_place(b, tree.source(b.file), used, how))
    run(lambda i, b: _inline_in_place(b, tree.source(b.file), used))
    run(verbatim(False, False))
    run(lambda i, b: _fence_moved_and_edited(b, tree, used))
    for i in open_:
        b = blocks[i]
        if i in had_candidates:
            b.truth, b.detail = "duplicate", "identical copies competed for fewer occurrences"
        else:
            b.truth, (b.detail, b.where) = "lost", _lost_kind(b, tree)
    # files with unbalanced fences: which lines form a block is not defined by the text
    for b in blocks:
        src = tree.source(b.file)
        b_unbalanced = src is not None and not src.fence_pairs()[1]
        if b.file in a_unbalanced or b_unbalanced:
            side = "A and B" if b.file in a_unbalanced and b_unbalanced else ("A" if b.file in a_unbalanced else "B")
            b.detail = f"text says {b.truth}" + (f" ({b.detail})" if b.detail else "") + f"; unbalanced fences in {side}"
            b.truth = "unbalanced-fences"


def _tagged(line: str, inline_tags: tuple[str, ...]) -> bool:
    return any(re.search(r"#.*" + re.escape(t), line) for t in inline_tags)


def _comment_only(b: BaseBlock, src: SourceFile | None, used: set, inline_tags: tuple[str, ...]) -> None:
    """Inline block: the marked code is unchanged in the same scope and still tagged; only the comment differs."""
    if src is None or b.kind != "inline":
        return
    code = [k for k in b.body if k and not k.startswith("#")]
    if not code:
        return
    if b.start == b.end:  # trailing tag: compare the code part of each line
        for n, line in enumerate(src.lines, 1):
            if (b.file, n) in used or not _tagged(line, inline_tags):
                continue
            tag = next(t for t in inline_tags if re.search(r"#.*" + re.escape(t), line))
            if strip_tag_comment(line, tag) == code[0] and src.scope_at(n) == b.scope:
                used.add((b.file, n))
                b.truth, b.where, b.detail = "comment-only", f"{b.file}:{n}", "same code, still tagged; tag or reason text changed"
                return
        return
    for h in find_all(src.keys, code):
        n = h  # 0-based index of the code line = 1-based line of the line above it
        while n >= 1 and src.keys[n - 1].startswith("#"):
            if _tagged(src.keys[n - 1], inline_tags) and (b.file, n) not in used and src.scope_at(n) == b.scope:
                used.add((b.file, n))
                b.truth, b.where, b.detail = "comment-only", f"{b.file}:{n}", "same code, still tagged; tag or reason text changed"
                return
            n -= 1


def _tag_line_kept(b: BaseBlock, src: SourceFile | None, used: set) -> None:
    """Whole-line inline tag: the tag comment line itself is still there in the same scope, the code differs."""
    if src is None or b.kind != "inline" or b.start == b.end:
        return
    for h in find_all(src.keys, b.raw[:1]):
        if (b.file, h + 1) not in used and src.scope_at(h + 1) == b.scope:
            used.add((b.file, h + 1))
            b.truth, b.where, b.detail = "modified", f"{b.file}:{h + 1}", "same tag comment line, other code below it"
            return


def _whitespace_only(b: BaseBlock, src: SourceFile | None, used: set) -> None:
    if src is None:
        return
    keys, nums = src.compact()
    want = ["".join(k.split()) for k in b.raw if k]
    for idx in find_all(keys, want):
        line = nums[idx]
        if (b.file, line) not in used and src.scope_at(line) == b.scope:
            used.add((b.file, line))
            b.truth, b.where, b.detail = "whitespace-only", f"{b.file}:{line}", "equal once whitespace and blank lines are ignored"
            return


def _shares_line(a: list[str], b: list[str]) -> bool:
    """At least one non-trivial code line (12+ chars, not a comment) in common."""
    return bool({k for k in a if len(k) >= 12 and not k.startswith("#")} & {k for k in b if len(k) >= 12})


def _anchored(b: BaseBlock, src: SourceFile, p: FencePair, min_len: int = 1) -> bool:
    before, after = src.code_line(p.start - 1, -1), src.code_line(p.end + 1, 1)
    return bool((b.before and len(b.before) >= min_len and before == b.before)
                or (b.after and len(b.after) >= min_len and after == b.after))


def _set_fence_truth(b: BaseBlock, src: SourceFile, rel: str, p: FencePair, how: str, moved: bool) -> None:
    body = src.keys[p.start:p.end - 1]
    b.where = f"{rel}:{p.start}"
    same_ws = ["".join(k.split()) for k in body if k] == ["".join(k.split()) for k in b.body if k]
    if moved and (body == b.body or same_ws):
        b.truth, b.detail = "moved", f"same body{' up to whitespace' if body != b.body else ''}, fences re-spelled"
    elif body == b.body:
        b.truth, b.detail = "refenced", "same body between re-spelled fences"
    elif same_ws:
        b.truth, b.detail = "whitespace-only", "same body up to whitespace, fences re-spelled"
    elif moved:
        b.truth, b.detail = "moved+modified", f"fence pair {how}, scope {src.scope_at(p.start) or '<module>'}"
    else:
        b.truth, b.detail = "modified", f"fence pair {how}"


def _fence_in_place(b: BaseBlock, src: SourceFile | None, used: set, how: str) -> None:
    """Fenced block: a fence pair of the same file with the same id, or in the same scope at the same place."""
    if src is None or b.kind != "fenced":
        return
    for p in src.fence_pairs()[0]:
        if (b.file, p.start) in used:
            continue
        same_scope = src.scope_at(p.start) == b.scope
        if how == "id":
            ok = b.id is not None and p.id == b.id
        elif how == "anchor":
            ok = same_scope and _anchored(b, src, p)
        else:
            ok = same_scope and _shares_line(b.body, src.keys[p.start:p.end - 1])
        if ok:
            used.add((b.file, p.start))
            _set_fence_truth(b, src, b.file, p, "with the same id" if how == "id" else f"in the same scope ({how})",
                             moved=not same_scope)
            return


def _inline_in_place(b: BaseBlock, src: SourceFile | None, used: set) -> None:
    """Inline block: a line with the same tag, in the same scope, next to the same code line."""
    if src is None or b.kind != "inline":
        return
    needle = re.compile(r"#\s*" + re.escape(b.tag))
    for n, line in enumerate(src.lines, 1):
        if (b.file, n) in used or not needle.search(line) or src.scope_at(n) != b.scope:
            continue
        if b.start == b.end:
            before, after = src.code_line(n - 1, -1), src.code_line(n + 1, 1)
        else:  # a tag comment line marks the next code line
            target = next((m for m in range(n + 1, len(src.keys) + 1) if src.keys[m - 1] and not src.keys[m - 1].startswith("#")), n)
            before, after = src.code_line(n - 1, -1), src.code_line(target + 1, 1)
        if (b.before is not None and before == b.before) or (b.after is not None and after == b.after):
            used.add((b.file, n))
            b.truth, b.where, b.detail = "modified", f"{b.file}:{n}", "same tag anchored at the same code line"
            return


def _fence_moved_and_edited(b: BaseBlock, tree: Tree, used: set) -> None:
    """Fenced block: a fence pair elsewhere (other scope or file) anchored at a 12+ char code line and sharing a code line."""
    if b.kind != "fenced":
        return
    for rel in [b.file, *(r for r in tree.files if r != b.file)]:
        text = tree.text(rel)
        if text is None or not any(a and a in text for a in (b.before, b.after)):
            continue
        src = tree.source(rel)
        for p in src.fence_pairs()[0]:
            if (rel, p.start) in used:
                continue
            if _anchored(b, src, p, 12) and _shares_line(b.body, src.keys[p.start:p.end - 1]):
                used.add((rel, p.start))
                _set_fence_truth(b, src, rel, p, "anchored at the same code line" + ("" if rel == b.file else " in another file"),
                                 moved=True)
                return


def _lost_kind(b: BaseBlock, tree: Tree) -> tuple[str, str | None]:
    body = [k for k in b.body if k and not k.startswith("#")]
    if not body:
        return "code-removed (no code in the block)", None
    src = tree.source(b.file)
    if src is not None:
        hits = find_all([k for k in src.keys if k], body)
        if hits:
            return "markers-removed", b.file
    probe = max(body, key=len)
    if len(probe) >= 12:
        for rel in tree.files:
            text = tree.text(rel)
            if rel != b.file and text is not None and probe in text:
                if find_all([k for k in tree.source(rel).keys if k], body):
                    return "unmarked-elsewhere", rel
    return "code-removed", None


# --- the evaluation ----------------------------------------------------------------------------

@dataclass
class Row:
    pair: str
    file: str
    line: int
    kind: str
    tag: str
    id: str | None
    tool: str
    tool_detail: str
    truth: str
    truth_detail: str
    truth_where: str | None


def evaluate_pair(a_root: Path, b_root: Path, label: str, config: MarkerConfig, tmp: Path) -> tuple[list[Row], dict]:
    snap = take_snapshot(a_root, None, config)
    snap_path = tmp / f"{label.split(' ')[0]}.json"
    snap.write(snap_path)
    report = check_markers(b_root, snap_path, config)
    tool = {(r.file, r.start_line): r for r in report.blocks if r.status != "added"}
    a_sources: dict[str, SourceFile] = {}
    a_unbalanced: set[str] = set()
    blocks: list[BaseBlock] = []
    for blk in snap.blocks:
        if blk.file not in a_sources:
            text = (a_root / blk.file).read_bytes().decode("utf-8", "replace")
            a_sources[blk.file] = SourceFile(text, config.tags)
            if not a_sources[blk.file].fence_pairs()[1]:
                a_unbalanced.add(blk.file)
        blocks.append(base_block(a_sources[blk.file], blk.file, blk.start_line, blk.end_line, blk.kind, blk.tag, blk.id))
    a_files = {p.relative_to(a_root).as_posix() for p in a_root.rglob("*.py")}
    classify(blocks, a_unbalanced, Tree(b_root, config.tags), config.inline_tags, a_files)
    rows = []
    for b in blocks:
        r = tool.get((b.file, b.start))
        status = r.status if r else "missing-from-report"
        detail = ""
        if r is not None:
            bits = [r.lost_kind or ""]
            if r.new_file:
                bits.append(f"now {r.new_file}:{r.new_start_line}")
            if r.similarity is not None and r.similarity < 1:
                bits.append(f"sim {r.similarity:.2f}")
            detail = ", ".join(x for x in bits if x)
        rows.append(Row(label, b.file, b.start, b.kind, b.tag, b.id, status, detail, b.truth, b.detail, b.where))
    info = {"pair": label, "baseline_blocks": len(snap.blocks), "added": report.counts()["added"],
            "tool": dict(Counter(r.tool for r in rows)), "truth": dict(Counter(r.truth for r in rows)),
            "problems_in_B": sum(p.severity == "error" for p in report.problems)}
    return rows, info


def agrees(tool: str, truth: str) -> bool:
    """Ambiguous truths accept any status; moved+modified accepts any flagged status."""
    if truth in AMBIGUOUS:
        return True
    if truth == "moved+modified":
        return tool in FLAGGED
    return {"unchanged": "intact"}.get(truth, truth) == tool


def metrics(rows: list[Row]) -> dict:
    def rate(pred, subset) -> tuple[float | None, int, int]:
        sel = [r for r in rows if subset(r)]
        hit = sum(1 for r in sel if pred(r))
        return (hit / len(sel) if sel else None), hit, len(sel)

    flagged = lambda r: r.tool in FLAGGED  # noqa: E731
    out = {}
    for cls in ("lost", "moved", "modified", "moved+modified"):
        out[f"recall_{cls}"] = rate(flagged, lambda r, c=cls: r.truth == c)
    out["fp_unchanged"] = rate(lambda r: r.tool != "intact", lambda r: r.truth == "unchanged")
    # sensitivity: also count blocks of files with unbalanced fences whose text is unchanged
    out["fp_unchanged_incl_unbalanced"] = rate(
        lambda r: r.tool != "intact",
        lambda r: r.truth == "unchanged" or (r.truth == "unbalanced-fences" and r.truth_detail.startswith("text says unchanged")))
    out["agreement"] = rate(lambda r: agrees(r.tool, r.truth), lambda r: r.truth not in AMBIGUOUS)
    return out


def bench_entries(m: dict, seconds: float) -> list[dict]:
    rows = []

    def add(metric: str, key: str, baseline_value: float) -> None:
        value, hit, n = m[key]
        if value is None:
            return
        rows.append({"name": NAME, "metric": metric, "value": round(value, 4),
                     "baseline": "acceptance bound", "baseline_value": baseline_value,
                     "ratio": round(value / baseline_value, 4), "unit": "fraction", "count": hit, "n": n})

    add("false-positive rate on unchanged blocks", "fp_unchanged", 0.02)
    add("false-positive rate on unchanged blocks, incl. files with unbalanced fences", "fp_unchanged_incl_unbalanced", 0.02)
    add("recall of lost blocks", "recall_lost", 1.0)
    add("recall of moved blocks", "recall_moved", 1.0)
    add("recall of modified blocks", "recall_modified", 1.0)
    add("recall of moved+modified blocks", "recall_moved+modified", 1.0)
    value, hit, n = m["agreement"]
    if value is not None:
        rows.append({"name": NAME, "metric": "status agreement, unambiguous blocks", "value": round(value, 4),
                     "baseline": None, "baseline_value": None, "ratio": None, "unit": "fraction", "count": hit, "n": n})
    rows.append({"name": NAME, "metric": "wall time of the evaluation (warm cache)", "value": round(seconds, 2), "baseline": None,
                 "baseline_value": None, "ratio": None, "unit": "s"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write {'benchmarks': [...], 'details': {...}}")
    ap.add_argument("--finals", action="store_true", help="final releases + the newest rc (default: every wheel)")
    ap.add_argument("--refresh-index", action="store_true", help="re-read the PyPI index (the chain may grow)")
    ap.add_argument("--offline", action="store_true", help="never touch the network")
    ap.add_argument("--show-ambiguous", action="store_true", help="also print every ambiguous block")
    args = ap.parse_args(argv)

    wheels = select_wheels(load_index(args.refresh_index, args.offline), args.finals)
    trees = []
    for entry in wheels:
        version = str(wheel_version(entry["filename"]))
        trees.append((version, extract_tree(fetch_wheel(entry, args.offline), version)))
    config = MarkerConfig()
    start = time.perf_counter()
    rows: list[Row] = []
    pairs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="markers-history-") as tmp:
        for (va, ta), (vb, tb) in zip(trees, trees[1:], strict=False):
            r, info = evaluate_pair(ta, tb, f"{va} -> {vb}", config, Path(tmp))
            rows.extend(r)
            pairs.append(info)
    seconds = time.perf_counter() - start
    m = metrics(rows)

    print(f"releases: {len(trees)} ({trees[0][0]} .. {trees[-1][0]}), pairs: {len(pairs)}, "
          f"baseline blocks: {len(rows)}, eval {seconds:.1f} s")
    print(f"{'pair':26} {'blocks':>6} {'added':>5}  truth | tool")
    for p in pairs:
        truth = " ".join(f"{k}={v}" for k, v in sorted(p["truth"].items()))
        tool = " ".join(f"{k}={v}" for k, v in sorted(p["tool"].items()))
        print(f"{p['pair']:26} {p['baseline_blocks']:>6} {p['added']:>5}  {truth} | {tool}")
    table = Counter((r.truth, r.tool) for r in rows)
    print("\ntruth \\ tool      " + " ".join(f"{s:>9}" for s in ("intact", *FLAGGED)))
    for t in ("unchanged", "moved", "modified", "moved+modified", "lost", *AMBIGUOUS):
        print(f"{t:18}" + " ".join(f"{table[(t, s)]:>9}" for s in ("intact", *FLAGGED)))
    print()
    for key, text in (("fp_unchanged", "false-positive rate on unchanged (bound 0.02)"),
                      ("fp_unchanged_incl_unbalanced", "  ... incl. files with unbalanced fences"),
                      ("recall_lost", "recall of lost (bound 1.0)"), ("recall_moved", "recall of moved (bound 1.0)"),
                      ("recall_modified", "recall of modified (bound 1.0)"),
                      ("recall_moved+modified", "recall of moved+modified (bound 1.0)"),
                      ("agreement", "status agreement (unambiguous)")):
        value, hit, n = m[key]
        print(f"{text:48} {'n/a' if value is None else f'{value:.4f}'}  ({hit}/{n})")
    disagreements = [r for r in rows if not agrees(r.tool, r.truth)]
    ambiguous = [r for r in rows if r.truth in AMBIGUOUS]
    print(f"\ndisagreements ({len(disagreements)}):")
    for r in disagreements:
        print(f"  {r.pair:26} {r.file}:{r.line} [{r.kind} {r.tag}] tool={r.tool} ({r.tool_detail}) "
              f"truth={r.truth} ({r.truth_detail}; {r.truth_where})")
    print(f"ambiguous ({len(ambiguous)}): " + ", ".join(f"{k}={v}" for k, v in Counter(r.truth for r in ambiguous).items()))
    if args.show_ambiguous:
        for r in ambiguous:
            print(f"  {r.pair:26} {r.file}:{r.line} [{r.kind} {r.tag}] tool={r.tool} ({r.tool_detail}) "
                  f"truth={r.truth} ({r.truth_detail}; {r.truth_where})")
    if args.json:
        details = {"releases": [v for v, _ in trees], "pairs": pairs,
                   "confusion": [{"truth": t, "tool": s, "count": c} for (t, s), c in sorted(table.items())],
                   "disagreements": [asdict(r) for r in disagreements],
                   "ambiguous": [asdict(r) for r in ambiguous]}
        args.json.write_text(json.dumps({"benchmarks": bench_entries(m, seconds), "details": details}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
