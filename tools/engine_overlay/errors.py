"""The one error type for user errors.

Every problem a user can cause or fix (bad input, wrong configuration, a dirty
tree, a failed check) is raised as an :class:`OverlayError`. The CLI prints it as
one message naming the file and what to do, and exits with its ``exit_code`` —
never with a traceback.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a check failed, a conflict, something to fix in the tree
EXIT_USAGE = 2  # usage or configuration error


class OverlayError(Exception):
    """A user error: *what* went wrong, *where* (file[:line]) and *what to do*."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        hint: str | None = None,
        exit_code: int = EXIT_USAGE,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.hint = hint
        self.exit_code = exit_code

    @property
    def location(self) -> str | None:
        if self.path is None:
            return None
        return f"{self.path}:{self.line}" if self.line else self.path

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_dict(self) -> dict:
        return {
            "message": self.message,
            "file": self.path,
            "line": self.line,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class CheckFailed(OverlayError):
    """A check or apply that found problems in the tree (exit status 1)."""

    def __init__(self, message: str, **kwargs) -> None:
        kwargs.setdefault("exit_code", EXIT_CHECK_FAILED)
        super().__init__(message, **kwargs)
