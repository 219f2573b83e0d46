"""`overlay apply --installed`: patch an installed distribution, with a byte-exact undo record.

The record lives next to the package, in `<site-packages>/.engine-overlay/<engine>/`:
`record.json` (state, and per touched file the sha256 of the original and of what
was written) and `originals/` (the original bytes). Originals are saved and the
record is fsynced before the first file is replaced, and files are replaced
atomically, so `overlay unapply --installed` can always restore every byte —
even after a run killed half-way.

The package, the patches and the record are all untrusted: every path goes through
:func:`paths.safe_join`, symlinks are never followed, written through or replaced,
nothing may touch the record directory, and a refused run leaves site-packages as it was.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import stat
import sys
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .config import Engine, Pin
from .errors import CheckFailed, OverlayError
from .locking import TargetLock, atomic_write, read_json, write_json_atomic
from .paths import check_relpath, safe_join
from .plan import plan
from .report import Report
from .tree import TreeState

RECORD_DIR = ".engine-overlay"
_MODE = re.compile(r"0o[0-7]{1,4}")


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
    return safe_join(root, f"{RECORD_DIR}/{engine}")


def _original(root: Path, engine: str, rel: str) -> Path:
    return safe_join(root, f"{RECORD_DIR}/{engine}/originals/{rel}")


def _sha(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _in_record_dir(rel: str) -> bool:
    """Whether *rel* lies in the record directory, its first component compared the way
    `.git` is (case and trailing dots/spaces ignored), so no spelling can reach the originals."""
    return rel.split("/", 1)[0].rstrip(". ").lower() == RECORD_DIR


def _read(root: Path, rel: str, origin) -> tuple[bytes, int] | None:
    """Bytes and permission bits of the regular file *rel* under *root*, None when absent.

    Opened with O_NOFOLLOW (and O_NONBLOCK, so a FIFO cannot hang the run): a symlink or
    any other non-regular file is refused, never followed.
    """
    disk = safe_join(root, rel, origin, allow_final_link=True)
    hint = "the tool never follows, writes through or replaces a symlink; reinstall the package without it"
    try:
        fd = os.open(disk, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OverlayError(f"{rel!r} is a symlink in the installed package", path=disk, hint=hint) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OverlayError(f"{rel!r} is not a regular file in the installed package", path=disk, hint=hint)
        return handle.read(), st.st_mode & 0o777


def _load_record(root: Path, engine: str, hint: str) -> dict | None:
    """record.json, checked: it is read back from site-packages, so any type or path may be in it."""
    path = _record_dir(root, engine) / "record.json"
    record = read_json(path, "the installed-overlay record", hint=hint)
    if record is None:
        return None
    files, patches = record.get("files", {}), record.get("patches", [])
    if not (isinstance(record.get("state"), str) and isinstance(files, dict)
            and all(isinstance(rel, str) and isinstance(info, dict)
                    and all(isinstance(v, str | None) for v in info.values()) for rel, info in files.items())
            and isinstance(patches, list)
            and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in patches)):
        raise OverlayError("the installed-overlay record is corrupt (unexpected types)", path=path, hint=hint)
    for rel, info in files.items():
        check_relpath(rel, path)
        mode = info.get("original_mode")
        if _in_record_dir(rel) or (mode is not None and not _MODE.fullmatch(mode)):
            raise OverlayError(f"the installed-overlay record is corrupt (entry {rel!r})", path=path, hint=hint)
    return record


class _SiteLock:
    """The target lock. On the way out it removes the lock file and the `.engine-overlay/`
    directory this run created, unless the run left its record: a refused or failed run
    leaves site-packages exactly as it was (an existing lock or directory is never removed)."""

    def __init__(self, root: Path, engine: str) -> None:
        self.top = safe_join(root, RECORD_DIR)
        self.path = safe_join(root, f"{RECORD_DIR}/{engine}.lock")
        self.record = _record_dir(root, engine)
        self.lock = TargetLock(self.path, str(root))
        self.wrote = False  # set once this run has started its record

    def __enter__(self) -> _SiteLock:
        self.made_top, self.made_lock = not os.path.lexists(self.top), not os.path.lexists(self.path)
        try:
            self.lock.__enter__()
        except BaseException:
            self._tidy(lock=False)  # held by another run: its lock file is not ours
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._tidy(lock=self.made_lock and not (self.wrote and self.record.exists()))
        finally:
            self.lock.__exit__(*exc)

    def _tidy(self, lock: bool) -> None:
        if lock:
            self.path.unlink(missing_ok=True)
        if self.made_top:
            try:
                self.top.rmdir()  # only when empty
            except OSError:
                pass


def _check_targets(root: Path, payload) -> None:
    """Refuse, naming the patch or overlay file, before anything is locked or written: a path in
    `.engine-overlay/` (it could overwrite the saved originals or the record), and a path that
    is, or goes through, a symlink in the installed package (never written through or replaced)."""
    names = []
    for patch, reverse in payload.patches:
        for fp in patch.files:
            if stat.S_ISLNK((fp.old_mode if reverse else fp.new_mode) or 0):  # would be a mode-000 file
                raise OverlayError("the patch makes a symlink, which apply --installed does not create",
                                   path=patch.path, line=fp.line, hint="ship the file itself instead of a link")
            names += [(str(patch.path), fp.line, name) for name in fp.target(patch.strip) if name]
    names += [(str(item.source), None, item.path) for item in payload.overlay_files]
    for origin, line, name in names:
        if _in_record_dir(name):
            raise OverlayError(f"{name!r} is inside {RECORD_DIR}/, the undo record of `apply --installed`",
                               path=origin, line=line,
                               hint="patches and overlay files may not touch the record; rename the path")
        if os.path.islink(safe_join(root, name, origin, line, allow_final_link=True)):
            raise OverlayError(f"{name!r} is a symlink in the installed package", path=origin, line=line,
                               hint="the tool never writes through or replaces a symlink; leave the file "
                                    "out of the series, or reinstall the package without the link")


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
    _check_targets(root, payload)
    with _SiteLock(root, engine.name) as lock:
        record = _load_record(root, engine.name, hint=f"run `overlay unapply {engine.name} --installed --force`")
        if record is not None and record.get("state") == "saving":
            record = None  # killed while saving originals: nothing was changed, start over
        if record is not None:
            if record.get("state") == "applied" and record.get("patches") == _fingerprint(payload):
                report.status = "already-applied"
                report.warnings.append("this series is already applied to the installed package")
                return report
            state = "an interrupted apply" if record.get("state") != "applied" else "a different series"
            raise CheckFailed(f"{state} is recorded on the installed {engine.name}",
                              path=lock.record / "record.json",
                              hint=f"run `overlay unapply {engine.name} --installed` first")
        result = plan(TreeState(root), payload.patches, payload.overlay_files, payload.replaces,
                      overlay_label=f"overlay: {engine.name} files")
        report.patches = result.patches + payload.skipped
        report.overlay_files = result.overlay_files
        if not result.ok:
            report.status = "failed"
            return report
        if check:
            return report
        _write(root, engine, payload, result.final_changes(), lock)
        report.status = "applied"
        return report


def _fingerprint(payload) -> list:
    from .overlay_files import manifest_sha256

    names = [[p.name, p.sha256] for p, _ in payload.patches]
    if payload.overlay_files:
        names.append(["<overlay>", manifest_sha256(payload.overlay_files)])
    return names


def _write(root: Path, engine: Engine, payload, changes, lock: _SiteLock) -> None:
    record_dir = lock.record
    originals: dict[str, tuple[bytes, int] | None] = {}
    for path, (content, mode) in sorted(changes.items()):  # every target checked before the first write
        if _in_record_dir(path):
            raise OverlayError(f"{path!r} is inside {RECORD_DIR}/, the undo record", path=root)
        if content is not None and stat.S_ISLNK(mode):  # it would become a mode-000 regular file
            raise OverlayError(f"the series makes {path!r} a symlink, which apply --installed does not create",
                               path=root, hint="ship the file itself instead of a link")
        originals[path] = _read(root, path, root)
    lock.wrote = True
    shutil.rmtree(record_dir, ignore_errors=True)
    try:
        (record_dir / "originals").mkdir(parents=True)
        # "saving": originals are being copied, no installed file has changed yet
        write_json_atomic(record_dir / "record.json", {"engine": engine.name, "state": "saving", "files": {}})
        files = {}
        for path, found in originals.items():
            if found is not None:
                atomic_write(_original(root, engine.name, path), found[0], 0o644)
            files[path] = {
                "original_sha256": _sha(found[0]) if found else None,
                "original_mode": oct(found[1]) if found else None,
                "written_sha256": _sha(changes[path][0]),
            }
        record = {"engine": engine.name, "state": "applying", "files": files, "patches": _fingerprint(payload)}
        write_json_atomic(record_dir / "record.json", record)
    except BaseException:
        shutil.rmtree(record_dir, ignore_errors=True)  # nothing installed has changed yet
        raise
    for path, (content, mode) in sorted(changes.items()):
        disk = safe_join(root, path, root)
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
    hint = "reinstall the package to restore it"
    with _SiteLock(root, engine.name) as lock:
        record_path = lock.record / "record.json"
        record = _load_record(root, engine.name, hint=hint)
        if record is None:
            raise OverlayError(f"nothing is applied to the installed {engine.name}", path=root)
        files = record.get("files", {})
        if record.get("state") == "saving":  # interrupted before any installed file changed
            shutil.rmtree(lock.record)
            _remove_if_only_lock(lock.top, lock.path.name)
            return {"engine": engine.name, "target": str(root), "restored": [], "status": "unapplied"}
        # Check every current file and every saved original before the first write:
        # a refused unapply changes nothing, it never half-restores.
        originals: dict[str, bytes] = {}
        edited, damaged = [], []
        for path, info in sorted(files.items()):
            current = _read(root, path, record_path)
            if _sha(current[0] if current else None) not in (info.get("written_sha256"), info.get("original_sha256")):
                edited.append(path)
            if info.get("original_sha256") is not None:
                saved = _read(root, f"{RECORD_DIR}/{engine.name}/originals/{path}", record_path)
                if saved is None or _sha(saved[0]) != info["original_sha256"]:
                    damaged.append(path)
                else:
                    originals[path] = saved[0]
        if damaged:
            raise OverlayError(f"{len(damaged)} saved original(s) missing or corrupt, e.g. {damaged[0]}; "
                               "nothing was restored", path=_original(root, engine.name, damaged[0]), hint=hint)
        if edited and not force:
            raise CheckFailed(f"{len(edited)} file(s) changed since apply, e.g. {edited[0]}", path=root / edited[0],
                              hint="save your edits elsewhere, then run again with --force to restore the originals")
        restored = []
        for path, info in sorted(files.items()):
            disk = safe_join(root, path, record_path)
            if path not in originals:
                disk.unlink(missing_ok=True)
            else:
                atomic_write(disk, originals[path], int(info.get("original_mode") or "0o644", 8))
            restored.append(path)
        shutil.rmtree(lock.record)
        _remove_if_only_lock(lock.top, lock.path.name)
        return {"engine": engine.name, "target": str(root), "restored": restored, "status": "unapplied"}


def status_installed(engine: Engine, pin: Pin, payload, site: Path | None) -> Report:
    """Read the record next to the installed package and compare with the series."""
    dist = find_distribution(engine, site)
    root = installed_root(dist)
    report = Report("status", engine.name, pin.version, str(root), "installed", "ok")
    problem = check_version(dist, pin)
    if problem:
        report.warnings.append(problem)
    record = _load_record(root, engine.name, hint=f"run `overlay unapply {engine.name} --installed --force`") or {}
    if record.get("state") not in (None, "applied"):
        report.warnings.append("an interrupted apply is recorded: run `overlay unapply --installed`")
    from .status import fill_status

    applied = {name: (sha, None) for name, sha in record.get("patches", [])}

    def read(path: str) -> bytes | None:
        found = _read(root, path, root)
        return found[0] if found else None

    fill_status(report, payload, applied, read)
    return report
