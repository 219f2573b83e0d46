"""The marker grammar: which comment lines open, close or tag downstream code.

Real code spells the same fence many ways (``# ---- Omni-new ----``,
``#  ------ Omni-new ------``, ``# ---Omni-new---``), so the grammar is tolerant
about spelling but strict about structure: a fence that cannot be paired
unambiguously is a problem reported with file:line, never a guessed block.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import OverlayError

DEFAULT_TAGS = ("Omni-new",)
DEFAULT_INLINE_TAGS = ("Omni-new", "Omni-specific", "[Omni]", "OMNI:", "NPU-specific")
DEFAULT_GLOBS = ("*.py",)
CONFIG_KEYS = ("tags", "inline_tags", "globs", "snapshot", "waivers")
CLOSER_MIN_DASHES = 20
FENCES_LISTED = 50  # fence lines named in the hint of an unpaired file


@dataclass(frozen=True)
class MarkerConfig:
    """Which tags mark downstream code, and in which files (per engine in VERSIONS.toml)."""

    tags: tuple[str, ...] = DEFAULT_TAGS
    inline_tags: tuple[str, ...] = DEFAULT_INLINE_TAGS
    globs: tuple[str, ...] = DEFAULT_GLOBS
    snapshot: str | None = None
    waivers: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> MarkerConfig:
        """Validate a ``[markers]`` TOML table; *source* names it in errors (e.g. 'VERSIONS.toml [vllm.markers]')."""
        if not isinstance(d, dict):
            raise OverlayError(f"{source}: the markers table must be a table", path=source)
        unknown = sorted(set(d) - set(CONFIG_KEYS))
        if unknown:
            raise OverlayError(
                f"unknown key(s) in the markers table: {', '.join(unknown)}",
                path=source,
                hint=f"allowed keys: {', '.join(CONFIG_KEYS)}",
            )
        kwargs: dict[str, Any] = {}
        for key in ("tags", "inline_tags", "globs"):
            if key not in d:
                continue
            value = d[key]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise OverlayError(
                    f"markers.{key} must be a list of non-empty strings", path=source,
                    hint=f'e.g. {key} = ["{(DEFAULT_TAGS + DEFAULT_GLOBS)[key == "globs"]}"]',
                )
            kwargs[key] = tuple(v.strip() for v in value)
        if "tags" in kwargs and not kwargs["tags"]:
            raise OverlayError("markers.tags must name at least one fence tag", path=source)
        for key in ("snapshot", "waivers"):
            if key in d:
                if not isinstance(d[key], str) or not d[key]:
                    raise OverlayError(f"markers.{key} must be a path (string)", path=source)
                kwargs[key] = d[key]
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "inline_tags": list(self.inline_tags), "globs": list(self.globs)}

    def needles(self) -> tuple[bytes, ...]:
        """The byte strings a file must contain to hold any marker (cheap pre-filter)."""
        words = sorted(set(self.tags) | set(self.inline_tags), key=len)
        kept: list[str] = []
        for w in words:
            if not any(k in w for k in kept):
                kept.append(w)
        return tuple(w.encode() for w in kept)


@dataclass
class Event:
    """One marker line: an opening/closing fence, a dashes-only closer, or an inline tag."""

    line: int  # 1-based
    kind: str  # "fence" | "closer" | "inline"
    indent: int = 0
    tag: str = ""
    id: str | None = None
    text: str = ""  # the comment text after an inline tag
    whole_line: bool = False  # inline tag on a comment-only line


@dataclass
class Problem:
    file: str
    line: int | None
    message: str
    severity: str = "error"
    hint: str | None = None


@dataclass
class RawBlock:
    """A paired fence: lines are 1-based and include the fences."""

    start_line: int
    end_line: int
    tag: str
    id: str | None
    indent: int
    inline: list[Event] = field(default_factory=list)


@dataclass
class Grammar:
    """Compiled regular expressions for one :class:`MarkerConfig`."""

    config: MarkerConfig
    fence: re.Pattern[str]
    closer: re.Pattern[str]
    inline: re.Pattern[str]

    @classmethod
    def compile(cls, config: MarkerConfig) -> Grammar:
        tags = "|".join(re.escape(t) for t in sorted(config.tags, key=len, reverse=True))
        fence = re.compile(
            r"^(?P<indent>[ \t]*)#[ \t]*-{3,}[ \t]*(?P<tag>" + tags + r")"
            r"(?:[ \t]*:[ \t]*(?P<id>[A-Za-z0-9_.][\w.:/-]*?))?[ \t]*-*[ \t]*$"
        )
        closer = re.compile(r"^(?P<indent>[ \t]*)#[ \t]*-{" + str(CLOSER_MIN_DASHES) + r",}[ \t]*$")
        alts = []
        for t in sorted(config.inline_tags, key=len, reverse=True):
            alts.append(re.escape(t) + (r"(?![\w-])" if t[-1].isalnum() else ""))
        inline = re.compile(r"#[ \t]*(?P<tag>" + "|".join(alts) + r")[ \t:]*(?P<text>.*)$")
        return cls(config, fence, closer, inline)


def comment_start(line: str) -> int:
    """Index of the first ``#`` outside a string literal on *line*, or -1."""
    quote: str | None = None
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if line.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif c == "#":
            return i
        elif c in "'\"":
            quote = c * 3 if line.startswith(c * 3, i) else c
            i += len(quote)
            continue
        i += 1
    return -1


def indent_width(prefix: str) -> int:
    return len(prefix.expandtabs(8))


def scan_events(lines: list[str], grammar: Grammar, skip: set[int] | None = None) -> list[Event]:
    """Find marker lines. *skip* holds 1-based line numbers inside multi-line strings."""
    needles = [n.decode() for n in grammar.config.needles()]
    events: list[Event] = []
    for idx, line in enumerate(lines):
        lineno = idx + 1
        if skip and lineno in skip:
            continue
        if "#" not in line:
            continue
        has_tag = any(n in line for n in needles)
        if not has_tag:
            if "-" * CLOSER_MIN_DASHES in line:
                m = grammar.closer.match(line)
                if m:
                    events.append(Event(lineno, "closer", indent_width(m["indent"])))
            continue
        m = grammar.fence.match(line)
        if m:
            events.append(Event(lineno, "fence", indent_width(m["indent"]), m["tag"], m["id"]))
            continue
        pos = comment_start(line)
        if pos < 0:
            continue
        m = grammar.inline.match(line, pos)
        if m:
            whole = not line[:pos].strip()
            events.append(
                Event(lineno, "inline", indent_width(line[:pos]) if whole else 0,
                      m["tag"], None, m["text"].strip(), whole)
            )
    return events


def pair_fences(events: list[Event], file: str) -> tuple[list[RawBlock], list[Event], list[Problem]]:
    """Pair fences by position; return blocks, inline tags outside blocks, and problems.

    Opening and closing fences are the same text, so the n-th fence closes the
    (n-1)-th.  A pair whose ids or indentation disagree means a fence is missing
    or nested: report it, keep neither, and carry on so every problem is listed.
    """
    blocks: list[RawBlock] = []
    loose: list[Event] = []
    problems: list[Problem] = []
    open_: Event | None = None
    inside: list[Event] = []

    def fail(line: int, message: str, hint: str) -> None:
        problems.append(Problem(file, line, message, hint=hint))

    for ev in events:
        if ev.kind == "inline":
            (inside if open_ else loose).append(ev)
            continue
        if open_ is None:
            if ev.kind == "fence":
                open_, inside = ev, []
            continue  # a dashes-only line outside a block is just a separator
        # ev closes open_
        if ev.kind == "fence" and ev.id and ev.id != open_.id:
            what = f"block '{open_.id}'" if open_.id else "the block"
            fail(ev.line, f"fence '{ev.tag}: {ev.id}' found while {what} opened at line {open_.line} is still open (nested or unclosed fences)",
                 "close every block before opening the next; a closing fence repeats the opening text")
        elif ev.indent != open_.indent:
            fail(ev.line, f"fence at line {ev.line} (indent {ev.indent}) pairs with the fence at line {open_.line} (indent {open_.indent}): unbalanced or nested fences",
                 "an opening and its closing fence must have the same indentation; add the missing fence")
        else:
            blocks.append(RawBlock(open_.line, ev.line, open_.tag, open_.id, open_.indent, inside))
        open_, inside = None, []
    if open_ is not None:
        fail(open_.line, f"fence '{open_.tag}' opened at line {open_.line} is never closed",
             "add the closing fence (the same text, or a line of 20+ dashes)")
    if problems:
        # Pairing by position cannot tell which fence is missing: any block recorded after
        # the fault could be upstream code between two real blocks. Record none and say
        # where every fence is, so the file is fixed instead of guessed at.
        # (at most FENCES_LISTED of them: every problem carries the list, so all of them would be quadratic)
        lines = [str(ev.line) for ev in events if ev.kind != "inline"]
        fences = ", ".join(lines[:FENCES_LISTED]) + (f" and {len(lines) - FENCES_LISTED} more"
                                                     if len(lines) > FENCES_LISTED else "")
        problems = [dataclasses.replace(p, hint=f"{p.hint}; no blocks are recorded for this file until its "
                                        f"fences pair up (fences at lines {fences})") for p in problems]
        loose = loose + [ev for block in blocks for ev in block.inline]
        blocks = []
    return blocks, loose, problems
