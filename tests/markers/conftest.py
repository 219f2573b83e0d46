"""Helpers: write real files, run the marker commands through click like the `overlay` group does."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from engine_overlay import ui
from engine_overlay.errors import OverlayError
from engine_overlay.markers.cli import check_markers_cmd, markers_group, transplant_cmd


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def make_group() -> click.Group:
    @click.group()
    @click.option("--format", "fmt", default="human")
    @click.pass_context
    def cli(ctx: click.Context, fmt: str) -> None:
        ctx.obj = ui.AppContext(fmt=fmt)

    cli.add_command(markers_group)
    cli.add_command(check_markers_cmd)
    cli.add_command(transplant_cmd)
    return cli


class Run:
    def __init__(self) -> None:
        self.group = make_group()

    def __call__(self, *args: str, fmt: str = "json"):
        result = CliRunner().invoke(self.group, ["--format", fmt, *map(str, args)])
        if result.exception and not isinstance(result.exception, SystemExit):
            if isinstance(result.exception, OverlayError):
                raise result.exception
            raise result.exception
        result.data = json.loads(result.output) if fmt == "json" and result.output.strip() else None
        return result


@pytest.fixture
def run() -> Run:
    return Run()


RUNNER = '''
import torch


class NPUModelRunner:
    def __init__(self, config):
        self.config = config
        self.device = "npu"

    def load_model(self):
        model = build(self.config)
        # ---- Omni-new: talker-init ----
        self.talker = model.talker
        self.talker_buffer = torch.zeros(16)
        # ---- Omni-new: talker-init ----
        self.model = model
        return model

    def execute_model(self, batch):
        out = self.model(batch)
        #  -------------------------------------- Omni-new -------------------------------------------------
        if self.talker is not None:
            out = self.talker(out)
            out = wrap_omni(out)
        #  ------------------------------------------------------------------------------------------------
        return out

    def sample(self, logits):
        tokens = logits.argmax(-1)  # Omni-specific
        return tokens
'''


@pytest.fixture(name="write")
def write_fixture():
    """``write(root, rel, text)``: a dedented file under *root*."""
    return write


@pytest.fixture
def runner_src() -> str:
    return RUNNER
