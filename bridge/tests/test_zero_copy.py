"""The runtime reads the caller's memory and the bundle's mapping: nothing is copied."""

from __future__ import annotations

import os
from pathlib import Path

import flexmlrt_bridge as fb
import numpy as np
import pytest

IN, OUT = fb.DEFAULT_INPUT_NAME, fb.DEFAULT_OUTPUT_NAME


def test_runtime_sees_the_numpy_buffer_address(affine, rng):
    s, _, _ = affine
    x = rng.standard_normal((3, 4, 16)).astype(np.float32)
    s.run({IN: x})
    assert s.last_io_addresses()["inputs"][IN] == x.ctypes.data


def test_contiguous_view_is_passed_in_place(affine, rng):
    s, w, b = affine
    big = rng.standard_normal((5, 3, 4, 16)).astype(np.float32)
    view = big[2]  # C-contiguous view into the middle of another array
    y = s.run(view)[OUT]
    assert s.last_io_addresses()["inputs"][IN] == big.ctypes.data + 2 * view.nbytes
    np.testing.assert_allclose(y, fb.affine_reference(view, w, b), rtol=1e-5, atol=1e-5)


def test_runtime_sees_other_buffer_protocol_objects_in_place(make_bundle):
    s = fb.Session(make_bundle(input_shape=(8,), output_shape=(1,), op="noop", dtype="uint8"))
    buf = bytearray(range(8))
    s.run(buf)
    assert s.last_io_addresses()["inputs"][IN] == np.frombuffer(buf, np.uint8).ctypes.data


def test_torch_cpu_tensor_is_passed_without_copy(affine):
    torch = pytest.importorskip("torch")
    s, w, b = affine
    x = torch.randn(3, 4, 16, dtype=torch.float32, requires_grad=True)
    y = s.run({IN: x})[OUT]
    assert s.last_io_addresses()["inputs"][IN] == x.data_ptr()
    np.testing.assert_allclose(
        y, fb.affine_reference(x.detach().numpy(), w, b), rtol=1e-5, atol=1e-5
    )
    out = torch.empty(3, 4, 5)
    res = s.run(x, outputs={OUT: out})
    assert res[OUT] is out
    assert s.last_io_addresses()["outputs"][OUT] == out.data_ptr()
    assert torch.allclose(out, torch.from_numpy(y))


def _mapped_paths() -> set[str]:
    return {
        line.split(maxsplit=5)[5].strip()
        for line in Path("/proc/self/maps").read_text().splitlines()
        if len(line.split(maxsplit=5)) == 6
    }


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_bundle_is_memory_mapped_until_close(make_bundle, rng):
    w = rng.standard_normal((64, 64)).astype(np.float32)
    p = make_bundle(input_shape=(1, 64), weight=w, bias=np.zeros(64, np.float32))
    resolved = str(p.resolve())
    s = fb.Session(p)
    assert resolved in _mapped_paths()
    assert s.bundle_nbytes == p.stat().st_size
    s.close()
    assert resolved not in _mapped_paths()


def test_bundle_file_is_never_modified(affine, rng):
    s, _, _ = affine
    before = Path(s.path).read_bytes()
    s.run(rng.standard_normal((3, 4, 16)).astype(np.float32))
    s.close()
    assert Path(s.path).read_bytes() == before
