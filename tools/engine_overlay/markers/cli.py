"""click commands for marked blocks; the lead registers them on the ``overlay`` group.

Each command parses options, calls one function, emits one report through
:mod:`engine_overlay.ui`, and exits 1 (after emitting) when the check failed.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import ui
from .check import check_markers
from .grammar import DEFAULT_GLOBS, DEFAULT_INLINE_TAGS, DEFAULT_TAGS, MarkerConfig
from .scancache import ScanCache
from .snapshot import take_snapshot
from .transplant import TransplantReport, transplant


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def config_options(f):
    """--tags/--inline-tags/--globs: override the default (or the snapshot's) marker grammar."""
    f = click.option("--globs", help=f"Comma-separated file globs to scan [default: {','.join(DEFAULT_GLOBS)}].")(f)
    f = click.option("--inline-tags", help=f"Comma-separated inline tags [default: {','.join(DEFAULT_INLINE_TAGS)}].")(f)
    f = click.option("--tags", help=f"Comma-separated fence tags [default: {','.join(DEFAULT_TAGS)}].")(f)
    return f


def build_config(tags: str | None, inline_tags: str | None, globs: str | None) -> MarkerConfig | None:
    d = {k: list(v) for k, v in (("tags", _split(tags)), ("inline_tags", _split(inline_tags)), ("globs", _split(globs))) if v is not None}
    return MarkerConfig.from_dict(d, "command line") if d else None


@click.group("markers")
def markers_group() -> None:
    """Marked downstream blocks (e.g. '# ---- Omni-new ----' fences) in copied upstream files."""


@markers_group.command("snapshot")
@click.argument("paths", nargs=-1)
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Tree to scan; PATHS are relative to it.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Snapshot file to write (JSON).")
@config_options
def snapshot_cmd(paths, root, output, tags, inline_tags, globs) -> None:
    """Record every marked block under ROOT (or PATHS) into a snapshot file."""
    config = build_config(tags, inline_tags, globs) or MarkerConfig()
    cache = ScanCache(config)  # a check right after reads the scans from here
    try:
        snap = take_snapshot(root, list(paths) or None, config, cache=cache)
    finally:
        cache.close()
    snap.write(output)
    errors = [p for p in snap.problems if p.severity == "error"]
    data = {"ok": not errors, "output": str(output), "blocks": len(snap.blocks), "files": len({b.file for b in snap.blocks}),
            "problems": snap.problems}

    def human(console) -> None:
        console.print(f"wrote {output}: {len(snap.blocks)} marked blocks in {data['files']} files")
        for p in snap.problems:
            console.print(f"{p.severity} {p.file}:{p.line}: {p.message}", markup=False)

    ui.emit("markers snapshot", data, human)
    if errors:
        raise click.exceptions.Exit(1)


@click.command("check-markers")
@click.argument("paths", nargs=-1)
@click.option("--against", required=True, metavar="SNAPSHOT|GIT-REV",
              help="Baseline: a snapshot file, or a git revision of the repository holding ROOT.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."), show_default=True)
@click.option("--waivers", "waivers", type=click.Path(dir_okay=False, path_type=Path), help="Waiver file (TOML).")
@click.option("--all", "all_blocks", is_flag=True, help="List intact blocks too.")
@config_options
def check_markers_cmd(paths, against, root, waivers, all_blocks, tags, inline_tags, globs) -> None:
    """Report every baseline block as intact/modified/moved/lost, and new ones as added; exit 1 on unwaived changes."""
    report = check_markers(root, against, build_config(tags, inline_tags, globs), waivers, list(paths) or None)
    ui.emit("check-markers", report.to_dict(), lambda console: report.render(console, all_blocks=all_blocks))
    if not report.ok:
        raise click.exceptions.Exit(1)


@click.command("transplant")
@click.argument("marked", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--old-base", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The upstream file MARKED was derived from.")
@click.option("--new-base", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The new upstream file.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the result [default: over MARKED].")
@click.option("--force", is_flag=True, help="Write the result even with conflicts or failed checks.")
@config_options
def transplant_cmd(marked, old_base, new_base, output, force, tags, inline_tags, globs) -> None:
    """Re-base MARKED onto NEW-BASE (3-way merge), then verify its marked blocks and that it compiles."""
    report = transplant(old_base, new_base, marked, output, force, build_config(tags, inline_tags, globs))
    ui.emit("transplant", report.to_dict(), lambda console: render_transplant(report, console))
    if not report.ok:
        raise click.exceptions.Exit(1)


def render_transplant(report: TransplantReport, console) -> None:
    for c in report.conflicts:
        where = f"block {c.block} (marked line {c.block_line})" if c.block else "outside marked blocks"
        console.print(f"[bold red]conflict[/] {report.out}:{c.line} — {where}")
        console.print("  marked copy:", markup=False)
        for ln in c.ours:
            console.print(f"    {ln}", markup=False)
        console.print("  new upstream:", markup=False)
        for ln in c.theirs:
            console.print(f"    {ln}", markup=False)
    for b in report.blocks:
        if b.status != "intact":
            console.print(f"[yellow]{b.status}[/] {b.kind} {b.label} at {b.file}:{b.start_line}"
                          + (f" (similarity {b.similarity:.2f})" if b.similarity is not None else ""))
    for p in report.problems:
        console.print(f"{p.severity} {p.file}{':' + str(p.line) if p.line else ''}: {p.message}", markup=False)
    intact = sum(b.status == "intact" for b in report.blocks)
    state = "written to " + report.out if report.written else "not written"
    verdict = "[green]ok[/]" if report.ok else "[bold red]FAILED[/]"
    console.print(f"transplant: {intact}/{len(report.blocks)} blocks intact, {len(report.conflicts)} conflicts; {state} — {verdict}")


__all__ = ["markers_group", "check_markers_cmd", "transplant_cmd", "build_config"]
