# SPDX-License-Identifier: Apache-2.0
"""``onnxrt``: run the exported device graph with onnxruntime.

The reference backend: it runs the very ONNX graphs that are handed to the
NPU compiler, on the CPU of any machine, so that the CPU pre-ops, padding,
masking and post-ops can be tested without an NPU.

``VLLM_VISION_NPU_DEVICE`` may name an onnxruntime execution provider (e.g.
``VitisAIExecutionProvider``); anything else (``cpu``, or an NPU family such
as the default ``stx``, which only the ``flexmlrt`` backend uses) selects
``CPUExecutionProvider``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vllm.vision_npu.backend import (
    TensorSpec,
    VisionNPUBackend,
    VisionNPUBackendUnavailableError,
    VisionNPUGraph,
)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


class OnnxRuntimeVisionGraph(VisionNPUGraph):
    def __init__(self, session: Any) -> None:
        super().__init__(tuple(_spec(i) for i in session.get_inputs()),
                         tuple(_spec(o) for o in session.get_outputs()))
        self.session = session
        self._output_names = [o.name for o in self.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # onnxruntime releases the GIL while it runs.
        results = self.session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, results, strict=True))


class OnnxRuntimeVisionBackend(VisionNPUBackend):
    name = "onnxrt"
    artifact_key = "onnxrt"

    def __init__(
        self,
        device: str | None = None,
        intra_op_num_threads: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(device, **options)
        try:
            import onnxruntime
        except ImportError as e:
            raise VisionNPUBackendUnavailableError(
                "VLLM_VISION_NPU_BACKEND=onnxrt needs onnxruntime: pip install onnxruntime"
            ) from e
        self._ort = onnxruntime
        provider = (device or "").strip()
        if not provider.endswith("ExecutionProvider"):
            provider = "CPUExecutionProvider"
        available = onnxruntime.get_available_providers()
        if provider not in available:
            raise VisionNPUBackendUnavailableError(
                f"VLLM_VISION_NPU_DEVICE={device!r}: onnxruntime provider {provider!r} is not "
                f"available here (available: {', '.join(available)})"
            )
        self.providers = [provider]
        self.intra_op_num_threads = intra_op_num_threads

    def load(self, artifact: Path) -> VisionNPUGraph:
        ort = self._ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_num_threads:
            options.intra_op_num_threads = self.intra_op_num_threads
        # onnxruntime's worker threads busy-wait after a run by default; that
        # takes the cores from the pre-ops of the next item (and from the
        # language model) for nothing: measured 6x slower pre-ops on 2 cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # The path, not bytes: onnxruntime reads the small graph file and maps
        # the shared external weights file itself.
        session = ort.InferenceSession(str(artifact), options, providers=self.providers)
        # What onnxruntime actually runs on (it may fall back), for the logs.
        self.providers_used = list(session.get_providers())
        return OnnxRuntimeVisionGraph(session)

    def describe(self) -> str:
        used = getattr(self, "providers_used", None) or self.providers
        return f"onnxrt(provider={', '.join(used)})"


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(int(d) if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))
