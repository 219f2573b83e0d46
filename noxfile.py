"""Sessions: `nox` runs the default set (everything CI runs); `nox -s demo` is the main job."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "demo", "bridge", "check_markers"]

PYTHON = "3.11"
TORCH = "torch==2.13.0"  # the CPU build on local disk; never an open range


def install_tool(session: nox.Session) -> None:
    session.install("-e", ".[test]")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the tool, tests, benchmarks and nox; `overlay lint` over the payloads."""
    session.install("ruff")
    session.run("ruff", "check", "tools", "tests", "benchmarks", "noxfile.py")
    install_tool(session)
    session.run("overlay", "lint")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and integration tests of the tool (real git repositories in temp dirs)."""
    install_tool(session)
    # exit status 5 is pytest's "no tests collected": not a failure here.
    session.run("pytest", "tests", "--ignore=tests/engines", *session.posargs, success_codes=[0, 5])


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Fetch the pinned vLLM sources, lint the series, apply it and show the status."""
    install_tool(session)
    session.run("overlay", "fetch", "vllm")
    session.run("overlay", "lint")
    session.run("overlay", "apply", "vllm", "--rebuild")
    session.run("overlay", "status", "vllm")


@nox.session(python=PYTHON)
def bridge(session: nox.Session) -> None:
    """Build the FlexMLRT bridge (pybind11 + CMake) from source and run its tests."""
    session.install("numpy", "pytest")
    # Rebuilt every time, also in a reused venv: the build is what this session checks.
    session.install("--force-reinstall", "--no-deps", "./bridge")
    session.run("pytest", "bridge/tests", *session.posargs)


@nox.session(python=PYTHON)
def check_markers(session: nox.Session) -> None:
    """Marked-block tests: grammar, snapshots, compare, waivers, transplant."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/markers", *session.posargs)
