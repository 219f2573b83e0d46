"""Qwen3-VL's vision encoder in PyTorch for TurboMind (patches/lmdeploy 0003):
the vision tower loaded alone from the checkpoint, its forward and the mRoPE
metadata checked against transformers on tiny random checkpoints built here.
Pure Python/torch: nothing of TurboMind's compiled library is needed.

Names the series adds are imported inside the tests, so that against a wheel
without the series each test fails on its own.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_qwen3_vl import (
    IMAGE_TOKEN_ID,
    VIDEO_TOKEN_ID,
    VISION_END_ID,
    VISION_START_ID,
    n_tokens,
    pixels,
)

DROP_DEEPSTACK = "LMDEPLOY_QWEN3_VL_DROP_DEEPSTACK"


@pytest.fixture(scope="module", params=["dense", "moe"])
def checkpoint(request, dense, moe_checkpoints):
    if request.param == "dense":
        return dense
    path, model, _, _ = moe_checkpoints["moe16-out_in"]
    return path, model


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def encoder(path, monkeypatch):
    """The TurboMind-side vision encoder as ImageEncoder builds it. The tiny
    checkpoints have deepstack layers, which TurboMind cannot take: building
    it needs the explicit opt-in (see test_turbomind.py for the refusal)."""
    from lmdeploy.vl.model.qwen3 import Qwen3VLModel
    from transformers import AutoConfig

    monkeypatch.setenv(DROP_DEEPSTACK, "1")
    vm = Qwen3VLModel(str(path), backend="turbomind", hf_config=AutoConfig.from_pretrained(path))
    vm.build_preprocessor()
    vm.build_model()
    return vm


# --------------------------------------------------------------------------
# architecture resolution and task routing
# --------------------------------------------------------------------------

def test_qwen3_vl_architectures_route_to_turbomind(checkpoint):
    from lmdeploy.turbomind.supported_models import SUPPORTED_ARCHS, is_supported

    path, model = checkpoint
    arch = model.config.architectures[0]
    assert SUPPORTED_ARCHS[arch] == ("qwen3_vl-moe" if "Moe" in arch else "qwen3_vl")
    assert is_supported(str(path)) is True


def test_vision_model_registry_picks_qwen3_vl_with_pytorch_vision(checkpoint):
    from lmdeploy.vl.model.base import VISION_MODELS
    from lmdeploy.vl.model.qwen3 import Qwen3VLModel
    from transformers import AutoConfig

    path, _ = checkpoint
    cfg = AutoConfig.from_pretrained(path)
    matched = [cls for cls in VISION_MODELS.module_dict.values() if cls.match(cfg)]
    assert matched == [Qwen3VLModel]
    # not TurboMind-native: the encoder runs in PyTorch (Qwen3.5 keeps its native path)
    assert Qwen3VLModel._turbomind_native_vision is False
    from lmdeploy.vl.model.qwen3_5 import Qwen3_5Model

    assert Qwen3_5Model._turbomind_native_vision is True


def test_task_routing(checkpoint):
    from lmdeploy.archs import get_task
    from lmdeploy.messages import TurbomindEngineConfig
    from lmdeploy.serve.core import AsyncEngine, VLAsyncEngine

    path, _ = checkpoint
    assert get_task("turbomind", str(path)) == ("vlm", VLAsyncEngine)
    assert get_task("turbomind", str(path),
                    backend_config=TurbomindEngineConfig(language_model_only=True)) == ("llm", AsyncEngine)


# --------------------------------------------------------------------------
# vision weights loaded alone; forward equals transformers' reference
# --------------------------------------------------------------------------

def test_vision_weights_loaded_separately(checkpoint, monkeypatch):
    from lmdeploy.vl.model.qwen3 import load_vision_state_dict

    path, model = checkpoint
    state = load_vision_state_dict(str(path))
    reference = model.model.visual.state_dict()
    assert set(state) == set(reference)
    assert not any("language_model" in k or k.startswith("lm_head") for k in state)
    vm = encoder(path, monkeypatch)
    # the encoder holds the vision tower only: no language-model parameter
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    assert sum(p.numel() for p in vm.vision_model.parameters()) == n_vision


@pytest.mark.parametrize("grid", [(1, 8, 8), (1, 4, 12), (2, 8, 4)])
def test_vision_forward_matches_transformers(checkpoint, grid, monkeypatch):
    path, model = checkpoint
    vm = encoder(path, monkeypatch)
    px = pixels(grid, seed=sum(grid))
    emb, deepstack = vm.encode(px, grid)
    with torch.no_grad():
        ref = model.model.get_image_features(px, torch.tensor([grid]))
    assert emb.shape == (n_tokens(grid), model.config.text_config.hidden_size)
    assert cosine(emb, ref.pooler_output[0]) >= 0.999
    assert len(deepstack) == len(ref.deepstack_features) == 2
    for got, want in zip(deepstack, ref.deepstack_features, strict=True):
        assert cosine(got, want[0]) >= 0.999


# --------------------------------------------------------------------------
# mRoPE metadata == transformers' get_rope_index
# --------------------------------------------------------------------------

def _prompt(parts):
    """parts: ints (text length), ('image', grid) or ('video', grid).
    Builds the token ids the Qwen3-VL processor would emit (a video is one
    timestamp + vision run per frame)."""
    ids, types, images, videos, tok = [], [], [], [], 100
    for part in parts:
        if isinstance(part, int):
            ids += list(range(tok, tok + part))
            types += [0] * part
            tok += part
            continue
        kind, (t, h, w) = part
        if kind == "image":
            images.append((t, h, w))
            ids += [VISION_START_ID] + [IMAGE_TOKEN_ID] * n_tokens((t, h, w)) + [VISION_END_ID]
            types += [0] + [1] * n_tokens((t, h, w)) + [0]
        else:
            videos.append((t, h, w))
            for frame in range(t):
                ids += [tok + frame, VISION_START_ID] + [VIDEO_TOKEN_ID] * n_tokens((1, h, w)) + [VISION_END_ID]
                types += [0, 0] + [2] * n_tokens((1, h, w)) + [0]
    return ids, types, images, videos


CASES = {
    "text-only": [17],
    "single-image": [5, ("image", (1, 8, 8)), 7],
    "multi-image": [3, ("image", (1, 8, 4)), 2, ("image", (1, 4, 12)), 4],
    "video": [4, ("video", (3, 8, 4)), 5],
    "image-and-video": [2, ("image", (1, 4, 4)), 3, ("video", (2, 4, 8)), 1],
}


def _reference_positions(model, ids, types, images, videos):
    with torch.no_grad():
        pos, delta = model.model.get_rope_index(
            torch.tensor([ids]), torch.tensor([types]),
            image_grid_thw=torch.tensor(images) if images else None,
            video_grid_thw=torch.tensor(videos) if videos else None)
    return pos[:, 0], int(delta.flatten()[0])


@pytest.mark.parametrize("case", list(CASES))
def test_mrope_positions_match_transformers(checkpoint, case):
    from lmdeploy.turbomind.mrope import mrope_position_ids, vision_segments

    _, model = checkpoint
    ids, types, images, videos = _prompt(CASES[case])
    segments = vision_segments(ids, IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, images, videos, spatial_merge_size=2)
    got, delta = mrope_position_ids(len(ids), segments)
    want, want_delta = _reference_positions(model, ids, types, images, videos)
    assert torch.equal(got, want)
    assert delta == want_delta
    if case != "text-only":
        assert delta < 0  # vision runs advance positions by max(h, w), not by their length


@pytest.mark.parametrize("case", ["single-image", "multi-image", "video", "image-and-video"])
def test_to_turbomind_packs_embeddings_and_mrope(checkpoint, case, monkeypatch):
    from lmdeploy.turbomind.mrope import pack_mrope_inputs
    from lmdeploy.vl.constants import Modality

    path, model = checkpoint
    vm = encoder(path, monkeypatch)
    ids, types, images, videos = _prompt(CASES[case])
    items = [dict(modality=Modality.IMAGE, pixel_values=pixels(g, i), image_grid_thw=torch.tensor(g))
             for i, g in enumerate(images)]
    items += [dict(modality=Modality.VIDEO, pixel_values_videos=pixels(g, 10 + i), video_grid_thw=torch.tensor(g))
              for i, g in enumerate(videos)]
    out = vm.to_turbomind(vm.forward(dict(input_ids=ids, multimodal=items)))

    assert out["input_ids"] == ids
    runs = [(b, e) for b, e in out["input_embedding_ranges"]]
    assert all(ids[b] in (IMAGE_TOKEN_ID, VIDEO_TOKEN_ID) for b, _ in runs)
    assert sum(e - b for b, e in runs) == sum(t in (1, 2) for t in types)
    # every run carries the reference features of its image / video frame
    with torch.no_grad():
        ref_img = [model.model.get_image_features(x["pixel_values"], x["image_grid_thw"][None]).pooler_output[0]
                   for x in items if x["modality"] == Modality.IMAGE]
        ref_vid = []
        for x in items:
            if x["modality"] == Modality.VIDEO:
                feats = model.model.get_video_features(x["pixel_values_videos"],
                                                       x["video_grid_thw"][None]).pooler_output[0]
                ref_vid.extend(feats.chunk(int(x["video_grid_thw"][0])))
    queues = {IMAGE_TOKEN_ID: list(ref_img), VIDEO_TOKEN_ID: list(ref_vid)}
    for (b, e), emb in zip(runs, out["input_embeddings"], strict=True):
        want = queues[ids[b]].pop(0)
        assert emb.shape[0] == e - b == want.shape[0]
        assert cosine(emb, want) >= 0.999
    assert not queues[IMAGE_TOKEN_ID] and not queues[VIDEO_TOKEN_ID]

    want_pos, want_delta = _reference_positions(model, ids, types, images, videos)
    meta = out["input_meta"]
    assert torch.equal(meta["mrope_position_ids"], want_pos)
    assert meta["mrope_position_delta"] == want_delta
    packed = pack_mrope_inputs(meta["mrope_position_ids"], meta["mrope_position_delta"])
    assert packed["mrope_position_ids"].dtype == torch.int32
    assert torch.equal(packed["mrope_position_ids"], want_pos.t().to(torch.int32))
    assert packed["mrope_length"].tolist() == [len(ids)]
    assert packed["mrope_position_delta"].tolist() == [want_delta]


def test_text_only_mrope_inputs_are_plain_positions():
    from lmdeploy.turbomind.mrope import text_only_mrope_inputs

    packed = text_only_mrope_inputs(6)
    assert packed["mrope_position_ids"].tolist() == [[i, i, i] for i in range(6)]
    assert packed["mrope_position_delta"].tolist() == [0]


def test_vision_segments_reject_mismatched_grids():
    from lmdeploy.turbomind.mrope import vision_segments

    ids, _, images, _ = _prompt(CASES["single-image"])
    with pytest.raises(ValueError, match="image token run"):
        vision_segments(ids, IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, [(1, 4, 4)], [], spatial_merge_size=2)
    with pytest.raises(ValueError, match="1 image token runs in the prompt but 2"):
        vision_segments(ids, IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, images * 2, [], spatial_merge_size=2)


# --------------------------------------------------------------------------
# a sharded checkpoint: only the shards holding vision weights are read
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    import tiny_qwen3_vl

    path = tmp_path_factory.mktemp("sharded") / "model"
    model = tiny_qwen3_vl.build_checkpoint(path, seed=3, max_shard_size="100KB")
    return path, model


def test_sharded_checkpoint_reads_only_the_vision_shards(sharded, monkeypatch):
    from lmdeploy.vl.model.qwen3 import load_vision_state_dict, vision_weight_files

    path, model = sharded
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    vision_shards = {f for k, f in weight_map.items() if k.startswith("model.visual.")}
    other_shards = set(weight_map.values()) - vision_shards
    assert len(vision_shards) > 1 and other_shards  # the case the index exists for
    assert not (path / "model.safetensors").exists()

    files = vision_weight_files(str(path))
    assert {p.rsplit("/", 1)[-1] for p in files} == vision_shards
    assert sorted(k for keys in files.values() for k in keys) == sorted(
        k for k in weight_map if k.startswith("model.visual."))

    # shards with language-model weights only are never opened: make them unreadable
    for name in other_shards:
        (path / name).write_bytes(b"not a safetensors file")
    state = load_vision_state_dict(str(path))
    reference = model.model.visual.state_dict()
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)

    vm = encoder(path, monkeypatch)
    grid = (1, 8, 4)
    px = pixels(grid, seed=5)
    emb, _ = vm.encode(px, grid)
    with torch.no_grad():
        ref = model.model.get_image_features(px, torch.tensor([grid])).pooler_output[0]
    assert cosine(emb, ref) >= 0.999
