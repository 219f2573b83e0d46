"""All printing goes through here: human output with rich, or JSON.

Commands build a plain report (dataclass or dict), then call :func:`emit` once.
The ``--format`` choice lives on the click context object (:class:`AppContext`)
set by the top-level group, so every command honours ``--format json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # rich is imported when something is printed (start-up time)
    from rich.console import Console

JSON_SCHEMA_VERSION = 1


@dataclass
class AppContext:
    """Options of the top-level ``overlay`` group, shared by every command."""

    project: Path | None = None
    fmt: str = "human"

    @property
    def json(self) -> bool:
        return self.fmt == "json"


def app_context(ctx: click.Context | None = None) -> AppContext:
    ctx = ctx or click.get_current_context()
    obj = ctx.find_object(AppContext)
    return obj if obj is not None else AppContext()


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


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
        payload = {"schema": JSON_SCHEMA_VERSION, "command": command, **to_jsonable(data)}
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    else:
        human(console())


def emit_error(error: Exception, fmt: str) -> None:
    """Print one user error: JSON on stdout, or one message on stderr."""
    if fmt == "json":
        body = error.to_dict() if hasattr(error, "to_dict") else {"message": str(error)}
        sys.stdout.write(json.dumps({"schema": JSON_SCHEMA_VERSION, "error": body}, indent=2) + "\n")
    else:
        err = console(stderr=True)
        err.print("[bold red]error:[/] ", end="")
        err.print(str(error), markup=False)
