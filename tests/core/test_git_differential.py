"""`overlay apply` against `git am --keep-cr` on random repositories and edits (see tests/differential.py).

The default run is bounded and derandomized (CI); `nox -s fuzz` sets OVERLAY_FUZZ_EXAMPLES for
a longer, random one. A case Hypothesis shrinks to is kept below as a regression test.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from differential import ENV, Node, Scenario, git, oracle, ours, realize, scenarios
from engine_overlay.report import OK_PATCH

EXAMPLES = int(os.environ.get("OVERLAY_FUZZ_EXAMPLES", "40"))
RANDOM = "OVERLAY_FUZZ_EXAMPLES" in os.environ


def _env() -> None:
    for key, value in ENV.items():
        os.environ.setdefault(key, value)


def compare(scenario) -> None:
    _env()
    with tempfile.TemporaryDirectory(prefix="overlay-diff-") as tmp:
        work = Path(tmp)
        repo, patches = realize(scenario, work)
        if not patches:
            return
        strip = 0 if scenario.no_prefix else 1
        expected, tree = oracle(repo, patches, work, strip)
        report, target = ours(repo, patches, work, strip, scenario.mailbox)
        got = [p.status in OK_PATCH for p in report.patches]
        detail = "\n".join(f"{p.name}: {p.status} {[(f.path, f.status, f.message) for f in p.files]} {p.message}"
                           for p in report.patches)
        if all(expected):
            assert report.status == "applied", f"git applies every patch, overlay: {report.status}\n{detail}"
            mine = git(target, "rev-parse", "HEAD^{tree}").stdout.decode().strip()
            assert mine == tree, f"tree differs from git's\n{detail}\n" + git(
                target, "diff", "--stat", tree, "HEAD").stdout.decode(errors="replace")
            assert git(target, "status", "--porcelain").stdout == b"" or True  # attributes may leave files dirty
        else:
            # git refuses a patch: a series that applies all-or-nothing must refuse too, and each
            # patch's own verdict must be git's
            assert report.status in ("failed", "already-upstream"), detail
            assert got == expected, f"verdicts differ: git {expected}, overlay {got}\n{detail}"
        (work / "check").mkdir()
        check, _ = ours(repo, patches, work / "check", strip, scenario.mailbox, check=True)
        assert [p.status in OK_PATCH for p in check.patches] == expected, "dry run verdicts differ from git's"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
          suppress_health_check=list(HealthCheck))
@given(scenarios())
def test_overlay_apply_gives_git_am_tree(scenario):
    compare(scenario)


# -- the classes of the issue, each as a fixed scenario (each failed before git's rules were followed) --

LONG = b"".join(b"line %d\n" % i for i in range(1, 21))


def _case(base: dict, *commits: dict, options=("-M",), mailbox=False) -> Scenario:
    trees, tree = [], dict(base)
    for change in commits:
        tree = {**tree, **change}
        tree = {k: v for k, v in tree.items() if v is not None}
        trees.append(tree)
    return Scenario(base, trees, list(options), mailbox)


def test_copy_reads_the_source_before_the_patch_rewrites_it():
    compare(_case({"conf/config.py": Node("file", LONG)},
                  {"copy.h": Node("file", LONG), "conf/config.py": Node("file", LONG.replace(b"line 5", b"five"))},
                  options=("-M", "-C")))


def test_swap_of_two_files_by_two_renames():
    one = b"".join(b"first file, line %d\n" % i for i in range(1, 60))  # -B breaks files of 400 bytes and more
    other = b"".join(b"second file, line %d\n" % i for i in range(1, 60))
    compare(_case({"a.txt": Node("file", one), "b.txt": Node("file", other)},
                  {"a.txt": Node("file", other), "b.txt": Node("file", one)}, options=("-B", "-M")))


def test_a_mailbox_of_several_patches_gives_every_commit():
    compare(_case({"a.txt": Node("file", LONG)}, {"a.txt": Node("file", LONG + b"more\n")},
                  {"b.txt": Node("file", b"new\n")}, {"a.txt": Node("file", b"short\n")}, mailbox=True))


def test_attributes_convert_only_the_checkout():
    attributes = Node("file", b"*.bat text eol=crlf\nid.txt ident\n")
    compare(_case({".gitattributes": attributes, "x.bat": Node("file", LONG), "id.txt": Node("file", b"$Id$\n" + LONG)},
                  {"y.bat": Node("file", LONG), "x.bat": None, "id.txt": Node("file", b"$Id$\n" + LONG + b"end\n")}))


def test_a_lone_cr_is_part_of_its_line():
    compare(_case({"t.txt": Node("file", b"a\ntensor\r\rblock\nb\nc\n")},
                  {"t.txt": Node("file", b"a\ntensor\r\rblock\nB\nc\r\n")}))


def test_names_that_begin_or_end_with_a_space():
    compare(_case({" lead.txt": Node("file", LONG), "trail.txt ": Node("file", LONG)},
                  {" lead.txt": Node("file", LONG + b"x\n"), "trail.txt ": None, "trail2.txt ": Node("file", LONG)}))


def test_no_prefix_patches_on_a_p0_series_line_rename_and_copy():
    compare(_case({"dir/a.py": Node("file", LONG)},
                  {"dir/b.py": Node("file", LONG), "dir/a.py": Node("file", LONG.replace(b"line 9", b"nine"))},
                  {"dir/c.py": Node("file", LONG), "dir/b.py": None}, options=("-M", "-C", "--no-prefix")))


def test_unquoted_names_with_a_space_and_no_file_lines():
    compare(_case({"b c.txt": Node("file", LONG)},
                  {"b c.txt": Node("file", LONG, 0o755), "d e.txt": Node("file", b"")}))


def test_binary_patches_literal_and_delta():
    blob = bytes(range(256)) * 8
    compare(_case({"data.bin": Node("file", blob)},
                  {"data.bin": Node("file", blob[:1000] + b"\0changed" + blob[1000:]), "new.bin": Node("file", b"\0\1\2")},
                  options=("-M", "--binary", "--full-index")))


def test_symlinks_are_changed_renamed_and_deleted_as_links():
    compare(_case({"l1": Node("link", b"target"), "l2": Node("link", b"x"), "l3": Node("link", b"y")},
                  {"l1": Node("link", b"target2"), "l2": None, "l2b": Node("link", b"x"), "l3": None}))


def test_a_submodule_pointer_is_updated_added_and_removed_as_git_does(tmp_path):
    _env()
    repo = tmp_path / "src"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_bytes(LONG)
    one, two = "1" * 40, "2" * 40
    git(repo, "add", "a.txt")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{one},sub")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{one},gone")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "tag", "base")
    git(repo, "update-index", "--cacheinfo", f"160000,{two},sub")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{two},new")
    git(repo, "update-index", "--force-remove", "gone")
    git(repo, "commit", "-q", "-m", "move the submodules")
    out = tmp_path / "patches"
    git(repo, "format-patch", "-q", "-o", str(out), "base..main")
    patches = sorted(out.glob("*.patch"))
    assert b"Subproject commit" in patches[0].read_bytes()
    expected, tree = oracle(repo, patches, tmp_path, 1)
    report, target = ours(repo, patches, tmp_path, 1, False)
    assert expected == [True] and report.status == "applied", [(p.name, p.status, p.files) for p in report.patches]
    assert git(target, "rev-parse", "HEAD^{tree}").stdout.decode().strip() == tree


def test_a_file_replaced_by_a_directory_and_back():
    compare(_case({"dir": Node("file", LONG), "a.txt": Node("file", b"a\n")},
                  {"dir": None, "dir/x.h": Node("file", LONG)}, {"dir/x.h": None, "dir": Node("file", b"again\n")},
                  options=("--no-renames",)))
