"""Call overhead of the FlexMLRT bridge: is it independent of the tensor size?

Runs the loopback runtime's "noop" op (it does no work), so what is timed is
the bridge itself: argument matching, buffer-protocol checks, GIL release,
the session mutex, and wrapping the preallocated output. Three measurements,
interleaved round by round so machine noise hits all of them alike:

  * bridge call with a [1073, 4, 1280] float32 input (the Qwen2.5-VL vision
    tower's NPU input; output [1073, 3584], preallocated),
  * bridge call with a tiny [1, 4] float32 input,
  * a plain numpy copy of the large input (what one hidden copy would cost),
  * if torch is importable, both bridge calls again with torch CPU tensors.

If the bridge copied the input, the large call would cost about one numpy
copy more than the tiny one. Reported: median time per call over the rounds,
the spread (interquartile range), and the ratios large/tiny and large/copy.

    python benchmarks/bench_bridge.py [--rounds 21] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import flexmlrt_bridge as fb
import numpy as np

LARGE_IN = (1073, 4, 1280)
LARGE_OUT = (1073, 3584)
TINY = (1, 4)


def _per_call_us(fn, calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - t0) / calls / 1000.0


def _summary(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=4)
    return statistics.median(samples), q[2] - q[0]


def measure(rounds: int, bridge_calls: int, copy_calls: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as d:
        large = fb.Session(
            fb.write_loopback_bundle(
                Path(d) / "large.fxb", input_shape=LARGE_IN, output_shape=LARGE_OUT, op="noop"
            )
        )
        tiny = fb.Session(
            fb.write_loopback_bundle(
                Path(d) / "tiny.fxb", input_shape=TINY, output_shape=TINY, op="noop"
            )
        )
        x_large = np.random.default_rng(0).standard_normal(LARGE_IN, dtype=np.float32)
        x_tiny = np.ones(TINY, np.float32)
        feeds = {
            "bridge_call_large": (lambda: large.run(x_large), bridge_calls),
            "bridge_call_tiny": (lambda: tiny.run(x_tiny), bridge_calls),
            "numpy_copy_large": (lambda: x_large.copy(), copy_calls),
        }
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:  # optional: the same input as a torch CPU tensor
            t_large, t_tiny = torch.from_numpy(x_large), torch.from_numpy(x_tiny)
            feeds["bridge_call_large_torch"] = (lambda: large.run(t_large), bridge_calls)
            feeds["bridge_call_tiny_torch"] = (lambda: tiny.run(t_tiny), bridge_calls)
        for fn, _ in feeds.values():  # warm up: page in buffers, first-call costs
            for _ in range(3):
                fn()
        samples: dict[str, list[float]] = {k: [] for k in feeds}
        for _ in range(rounds):
            for name, (fn, calls) in feeds.items():
                samples[name].append(_per_call_us(fn, calls))
        # The bridge must have handed the runtime the caller's buffer.
        assert large.last_io_addresses()["inputs"][fb.DEFAULT_INPUT_NAME] == x_large.ctypes.data
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--bridge-calls", type=int, default=2000, help="calls per round, bridge")
    ap.add_argument("--copy-calls", type=int, default=20, help="calls per round, numpy copy")
    ap.add_argument("--json", type=Path, help="write results here")
    args = ap.parse_args(argv)

    samples = measure(args.rounds, args.bridge_calls, args.copy_calls)
    stats = {k: _summary(v) for k, v in samples.items()}

    shape = "x".join(map(str, LARGE_IN))
    print(f"bridge call overhead, loopback noop, {args.rounds} rounds (median / IQR per call)")
    print(f"{'measurement':<22}{'median us':>12}{'IQR us':>10}")
    for name, (med, iqr) in stats.items():
        print(f"{name:<22}{med:>12.2f}{iqr:>10.2f}")
    rows = []
    pairs = [("bridge_call_large", "bridge_call_tiny"), ("bridge_call_large", "numpy_copy_large")]
    if "bridge_call_large_torch" in stats:
        pairs.append(("bridge_call_large_torch", "bridge_call_tiny_torch"))
    for name, base in pairs:
        ratio = stats[name][0] / stats[base][0]
        print(f"ratio {name} / {base}: {ratio:.3f}")
        suffix = "_torch" if name.endswith("_torch") else ""
        rows.append(
            {
                "name": f"bridge_call_{shape}_float32{suffix}",
                "metric": "median_call_time",
                "value": round(stats[name][0], 3),
                "baseline": base,
                "baseline_value": round(stats[base][0], 3),
                "ratio": round(ratio, 4),
                "unit": "us",
            }
        )
    for name, (_, iqr) in stats.items():
        rows.append(
            {
                "name": name,
                "metric": "iqr_call_time",
                "value": round(iqr, 3),
                "baseline": None,
                "baseline_value": None,
                "ratio": None,
                "unit": "us",
            }
        )
    if args.json:
        args.json.write_text(json.dumps({"benchmarks": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
