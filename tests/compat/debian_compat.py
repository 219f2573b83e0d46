"""Compare `overlay apply --series debian/patches` with `dpkg-source -x` on real Debian
source packages (format 3.0 (quilt)).

Usage: python tests/compat/debian_compat.py DIR_WITH_DSC_FILES [...]
Get sources with `apt-get source --download-only PKG` (needs deb-src lines). For each
.dsc: dpkg-source -x gives the reference tree (patches applied); the same orig +
debian tarballs are extracted into a git repository and the series is applied with
overlay (with --remove-empty: dpkg-source runs `patch -E`); the two trees must be
byte-identical (modes included), .pc/ and .git/ aside.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".pc")]
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = (os.readlink(path).encode(), -1)
            else:
                out[rel] = (path.read_bytes(), path.stat().st_mode & 0o111)
    return out


def check(dsc: Path, work: Path) -> tuple[str, str]:
    text = dsc.read_text(errors="replace")
    if "3.0 (quilt)" not in text:
        return dsc.name, "skipped (not 3.0 quilt)"
    ref = work / "ref"
    subprocess.run(["dpkg-source", "--no-check", "-x", str(dsc), str(ref)], check=True, capture_output=True)
    series = ref / "debian/patches/series"
    if not series.exists():
        return dsc.name, "skipped (no patches)"
    # the unpatched source: dpkg-source --skip-patches
    ours = work / "ours"
    subprocess.run(["dpkg-source", "--no-check", "--skip-patches", "-x", str(dsc), str(ours)], check=True,
                   capture_output=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "config", "core.autocrlf", "false"],
                ["git", "add", "-A", "-f"], ["git", "commit", "-q", "-m", "orig", "--no-verify"]):
        subprocess.run(cmd, cwd=ours, check=True, capture_output=True, env=env)
    (ours / ".git/info/attributes").write_text("* -text -filter -ident\n")
    subprocess.run(["git", "checkout", "-q", "-f", "HEAD", "--", "."], cwd=ours, check=True)
    proc = subprocess.run([sys.executable, "-m", "engine_overlay", "apply", "--remove-empty", "--series",
                           str(ours / "debian/patches"), "--checkout", str(ours)], capture_output=True, text=True)
    count = len([line for line in series.read_text().splitlines() if line.strip() and not line.startswith("#")])
    if proc.returncode != 0:
        return dsc.name, f"FAILED to apply ({count} patches): {(proc.stdout + proc.stderr)[-600:]}"
    a, b = tree(ref), tree(ours)
    if a != b:
        diff = sorted(set(a) ^ set(b)) + sorted(k for k in set(a) & set(b) if a[k] != b[k])
        return dsc.name, f"DIFFERENT ({count} patches): {diff[:8]}"
    return dsc.name, f"identical ({count} patches)"


def main(argv: list[str]) -> int:
    bad = 0
    for directory in argv:
        for dsc in sorted(Path(directory).glob("*.dsc")):
            with tempfile.TemporaryDirectory(prefix="debcompat-") as tmp:
                name, verdict = check(dsc, Path(tmp))
            bad += verdict.startswith(("FAILED", "DIFFERENT"))
            print(f"{name:45} {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
