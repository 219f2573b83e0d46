"""VERSIONS.toml names that would become paths: checked once, listed by `overlay lint` with
file:line, refused by every other command (exit 2) before anything is deleted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine_overlay.config import parse_versions
from engine_overlay.errors import OverlayError
from engine_overlay.locking import read_json
from helpers import make_project, make_repo

PATHS = 'series = "patches/series"\noverlay = "overlay"'  # so the default paths do not trip on the name
GIT_PIN = 'kind = "git"\nurl = "file:///nonexistent"\ntag = "v1.0"\ncommit = "' + "0" * 40 + '"\n'


def write_project(root: Path, toml: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "VERSIONS.toml").write_text(toml)
    return root


def engine_toml(name: str, body: str = "", pin: str = GIT_PIN) -> str:
    key = json.dumps(name)  # a TOML basic string: escapes NUL and quotes
    return f'[{key}]\nversion = "1.0"\n{body}\n[{key}.pins."1.0"]\n{pin}'


def lint_messages(run_cli, root: Path) -> list[tuple[str, int, str]]:
    code, out, data = run_cli("--format", "json", "lint", project=root)
    assert code == 1 and data is not None, out
    return [(Path(p["file"]).name, p["line"], p["message"]) for p in data["problems"]]


def refused(run_cli, root: Path, *argv: str, needle: str) -> None:
    code, out, _ = run_cli(*argv, project=root)
    assert code == 2 and needle in out and "Traceback" not in out, out
    assert "VERSIONS.toml" in out


@pytest.mark.parametrize("name", ["../../victim", "a/b", "..", ".git", ".GIT.", "-rf", "a\0b", "a\\b"])
def test_engine_names_that_are_not_plain_names(tmp_path, run_cli, name):
    root = write_project(tmp_path / "proj", "# a project\n" + engine_toml(name, PATHS))
    messages = lint_messages(run_cli, root)
    assert ("VERSIONS.toml", 2, f"engine name {name!r} is not a plain file name") in messages
    refused(run_cli, root, "fetch", "--", name, needle="not a plain file name")
    refused(run_cli, root, "status", "--", name, needle="not a plain file name")


def test_fetch_with_a_traversing_engine_name_deletes_nothing(tmp_path, run_cli):
    victim = tmp_path / "victim-1.0"  # cache/trees/../../victim-1.0
    victim.mkdir()
    (victim / "keep.txt").write_text("mine\n")
    (tmp_path / "cache/trees").mkdir(parents=True)  # a cache in use: `trees/..` resolves
    root = write_project(tmp_path / "proj", engine_toml("../../victim", PATHS))
    refused(run_cli, root, "fetch", "../../victim", needle="engine name")
    site = tmp_path / "site"
    (site / "demo_engine-1.0.dist-info").mkdir(parents=True)
    (site / "demo_engine-1.0.dist-info/METADATA").write_text("Name: demo-engine\nVersion: 1.0\n")
    root = write_project(tmp_path / "proj", engine_toml("../../../victim-1.0",
                                                        PATHS + '\ndistributions = ["demo-engine"]'))
    for argv in (("apply", "../../../victim-1.0", "--installed", "--site-packages", str(site)),
                 ("unapply", "../../../victim-1.0", "--installed", "--force", "--site-packages", str(site))):
        refused(run_cli, root, *argv, needle="engine name")
    assert (victim / "keep.txt").read_text() == "mine\n"


@pytest.mark.parametrize("file", ["../../victim.tar.gz", "ABSOLUTE", "sub/x.tar.gz", "..", "-x.tar.gz"])
def test_pin_file_names_are_plain_names(tmp_path, run_cli, file):
    victim = tmp_path / "victim.tar.gz"
    victim.write_bytes(b"not the pinned archive\n")
    file = str(victim) if file == "ABSOLUTE" else file
    pin = (f'kind = "sdist"\nfile = "{file}"\nsha256 = "{hashlib.sha256(b"x").hexdigest()}"\n'
           'index = "http://127.0.0.1:9"\n')
    root = write_project(tmp_path / "proj", engine_toml("eng", pin=pin))
    assert any(line == 4 and "'file'" in message and "not a plain file name" in message
               for _, line, message in lint_messages(run_cli, root))
    refused(run_cli, root, "fetch", "eng", needle="not a plain file name")
    assert victim.read_bytes() == b"not the pinned archive\n"  # a hash mismatch deleted it before


def test_project_paths_stay_inside_the_project(tmp_path, run_cli):
    outside = tmp_path / "outside"
    (outside / "demo").mkdir(parents=True)
    (outside / "demo/series").write_text("")
    root = tmp_path / "proj"
    root.mkdir()
    (root / "linked").symlink_to(outside)
    (root / "inside").mkdir()
    (root / "inside/up").symlink_to("../..")  # escapes through a link that points upwards
    cases = {
        'series = "/etc/series"': "'series' must be a relative path",
        'series = "../outside/demo/series"': "'series' must be a relative path",
        'series = "linked/demo/series"': "'series' must stay inside the project",
        'overlay = "inside/up/outside"': "'overlay' must stay inside the project",
        'overlay = ".git/hooks"': "'overlay' must be a relative path",
        'replaces = ["../x.py"]': "'replaces'",
        '[demo.markers]\nsnapshot = "../snap.json"': "'snapshot' must be a relative path",
        '[demo.markers]\nwaivers = "linked/waivers.toml"': "'waivers' must stay inside the project",
    }
    for body, needle in cases.items():
        write_project(root, engine_toml("demo", body))
        messages = lint_messages(run_cli, root)
        assert any(file == "VERSIONS.toml" and line and needle in message for file, line, message in messages), \
            (body, messages)
        refused(run_cli, root, "status", "demo", needle=needle)
    write_project(root, engine_toml("demo", 'series = "inside/series"\noverlay = "inside/overlay"'))
    assert parse_versions(root / "VERSIONS.toml")[1] == []


def test_deeply_nested_toml_and_json(tmp_path, run_cli):
    root = write_project(tmp_path / "proj", "x = " + "[" * 100000 + "]" * 100000 + "\n")
    project, problems = parse_versions(root / "VERSIONS.toml")
    assert project is None and len(problems) == 1 and "nested too deeply" in problems[0].message
    assert problems[0].file == "VERSIONS.toml"
    assert lint_messages(run_cli, root)[0][0] == "VERSIONS.toml"
    refused(run_cli, root, "fetch", "x", needle="nested too deeply")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(OverlayError, match="the journal") as caught:
        read_json(deep, "the journal", hint="delete it")
    assert caught.value.path == str(deep)


def test_read_json_schema(tmp_path):
    path = tmp_path / "state.json"
    schema = {"branch": str, "orig_branch": (str, None), "started": (int, float)}
    path.write_text(json.dumps({"branch": "b", "orig_branch": None, "started": 1.5, "extra": [1]}))
    assert read_json(path, "the state", hint="h", schema=schema)["branch"] == "b"
    path.write_text(json.dumps({"branch": "b", "started": 2}))  # None allowed: the key may be missing
    assert read_json(path, "the state", hint="h", schema=schema)["started"] == 2
    for bad in ({"branch": 1, "orig_branch": None, "started": 1}, {"orig_branch": None, "started": 1},
                {"branch": "b", "orig_branch": 3, "started": 1}, {"branch": "b", "orig_branch": "x", "started": "1"},
                {"branch": "b", "orig_branch": "x", "started": True}):
        path.write_text(json.dumps(bad))
        with pytest.raises(OverlayError, match="the state is corrupt") as caught:
            read_json(path, "the state", hint="h", schema=schema)
        assert caught.value.path == str(path) and caught.value.exit_code == 2
    path.write_text("[1, 2]")
    with pytest.raises(OverlayError, match="not a JSON object"):
        read_json(path, "the state", hint="h", schema=schema)


def test_journal_with_wrong_types_is_one_error(tmp_path, run_cli):
    repo = make_repo(tmp_path / "up", {"a.txt": "a\n"}, tag="v1.0.0")
    root = make_project(tmp_path / "proj", {})
    journal = repo / ".git/engine-overlay/journal.json"
    journal.parent.mkdir(parents=True)
    good = {"phase": "import", "branch": "overlay/demo-1.0.0", "orig_branch": None, "orig_head": "0" * 40,
            "label": "demo", "version": "1.0.0", "started": 1.5}
    for key, value in (("branch", ["x"]), ("orig_head", None), ("started", "soon"), ("phase", {})):
        journal.write_text(json.dumps({**good, key: value}))
        for argv in (("apply", "demo", "--checkout", str(repo)), ("apply", "demo", "--checkout", str(repo), "--abort")):
            code, out, _ = run_cli(*argv, project=root)
            assert code == 2 and f"the overlay journal is corrupt: '{key}'" in out and "Traceback" not in out, out
            assert "journal.json" in out
    journal.write_text("[" * 100000 + "]" * 100000)
    code, out, _ = run_cli("apply", "demo", "--checkout", str(repo), project=root)
    assert code == 2 and "journal.json" in out and "Traceback" not in out


def test_lint_refuses_replaces_through_a_symlink(tmp_path, run_cli):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.py").write_text("x = 1\n")
    root = make_project(tmp_path / "proj", {}, extra='replaces = ["pkg/x.py"]')
    (root / "overlay/demo").mkdir(parents=True)
    (root / "overlay/demo/pkg").symlink_to(outside)
    messages = lint_messages(run_cli, root)
    assert any("replaces" in m and "goes through the symlink" in m for _, _, m in messages), messages


def test_upgrade_state_with_wrong_types_is_one_error(tmp_path, run_cli):
    repo = make_repo(tmp_path / "up", {"a.txt": "a\n"}, tag="v1.0.0")
    root = make_project(tmp_path / "proj", {})
    victim = tmp_path / "victim.patch"
    victim.write_text("mine\n")
    state_file = repo / ".git/engine-overlay/upgrade.json"
    state_file.parent.mkdir(parents=True)
    good = {"engine": "demo", "from": "1.0.0", "to": "1.0.0", "branch": "overlay/demo-1.0.0", "orig_branch": "main",
            "orig_head": "0" * 40, "base": "0" * 40, "remaining": [], "done": [], "dropped": [], "skipped": [],
            "current": None, "started": 1}
    for key, value, needle in (("remaining", "x", "'remaining' must be list"), ("orig_head", 1, "'orig_head'"),
                               ("current", [1, 2, 3], "unexpected types"), ("done", [None], "unexpected types"),
                               ("dropped", [["../../../victim.patch", "r"]], "escapes the tree")):
        state_file.write_text(json.dumps({**good, key: value}))
        code, out, _ = run_cli("upgrade", "demo", "--continue", "--checkout", str(repo), project=root)
        assert code == 2 and needle in out and "upgrade.json" in out and "Traceback" not in out, out
    state_file.write_text("[" * 100000)
    code, out, _ = run_cli("upgrade", "demo", "--abort", "--checkout", str(repo), project=root)
    assert code == 2 and "upgrade.json" in out and "Traceback" not in out, out
    assert victim.read_text() == "mine\n"
