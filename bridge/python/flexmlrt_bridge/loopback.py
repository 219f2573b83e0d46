"""Writer for loopback bundles, the self-describing format the loopback runtime reads.

The loopback runtime stands in for the NPU: it is not a mock of FlexMLRT, it
is a second, tiny runtime behind the same interface, so that every mechanism
of the bridge runs for real. The format is documented byte by byte at the top
of ``bridge/src/loopback_runtime.cpp``; this module is its only writer.

Three ops:

* ``"affine"``: ``y = x @ w + b`` over the last dimension, float32. Input
  ``[..., K]``, weight ``[K, N]``, bias ``[N]``, output ``[..., N]``.
* ``"noop"``: the runtime does nothing but the optional delay; the outputs are
  left untouched. Any number of tensors, any shapes and dtypes. Used to
  measure the bridge's own cost.
* ``"rows_affine"``: stands in for a graph with several named inputs and one
  output (such as the vLLM vision tower's device graph), all float32, with
  their real shapes. Input 0 (``M*K`` elements) is viewed as ``M`` rows of
  ``K`` (``K`` = the weight's row count), the output (``M*N`` elements) as
  ``M`` rows of ``N``, every further input (``L`` elements) as ``M`` row
  chunks (element ``e`` in row ``e * M // L``); ``y[m] = x0[m] @ w + b``, then ``y[m][0]`` gains the sum
  of chunk ``m`` of every further input. See :func:`rows_affine_reference`.

One input and one output: ``input_shape=`` (and ``output_shape=`` for noop),
named ``input_name`` / ``output_name``. Several, or names and dtypes of your
own: ``inputs=[(name, shape, dtype), ...]`` and ``outputs=[...]`` (``dtype``
may be left out for float32; objects with ``.name``, ``.shape`` and ``.dtype``,
such as :class:`flexmlrt_bridge.TensorSpec`, work too).

``delay_us`` makes every run sleep that long inside the runtime (with the GIL
released), so tests can observe concurrency.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"FXBLOOP\0"
FORMAT_VERSION = 1
DEFAULT_INPUT_NAME = "compute_graph.ifm_ddr"
DEFAULT_OUTPUT_NAME = "compute_graph.ofm_ddr"
MAX_TENSORS = 16

_OPS = {"affine": 0, "noop": 1, "rows_affine": 2}
_DTYPES = {"float32": 1, "float16": 2, "int8": 3, "uint8": 4, "int32": 5, "int64": 6}

Spec = tuple[str, tuple[int, ...], str]


def _dtype_name(dtype: Any, what: str) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in _DTYPES:
        raise ValueError(f"{what}: dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    return name


def _as_spec(item: Any, role: str, index: int) -> Spec:
    """``(name, shape[, dtype])`` or an object with ``.name``, ``.shape`` (and ``.dtype``)."""
    if hasattr(item, "name") and hasattr(item, "shape"):
        name, shape, dtype = item.name, item.shape, getattr(item, "dtype", "float32")
    else:
        parts = tuple(item)
        if len(parts) not in (2, 3):
            raise ValueError(f"{role} {index}: expected (name, shape[, dtype]), got {item!r}")
        name, shape, dtype = (*parts, "float32") if len(parts) == 2 else parts
    return str(name), tuple(int(d) for d in shape), _dtype_name(dtype, f"{role} {name!r}")


def _specs(items: Iterable[Any], role: str) -> list[Spec]:
    specs = [_as_spec(item, role, i) for i, item in enumerate(items)]
    if not 1 <= len(specs) <= MAX_TENSORS:
        raise ValueError(f"{len(specs)} {role}s: a loopback bundle holds 1..{MAX_TENSORS}")
    return specs


def _numel(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _spec_bytes(spec: Spec) -> bytes:
    name, dims, dtype = spec
    raw = name.encode()
    if any(d < 1 for d in dims):
        raise ValueError(f"shape {dims} of {name!r} has a dimension < 1")
    return (
        struct.pack("<I", len(raw))
        + raw
        + struct.pack("<II", _DTYPES[dtype], len(dims))
        + struct.pack(f"<{len(dims)}q", *dims)
    )


def encode_loopback_bundle(
    *,
    input_shape: Sequence[int] | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    output_shape: Sequence[int] | None = None,
    op: str = "affine",
    dtype: str = "float32",
    input_name: str = DEFAULT_INPUT_NAME,
    output_name: str = DEFAULT_OUTPUT_NAME,
    delay_us: int = 0,
    inputs: Iterable[Any] | None = None,
    outputs: Iterable[Any] | None = None,
    check: bool = True,
) -> bytes:
    """The bytes of a loopback bundle (see the module docstring for the ops).

    ``input_shape`` / ``inputs``: the one input, or every input spec.
    ``output_shape`` / ``outputs``: likewise; affine and rows_affine derive
    the output (``[..., N]``, ``[M, N]``) when neither is given.
    ``check=False`` writes the specs and weights as given, without checking
    that they fit the op: for tests of the runtime's own load-time checks.
    """
    if op not in _OPS:
        raise ValueError(f"op {op!r} is not one of {sorted(_OPS)}")
    if (input_shape is None) == (inputs is None):
        raise ValueError("give either input_shape (one input) or inputs (every input spec)")
    if output_shape is not None and outputs is not None:
        raise ValueError("give output_shape (one output) or outputs (every output spec), not both")
    dtype = _dtype_name(dtype, "dtype")
    ins = (
        _specs(inputs, "input") if inputs is not None
        else [(input_name, tuple(int(d) for d in input_shape), dtype)]
    )
    outs: list[Spec] | None = (
        _specs(outputs, "output") if outputs is not None
        else None if output_shape is None
        else [(output_name, tuple(int(d) for d in output_shape), dtype)]
    )

    payload, extra = b"", b""
    if op in ("affine", "rows_affine"):
        if weight is None or bias is None:
            raise ValueError(f"the {op} op needs weight [K, N] and bias [N]")
        w = np.ascontiguousarray(weight, dtype=np.float32)
        b = np.ascontiguousarray(bias, dtype=np.float32)
        payload = w.tobytes() + b.tobytes()
        if w.ndim != 2:
            raise ValueError(f"the {op} weight must be [K, N], got shape {w.shape}")
        k, n = w.shape
        if op == "affine":
            x_shape = ins[0][1]
            if check and (len(ins) != 1 or b.shape != (n,) or x_shape[-1:] != (k,)):
                raise ValueError(
                    f"affine shapes do not fit: inputs {[s[1] for s in ins]}, weight {w.shape}, "
                    f"bias {b.shape}"
                )
            derived = [(output_name, x_shape[:-1] + (n,), "float32")]
            if check and any(s[2] != "float32" for s in ins + (outs or [])):
                raise ValueError("the affine op is float32 only")
            if check and outs is not None and [s[1] for s in outs] != [derived[0][1]]:
                raise ValueError(
                    f"affine output {[s[1] for s in outs]} does not fit input {x_shape} and "
                    f"weight {w.shape}: it is {derived[0][1]}"
                )
        else:
            extra = struct.pack("<qq", k, n)
            m = _numel(ins[0][1]) // k if k else 0
            derived = [(output_name, (m, n), "float32")]
            if check:
                _check_rows_affine(ins, outs or derived, w.shape, b.shape)
        outs = outs if outs is not None else derived
    elif outs is None:
        raise ValueError("the noop op needs output_shape or outputs")

    head = MAGIC + struct.pack(
        "<IIIII", FORMAT_VERSION, _OPS[op], int(delay_us), len(ins), len(outs)
    )
    head += b"".join(_spec_bytes(s) for s in ins + outs) + extra
    weights_offset = -(-(len(head) + 16) // 64) * 64
    head += struct.pack("<QQ", weights_offset, len(payload))
    body = head.ljust(weights_offset, b"\0") + payload
    return body + struct.pack("<I", zlib.crc32(body))


def _check_rows_affine(
    ins: list[Spec], outs: list[Spec], w_shape: tuple[int, ...], b_shape: tuple[int, ...]
) -> None:
    k, n = w_shape
    if k < 1 or n < 1 or b_shape != (n,):
        raise ValueError(f"rows_affine needs weight [K, N] with K, N >= 1 and bias [N]: "
                         f"weight {w_shape}, bias {b_shape}")
    bad = [f"{s[0]!r} is {s[2]}" for s in ins + outs if s[2] != "float32"]
    if bad:
        raise ValueError(f"the rows_affine op is float32 only: {', '.join(bad)}")
    if len(outs) != 1:
        raise ValueError(f"the rows_affine op has exactly one output, got {len(outs)}")
    x0, rest = ins[0], ins[1:]
    if _numel(x0[1]) % k:
        raise ValueError(
            f"rows_affine input {x0[0]!r} {x0[1]} is not a whole number of rows of K={k}"
        )
    m = _numel(x0[1]) // k
    if _numel(outs[0][1]) != m * n:
        raise ValueError(
            f"rows_affine output {outs[0][0]!r} {outs[0][1]} must hold {m} rows of {n}"
        )


def write_loopback_bundle(path: str | os.PathLike[str], **fields: Any) -> Path:
    """Write a loopback bundle to ``path``; keyword arguments as :func:`encode_loopback_bundle`."""
    path = Path(path)
    path.write_bytes(encode_loopback_bundle(**fields))
    return path


def affine_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What the affine op computes, in numpy (float32)."""
    x = np.asarray(x, dtype=np.float32)
    w = np.asarray(weight, dtype=np.float32)
    return (x.reshape(-1, w.shape[0]) @ w + np.asarray(bias, dtype=np.float32)).reshape(
        x.shape[:-1] + (w.shape[1],)
    )


def rows_affine_reference(
    inputs: Sequence[np.ndarray],
    weight: np.ndarray,
    bias: np.ndarray,
    output_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """What the rows_affine op computes, in numpy: float32 ``[M, N]``, or
    ``output_shape``. ``inputs`` in the bundle's input order."""
    w = np.asarray(weight, dtype=np.float32)
    k = w.shape[0]
    x0 = np.asarray(inputs[0], dtype=np.float32).reshape(-1, k)
    m = x0.shape[0]
    y = x0 @ w + np.asarray(bias, dtype=np.float32)
    for x in inputs[1:]:
        # The runtime sums each chunk in double and adds it to the float32 y[m][0];
        # element e of an input of L elements is in chunk e * M // L.
        flat = np.asarray(x, dtype=np.float64).reshape(-1)
        sums = np.zeros(m, dtype=np.float64)
        np.add.at(sums, (np.arange(flat.size, dtype=np.int64) * m) // flat.size, flat)
        y[:, 0] += sums.astype(np.float32)
    return y if output_shape is None else y.reshape(tuple(output_shape))
