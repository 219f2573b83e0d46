"""`vllm serve` (the OpenAI server) with the NPU vision tower on the CPU.

The server runs the small bundle (256 patches at most), so the processor's
bound and the per-request refusals are exercised through HTTP: chat
completions with base64 images, several at once, give the tokens `vllm.LLM`
gives; a bad request is answered 400 and the next one is served.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from engine_run import make_image
from serving import free_port, wait_until_healthy

from conftest import chat_prompt, engine_env

IMAGES = [[1, 224, 224], [2, 112, 112], [6, 800, 600], [3, 448, 336]]
TEXTS = ["describe this image", "what is in it", "describe this image", "what colour is it"]
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def server(checkpoint, small_bundle, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
         "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--seed", "0",
         "--max-num-seqs", "4", "--limit-mm-per-prompt", json.dumps({"image": 2, "video": 0}),
         # Per-request mm_processor_kwargs are off unless the operator trusts
         # clients; with them on, the NPU bound still holds per request.
         "--trust-request-mm-kwargs", "--host", "127.0.0.1", "--port", str(port)],
        env=engine_env("onnxrt", small_bundle), stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, base, log_path)
    except RuntimeError as e:
        pytest.fail(str(e))
    yield base, proc, log_path
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _data_url(spec: list[int]) -> str:
    buffer = io.BytesIO()
    make_image(*spec).save(buffer, format="PNG")  # lossless: the same pixels as LLM gets
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _chat(base: str, image_url: str, text: str, **extra):
    import requests

    body = {
        "model": extra.pop("model"),
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": text},
        ]}],
        "temperature": 0.0, "max_tokens": MAX_TOKENS, "ignore_eos": True,
        "return_token_ids": True, **extra,
    }
    return requests.post(f"{base}/v1/chat/completions", json=body, timeout=300)


def _model(base: str) -> str:
    import requests

    return requests.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]


def test_concurrent_chat_completions_match_llm(server, run_engine, small_bundle):
    base, proc, _ = server
    model = _model(base)
    with ThreadPoolExecutor(len(IMAGES)) as pool:
        responses = list(pool.map(
            lambda args: _chat(base, _data_url(args[0]), args[1], model=model),
            zip(IMAGES, TEXTS, strict=True)))
    assert [r.status_code for r in responses] == [200] * len(IMAGES), [r.text for r in responses]
    served = [r.json()["choices"][0]["token_ids"] for r in responses]
    offline = run_engine("onnxrt", small_bundle, [[
        {"prompt": chat_prompt(text, images=1), "images": [image]}
        for image, text in zip(IMAGES, TEXTS, strict=True)
    ]], max_tokens=MAX_TOKENS)
    assert served == [o["tokens"] for o in offline["batches"][0]["outputs"]]
    assert proc.poll() is None


@pytest.mark.parametrize("case", ["asks for more pixels", "not an image"])
def test_a_bad_request_is_answered_400_and_the_next_is_served(server, case):
    base, proc, log_path = server
    model = _model(base)
    if case == "asks for more pixels":
        bad = _chat(base, _data_url(IMAGES[2]), "describe", model=model,
                    mm_processor_kwargs={"max_pixels": 800 * 800})
        assert bad.status_code == 400, bad.text
        assert "256 patches" in bad.text and "max_pixels" in bad.text
    else:
        junk = "data:image/png;base64," + base64.b64encode(b"no image here").decode()
        bad = _chat(base, junk, "describe", model=model)
        assert bad.status_code == 400, bad.text
    good = _chat(base, _data_url(IMAGES[0]), TEXTS[0], model=model)
    assert good.status_code == 200, good.text
    assert len(good.json()["choices"][0]["token_ids"]) == MAX_TOKENS
    assert proc.poll() is None, log_path.read_text()[-3000:]
