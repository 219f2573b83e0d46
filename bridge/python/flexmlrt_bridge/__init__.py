"""flexmlrt_bridge: run FlexMLRT NPU bundles from Python through a pybind11 extension.

    import flexmlrt_bridge as fb
    with fb.Session("model.rai") as s:          # memory-mapped, runtime picked by content
        print(s.inputs, s.outputs)               # TensorSpec(name, dtype, shape)
        y = s.run({"compute_graph.ifm_ddr": x})  # zero-copy in, preallocated outputs

Without the FlexMLRT SDK at build time only the loopback runtime is compiled
in; see ``build_info()`` and bridge/README.md.
"""

from ._core import (
    BridgeError,
    BundleError,
    RuntimeUnavailableError,
    TensorError,
    TensorSpec,
    build_info,
    flexmlrt_available,
)
from .loopback import (
    DEFAULT_INPUT_NAME,
    DEFAULT_OUTPUT_NAME,
    affine_reference,
    encode_loopback_bundle,
    rows_affine_reference,
    write_loopback_bundle,
)
from .session import Session, available_runtimes

__all__ = [
    "DEFAULT_INPUT_NAME",
    "DEFAULT_OUTPUT_NAME",
    "BridgeError",
    "BundleError",
    "RuntimeUnavailableError",
    "Session",
    "TensorError",
    "TensorSpec",
    "affine_reference",
    "available_runtimes",
    "build_info",
    "encode_loopback_bundle",
    "flexmlrt_available",
    "rows_affine_reference",
    "write_loopback_bundle",
]
