"""`overlay` never ends in a traceback: Ctrl-C anywhere is one line and status 130, a
RecursionError or MemoryError is one message and status 1."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from engine_overlay import cli as cli_module

# Ctrl-C (a KeyboardInterrupt) raised while the lazy `markers` commands are imported
INTERRUPT_AT_IMPORT = """
import importlib, sys
real = importlib.import_module
def import_module(name, *args):
    if name.endswith("markers.cli"):
        raise KeyboardInterrupt
    return real(name, *args)
importlib.import_module = import_module
from engine_overlay.cli import main
sys.argv = ["overlay", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("args", [["--help"], ["markers", "snapshot", "-o", "x.json"]],
                         ids=["while-parsing", "in-invoke"])
def test_ctrl_c_during_start_up_imports(tmp_path, args):
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_AT_IMPORT, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "Aborted" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()][0].endswith("interrupted")


def run_main(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["overlay", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main()
    return exit_info.value.code


@pytest.mark.parametrize("error", [RecursionError, MemoryError])
def test_resource_errors_in_a_command_are_one_message(monkeypatch, capsys, error):
    def boom(*_args, **_kwargs):
        raise error

    monkeypatch.setattr("engine_overlay.config.find_project", boom)
    assert run_main(monkeypatch, "lint") == 1
    captured = capsys.readouterr()
    assert error.__name__ in captured.err and "Traceback" not in captured.err
    assert run_main(monkeypatch, "--format", "json", "lint") == 1
    assert error.__name__ in json.loads(capsys.readouterr().out)["error"]["message"]


@pytest.mark.parametrize("error", [RecursionError, MemoryError, KeyboardInterrupt])
def test_errors_outside_invoke_are_one_message(monkeypatch, capsys, error):
    def boom(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(importlib, "import_module", boom)  # `--help` imports the lazy commands
    code = run_main(monkeypatch, "--help")
    err = capsys.readouterr().err
    assert code == (130 if error is KeyboardInterrupt else 1)
    assert err.strip() == "interrupted" if error is KeyboardInterrupt else error.__name__ in err


def test_exit_statuses_unchanged(monkeypatch, capsys):
    assert run_main(monkeypatch, "--version") == 0
    assert run_main(monkeypatch, "--bogus") == 2
    assert "No such option" in capsys.readouterr().err
