"""All printing goes through here: human output (rich on a terminal, plain text
elsewhere), or JSON.

Commands build a plain report (dataclass or dict), then call :func:`emit` once.
The ``--format`` choice lives on the click context object (:class:`AppContext`)
set by the top-level group, so every command honours ``--format json``.

Off a terminal (a pipe, a CI log) output goes through :class:`PlainConsole`: the
same words without styles, and tables never cut to a terminal's width. Importing
rich takes ~25 ms, a large part of a short `overlay apply`; it is loaded only
when a terminal will show its styles.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

if TYPE_CHECKING:
    from rich.console import Console

JSON_SCHEMA_VERSION = 1


@dataclass
class AppContext:
    """Options of the top-level ``overlay`` group, shared by every command. ``--project`` and
    ``--format`` may be given before or after the subcommand; a value after it wins."""

    project: Path | None = None
    fmt: str = "human"

    @property
    def json(self) -> bool:
        return self.fmt == "json"


def app_context(ctx: click.Context | None = None) -> AppContext:
    ctx = ctx or click.get_current_context()
    obj = ctx.find_object(AppContext)
    return obj if obj is not None else AppContext()


_UNPRINTABLE = re.compile("[\udc80-\udcff\x00-\x08\x0b-\x1f\x7f\u0080-\u009f]")


def printable(text: str) -> str:
    """*text* safe for a terminal: bytes that were not UTF-8 (surrogate escapes) and control
    characters (a name could carry terminal escape sequences) are shown as `\\xNN`."""
    def one(match: re.Match) -> str:
        code = ord(match.group())
        return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"

    return _UNPRINTABLE.sub(one, text)


class _SafeStream:
    """A text stream that writes :func:`printable` text (the one door to the terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text).replace("\\x0a", "\n"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def console(stderr: bool = False) -> Console | PlainConsole:
    stream = sys.stderr if stderr else sys.stdout
    if not _styled(stream):
        return PlainConsole(_SafeStream(stream))
    from rich.console import Console

    class SafeConsole(Console):
        """rich's Console, given only :func:`printable` text (its own style codes pass through)."""

        def print(self, *objects: Any, **options: Any) -> None:
            super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **options)

    return SafeConsole(stderr=stderr, highlight=False, soft_wrap=True)


def _styled(stream: TextIO) -> bool:
    """Whether rich would style this stream: a terminal, or colour forced as rich allows."""
    if os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE") == "1":
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# rich's markup tag: `[` + a style name or `/`; an odd number of backslashes before it escapes it
_TAG = re.compile(r"(\\*)\[([a-z#/@][^[]*?)]")


def strip_markup(text: str) -> str:
    """The text rich prints for *text*: tags removed, escapes resolved (as rich.markup.render)."""
    parts, position = [], 0
    for match in _TAG.finditer(text):
        slashes, tag = match.group(1), match.group(2)
        parts.append(text[position:match.start()].replace("\\[", "["))
        parts.append(slashes[: len(slashes) // 2] + (f"[{tag}]" if len(slashes) % 2 else ""))
        position = match.end()
    parts.append(text[position:].replace("\\[", "["))
    return "".join(parts)


_ESCAPABLE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """*text* made safe to print with markup on (what rich.markup.escape does)."""
    text = _ESCAPABLE.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


def styled(text: str, style: str) -> str:
    """*text* as markup in *style* (none when *style* is empty)."""
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


class PlainConsole:
    """The part of rich's Console the commands use, writing unstyled text to *file*."""

    def __init__(self, file: TextIO) -> None:
        self.file = file

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", markup: bool = True, **_: Any) -> None:
        parts = []
        for obj in objects:
            if isinstance(obj, PlainTable):
                parts.append(obj.render())
            else:
                parts.append(strip_markup(str(obj)) if markup else str(obj))
        self.file.write(sep.join(parts) + end)

    def out(self, *objects: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        self.file.write(sep.join(str(obj) for obj in objects) + end)


@dataclass
class PlainTable:
    """Columns padded to their widest cell, two spaces apart, as rich lays out a borderless table."""

    headers: Sequence[str]
    justify: Sequence[str]
    rows: list[list[str]]

    def render(self) -> str:
        cells = [list(self.headers), *([strip_markup(c) for c in row] for row in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        lines = []
        for row in cells:
            padded = [c.rjust(w) if j == "right" else c.ljust(w) for c, w, j in zip(row, widths, self.justify,
                                                                                  strict=True)]
            lines.append("  ".join(padded).rstrip())
        return "\n".join(lines)


def table(console: Console | PlainConsole, columns: Sequence[tuple[str, str]], rows: list[list[str]]) -> Any:
    """A borderless table of (header, justify) *columns* for *console*; cells may hold markup.

    On a terminal, long cells fold onto further lines instead of being cut short."""
    if isinstance(console, PlainConsole):
        return PlainTable([h for h, _ in columns], [j for _, j in columns], rows)
    from rich.table import Table

    result = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for header, justify in columns:
        result.add_column(header, justify=justify, overflow="fold")
    for row in rows:
        result.add_row(*(printable(cell) for cell in row))
    return result


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit(command: str, data: Any, human: Callable[[Console], None]) -> None:
    """Print a command's report once, as JSON (stable envelope) or for humans."""
    if app_context().json:
        import json

        payload = {"schema": JSON_SCHEMA_VERSION, "command": command, **to_jsonable(data)}
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    else:
        human(console())


def emit_text(text: str) -> None:
    """Print a ready document (markdown for a CI summary) as it is, escapes made safe."""
    _SafeStream(sys.stdout).write(text)


def emit_error(error: Exception, fmt: str) -> None:
    """Print one user error: JSON on stdout, or one message on stderr."""
    if fmt == "json":
        import json

        body = error.to_dict() if hasattr(error, "to_dict") else {"message": str(error)}
        sys.stdout.write(json.dumps({"schema": JSON_SCHEMA_VERSION, "error": body}, indent=2) + "\n")
    else:
        err = console(stderr=True)
        err.print("[bold red]error:[/] ", end="")
        err.print(str(error), markup=False)
