"""Regression tests for the defects found in the review of the seed change
(InternLM/lmdeploy#4460): each test fails on the seed's approach (kept here as
`seed_*` for the comparison) or on stock lmdeploy 0.18.0, and passes with
patches/lmdeploy applied.

1. Dependency checks required every family's classes at once (0002).
2. With the vision encoder disabled (`language_model_only`), a request with
   images was answered from the text alone (images silently dropped) - in the
   serving layer and in the engines (0005). TurboMind's side, the pipeline and
   `lmdeploy serve` are in test_turbomind.py; the PyTorch engine is here: its
   request handler runs without a GPU.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import textwrap

import pytest
import tiny_qwen3_vl as tiny
import torch

# An environment whose transformers lacks one family: a meta-path finder makes
# the named transformers sub-packages unimportable, as in a release that does
# not ship them yet. Runs in a subprocess so this process keeps them.
BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + '.') for b in BLOCKED):
                raise ModuleNotFoundError(f'No module named {{name!r}} (blocked by the test)', name=name)
            return None

    def install_block():
        # after lmdeploy and transformers' core are imported: forget the
        # blocked sub-packages and the classes transformers cached from them
        import transformers
        sys.meta_path.insert(0, Block())
        for name in [m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in BLOCKED)]:
            del sys.modules[name]
        for name in [n for n in vars(transformers) if n.startswith(('Qwen3VL', 'Qwen3_5'))]:
            delattr(transformers, name)
""")

SEED_CHECK = textwrap.dedent("""
    def seed_check_qwen3_vl_deps_install():
        # the seed's check (lmdeploy#4460, lmdeploy/vl/model/qwen3.py): all four classes at once
        try:
            from transformers import (  # noqa: F401
                Qwen3_5ForConditionalGeneration,
                Qwen3_5MoeForConditionalGeneration,
                Qwen3VLForConditionalGeneration,
                Qwen3VLMoeForConditionalGeneration,
            )
        except ImportError:
            raise ImportError('please install latest transformers')
""")


def run_blocked(blocked: list[str], body: str) -> dict:
    code = BLOCK.format(blocked=blocked) + SEED_CHECK + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


CHECKS = """
    import json
    from types import SimpleNamespace
    from lmdeploy.vl.model.qwen3 import Qwen3VLModel
    from lmdeploy.vl.model.qwen3_5 import Qwen3_5Model

    install_block()

    def outcome(fn):
        try:
            fn()
            return 'ok'
        except Exception as e:  # ImportError, or the RuntimeError of transformers' lazy module
            return f'{type(e).__name__}: {e}'

    def patched(cls, arch):
        # check_deps() only reads hf_config.architectures
        obj = cls.__new__(cls)
        obj.hf_config = SimpleNamespace(architectures=[arch])
        return lambda: obj.check_deps()

    print(json.dumps({
        'seed': outcome(seed_check_qwen3_vl_deps_install),
        'qwen3_vl': outcome(patched(Qwen3VLModel, 'Qwen3VLForConditionalGeneration')),
        'qwen3_vl_moe': outcome(patched(Qwen3VLModel, 'Qwen3VLMoeForConditionalGeneration')),
        'qwen3_5': outcome(patched(Qwen3_5Model, 'Qwen3_5ForConditionalGeneration')),
        'qwen3_5_moe': outcome(patched(Qwen3_5Model, 'Qwen3_5MoeForConditionalGeneration')),
    }))
"""


def test_qwen3_vl_loads_when_transformers_lacks_qwen3_5():
    got = run_blocked(["transformers.models.qwen3_5", "transformers.models.qwen3_5_moe"], CHECKS)
    assert got["seed"] != "ok"  # the seed refuses Qwen3-VL because Qwen3.5 is missing
    assert got["qwen3_vl"] == "ok"
    assert got["qwen3_vl_moe"] == "ok"
    # the family that is really missing still fails, with a message naming it
    assert got["qwen3_5"].startswith("ImportError: Qwen3_5ForConditionalGeneration needs")
    assert "pip install -U transformers" in got["qwen3_5"]


def test_qwen3_5_loads_when_transformers_lacks_qwen3_vl():
    # stock 0.18.0 also fails here: Qwen3_5Model.build_preprocessor ran the
    # Qwen3-VL check (both Qwen3-VL classes) before its own
    got = run_blocked(["transformers.models.qwen3_vl", "transformers.models.qwen3_vl_moe"], CHECKS)
    assert got["seed"] != "ok"
    assert got["qwen3_5"] == "ok"
    assert got["qwen3_5_moe"] == "ok"
    assert got["qwen3_vl"].startswith("ImportError: Qwen3VLForConditionalGeneration needs")


def test_dense_checks_do_not_need_the_moe_family():
    got = run_blocked(["transformers.models.qwen3_vl_moe"], CHECKS)
    assert got["seed"] != "ok"
    assert got["qwen3_vl"] == "ok"
    assert got["qwen3_vl_moe"].startswith("ImportError")


# --------------------------------------------------------------------------
# language_model_only: a request with images fails, naming the flag
# --------------------------------------------------------------------------

IMAGE_REQUEST = [{"role": "user", "content": [
    {"type": "text", "text": "What is in the picture?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
]}]


def test_serving_layer_rejects_images_naming_the_flag():
    from lmdeploy.messages import LanguageModelOnlyError
    from lmdeploy.serve.processors.multimodal import MultimodalProcessor

    # the processor AsyncEngine builds for a VL model routed to 'llm' by language_model_only
    proc = MultimodalProcessor(tokenizer=None, chat_template=None, language_model_only=True)
    with pytest.raises(LanguageModelOnlyError, match=r"language_model_only=True \(--language-model-only\)"):
        asyncio.run(proc.get_prompt_input(IMAGE_REQUEST, do_preprocess=True))


def test_serving_layer_without_the_flag_keeps_its_message():
    from lmdeploy.serve.processors.multimodal import MultimodalProcessor

    proc = MultimodalProcessor(tokenizer=None, chat_template=None)
    with pytest.raises(ValueError, match="not supported by this model") as info:
        asyncio.run(proc.get_prompt_input(IMAGE_REQUEST, do_preprocess=True))
    assert type(info.value).__name__ != "LanguageModelOnlyError"



# --------------------------------------------------------------------------
# the PyTorch engine's request handler, Engine._on_add_message
# --------------------------------------------------------------------------


def pytorch_engine(path, language_model_only: bool):
    """lmdeploy's PyTorch `Engine` with the parts its request handler uses,
    built as `Engine.__init__` builds them (ConfigBuilder, ModelConfig,
    strategies, Scheduler, the request manager) - all real. Not built: the
    executor (the model on a CUDA device); the input processor it would hand
    over is the one lmdeploy's PyTorch Qwen3-VL model creates,
    `Qwen3VLInputProcessor(config, dtype)`. Nothing is replaced."""
    from lmdeploy.messages import PytorchEngineConfig
    from lmdeploy.pytorch.config import ModelConfig
    from lmdeploy.pytorch.engine.config_builder import ConfigBuilder
    from lmdeploy.pytorch.engine.engine import Engine, _build_seq_meta
    from lmdeploy.pytorch.models.qwen3_vl import Qwen3VLInputProcessor
    from lmdeploy.pytorch.paging.scheduler import Scheduler
    from lmdeploy.pytorch.strategies import build_strategy_factory
    from transformers import AutoConfig

    config = ConfigBuilder.update_engine_config(PytorchEngineConfig(
        language_model_only=language_model_only, max_batch_size=2, session_len=1024, num_gpu_blocks=64,
        block_size=16))
    engine = Engine.__new__(Engine)
    engine.engine_config = config
    engine.scheduler_config = ConfigBuilder.build_scheduler_config(config)
    engine.cache_config = ConfigBuilder.build_cache_config(config)
    model_config = ModelConfig.from_pretrained(str(path), dtype="float32", device_type="cuda", block_size=16)
    factory = build_strategy_factory(model_config, ConfigBuilder.build_misc_config(config))
    engine.seq_meta = _build_seq_meta(model_config, engine.cache_config, factory.build_sequence_strategy(),
                                      factory.build_sampling_strategy())
    engine.scheduler = Scheduler(engine.scheduler_config, engine.cache_config, seq_meta=engine.seq_meta)
    engine.input_processor = Qwen3VLInputProcessor(AutoConfig.from_pretrained(path), torch.float32)
    engine.max_session_len = config.session_len
    engine.migration_event = None
    engine.req_manager = engine._bind_request_manager()
    return engine


def image_request(path):
    """What the serving layer sends the PyTorch engine for one image: the real
    Qwen3-VL HF processor through lmdeploy's Qwen3VLModel.preprocess."""
    from lmdeploy.model import get_chat_template
    from lmdeploy.serve.processors.multimodal import MultimodalProcessor
    from lmdeploy.vl.model.qwen3 import Qwen3VLModel
    from transformers import AutoConfig

    buf = io.BytesIO()
    tiny.random_image(40, 56, seed=4).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    messages = asyncio.run(MultimodalProcessor.async_parse_multimodal_item([{"role": "user", "content": [
        {"type": "text", "text": "what is in this image"}, {"type": "image_url", "image_url": {"url": url}}]}]))
    vm = Qwen3VLModel(str(path), backend="pytorch", hf_config=AutoConfig.from_pretrained(path))
    vm.build_preprocessor()
    return vm.preprocess(messages, vm.get_input_prompt(messages, get_chat_template(str(path))))


def add_message(engine, request: dict):
    """ADD_SESSION then ADD_MESSAGE, as the engine loop hands them to the
    handlers; returns the ADD_MESSAGE response."""
    from lmdeploy.messages import GenerationConfig, ResponseType
    from lmdeploy.pytorch.engine.request import Request, RequestType, Response
    from lmdeploy.pytorch.messages import SamplingParam

    def req(kind, data):
        return Request(type=kind, sender_id=0, data=data,
                       resp=Response(type=ResponseType.SUCCESS, sender_id=0, event=asyncio.Event()))

    engine.req_manager.process_request(RequestType.ADD_SESSION,
                                       [req(RequestType.ADD_SESSION, dict(session_id=1, response=False))])
    msg = req(RequestType.ADD_MESSAGE, dict(
        token_ids=request["input_ids"], session_id=1,
        sampling_param=SamplingParam.from_gen_config(GenerationConfig(max_new_tokens=4)), adapter_name=None,
        input_multimodals=request["multimodal"], migration_request=None, with_cache=False, preserve_cache=False))
    engine.req_manager.process_request(RequestType.ADD_MESSAGE, [msg])
    return msg.resp


def test_pytorch_engine_rejects_images_with_language_model_only(dense):
    from lmdeploy.messages import ResponseType

    path, _ = dense
    request = image_request(path)
    engine = pytorch_engine(path, language_model_only=True)
    resp = add_message(engine, request)
    # answered at once with an error naming the flag; stock 0.18.0 dropped
    # the images and queued the text alone
    assert resp.event.is_set()
    assert resp.type == ResponseType.INTERNAL_ENGINE_ERROR
    assert "language_model_only=True (--language-model-only)" in resp.err_msg
    assert engine.scheduler.get_session(1).sequences == {}


def test_pytorch_engine_without_the_flag_queues_the_image(dense):
    """The same request without the flag: the handler's other branch,
    preprocess_input, runs and the sequence keeps its image."""
    path, _ = dense
    request = image_request(path)
    engine = pytorch_engine(path, language_model_only=False)
    resp = add_message(engine, request)
    assert not resp.event.is_set()  # no answer yet: the request is scheduled
    (seq,) = engine.scheduler.get_session(1).sequences.values()
    assert seq.num_valid_ids == len(request["input_ids"])
    assert not seq.history_multimodals.empty()
    (image,) = request["multimodal"]
    begin = request["input_ids"].index(tiny.IMAGE_TOKEN_ID)
    assert image["offset"] == (begin, begin + tiny.n_tokens(tuple(image["image_grid_thw"].tolist())))


def test_cli_help_says_what_happens_to_images():
    """`--language-model-only`'s help; the flag's way through the CLI, the
    config and the server is test_turbomind.py's api_server test."""
    import argparse

    from lmdeploy.cli.utils import ArgumentHelper

    action = ArgumentHelper.language_model_only(argparse.ArgumentParser())
    assert "Requests with images/videos then fail with an error." in action.help
