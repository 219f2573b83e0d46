"""`overlay apply --installed`: patch an installed distribution, with a byte-exact undo record.

The record lives next to the package, in `<site-packages>/.engine-overlay/<engine>/`:
`record.json` (state, and per touched file the sha256 of the original and of what
was written) and `originals/` (the original bytes). Originals are saved and the
record is fsynced before the first file is replaced, and files are replaced
atomically, so `overlay unapply --installed` can always restore every byte —
even after a run killed half-way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import shutil
import sys
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .config import Engine, Pin
from .errors import CheckFailed, OverlayError
from .locking import TargetLock, atomic_write, read_json, write_json_atomic
from .plan import plan
from .report import Report
from .tree import TreeState, check_relpath

RECORD_DIR = ".engine-overlay"


def find_distribution(engine: Engine, site: Path | None) -> md.Distribution:
    wanted = {canonicalize_name(n) for n in engine.distributions}
    paths = [str(site)] if site else sys.path
    for dist in md.distributions(path=paths):
        name = dist.metadata["Name"] if dist.metadata else None
        if name and canonicalize_name(name) in wanted:
            return dist
    where = str(site) if site else sys.prefix
    raise OverlayError(
        f"none of the distributions {', '.join(engine.distributions)} is installed in {where}",
        hint="install the engine first, or point --site-packages at the environment that has it",
    )


def installed_root(dist: md.Distribution) -> Path:
    return Path(dist.locate_file("")).resolve()


def check_version(dist: md.Distribution, pin: Pin) -> str | None:
    try:
        found = Version(dist.version)
    except InvalidVersion:
        return f"installed version {dist.version!r} is not a valid version"
    if found.public != Version(pin.version).public:
        return f"installed {dist.metadata['Name']} is {dist.version}, the pin is {pin.version}"
    return None


def _record_dir(root: Path, engine: str) -> Path:
    return root / RECORD_DIR / engine


def _sha(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def apply_installed(engine: Engine, pin: Pin, payload, site: Path | None, check: bool,
                    force_base: bool) -> Report:
    dist = find_distribution(engine, site)
    root = installed_root(dist)
    report = Report("apply", engine.name, pin.version, str(root), "installed", "checked")
    problem = check_version(dist, pin)
    if problem and not force_base:
        raise OverlayError(f"version mismatch: {problem}", path=root,
                           hint="install the pinned version, or pass --force-base")
    if problem:
        report.warnings.append(f"version mismatch ignored (--force-base): {problem}")
    record_dir = _record_dir(root, engine.name)
    with TargetLock(root / RECORD_DIR / f"{engine.name}.lock", str(root)):
        record = read_json(record_dir / "record.json", "the installed-overlay record",
                           hint=f"run `overlay unapply {engine.name} --installed --force`")
        if record is not None and record.get("state") == "saving":
            record = None  # killed while saving originals: nothing was changed, start over
        if record is not None:
            if record.get("state") == "applied" and record.get("patches") == _fingerprint(payload):
                report.status = "already-applied"
                report.warnings.append("this series is already applied to the installed package")
                return report
            state = "an interrupted apply" if record.get("state") != "applied" else "a different series"
            raise CheckFailed(f"{state} is recorded on the installed {engine.name}", path=record_dir / "record.json",
                              hint=f"run `overlay unapply {engine.name} --installed` first")
        result = plan(TreeState(root), payload.patches, payload.overlay_files, payload.replaces, None,
                      overlay_label=f"overlay: {engine.name} files")
        report.patches = result.patches + payload.skipped
        report.overlay_files = result.overlay_files
        if not result.ok:
            report.status = "failed"
            return report
        if check:
            return report
        changes: dict[str, tuple[bytes | None, int]] = {}
        for commit in result.commits:
            changes.update(commit.changes)
        _write(root, record_dir, engine, payload, changes)
        report.status = "applied"
        return report


def _fingerprint(payload) -> list:
    from .overlay_files import manifest_sha256

    names = [[p.name, p.sha256] for p, _ in payload.patches]
    if payload.overlay_files:
        names.append(["<overlay>", manifest_sha256(payload.overlay_files)])
    return names


def _write(root: Path, record_dir: Path, engine: Engine, payload, changes) -> None:
    originals = record_dir / "originals"
    shutil.rmtree(record_dir, ignore_errors=True)
    originals.mkdir(parents=True)
    # "saving": originals are being copied, no installed file has changed yet
    write_json_atomic(record_dir / "record.json", {"engine": engine.name, "state": "saving", "files": {}})
    files = {}
    for path, (content, _mode) in sorted(changes.items()):
        disk = root / path
        original = disk.read_bytes() if disk.is_file() else None
        if original is not None:
            atomic_write(originals / path, original, 0o644)
        files[path] = {
            "original_sha256": _sha(original),
            "original_mode": oct(disk.stat().st_mode & 0o777) if original is not None else None,
            "written_sha256": _sha(content),
        }
    record = {"engine": engine.name, "state": "applying", "files": files, "patches": _fingerprint(payload)}
    write_json_atomic(record_dir / "record.json", record)
    for path, (content, mode) in sorted(changes.items()):
        disk = root / path
        if content is None:
            disk.unlink(missing_ok=True)
        else:
            atomic_write(disk, content, mode)
    record["state"] = "applied"
    write_json_atomic(record_dir / "record.json", record)


def _remove_if_only_lock(directory: Path, lock_name: str) -> None:
    """Leave site-packages as it was: drop our directory once nothing but our lock is left."""
    if [p.name for p in directory.iterdir()] == [lock_name]:
        (directory / lock_name).unlink()
        directory.rmdir()


def unapply_installed(engine: Engine, site: Path | None, force: bool) -> dict:
    dist = find_distribution(engine, site)
    root = installed_root(dist)
    record_dir = _record_dir(root, engine.name)
    with TargetLock(root / RECORD_DIR / f"{engine.name}.lock", str(root)):
        record = read_json(record_dir / "record.json", "the installed-overlay record",
                           hint="reinstall the package to restore it")
        if record is None:
            raise OverlayError(f"nothing is applied to the installed {engine.name}", path=root)
        files = record.get("files")
        if record.get("state") == "saving":  # interrupted before any installed file changed
            shutil.rmtree(record_dir)
            _remove_if_only_lock(root / RECORD_DIR, f"{engine.name}.lock")
            return {"engine": engine.name, "target": str(root), "restored": [], "status": "unapplied"}
        if not isinstance(files, dict):
            raise OverlayError("the installed-overlay record is corrupt", path=record_dir / "record.json",
                               hint="reinstall the package to restore it")
        edited = []
        for path, info in files.items():
            check_relpath(path, str(record_dir / "record.json"))
            disk = root / path
            current = _sha(disk.read_bytes()) if disk.is_file() else None
            if current not in (info.get("written_sha256"), info.get("original_sha256")):
                edited.append(path)
        if edited and not force:
            raise CheckFailed(f"{len(edited)} file(s) changed since apply, e.g. {edited[0]}", path=root / edited[0],
                              hint="save your edits elsewhere, then run again with --force to restore the originals")
        restored = []
        for path, info in sorted(files.items()):
            disk = root / path
            if info.get("original_sha256") is None:
                disk.unlink(missing_ok=True)
            else:
                data = (record_dir / "originals" / path).read_bytes()
                if _sha(data) != info["original_sha256"]:
                    raise OverlayError("saved original is corrupt", path=record_dir / "originals" / path,
                                       hint="reinstall the package to restore it")
                atomic_write(disk, data, int(info.get("original_mode") or "0o644", 8))
            restored.append(path)
        shutil.rmtree(record_dir)
        _remove_if_only_lock(root / RECORD_DIR, f"{engine.name}.lock")
        return {"engine": engine.name, "target": str(root), "restored": restored, "status": "unapplied"}


def status_installed(engine: Engine, pin: Pin, payload, site: Path | None) -> Report:
    """Read the record next to the installed package and compare with the series."""
    dist = find_distribution(engine, site)
    root = installed_root(dist)
    report = Report("status", engine.name, pin.version, str(root), "installed", "ok")
    problem = check_version(dist, pin)
    if problem:
        report.warnings.append(problem)
    record = read_json(_record_dir(root, engine.name) / "record.json", "the installed-overlay record",
                       hint=f"run `overlay unapply {engine.name} --installed --force`") or {}
    if record.get("state") not in (None, "applied"):
        report.warnings.append("an interrupted apply is recorded: run `overlay unapply --installed`")
    from .status import fill_status

    applied = {name: (sha, None) for name, sha in record.get("patches", [])}

    def read(path: str) -> bytes | None:
        disk = root / path
        return disk.read_bytes() if disk.is_file() else None

    fill_status(report, payload, applied, read)
    return report
