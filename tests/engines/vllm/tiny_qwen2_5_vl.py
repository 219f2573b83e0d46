"""A tiny random Qwen2.5-VL vision tower inside vLLM, built on the CPU without downloads.

Shared by the tests in this directory and by benchmarks/bench_vision_npu.py.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

_INITIALISED = False
_CONFIG_CONTEXT: Any = None


def shim_torchvision_free_image_processing() -> bool:
    """vLLM's qwen2_vl.py imports ``smart_resize`` from transformers' torchvision
    image-processing module, and PyPI's torchvision (a CUDA build) cannot be
    imported beside the CPU torch. The tower never touches the image processor
    (tests feed ``pixel_values`` and ``grid_thw``), so point that module name at
    transformers' PIL twin, which defines the same ``smart_resize``. Returns
    whether the shim was needed."""
    try:
        import torchvision.transforms.v2  # noqa: F401
        return False
    except Exception:  # not installed, or installed but unloadable
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    import transformers.models.qwen2_vl.image_processing_pil_qwen2_vl as pil

    sys.modules["transformers.models.qwen2_vl.image_processing_qwen2_vl"] = pil
    return True


def init_vllm_single_process() -> None:
    """What the engine does before building a model: a vLLM config and a
    1-rank gloo process group with tensor/pipeline parallel size 1."""
    global _INITIALISED
    if _INITIALISED:
        return
    shim_torchvision_free_image_processing()
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    global _CONFIG_CONTEXT
    # For the whole process; keep a reference, or collecting the generator
    # behind the context manager would restore the previous (unset) config.
    _CONFIG_CONTEXT = set_current_vllm_config(VllmConfig())
    _CONFIG_CONTEXT.__enter__()
    init_distributed_environment(
        world_size=1,
        rank=0,
        distributed_init_method=f"tcp://127.0.0.1:{port}",
        local_rank=0,
        backend="gloo",
    )
    initialize_model_parallel(1, 1)
    _INITIALISED = True


def tiny_vision_config(**overrides: Any) -> Any:
    """Real patch geometry (14x14 patches, temporal 2, 3 channels -> 1176
    values per patch; window 112 px = 4x4 merged tokens; 2x2 merge), tiny
    widths and depth, one full-attention block out of two."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (
        Qwen2_5_VLVisionConfig,
    )

    fields = dict(
        depth=4,
        hidden_size=64,
        num_heads=4,
        intermediate_size=128,
        out_hidden_size=48,
        fullatt_block_indexes=[1, 3],
        window_size=112,
        spatial_merge_size=2,
        patch_size=14,
        temporal_patch_size=2,
        in_channels=3,
        hidden_act="silu",
    )
    fields.update(overrides)
    return Qwen2_5_VLVisionConfig(**fields)


def random_tower_state(tower: Any, seed: int) -> dict[str, Any]:
    """Random weights for every parameter of a freshly built tower (vLLM names)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, param in tower.named_parameters():
        if name.endswith(("norm1.weight", "norm2.weight", "ln_q.weight")):
            value = 1.0 + 0.1 * torch.randn(param.shape, generator=gen)
        elif param.ndim >= 2:
            fan_in = param[0].numel()
            value = torch.randn(param.shape, generator=gen) / fan_in**0.5
        else:
            value = 0.02 * torch.randn(param.shape, generator=gen)
        state[name] = value.to(param.dtype)
    return state


def finish_loading(module: Any) -> None:
    """What vLLM's loader does after load_weights(): let every quantization
    method prepare its kernels (the CPU linear kernels repack weights here)."""
    for sub in module.modules():
        method = getattr(sub, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(sub)


def build_stock_tower(config: Any, state: dict[str, Any] | None = None, seed: int = 0):
    """(stock vLLM tower with weights loaded and processed, raw state dict)."""
    import torch
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VisionTransformer

    init_vllm_single_process()
    tower = Qwen2_5_VisionTransformer(config, norm_eps=1e-6, prefix="visual")
    if state is None:
        state = random_tower_state(tower, seed)
    with torch.no_grad():
        tower.load_state_dict(state)
    finish_loading(tower)
    return tower.eval(), state


def hf_checkpoint_state(state: dict[str, Any], prefix: str = "model.visual.") -> dict[str, Any]:
    """The same weights in Hugging Face checkpoint naming (gate/up unfused)."""
    out = {}
    for name, value in state.items():
        if ".mlp.gate_up_proj." in name:
            gate, up = value.chunk(2, dim=0)
            out[prefix + name.replace("gate_up_proj", "gate_proj")] = gate.contiguous()
            out[prefix + name.replace("gate_up_proj", "up_proj")] = up.contiguous()
        else:
            out[prefix + name] = value.contiguous()
    return out


def pixel_values(grid_thw: list[list[int]], seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    n = sum(t * h * w for t, h, w in grid_thw)
    return torch.randn((n, 3 * 2 * 14 * 14), generator=gen)
