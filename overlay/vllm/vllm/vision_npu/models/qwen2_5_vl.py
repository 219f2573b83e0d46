# SPDX-License-Identifier: Apache-2.0
"""Qwen2.5-VL vision tower with its transformer blocks on an NPU.

The tower is split in three stages per item (image or video):

1. CPU pre-ops (vectorised torch, no Python loop over patches): input norm and
   patch embedding, rotary cos/sin tables, window index, attention segments
   (the compact form of the block-diagonal full/window attention masks), and
   padding to the chosen fixed-shape specialization.
2. The device graph (every block + the merger), see ``qwen2_5_vl_graph``,
   run by the backend selected with ``VLLM_VISION_NPU_BACKEND``.
3. CPU post-ops: trim the padding, undo the window order.

The tower keeps the stock module tree (it subclasses
``Qwen2_5_VisionTransformer``) so checkpoints load unchanged; the loaded
weights are checked against the bundle's fingerprint so that a bundle exported
from other weights fails loudly instead of producing wrong embeddings.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (
    Qwen2_5_VLVisionConfig,
)

import vllm.envs as envs
from vllm.logger import init_logger
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VisionTransformer
from vllm.vision_npu.backend import (
    VisionNPUBackend,
    VisionNPUBundleError,
    VisionNPUError,
    VisionNPUGraph,
    create_vision_npu_backend,
)
from vllm.vision_npu.bundle import VisionNPUBundle, bundle_dir_for
from vllm.vision_npu.models.qwen2_5_vl_graph import (
    OUTPUT_NAMES,
    PAD_SEGMENT,
    window_chunks,
    Qwen2_5_VisionGraphConfig,
    graph_weight_names,
    weights_fingerprint,
)

logger = init_logger(__name__)

MODEL_TYPE = "qwen2_5_vl"


@dataclass
class VisionNPUItemTiming:
    """Per-item stage timings of one forward: durations (seconds) and when the
    pre-ops and the device run started (``time.perf_counter()``), so that
    overlap between items can be seen."""

    grid_thw: tuple[int, int, int]
    num_patches: int
    specialization: int
    pre_s: float = 0.0
    device_s: float = 0.0
    post_s: float = 0.0
    pre_start: float = 0.0
    device_start: float = 0.0


@dataclass
class _Prepared:
    index: int
    grid_thw: tuple[int, int, int]
    num_patches: int
    specialization: int
    feeds: dict[str, np.ndarray]
    reverse_indices: torch.Tensor
    pre_s: float
    pre_start: float


def tower_graph_weights(tower: nn.Module) -> dict[str, np.ndarray]:
    """Device-graph weights of a loaded vLLM tower, vLLM naming, float32."""
    params = dict(tower.named_parameters())
    config = getattr(tower, "graph_config", None)
    names = graph_weight_names(config) if config is not None else [
        n for n in params if n.startswith(("blocks.", "merger."))
    ]
    return {n: params[n].detach().to(torch.float32).cpu().numpy() for n in names}


def export_command_hint(cache_dir: Any = None) -> str:
    cache = f" --cache-dir {cache_dir}" if cache_dir else ""
    return f"python -m vllm.vision_npu.export --model <model dir> --sizes <patches,...>{cache}"


class Qwen2_5_VisionTransformerNPU(Qwen2_5_VisionTransformer):
    """Drop-in replacement of ``Qwen2_5_VisionTransformer`` whose transformer
    blocks and merger run as a fixed-shape device graph."""

    def __init__(
        self,
        vision_config: Qwen2_5_VLVisionConfig,
        norm_eps: float = 1e-6,
        quant_config: QuantizationConfig | None = None,
        input_norm: nn.Module | None = None,
        prefix: str = "",
        *,
        backend: str | VisionNPUBackend | None = None,
        device: str | None = None,
        cache_dir: str | None = None,
        async_pipeline: bool | None = None,
        timing: bool | None = None,
    ) -> None:
        super().__init__(
            vision_config=vision_config,
            norm_eps=norm_eps,
            quant_config=quant_config,
            input_norm=input_norm,
            prefix=prefix,
        )
        if quant_config is not None:
            raise NotImplementedError(
                "The NPU vision tower runs the exported float graph; quantized vision "
                "towers are not supported (unset VLLM_VISION_NPU_BACKEND)."
            )
        self.graph_config = Qwen2_5_VisionGraphConfig.from_vision_config(vision_config, norm_eps)
        if isinstance(backend, VisionNPUBackend):
            self.npu_backend = backend
        else:
            name = backend or envs.VLLM_VISION_NPU_BACKEND
            if not name:
                raise ValueError("Qwen2_5_VisionTransformerNPU needs a backend name")
            self.npu_backend = create_vision_npu_backend(
                name, device=device or envs.VLLM_VISION_NPU_DEVICE
            )
        self.async_pipeline = (
            bool(envs.VLLM_NPU_ASYNC_PIPELINE) if async_pipeline is None else async_pipeline
        )
        self.timing = bool(envs.VLLM_NPU_TIMING) if timing is None else timing

        bundle_dir = bundle_dir_for(cache_dir, MODEL_TYPE, self.graph_config.key())
        self._export_hint = export_command_hint(cache_dir)
        self.bundle = VisionNPUBundle.open(bundle_dir, export_hint=self._export_hint)
        self._check_bundle_config()
        # Load every specialization up front: a missing or wrong-shape artifact
        # fails at start-up, not on the first image.
        self._graphs: dict[int, VisionNPUGraph] = {}
        for spec in self.bundle.manifest.specializations:
            path = self.bundle.artifact_path(
                spec, self.npu_backend.artifact_key, f" Re-create it with: {self._export_hint}"
            )
            graph = self.npu_backend.load(path)
            self._check_graph(graph, spec.num_patches, path)
            self._graphs[spec.num_patches] = graph
        self._pre_executor: ThreadPoolExecutor | None = None
        self.last_timings: list[VisionNPUItemTiming] = []
        self.forward_calls = 0
        logger.info(
            "Qwen2.5-VL vision tower on %s, bundle %s, specializations (patches): %s",
            self.npu_backend.describe(),
            self.bundle.directory,
            self.bundle.sizes,
        )

    # ------------------------------------------------------------------ checks
    def _check_bundle_config(self) -> None:
        manifest = self.bundle.manifest
        expected = self.graph_config.to_json()
        if manifest.model_type != MODEL_TYPE or manifest.config != expected:
            diff = sorted(
                k for k in set(expected) | set(manifest.config)
                if expected.get(k) != manifest.config.get(k)
            )
            raise VisionNPUBundleError(
                f"Vision NPU bundle {self.bundle.directory} was exported for another "
                f"vision config (model_type={manifest.model_type!r}, differing fields: "
                f"{diff}). Re-create it with: {self._export_hint}"
            )

    def _check_graph(self, graph: VisionNPUGraph, num_patches: int, path: Any) -> None:
        want_in = self.bundle.input_specs(num_patches)
        want_out = self.bundle.output_specs(num_patches)
        if tuple(graph.inputs) != want_in or tuple(graph.outputs) != want_out:
            raise VisionNPUBundleError(
                f"Device graph {path} does not have the shapes of a {num_patches}-patch "
                f"specialization: inputs {list(graph.inputs)}, outputs "
                f"{list(graph.outputs)}; expected {list(want_in)} -> {list(want_out)}. "
                f"Re-create it with: {self._export_hint}"
            )

    def check_weights_match_bundle(self) -> None:
        actual = weights_fingerprint(self.graph_config, tower_graph_weights(self))
        if actual != self.bundle.manifest.weights_fingerprint:
            raise VisionNPUBundleError(
                f"Vision NPU bundle {self.bundle.directory} was exported from different "
                f"weights than the ones loaded (fingerprint "
                f"{self.bundle.manifest.weights_fingerprint} != {actual}). Re-export it "
                f"from this checkpoint for this dtype ({_dtype_name(self.dtype)}): "
                f"{self._export_hint} --dtype {_dtype_name(self.dtype)}"
            )

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loaded = super().load_weights(weights)
        self.check_weights_match_bundle()
        return loaded

    # ------------------------------------------------------------------ stages
    # Stages may run on a worker thread, where autograd's mode is not inherited.
    @torch.no_grad()
    def _pre_ops(
        self, index: int, x: torch.Tensor, grid_thw: tuple[int, int, int], specialization: int
    ) -> _Prepared:
        start = time.perf_counter()
        feeds, reverse = qwen2_5_vision_pre_ops(self, x, grid_thw, specialization)
        n = grid_thw[0] * grid_thw[1] * grid_thw[2]
        return _Prepared(
            index=index,
            grid_thw=grid_thw,
            num_patches=n,
            specialization=specialization,
            feeds=feeds,
            reverse_indices=reverse,
            pre_s=time.perf_counter() - start,
            pre_start=start,
        )

    def _device_run(self, prepared: _Prepared) -> tuple[np.ndarray, float, float]:
        start = time.perf_counter()
        graph = self._graphs[prepared.specialization]
        out = graph.run(prepared.feeds)[OUTPUT_NAMES[0]]
        return out, start, time.perf_counter() - start

    @torch.no_grad()
    def _post_ops(self, prepared: _Prepared, out: np.ndarray) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        tokens = prepared.num_patches // self.spatial_merge_unit
        reverse = prepared.reverse_indices
        # Host output -> the pre-ops' device, back in the original order, then
        # onto the model's device and dtype (the language model may sit on an
        # accelerator while the graph runs on the NPU).
        embeds = torch.from_numpy(out[:tokens]).to(device=reverse.device)[reverse]
        embeds = embeds.to(device=self.device, dtype=self.dtype)
        return embeds, time.perf_counter() - start

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        grid_thw: list[list[int]] | torch.Tensor | None,
        *,
        encoder_metadata: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if grid_thw is None:
            raise ValueError("The NPU vision tower needs grid_thw")
        grids = [tuple(int(v) for v in g) for g in (
            grid_thw.tolist() if isinstance(grid_thw, torch.Tensor) else grid_thw
        )]
        counts = [t * h * w for t, h, w in grids]
        if sum(counts) != x.shape[0]:
            raise ValueError(
                f"pixel values have {x.shape[0]} patches but grid_thw {grids} needs {sum(counts)}"
            )
        jobs = self._plan_jobs(x, grids)
        if self.async_pipeline and len(jobs) > 1:
            outputs, timings = self._run_pipelined(jobs)
        else:
            outputs, timings = self._run_sequential(jobs)
        self.last_timings = timings
        self.forward_calls += 1
        if self.timing:
            for i, item in enumerate(timings):
                logger.info(
                    "vision_npu call=%d item=%d/%d grid=%s patches=%d spec=%d pad=%.1f%% "
                    "pre=%.2fms device=%.2fms post=%.2fms",
                    self.forward_calls, i + 1, len(timings),
                    item.grid_thw, item.num_patches, item.specialization,
                    100.0 * (item.specialization - item.num_patches) / item.specialization,
                    item.pre_s * 1e3, item.device_s * 1e3, item.post_s * 1e3,
                )
        return torch.cat(outputs) if outputs else x.new_empty((0, self.out_hidden_size))

    def _plan_jobs(
        self, x: torch.Tensor, grids: Sequence[tuple[int, int, int]]
    ) -> list[tuple[int, torch.Tensor, tuple[int, int, int], int]]:
        """One job per device run: (index, pixel rows, grid, specialization).

        Every specialization is chosen first, so an item that cannot fit fails
        the whole call before any work, naming its size and the sizes there
        are. A video larger than the largest specialization runs in pieces of
        whole temporal groups: every block attends within one temporal group
        (window blocks within windows of a frame, full blocks within the
        frame), and the rows of a video are in temporal order, so the pieces'
        outputs, concatenated, are the whole video's output, exactly.
        (The multimodal processor refuses such items per request; see
        ``vllm.vision_npu.processing``.)
        """
        largest = self.bundle.sizes[-1]
        jobs: list[tuple[int, torch.Tensor, tuple[int, int, int], int]] = []
        offset = 0
        for i, (t, h, w) in enumerate(grids):
            what = f"{'Video' if t > 1 else 'Image'} {i} (grid t,h,w={(t, h, w)})"
            frame = h * w
            if t * frame <= largest:
                groups = [t]
            else:
                # A single frame must fit; refuse with the bundle's message.
                self.bundle.select(frame, f"{what}: one frame" if t > 1 else what)
                per = largest // frame
                groups = [per] * (t // per) + ([t % per] if t % per else [])
            for groups_t in groups:
                n = groups_t * frame
                spec = self.bundle.select(n, what).num_patches
                jobs.append((len(jobs), x[offset : offset + n], (groups_t, h, w), spec))
                offset += n
        return jobs

    def _run_sequential(
        self, jobs: Sequence[tuple[int, torch.Tensor, tuple[int, int, int], int]]
    ) -> tuple[list[torch.Tensor], list[VisionNPUItemTiming]]:
        outputs, timings = [], []
        for job in jobs:
            embeds, timing = self._device_and_post(self._pre_ops(*job))
            outputs.append(embeds)
            timings.append(timing)
        return outputs, timings

    def _device_and_post(
        self, prepared: _Prepared
    ) -> tuple[torch.Tensor, VisionNPUItemTiming]:
        out, device_start, device_s = self._device_run(prepared)
        embeds, post_s = self._post_ops(prepared, out)
        return embeds, _timing(prepared, device_start, device_s, post_s)

    def _run_pipelined(
        self, jobs: Sequence[tuple[int, torch.Tensor, tuple[int, int, int], int]]
    ) -> tuple[list[torch.Tensor], list[VisionNPUItemTiming]]:
        """Pre-ops of item i+1 on a worker thread while item i is on the device
        (the backends release the GIL while they run)."""
        if self._pre_executor is None:
            self._pre_executor = ThreadPoolExecutor(1, thread_name_prefix="vision_npu_pre")
        outputs, timings = [], []
        pending: Future[_Prepared] = self._pre_executor.submit(self._pre_ops, *jobs[0])
        for i in range(len(jobs)):
            prepared = pending.result()
            if i + 1 < len(jobs):
                pending = self._pre_executor.submit(self._pre_ops, *jobs[i + 1])
            embeds, timing = self._device_and_post(prepared)
            outputs.append(embeds)
            timings.append(timing)
        return outputs, timings


def qwen2_5_vision_pre_ops(
    tower: Qwen2_5_VisionTransformer,
    x: torch.Tensor,
    grid_thw: tuple[int, int, int],
    specialization: int,
) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """CPU pre-ops of one item for a ``specialization``-patch device graph.

    Vectorised torch throughout; the rotary tables and window index come from
    the stock tower's own (cached) ``get_rope_by_thw`` so that both towers see
    identical positions. Returns the device-graph feeds (see
    ``qwen2_5_vl_graph``) and the reverse window index for the post-ops.
    """
    t, h, w = grid_thw
    n = t * h * w
    unit = tower.spatial_merge_unit
    # Everything is computed where the tower's weights are and every tensor is
    # created there explicitly; only the feeds go to the host.
    device = tower.device
    pixels = tower.input_norm(x.to(device=device), tower.dtype)
    with torch.device(device):  # the stock helpers allocate on the default device
        cos, sin, window_index, cu_window, _ = tower.get_rope_by_thw(t, h, w)
    window_index = window_index.to(device)
    # Window order first, on the (narrower) pixel rows, then the patch
    # embedding -- a Conv3d whose kernel equals its stride, i.e. one GEMM --
    # straight into the padded device buffer.
    pixels = pixels.reshape(n // unit, unit, -1)[window_index].reshape(n, -1)
    weight = tower.patch_embed.proj.weight
    weight = weight.reshape(weight.shape[0], -1)
    hidden = torch.zeros((specialization, weight.shape[0]), dtype=torch.float32, device=device)
    if pixels.dtype == torch.float32 and weight.dtype == torch.float32:
        torch.mm(pixels, weight.t(), out=hidden[:n])
    else:
        hidden[:n] = torch.mm(pixels, weight.t())

    # Full-attention blocks: token i may attend to token j iff they are in the
    # same frame; padding gets PAD_SEGMENT.
    positions = torch.arange(n, dtype=torch.int64, device=device)
    full_segments = positions // (h * w)
    pad = specialization - n
    feeds = {
        "hidden_states": hidden.cpu().numpy(),
        "rotary_cos": _padded(cos, pad, 0.0, torch.float32, (cos.shape[-1],)),
        "rotary_sin": _padded(sin, pad, 0.0, torch.float32, (sin.shape[-1],)),
        "full_attn_segments": _padded(full_segments, pad, PAD_SEGMENT, torch.float32, ()),
        **_window_layout(tower, cu_window, positions, specialization),
    }
    reverse = torch.empty_like(window_index)
    reverse[window_index] = torch.arange(
        window_index.numel(), dtype=window_index.dtype, device=window_index.device
    )
    return feeds, reverse


def _window_layout(
    tower: Qwen2_5_VisionTransformer,
    cu_window: torch.Tensor,
    positions: torch.Tensor,
    specialization: int,
) -> dict[str, np.ndarray]:
    """Window blocks: pack the windows (consecutive in window order, ending at
    ``cu_window``) in order into chunks of one window's worth of slots, a
    window never straddling two chunks (see ``qwen2_5_vl_graph``)."""
    device = positions.device
    side = tower.window_size // tower.spatial_merge_size // tower.patch_size
    per_window = side * side * tower.spatial_merge_unit
    chunks = window_chunks(specialization, per_window)
    ends = [int(e) for e in cu_window.tolist()]
    starts, slot_starts = [], []
    chunk = fill = previous = 0
    for end in ends:  # one iteration per window
        length = end - previous
        if fill + length > per_window:
            chunk, fill = chunk + 1, 0
        starts.append(previous)
        slot_starts.append(chunk * per_window + fill)
        fill, previous = fill + length, end
    if chunk >= chunks or previous != positions.numel():
        raise VisionNPUError(
            f"window layout of {positions.numel()} patches needs {chunk + 1} chunks, "
            f"the {specialization}-patch graph has {chunks}"
        )
    window = torch.searchsorted(
        torch.tensor(ends, dtype=torch.int64, device=device), positions, right=True
    )
    offset = torch.tensor(slot_starts, dtype=torch.int64, device=device) - torch.tensor(
        starts, dtype=torch.int64, device=device
    )
    slot = positions + offset[window]
    n_slots = chunks * per_window
    slots = torch.full((n_slots,), float(specialization), dtype=torch.float32, device=device)
    slots[slot] = positions.to(torch.float32)
    slot_segments = torch.full((n_slots,), float(PAD_SEGMENT), dtype=torch.float32,
                               device=device)
    slot_segments[slot] = window.to(torch.float32)
    token_slots = torch.full((specialization,), float(n_slots), dtype=torch.float32,
                             device=device)
    token_slots[: positions.numel()] = slot.to(torch.float32)
    return {
        "window_slots": slots.cpu().numpy(),
        "window_slot_segments": slot_segments.cpu().numpy(),
        "window_positions": token_slots.cpu().numpy(),
    }


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _timing(
    prepared: _Prepared, device_start: float, device_s: float, post_s: float
) -> VisionNPUItemTiming:
    return VisionNPUItemTiming(
        grid_thw=prepared.grid_thw,
        num_patches=prepared.num_patches,
        specialization=prepared.specialization,
        pre_s=prepared.pre_s,
        device_s=device_s,
        post_s=post_s,
        pre_start=prepared.pre_start,
        device_start=device_start,
    )


def _padded(
    t: torch.Tensor, pad: int, value: float, dtype: torch.dtype, row_shape: tuple[int, ...]
) -> np.ndarray:
    out = torch.full((t.shape[0] + pad, *row_shape), value, dtype=dtype, device=t.device)
    out[: t.shape[0]] = t.reshape(t.shape[0], *row_shape)
    return out.cpu().numpy()


def build_qwen2_5_vision_transformer(
    vision_config: Qwen2_5_VLVisionConfig,
    norm_eps: float = 1e-6,
    quant_config: QuantizationConfig | None = None,
    input_norm: nn.Module | None = None,
    prefix: str = "",
) -> nn.Module:
    """The stock tower, or the NPU tower when ``VLLM_VISION_NPU_BACKEND`` is set."""
    backend = (envs.VLLM_VISION_NPU_BACKEND or "").strip()
    kwargs: dict[str, Any] = dict(
        vision_config=vision_config,
        norm_eps=norm_eps,
        quant_config=quant_config,
        input_norm=input_norm,
        prefix=prefix,
    )
    if not backend:
        return Qwen2_5_VisionTransformer(**kwargs)
    return Qwen2_5_VisionTransformerNPU(**kwargs, backend=backend)
