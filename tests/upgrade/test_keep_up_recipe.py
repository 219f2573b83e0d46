"""The CI recipe (docs/ci/keep-up-with-upstream.sh) run for real on a project in a git checkout:
nothing new, a new release the series applies to (pinned on a branch, checks run), and one
that breaks it (reported, nothing pinned)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import GIT_ENV, diff_of, git, make_repo, write_patch

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "ci" / "keep-up-with-upstream.sh"


def _body(top: int = 0, line_10: str = "line 10") -> str:
    lines = [f"# new upstream {i}" for i in range(top)] + [f"line {i}" for i in range(30)]
    lines[top + 10] = line_10
    return "\n".join(lines) + "\n"


def _release(up: Path, version: str, content: str) -> None:
    (up / "m.py").write_text(content)
    git(up, "commit", "-qam", version)
    git(up, "tag", f"v{version}")


def _keep_up(project: Path, out: Path) -> dict[str, str]:
    overlay = f"{sys.executable} -m engine_overlay"
    env = {**os.environ, **GIT_ENV, "OVERLAY": overlay, "KEEP_UP_DIR": str(out),
           "KEEP_UP_CHECK": "$OVERLAY fetch eng && $OVERLAY apply eng && $OVERLAY status eng"}
    env.pop("GITHUB_OUTPUT", None)
    proc = subprocess.run(["bash", str(SCRIPT), "eng"], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def test_the_recipe_pins_a_clean_release_on_a_branch_and_reports_a_broken_one(tmp_path):
    up = make_repo(tmp_path / "up", {"m.py": _body()}, tag="v1.0")
    project = tmp_path / "project"
    write_patch(project / "patches/eng", "0001-m.patch", diff_of(up, "m.py", _body(line_10="line ten"), "m"))
    (project / "patches/eng/series").write_text("0001-m.patch\n")
    (project / "VERSIONS.toml").write_text(
        f'# the engine\n[eng]\nversion = "1.0"\n\n[eng.pins."1.0"]\nkind = "git"\nurl = "{up}"\ntag = "v1.0"\n'
        f'commit = "{git(up, "rev-parse", "v1.0").strip()}"\n')
    (project / ".gitignore").write_text(".keep-up/\n")
    make_repo(project, {}, tag=None)
    out = tmp_path / "out"

    result = _keep_up(project, out)
    assert result == {"version": "1.0", "summary": f"{out}/eng.md", "outcome": "up-to-date"}

    _release(up, "1.1", _body(top=4))  # the patch applies 4 lines lower
    result = _keep_up(project, out)
    assert result["outcome"] == "ported" and result["version"] == "1.1", result
    assert result["branch"] == "keep-up/eng-1.1" and git(project, "branch", "--show-current").strip() == "keep-up/eng-1.1"
    assert git(project, "status", "--porcelain") == ""
    assert git(project, "diff", "--name-only", "main", "HEAD").split() == ["VERSIONS.toml"]
    versions = (project / "VERSIONS.toml").read_text()
    assert 'version = "1.1"' in versions and '[eng.pins."1.1"]' in versions and versions.startswith("# the engine")
    assert (out / "eng.md").read_text().startswith("## eng 1.0 → 1.1: clean\n")
    tree = Path(os.environ["ENGINE_OVERLAY_CACHE"]) / "trees" / "eng-1.1"
    assert "overlay/eng-1.1" in git(tree, "branch", "--format=%(refname:short)")  # the checks ran

    git(project, "switch", "-q", "main")
    _release(up, "1.2", _body(line_10="line 10 upstream"))  # upstream rewrote the patched line
    result = _keep_up(project, out)
    assert result["outcome"] == "broken" and result["version"] == "1.2" and "branch" not in result, result
    summary = (out / "eng.md").read_text()
    assert summary.startswith("## eng 1.0 → 1.2: conflicts\n") and "| `0001-m.patch` | **conflicts** |" in summary
    assert git(project, "status", "--porcelain") == "" and 'version = "1.0"' in (project / "VERSIONS.toml").read_text()
    assert "keep-up/eng-1.2" not in git(project, "branch", "--format=%(refname:short)")
