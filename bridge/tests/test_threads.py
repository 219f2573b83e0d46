"""The GIL is released during run; sessions run in parallel; one session serialises.

No assertion on absolute speed: only on the order of events, read from the
same monotonic clock (the runtime's steady_clock is CLOCK_MONOTONIC, as is
Python's time.monotonic_ns on Linux).
"""

from __future__ import annotations

import threading
import time

import flexmlrt_bridge as fb
import numpy as np
import pytest

DELAY_US = 300_000


@pytest.fixture
def slow_bundle(make_bundle):
    return make_bundle(input_shape=(4,), output_shape=(4,), op="noop", delay_us=DELAY_US)


def _run_in_threads(sessions, x):
    barrier = threading.Barrier(len(sessions))
    errors = []

    def work(s):
        try:
            barrier.wait()
            s.run(x)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_python_threads_run_while_the_runtime_works(slow_bundle):
    s = fb.Session(slow_bundle)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic_ns())
            time.sleep(0.005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        s.run(np.zeros(4, np.float32))
    finally:
        stop.set()
        t.join()
    start, end = s.last_run_window_ns()
    assert end - start >= DELAY_US * 1000  # the sleep happened inside the runtime
    inside = [x for x in ticks if start < x < end]
    assert inside, "no Python thread ran during the runtime call: the GIL was held"


def test_two_sessions_run_concurrently(slow_bundle):
    a, b = fb.Session(slow_bundle), fb.Session(slow_bundle)
    _run_in_threads([a, b], np.zeros(4, np.float32))
    (s1, e1), (s2, e2) = a.last_run_window_ns(), b.last_run_window_ns()
    assert max(s1, s2) < min(e1, e2), "runtime calls of two sessions did not overlap"


def test_one_session_serialises_its_callers(slow_bundle):
    s = fb.Session(slow_bundle)
    t0 = time.monotonic_ns()
    _run_in_threads([s, s, s], np.zeros(4, np.float32))
    elapsed = time.monotonic_ns() - t0
    assert s.run_count == 3
    # Three calls behind one mutex cannot finish faster than three delays.
    assert elapsed >= 3 * DELAY_US * 1000


def test_many_threads_with_own_outputs_get_their_own_results(make_bundle, rng):
    w = rng.standard_normal((32, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    s = fb.Session(make_bundle(input_shape=(16, 32), weight=w, bias=b))
    xs = [rng.standard_normal((16, 32)).astype(np.float32) for _ in range(8)]
    outs = [np.empty((16, 8), np.float32) for _ in xs]
    errors = []

    def work(i):
        try:
            for _ in range(20):
                s.run(xs[i], outputs=outs[i])
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out, fb.affine_reference(x, w, b), rtol=1e-5, atol=1e-5)
    assert s.run_count == 8 * 20
