"""A Debian-style quilt series gives the same tree through `overlay apply --series`
as through `quilt push -a` (the real quilt, when installed)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

from helpers import git, make_repo, require_tool, snapshot_tree, write_tree

UPSTREAM = {
    "src/main.c": "".join(f"int f{i}(void) {{ return {i}; }}\n" for i in range(60)),
    "src/old_name.c": "static int keep = 1;\nint moved(void) { return keep; }\n",
    "scripts/build": "#!/bin/sh\nmake all\n",
    "docs/obsolete.txt": "remove me\n",
    "Makefile": "all:\n\tcc -o app src/main.c\n",
}

P1 = """Description: Return 42 from f10
 The long description of this change
 spans two lines.
Author: Jane Doe <jane@example.org>
Origin: vendor
Forwarded: not-needed
Last-Update: 2024-03-01
---
--- a/src/main.c
+++ b/src/main.c
@@ -9,5 +9,5 @@
 int f8(void) { return 8; }
 int f9(void) { return 9; }
-int f10(void) { return 10; }
+int f10(void) { return 42; }
 int f11(void) { return 11; }
 int f12(void) { return 12; }
"""

# -p0 patch, stated at the wrong line (offset) and adding a new file
P2 = """Description: Add a helper, with a patch made relative to the top (-p0)
Author: Joe <joe@example.org>
Upstream-Status: Pending

Index: src/main.c
===================================================================
--- src/main.c.orig\t2024-01-01 00:00:00.000000000 +0000
+++ src/main.c\t2024-01-01 00:00:00.000000000 +0000
@@ -45,6 +45,7 @@
 int f41(void) { return 41; }
 int f42(void) { return 42; }
 int f43(void) { return 43; }
+int helper(void) { return -1; }
 int f44(void) { return 44; }
 int f45(void) { return 45; }
 int f46(void) { return 46; }
--- /dev/null\t1970-01-01 00:00:00.000000000 +0000
+++ src/helper.h\t2024-01-01 00:00:00.000000000 +0000
@@ -0,0 +1,2 @@
+#pragma once
+int helper(void);
"""

# git-style: rename with change, mode change, deletion
P3 = """From: Ann <ann@example.org>
Subject: Reorganise sources
Bug-Debian: https://bugs.debian.org/1
Forwarded: https://example.org/mr/1

---
diff --git a/src/old_name.c b/src/new_name.c
similarity index 60%
rename from src/old_name.c
rename to src/new_name.c
--- a/src/old_name.c
+++ b/src/new_name.c
@@ -1,2 +1,2 @@
 static int keep = 1;
-int moved(void) { return keep; }
+int moved(void) { return keep + 1; }
diff --git a/scripts/build b/scripts/build
old mode 100644
new mode 100755
diff --git a/docs/obsolete.txt b/docs/obsolete.txt
deleted file mode 100644
--- a/docs/obsolete.txt
+++ /dev/null
@@ -1 +0,0 @@
-remove me
"""

P4 = """Description: Build the helper too (no trailing newline in the new Makefile)
Author: Jane Doe <jane@example.org>
Forwarded: no
---
--- a/Makefile
+++ b/Makefile
@@ -1,2 +1,2 @@
 all:
-\tcc -o app src/main.c
+\tcc -o app src/main.c src/new_name.c
\\ No newline at end of file
"""


def build_source(root: Path) -> None:
    write_tree(root, UPSTREAM)
    os.chmod(root / "scripts/build", 0o644)
    patches = root / "debian/patches"
    write_tree(patches, {"01-f10.patch": P1, "02-helper.patch": P2, "03-reorg.patch": P3})
    (patches / "04-makefile.patch.gz").write_bytes(gzip.compress(P4.encode(), mtime=0))
    (patches / "series").write_text(
        "# Debian series\n01-f10.patch\n02-helper.patch -p0\n\n03-reorg.patch\n04-makefile.patch.gz\n")


def test_same_tree_as_quilt_push(tmp_path, run_cli):
    require_tool(shutil.which("quilt"), "quilt", ".ci/run installs it: apt-get install quilt")
    by_quilt = tmp_path / "quilt"
    build_source(by_quilt)
    env = {**os.environ, "QUILT_PATCHES": "debian/patches", "QUILTRC": "/dev/null"}
    proc = subprocess.run(["quilt", "push", "-a", "--fuzz=0"], cwd=by_quilt, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    by_overlay = tmp_path / "overlay"
    build_source(by_overlay)
    make_repo(by_overlay, {}, tag=None)
    code, out, data = run_cli("--format", "json", "apply", "--series", str(by_overlay / "debian/patches"),
                              "--checkout", str(by_overlay))
    assert code == 0, out
    assert [p["status"] for p in data["patches"]] == ["applied", "offset", "applied", "applied"]
    assert snapshot_tree(by_overlay) == snapshot_tree(by_quilt)
    # metadata came from the DEP-3 headers
    log = git(by_overlay, "log", "--reverse", "--format=%an|%s", "HEAD~4..HEAD").splitlines()
    assert log[0] == "Jane Doe|Return 42 from f10"
    assert log[2] == "Ann|Reorganise sources"
