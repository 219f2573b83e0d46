"""Regression tests for the defects found in the review of the seed change
(InternLM/lmdeploy#4460): each test fails on the seed's approach (kept here as
`seed_*` for the comparison) or on stock lmdeploy 0.18.0, and passes with
patches/lmdeploy applied.

1. Dependency checks required every family's classes at once.
2. With the vision encoder disabled, a request with images was answered from
   the text alone (images silently dropped) - in the serving layer and in the
   engines.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("lmdeploy")
pytest.importorskip("lmdeploy.turbomind.mrope", reason="lmdeploy without the engine-overlay series")

from lmdeploy.messages import (  # noqa: E402
    LanguageModelOnlyError,
    PytorchEngineConfig,
    TurbomindEngineConfig,
    reject_multimodal_if_language_model_only,
)
from lmdeploy.serve.processors.multimodal import MultimodalProcessor  # noqa: E402

# An environment whose transformers lacks one family: a meta-path finder makes
# the named transformers sub-packages unimportable, as in a release that does
# not ship them yet. Runs in a subprocess so this process keeps them.
BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + '.') for b in BLOCKED):
                raise ModuleNotFoundError(f'No module named {{name!r}} (blocked by the test)', name=name)
            return None

    def install_block():
        # after lmdeploy and transformers' core are imported: forget the
        # blocked sub-packages and the classes transformers cached from them
        import transformers
        sys.meta_path.insert(0, Block())
        for name in [m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in BLOCKED)]:
            del sys.modules[name]
        for name in [n for n in vars(transformers) if n.startswith(('Qwen3VL', 'Qwen3_5'))]:
            delattr(transformers, name)
""")

SEED_CHECK = textwrap.dedent("""
    def seed_check_qwen3_vl_deps_install():
        # the seed's check (lmdeploy#4460, lmdeploy/vl/model/qwen3.py): all four classes at once
        try:
            from transformers import (  # noqa: F401
                Qwen3_5ForConditionalGeneration,
                Qwen3_5MoeForConditionalGeneration,
                Qwen3VLForConditionalGeneration,
                Qwen3VLMoeForConditionalGeneration,
            )
        except ImportError:
            raise ImportError('please install latest transformers')
""")


def run_blocked(blocked: list[str], body: str) -> dict:
    code = BLOCK.format(blocked=blocked) + SEED_CHECK + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


CHECKS = """
    import json
    from types import SimpleNamespace
    from lmdeploy.vl.model.qwen3 import Qwen3VLModel
    from lmdeploy.vl.model.qwen3_5 import Qwen3_5Model

    install_block()

    def outcome(fn):
        try:
            fn()
            return 'ok'
        except Exception as e:  # ImportError, or the RuntimeError of transformers' lazy module
            return f'{type(e).__name__}: {e}'

    def patched(cls, arch):
        # check_deps() only reads hf_config.architectures
        obj = cls.__new__(cls)
        obj.hf_config = SimpleNamespace(architectures=[arch])
        return lambda: obj.check_deps()

    print(json.dumps({
        'seed': outcome(seed_check_qwen3_vl_deps_install),
        'qwen3_vl': outcome(patched(Qwen3VLModel, 'Qwen3VLForConditionalGeneration')),
        'qwen3_vl_moe': outcome(patched(Qwen3VLModel, 'Qwen3VLMoeForConditionalGeneration')),
        'qwen3_5': outcome(patched(Qwen3_5Model, 'Qwen3_5ForConditionalGeneration')),
        'qwen3_5_moe': outcome(patched(Qwen3_5Model, 'Qwen3_5MoeForConditionalGeneration')),
    }))
"""


def test_qwen3_vl_loads_when_transformers_lacks_qwen3_5():
    got = run_blocked(["transformers.models.qwen3_5", "transformers.models.qwen3_5_moe"], CHECKS)
    assert got["seed"] != "ok"  # the seed refuses Qwen3-VL because Qwen3.5 is missing
    assert got["qwen3_vl"] == "ok"
    assert got["qwen3_vl_moe"] == "ok"
    # the family that is really missing still fails, with a message naming it
    assert got["qwen3_5"].startswith("ImportError: Qwen3_5ForConditionalGeneration needs")
    assert "pip install -U transformers" in got["qwen3_5"]


def test_qwen3_5_loads_when_transformers_lacks_qwen3_vl():
    # stock 0.18.0 also fails here: Qwen3_5Model.build_preprocessor ran the
    # Qwen3-VL check (both Qwen3-VL classes) before its own
    got = run_blocked(["transformers.models.qwen3_vl", "transformers.models.qwen3_vl_moe"], CHECKS)
    assert got["seed"] != "ok"
    assert got["qwen3_5"] == "ok"
    assert got["qwen3_5_moe"] == "ok"
    assert got["qwen3_vl"].startswith("ImportError: Qwen3VLForConditionalGeneration needs")


def test_dense_checks_do_not_need_the_moe_family():
    got = run_blocked(["transformers.models.qwen3_vl_moe"], CHECKS)
    assert got["seed"] != "ok"
    assert got["qwen3_vl"] == "ok"
    assert got["qwen3_vl_moe"].startswith("ImportError")


# --------------------------------------------------------------------------
# language_model_only: a request with images fails, naming the flag
# --------------------------------------------------------------------------

IMAGE_REQUEST = [{"role": "user", "content": [
    {"type": "text", "text": "What is in the picture?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
]}]


def test_serving_layer_rejects_images_naming_the_flag():
    # the processor AsyncEngine builds for a VL model routed to 'llm' by language_model_only
    proc = MultimodalProcessor(tokenizer=None, chat_template=None, language_model_only=True)
    with pytest.raises(LanguageModelOnlyError, match=r"language_model_only=True \(--language-model-only\)"):
        asyncio.run(proc.get_prompt_input(IMAGE_REQUEST, do_preprocess=True))


def test_serving_layer_without_the_flag_keeps_its_message():
    proc = MultimodalProcessor(tokenizer=None, chat_template=None)
    with pytest.raises(ValueError, match="not supported by this model") as info:
        asyncio.run(proc.get_prompt_input(IMAGE_REQUEST, do_preprocess=True))
    assert not isinstance(info.value, LanguageModelOnlyError)


@pytest.mark.parametrize("config", [TurbomindEngineConfig, PytorchEngineConfig])
def test_engine_guard(config):
    with pytest.raises(LanguageModelOnlyError, match="language_model_only"):
        reject_multimodal_if_language_model_only(config(language_model_only=True), [{"modality": "image"}])
    reject_multimodal_if_language_model_only(config(language_model_only=True), [])  # text-only: fine
    reject_multimodal_if_language_model_only(config(language_model_only=False), [{"modality": "image"}])


# TurboMind's Python module imports the compiled library (CUDA). The stand-in
# below replaces only that library - a test double for TurboMind itself - so
# the pure-Python request path in lmdeploy/turbomind/turbomind.py can run.
FAKE_TM = textwrap.dedent("""
    import sys, types

    class _Any(type):
        def __getattr__(cls, name):
            if name.startswith('__'):
                raise AttributeError(name)
            t = _Any(name, (), {})
            setattr(cls, name, t)
            return t

    class FakeTurboMindLibrary(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith('__'):
                raise AttributeError(name)
            t = _Any(name, (), {})
            setattr(self, name, t)
            return t

    sys.modules['lmdeploy.turbomind._turbomind'] = FakeTurboMindLibrary('lmdeploy.turbomind._turbomind')
""")


def run_with_fake_turbomind(body: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", FAKE_TM + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_turbomind_rejects_images_instead_of_dropping_them():
    got = run_with_fake_turbomind("""
        import json
        from lmdeploy.messages import TurbomindEngineConfig
        from lmdeploy.turbomind.turbomind import TurboMind

        def convert(flag):
            tm = TurboMind.__new__(TurboMind)  # no engine: only the request conversion runs
            tm.engine_config = TurbomindEngineConfig(language_model_only=flag)
            try:
                return repr(tm.mm_input_converter([{'modality': 'image'}]))
            except Exception as e:
                return f'{type(e).__name__}: {e}'

        print(json.dumps({'lmo': convert(True)}))
    """)
    # stock 0.18.0 returns None here (a warning, then the image is ignored)
    assert got["lmo"].startswith("LanguageModelOnlyError: ")
    assert "language_model_only=True (--language-model-only)" in got["lmo"]


def test_turbomind_registers_qwen3_vl_source_models():
    got = run_with_fake_turbomind("""
        import json
        from lmdeploy.turbomind.models.base import INPUT_MODELS
        from lmdeploy.turbomind.models.qwen3_vl import packed_experts_transposed
        from lmdeploy.turbomind.supported_models import SUPPORTED_ARCHS

        names = {a: SUPPORTED_ARCHS[a] for a in ('Qwen3VLForConditionalGeneration',
                                                   'Qwen3VLMoeForConditionalGeneration')}
        print(json.dumps({
            'classes': {a: INPUT_MODELS.get(n).__name__ for a, n in names.items()},
            'vision_contract': [getattr(INPUT_MODELS.get(n), '_vision', False) for n in names.values()],
            'external_mrope': [getattr(INPUT_MODELS.get(n), 'external_mrope', False) for n in names.values()],
            'hub_layout': packed_experts_transposed((4, 48, 2 * 16), 16),
            'hf5_layout': packed_experts_transposed((4, 2 * 16, 48), 16),
        }))
    """)
    assert set(got["classes"].values()) == {"Qwen3VLModel"}
    assert got["vision_contract"] == [True, True]
    assert got["external_mrope"] == [True, True]
    assert got["hub_layout"] is True and got["hf5_layout"] is False


def test_cli_flag_reaches_the_turbomind_config():
    import argparse

    from lmdeploy.cli.serve import SubCliServe
    from lmdeploy.cli.utils import ArgumentHelper

    parser = argparse.ArgumentParser()
    ArgumentHelper.language_model_only(parser)
    assert parser.parse_args(["--language-model-only"]).language_model_only is True
    assert parser.parse_args([]).language_model_only is False
    assert "fail" in parser._actions[-1].help  # the help says what happens to images
    assert hasattr(SubCliServe, "api_server")
