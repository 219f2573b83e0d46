# SPDX-License-Identifier: Apache-2.0
"""``flexmlrt``: run the compiled device graph on an AMD Ryzen AI NPU.

All NPU work happens in the ``flexmlrt_bridge`` extension module (built from
engine-overlay's ``bridge/``): it memory-maps the compiled artifact, owns the
FlexMLRT model and runs it without the GIL. This module is the narrow adapter
between that module and :class:`VisionNPUBackend`; it uses only
``flexmlrt_bridge.Session(path, runtime=..., device=...)``, its ``inputs`` /
``outputs`` specs and ``run({name: array}) -> {name: array}``.
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

BRIDGE_MODULE = "flexmlrt_bridge"
BRIDGE_HINT = (
    "Build and install the bridge from the engine-overlay repository: "
    "`pip install ./bridge` (with the Ryzen AI / FlexMLRT SDK found at build time, "
    "see bridge/README.md). To run the exported ONNX graphs on the CPU instead, set "
    "VLLM_VISION_NPU_BACKEND=onnxrt; unset it to use the stock vision tower."
)


def import_bridge() -> Any:
    try:
        import flexmlrt_bridge
    except ImportError as e:
        raise VisionNPUBackendUnavailableError(
            f"VLLM_VISION_NPU_BACKEND=flexmlrt needs the Python module {BRIDGE_MODULE!r}, "
            f"which could not be imported ({e}). {BRIDGE_HINT}"
        ) from e
    return flexmlrt_bridge


class FlexMLRTVisionGraph(VisionNPUGraph):
    def __init__(self, session: Any) -> None:
        super().__init__(tuple(_spec(s) for s in session.inputs),
                         tuple(_spec(s) for s in session.outputs))
        self.session = session

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(dict(feeds))
        # The bridge returns views of buffers it reuses on the next run.
        return {name: np.array(value, copy=True) for name, value in results.items()}


class FlexMLRTVisionBackend(VisionNPUBackend):
    name = "flexmlrt"
    artifact_key = "flexmlrt"

    def __init__(self, device: str | None = None, **options: Any) -> None:
        super().__init__(device or "stx", **options)
        self._bridge = import_bridge()
        available = getattr(self._bridge, "flexmlrt_available", lambda: True)
        if not options.get("allow_loopback") and not available():
            raise VisionNPUBackendUnavailableError(
                f"The installed {BRIDGE_MODULE} was built without the FlexMLRT SDK, so it "
                f"cannot run on the NPU. {BRIDGE_HINT}"
            )

    def load(self, artifact: Path) -> VisionNPUGraph:
        runtime = "auto" if self.options.get("allow_loopback") else "flexmlrt"
        try:
            session = self._bridge.Session(str(artifact), runtime=runtime, device=self.device)
        except getattr(self._bridge, "RuntimeUnavailableError", ()) as e:
            raise VisionNPUBackendUnavailableError(f"{e}. {BRIDGE_HINT}") from e
        return FlexMLRTVisionGraph(session)


def _spec(spec: Any) -> TensorSpec:
    return TensorSpec(str(spec.name), tuple(int(d) for d in spec.shape), str(spec.dtype))
