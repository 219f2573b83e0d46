"""transplant: re-base a marked copy of an upstream file onto a new upstream version.

This is the upgrade step done by hand today: a 3-way merge (``git merge-file``)
of the marked copy against the old and new upstream file, then proof that every
marked block survived (the compare step) and that the result compiles.
A result with conflict markers is never written unless forced.
"""

from __future__ import annotations

import py_compile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import gitops
from ..errors import OverlayError
from ..locking import atomic_write
from .compare import BlockResult, compare
from .grammar import MarkerConfig, Problem
from .snapshot import Block, snapshot_from_texts

LABELS = ("marked", "old-base", "new-base")


@dataclass
class Conflict:
    """One conflict hunk of the merge, with both sides and the marked block it touches."""

    line: int  # 1-based line of '<<<<<<<' in the merged output
    ours: list[str]  # the marked copy's side
    theirs: list[str]  # the new upstream's side
    block: str | None = None  # label of the marked block involved, if any
    block_line: int | None = None  # its opening line in the marked copy


@dataclass
class TransplantReport:
    marked: str
    out: str
    written: bool = False
    conflicts: list[Conflict] = field(default_factory=list)
    blocks: list[BlockResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    compiles: bool | None = None

    @property
    def ok(self) -> bool:
        return (not self.conflicts and self.compiles is not False
                and not any(b.status != "intact" and b.status != "added" for b in self.blocks)
                and not any(p.severity == "error" for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "marked": self.marked, "out": self.out, "written": self.written,
                "compiles": self.compiles, "conflicts": [asdict(c) for c in self.conflicts],
                "blocks": [asdict(b) for b in self.blocks], "problems": [asdict(p) for p in self.problems]}


def merge_file(old_base: Path, new_base: Path, marked: Path) -> tuple[str, int]:
    """3-way merge with ``git merge-file -p``: (merged text, number of conflicts)."""
    for p in (old_base, new_base, marked):
        if not p.is_file():
            raise OverlayError("file not found", path=p, hint="transplant needs --old-base, --new-base and the marked file")
    proc = gitops.git_process(["merge-file", "-p", "-L", LABELS[0], "-L", LABELS[1], "-L", LABELS[2],
                               str(marked), str(old_base), str(new_base)], None)
    if proc.returncode < 0 or proc.returncode > 127:
        raise OverlayError(f"git merge-file failed: {proc.stderr.decode(errors='replace').strip()}", path=marked)
    return proc.stdout.decode("utf-8", "replace"), proc.returncode


def parse_conflicts(text: str) -> list[Conflict]:
    """Conflict hunks of merge output (tolerates diff3-style '|||||||' sections)."""
    out: list[Conflict] = []
    state, cur = None, None
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("<<<<<<< "):
            cur, state = Conflict(n, [], []), "ours"
        elif cur and line.startswith("||||||| "):
            state = "base"
        elif cur and line == "=======":
            state = "theirs"
        elif cur and line.startswith(">>>>>>> "):
            out.append(cur)
            cur, state = None, None
        elif cur and state == "ours":
            cur.ours.append(line)
        elif cur and state == "theirs":
            cur.theirs.append(line)
    return out


def _owner(conflict: Conflict, blocks: list[Block], marked_lines: list[str]) -> Block | None:
    """The marked block whose text overlaps the conflict's marked side."""
    ours = {" ".join(x.split()) for x in conflict.ours if x.strip()}
    for b in blocks:
        span = {" ".join(x.split()) for x in marked_lines[b.start_line - 1:b.end_line] if x.strip()}
        if ours & span:
            return b
    return None


def transplant(
    old_base: Path, new_base: Path, marked: Path, out: Path | None = None,
    force: bool = False, config: MarkerConfig | None = None,
) -> TransplantReport:
    """Merge, verify and (when clean, or *force*) write the re-based marked file to *out* (default: over *marked*)."""
    config = config or MarkerConfig()
    out = out or marked
    merged, n_conflicts = merge_file(old_base, new_base, marked)
    marked_text = marked.read_text(encoding="utf-8", errors="replace")
    name = marked.name
    report = TransplantReport(str(marked), str(out))
    before = snapshot_from_texts({name: marked_text}, config)
    report.problems.extend(before.problems)
    if n_conflicts:
        lines = marked_text.splitlines()
        for c in parse_conflicts(merged):
            b = _owner(c, before.blocks, lines)
            if b:
                c.block, c.block_line = b.label, b.start_line
            report.conflicts.append(c)
        report.problems.append(Problem(str(out), None, f"{n_conflicts} merge conflict(s); resolve them in the marked copy or re-run with --force to write the file with conflict markers", "error"))
    else:
        after = snapshot_from_texts({name: merged}, config)
        report.problems.extend(Problem(str(out), p.line, p.message, p.severity, p.hint) for p in after.problems)
        report.blocks = compare(before, after)
        report.compiles = _compiles(merged, name, report) if name.endswith(".py") else None
    if report.ok or force:
        atomic_write(out, merged)
        report.written = True
    return report


def _compiles(text: str, name: str, report: TransplantReport) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / name
        atomic_write(src, text)
        try:
            py_compile.compile(str(src), cfile=str(Path(tmp) / "out.pyc"), doraise=True)
        except py_compile.PyCompileError as e:
            exc = e.exc_value
            report.problems.append(Problem(report.out, getattr(exc, "lineno", None), f"does not compile: {getattr(exc, 'msg', e.msg)}"))
            return False
    return True
