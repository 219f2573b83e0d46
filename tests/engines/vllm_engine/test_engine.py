"""The NPU vision tower inside vLLM's engine (`vllm.LLM`, v1 scheduler) on the CPU.

Stock tower vs the NPU tower (onnxrt backend, the exported device graph) on
one tiny random checkpoint: greedy tokens, chunked prefill, the encoder cache,
start-up profiling, oversized input, bfloat16.
"""

from __future__ import annotations

import pytest

from conftest import FULL_SIZES, SMALL_SIZES, chat_prompt

# Images as [seed, width, height]; the processor resizes them to multiples of
# 28 px, so they need different specializations of the full bundle.
IMAGE_256 = [1, 224, 224]  # 16 x 16 patches -> the 256 specialization
IMAGE_64 = [2, 112, 112]  # 8 x 8 -> 64
IMAGE_768 = [3, 448, 336]  # 32 x 24 -> 1024
IMAGE_ODD = [4, 300, 200]  # 22 x 14 = 308 -> 1024
VIDEO = [5, 4, 112, 112]  # 4 frames -> grid (2, 8, 8), 128 patches -> 256

MAIN = [
    {"prompt": chat_prompt("hello there")},
    {"prompt": chat_prompt("describe this image", images=1), "images": [IMAGE_256]},
    {"prompt": chat_prompt("compare the two", images=2), "images": [IMAGE_64, IMAGE_768]},
    {"prompt": chat_prompt("what is in it", images=1), "images": [IMAGE_ODD]},
    {"prompt": chat_prompt("describe the video", videos=1), "video": VIDEO},
]
DISTINCT_ITEMS = 5


def tokens(result: dict, batch: int = 0) -> list[list[int]]:
    entry = result["batches"][batch]
    assert "error" not in entry, entry["error"]
    return [o["tokens"] for o in entry["outputs"]]


def spec_for(patches: int, sizes: tuple[int, ...]) -> int:
    return min(s for s in sizes if s >= patches)


@pytest.fixture(scope="module")
def stock(run_engine):
    # An empty VLLM_VISION_NPU_BACKEND means the stock tower.
    return run_engine("", None, [MAIN])


@pytest.fixture(scope="module")
def npu(run_engine, full_bundle):
    return run_engine("onnxrt", full_bundle, [MAIN])


@pytest.fixture(scope="module")
def npu_chunked(run_engine, full_bundle):
    return run_engine("onnxrt", full_bundle, [MAIN], max_num_batched_tokens=32)


def test_greedy_tokens_identical_stock_vs_npu(stock, npu, report):
    assert stock["tower"]["type"] == "Qwen2_5_VisionTransformer"
    assert npu["tower"]["type"] == "Qwen2_5_VisionTransformerNPU"
    assert "provider=CPUExecutionProvider" in npu["log"]
    assert tokens(npu) == tokens(stock)
    specs = {spec_for(t * h * w, FULL_SIZES) for t, h, w in npu["tower"]["grids"]}
    assert specs == set(FULL_SIZES), "the prompts should need every specialization"
    report(f"float32, {len(MAIN)} prompts (text, images of 3 specializations, two images "
           f"in one prompt, a video): tokens identical: {tokens(npu) == tokens(stock)}")


def _steps_touching(result: dict, req_id: str, start: int, end: int) -> int:
    """How many scheduler steps scheduled tokens of [start, end) of req_id."""
    done, touched = 0, 0
    for step in result["steps_all"]:
        n = step["tokens"].get(req_id, 0)
        if n and done < end and done + n > start:
            touched += 1
        done += n
    return touched


def test_chunked_prefill_splits_images_and_keeps_tokens(stock, npu_chunked, report):
    result = dict(npu_chunked, steps_all=npu_chunked["batches"][0]["steps"])
    split = [
        (req, p["length"], _steps_touching(result, req, p["offset"], p["offset"] + p["length"]))
        for req, ranges in result["placeholders"].items() for p in ranges
    ]
    assert any(steps >= 2 for _, _, steps in split), split
    assert max(sum(s["tokens"].values()) for s in result["steps_all"]) <= 32
    assert tokens(npu_chunked) == tokens(stock)
    # Every item was encoded once, however many steps its placeholders took.
    assert npu_chunked["batches"][0]["tower_items"] == DISTINCT_ITEMS
    report("chunked prefill (max_num_batched_tokens=32): placeholder ranges split over "
           f"{max(s for _, _, s in split)} steps at most; tokens identical: True")


def test_encoder_cache_runs_the_tower_once_per_image(run_engine, full_bundle):
    same = [
        {"prompt": chat_prompt("describe this image", images=1), "images": [IMAGE_256]},
        {"prompt": chat_prompt("what colour is it", images=1), "images": [IMAGE_256]},
    ]
    result = run_engine("onnxrt", full_bundle, [same, same[:1]], max_num_batched_tokens=48)
    first, again = tokens(result, 0), tokens(result, 1)
    assert result["batches"][0]["tower_items"] == 1
    assert again[0] == first[0]
    # Both requests hold the same image: one placeholder identifier.
    idents = {p["identifier"] for ranges in result["placeholders"].values() for p in ranges}
    assert len(idents) == 1


BIG = [6, 800, 600]  # more than the small bundle's 256 patches at any max_pixels above 50176
LONG_VIDEO = [7, 8, 224, 224]  # grid (4, 16, 16): 1024 patches, 4 x the small bundle's largest

OVERSIZE = [
    [{"prompt": chat_prompt("describe this image", images=1), "images": [BIG]}],
    [{"prompt": chat_prompt("describe this image", images=1), "images": [BIG],
      "mm_processor_kwargs": {"max_pixels": 800 * 800}}],
    [{"prompt": chat_prompt("describe this image", images=1), "images": [IMAGE_256]}],
    [{"prompt": chat_prompt("describe the video", videos=1), "video": LONG_VIDEO}],
]


@pytest.fixture(scope="module")
def npu_small(run_engine, small_bundle):
    # enforce_eager=False: the CPU runner's warm-up runs vLLM's profiling pass,
    # which feeds max-size dummy items (4 videos here) to the tower.
    return run_engine("onnxrt", small_bundle, OVERSIZE, enforce_eager=False)


def test_startup_profiling_works_with_a_small_bundle(npu_small):
    assert "startup_error" not in npu_small, npu_small.get("startup_error")
    assert "profiled with" in npu_small["log"]
    assert "max_pixels lowered from 200704 to 50176" in npu_small["log"]


def test_big_image_is_resized_to_fit_and_a_request_asking_for_more_fails_alone(npu_small):
    big = npu_small["batches"]
    assert all(h * w <= max(SMALL_SIZES) for _, h, w in npu_small["tower"]["grids"])
    assert "outputs" in big[0]
    error = big[1]["error"]
    assert error["type"] in ("VisionNPUInputTooLargeError", "ValueError"), error
    assert "max_pixels" in error["message"] and "256 patches" in error["message"]
    assert "50176" in error["message"]
    # The engine lives: the next requests are served.
    assert "outputs" in big[2] and "outputs" in big[3]


def test_long_video_runs_in_pieces_exactly(npu_small, run_engine):
    pieces = [p for p in npu_small["tower"]["pieces"] if p[0][1:] == [16, 16]]
    assert [4, 16, 16] in npu_small["tower"]["grids"]
    assert len([p for p in pieces if p[0][0] == 1]) >= 4, npu_small["tower"]["pieces"]
    # The stock tower, told the same max_pixels, sees the same inputs.
    served = [OVERSIZE[0], OVERSIZE[2], OVERSIZE[3]]
    stock = run_engine("", None, served, enforce_eager=False,
                       mm_processor_kwargs={"max_pixels": max(SMALL_SIZES) * 14 * 14})
    npu_tokens = [tokens(npu_small, i) for i in (0, 2, 3)]
    stock_tokens = [tokens(stock, i) for i in range(3)]
    assert npu_tokens == stock_tokens


def test_fp32_bundle_under_a_bfloat16_engine_is_refused_with_the_fix(run_engine, full_bundle):
    result = run_engine("onnxrt", full_bundle, [MAIN[:2]], dtype="bfloat16")
    error = result.get("startup_error")
    assert error is not None
    assert "different weights" in error["message"] and "--dtype bfloat16" in error["message"]


def test_bfloat16_agreement(run_engine, bf16_bundle, report):
    batch = MAIN[1:]
    stock = run_engine("", None, [batch], dtype="bfloat16", logprobs=1)
    npu = run_engine("onnxrt", bf16_bundle, [batch], dtype="bfloat16", logprobs=1)
    assert "startup_error" not in npu, npu.get("startup_error")
    positions = agree = 0
    deltas: list[float] = []
    for s, n in zip(stock["batches"][0]["outputs"], npu["batches"][0]["outputs"], strict=True):
        for i, (a, b) in enumerate(zip(s["tokens"], n["tokens"], strict=True)):
            positions += 1
            if a != b:
                break  # after a flip the continuations differ by construction
            agree += 1
            deltas.append(abs(s["logprobs"][i] - n["logprobs"][i]))
    identical = sum(s["tokens"] == n["tokens"] for s, n in
                    zip(stock["batches"][0]["outputs"], npu["batches"][0]["outputs"], strict=True))
    report(f"bfloat16 (bundle exported with --dtype bfloat16): {identical}/{len(batch)} requests "
           f"token-identical, {agree}/{positions} positions agree up to the first flip, "
           f"logprob |delta| max {max(deltas):.2e} mean {sum(deltas) / len(deltas):.2e}")
    assert agree >= positions // 2
