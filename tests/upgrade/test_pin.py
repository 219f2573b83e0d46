"""overlay pin and preview-upgrade --to latest / an unpinned version, against a PEP 691 index
served on 127.0.0.1 in the test (small sdists and wheels made here), and git remotes."""

from __future__ import annotations

import difflib
import hashlib
import shutil
from pathlib import Path

import pytest

from helpers import PackageIndex, diff_of, git, make_repo, make_sdist, make_wheel, write_patch


def _module(top: int = 0, changed: str | None = None) -> str:
    lines = [f"# header {i}" for i in range(top)] + [f"value_{i} = {i}" for i in range(40)]
    if changed:
        lines[top + 20] = changed
    return "\n".join(lines) + "\n"


@pytest.fixture
def index():
    idx = PackageIndex()
    yield idx
    idx.close()


VERSIONS = """# pins of the engine under test
[eng]
version = "1.0"  # the default pin
series = "patches/eng/series"
distributions = ["eng"]

# the first release
[eng.pins."1.0"]
kind = "sdist"
file = "eng-1.0.tar.gz"
sha256 = "{sha}"
index = "{url}"

# another engine, after a comment that belongs to it
[other]
version = "2.0"
[other.pins."2.0"]
kind = "git"
url = "file:///nonexistent"
tag = "v2.0"
commit = "{zero}"
"""


def _project(tmp_path: Path, index: PackageIndex, releases: dict[str, str]) -> Path:
    """A project pinning eng 1.0 from *index*, with one patch (written on 1.0) that edits line 21
    of eng/m.py; *releases* (version -> m.py) are published as sdists."""
    for version, content in releases.items():
        index.add("eng", f"eng-{version}.tar.gz", make_sdist("eng", version, {"eng/m.py": content}))
    sha = next(e["hashes"]["sha256"] for e in index.files["eng"] if e["filename"] == "eng-1.0.tar.gz")
    project = tmp_path / "project"
    project.mkdir()
    (project / "VERSIONS.toml").write_text(VERSIONS.format(sha=sha, url=index.url, zero="0" * 40))
    up = make_repo(tmp_path / "written-on", {"eng/m.py": releases["1.0"]}, tag=None)
    write_patch(project / "patches/eng", "0001-m.patch",
                diff_of(up, "eng/m.py", releases["1.0"].replace("value_20 = 20", "value_20 = 'ours'"), "m"))
    (project / "patches/eng/series").write_text("0001-m.patch\n")
    return project


RELEASES = {"1.0": _module(), "1.1": _module(top=5), "1.2rc1": _module(top=6), "1.3": _module(top=7)}


def _added_lines(before: str, after: str) -> list[str]:
    """The diff of two files as its changed lines; fails if a line was removed or changed."""
    diff = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if not line.startswith(("---", "+++", "@@"))]
    assert all(line.startswith("+") for line in diff), diff
    return [line[1:] for line in diff]


def test_pin_latest_skips_prereleases_and_yanked_and_touches_nothing_else(tmp_path, index, run_cli):
    index_releases = dict(RELEASES)
    project = _project(tmp_path, index, index_releases)
    entry = next(e for e in index.files["eng"] if e["filename"] == "eng-1.3.tar.gz")
    entry["yanked"] = "broken build"
    index.add("eng", "eng-1.1-py3-none-any.whl", b"not used: the sdist is preferred")
    versions = project / "VERSIONS.toml"
    before = versions.read_text()

    code, out, data = run_cli("--format", "json", "pin", "eng", "latest", project=project)
    assert code == 0, out
    assert data["version"] == "1.1" and data["status"] == "pinned" and data["default"] == "1.0"
    sha = hashlib.sha256(index.bytes["eng-1.1.tar.gz"]).hexdigest()
    assert data["source"] == {"kind": "sdist", "file": "eng-1.1.tar.gz", "sha256": sha, "index": index.url}
    assert any("1.3: yanked on the index (broken build)" in n for n in data["notes"])
    assert any("1.2rc1: a pre-release" in n for n in data["notes"])
    after = versions.read_text()
    assert _added_lines(before, after) == ['[eng.pins."1.1"]', 'kind = "sdist"', 'file = "eng-1.1.tar.gz"',
                                           f'sha256 = "{sha}"', f'index = "{index.url}"', ""]
    # right after the pin it follows, before the next engine's comment
    assert after.index('[eng.pins."1.1"]') < after.index("# another engine")
    assert index.downloads() == ["eng-1.1.tar.gz"]  # downloaded and verified before the write
    code, out, fetched = run_cli("--format", "json", "fetch", "eng", "--version", "1.1", project=project)
    assert code == 0 and not fetched["downloaded"], out  # the verified file is the cache's
    assert index.downloads() == ["eng-1.1.tar.gz"]

    # again: already pinned, nothing written; --pre considers 1.2rc1, never the yanked 1.3
    code, out, data = run_cli("--format", "json", "pin", "eng", "latest", project=project)
    assert code == 0 and data["status"] == "already-pinned" and versions.read_text() == after
    code, out, data = run_cli("--format", "json", "pin", "eng", "latest", "--pre", project=project)
    assert code == 0 and data["version"] == "1.2rc1", out
    assert 'version = "1.0"  # the default pin' in versions.read_text()


def test_a_named_yanked_or_pre_release_is_refused_unless_asked(tmp_path, index, run_cli):
    project = _project(tmp_path, index, RELEASES)
    next(e for e in index.files["eng"] if e["filename"] == "eng-1.3.tar.gz")["yanked"] = True
    versions = project / "VERSIONS.toml"
    before = versions.read_text()
    code, out, _ = run_cli("pin", "eng", "1.3", project=project)
    assert code == 2 and "eng-1.3.tar.gz is yanked on the index (PEP 592)" in out and "--allow-yanked" in out
    code, out, _ = run_cli("pin", "eng", "1.2rc1", project=project)
    assert code == 2 and "is a pre-release" in out and "--pre" in out
    code, out, _ = run_cli("pin", "eng", "9.9", project=project)
    assert code == 2 and "has no release 9.9" in out and "1.3, 1.2rc1, 1.1, 1.0" in out
    assert "Traceback" not in out and versions.read_text() == before and index.downloads() == []
    code, out, data = run_cli("--format", "json", "pin", "eng", "1.3", "--allow-yanked", project=project)
    assert code == 0 and data["status"] == "pinned" and any("yanked" in n for n in data["notes"]), out
    code, out, data = run_cli("--format", "json", "pin", "eng", "1.2rc1", "--pre", "--set-default", project=project)
    assert code == 0 and data["default_changed"] and data["default"] == "1.2rc1", out
    text = versions.read_text()
    assert 'version = "1.2rc1"  # the default pin' in text
    assert text.index('[eng.pins."1.2rc1"]') < text.index('[eng.pins."1.3"]')  # in version order


def test_a_tampered_file_is_refused_and_nothing_written(tmp_path, index, run_cli):
    project = _project(tmp_path, index, {"1.0": RELEASES["1.0"]})
    real = make_sdist("eng", "1.1", {"eng/m.py": RELEASES["1.1"]})
    index.add("eng", "eng-1.1.tar.gz", real, serve=real.replace(b"\x00", b"\x01", 1) + b"tampered")
    before = (project / "VERSIONS.toml").read_text()
    code, out, _ = run_cli("pin", "eng", "1.1", project=project)
    assert code == 1 and "sha256 mismatch for eng-1.1.tar.gz" in out and hashlib.sha256(real).hexdigest() in out
    assert (project / "VERSIONS.toml").read_text() == before
    assert not any((tmp_path / "cache" / "downloads").iterdir())  # neither the file nor a .part
    # the preview verifies the same way
    code, out, _ = run_cli("preview-upgrade", "eng", "--to", "1.1", project=project)
    assert code == 1 and "sha256 mismatch" in out and (project / "VERSIONS.toml").read_text() == before
    # an index that vouches for no digest cannot give a pin
    index.add("eng", "eng-1.2.tar.gz", make_sdist("eng", "1.2", {"eng/m.py": RELEASES["1.1"]}), published=None)
    code, out, _ = run_cli("pin", "eng", "1.2", project=project)
    assert code == 2 and "publishes no sha256 for eng-1.2.tar.gz" in out
    # nor one whose listing points at a local file instead of serving it
    local = tmp_path / "local.tar.gz"
    local.write_bytes(real)
    index.files["eng"].append({"filename": "eng-1.4.tar.gz", "url": local.as_uri(),
                               "hashes": {"sha256": hashlib.sha256(real).hexdigest()}})
    code, out, _ = run_cli("pin", "eng", "1.4", project=project)
    assert code == 2 and "has no release 1.4" in out


def test_a_wheel_engine_pins_the_wheel_with_its_tags(tmp_path, index, run_cli):
    tag = "cp311-cp311-manylinux_2_28_x86_64"
    name, data = make_wheel("eng", "1.0", tag, {"eng/m.py": RELEASES["1.0"]})
    sha = index.add("eng", name, data)
    for other in ("cp311-cp311-manylinux_2_28_aarch64", tag, "cp312-cp312-manylinux_2_28_x86_64"):
        index.add("eng", *make_wheel("eng", "1.1", other, {"eng/m.py": RELEASES["1.1"]}))
    index.add("eng", *make_wheel("eng", "1.2", "cp312-cp312-manylinux_2_28_x86_64", {"eng/m.py": "x\n"}))
    project = tmp_path / "project"
    project.mkdir()
    (project / "VERSIONS.toml").write_text(
        f'[eng]\nversion = "1.0"\n[eng.pins."1.0"]\nkind = "wheel"\nfile = "{name}"\nsha256 = "{sha}"\n'
        f'index = "{index.url}"\n# binaries stay out of git\nexclude = ["*.so"]\n')
    (project / "patches/eng").mkdir(parents=True)
    (project / "patches/eng/series").write_text("")
    code, out, result = run_cli("--format", "json", "pin", "eng", "latest", project=project)
    assert code == 0, out
    assert result["version"] == "1.1" and result["source"]["file"] == f"eng-1.1-{tag}.whl"
    assert result["source"]["exclude"] == ["*.so"]  # the engine's wheel pins keep binaries out of git
    assert any("1.2: it has no sdist and no wheel tagged cp311-cp311-manylinux_2_28_x86_64" in n
               for n in result["notes"]), result["notes"]
    code, out, _ = run_cli("pin", "eng", "1.2", project=project)
    assert code == 2 and "--file" in out
    code, out, result = run_cli("--format", "json", "pin", "eng", "1.2", "--file",
                                "eng-1.2-cp312-cp312-manylinux_2_28_x86_64.whl", project=project)
    assert code == 0 and result["source"]["kind"] == "wheel", out


def test_a_git_engine_pins_the_newest_matching_tag_and_its_commit(tmp_path, run_cli):
    up = make_repo(tmp_path / "up", {"m.py": RELEASES["1.0"]}, tag="v1.0")
    for version, annotated in (("1.1", True), ("2.0rc1", False)):
        (up / "m.py").write_text(RELEASES["1.1"] + version)
        git(up, "commit", "-qam", f"release {version}")
        git(up, "tag", *(["-a", "-m", "annotated"] if annotated else []), f"v{version}")
    git(up, "tag", "not-a-release")
    commit_11 = git(up, "rev-parse", "v1.1^{commit}").strip()
    project = tmp_path / "project"
    (project / "patches/eng").mkdir(parents=True)
    (project / "patches/eng/series").write_text("")
    (project / "VERSIONS.toml").write_text(
        f'[eng]\nversion = "1.0"\n[eng.pins."1.0"]\nkind = "git"\nurl = "{up}"\ntag = "v1.0"\n'
        f'commit = "{git(up, "rev-parse", "v1.0").strip()}"\n')
    code, out, result = run_cli("--format", "json", "pin", "eng", "latest", project=project)
    assert code == 0, out
    assert result["version"] == "1.1" and result["source"] == {"kind": "git", "url": str(up), "tag": "v1.1",
                                                               "commit": commit_11}  # the tag object peeled
    code, out, _ = run_cli("fetch", "eng", "--version", "1.1", project=project)
    assert code == 0, out  # fetch checks the tag resolves to the recorded commit
    code, out, result = run_cli("--format", "json", "pin", "eng", "latest", "--pre", project=project)
    assert code == 0 and result["version"] == "2.0rc1" and result["source"]["tag"] == "v2.0rc1", out
    code, out, _ = run_cli("pin", "eng", "3.0", project=project)
    assert code == 2 and "has no tag v3.0" in out and "v2.0rc1, v1.1, v1.0" in out
    # an engine whose default pin is a pre-release follows them (latest never falls back to 1.1)
    code, out, _ = run_cli("pin", "eng", "2.0rc1", "--set-default", project=project)
    assert code == 0, out
    (up / "m.py").write_text("2.0rc2\n")
    git(up, "commit", "-qam", "2.0rc2")
    git(up, "tag", "v2.0rc2")
    code, out, result = run_cli("--format", "json", "pin", "eng", "latest", project=project)
    assert code == 0 and result["version"] == "2.0rc2", out


def test_preview_of_an_unpinned_release_says_so_and_writes_nothing(tmp_path, index, run_cli):
    releases = {"1.0": _module(), "1.1": _module(top=5), "2.0": _module(changed="value_20 = 'upstream'")}
    project = _project(tmp_path, index, releases)
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}

    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "1.1", project=project)
    assert code == 0, out
    assert data["to_version"] == "1.1" and data["pinned"] is False
    assert data["source"]["file"] == "eng-1.1.tar.gz" and "not pinned in VERSIONS.toml" in data["notes"][0]
    assert data["verdict"]["ok"] is True and data["verdict"]["status"] == "clean"
    assert [(p["name"], p["verdict"]) for p in data["verdict"]["patches"]] == [("0001-m.patch", "offset")]
    assert data["verdict"]["patches"][0]["details"] == ["eng/m.py: hunk #1 offset +5"]

    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "latest", project=project)
    assert code == 1, out
    assert data["to_version"] == "2.0" and data["verdict"]["ok"] is False
    assert data["verdict"]["status"] == "conflicts" and data["report"]["status"] == "conflicts"
    assert data["verdict"]["patches"][0]["verdict"] == "conflicts"
    assert data["verdict"]["reasons"] == ["0001-m.patch conflicts: eng/m.py: hunk #1 fails (patch line 14)"]

    code, out, _ = run_cli("preview-upgrade", "eng", "--to", "latest", project=project)
    assert code == 1 and "note: eng 2.0 is not pinned in VERSIONS.toml" in out and "VERSIONS.toml was not changed" in out
    code, out, _ = run_cli("preview-upgrade", "eng", "--to", "latest", "--format", "markdown", project=project)
    assert code == 1 and out.startswith("## eng 1.0 → 2.0: conflicts\n"), out
    assert ("| 1 | `0001-m.patch` | **conflicts** | eng/m.py: hunk #1 fails (patch line 14); upstream changed the "
            "code it touches: review it |") in out
    assert "Patches: conflicts 1." in out and "- `0001-m.patch` `eng/m.py` hunk #1: upstream changed lines" in out
    assert "Marked blocks: not checked (the series does not apply)." in out
    after = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    assert after == before  # VERSIONS.toml, series and patches untouched


# -- the verdict on marked blocks -----------------------------------------------------------------

BODY = [f"    step_{i} = {i}" for i in range(12)]


def _marked_file(added: int = 0, inner: str | None = None) -> str:
    body = list(BODY)
    if inner:
        body[6] = inner
    top = [f"# added upstream {i}" for i in range(added)] + [f"# top {i}" for i in range(3)]
    return "\n".join([*top, "def run():", *body, "    return 0", ""])


@pytest.fixture
def marked(tmp_path, run_cli):
    """eng 1.0 (git) whose patch fences upstream lines 2-10 of run() as an Omni-new block (two
    hunks, the fenced lines between them untouched); 1.1 moves it down, 1.2 edits a fenced line."""
    up = make_repo(tmp_path / "up", {"m.py": _marked_file()}, tag="v1.0")
    new = _marked_file().splitlines()
    new.insert(5, "    # ---- Omni-new: ours ----")  # before step_1
    new.insert(15, "    # ---- Omni-new: ours ----")  # after step_10
    patch = diff_of(up, "m.py", "\n".join(new) + "\n", "fence")
    for version, content in (("1.1", _marked_file(added=4)), ("1.2", _marked_file(inner="    step_6 = 'upstream'"))):
        (up / "m.py").write_text(content)
        git(up, "commit", "-qam", version)
        git(up, "tag", f"v{version}")
    project = tmp_path / "project"
    write_patch(project / "patches/eng", "0001-fence.patch", patch)
    (project / "patches/eng/series").write_text("0001-fence.patch\n")
    (project / "VERSIONS.toml").write_text(
        f'[eng]\nversion = "1.0"\n[eng.pins."1.0"]\nkind = "git"\nurl = "{up}"\ntag = "v1.0"\n'
        f'commit = "{git(up, "rev-parse", "v1.0").strip()}"\n')
    assert run_cli("fetch", "eng", project=project)[0] == 0
    code, out, data = run_cli("--format", "json", "apply", "eng", project=project)
    assert code == 0, out
    code, out, _ = run_cli("markers", "snapshot", "--root", data["target"], "-o", str(project / "markers/eng.json"),
                           "--tags", "Omni-new", project=project)
    assert code == 0, out
    with (project / "VERSIONS.toml").open("a") as versions:  # the baseline the previews compare with
        versions.write('[eng.markers]\ntags = ["Omni-new"]\nsnapshot = "markers/eng.json"\n')
    return project


def test_verdict_is_clean_only_when_every_block_is_intact(marked, run_cli):
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "latest", "--pre", project=marked)
    assert code == 1, out
    assert data["to_version"] == "1.2" and data["pinned"] is False
    verdict = data["verdict"]
    assert [p["verdict"] for p in verdict["patches"]] == ["applies"]  # both hunks still apply ...
    assert verdict["blocks"] == [{"block": "ours", "file": "m.py", "verdict": "modified", "waived": False}]
    assert verdict["status"] == "blocks-changed" and verdict["reasons"] == ["marked block ours (m.py) is modified"]
    code, out, _ = run_cli("preview-upgrade", "eng", "--to", "1.2", "--format", "markdown", project=marked)
    assert code == 1 and "## eng 1.0 → 1.2: blocks-changed" in out
    assert "Marked blocks: modified 1." in out and "| `ours` | `m.py` | **modified** |" in out
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "1.1", project=marked)
    assert code == 0, out
    assert data["verdict"]["blocks"][0]["verdict"] == "intact" and data["verdict"]["ok"] is True
    assert data["verdict"]["patches"][0]["details"] == ["m.py: hunk #1 offset +4, hunk #2 offset +4"]


def test_three_way_and_already_upstream_are_not_clean(tmp_path, run_cli):
    body = "".join(f"line {i}\n" for i in range(30))
    up = make_repo(tmp_path / "up", {"m.py": body, "n.py": body}, tag="v1.0")
    patches = {"0001-merged.patch": diff_of(up, "m.py", body.replace("line 15\n", "line fifteen\n"), "m"),
               "0002-merges.patch": diff_of(up, "n.py", body.replace("line 15\n", "line fifteen\n"), "n")}
    (up / "m.py").write_text(body.replace("line 15\n", "line fifteen\n"))  # upstream took 0001
    (up / "n.py").write_text(body.replace("line 12\n", "line 12 upstream\n"))  # 0002 merges only by 3-way
    git(up, "commit", "-qam", "2.0")
    git(up, "tag", "v2.0")
    project = tmp_path / "project"
    for name, patch in patches.items():
        write_patch(project / "patches/eng", name, patch)
    (project / "patches/eng/series").write_text("".join(f"{n}\n" for n in patches))
    (project / "VERSIONS.toml").write_text(
        f'[eng]\nversion = "1.0"\n[eng.pins."1.0"]\nkind = "git"\nurl = "{up}"\ntag = "v1.0"\n'
        f'commit = "{git(up, "rev-parse", "v1.0").strip()}"\n')
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "latest", project=project)
    assert code == 1, out
    assert [p["verdict"] for p in data["verdict"]["patches"]] == ["already-upstream", "3-way"]
    assert data["verdict"]["status"] == "needs-refresh" and data["verdict"]["counts"]["3-way"] == 1
    assert any("0002-merges.patch applies only by a 3-way merge" in r for r in data["verdict"]["reasons"])
    shutil.rmtree(tmp_path / "cache")  # the preview is read-only: a fresh cache gives the same verdict
    code, out, again = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "2.0", project=project)
    assert code == 1 and again["verdict"] == data["verdict"]
