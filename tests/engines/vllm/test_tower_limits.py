"""What the NPU tower can take, and where: temporal splitting of long videos,
the processor-side limits, explicit devices, backend selection, bf16 export."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import SIZES


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(
        a.double().flatten(), b.double().flatten(), dim=0).item()


# ------------------------------------------------------------ long videos

@pytest.mark.parametrize("grid", [
    [[6, 16, 16]],  # 1536 patches: pieces of 2 temporal groups (512 <= 576)
    [[5, 12, 14]],  # 840: pieces of 3 + 2 groups (504, 336)
    [[1, 8, 8], [10, 8, 8], [1, 20, 28]],  # a long video (640) between two images
])
def test_long_video_runs_in_pieces_and_matches_stock(grid, stock, npu_tower, record_accuracy):
    from tiny_qwen2_5_vl import pixel_values

    x = pixel_values(grid, seed=3)
    with torch.no_grad():
        ref = stock[0](x, grid_thw=grid)
        out = npu_tower(x, grid_thw=grid)
    pieces = [(t.grid_thw, t.specialization) for t in npu_tower.last_timings]
    assert len(pieces) > len(grid), pieces
    assert all(t * h * w <= max(SIZES) for (t, h, w), _ in pieces)
    assert sum(t for (t, _, _), _ in pieces) == sum(g[0] for g in grid)
    cosine = _cosine(ref, out)
    record_accuracy("long video, in pieces", str(grid), str([s for _, s in pieces]), cosine,
                    (ref - out).abs().max().item(), ref.abs().max().item())
    assert out.shape == ref.shape
    assert cosine >= 0.999999


def test_pieces_of_a_long_video_are_exactly_the_whole(npu_tower, make_npu_tower, tmp_path,
                                                      bundle_cache):
    """Against the NPU tower itself with a bundle large enough for the whole
    video: splitting changes nothing but float rounding in the padding."""
    from tiny_qwen2_5_vl import pixel_values

    grid = [[4, 8, 8]]  # 256 patches: one run of 256, or pieces of <= 64
    x = pixel_values(grid, seed=5)
    small = _copy_bundle_with_sizes(bundle_cache, tmp_path, [64])
    with torch.no_grad():
        whole = npu_tower(x, grid_thw=grid)
        pieces = make_npu_tower(cache_dir=small)(x, grid_thw=grid)
    assert torch.allclose(whole, pieces, atol=1e-5, rtol=1e-5)


def _copy_bundle_with_sizes(bundle_cache, tmp_path, sizes):
    import json
    import shutil

    (source,) = [p.parent for p in bundle_cache.rglob("manifest.json")]
    target = tmp_path / "bundle"
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["specializations"] = [s for s in manifest["specializations"]
                                   if s["num_patches"] in sizes]
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


# ------------------------------------------------------------ devices

def test_pre_and_post_ops_create_every_tensor_on_an_explicit_device(npu_tower):
    """With the default device elsewhere ("meta" here, an accelerator beside a
    language model in real use), any tensor created without an explicit
    device would land there and mix devices."""
    from tiny_qwen2_5_vl import pixel_values

    grid = [[1, 12, 14], [2, 8, 8]]
    x = pixel_values(grid, seed=7)
    with torch.no_grad():
        expected = npu_tower(x, grid_thw=grid)
        npu_tower._rope_by_thw_cache.clear()  # the stock helpers allocate on first use
        torch.set_default_device("meta")
        try:
            out = npu_tower(x, grid_thw=grid)
        finally:
            torch.set_default_device(None)
    assert out.device == npu_tower.device == torch.device("cpu")
    assert out.dtype == npu_tower.dtype
    assert torch.equal(out, expected)


# ------------------------------------------------------------ the processor's limits

@pytest.fixture
def limits(bundle_cache, vision_config, monkeypatch):
    from vllm.vision_npu import processing

    monkeypatch.setenv("VLLM_VISION_NPU_BACKEND", "onnxrt")
    monkeypatch.setenv("VLLM_VISION_NPU_CACHE", str(bundle_cache))
    hf_config = type("Config", (), {"vision_config": vision_config, "rms_norm_eps": 1e-6})()
    return processing.vision_npu_limits(hf_config)


def test_limits_come_from_the_bundle(limits):
    assert limits.sizes == tuple(SIZES)
    assert limits.max_patches == 576
    assert limits.max_pixels == 576 * 14 * 14


def test_no_limits_for_the_stock_tower_or_without_a_bundle(vision_config, monkeypatch, tmp_path):
    from vllm.vision_npu import processing

    hf_config = type("Config", (), {"vision_config": vision_config})()
    for value in (None, "", "  "):
        if value is None:
            monkeypatch.delenv("VLLM_VISION_NPU_BACKEND", raising=False)
        else:
            monkeypatch.setenv("VLLM_VISION_NPU_BACKEND", value)
        assert processing.vision_npu_limits(hf_config) is None
    monkeypatch.setenv("VLLM_VISION_NPU_BACKEND", "onnxrt")
    monkeypatch.setenv("VLLM_VISION_NPU_CACHE", str(tmp_path))
    assert processing.vision_npu_limits(hf_config) is None  # the tower reports it at start-up


def test_a_request_asking_for_more_is_refused_with_the_sizes(limits):
    from vllm.vision_npu.backend import VisionNPUInputTooLargeError

    limits.check_requested({"images_kwargs": {"max_pixels": limits.max_pixels}})
    for kwargs in ({"max_pixels": 10**6}, {"images_kwargs": {"size": {"longest_edge": 10**6}}},
                   {"videos_kwargs": {"min_pixels": 10**6}}):
        with pytest.raises(VisionNPUInputTooLargeError) as info:
            limits.check_requested(kwargs)
        assert isinstance(info.value, ValueError)  # vLLM fails the request, not the engine
        assert "576 patches" in str(info.value) and str(limits.max_pixels) in str(info.value)


def test_a_frame_that_comes_out_too_large_is_refused(limits):
    from vllm.vision_npu.backend import VisionNPUInputTooLargeError

    limits.check_grids("Video", torch.tensor([[8, 24, 24]]))  # long, but frames fit
    with pytest.raises(VisionNPUInputTooLargeError, match=r"Image 1 is 364x364 pixels .*676 patches"):
        limits.check_grids("Image", torch.tensor([[1, 8, 8], [1, 26, 26]]))


# ------------------------------------------------------------ backend selection

def test_a_registered_backend_is_selected_by_the_variable(monkeypatch, vision_config, bundle_cache):
    from vllm.vision_npu import backend as registry
    from vllm.vision_npu.models.qwen2_5_vl import build_qwen2_5_vision_transformer
    from vllm.vision_npu.onnxrt_backend import OnnxRuntimeVisionBackend

    @registry.register_vision_npu_backend("My-ORT")
    class MyBackend(OnnxRuntimeVisionBackend):
        name = "my-ort"

    try:
        monkeypatch.setenv("VLLM_VISION_NPU_BACKEND", " my-ort ")
        monkeypatch.setenv("VLLM_VISION_NPU_CACHE", str(bundle_cache))
        tower = build_qwen2_5_vision_transformer(vision_config, norm_eps=1e-6, prefix="visual")
        assert type(tower.npu_backend) is MyBackend
        assert "my-ort" in registry.available_vision_npu_backends()
    finally:
        registry._BACKENDS.pop("my-ort", None)


def test_onnxrt_logs_the_provider_it_runs(make_npu_tower, caplog):
    with caplog.at_level(logging.INFO):
        tower = make_npu_tower()
    assert tower.npu_backend.describe() == "onnxrt(provider=CPUExecutionProvider)"


# ------------------------------------------------------------ bf16 bundles

def test_export_for_bfloat16_rounds_as_vllm_loads(tmp_path, tiny, vision_config, make_npu_tower):
    from vllm.vision_npu.backend import VisionNPUBundleError
    from vllm.vision_npu.export import export_qwen2_5_vision_bundle, round_weights
    from vllm.vision_npu.models.qwen2_5_vl_graph import Qwen2_5_VisionGraphConfig

    config = Qwen2_5_VisionGraphConfig.from_vision_config(vision_config, 1e-6)
    _, state = tiny.build_stock_tower(vision_config, seed=4)
    weights = {k: v.float().numpy() for k, v in state.items() if not k.startswith("patch_embed")}
    rounded = round_weights(weights, "bfloat16")
    name = "blocks.0.attn.qkv.weight"
    assert np.array_equal(rounded[name], torch.from_numpy(weights[name]).bfloat16().float().numpy())
    assert not np.array_equal(rounded[name], weights[name])
    fp32_dir, bf16_dir = tmp_path / "fp32", tmp_path / "bf16"
    export_qwen2_5_vision_bundle(config, weights, [64], output=fp32_dir, digest=False)
    export_qwen2_5_vision_bundle(config, rounded, [64], output=bf16_dir, digest=False)

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        make_npu_tower(cache_dir=bf16_dir, state=state)  # the fingerprint matches
        with pytest.raises(VisionNPUBundleError, match="--dtype bfloat16"):
            make_npu_tower(cache_dir=fp32_dir, state=state)
    finally:
        torch.set_default_dtype(default)


# ------------------------------------------------------------ the async pipeline

@pytest.mark.parametrize("pipelined", [True, False])
def test_async_pipeline_runs_pre_ops_while_the_device_runs(make_npu_tower, pipelined):
    """From the stage timestamps: with the pipeline, the pre-ops of item i+1
    run while item i is on the device; without it they never overlap."""
    from tiny_qwen2_5_vl import pixel_values

    tower = make_npu_tower(async_pipeline=pipelined)
    grid = [[1, 24, 24]] * 4
    x = pixel_values(grid, seed=9)
    with torch.no_grad():
        tower(x, grid_thw=grid)
        tower(x, grid_thw=grid)
    t = tower.last_timings
    overlaps = [
        t[i].pre_start < t[i - 1].device_start + t[i - 1].device_s
        and t[i].pre_start + t[i].pre_s > t[i - 1].device_start
        for i in range(1, len(t))
    ]
    assert all(overlaps) if pipelined else not any(overlaps), [
        (round(s.pre_start, 4), round(s.pre_s, 4), round(s.device_start, 4), round(s.device_s, 4))
        for s in t
    ]
