# SPDX-License-Identifier: Apache-2.0
"""Backend interface and registry for NPU vision encoders.

A *backend* turns one compiled artifact of a bundle (one fixed-shape
specialization of the device graph) into a :class:`VisionNPUGraph` that can be
run with numpy feeds. Backends are selected by name through
``VLLM_VISION_NPU_BACKEND``:

* ``onnxrt``   -- runs the exported ONNX graph with onnxruntime on the CPU. The
  reference path every machine can run and test.
* ``flexmlrt`` -- runs the compiled graph on an AMD Ryzen AI NPU through the
  ``flexmlrt_bridge`` extension module.

Unset (or empty) means the stock vLLM vision tower is used and nothing in this
package is imported beyond the factory.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class VisionNPUError(RuntimeError):
    """Base class of every error raised by ``vllm.vision_npu``."""


class VisionNPUBackendUnavailableError(VisionNPUError):
    """The selected backend cannot run on this machine (missing module/SDK)."""


class VisionNPUBundleError(VisionNPUError):
    """A bundle is missing, truncated, or does not match the model."""


class VisionNPUInputTooLargeError(VisionNPUError, ValueError):
    """An image/video is larger than every compiled specialization."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, fixed shape and numpy dtype name of one graph input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))


class VisionNPUGraph(ABC):
    """One loaded fixed-shape device graph; backends fill in its tensor specs."""

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self._inputs = inputs
        self._outputs = outputs

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Specs of the graph inputs, in the order the graph declares them."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Specs of the graph outputs, in the order the graph declares them."""
        return self._outputs

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference. ``feeds`` maps every input name to a C-contiguous
        array of exactly the input's shape and dtype; returns every output."""

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise a clear error when ``feeds`` does not match :attr:`inputs`."""
        expected = {spec.name: spec for spec in self.inputs}
        if set(feeds) != set(expected):
            raise VisionNPUError(
                f"Device graph inputs are {sorted(expected)}, got {sorted(feeds)}"
            )
        for name, spec in expected.items():
            arr = feeds[name]
            if tuple(arr.shape) != spec.shape or arr.dtype != np.dtype(spec.dtype):
                raise VisionNPUError(
                    f"Device graph input {name!r} expects {spec.dtype}{list(spec.shape)}, "
                    f"got {arr.dtype}{list(arr.shape)}"
                )


class VisionNPUBackend(ABC):
    """Loads compiled artifacts of a bundle for one kind of device."""

    #: Name used in ``VLLM_VISION_NPU_BACKEND``.
    name: ClassVar[str]
    #: Key of this backend's artifact in a bundle's specialization entries.
    artifact_key: ClassVar[str]

    def __init__(self, device: str | None = None, **options: Any) -> None:
        self.device = device
        self.options = options

    @abstractmethod
    def load(self, artifact: Path) -> VisionNPUGraph:
        """Load one compiled artifact (already validated by the bundle)."""

    def describe(self) -> str:
        return f"{self.name}(device={self.device or 'default'})"


# name -> "module:attribute" (built-ins, imported on first use so that neither
# onnxruntime nor the bridge is imported by `import vllm`) or a class.
_BACKENDS: dict[str, str | type[VisionNPUBackend]] = {
    "onnxrt": "vllm.vision_npu.onnxrt_backend:OnnxRuntimeVisionBackend",
    "flexmlrt": "vllm.vision_npu.flexmlrt_backend:FlexMLRTVisionBackend",
}


def register_vision_npu_backend(
    name: str,
) -> Callable[[type[VisionNPUBackend]], type[VisionNPUBackend]]:
    """Class decorator registering an out-of-tree backend under ``name``."""

    key = name.strip().lower()
    if not key:
        raise ValueError("A vision NPU backend needs a non-empty name")

    def decorator(cls: type[VisionNPUBackend]) -> type[VisionNPUBackend]:
        _BACKENDS[key] = cls
        return cls

    return decorator


def available_vision_npu_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_vision_npu_backend_cls(name: str) -> type[VisionNPUBackend]:
    key = name.strip().lower()
    entry = _BACKENDS.get(key)
    if entry is None:
        raise ValueError(
            f"Unknown VLLM_VISION_NPU_BACKEND={name!r}; available backends: "
            f"{', '.join(available_vision_npu_backends())} (unset it to use the "
            "stock vision tower)"
        )
    if isinstance(entry, str):
        module_name, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module_name), attr)
        _BACKENDS[key] = entry
    return entry


def create_vision_npu_backend(
    name: str, device: str | None = None, **options: Any
) -> VisionNPUBackend:
    """Instantiate the backend registered under ``name``."""
    return get_vision_npu_backend_cls(name)(device=device, **options)
