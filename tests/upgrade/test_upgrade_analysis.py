"""preview-upgrade's analysis on histories where the patch was not written on the old pin:
`touched` must be computed where each hunk sits, and 3-way bases come from every pinned release."""

from __future__ import annotations

from helpers import diff_of, git, make_repo, write_patch


def _lines(prefix: str, count: int) -> str:
    return "".join(f"{prefix} {i}\n" for i in range(1, count + 1))


def _release(up, tag: str) -> None:
    git(up, "commit", "-qam", tag)
    git(up, "tag", tag)


def _fetch(run_cli, project, *versions: str) -> None:
    for version in versions:
        assert run_cli("fetch", "eng", "--version", version, project=project)[0] == 0


def _project(tmp_path, up, tags: dict[str, str], patch: str, default: str, urls: dict | None = None):
    project = tmp_path / "proj"
    project.mkdir(parents=True)
    urls = urls or {version: up for version in tags}
    pins = "".join(f'[eng.pins."{version}"]\nkind = "git"\nurl = "{urls[version]}"\ntag = "{tag}"\n'
                   f'commit = "{git(urls[version], "rev-parse", tag + "^{commit}").strip()}"\n'
                   for version, tag in tags.items())
    (project / "VERSIONS.toml").write_text(f'[eng]\nversion = "{default}"\n{pins}')
    write_patch(project / "patches/eng", "0001-x.patch", patch)
    (project / "patches/eng/series").write_text("0001-x.patch\n")
    return project


def test_touched_is_computed_where_the_hunk_applies_on_the_old_pin(tmp_path, run_cli):
    body = _lines("body", 40)
    up = make_repo(tmp_path / "up", {"m.py": body}, tag="v0")
    patch = diff_of(up, "m.py", body.replace("body 30\n", "body thirty\n"), "x")  # written on v0
    (up / "m.py").write_text(_lines("header", 58) + body)  # v1: the hunk now sits 58 lines lower
    _release(up, "v1")
    # v2: upstream edits the lines the hunk's header names (27-33), far from where it applies (85-91)
    (up / "m.py").write_text(_lines("header", 25) + "changed\n" + _lines("header", 58)[len(_lines("header", 26)):]
                             + body)
    _release(up, "v2")
    project = _project(tmp_path, up, {"1.0": "v1", "2.0": "v2"}, patch, "1.0")
    _fetch(run_cli, project, "1.0", "2.0")
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "2.0", project=project)
    assert [p["status"] for p in data["report"]["patches"]] == ["offset"], out
    assert data["touched"] == [], data["touched"]
    # and an upstream change right where the hunk sits is reported there
    (up / "m.py").write_text(_lines("header", 58) + body.replace("body 31\n", "body 31 upstream\n"))
    _release(up, "v3")
    project3 = _project(tmp_path / "p3", up, {"1.0": "v1", "3.0": "v3"}, patch, "1.0")
    _fetch(run_cli, project3, "1.0", "3.0")
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "3.0", project=project3)
    assert [t["hunk"] for t in data["touched"]] == [1] and "near 85-91" in data["touched"][0]["what"], data["touched"]


def test_three_way_bases_come_from_every_pinned_release(tmp_path, run_cli):
    body = _lines("line", 30)
    # three upstream repositories with one release each: no tree holds another's history
    v0 = make_repo(tmp_path / "v0", {"m.py": body}, tag="v0")
    patch = diff_of(v0, "m.py", body.replace("line 15\n", "line fifteen\n"), "x")  # index names v0's blob
    v1 = make_repo(tmp_path / "v1", {"m.py": body.replace("line 12\n", "line 12 (v1)\n")}, tag="v1")
    v2 = make_repo(tmp_path / "v2", {"m.py": body.replace("line 12\n", "line 12 (v2)\n")}, tag="v2")
    urls = {"0.9": v0, "1.0": v1, "2.0": v2}
    project = _project(tmp_path, v0, {"0.9": "v0", "1.0": "v1", "2.0": "v2"}, patch, "1.0", urls)
    _fetch(run_cli, project, "1.0", "2.0")
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "2.0", project=project)
    assert [p["status"] for p in data["report"]["patches"]] == ["failed"], out  # no base blob anywhere
    # with the patch's own release pinned and fetched, its blob is the 3-way base
    assert run_cli("fetch", "eng", "--version", "0.9", project=project)[0] == 0
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "2.0", project=project)
    assert [p["status"] for p in data["report"]["patches"]] == ["3-way"], out
    # it merges, but `overlay apply` (zero fuzz) would refuse it: not clean until refreshed
    assert code == 1 and data["report"]["status"] == "needs-refresh", out


def test_a_patch_already_upstream_is_said_so_not_failed(tmp_path, run_cli):
    body = _lines("line", 30)
    up = make_repo(tmp_path / "up", {"m.py": body, "n.py": body}, tag="v1")
    patch = diff_of(up, "m.py", body.replace("line 15\n", "line fifteen\n"), "x")
    (up / "m.py").write_text(body.replace("line 15\n", "line fifteen\n"))  # upstream merged it in v2
    _release(up, "v2")
    project = _project(tmp_path, up, {"1.0": "v1", "2.0": "v2"}, patch, "1.0")
    _fetch(run_cli, project, "1.0", "2.0")
    code, out, data = run_cli("--format", "json", "preview-upgrade", "eng", "--to", "2.0", project=project)
    # no conflict (`overlay upgrade` drops it), but not clean either: `overlay apply` stops there
    assert code == 1 and data["report"]["status"] == "needs-refresh", out
    assert data["verdict"]["patches"] == [{"name": "0001-x.patch", "verdict": "already-upstream",
                                           "details": ["m.py: hunk #1 already-applied"], "touched": True}]
    assert data["suggestions"] == ["drop 0001-x.patch: its change is already in 2.0"]
    files = data["report"]["patches"][0]["files"]
    assert [h["status"] for h in files[0]["hunks"]] == ["already-applied"]  # not "failed"
    code, out, data = run_cli("--format", "json", "apply", "eng", "--version", "2.0", "--check", project=project)
    assert code == 1 and data["status"] == "already-upstream" and data["branch"] is None, out
    assert any("already upstream (drop from the series): 0001-x.patch" in w for w in data["warnings"])
    code, out, _ = run_cli("apply", "eng", "--version", "2.0", project=project)
    assert "result: already-upstream" in out and "drop from the series" in out and "branch" not in out.split("\n")[0]


def test_upgrade_refuses_a_mailbox_entry_before_writing_anything(tmp_path, run_cli):
    body = _lines("line", 30)
    up = make_repo(tmp_path / "up", {"m.py": body}, tag="v1")
    scratch = make_repo(tmp_path / "scratch", {"m.py": body}, tag=None)
    (scratch / "m.py").write_text(body.replace("line 3\n", "line three\n"))
    git(scratch, "commit", "-qam", "one")
    (scratch / "m.py").write_text(body.replace("line 3\n", "line three\n").replace("line 20\n", "line twenty\n"))
    git(scratch, "commit", "-qam", "two")
    (up / "m.py").write_text(body + "more\n")
    _release(up, "v2")
    project = _project(tmp_path, up, {"1.0": "v1", "2.0": "v2"}, "", "1.0")
    (project / "patches/eng/0001-x.patch").unlink()
    (project / "patches/eng/all.mbox").write_text(git(scratch, "format-patch", "--stdout", "HEAD~2..HEAD"))
    (project / "patches/eng/series").write_text("all.mbox\n")
    _fetch(run_cli, project, "1.0", "2.0")
    code, out, _ = run_cli("upgrade", "eng", "--to", "2.0", project=project)
    assert code == 2 and "holds 2 patches" in out, out
    assert run_cli("upgrade", "eng", "--abort", project=project)[0] != 0  # nothing was started
