# SPDX-License-Identifier: Apache-2.0
"""``flexmlrt``: run the compiled device graph on an AMD Ryzen AI NPU.

All NPU work happens in the ``flexmlrt_bridge`` extension module (built from
engine-overlay's ``bridge/``): it memory-maps the compiled artifact, owns the
FlexMLRT model and runs it without the GIL. This module is the narrow adapter
between that module and :class:`VisionNPUBackend`; it uses only
``flexmlrt_bridge.Session(path, runtime=..., device=...)``, its ``runtime``,
``inputs`` / ``outputs`` specs and ``run({name: array}) -> {name: array}``, and
``build_info()["flexmlrt_dtypes"]``, the dtypes its FlexMLRT runtime takes.

With ``allow_loopback=True`` an artifact may also be a loopback bundle of the
bridge (its stand-in runtime; the tests run the tower through it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vllm.vision_npu.backend import (
    TensorSpec,
    VisionNPUBackend,
    VisionNPUBackendUnavailableError,
    VisionNPUBundleError,
    VisionNPUGraph,
)

BRIDGE_MODULE = "flexmlrt_bridge"
BRIDGE_HINT = (
    "Build and install the bridge from the engine-overlay repository: "
    "`pip install ./bridge` (with the Ryzen AI / FlexMLRT SDK found at build time, "
    "see bridge/README.md). To run the exported ONNX graphs on the CPU instead, set "
    "VLLM_VISION_NPU_BACKEND=onnxrt; unset it to use the stock vision tower."
)
# What a bridge that does not report build_info()["flexmlrt_dtypes"] takes:
# its FlexMLRT runtime predates the list and took 4-byte floats only.
_LEGACY_FLEXMLRT_DTYPES = ("float32",)


def import_bridge() -> Any:
    try:
        import flexmlrt_bridge
    except ImportError as e:
        raise VisionNPUBackendUnavailableError(
            f"VLLM_VISION_NPU_BACKEND=flexmlrt needs the Python module {BRIDGE_MODULE!r}, "
            f"which could not be imported ({e}). {BRIDGE_HINT}"
        ) from e
    return flexmlrt_bridge


def bridge_flexmlrt_dtypes(bridge: Any) -> tuple[str, ...]:
    """The dtypes the bridge's FlexMLRT runtime takes, as the bridge reports them."""
    info = bridge.build_info() if hasattr(bridge, "build_info") else {}
    return tuple(str(d) for d in info.get("flexmlrt_dtypes", _LEGACY_FLEXMLRT_DTYPES))


def installed_bridge_flexmlrt_dtypes() -> tuple[str, ...] | None:
    """:func:`bridge_flexmlrt_dtypes` of the installed bridge, or None without one."""
    try:
        bridge = import_bridge()
    except VisionNPUBackendUnavailableError:
        return None
    return bridge_flexmlrt_dtypes(bridge)


def check_flexmlrt_dtypes(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    accepted: Sequence[str],
    artifact: Path | str,
) -> None:
    """Refuse a graph with a tensor whose dtype the FlexMLRT runtime does not take."""
    bad = [
        f"{role} {spec.name!r} is {spec.dtype}"
        for role, specs in (("input", inputs), ("output", outputs))
        for spec in specs
        if spec.dtype not in accepted
    ]
    if bad:
        raise VisionNPUBundleError(
            f"Device graph {artifact} cannot run on the FlexMLRT runtime: {'; '.join(bad)}, "
            f"but the installed {BRIDGE_MODULE}'s FlexMLRT runtime takes only "
            f"{', '.join(accepted)} (build_info()['flexmlrt_dtypes']). Re-export the bundle "
            f"with this vLLM (python -m vllm.vision_npu.export), whose device graphs use only "
            f"those dtypes, and compile it again."
        )


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
        self.flexmlrt_dtypes = bridge_flexmlrt_dtypes(self._bridge)

    def load(self, artifact: Path) -> VisionNPUGraph:
        runtime = "auto" if self.options.get("allow_loopback") else "flexmlrt"
        try:
            session = self._bridge.Session(str(artifact), runtime=runtime, device=self.device)
        except getattr(self._bridge, "RuntimeUnavailableError", ()) as e:
            raise VisionNPUBackendUnavailableError(f"{e}. {BRIDGE_HINT}") from e
        except getattr(self._bridge, "BundleError", ()) as e:
            raise VisionNPUBundleError(f"{BRIDGE_MODULE} cannot load {artifact}: {e}") from e
        graph = FlexMLRTVisionGraph(session)
        # The loopback runtime is self-describing: its specs are whatever its
        # bundle says, and it takes them as they are.
        if getattr(session, "runtime", "flexmlrt") != "loopback":
            check_flexmlrt_dtypes(graph.inputs, graph.outputs, self.flexmlrt_dtypes, artifact)
        return graph


def _spec(spec: Any) -> TensorSpec:
    return TensorSpec(str(spec.name), tuple(int(d) for d in spec.shape), str(spec.dtype))
