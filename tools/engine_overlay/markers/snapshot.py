"""Snapshots: every marked block of a tree, recorded so an upgrade can be checked.

A block is identified by its normalised body (whitespace-insensitive, blank
lines dropped) and its hash, located by file, enclosing qualname and lines, and
anchored by the nearest code lines around it. Output is deterministic JSON.
"""

from __future__ import annotations

import ast
import bisect
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import OverlayError
from ..locking import atomic_write
from ..paths import check_relpath, read_below, safe_join
from .grammar import Event, Grammar, MarkerConfig, Problem, comment_start, pair_fences, scan_events
from .scancache import ScanCache

SNAPSHOT_FORMAT = "engine-overlay-markers"
SNAPSHOT_VERSION = 1
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".nox", ".tox"}
ANCHOR_LINES = 2
RG_CHUNK = 2000


@dataclass
class InlineTag:
    line: int
    tag: str
    text: str


@dataclass
class Block:
    """One marked block. ``start_line`` is the opening fence (or the tag line for inline tags)."""

    file: str
    kind: str  # "fenced" | "inline"
    tag: str
    start_line: int
    end_line: int
    qualname: str
    body: list[str]
    hash: str
    id: str | None = None
    anchors_before: list[str] = field(default_factory=list)
    anchors_after: list[str] = field(default_factory=list)
    inline_tags: list[InlineTag] = field(default_factory=list)
    enclosing_hash: str | None = None

    @property
    def label(self) -> str:
        return self.id or f"{self.qualname or '<module>'}"


@dataclass
class Snapshot:
    config: MarkerConfig
    blocks: list[Block]
    problems: list[Problem] = field(default_factory=list)
    # Not serialised: where the snapshot was taken, for the compare step's searches.
    root: Path | None = field(default=None, repr=False, compare=False)
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)  # the scanned texts
    raw: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)  # their bytes, as read
    # the tree's listing on first use, and whether one file is in it without listing the tree
    lister: Callable[[], list[str]] | None = field(default=None, repr=False, compare=False)
    member: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._files: list[str] | None = None
        self._present: set[str] | None = None

    @property
    def files(self) -> list[str]:
        """Every file of the scanned tree matching the globs (not only those with markers), listed
        on first use: a check that does not search the tree for lost code never walks it."""
        if self._files is None:
            self._files = self.lister() if self.lister is not None else []
        return self._files

    @files.setter
    def files(self, value: list[str]) -> None:
        self._files, self._present = list(value), None

    def list_lazily(self, lister: Callable[[], list[str]], member: Callable[[str], bool]) -> None:
        self.lister, self.member, self._files, self._present = lister, member, None, None

    def listed(self) -> bool:
        """Whether there is a listing of the scanned tree (not for a snapshot read from a file)."""
        return self.lister is not None or bool(self.files)

    def holds(self, rel: str) -> bool:
        """``rel in self.files``, decided for one file without listing the whole tree."""
        if self._files is None and self.member is not None:
            return self.member(rel)
        if self._present is None:
            self._present = set(self.files)
        return rel in self._present

    def read_source(self, rel: str) -> str | None:
        """Text of a scanned file, from memory or from the root it was taken in."""
        if rel in self.sources:
            return self.sources[rel]
        if self.root is None:
            return None
        try:
            return safe_join(self.root, rel).read_bytes().decode("utf-8", "replace")
        except OSError:
            return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "config": self.config.to_dict(),
            "blocks": [asdict(b) for b in self.blocks],
            "problems": [asdict(p) for p in self.problems],
        }

    def write(self, path: Path) -> None:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        try:
            atomic_write(path, text)
        except OSError as e:
            raise OverlayError(f"cannot write the snapshot: {e.strerror}", path=path,
                               hint="choose a writable path with -o") from None


# The JSON types of a snapshot's entries: a type, None for null, a tuple for either, [type] for a list.
BLOCK_TYPES = {"file": str, "kind": str, "tag": str, "start_line": int, "end_line": int, "qualname": str,
               "body": [str], "hash": str, "id": (str, None), "anchors_before": [str], "anchors_after": [str],
               "inline_tags": [dict], "enclosing_hash": (str, None)}
INLINE_TYPES = {"line": int, "tag": str, "text": str}
PROBLEM_TYPES = {"file": str, "line": (int, None), "message": str, "severity": str, "hint": (str, None)}


def _fits(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return any(_fits(value, k) for k in kind)
    if isinstance(kind, list):
        return isinstance(value, list) and all(_fits(v, kind[0]) for v in value)
    if kind is None:
        return value is None
    return isinstance(value, kind) and (kind is not int or not isinstance(value, bool))


def _checker(kind: Any) -> Callable[[Any], bool]:
    """:func:`_fits` for one *kind*, decided once: a snapshot holds thousands of entries."""
    if isinstance(kind, tuple):
        options = [_checker(k) for k in kind]
        return lambda value: any(f(value) for f in options)
    if kind == [str]:
        return lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(kind, list):
        item = _checker(kind[0])
        return lambda value: isinstance(value, list) and all(map(item, value))
    if kind is None:
        return lambda value: value is None
    if kind is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    return lambda value: isinstance(value, kind)


_CHECKS: dict[int, tuple[frozenset[str], dict[str, Callable[[Any], bool]]]] = {}


def _entry(cls, data: Any, types: dict[str, Any], what: str) -> dict[str, Any]:
    """*data* checked against *types* and *cls*'s required fields; TypeError names *what*."""
    if not isinstance(data, dict):
        raise TypeError(f"{what} is not an object")
    if id(types) not in _CHECKS:
        _CHECKS[id(types)] = (frozenset(f.name for f in fields(cls) if f.default is MISSING
                                        and f.default_factory is MISSING),
                              {key: _checker(kind) for key, kind in types.items()})
    required, checks = _CHECKS[id(types)]
    if data.keys() <= checks.keys() and required <= data.keys() and all(checks[k](v) for k, v in data.items()):
        return data
    bad = sorted(set(data) - set(types)) + sorted(required - set(data))
    bad += [k for k, v in data.items() if k in types and not _fits(v, types[k])]
    raise TypeError(f"{what}: field {bad[0]!r} is unknown, missing or of the wrong type")


def _named(rel: str, what: str) -> str:
    """A file name from the snapshot, inside the tree it describes (it is read from there)."""
    try:
        return check_relpath(rel)
    except OverlayError as e:
        raise TypeError(f"{what}: {e.message}") from None


def read_snapshot(path: Path) -> Snapshot:
    """Load a snapshot file; any damage (bad JSON, deep nesting, wrong types, a file name
    outside the tree) is one OverlayError naming the file and the entry."""
    hint = "re-create it with `overlay markers snapshot -o FILE`"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OverlayError("snapshot file not found", path=path, hint=hint) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else f"invalid JSON: {e}"
        raise OverlayError(f"not a readable snapshot ({reason})", path=path, hint=hint) from None
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise OverlayError(f"not a marker snapshot (missing \"format\": \"{SNAPSHOT_FORMAT}\")", path=path, hint=hint)
    if data.get("version") != SNAPSHOT_VERSION:
        raise OverlayError(f"unsupported snapshot version {data.get('version')!r} (expected {SNAPSHOT_VERSION})", path=path, hint=hint)
    try:
        config = MarkerConfig.from_dict(data.get("config", {}), str(path))
        if not isinstance(data.get("blocks"), list) or not isinstance(data.get("problems", []), list):
            raise TypeError("'blocks' and 'problems' must be lists")
        blocks = []
        for n, raw in enumerate(data["blocks"], 1):
            what = f"block #{n}"
            d = _entry(Block, raw, BLOCK_TYPES, what)
            _named(d["file"], what)
            tags = [InlineTag(**_entry(InlineTag, t, INLINE_TYPES, f"{what}, inline tag #{k}"))
                    for k, t in enumerate(d.get("inline_tags", []), 1)]
            blocks.append(Block(**{**d, "inline_tags": tags}))
        problems = []
        for n, raw in enumerate(data.get("problems", []), 1):
            d = _entry(Problem, raw, PROBLEM_TYPES, f"problem #{n}")
            _named(d["file"], f"problem #{n}")
            problems.append(Problem(**d))
    except TypeError as e:
        raise OverlayError(f"malformed snapshot: {e}", path=path, hint=hint) from None
    return Snapshot(config, blocks, problems)


# --- normalisation -------------------------------------------------------------------------

def normalise(lines: Iterable[str]) -> list[str]:
    """Whitespace-insensitive body: internal runs collapsed, blank lines dropped."""
    return [" ".join(ln.split()) for ln in lines if ln.strip()]


def body_hash(body: list[str]) -> str:
    key = "\n".join(ln.replace(" ", "") for ln in body)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _is_code(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


# --- ast: scopes and string ranges -------------------------------------------------------------

@dataclass
class Scope:
    start: int  # first decorator or def line
    end: int
    qualname: str
    is_function: bool


def _scopes(tree: ast.Module, event_lines: set[int]) -> tuple[list[Scope], set[int]]:
    """Function/class scopes, and which *event_lines* lie inside a multi-line string.

    Only statements are walked (a full node walk costs more than the parse);
    expressions are walked only for the few statements that span a marker line.
    """
    scopes: list[Scope] = []
    spanning: list[ast.stmt] = []
    ordered = sorted(event_lines)

    def events_in(first: int, last: int) -> list[int]:
        """Event lines in first < line <= last (bisect: a scan per statement would be quadratic)."""
        return ordered[bisect.bisect_right(ordered, first):bisect.bisect_right(ordered, last)]

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                q = f"{prefix}.{node.name}" if prefix else node.name
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                scopes.append(Scope(start, node.end_lineno or node.lineno, q,
                                    not isinstance(node, ast.ClassDef)))
                visit(node.body, q)
                continue
            nested = False
            for attr in ("body", "orelse", "finalbody"):
                sub = getattr(node, attr, None)
                if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                    visit(sub, prefix)
                    nested = True
            for h in getattr(node, "handlers", ()) or ():
                visit(h.body, prefix)
            for case in getattr(node, "cases", ()) or ():
                visit(case.body, prefix)
                nested = True
            if not nested and node.end_lineno and node.end_lineno > node.lineno:
                if events_in(node.lineno, node.end_lineno):
                    spanning.append(node)

    visit(tree.body, "")
    in_string: set[int] = set()
    for stmt in spanning:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes)) and n.end_lineno and n.end_lineno > n.lineno:
                in_string.update(events_in(n.lineno, n.end_lineno))
    return scopes, in_string


def _enclosing_finder(scopes: list[Scope]):
    """``find(fence_line, first_code)``: the innermost scope opened before *fence_line* that
    reaches *first_code*, for queries in line order. Scopes nest, so one stack swept down the
    file answers each query in O(depth) — a scan of every scope per block would be quadratic."""
    order = sorted(scopes, key=lambda s: s.start)  # stable: an outer scope before an inner one on its line
    stack: list[Scope] = []
    pending = iter(order)
    nxt = next(pending, None)

    def find(fence_line: int, first_code: int) -> Scope | None:
        nonlocal nxt
        while nxt is not None and nxt.start < fence_line:
            while stack and stack[-1].end < nxt.start:
                stack.pop()
            stack.append(nxt)
            nxt = next(pending, None)
        while stack and stack[-1].end < fence_line:
            stack.pop()
        return next((s for s in reversed(stack) if s.end >= first_code), None)

    return find


# --- scanning one file -------------------------------------------------------------------------

def scan_text(text: str, file: str, config: MarkerConfig, grammar: Grammar | None = None) -> tuple[list[Block], list[Problem]]:
    """All blocks and grammar problems of one file's text (*file* is its report name)."""
    grammar = grammar or Grammar.compile(config)
    lines = text.splitlines()
    events = scan_events(lines, grammar)
    if not any(e.kind in ("fence", "inline") for e in events):
        return [], []
    problems: list[Problem] = []
    scopes: list[Scope] = []
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as e:
        problems.append(Problem(file, getattr(e, "lineno", None), f"not valid Python, enclosing functions unknown: {e.msg if isinstance(e, SyntaxError) else e}", severity="warning"))
    else:
        scopes, in_string = _scopes(tree, {e.line for e in events})
        if in_string:
            events = [e for e in events if e.line not in in_string]
    raw, loose, pair_problems = pair_fences(events, file)
    problems.extend(pair_problems)

    code_lines = [n for n, ln in enumerate(lines, 1) if _is_code(ln)]
    marked: set[int] = set()
    spans: list[tuple[int, int, str, str | None, str, list[Event]]] = []
    for rb in raw:
        marked.update(range(rb.start_line, rb.end_line + 1))
        spans.append((rb.start_line, rb.end_line, "fenced", rb.id, rb.tag, rb.inline))
    for ev in loose:
        if ev.whole_line:
            at = bisect.bisect_right(code_lines, ev.line)
            target = code_lines[at] if at < len(code_lines) else None
            if target is None:
                problems.append(Problem(file, ev.line, f"inline tag '{ev.tag}' does not precede any code line", severity="warning"))
                continue
            spans.append((ev.line, target, "inline", None, ev.tag, [ev]))
            # the lines between are comments or blanks, which neither anchors nor scope hashes
            # use: marking only these two keeps a run of tag lines linear
            marked.update((ev.line, target))
        else:
            spans.append((ev.line, ev.line, "inline", None, ev.tag, [ev]))
            marked.add(ev.line)

    scope_hashes: dict[str, str] = {}
    blocks: list[Block] = []
    anchors = [n for n in code_lines if n not in marked]  # unmarked code lines, found by bisect
    enclosing = _enclosing_finder(scopes)
    for start, end, kind, bid, tag, inl in sorted(spans, key=lambda s: s[0]):
        if kind == "fenced":
            body_lines = lines[start:end - 1]
            first_code = next((start + 1 + i for i, ln in enumerate(body_lines) if _is_code(ln)), start)
            tags = [InlineTag(e.line, e.tag, e.text) for e in inl]
        else:
            ev = inl[0]
            code = lines[end - 1]
            if not ev.whole_line:
                code = _strip_comment(code)
            body_lines = [code]
            first_code = end
            tags = [InlineTag(ev.line, ev.tag, ev.text)]
        body = normalise(body_lines)
        scope = enclosing(start, first_code)
        before, after = bisect.bisect_left(anchors, start), bisect.bisect_right(anchors, end)
        blocks.append(Block(
            file=file, kind=kind, tag=tag, start_line=start, end_line=end,
            qualname=scope.qualname if scope else "", body=body, hash=body_hash(body), id=bid,
            anchors_before=_anchors(lines, reversed(anchors[max(0, before - ANCHOR_LINES):before])),
            anchors_after=_anchors(lines, anchors[after:after + ANCHOR_LINES]),
            inline_tags=tags,
            enclosing_hash=_scope_hash(lines, scope, marked, scope_hashes) if scope and scope.is_function else None,
        ))
    return blocks, problems


def _strip_comment(line: str) -> str:
    if "#" not in line:
        return line
    pos = comment_start(line)
    return line[:pos] if pos >= 0 else line


def _anchors(lines: list[str], numbers: Iterable[int]) -> list[str]:
    return [" ".join(lines[n - 1].split()) for n in numbers]


def _scope_hash(lines: list[str], scope: Scope, marked: set[int], cache: dict[str, str]) -> str:
    """Hash of the enclosing def without its marked lines and comments: upstream's part of it."""
    key = f"{scope.start}:{scope.qualname}"
    if key not in cache:
        own = normalise(_strip_comment(lines[i - 1]) for i in range(scope.start, scope.end + 1) if i not in marked)
        cache[key] = body_hash(own)
    return cache[key]


# --- scanning a tree -----------------------------------------------------------------------------

def _glob_matcher(globs: tuple[str, ...]):
    """A predicate on root-relative posix paths; ``*.ext`` globs take a fast suffix test."""
    suffixes = tuple(g[1:] for g in globs if g.startswith("*") and not any(c in g[1:] for c in "*?[/"))
    others = [(re.compile(fnmatch.translate(g)), "/" in g) for g in globs if g[1:] not in suffixes or g[0] != "*"]

    def match(rel: str) -> bool:
        if suffixes and rel.endswith(suffixes):
            return True
        name = rel.rsplit("/", 1)[-1]
        return any(p.match(rel if full else name) for p, full in others)

    return match


def list_files(root: Path, paths: list[str] | None, config: MarkerConfig) -> list[str]:
    """Files under *root* (or under each of *paths*) matching the configured globs, as sorted posix paths relative to root."""
    match = _glob_matcher(config.globs)
    root_s = os.path.abspath(root)
    out: list[str] = []

    def walk(d: str, prefix: str) -> None:
        try:
            it = os.scandir(d)
        except OSError:
            return
        with it:
            for e in it:
                rel = prefix + e.name
                if e.is_dir(follow_symlinks=False):
                    if e.name not in SKIP_DIRS:
                        walk(e.path, rel + "/")
                elif match(rel) and e.is_file(follow_symlinks=False):  # a link may point out of the tree
                    out.append(rel)

    if not paths:
        walk(root_s, "")
    else:
        for p in paths:
            full = os.path.normpath(p if os.path.isabs(p) else os.path.join(root_s, p))
            rel = os.path.relpath(full, root_s).replace(os.sep, "/")
            if rel.startswith("../"):
                raise OverlayError(f"path is outside the root: {p}", path=full, hint=f"paths must lie under {root_s}")
            if not os.path.exists(full):
                raise OverlayError(f"path not found: {p}", path=full, hint=f"paths are relative to the root {root_s}")
            if os.path.isdir(full):
                walk(full, "" if rel == "." else rel + "/")
            else:
                out.append(rel)
    return sorted(set(out))


def find_rg() -> str | None:
    """The ripgrep binary (None: not installed). First the one the `ripgrep` dependency installs
    beside this Python (a venv's bin/ is not on PATH when `overlay` is run by its full path, a
    `pip install --user` puts it in the user scheme's bin/), then `rg` on PATH."""
    import sys
    import sysconfig

    places = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable) if sys.executable else None]
    try:
        places.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    except KeyError:
        pass
    for directory in dict.fromkeys(p for p in places if p):
        found = shutil.which("rg", path=directory)
        if found:
            return found
    return shutil.which("rg")


# Below this many files, filtering them in Python is cheaper than starting rg.
RG_MIN_FILES = 64


def _rg_filter(root: str, files: list[str], needles: tuple[bytes, ...]) -> set[str] | None:
    """Files containing any needle, via ripgrep when it is installed (None: use Python)."""
    rg = find_rg()
    if rg is None:
        return None
    args = [rg, "--no-config", "--files-with-matches", "--null", "--fixed-strings", "--text",
            "--no-ignore", "--hidden", "--encoding", "none", "--no-messages"]
    for n in needles:
        args += ["-e", n.decode()]
    hits: set[str] = set()
    for i in range(0, len(files), RG_CHUNK):
        proc = subprocess.run([*args, "--", *files[i:i + RG_CHUNK]], cwd=root, capture_output=True)
        if proc.returncode not in (0, 1):
            return None
        hits.update(p.decode("utf-8", "surrogateescape") for p in proc.stdout.split(b"\0") if p)
    return hits


def _python_filter(root: str, files: list[str], needles: tuple[bytes, ...]) -> set[str]:
    hits: set[str] = set()
    for rel in files:
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        for n in needles:
            if n in data:
                hits.add(rel)
                break
    return hits


def _rg_walk(root: str, config: MarkerConfig) -> set[str] | None:
    """The files ``list_files(root, None, config)`` lists that contain a needle, from one ripgrep
    run that walks the tree itself (None: no rg, or it failed; then list and filter as before).

    rg walks as :func:`list_files` does (hidden files, no ignore files, symlinks not followed,
    SKIP_DIRS left out); globs other than ``*.ext`` are not handed to rg (its glob syntax is not
    fnmatch's): rg then reads every file, and each hit is checked with the configured globs."""
    rg = find_rg()
    if rg is None:
        return None
    args = [rg, "--no-config", "--files-with-matches", "--null", "--fixed-strings", "--text",
            "--no-ignore", "--hidden", "--encoding", "none", "--no-messages"]
    for n in config.needles():
        args += ["-e", n.decode()]
    if all(_suffix_glob(g) for g in config.globs):
        for g in config.globs:
            args += ["--glob", g]
    for name in sorted(SKIP_DIRS):
        args += ["--glob", f"!{name}/"]  # a trailing slash: directories of that name only
    try:
        proc = subprocess.run(args, cwd=root, capture_output=True)
    except OSError:
        return None
    if proc.returncode not in (0, 1):  # 2: some file could not be read; the slow path says which
        return None
    match = _glob_matcher(config.globs)
    hits: set[str] = set()
    for raw in proc.stdout.split(b"\0"):
        rel = raw.decode("utf-8", "surrogateescape").removeprefix("./")
        if rel and match(rel) and not any(part in SKIP_DIRS for part in rel.split("/")[:-1]):
            hits.add(rel)
    return hits


def _suffix_glob(glob: str) -> bool:
    return glob.startswith("*") and len(glob) > 1 and not any(c in glob[1:] for c in "*?[]{}!\\/")


def take_snapshot(
    root: Path, paths: list[str] | None = None, config: MarkerConfig | None = None,
    *, use_rg: bool | None = None, cache: ScanCache | None = None,
) -> Snapshot:
    """Record every marked block under *root*.

    Files are pre-filtered by a bytes search for the tag words (ripgrep when
    installed and *use_rg* is not False, else Python), so only the few files
    that hold markers are split into lines and parsed with ``ast``; with a
    *cache*, only those whose text it has not seen. Over the whole root, rg
    walks the tree itself and the full listing is made only when asked for.
    """
    config = config or MarkerConfig()
    root = Path(root)
    if not root.is_dir():
        raise OverlayError("root is not a directory", path=root, hint="pass --root DIR")
    root_s = os.path.abspath(root)
    needles = config.needles()
    hits = _rg_walk(root_s, config) if use_rg is not False and not paths else None
    files: list[str] | None = None
    if hits is None:
        files = list_files(root, paths, config)
        # A process costs more than reading a few files (apply checks its overlay files).
        few = len(files) <= RG_MIN_FILES and use_rg is not True
        hits = _rg_filter(root_s, files, needles) if use_rg is not False and not few else None
        if hits is None:
            hits = _python_filter(root_s, files, needles)
    raw = read_below(root, sorted(hits))
    snap = snapshot_from_texts({rel: data.decode("utf-8", "replace") for rel, data in raw.items()}, config, cache)
    snap.root, snap.raw = root, raw
    if files is None:
        snap.list_lazily(lambda: list_files(root, None, config), lambda rel: _listed(root_s, rel, config))
    else:
        snap.files = files
    return snap


def _listed(root: str, rel: str, config: MarkerConfig) -> bool:
    """Whether ``list_files(root, None, config)`` lists *rel*: decided as its walk decides, but only
    along *rel*'s own directories."""
    parts = rel.split("/")
    here = root
    for depth, name in enumerate(parts, 1):
        try:
            with os.scandir(here) as it:
                entry = next((e for e in it if e.name == name), None)
        except OSError:
            return False
        if entry is None:
            return False
        if entry.is_dir(follow_symlinks=False):
            if depth == len(parts) or name in SKIP_DIRS:
                return False
            here = entry.path
        else:
            return depth == len(parts) and _glob_matcher(config.globs)(rel) and entry.is_file(follow_symlinks=False)
    return False


def snapshot_from_texts(texts: dict[str, str], config: MarkerConfig, cache: ScanCache | None = None) -> Snapshot:
    """A snapshot of in-memory files (name → text): for git revisions and transplant.
    With a *cache*, a text it holds a scan of is not scanned again (the same result)."""
    grammar = Grammar.compile(config)
    blocks: list[Block] = []
    problems: list[Problem] = []
    names = sorted(texts)
    keys = [cache.key(texts[rel]) for rel in names] if cache is not None else []
    if cache is not None:
        cache.load(keys)
    for n, rel in enumerate(names):
        found = cache.get(keys[n], rel) if cache is not None else None
        if found is None:
            found = scan_text(texts[rel], rel, config, grammar)
            if cache is not None:
                cache.put(keys[n], *found)
        blocks.extend(found[0])
        problems.extend(found[1])
    snap = Snapshot(config, blocks, problems, sources=dict(texts))
    snap.files = names
    return snap
