"""The processor-side bound with the checkpoint's real Qwen2.5-VL processor
(transformers, with torchvision): images are resized to fit the bundle."""

from __future__ import annotations

import numpy as np

from conftest import FULL_SIZES, MAX_PIXELS, SMALL_SIZES


def test_the_real_processor_is_bounded_to_the_bundle(checkpoint, small_bundle, full_bundle,
                                                     monkeypatch):
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor
    from vllm.vision_npu.processing import bound_hf_processor, vision_npu_limits

    hf_config = AutoConfig.from_pretrained(checkpoint)
    monkeypatch.setenv("VLLM_VISION_NPU_BACKEND", "onnxrt")
    image = Image.fromarray(np.zeros((1080, 1920, 3), dtype=np.uint8))
    video = np.zeros((4, 480, 640, 3), dtype=np.uint8)

    monkeypatch.setenv("VLLM_VISION_NPU_CACHE", str(full_bundle))
    full = vision_npu_limits(hf_config)
    assert full.sizes == FULL_SIZES and full.max_pixels == MAX_PIXELS
    processor = bound_hf_processor(AutoProcessor.from_pretrained(checkpoint), full)
    assert processor.image_processor.size["longest_edge"] == MAX_PIXELS  # already fits

    monkeypatch.setenv("VLLM_VISION_NPU_CACHE", str(small_bundle))
    small = vision_npu_limits(hf_config)
    assert small.sizes == SMALL_SIZES
    processor = bound_hf_processor(AutoProcessor.from_pretrained(checkpoint), small)
    bound_hf_processor(processor, small)  # idempotent
    for sub in (processor.image_processor, processor.video_processor):
        assert sub.size["longest_edge"] == small.max_pixels == 256 * 14 * 14
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    (t, h, w), = grid.tolist()
    assert h * w <= 256 and w > h  # resized to fit, aspect kept
    small.check_grids("Image", grid)
    vgrid = processor.video_processor(videos=[video], return_tensors="pt")["video_grid_thw"]
    (t, h, w), = vgrid.tolist()
    assert t == 2 and h * w <= 256
