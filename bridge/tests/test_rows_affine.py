"""The loopback op that stands in for a real graph interface: several named
float32 inputs of their own shapes, one output (rows_affine), against numpy."""

from __future__ import annotations

import struct
import zlib

import flexmlrt_bridge as fb
import numpy as np
import pytest

# Shaped like the vLLM vision device graph: hidden [P, C] viewed as [P/U, U*C]
# rows (K = U*C), per-patch tables and segment ids, one [P/U, O] output.
P, C, U, D2, O = 16, 3, 4, 2, 5
K, M = U * C, P // U
INPUTS = [
    ("hidden_states", (P, C), "float32"),
    ("rotary_cos", (P, D2), "float32"),
    ("full_attn_segments", (P,), "float32"),
]
OUTPUTS = [("vision_embeds", (M, O), "float32")]


@pytest.fixture
def weights(rng):
    return rng.standard_normal((K, O)).astype(np.float32), rng.standard_normal(O).astype(np.float32)


@pytest.fixture
def rows(make_bundle, weights):
    w, b = weights
    s = fb.Session(make_bundle(op="rows_affine", inputs=INPUTS, outputs=OUTPUTS, weight=w, bias=b))
    yield s
    s.close()


def _feeds(rng):
    return {
        "hidden_states": rng.standard_normal((P, C)).astype(np.float32),
        "rotary_cos": rng.standard_normal((P, D2)).astype(np.float32),
        "full_attn_segments": np.repeat(np.arange(M, dtype=np.float32), U) - 1,
    }


def test_specs_are_the_given_ones_in_order(rows):
    assert rows.runtime == "loopback"
    assert [(t.name, t.shape, t.dtype) for t in rows.inputs] == INPUTS
    assert [(t.name, t.shape, t.dtype) for t in rows.outputs] == OUTPUTS


def test_result_matches_numpy(rows, weights, rng):
    w, b = weights
    feeds = _feeds(rng)
    y = rows.run(feeds)["vision_embeds"]
    assert y.shape == (M, O) and y.dtype == np.float32
    ref = fb.rows_affine_reference([feeds[n] for n, _, _ in INPUTS], w, b)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_every_further_input_adds_its_row_chunk_sums_to_column_0(rows, weights, rng):
    w, b = weights
    feeds = _feeds(rng)
    y = rows.run(feeds)["vision_embeds"].copy()
    plain = feeds["hidden_states"].reshape(M, K) @ w + b
    sums = feeds["rotary_cos"].reshape(M, -1).sum(1) + feeds["full_attn_segments"].reshape(M, -1).sum(1)
    np.testing.assert_allclose(y[:, 1:], plain[:, 1:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[:, 0], plain[:, 0] + sums, rtol=1e-5, atol=1e-5)
    # One element of one further input moves exactly one output element, by its change.
    feeds["full_attn_segments"][2 * U + 1] += 10.0
    moved = rows.run(feeds)["vision_embeds"] - y
    expect = np.zeros((M, O), np.float32)
    expect[2, 0] = 10.0
    np.testing.assert_allclose(moved, expect, atol=1e-4)


def test_one_input_is_an_affine_map_of_rows(make_bundle, weights, rng):
    w, b = weights
    s = fb.Session(make_bundle(op="rows_affine", inputs=INPUTS[:1], weight=w, bias=b))
    assert [(t.name, t.shape) for t in s.outputs] == [(fb.DEFAULT_OUTPUT_NAME, (M, O))]  # derived
    x = rng.standard_normal((P, C)).astype(np.float32)
    y = s.run(x)[fb.DEFAULT_OUTPUT_NAME]
    np.testing.assert_allclose(y, fb.affine_reference(x.reshape(M, K), w, b), rtol=1e-5, atol=1e-5)


def test_output_of_any_shape_with_m_times_n_elements(make_bundle, weights, rng):
    w, b = weights
    out = [("flat", (M * O,), "float32")]
    s = fb.Session(make_bundle(op="rows_affine", inputs=INPUTS, outputs=out, weight=w, bias=b))
    feeds = _feeds(rng)
    ref = fb.rows_affine_reference([feeds[n] for n, _, _ in INPUTS], w, b, output_shape=(M * O,))
    np.testing.assert_allclose(s.run(feeds)["flat"], ref, rtol=1e-5, atol=1e-5)


def test_zero_copy_for_every_input(rows, rng):
    feeds = _feeds(rng)
    rows.run(feeds)
    assert rows.last_io_addresses()["inputs"] == {k: v.ctypes.data for k, v in feeds.items()}


def test_the_old_signature_writes_the_same_bytes():
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((8, 3)), rng.standard_normal(3)
    old = fb.encode_loopback_bundle(input_shape=(2, 8), weight=w, bias=b)
    new = fb.encode_loopback_bundle(
        inputs=[(fb.DEFAULT_INPUT_NAME, (2, 8))],
        outputs=[(fb.DEFAULT_OUTPUT_NAME, (2, 3), np.float32)],
        weight=w,
        bias=b,
    )
    assert old == new


def test_specs_may_be_objects_with_name_shape_dtype(rows, make_bundle, weights):
    w, b = weights
    again = fb.Session(make_bundle(op="rows_affine", inputs=rows.inputs, outputs=rows.outputs, weight=w, bias=b))
    assert [repr(t) for t in again.inputs + again.outputs] == [repr(t) for t in rows.inputs + rows.outputs]


def test_noop_takes_several_tensors_of_any_dtype(make_bundle):
    ins = [("a", (2,), "int64"), ("b", (3, 1), "float16")]
    outs = [("y", (4,), "uint8"), ("z", (1,), "int32")]
    s = fb.Session(make_bundle(op="noop", inputs=ins, outputs=outs))
    assert [(t.name, t.shape, t.dtype) for t in s.inputs] == ins
    assert [(t.name, t.shape, t.dtype) for t in s.outputs] == outs
    y = s.run({"a": np.zeros(2, np.int64), "b": np.zeros((3, 1), np.float16)})
    assert {k: (v.dtype.name, v.shape) for k, v in y.items()} == {"y": ("uint8", (4,)), "z": ("int32", (1,))}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": [("x", (P, C), "int64")]}, "float32 only: 'x' is int64"),
        ({"outputs": OUTPUTS * 2}, "exactly one output, got 2"),
        ({"outputs": [("y", (M, O + 1))]}, r"output 'y' \(4, 6\) must hold 4 rows of 5"),
        ({"inputs": [("x", (P + 1, C))]}, "is not a whole number of rows of K=12"),
        ({"bias": np.zeros(O + 1)}, "bias"),
        ({"weight": np.zeros(K)}, "must be"),
        ({"inputs": INPUTS, "input_shape": (2,)}, "either input_shape"),
        ({"inputs": [("x", (P, C), "bfloat16")]}, "is not one of"),
        ({"inputs": [("x",)]}, r"expected \(name, shape\[, dtype\]\)"),
        ({"inputs": [(f"x{i}", (M,)) for i in range(17)]}, "17 inputs"),
    ],
)
def test_the_writer_refuses_what_does_not_fit(weights, change, message):
    w, b = weights
    fields = {"op": "rows_affine", "inputs": INPUTS, "outputs": OUTPUTS, "weight": w, "bias": b, **change}
    with pytest.raises(ValueError, match=message):
        fb.encode_loopback_bundle(**fields)


# Load-time checks of the runtime itself: the writer is told not to check (check=False).
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"outputs": OUTPUTS * 2}, "rows_affine op takes exactly one output, the bundle has 2"),
        ({"inputs": INPUTS[:2] + [("seg", (P,), "int64")]}, "needs float32 tensors; input 'seg' is int64"),
        ({"outputs": [("y", (M, O), "float16")]}, "needs float32 tensors; output 'y' is float16"),
        ({"inputs": [("x", (P + 1, C))]}, r"input 'x' \[17, 3\] has 51 elements, not a whole number of rows of 12"),
        ({"outputs": [("y", (M, O + 1))]}, r"output 'y' \[4, 6\] has 24 elements; 4 rows of 5 need 20"),
        ({"bias": np.zeros(O + 1)}, r"weights hold 264 bytes, the rows_affine op with a \[12, 5\] weight needs 260"),
        ({"weight": np.zeros((0, O)), "outputs": OUTPUTS}, r"weight shape \[0, 5\] is invalid"),
    ],
)
def test_the_runtime_refuses_what_does_not_fit_at_load(tmp_path, weights, change, message):
    w, b = weights
    fields = {"op": "rows_affine", "inputs": INPUTS, "outputs": OUTPUTS, "weight": w, "bias": b, **change}
    p = tmp_path / "bad.fxb"
    p.write_bytes(fb.encode_loopback_bundle(check=False, **fields))
    with pytest.raises(fb.BundleError, match=message) as err:
        fb.Session(p)
    assert "is corrupt" in str(err.value) and str(p) in str(err.value)


@pytest.mark.parametrize(("k", "n"), [(1 << 40, 5), (12, 1 << 40), (1 << 30, 1 << 30), (-12, 5)])
def test_a_weight_shape_beyond_the_limits_is_refused(tmp_path, weights, k, n):
    w, b = weights
    body = bytearray(fb.encode_loopback_bundle(op="rows_affine", inputs=INPUTS, outputs=OUTPUTS, weight=w, bias=b)[:-4])
    at = bytes(body).index(struct.pack("<qq", K, O))
    struct.pack_into("<qq", body, at, k, n)
    p = tmp_path / "big.fxb"
    p.write_bytes(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))
    with pytest.raises(fb.BundleError, match=r"weight shape \[.*\] is invalid"):
        fb.Session(p)


def test_build_info_lists_the_loopback_ops():
    assert fb.build_info()["loopback_ops"] == ("affine", "noop", "rows_affine")


def test_a_further_input_that_does_not_divide_into_the_rows_is_split_proportionally(
    make_bundle, weights, rng
):
    """The vision graph's window-slot inputs need not hold a multiple of M
    elements: element e of an input of L elements belongs to row e * M // L."""
    w, b = weights
    odd = ("window_slots", (M * 3 + 2,), "float32")
    session = fb.Session(make_bundle(op="rows_affine", inputs=[INPUTS[0], odd], outputs=OUTPUTS,
                                     weight=w, bias=b))
    x0 = rng.standard_normal(INPUTS[0][1]).astype(np.float32)
    extra = rng.standard_normal(odd[1]).astype(np.float32)
    y = session.run({INPUTS[0][0]: x0, odd[0]: extra})["vision_embeds"]
    rows = (np.arange(extra.size) * M) // extra.size
    expected = x0.reshape(M, K) @ w + b
    expected[:, 0] += np.bincount(rows, weights=extra.astype(np.float64), minlength=M)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fb.rows_affine_reference([x0, extra], w, b), expected,
                               rtol=1e-5, atol=1e-5)
