"""lmdeploy's TurboMind path, run in a process of its own on the stand-in for
the compiled library (turbomind_stand_in: what is replaced and why).

    python turbomind_scenarios.py SPEC.json OUT.pt

SPEC: {"env": {...}, "scenarios": [{"name": ..., "kwargs": {...}}, ...]}.
OUT: torch.save of one result per scenario: the scenario's dict, or
{"error": "Type: message", "traceback": ...} when it raised. The tests
(test_turbomind.py) compare the results with transformers.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _engine_config(**kwargs):
    from lmdeploy.messages import TurbomindEngineConfig

    return TurbomindEngineConfig(**{"max_batch_size": 2, "session_len": 1024, "dtype": "float16", **kwargs})


def export_weights(model_path: str, **config: Any) -> dict:
    """`TurboMind(model_path)`: everything the engine would hold."""
    import turbomind_stand_in as si
    from lmdeploy.turbomind import TurboMind

    tm = TurboMind(model_path, engine_config=_engine_config(**config))
    root = tm.model_comm.root(0)
    cfgs = si.configs(root)
    layer0 = cfgs.get("text_model.layers.0.attention")
    moe = cfgs.get("text_model.layers.0.moe_ffn")
    return dict(
        source_model=type(tm.source_model).__name__,
        text_model=type(getattr(tm.source_model, "text_model", None)).__name__,
        weights=si.committed(root),
        rope=dict(mrope_interleaved=layer0.rope.mrope_interleaved, mrope_section=layer0.rope.mrope_section,
                  dim=layer0.rope.dim),
        moe=None if moe is None else dict(norm_topk_prob=moe.norm_topk_prob, experts_per_token=moe.experts_per_token,
                                          expert_num=moe.expert_num),
        layer_kinds=[next(k for k in ("moe_ffn", "feed_forward") if k in layer.children)
                     for layer in root.children["text_model"].children["layers"].children.values()],
        processed=tm.model_comm.weights_processed, engines=tm.model_comm.engines_created,
    )


def instance_request(model_path: str, input_ids: list[int], input_embeddings=None, input_embedding_ranges=None,
                     input_meta=None, multimodal=None, **config: Any) -> dict:
    """`TurboMindInstance.async_stream_infer` with what the serving layer
    passes; the request the engine received."""
    import asyncio

    import turbomind_stand_in as si
    from lmdeploy.messages import GenerationConfig
    from lmdeploy.turbomind import TurboMind

    tm = TurboMind(model_path, engine_config=_engine_config(**config))
    inst = tm.create_instance()
    before = len(si.REQUESTS)

    async def run():
        outputs = []
        async for out in inst.async_stream_infer(0, input_ids, input_embeddings=input_embeddings,
                                                 input_embedding_ranges=input_embedding_ranges,
                                                 multimodal=multimodal,
                                                 gen_config=GenerationConfig(max_new_tokens=2),
                                                 input_meta=input_meta):
            outputs.append(out.status.name)
        return outputs

    try:
        statuses = asyncio.run(run())
        error = None
    except Exception as e:  # the guard raises before the request exists
        statuses, error = [], f"{type(e).__name__}: {e}"
    return dict(requests=si.REQUESTS[before:], statuses=statuses, raised=error)


def pipeline_requests(model_path: str, prompts: list, **config: Any) -> dict:
    """`lmdeploy.pipeline(model_path, TurbomindEngineConfig)`, one call per
    prompt: the request each reached the engine with, or its error."""
    import turbomind_stand_in as si
    from lmdeploy import GenerationConfig, pipeline

    pipe = pipeline(model_path, backend_config=_engine_config(**config))
    engine = pipe.async_engine
    results = []
    for prompt in prompts:
        before = len(si.REQUESTS)
        try:
            out = pipe(prompt, gen_config=GenerationConfig(max_new_tokens=2))
            results.append(dict(requests=si.REQUESTS[before:], finish_reason=out.finish_reason, text=out.text,
                                error_message=getattr(out, "error_message", None)))
        except Exception as e:
            results.append(dict(requests=si.REQUESTS[before:], raised=f"{type(e).__name__}: {e}"))
    info = dict(backend=engine.backend, engine_class=type(engine).__name__,
                engine_language_model_only=engine.engine.engine_config.language_model_only,
                processor_language_model_only=getattr(engine.prompt_processor, "language_model_only", None),
                has_vl_encoder=getattr(engine.prompt_processor, "vl_encoder", None) is not None)
    pipe.close()
    return dict(info=info, results=results)


def vl_engine(model_path: str, **config: Any) -> dict:
    """`VLAsyncEngine(model_path, backend='turbomind')` built directly (what
    the server builds once the backend is chosen)."""
    from lmdeploy.serve.core import VLAsyncEngine

    engine = VLAsyncEngine(model_path, backend="turbomind", backend_config=_engine_config(**config))
    model = engine.vl_encoder.model
    out = dict(vision_model=type(model.vision_model).__name__, drop_deepstack=model.drop_deepstack)
    engine.close()
    return out


def autoget(model_path: str, language_model_only: bool = False) -> dict:
    """The backend lmdeploy picks by itself (pipeline, `lmdeploy serve`)."""
    from lmdeploy.archs import autoget_backend, autoget_backend_config
    from lmdeploy.messages import TurbomindEngineConfig

    backend, config = autoget_backend_config(model_path, TurbomindEngineConfig(language_model_only=language_model_only))
    return dict(autoget_backend=autoget_backend(model_path, language_model_only=language_model_only),
                autoget_backend_config=backend, config=type(config).__name__)


def ok(result: dict) -> dict:
    """A scenario's result, or (in a test) a failure with the scenario's error."""
    if "error" in result:
        import pytest

        pytest.fail(f"{result['error']}\n{result['traceback'][-4000:]}")
    return result


SCENARIOS = dict(export_weights=export_weights, instance_request=instance_request,
                 pipeline_requests=pipeline_requests, vl_engine=vl_engine, autoget=autoget)


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    os.environ.update(spec.get("env", {}))
    sys.path.insert(0, str(HERE))
    import torch
    import turbomind_stand_in

    turbomind_stand_in.install()
    results = []
    for scenario in spec["scenarios"]:
        kwargs = scenario.get("kwargs", {})
        if scenario.get("tensors"):  # kwargs holding tensors come as a torch.save file
            kwargs = {**kwargs, **torch.load(scenario["tensors"], weights_only=False)}
        try:
            results.append(SCENARIOS[scenario["name"]](**kwargs))
        except Exception as e:
            results.append(dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()))
    torch.save(results, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
