# SPDX-License-Identifier: Apache-2.0
"""Compiled vision bundles and their cache layout.

A bundle holds the device graph of one vision tower (one config + weights) in
several fixed-shape *specializations* (numbers of patches)::

    $VLLM_VISION_NPU_CACHE/            (default: $VLLM_CACHE_ROOT/vision_npu)
      <model_type>/<config key>/        one bundle
        manifest.json                   format, config, fingerprint, files
        weights.bin                     shared external data (4 KiB aligned)
        vision_n<N>.onnx                one graph per specialization
        vision_n<N>.rai                 compiled NPU artifact (added by the
                                        vendor compiler, used by flexmlrt)

``VLLM_VISION_NPU_CACHE`` may also point straight at one bundle directory
(one containing ``manifest.json``).

Bundles are memory-mapped, never read into Python ``bytes``: onnxruntime maps
the external weights itself, the FlexMLRT bridge maps its artifact, and the
sizes recorded in the manifest are checked against the files on disk so that a
truncated bundle fails with a clear error instead of garbage outputs.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm.vision_npu.backend import (
    TensorSpec,
    VisionNPUBundleError,
    VisionNPUInputTooLargeError,
)

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "vllm-vision-npu-bundle"
# 2: the segment inputs are float32 (v1 bundles had int64 ones, which the
# FlexMLRT runtime cannot take): a v1 bundle is refused, to be re-exported.
# 3: window attention per chunk of windows (window_slots/_slot_segments/_positions).
BUNDLE_FORMAT_VERSION = 3


def default_cache_dir() -> Path:
    import vllm.envs as envs

    configured = envs.VLLM_VISION_NPU_CACHE
    if configured:
        return Path(os.path.expanduser(configured))
    return Path(envs.VLLM_CACHE_ROOT) / "vision_npu"


def bundle_dir_for(cache_dir: Path | str | None, model_type: str, config_key: str) -> Path:
    """Where the bundle of (model_type, config_key) lives under ``cache_dir``."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    if (root / MANIFEST).is_file():
        return root
    return root / model_type / config_key


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative to the bundle directory
    size: int
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleFile:
        return cls(str(data["path"]), int(data["size"]), data.get("sha256"))

    @classmethod
    def describe(cls, directory: Path, name: str, digest: bool = True) -> BundleFile:
        path = directory / name
        sha = _sha256_file(path) if digest else None
        return cls(name, path.stat().st_size, sha)


@dataclass(frozen=True)
class Specialization:
    """One compiled fixed shape: ``num_patches`` patches per run."""

    num_patches: int
    artifacts: dict[str, BundleFile] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "num_patches": self.num_patches,
            "artifacts": {k: v.to_json() for k, v in sorted(self.artifacts.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Specialization:
        return cls(
            int(data["num_patches"]),
            {k: BundleFile.from_json(v) for k, v in data.get("artifacts", {}).items()},
        )


@dataclass
class BundleManifest:
    model_type: str
    config: dict[str, Any]
    config_key: str
    weights_fingerprint: str
    opset: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    weights_file: BundleFile | None
    specializations: list[Specialization]
    format: str = BUNDLE_FORMAT
    format_version: int = BUNDLE_FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "model_type": self.model_type,
            "config_key": self.config_key,
            "config": self.config,
            "weights_fingerprint": self.weights_fingerprint,
            "opset": self.opset,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "weights_file": self.weights_file.to_json() if self.weights_file else None,
            "specializations": [
                s.to_json() for s in sorted(self.specializations, key=lambda s: s.num_patches)
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleManifest:
        weights = data.get("weights_file")
        return cls(
            model_type=str(data["model_type"]),
            config=dict(data["config"]),
            config_key=str(data["config_key"]),
            weights_fingerprint=str(data["weights_fingerprint"]),
            opset=int(data["opset"]),
            inputs=list(data["inputs"]),
            outputs=list(data["outputs"]),
            weights_file=BundleFile.from_json(weights) if weights else None,
            specializations=[Specialization.from_json(s) for s in data["specializations"]],
            format=str(data["format"]),
            format_version=int(data["format_version"]),
        )

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)
        return path


class VisionNPUBundle:
    """A validated bundle directory."""

    def __init__(self, directory: Path, manifest: BundleManifest) -> None:
        self.directory = directory
        self.manifest = manifest
        self._maps: list[mmap.mmap] = []

    @classmethod
    def open(cls, directory: Path | str, *, export_hint: str = "") -> VisionNPUBundle:
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        hint = f" Create it with: {export_hint}" if export_hint else ""
        if not manifest_path.is_file():
            raise VisionNPUBundleError(
                f"No vision NPU bundle at {directory} (missing {MANIFEST}).{hint}"
            )
        try:
            data = json.loads(manifest_path.read_text())
            manifest = BundleManifest.from_json(data)
        except (ValueError, KeyError, TypeError) as e:
            raise VisionNPUBundleError(
                f"Vision NPU bundle manifest {manifest_path} is corrupt ({e}).{hint}"
            ) from e
        if manifest.format != BUNDLE_FORMAT or manifest.format_version != BUNDLE_FORMAT_VERSION:
            raise VisionNPUBundleError(
                f"{manifest_path} is format {manifest.format} v{manifest.format_version}; "
                f"this vLLM reads {BUNDLE_FORMAT} v{BUNDLE_FORMAT_VERSION}.{hint}"
            )
        if not manifest.specializations:
            raise VisionNPUBundleError(f"{manifest_path} lists no specializations.{hint}")
        bundle = cls(directory, manifest)
        if manifest.weights_file is not None:
            bundle._check_file(manifest.weights_file, hint)
        return bundle

    @property
    def sizes(self) -> list[int]:
        return sorted(s.num_patches for s in self.manifest.specializations)

    def input_specs(self, num_patches: int) -> tuple[TensorSpec, ...]:
        return _resolve_specs(self.manifest.inputs, num_patches, self.manifest.config)

    def output_specs(self, num_patches: int) -> tuple[TensorSpec, ...]:
        return _resolve_specs(self.manifest.outputs, num_patches, self.manifest.config)

    def select(self, num_patches: int, description: str) -> Specialization:
        """The smallest specialization holding ``num_patches`` patches."""
        for spec in sorted(self.manifest.specializations, key=lambda s: s.num_patches):
            if spec.num_patches >= num_patches:
                return spec
        raise VisionNPUInputTooLargeError(
            f"{description} has {num_patches} patches, more than the largest compiled "
            f"vision specialization; available sizes (patches): "
            f"{', '.join(str(s) for s in self.sizes)}. Re-export the bundle with a larger "
            f"size (python -m vllm.vision_npu.export --sizes ...) or lower the image "
            f"resolution (e.g. the processor's max_pixels) -- images are never truncated."
        )

    def artifact_path(self, spec: Specialization, backend_key: str, hint: str = "") -> Path:
        artifact = spec.artifacts.get(backend_key)
        if artifact is None:
            raise VisionNPUBundleError(
                f"Bundle {self.directory} has no {backend_key!r} artifact for the "
                f"{spec.num_patches}-patch specialization (it has: "
                f"{', '.join(sorted(spec.artifacts)) or 'none'}).{hint}"
            )
        return self._check_file(artifact, hint)

    def map_file(self, relpath: str) -> memoryview:
        """Memory-map one bundle file read-only (kept open with the bundle)."""
        with open(self.directory / relpath, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(mapped)
        return memoryview(mapped)

    def verify_digests(self) -> None:
        """Full sha256 check of every file (slow for large weights; optional)."""
        files = [a for s in self.manifest.specializations for a in s.artifacts.values()]
        if self.manifest.weights_file is not None:
            files.append(self.manifest.weights_file)
        for f in files:
            if f.sha256 and _sha256_file(self.directory / f.path) != f.sha256:
                raise VisionNPUBundleError(
                    f"{self.directory / f.path} does not match the sha256 in the manifest"
                )

    def _check_file(self, entry: BundleFile, hint: str) -> Path:
        path = self.directory / entry.path
        if not path.is_file():
            raise VisionNPUBundleError(f"Vision NPU bundle file {path} is missing.{hint}")
        size = path.stat().st_size
        if size != entry.size:
            raise VisionNPUBundleError(
                f"Vision NPU bundle file {path} is {size} bytes, the manifest says "
                f"{entry.size}: truncated or overwritten.{hint}"
            )
        return path


def _resolve_specs(
    entries: Sequence[dict[str, Any]], num_patches: int, config: dict[str, Any]
) -> tuple[TensorSpec, ...]:
    """Manifest shapes use symbols: ``N`` patches, ``N/U`` merged tokens, ``KW``
    window slots (see ``window_chunks`` in the graph module)."""
    from vllm.vision_npu.models.qwen2_5_vl_graph import (
        Qwen2_5_VisionGraphConfig,
        window_chunks,
        window_tokens,
    )

    unit = int(config["spatial_merge_size"]) ** 2
    graph_config = Qwen2_5_VisionGraphConfig.from_json(config)
    symbols = {
        "N": num_patches,
        "N/U": num_patches // unit,
        "KW": window_chunks(num_patches, window_tokens(graph_config)) * window_tokens(graph_config),
    }
    specs = []
    for entry in entries:
        shape = tuple(symbols[d] if isinstance(d, str) else int(d) for d in entry["shape"])
        specs.append(TensorSpec(entry["name"], shape, entry["dtype"]))
    return tuple(specs)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return digest.hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            for start in range(0, len(mapped), 1 << 24):
                digest.update(mapped[start : start + (1 << 24)])
    return digest.hexdigest()
