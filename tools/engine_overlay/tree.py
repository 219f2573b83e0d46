"""A copy-on-write view of a target tree: files on disk plus pending in-memory changes.

Planning a whole series happens here, in memory, so a failing patch never
leaves a half-written file behind. Every path is checked before it is read:
absolute paths, `..`, `.git` and paths through symlinks are refused.
"""

from __future__ import annotations

import copy
import stat
from pathlib import Path, PurePosixPath

from .errors import OverlayError

MODE_FILE = 0o100644
MODE_EXEC = 0o100755
MODE_LINK = 0o120000


def check_relpath(path: str, origin: str, line: int | None = None) -> str:
    """Validate a tree-relative path named by a patch or overlay file."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\0" in path:
        raise OverlayError(f"path {path!r} escapes the tree", path=origin, line=line,
                           hint="patch and overlay paths must stay inside the tree")
    if ".git" in pure.parts:
        raise OverlayError(f"path {path!r} points into .git", path=origin, line=line,
                           hint="patches may not touch git metadata")
    return str(pure)


def file_mode(st_mode: int) -> int:
    return MODE_EXEC if st_mode & 0o111 else MODE_FILE


class TreeState:
    """Reads from *root*, overlaid with the changes planned so far."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.changes: dict[str, tuple[bytes | None, int]] = {}
        self._resolved_root = root.resolve()

    def _disk_path(self, path: str, origin: str, line: int | None) -> Path:
        check_relpath(path, origin, line)
        current = self.root
        for part in PurePosixPath(path).parts:
            current = current / part
            if current.is_symlink():
                raise OverlayError(f"path {path!r} goes through the symlink {current}", path=origin, line=line,
                                   hint="the tool never writes through symlinks; replace the link with a file")
        return current

    def read(self, path: str, origin: str = "", line: int | None = None) -> tuple[bytes, int] | None:
        if path in self.changes:
            content, mode = self.changes[path]
            return None if content is None else (content, mode)
        disk = self._disk_path(path, origin, line)
        try:
            st = disk.lstat()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise OverlayError(f"{path!r} is not a regular file in the target", path=origin, line=line)
        return disk.read_bytes(), file_mode(st.st_mode)

    def check(self, path: str, origin: str = "", line: int | None = None) -> None:
        """Refuse a path outside the tree or through a symlink, before anything is planned."""
        self._disk_path(path, origin, line)

    def exists(self, path: str, origin: str = "", line: int | None = None) -> bool:
        return self.read(path, origin, line) is not None

    def fork(self) -> TreeState:
        """A view with the same reads and a copy of the pending changes (subclasses kept)."""
        other = copy.copy(self)
        other.changes = dict(self.changes)
        return other

    def set(self, path: str, content: bytes | None, mode: int) -> None:
        self.changes[path] = (content, mode)


class GitTreeState(TreeState):
    """A :class:`TreeState` whose unchanged files come from a commit's tree, not the disk.

    Planning against the commit the branch will grow from (rather than whatever is
    checked out) keeps the plan and the commits consistent; symlinks are refused
    from the tree entries' modes.
    """

    def __init__(self, repo, rev: str) -> None:
        super().__init__(Path(repo.working_tree_dir))
        self.tree = repo.commit(rev).tree

    def _entry(self, path: str, origin: str, line: int | None):
        check_relpath(path, origin, line)
        node = self.tree
        parts = PurePosixPath(path).parts
        for depth, part in enumerate(parts):
            if node.type != "tree":
                return None
            try:
                node = node[part]
            except KeyError:
                return None
            if node.mode == MODE_LINK:
                raise OverlayError(f"path {path!r} goes through the symlink {'/'.join(parts[:depth + 1])}",
                                   path=origin, line=line,
                                   hint="the tool never writes through symlinks; replace the link with a file")
        if node.type != "blob":
            raise OverlayError(f"{path!r} is not a regular file in the target", path=origin, line=line)
        return node

    def check(self, path: str, origin: str = "", line: int | None = None) -> None:
        self._entry(path, origin, line)

    def read(self, path: str, origin: str = "", line: int | None = None) -> tuple[bytes, int] | None:
        if path in self.changes:
            content, mode = self.changes[path]
            return None if content is None else (content, mode)
        entry = self._entry(path, origin, line)
        if entry is None:
            return None
        return entry.data_stream.read(), (MODE_EXEC if entry.mode & 0o111 else MODE_FILE)
