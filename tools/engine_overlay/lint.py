"""`overlay lint`: series / patch / overlay / VERSIONS.toml consistency, every problem at once."""

from __future__ import annotations

from pathlib import Path

from .config import VERSIONS_FILE, Project, parse_versions
from .errors import OverlayError
from .overlay_files import collect
from .paths import safe_join
from .problems import Problem
from .series import parse_patch, parse_series, valid_upstream_status

PATCH_SUFFIXES = (".patch", ".diff", ".patch.gz", ".patch.bz2", ".patch.xz", ".diff.gz")


def lint_project(root: Path) -> tuple[Project | None, list[Problem]]:
    project, problems = parse_versions(root / VERSIONS_FILE)
    if project is None:
        return None, problems
    for engine in project.engines.values():
        problems += lint_series(engine.series, require_metadata=True)
        try:
            collect(engine.overlay)
        except OverlayError as exc:
            problems.append(Problem(exc.path or str(engine.overlay), exc.line or 0, exc.message))
        problems += _pin_selection_problems(engine)
        for path in engine.replaces:  # checked as relative paths by config; no symlink on the way either
            try:
                exists = safe_join(engine.overlay, path).is_file()
            except OverlayError as exc:
                problems.append(Problem(VERSIONS_FILE, 0, f"[{engine.name}] replaces: {exc.message}"))
                continue
            if not exists:
                problems.append(Problem(VERSIONS_FILE, 0, f"[{engine.name}] replaces '{path}' but "
                                        f"{engine.overlay.relative_to(root) / path} does not exist"))
    return project, sorted(set(problems), key=lambda p: (p.file, p.line, p.message))


def lint_series(series_path: Path, require_metadata: bool = True) -> list[Problem]:
    if not series_path.is_file():
        return [Problem(str(series_path), 0, "series file not found")]
    series, problems = parse_series(series_path)
    seen: dict[str, int] = {}
    for entry in series.entries:
        if entry.name in seen:
            problems.append(Problem(str(series_path), entry.line,
                                    f"'{entry.name}' listed twice (first at line {seen[entry.name]})"))
            continue
        seen[entry.name] = entry.line
        path = series.directory / entry.name
        if not path.is_file():
            problems.append(Problem(str(series_path), entry.line, f"'{entry.name}' is listed but does not exist"))
            continue
        try:
            patch = parse_patch(path, entry.name, entry.strip)
        except OverlayError as exc:
            problems.append(Problem(str(path), exc.line or 0, exc.message))
            continue
        for message in patch.messages:  # a mailbox: every message is a commit of its own
            problems += message.problems
            if require_metadata:
                problems += _metadata_problems(message)
    for path in sorted(series.directory.rglob("*")):
        rel = path.relative_to(series.directory).as_posix()
        if path.is_file() and rel.endswith(PATCH_SUFFIXES) and rel not in seen:
            problems.append(Problem(str(path), 0, "patch file is not listed in the series"))
    return problems


def _metadata_problems(patch) -> list[Problem]:
    where = str(patch.path)
    first = min(patch.header_lines.values(), default=1)  # a later message of a mailbox starts further down
    problems = []
    if not patch.subject:
        problems.append(Problem(where, first, "no description: add a Subject (format-patch) or Description (DEP-3)"))
    if not patch.body.strip() and not patch.headers.get("description", "").count("\n"):
        problems.append(Problem(where, first, "no explanation of why: add a body after the subject"))
    status = patch.upstream_status
    if status is None:
        problems.append(Problem(where, first, "missing 'Upstream-Status:' (Pending, Submitted, Accepted, "
                                "Backport, Denied, Inappropriate [reason], Inactive-Upstream)"))
    elif not valid_upstream_status(status):
        problems.append(Problem(where, patch.header_lines.get("upstream-status", 1),
                                f"invalid Upstream-Status {status!r}"))
    return problems


def _pin_selection_problems(engine) -> list[Problem]:
    """A non-empty series of which `Applies-To` selects nothing for a pin is a mistake."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    if not engine.series.is_file():
        return []
    series, _ = parse_series(engine.series)
    ranges = []
    for entry in series.entries:
        path = series.directory / entry.name
        if not path.is_file():
            return []
        try:
            ranges.append(parse_patch(path, entry.name).applies_to)
        except OverlayError:
            return []
    problems = []
    for pin in engine.pins.values():
        if not pin.apply or not ranges:
            continue
        selected = 0
        for spec in ranges:
            try:
                selected += spec is None or SpecifierSet(spec).contains(Version(pin.version).public,
                                                                        prereleases=True)
            except InvalidSpecifier:
                selected += 1  # reported where the patch is applied
        if not selected:
            problems.append(Problem(str(engine.series), 0, f"no patch of the series applies to {engine.name} "
                                    f"{pin.version}: check the Applies-To ranges (pre-releases sort before "
                                    f"their release: 0.30.0rc2 < 0.30)"))
    return problems
