"""Moving a series to a new upstream pin: read-only preview, guided upgrade, upstream diff.

The preview applies the series for real, but in a throwaway clone of the new
upstream tree (objects shared, the old tree's objects as an alternate for
3-way bases), so its per-patch outcome is what `overlay upgrade` will meet.
The upgrade itself works like `git am`: one patch at a time on a new branch,
stopping at a conflict with its state in `.git/engine-overlay/upgrade.json`
for `--continue`, `--skip` or `--abort`.
"""

from __future__ import annotations

import ast
import difflib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import gitops, paths, sources
from .apply import (
    ApplyOptions,
    Payload,
    apply_git,
    default_branch,
    engine_payload,
    read_journal,
    require_clean,
    version_tags,
)
from .config import Engine, Project
from .errors import CheckFailed, OverlayError
from .locking import TargetLock, atomic_write, read_json, write_json_atomic
from .plan import commit_message, patch_when, plan
from .report import (
    ALREADY,
    APPLIED,
    FAILED,
    OFFSET,
    OK_PATCH,
    SKIPPED,
    THREE_WAY,
    PatchResult,
    Report,
)
from .series import Patch, parse_author, parse_patch, split_lines
from .tree import GitTreeState

if TYPE_CHECKING:
    import git


@dataclass
class UpstreamTouch:
    patch: str
    file: str
    hunk: int
    what: str  # e.g. "function Foo.bar changed" / "lines 10-20 changed"


@dataclass
class PatchVerdict:
    name: str
    verdict: str  # applies | offset | 3-way | conflicts | already-upstream | skipped
    details: list[str] = field(default_factory=list)  # hunks that moved or fail, the skip reason
    touched: bool = False  # upstream changed the code it touches (it may still apply)


@dataclass
class BlockVerdict:
    block: str  # the block's id, else its scope
    file: str
    verdict: str  # intact | modified | moved | lost | added
    waived: bool = False


@dataclass
class Verdict:
    """What automation reads: ok when every patch applies at zero fuzz (offsets allowed, as
    `overlay apply` takes them; skipped ones aside) and every marked block is intact."""

    ok: bool
    status: str  # clean | needs-refresh | blocks-changed | conflicts
    patches: list[PatchVerdict] = field(default_factory=list)
    blocks: list[BlockVerdict] | None = None  # None: not checked, blocks_note says why
    blocks_note: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


@dataclass
class Preview:
    engine: str
    from_version: str
    to_version: str
    report: Report
    touched: list[UpstreamTouch] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    pinned: bool = True  # False: resolved from the index for this preview, VERSIONS.toml untouched
    source: dict = field(default_factory=dict)  # where the new version's sources came from
    notes: list[str] = field(default_factory=list)
    verdict: Verdict | None = None


# -- helpers ------------------------------------------------------------------------------------

def _tree(engine: Engine, version: str) -> tuple[git.Repo, str]:
    result = sources.fetch(engine, version)
    return gitops.open_repo(Path(result.tree)), result.tag


def _fetched_object_dirs(engine: Engine) -> list[Path]:
    """The object stores of every pin of *engine* already in the cache: a patch written on an
    earlier release names that release's blobs in its `index` lines (its 3-way base)."""
    found = []
    for version in engine.pins:
        tree = sources.tree_path(engine.name, version)
        objects = tree / ".git" / "objects"
        if objects.is_dir() and not (tree / ".git").is_symlink():
            found.append(objects)
    return found


def _throwaway(new_repo: git.Repo, tag: str, old_repo: git.Repo, where: Path,
               more: list[Path] = ()) -> git.Repo:
    """A clone of the new tree at *tag* sharing objects, with the old tree's objects (and *more*
    object stores) as alternates for 3-way bases."""
    clone = gitops.clone(gitops.work_root(new_repo), where, shared=True, no_checkout=True)
    alternates = Path(clone.git_dir) / "objects" / "info" / "alternates"
    stores = [Path(old_repo.git_dir) / "objects", *more]
    with open(alternates, "a") as handle:
        for store in dict.fromkeys(str(p) for p in stores):
            handle.write(store + "\n")
    clone.git.checkout("-q", "-b", "overlay-preview-base", tag)
    return clone


def _functions(source: bytes) -> dict[str, tuple[int, int, str]]:
    """qualname -> (first line, last line, source text) for every def/class."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    text = source.decode("utf-8", errors="replace").splitlines()
    found: dict[str, tuple[int, int, str]] = {}

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                if not isinstance(child, ast.ClassDef):
                    found[name] = (child.lineno, end, "\n".join(text[child.lineno - 1:end]))
                walk(child, name + ".")

    walk(tree, "")
    return found


def upstream_touches(patch: Patch, old: git.Repo, old_tag: str, new: git.Repo, new_tag: str) -> list[UpstreamTouch]:
    """Hunks whose lines (±3) or enclosing function changed upstream between the two tags."""
    touches = []
    for fp in patch.files:
        path = fp.target(patch.strip)[0]
        if not path or not fp.hunks:
            continue
        before, after = gitops.read_at(old, old_tag, path), gitops.read_at(new, new_tag, path)
        if before is None or after is None or before == after:
            continue
        old_lines = split_lines(before)
        changed = [(i1, i2) for tag, i1, i2, _j1, _j2 in
                   difflib.SequenceMatcher(None, old_lines, split_lines(after), autojunk=False)
                   .get_opcodes() if tag != "equal"]
        funcs_old = _functions(before) if path.endswith(".py") else {}
        funcs_new = _functions(after) if path.endswith(".py") else {}
        placed = _where_hunks_apply(before, fp)
        for number, hunk in enumerate(fp.hunks, 1):
            at = placed[number - 1] or hunk.old_start  # where the hunk sits on the old pin (offsets included)
            start, end = at - 1, at - 1 + hunk.old_len
            first = at + hunk.leading  # 1-based lines the hunk really changes
            last = max(first, at + hunk.old_len - hunk.trailing - 1)
            around = [name for name, (lo, hi, _text) in funcs_old.items() if lo <= first and last <= hi]
            innermost = max(around, key=lambda n: funcs_old[n][0], default=None)
            if innermost is not None and funcs_new.get(innermost, (0, 0, None))[2] != funcs_old[innermost][2]:
                what = "removed upstream" if innermost not in funcs_new else "changed upstream"
                touches.append(UpstreamTouch(patch.name, path, number, f"function {innermost} {what}"))
            elif any(i1 < end + 3 and i2 > start - 3 for i1, i2 in changed):
                touches.append(UpstreamTouch(patch.name, path, number,
                                             f"upstream changed lines near {at}-{end}"))
    return touches


def _where_hunks_apply(content: bytes, fp) -> list[int]:
    """1-based line where each hunk of *fp* applies to *content* (0 where it does not), by the
    rules the apply itself uses (git's for git patches, GNU patch's for plain diffs)."""
    from .gitapply import apply_text
    from .hunks import apply_hunks

    _result, results = (apply_text if fp.git else apply_hunks)(content, fp.hunks)
    return [r.at if r.status in ("clean", "offset") else 0 for r in results]


# -- preview ------------------------------------------------------------------------------------

def preview(engine: Engine, to_version: str, from_version: str | None = None,
            marker_check=None, pre: bool = False) -> Preview:
    """*to_version*: a pinned version, one on the index (or remote) not pinned yet, or `latest`;
    an unpinned one is resolved and verified as `overlay pin` does, in memory and the cache."""
    from .pinning import resolve, source_table, with_pin

    from_pin = engine.pin(from_version)
    release = resolve(engine, to_version, pre=pre)
    engine = with_pin(engine, release)
    to_pin = engine.pin(release.version)
    old_repo, old_tag = _tree(engine, from_pin.version)
    new_repo, new_tag = _tree(engine, to_pin.version)
    payload = engine_payload(engine, to_pin)
    with tempfile.TemporaryDirectory(prefix="overlay-preview-") as tmp:
        clone = _throwaway(new_repo, new_tag, old_repo, Path(tmp) / "tree", _fetched_object_dirs(engine))
        report = apply_git(clone, payload, ApplyOptions(branch="overlay-preview", three_way=True), "preview")
        report.command = "preview-upgrade"
        report.target = str(gitops.work_root(new_repo))
        report.branch = None
        if report.status == "applied" and marker_check is not None:
            try:
                report.markers = marker_check(gitops.work_root(clone))
            except Exception as exc:  # noqa: BLE001 - MarkerCheckFailed carries the data
                report.markers = getattr(exc, "data", {"problems": [{"message": str(exc)}]})
        for item in report.patches:
            item.commit = None
    result = Preview(engine.name, from_pin.version, to_pin.version, report, pinned=release.pinned,
                     source=source_table(to_pin.source), notes=list(release.skipped))
    if not release.pinned:
        where = to_pin.source.file or f"{to_pin.source.url} tag {to_pin.source.tag}"
        result.notes.insert(0, f"{engine.name} {to_pin.version} is not pinned in VERSIONS.toml: resolved as "
                               f"{where} and verified for this preview only; VERSIONS.toml was not changed "
                               f"(`overlay pin {engine.name} {to_pin.version}` records it)")
    # what upstream changed under the patches applied on the old pin today (their line numbers
    # refer to the old tree; variants written for the new pin have nothing to compare with)
    for patch, _ in engine_payload(engine, from_pin).patches:
        result.touched += upstream_touches(patch, old_repo, old_tag, new_repo, new_tag)
    for item in report.patches:
        if item.status == ALREADY:
            result.suggestions.append(f"drop {item.name}: its change is already in {to_pin.version}")
        elif item.status == FAILED:
            result.suggestions.append(f"{item.name} conflicts: `overlay upgrade` will stop there for a fix")
    touched_ok = {t.patch for t in result.touched} & {p.name for p in report.patches if p.status in OK_PATCH}
    for name in sorted(touched_ok):
        report.warnings.append(f"{name} still applies, but upstream changed the code it touches: review it")
    result.verdict = verdict(result)
    report.status = result.verdict.status
    return result


_PATCH_VERDICT = {APPLIED: "applies", OFFSET: "offset", THREE_WAY: "3-way", FAILED: "conflicts",
                  ALREADY: "already-upstream", SKIPPED: "skipped"}
PATCH_VERDICTS = ("applies", "offset", "3-way", "conflicts", "already-upstream", "skipped")
BLOCK_VERDICTS = ("intact", "modified", "moved", "lost", "added")


def _details(item: PatchResult) -> list[str]:
    details = []
    for fres in item.files:
        hunks = []
        for hunk in fres.hunks:
            if hunk.status == "offset":
                hunks.append(f"hunk #{hunk.index} offset {hunk.offset:+d}")
            elif hunk.status == "failed":
                hunks.append(f"hunk #{hunk.index} fails (patch line {hunk.line})")
            elif hunk.status not in ("clean", "offset"):
                hunks.append(f"hunk #{hunk.index} {hunk.status}")
        if hunks:
            details.append(f"{fres.path}: {', '.join(hunks)}")
        elif fres.status == FAILED:
            details.append(f"{fres.path}: {fres.message or 'fails'}")
    if item.message and (item.status == SKIPPED or not details):
        details.append(item.message)
    return details


def verdict(result: Preview) -> Verdict:
    """The preview reduced to one verdict per patch and per marked block, and whether the new
    version can be pinned as it is (`overlay apply` at zero fuzz, every block intact)."""
    report = result.report
    touched = {t.patch for t in result.touched}
    patches = [PatchVerdict(item.name, _PATCH_VERDICT.get(item.status, "conflicts"), _details(item),
                            item.name in touched) for item in report.patches]
    counts = {name: sum(p.verdict == name for p in patches) for name in PATCH_VERDICTS}
    reasons = []
    for p in patches:
        if p.verdict == "conflicts":
            reasons.append(f"{p.name} conflicts: {'; '.join(p.details) or 'it does not apply'}")
        elif p.verdict == "3-way":
            reasons.append(f"{p.name} applies only by a 3-way merge: refresh it (`overlay upgrade`)")
        elif p.verdict == "already-upstream":
            reasons.append(f"{p.name} is already upstream: drop it (`overlay upgrade` does)")
    blocks, blocks_note = None, ""
    markers = report.markers
    if markers is None:  # report.status is still the apply's own here
        blocks_note = ("the series does not apply" if report.status != "applied"
                       else "no marker check for this engine")
    else:
        blocks = [BlockVerdict(b.get("id") or b.get("qualname") or "<module>", b.get("file", ""),
                               b.get("status", ""), bool(b.get("waived"))) for b in markers.get("blocks", [])]
        for b in blocks:
            counts[f"blocks_{b.verdict}"] = counts.get(f"blocks_{b.verdict}", 0) + 1
            if b.verdict in ("modified", "moved", "lost") and not b.waived:
                reasons.append(f"marked block {b.block} ({b.file}) is {b.verdict}")
        for problem in markers.get("problems", []):
            if problem.get("severity", "error") == "error":
                reasons.append(f"marker problem: {problem.get('file')}:{problem.get('line')}: "
                               f"{problem.get('message')}")
    if any(p.verdict == "conflicts" for p in patches):
        status = "conflicts"
    elif any(r.startswith("marked block") or r.startswith("marker problem") for r in reasons):
        status = "blocks-changed"
    elif reasons:
        status = "needs-refresh"
    else:
        status = "clean"
    return Verdict(not reasons, status, patches, blocks, blocks_note, counts, reasons)


# -- upgrade ------------------------------------------------------------------------------------

def _state_path(repo: git.Repo) -> Path:
    return gitops.git_dir(repo) / "engine-overlay" / "upgrade.json"


def _lock(repo: git.Repo) -> TargetLock:
    return TargetLock(gitops.git_dir(repo) / "engine-overlay" / "lock", str(gitops.work_root(repo)))


def _new_base(repo: git.Repo, engine: str, version: str) -> str:
    for rev in version_tags(engine, version):
        sha = gitops.rev_parse(repo, rev)
        if sha:
            return sha
    raise OverlayError(f"the checkout has no tag for {engine} {version}", path=gitops.work_root(repo),
                       hint=f"fetch upstream tags (v{version}) into your fork first")


def start_upgrade(project: Project, engine: Engine, to_version: str, checkout: Path | None,
                  from_version: str | None = None) -> dict:
    from_pin, to_pin = engine.pin(from_version), engine.pin(to_version)
    old_repo, _ = _tree(engine, from_pin.version)
    if checkout is None:
        repo, _ = _tree(engine, to_pin.version)
    else:
        repo = gitops.open_repo(checkout)
    with _lock(repo):
        if read_journal(repo) is not None or _state_path(repo).exists():
            raise CheckFailed("an unfinished overlay run is recorded on this checkout", path=_state_path(repo),
                              hint="finish it with --continue / --skip, or --abort")
        before = require_clean(repo)
        base = _new_base(repo, engine.name, to_pin.version)
        branch = default_branch(engine.name, to_pin.version)
        if gitops.branch_exists(repo, branch):
            raise CheckFailed(f"branch {branch} already exists", path=gitops.work_root(repo),
                              hint=f"delete it (`git branch -D {branch}`) to upgrade again")
        if gitops.git_dir(old_repo) != gitops.git_dir(repo):
            alternates = gitops.git_dir(repo) / "objects" / "info" / "alternates"
            old_objects = str(gitops.git_dir(old_repo) / "objects")
            if not alternates.exists() or old_objects not in alternates.read_text():
                with open(alternates, "a") as handle:  # 3-way bases live in the old tree
                    handle.write(old_objects + "\n")
        payload = engine_payload(engine, to_pin)
        for patch, _rev in payload.patches:  # before anything is written
            _patch_for(engine, [patch.name, patch.strip, False])
        state = {
            "engine": engine.name, "from": from_pin.version, "to": to_pin.version, "branch": branch,
            "orig_branch": before.branch, "orig_head": before.head, "base": base,
            "remaining": [[p.name, p.strip, rev] for p, rev in payload.patches],
            "done": [], "dropped": [], "skipped": [], "current": None, "started": int(time.time()),
        }
        write_json_atomic(_state_path(repo), state)
        gitops.create_branch(repo, branch, base)
        gitops.checkout(repo, branch)
        return _run(project, engine, repo, state)


_STATE_SCHEMA = {
    "engine": str, "from": str, "to": str, "branch": str, "orig_branch": (str, None), "orig_head": str,
    "base": str, "remaining": list, "done": list, "dropped": list, "skipped": list, "current": (list, None),
    "started": (int, float, None),
}


def _load_state(repo: git.Repo) -> dict:
    """upgrade.json, checked: it is read back from .git, and its patch names are opened,
    committed and (when dropped) deleted in the series directory."""
    path, hint = _state_path(repo), "run `overlay upgrade ... --abort`, or delete the file"
    state = read_json(path, "the upgrade state", hint=hint, schema=_STATE_SCHEMA)
    if state is None:
        raise OverlayError("no upgrade in progress", path=gitops.work_root(repo),
                           hint="start one with `overlay upgrade ENGINE --to VERSION`")

    def entry(e) -> bool:  # [patch name, strip, reverse] as start_upgrade writes it
        return isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and type(e[1]) is int \
            and isinstance(e[2], bool)

    entries = state["remaining"] + state["skipped"] + ([state["current"]] if state.get("current") else [])
    if not (all(entry(e) for e in entries) and all(isinstance(n, str) for n in state["done"])
            and all(isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)
                    for d in state["dropped"])):
        raise OverlayError("the upgrade state is corrupt (unexpected types in its patch lists)", path=path, hint=hint)
    for name in [e[0] for e in entries] + state["done"] + [d[0] for d in state["dropped"]]:
        try:
            paths.check_relpath(name)
        except OverlayError as exc:
            raise OverlayError(f"the upgrade state is corrupt: {exc.message}", path=path, hint=hint) from None
    return state


def resume_upgrade(project: Project, engine: Engine, checkout: Path | None, action: str,
                   to_version: str | None = None) -> dict:
    repo = gitops.open_repo(checkout) if checkout else _find_upgrade_tree(engine, to_version)
    with _lock(repo):
        state = _load_state(repo)
        if action == "abort":
            return _abort(repo, state)
        current = state.get("current")
        if action == "skip":
            repo.git.reset("-q", "--hard", "HEAD")
            repo.git.clean("-q", "-fd")
            if current:
                state["skipped"].append(current)
        elif action == "continue" and current:
            _commit_resolution(repo, project, engine, state, current)
        state["current"] = None
        write_json_atomic(_state_path(repo), state)
        return _run(project, engine, repo, state)


def _find_upgrade_tree(engine: Engine, to_version: str | None) -> git.Repo:
    versions = [to_version] if to_version else list(engine.pins)
    for version in versions:
        tree = sources.tree_path(engine.name, version)
        if (tree / ".git" / "engine-overlay" / "upgrade.json").exists():
            return gitops.open_repo(tree)
    raise OverlayError(f"no upgrade of {engine.name} in progress in the fetched trees",
                       hint="pass --checkout PATH if the upgrade runs in your fork")


def _abort(repo: git.Repo, state: dict) -> dict:
    saved = None
    if gitops.dirty_paths(repo):
        repo.git.add("-A")
        stash = repo.git.stash("create", "overlay upgrade: edits saved by --abort")
        if stash:
            saved = f"refs/overlay/saved/{state['branch']}-{int(time.time())}"
            repo.git.update_ref(saved, stash)
    gitops.restore(repo, state.get("orig_branch"), state["orig_head"])
    if state["branch"] != state.get("orig_branch"):
        gitops.delete_branch(repo, state["branch"])
    _state_path(repo).unlink()
    message = "upgrade aborted; the checkout is back where it was"
    if saved:
        message += f"; your in-progress edits are kept in {saved} (`git stash apply {saved}`)"
    return {"status": "aborted", "message": message, "saved": saved}


def _patch_for(engine: Engine, entry: list) -> Patch:
    name, strip, _rev = entry
    patch = parse_patch(engine.series_dir / name, name, strip)
    if patch.more:  # the upgrade stops and resumes per series entry, one commit each
        raise OverlayError(f"{name} holds {len(patch.messages)} patches (a mailbox): upgrade moves one patch per "
                           f"series entry", path=engine.series_dir / name,
                           hint="split it first (`git mailsplit -o DIR FILE`, or apply and `overlay export`), "
                                "then list the parts in the series")
    return patch


def _commit(repo: git.Repo, patch: Patch) -> str:
    name, mail = parse_author(patch.author)
    when, tz = patch_when(patch)
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": mail, "GIT_AUTHOR_DATE": f"@{when} {tz}",
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": mail, "GIT_COMMITTER_DATE": f"@{when} {tz}"}
    repo.git.add("-A")
    repo.git.commit("-q", "--no-verify", "--allow-empty", "-m", commit_message(patch), env=env)
    return repo.head.commit.hexsha


def _commit_resolution(repo: git.Repo, project: Project, engine: Engine, state: dict, current: list) -> None:
    root = gitops.work_root(repo)
    dirty = gitops.dirty_paths(repo)
    leftovers = [p for p in dirty if p.endswith(".rej")]
    conflicted = []
    for path in dirty:
        disk = root / path
        if disk.is_file() and b"\n<<<<<<< " in b"\n" + disk.read_bytes():
            conflicted.append(path)
    if leftovers or conflicted:
        raise CheckFailed(f"unresolved: {', '.join(conflicted + leftovers)}", path=root,
                          hint="fix the conflict markers / apply the .rej hunks and delete the .rej files")
    state["done"].append(current[0])
    _commit(repo, _patch_for(engine, current))


def _write_changes(root: Path, changes: dict) -> None:
    for path, (content, mode) in changes.items():
        disk = root / path
        if content is None:
            disk.unlink(missing_ok=True)
        else:
            disk.parent.mkdir(parents=True, exist_ok=True)
            disk.write_bytes(content)
            disk.chmod(mode & 0o777)


def _stop_at_conflict(repo: git.Repo, patch: Patch, result: PatchResult) -> list[str]:
    """Leave the conflict in the work tree: merge markers where a base exists, else .rej files."""
    from . import hunks as H

    root = gitops.work_root(repo)
    written = []
    for fp, fres in zip(patch.files, result.files, strict=False):
        src, dst = fp.target(patch.strip)
        path = dst or src
        if fres.status != FAILED or not path:
            continue
        # the new upstream tree may hold symlinks (`pkg/link -> /tmp`): never read or write
        # through one; such a file is left for the user, named in the list
        try:
            disk = paths.safe_join(root, path, patch.path)
            # a copy/rename derives its destination from the source: merge the new upstream source
            source = paths.safe_join(root, src or path, patch.path)
            rej = paths.safe_join(root, path + ".rej", patch.path)
        except OverlayError as exc:
            written.append(f"{path} (nothing written: {exc.message})")
            continue
        current = source.read_bytes() if source.is_file() else b""
        base = gitops.read_blob(repo, fp.index_old) if fp.index_old else None
        theirs = H.apply_hunks(base, fp.hunks)[0] if base is not None else None
        if theirs is not None:
            merged, _ = gitops.merge_file(current, base, theirs, labels=("upstream", "old base", patch.name))
            disk.write_bytes(merged)
        else:
            rej.write_bytes(b"".join(
                b"@@ -%d,%d +%d,%d @@\n" % (h.old_start, h.old_len, h.new_start, h.new_len)
                + b"".join(b"-" + line for line in h.old) + b"".join(b"+" + line for line in h.new)
                for h in fp.hunks))
            path = path + ".rej"
        written.append(path)
    return written


def _run(project: Project, engine: Engine, repo: git.Repo, state: dict) -> dict:
    root = gitops.work_root(repo)
    while state["remaining"]:
        entry = state["remaining"].pop(0)
        patch = _patch_for(engine, entry)
        tree = GitTreeState(gitops.open_repo(root), "HEAD")
        try:
            outcome = plan(tree, [(patch, entry[2])], [], three_way=True)
        finally:
            tree.close()
        result = outcome.patches[0]
        if result.status in OK_PATCH:
            for commit in outcome.commits:
                _write_changes(root, commit.changes)
            _commit(repo, patch)
            state["done"].append(patch.name)
        elif result.status == ALREADY:
            state["dropped"].append([patch.name, f"already upstream in {engine.name} {state['to']}"])
        else:
            files = _stop_at_conflict(repo, patch, result)
            state["current"] = entry
            write_json_atomic(_state_path(repo), state)
            return {"status": "conflict", "patch": patch.name, "files": files, "state": state,
                    "message": f"{patch.name} does not apply on {engine.name} {state['to']}: fix {', '.join(files)}, "
                               f"then `overlay upgrade {engine.name} --continue` (or --skip / --abort)"}
        write_json_atomic(_state_path(repo), state)
    return _finish(project, engine, repo, state)


def _finish(project: Project, engine: Engine, repo: git.Repo, state: dict) -> dict:
    """Export the refreshed patches, drop merged ones, move the pin, rebuild the branch."""
    from .config import load_project, set_default_version
    from .export import export

    series_path = engine.series
    for name, _reason in state["dropped"]:
        (engine.series_dir / name).unlink(missing_ok=True)
    if state["dropped"] or state["skipped"]:
        lines = series_path.read_text().splitlines()
        dropped = {n: r for n, r in state["dropped"]}
        skipped = {e[0] for e in state["skipped"]}
        out = []
        for line in lines:
            word = line.split("#", 1)[0].split()
            if word and word[0] in dropped:
                out.append(f"# dropped {word[0]}: {dropped[word[0]]} (overlay upgrade)")
            elif word and word[0] in skipped:
                out.append(f"# skipped {word[0]} during the upgrade to {state['to']}: resolve by hand")
            else:
                out.append(line)
        atomic_write(series_path, "\n".join(out) + "\n")
    # the branch holds the patch commits only; overlay files come from overlay/ when rebuilt
    if state["done"]:
        export(repo, engine.name, series_path, state["branch"])
    set_default_version(project.versions_file, engine.name, state["to"])
    _state_path(repo).unlink()
    # rebuild the branch from the refreshed series, so trailers match the new patch files
    fresh = load_project(project.root).engine(engine.name)
    pin = fresh.pin(state["to"])
    repo.git.checkout("-q", "--detach", state["base"])
    gitops.delete_branch(repo, state["branch"])
    report = apply_git(repo, engine_payload(fresh, pin), ApplyOptions(branch=state["branch"], three_way=True), "tree", locked=True)
    if report.status != "applied":
        raise CheckFailed("re-applying the refreshed series failed", path=series_path,
                          hint="inspect with `overlay apply --check`")
    return {"status": "upgraded", "from": state["from"], "to": state["to"], "branch": state["branch"],
            "done": state["done"], "dropped": state["dropped"], "skipped": state["skipped"],
            "report": report, "message": f"{engine.name} upgraded to {state['to']}: "
            f"{len(state['done'])} patch(es) refreshed, {len(state['dropped'])} dropped, "
            f"VERSIONS.toml now pins {state['to']}"}


# -- upstream diff ------------------------------------------------------------------------------

def touched_paths(payload: Payload, engine: Engine) -> list[str]:
    paths = set(engine.replaces)
    for patch, _ in payload.patches:
        for fp in patch.files:
            for path in fp.target(patch.strip):
                if path:
                    paths.add(path)
    return sorted(paths)


def diff_upstream(engine: Engine, from_version: str, to_version: str, paths: list[str] | None) -> dict:
    old_repo, old_tag = _tree(engine, engine.pin(from_version).version)
    new_repo, new_tag = _tree(engine, engine.pin(to_version).version)
    selected = paths or touched_paths(engine_payload(engine, engine.pin(from_version)), engine)
    files = []
    for path in selected:
        before = gitops.read_at(old_repo, old_tag, path)
        after = gitops.read_at(new_repo, new_tag, path)
        if before == after:
            continue
        diff = "".join(difflib.unified_diff(
            (before or b"").decode("utf-8", errors="replace").splitlines(keepends=True),
            (after or b"").decode("utf-8", errors="replace").splitlines(keepends=True),
            f"a/{path}" if before is not None else "/dev/null", f"b/{path}" if after is not None else "/dev/null"))
        files.append({"path": path, "status": "added" if before is None else "removed" if after is None else
                      "modified", "diff": diff})
    return {"engine": engine.name, "from": from_version, "to": to_version, "paths": selected, "files": files}
