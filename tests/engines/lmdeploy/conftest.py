"""The lmdeploy payload tests: real lmdeploy 0.18.0 (the pinned wheel with
patches/lmdeploy applied), real transformers, torchvision and tokenizers, tiny
random Qwen3-VL checkpoints built here (`nox -s test_lmdeploy`).

Without those packages the tests are not collected on a laptop; under
CI=true that is an error. A wheel without the series is not a reason to skip:
the tests then fail, which is how patches/lmdeploy/README.md's table of
which test needs which patch was measured.

Where TurboMind must run, its compiled library (CUDA) is replaced by
turbomind_stand_in in a process of its own (turbomind_scenarios.py); the
tests that do so say it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # for `import tiny_qwen3_vl`
    sys.path.insert(0, str(HERE))

REQUIRED = ("torch", "torchvision", "transformers", "tokenizers", "lmdeploy")
MISSING = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
if MISSING:
    message = f"lmdeploy payload tests need {', '.join(MISSING)} (run `nox -s test_lmdeploy`)"
    if os.environ.get("CI") == "true":
        raise RuntimeError(message)
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header(config):
    if MISSING:
        return f"tests/engines/lmdeploy not collected: missing {', '.join(MISSING)}"
    return None


def _build(path: Path, **kwargs):
    import tiny_qwen3_vl

    return tiny_qwen3_vl.build_checkpoint(path, **kwargs)


@pytest.fixture(scope="session")
def dense(tmp_path_factory):
    """Dense Qwen3-VL with deepstack layers (as every released Qwen3-VL):
    (path, the transformers model it holds)."""
    path = tmp_path_factory.mktemp("dense") / "model"
    return path, _build(path)


@pytest.fixture(scope="session")
def dense_plain(tmp_path_factory):
    """Dense Qwen3-VL without deepstack layers: nothing TurboMind cannot take."""
    path = tmp_path_factory.mktemp("dense_plain") / "model"
    return path, _build(path, deepstack=(), seed=1)


@pytest.fixture(scope="session")
def moe_checkpoints(tmp_path_factory):
    """Qwen3-VL-MoE, hidden 32: moe_intermediate 16 (hidden == 2 * inter: a
    square gate_up_proj) and 24, each as transformers 5 saves it and in the
    released layout. {name: (path, model, moe_intermediate, layout)}."""
    import tiny_qwen3_vl

    out = {}
    for inter in (16, 24):
        for layout in ("out_in", "in_out"):
            path = tmp_path_factory.mktemp(f"moe{inter}_{layout}") / "model"
            model = _build(path, moe=True, moe_intermediate_size=inter, seed=inter)
            if layout == "in_out":
                tiny_qwen3_vl.to_released_expert_layout(path)
            out[f"moe{inter}-{layout}"] = (path, model, inter, layout)
    return out


@pytest.fixture(scope="session")
def turbomind(tmp_path_factory):
    """turbomind(scenarios, env=None) -> one result per scenario, run by
    turbomind_scenarios.py in a fresh process on the TurboMind stand-in (the
    compiled library and the CUDA device replaced, nothing else). Results are
    cached per spec for the session."""
    import torch

    workdir = tmp_path_factory.mktemp("turbomind_runs")
    cache: dict[str, list] = {}

    def run(scenarios: list[dict], env: dict[str, str] | None = None) -> list:
        scenarios = [dict(s) for s in scenarios]
        for i, s in enumerate(scenarios):
            if "tensors" in s:  # tensor arguments travel as a torch.save file
                blob = workdir / f"{hashlib.sha256(repr(s).encode()).hexdigest()[:16]}-{i}.pt"
                torch.save(s["tensors"], blob)
                s["tensors"] = str(blob)
        spec = dict(env=env or {}, scenarios=scenarios)
        key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
        if key not in cache:
            spec_path, out_path = workdir / f"{key}.json", workdir / f"{key}.pt"
            spec_path.write_text(json.dumps(spec, default=str))
            proc_env = {k: v for k, v in os.environ.items() if not k.startswith("LMDEPLOY_QWEN3_VL")}
            proc = subprocess.run([sys.executable, str(HERE / "turbomind_scenarios.py"), str(spec_path),
                                   str(out_path)], capture_output=True, text=True, timeout=900, env=proc_env)
            if proc.returncode != 0 or not out_path.exists():
                pytest.fail(f"turbomind_scenarios.py exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                            f"{proc.stderr[-6000:]}")
            cache[key] = torch.load(out_path, weights_only=False)
        return cache[key]

    return run

