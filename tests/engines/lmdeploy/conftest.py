"""The lmdeploy payload tests need torch, transformers and a patched lmdeploy
(`nox -s test_lmdeploy`); without them every test here skips."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # for `import tiny_qwen3_vl`
    sys.path.insert(0, str(HERE))
