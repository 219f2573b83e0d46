"""Where a baseline comes from: a snapshot file, or the tree at a git revision."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from .. import gitops
from ..errors import OverlayError
from .grammar import MarkerConfig
from .snapshot import Snapshot, read_snapshot, snapshot_from_texts


def load_baseline(against: str, root: Path, paths: list[str] | None, config: MarkerConfig | None) -> Snapshot:
    """``against`` is a snapshot file if one exists at that path, else a git revision of the repo holding *root*."""
    if Path(against).is_file():
        return read_snapshot(Path(against))
    return snapshot_at_rev(root, against, paths, config or MarkerConfig())


def snapshot_at_rev(root: Path, rev: str, paths: list[str] | None, config: MarkerConfig) -> Snapshot:
    """Snapshot of the files under *root* as they were at *rev* (``git grep`` to pre-filter, ``git show`` to read)."""
    try:
        repo = gitops.gitpython_repo(root, search_parent_directories=True)
    except gitops.no_repository_errors():
        raise OverlayError(f"'{rev}' is neither a snapshot file nor usable as a git revision: {root} is not in a git repository",
                           path=root, hint="pass a snapshot file, or a --root inside a git work tree") from None
    try:
        with repo:
            work = Path(repo.working_tree_dir).resolve()
            try:
                repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
            except gitops.command_error():
                raise OverlayError(f"'{rev}' is neither a snapshot file nor a git revision", path=root,
                                   hint="pass an existing snapshot file or a commit/tag/branch") from None
            prefix = os.path.relpath(Path(root).resolve(), work).replace(os.sep, "/")
            prefix = "" if prefix == "." else prefix + "/"
            specs = [prefix + p.rstrip("/") for p in paths] if paths else [prefix or "."]
            args = ["-l", "-I", "--fixed-strings", "--no-color"]
            for n in config.needles():
                args += ["-e", n.decode()]
            try:
                out = repo.git.grep(*args, rev, "--", *specs)
            except gitops.command_error() as e:
                if e.status == 1:  # no match
                    out = ""
                else:
                    raise OverlayError(f"git grep at {rev} failed: {e.stderr.strip()}", path=root) from None
            texts: dict[str, str] = {}
            for line in out.splitlines():
                path = line.split(":", 1)[1] if line.startswith(rev + ":") else line
                rel = path[len(prefix):] if path.startswith(prefix) else path
                if not _globbed(rel, config):
                    continue
                texts[rel] = repo.git.show(f"{rev}:{path}", strip_newline_in_stdout=False)
    except gitops.command_error() as e:
        raise OverlayError(f"git failed reading {rev}: {e.stderr.strip()}", path=root) from None
    return snapshot_from_texts(texts, config)


def _globbed(rel: str, config: MarkerConfig) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel if "/" in g else name, g) for g in config.globs)

