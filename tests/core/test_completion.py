"""Shell completion through click's own mechanism (`_OVERLAY_COMPLETE=bash_source overlay`), run
as a user's shell runs it: the `overlay` console script in a subprocess, lazily loaded commands
included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points
from pathlib import Path

import engine_overlay
from helpers import require_tool

SRC = str(Path(engine_overlay.__file__).resolve().parents[1])


def overlay_script() -> str | None:
    """The installed `overlay` console script: beside this Python first (a venv need not be on PATH)."""
    for directory in dict.fromkeys(filter(None, (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)))):
        found = shutil.which("overlay", path=directory)
        if found:
            return found
    return shutil.which("overlay")


def require(tool: str | None, what: str) -> str:
    return require_tool(tool, what, "pip install -e . / apt-get install bash")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_OVERLAY_COMPLETE") and k not in
           ("COMP_WORDS", "COMP_CWORD")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    env["HOME"] = str(tmp_path)
    return {**env, **extra}


def complete(tmp_path: Path, words: str, *, program: list[str] | None = None) -> list[str]:
    """What `overlay` offers for the last word of *words* (bash_complete: `type,value` lines)."""
    argv = program or [require(overlay_script(), "the `overlay` console script (pip install -e .)")]
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=env_for(tmp_path, COMP_WORDS=words, COMP_CWORD=str(cword),
                                      _OVERLAY_COMPLETE="bash_complete"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line.startswith("plain,")]


def test_the_console_script_is_overlay_so_its_variable_is_overlay_complete():
    (script,) = entry_points(group="console_scripts", name="overlay")
    assert script.value == "engine_overlay.__main__:run"


def test_subcommand_names_complete(tmp_path):
    assert complete(tmp_path, "overlay ap") == ["apply"]
    assert {"apply", "fetch", "lint", "status", "markers", "check-markers", "transplant", "verify"} <= set(
        complete(tmp_path, "overlay "))


def test_lazily_loaded_commands_complete_with_their_options(tmp_path):
    assert complete(tmp_path, "overlay check-m") == ["check-markers"]
    assert complete(tmp_path, "overlay ver") == ["verify"]
    assert complete(tmp_path, "overlay markers sn") == ["snapshot"]
    assert "--against" in complete(tmp_path, "overlay check-markers --ag")
    # the shared options, after the subcommand, lazy ones included, and their values
    assert "--format" in complete(tmp_path, "overlay verify --fo")
    assert complete(tmp_path, "overlay apply vllm --format ") == ["human", "json"]


def test_python_m_engine_overlay_completes_under_the_same_name(tmp_path):
    assert complete(tmp_path, "overlay ap", program=[sys.executable, "-m", "engine_overlay"]) == ["apply"]


def test_source_scripts_for_bash_zsh_and_fish(tmp_path):
    script = require(overlay_script(), "the `overlay` console script (pip install -e .)")
    for shell, needle in (("bash", "complete -o nosort -F _overlay_completion overlay"),
                          ("zsh", "#compdef overlay"), ("fish", "complete --no-files --command overlay")):
        proc = subprocess.run([script], capture_output=True, text=True, timeout=60,
                              env=env_for(tmp_path, _OVERLAY_COMPLETE=f"{shell}_source"))
        assert proc.returncode == 0 and needle in proc.stdout and "_OVERLAY_COMPLETE" in proc.stdout, shell


def test_bash_itself_completes_apply(tmp_path):
    """`eval "$(_OVERLAY_COMPLETE=bash_source overlay)"`, then what bash's completion calls."""
    bash = require(shutil.which("bash"), "bash")
    script = require(overlay_script(), "the `overlay` console script (pip install -e .)")
    env = env_for(tmp_path, PATH=os.pathsep.join([os.path.dirname(script), os.environ.get("PATH", "")]))
    program = 'eval "$(_OVERLAY_COMPLETE=bash_source overlay)"; COMP_WORDS=(overlay ap); COMP_CWORD=1; ' \
              '_overlay_completion overlay; printf "%s\\n" "${COMPREPLY[@]}"'
    proc = subprocess.run([bash, "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["apply"]
