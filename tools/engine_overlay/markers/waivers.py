"""Waivers: intentional block changes, each with a reason and an upstream link or expiry.

A waiver names a baseline block by ``id`` or by ``file`` + ``qualname`` + ``hash``
(the baseline hash, a prefix of 8+ characters is enough). An expired waiver no
longer counts; a waiver whose block is intact again, or absent from the
baseline, is stale and reported so the file does not rot.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ..errors import OverlayError
from ..paths import check_relpath
from .compare import FAILING, BlockResult
from .grammar import Problem

WAIVER_KEYS = {"id", "file", "qualname", "hash", "reason", "upstream", "expires"}
EXAMPLE = """[[waiver]]
id = "talker-mtp-init"            # or: file = "...", qualname = "Cls.meth", hash = "3f2a9c01"
reason = "upstream moved the talker setup into load_model"
upstream = "https://github.com/vllm-project/vllm/pull/12345"   # and/or
expires = 2026-09-30"""


@dataclass
class Waiver:
    reason: str
    id: str | None = None
    file: str | None = None
    qualname: str | None = None
    hash: str | None = None
    upstream: str | None = None
    expires: dt.date | None = None
    index: int = 0  # position in the file, 1-based, for messages

    def matches(self, r: BlockResult) -> bool:
        if self.id is not None:
            return r.id == self.id
        return r.file == self.file and r.qualname == self.qualname and r.hash.startswith(self.hash or "\0")

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and self.expires < today

    @property
    def label(self) -> str:
        name = self.id or f"{self.file}:{self.qualname or '<module>'}"
        return f"waiver #{self.index} ({name})"


@dataclass
class WaiverStatus:
    index: int
    block: str
    status: str  # applied | stale | expired | unused
    reason: str
    expires: str | None = None
    upstream: str | None = None


def load_waivers(path: Path) -> list[Waiver]:
    """Parse and validate a waiver file; any fault is one OverlayError naming the file."""
    import tomlkit  # here: most checks have no waiver file, and tomlkit costs start-up time
    from tomlkit.exceptions import TOMLKitError

    hint = f"each [[waiver]] needs id (or file+qualname+hash), reason, and upstream or expires:\n{EXAMPLE}"
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8")).unwrap()
    except FileNotFoundError:
        raise OverlayError("waiver file not found", path=path, hint="pass an existing file to --waivers") from None
    except RecursionError:
        raise OverlayError("waiver file is not valid TOML: nested too deeply", path=path, hint=hint) from None
    except (OSError, UnicodeDecodeError, ValueError, TOMLKitError) as e:
        raise OverlayError(f"waiver file is not valid TOML: {e}", path=path, hint=hint) from None
    extra = set(doc) - {"waiver"}
    if extra:
        raise OverlayError(f"unknown top-level key(s): {', '.join(sorted(extra))}", path=path, hint=hint)
    entries = doc.get("waiver", [])
    if not isinstance(entries, list):
        raise OverlayError("`waiver` must be an array of tables ([[waiver]])", path=path, hint=hint)
    out: list[Waiver] = []
    for n, e in enumerate(entries, 1):
        where = f"waiver #{n}"
        if not isinstance(e, dict):
            raise OverlayError(f"{where} is not a table", path=path, hint=hint)
        unknown = set(e) - WAIVER_KEYS
        if unknown:
            raise OverlayError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", path=path, hint=hint)
        for k in WAIVER_KEYS - {"expires"}:
            if k in e and not isinstance(e[k], str):
                raise OverlayError(f"{where}: {k} must be a string", path=path, hint=hint)
        if not str(e.get("reason", "")).strip():
            raise OverlayError(f"{where}: a reason is required", path=path, hint=hint)
        if "id" not in e and not all(k in e for k in ("file", "qualname", "hash")):
            raise OverlayError(f"{where}: name the block by id, or by file + qualname + hash", path=path, hint=hint)
        if "file" in e:
            try:
                check_relpath(e["file"])
            except OverlayError as err:
                raise OverlayError(f"{where}: file: {err.message}", path=path, hint=hint) from None
        if "hash" in e and len(e["hash"]) < 8:
            raise OverlayError(f"{where}: hash must have at least 8 characters", path=path, hint=hint)
        if "upstream" not in e and "expires" not in e:
            raise OverlayError(f"{where}: give an upstream link or an expiry date", path=path, hint=hint)
        expires = e.get("expires")
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError:
                raise OverlayError(f"{where}: expires must be a date (YYYY-MM-DD)", path=path, hint=hint) from None
        if isinstance(expires, dt.datetime):
            expires = expires.date()
        if expires is not None and not isinstance(expires, dt.date):
            raise OverlayError(f"{where}: expires must be a date (YYYY-MM-DD)", path=path, hint=hint)
        out.append(Waiver(e["reason"].strip(), e.get("id"), e.get("file"), e.get("qualname"),
                          e.get("hash"), e.get("upstream"), expires, n))
    return out


def apply_waivers(
    results: list[BlockResult], waivers: list[Waiver], source: str, today: dt.date | None = None,
) -> tuple[list[WaiverStatus], list[Problem]]:
    """Mark waived results; report expired and stale waivers (warnings, not failures)."""
    today = today or dt.date.today()
    statuses: list[WaiverStatus] = []
    problems: list[Problem] = []
    baseline = [r for r in results if r.status != "added"]
    for w in waivers:
        hits = [r for r in baseline if w.matches(r)]
        failing = [r for r in hits if r.status in FAILING]
        exp = w.expires.isoformat() if w.expires else None
        block = hits[0].label if hits else (w.id or f"{w.file}:{w.qualname}")
        if not hits:
            status = "stale"
            problems.append(Problem(source, None, f"{w.label} is stale: no such block in the baseline", "warning",
                                    "remove the waiver"))
        elif not failing:
            status = "stale"
            problems.append(Problem(source, None, f"{w.label} is stale: the block is intact again", "warning",
                                    "remove the waiver"))
        elif w.expired(today):
            status = "expired"
            problems.append(Problem(source, None, f"{w.label} expired on {exp}; it no longer waives the block", "warning",
                                    "restore the block, or renew the waiver with a reason"))
        else:
            status = "applied"
            for r in failing:
                r.waived, r.waiver = True, w.reason
        statuses.append(WaiverStatus(w.index, block, status, w.reason, exp, w.upstream))
    return statuses, problems
