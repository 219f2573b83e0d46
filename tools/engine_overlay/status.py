"""`overlay status`: per patch applied / pending / applied-but-changed; per overlay file
in-sync / differs / missing — read from the overlay branch's commits, never from guesses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import gitops
from .apply import Payload, applied_commits, default_branch, read_journal
from .report import APPLIED, CHANGED, PENDING, OverlayFileResult, PatchResult, Report

if TYPE_CHECKING:
    from .gitops import Repo


def status_git(repo: Repo, payload: Payload, target_kind: str, branch: str | None = None) -> Report:
    branch = branch or default_branch(payload.label, payload.version)
    root = gitops.work_root(repo)
    report = Report("status", payload.label, payload.version, str(root), target_kind, "ok", branch)
    journal = read_journal(repo)
    if journal is not None:
        report.warnings.append("an interrupted overlay run is recorded: run `overlay apply ... --abort` or --continue")
    applied: dict[str, tuple[str, str]] = {}
    tip = f"refs/heads/{branch}"
    exists = gitops.branch_exists(repo, branch)
    if exists:
        for name, sha, commit in applied_commits(repo, tip)[0]:
            applied[name] = (sha, commit)
    else:
        report.warnings.append(f"branch {branch} does not exist: nothing applied yet")

    def read(path: str) -> bytes | None:
        return gitops.read_at(repo, tip, path) if exists else None

    fill_status(report, payload, applied, read)
    return report


def fill_status(report: Report, payload: Payload, applied: dict[str, tuple[str, str | None]],
                read: Callable[[str], bytes | None]) -> None:
    """Per patch (from *applied*: name -> (sha256, commit)) and per overlay file (from *read*)."""
    for patch, _ in payload.patches:
        if patch.name not in applied:
            report.patches.append(PatchResult(patch.name, PENDING, patch.sha256))
            continue
        sha, commit = applied[patch.name]
        state = APPLIED if sha == patch.sha256 else CHANGED
        report.patches.append(PatchResult(patch.name, state, patch.sha256, commit=commit,
                                          message="" if state == APPLIED else f"applied sha256 {sha[:12]}"))
    report.patches += payload.skipped
    for item in payload.overlay_files:
        current = read(item.path)
        status = "missing" if current is None else "in-sync" if current == item.content() else "differs"
        report.overlay_files.append(OverlayFileResult(item.path, status, f"{item.mode:o}"))
    bad = [p for p in report.patches if p.status in (PENDING, CHANGED)]
    bad += [f for f in report.overlay_files if f.status != "in-sync"]
    report.status = "ok" if not bad else "out-of-date"
