from __future__ import annotations

import flexmlrt_bridge as fb
import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def make_bundle(tmp_path):
    """Write a loopback bundle into tmp_path; keyword arguments as fb.encode_loopback_bundle."""
    counter = iter(range(1_000_000))

    def make(**fields):
        return fb.write_loopback_bundle(tmp_path / f"bundle{next(counter)}.fxb", **fields)

    return make


@pytest.fixture
def affine(make_bundle, rng):
    """(session, weight, bias) for an affine bundle [3, 4, 16] -> [3, 4, 5]."""
    w = rng.standard_normal((16, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    s = fb.Session(make_bundle(input_shape=(3, 4, 16), weight=w, bias=b))
    yield s, w, b
    s.close()
