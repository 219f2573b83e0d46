"""Malformed inputs of every kind, disk-full, truncated downloads, corrupt caches,
concurrent runs and paths escaping the tree: one clear error, no traceback, and
nothing of the user's lost or half-written."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

from click.testing import CliRunner

from engine_overlay.cli import cli
from helpers import diff_of, git, make_project, make_repo, repo_state, snapshot_tree, write_tree

BASE = {f"pkg/m{i}.py": "".join(f"v{j} = {j}\n" for j in range(30)) for i in range(6)}
BASE[".gitignore"] = "*.local\n"
USER_NOTE = "the user's own notes\n"


def invoke(*argv: str):
    result = CliRunner().invoke(cli, list(argv), catch_exceptions=True)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result.exit_code, result.output, crashed


def fixture_repo(tmp_path: Path):
    repo = make_repo(tmp_path / "up", BASE)
    (repo / "notes.local").write_text(USER_NOTE)
    patches = {f"000{i}-m{i}.patch": diff_of(repo, f"pkg/m{i}.py", BASE[f"pkg/m{i}.py"].replace(
        "v12 = 12", f"v12 = 'patched {i}'"), f"m{i}") for i in range(6)}
    project = make_project(tmp_path / "proj", patches, overlay={"pkg/npu/new.py": "x = 1\n"})
    return repo, project


def reset(repo: Path) -> None:
    git(repo, "checkout", "-q", "-f", "main")
    for branch in git(repo, "branch", "--format=%(refname:short)").split():
        if branch != "main":
            git(repo, "branch", "-q", "-D", branch)


def mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["truncate", "flip", "drop-line", "dup-line", "garbage-line"])
    if not data:
        return b"\xff"
    if kind == "truncate":
        return data[:rng.randrange(len(data))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    lines = data.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    if kind == "drop-line":
        del lines[i]
    elif kind == "dup-line":
        lines.insert(i, lines[i])
    else:
        lines.insert(i, bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 40))) + b"\n")
    return b"".join(lines)


def check_target(repo: Path, before: dict, code: int) -> bool:
    """True when the user's data is intact: untouched, or (exit 0) a clean applied branch."""
    if (repo / "notes.local").read_text() != USER_NOTE:
        return False
    state = repo_state(repo)
    if code == 0:
        return state["status"] == ""
    return state["head"] == before["head"] and state["files"] == before["files"] and state["status"] == ""


def test_malformed_patches(tmp_path, ledger):
    repo, project = fixture_repo(tmp_path)
    before = repo_state(repo)
    rng = random.Random(42)
    names = sorted((project / "patches/demo").glob("*.patch"))
    for _ in range(60):
        victim = rng.choice(names)
        original = victim.read_bytes()
        victim.write_bytes(mutate(original, rng))
        code, out, crashed = invoke("--project", str(project), "apply", "demo", "--checkout", str(repo))
        ok = not crashed and code in (0, 1, 2) and check_target(repo, before, code)
        if code == 2:
            ok &= "error:" in out
        ledger.record("apply", "malformed patch", recovered=ok, lost=not ok)
        assert ok, out
        victim.write_bytes(original)
        reset(repo)


def test_malformed_series_and_versions(tmp_path, ledger):
    repo, project = fixture_repo(tmp_path)
    before = repo_state(repo)
    rng = random.Random(43)
    for name in ["patches/demo/series"] * 30 + ["VERSIONS.toml"] * 30:
        path = project / name
        original = path.read_bytes()
        path.write_bytes(mutate(original, rng))
        for argv in (("lint",), ("apply", "demo", "--checkout", str(repo))):
            code, out, crashed = invoke("--project", str(project), *argv)
            ok = not crashed and code in (0, 1, 2)
            if argv[0] == "apply":
                ok &= check_target(repo, before, code)
                reset(repo)
            ledger.record(argv[0], f"malformed {Path(name).name}", recovered=ok, lost=not ok)
            assert ok, out
        path.write_bytes(original)


def test_malformed_snapshot_and_waivers(tmp_path, ledger):
    root = tmp_path / "tree"
    write_tree(root, {"runner.py": "class R:\n    def f(self):\n        # ---- Omni-new: hs ----\n"
                                   "        self.hidden = 1\n        # ---- Omni-new: hs ----\n        return 1\n"})
    snapshot = tmp_path / "snap.json"
    code, out, crashed = invoke("markers", "snapshot", "--root", str(root), "-o", str(snapshot))
    assert code == 0 and not crashed, out
    waivers = tmp_path / "waivers.toml"
    waivers.write_text('[[waiver]]\nid = "hs"\nreason = "moved upstream"\nexpires = "2099-01-01"\n')
    rng = random.Random(44)
    for target in [snapshot] * 20 + [waivers] * 20:
        original = target.read_bytes()
        target.write_bytes(mutate(original, rng))
        code, out, crashed = invoke("check-markers", "--against", str(snapshot), "--root", str(root),
                                    "--waivers", str(waivers))
        ok = not crashed and code in (0, 1, 2)
        ok &= (root / "runner.py").read_text().count("Omni-new") == 2
        ledger.record("markers", f"malformed {target.suffix[1:]} file", recovered=ok, lost=not ok)
        assert ok, out
        target.write_bytes(original)


def test_malformed_marker_fences_in_transplant(tmp_path, ledger):
    old = tmp_path / "old.py"
    new = tmp_path / "new.py"
    old.write_text("def f():\n    return 1\n")
    new.write_text("def f():\n    x = 0\n    return 1\n")
    rng = random.Random(45)
    good = "def f():\n    # ---- Omni-new ----\n    y = 2\n    # ---- Omni-new ----\n    return 1\n"
    for _ in range(15):
        marked = tmp_path / "marked.py"
        text = mutate(good.encode(), rng)
        marked.write_bytes(text)
        out_file = tmp_path / "out.py"
        out_file.unlink(missing_ok=True)
        code, out, crashed = invoke("transplant", "--old-base", str(old), "--new-base", str(new), str(marked),
                                    "-o", str(out_file))
        ok = not crashed and code in (0, 1, 2) and marked.read_bytes() == text
        if out_file.exists():
            ok &= b"<<<<<<<" not in out_file.read_bytes()
        ledger.record("transplant", "malformed marked file", recovered=ok, lost=not ok)
        assert ok, out


def link_out_of(repo: Path, outside: Path) -> None:
    """Commit `link` -> *outside* into the fixture repository (and move its tag there)."""
    outside.mkdir()
    os.symlink(outside, repo / "link")
    git(repo, "add", "link")
    git(repo, "commit", "-qm", "a symlink")
    git(repo, "tag", "-f", "v1.0.0")


def test_paths_escaping_the_tree(tmp_path, ledger):
    repo, _ = fixture_repo(tmp_path)
    outside = tmp_path / "outside"
    link_out_of(repo, outside)
    before = repo_state(repo)
    evil = {
        "dotdot": "--- a/../evil.py\n+++ b/../evil.py\n@@ -0,0 +1 @@\n+x\n",
        "absolute": "--- /dev/null\n+++ /tmp/evil.py\n@@ -0,0 +1 @@\n+x\n",
        "git-dir": "diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\nnew file mode 100755\n"
                   "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+x\n",
        "rename-out": "diff --git a/pkg/m0.py b/../m0.py\nrename from pkg/m0.py\nrename to ../m0.py\n",
        "through-symlink": "diff --git a/link/x.py b/link/x.py\nnew file mode 100644\n--- /dev/null\n"
                           "+++ b/link/x.py\n@@ -0,0 +1 @@\n+x\n",
    }
    for label, diff in evil.items():
        project = make_project(tmp_path / f"proj-{label}", {"0001-evil.patch": diff})
        if label == "absolute":  # -p0 keeps the absolute name (with -p1 it is tmp/evil.py, inside)
            (project / "patches/demo/series").write_text("0001-evil.patch -p0\n")
        code, out, crashed = invoke("--project", str(project), "apply", "demo", "--checkout", str(repo))
        # refused: as a failed patch (exit 1, a verdict per patch) or a bad series (exit 2)
        ok = not crashed and code in (1, 2) and list(outside.iterdir()) == [] and repo_state(repo) == before
        ok &= not Path("/tmp/evil.py").exists() and not (tmp_path / "evil.py").exists()
        ok &= "0001-evil.patch" in out
        ledger.record("apply", "path escaping the tree", recovered=ok, lost=not ok)
        assert ok, out
    project = make_project(tmp_path / "proj-ovl", {}, overlay={"ok.py": "x\n"})
    os.symlink("/etc/hostname", project / "overlay/demo/evil.py")
    code, out, crashed = invoke("--project", str(project), "apply", "demo", "--checkout", str(repo))
    ok = not crashed and code == 2 and repo_state(repo) == before
    ledger.record("apply", "symlink in overlay", recovered=ok, lost=not ok)
    assert ok
    project = make_project(tmp_path / "proj-series", {})
    (project / "patches/demo/series").write_text("../../../etc/passwd\n")
    code, out, crashed = invoke("--project", str(project), "apply", "demo", "--checkout", str(repo))
    ok = not crashed and code == 2 and "escapes" in out
    ledger.record("apply", "series entry escaping", recovered=ok, lost=not ok)
    assert ok


def _limited(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def overlay_proc(project: Path, *args: str, preexec=None):
    return subprocess.run([sys.executable, "-m", "engine_overlay", "--project", str(project), *args],
                          capture_output=True, text=True, preexec_fn=preexec)


def test_disk_full_during_apply(tmp_path, ledger):
    repo, project = fixture_repo(tmp_path)
    before = repo_state(repo)
    rng = random.Random(46)
    for _ in range(20):
        limit = rng.choice([0, 10, 100, 300, 1000, 3000, 10_000, 100_000])
        result = overlay_proc(project, "apply", "demo", "--checkout", str(repo), preexec=_limited(limit))
        recovered = False
        if (repo / ".git/engine-overlay/journal.json").exists():
            assert overlay_proc(project, "apply", "demo", "--checkout", str(repo), "--abort").returncode == 0
            recovered = True
        ok = "Traceback" not in result.stderr and result.returncode in (0, 1, 2)
        state = repo_state(repo)
        if state["head"] != before["head"]:
            ok &= state["status"] == "" and result.returncode == 0
        else:
            ok &= state["files"] == before["files"]
        ok &= (repo / "notes.local").read_text() == USER_NOTE
        ledger.record("apply", "disk full (RLIMIT_FSIZE)", recovered=recovered or ok, lost=not ok)
        assert ok, result.stderr
        reset(repo)


def test_disk_full_during_installed_apply(tmp_path, ledger):
    _, project = fixture_repo(tmp_path)
    site = tmp_path / "site"
    write_tree(site, {k: v for k, v in BASE.items() if k.endswith(".py")})
    write_tree(site, {"demo_engine-1.0.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo-engine\n"
                      "Version: 1.0.0\n"})
    original = snapshot_tree(site)
    rng = random.Random(47)
    for _ in range(15):
        limit = rng.choice([0, 50, 200, 500, 2000, 100_000])
        result = overlay_proc(project, "apply", "demo", "--installed", "--site-packages", str(site),
                              preexec=_limited(limit))
        ok = "Traceback" not in result.stderr and result.returncode in (0, 1, 2)
        recovered = False
        if (site / ".engine-overlay/demo/record.json").exists():
            undo = overlay_proc(project, "unapply", "demo", "--installed", "--site-packages", str(site))
            ok &= undo.returncode == 0
            recovered = True
        for tmp in site.rglob(".*.overlay-tmp"):
            tmp.unlink()
        import shutil

        leftover = site / ".engine-overlay"
        if leftover.exists() and not (leftover / "demo" / "record.json").exists():
            shutil.rmtree(leftover)  # originals saved before the record: nothing was changed yet
        ok &= snapshot_tree(site) == original
        ledger.record("apply", "disk full (installed)", recovered=recovered or ok, lost=not ok)
        assert ok, result.stderr


def test_concurrent_applies(tmp_path, ledger):
    repo, project = fixture_repo(tmp_path)
    for _ in range(8):
        cmd = [sys.executable, "-m", "engine_overlay", "--project", str(project), "apply", "demo",
               "--checkout", str(repo)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [(p.wait(), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        ok = codes[0] == 0 and all(c in (0, 1, 2) for c in codes)
        ok &= all("Traceback" not in err for _, err in results)
        ok &= git(repo, "status", "--porcelain") == "" and (repo / "notes.local").read_text() == USER_NOTE
        ok &= git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "overlay/demo-1.0.0"
        ledger.record("apply", "concurrent run on one target", recovered=ok, lost=not ok)
        assert ok, results
        reset(repo)


class Index:
    """A PEP 691 index on loopback serving one sdist; `mode` injects faults."""

    def __init__(self, data: bytes, filename: str):
        self.data, self.filename, self.mode = data, filename, "ok"
        self.size = len(data)
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/simple/"):
                    body = json.dumps({"files": [{"filename": index.filename, "url": f"/f/{index.filename}",
                                                  "hashes": {"sha256": hashlib.sha256(index.data).hexdigest()}}]})
                    body = body.encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = index.data
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if index.mode == "truncated":
                    self.wfile.write(data[:len(data) // 3])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                elif index.mode == "corrupt":
                    self.wfile.write(data[:-10] + b"\0" * 10)
                else:
                    self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def local_index_project(tmp_path: Path, size_kb: int = 64):
    buf = io.BytesIO()
    rng = random.Random(1)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in {"PKG-INFO": b"Metadata-Version: 2.1\nName: eng\nVersion: 1.0\n",
                          "eng/__init__.py": b"x = 1\n",
                          "eng/blob.bin": bytes(rng.randrange(256) for _ in range(size_kb * 1024))}.items():
            info = tarfile.TarInfo(f"eng-1.0/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    index = Index(data, "eng-1.0.tar.gz")
    project = tmp_path / "idxproj"
    project.mkdir(exist_ok=True)
    (project / "VERSIONS.toml").write_text(
        f'[eng]\nversion = "1.0"\n[eng.pins."1.0"]\nkind = "sdist"\nfile = "eng-1.0.tar.gz"\n'
        f'sha256 = "{hashlib.sha256(data).hexdigest()}"\nindex = "{index.url}"\nexclude = ["*.bin"]\n')
    (project / "patches/eng").mkdir(parents=True, exist_ok=True)
    (project / "patches/eng/series").write_text("")
    return project, index


def test_bad_downloads_and_corrupt_cache(tmp_path, ledger):
    project, index = local_index_project(tmp_path)
    cache = Path(os.environ["ENGINE_OVERLAY_CACHE"])
    downloads = cache / "downloads"
    for mode in ["truncated"] * 6 + ["corrupt"] * 6:
        index.mode = mode
        code, out, crashed = invoke("--project", str(project), "fetch", "eng")
        ok = not crashed and code in (1, 2) and not list(downloads.glob("*")) and "eng-1.0.tar.gz" in out
        ledger.record("fetch", f"{mode} download", recovered=ok, lost=not ok)
        assert ok, out
    index.mode = "ok"
    code, out, crashed = invoke("--project", str(project), "--format", "json", "fetch", "eng")
    assert code == 0, out
    reference = json.loads(out)["commit"]
    rng = random.Random(48)
    cached = downloads / "eng-1.0.tar.gz"
    for _ in range(10):
        cached.write_bytes(mutate(cached.read_bytes(), rng))
        code, out, crashed = invoke("--project", str(project), "--format", "json", "fetch", "eng")
        ok = not crashed and code == 0 and json.loads(out)["commit"] == reference
        ok &= hashlib.sha256(cached.read_bytes()).hexdigest() == hashlib.sha256(index.data).hexdigest()
        ledger.record("fetch", "corrupted cache file", recovered=ok, lost=not ok)
        assert ok, out
    index.server.shutdown()
