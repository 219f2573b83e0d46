"""--installed: apply onto an installed distribution and restore it byte for byte."""

from __future__ import annotations

from pathlib import Path

from helpers import diff_of, git, make_project, make_repo, snapshot_tree, write_tree

FILES = {"pkg/__init__.py": "", "pkg/b.py": "alpha\nbeta\ngamma\ndelta\n", "pkg/c.py": "c = 1\n"}


def make_site(root: Path, version: str = "1.0.0+cpu") -> Path:
    write_tree(root, FILES)
    write_tree(root, {"demo_engine-1.0.0.dist-info/METADATA":
                      f"Metadata-Version: 2.1\nName: demo-engine\nVersion: {version}\n"})
    return root


def project_with_patches(tmp_path: Path) -> Path:
    scratch = make_repo(tmp_path / "scratch", FILES)
    d1 = diff_of(scratch, "pkg/b.py", "alpha\nBETA\ngamma\ndelta\n", "b")
    (scratch / "pkg/c.py").unlink()  # a real deletion, as git writes it
    git(scratch, "add", "-A")
    d2 = git(scratch, "diff", "--cached", "--full-index")
    git(scratch, "reset", "-q", "--hard")
    return make_project(tmp_path / "proj", {"0001-b.patch": d1, "0002-c.patch": d2},
                        overlay={"pkg/npu/new.py": "n = 1\n"})


def test_installed_round_trip_restores_bytes(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    before = snapshot_tree(site)
    code, out, data = run_cli("--format", "json", "apply", "demo", "--installed", "--site-packages", str(site),
                              project=project)
    assert code == 0, out
    assert data["status"] == "applied" and data["target_kind"] == "installed"
    assert (site / "pkg/b.py").read_text() == "alpha\nBETA\ngamma\ndelta\n"
    assert not (site / "pkg/c.py").exists()
    assert (site / "pkg/npu/new.py").read_text() == "n = 1\n"
    code, out, data = run_cli("--format", "json", "status", "demo", "--installed", "--site-packages", str(site),
                              project=project)
    assert code == 0 and {p["status"] for p in data["patches"]} == {"applied"}
    code, out, _ = run_cli("apply", "demo", "--installed", "--site-packages", str(site), project=project)
    assert code == 0 and "already applied" in out
    code, out, _ = run_cli("unapply", "demo", "--installed", "--site-packages", str(site), project=project)
    assert code == 0, out
    after = snapshot_tree(site)
    assert after == before


def test_installed_version_checked(tmp_path, run_cli):
    site = make_site(tmp_path / "site", version="2.0.0")
    project = project_with_patches(tmp_path)
    code, out, _ = run_cli("apply", "demo", "--installed", "--site-packages", str(site), project=project)
    assert code == 2 and "installed demo-engine is 2.0.0, the pin is 1.0.0" in out


def test_unapply_refuses_to_clobber_user_edits(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    assert run_cli("apply", "demo", "--installed", "--site-packages", str(site), project=project)[0] == 0
    (site / "pkg/b.py").write_text("edited by the user\n")
    code, out, _ = run_cli("unapply", "demo", "--installed", "--site-packages", str(site), project=project)
    assert code == 1 and "changed since apply" in out
    assert (site / "pkg/b.py").read_text() == "edited by the user\n"
    code, out, _ = run_cli("unapply", "demo", "--installed", "--site-packages", str(site), "--force",
                           project=project)
    assert code == 0 and (site / "pkg/b.py").read_text() == FILES["pkg/b.py"]


def test_interrupted_installed_apply_is_detected_and_restorable(tmp_path, run_cli):
    site = make_site(tmp_path / "site")
    project = project_with_patches(tmp_path)
    before = snapshot_tree(site)
    assert run_cli("apply", "demo", "--installed", "--site-packages", str(site), project=project)[0] == 0
    record = site / ".engine-overlay/demo/record.json"
    record.write_text(record.read_text().replace('"applied"', '"applying"'))  # as if killed mid-write
    code, out, _ = run_cli("apply", "demo", "--installed", "--site-packages", str(site), project=project)
    assert code == 1 and "interrupted apply" in out and "unapply" in out
    assert run_cli("unapply", "demo", "--installed", "--site-packages", str(site), project=project)[0] == 0
    assert {k: v for k, v in snapshot_tree(site).items()} == before
