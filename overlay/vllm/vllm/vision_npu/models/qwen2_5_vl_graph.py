# SPDX-License-Identifier: Apache-2.0
"""The Qwen2.5-VL vision *device graph* as ONNX.

The device graph is the part of the vision tower that runs on the NPU: every
transformer block (window and full attention) and the patch merger. It has a
fixed number of patches ``N`` per compiled specialization. The CPU pre-ops
(patch embedding, rotary tables, window index, attention layout) and post-ops
(reverse window index, trimming) live in ``vllm.vision_npu.models.qwen2_5_vl``.

Attention does only the work the model needs. Full-attention blocks attend
within a frame: one dense ``[N, N]`` attention masked by frame. Window blocks
attend within windows of at most ``W`` tokens (``W`` = 64 for Qwen2.5-VL's
112 px windows): the windows, in window order, are packed into ``K`` chunks of
``W`` slots (a window never straddles two chunks; several small windows may
share one), and attention runs per chunk, ``[K, W, W]``, masked by window.
Any two consecutive chunks hold more than ``W`` tokens, so
``K = 2 * ceil(N / W) - 1`` chunks hold any item of ``N`` patches
(``window_chunks``). The dense ``[N, N]`` window attention this replaces did
``N / (K * W)`` times the work (about ``N / 128``) for the same result.

Graph interface (opset 17, all shapes fixed; ``C`` = vision hidden size,
``D`` = head dim, ``O`` = ``out_hidden_size``, ``U`` = spatial merge unit,
``KW`` = ``K * W`` window slots):

======================== ========= ============ ==============================
name                     dtype     shape        meaning
======================== ========= ============ ==============================
``hidden_states``        float32   [N, C]       patch embeddings, window order
``rotary_cos``           float32   [N, D/2]     rotary cos table, window order
``rotary_sin``           float32   [N, D/2]     rotary sin table, window order
``full_attn_segments``   float32   [N]          token i may attend to token j
                                                in full-attention blocks iff
                                                the segment ids (frames) are
                                                equal
``window_slots``         float32   [KW]         the token in each window slot,
                                                ``N`` for an empty slot
``window_slot_segments`` float32   [KW]         the window of each slot,
                                                ``-1`` for an empty slot
``window_positions``     float32   [N]          the slot of each token, ``KW``
                                                for a padding token
``vision_embeds``        float32   [N/U, O]     output, window order
======================== ========= ============ ==============================

Every tensor is float32 (``DEVICE_DTYPES``): the FlexMLRT runtime of the
bridge takes float32 only (``flexmlrt_bridge.build_info()["flexmlrt_dtypes"]``),
and the export refuses a manifest with any other dtype. Segment ids are small
non-negative integers (frame and window numbers, fewer than ``N``) or ``-1``,
all exact in float32 up to 2**24, and ``Equal`` compares them exactly; token
and slot indices are cast to int64 inside the graph for ``Gather``.

Padding tokens get frame ``PAD_SEGMENT`` (``-1``), so no real token can attend
to them in full blocks; they occupy no window slot (their window output is
zero) and empty slots read a zero row and are masked as ``-1``, so they only
ever meet each other. Masked scores get ``MASKED`` (a large negative finite
number, so a fully masked row would stay finite) before ``Softmax``: masked
keys get exactly zero weight. Every other op is per-token (norms, MLPs) or per
merge group of ``U`` consecutive tokens (the merger), and padding starts on a
group boundary, so padding cannot leak into real tokens.

Initializers are stored as external data in one shared file (``weights.bin``)
that all specializations of a bundle reference, each tensor aligned to 4 KiB
so that runtimes can memory-map it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
INPUT_NAMES = (
    "hidden_states",
    "rotary_cos",
    "rotary_sin",
    "full_attn_segments",
    "window_slots",
    "window_slot_segments",
    "window_positions",
)
OUTPUT_NAMES = ("vision_embeds",)
# The dtypes the device graph may use: what the bridge's FlexMLRT runtime
# takes (flexmlrt_bridge.build_info()["flexmlrt_dtypes"]; a test asserts it).
DEVICE_DTYPES = ("float32",)
PAD_SEGMENT = -1
MASKED = -1.0e9
_ALIGN = 4096


def window_tokens(config: Qwen2_5_VisionGraphConfig) -> int:
    """Tokens (patches) in one full attention window."""
    side = config.window_size // config.spatial_merge_size // config.patch_size
    return side * side * config.spatial_merge_unit


def window_chunks(num_patches: int, tokens_per_window: int) -> int:
    """Chunks of ``tokens_per_window`` slots that hold the windows of any item
    of ``num_patches`` patches packed in order (see the module docstring)."""
    return max(1, 2 * -(-num_patches // tokens_per_window) - 1)


def attention_bytes_per_block(num_patches: int, config: Qwen2_5_VisionGraphConfig,
                              windowed: bool) -> int:
    """float32 bytes of one [heads, queries, keys] score tensor of a block."""
    if not windowed:
        return 4 * config.num_heads * num_patches * num_patches
    w = window_tokens(config)
    return 4 * config.num_heads * window_chunks(num_patches, w) * w * w


@dataclass(frozen=True)
class Qwen2_5_VisionGraphConfig:
    """The vision config fields that determine the device graph."""

    hidden_size: int
    num_heads: int
    intermediate_size: int
    depth: int
    out_hidden_size: int
    spatial_merge_size: int
    fullatt_block_indexes: tuple[int, ...]
    hidden_act: str
    norm_eps: float
    # Pre-op parameters: not part of the graph but part of the model identity.
    patch_size: int
    temporal_patch_size: int
    in_channels: int
    window_size: int

    @classmethod
    def from_vision_config(cls, vision_config: Any, norm_eps: float) -> Qwen2_5_VisionGraphConfig:
        return cls(
            hidden_size=int(vision_config.hidden_size),
            num_heads=int(vision_config.num_heads),
            intermediate_size=int(vision_config.intermediate_size),
            depth=int(vision_config.depth),
            out_hidden_size=int(vision_config.out_hidden_size),
            spatial_merge_size=int(vision_config.spatial_merge_size),
            fullatt_block_indexes=tuple(int(i) for i in vision_config.fullatt_block_indexes),
            hidden_act=str(vision_config.hidden_act),
            norm_eps=float(norm_eps),
            patch_size=int(vision_config.patch_size),
            temporal_patch_size=int(vision_config.temporal_patch_size),
            in_channels=int(vision_config.in_channels),
            window_size=int(vision_config.window_size),
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def spatial_merge_unit(self) -> int:
        return self.spatial_merge_size**2

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["fullatt_block_indexes"] = list(self.fullatt_block_indexes)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Qwen2_5_VisionGraphConfig:
        data = dict(data)
        data["fullatt_block_indexes"] = tuple(data["fullatt_block_indexes"])
        return cls(**data)

    def key(self) -> str:
        """Short stable digest naming this configuration in the cache."""
        items = sorted(self.to_json().items())
        return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def graph_weight_names(config: Qwen2_5_VisionGraphConfig) -> list[str]:
    """Device-graph weights in vLLM naming, in canonical order."""
    names: list[str] = []
    for i in range(config.depth):
        p = f"blocks.{i}"
        names += [
            f"{p}.norm1.weight",
            f"{p}.attn.qkv.weight",
            f"{p}.attn.qkv.bias",
            f"{p}.attn.proj.weight",
            f"{p}.attn.proj.bias",
            f"{p}.norm2.weight",
            f"{p}.mlp.gate_up_proj.weight",
            f"{p}.mlp.gate_up_proj.bias",
            f"{p}.mlp.down_proj.weight",
            f"{p}.mlp.down_proj.bias",
        ]
    names += [
        "merger.ln_q.weight",
        "merger.mlp.0.weight",
        "merger.mlp.0.bias",
        "merger.mlp.2.weight",
        "merger.mlp.2.bias",
    ]
    return names


def weights_fingerprint(
    config: Qwen2_5_VisionGraphConfig, weights: Mapping[str, np.ndarray]
) -> str:
    """Cheap digest of the device-graph weights: names, shapes and a strided
    sample of up to 4096 float32 values per tensor. Detects a bundle exported
    from a different checkpoint without hashing gigabytes at start-up."""
    digest = hashlib.sha256()
    for name in graph_weight_names(config):
        arr = np.asarray(weights[name], dtype=np.float32).reshape(-1)
        stride = max(1, arr.size // 4096)
        digest.update(name.encode())
        digest.update(repr(tuple(np.shape(weights[name]))).encode())
        digest.update(np.ascontiguousarray(arr[::stride]).tobytes())
    return digest.hexdigest()[:32]


def check_graph_weights(
    config: Qwen2_5_VisionGraphConfig, weights: Mapping[str, np.ndarray]
) -> None:
    c, i, o, u = (
        config.hidden_size,
        config.intermediate_size,
        config.out_hidden_size,
        config.spatial_merge_unit,
    )
    expected: dict[str, tuple[int, ...]] = {}
    for b in range(config.depth):
        p = f"blocks.{b}"
        expected.update(
            {
                f"{p}.norm1.weight": (c,),
                f"{p}.attn.qkv.weight": (3 * c, c),
                f"{p}.attn.qkv.bias": (3 * c,),
                f"{p}.attn.proj.weight": (c, c),
                f"{p}.attn.proj.bias": (c,),
                f"{p}.norm2.weight": (c,),
                f"{p}.mlp.gate_up_proj.weight": (2 * i, c),
                f"{p}.mlp.gate_up_proj.bias": (2 * i,),
                f"{p}.mlp.down_proj.weight": (c, i),
                f"{p}.mlp.down_proj.bias": (c,),
            }
        )
    expected.update(
        {
            "merger.ln_q.weight": (c,),
            "merger.mlp.0.weight": (u * c, u * c),
            "merger.mlp.0.bias": (u * c,),
            "merger.mlp.2.weight": (o, u * c),
            "merger.mlp.2.bias": (o,),
        }
    )
    missing = [n for n in expected if n not in weights]
    if missing:
        raise ValueError(f"Vision weights missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, shape in expected.items():
        if tuple(np.shape(weights[name])) != shape:
            raise ValueError(
                f"Vision weight {name} has shape {tuple(np.shape(weights[name]))}, "
                f"expected {shape} for this vision config"
            )


def write_shared_weights(
    config: Qwen2_5_VisionGraphConfig,
    weights: Mapping[str, np.ndarray],
    path: Path,
) -> dict[str, tuple[int, int]]:
    """Write the graph initializers (linear weights pre-transposed to
    ``[in, out]``) to ``path``; returns ``initializer -> (offset, length)``."""
    layout: dict[str, tuple[int, int]] = {}
    with open(path, "wb") as f:
        for name, arr in _initializers(config, weights):
            offset = f.tell()
            pad = (-offset) % _ALIGN
            if pad:
                f.write(b"\0" * pad)
                offset += pad
            data = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
            f.write(data)
            layout[name] = (offset, len(data))
    return layout


def _initializers(
    config: Qwen2_5_VisionGraphConfig, weights: Mapping[str, np.ndarray]
) -> Iterable[tuple[str, np.ndarray]]:
    for name in graph_weight_names(config):
        arr = np.asarray(weights[name], dtype=np.float32)
        if arr.ndim == 2:
            # nn.Linear stores [out, in]; MatMul wants [in, out].
            yield name.removesuffix(".weight") + ".weight_t", arr.T
        else:
            yield name, arr


def initializer_shapes(config: Qwen2_5_VisionGraphConfig) -> dict[str, tuple[int, ...]]:
    c, i, o, u = (
        config.hidden_size,
        config.intermediate_size,
        config.out_hidden_size,
        config.spatial_merge_unit,
    )
    shapes: dict[str, tuple[int, ...]] = {}
    for b in range(config.depth):
        p = f"blocks.{b}"
        shapes.update(
            {
                f"{p}.norm1.weight": (c,),
                f"{p}.attn.qkv.weight_t": (c, 3 * c),
                f"{p}.attn.qkv.bias": (3 * c,),
                f"{p}.attn.proj.weight_t": (c, c),
                f"{p}.attn.proj.bias": (c,),
                f"{p}.norm2.weight": (c,),
                f"{p}.mlp.gate_up_proj.weight_t": (c, 2 * i),
                f"{p}.mlp.gate_up_proj.bias": (2 * i,),
                f"{p}.mlp.down_proj.weight_t": (i, c),
                f"{p}.mlp.down_proj.bias": (c,),
            }
        )
    shapes.update(
        {
            "merger.ln_q.weight": (c,),
            "merger.mlp.0.weight_t": (u * c, u * c),
            "merger.mlp.0.bias": (u * c,),
            "merger.mlp.2.weight_t": (u * c, o),
            "merger.mlp.2.bias": (o,),
        }
    )
    return shapes


class _GraphBuilder:
    def __init__(self) -> None:
        from onnx import TensorProto, helper

        self.helper = helper
        self.TensorProto = TensorProto
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._counter = 0

    def fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def op(self, op_type: str, inputs: list[str], hint: str, n_out: int = 1, **attrs: Any):
        outs = [self.fresh(hint) for _ in range(n_out)]
        self.nodes.append(
            self.helper.make_node(op_type, inputs, outs, name=self.fresh(op_type), **attrs)
        )
        return outs[0] if n_out == 1 else outs

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.helper.make_tensor(
            name, _onnx_dtype(self.TensorProto, value.dtype), value.shape,
            value.reshape(-1).tolist(),
        ))
        return name


def _onnx_dtype(tp: Any, dtype: np.dtype) -> int:
    return {
        np.dtype(np.float32): tp.FLOAT,
        np.dtype(np.int64): tp.INT64,
    }[np.dtype(dtype)]


def build_device_graph(
    config: Qwen2_5_VisionGraphConfig,
    num_patches: int,
    weights_location: str,
    weights_layout: Mapping[str, tuple[int, int]],
) -> Any:
    """Build the device graph for ``num_patches`` patches as an ``onnx.ModelProto``
    whose initializers live in ``weights_location`` (relative to the .onnx)."""
    from onnx import TensorProto, helper

    if config.hidden_act != "silu":
        raise NotImplementedError(
            f"Device graph supports hidden_act='silu', got {config.hidden_act!r}"
        )
    n, c, h, d = num_patches, config.hidden_size, config.num_heads, config.head_dim
    u, o = config.spatial_merge_unit, config.out_hidden_size
    if n % u:
        raise ValueError(f"num_patches={n} must be a multiple of the merge unit {u}")
    if d % 2:
        raise ValueError(f"head dim {d} must be even for rotary embeddings")
    g = _GraphBuilder()

    # Weights (external data in the shared file).
    for name, shape in initializer_shapes(config).items():
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = TensorProto.FLOAT
        tensor.dims.extend(shape)
        offset, length = weights_layout[name]
        for key, value in (
            ("location", weights_location),
            ("offset", str(offset)),
            ("length", str(length)),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = TensorProto.EXTERNAL
        g.initializers.append(tensor)

    w = window_tokens(config)
    k_chunks = window_chunks(n, w)
    slots = k_chunks * w
    eps = g.const("rms_eps", np.array(config.norm_eps, dtype=np.float32))
    scale = g.const("attn_scale", np.array(d**-0.5, dtype=np.float32))
    zero = g.const("zero", np.array(0.0, dtype=np.float32))
    masked = g.const("masked", np.array(MASKED, dtype=np.float32))
    half = g.const("half", np.array(0.5, dtype=np.float32))
    one = g.const("one", np.array(1.0, dtype=np.float32))
    inv_sqrt2 = g.const("inv_sqrt2", np.array(2**-0.5, dtype=np.float32))
    shape_qkv = g.const("shape_qkv", np.array([n, 3, h, d], dtype=np.int64))
    shape_nc = g.const("shape_nc", np.array([n, c], dtype=np.int64))
    shape_chunks = g.const("shape_chunks", np.array([k_chunks, w, h, d], dtype=np.int64))
    shape_slots_c = g.const("shape_slots_c", np.array([slots, c], dtype=np.int64))
    shape_kw = g.const("shape_kw", np.array([k_chunks, w], dtype=np.int64))
    shape_merge = g.const("shape_merge", np.array([n // u, u * c], dtype=np.int64))
    zero_hd = g.const("zero_row_hd", np.zeros((1, h, d), dtype=np.float32))
    zero_c = g.const("zero_row_c", np.zeros((1, c), dtype=np.float32))
    split_half = g.const("split_half", np.array([d // 2, d // 2], dtype=np.int64))
    split_mlp = g.const(
        "split_mlp",
        np.array([config.intermediate_size, config.intermediate_size], dtype=np.int64),
    )

    def axes(*values: int) -> str:
        return g.const(g.fresh("axes"), np.array(values, dtype=np.int64))

    def rms_norm(x: str, weight: str) -> str:
        sq = g.op("Mul", [x, x], "sq")
        var = g.op("ReduceMean", [sq], "var", axes=[-1], keepdims=1)
        denom = g.op("Sqrt", [g.op("Add", [var, eps], "var_eps")], "rms")
        return g.op("Mul", [g.op("Div", [x, denom], "normed"), weight], "rms_out")

    def linear(x: str, prefix: str) -> str:
        y = g.op("MatMul", [x, f"{prefix}.weight_t"], "mm")
        return g.op("Add", [y, f"{prefix}.bias"], "lin")

    def mask_bias(segments: str, leading: tuple[int, ...]) -> str:
        """0 where the segment ids of query and key are equal, MASKED elsewhere;
        ``segments`` is [..., L], the result [..., 1, L, L] (a heads axis)."""
        rows = g.op("Unsqueeze", [segments, axes(-1)], "seg_r")
        cols = g.op("Unsqueeze", [segments, axes(-2)], "seg_c")
        same = g.op("Equal", [rows, cols], "same_seg")
        bias = g.op("Where", [same, zero, masked], "mask_bias")
        return g.op("Unsqueeze", [bias, axes(len(leading))], "mask_bias_h")

    def attend(q: str, k: str, v: str, bias: str) -> str:
        """Softmax(q k^T * scale + bias) v over the last two axes."""
        scores = g.op("Mul", [g.op("MatMul", [q, k], "qk"), scale], "scores")
        probs = g.op("Softmax", [g.op("Add", [scores, bias], "biased")], "probs", axis=-1)
        return g.op("MatMul", [probs, v], "ctx")

    # Shared per-graph tensors: masks, window gathers, rotary tables.
    full_bias = mask_bias("full_attn_segments", ())  # [1, N, N]
    slot_segments = g.op("Reshape", ["window_slot_segments", shape_kw], "slot_seg")
    window_bias = mask_bias(slot_segments, (k_chunks,))  # [K, 1, W, W]
    slot_index = g.op("Cast", ["window_slots"], "slot_index", to=TensorProto.INT64)
    position_index = g.op("Cast", ["window_positions"], "position_index", to=TensorProto.INT64)
    ax1 = g.const("axis1", np.array([1], dtype=np.int64))
    cos = g.op("Unsqueeze", [g.op("Concat", ["rotary_cos", "rotary_cos"], "cos2", axis=-1), ax1], "cos")
    sin = g.op("Unsqueeze", [g.op("Concat", ["rotary_sin", "rotary_sin"], "sin2", axis=-1), ax1], "sin")

    def rotary(x: str) -> str:  # x: [N, H, D], neox style
        x1, x2 = g.op("Split", [x, split_half], "rot_half", n_out=2, axis=-1)
        rotated = g.op("Concat", [g.op("Neg", [x2], "neg_x2"), x1], "rot", axis=-1)
        return g.op(
            "Add",
            [g.op("Mul", [x, cos], "x_cos"), g.op("Mul", [rotated, sin], "rot_sin")],
            "x_rope",
        )

    def to_chunks(t: str, perm: list[int]) -> str:
        """[N, H, D] tokens -> window chunks [K, W, H, D], permuted."""
        padded = g.op("Concat", [t, zero_hd], "with_zero_row", axis=0)  # row N: empty slot
        gathered = g.op("Gather", [padded, slot_index], "slots", axis=0)
        return g.op("Transpose", [g.op("Reshape", [gathered, shape_chunks], "chunks")],
                    "chunks_t", perm=perm)

    def full_attention(q: str, k: str, v: str) -> str:
        q = g.op("Transpose", [q], "q_t", perm=[1, 0, 2])  # [H, N, D]
        k = g.op("Transpose", [k], "k_t", perm=[1, 2, 0])  # [H, D, N]
        v = g.op("Transpose", [v], "v_t", perm=[1, 0, 2])  # [H, N, D]
        ctx = attend(q, k, v, full_bias)
        ctx = g.op("Transpose", [ctx], "ctx_t", perm=[1, 0, 2])  # [N, H, D]
        return g.op("Reshape", [ctx, shape_nc], "ctx_nc")

    def window_attention(q: str, k: str, v: str) -> str:
        q = to_chunks(q, [0, 2, 1, 3])  # [K, H, W, D]
        k = to_chunks(k, [0, 2, 3, 1])  # [K, H, D, W]
        v = to_chunks(v, [0, 2, 1, 3])  # [K, H, W, D]
        ctx = attend(q, k, v, window_bias)  # [K, H, W, D]
        ctx = g.op("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3])  # [K, W, H, D]
        ctx = g.op("Reshape", [ctx, shape_slots_c], "ctx_slots")
        ctx = g.op("Concat", [ctx, zero_c], "ctx_zero_row", axis=0)  # row KW: padding tokens
        return g.op("Gather", [ctx, position_index], "ctx_tokens", axis=0)  # [N, C]

    x = "hidden_states"
    full_blocks = set(config.fullatt_block_indexes)
    for b in range(config.depth):
        p = f"blocks.{b}"
        # Attention.
        qkv = linear(rms_norm(x, f"{p}.norm1.weight"), f"{p}.attn.qkv")
        qkv = g.op("Reshape", [qkv, shape_qkv], "qkv4")
        q, k, v = g.op("Split", [qkv], "qkv_split", n_out=3, axis=1)
        q, k, v = (g.op("Squeeze", [t, ax1], "sq") for t in (q, k, v))  # [N, H, D]
        q, k = rotary(q), rotary(k)
        attention = full_attention if b in full_blocks else window_attention
        x = g.op("Add", [x, linear(attention(q, k, v), f"{p}.attn.proj")], "resid1")
        # MLP (SiLU and mul).
        gate_up = linear(rms_norm(x, f"{p}.norm2.weight"), f"{p}.mlp.gate_up_proj")
        gate, up = g.op("Split", [gate_up, split_mlp], "gu_split", n_out=2, axis=-1)
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], "sig")], "silu")
        x = g.op("Add", [x, linear(g.op("Mul", [act, up], "act_up"), f"{p}.mlp.down_proj")], "resid2")

    # Patch merger: RMSNorm, group U consecutive tokens, MLP with exact GELU.
    y = g.op("Reshape", [rms_norm(x, "merger.ln_q.weight"), shape_merge], "merge")
    y = linear(y, "merger.mlp.0")
    erf = g.op("Erf", [g.op("Mul", [y, inv_sqrt2], "gelu_in")], "erf")
    y = g.op("Mul", [g.op("Mul", [y, half], "half_y"), g.op("Add", [erf, one], "erf1")], "gelu")
    y = linear(y, "merger.mlp.2")
    g.nodes.append(helper.make_node("Identity", [y], ["vision_embeds"], name="output"))

    inputs = [
        helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [n, c]),
        helper.make_tensor_value_info("rotary_cos", TensorProto.FLOAT, [n, d // 2]),
        helper.make_tensor_value_info("rotary_sin", TensorProto.FLOAT, [n, d // 2]),
        helper.make_tensor_value_info("full_attn_segments", TensorProto.FLOAT, [n]),
        helper.make_tensor_value_info("window_slots", TensorProto.FLOAT, [slots]),
        helper.make_tensor_value_info("window_slot_segments", TensorProto.FLOAT, [slots]),
        helper.make_tensor_value_info("window_positions", TensorProto.FLOAT, [n]),
    ]
    outputs = [helper.make_tensor_value_info("vision_embeds", TensorProto.FLOAT, [n // u, o])]
    graph = helper.make_graph(
        g.nodes, f"qwen2_5_vl_vision_n{n}", inputs, outputs, initializer=g.initializers
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="vllm.vision_npu",
    )
    model.ir_version = 8  # opset 17
    return model
