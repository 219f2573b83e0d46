"""check-markers: grammar problems of a tree, plus its comparison against a baseline."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from .baseline import Revision, resolve_rev, snapshot_at_rev
from .compare import compare
from .grammar import MarkerConfig
from .report import MarkerReport
from .scancache import ScanCache
from .snapshot import Snapshot, read_snapshot, take_snapshot
from .waivers import apply_waivers, load_waivers


def check_markers(
    root: Path,
    against: str | Path | None,
    config: MarkerConfig | None = None,
    waivers_path: Path | None = None,
    paths: list[str] | None = None,
    *,
    today: dt.date | None = None,
    use_rg: bool | None = None,
) -> MarkerReport:
    """Snapshot *root*, compare with the baseline *against* (snapshot file or git revision), apply waivers.

    A :class:`Path` *against* is always a snapshot file; a string is a snapshot
    file if one exists there, else a git revision.
    Without *config*, a snapshot baseline's own recorded tags and globs are used,
    so the check reads the tree the way the snapshot was taken.
    """
    baseline: Snapshot | None = None
    rev: Revision | None = None
    if isinstance(against, Path) or (against is not None and Path(against).is_file()):
        baseline = read_snapshot(Path(against))
        config = config or baseline.config
    elif against is not None:
        rev = resolve_rev(root, against)  # a wrong revision is refused before the tree is read
    config = config or MarkerConfig()
    cache = ScanCache(config)  # a file unchanged since the baseline (or since any run) is parsed once
    try:
        current = take_snapshot(root, paths, config, use_rg=use_rg, cache=cache)
        if rev is not None:
            baseline = snapshot_at_rev(root, rev, paths, config, current=current, cache=cache)
    finally:
        cache.close()
    report = MarkerReport(problems=list(current.problems), against=None if against is None else str(against),
                          blocks_found=len(current.blocks))
    if baseline is None:
        return report
    if paths:
        wanted = set(current.files)
        rels = [os.path.relpath(os.path.join(root, p), root).replace(os.sep, "/") for p in paths]
        baseline.blocks = [b for b in baseline.blocks if b.file in wanted or _under(b.file, rels)]
    report.blocks = compare(baseline, current)
    if waivers_path is not None:
        statuses, problems = apply_waivers(report.blocks, load_waivers(waivers_path), str(waivers_path), today)
        report.waivers = statuses
        report.problems.extend(problems)
    return report


def _under(rel: str, paths: list[str]) -> bool:
    return any(p == "." or rel == p or rel.startswith(p + "/") for p in paths)


def verify_tree(
    root: Path,
    snapshot_path: Path | None,
    config: MarkerConfig,
    waivers_path: Path | None,
    paths: list[str] | None = None,
) -> MarkerReport:
    """The marker check for ``overlay apply`` / ``overlay status`` on an engine's overlay files."""
    return check_markers(Path(root), Path(snapshot_path) if snapshot_path else None, config, waivers_path, paths)
