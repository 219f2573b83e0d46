"""Tiny random Qwen3-VL / Qwen3-VL-MoE checkpoints, built in the test.

`build_checkpoint` writes what a Hub checkpoint holds: config, random weights
(`save_pretrained`: keys model.visual.*, model.language_model.*, lm_head.*), a
byte-level BPE tokenizer trained here with the Qwen special tokens, a chat
template, and the Qwen3-VL processor configs (image and video). Nothing is
downloaded. The special tokens are the tokenizer's first ids, so the ids
below hold for every checkpoint built here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
ENDOFTEXT_ID, IM_START_ID, IM_END_ID, VISION_START_ID, VISION_END_ID, IMAGE_TOKEN_ID, VIDEO_TOKEN_ID = range(7)
VOCAB = 512
MERGE = 2
PATCH = 4
TEMPORAL = 2
HIDDEN = 32

# Qwen3-VL's template reduced to what the tests send: text, images, videos.
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
    "and or not with without near far light dark seconds"
).split()


def tiny_config(moe: bool = False, *, moe_intermediate_size: int = 16,
                deepstack: tuple[int, ...] = (0, 1), vocab_size: int = VOCAB):
    """hidden 32; the MoE default moe_intermediate_size 16 makes the packed
    gate_up_proj square (hidden == 2 * moe_intermediate)."""
    from transformers import Qwen3VLConfig, Qwen3VLMoeConfig

    text = dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True},
                bos_token_id=ENDOFTEXT_ID, eos_token_id=IM_END_ID, pad_token_id=ENDOFTEXT_ID)
    vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3,
                  patch_size=PATCH, temporal_patch_size=TEMPORAL, spatial_merge_size=MERGE,
                  out_hidden_size=HIDDEN, num_position_embeddings=16,
                  deepstack_visual_indexes=list(deepstack))
    ids = dict(image_token_id=IMAGE_TOKEN_ID, video_token_id=VIDEO_TOKEN_ID,
               vision_start_token_id=VISION_START_ID, vision_end_token_id=VISION_END_ID)
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=moe_intermediate_size,
                    decoder_sparse_step=1)
        cfg = Qwen3VLMoeConfig(text_config=text, vision_config=vision, **ids)
        cfg.architectures = ["Qwen3VLMoeForConditionalGeneration"]
    else:
        cfg = Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
        cfg.architectures = ["Qwen3VLForConditionalGeneration"]
    return cfg


def train_tokenizer(seed: int = 0):
    """A byte-level BPE tokenizer whose first ids are SPECIAL_TOKENS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(seed)
    corpus = [" ".join(rng.choice(_WORDS) for _ in range(12)) for _ in range(400)]
    corpus += [f"<{t / 2:.1f} seconds>" for t in range(40)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok


def save_processor(path: Path, *, min_pixels: int = 8 * 8, max_pixels: int = 64 * 64) -> None:
    """Tokenizer + Qwen3-VL processor (image and video) for the tiny tower:
    4 px patches, 2x2 merge, temporal patches of 2 frames."""
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLImageProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(), eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:],
                                        model_max_length=2048)
    tokenizer.chat_template = CHAT_TEMPLATE
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    geometry = dict(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **geometry),
        video_processor=Qwen3VLVideoProcessor(size=size, fps=2, **geometry),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(path)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": IM_END_ID,
                                                              "pad_token_id": ENDOFTEXT_ID}))


def build_checkpoint(path: Path, *, moe: bool = False, seed: int = 0, max_shard_size: str | None = None,
                     **config: Any):
    """Write the checkpoint to ``path`` and return the transformers model
    (float32, eval mode) it holds."""
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLMoeForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cls = Qwen3VLMoeForConditionalGeneration if moe else Qwen3VLForConditionalGeneration
    model = cls(tiny_config(moe, **config)).to(torch.float32).eval()
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kwargs)
    save_processor(path)
    return model


def save_tiny_model(path: Path, moe: bool = False, seed: int = 0):
    """The checkpoint without caring for its tokenizer (kept for the older tests)."""
    return build_checkpoint(path, moe=moe, seed=seed)


def pixels(grid_thw: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Random flattened patches as the Qwen3-VL processor emits them."""
    t, h, w = grid_thw
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t * h * w, 3 * TEMPORAL * PATCH * PATCH, generator=g)


def n_tokens(grid_thw: tuple[int, int, int]) -> int:
    t, h, w = grid_thw
    return t * h * w // (MERGE * MERGE)


def to_released_expert_layout(path: Path) -> None:
    """Rewrite a MoE checkpoint's packed experts in the layout of the released
    Qwen3-VL-MoE checkpoints (transformers 4.57: gate_up_proj [E, hidden,
    2 * inter], down_proj [E, inter, hidden]); transformers 5 saves them
    [E, 2 * inter, hidden] / [E, hidden, inter]."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    for shard in sorted(path.glob("*.safetensors")):
        state = load_file(shard)
        for key in state:
            if key.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
                state[key] = state[key].transpose(1, 2).contiguous()
        save_file(state, shard, metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["transformers_version"] = "4.57.1"
    (path / "config.json").write_text(json.dumps(config, indent=2))


def random_image(height: int, width: int, seed: int):
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (height, width, 3), dtype=np.uint8))


def png_data_url(image) -> str:
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def jpeg_frames_data_url(frames) -> str:
    """A video as lmdeploy takes it without a decoder: JPEG frames, base64,
    comma-separated."""
    import base64
    import io

    parts = []
    for frame in frames:
        buf = io.BytesIO()
        frame.save(buf, format="JPEG", quality=95)
        parts.append(base64.b64encode(buf.getvalue()).decode())
    return "data:video/jpeg;base64," + ",".join(parts)


def decode_jpeg_frames(url: str):
    """The frames lmdeploy decodes from ``jpeg_frames_data_url`` (T, H, W, 3)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    data = url.split(",", 1)[1]
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(part))).convert("RGB"))
                     for part in data.split(",")])
