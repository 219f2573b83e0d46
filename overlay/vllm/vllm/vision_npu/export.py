# SPDX-License-Identifier: Apache-2.0
"""Export the vision device graph of a model as an NPU bundle.

    python -m vllm.vision_npu.export --model /path/to/Qwen2.5-VL-7B-Instruct \\
        --sizes 1024,2048,4352 [--dtype bfloat16] [--cache-dir DIR | --output DIR]

``--sizes`` are numbers of patches (14x14 pixels each, before the 2x2 merge),
one fixed-shape specialization each; an image of ``H x W`` pixels resized by
the processor has ``(H/14) * (W/14)`` patches, a video ``T/2`` times that
(a video larger than the largest size runs in pieces along its time axis;
the largest size bounds the processor's ``max_pixels`` per frame).
``--dtype`` is the dtype vLLM will run the model in: the weights are rounded
to it, as vLLM's loader rounds them, so that the bundle matches the loaded
weights (the graph itself computes in float32).
The bundle is written to ``<cache>/qwen2_5_vl/<config key>/`` (``--cache-dir``
defaults to ``VLLM_VISION_NPU_CACHE``) and its path printed on stdout. The
graphs (ONNX opset 17, tensors documented in
``vllm.vision_npu.models.qwen2_5_vl_graph``) share one external weights file.
Compile them for the NPU with the vendor toolchain and add the compiled
artifacts to the manifest under the ``flexmlrt`` key.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vllm.vision_npu.bundle import (
    BundleFile,
    BundleManifest,
    Specialization,
    bundle_dir_for,
)
from vllm.vision_npu.models.qwen2_5_vl_graph import (
    DEVICE_DTYPES,
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAMES,
    Qwen2_5_VisionGraphConfig,
    build_device_graph,
    check_graph_weights,
    weights_fingerprint,
    write_shared_weights,
)

MODEL_TYPE = "qwen2_5_vl"
WEIGHTS_FILE = "weights.bin"


def _tensor_specs(config: Qwen2_5_VisionGraphConfig) -> tuple[list[dict], list[dict]]:
    d2 = config.head_dim // 2
    inputs = [
        {"name": "hidden_states", "shape": ["N", config.hidden_size], "dtype": "float32"},
        {"name": "rotary_cos", "shape": ["N", d2], "dtype": "float32"},
        {"name": "rotary_sin", "shape": ["N", d2], "dtype": "float32"},
        {"name": "full_attn_segments", "shape": ["N"], "dtype": "float32"},
        {"name": "window_slots", "shape": ["KW"], "dtype": "float32"},
        {"name": "window_slot_segments", "shape": ["KW"], "dtype": "float32"},
        {"name": "window_positions", "shape": ["N"], "dtype": "float32"},
    ]
    outputs = [
        {"name": "vision_embeds", "shape": ["N/U", config.out_hidden_size], "dtype": "float32"}
    ]
    assert tuple(i["name"] for i in inputs) == INPUT_NAMES
    assert tuple(o["name"] for o in outputs) == OUTPUT_NAMES
    return inputs, outputs


def check_device_dtypes(inputs: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
    """Every manifest tensor has a dtype the FlexMLRT runtime takes: the graph's
    ``DEVICE_DTYPES`` and, where the bridge is installed, what it reports
    (``flexmlrt_bridge.build_info()["flexmlrt_dtypes"]``)."""
    from vllm.vision_npu.flexmlrt_backend import installed_bridge_flexmlrt_dtypes

    bridge = installed_bridge_flexmlrt_dtypes()
    accepted = [d for d in DEVICE_DTYPES if bridge is None or d in bridge]
    bad = [
        f"{e['name']!r} is {e['dtype']}" for e in (*inputs, *outputs) if e["dtype"] not in accepted
    ]
    if bad:
        raise ValueError(
            f"device graph tensors the FlexMLRT runtime cannot take: {', '.join(bad)} "
            f"(it takes {', '.join(accepted) or 'nothing this graph uses'})"
        )


def _check_graph_matches_manifest(
    model: Any, inputs: Sequence[Mapping], outputs: Sequence[Mapping]
) -> None:
    """The ONNX graph declares the manifest's names and dtypes, in its order."""
    from onnx import helper

    for role, declared, entries in (
        ("input", model.graph.input, inputs),
        ("output", model.graph.output, outputs),
    ):
        got = [
            (v.name, np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name)
            for v in declared
        ]
        want = [(e["name"], e["dtype"]) for e in entries]
        if got != want:
            raise RuntimeError(f"device graph {role}s {got} differ from the manifest's {want}")


def export_qwen2_5_vision_bundle(
    config: Qwen2_5_VisionGraphConfig,
    weights: Mapping[str, np.ndarray],
    sizes: Sequence[int],
    *,
    cache_dir: str | Path | None = None,
    output: str | Path | None = None,
    digest: bool = True,
) -> Path:
    """Write a bundle for ``sizes`` (patches per specialization); returns its dir.

    ``weights`` are the device-graph weights in vLLM naming
    (``blocks.{i}.attn.qkv.weight``, ``blocks.{i}.mlp.gate_up_proj.weight``, ...).
    """
    unit = config.spatial_merge_unit
    sizes = sorted({int(s) for s in sizes})
    bad = [s for s in sizes if s <= 0 or s % unit]
    if not sizes or bad:
        raise ValueError(f"--sizes must be positive multiples of {unit}, got {bad or 'none'}")
    check_graph_weights(config, weights)
    inputs, outputs = _tensor_specs(config)
    check_device_dtypes(inputs, outputs)
    directory = Path(output) if output else bundle_dir_for(cache_dir, MODEL_TYPE, config.key())
    directory.mkdir(parents=True, exist_ok=True)
    # A half-written bundle must not look valid: drop the old manifest first
    # and write the new one last.
    (directory / "manifest.json").unlink(missing_ok=True)

    import onnx

    layout = write_shared_weights(config, weights, directory / WEIGHTS_FILE)
    specializations = []
    for n in sizes:
        name = f"vision_n{n}.onnx"
        model = build_device_graph(config, n, WEIGHTS_FILE, layout)
        _check_graph_matches_manifest(model, inputs, outputs)
        onnx.save_model(model, str(directory / name))
        onnx.checker.check_model(str(directory / name))
        specializations.append(
            Specialization(n, {"onnxrt": BundleFile.describe(directory, name, digest)})
        )
    manifest = BundleManifest(
        model_type=MODEL_TYPE,
        config=config.to_json(),
        config_key=config.key(),
        weights_fingerprint=weights_fingerprint(config, weights),
        opset=OPSET,
        inputs=inputs,
        outputs=outputs,
        weights_file=BundleFile.describe(directory, WEIGHTS_FILE, digest),
        specializations=specializations,
    )
    manifest.write(directory)
    return directory


def hf_visual_weights(items: Iterable[tuple[str, Any]]) -> dict[str, np.ndarray]:
    """Map checkpoint tensors (``visual.*`` / ``model.visual.*``, HF naming) to
    the vLLM names of the device-graph weights, fusing q/k/v and gate/up the
    way vLLM's ``hf_to_vllm_mapper`` does."""
    raw: dict[str, np.ndarray] = {}
    for name, tensor in items:
        _, sep, local = name.partition("visual.")
        if not sep or local.startswith("patch_embed."):
            continue
        raw[local] = _to_numpy(tensor)
    out: dict[str, np.ndarray] = {}
    fused = {
        ".attn.q.": (".attn.qkv.", ("q", "k", "v")),
        ".mlp.gate_proj.": (".mlp.gate_up_proj.", ("gate_proj", "up_proj")),
    }
    for name, arr in raw.items():
        for first, (target, parts) in fused.items():
            if first in name:
                stem = name.replace(first, "%s")
                group = [raw[stem % first.replace(parts[0], p)] for p in parts]
                out[stem % target] = np.concatenate(group, axis=0)
                break
        else:
            if ".attn.k." in name or ".attn.v." in name or ".mlp.up_proj." in name:
                continue
            out[name] = arr
    return out


# vLLM's --dtype -> the torch dtype its loader casts the checkpoint to.
RUNTIME_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def round_weights(weights: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """The weights as vLLM holds them when it runs in ``dtype`` (rounded to it,
    kept in float32 for the graph): a bundle for a bfloat16 engine must be made
    from the rounded weights, or the runtime's fingerprint check refuses it."""
    if dtype not in RUNTIME_DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(sorted(RUNTIME_DTYPES))}, got {dtype!r}")
    if dtype == "float32":
        return dict(weights)
    torch = _torch()
    target = getattr(torch, RUNTIME_DTYPES[dtype])
    return {
        name: torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        .to(target).to(torch.float32).numpy()
        for name, arr in weights.items()
    }


def _to_numpy(tensor: Any) -> np.ndarray:
    if isinstance(tensor, np.ndarray):
        return tensor.astype(np.float32, copy=False)
    return tensor.detach().to(dtype=_torch().float32).cpu().numpy()


def _torch() -> Any:
    import torch

    return torch


def iter_safetensors(model_dir: Path) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"No *.safetensors in {model_dir}")
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if "visual." in key:
                    yield key, f.get_tensor(key)


def load_model_graph_config(model_dir: Path) -> Qwen2_5_VisionGraphConfig:
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(str(model_dir))
    if getattr(hf_config, "model_type", None) not in ("qwen2_5_vl",):
        raise ValueError(
            f"{model_dir} is a {getattr(hf_config, 'model_type', '?')!r} model; "
            "only qwen2_5_vl is supported"
        )
    # The same expression vLLM's Qwen2_5_VLForConditionalGeneration uses.
    norm_eps = getattr(hf_config, "rms_norm_eps", 1e-6)
    return Qwen2_5_VisionGraphConfig.from_vision_config(hf_config.vision_config, norm_eps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vllm.vision_npu.export",
        description="Export the Qwen2.5-VL vision device graph as an NPU bundle.",
    )
    parser.add_argument("--model", required=True, type=Path, help="local HF model directory")
    parser.add_argument(
        "--sizes", required=True,
        help="comma-separated numbers of patches, one specialization each",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cache-dir", type=Path, help="cache root (default: VLLM_VISION_NPU_CACHE)")
    where.add_argument("--output", type=Path, help="exact bundle directory to write")
    parser.add_argument(
        "--dtype", choices=sorted(RUNTIME_DTYPES), default="float32",
        help="the dtype vLLM will run the model in (--dtype of vllm serve): the weights "
        "are rounded to it, as vLLM's loader rounds them, so the bundle matches the "
        "weights the runtime loads; the graph computes in float32 either way",
    )
    parser.add_argument("--no-digest", action="store_true", help="skip sha256 of the files")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)

    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        config = load_model_graph_config(args.model)
        target = args.output or bundle_dir_for(args.cache_dir, MODEL_TYPE, config.key())
        if (target / "manifest.json").exists() and not args.force:
            raise FileExistsError(f"{target} already holds a bundle (use --force to replace it)")
        if args.force and target.exists() and args.output is None:
            shutil.rmtree(target)
        weights = round_weights(hf_visual_weights(iter_safetensors(args.model)), args.dtype)
        directory = export_qwen2_5_vision_bundle(
            config, weights, sizes, output=target, digest=not args.no_digest
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps({"bundle": str(directory), "sizes": sorted(set(sizes))}))
    else:
        print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
