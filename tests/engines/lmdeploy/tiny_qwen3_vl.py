"""Tiny random Qwen3-VL / Qwen3-VL-MoE checkpoints, built in the test."""

from __future__ import annotations

from pathlib import Path

import torch

IMAGE_TOKEN_ID = 151655
VIDEO_TOKEN_ID = 151656
VISION_START_ID = 151652
VISION_END_ID = 151653
VOCAB = 151680
MERGE = 2
PATCH = 4
TEMPORAL = 2


def tiny_config(moe: bool = False):
    from transformers import Qwen3VLConfig, Qwen3VLMoeConfig

    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3,
                  patch_size=PATCH, temporal_patch_size=TEMPORAL, spatial_merge_size=MERGE,
                  out_hidden_size=32, num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
    ids = dict(image_token_id=IMAGE_TOKEN_ID, video_token_id=VIDEO_TOKEN_ID,
               vision_start_token_id=VISION_START_ID, vision_end_token_id=VISION_END_ID)
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, decoder_sparse_step=1)
        return Qwen3VLMoeConfig(text_config=text, vision_config=vision, **ids)
    return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)


def save_tiny_model(path: Path, moe: bool = False, seed: int = 0):
    """Save a random model with `save_pretrained` (keys model.visual.*,
    model.language_model.*, lm_head.*) and return it in eval mode."""
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLMoeForConditionalGeneration

    torch.manual_seed(seed)
    cls = Qwen3VLMoeForConditionalGeneration if moe else Qwen3VLForConditionalGeneration
    model = cls(tiny_config(moe)).eval()
    model.save_pretrained(path)
    return model


def pixels(grid_thw: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Random flattened patches as the Qwen3-VL processor emits them."""
    t, h, w = grid_thw
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t * h * w, 3 * TEMPORAL * PATCH * PATCH, generator=g)


def n_tokens(grid_thw: tuple[int, int, int]) -> int:
    t, h, w = grid_thw
    return t * h * w // (MERGE * MERGE)
