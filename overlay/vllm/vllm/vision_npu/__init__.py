# SPDX-License-Identifier: Apache-2.0
"""Vision encoders on NPUs.

``VLLM_VISION_NPU_BACKEND`` (``onnxrt`` or ``flexmlrt``) moves the transformer
blocks of a supported vision tower onto a compiled fixed-shape device graph;
unset, vLLM builds its stock tower and nothing else here runs. Bundles are made
with ``python -m vllm.vision_npu.export`` under ``VLLM_VISION_NPU_CACHE``.
See ``vllm/vision_npu/README.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn


def build_qwen2_5_vision_transformer(*args: Any, **kwargs: Any) -> nn.Module:
    """Build the Qwen2.5-VL vision tower: stock, or on an NPU backend.

    Imported lazily so that ``vllm.model_executor.models.qwen2_5_vl`` can call
    it without an import cycle; arguments are those of
    ``Qwen2_5_VisionTransformer``.
    """
    from vllm.vision_npu.models.qwen2_5_vl import (
        build_qwen2_5_vision_transformer as _build,
    )

    return _build(*args, **kwargs)


__all__ = ["build_qwen2_5_vision_transformer"]
