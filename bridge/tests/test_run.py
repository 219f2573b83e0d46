"""Results, specs and output-buffer reuse against the loopback runtime."""

from __future__ import annotations

import gc

import flexmlrt_bridge as fb
import numpy as np
import pytest

IN, OUT = fb.DEFAULT_INPUT_NAME, fb.DEFAULT_OUTPUT_NAME


def test_specs_come_from_the_bundle(affine):
    s, _, _ = affine
    assert s.runtime == "loopback"
    assert [(t.name, t.dtype, t.shape) for t in s.inputs] == [(IN, "float32", (3, 4, 16))]
    assert [(t.name, t.dtype, t.shape) for t in s.outputs] == [(OUT, "float32", (3, 4, 5))]
    assert s.outputs[0].nbytes == 3 * 4 * 5 * 4
    assert "compute_graph.ifm_ddr" in repr(s.inputs[0])


def test_affine_result_matches_numpy(affine, rng):
    s, w, b = affine
    x = rng.standard_normal((3, 4, 16)).astype(np.float32)
    y = s.run({IN: x})[OUT]
    assert y.shape == (3, 4, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y, fb.affine_reference(x, w, b), rtol=1e-5, atol=1e-5)


def test_single_array_is_accepted_for_a_one_input_model(affine, rng):
    s, w, b = affine
    x = rng.standard_normal((3, 4, 16)).astype(np.float32)
    np.testing.assert_array_equal(s.run(x)[OUT], s.run({IN: x})[OUT].copy())


def test_runs_are_deterministic(affine, rng):
    s, _, _ = affine
    x = rng.standard_normal((3, 4, 16)).astype(np.float32)
    first = s.run(x)[OUT].copy()
    for _ in range(5):
        assert s.run(x)[OUT].tobytes() == first.tobytes()


def test_a_different_input_gives_a_different_result(affine, rng):
    s, w, b = affine
    x1 = rng.standard_normal((3, 4, 16)).astype(np.float32)
    y1 = s.run(x1)[OUT].copy()
    y2 = s.run(x1 + 1)[OUT]
    assert not np.allclose(y1, y2)
    np.testing.assert_allclose(y2, fb.affine_reference(x1 + 1, w, b), rtol=1e-5, atol=1e-5)


def test_outputs_are_preallocated_and_reused(affine, rng):
    s, w, b = affine
    x1 = rng.standard_normal((3, 4, 16)).astype(np.float32)
    x2 = rng.standard_normal((3, 4, 16)).astype(np.float32)
    y1 = s.run(x1)[OUT]
    addr1 = y1.ctypes.data
    y2 = s.run(x2)[OUT]
    assert y2.ctypes.data == addr1 == s.last_io_addresses()["outputs"][OUT]
    # Documented behaviour: the earlier result is a view of the same buffer, now overwritten.
    np.testing.assert_allclose(y1, fb.affine_reference(x2, w, b), rtol=1e-5, atol=1e-5)
    assert s.run_count == 2


def test_caller_outputs_are_written_in_place(affine, rng):
    s, w, b = affine
    x = rng.standard_normal((3, 4, 16)).astype(np.float32)
    out = np.full((3, 4, 5), np.nan, dtype=np.float32)
    res = s.run(x, outputs={OUT: out})
    assert res[OUT] is out
    assert s.last_io_addresses()["outputs"][OUT] == out.ctypes.data
    np.testing.assert_allclose(out, fb.affine_reference(x, w, b), rtol=1e-5, atol=1e-5)
    assert s.run(x, outputs=out)[OUT] is out


def test_output_views_keep_the_session_alive(make_bundle, rng):
    w = rng.standard_normal((4, 2)).astype(np.float32)
    b = np.zeros(2, np.float32)
    x = rng.standard_normal((1, 4)).astype(np.float32)
    s = fb.Session(make_bundle(input_shape=(1, 4), weight=w, bias=b))
    y = s.run(x)[OUT]
    del s
    gc.collect()
    np.testing.assert_allclose(y, x @ w, rtol=1e-5)  # still valid memory


def test_noop_leaves_outputs_untouched_and_accepts_other_dtypes(make_bundle):
    s = fb.Session(
        make_bundle(input_shape=(2, 3), output_shape=(7,), op="noop", dtype="int8")
    )
    assert s.inputs[0].dtype == "int8"
    out = np.arange(7, dtype=np.int8)
    s.run(np.ones((2, 3), np.int8), outputs=out)
    np.testing.assert_array_equal(out, np.arange(7, dtype=np.int8))


@pytest.mark.parametrize("dtype", ["float16", "uint8", "int32", "int64"])
def test_every_dtype_round_trips_through_the_specs(make_bundle, dtype):
    s = fb.Session(make_bundle(input_shape=(4,), output_shape=(2,), op="noop", dtype=dtype))
    assert s.inputs[0].dtype == dtype
    y = s.run(np.zeros(4, dtype))[OUT]
    assert y.dtype == np.dtype(dtype) and y.shape == (2,)


def test_build_info_describes_this_build():
    info = fb.build_info()
    assert info["loopback_format_version"] == 1
    assert info["flexmlrt"] == fb.flexmlrt_available()
    assert ("flexmlrt" in fb.available_runtimes()) == info["flexmlrt"]
    # What the FlexMLRT runtime takes (assumption A5), with or without the SDK.
    assert info["flexmlrt_dtypes"] == ("float32",)
    if not info["flexmlrt"]:
        # Without the SDK the FlexMLRT file must still have been compiled (type-checked).
        assert info["flexmlrt_typechecked"] is True


def test_context_manager_closes(make_bundle):
    p = make_bundle(input_shape=(2,), output_shape=(2,), op="noop")
    with fb.Session(p) as s:
        assert not s.closed
    assert s.closed
