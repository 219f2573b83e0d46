"""overlay pin against the real package index (pypi.org), for vLLM: the machines this runs on
reach it. On a laptop without a network the test is skipped; under CI=true it fails."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from engine_overlay.config import load_project
from engine_overlay.pinning import resolve

ROOT = Path(__file__).resolve().parents[2]
SHA_033 = "f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112"


@pytest.fixture
def project_without_033(tmp_path):
    """A copy of this project's VERSIONS.toml with the vLLM 0.33.0 pin removed (and the series
    beside it); the verified archive of the user's cache is reused where it is there."""
    try:
        urllib.request.urlopen("https://pypi.org/simple/", timeout=20).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"pypi.org is not reachable: {exc}")
        pytest.skip(f"pypi.org is not reachable: {exc}")
    text = (ROOT / "VERSIONS.toml").read_text()
    table = re.search(r'\[vllm\.pins\."0\.33\.0"\]\n(?:[^\[\n].*\n)*\n', text)
    assert table, "VERSIONS.toml pins vLLM 0.33.0"
    project = tmp_path / "project"
    project.mkdir()
    (project / "VERSIONS.toml").write_text(text[:table.start()] + text[table.end():])
    for name in ("patches", "overlay", "markers"):
        shutil.copytree(ROOT / name, project / name)
    import platformdirs

    cached = Path(platformdirs.user_cache_dir("engine-overlay")) / "downloads" / "vllm-0.33.0.tar.gz"
    if cached.is_file():  # else the test downloads it (47 MB) and verifies it
        (tmp_path / "cache" / "downloads").mkdir(parents=True)
        shutil.copy2(cached, tmp_path / "cache" / "downloads")
    return project


def test_pin_vllm_033_from_the_real_index(project_without_033, run_cli):
    versions = project_without_033 / "VERSIONS.toml"
    before = versions.read_text()
    engine = load_project(project_without_033).engine("vllm")
    latest = resolve(engine, "latest")
    assert not latest.pinned or latest.version != "0.33.0"
    assert latest.source.kind == "sdist" and re.fullmatch(r"[0-9a-f]{64}", latest.source.sha256)
    assert tuple(int(x) for x in latest.version.split(".")[:2]) >= (0, 34)

    code, out, data = run_cli("--format", "json", "pin", "vllm", "0.33.0", project=project_without_033)
    assert code == 0, out
    assert data["source"] == {"kind": "sdist", "file": "vllm-0.33.0.tar.gz", "sha256": SHA_033}
    diff = [line for line in difflib.unified_diff(before.splitlines(), versions.read_text().splitlines(),
                                                  lineterm="", n=0) if not line.startswith(("---", "+++", "@@"))]
    table = ['[vllm.pins."0.33.0"]', 'kind = "sdist"', 'file = "vllm-0.33.0.tar.gz"', f'sha256 = "{SHA_033}"']
    assert sorted(diff) == sorted(["+" + line for line in table] + ["+"]), diff  # added lines, nothing else
    after = versions.read_text()
    assert after.index("\n".join(table)) < after.index("[lmdeploy]")  # among vLLM's pins
