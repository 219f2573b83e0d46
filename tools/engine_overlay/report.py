"""Report dataclasses shared by apply/status/preview, and their human rendering.

JSON output is `dataclasses.asdict` of these (see README "JSON output"), so
field names here are the stable schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .hunks import HunkResult
from .ui import escape as _escape
from .ui import styled, table

if TYPE_CHECKING:  # rich is imported only when a terminal shows it (start-up time)
    from rich.console import Console

    from .ui import PlainConsole

# patch statuses
APPLIED, OFFSET, THREE_WAY, FAILED, ALREADY, PENDING, CHANGED, SKIPPED = (
    "applied", "offset", "3-way", "failed", "already-applied", "pending", "applied-but-changed", "skipped",
)
OK_PATCH = {APPLIED, OFFSET, THREE_WAY}


@dataclass
class FileResult:
    path: str
    action: str  # modify | create | delete | rename | copy | mode
    status: str  # applied | offset | 3-way | failed | already-applied
    hunks: list[HunkResult] = field(default_factory=list)
    message: str = ""


@dataclass
class PatchResult:
    name: str
    status: str
    sha256: str = ""
    files: list[FileResult] = field(default_factory=list)
    message: str = ""
    commit: str | None = None


@dataclass
class OverlayFileResult:
    path: str
    status: str  # add | replace | in-sync | differs | missing
    mode: str = "100644"


@dataclass
class Report:
    command: str
    engine: str
    version: str
    target: str
    target_kind: str  # tree | checkout | installed
    status: str  # applied | already-applied | checked | failed | kept | ok | problems
    branch: str | None = None
    patches: list[PatchResult] = field(default_factory=list)
    overlay_files: list[OverlayFileResult] = field(default_factory=list)
    markers: dict | None = None
    warnings: list[str] = field(default_factory=list)


_STYLE = {
    APPLIED: "green", OFFSET: "yellow", THREE_WAY: "yellow", FAILED: "bold red", ALREADY: "magenta",
    PENDING: "cyan", CHANGED: "bold red", "in-sync": "green", "add": "green", "replace": "yellow",
    "differs": "bold red", "missing": "bold red", SKIPPED: "dim",
}


def _hunk_text(result: PatchResult) -> str:
    parts = []
    for item in result.files:
        hunks = []
        for hunk in item.hunks:
            if hunk.status == "offset":
                hunks.append(f"#{hunk.index} offset {hunk.offset:+d}")
            elif hunk.status != "clean":
                hunks.append(f"#{hunk.index} {hunk.status} (patch line {hunk.line})")
        if item.status not in OK_PATCH or hunks:
            detail = ", ".join(hunks) or item.message
            parts.append(f"{item.path}: {item.status}" + (f" [{detail}]" if detail else ""))
    if result.message:
        parts.append(result.message)
    return "; ".join(parts)


def render(report: Report, console: Console | PlainConsole) -> None:
    head = f"{report.command} {report.engine} {report.version} -> {report.target}"
    if report.branch:
        head += f" (branch {report.branch})"
    console.print(head, markup=False)
    if report.patches:
        rows = [[str(number), _escape(item.name), styled(item.status, _STYLE.get(item.status, "")),
                 str(len(item.files)), _escape(_hunk_text(item))]
                for number, item in enumerate(report.patches, 1)]
        console.print(table(console, [("#", "right"), ("patch", "left"), ("status", "left"), ("files", "right"),
                                      ("details", "left")], rows))
    if report.overlay_files:
        rows = [[_escape(item.path), styled(item.status, _STYLE.get(item.status, "")), item.mode]
                for item in report.overlay_files]
        console.print(table(console, [("overlay file", "left"), ("status", "left"), ("mode", "left")], rows))
    if report.markers is not None:
        blocks = report.markers.get("blocks", [])
        problems = report.markers.get("problems", [])
        console.print(f"markers: {len(blocks)} block(s), {len(problems)} problem(s)", markup=False)
        for problem in problems:
            console.print(f"  {problem.get('file')}:{problem.get('line')}: {problem.get('message')}", markup=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {_escape(warning)}")
    console.print(f"result: [bold]{report.status}[/]")
