"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine_overlay.cli import cli


@pytest.fixture
def run_cli():
    """Invoke `overlay` in-process; returns (exit code, output, parsed JSON or None)."""

    def run(*args: str, project: Path | None = None):
        argv = (["--project", str(project)] if project else []) + list(args)
        result = CliRunner().invoke(cli, argv, catch_exceptions=False)
        data = None
        if "--format" in argv and "json" in argv:
            try:
                data = json.loads(result.stdout)
            except ValueError:
                data = None
        return result.exit_code, result.output, data

    return run


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_OVERLAY_CACHE", str(tmp_path / "cache"))
