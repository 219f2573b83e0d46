"""--installed with hostile input: patches aimed at the undo record, symlinks in the
package, a damaged or forged record.json, and refused runs that must leave no trace."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import pytest
from test_installed import FILES, make_site, project_with_patches

from helpers import diff_of, git, make_project, make_repo

RECORD = ".engine-overlay/demo/record.json"


def listing(root: Path) -> dict[str, object]:
    """Every entry under *root*: directories, symlinks (target) and files (bytes, mode)."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return out


def installed(run_cli, command: str, site: Path, project: Path, *extra: str):
    return run_cli(command, "demo", "--installed", "--site-packages", str(site), *extra, project=project)


def project_writing(tmp_path: Path, path: str) -> Path:
    """A series whose second patch creates *path* (after a good first patch)."""
    scratch = make_repo(tmp_path / "scratch", FILES)
    good = diff_of(scratch, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    evil = diff_of(scratch, path, "forged\n", "evil")
    return make_project(tmp_path / "proj", {"0001-b.patch": good, "0002-evil.patch": evil})


# --- the record directory is off limits ---------------------------------------------------------

@pytest.mark.parametrize("path", [".engine-overlay/x", RECORD, ".engine-overlay/demo/originals/pkg/b.py",
                                  ".Engine-Overlay./demo/record.json"])
def test_patch_into_the_record_directory_is_refused(tmp_path, run_cli, path):
    site = make_site(tmp_path / "site")
    project = project_writing(tmp_path, path)
    before = listing(site)
    code, out, _ = installed(run_cli, "apply", site, project)
    assert code == 2 and "0002-evil.patch" in out and "undo record" in out, out
    assert listing(site) == before


def test_overlay_file_into_the_record_directory_is_refused(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    project = make_project(tmp_path / "proj", {}, overlay={RECORD: "{}\n"})
    before = listing(site)
    code, out, _ = installed(run_cli, "apply", site, project)
    assert code == 2 and "record.json" in out and "undo record" in out, out
    assert listing(site) == before


# --- unapply checks everything before the first write --------------------------------------------

@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_unapply_with_a_damaged_original_changes_nothing(tmp_path, run_cli, damage):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    assert installed(run_cli, "apply", site, project)[0] == 0
    original = site / ".engine-overlay/demo/originals/pkg/c.py"  # sorts after pkg/b.py
    if damage == "missing":
        original.unlink()
    else:
        original.write_text("c = 2\n")
    before = listing(site)
    code, out, _ = installed(run_cli, "unapply", site, project)
    assert code == 2 and "missing or corrupt" in out and "pkg/c.py" in out, out
    assert listing(site) == before


# --- symlinks are never followed, written through or replaced -------------------------------------

def test_patch_of_a_symlink_is_refused(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    os.symlink("b.py", site / "pkg/link.py")
    scratch = make_repo(tmp_path / "scratch", {**FILES, "pkg/link.py": FILES["pkg/b.py"]})
    project = make_project(tmp_path / "proj", {"0001-link.patch": diff_of(
        scratch, "pkg/link.py", "alpha\nBETA\ngamma\ndelta\n", "link")})
    before = listing(site)
    code, out, _ = installed(run_cli, "apply", site, project)
    assert code == 2 and "0001-link.patch" in out and "symlink" in out, out
    assert listing(site) == before


def test_patch_creating_a_symlink_is_refused(tmp_path, run_cli):
    """Written as content with mode 0o120000, a link became a mode-000 regular file."""
    site = make_site(tmp_path / "site")
    scratch = make_repo(tmp_path / "scratch", FILES)
    os.symlink("b.py", scratch / "pkg/ln.py")
    git(scratch, "add", "-A")
    diff = git(scratch, "diff", "--cached", "--full-index")
    assert "new file mode 120000" in diff
    project = make_project(tmp_path / "proj", {"0001-ln.patch": diff})
    before = listing(site)
    code, out, _ = installed(run_cli, "apply", site, project)
    assert code == 2 and "0001-ln.patch" in out and "symlink" in out, out
    assert listing(site) == before


def test_unapply_never_replaces_a_symlink(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    assert installed(run_cli, "apply", site, project)[0] == 0
    (site / "pkg/real.py").write_bytes((site / "pkg/b.py").read_bytes())  # what apply wrote
    (site / "pkg/b.py").unlink()
    os.symlink("real.py", site / "pkg/b.py")
    before = listing(site)
    for extra in ((), ("--force",)):
        code, out, _ = installed(run_cli, "unapply", site, project, *extra)
        assert code == 2 and "symlink" in out and "pkg/b.py" in out, out
        assert listing(site) == before


def test_forged_record_path_through_a_symlink_is_refused(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.py").write_text("keep me\n")
    os.symlink(outside, site / "pkg/out")
    project = project_with_patches(tmp_path)
    assert installed(run_cli, "apply", site, project)[0] == 0
    record = json.loads((site / RECORD).read_text())
    record["files"]["pkg/out/victim.py"] = {"original_sha256": None, "original_mode": None,
                                            "written_sha256": hashlib.sha256(b"keep me\n").hexdigest()}
    (site / RECORD).write_text(json.dumps(record))
    before = listing(site)
    code, out, _ = installed(run_cli, "unapply", site, project, "--force")
    assert code == 2 and "symlink" in out, out
    assert (outside / "victim.py").read_text() == "keep me\n" and listing(site) == before


@pytest.mark.parametrize("command", ["apply", "unapply", "status"])
@pytest.mark.parametrize("forge", [
    lambda r: {**r, "files": ["pkg/b.py"]},
    lambda r: {**r, "files": {"pkg/b.py": "x"}},
    lambda r: {**r, "files": {"pkg/b.py": {"original_sha256": 5}}},
    lambda r: {**r, "files": {"/etc/passwd": {}}},
    lambda r: {**r, "files": {".engine-overlay/demo/record.json": {}}},
    lambda r: {**r, "files": {"pkg/b.py": {"original_mode": "rwx"}}},
    lambda r: {**r, "patches": [["0001-b.patch"]]},
    lambda r: {**r, "state": ["applied"]},
], ids=["files-list", "info-str", "sha-int", "absolute", "record-dir", "mode", "patches", "state"])
def test_forged_record_types_are_one_clear_error(tmp_path, run_cli, command, forge):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    assert installed(run_cli, "apply", site, project)[0] == 0
    (site / RECORD).write_text(json.dumps(forge(json.loads((site / RECORD).read_text()))))
    before = listing(site)
    code, out, _ = installed(run_cli, command, site, project)
    assert code == 2 and "record.json" in out and "Traceback" not in out, out
    assert listing(site) == before


# --- a refused or failed run leaves site-packages as it was ---------------------------------------

def test_failed_plan_check_and_mismatch_leave_no_trace(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    (site / "pkg/b.py").write_text("something else entirely\n")  # 0001-b.patch no longer applies
    before = listing(site)
    code, out, _ = installed(run_cli, "apply", site, project)
    assert code == 1, out
    assert listing(site) == before
    assert installed(run_cli, "apply", site, project, "--check")[0] == 1
    assert listing(site) == before
    assert installed(run_cli, "unapply", site, project)[0] == 2  # nothing applied
    assert listing(site) == before
    (site / "demo_engine-1.0.0.dist-info/METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo-engine\nVersion: 2.0.0\n")
    before = listing(site)
    assert installed(run_cli, "apply", site, project)[0] == 2
    assert listing(site) == before


def test_check_run_leaves_no_trace(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    before = listing(site)
    code, out, _ = installed(run_cli, "apply", site, project, "--check")
    assert code == 0, out
    assert listing(site) == before


def test_held_lock_is_left_alone(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    lock = site / ".engine-overlay/demo.lock"
    lock.parent.mkdir()
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        before = listing(site)
        code, out, _ = installed(run_cli, "apply", site, project)
        assert code == 1 and "another overlay run" in out, out
        assert listing(site) == before


def test_refusal_keeps_an_existing_record_directory(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    (site / ".engine-overlay/other").mkdir(parents=True)  # another engine's record
    project = project_writing(tmp_path, "pkg/b.py")  # the second patch creates an existing file
    before = listing(site)
    code, out, _ = installed(run_cli, "apply", site, project)
    assert code == 1, out
    assert listing(site) == before
