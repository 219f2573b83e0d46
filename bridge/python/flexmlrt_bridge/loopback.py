"""Writer for loopback bundles, the self-describing format the loopback runtime reads.

The loopback runtime stands in for the NPU: it is not a mock of FlexMLRT, it
is a second, tiny runtime behind the same interface, so that every mechanism
of the bridge runs for real. The format is documented byte by byte at the top
of ``bridge/src/loopback_runtime.cpp``; this module is its only writer.

Two ops:

* ``"affine"``: ``y = x @ w + b`` over the last dimension, float32. Input
  ``[..., K]``, weight ``[K, N]``, bias ``[N]``, output ``[..., N]``.
* ``"noop"``: the runtime does nothing but the optional delay; the output is
  left untouched. Any shapes and dtypes. Used to measure the bridge's own cost.

``delay_us`` makes every run sleep that long inside the runtime (with the GIL
released), so tests can observe concurrency.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAGIC = b"FXBLOOP\0"
FORMAT_VERSION = 1
DEFAULT_INPUT_NAME = "compute_graph.ifm_ddr"
DEFAULT_OUTPUT_NAME = "compute_graph.ofm_ddr"

_OPS = {"affine": 0, "noop": 1}
_DTYPES = {"float32": 1, "float16": 2, "int8": 3, "uint8": 4, "int32": 5, "int64": 6}


def _spec(name: str, dtype: str, shape: Sequence[int]) -> bytes:
    raw = name.encode()
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    dims = [int(d) for d in shape]
    if any(d < 1 for d in dims):
        raise ValueError(f"shape {tuple(dims)} of {name!r} has a dimension < 1")
    return (
        struct.pack("<I", len(raw))
        + raw
        + struct.pack("<II", _DTYPES[dtype], len(dims))
        + struct.pack(f"<{len(dims)}q", *dims)
    )


def encode_loopback_bundle(
    *,
    input_shape: Sequence[int],
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    output_shape: Sequence[int] | None = None,
    op: str = "affine",
    dtype: str = "float32",
    input_name: str = DEFAULT_INPUT_NAME,
    output_name: str = DEFAULT_OUTPUT_NAME,
    delay_us: int = 0,
) -> bytes:
    """The bytes of a one-input, one-output loopback bundle."""
    if op not in _OPS:
        raise ValueError(f"op {op!r} is not one of {sorted(_OPS)}")
    input_shape = tuple(int(d) for d in input_shape)
    payload = b""
    if op == "affine":
        if weight is None or bias is None:
            raise ValueError("the affine op needs weight [K, N] and bias [N]")
        w = np.ascontiguousarray(weight, dtype=np.float32)
        b = np.ascontiguousarray(bias, dtype=np.float32)
        if w.ndim != 2 or b.shape != (w.shape[1],) or input_shape[-1:] != (w.shape[0],):
            raise ValueError(
                f"affine shapes do not fit: input {input_shape}, weight {w.shape}, bias {b.shape}"
            )
        if dtype != "float32":
            raise ValueError("the affine op is float32 only")
        output_shape = input_shape[:-1] + (w.shape[1],)
        payload = w.tobytes() + b.tobytes()
    elif output_shape is None:
        raise ValueError("the noop op needs output_shape")

    head = MAGIC + struct.pack("<IIIII", FORMAT_VERSION, _OPS[op], int(delay_us), 1, 1)
    head += _spec(input_name, dtype, input_shape) + _spec(output_name, dtype, output_shape)
    weights_offset = -(-(len(head) + 16) // 64) * 64
    head += struct.pack("<QQ", weights_offset, len(payload))
    body = head.ljust(weights_offset, b"\0") + payload
    return body + struct.pack("<I", zlib.crc32(body))


def write_loopback_bundle(path: str | os.PathLike[str], **fields) -> Path:
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
