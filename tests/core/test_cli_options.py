"""--format and --project are accepted after the subcommand as well as before it, with the same
result (users type `overlay apply vllm --format json`, as `pip list --format json`); a value given
after the subcommand wins over one given before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from engine_overlay import cli as cli_module
from engine_overlay.cli import OverlayGroup, cli
from helpers import diff_of, make_project, make_repo

BASE = {"pkg/a.py": "".join(f"line {i}\n" for i in range(1, 21)), "pkg/b.py": "alpha\nbeta\n"}
MARKED = "def f():\n    # ---- Omni-new ----\n    x = 1\n    # ---- Omni-new ----\n    return x\n"


def invoke(*argv: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in argv], catch_exceptions=False)
    return result.exit_code, result.stdout


def placements(command: list[str | Path], project: Path) -> list[list[str | Path]]:
    """The same command with --format json and --project DIR before, after and split around it."""
    fmt, proj = ["--format", "json"], ["--project", project]
    return [[*fmt, *proj, *command], [*command, *fmt, *proj], [*proj, *command, *fmt],
            [*fmt, *command, *proj], [*command, *proj, *fmt]]


def same_everywhere(command: list[str | Path], project: Path) -> tuple[int, dict]:
    """Run every placement; each must give the same exit status and the same JSON document."""
    results = [invoke(*argv) for argv in placements(command, project)]
    code, out = results[0]
    data = json.loads(out)
    for argv, (other_code, other_out) in zip(placements(command, project), results, strict=True):
        assert (other_code, json.loads(other_out)) == (code, data), argv
    return code, data


@pytest.fixture
def scenario(tmp_path) -> tuple[Path, Path]:
    upstream = make_repo(tmp_path / "upstream", BASE)
    diff = diff_of(upstream, "pkg/b.py", "alpha\nBETA\n", "b")
    project = make_project(tmp_path / "proj", {"0001-b.patch": diff}, overlay={"pkg/npu/__init__.py": "x = 1\n"})
    return project, upstream


def test_apply_check(scenario):
    project, upstream = scenario
    code, data = same_everywhere(["apply", "demo", "--check", "--checkout", upstream], project)
    assert code == 0 and data["command"] == "apply" and [p["status"] for p in data["patches"]] == ["applied"]


def test_status(scenario):
    project, upstream = scenario
    code, data = same_everywhere(["status", "demo", "--checkout", upstream], project)
    assert data["command"] == "status" and [p["status"] for p in data["patches"]] == ["pending"]
    assert code == 1


def test_lint(scenario):
    project, _ = scenario
    code, data = same_everywhere(["lint"], project)
    assert code == 0 and data["command"] == "lint" and data["errors"] == 0


def test_lint_finds_the_project_given_after_only(scenario, tmp_path, monkeypatch):
    project, _ = scenario
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no VERSIONS.toml above: only --project can name it
    assert invoke("lint", "--project", project, "--format", "json")[0] == 0
    code, out = invoke("lint", "--format", "json")
    assert code == 2 and "error" in json.loads(out)


def test_fetch_of_an_unknown_engine_is_an_error_in_json(scenario):
    project, _ = scenario
    code, data = same_everywhere(["fetch", "nosuch"], project)
    assert code == 2
    assert data["error"]["message"] == "unknown engine 'nosuch'" and "demo" in data["error"]["hint"]


def test_check_markers_and_markers_snapshot(tmp_path, scenario):
    project, _ = scenario
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "runner.py").write_text(MARKED)
    snap = tmp_path / "snap.json"
    # a subcommand of the lazily loaded `markers` group, and the group itself, take them too
    for argv in (["markers", "snapshot", "--root", tree, "-o", snap, "--format", "json"],
                 ["markers", "--format", "json", "snapshot", "--root", tree, "-o", snap]):
        code, out = invoke(*argv)
        assert code == 0 and json.loads(out)["blocks"] == 1, argv
    code, data = same_everywhere(["check-markers", "--against", snap, "--root", tree], project)
    assert code == 0 and data["command"] == "check-markers" and data["ok"] is True
    (tree / "runner.py").write_text(MARKED.replace("x = 1", "x = 2"))
    code, data = same_everywhere(["check-markers", "--against", snap, "--root", tree], project)
    assert code == 1 and data["ok"] is False and data["summary"]["modified"] == 1


def test_verify_error_path(scenario):
    project, _ = scenario
    code, data = same_everywhere(["verify", "demo"], project)  # nothing fetched into this test's cache
    assert code == 2 and data["error"]["message"] == "demo 1.0.0 has not been fetched"
    code, data = same_everywhere(["verify", "nope"], project)
    assert code == 2 and data["error"]["message"] == "unknown engine 'nope'"


def test_a_value_after_the_subcommand_wins(scenario):
    project, _ = scenario
    code, out = invoke("--format", "human", "fetch", "nosuch", "--project", project, "--format", "json")
    assert code == 2 and json.loads(out)["error"]["message"] == "unknown engine 'nosuch'"
    result = CliRunner().invoke(cli, ["--format", "json", "fetch", "nosuch", "--project", str(project),
                                      "--format", "human"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "error: " in result.stderr and "unknown engine 'nosuch'" in result.stderr
    # the project given after the subcommand replaces the one given before
    code, out = invoke("--project", project.parent / "missing", "--format", "json", "lint", "--project", project)
    assert code == 0 and json.loads(out)["errors"] == 0


def test_invalid_values_are_refused_after_as_before():
    for argv in (["--format", "yaml", "lint"], ["lint", "--format", "yaml"]):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 2 and "'yaml' is not one of 'human', 'json'" in result.output, argv


def _all_commands(group: click.Group, ctx: click.Context, prefix: str = ""):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _all_commands(command, ctx, f"{prefix}{name} ")


def test_every_command_has_both_options_and_help_lists_them():
    ctx = click.Context(cli)
    names = []
    for name, command in _all_commands(cli, ctx):
        opts = [opt for param in command.params for opt in param.opts]
        assert opts.count("--format") == 1 and opts.count("--project") == 1, name
        names.append(name)
    assert {"apply", "status", "lint", "fetch", "markers", "markers snapshot", "check-markers",
            "transplant", "verify"} <= set(names)
    result = CliRunner().invoke(cli, ["apply", "--help"])
    assert result.exit_code == 0
    assert "--format [human|json]" in result.output and "--project DIRECTORY" in result.output
    assert result.output.count("--format") == 1  # added once, however often the command is resolved
    assert "may also follow the command" in CliRunner().invoke(cli, ["--help"]).output


def test_a_command_with_its_own_format_option_keeps_it():
    group = OverlayGroup(params=list(cli.params), callback=cli.callback)

    @group.command("report")
    @click.option("--format", "style", type=click.Choice(["markdown", "text"]), default="text")
    def report(style):
        click.echo(f"style={style} fmt={cli_module.ui.app_context().fmt}")

    ctx = click.Context(group)
    command = group.get_command(ctx, "report")
    opts = [opt for param in command.params for opt in param.opts]
    assert opts.count("--format") == 1 and opts.count("--project") == 1
    assert CliRunner().invoke(group, ["report", "--format", "markdown"]).output == "style=markdown fmt=human\n"
    assert CliRunner().invoke(group, ["--format", "json", "report"]).output == "style=text fmt=json\n"


def test_console_entry_point_takes_them_after(scenario):
    """The real `main()` (standalone_mode=False), in a subprocess."""
    project, _ = scenario
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(cli_module.__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "engine_overlay", "fetch", "nosuch", "--format", "json",
                           "--project", str(project)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert json.loads(proc.stdout)["error"]["message"] == "unknown engine 'nosuch'"
