"""Hostile patches against a checkout holding the user's ignored notes: each is refused (exit 1 or
2, one message, no traceback) and the checkout, its branches and the user's files stay as they were."""

from __future__ import annotations

from test_inputs import USER_NOTE, check_target, fixture_repo, invoke, link_out_of

from helpers import make_project, repo_state

NEW = "new file mode 100644\n--- /dev/null\n"
HOSTILE = {
    "rename onto an existing file": "diff --git a/pkg/m0.py b/pkg/m1.py\nsimilarity index 100%\n"
                                    "rename from pkg/m0.py\nrename to pkg/m1.py\n",
    "copy onto an existing file": "diff --git a/pkg/m0.py b/pkg/m1.py\nsimilarity index 100%\n"
                                  "copy from pkg/m0.py\ncopy to pkg/m1.py\n",
    "create below a file": f"diff --git a/pkg/m0.py/x b/pkg/m0.py/x\n{NEW}+++ b/pkg/m0.py/x\n@@ -0,0 +1 @@\n+x\n",
    "create through a symlink": f"diff --git a/link/x b/link/x\n{NEW}+++ b/link/x\n@@ -0,0 +1 @@\n+x\n",
    "type change in one entry": "diff --git a/pkg/m0.py b/pkg/m0.py\nold mode 100644\nnew mode 120000\n",
    "overwrite an ignored file": f"diff --git a/notes.local b/notes.local\n{NEW}+++ b/notes.local\n"
                                 "@@ -0,0 +1 @@\n+gone\n",
    "write into .git": f"diff --git a/.git/config b/.git/config\n{NEW}+++ b/.git/config\n@@ -0,0 +1 @@\n+x\n",
    "write into .GIT.": f"diff --git a/.GIT./x b/.GIT./x\n{NEW}+++ b/.GIT./x\n@@ -0,0 +1 @@\n+x\n",
    "dot component": f"diff --git a/./pkg/x b/./pkg/x\n{NEW}+++ b/./pkg/x\n@@ -0,0 +1 @@\n+x\n",
    "huge line numbers": f"--- a/pkg/m0.py\n+++ b/pkg/m0.py\n@@ -{'9' * 6000},1 +{'9' * 6000},1 @@\n-v1 = not there\n+v1 = 2\n",
    "binary without full index": "diff --git a/pkg/m0.py b/pkg/m0.py\nindex 1234567..89abcde 100644\n"
                                 "GIT binary patch\nliteral 1\nIcmZpW0000B01yBG\n\nliteral 0\nHcmV?d00001\n\n",
    "deletion leaving content": "diff --git a/pkg/m0.py b/pkg/m0.py\ndeleted file mode 100644\n--- a/pkg/m0.py\n"
                                "+++ /dev/null\n@@ -1,2 +0,0 @@\n-v0 = 0\n-v1 = 1\n",
    "quoted name escapes": '--- "a/\\u2028\\x00.py"\n+++ "b/\\u2028\\x00.py"\n@@ -1 +1 @@\n-x\n+y\n',
}


def test_hostile_patches_are_refused_and_nothing_changes(tmp_path, ledger):
    repo, _ = fixture_repo(tmp_path)
    outside = tmp_path / "outside"
    link_out_of(repo, outside)
    before = repo_state(repo)
    for number, (label, diff) in enumerate(HOSTILE.items()):
        project = make_project(tmp_path / f"proj{number}", {"0001-hostile.patch": diff})
        code, out, crashed = invoke("--project", str(project), "apply", "demo", "--checkout", str(repo))
        ok = not crashed and code in (1, 2) and "Traceback" not in out and check_target(repo, before, code)
        ok &= repo_state(repo) == before and list(outside.iterdir()) == []
        ok &= (repo / "notes.local").read_text() == USER_NOTE
        ledger.record("apply", f"hostile patch: {label}", recovered=ok, lost=not ok)
        assert ok, f"{label}: exit {code}\n{out}"
