"""The marker report: one object for JSON and for the compact human table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..ui import escape, styled, table
from .compare import BlockResult
from .grammar import Problem
from .waivers import WaiverStatus

if TYPE_CHECKING:
    from rich.console import Console

    from ..ui import PlainConsole

STATUS_STYLE = {"intact": "green", "added": "cyan", "modified": "yellow", "moved": "yellow", "lost": "bold red"}


@dataclass
class MarkerReport:
    """Grammar problems plus, when a baseline was given, every block's classification."""

    blocks: list[BlockResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    waivers: list[WaiverStatus] = field(default_factory=list)
    against: str | None = None
    blocks_found: int = 0  # marked blocks in the checked tree

    @property
    def ok(self) -> bool:
        """False when a block is lost/modified/moved and not waived, or a fence is broken."""
        return not any(b.failing for b in self.blocks) and not any(p.severity == "error" for p in self.problems)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("intact", "modified", "moved", "lost", "added")}
        for b in self.blocks:
            out[b.status] += 1
        out["waived"] = sum(b.waived for b in self.blocks)
        out["enclosing_changed"] = sum(b.enclosing_changed for b in self.blocks)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "against": self.against,
            "blocks_found": self.blocks_found,
            "summary": self.counts(),
            "blocks": [{**asdict(b), "failing": b.failing} for b in self.blocks],
            "problems": [asdict(p) for p in self.problems],
            "waivers": [asdict(w) for w in self.waivers],
        }

    def render(self, console: Console | PlainConsole, *, all_blocks: bool = False) -> None:
        """Compact table: every block that is not plainly intact, then problems, then a summary line."""
        rows = [b for b in self.blocks if all_blocks or b.status != "intact" or b.enclosing_changed]
        if rows:
            cells = []
            for b in rows:
                style = "dim" if b.waived else STATUS_STYLE.get(b.status, "")
                note = []
                if b.lost_kind:
                    note.append(b.lost_kind)
                if b.enclosing_changed:
                    note.append("enclosing def changed upstream")
                if b.waived:
                    note.append(f"waived: {b.waiver}")
                now = f"{b.new_file}:{b.new_start_line}" if b.new_file and b.status != "added" else ""
                cells.append([
                    styled(b.status, style), escape(f"{b.kind} {b.label}"), escape(f"{b.file}:{b.start_line}"),
                    escape(now), "" if b.similarity is None else f"{b.similarity:.2f}", escape("; ".join(note)),
                ])
            columns = [(name, "left") for name in ("status", "block", "at", "now", "sim", "note")]
            console.print(table(console, columns, cells))
        for p in self.problems:
            where = f"{p.file}:{p.line}" if p.line else p.file
            colour = "red" if p.severity == "error" else "yellow"
            console.print(f"[{colour}]{p.severity}[/] {where}: ", end="")
            console.print(p.message + (f" (hint: {p.hint})" if p.hint else ""), markup=False)
        c = self.counts()
        parts = [f"{v} {k}" for k, v in c.items() if v and k != "enclosing_changed"]
        if self.against is None:
            parts = [f"{self.blocks_found} marked blocks"]
        verdict = "[green]ok[/]" if self.ok else "[bold red]FAILED[/]"
        console.print(f"markers: {', '.join(parts) or 'no marked blocks'} — {verdict}")
