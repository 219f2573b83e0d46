"""overlay fetch against a real HTTP package index (PEP 691 JSON) served on loopback."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from helpers import git


def make_sdist(path: Path, name: str, version: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in {
            "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            f"{name}/__init__.py": f"VERSION = '{version}'\n",
            f"{name}/tool.sh": "#!/bin/sh\n",
            ".gitignore": "*.py\n",  # upstream ignore rules must not drop upstream files
        }.items():
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size = len(data)
            info.mode = 0o755 if rel.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data.encode()))
    data = buf.getvalue()
    path.write_bytes(data)
    return data


class Index:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        self.published: dict[str, str] = {}  # filename -> sha256 the index claims
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                index.requests.append(self.path)
                if self.path.startswith("/simple/"):
                    files = [{"filename": f, "url": f"/files/{f}", "hashes": {"sha256": sha}}
                             for f, sha in index.published.items()]
                    body = json.dumps({"files": files}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
                elif self.path.startswith("/files/"):
                    body = (index.root / self.path.rsplit("/", 1)[-1]).read_bytes()
                    self.send_response(200)
                else:
                    body = b""
                    self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "files")
    idx.root.mkdir()
    yield idx
    idx.server.shutdown()


def project_for(root: Path, index_url: str, sha: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "VERSIONS.toml").write_text(f"""[eng]
version = "1.2.0"
[eng.pins."1.2.0"]
kind = "sdist"
file = "eng-1.2.0.tar.gz"
sha256 = "{sha}"
index = "{index_url}"
""")
    (root / "patches/eng").mkdir(parents=True)
    (root / "patches/eng/series").write_text("")
    return root


def test_fetch_verifies_caches_and_builds_tagged_tree(tmp_path, index, run_cli):
    data = make_sdist(index.root / "eng-1.2.0.tar.gz", "eng", "1.2.0")
    sha = hashlib.sha256(data).hexdigest()
    index.published["eng-1.2.0.tar.gz"] = sha
    project = project_for(tmp_path / "p", index.url, sha)
    code, out, result = run_cli("--format", "json", "fetch", "eng", project=project)
    assert code == 0, out
    assert result["downloaded"] and result["tree_created"]
    tree = Path(result["tree"])
    assert (tree / "eng/__init__.py").read_text() == "VERSION = '1.2.0'\n"
    assert (tree / "eng/tool.sh").stat().st_mode & 0o100
    assert git(tree, "log", "--format=%s").strip() == "upstream eng 1.2.0"
    assert "eng/__init__.py" in git(tree, "ls-files")  # despite the upstream .gitignore
    assert git(tree, "rev-parse", "upstream/eng-1.2.0").strip() == result["commit"]
    downloads = [r for r in index.requests if r.startswith("/files/")]
    code, out, again = run_cli("--format", "json", "fetch", "eng", project=project)
    assert code == 0 and not again["downloaded"] and not again["tree_created"]
    assert [r for r in index.requests if r.startswith("/files/")] == downloads  # cache hit: no download
    assert again["commit"] == result["commit"]


def test_index_digest_differs_from_pin(tmp_path, index, run_cli):
    make_sdist(index.root / "eng-1.2.0.tar.gz", "eng", "1.2.0")
    index.published["eng-1.2.0.tar.gz"] = "a" * 64
    project = project_for(tmp_path / "p", index.url, "b" * 64)
    code, out, _ = run_cli("fetch", "eng", project=project)
    assert code == 1 and "index publishes sha256 " + "a" * 64 in out and "b" * 64 in out
    assert "Traceback" not in out


def test_download_hash_mismatch_deletes_file(tmp_path, index, run_cli):
    make_sdist(index.root / "eng-1.2.0.tar.gz", "eng", "1.2.0")
    pinned = "c" * 64
    index.published["eng-1.2.0.tar.gz"] = pinned  # the index claims the pinned digest but serves other bytes
    project = project_for(tmp_path / "p", index.url, pinned)
    code, out, _ = run_cli("fetch", "eng", project=project)
    assert code == 1 and f"expected {pinned}, got " in out
    downloads = tmp_path / "cache" / "downloads"
    assert list(downloads.iterdir()) == []  # neither the file nor a .part is kept


def test_corrupt_cache_file_is_replaced(tmp_path, index, run_cli):
    data = make_sdist(index.root / "eng-1.2.0.tar.gz", "eng", "1.2.0")
    sha = hashlib.sha256(data).hexdigest()
    index.published["eng-1.2.0.tar.gz"] = sha
    project = project_for(tmp_path / "p", index.url, sha)
    cached = tmp_path / "cache" / "downloads" / "eng-1.2.0.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data[:100])
    code, out, result = run_cli("--format", "json", "fetch", "eng", project=project)
    assert code == 0 and result["downloaded"]
    assert cached.read_bytes() == data


def test_unknown_engine_and_version(tmp_path, index, run_cli):
    project = project_for(tmp_path / "p", index.url, "d" * 64)
    code, out, _ = run_cli("fetch", "nope", project=project)
    assert code == 2 and "unknown engine 'nope'" in out
    code, out, _ = run_cli("fetch", "eng", "--version", "9.9", project=project)
    assert code == 2 and "no pin for version 9.9" in out and "1.2.0" in out


def test_a_tree_cached_for_another_pin_of_the_version_is_never_reused(tmp_path, index, run_cli):
    data = make_sdist(index.root / "eng-1.2.0.tar.gz", "eng", "1.2.0")
    sha = hashlib.sha256(data).hexdigest()
    index.published["eng-1.2.0.tar.gz"] = sha
    project = project_for(tmp_path / "p", index.url, sha)
    code, out, sdist = run_cli("--format", "json", "fetch", "eng", project=project)
    assert code == 0, out
    # the same version, now pinned as a git tag of another commit
    up = tmp_path / "up"
    up.mkdir()
    git(up, "init", "-q", "-b", "main")
    (up / "other.py").write_text("x = 1\n")
    git(up, "add", "-A")
    git(up, "commit", "-qm", "git release")
    git(up, "tag", "v1.2.0")
    commit = git(up, "rev-parse", "HEAD").strip()
    (project / "VERSIONS.toml").write_text(f'[eng]\nversion = "1.2.0"\n[eng.pins."1.2.0"]\nkind = "git"\n'
                                           f'url = "{up}"\ntag = "v1.2.0"\ncommit = "{commit}"\n')
    code, out, data = run_cli("--format", "json", "apply", "eng", "--check", project=project)
    assert code == 2 and "not the pinned source" in out, out
    code, out, data = run_cli("--format", "json", "fetch", "eng", project=project)
    assert code == 0 and data["tree_created"] and data["commit"] == commit != sdist["commit"], out
    assert data["warnings"] and "made again" in data["warnings"][0]
    assert (Path(data["tree"]) / "other.py").exists() and not (Path(data["tree"]) / "eng").exists()
