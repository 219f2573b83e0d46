"""Qwen3-VL through lmdeploy's TurboMind path, checked against transformers.

Every test here runs lmdeploy 0.18.0's own code - `TurboMind` (converter,
source models, builders, weight formats, checkpoint reader),
`TurboMindInstance`, `pipeline` / `VLAsyncEngine` / `AsyncEngine`,
`MultimodalProcessor`, `ImageEncoder`, the real Qwen3-VL HF processor and
`lmdeploy serve api_server` - in a process where only TurboMind's compiled
library and the CUDA device are replaced (turbomind_stand_in: the library
links libcublas and there is no GPU). The stand-in records the weights the
builders commit and the tensors of each request; it computes nothing, so no
test here looks at generated text.

Each test names the patch of patches/lmdeploy it needs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tiny_qwen3_vl as tiny
import torch
from turbomind_scenarios import ok

HERE = Path(__file__).resolve().parent
DROP_DEEPSTACK = {"LMDEPLOY_QWEN3_VL_DROP_DEEPSTACK": "1"}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def as_engine(t: torch.Tensor) -> torch.Tensor:
    """A float32 reference rounded as the fp16 engine stores it."""
    return t.detach().to(torch.float16)


def rotary_pairs(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """TurboMind's RoPE kernel takes each head's rotary halves interleaved
    (x0, x_{d/2}, x1, ...): the column order lmdeploy gives q/k of any Qwen3."""
    out = w.shape[-1]
    return w.view(-1, out // head_dim, 2, head_dim // 2).transpose(2, 3).reshape(w.shape)


# --------------------------------------------------------------------------
# weights: Qwen3VLTextModel resolves model.language_model.* and lm_head (0001)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(turbomind, dense_plain, moe_checkpoints, tmp_path_factory):
    """`TurboMind(path)` for the dense checkpoint, the four MoE ones and one
    whose experts mix the two layouts; all in one process."""
    import shutil

    from safetensors.torch import load_file, save_file

    src = moe_checkpoints["moe24-out_in"][0]
    mixed = tmp_path_factory.mktemp("moe24_mixed") / "model"
    shutil.copytree(src, mixed)
    state = load_file(mixed / "model.safetensors")
    for key in state:  # gate_up in the released layout, down_proj as transformers 5 saves it
        if key.endswith("mlp.experts.gate_up_proj"):
            state[key] = state[key].transpose(1, 2).contiguous()
    save_file(state, mixed / "model.safetensors", metadata={"format": "pt"})

    names = ["dense", *moe_checkpoints, "mixed"]
    paths = [dense_plain[0], *(v[0] for v in moe_checkpoints.values()), mixed]
    results = turbomind([dict(name="export_weights", kwargs=dict(model_path=str(p))) for p in paths])
    return dict(zip(names, results, strict=True))


def test_dense_weights_are_the_checkpoints_text_weights(exports, dense_plain):
    _, model = dense_plain
    got = ok(exports["dense"])
    assert (got["source_model"], got["text_model"]) == ("Qwen3VLModel", "Qwen3VLTextModel")
    lm, w = model.model.language_model, got["weights"]
    cfg = model.config.text_config
    # nothing of the vision tower reaches TurboMind: it runs in PyTorch
    assert all(k.startswith("text_model.") for k in w)
    assert torch.equal(w["text_model.tok_embeddings"], lm.embed_tokens.weight.detach())
    assert torch.equal(w["text_model.output.weight"], as_engine(model.lm_head.weight.t()))
    assert torch.equal(w["text_model.norm.weight"], lm.norm.weight.detach())
    for i, layer in enumerate(lm.layers):
        p = f"text_model.layers.{i}."
        a, mlp = layer.self_attn, layer.mlp
        qkv = torch.cat([rotary_pairs(a.q_proj.weight.t(), cfg.head_dim),
                         rotary_pairs(a.k_proj.weight.t(), cfg.head_dim), a.v_proj.weight.t()], dim=-1)
        assert torch.equal(w[p + "attention.w_qkv.weight"], as_engine(qkv))
        assert torch.equal(w[p + "attention.wo.weight"], as_engine(a.o_proj.weight.t()))
        assert torch.equal(w[p + "attention_norm.weight"], layer.input_layernorm.weight.detach())
        assert torch.equal(w[p + "ffn_norm.weight"], layer.post_attention_layernorm.weight.detach())
        w1w3 = torch.cat([mlp.gate_proj.weight.t(), mlp.up_proj.weight.t()], dim=-1)
        assert torch.equal(w[p + "feed_forward.w1w3.weight"], as_engine(w1w3))
        assert torch.equal(w[p + "feed_forward.w2.weight"], as_engine(mlp.down_proj.weight.t()))
    # Qwen3-VL's mRoPE: (t, h, w) sections interleaved over the rotary dims
    assert got["rope"] == dict(mrope_interleaved=True, mrope_section=[2, 1, 1], dim=cfg.head_dim)
    assert got["processed"] == [0] and got["engines"] == [0]


@pytest.mark.parametrize("name", ["moe16-out_in", "moe16-in_out", "moe24-out_in", "moe24-in_out"])
def test_packed_experts_are_read_in_either_layout(exports, moe_checkpoints, name):
    """hidden 32 = 2 x moe_intermediate 16 makes gate_up_proj square
    ((4, 32, 32) in both layouts): the layout is read from both packed
    tensors against the config, never guessed from one shape."""
    _, model, inter, layout = moe_checkpoints[name]
    got = ok(exports[name])
    w = got["weights"]
    assert got["layer_kinds"] == ["moe_ffn"] * model.config.text_config.num_hidden_layers
    # Qwen3-VL-MoE always renormalises the top-k routing weights
    assert got["moe"] == dict(norm_topk_prob=True, experts_per_token=2, expert_num=4)
    for i, layer in enumerate(model.model.language_model.layers):
        experts, p = layer.mlp.experts, f"text_model.layers.{i}.moe_ffn."
        assert torch.equal(w[p + "gate.weight"], as_engine(layer.mlp.gate.weight.t()))
        for e in range(experts.num_experts):
            gate_up = experts.gate_up_proj[e]  # transformers computes x @ gate_up.T: [2 * inter, hidden]
            w1w3 = torch.cat([gate_up[:inter].t(), gate_up[inter:].t()], dim=-1)
            assert torch.equal(w[p + f"experts.{e}.w1w3.weight"], as_engine(w1w3)), (name, i, e)
            assert torch.equal(w[p + f"experts.{e}.w2.weight"], as_engine(experts.down_proj[e].t())), (name, i, e)


def test_experts_in_two_layouts_at_once_are_refused(exports):
    """gate_up_proj stored as released, down_proj as transformers 5 saves it:
    no layout fits both, so nothing is loaded (hidden 32, inter 24)."""
    got = exports["mixed"]
    assert got["error"].startswith("ValueError: model.language_model.layers.0.mlp.experts: packed experts "
                                   "gate_up_proj (32, 48) / down_proj (32, 24) (one expert) match no layout")


# --------------------------------------------------------------------------
# TurboMindInstance: input_meta (0004), the language_model_only guard (0005)
# --------------------------------------------------------------------------


def single_image_prompt(grid=(1, 8, 8), text=(5, 7)):
    n = tiny.n_tokens(grid)
    ids = list(range(100, 100 + text[0])) + [tiny.VISION_START_ID] + [tiny.IMAGE_TOKEN_ID] * n + [
        tiny.VISION_END_ID] + list(range(200, 200 + text[1]))
    types = [0] * (text[0] + 1) + [1] * n + [0] * (text[1] + 1)
    return ids, types, n, text[0] + 1


@pytest.fixture(scope="module")
def instance_requests(turbomind, dense_plain):
    path, model = dense_plain
    ids, types, n, begin = single_image_prompt()
    with torch.no_grad():
        feats = model.model.get_image_features(tiny.pixels((1, 8, 8), 3), torch.tensor([[1, 8, 8]])).pooler_output[0]
        pos, delta = model.model.get_rope_index(torch.tensor([ids]), torch.tensor([types]),
                                                image_grid_thw=torch.tensor([[1, 8, 8]]))
    meta = dict(mrope_position_ids=pos[:, 0], mrope_position_delta=int(delta.flatten()[0]))
    image = dict(input_ids=ids, input_embeddings=[feats], input_embedding_ranges=[[begin, begin + n]], input_meta=meta)
    text = dict(input_ids=list(range(100, 117)))
    scenarios = [dict(name="instance_request", kwargs=dict(model_path=str(path)), tensors=image),
                 dict(name="instance_request", kwargs=dict(model_path=str(path)), tensors=text),
                 dict(name="instance_request", kwargs=dict(model_path=str(path), language_model_only=True),
                      tensors=image),
                 dict(name="instance_request", kwargs=dict(model_path=str(path), language_model_only=True),
                      tensors=text)]
    # raw multimodal items (the TurboMind-native vision path: mm_input_converter)
    raw = dict(text, multimodal=[dict(modality="image")])
    scenarios += [dict(name="instance_request", kwargs=dict(model_path=str(path), language_model_only=True),
                       tensors=raw),
                  dict(name="instance_request", kwargs=dict(model_path=str(path)), tensors=raw)]
    results = turbomind(scenarios)
    names = ["image", "text", "lmo_image", "lmo_text", "lmo_raw", "raw"]
    return dict(zip(names, results, strict=True)), image


def test_request_carries_the_vision_features_and_mrope_metadata(instance_requests):
    results, sent = instance_requests
    got = ok(results["image"])
    assert got["raised"] is None and got["statuses"] == ["FINISH"]
    (req,) = got["requests"]
    t = req["inputs"]
    assert t["input_ids"].tolist() == sent["input_ids"]
    assert torch.equal(t["input_embeddings"], as_engine(sent["input_embeddings"][0]))
    assert t["input_embedding_ranges"].tolist() == sent["input_embedding_ranges"]
    # [seq_len, 3] int32, token-major (t, h, w), as TurboMind reads it
    pos = sent["input_meta"]["mrope_position_ids"]
    assert t["mrope_position_ids"].dtype == torch.int32
    assert torch.equal(t["mrope_position_ids"], pos.t().to(torch.int32))
    assert t["mrope_position_delta"].tolist() == [sent["input_meta"]["mrope_position_delta"]]
    assert t["mrope_length"].tolist() == [len(sent["input_ids"])]
    assert sent["input_meta"]["mrope_position_delta"] < 0  # the image advanced positions by 8, not 16


def test_text_only_request_gets_plain_mrope_positions(instance_requests):
    results, _ = instance_requests
    (req,) = ok(results["text"])["requests"]
    t = req["inputs"]
    assert "input_embeddings" not in t
    assert t["mrope_position_ids"].tolist() == [[i] * 3 for i in range(17)]
    assert t["mrope_position_delta"].tolist() == [0] and t["mrope_length"].tolist() == [17]


def test_language_model_only_instance_rejects_vision_features(instance_requests):
    results, _ = instance_requests
    got = ok(results["lmo_image"])
    assert got["requests"] == []  # never reached the engine
    assert got["raised"].startswith("LanguageModelOnlyError: ")
    assert "language_model_only=True (--language-model-only)" in got["raised"]
    assert ok(results["lmo_text"])["statuses"] == ["FINISH"]


def test_language_model_only_rejects_raw_multimodal_items(instance_requests):
    """mm_input_converter (TurboMind's own vision inputs): stock 0.18.0
    logged a warning and dropped them under language_model_only."""
    results, _ = instance_requests
    got = ok(results["lmo_raw"])
    assert got["requests"] == []
    assert got["raised"].startswith("LanguageModelOnlyError: ")
    # without the flag, Qwen3-VL says it takes vision features, not raw items
    raw = ok(results["raw"])
    assert raw["requests"] == []
    assert raw["raised"].startswith("ValueError: Qwen3-VL has no TurboMind-native vision encoder")


# --------------------------------------------------------------------------
# pipeline: real HF processor -> MultimodalProcessor -> ImageEncoder ->
# to_turbomind -> TurboMindInstance (0003, 0004), against transformers
# --------------------------------------------------------------------------

IMAGE_A = tiny.random_image(40, 56, seed=1)  # 10 x 14 patches -> 35 tokens
IMAGE_B = tiny.random_image(24, 24, seed=2)  # 6 x 6 patches -> 9 tokens
FRAMES = [tiny.random_image(32, 32, seed=10 + i) for i in range(4)]  # 2 temporal patches of 2 frames
VIDEO_URL = tiny.jpeg_frames_data_url(FRAMES)
VIDEO_METADATA = dict(total_num_frames=4, fps=2.0, duration=2.0, video_backend="jpeg_sequence",
                      frames_indices=[0, 1, 2, 3])  # what lmdeploy gives a JPEG-frame video

PROMPTS = {
    "one-image": [("text", "what is in this image"), ("image", IMAGE_A)],
    "two-images": [("image", IMAGE_A), ("text", "and this one"), ("image", IMAGE_B), ("text", "left or right")],
    "video": [("text", "describe the video"), ("video", VIDEO_URL)],
    "image-and-video": [("image", IMAGE_B), ("video", VIDEO_URL), ("text", "what is in this picture")],
    "text-only": [("text", "show me a red cat")],
}


def openai_messages(parts):
    content = []
    for kind, value in parts:
        if kind == "text":
            content.append({"type": "text", "text": value})
        elif kind == "image":
            content.append({"type": "image_url", "image_url": {"url": tiny.png_data_url(value)}})
        else:
            content.append({"type": "video_url", "video_url": {"url": value}})
    return [{"role": "user", "content": content}]


def hf_reference(path, model, parts):
    """What transformers makes of the same message: the processor's input_ids,
    the vision features of each image / video and get_rope_index."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    content = [{"type": kind, **({"text": value} if kind == "text" else {})} for kind, value in parts]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    images = [v for k, v in parts if k == "image"]
    videos = [tiny.decode_jpeg_frames(v) for k, v in parts if k == "video"]
    kwargs = dict(images=images) if images else {}
    if videos:
        kwargs.update(videos=videos, video_metadata=[dict(VIDEO_METADATA)] * len(videos), do_sample_frames=False)
    inputs = processor(text=[text], return_tensors="pt", **kwargs)
    runs = []  # the features of each run of vision tokens, in prompt order
    with torch.no_grad():
        if images:
            feats = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
            runs += [("image", f) for f in feats]
        if videos:
            feats = model.model.get_video_features(inputs["pixel_values_videos"],
                                                   inputs["video_grid_thw"]).pooler_output
            for f, (t, _, _) in zip(feats, inputs["video_grid_thw"].tolist(), strict=True):
                runs += [("video", x) for x in f.chunk(t)]  # one run per temporal patch, timestamps between
        pos, delta = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                image_grid_thw=inputs.get("image_grid_thw"),
                                                video_grid_thw=inputs.get("video_grid_thw"))
    ids = inputs["input_ids"][0].tolist()
    image_runs = iter(f for k, f in runs if k == "image")
    video_runs = iter(f for k, f in runs if k == "video")
    ordered, ranges, i = [], [], 0
    while i < len(ids):
        if ids[i] in (tiny.IMAGE_TOKEN_ID, tiny.VIDEO_TOKEN_ID):
            j = i
            while j < len(ids) and ids[j] == ids[i]:
                j += 1
            ordered.append(next(image_runs if ids[i] == tiny.IMAGE_TOKEN_ID else video_runs))
            ranges.append([i, j])
            i = j
        else:
            i += 1
    return dict(input_ids=ids, features=ordered, ranges=ranges, positions=pos[:, 0], delta=int(delta.flatten()[0]))


def check_request(req, ref):
    t = req["inputs"]
    assert t["input_ids"].tolist() == ref["input_ids"]
    if ref["features"]:
        assert t["input_embedding_ranges"].tolist() == ref["ranges"]
        rows = torch.cat(ref["features"])
        assert t["input_embeddings"].shape == rows.shape
        assert cosine(t["input_embeddings"].float(), rows) > 0.9999
        assert (t["input_embeddings"].float() - rows).abs().max() < 2e-3
    else:
        assert "input_embeddings" not in t
    assert torch.equal(t["mrope_position_ids"], ref["positions"].t().to(torch.int32))
    assert t["mrope_position_delta"].tolist() == [ref["delta"]]


@pytest.fixture(scope="module")
def pipeline_run(turbomind, dense_plain):
    path, _ = dense_plain
    prompts = [openai_messages(p) for p in PROMPTS.values()]
    (got,) = turbomind([dict(name="pipeline_requests", kwargs=dict(model_path=str(path), prompts=prompts))])
    return got


def test_pipeline_picks_turbomind_with_the_pytorch_vision_encoder(pipeline_run):
    info = ok(pipeline_run)["info"]
    assert info == dict(backend="turbomind", engine_class="VLAsyncEngine", engine_language_model_only=False,
                        processor_language_model_only=False, has_vl_encoder=True)


@pytest.mark.parametrize("case", list(PROMPTS))
def test_pipeline_request_matches_transformers(pipeline_run, dense_plain, case):
    path, model = dense_plain
    result = ok(pipeline_run)["results"][list(PROMPTS).index(case)]
    assert "raised" not in result, result.get("raised")
    (req,) = result["requests"]
    check_request(req, hf_reference(path, model, PROMPTS[case]))


# --------------------------------------------------------------------------
# deepstack: TurboMind has no input for it - a refusal, not a silent drop
# (routing 0001, the encoder 0003)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deepstack_runs(turbomind, dense, dense_plain):
    path, plain = str(dense[0]), str(dense_plain[0])
    refused = turbomind([dict(name="autoget", kwargs=dict(model_path=path)),
                         dict(name="autoget", kwargs=dict(model_path=path, language_model_only=True)),
                         dict(name="autoget", kwargs=dict(model_path=plain)),
                         dict(name="vl_engine", kwargs=dict(model_path=path))])
    prompt = openai_messages(PROMPTS["one-image"])
    dropped = turbomind([dict(name="autoget", kwargs=dict(model_path=path)),
                         dict(name="vl_engine", kwargs=dict(model_path=path)),
                         dict(name="pipeline_requests", kwargs=dict(model_path=path, prompts=[prompt]))],
                        env=DROP_DEEPSTACK)
    return refused, dropped


def test_auto_backend_keeps_deepstack_checkpoints_off_turbomind(deepstack_runs):
    (auto, auto_lmo, auto_plain, _), _ = deepstack_runs
    # images would lose the deepstack features: the PyTorch engine serves them, as in stock 0.18.0
    assert ok(auto) == dict(autoget_backend="pytorch", autoget_backend_config="pytorch",
                            config="PytorchEngineConfig")
    # nothing is lost when no image can arrive, or when the checkpoint has no deepstack layers
    for got in (auto_lmo, auto_plain):
        assert ok(got) == dict(autoget_backend="turbomind", autoget_backend_config="turbomind",
                               config="TurbomindEngineConfig")


def test_turbomind_vision_encoder_refuses_to_drop_deepstack(deepstack_runs):
    (*_, engine), _ = deepstack_runs
    error = engine["error"]
    assert error.startswith("ValueError: TurboMind has no input for the deepstack features of "
                            "Qwen3VLForConditionalGeneration (vision_config.deepstack_visual_indexes=[0, 1])")
    for way_out in ('backend="pytorch"', "language_model_only=True", "LMDEPLOY_QWEN3_VL_DROP_DEEPSTACK=1"):
        assert way_out in error


def test_dropping_deepstack_runs_only_when_asked(deepstack_runs, dense):
    path, model = dense
    _, (auto, engine, run) = deepstack_runs
    assert ok(auto)["autoget_backend"] == "turbomind"
    assert ok(engine) == dict(vision_model="Qwen3VLVisionModel", drop_deepstack=True)
    (req,) = ok(run)["results"][0]["requests"]
    check_request(req, hf_reference(path, model, PROMPTS["one-image"]))


# --------------------------------------------------------------------------
# language_model_only through pipeline and `lmdeploy serve` (0005; the
# serve route to TurboMind for a deepstack checkpoint: 0001)
# --------------------------------------------------------------------------


def test_language_model_only_pipeline_rejects_images_and_serves_text(turbomind, dense_plain):
    path, _ = dense_plain
    prompts = [openai_messages(PROMPTS["one-image"]), openai_messages(PROMPTS["text-only"])]
    (got,) = turbomind([dict(name="pipeline_requests",
                             kwargs=dict(model_path=str(path), prompts=prompts, language_model_only=True))])
    got = ok(got)
    assert got["info"] == dict(backend="turbomind", engine_class="AsyncEngine", engine_language_model_only=True,
                               processor_language_model_only=True, has_vl_encoder=False)
    image, text = got["results"]
    assert image["requests"] == []  # never reached the engine
    assert image["finish_reason"] == "error"
    assert "language_model_only=True (--language-model-only)" in image["error_message"]
    (req,) = text["requests"]
    n = len(req["inputs"]["input_ids"])
    assert req["inputs"]["mrope_position_ids"].tolist() == [[i] * 3 for i in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_server_language_model_only_flag(dense, tmp_path):
    """`lmdeploy serve api_server DIR --language-model-only` (the real CLI and
    OpenAI server, on the stand-in library): the flag reaches
    TurbomindEngineConfig, AsyncEngine and its MultimodalProcessor; an image
    request is answered 400 naming the flag and never reaches the engine, a
    text request is served by TurboMind. The checkpoint has deepstack layers:
    text only, TurboMind is still the backend."""
    path, _ = dense
    port, log = _free_port(), tmp_path / "requests.jsonl"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import turbomind_stand_in; "
            "turbomind_stand_in.install(); from lmdeploy.cli import run; run()")
    cmd = [sys.executable, "-c", code, "serve", "api_server", str(path), "--language-model-only",
           "--server-name", "127.0.0.1", "--server-port", str(port), "--max-batch-size", "2",
           "--session-len", "1024", "--dtype", "float16", "--log-level", "INFO"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMDEPLOY_QWEN3_VL")}
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**env, "TURBOMIND_STAND_IN_LOG": str(log)})
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"api_server did not start:\n{server.communicate(timeout=30)[0][-6000:]}")
                time.sleep(0.5)
        image = _post(port, dict(model=str(path), max_tokens=2, messages=openai_messages(PROMPTS["one-image"])))
        text = _post(port, dict(model=str(path), max_tokens=2, messages=openai_messages(PROMPTS["text-only"])))
    finally:
        server.terminate()
        output = server.communicate(timeout=60)[0]
    assert image[0] == 400, image
    assert "language_model_only=True (--language-model-only)" in image[1]["message"]
    assert text[0] == 200, text
    (req,) = [json.loads(line) for line in log.read_text().splitlines()]  # only the text request
    assert req["tensors"] == ["input_ids", "mrope_length", "mrope_position_delta", "mrope_position_ids"]
    assert len(req["input_ids"]) == text[1]["usage"]["prompt_tokens"]
    assert "language_model_only=True" in output  # the engine config the server logged
