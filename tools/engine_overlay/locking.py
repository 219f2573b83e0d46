"""A lock per target and a journal of the run in progress.

The lock is an `flock` on a file: the kernel drops it when the process dies
(kill -9 included), so there are no stale locks to clean up by hand. The
journal is written before the first change to a target and removed after the
last, so a run killed in between is detected by the next one.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from .errors import CheckFailed, OverlayError


class TargetLock:
    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> TargetLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OverlayError(f"cannot create lock file: {exc.strerror}", path=self.path,
                               hint="check permissions of the target") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            self._fd = None
            raise CheckFailed(f"another overlay run is working on {self.what}", path=self.path,
                              hint="wait for it to finish, then run again") from exc
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def atomic_write(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Write-then-rename with fsync, so a reader sees the old or the new file, never half.

    The file gets *mode* (permission bits), or keeps its own; on any error the
    temporary file is removed and the original is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.overlay-tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if os.path.lexists(tmp) and (tmp.is_symlink() or not tmp.is_file()):
        raise OverlayError("a symlink or special file sits where the tool writes its temporary file", path=tmp,
                           hint="remove it; the tool never writes through links")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode & 0o777)
        elif path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


Schema = dict[str, "type | None | tuple[type | None, ...]"]


def read_json(path: Path, what: str, hint: str, schema: Schema | None = None) -> dict | None:
    """A JSON object the tool wrote earlier, or None when there is none.

    The file lives in a repository or site-packages and may have been edited by
    anyone: anything unreadable, nested too deeply for the parser, not an object,
    or (with *schema*: key -> type, a tuple for several) of the wrong types is one
    :class:`OverlayError` naming the file. None in the types allows null or a
    missing key (files written by older versions lack it); other keys are required.
    """
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise OverlayError(f"{what} is unreadable or corrupt: {exc}", path=path, hint=hint) from exc
    if not isinstance(data, dict):
        raise OverlayError(f"{what} is corrupt (not a JSON object)", path=path, hint=hint)
    for key, types in (schema or {}).items():
        allowed = types if isinstance(types, tuple) else (types,)
        if not any(_is(data.get(key), t) for t in allowed):
            names = " or ".join("null" if t is None else t.__name__ for t in allowed)
            raise OverlayError(f"{what} is corrupt: '{key}' must be {names}", path=path, hint=hint)
    return data


def _is(value: object, kind: type | None) -> bool:
    if kind is None:
        return value is None
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))  # JSON true is no number
