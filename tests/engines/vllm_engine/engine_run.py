"""Run one vLLM engine configuration through ``vllm.LLM`` and record what
happened, as JSON: ``python engine_run.py SPEC.json OUT.json``.

Each configuration runs in its own process (the tests start one per engine),
because the backend is chosen from the environment when the model is built and
one process holds one engine. The engine core runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that the scheduler's steps and the
vision tower's runs can be observed.

SPEC: {"model": dir, "llm": {LLM kwargs}, "batches": [[request, ...], ...]}
with request = {"prompt": str, "images": [[seed, width, height], ...],
"video": [seed, frames, width, height] | null, "mm_processor_kwargs": {...}}.
Each batch is one ``generate`` call; a batch that raises is recorded as an
error and the next batch still runs on the same engine.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


def make_image(seed: int, width: int, height: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_video(seed: int, frames: int, width: int, height: int) -> Any:
    """Frames as an array plus the metadata Qwen2.5-VL's processor needs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    metadata = {
        "fps": 2.0,
        "duration": frames / 2.0,
        "total_num_frames": frames,
        "frames_indices": list(range(frames)),
        "video_backend": "opencv",
        "do_sample_frames": False,
    }
    return video, metadata


def build_prompt(request: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    images = [make_image(*spec) for spec in request.get("images", [])]
    if images:
        data["image"] = images if len(images) > 1 else images[0]
    if request.get("video"):
        data["video"] = make_video(*request["video"])
    prompt: dict[str, Any] = {"prompt": request["prompt"]}
    if data:
        prompt["multi_modal_data"] = data
    if request.get("mm_processor_kwargs"):
        prompt["mm_processor_kwargs"] = request["mm_processor_kwargs"]
    return prompt


class SchedulerRecorder:
    """Wraps ``Scheduler.schedule`` of one engine: per step, the tokens each
    request got and the encoder inputs scheduled; per request, its
    multimodal placeholder ranges."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.steps: list[dict[str, Any]] = []
        self.placeholders: dict[str, list[dict[str, Any]]] = {}
        original = scheduler.schedule

        def schedule(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            if output.total_num_scheduled_tokens:
                self.steps.append({
                    "tokens": dict(output.num_scheduled_tokens),
                    "encoder_inputs": {k: list(v) for k, v in
                                       output.scheduled_encoder_inputs.items()},
                })
            for req_id in output.num_scheduled_tokens:
                request = scheduler.requests.get(req_id)
                if request is not None and req_id not in self.placeholders:
                    self.placeholders[req_id] = [
                        {"modality": f.modality, "offset": f.mm_position.offset,
                         "length": f.mm_position.length, "identifier": f.identifier}
                        for f in (request.mm_features or [])
                    ]
            return output

        scheduler.schedule = schedule


def count_tower_runs(model: Any) -> dict[str, Any]:
    """Count the vision tower's forward calls and the items they encoded."""
    tower = model.visual
    counts = {"calls": 0, "items": 0, "grids": [], "type": type(tower).__name__,
              "device": str(tower.device), "dtype": str(tower.dtype), "pieces": []}
    original = tower.forward

    def forward(x: Any, grid_thw: Any, *args: Any, **kwargs: Any) -> Any:
        grids = grid_thw.tolist() if hasattr(grid_thw, "tolist") else list(grid_thw)
        counts["calls"] += 1
        counts["items"] += len(grids)
        counts["grids"] += [list(map(int, g)) for g in grids]
        out = original(x, grid_thw, *args, **kwargs)
        # The NPU tower's device runs (a long video runs in pieces).
        for timing in getattr(tower, "last_timings", None) or []:
            counts["pieces"].append([list(timing.grid_thw), timing.specialization])
        return out

    tower.forward = forward
    return counts


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(open(spec_path).read())
    from vllm import LLM, SamplingParams

    result: dict[str, Any] = {"batches": []}
    start = time.perf_counter()
    try:
        llm = LLM(model=spec["model"], **spec["llm"])
    except Exception as e:  # recorded for the test to assert on
        result["startup_error"] = {"type": type(e).__name__, "message": str(e),
                                   "traceback": traceback.format_exc()}
        open(out_path, "w").write(json.dumps(result))
        return 0
    result["startup_s"] = time.perf_counter() - start
    recorder = SchedulerRecorder(llm.llm_engine.engine_core.engine_core.scheduler)
    (tower,) = llm.apply_model(count_tower_runs)

    sampling = SamplingParams(temperature=0.0, ignore_eos=True,
                              max_tokens=int(spec.get("max_tokens", 12)),
                              logprobs=int(spec.get("logprobs", 0)) or None)
    for batch in spec["batches"]:
        steps_before, runs_before = len(recorder.steps), tower["items"]
        entry: dict[str, Any] = {}
        try:
            outputs = llm.generate([build_prompt(r) for r in batch], sampling, use_tqdm=False)
            entry["outputs"] = [
                {
                    "prompt_tokens": len(o.prompt_token_ids),
                    "tokens": list(o.outputs[0].token_ids),
                    "logprobs": [
                        lp[t].logprob for lp, t in zip(o.outputs[0].logprobs or [],
                                                       o.outputs[0].token_ids, strict=False)
                    ],
                    "request_id": o.request_id,
                }
                for o in outputs
            ]
        except Exception as e:
            entry["error"] = {"type": type(e).__name__, "message": str(e)}
        entry["tower_items"] = tower["items"] - runs_before
        entry["steps"] = recorder.steps[steps_before:]
        result["batches"].append(entry)
    result["placeholders"] = recorder.placeholders
    result["tower"] = tower
    open(out_path, "w").write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
