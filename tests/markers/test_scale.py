"""check-markers at scale, exactly as before: one ripgrep walk, scans by content, a git baseline
read from its blobs. Each fast path is checked against the slow way it replaces."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_snapshot import require_rg

from engine_overlay import gitops, sources
from engine_overlay.errors import OverlayError
from engine_overlay.markers import baseline, scancache, snapshot
from engine_overlay.markers.check import check_markers
from engine_overlay.markers.compare import compare
from engine_overlay.markers.grammar import MarkerConfig
from engine_overlay.markers.snapshot import list_files, snapshot_from_texts, take_snapshot
from engine_overlay.paths import read_below, safe_join
from helpers import git, make_repo, write_tree

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_scale import module_path, module_text  # noqa: E402  (the benchmark's own generator)


def generated(marked_every: int = 10, files: int = 300) -> dict[str, str]:
    """bench_scale's modules (12 functions, an Omni-new block in every *marked_every*-th)."""
    return {module_path(n): module_text(n, n % marked_every == 0) for n in range(files)}


def old_baseline(root: Path, rev: str, config: MarkerConfig) -> snapshot.Snapshot:
    """The baseline at a git revision as the tool read it before: from the top of the work tree,
    `git grep -l -I` under *root* for the files holding a tag word, one `git show` per file
    (names NUL-separated here, so that names git would quote are read too)."""
    top = Path(git(root, "rev-parse", "--show-toplevel").strip())
    prefix = os.path.relpath(root.resolve(), top.resolve())
    prefix = "" if prefix == "." else prefix + "/"
    args = ["git", "grep", "-l", "-z", "-I", "--fixed-strings", "--no-color"]
    for needle in config.needles():
        args += ["-e", needle.decode()]
    out = subprocess.run([*args, rev, "--", prefix or "."], cwd=top, capture_output=True).stdout
    texts = {}
    for entry in out.split(b"\0"):
        path = entry.decode().split(":", 1)[1] if entry else ""
        rel = path[len(prefix):]
        if path and baseline._globbed(rel, config):
            show = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=top, capture_output=True, check=True)
            texts[rel] = show.stdout.decode("utf-8", "surrogateescape")
    return snapshot_from_texts(texts, config)


def changed_tree(root: Path) -> None:
    """Every kind of change a re-sync brings, in the work tree of a generated repository."""
    def edit(n: int, old: str, new: str) -> None:
        path = root / module_path(n)
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))

    edit(10, "math.floor(scale / 7) + 10", "math.floor(scale / 7) + 10 * 2")  # modified
    edit(20, "    # ---- Omni-new ----\n", "")  # markers removed (the code stays)
    (root / module_path(30)).unlink()  # code removed with its file
    (root / module_path(40)).rename(root / "pkg/moved_here.py")  # renamed
    fence = "    # ---- Omni-new: npu ----\n"
    write_tree(root, {"pkg/new_marked.py": f"def f(x):\n{fence}    return npu_offset(x)\n{fence}"})  # untracked
    os.utime(root / module_path(50), (1, 1))  # stat data stale, content the same
    edit(60, "y = x * scale + 5", "y = x * scale + 55")  # upstream changed the enclosing def
    edit(7, "    return math.floor(y) - 7\n", f"{fence}    y = npu_scale(y)\n{fence}    return math.floor(y) - 7\n",)


def test_git_rev_and_snapshot_baselines_give_the_report_the_old_reading_gave(tmp_path):
    root = make_repo(tmp_path / "repo", {**generated(), "pkg/a b ü.py": module_text(5000, True),
                                         "docs/notes.md": "# ---- Omni-new ----\n"})
    snap = tmp_path / "snap.json"
    take_snapshot(root).write(snap)
    changed_tree(root)

    against_rev = check_markers(root, "HEAD").to_dict()
    against_snapshot = check_markers(root, str(snap)).to_dict()
    assert {**against_rev, "against": None} == {**against_snapshot, "against": None}
    old = compare(old_baseline(root, "HEAD", MarkerConfig()), take_snapshot(root))
    assert against_rev["blocks"] == check_markers(root, str(snap)).to_dict()["blocks"]
    assert [b for b in against_rev["blocks"]] == [{**b.__dict__, "failing": b.failing} for b in old]
    statuses = Counter((b["status"], b["lost_kind"], b["enclosing_changed"]) for b in against_rev["blocks"])
    assert statuses == {("intact", None, False): 27, ("intact", None, True): 1, ("modified", None, False): 1,
                        ("lost", "markers-removed", False): 1, ("lost", "code-removed", False): 1,
                        ("added", None, False): 2}
    moved = next(b for b in against_rev["blocks"] if b["file"] == module_path(40))
    assert (moved["status"], moved["new_file"]) == ("intact", "pkg/moved_here.py")
    # the second run of each reads everything it can from the caches: the same reports
    assert check_markers(root, "HEAD").to_dict() == against_rev
    assert check_markers(root, str(snap)).to_dict() == against_snapshot


def test_a_subdirectory_root_and_paths_read_the_old_baseline(tmp_path):
    root = make_repo(tmp_path / "repo", {f"sub/{k}": v for k, v in generated(files=120).items()}
                     | {"other.py": module_text(1, True)})
    changed = root / "sub" / module_path(20)
    changed.write_text(changed.read_text().replace("    # ---- Omni-new ----\n", ""))
    old = old_baseline(root / "sub", "HEAD", MarkerConfig())  # git grep in sub/: names relative to it
    new = baseline.snapshot_at_rev(root / "sub", "HEAD", None, MarkerConfig())
    assert new.to_dict() == old.to_dict() and new.blocks
    some = ["pkg/a00/b00", module_path(110)]
    report = check_markers(root / "sub", "HEAD", paths=some).to_dict()
    assert {b["file"].rsplit("/", 1)[0] for b in report["blocks"]} == {"pkg/a00/b00", "pkg/a00/b01"}
    assert Counter(b["status"] for b in report["blocks"]) == {"intact": 10, "lost": 1}


def test_a_binary_file_at_the_revision_is_skipped_as_git_grep_skips_it(tmp_path):
    marked = module_text(3, True)
    root = make_repo(tmp_path / "repo", {"a.py": marked, "blob.py": "\0" + marked})
    new = baseline.snapshot_at_rev(root, "HEAD", None, MarkerConfig())
    assert {b.file for b in new.blocks} == {"a.py"}
    assert new.to_dict() == old_baseline(root, "HEAD", MarkerConfig()).to_dict()


def test_skipped_directories_are_skipped_at_the_revision_too(tmp_path):
    """A tracked file in __pycache__ (or .tox, ...) is never scanned in the tree; the old git
    baseline held its blocks, so they were reported lost on every check. Now neither side has them."""
    root = make_repo(tmp_path / "repo", {"a.py": module_text(3, True), "__pycache__/b.py": module_text(4, True)})
    (root / "__pycache__/b.py").write_text("changed, no markers\n")  # among the changed files
    report = check_markers(root, "HEAD")
    assert report.ok and [(b.file, b.status) for b in report.blocks] == [("a.py", "intact")]
    assert {b.file for b in old_baseline(root, "HEAD", MarkerConfig()).blocks} == {"a.py", "__pycache__/b.py"}
    explicit = check_markers(root, "HEAD", paths=["__pycache__/b.py"])  # named: read wherever it is
    assert [(b.file, b.status, b.lost_kind) for b in explicit.blocks] == [("__pycache__/b.py", "lost", "code-removed")]


# -- the scan cache ---------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    root = make_repo(tmp_path / "repo", generated(files=100))
    snap = tmp_path / "snap.json"
    take_snapshot(root).write(snap)
    return root, snap


def counting_scans(monkeypatch) -> list[str]:
    scanned: list[str] = []
    real = snapshot.scan_text

    def scan(text, file, config, grammar=None):
        scanned.append(file)
        return real(text, file, config, grammar)

    monkeypatch.setattr(snapshot, "scan_text", scan)
    return scanned


def test_a_text_scanned_once_is_not_scanned_again(tree, monkeypatch):
    root, snap = tree
    first = check_markers(root, str(snap)).to_dict()
    scanned = counting_scans(monkeypatch)
    assert check_markers(root, str(snap)).to_dict() == first and scanned == []
    assert check_markers(root, "HEAD").to_dict()["blocks"] == first["blocks"] and scanned == []
    path = root / module_path(10)
    path.write_text(path.read_text().replace("math.floor(scale / 7)", "math.ceil(scale / 7)"))
    report = check_markers(root, "HEAD").to_dict()
    assert scanned == [module_path(10)]  # the changed text only (its old text is the cached one)
    assert [b["file"] for b in report["blocks"] if b["status"] == "modified"] == [module_path(10)]


def test_one_run_scans_a_text_found_on_both_sides_once(tree, monkeypatch):
    root, _snap = tree
    scanned = counting_scans(monkeypatch)
    monkeypatch.setattr(scancache, "_namespace", lambda config: None)  # no cache file: this run's only
    report = check_markers(root, "HEAD")
    assert report.ok and len(report.blocks) == 10 and sorted(scanned) == sorted({b.file for b in report.blocks})
    assert not scancache.cache_file().exists()


def test_the_files_marked_at_a_commit_are_kept_and_still_checked(tree, monkeypatch):
    """The second check against a commit asks git for no changed files (nor reads a tree); a file
    that then loses its markers is still read at the commit and reported."""
    root, _snap = tree
    first = check_markers(root, "HEAD").to_dict()
    real = gitops.run

    def run(repo, *args, **kw):
        assert args[0] != "diff-index", "the commit's marked files were not kept"
        return real(repo, *args, **kw)

    monkeypatch.setattr(gitops, "run", run)
    monkeypatch.setattr(gitops, "read_paths_at", lambda *a: pytest.fail("trees read again"))
    assert check_markers(root, "HEAD").to_dict() == first
    path = root / module_path(20)
    path.write_text("".join(ln for ln in path.read_text().splitlines(keepends=True) if "Omni-new" not in ln))
    lost = [(b.file, b.lost_kind) for b in check_markers(root, "HEAD").blocks if b.status == "lost"]
    assert lost == [(module_path(20), "markers-removed")]


def test_a_damaged_cache_file_is_ignored(tree):
    root, snap = tree
    first = check_markers(root, str(snap)).to_dict()
    scancache.cache_file().write_bytes(b"not a database" * 100)
    assert check_markers(root, str(snap)).to_dict() == first
    assert check_markers(root, "HEAD").to_dict()["blocks"] == first["blocks"]


def test_scans_under_other_tags_are_not_reused(tree, monkeypatch):
    root, snap = tree
    check_markers(root, str(snap))
    scanned = counting_scans(monkeypatch)
    check_markers(root, str(snap), MarkerConfig(inline_tags=("Omni-new",)))
    assert len(scanned) == 10


def test_the_scan_cache_lives_in_the_tools_cache_directory():
    assert scancache.cache_file().parent == sources.cache_dir()


# -- one ripgrep walk for the whole tree -------------------------------------------------------------

def hostile_tree(root: Path) -> None:
    marked = "# ---- Omni-new ----\nx = 1\n# ---- Omni-new ----\n"
    write_tree(root, {"a.py": marked, ".hidden/b.py": marked, "ignored.py": marked, ".gitignore": "ignored.py\n",
                      "__pycache__/c.py": marked, "d/__pycache__/e.py": marked, "d/.tox/f.py": marked,
                      "d/__pycache__.py": marked, "d/.git/g.py": marked, "bin.py": "\0" + marked,
                      "notes.txt": marked, "sub/n.txt": marked, "sub/deep/m.txt": marked, "sp ace/ü.py": marked,
                      "plain.py": "x = 1\n", "weird[1].py": marked, "x{a,b}.py": marked})
    (root / "link.py").symlink_to(root / "a.py")
    (root / "linkdir").symlink_to(root / "sub")
    os.mkfifo(root / "fifo.py")


@pytest.mark.parametrize("globs", [("*.py",), ("*.py", "sub/*.txt"), ("*",), ("w*[1].py", "*.txt")])
def test_the_ripgrep_walk_finds_what_listing_and_filtering_find(tmp_path, globs):
    require_rg()
    hostile_tree(tmp_path)
    config = MarkerConfig(globs=globs)
    walked = snapshot._rg_walk(str(tmp_path), config)
    listed = snapshot._python_filter(str(tmp_path), list_files(tmp_path, None, config), config.needles())
    assert walked == listed and walked
    everything = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    members = set(list_files(tmp_path, None, config))
    assert {rel for rel in everything if snapshot._listed(str(tmp_path), rel, config)} == members


def test_the_tree_is_not_listed_unless_lost_code_is_searched_for(tmp_path, monkeypatch):
    """Nothing changed, or a marked file renamed: no walk of the tree in Python (whether a file
    vanished is decided for that file alone)."""
    require_rg()
    root = make_repo(tmp_path / "repo", generated(files=60))
    snap = tmp_path / "snap.json"
    take_snapshot(root).write(snap)
    monkeypatch.setattr(snapshot, "list_files", lambda *a: pytest.fail("the whole tree was listed"))
    assert check_markers(root, str(snap)).ok
    (root / module_path(30)).rename(root / "renamed.py")
    report = check_markers(root, str(snap))
    assert report.ok and ("intact", "renamed.py") in [(b.status, b.new_file) for b in report.blocks]


# -- reading many files -------------------------------------------------------------------------------

def test_read_below_reads_and_refuses_as_safe_join(tmp_path):
    write_tree(tmp_path, {"a/b.py": "b\n", "a/c.py": "c" * 100_000, "d.py": ""})
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "l.py").symlink_to(tmp_path / "d.py")
    names = ["a/b.py", "a/c.py", "d.py"]
    assert read_below(tmp_path, names) == {n: safe_join(tmp_path, n).read_bytes() for n in names}
    for name in ("link/b.py", "a/l.py"):
        with pytest.raises(OverlayError) as e:
            read_below(tmp_path, [name])
        with pytest.raises(OverlayError) as again:
            safe_join(tmp_path, name)
        assert e.value.message == again.value.message and "symlink" in e.value.message
    for name in ("../x.py", "a/../d.py", ".git/config"):
        with pytest.raises(OverlayError):
            read_below(tmp_path, [name])
    with pytest.raises(FileNotFoundError):
        read_below(tmp_path, ["a/missing.py"])
