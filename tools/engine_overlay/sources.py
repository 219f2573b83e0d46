"""Fetch pinned upstream sources: download, verify sha256, cache, extract to a git work tree.

Layout of the cache (platformdirs' user cache, or $ENGINE_OVERLAY_CACHE):
  downloads/<file>                  verified archives (a `.part` file while downloading)
  trees/<engine>-<version>/         git work tree, one commit `upstream <engine> <version>`,
                                    tag `upstream/<engine>-<version>`
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from . import gitops
from .config import Engine, Pin
from .errors import CheckFailed, OverlayError
from .locking import TargetLock

CACHE_ENV = "ENGINE_OVERLAY_CACHE"
CHUNK = 1 << 20


@dataclass
class FetchResult:
    engine: str
    version: str
    tree: str
    archive: str | None
    downloaded: bool  # False on a cache hit
    tree_created: bool
    commit: str
    tag: str


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("engine-overlay"))


def upstream_tag(engine: str, version: str) -> str:
    return f"upstream/{engine}-{version}"


def tree_path(engine: str, version: str) -> Path:
    return cache_dir() / "trees" / f"{engine}-{version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _index_entry(index: str, project: str, filename: str) -> dict:
    """Find *filename* in the index's simple JSON API (PEP 691) with its digest."""
    import http.client
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{index.rstrip('/')}/simple/{project}/"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise OverlayError(f"cannot read the package index at {url}: {exc!r}",
                           hint="check the network or the pin's `index` in VERSIONS.toml") from exc
    for entry in data.get("files", []):
        if entry.get("filename") == filename:
            entry = dict(entry)
            entry["url"] = urllib.parse.urljoin(url, entry["url"])
            return entry
    raise OverlayError(f"{filename} is not on the index for project '{project}'", path="VERSIONS.toml",
                       hint=f"check the pin's file name (listing: {url})")


def _download(url: str, dest: Path, expected: str, size: int | None) -> None:
    import http.client
    import urllib.error
    import urllib.request

    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    show = sys.stderr.isatty()
    progress = None
    try:
        with urllib.request.urlopen(url, timeout=120) as response, open(part, "wb") as out:
            total = size or int(response.headers.get("Content-Length") or 0) or None
            if show:
                from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

                progress = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                                    transient=True)
                progress.start()
                task = progress.add_task(f"download {dest.name}", total=total)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                if progress is not None:
                    progress.update(task, advance=len(chunk))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        raise OverlayError(f"download of {dest.name} failed: {exc!r}", path=dest,
                           hint="run `overlay fetch` again; nothing was kept") from exc
    finally:
        if progress is not None:
            progress.stop()
    got = digest.hexdigest()
    if got != expected:
        part.unlink(missing_ok=True)
        raise CheckFailed(
            f"sha256 mismatch for {dest.name}: expected {expected}, got {got}; the download was deleted",
            path="VERSIONS.toml",
            hint="the file on the index is not the pinned one: check the pin, never use the file",
        )
    os.replace(part, dest)


def ensure_archive(engine: Engine, pin: Pin) -> tuple[Path, bool]:
    """Return the verified archive for *pin*, downloading it unless cached."""
    source = pin.source
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    dest = downloads / source.file
    if dest.exists():
        if sha256_file(dest) == source.sha256:
            return dest, False
        dest.unlink()  # corrupt cache entry: fetch it again rather than use it
    entry = _index_entry(source.index, engine.project, source.file)
    published = entry.get("hashes", {}).get("sha256")
    if published and published != source.sha256:
        raise CheckFailed(
            f"the index publishes sha256 {published} for {source.file}, "
            f"but VERSIONS.toml pins {source.sha256}",
            path="VERSIONS.toml", hint="the pin is wrong or the file was replaced upstream; check before trusting it",
        )
    _download(entry["url"], dest, source.sha256, entry.get("size"))
    return dest, True


def _extract_tar(archive: Path, dest: Path) -> None:
    import tarfile

    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OverlayError(f"cannot extract {archive.name}: {exc}", path=archive,
                           hint="delete the file from the cache and fetch again") from exc


def _extract_zip(archive: Path, dest: Path) -> None:
    import zipfile

    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = (dest / info.filename).resolve()
                if not target.is_relative_to(root):
                    raise OverlayError(f"archive member {info.filename!r} escapes the tree", path=archive)
                zf.extract(info, dest)
                mode = (info.external_attr >> 16) & 0o777
                if mode & 0o111 and not info.is_dir():
                    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    except (zipfile.BadZipFile, OSError) as exc:
        raise OverlayError(f"cannot extract {archive.name}: {exc}", path=archive,
                           hint="delete the file from the cache and fetch again") from exc


def _strip_top(dest: Path) -> None:
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        top = entries[0]
        for child in list(top.iterdir()):
            child.rename(dest / child.name)
        top.rmdir()


def _clone_git(pin: Pin, dest: Path) -> None:
    import git

    source = pin.source
    try:
        repo = git.Repo.clone_from(source.url, dest, no_checkout=True)
        tag_sha = repo.git.rev_parse(f"refs/tags/{source.tag}^{{commit}}")
    except git.GitCommandError as exc:
        raise OverlayError(f"cannot clone {source.url} at tag {source.tag}: {exc.stderr.strip()}",
                           path="VERSIONS.toml", hint="check the pin's url and tag") from exc
    if tag_sha != source.commit:
        raise CheckFailed(f"tag {source.tag} of {source.url} is commit {tag_sha}, but the pin says {source.commit}",
                          path="VERSIONS.toml", hint="the tag moved upstream; check before trusting it")
    repo.git.checkout("-q", "-B", "upstream", source.commit)


def fetch(engine: Engine, version: str | None = None) -> FetchResult:
    """Make the pinned sources available as a tagged git work tree (cached)."""
    pin = engine.pin(version)
    tree = tree_path(engine.name, pin.version)
    tag = upstream_tag(engine.name, pin.version)
    with TargetLock(cache_dir() / "locks" / f"{engine.name}-{pin.version}.lock", f"the cache of {engine.name}"):
        archive, downloaded = (None, False)
        if pin.source.kind != "git":
            archive, downloaded = ensure_archive(engine, pin)
        if (tree / ".git").exists():
            repo = gitops.open_repo(tree)
            sha = gitops.rev_parse(repo, f"refs/tags/{tag}")
            if sha:
                return FetchResult(engine.name, pin.version, str(tree), str(archive) if archive else None,
                                   downloaded, False, sha, tag)
        if tree.exists():
            shutil.rmtree(tree)  # an incomplete tree from an interrupted fetch
        for stale in tree.parent.glob(f".{tree.name}.tmp-*") if tree.parent.exists() else ():
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed fetch (we hold the lock)
        staging = tree.with_name(f".{tree.name}.tmp-{os.getpid()}")
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            if pin.source.kind == "git":
                _clone_git(pin, staging)
                repo = gitops.open_repo(staging)
                sha = pin.source.commit
                repo.create_tag(tag, ref=sha)
            else:
                staging.mkdir()
                if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
                    _extract_zip(archive, staging)
                else:
                    _extract_tar(archive, staging)
                if pin.source.kind == "sdist":
                    _strip_top(staging)
                repo = gitops.init_repo(staging)
                sha = gitops.commit_all(repo, f"upstream {engine.name} {pin.version}", pin.source.exclude)
                repo.create_tag(tag, ref=sha)
            os.replace(staging, tree)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return FetchResult(engine.name, pin.version, str(tree), str(archive) if archive else None,
                           downloaded, True, sha, tag)
