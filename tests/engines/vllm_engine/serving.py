"""Starting `vllm serve` from a test or a benchmark: a port vLLM's own start-up
cannot take, and the wait until the server answers."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A free port below the ephemeral range: vLLM's own start-up binds port 0
    for its internal sockets, and the kernel would hand one of them a port
    just released by a port-0 probe here."""
    low = 20000
    try:
        low = min(low, int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]) - 2000)
    except (OSError, ValueError, IndexError):
        pass
    for port in random.Random().sample(range(max(low - 8000, 1024), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_until_healthy(proc: subprocess.Popen, base: str, log_path: Path,
                       timeout: float = 300) -> None:
    """Until ``base``/health answers 200; RuntimeError with the log's tail when
    the server exits first or does not come up (then it is killed)."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited {proc.returncode}:\n"
                               f"{log_path.read_text()[-6000:]}")
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"vllm serve did not come up:\n{log_path.read_text()[-6000:]}")
        time.sleep(1)
