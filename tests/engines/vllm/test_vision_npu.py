"""The NPU vision tower of the patched vLLM against the stock tower, on the CPU.

Every accuracy case runs the same random weights through vLLM's own
Qwen2_5_VisionTransformer and through Qwen2_5_VisionTransformerNPU with the
`onnxrt` backend (the exported ONNX device graphs run by onnxruntime).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SIZES


def compare(stock_tower, npu_tower, grid, seed=0):
    from tiny_qwen2_5_vl import pixel_values

    x = pixel_values(grid, seed)
    with torch.no_grad():
        ref = stock_tower(x, grid_thw=grid)
        out = npu_tower(x, grid_thw=grid)
    assert out.shape == ref.shape
    assert out.dtype == ref.dtype
    cosine = torch.nn.functional.cosine_similarity(
        ref.double().flatten(), out.double().flatten(), dim=0
    ).item()
    max_abs = (ref - out).abs().max().item()
    return ref, out, cosine, max_abs


# -------------------------------------------------------------- the series

def test_patched_vllm_is_under_test():
    import vllm
    import vllm.envs as envs
    import vllm.vision_npu
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

    vllm_dir = Path(vllm.__file__).resolve().parent
    assert Path(vllm.vision_npu.__file__).resolve().parent == vllm_dir / "vision_npu"
    assert "build_qwen2_5_vision_transformer(" in inspect.getsource(
        Qwen2_5_VLForConditionalGeneration.__init__
    )
    assert "VLLM_VISION_NPU_BACKEND" in envs.environment_variables


# -------------------------------------------------------------- accuracy

CASES = {
    "exact fit": ([[1, 8, 8]], [64]),
    "padding (small)": ([[1, 6, 10]], [64]),
    "padding (medium)": ([[1, 12, 14]], [256]),
    "partial windows": ([[1, 10, 22]], [256]),
    "exact fit (largest)": ([[1, 24, 24]], [576]),
    "multi-image": ([[1, 8, 8], [1, 12, 14], [1, 20, 28], [1, 6, 10]], [64, 256, 576, 64]),
    "video t=2": ([[2, 8, 12]], [256]),
    "video t=4 exact": ([[4, 8, 8]], [256]),
    "two videos": ([[2, 6, 10], [3, 10, 14]], [256, 576]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_npu_tower_matches_stock(case, stock, npu_tower, record_accuracy):
    grid, expected_specs = CASES[case]
    ref, out, cosine, max_abs = compare(stock[0], npu_tower, grid)
    specs = [t.specialization for t in npu_tower.last_timings]
    record_accuracy(case, str(grid), str(specs), cosine, max_abs, ref.abs().max().item())
    assert specs == expected_specs, "smallest fitting specialization per item"
    assert cosine >= 0.999
    assert max_abs <= 1e-3 * ref.abs().max().item()


def test_per_item_embeddings_through_the_patched_model(stock, npu_tower):
    """The split done by Qwen2_5_VLForConditionalGeneration._process_image_input
    (what the v1 encoder cache stores per item), then slices of each item as
    chunked prefill gathers them per scheduled window."""
    from tiny_qwen2_5_vl import pixel_values
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

    grid = [[1, 8, 8], [1, 12, 14], [1, 20, 28]]
    image_input = {
        "type": "pixel_values",
        "pixel_values": pixel_values(grid, seed=3),
        "image_grid_thw": torch.tensor(grid),
    }
    process = Qwen2_5_VLForConditionalGeneration._process_image_input
    with torch.no_grad():
        ref_items = process(types.SimpleNamespace(visual=stock[0], use_data_parallel=False), image_input)
        npu_items = process(types.SimpleNamespace(visual=npu_tower, use_data_parallel=False), image_input)
    assert [t.shape for t in npu_items] == [t.shape for t in ref_items] == [
        (16, 48), (42, 48), (140, 48)
    ]
    for ref, out in zip(ref_items, npu_items, strict=True):
        for start, end in ((0, 5), (5, ref.shape[0] // 2), (ref.shape[0] // 2, ref.shape[0])):
            torch.testing.assert_close(out[start:end], ref[start:end], rtol=1e-4, atol=1e-5)


def test_padding_cannot_leak_into_real_tokens(npu_tower):
    """Garbage in the padded rows leaves real outputs unchanged; the same
    garbage with the padding mask removed does change them (so the test can fail)."""
    from tiny_qwen2_5_vl import pixel_values
    from vllm.vision_npu.models.qwen2_5_vl_graph import OUTPUT_NAMES

    grid = (1, 12, 14)  # 168 patches in the 256 specialization
    prepared = npu_tower._pre_ops(0, pixel_values([list(grid)]), grid, 256)
    graph = npu_tower._graphs[256]
    n_real, tokens = 168, 168 // 4
    clean = graph.run(prepared.feeds)[OUTPUT_NAMES[0]][:tokens]

    rng = np.random.default_rng(0)
    dirty = {k: v.copy() for k, v in prepared.feeds.items()}
    for name in ("hidden_states", "rotary_cos", "rotary_sin"):
        dirty[name][n_real:] = rng.normal(0, 100, dirty[name][n_real:].shape)
    masked = graph.run(dirty)[OUTPUT_NAMES[0]][:tokens]
    np.testing.assert_array_equal(masked, clean)

    dirty["full_attn_segments"][n_real:] = dirty["full_attn_segments"][0]  # padding joins a frame
    leaked = graph.run(dirty)[OUTPUT_NAMES[0]][:tokens]
    assert np.abs(leaked - clean).max() > 1e-3


def test_window_layout_keeps_windows_whole_and_padding_out(npu_tower):
    """Every real token has one slot in a chunk that holds its whole window;
    empty slots read the zero row and are masked; padding tokens have no slot.
    Removing the window mask changes the output (so the test can fail)."""
    from tiny_qwen2_5_vl import pixel_values
    from vllm.vision_npu.models.qwen2_5_vl_graph import OUTPUT_NAMES, PAD_SEGMENT

    grid, n_real, spec = (1, 10, 22), 220, 256  # partial windows at the right and bottom
    prepared = npu_tower._pre_ops(0, pixel_values([list(grid)]), grid, spec)
    feeds = prepared.feeds
    slots, segments, positions = (feeds[k] for k in ("window_slots", "window_slot_segments",
                                                     "window_positions"))
    per_window = 64
    assert slots.size % per_window == 0
    used = positions[:n_real].astype(np.int64)
    assert len(set(used.tolist())) == n_real
    assert (slots[used] == np.arange(n_real)).all()
    assert (positions[n_real:] == slots.size).all()  # padding: the zero row, no slot
    empty = np.setdiff1d(np.arange(slots.size), used)
    assert (slots[empty] == spec).all() and (segments[empty] == PAD_SEGMENT).all()
    for window in np.unique(segments[used]):
        chunk = used[segments[used] == window] // per_window
        assert len(set(chunk.tolist())) == 1, f"window {window} straddles chunks"

    graph = npu_tower._graphs[spec]
    clean = graph.run(feeds)[OUTPUT_NAMES[0]]
    unmasked = dict(feeds, window_slot_segments=np.where(segments == PAD_SEGMENT, 0, 0).astype(np.float32))
    assert np.abs(graph.run(unmasked)[OUTPUT_NAMES[0]] - clean)[: n_real // 4].max() > 1e-3


def test_result_does_not_depend_on_specialization(npu_tower):
    from tiny_qwen2_5_vl import pixel_values

    grid = (1, 8, 8)
    x = pixel_values([list(grid)], seed=7)
    outs = []
    for size in SIZES:
        prepared = npu_tower._pre_ops(0, x, grid, size)
        out, _, _ = npu_tower._device_run(prepared)
        outs.append(npu_tower._post_ops(prepared, out)[0])
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-5, atol=1e-6)


def test_async_pipeline_gives_the_same_result(make_npu_tower, npu_tower):
    from tiny_qwen2_5_vl import pixel_values

    piped = make_npu_tower(async_pipeline=True)
    grid = [[1, 12, 14], [1, 8, 8], [2, 8, 12], [1, 20, 28]]
    x = pixel_values(grid, seed=5)
    with torch.no_grad():
        sequential = npu_tower(x, grid_thw=grid)
        pipelined = piped(x, grid_thw=grid)
    assert torch.equal(pipelined, sequential)
    assert [t.grid_thw for t in piped.last_timings] == [tuple(g) for g in grid]
    assert piped._pre_executor is not None  # the pipelined path really ran


def test_timing_logs_every_stage(make_npu_tower):
    from tiny_qwen2_5_vl import pixel_values

    tower = make_npu_tower(timing=True)
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("vllm.vision_npu.models.qwen2_5_vl")
    handler = Collect(level=logging.INFO)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # vLLM's logging config sets INFO when it runs
    try:
        grid = [[1, 8, 8], [1, 6, 10]]
        with torch.no_grad():
            tower(pixel_values(grid), grid_thw=grid)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [r.getMessage() for r in records if r.getMessage().startswith("vision_npu call=")]
    assert len(lines) == 2
    assert "item=1/2" in lines[0] and "item=2/2" in lines[1]
    assert len({line.split()[1] for line in lines}) == 1  # one call
    for stage in ("pre=", "device=", "post=", "spec=64"):
        assert all(stage in line for line in lines)


# -------------------------------------------------------------- errors

def test_oversize_image_is_a_clear_error(npu_tower):
    from tiny_qwen2_5_vl import pixel_values
    from vllm.vision_npu.backend import VisionNPUInputTooLargeError

    grid = [[1, 8, 8], [1, 26, 26]]  # the second image: 676 patches > 576
    with pytest.raises(VisionNPUInputTooLargeError) as info:
        npu_tower(pixel_values(grid), grid_thw=grid)
    message = str(info.value)
    assert "Image 1" in message and "(1, 26, 26)" in message and "676 patches" in message
    assert "64, 256, 576" in message


def test_video_with_an_oversize_frame_is_a_clear_error(npu_tower):
    from tiny_qwen2_5_vl import pixel_values
    from vllm.vision_npu.backend import VisionNPUInputTooLargeError

    grid = [[3, 26, 26]]  # one frame: 676 patches > 576
    with pytest.raises(VisionNPUInputTooLargeError,
                       match=r"Video 0 \(grid t,h,w=\(3, 26, 26\)\): one frame has 676 patches"):
        npu_tower(pixel_values(grid), grid_thw=grid)


def test_backend_unset_builds_the_stock_tower(monkeypatch, tiny, vision_config, stock):
    from tiny_qwen2_5_vl import pixel_values
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VisionTransformer
    from vllm.vision_npu import build_qwen2_5_vision_transformer

    monkeypatch.delenv("VLLM_VISION_NPU_BACKEND", raising=False)
    tower = build_qwen2_5_vision_transformer(vision_config=vision_config, norm_eps=1e-6, prefix="visual")
    assert type(tower) is Qwen2_5_VisionTransformer
    with torch.no_grad():
        tower.load_state_dict(stock[1])
    tiny.finish_loading(tower)
    grid = [[1, 12, 14], [2, 8, 8]]
    x = pixel_values(grid, seed=11)
    with torch.no_grad():
        assert torch.equal(tower(x, grid_thw=grid), stock[0](x, grid_thw=grid))


def test_backend_set_builds_the_npu_tower(monkeypatch, vision_config, bundle_cache):
    from vllm.vision_npu import build_qwen2_5_vision_transformer
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    monkeypatch.setenv("VLLM_VISION_NPU_BACKEND", "onnxrt")
    monkeypatch.setenv("VLLM_VISION_NPU_CACHE", str(bundle_cache))
    monkeypatch.setenv("VLLM_NPU_ASYNC_PIPELINE", "1")
    tower = build_qwen2_5_vision_transformer(vision_config=vision_config, norm_eps=1e-6, prefix="visual")
    assert isinstance(tower, Qwen2_5_VisionTransformerNPU)
    assert tower.npu_backend.name == "onnxrt" and tower.async_pipeline
    assert tower.bundle.sizes == list(SIZES)


def test_unknown_backend_names_the_choices(vision_config, bundle_cache):
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    with pytest.raises(ValueError, match="available backends: flexmlrt, onnxrt"):
        Qwen2_5_VisionTransformerNPU(vision_config, backend="tpu9", cache_dir=str(bundle_cache))


def test_missing_bundle_is_a_clear_error(tmp_path, make_npu_tower):
    from vllm.vision_npu.backend import VisionNPUBundleError

    with pytest.raises(VisionNPUBundleError) as info:
        make_npu_tower(cache_dir=tmp_path)
    assert "No vision NPU bundle" in str(info.value)
    assert str(tmp_path) in str(info.value)
    assert "python -m vllm.vision_npu.export" in str(info.value)


def _copy_bundle(bundle_cache: Path, dest: Path) -> Path:
    (src,) = [p.parent for p in bundle_cache.rglob("manifest.json")]
    shutil.copytree(src, dest)
    return dest


def test_truncated_bundle_is_a_clear_error(tmp_path, bundle_cache, make_npu_tower):
    from vllm.vision_npu.backend import VisionNPUBundleError

    bundle = _copy_bundle(bundle_cache, tmp_path / "bundle")
    weights = bundle / "weights.bin"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(VisionNPUBundleError, match="weights.bin is .* bytes, the manifest says .*truncated"):
        make_npu_tower(cache_dir=bundle)


def test_wrong_shape_bundle_is_a_clear_error(tmp_path, bundle_cache, make_npu_tower):
    from vllm.vision_npu.backend import VisionNPUBundleError

    bundle = _copy_bundle(bundle_cache, tmp_path / "bundle")
    shutil.copy(bundle / "vision_n256.onnx", bundle / "vision_n64.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["specializations"][0]["artifacts"]["onnxrt"]
    entry["size"] = (bundle / "vision_n64.onnx").stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VisionNPUBundleError, match="does not have the shapes of a 64-patch specialization"):
        make_npu_tower(cache_dir=bundle)


def test_bundle_of_other_weights_is_a_clear_error(tiny, stock, make_npu_tower):
    from vllm.vision_npu.backend import VisionNPUBundleError

    other = {k: v.clone() for k, v in stock[1].items()}
    other["blocks.2.mlp.down_proj.weight"] += 0.5
    with pytest.raises(VisionNPUBundleError, match="exported from different weights"):
        make_npu_tower(state=other)


def test_bundle_weights_are_memory_mapped(npu_tower):
    weights = str(npu_tower.bundle.directory / "weights.bin")
    with open("/proc/self/maps") as f:
        assert any(line.rstrip().endswith(weights) for line in f)


def test_v1_bundle_with_int64_segments_is_refused(tmp_path, bundle_cache, make_npu_tower):
    """Bundles exported before the segment inputs became float32 (format v1)."""
    from vllm.vision_npu.backend import VisionNPUBundleError

    bundle = _copy_bundle(bundle_cache, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 1
    for entry in manifest["inputs"]:
        if entry["name"].endswith("_segments"):
            entry["dtype"] = "int64"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VisionNPUBundleError, match=r"v1; this vLLM reads vllm-vision-npu-bundle v3") as info:
        make_npu_tower(cache_dir=bundle)
    assert "python -m vllm.vision_npu.export" in str(info.value)


# -------------------------------------------------------------- flexmlrt backend
# These run the real flexmlrt_bridge, built from ./bridge and installed by
# `nox -s test_vllm`, with its loopback runtime standing in for the NPU.

def test_missing_bridge_is_a_clear_error(monkeypatch, vision_config, bundle_cache):
    from vllm.vision_npu.backend import VisionNPUBackendUnavailableError
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    # The bridge is installed here: a machine without it is simulated by hiding
    # the module (a None entry in sys.modules makes `import flexmlrt_bridge` fail).
    monkeypatch.setitem(sys.modules, "flexmlrt_bridge", None)
    with pytest.raises(VisionNPUBackendUnavailableError) as info:
        Qwen2_5_VisionTransformerNPU(vision_config, backend="flexmlrt", cache_dir=str(bundle_cache))
    message = str(info.value)
    assert "flexmlrt_bridge" in message and "pip install ./bridge" in message
    assert "VLLM_VISION_NPU_BACKEND=onnxrt" in message


def test_bridge_without_the_sdk_is_a_clear_error(vision_config, bundle_cache):
    import flexmlrt_bridge as fb
    from vllm.vision_npu.backend import VisionNPUBackendUnavailableError, create_vision_npu_backend
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    if fb.flexmlrt_available():  # a build with the SDK: the backend is there
        assert create_vision_npu_backend("flexmlrt").flexmlrt_dtypes == fb.build_info()["flexmlrt_dtypes"]
        return
    with pytest.raises(VisionNPUBackendUnavailableError, match="built without the FlexMLRT SDK") as info:
        Qwen2_5_VisionTransformerNPU(vision_config, backend="flexmlrt", cache_dir=str(bundle_cache))
    assert "pip install ./bridge" in str(info.value)


def _with_flexmlrt_artifacts(bundle_cache: Path, dest: Path, seed: int = 0):
    """A copy of the session's bundle whose `flexmlrt` artifacts are loopback
    `rows_affine` bundles with exactly the manifest's resolved input and output
    specs: hidden_states [N, C] viewed as [N/U, U*C] rows, so w is [U*C, O].
    Returns (directory, {specialization: (w, b)}); each size has its own weights."""
    import flexmlrt_bridge as fb
    from vllm.vision_npu.bundle import BundleFile, VisionNPUBundle

    directory = _copy_bundle(bundle_cache, dest)
    bundle = VisionNPUBundle.open(directory)
    config = bundle.manifest.config
    k = config["spatial_merge_size"] ** 2 * config["hidden_size"]
    rng = np.random.default_rng(seed)
    manifest = json.loads((directory / "manifest.json").read_text())
    weights = {}
    for entry in manifest["specializations"]:
        n = entry["num_patches"]
        w = (rng.standard_normal((k, config["out_hidden_size"])) / k**0.5).astype(np.float32)
        b = rng.standard_normal(config["out_hidden_size"]).astype(np.float32)
        name = f"vision_n{n}.fxb"
        fb.write_loopback_bundle(
            directory / name, op="rows_affine", weight=w, bias=b,
            inputs=bundle.input_specs(n), outputs=bundle.output_specs(n),
        )
        entry["artifacts"]["flexmlrt"] = BundleFile.describe(directory, name).to_json()
        weights[n] = (w, b)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory, weights


def test_npu_tower_through_the_bridge(tmp_path, bundle_cache, make_npu_tower, npu_tower):
    """The tower on the flexmlrt backend, through the compiled bridge: every
    specialization's artifact has the exported graph's real interface (names,
    dtypes, shapes, in order), so the tower's own pre-ops feeds go through
    flexmlrt_bridge.Session.run; the result is what numpy computes from the
    same feeds, trimmed and put back in order as the post-ops do."""
    import flexmlrt_bridge as fb
    from tiny_qwen2_5_vl import pixel_values
    from vllm.vision_npu.flexmlrt_backend import FlexMLRTVisionBackend, FlexMLRTVisionGraph
    from vllm.vision_npu.models.qwen2_5_vl import qwen2_5_vision_pre_ops
    from vllm.vision_npu.models.qwen2_5_vl_graph import INPUT_NAMES

    bundle_dir, weights = _with_flexmlrt_artifacts(bundle_cache, tmp_path / "bundle")
    tower = make_npu_tower(cache_dir=bundle_dir, backend=FlexMLRTVisionBackend(allow_loopback=True))
    assert sorted(tower._graphs) == list(SIZES)
    for n, graph in tower._graphs.items():
        assert isinstance(graph, FlexMLRTVisionGraph) and graph.session.runtime == "loopback"
        assert Path(graph.session.path).name == f"vision_n{n}.fxb"
        # The interface of the exported ONNX graph itself, as onnxruntime loaded it.
        assert (graph.inputs, graph.outputs) == (npu_tower._graphs[n].inputs, npu_tower._graphs[n].outputs)

    grid = [[1, 8, 8], [1, 12, 14], [2, 8, 12], [1, 20, 28]]
    x = pixel_values(grid, seed=4)
    with torch.no_grad():
        out = tower(x, grid_thw=grid)
    specs = [t.specialization for t in tower.last_timings]
    assert specs == [64, 256, 256, 576]
    assert all(graph.session.run_count > 0 for graph in tower._graphs.values())

    expected = []
    with torch.no_grad():
        for piece, g, spec in zip(x.split([t * h * w for t, h, w in grid]), grid, specs, strict=True):
            feeds, reverse = qwen2_5_vision_pre_ops(tower, piece, tuple(g), spec)
            y = fb.rows_affine_reference([feeds[name] for name in INPUT_NAMES], *weights[spec])
            tokens = g[0] * g[1] * g[2] // tower.spatial_merge_unit
            expected.append(torch.from_numpy(y[:tokens])[reverse])
    expected = torch.cat(expected)
    assert out.shape == expected.shape == (sum(t * h * w for t, h, w in grid) // 4, 48)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    # The onnxrt path is unchanged, also from a bundle that has flexmlrt artifacts too.
    onnx_tower = make_npu_tower(cache_dir=bundle_dir)
    with torch.no_grad():
        via_onnxrt = onnx_tower(x, grid_thw=grid)
        assert torch.equal(via_onnxrt, npu_tower(x, grid_thw=grid))
    assert not torch.allclose(via_onnxrt, out)  # the loopback graphs really ran instead


def test_exported_dtypes_are_what_the_bridges_flexmlrt_runtime_takes(npu_tower):
    """One source of truth: the manifest's dtypes are among DEVICE_DTYPES, which
    are among those the compiled bridge's FlexMLRT runtime reports it takes; the
    ONNX graphs and the pre-ops feeds agree with the manifest."""
    import flexmlrt_bridge as fb
    from tiny_qwen2_5_vl import pixel_values
    from vllm.vision_npu.models.qwen2_5_vl import qwen2_5_vision_pre_ops
    from vllm.vision_npu.models.qwen2_5_vl_graph import DEVICE_DTYPES, PAD_SEGMENT

    manifest = npu_tower.bundle.manifest
    exported = {entry["dtype"] for entry in manifest.inputs + manifest.outputs}
    assert exported <= set(DEVICE_DTYPES) <= set(fb.build_info()["flexmlrt_dtypes"])
    for n, graph in npu_tower._graphs.items():  # as onnxruntime reads the .onnx files
        assert graph.inputs == npu_tower.bundle.input_specs(n)
        assert graph.outputs == npu_tower.bundle.output_specs(n)
    with torch.no_grad():
        feeds, _ = qwen2_5_vision_pre_ops(npu_tower, pixel_values([[1, 6, 10]]), (1, 6, 10), 64)
    assert {k: (v.dtype.name, v.shape) for k, v in feeds.items()} == {
        s.name: (s.dtype, s.shape) for s in npu_tower.bundle.input_specs(64)
    }
    assert (feeds["full_attn_segments"][60:] == PAD_SEGMENT).all()
    assert (feeds["window_positions"][60:] == feeds["window_slots"].size).all()


def test_export_refuses_dtypes_the_flexmlrt_runtime_does_not_take():
    from vllm.vision_npu.export import check_device_dtypes

    hidden = {"name": "hidden_states", "shape": ["N", 64], "dtype": "float32"}
    check_device_dtypes([hidden], [])
    with pytest.raises(ValueError, match=r"cannot take: 'full_attn_segments' is int64 \(it takes float32\)"):
        check_device_dtypes([hidden, {"name": "full_attn_segments", "shape": ["N"], "dtype": "int64"}], [])


def test_flexmlrt_backend_refuses_dtypes_its_runtime_does_not_take(monkeypatch, tmp_path):
    """A graph with the old int64 segment input: the loopback runtime (self-
    describing) loads it as it is; on the FlexMLRT runtime it is refused at load.
    No SDK here, so the real Session is relabelled as a FlexMLRT one."""
    import flexmlrt_bridge as fb
    from vllm.vision_npu.backend import VisionNPUBundleError
    from vllm.vision_npu.flexmlrt_backend import FlexMLRTVisionBackend

    artifact = fb.write_loopback_bundle(
        tmp_path / "old.fxb", op="noop",
        inputs=[("hidden_states", (8, 4), "float32"), ("full_attn_segments", (8,), "int64")],
        outputs=[("vision_embeds", (2, 3), "float32")],
    )
    backend = FlexMLRTVisionBackend(allow_loopback=True)
    assert [s.dtype for s in backend.load(artifact).inputs] == ["float32", "int64"]

    class FlexMLRTSession(fb.Session):
        runtime = "flexmlrt"

    monkeypatch.setattr(fb, "Session", FlexMLRTSession)
    with pytest.raises(VisionNPUBundleError) as info:
        backend.load(artifact)
    message = str(info.value)
    assert "input 'full_attn_segments' is int64" in message and str(artifact) in message
    assert "takes only float32" in message and "python -m vllm.vision_npu.export" in message


def test_flexmlrt_artifact_that_is_no_loopback_bundle_needs_the_sdk(tmp_path, bundle_cache, make_npu_tower):
    """allow_loopback picks the runtime by content: an artifact that is not a
    loopback bundle goes to FlexMLRT, which this build may lack."""
    import flexmlrt_bridge as fb
    from vllm.vision_npu.backend import VisionNPUBackendUnavailableError, VisionNPUBundleError
    from vllm.vision_npu.flexmlrt_backend import FlexMLRTVisionBackend

    bundle = _copy_bundle(bundle_cache, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for spec in manifest["specializations"]:  # not compiled: the ONNX file itself
        spec["artifacts"]["flexmlrt"] = spec["artifacts"]["onnxrt"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    if fb.flexmlrt_available():  # FlexMLRT itself refuses a file that is no .rai
        with pytest.raises(VisionNPUBundleError, match="cannot load"):
            make_npu_tower(cache_dir=bundle, backend=FlexMLRTVisionBackend(allow_loopback=True))
        return
    with pytest.raises(VisionNPUBackendUnavailableError) as info:
        make_npu_tower(cache_dir=bundle, backend=FlexMLRTVisionBackend(allow_loopback=True))
    message = str(info.value)
    assert "FLEXMLRT_ROOT=" in message and "vision_n64.onnx" in message
    assert "VLLM_VISION_NPU_BACKEND=onnxrt" in message


# -------------------------------------------------------------- export CLI

def test_export_cli_from_a_checkpoint_then_load_weights(tmp_path, tiny, vision_config, stock, record_accuracy):
    """`python -m vllm.vision_npu.export` on a local HF-format checkpoint, then
    the NPU tower loads the same checkpoint through vLLM's load_weights."""
    from safetensors.torch import save_file
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    model_dir = tmp_path / "tiny-qwen2.5-vl"
    config = Qwen2_5_VLConfig(
        vision_config=vision_config.to_dict(),
        text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                         rms_norm_eps=1e-6),
    )
    config.save_pretrained(model_dir)
    checkpoint = tiny.hf_checkpoint_state(stock[1])
    save_file(checkpoint, str(model_dir / "model.safetensors"))

    cache = tmp_path / "cache"
    env = {**os.environ, "VLLM_VISION_NPU_CACHE": str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "vllm.vision_npu.export", "--model", str(model_dir),
         "--sizes", "256,64", "--format", "json"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["sizes"] == [64, 256]
    assert Path(report["bundle"]).parent.parent == cache

    tower = Qwen2_5_VisionTransformerNPU(
        vision_config, norm_eps=1e-6, prefix="visual", backend="onnxrt", cache_dir=str(cache)
    )
    prefix = "model.visual."
    loaded = tower.load_weights((k[len(prefix):], v) for k, v in checkpoint.items())
    assert "blocks.0.mlp.gate_up_proj.weight" in loaded
    tiny.finish_loading(tower)
    grid = [[1, 12, 14], [1, 6, 6]]
    ref, out, cosine, max_abs = compare(stock[0], tower, grid, seed=9)
    record_accuracy("CLI export + load", str(grid), str([t.specialization for t in tower.last_timings]),
                    cosine, max_abs, ref.abs().max().item())
    assert cosine >= 0.999

    again = subprocess.run(
        [sys.executable, "-m", "vllm.vision_npu.export", "--model", str(model_dir), "--sizes", "64"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert again.returncode == 2 and "already holds a bundle" in again.stderr


def test_bundle_of_another_vision_config_is_a_clear_error(tmp_path, tiny, bundle_cache):
    from vllm.vision_npu.backend import VisionNPUBundleError
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    bundle = _copy_bundle(bundle_cache, tmp_path / "bundle")  # used as the cache dir itself
    deeper = tiny.tiny_vision_config(depth=6, fullatt_block_indexes=[2, 5])
    with pytest.raises(VisionNPUBundleError, match=r"another vision config .*'depth', 'fullatt_block_indexes'"):
        Qwen2_5_VisionTransformerNPU(deeper, norm_eps=1e-6, backend="onnxrt", cache_dir=str(bundle))


# -------------------------------------------------------------- whole model

def _tiny_checkpoint(directory: Path, vision_config, checkpoint: dict) -> Path:
    from safetensors.torch import save_file
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(
        vision_config=vision_config.to_dict(),
        text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                         rms_norm_eps=1e-6),
    )
    config.save_pretrained(directory)
    save_file(checkpoint, str(directory / "model.safetensors"))
    return directory


def test_patched_model_class_builds_either_tower(monkeypatch, tmp_path, tiny, vision_config, stock, bundle_cache, record_accuracy):
    """Qwen2_5_VLForConditionalGeneration itself (patch 0002): stock tower with
    the variable unset, NPU tower with it set; both loaded through the model's
    load_weights from an HF-named checkpoint; embed_multimodal per item equal."""
    from tiny_qwen2_5_vl import pixel_values
    from vllm.config import ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.model_executor.models.qwen2_5_vl import (
        Qwen2_5_VisionTransformer,
        Qwen2_5_VLForConditionalGeneration,
    )
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    checkpoint = tiny.hf_checkpoint_state(stock[1], prefix="model.visual.")
    model_dir = _tiny_checkpoint(tmp_path / "tiny-qwen2.5-vl", vision_config, checkpoint)
    vllm_config = VllmConfig(
        model_config=ModelConfig(model=str(model_dir), skip_tokenizer_init=True, dtype="float32")
    )
    grid = [[1, 12, 14], [1, 8, 8]]
    kwargs = {"pixel_values": pixel_values(grid, seed=21), "image_grid_thw": torch.tensor(grid)}

    def build_and_embed():
        # A second model on the same config: forget the first one's layers.
        vllm_config.compilation_config.static_forward_context.clear()
        with set_current_vllm_config(vllm_config):
            model = Qwen2_5_VLForConditionalGeneration(vllm_config=vllm_config, prefix="")
        loaded = model.load_weights(iter(checkpoint.items()))
        assert "visual.blocks.0.mlp.gate_up_proj.weight" in loaded
        tiny.finish_loading(model.visual)
        with torch.no_grad():
            return model.visual, model.embed_multimodal(**kwargs)

    monkeypatch.delenv("VLLM_VISION_NPU_BACKEND", raising=False)
    stock_visual, stock_items = build_and_embed()
    assert type(stock_visual) is Qwen2_5_VisionTransformer

    monkeypatch.setenv("VLLM_VISION_NPU_BACKEND", "onnxrt")
    monkeypatch.setenv("VLLM_VISION_NPU_CACHE", str(bundle_cache))
    npu_visual, npu_items = build_and_embed()
    assert isinstance(npu_visual, Qwen2_5_VisionTransformerNPU)

    assert [t.shape for t in npu_items] == [t.shape for t in stock_items] == [(42, 48), (16, 48)]
    ref, out = torch.cat(list(stock_items)), torch.cat(list(npu_items))
    cosine = torch.nn.functional.cosine_similarity(ref.double().flatten(), out.double().flatten(), dim=0).item()
    record_accuracy("whole model (0002)", str(grid), str([t.specialization for t in npu_visual.last_timings]),
                    cosine, (ref - out).abs().max().item(), ref.abs().max().item())
    assert cosine >= 0.999


def test_bfloat16_tower_matches_stock(tmp_path, tiny, vision_config, make_npu_tower, record_accuracy):
    """Checkpoints run in bfloat16: the stock tower computes in bf16, the device
    graph in float32 from the same bf16 weights; the tower returns bf16."""
    from tiny_qwen2_5_vl import pixel_values
    from vllm.vision_npu.export import export_qwen2_5_vision_bundle
    from vllm.vision_npu.models.qwen2_5_vl_graph import Qwen2_5_VisionGraphConfig

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        stock_bf16, state = tiny.build_stock_tower(vision_config, seed=1)
        export_qwen2_5_vision_bundle(
            Qwen2_5_VisionGraphConfig.from_vision_config(vision_config, 1e-6),
            {k: v.float().numpy() for k, v in state.items()}, SIZES, cache_dir=tmp_path,
        )
        npu_bf16 = make_npu_tower(cache_dir=tmp_path, state=state)
    finally:
        torch.set_default_dtype(default)
    assert stock_bf16.dtype == npu_bf16.dtype == torch.bfloat16
    grid = [[1, 24, 24], [1, 12, 14], [2, 8, 8]]
    x = pixel_values(grid, seed=13).to(torch.bfloat16)
    with torch.no_grad():
        ref, out = stock_bf16(x, grid_thw=grid), npu_bf16(x, grid_thw=grid)
    assert out.dtype == ref.dtype == torch.bfloat16 and out.shape == ref.shape
    cosine = torch.nn.functional.cosine_similarity(ref.double().flatten(), out.double().flatten(), dim=0).item()
    max_abs = (ref.float() - out.float()).abs().max().item()
    record_accuracy("bfloat16 tower", str(grid), str([t.specialization for t in npu_bf16.last_timings]),
                    cosine, max_abs, ref.abs().max().item())
    assert cosine >= 0.999
