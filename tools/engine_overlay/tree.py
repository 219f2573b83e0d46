"""A copy-on-write view of a target tree: its base plus pending in-memory changes.

Planning a whole series happens here, in memory, so a failing patch never
leaves a half-written file behind. The base is a directory on disk (an
installed package) or a commit's tree read from the object store (a git
target: the stored blobs, as `git apply --index` reads them). Symlinks are
entries like any other (mode 120000, the link target as content); a path that
goes through one does not exist, so nothing is ever read or written through it.
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import OverlayError
from .paths import check_relpath, parents

MODE_FILE = 0o100644
MODE_EXEC = 0o100755
MODE_LINK = 0o120000
MODE_TREE = 0o040000
MODE_GITLINK = 0o160000

Entry = tuple[bytes, int]  # (content, mode); a symlink's content is its target


def file_mode(st_mode: int) -> int:
    if stat.S_ISLNK(st_mode):
        return MODE_LINK
    return MODE_EXEC if st_mode & 0o111 else MODE_FILE


def is_link(mode: int | None) -> bool:
    return mode is not None and (mode & 0o170000) == MODE_LINK


class TreeState:
    """Reads from the directory *root*, overlaid with the changes planned so far."""

    hash_name = "sha1"  # how blob ids in patches are computed for this target

    def __init__(self, root: Path) -> None:
        self.root = root
        self.changes: dict[str, tuple[bytes | None, int]] = {}
        self._below: dict[str, int] = {}  # directory -> files and links written below it by changes

    def commit(self, changes: dict[str, tuple[bytes | None, int]]) -> None:
        """Add planned *changes* to the view (keeps the index of written directories current)."""
        for path, (content, mode) in changes.items():
            before = path in self.changes and self.changes[path][0] is not None
            if before != (content is not None):
                step = 1 if content is not None else -1
                for parent in parents(path):
                    self._below[parent] = self._below.get(parent, 0) + step
            self.changes[path] = (content, mode)

    def written_below(self, path: str) -> bool:
        """Whether the planned changes put a file or link somewhere below *path*."""
        return self._below.get(path, 0) > 0

    # -- the base (subclasses read a commit instead of the disk) --------------------------------

    def _base_stat(self, path: str) -> os.stat_result | None:
        """lstat of *path* in the base; None when absent or below a non-directory."""
        current = self.root
        parts = path.split("/")
        for depth, part in enumerate(parts, 1):
            current = current / part
            try:
                st = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if depth < len(parts) and not stat.S_ISDIR(st.st_mode):
                return None
        return st

    def _base_kind(self, path: str) -> str | None:
        """'file', 'link', 'dir' or None (absent, or below a non-directory) in the base."""
        st = self._base_stat(path)
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "link"
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        return "file" if stat.S_ISREG(st.st_mode) else "other"

    def _base_read(self, path: str) -> Entry | None:
        st = self._base_stat(path)
        disk = self.root / path
        if st is not None and stat.S_ISLNK(st.st_mode):
            return os.fsencode(os.readlink(disk)), MODE_LINK
        if st is not None and stat.S_ISREG(st.st_mode):
            return disk.read_bytes(), file_mode(st.st_mode)
        return None

    def base_files_under(self, path: str) -> Iterator[str]:
        """Every non-directory entry below the base directory *path*."""
        top = self.root / path
        for dirpath, dirnames, filenames in os.walk(top):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                yield f"{rel}/{name}"

    # -- the view -------------------------------------------------------------------------------

    def read(self, path: str, origin: str = "", line: int | None = None) -> Entry | None:
        """(content, mode) of a file or symlink; None when absent or a directory."""
        check_relpath(path, origin, line)
        if path in self.changes:
            content, mode = self.changes[path]
            return None if content is None else (content, mode)
        for parent in parents(path):
            if parent in self.changes and self.changes[parent][0] is not None:
                return None  # replaced by a file or link: nothing below it
        entry = self._base_read(path)
        if entry is None and self._base_kind(path) == "other":
            raise OverlayError(f"{path!r} is not a regular file in the target", path=origin or None, line=line)
        return entry

    def kind(self, path: str) -> str | None:
        """'file', 'link', 'dir' or None for *path* after the planned changes."""
        if path in self.changes:
            content, mode = self.changes[path]
            if content is not None:
                return "link" if is_link(mode) else "file"
        for parent in parents(path):
            if parent in self.changes and self.changes[parent][0] is not None:
                return None
        if self.written_below(path):
            return "dir"
        if path in self.changes:
            return None
        base = self._base_kind(path)
        if base == "dir" and all(self.changes.get(p, (b"", 0))[0] is None for p in self.base_files_under(path)):
            return None  # everything below it is deleted
        return base

    def base_kind(self, path: str) -> str | None:
        """What *path* is in the base, before any planned change."""
        return self._base_kind(path)

    def check(self, path: str, origin: str = "", line: int | None = None) -> None:
        """Refuse a name that may not be in a tree (absolute, `..`, `.git`, ...)."""
        check_relpath(path, origin, line)

    def exists(self, path: str, origin: str = "", line: int | None = None) -> bool:
        return self.read(path, origin, line) is not None

    def fork(self) -> TreeState:
        """A view with the same base and a copy of the pending changes (subclasses kept)."""
        other = copy.copy(self)
        other.changes = dict(self.changes)
        other._below = dict(self._below)
        return other

    def set(self, path: str, content: bytes | None, mode: int) -> None:
        self.commit({path: (content, mode)})

    def blob(self, sha: str) -> bytes | None:
        """A blob by id (3-way bases, binary postimages); a directory has no object store."""
        return None

    def prefetch(self, paths: set[str]) -> None:
        """A hint: these paths will be read (a commit's tree reads them in one go)."""

    def close(self) -> None:
        pass


class GitTreeState(TreeState):
    """A :class:`TreeState` whose base is a commit's tree, read through one `git cat-file --batch`.

    Planning against the stored blobs of the commit the branch will grow from
    (rather than whatever is checked out, converted by attributes) is what
    `git apply --index` does, and keeps the plan and the commits consistent.
    """

    def __init__(self, repo, rev: str) -> None:
        from .gitops import ObjectReader

        super().__init__(Path(repo.working_tree_dir))
        self.objects = ObjectReader(repo)
        found = self.objects.read(f"{rev}^{{tree}}")
        if found is None:
            raise OverlayError(f"revision {rev} has no tree", path=repo.working_tree_dir)
        self.hash_name = self.objects.hash_name
        self._root_tree = found[0]
        self._trees: dict[str, dict[bytes, tuple[bytes, bytes]] | None] = {}
        self._blobs: dict[str, bytes] = {}

    def prefetch(self, paths: set[str]) -> None:
        wanted = []
        for path in paths:
            entry = self._entry(path) if path and "\0" not in path else None
            if entry is not None and entry[0] not in (MODE_TREE, MODE_GITLINK) and entry[1] not in self._blobs:
                wanted.append(entry[1])
        for sha, (kind, data) in self.objects.read_many(sorted(set(wanted))).items():
            if kind == "blob":
                self._blobs[sha] = data

    def _tree(self, directory: str) -> dict[bytes, tuple[bytes, bytes]] | None:
        if directory in self._trees:
            return self._trees[directory]
        if not directory:
            entries = self.objects.tree_entries(self._root_tree)
        else:
            parent, _, name = directory.rpartition("/")
            above = self._tree(parent)
            entry = above.get(os.fsencode(name)) if above is not None else None
            entries = self.objects.tree_entries(entry[1].hex()) if entry and int(entry[0], 8) == MODE_TREE else None
        self._trees[directory] = entries
        return entries

    def _entry(self, path: str) -> tuple[int, str] | None:
        parent, _, name = path.rpartition("/")
        entries = self._tree(parent)
        found = entries.get(os.fsencode(name)) if entries is not None else None
        return (int(found[0], 8), found[1].hex()) if found is not None else None

    def _base_kind(self, path: str) -> str | None:
        entry = self._entry(path)
        if entry is None:
            return None
        mode = entry[0]
        if mode == MODE_TREE:
            return "dir"
        return "link" if is_link(mode) else "file"  # a submodule (gitlink) is a leaf, like a file

    def _base_read(self, path: str) -> Entry | None:
        entry = self._entry(path)
        if entry is None or entry[0] == MODE_TREE:
            return None
        if entry[0] == MODE_GITLINK:  # what `git diff` shows for a submodule, as git apply reads it
            return b"Subproject commit %s\n" % entry[1].encode(), MODE_GITLINK
        data = self._blobs.get(entry[1])
        if data is None:
            data = self.objects.blob(entry[1])
        if data is None:
            raise OverlayError(f"the object of {path!r} is missing from the repository", path=self.root,
                               hint="run `git fsck`; the repository is incomplete")
        mode = MODE_LINK if is_link(entry[0]) else (MODE_EXEC if entry[0] & 0o111 else MODE_FILE)
        return data, mode

    def base_files_under(self, path: str) -> Iterator[str]:
        entries = self._tree(path) or {}
        for name, (mode, _sha) in sorted(entries.items()):
            rel = f"{path}/{os.fsdecode(name)}"
            if int(mode, 8) == MODE_TREE:
                yield from self.base_files_under(rel)
            else:
                yield rel

    def blob(self, sha: str) -> bytes | None:
        return self.objects.blob(sha)

    def close(self) -> None:
        self.objects.close()
