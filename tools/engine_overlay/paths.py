"""Path containment: the one place that turns untrusted names into filesystem paths.

Names come from patch files, overlay directories, commit trailers, archive
members, snapshots and VERSIONS.toml. Every read, write, delete and rename of
the tool goes through :func:`safe_join` (or :func:`check_relpath` for names
inside a git tree), so a name can never leave its root: no absolute paths, no
`..`, no `.git`, and no existing symlink on the way.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from .errors import OverlayError


def _is_git_dir_name(part: str) -> bool:
    """`.git` as git itself sees it: case-insensitively, and with NTFS/HFS trailing dots and spaces."""
    return part.rstrip(". ").lower() == ".git"


def check_relpath(path: str, origin: str | os.PathLike | None = None, line: int | None = None) -> str:
    """Validate a tree-relative POSIX path named by untrusted input; return it.

    Refused: empty names, absolute names, `.` / `..` / empty components (`./x`,
    `a//b`, `a/`), NUL bytes and anything inside `.git` — the names git itself
    refuses to put in a tree (`verify_path`).
    """
    where = str(origin) if origin is not None else None
    if not isinstance(path, str) or not path:
        raise OverlayError("empty path", path=where, line=line, hint="name a file inside the tree")
    if "\0" in path or path.startswith("/"):
        raise OverlayError(f"path {path!r} escapes the tree", path=where, line=line,
                           hint="patch and overlay paths must stay inside the tree")
    parts = path.split("/")
    if any(part == ".." for part in parts):
        raise OverlayError(f"path {path!r} escapes the tree", path=where, line=line,
                           hint="patch and overlay paths must stay inside the tree")
    if any(part in ("", ".") for part in parts):
        raise OverlayError(f"path {path!r} is not a normalized file name", path=where, line=line,
                           hint="git refuses such names in a tree; write it without `./`, `//` or a trailing `/`")
    if any(_is_git_dir_name(part) for part in parts):
        raise OverlayError(f"path {path!r} points into .git", path=where, line=line,
                           hint="patches may not touch git metadata")
    return path


def check_name(name: str, what: str, origin: str | os.PathLike | None = None, line: int | None = None) -> str:
    """Validate one path component taken from configuration (an engine name, a file name)."""
    where = str(origin) if origin is not None else None
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or name.startswith("-") or _is_git_dir_name(name)):
        raise OverlayError(f"{what} {name!r} is not a plain file name", path=where, line=line,
                           hint="use letters, digits, '.', '_' and '-' only, without '/' or '..'")
    return name


def safe_join(root: Path, rel: str, origin: str | os.PathLike | None = None, line: int | None = None,
              *, allow_final_link: bool = False) -> Path:
    """*root*/*rel* after checking *rel* (see :func:`check_relpath`) and that no existing
    component below *root* is a symlink (the last one may be, with *allow_final_link*,
    for operations on the link itself)."""
    check_relpath(rel, origin, line)
    current = Path(root)
    parts = rel.split("/")
    for depth, part in enumerate(parts, 1):
        current = current / part
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            break
        if stat.S_ISLNK(st.st_mode) and not (allow_final_link and depth == len(parts)):
            raise OverlayError(f"path {rel!r} goes through the symlink {current}",
                               path=str(origin) if origin is not None else None, line=line,
                               hint="the tool never reads or writes through symlinks")
    return Path(root, *parts)


def read_below(root: Path, rels: list[str]) -> dict[str, bytes]:
    """``safe_join(root, rel).read_bytes()`` for each of *rels*, with each directory on the way
    checked once for all of them (not once per file) and each file opened without following a
    link: the same refusals, for the thousands of files a marker scan reads."""
    base = os.fspath(root)
    checked: set[str] = {""}  # directories below root seen not to be links
    out: dict[str, bytes] = {}
    for rel in rels:
        check_relpath(rel)
        parent = rel.rpartition("/")[0]
        if parent not in checked:
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                below = "/".join(parts[:depth])
                if below not in checked:
                    if stat.S_ISLNK(os.lstat(os.path.join(base, below)).st_mode):
                        raise OverlayError(f"path {rel!r} goes through the symlink {Path(root, below)}",
                                           hint="the tool never reads or writes through symlinks")
                    checked.add(below)
        full = os.path.join(base, rel)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP and os.path.islink(full):
                raise OverlayError(f"path {rel!r} goes through the symlink {Path(root, rel)}",
                                   hint="the tool never reads or writes through symlinks") from None
            raise
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size + 1)  # a regular file reads short only at its end
            if len(data) > size:  # it grew since: read on to the end
                chunks = [data]
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                data = b"".join(chunks)
        finally:
            os.close(fd)
        out[rel] = data
    return out


def contained(root: Path, path: Path) -> bool:
    """True when *path* (resolved) lies inside *root* (resolved)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):
        return False


def parents(path: str) -> list[str]:
    """The directories above a tree-relative *path*, outermost first (`a/b/c` -> `a`, `a/b`)."""
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def posix_parts(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts
