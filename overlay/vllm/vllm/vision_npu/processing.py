# SPDX-License-Identifier: Apache-2.0
"""Input limits of the NPU vision tower, applied where vLLM processes requests.

The device graph has fixed shapes, so the largest compiled specialization
bounds how many patches one frame may have. Like stock vLLM's own
``max_pixels``, the bound is applied by the multimodal processor, in the front
end:

* the processor's default ``max_pixels`` (images and videos) is lowered to what
  the largest specialization holds, so images are resized to fit and vLLM's
  start-up profiling builds its dummy items at that size;
* a request that still cannot fit (its own ``mm_processor_kwargs`` asking for
  more, a frame that comes out too large) fails alone with a clear error
  before it reaches the scheduler: an exception inside the model's forward
  would stop the engine for every request.

A video longer than the largest specialization is not an error: the tower
runs it in pieces along its temporal axis (see ``models.qwen2_5_vl``).

Only the bundle manifest is read here (no onnxruntime, no bridge), so the
front end can apply the limits without loading the device graphs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import vllm.envs as envs
from vllm.logger import init_logger
from vllm.vision_npu.backend import VisionNPUError, VisionNPUInputTooLargeError

logger = init_logger(__name__)

MODEL_TYPE = "qwen2_5_vl"


@dataclass(frozen=True)
class VisionNPULimits:
    """What one bundle can take: its specializations (patches per run)."""

    bundle_dir: str
    sizes: tuple[int, ...]
    patch_size: int

    @property
    def max_patches(self) -> int:
        return max(self.sizes)

    @property
    def max_pixels(self) -> int:
        """The largest ``max_pixels`` whose resized frames fit: the processor
        keeps ``height * width <= max_pixels`` in whole patches."""
        return self.max_patches * self.patch_size**2

    def describe(self) -> str:
        return (
            f"the NPU vision bundle {self.bundle_dir} holds at most {self.max_patches} "
            f"patches per frame (specializations: {', '.join(map(str, self.sizes))})"
        )

    def check_grids(self, modality: str, grids: Iterable[Iterable[int]]) -> None:
        """Refuse any item with a frame larger than the largest specialization."""
        for index, grid in enumerate(grids):
            t, h, w = (int(v) for v in grid)
            if h * w > self.max_patches:
                p = self.patch_size
                raise VisionNPUInputTooLargeError(
                    f"{modality} {index} is {w * p}x{h * p} pixels after resizing "
                    f"({h * w} patches per frame), but {self.describe()}. Send it with "
                    f"max_pixels <= {self.max_pixels} (mm_processor_kwargs), or re-export "
                    "the bundle with a larger size: python -m vllm.vision_npu.export "
                    "--sizes ..."
                )

    def check_requested(self, mm_kwargs: Mapping[str, Any]) -> None:
        """Refuse ``mm_processor_kwargs`` that ask for larger frames than fit."""
        for scope, kwargs in _scopes(mm_kwargs):
            for name, value in _requested_pixels(kwargs):
                if value is not None and int(value) > self.max_pixels:
                    raise VisionNPUInputTooLargeError(
                        f"mm_processor_kwargs {scope}{name}={value} asks for frames of up "
                        f"to {value} pixels, but {self.describe()} = {self.max_pixels} "
                        f"pixels. Use max_pixels <= {self.max_pixels}, or re-export the "
                        "bundle with a larger size: python -m vllm.vision_npu.export "
                        "--sizes ..."
                    )


def vision_npu_limits(hf_config: Any) -> VisionNPULimits | None:
    """The limits of the bundle the NPU tower of ``hf_config`` will load, or
    None when the stock tower runs (``VLLM_VISION_NPU_BACKEND`` unset or
    empty) or the bundle cannot be read (the tower then fails at start-up
    with the bundle's own error)."""
    if not envs.VLLM_VISION_NPU_BACKEND:
        return None
    from vllm.vision_npu.bundle import MANIFEST, bundle_dir_for
    from vllm.vision_npu.models.qwen2_5_vl_graph import Qwen2_5_VisionGraphConfig

    vision_config = hf_config.vision_config
    # The same expression Qwen2_5_VLForConditionalGeneration passes as norm_eps.
    norm_eps = getattr(hf_config, "rms_norm_eps", 1e-6)
    key = Qwen2_5_VisionGraphConfig.from_vision_config(vision_config, norm_eps).key()
    directory = bundle_dir_for(None, MODEL_TYPE, key)
    try:
        stat = os.stat(directory / MANIFEST)
    except OSError:
        return None
    return _read_limits(str(directory), stat.st_mtime_ns, stat.st_size, key,
                        int(vision_config.patch_size))


@functools.lru_cache(maxsize=16)
def _read_limits(directory: str, mtime_ns: int, size: int, key: str, patch_size: int
                 ) -> VisionNPULimits | None:
    from vllm.vision_npu.bundle import VisionNPUBundle

    try:
        bundle = VisionNPUBundle.open(directory)
    except VisionNPUError:
        return None
    if bundle.manifest.config_key != key:  # another model's bundle: the tower refuses it
        return None
    return VisionNPULimits(directory, tuple(bundle.sizes), patch_size)


def bound_hf_processor(processor: Any, limits: VisionNPULimits | None) -> Any:
    """Lower the default ``max_pixels`` of the processor's image and video
    processors to what ``limits`` holds (in place; idempotent)."""
    if limits is None:
        return processor
    for attr in ("image_processor", "video_processor"):
        sub = getattr(processor, attr, None)
        size = getattr(sub, "size", None)
        if size is None:
            continue
        longest = _get(size, "longest_edge")
        if longest is not None and int(longest) <= limits.max_pixels:
            continue
        shortest = _get(size, "shortest_edge")
        updates = {"longest_edge": limits.max_pixels}
        if shortest is not None and int(shortest) > limits.max_pixels:
            updates["shortest_edge"] = limits.max_pixels
        sub.size = _replace(size, updates)
        if getattr(sub, "max_pixels", None) is not None:
            sub.max_pixels = limits.max_pixels
        logger.info_once(
            "NPU vision tower: %s max_pixels lowered from %s to %d, so that frames "
            "fit %s; frames are resized to fit, as with any max_pixels.",
            attr, longest, limits.max_pixels, limits.describe(),
        )
    return processor


def _scopes(mm_kwargs: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    scopes: list[tuple[str, Mapping[str, Any]]] = [("", mm_kwargs)]
    for name in ("images_kwargs", "videos_kwargs"):
        nested = mm_kwargs.get(name)
        if isinstance(nested, Mapping):
            scopes.append((f"{name}.", nested))
    return scopes


def _requested_pixels(kwargs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    found = [("max_pixels", kwargs.get("max_pixels")), ("min_pixels", kwargs.get("min_pixels"))]
    size = kwargs.get("size")
    if isinstance(size, Mapping):
        found += [("size.longest_edge", size.get("longest_edge")),
                  ("size.shortest_edge", size.get("shortest_edge"))]
    return found


def _get(size: Any, key: str) -> Any:
    if isinstance(size, Mapping):
        return size.get(key)
    return getattr(size, key, None)


def _replace(size: Any, updates: dict[str, int]) -> Any:
    if dataclasses.is_dataclass(size) and not isinstance(size, type):
        return dataclasses.replace(size, **updates)
    return {**dict(size), **updates}
