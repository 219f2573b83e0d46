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


# -- markdown (a CI job summary, a pull-request comment) -----------------------------------------

def _md(text: str) -> str:
    """*text* for one markdown table cell: no line breaks, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_md(text).replace('`', chr(39))}`"


def preview_markdown(preview) -> str:
    """A preview-upgrade result (upgrade.Preview) as markdown: per patch applies / offset /
    3-way / conflicts / already-upstream / skipped, per marked block intact / modified / moved /
    lost / added, and why the new version is not clean."""
    verdict = preview.verdict
    lines = [f"## {_md(preview.engine)} {_md(preview.from_version)} → {_md(preview.to_version)}: "
             f"{verdict.status}", ""]
    for note in preview.notes:
        lines += [f"> {_md(note)}", ""]
    counts = verdict.counts
    said = [f"{name} {counts[name]}" for name in ("applies", "offset", "3-way", "conflicts", "already-upstream",
                                                  "skipped") if counts.get(name)]
    lines += [f"Patches: {', '.join(said) or 'none'}.", ""]
    if verdict.patches:
        lines += ["| # | patch | verdict | details |", "|--:|---|---|---|"]
        for number, item in enumerate(verdict.patches, 1):
            word = item.verdict if item.verdict in ("applies", "offset", "skipped") else f"**{item.verdict}**"
            details = list(item.details)
            if item.touched:
                details.append("upstream changed the code it touches: review it")
            lines.append(f"| {number} | {_code(item.name)} | {word} | {_md('; '.join(details))} |")
        lines.append("")
    if verdict.blocks is None:
        lines += [f"Marked blocks: not checked ({_md(verdict.blocks_note)}).", ""]
    elif not verdict.blocks:
        lines += ["Marked blocks: none in the checked files.", ""]
    else:
        tally = [f"{s} {sum(b.verdict == s for b in verdict.blocks)}"
                 for s in ("intact", "modified", "moved", "lost", "added") if any(b.verdict == s for b in verdict.blocks)]
        lines += [f"Marked blocks: {', '.join(tally)}.", "", "| block | file | verdict |", "|---|---|---|"]
        for block in verdict.blocks:
            word = block.verdict if block.verdict in ("intact", "added") else f"**{block.verdict}**"
            if block.waived:
                word += " (waived)"
            lines.append(f"| {_code(block.block)} | {_code(block.file)} | {word} |")
        lines.append("")
    if verdict.reasons:
        lines += ["Not clean:", ""] + [f"- {_md(reason)}" for reason in verdict.reasons] + [""]
    if preview.touched:
        lines += ["Upstream changed the code under these hunks:", ""]
        lines += [f"- {_code(t.patch)} {_code(t.file)} hunk #{t.hunk}: {_md(t.what)}" for t in preview.touched]
        lines.append("")
    for suggestion in preview.suggestions:
        lines.append(f"- suggestion: {_md(suggestion)}")
    return "\n".join(lines).rstrip("\n") + "\n"
