"""Every bad input is a Python exception with a clear message, never a crash."""

from __future__ import annotations

import struct
import zlib

import flexmlrt_bridge as fb
import numpy as np
import pytest

IN, OUT = fb.DEFAULT_INPUT_NAME, fb.DEFAULT_OUTPUT_NAME


def test_exception_hierarchy():
    for cls in (fb.BundleError, fb.TensorError, fb.RuntimeUnavailableError):
        assert issubclass(cls, fb.BridgeError)
    assert issubclass(fb.BridgeError, RuntimeError)
    assert issubclass(fb.TensorError, ValueError)


# ------------------------------------------------------------------ tensors
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: np.zeros((3, 4, 16), np.float64), "has dtype float64, expected float32"),
        (lambda: np.zeros((3, 4, 16), np.int32), "has dtype int32, expected float32"),
        (lambda: np.zeros((3, 4, 17), np.float32), "has shape [3, 4, 17], expected [3, 4, 16]"),
        (lambda: np.zeros((12, 16), np.float32), "has shape [12, 16], expected [3, 4, 16]"),
        (lambda: np.zeros((), np.float32), "has shape [], expected [3, 4, 16]"),
        (lambda: np.zeros((3, 16, 4), np.float32).transpose(0, 2, 1), "is not C-contiguous"),
        (lambda: np.zeros((3, 4, 32), np.float32)[:, :, ::2], "is not C-contiguous"),
        (lambda: "not a tensor", "must support the buffer protocol"),
        (lambda: [1.0, 2.0], "must support the buffer protocol"),
        (lambda: None, "must support the buffer protocol"),
    ],
)
def test_bad_input_tensor(affine, make, message):
    s, _, _ = affine
    with pytest.raises(fb.TensorError) as err:
        s.run({IN: make()})
    assert message in str(err.value)
    assert IN in str(err.value)
    assert s.run_count == 0  # nothing reached the runtime


def test_unknown_tensor_name_lists_the_valid_ones(affine):
    s, _, _ = affine
    x = np.zeros((3, 4, 16), np.float32)
    with pytest.raises(fb.TensorError, match=r"unknown input tensor 'pixels'.*compute_graph\.ifm_ddr"):
        s.run({IN: x, "pixels": x})
    with pytest.raises(fb.TensorError, match="unknown output tensor 'y'"):
        s.run(x, outputs={"y": np.zeros((3, 4, 5), np.float32)})


def test_missing_input(affine):
    s, _, _ = affine
    with pytest.raises(fb.TensorError, match=r"missing input 'compute_graph\.ifm_ddr'.*\[3, 4, 16\]"):
        s.run({})


def test_non_string_key(affine):
    s, _, _ = affine
    with pytest.raises(fb.TensorError, match="unknown input tensor '0'"):
        s.run({0: np.zeros((3, 4, 16), np.float32)})


def test_bad_outputs(affine):
    s, _, _ = affine
    x = np.zeros((3, 4, 16), np.float32)
    ro = np.zeros((3, 4, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(fb.TensorError, match="must be writable"):
        s.run(x, outputs={OUT: ro})
    with pytest.raises(fb.TensorError, match=r"output .* has shape \[3, 4, 6\]"):
        s.run(x, outputs={OUT: np.zeros((3, 4, 6), np.float32)})
    with pytest.raises(fb.TensorError, match="output .* has dtype float16"):
        s.run(x, outputs=np.zeros((3, 4, 5), np.float16))
    with pytest.raises(fb.TensorError, match="is not C-contiguous"):
        s.run(x, outputs=np.zeros((3, 5, 4), np.float32).transpose(0, 2, 1))
    with pytest.raises(fb.TensorError, match="must support the buffer protocol"):
        s.run(x, outputs=3.5)


def test_torch_tensors_that_cannot_be_viewed(affine):
    torch = pytest.importorskip("torch")
    s, _, _ = affine
    with pytest.raises(fb.TensorError, match="bfloat16"):
        s.run(torch.zeros(3, 4, 16, dtype=torch.bfloat16))
    with pytest.raises(fb.TensorError, match="not C-contiguous"):
        s.run(torch.zeros(3, 16, 4).transpose(1, 2))
    with pytest.raises(fb.TensorError, match="on meta"):
        s.run(torch.zeros(3, 4, 16, device="meta"))


def test_closed_session(affine):
    s, _, _ = affine
    s.close()
    with pytest.raises(fb.BridgeError, match="closed"):
        s.run(np.zeros((3, 4, 16), np.float32))


# ------------------------------------------------------------------ files and bundles
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot open bundle") as err:
        fb.Session(tmp_path / "nope.rai")
    assert err.value.filename == str(tmp_path / "nope.rai")


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        fb.Session(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.rai").write_bytes(b"")
    with pytest.raises(fb.BundleError, match="is empty"):
        fb.Session(tmp_path / "empty.rai")


def test_unknown_runtime_name(make_bundle):
    p = make_bundle(input_shape=(2,), output_shape=(2,), op="noop")
    with pytest.raises(ValueError, match="runtime must be"):
        fb.Session(p, runtime="npu")


def test_flexmlrt_without_sdk_says_how_to_rebuild(make_bundle, tmp_path):
    if fb.flexmlrt_available():
        pytest.skip("this build has the FlexMLRT SDK")
    rai = tmp_path / "model.rai"
    rai.write_bytes(b"\x00" * 128)  # not a loopback bundle: auto picks flexmlrt
    for path, runtime in [(rai, "auto"), (rai, "flexmlrt"), (make_bundle(input_shape=(2,), output_shape=(2,), op="noop"), "flexmlrt")]:
        with pytest.raises(fb.RuntimeUnavailableError) as err:
            fb.Session(path, runtime=runtime)
        msg = str(err.value)
        assert "FLEXMLRT_ROOT=" in msg and "pip install ./bridge" in msg
        assert str(path) in msg


def test_loopback_runtime_on_a_foreign_file(tmp_path):
    p = tmp_path / "model.rai"
    p.write_bytes(b"FLATBUFFER" * 10)
    with pytest.raises(fb.BundleError, match="not a loopback bundle"):
        fb.Session(p, runtime="loopback")


def _good_bundle() -> bytes:
    rng = np.random.default_rng(0)
    return fb.encode_loopback_bundle(
        input_shape=(2, 8),
        weight=rng.standard_normal((8, 3)).astype(np.float32),
        bias=np.ones(3, np.float32),
    )


def _rows_affine_bundle() -> bytes:
    rng = np.random.default_rng(1)
    return fb.encode_loopback_bundle(
        op="rows_affine",
        inputs=[("x", (4, 6)), ("t", (4, 2)), ("s", (4,))],
        outputs=[("y", (2, 3))],
        weight=rng.standard_normal((12, 3)).astype(np.float32),
        bias=np.ones(3, np.float32),
    )


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("keep", [4, 10, 20, 40, 60, 100, -13, -1])
def test_truncated_bundle(tmp_path, keep):
    data = _good_bundle()
    p = tmp_path / "t.fxb"
    p.write_bytes(data[:keep])
    with pytest.raises(fb.BundleError, match="truncated"):
        fb.Session(p, runtime="loopback")


@pytest.mark.parametrize("make", [_good_bundle, _rows_affine_bundle], ids=["affine", "rows_affine"])
def test_every_truncation_and_byte_flip_is_an_error_not_a_crash(tmp_path, make):
    data = make()
    p = tmp_path / "f.fxb"
    for n in range(len(data)):
        p.write_bytes(data[:n])
        with pytest.raises((fb.BundleError, OSError)):
            fb.Session(p, runtime="loopback")
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x5A
        p.write_bytes(bytes(flipped))
        with pytest.raises(fb.BundleError):
            fb.Session(p, runtime="loopback")
        # Same flip with a recomputed checksum: the header checks must catch it or the
        # bundle is still self-consistent (a flipped weight); either way, no crash.
        p.write_bytes(_with_crc(bytes(flipped[:-4])))
        try:
            s = fb.Session(p, runtime="loopback")
        except fb.BundleError:
            continue
        y = s.run({t.name: np.zeros(t.shape, t.dtype) for t in s.inputs})
        assert set(y) == {t.name for t in s.outputs}


def test_corrupt_weights_fail_the_checksum(tmp_path):
    data = bytearray(_good_bundle())
    data[-8] ^= 0xFF  # inside the bias
    p = tmp_path / "c.fxb"
    p.write_bytes(bytes(data))
    with pytest.raises(fb.BundleError, match="corrupt: CRC-32 checksum mismatch"):
        fb.Session(p)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (8, 2, "has version 2; this build reads version 1"),
        (12, 9, "unknown op 9"),
        (16, 20_000_000, "delay_us"),
        (20, 0, "tensor counts"),
        (24, 99, "tensor counts"),
    ],
)
def test_corrupt_header_fields(tmp_path, offset, value, message):
    body = bytearray(_good_bundle()[:-4])
    body[offset : offset + 4] = struct.pack("<I", value)
    p = tmp_path / "h.fxb"
    p.write_bytes(_with_crc(bytes(body)))
    with pytest.raises(fb.BundleError, match=message):
        fb.Session(p)


def test_bad_dtype_code_in_a_spec(tmp_path):
    body = bytearray(_good_bundle()[:-4])
    name_len = struct.unpack_from("<I", body, 28)[0]
    struct.pack_into("<I", body, 32 + name_len, 77)
    p = tmp_path / "d.fxb"
    p.write_bytes(_with_crc(bytes(body)))
    with pytest.raises(fb.BundleError, match="unknown dtype code 77"):
        fb.Session(p)


def test_trailing_bytes(tmp_path):
    p = tmp_path / "x.fxb"
    p.write_bytes(_with_crc(_good_bundle()[:-4] + b"\0" * 8))
    with pytest.raises(fb.BundleError, match="trailing bytes"):
        fb.Session(p)


def test_writer_rejects_inconsistent_shapes(tmp_path):
    with pytest.raises(ValueError, match="affine shapes do not fit"):
        fb.encode_loopback_bundle(
            input_shape=(2, 8), weight=np.zeros((7, 3)), bias=np.zeros(3)
        )
    with pytest.raises(ValueError, match="needs output_shape"):
        fb.encode_loopback_bundle(input_shape=(2,), op="noop")
