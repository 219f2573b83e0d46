"""`overlay pin`: find an upstream release and record it as a pin in VERSIONS.toml.

A release of an sdist/wheel engine is found in the index's simple JSON API (PEP 691),
which lists every file with its sha256 and whether it is yanked (PEP 592): the sdist
is preferred, else a wheel with the tags of the engine's wheel pins. A release of a
git engine is the newest remote tag matching the pin's tag pattern (`v{version}`),
with the commit it points to. The file is downloaded and must match the digest the
index publishes before anything is written; the new table goes into VERSIONS.toml
with tomlkit, every other byte of the file kept (config.write_pin).

`preview-upgrade --to latest` and `--to <a version not pinned yet>` resolve the same
way and use the result in memory (and the cache) only.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from . import gitops, paths, sources
from .config import DEFAULT_INDEX, SOURCE_KINDS, VERSIONS_FILE, Engine, Pin, Project, Source
from .errors import OverlayError

LATEST = "latest"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Release:
    """One upstream release, resolved: the pin it makes and how it was found."""

    engine: str
    version: str
    source: Source
    pinned: bool  # VERSIONS.toml pins it already (its own table is used, unchanged)
    yanked: str | None = None  # the index's reason, when a yanked release was allowed
    skipped: tuple[str, ...] = ()  # newer releases passed over, and why
    entry: dict | None = None  # the index's listing of the file

    @property
    def pin(self) -> Pin:
        return Pin(version=self.version, source=self.source)


@dataclass
class PinResult:
    engine: str
    version: str
    status: str  # pinned | already-pinned
    default: str  # the engine's default version afterwards
    default_changed: bool
    source: dict
    versions_file: str
    archive: str | None = None
    downloaded: bool = False
    notes: list[str] = field(default_factory=list)


def source_table(source: Source) -> dict:
    """The keys a pin table of *source* holds (what `write_pin` writes)."""
    if source.kind == "git":
        table = {"kind": "git", "url": source.url, "tag": source.tag, "commit": source.commit}
    else:
        table = {"kind": source.kind, "file": source.file, "sha256": source.sha256}
    if source.kind != "git" and source.index != DEFAULT_INDEX:
        table["index"] = source.index
    if source.exclude:
        table["exclude"] = list(source.exclude)
    return table


def with_pin(engine: Engine, release: Release) -> Engine:
    """*engine* with *release* among its pins (in memory only)."""
    if release.pinned:
        return engine
    return dataclasses.replace(engine, pins={**engine.pins, release.version: release.pin})


def _pinned(engine: Engine, version: Version) -> Pin | None:
    for key, pin in engine.pins.items():
        try:
            if Version(key) == version:
                return pin
        except InvalidVersion:
            continue
    return None


def _template(engine: Engine, kind: str | None = None) -> Pin | None:
    """The pin a new one follows (index, exclude, tag pattern): the default pin when it has
    *kind*, else the newest pin of that kind."""
    default = engine.pins.get(engine.version)
    if default is not None and (kind is None or default.source.kind == kind):
        return default
    same = [p for p in engine.pins.values() if p.source.kind == kind]
    return max(same, key=lambda p: p.parsed, default=None)


def _wanted_version(wanted: str) -> Version | None:
    if wanted == LATEST:
        return None
    try:
        return Version(wanted)
    except InvalidVersion:
        raise OverlayError(f"{wanted!r} is not a version (PEP 440) or `latest`",
                           hint="name a release such as 0.34.0, or `latest`") from None


def resolve(engine: Engine, wanted: str, *, pre: bool = False, allow_yanked: bool = False,
            kind: str | None = None, filename: str | None = None, url: str | None = None,
            tag_pattern: str | None = None, index: str | None = None) -> Release:
    """The release *wanted* (a version, or `latest`) of *engine*; a version VERSIONS.toml pins
    already is that pin, read without asking anyone. Pre-releases count only with *pre*, or when
    the engine's default pin is one itself (it follows them: `latest` never falls back to an
    older final release)."""
    version = _wanted_version(wanted)
    default_pin = engine.pins.get(engine.version)
    pre = pre or (default_pin is not None and default_pin.parsed.is_prerelease)
    if version is not None:
        existing = _pinned(engine, version)
        if existing is not None:
            return Release(engine.name, existing.version, existing.source, pinned=True)
    if kind is not None and kind not in SOURCE_KINDS:
        raise OverlayError(f"unknown source kind {kind!r}", hint=f"one of {', '.join(SOURCE_KINDS)}")
    if kind is None and filename is not None:
        kind = "wheel" if filename.endswith(".whl") else "sdist"
    default = _template(engine)
    if kind is None and default is not None and default.source.kind == "git":
        kind = "git"
    if kind == "git":
        release = _git_release(engine, version, pre, url, tag_pattern)
    else:
        release = _index_release(engine, version, pre, allow_yanked, kind, filename, index)
    existing = _pinned(engine, Version(release.version))
    if existing is not None:  # `latest` is a release VERSIONS.toml pins already
        return Release(engine.name, existing.version, existing.source, pinned=True, skipped=release.skipped)
    return release


# -- the package index ------------------------------------------------------------------------

@dataclass(frozen=True)
class _File:
    entry: dict
    version: Version
    kind: str  # sdist | wheel
    tags: frozenset

    @property
    def name(self) -> str:
        return self.entry["filename"]

    @property
    def yanked(self) -> str | None:
        """PEP 592: `yanked` is false, true, or the reason (a string)."""
        value = self.entry.get("yanked", False)
        if value is False or value is None:
            return None
        return value if isinstance(value, str) and value else "no reason given"


def _parse(entry: dict, project: str) -> _File | None:
    name = entry["filename"]
    try:
        if name.endswith(".whl"):
            dist, version, _build, tags = parse_wheel_filename(name)
            kind = "wheel"
        elif name.endswith((".tar.gz", ".zip")):
            dist, version = parse_sdist_filename(name)
            kind, tags = "sdist", frozenset()
        else:
            return None
    except (ValueError, InvalidVersion):  # eggs, installers, names of other projects
        return None
    if canonicalize_name(dist) != canonicalize_name(project):
        return None
    return _File(entry, version, kind, frozenset(tags))


def _tag_text(tags: frozenset) -> str:
    interpreters = sorted({t.interpreter for t in tags})
    abis = sorted({t.abi for t in tags})
    platforms = sorted({t.platform for t in tags})
    return "-".join(".".join(part) for part in (interpreters, abis, platforms))


def _choose(files: list[_File], kind: str | None, filename: str | None,
            wheel_tags: list[frozenset]) -> tuple[_File | None, str]:
    """The file of one release to pin, or None and why none."""
    if filename is not None:
        named = [f for f in files if f.name == filename]
        return (named[0], "") if named else (None, f"it has no file {filename}")
    sdists = sorted((f for f in files if f.kind == "sdist"), key=lambda f: not f.name.endswith(".tar.gz"))
    if kind in (None, "sdist") and sdists:
        return sdists[0], ""
    if kind == "sdist":
        return None, "it has no sdist"
    for tags in wheel_tags:
        for candidate in files:
            if candidate.kind == "wheel" and candidate.tags == tags:
                return candidate, ""
    if not wheel_tags:
        return None, "it has no sdist, and the engine pins no wheel whose tags a new wheel could match (name one with --file)"
    wanted = " or ".join(_tag_text(t) for t in wheel_tags)
    return None, f"it has no sdist and no wheel tagged {wanted} (name one with --file)"


def _index_release(engine: Engine, version: Version | None, pre: bool, allow_yanked: bool, kind: str | None,
                   filename: str | None, index: str | None) -> Release:
    template = _template(engine)  # the index of the default pin, else of any index pin
    if template is None or template.source.kind == "git":
        template = next((p for p in engine.pins.values() if p.source.kind != "git"), None)
    index = index or (template.source.index if template is not None else DEFAULT_INDEX)
    listing = [f for f in (_parse(e, engine.project) for e in sources.index_files(index, engine.project)) if f]
    releases: dict[Version, list[_File]] = {}
    for item in listing:
        releases.setdefault(item.version, []).append(item)
    wheel_pins = sorted((p for p in engine.pins.values() if p.source.kind == "wheel" and p.source.file),
                        key=lambda p: p.parsed, reverse=True)
    wheel_pins.sort(key=lambda p: p is not template)  # the default pin's wheel first, then the newest
    wheel_tags = []
    for pin in wheel_pins:
        try:
            tags = frozenset(parse_wheel_filename(pin.source.file)[3])
        except (ValueError, InvalidVersion):
            continue
        if tags not in wheel_tags:
            wheel_tags.append(tags)
    where = sources.index_url(index, engine.project)
    skipped: list[str] = []
    if version is None:
        for candidate in sorted(releases, reverse=True):
            if candidate.is_prerelease and not pre:
                skipped.append(f"{candidate}: a pre-release (--pre considers it)")
                continue
            chosen, why = _choose(releases[candidate], kind, filename, wheel_tags)
            if chosen is None:
                skipped.append(f"{candidate}: {why}")
                continue
            if chosen.yanked:
                skipped.append(f"{candidate}: yanked on the index ({chosen.yanked})")
                continue
            break
        else:
            raise OverlayError(f"no release of '{engine.project}' on {where} can be pinned"
                               + (f" ({'; '.join(skipped[:5])})" if skipped else ""),
                               hint="name a version, or pass --pre / --file")
    else:
        matching = [v for v in releases if v == version]
        if not matching:
            newest = ", ".join(str(v) for v in sorted(releases, reverse=True)[:5]) or "none"
            raise OverlayError(f"'{engine.project}' has no release {version} on {where}",
                               hint=f"the newest listed: {newest}")
        candidate = matching[0]
        if candidate.is_prerelease and not pre:
            raise OverlayError(f"{engine.project} {candidate} is a pre-release", hint="pass --pre to pin it")
        chosen, why = _choose(releases[candidate], kind, filename, wheel_tags)
        if chosen is None:
            files = ", ".join(f.name for f in releases[candidate])
            raise OverlayError(f"{engine.project} {candidate} cannot be pinned: {why}", hint=f"its files: {files}")
        if chosen.yanked and not allow_yanked:
            raise OverlayError(f"{chosen.name} is yanked on the index (PEP 592): {chosen.yanked}",
                               hint="pin another release, or pass --allow-yanked if you must")
    sha = chosen.entry["hashes"].get("sha256")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise OverlayError(f"the index publishes no sha256 for {chosen.name}", path=where,
                           hint="a pin needs the digest the index vouches for: use an index that lists it")
    paths.check_name(chosen.name, "the file name on the index")
    same_kind = _template(engine, chosen.kind)
    exclude = same_kind.source.exclude if same_kind is not None else ()
    source = Source(kind=chosen.kind, file=chosen.name, sha256=sha, index=index, exclude=exclude)
    return Release(engine.name, _version_text(candidate), source, pinned=False, yanked=chosen.yanked,
                   skipped=tuple(skipped), entry=chosen.entry)


def _version_text(version: Version) -> str:
    text = str(version)
    paths.check_name(text, "the version")  # names the cached tree and its lock
    return text


# -- git remotes --------------------------------------------------------------------------------

def _tag_regex(pattern: str) -> re.Pattern:
    if pattern.count("{version}") != 1:
        raise OverlayError(f"the tag pattern {pattern!r} must hold {{version}} once",
                           hint="e.g. --tag-pattern 'v{version}'")
    prefix, suffix = pattern.split("{version}")
    return re.compile(re.escape(prefix) + "(?P<version>.+)" + re.escape(suffix) + r"\Z")


def _git_release(engine: Engine, version: Version | None, pre: bool, url: str | None,
                 tag_pattern: str | None) -> Release:
    template = _template(engine, "git")
    url = url or (template.source.url if template is not None else None)
    if not url:
        raise OverlayError(f"{engine.name} has no git pin to take the remote from", path=VERSIONS_FILE,
                           hint="pass --url")
    if tag_pattern is None:
        tag_pattern = "v{version}"
        if template is not None and template.source.tag and template.version in template.source.tag:
            tag_pattern = template.source.tag.replace(template.version, "{version}", 1)
    regex = _tag_regex(tag_pattern)
    found: dict[Version, tuple[str, str]] = {}
    for tag, commit in sorted(gitops.remote_tags(url).items()):
        match = regex.match(tag)
        if not match:
            continue
        try:
            tagged = Version(match.group("version"))
        except InvalidVersion:
            continue
        if tagged not in found or match.group("version") == str(tagged):
            found[tagged] = (tag, commit)
    skipped: list[str] = []
    if version is None:
        for candidate in sorted(found, reverse=True):
            if candidate.is_prerelease and not pre:
                skipped.append(f"{candidate}: a pre-release (--pre considers it)")
                continue
            break
        else:
            raise OverlayError(f"no tag of {url} matching {tag_pattern!r} names a release",
                               hint="check the tag pattern (--tag-pattern), or pass --pre")
    else:
        if version not in found:
            newest = ", ".join(found[v][0] for v in sorted(found, reverse=True)[:5]) or "none"
            raise OverlayError(f"{url} has no tag {tag_pattern.replace('{version}', str(version))} for {version}",
                               hint=f"tags matching {tag_pattern!r}, newest first: {newest}")
        candidate = version
        if candidate.is_prerelease and not pre:
            raise OverlayError(f"{engine.name} {candidate} is a pre-release", hint="pass --pre to pin it")
    tag, commit = found[candidate]
    exclude = template.source.exclude if template is not None else ()
    source = Source(kind="git", url=url, tag=tag, commit=commit, exclude=exclude)
    return Release(engine.name, _version_text(candidate), source, pinned=False, skipped=tuple(skipped))


# -- the command --------------------------------------------------------------------------------

def pin(project: Project, engine_name: str, wanted: str, *, set_default: bool = False, **options) -> PinResult:
    """Resolve *wanted* for the engine, verify its file against the index's digest, and write
    its pin (and, with *set_default*, make it the default). A pinned version is left as it is."""
    from .config import set_default_version, write_pin

    engine = project.engine(engine_name)
    release = resolve(engine, wanted, **options)
    result = PinResult(engine.name, release.version, "already-pinned" if release.pinned else "pinned",
                       engine.version, False, source_table(release.source), str(project.versions_file),
                       notes=list(release.skipped))
    if release.yanked:
        result.notes.append(f"{release.source.file} is yanked on the index: {release.yanked}")
    if not release.pinned:
        if release.source.kind != "git":  # the bytes must be the ones the index vouches for
            archive, result.downloaded = sources.ensure_archive(with_pin(engine, release), release.pin,
                                                                release.entry)
            result.archive = str(archive)
        write_pin(project.versions_file, engine.name, release.version, source_table(release.source),
                  make_default=set_default)
    elif set_default and engine.version != release.version:
        set_default_version(project.versions_file, engine.name, release.version)
    if set_default:
        result.default_changed = engine.version != release.version
        result.default = release.version
    return result
