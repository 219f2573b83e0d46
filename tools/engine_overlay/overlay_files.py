"""Whole files kept under overlay/<engine>/ and copied into the target tree."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import OverlayError
from .tree import MODE_EXEC, MODE_FILE, check_relpath

IGNORED_DIRS = {"__pycache__", ".pytest_cache"}


@dataclass(frozen=True)
class OverlayFile:
    path: str  # relative to the overlay root == relative to the target tree
    source: Path
    mode: int

    def content(self) -> bytes:
        return self.source.read_bytes()


def collect(root: Path) -> list[OverlayFile]:
    """Every file under *root* (sorted); symlinks and special files are refused."""
    if not root.exists():
        return []
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                raise OverlayError("symlinked directory in the overlay", path=Path(dirpath) / name,
                                   hint="overlay files must be regular files inside the overlay root")
        for name in sorted(filenames):
            source = Path(dirpath) / name
            if name.endswith((".pyc", ".pyo")):
                continue
            if source.is_symlink() or not source.is_file():
                raise OverlayError("overlay entry is a symlink or not a regular file", path=source,
                                   hint="replace it with a regular file")
            rel = source.relative_to(root).as_posix()
            check_relpath(rel, str(source))
            mode = MODE_EXEC if os.stat(source).st_mode & 0o111 else MODE_FILE
            files.append(OverlayFile(rel, source, mode))
    return files


def manifest_sha256(files: list[OverlayFile]) -> str:
    """One digest over paths, modes and contents: detects any overlay change."""
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.path):
        digest.update(f"{item.path}\0{item.mode:o}\0".encode())
        digest.update(hashlib.sha256(item.content()).digest())
    return digest.hexdigest()
