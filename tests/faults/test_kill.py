"""SIGKILL at random points of apply (git and installed targets), upgrade and fetch."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import git, make_project, make_repo, repo_state, snapshot_tree, write_tree

TRIALS = 16


def overlay_cmd(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine_overlay", "--project", str(project), *args]


def run(project: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(overlay_cmd(project, *args), capture_output=True, text=True, env=env)


def kill_at(cmd: list[str], delay: float, env=None) -> int:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()


def timed(cmd: list[str], env=None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, env=env)
    return time.perf_counter() - start


def series_project(tmp_path: Path, files: int = 30):
    base = {f"pkg/m{i}.py": "".join(f"v{j} = {j}\n" for j in range(40)) for i in range(files)}
    base[".gitignore"] = "*.local\n"
    repo = make_repo(tmp_path / "up", base)
    (repo / "notes.local").write_text("the user's own notes, ignored by git\n")
    patches = {}
    for i in range(files):
        path = f"pkg/m{i}.py"
        patches[f"{i:04d}-m{i}.patch"] = (
            f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -9,7 +9,7 @@\n"
            " v8 = 8\n v9 = 9\n v10 = 10\n-v11 = 11\n+v11 = 'patched'\n v12 = 12\n v13 = 13\n v14 = 14\n")
    project = make_project(tmp_path / "proj", patches, overlay={"pkg/npu/new.py": "x = 1\n"})
    return repo, project


def test_kill_apply_checkout(tmp_path, ledger):
    repo, project = series_project(tmp_path)
    before = repo_state(repo)
    cmd = overlay_cmd(project, "apply", "demo", "--checkout", str(repo))
    duration = timed(cmd)
    applied = snapshot_tree(repo)
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "overlay/demo-1.0.0")
    rng = random.Random(7)
    for _ in range(TRIALS):
        kill_at(cmd, rng.uniform(0, duration * 1.1))
        recovered = False
        if (repo / ".git/engine-overlay/journal.json").exists():
            assert run(project, "apply", "demo", "--checkout", str(repo), "--abort").returncode == 0
            recovered = True
        state = repo_state(repo)
        lost = (repo / "notes.local").read_text() != "the user's own notes, ignored by git\n"
        if state["head"] == before["head"]:
            lost |= state["files"] != before["files"] or "overlay/demo-1.0.0" in state["branches"]
        else:
            lost |= snapshot_tree(repo) != applied or state["status"] != ""
        ledger.record("apply", "kill -9 (checkout)", recovered=recovered, lost=lost)
        assert not lost
        git(repo, "checkout", "-q", "-f", "main")
        if "overlay/demo-1.0.0" in git(repo, "branch"):
            git(repo, "branch", "-q", "-D", "overlay/demo-1.0.0")


def test_kill_apply_installed(tmp_path, ledger):
    _, project = series_project(tmp_path)
    site = tmp_path / "site"
    write_tree(site, {f"pkg/m{i}.py": "".join(f"v{j} = {j}\n" for j in range(40)) for i in range(30)})
    write_tree(site, {"demo_engine-1.0.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo-engine\n"
                      "Version: 1.0.0\n", "user_file.txt": "mine\n"})
    original = snapshot_tree(site)
    cmd = overlay_cmd(project, "apply", "demo", "--installed", "--site-packages", str(site))
    duration = timed(cmd)
    assert run(project, "unapply", "demo", "--installed", "--site-packages", str(site)).returncode == 0
    rng = random.Random(11)
    for _ in range(TRIALS):
        kill_at(cmd, rng.uniform(0, duration * 1.1))
        recovered = (site / ".engine-overlay/demo/record.json").exists()
        if recovered:
            result = run(project, "unapply", "demo", "--installed", "--site-packages", str(site))
            assert result.returncode == 0, result.stderr
        stray = [p for p in site.rglob("*.overlay-tmp")]
        for path in stray:  # an interrupted atomic write leaves only its temp file
            path.unlink()
        # the package's files must be exactly the originals; the lock file in .engine-overlay/
        # may stay (it is only ever flock'ed, never read)
        files = {k: v for k, v in snapshot_tree(site).items() if not k.startswith(".engine-overlay/")}
        lost = files != original
        lost |= (site / ".engine-overlay/demo/record.json").exists()
        ledger.record("apply", "kill -9 (installed)", recovered=recovered, lost=lost)
        assert not lost


def test_kill_upgrade(tmp_path, ledger):
    up = make_repo(tmp_path / "upstream", {f"pkg/m{i}.py": "".join(f"v{j} = {j}\n" for j in range(40))
                                           for i in range(20)}, tag="v1.0")
    for i in range(20):
        (up / f"pkg/m{i}.py").write_text("# 2.0 header\n" + "".join(f"v{j} = {j}\n" for j in range(40)))
    git(up, "commit", "-qam", "2.0")
    git(up, "tag", "v2.0")
    c1, c2 = git(up, "rev-parse", "v1.0").strip(), git(up, "rev-parse", "v2.0").strip()
    project = tmp_path / "proj"
    patches = {}
    for i in range(20):
        path = f"pkg/m{i}.py"
        patches[f"{i:04d}-m{i}.patch"] = (
            f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -9,7 +9,7 @@\n"
            " v8 = 8\n v9 = 9\n v10 = 10\n-v11 = 11\n+v11 = 'patched'\n v12 = 12\n v13 = 13\n v14 = 14\n")
    make_project(project, patches)
    (project / "VERSIONS.toml").write_text(
        f'[demo]\nversion = "1.0"\n[demo.pins."1.0"]\nkind = "git"\nurl = "{up}"\ntag = "v1.0"\ncommit = "{c1}"\n'
        f'[demo.pins."2.0"]\nkind = "git"\nurl = "{up}"\ntag = "v2.0"\ncommit = "{c2}"\n')
    assert run(project, "fetch", "demo", "--version", "2.0").returncode == 0
    tree = Path(__import__("json").loads(run(project, "--format", "json", "fetch", "demo", "--version",
                                             "2.0").stdout)["tree"])
    pristine_project = {p.relative_to(project): p.read_bytes() for p in project.rglob("*") if p.is_file()}
    pristine_tree = repo_state(tree)
    cmd = overlay_cmd(project, "upgrade", "demo", "--to", "2.0")
    duration = timed(cmd)
    upgraded_versions = (project / "VERSIONS.toml").read_text()
    rng = random.Random(5)
    for _ in range(TRIALS):
        # back to the starting point
        for rel, data in pristine_project.items():
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            (project / rel).write_bytes(data)
        git(tree, "checkout", "-q", "-f", "upstream")
        for branch in git(tree, "branch", "--format=%(refname:short)").split():
            if branch.startswith("overlay/"):
                git(tree, "branch", "-q", "-D", branch)
        (tree / ".git/engine-overlay/upgrade.json").unlink(missing_ok=True)
        (tree / ".git/engine-overlay/journal.json").unlink(missing_ok=True)
        kill_at(cmd, rng.uniform(0, duration * 1.1))
        recovered = False
        if (tree / ".git/engine-overlay/upgrade.json").exists():
            result = run(project, "upgrade", "demo", "--abort")
            assert result.returncode == 0, result.stderr
            recovered = True
        versions = (project / "VERSIONS.toml").read_text()
        lost = versions not in (pristine_project[Path("VERSIONS.toml")].decode(), upgraded_versions)
        series = (project / "patches/demo/series").read_text()
        lost |= not series.endswith("\n")  # never half-written
        if recovered:
            lost |= repo_state(tree)["files"] != pristine_tree["files"]
        ledger.record("upgrade", "kill -9", recovered=recovered, lost=lost)
        assert not lost


def test_kill_fetch(tmp_path, ledger):
    from test_inputs import local_index_project

    project, index = local_index_project(tmp_path, size_kb=2048)
    cmd = overlay_cmd(project, "fetch", "eng")
    env = {**os.environ}
    duration = timed(cmd, env)
    reference = run(project, "--format", "json", "fetch", "eng").stdout
    commit = __import__("json").loads(reference)["commit"]
    cache = Path(os.environ["ENGINE_OVERLAY_CACHE"])
    rng = random.Random(3)
    for _ in range(TRIALS):
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
        kill_at(cmd, rng.uniform(0, duration * 1.1), env)
        downloads = cache / "downloads"
        finals = [p for p in downloads.glob("*.tar.gz")] if downloads.exists() else []
        result = run(project, "--format", "json", "fetch", "eng")
        ok = result.returncode == 0 and __import__("json").loads(result.stdout)["commit"] == commit
        bad_final = any(p.stat().st_size != index.size for p in finals)
        ledger.record("fetch", "kill -9", recovered=ok, lost=bad_final or not ok)
        assert ok and not bad_final
    index.server.shutdown()
