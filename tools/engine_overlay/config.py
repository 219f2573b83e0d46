"""VERSIONS.toml -> typed, validated Engine/Pin/Source objects (read once).

Reading uses :mod:`tomllib`; writing pins back uses :mod:`tomlkit` so that
comments and order survive ``overlay upgrade``. Validation collects *every*
problem (for ``overlay lint``) instead of stopping at the first.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from . import paths
from .errors import OverlayError
from .locking import atomic_write
from .problems import Problem

VERSIONS_FILE = "VERSIONS.toml"
SOURCE_KINDS = ("sdist", "wheel", "git")
DEFAULT_INDEX = "https://pypi.org"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_ENGINE_KEYS = {
    "version", "series", "overlay", "distributions", "replaces", "pins", "markers",
    "project",
}
_PIN_KEYS = {"kind", "file", "sha256", "index", "url", "tag", "commit", "exclude", "requires", "apply"}


@dataclass(frozen=True)
class Source:
    """Where one pinned version's upstream sources come from."""

    kind: str  # sdist | wheel | git
    file: str | None = None  # sdist/wheel file name on the index
    sha256: str | None = None
    index: str = DEFAULT_INDEX
    url: str | None = None  # git remote
    tag: str | None = None
    commit: str | None = None
    exclude: tuple[str, ...] = ()  # globs kept out of git in the work tree (binaries)


@dataclass(frozen=True)
class Pin:
    version: str
    source: Source
    requires: dict[str, SpecifierSet] = field(default_factory=dict)  # engine -> range
    apply: bool = True  # False: a reference pin (pairing, verify, diff-upstream), never patched

    @property
    def parsed(self) -> Version:
        return Version(self.version)


@dataclass(frozen=True)
class Engine:
    name: str
    version: str  # the default pin
    project: str  # project name on the package index
    series: Path  # absolute path of the series file
    overlay: Path  # absolute path of the overlay root
    distributions: tuple[str, ...]
    replaces: tuple[str, ...]
    pins: dict[str, Pin]
    markers: dict

    def pin(self, version: str | None = None) -> Pin:
        version = version or self.version
        if version in self.pins:
            return self.pins[version]
        try:
            wanted = Version(version)
        except InvalidVersion:
            wanted = None
        for pin in self.pins.values():
            if wanted is not None and pin.parsed == wanted:
                return pin
        raise OverlayError(
            f"engine '{self.name}' has no pin for version {version}",
            path=VERSIONS_FILE,
            hint=f"pinned versions: {', '.join(self.pins) or 'none'}; add "
            f'[{self.name}.pins."{version}"] to {VERSIONS_FILE}',
        )

    @property
    def series_dir(self) -> Path:
        return self.series.parent


@dataclass(frozen=True)
class Project:
    root: Path
    versions_file: Path
    engines: dict[str, Engine]

    def engine(self, name: str) -> Engine:
        if name not in self.engines:
            raise OverlayError(
                f"unknown engine '{name}'",
                path=self.versions_file,
                hint=f"engines defined: {', '.join(self.engines) or 'none'}",
            )
        return self.engines[name]


def find_project(start: Path | None = None) -> Path:
    """Walk up from *start* to the directory holding VERSIONS.toml."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / VERSIONS_FILE).is_file():
            return directory
    raise OverlayError(
        f"no {VERSIONS_FILE} found in {here} or any parent directory",
        hint="run inside an engine-overlay project or pass --project DIR",
    )


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    return 0


@functools.lru_cache(maxsize=8)
def _table_headers(text: str) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """(1-based line, keys) of every table header, in order, however its keys are quoted
    (`["a\\u0000b".pins."1.0"]`)."""
    found: list[tuple[int, tuple[str, ...]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped.startswith("[") or stripped.startswith("[["):
            continue
        try:
            table = tomllib.loads(stripped)
        except (tomllib.TOMLDecodeError, RecursionError):
            continue
        keys: list[str] = []
        while isinstance(table, dict) and len(table) == 1:
            key = next(iter(table))
            keys.append(key)
            table = table[key]
        found.append((number, tuple(keys)))
    return tuple(found)


def _headers(text: str) -> dict[tuple[str, ...], int]:
    """Table header keys -> the line of their first header."""
    found: dict[tuple[str, ...], int] = {}
    for number, keys in _table_headers(text):
        found.setdefault(keys, number)
    return found


def _header_line(text: str, *parts: str) -> int:
    headers = _headers(text)
    return headers.get(parts) or min((n for keys, n in headers.items() if keys[:1] == parts[:1]), default=0)


def _check_name(name: str, what: str, rel: str, line: int, problems: list[Problem]) -> bool:
    """A name used as one path component (engine, pin version, file): record a problem if unsafe."""
    try:
        paths.check_name(name, what)
    except OverlayError as exc:
        problems.append(Problem(rel, line, exc.message))
        return False
    return True


def _project_path_problem(root: Path, value: object) -> str | None:
    """Why *value* is not a project-relative path that stays inside *root* (symlinks resolved)."""
    if not isinstance(value, str):
        return "must be a relative path inside the project"
    try:
        paths.check_relpath(value)
    except OverlayError as exc:
        return f"must be a relative path inside the project ({exc.message})"
    if not paths.contained(root, root / value):
        return f"must stay inside the project, but {value!r} resolves to {(root / value).resolve()}"
    return None


def parse_versions(path: Path) -> tuple[Project | None, list[Problem]]:
    """Parse and validate VERSIONS.toml; return the project (if usable) and all problems."""
    rel = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OverlayError(f"cannot read {VERSIONS_FILE}: {exc.strerror}", path=path) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        return None, [Problem(rel, line, f"not UTF-8 text (byte {raw[exc.start]:#x}); TOML files must be UTF-8")]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else 0
        return None, [Problem(rel, line, f"invalid TOML: {exc}")]
    except RecursionError:  # tomllib recurses once per nesting level
        return None, [Problem(rel, 0, "invalid TOML: arrays or tables nested too deeply")]

    problems: list[Problem] = []
    engines: dict[str, Engine] = {}
    root = path.parent
    for name, table in data.items():
        line = _header_line(text, name)
        if not isinstance(table, dict):
            problems.append(Problem(rel, _line_of(text, name), f"'{name}' must be a table [{name}]"))
            continue
        if not _check_name(name, "engine name", rel, line, problems):
            continue  # it names cache, lock and record directories: never build a path from it
        engine = _parse_engine(name, table, root, text, rel, problems)
        if engine is not None:
            engines[name] = engine
        for key in sorted(set(table) - _ENGINE_KEYS):
            problems.append(Problem(rel, line, f"[{name}]: unknown key '{key}'"))
    _check_pairing(engines, text, rel, problems)
    return Project(root=root, versions_file=path, engines=engines), problems


def _parse_engine(name, table, root, text, rel, problems) -> Engine | None:
    line = _header_line(text, name)
    ok = True

    def need_str(key: str) -> str | None:
        nonlocal ok
        value = table.get(key)
        if not isinstance(value, str) or not value:
            problems.append(Problem(rel, line, f"[{name}]: '{key}' must be a non-empty string"))
            ok = False
            return None
        return value

    version = need_str("version")
    series = table.get("series", f"patches/{name}/series")
    overlay = table.get("overlay", f"overlay/{name}")
    for key, value in (("series", series), ("overlay", overlay)):
        why = _project_path_problem(root, value)
        if why:
            problems.append(Problem(rel, line, f"[{name}]: '{key}' {why}"))
            ok = False
    distributions = table.get("distributions", [name])
    replaces = table.get("replaces", [])
    for key, value in (("distributions", distributions), ("replaces", replaces)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(Problem(rel, line, f"[{name}]: '{key}' must be a list of strings"))
            ok = False
    for value in replaces if ok else ():
        try:
            paths.check_relpath(value)
        except OverlayError as exc:
            problems.append(Problem(rel, line, f"[{name}]: 'replaces': {exc.message}"))
            ok = False
    markers = table.get("markers", {})
    if not isinstance(markers, dict):
        problems.append(Problem(rel, line, f"[{name}]: 'markers' must be a table"))
        markers = {}
    else:
        from .markers.grammar import MarkerConfig

        markers_line = _header_line(text, name, "markers") or line
        try:
            MarkerConfig.from_dict(markers, f"{rel} [{name}.markers]")
        except OverlayError as exc:
            problems.append(Problem(rel, markers_line, exc.message))
        else:
            for key in ("snapshot", "waivers"):
                why = _project_path_problem(root, markers[key]) if key in markers else None
                if why:
                    problems.append(Problem(rel, markers_line, f"[{name}.markers]: '{key}' {why}"))
                    ok = False
    pins_table = table.get("pins", {})
    pins: dict[str, Pin] = {}
    if not isinstance(pins_table, dict) or not pins_table:
        problems.append(Problem(rel, line, f'[{name}]: no pins; add [{name}.pins."<version>"]'))
        ok = False
    else:
        for pin_version, pin_table in pins_table.items():
            pin = _parse_pin(name, pin_version, pin_table, text, rel, problems)
            if pin is not None:
                pins[pin_version] = pin
    if version and pins_table and isinstance(pins_table, dict) and version not in pins_table:
        problems.append(Problem(rel, line, f"[{name}]: default version {version} has no [{name}.pins.\"{version}\"]"))
    if not ok:
        return None
    return Engine(
        name=name,
        version=version,
        project=str(table.get("project", distributions[0] if distributions else name)),
        series=root / series,
        overlay=root / overlay,
        distributions=tuple(distributions),
        replaces=tuple(replaces),
        pins=pins,
        markers=markers,
    )


def _parse_pin(engine, version, table, text, rel, problems) -> Pin | None:
    line = _header_line(text, engine, "pins", version)
    where = f'[{engine}.pins."{version}"]'
    if not isinstance(table, dict):
        problems.append(Problem(rel, line, f"{where} must be a table"))
        return None
    start = len(problems)
    try:
        Version(version)
    except InvalidVersion:
        problems.append(Problem(rel, line, f"{where}: '{version}' is not a valid version (PEP 440)"))
    else:
        _check_name(version, f"{where}: version", rel, line, problems)  # names the tree and its lock
    for key in sorted(set(table) - _PIN_KEYS):
        problems.append(Problem(rel, line, f"{where}: unknown key '{key}'"))
    kind = table.get("kind")
    if kind not in SOURCE_KINDS:
        problems.append(Problem(rel, line, f"{where}: 'kind' must be one of {', '.join(SOURCE_KINDS)}"))
        return None
    if kind in ("sdist", "wheel"):
        file, sha = table.get("file"), table.get("sha256")
        if not isinstance(file, str) or not file:
            problems.append(Problem(rel, line, f"{where}: 'file' (the file name on the index) is required"))
        elif not _check_name(file, f"{where}: 'file'", rel, line, problems):
            pass  # the download is stored (and deleted on a bad digest) under this name
        elif kind == "sdist" and not file.endswith((".tar.gz", ".zip")):
            problems.append(Problem(rel, line, f"{where}: sdist file must end in .tar.gz or .zip"))
        elif kind == "wheel" and not file.endswith(".whl"):
            problems.append(Problem(rel, line, f"{where}: wheel file must end in .whl"))
        if not isinstance(sha, str) or not _SHA256.match(sha):
            problems.append(Problem(rel, line, f"{where}: 'sha256' must be 64 lowercase hex digits"))
    else:
        if not isinstance(table.get("url"), str):
            problems.append(Problem(rel, line, f"{where}: git source needs 'url'"))
        if not isinstance(table.get("tag"), str):
            problems.append(Problem(rel, line, f"{where}: git source needs 'tag'"))
        if not isinstance(table.get("commit"), str) or not _COMMIT.match(table["commit"]):
            problems.append(Problem(rel, line, f"{where}: git source needs the full 40-digit 'commit'"))
    exclude = table.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
        problems.append(Problem(rel, line, f"{where}: 'exclude' must be a list of globs"))
        exclude = []
    requires: dict[str, SpecifierSet] = {}
    raw_requires = table.get("requires", {})
    if not isinstance(raw_requires, dict):
        problems.append(Problem(rel, line, f"{where}: 'requires' must be a table engine = \"range\""))
        raw_requires = {}
    for other, spec in raw_requires.items():
        try:
            requires[other] = SpecifierSet(spec)
        except (InvalidSpecifier, TypeError):
            problems.append(Problem(rel, line, f"{where}: requires.{other} = {spec!r} is not a version range"))
    applies = table.get("apply", True)
    if not isinstance(applies, bool):
        problems.append(Problem(rel, line, f"{where}: 'apply' must be true or false"))
    if len(problems) > start:
        return None
    return Pin(
        version=version,
        source=Source(
            kind=kind,
            file=table.get("file"),
            sha256=table.get("sha256"),
            index=table.get("index", DEFAULT_INDEX),
            url=table.get("url"),
            tag=table.get("tag"),
            commit=table.get("commit"),
            exclude=tuple(exclude),
        ),
        requires=requires,
        apply=applies,
    )


def _check_pairing(engines: dict[str, Engine], text: str, rel: str, problems: list[Problem]) -> None:
    """Each pin's `requires` range must be met by some pinned version of the other engine."""
    for engine in engines.values():
        for pin in engine.pins.values():
            for other, spec in pin.requires.items():
                line = _header_line(text, engine.name, "pins", pin.version)
                if other not in engines:
                    problems.append(Problem(rel, line, f"{engine.name} {pin.version} requires unknown engine '{other}'"))
                    continue
                pinned = [p.version for p in engines[other].pins.values()]
                if not any(spec.contains(Version(v).public, prereleases=True) for v in pinned):
                    problems.append(
                        Problem(
                            rel, line,
                            f"{engine.name} {pin.version} requires {other}{spec}, but no pinned "
                            f"{other} version matches (pinned: {', '.join(pinned)})",
                        )
                    )


def load_project(root: Path) -> Project:
    """Load VERSIONS.toml from *root*; any problem is a configuration error (exit 2)."""
    path = root / VERSIONS_FILE
    if not path.is_file():
        raise OverlayError(f"{VERSIONS_FILE} not found", path=path, hint="pass --project DIR")
    project, problems = parse_versions(path)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more; run `overlay lint`)" if len(problems) > 1 else ""
        raise OverlayError(first.message + more, path=path, line=first.line or None,
                           hint=f"fix {VERSIONS_FILE}")
    assert project is not None
    return project


def _pin_values(source: dict) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in source.items() if value not in (None, (), [], {})}


def pin_table_text(engine: str, version: str, source: dict) -> str:
    """`[<engine>.pins."<version>"]` and its keys, as tomlkit writes them."""
    import tomlkit  # only when writing: keeps start-up light

    doc = tomlkit.document()
    outer, pins, table = tomlkit.table(is_super_table=True), tomlkit.table(is_super_table=True), tomlkit.table()
    for key, value in _pin_values(source).items():
        table[key] = value
    pins[version] = table
    outer["pins"] = pins
    doc[engine] = outer
    return tomlkit.dumps(doc)


def _placed_pin(text: str, engine: str, version: str, source: dict) -> str | None:
    """*text* with the new pin table after the engine's pin of the next lower version (or after
    the engine's own table): the rest of the file keeps every byte. None when there is no such
    table header to put it after (tomlkit then places it)."""
    lines = text.splitlines(keepends=True)
    headers = _table_headers(text)
    try:
        wanted = Version(version)
    except InvalidVersion:
        return None
    lower = []
    for number, keys in headers:
        if len(keys) == 3 and keys[:2] == (engine, "pins"):
            try:
                if Version(keys[2]) < wanted:
                    lower.append((Version(keys[2]), number))
            except InvalidVersion:
                continue
    if lower:
        start = max(lower)[1]
    else:
        start = next((number for number, keys in headers if keys == (engine,)), 0)
        if not start:
            return None
    following = next((number for number, _ in headers if number > start), len(lines) + 1)
    end = start  # 1-based: the table's last line that is not blank or a comment (those lead the next one)
    for number in range(start + 1, following):
        stripped = lines[number - 1].strip()
        if stripped and not stripped.startswith("#"):
            end = number
    before, after = lines[:end], lines[end:]
    if before and not before[-1].endswith("\n"):
        before[-1] += "\n"
    gap = "\n" if after and after[0].strip() else ""
    return "".join(before) + "\n" + pin_table_text(engine, version, source) + gap + "".join(after)


def write_pin(path: Path, engine: str, version: str, source: dict, make_default: bool = True) -> None:
    """Add a pin (and optionally make it the default), keeping comments, order and every other
    byte of the file: the table goes after the engine's pin of the next lower version. The
    result is read back and must be the old file's data plus this pin."""
    import copy

    import tomlkit  # only when writing: keeps start-up light

    text = path.read_text(encoding="utf-8")
    expected = copy.deepcopy(tomllib.loads(text))
    expected[engine].setdefault("pins", {})[version] = _pin_values(source)
    new = _placed_pin(text, engine, version, source)
    if new is None or tomllib.loads(new) != expected:
        doc = tomlkit.parse(text)  # tomlkit's own placement: at the end of the engine's pins
        table = doc[engine]
        if "pins" not in table:
            table["pins"] = tomlkit.table(is_super_table=True)
        pin_table = tomlkit.table()
        for key, value in _pin_values(source).items():
            pin_table[key] = value
        table["pins"][version] = pin_table
        new = tomlkit.dumps(doc)
    if make_default:
        doc = tomlkit.parse(new)
        doc[engine]["version"] = version
        new = tomlkit.dumps(doc)
        expected[engine]["version"] = version
    if tomllib.loads(new) != expected:  # never write a file that says something else
        raise OverlayError(f"cannot add [{engine}.pins.\"{version}\"] without changing other settings",
                           path=path, hint="add the table by hand")
    atomic_write(path, new)


def set_default_version(path: Path, engine: str, version: str) -> None:
    """Make an existing pin the engine's default, keeping comments and order."""
    import tomlkit  # only when writing: keeps start-up light

    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    doc[engine]["version"] = version
    atomic_write(path, tomlkit.dumps(doc))
