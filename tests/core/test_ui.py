"""Plain output off a terminal says exactly what rich would say, minus styles."""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.markup import render as rich_render

from engine_overlay import ui
from engine_overlay.report import PatchResult, Report, render

SAMPLES = [
    "[bold red]error:[/] the checkout is dirty",
    "[green]applied[/]  \\[#1 offset +3]",
    "a [0001] b [dim]c[/dim]",
    "vllm/envs.py: failed [#2 failed (patch line 9)]",
    "x\\\\[bold]y[/]",
    "trailing \\",
    "plain \\[not a tag",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_strip_markup_matches_rich(text):
    assert ui.strip_markup(text) == rich_render(text).plain


def test_escape_matches_rich_on_random_text():
    rng = random.Random(7)
    alphabet = "ab#/@[]\\ 0"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert ui.escape(text) == rich_escape(text), text
        assert ui.strip_markup(ui.escape(text)) == rich_render(rich_escape(text)).plain, text


def _report() -> Report:
    long_name = "0001-envs-register-the-vision-NPU-environment-variables-and-a-very-long-tail.patch"
    return Report("apply", "vllm", "0.32.0", "/src/vllm", "checkout", "failed", "overlay/vllm-0.32.0",
                  patches=[PatchResult(long_name, "applied"), PatchResult("0002-[x]-y.patch", "failed",
                                                                           message="hunk #1 [line 4]")])


def test_plain_report_keeps_whole_names_and_no_styles():
    out = io.StringIO()
    render(_report(), ui.PlainConsole(out))
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == "apply vllm 0.32.0 -> /src/vllm (branch overlay/vllm-0.32.0)"
    assert lines[1].split() == ["#", "patch", "status", "files", "details"]
    assert "0001-envs-register-the-vision-NPU-environment-variables-and-a-very-long-tail.patch" in lines[2]
    assert "0002-[x]-y.patch" in lines[3] and "hunk #1 [line 4]" in lines[3]
    # columns line up: each status starts in the same column
    assert lines[2].index("applied") == lines[3].index("failed") == lines[1].index("status")
    assert lines[-1] == "result: failed"
    assert "[" not in lines[2] and "\\" not in text


def test_plain_and_rich_say_the_same_words():
    plain = io.StringIO()
    render(_report(), ui.PlainConsole(plain))
    styled = io.StringIO()
    render(_report(), Console(file=styled, width=400, highlight=False, soft_wrap=True, color_system=None))
    assert plain.getvalue().split() == styled.getvalue().split()


def test_console_choice_follows_the_stream(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert isinstance(ui.console(), ui.PlainConsole)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert isinstance(ui.console(), Console)


def test_a_status_without_a_style_prints_on_both_consoles():
    report = Report("status", "demo", "1.0", "/t", "checkout", "ok",
                    patches=[PatchResult("a.patch", "no-style-for-this")])
    styled = io.StringIO()
    render(report, Console(file=styled, width=200, color_system=None))
    plain = io.StringIO()
    render(report, ui.PlainConsole(plain))
    assert "no-style-for-this" in styled.getvalue()
    assert plain.getvalue().split() == styled.getvalue().split()
