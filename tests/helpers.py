"""Helpers for tests: real git repositories and projects built in temporary directories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
}


def require_tool(found: str | None, what: str, install: str) -> str:
    """*found* (a tool's path), else skip on a laptop; under CI=true a missing tool fails, never
    skips: CI installs everything a test needs (*install* says how)."""
    if found is None:
        import pytest

        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is not installed ({install})")
        pytest.skip(f"{what} is not installed ({install})")
    return found


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)


def make_repo(root: Path, files: dict[str, str | bytes], tag: str | None = "v1.0.0") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    write_tree(root, files)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "upstream")
    if tag:
        git(root, "tag", tag)
    return root


def snapshot_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root except .git: bytes and exec bit (for exact comparisons)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if ".git" in path.relative_to(root).parts or ".pc" in path.relative_to(root).parts:
            continue
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = (path.read_bytes(), path.stat().st_mode & 0o111)
    return out


def repo_state(root: Path) -> dict:
    return {
        "head": git(root, "rev-parse", "HEAD").strip(),
        "branch": git(root, "symbolic-ref", "-q", "--short", "HEAD").strip(),
        "branches": git(root, "branch", "--format=%(refname:short)"),
        "status": git(root, "status", "--porcelain", "--untracked-files=all"),
        "files": snapshot_tree(root),
    }


def diff_of(repo: Path, path: str, new: str | bytes, message: str) -> str:
    """A real `git diff` of changing *path* to *new* in *repo* (left unchanged)."""
    old = (repo / path).read_bytes() if (repo / path).exists() else None
    write_tree(repo, {path: new})
    git(repo, "add", "-A")
    out = git(repo, "diff", "--cached", "--full-index")
    git(repo, "reset", "-q", "--hard")
    if old is None:
        (repo / path).unlink(missing_ok=True)
    return out


PATCH_HEAD = """From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Dev <dev@example.com>
Date: Mon, 1 Jan 2024 10:00:00 +0000
Subject: [PATCH] {subject}

{subject} because the test says so.

Upstream-Status: Pending
---
"""


def write_patch(directory: Path, name: str, diff: str, subject: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(PATCH_HEAD.format(subject=subject or name) + diff)
    return path


def make_project(root: Path, patches: dict[str, str], overlay: dict[str, str] | None = None,
                 extra: str = "", version: str = "1.0.0") -> Path:
    """A project with one engine `demo` (git source) and the given patches/overlay files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "VERSIONS.toml").write_text(f"""# test project
[demo]
version = "{version}"
series = "patches/demo/series"
overlay = "overlay/demo"
distributions = ["demo-engine"]
{extra}
[demo.pins."{version}"]
kind = "git"
url = "file:///nonexistent"
tag = "v{version}"
commit = "{'0' * 40}"
""")
    series_dir = root / "patches" / "demo"
    series_dir.mkdir(parents=True, exist_ok=True)
    for name, diff in patches.items():
        write_patch(series_dir, name, diff)
    (series_dir / "series").write_text("".join(f"{name}\n" for name in patches))
    if overlay:
        write_tree(root / "overlay" / "demo", overlay)
    return root


def make_sdist(name: str, version: str, files: dict[str, str | bytes]) -> bytes:
    """A real sdist (tar.gz, one top directory `<name>-<version>/`, a PKG-INFO) of *files*."""
    import io
    import tarfile

    buf = io.BytesIO()
    members = {"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", **files}
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in members.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_wheel(name: str, version: str, tag: str, files: dict[str, str | bytes]) -> tuple[str, bytes]:
    """(file name, bytes) of a real wheel (a zip) of *files* with the tags *tag* (`py3-none-any`)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
        zf.writestr(f"{name}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return f"{name}-{version}-{tag}.whl", buf.getvalue()


class PackageIndex:
    """A package index on 127.0.0.1 speaking the simple JSON API (PEP 691), with PEP 592 yanks.

    `add` a file with its bytes; the index publishes their sha256 unless told another digest
    (`published=`, or None for none), and can serve other bytes than it publishes (`serve=`)."""

    def __init__(self) -> None:
        import hashlib
        import http.server
        import json
        import threading

        self.files: dict[str, list[dict]] = {}  # project -> listing entries
        self.bytes: dict[str, bytes] = {}  # filename -> what is served
        self.requests: list[str] = []
        index = self
        self._sha = lambda data: hashlib.sha256(data).hexdigest()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                index.requests.append(self.path)
                parts = self.path.strip("/").split("/")
                if len(parts) == 2 and parts[0] == "simple" and parts[1] in index.files:
                    body = json.dumps({"meta": {"api-version": "1.1"}, "name": parts[1],
                                       "files": index.files[parts[1]]}).encode()
                    kind = "application/vnd.pypi.simple.v1+json"
                elif len(parts) == 2 and parts[0] == "files" and parts[1] in index.bytes:
                    body, kind = index.bytes[parts[1]], "application/octet-stream"
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    _AUTO = object()

    def add(self, project: str, filename: str, data: bytes, *, yanked: bool | str = False,
            published=_AUTO, serve: bytes | None = None) -> str:
        """List *filename* for *project*; returns the sha256 the index publishes (or None)."""
        sha = self._sha(data) if published is PackageIndex._AUTO else published
        entry = {"filename": filename, "url": f"../../files/{filename}", "hashes": {"sha256": sha} if sha else {},
                 "size": len(data), "yanked": yanked}
        self.files.setdefault(project, []).append(entry)
        self.bytes[filename] = data if serve is None else serve
        return sha

    def downloads(self) -> list[str]:
        return [r.rsplit("/", 1)[-1] for r in self.requests if r.startswith("/files/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
