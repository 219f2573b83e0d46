"""Fetch pinned upstream sources: download, verify sha256, cache, extract to a git work tree.

Layout of the cache (platformdirs' user cache, or $ENGINE_OVERLAY_CACHE):
  downloads/<file>                  verified archives (a `.part` file while downloading)
  trees/<engine>-<version>/         git work tree, one commit `upstream <engine> <version>`,
                                    tag `upstream/<engine>-<version>`
  locks/<engine>-<version>.lock     one fetch at a time per tree
Every one of these paths is built by :func:`cache_path` (one plain name, no symlink on
the way) and only directories inside the cache are ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import gitops, paths
from .config import Engine, Pin
from .errors import CheckFailed, OverlayError
from .locking import TargetLock, read_json, write_json_atomic

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
    warnings: list[str] = field(default_factory=list)


SOURCE_RECORD = "engine-overlay-source.json"  # in the tree's .git: which pin the tree was made from


def source_identity(pin: Pin) -> dict:
    """What makes a pinned source this source: a tree cached for another pin of the same
    version (an sdist, then a git tag) must never be reused for it."""
    source = pin.source
    return {"kind": source.kind, "file": source.file, "sha256": source.sha256, "url": source.url,
            "tag": source.tag, "commit": source.commit, "exclude": list(source.exclude)}


UNRECORDED = "it records no source (made by an older version of the tool)"


def source_record(tree: Path) -> dict | None:
    """The pin the cached *tree* says it was made from; None for a tree made before records."""
    return read_json(tree / ".git" / SOURCE_RECORD, "the cached tree's source record",
                     hint="run `overlay fetch` again")


def tree_problem(pin: Pin, record: dict) -> str | None:
    """None when the source *record* of a cached tree is *pin*'s, else what differs."""
    wanted = source_identity(pin)
    changed = sorted(key for key in wanted if record.get(key) != wanted[key])
    return f"it was made from another source ({', '.join(changed)} differ)" if changed else None


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("engine-overlay"))


def upstream_tag(engine: str, version: str) -> str:
    return f"upstream/{engine}-{version}"


def cache_path(area: str, name: str) -> Path:
    """cache_dir()/*area*/*name*: *name* is one plain component, and nothing on the way is a symlink.

    Config validation already refuses bad engine names and file names; this is the
    second line, for every path the cache writes to or deletes."""
    paths.check_name(name, f"cache entry in {area}/")
    return paths.safe_join(cache_dir(), f"{area}/{name}")


def tree_path(engine: str, version: str) -> Path:
    return cache_path("trees", f"{engine}-{version}")


def _remove_tree(path: Path) -> None:
    """rmtree, but only a real directory inside the cache (never a symlink, never elsewhere)."""
    cache = cache_dir()
    if path.is_symlink() or not paths.contained(cache, path) or path.resolve() == cache.resolve():
        raise OverlayError(f"refusing to delete {path}: it is not a directory inside the cache {cache}",
                           path=path, hint=f"remove it by hand if it is yours; ${CACHE_ENV} sets the cache")
    shutil.rmtree(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def index_url(index: str, project: str) -> str:
    """The project's page in the index's simple API."""
    return f"{index.rstrip('/')}/simple/{project}/"


def index_files(index: str, project: str) -> list[dict]:
    """Every file the index lists for *project* (its simple JSON API, PEP 691): filename,
    absolute url, hashes, yanked (PEP 592), size, as the index gives them."""
    import http.client
    import urllib.error
    import urllib.parse
    import urllib.request

    url = index_url(index, project)
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise OverlayError(f"cannot read the package index at {url}: {exc!r}",
                           hint="check the network or the pin's `index` in VERSIONS.toml") from exc
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise OverlayError(f"the package index at {url} did not answer with a PEP 691 file list",
                           hint="check the pin's `index` in VERSIONS.toml (the simple JSON API is needed)")
    found = []
    schemes = {"http", "https", urllib.parse.urlsplit(url).scheme}  # a listing may not point at local files
    for entry in files:
        if isinstance(entry, dict) and isinstance(entry.get("filename"), str) and isinstance(entry.get("url"), str):
            entry = dict(entry)
            entry["url"] = urllib.parse.urljoin(url, entry["url"])
            if urllib.parse.urlsplit(entry["url"]).scheme not in schemes:
                continue
            if not isinstance(entry.get("hashes"), dict):
                entry["hashes"] = {}
            found.append(entry)
    return found


def _index_entry(index: str, project: str, filename: str) -> dict:
    """Find *filename* in the index's simple JSON API (PEP 691) with its digest."""
    for entry in index_files(index, project):
        if entry["filename"] == filename:
            return entry
    raise OverlayError(f"{filename} is not on the index for project '{project}'", path="VERSIONS.toml",
                       hint=f"check the pin's file name (listing: {index_url(index, project)})")


def _download(url: str, dest: Path, expected: str, size: int | None) -> None:
    import http.client
    import urllib.error
    import urllib.request

    part = cache_path("downloads", dest.name + ".part")
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


def ensure_archive(engine: Engine, pin: Pin, entry: dict | None = None) -> tuple[Path, bool]:
    """Return the verified archive for *pin*, downloading it unless cached (*entry*: the
    index's listing of the file, when the caller has read it already)."""
    source = pin.source
    dest = cache_path("downloads", source.file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if sha256_file(dest) == source.sha256:
            return dest, False
        dest.unlink()  # corrupt cache entry: fetch it again rather than use it
    if entry is None or entry.get("filename") != source.file:
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


@dataclass
class _Member:
    """One archive entry, reduced to what the tree needs."""

    name: str  # as written in the archive
    kind: str  # file | dir | symlink | hardlink
    handle: object  # the TarInfo / ZipInfo to read the bytes from
    link: str = ""  # symlink target, or the archive name a hard link repeats
    executable: bool = False


def _refuse(archive: Path, name: str, why: str) -> OverlayError:
    return OverlayError(f"archive member {name!r} {why}; the archive was not used",
                        path=archive, hint="the pinned archive is unsafe to extract and was deleted "
                        "from the cache: check the pin in VERSIONS.toml before trusting it")


def _plan(archive: Path, members: list[_Member], strip: bool) -> list[tuple[str, _Member]]:
    """Check every member before anything is written; return (path below the tree, member).

    Archives are untrusted and tarfile's own checks have had bypasses (CVE-2025-4517),
    so the rules are ours: no absolute name, no `..`, nothing named `.git` at any depth
    (a shipped hook or `gitdir:` file would be used by the git work tree built here),
    no path through a symlink of the archive, symlinks only to places inside the tree
    that are not themselves symlinks, hard links only to an earlier file. With *strip*
    (sdists) the single top directory is dropped, so links are checked against the
    directory that becomes the tree.
    """
    split = []
    for m in members:
        if m.name.startswith("/"):
            raise _refuse(archive, m.name, "has an absolute name")
        normal = _normal(m.name)  # `./pkg-1.0/x` and `pkg-1.0//x` are common and harmless
        if normal:
            try:
                paths.check_relpath(normal)
            except OverlayError as exc:
                raise _refuse(archive, m.name, f"is refused ({exc.message})") from None
        split.append(normal.split("/") if normal else [])
    named = [(p, m) for p, m in zip(split, members, strict=True) if p]
    if strip and len({p[0] for p, _ in named}) == 1 and all(len(p) > 1 or m.kind == "dir" for p, m in named):
        named = [(p[1:], m) for p, m in named if len(p) > 1]
    planned = [("/".join(p), m) for p, m in named]
    links = {rel for rel, m in planned if m.kind == "symlink"}
    files: dict[str, tuple[str, bool]] = {}  # archive name -> (path, executable) of an earlier file
    seen: set[str] = set()
    for rel, m in planned:
        prefix = rel.split("/")
        for depth in range(1, len(prefix)):
            if "/".join(prefix[:depth]) in links:
                raise _refuse(archive, m.name, f"goes through the symlink {'/'.join(prefix[:depth])!r}")
        if rel in seen and (rel in links or m.kind in ("symlink", "hardlink")):
            raise _refuse(archive, m.name, "repeats the name of another member, and one of them is a link")
        seen.add(rel)
        if m.kind == "symlink":
            _check_symlink(archive, rel, m, links)
        elif m.kind == "hardlink":
            target = files.get(_normal(m.link))
            if target is None or m.link.startswith("/"):
                raise _refuse(archive, m.name, f"is a hard link to {m.link!r}, not to an earlier file of the archive")
            m.link, m.executable = target  # written as a copy of that file
        elif m.kind == "file":
            files[_normal(m.name)] = (rel, m.executable)
    return planned


def _normal(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _check_symlink(archive: Path, rel: str, m: _Member, links: set[str]) -> None:
    """Resolve the target step by step from the link's directory: it must stay in the tree,
    keep out of `.git` and not pass through another symlink (a chain resolves elsewhere)."""
    if not m.link or m.link.startswith("/") or "\0" in m.link:
        raise _refuse(archive, m.name, f"is a symlink to the absolute path {m.link!r}")
    stack = rel.split("/")[:-1]
    for part in m.link.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise _refuse(archive, m.name, f"is a symlink to {m.link!r}, outside the tree")
            stack.pop()
            continue
        stack.append(part)
        where = "/".join(stack)
        if where in links:
            raise _refuse(archive, m.name, f"is a symlink to {m.link!r}, through the symlink {where!r}")
        try:
            paths.check_relpath(where)
        except OverlayError as exc:
            raise _refuse(archive, m.name, f"is a symlink to {m.link!r} ({exc.message})") from None


def _write(dest: Path, planned: list[tuple[str, _Member]], open_member) -> None:
    """Create the checked members below *dest*, never following a link on the way or at the end."""
    for rel, m in planned:
        path = paths.safe_join(dest, rel)
        if m.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if m.kind == "symlink":
            os.symlink(m.link, path)
            continue
        if m.kind == "hardlink":  # a copy of the file written before (no seeking back in the archive)
            source = open(os.open(paths.safe_join(dest, m.link), os.O_RDONLY | os.O_NOFOLLOW), "rb")
        else:
            source = open_member(m.handle)
        mode = 0o755 if m.executable else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out, source:
            shutil.copyfileobj(source, out, CHUNK)
        os.chmod(path, mode)


_BROKEN = "cannot extract {}: {}"


def _extract_tar(archive: Path, dest: Path, strip: bool) -> None:
    import tarfile
    import zlib

    try:
        with tarfile.open(archive) as tar:
            members = []
            for info in tar.getmembers():
                if info.isreg():
                    kind = "file"
                elif info.isdir():
                    kind = "dir"
                elif info.issym():
                    kind = "symlink"
                elif info.islnk():
                    kind = "hardlink"
                else:
                    raise _refuse(archive, info.name, "is a device, fifo or other special file")
                members.append(_Member(info.name, kind, info, info.linkname, bool(info.mode & 0o111)))
            _write(dest, _plan(archive, members, strip), tar.extractfile)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise OverlayError(_BROKEN.format(archive.name, exc), path=archive,
                           hint="the archive was deleted from the cache; fetch again") from exc


def _extract_zip(archive: Path, dest: Path, strip: bool) -> None:
    """Zip members are files or directories: a symlink (mode 0o120000 in the external
    attributes) is refused rather than stored as a file holding the link target."""
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(archive) as zf:
            members = []
            for info in zf.infolist():
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise _refuse(archive, info.filename, "is a symlink (refused in zip archives)")
                members.append(_Member(info.filename, "dir" if info.is_dir() else "file", info,
                                       executable=bool(mode & 0o111)))
            _write(dest, _plan(archive, members, strip), zf.open)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise OverlayError(_BROKEN.format(archive.name, exc), path=archive,
                           hint="the archive was deleted from the cache; fetch again") from exc


def _check_no_git(staging: Path, archive: Path) -> None:
    """Defence in depth before `git init` (which would reuse a `.git` it finds): nothing
    extracted is git metadata, at any depth."""
    for directory, dirs, files in os.walk(staging):
        for name in dirs + files:
            try:
                paths.check_relpath(name)
            except OverlayError:
                raise _refuse(archive, Path(directory, name).relative_to(staging).as_posix(),
                              "is git metadata") from None


def _check_fresh_git(staging: Path, repo, archive: Path) -> None:
    """After `git init`: the repository is the plain `.git` directory git just made."""
    git_dir = staging / ".git"
    if git_dir.is_symlink() or not git_dir.is_dir() or Path(repo.git_dir).resolve() != git_dir.resolve():
        raise _refuse(archive, ".git", "is git metadata")


def _clone_git(pin: Pin, dest: Path) -> None:
    source = pin.source
    try:
        repo = gitops.clone(source.url, dest, no_checkout=True)
        tag_sha = repo.git.rev_parse(f"refs/tags/{source.tag}^{{commit}}")
    except gitops.command_error() as exc:
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
    lock = cache_path("locks", f"{engine.name}-{pin.version}.lock")
    with TargetLock(lock, f"the cache of {engine.name}"):
        archive, downloaded = (None, False)
        if pin.source.kind != "git":
            archive, downloaded = ensure_archive(engine, pin)
        warnings = []
        if (tree / ".git").exists():
            repo = gitops.open_repo(tree)
            sha = gitops.rev_parse(repo, f"refs/tags/{tag}")
            record = source_record(tree)
            problem = tree_problem(pin, record) if record is not None else None
            if record is None and sha and (pin.source.kind != "git" or sha == pin.source.commit):
                write_json_atomic(tree / ".git" / SOURCE_RECORD, source_identity(pin))  # adopt it
            elif record is None:
                problem = UNRECORDED
            if sha and pin.source.kind == "git" and sha != pin.source.commit:
                problem = f"its tag is commit {sha[:12]}, the pin says {pin.source.commit[:12]}"
            if sha and problem is None:
                return FetchResult(engine.name, pin.version, str(tree), str(archive) if archive else None,
                                   downloaded, False, sha, tag)
            if problem is not None:
                warnings.append(f"the cached tree {tree} was made again: {problem} "
                                f"(the old tree and its branches were removed)")
        if tree.exists() or tree.is_symlink():
            _remove_tree(tree)  # an incomplete tree from an interrupted fetch
        for stale in tree.parent.glob(f".{tree.name}.tmp-*") if tree.parent.exists() else ():
            _remove_tree(stale)  # left by a killed fetch (we hold the lock)
        staging = cache_path("trees", f".{tree.name}.tmp-{os.getpid()}")
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            if pin.source.kind == "git":
                _clone_git(pin, staging)
                repo = gitops.open_repo(staging)
                sha = pin.source.commit
                repo.create_tag(tag, ref=sha)
            else:
                staging.mkdir()
                extract = _extract_zip if archive.name.endswith((".whl", ".zip")) else _extract_tar
                try:
                    extract(archive, staging, strip=pin.source.kind == "sdist")
                    _check_no_git(staging, archive)
                    repo = gitops.init_repo(staging)
                    _check_fresh_git(staging, repo, archive)
                except OverlayError:
                    archive.unlink(missing_ok=True)  # verified but unusable: keep nothing of it
                    raise
                sha = gitops.commit_all(repo, f"upstream {engine.name} {pin.version}", pin.source.exclude)
                repo.create_tag(tag, ref=sha)
            write_json_atomic(staging / ".git" / SOURCE_RECORD, source_identity(pin))
            os.replace(staging, tree)
        finally:
            if staging.exists():
                _remove_tree(staging)
        return FetchResult(engine.name, pin.version, str(tree), str(archive) if archive else None,
                           downloaded, True, sha, tag, warnings)
