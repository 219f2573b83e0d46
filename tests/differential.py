"""Differential testing against git: random repositories and edits, `git am --keep-cr` as the oracle.

A *scenario* is a base tree and a few commits of ordinary edits (modify, add,
delete, rename, copy, swap, chmod, symlinks, type changes, CRLF and lone CR,
odd names, attributes, binary files). It is turned into real commits, exported
with `git format-patch` under random options, applied by `git am --keep-cr`
one patch at a time (skipping a patch git refuses) and by `overlay apply`
(as separate files or as one mailbox). Both must give the same verdict per
patch and, when git applies everything, the same tree and a clean status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

ENV = {
    "GIT_AUTHOR_NAME": "Fuzz", "GIT_AUTHOR_EMAIL": "fuzz@example.com",
    "GIT_COMMITTER_NAME": "Fuzz", "GIT_COMMITTER_EMAIL": "fuzz@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(cwd: Path, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "-c", "core.autocrlf=false", "-c", "core.quotepath=true", *args], cwd=cwd,
                          capture_output=True, input=input, env={**os.environ, **ENV})
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc


NAMES = ["a.py", "b c.txt", " lead.txt", "trail.txt ", "dir/x.h", "dir/sub/y.c", 'q"uote.txt', "tab\there.txt",
         "ü.txt", "back\\slash.txt", "conf/config.py", "copy.h", "x.bat", "id.txt", "data.bin", "-dash.txt",
         "dir/z z/w.py", "new\nline.txt", "e.txt", "f", os.fsdecode(b"raw\xff\xfe.txt"), "a\x01ctl.txt",
         "dir", "conf", "dir/sub"]  # names that are directories in other states: type changes
LINES = [b"alpha\n", b"beta\n", b"gamma\r\n", b"tensor\r\rblock\n", b"\n", b"  spaces  \n", b"\ttab\n",
         b"$Id$\n", b"def f(x):\n", b"    return x\n", b"lone\rcr\n", b"delta\n", b"epsilon\n", b"zeta\n",
         b"eta\n", b"theta\n", b"\xff\xfe raw bytes\n"]
ATTRIBUTES = [b"*.bat text eol=crlf\n", b"id.txt ident\n", b"*.bin binary\n", b"*.txt text\n", b"*.h -text\n"]


@dataclass
class Node:
    kind: str  # file | link
    data: bytes
    mode: int = 0o644


@dataclass
class Scenario:
    base: dict[str, Node]
    commits: list[dict[str, Node]]  # the full tree after each commit
    diff_options: list[str] = field(default_factory=list)
    mailbox: bool = False
    plain_diff: bool = False  # `git diff` output (no mail headers), applied with `git apply --index`

    @property
    def no_prefix(self) -> bool:
        return "--no-prefix" in self.diff_options


def content():
    text = st.lists(st.sampled_from(LINES), min_size=0, max_size=14).map(b"".join)
    long = st.lists(st.sampled_from(LINES), min_size=8, max_size=60).map(b"".join)
    no_eol = st.tuples(text, st.sampled_from([b"end", b"x\r", b"last line"])).map(b"".join)
    binary = st.binary(min_size=1, max_size=64).map(lambda b: b"\0" + b)
    return st.one_of(text, long, long, no_eol, binary)


@st.composite
def edit_text(draw, data: bytes) -> bytes:
    lines = data.split(b"\n")
    lines = [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["insert", "delete", "replace", "append"]))
        at = draw(st.integers(0, len(lines)))
        if what == "insert" or not lines:
            lines.insert(at, draw(st.sampled_from(LINES)))
        elif what == "delete":
            del lines[min(at, len(lines) - 1)]
        elif what == "replace":
            lines[min(at, len(lines) - 1)] = draw(st.sampled_from(LINES))
        else:
            lines.append(draw(st.sampled_from(LINES)))
    return b"".join(lines)


def _free(tree: dict[str, Node], name: str) -> bool:
    """*name* can be added: no file there, none of its parents is a file, it is no parent."""
    parts = name.split("/")
    if name in tree or any("/".join(parts[:i]) in tree for i in range(1, len(parts))):
        return False
    return not any(p.startswith(name + "/") for p in tree)


@st.composite
def next_tree(draw, tree: dict[str, Node]) -> dict[str, Node]:
    tree = dict(tree)
    for _ in range(draw(st.integers(1, 3))):
        files = sorted(p for p, n in tree.items() if n.kind == "file" and p != ".gitattributes")
        links = sorted(p for p, n in tree.items() if n.kind == "link")
        op = draw(st.sampled_from(["modify", "modify", "add", "delete", "rename", "rename", "copy", "copy", "swap", "chmod",
                                   "link", "relink", "typechange", "empty", "attributes"]))
        free = [n for n in NAMES if _free(tree, n)]
        if op == "modify" and files:
            path = draw(st.sampled_from(files))
            tree[path] = Node("file", draw(edit_text(tree[path].data)), tree[path].mode)
        elif op == "add" and free:
            tree[draw(st.sampled_from(free))] = Node("file", draw(content()), draw(st.sampled_from([0o644, 0o755])))
        elif op == "delete" and files:
            del tree[draw(st.sampled_from(files))]
        elif op in ("rename", "copy") and files and free:
            src = draw(st.sampled_from(files))
            dst = draw(st.sampled_from(free))
            node = tree[src]
            edited = draw(st.integers(0, 3)) == 0
            moved = Node("file", draw(edit_text(node.data)) if edited else node.data, node.mode)
            if op == "rename":
                del tree[src]
            else:
                tree[src] = Node("file", draw(edit_text(node.data)), node.mode)
            if _free(tree, dst):
                tree[dst] = moved
        elif op == "swap" and len(files) >= 2:
            a, b = draw(st.lists(st.sampled_from(files), min_size=2, max_size=2, unique=True))
            tree[a], tree[b] = tree[b], tree[a]
        elif op == "chmod" and files:
            path = draw(st.sampled_from(files))
            tree[path] = Node("file", tree[path].data, 0o755 if tree[path].mode == 0o644 else 0o644)
        elif op == "link" and free:
            tree[draw(st.sampled_from(free))] = Node("link", draw(st.sampled_from([b"a.py", b"dir", b"../outside",
                                                                                    b"missing target"])))
        elif op == "relink" and links:
            path = draw(st.sampled_from(links))
            tree[path] = Node("link", tree[path].data + b"2")
        elif op == "typechange" and (files or links):
            path = draw(st.sampled_from(files + links))
            tree[path] = Node("link", b"e.txt") if tree[path].kind == "file" else Node("file", b"was a link\n")
        elif op == "empty" and files:
            path = draw(st.sampled_from(files))
            tree[path] = Node("file", b"", tree[path].mode)
        elif op == "attributes":
            tree[".gitattributes"] = Node("file", b"".join(draw(st.lists(st.sampled_from(ATTRIBUTES), min_size=1,
                                                                          max_size=3, unique=True))))
    return tree


@st.composite
def scenarios(draw) -> Scenario:
    base: dict[str, Node] = {}
    for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True)):
        if _free(base, name):
            base[name] = Node("file", draw(content()), draw(st.sampled_from([0o644, 0o644, 0o755])))
    if draw(st.booleans()) and draw(st.booleans()):
        base[".gitattributes"] = Node("file", b"".join(draw(st.lists(st.sampled_from(ATTRIBUTES), min_size=1,
                                                                      max_size=3, unique=True))))
    commits, tree = [], base
    for _ in range(draw(st.integers(1, 4))):
        tree = draw(next_tree(tree))
        commits.append(tree)
    options = []
    options += draw(st.sampled_from([["--no-renames"], ["-M"], ["-M", "-C"], ["-M", "-C", "-C"], ["-B", "-M"],
                                     ["-B"], ["-M", "--find-copies-harder"]]))
    options += draw(st.sampled_from([[], ["--full-index"]]))
    options += draw(st.sampled_from([[], [], ["--no-prefix"], ["--src-prefix=s/", "--dst-prefix=d/"]]))
    options += draw(st.sampled_from([[], [], ["-U1"], ["-U5"], ["-U0"], ["--inter-hunk-context=4"]]))
    options += draw(st.sampled_from([[], ["--no-binary"], ["--text"]]))
    options += draw(st.sampled_from([[], ["--histogram"], ["--minimal"]]))
    options += draw(st.sampled_from([[], [], ["--attach"], ["--inline"], ["--no-signature"], ["--zero-commit"],
                                     ["-k"], ["--numbered"], ["--encode-email-headers"], ["--signature=a\n-- \nb"]]))
    plain = draw(st.integers(0, 3)) == 0
    if plain:  # format-patch only options do not exist for `git diff`
        options = [o for o in options if o not in ("--attach", "--inline", "--no-signature", "--zero-commit", "-k",
                                                   "--numbered", "--encode-email-headers", "--no-binary")
                   and not o.startswith("--signature")]
        options += draw(st.sampled_from([[], ["--binary"], ["--full-index"], ["--binary", "--full-index"]]))
    return Scenario(base, commits, options, draw(st.booleans()) and not plain, plain)


def write_tree(root: Path, tree: dict[str, Node]) -> None:
    for child in root.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for path, node in sorted(tree.items()):
        disk = root / path
        disk.parent.mkdir(parents=True, exist_ok=True)
        if node.kind == "link":
            os.symlink(os.fsdecode(node.data), disk)
        else:
            disk.write_bytes(node.data)
            disk.chmod(node.mode)


def realize(scenario: Scenario, work: Path) -> tuple[Path, list[Path]]:
    """The upstream repository (tag `base`) and the patch files of the scenario's commits."""
    repo = work / "src"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write_tree(repo, scenario.base)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "base")
    git(repo, "tag", "base")
    made = 0
    for number, tree in enumerate(scenario.commits, 1):
        write_tree(repo, tree)
        git(repo, "add", "-A")
        if git(repo, "diff", "--cached", "--quiet", check=False).returncode == 0:
            continue
        git(repo, "commit", "-q", "-m", f"change {number}\n\nA message with\r\na CR and ---\nlines.")
        made += 1
    out = work / "patches"
    if not made:
        return repo, []
    if scenario.plain_diff:
        out.mkdir()
        shas = git(repo, "rev-list", "--reverse", "base..main").stdout.decode().split()
        for number, sha in enumerate(shas, 1):
            diff = git(repo, "diff", *scenario.diff_options, f"{sha}^", sha).stdout
            (out / f"{number:04d}.diff").write_bytes(diff)
        return repo, sorted(out.glob("*.diff"))
    git(repo, "format-patch", "-q", "-o", str(out), *scenario.diff_options, "base..main")
    return repo, sorted(out.glob("*.patch"))


def clone(repo: Path, where: Path) -> Path:
    git(where.parent, "clone", "-q", "--no-checkout", str(repo), str(where))
    git(where, "checkout", "-q", "-b", "work", "base")
    return where


def oracle(repo: Path, patches: list[Path], work: Path, strip: int) -> tuple[list[bool], str]:
    """`git am --keep-cr` (or `git apply --index` for plain diffs) one patch at a time;
    (applied per patch, final tree id)."""
    target = clone(repo, work / "oracle")
    verdicts = []
    for patch in patches:
        if patch.suffix == ".diff":
            proc = git(target, "apply", "--index", f"-p{strip}", str(patch), check=False)
            if proc.returncode == 0:
                git(target, "commit", "-q", "--allow-empty", "-m", patch.name)
        else:
            proc = git(target, "am", "--keep-cr", f"-p{strip}", str(patch), check=False)
            if proc.returncode != 0:
                git(target, "am", "--abort", check=False)
        verdicts.append(proc.returncode == 0)
    return verdicts, git(target, "rev-parse", "HEAD^{tree}").stdout.decode().strip()


def ours(repo: Path, patches: list[Path], work: Path, strip: int, mailbox: bool, check: bool = False):
    """`overlay apply --series` in process; (report, target checkout)."""
    from engine_overlay import gitops
    from engine_overlay.apply import ApplyOptions, apply_git, series_payload

    target = clone(repo, work / "ours")
    series = work / "series"
    series.mkdir()
    if mailbox:
        (series / "all.mbox").write_bytes(b"".join(p.read_bytes() for p in patches))
        names = ["all.mbox"]
    else:
        for patch in patches:
            shutil.copy(patch, series / patch.name)
        names = [p.name for p in patches]
    (series / "series").write_text("".join(f"{n} -p{strip}\n" for n in names))
    report = apply_git(gitops.open_repo(target), series_payload(series), ApplyOptions(check=check), "checkout")
    return report, target
