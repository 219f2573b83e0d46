"""Where a baseline comes from: a snapshot file, or the tree at a git revision."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import gitops
from ..errors import OverlayError
from .grammar import MarkerConfig
from .snapshot import SKIP_DIRS, Snapshot, read_snapshot, snapshot_from_texts, take_snapshot

if TYPE_CHECKING:
    from .scancache import ScanCache

BINARY_PROBE = 8000  # git grep -I: a NUL in the first 8000 bytes makes a blob binary (buffer_is_binary)


def load_baseline(against: str, root: Path, paths: list[str] | None, config: MarkerConfig | None) -> Snapshot:
    """``against`` is a snapshot file if one exists at that path, else a git revision of the repo holding *root*."""
    if Path(against).is_file():
        return read_snapshot(Path(against))
    return snapshot_at_rev(root, against, paths, config or MarkerConfig())


@dataclass
class Revision:
    """A commit of the repository holding a root, and where the root lies in its work tree."""

    repo: gitops.Repo
    commit: str
    prefix: str  # the root's path from the top of the work tree, with a trailing "/" ("" at the top)


def resolve_rev(root: Path, rev: str) -> Revision:
    """The commit *rev* names in the repository holding *root*; an OverlayError if there is none."""
    top = next((d for d in (Path(root).resolve(), *Path(root).resolve().parents) if (d / ".git").exists()), None)
    repo = None
    if top is not None:
        try:
            repo = gitops.open_repo(top)
        except OverlayError:
            repo = None
    if repo is None:
        raise OverlayError(f"'{rev}' is neither a snapshot file nor usable as a git revision: {root} is not in a git repository",
                           path=root, hint="pass a snapshot file, or a --root inside a git work tree")
    commit = gitops.rev_parse(repo, rev)
    if commit is None:
        raise OverlayError(f"'{rev}' is neither a snapshot file nor a git revision", path=root,
                           hint="pass an existing snapshot file or a commit/tag/branch")
    prefix = os.path.relpath(Path(root).resolve(), Path(repo.working_tree_dir).resolve()).replace(os.sep, "/")
    return Revision(repo, commit, "" if prefix == "." else prefix + "/")


def snapshot_at_rev(root: Path, rev: str | Revision, paths: list[str] | None, config: MarkerConfig,
                    *, current: Snapshot | None = None, cache: ScanCache | None = None) -> Snapshot:
    """Snapshot of the files under *root* as they were at *rev*: the files that hold a tag word
    there, matching the globs (those ``git grep -l -I`` finds), read in one `git cat-file --batch`.

    Which files those are is found without reading the other blobs: a file that holds a tag
    word at *rev* either holds it in the work tree too — it is among the files *current* (a
    snapshot of the tree, taken before this call) scanned — or differs from *rev* there, and
    `git diff-index` (run after the scan, without refreshing the index: a file written since
    its index entry counts as changed) lists it. The list found, with each file's blob id, is
    kept in *cache* for the commit: a later check against it reads no tree, and no blob that a
    scanned file already has. Directories that the tree's scan skips (SKIP_DIRS) are skipped
    here too.
    """
    where = rev if isinstance(rev, Revision) else resolve_rev(root, rev)
    name = rev if isinstance(rev, str) else where.commit
    if current is None:
        current = take_snapshot(root, paths, config, cache=cache)
    prefix = where.prefix
    specs = [prefix + p.rstrip("/") for p in paths] if paths else [prefix or "."]
    key = json.dumps([where.commit, specs, list(config.globs)])
    known = cache.marked(key) if cache is not None else None
    # a blob with the bytes of a file just scanned is not read again (nor decoded or scanned)
    ours = {_blob_id(data, len(where.commit)): rel for rel, data in current.raw.items()}
    try:
        blobs = _stored(where, known, set(ours)) if known is not None else None
        if blobs is None:
            out = gitops.run(where.repo, "diff-index", "--name-only", "-z", "--no-renames", where.commit, "--", *specs)
            changed = [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p.startswith(prefix) and p]
            candidates = sorted({*changed, *(prefix + rel for rel in current.sources)})
            blobs = gitops.read_paths_at(where.repo, where.commit, candidates, set(ours))
            known = None
    except gitops.GitFailed as e:
        raise OverlayError(f"git failed reading {name}: {e.stderr.strip()}", path=root) from None
    needles = config.needles()
    below = _given(root, paths)
    texts: dict[str, str] = {}
    for path, (oid, data) in blobs.items():
        rel = path[len(prefix):]
        if not _globbed(rel, config) or _skipped(rel, below):
            continue
        if data is None:
            same = ours[oid]
            if current.raw[same][:BINARY_PROBE].find(b"\0") < 0:
                texts[rel] = current.sources[same]
        elif b"\0" not in data[:BINARY_PROBE] and any(n in data for n in needles):
            texts[rel] = data.decode("utf-8", "replace")
    if known is None and cache is not None:
        cache.put_marked(key, {prefix + rel: blobs[prefix + rel][0] for rel in texts})
    return snapshot_from_texts(texts, config, cache)


def _stored(where: Revision, known: dict[str, str], have: set[str]) -> dict[str, tuple[str, bytes | None]] | None:
    """The files *known* to hold a tag word at the commit, by blob id: those not in *have* read
    in one `git cat-file --batch` (None if one is missing: the list is then made again)."""
    wanted = sorted({oid for oid in known.values() if oid not in have})
    found: dict[str, tuple[str, bytes]] = {}
    if wanted:
        reader = gitops.ObjectReader(where.repo)
        try:
            found = reader.read_many(wanted)
        finally:
            reader.close()
    if any(oid not in have and found.get(oid, ("",))[0] != "blob" for oid in known.values()):
        return None
    return {path: (oid, None if oid in have else found[oid][1]) for path, oid in known.items()}


def _blob_id(data: bytes, id_length: int) -> str:
    """The id git gives a blob of *data* (SHA-1, or SHA-256 in a repository with 64-digit ids)."""
    return hashlib.new("sha256" if id_length == 64 else "sha1", b"blob %d\0" % len(data) + data).hexdigest()


def _given(root: Path, paths: list[str] | None) -> list[str] | None:
    """*paths* relative to *root*, as :func:`~.snapshot.list_files` walks them (None: the whole root)."""
    if not paths:
        return None
    root_s = os.path.abspath(root)
    return [os.path.relpath(os.path.normpath(os.path.join(root_s, p)), root_s).replace(os.sep, "/") for p in paths]


def _skipped(rel: str, given: list[str] | None) -> bool:
    """Whether the scan of the tree leaves *rel* out for lying in a SKIP_DIRS directory (below
    the path it was given, when paths were: a file named explicitly is read wherever it is)."""
    def skips(below: str) -> bool:
        return any(part in SKIP_DIRS for part in below.split("/")[:-1])

    if given is None:
        return skips(rel)
    for p in given:
        if rel == p or (p == "." and not skips(rel)) or (rel.startswith(p + "/") and not skips(rel[len(p) + 1:])):
            return False
    return True


def _globbed(rel: str, config: MarkerConfig) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel if "/" in g else name, g) for g in config.globs)
