"""A tiny random Qwen2.5-VL checkpoint that vLLM's engine loads: config, random
weights, a BPE tokenizer trained here with the Qwen special tokens, a chat
template and the image/video processor configs. Nothing is downloaded.

The vision tower dominates the model on purpose (the language model is two
small layers), and the text head size is 32 because vLLM's CPU attention
rejects 16.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2.5-VL's template reduced to what the tests send: text, images, videos.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or part['type'] == 'video_url' %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "the a of image video picture frame describe what is in this show me colour red green "
    "blue cat dog tree house sky road left right top bottom small large many one two three "
    "and or not with without near far light dark person car bird water mountain city"
).split()


def vision_config_fields(**overrides: Any) -> dict[str, Any]:
    """The tests' tiny tower: real patch geometry (14 px patches, temporal 2,
    2x2 merge, 112 px windows), tiny widths, one full-attention block of two."""
    fields: dict[str, Any] = dict(
        depth=4,
        hidden_size=64,
        num_heads=4,
        intermediate_size=128,
        out_hidden_size=128,
        fullatt_block_indexes=[1, 3],
        window_size=112,
        spatial_merge_size=2,
        patch_size=14,
        temporal_patch_size=2,
        in_channels=3,
        hidden_act="silu",
        initializer_range=0.05,
    )
    fields.update(overrides)
    return fields


def train_tokenizer(vocab_size: int = 400, seed: int = 0) -> Any:
    """A byte-level BPE tokenizer with the Qwen special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(seed)
    corpus = [" ".join(rng.choice(_WORDS) for _ in range(12)) for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


def build_checkpoint(
    directory: Path,
    *,
    seed: int = 0,
    max_pixels: int = 448 * 448,
    min_pixels: int = 56 * 56,
    vision: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint to ``directory``; returns it."""
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(seed=seed),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = (len(tokenizer) + 63) // 64 * 64

    vision_fields = vision_config_fields(**(vision or {}))
    text_hidden = 128
    vision_fields["out_hidden_size"] = text_hidden
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=text_hidden,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,  # head size 32
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rms_norm_eps=1e-6,
            initializer_range=0.2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [4, 6, 6]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        vision_config=vision_fields,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.save_pretrained(directory, safe_serialization=True)

    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2,
                                              temporal_patch_size=2),
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2,
                                              temporal_patch_size=2),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(directory)
    (directory / "generation_config.json").write_text(json.dumps({
        "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
    }))
    return directory
