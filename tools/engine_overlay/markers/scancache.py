"""Scans by content: a file whose text was scanned before is not parsed again.

Scanning a marked file costs an ``ast.parse`` (scopes, strings): for thousands of marked
files that is most of a check, while the files themselves rarely change. A scan depends
only on the text, the tags and the scanner, so its result (blocks and problems, without
the file name) is kept under the sha256 of the text, in a namespace of the scanner's own
source, the Python version and the tags: an edit to the grammar or another Python starts
a new namespace, and a hit is what scanning would give.

Two layers: a dict for one run (a text seen on both sides of a comparison is scanned
once), and a SQLite file in the tool's cache directory for later runs. The file also keeps,
per commit, which of its files hold a tag word (a baseline at a git revision finds them
without reading the other blobs or checking the work tree again). The file is best
effort: unwritable, locked or damaged, it is ignored and every text is scanned. Entries
not used for EXPIRE_DAYS are dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .grammar import Problem

if TYPE_CHECKING:
    import sqlite3

    from .grammar import MarkerConfig
    from .snapshot import Block

CACHE_ENV = "ENGINE_OVERLAY_CACHE"  # the cache directory of `sources.cache_dir()` (a test keeps them one)
FILE = "markers-scans.sqlite3"
EXPIRE_DAYS = 30
CHUNK = 500  # keys per query (SQLite's variable limit is 999 in old builds)
_SOURCES = ("grammar.py", "snapshot.py", "scancache.py", "baseline.py")


def cache_file() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / FILE
    import platformdirs

    return Path(platformdirs.user_cache_dir("engine-overlay")) / FILE


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _namespace(config: MarkerConfig) -> str | None:
    digest = hashlib.sha256(b"engine-overlay scans 1\0")
    digest.update(f"{sys.implementation.name} {sys.version_info[:2]}\0".encode())
    digest.update(json.dumps([list(config.tags), list(config.inline_tags)]).encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            return None  # no source to tell one scanner from another: nothing is kept
    return digest.hexdigest()[:32]


def encode(blocks: list[Block], problems: list[Problem]) -> str:
    rows = [[b.kind, b.tag, b.start_line, b.end_line, b.qualname, b.body, b.hash, b.id, b.anchors_before,
             b.anchors_after, [[t.line, t.tag, t.text] for t in b.inline_tags], b.enclosing_hash] for b in blocks]
    return json.dumps([rows, [[p.line, p.message, p.severity, p.hint] for p in problems]], ensure_ascii=False)


def decode(data: str, file: str) -> tuple[list[Block], list[Problem]]:
    from .snapshot import Block, InlineTag

    rows, problems = json.loads(data)
    blocks = [Block(file, kind, tag, start, end, qualname, body, digest, bid, before, after,
                    [InlineTag(*t) for t in tags], enclosing)
              for kind, tag, start, end, qualname, body, digest, bid, before, after, tags, enclosing in rows]
    return blocks, [Problem(file, line, message, severity, hint) for line, message, severity, hint in problems]


class ScanCache:
    """Encoded scans by text key: this run's, then the file's (see the module docstring)."""

    def __init__(self, config: MarkerConfig, path: Path | None = None, *, persistent: bool = True) -> None:
        self.memo: dict[str, str] = {}
        self._keys: dict[str, str] = {}  # text -> its key (the same text on both sides is hashed once)
        self.new: dict[str, str] = {}
        self._ns = _namespace(config) if persistent else None
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._stale: list[str] = []  # keys found with an old `used` day
        self._marked_new: dict[str, str] = {}

    def _open(self) -> sqlite3.Connection | None:
        if self._ns is None:
            return None
        if self._db is None:
            import sqlite3

            try:
                path = self._path or cache_file()
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, timeout=1.0, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("CREATE TABLE IF NOT EXISTS scans (ns TEXT NOT NULL, key TEXT NOT NULL, "
                           "data TEXT NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID")
                db.execute("CREATE TABLE IF NOT EXISTS marked (ns TEXT NOT NULL, key TEXT NOT NULL, "
                           "data TEXT NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID")
            except (OSError, sqlite3.Error):
                self._ns = None
                return None
            self._db = db
        return self._db

    def key(self, text: str) -> str:
        found = self._keys.get(text)
        if found is None:
            found = self._keys[text] = text_key(text)
        return found

    def load(self, keys: list[str]) -> None:
        """Bring the stored scans of *keys* into this run's memo (one query per CHUNK keys)."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self.memo]
        db = self._open() if wanted else None
        if db is None:
            return
        import sqlite3

        today = _today()
        try:
            for start in range(0, len(wanted), CHUNK):
                part = wanted[start:start + CHUNK]
                rows = db.execute(f"SELECT key, data, used FROM scans WHERE ns = ? AND key IN "
                                  f"({','.join('?' * len(part))})", [self._ns, *part]).fetchall()
                for key, data, used in rows:
                    if isinstance(data, str):
                        self.memo[key] = data
                        if used != today:
                            self._stale.append(key)
        except sqlite3.Error:
            self._ns = None

    def get(self, key: str, file: str) -> tuple[list[Block], list[Problem]] | None:
        data = self.memo.get(key)
        if data is None:
            return None
        try:
            return decode(data, file)
        except (ValueError, TypeError):  # a damaged entry: scanned again, and stored again
            del self.memo[key]
            return None

    def put(self, key: str, blocks: list[Block], problems: list[Problem]) -> None:
        self.memo[key] = self.new[key] = encode(blocks, problems)

    def marked(self, key: str) -> dict[str, str] | None:
        """The files of a commit that hold a tag word, with their blob ids (see
        :func:`.baseline.snapshot_at_rev`), as :meth:`put_marked` stored them; None when not stored."""
        db = self._open()
        if db is None:
            return None
        import sqlite3

        try:
            row = db.execute("SELECT data, used FROM marked WHERE ns = ? AND key = ?", (self._ns, key)).fetchone()
            paths = json.loads(row[0]) if row else None
        except (sqlite3.Error, ValueError, TypeError):
            return None
        if not isinstance(paths, dict) or not all(isinstance(o, str) and o.isalnum() for o in paths.values()):
            return None
        if row[1] != _today():
            self._marked_new[key] = row[0]
        return paths

    def put_marked(self, key: str, paths: dict[str, str]) -> None:
        self._marked_new[key] = json.dumps(paths, sort_keys=True, ensure_ascii=False)

    def save(self) -> None:
        """Store this run's new scans, mark the old ones used today, drop expired ones."""
        if not self.new and not self._stale and not self._marked_new:
            return
        db = self._open()
        if db is None:
            return
        import sqlite3

        today = _today()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO scans VALUES (?, ?, ?, ?)",
                           [(self._ns, key, data, today) for key, data in self.new.items()])
            db.executemany("UPDATE scans SET used = ? WHERE ns = ? AND key = ?",
                           [(today, self._ns, key) for key in self._stale])
            db.executemany("INSERT OR REPLACE INTO marked VALUES (?, ?, ?, ?)",
                           [(self._ns, key, data, today) for key, data in self._marked_new.items()])
            if self.new or self._marked_new:
                for table in ("scans", "marked"):
                    db.execute(f"DELETE FROM {table} WHERE used < ?", (today - EXPIRE_DAYS,))
            db.execute("COMMIT")
        except sqlite3.Error:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self.new, self._stale, self._marked_new = {}, [], {}

    def close(self) -> None:
        self.save()
        if self._db is not None:
            self._db.close()
            self._db = None


def _today() -> int:
    return int(time.time() // 86400)
