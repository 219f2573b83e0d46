"""`overlay apply` onto a git target: the fetched work tree or a user's checkout.

Order of work: refuse a dirty tree or an unfinished run; check the base; plan
the whole series in memory; then (unless --check or a failure) write a journal,
create the branch with one fast-import, check it out and drop the journal.
A run killed at any point leaves the original state or a journal that
`overlay apply --abort` / `--continue` resolves.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import gitops
from .errors import CheckFailed, OverlayError
from .locking import TargetLock, read_json, write_json_atomic
from .overlay_files import OverlayFile, collect, manifest_sha256
from .paths import parents
from .plan import TRAILER_FILES, TRAILER_PATCH, TRAILER_SHA, Plan, load_patches, plan
from .report import ALREADY, OK_PATCH, SKIPPED, PatchResult, Report
from .series import Patch, parse_series
from .tree import GitTreeState

if TYPE_CHECKING:
    from .config import Engine, Pin
    from .gitops import Repo


@dataclass
class ApplyOptions:
    check: bool = False
    keep: bool = False
    force_base: bool = False
    branch: str | None = None
    rebuild: bool = False  # recreate an existing overlay branch whose series changed
    remove_empty: bool = False  # like `patch -E` / dpkg-source: drop files a patch leaves empty
    three_way: bool = False  # like `git am -3`: merge a file whose hunks do not match from its index blob


@dataclass
class Payload:
    """What gets applied: patches (with reverse flags), overlay files, allowed replacements."""

    label: str
    version: str
    patches: list[tuple[Patch, bool]]
    skipped: list[PatchResult]
    overlay_files: list[OverlayFile]
    replaces: tuple[str, ...] = ()


def engine_payload(engine: Engine, pin: Pin) -> Payload:
    from .config import VERSIONS_FILE

    if not pin.apply:
        raise OverlayError(f"{engine.name} {pin.version} is a reference pin (apply = false): the series "
                           "is not kept for it", path=VERSIONS_FILE,
                           hint="use it for pairing, verify and diff-upstream; apply another pin")
    series, problems = parse_series(engine.series)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise OverlayError(errors[0].message, path=errors[0].file, line=errors[0].line,
                           hint="fix the series file (run `overlay lint`)")
    patches, skipped = [], []
    for patch, reverse in load_patches(series.directory, series.entries):
        if patch.applies_to and not _applies(patch, pin.version):
            skipped.append(PatchResult(patch.name, SKIPPED, patch.sha256,
                                       message=f"Applies-To {patch.applies_to} excludes {pin.version}"))
            continue
        patches.append((patch, reverse))
    return Payload(engine.name, pin.version, patches, skipped, collect(engine.overlay), engine.replaces)


def series_payload(series_path: Path) -> Payload:
    path = series_path / "series" if series_path.is_dir() else series_path
    series, problems = parse_series(path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise OverlayError(errors[0].message, path=errors[0].file, line=errors[0].line)
    label = path.parent.name if path.parent.name not in ("patches", "debian") else path.parent.parent.name
    return Payload(label or "series", "", load_patches(series.directory, series.entries), [], [])


def _applies(patch: Patch, version: str) -> bool:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    try:
        spec = SpecifierSet(patch.applies_to)
    except InvalidSpecifier as exc:
        raise OverlayError(f"Applies-To {patch.applies_to!r} is not a version range", path=patch.path,
                           line=patch.header_lines.get("applies-to")) from exc
    return spec.contains(Version(version).public, prereleases=True)


# -- state kept in the target's git dir ---------------------------------------------------------

def _state_dir(repo: Repo) -> Path:
    return gitops.git_dir(repo) / "engine-overlay"


def journal_path(repo: Repo) -> Path:
    return _state_dir(repo) / "journal.json"


def read_journal(repo: Repo) -> dict | None:
    """The journal is read back from the checkout's .git: its types are checked, so a
    damaged or planted file is one clear error and never a crash in --abort (label,
    version and started are informative: an older journal may lack them)."""
    schema = {"phase": str, "branch": str, "orig_branch": (str, None), "orig_head": str,
              "label": (str, None), "version": (str, None), "started": (int, float, None)}
    return read_json(journal_path(repo), "the overlay journal", schema=schema,
                     hint="run `overlay apply ... --abort` after checking `git status`, or delete the file")


def require_clean(repo: Repo) -> gitops.Worktree:
    """Refuse a checkout with modified, staged or untracked files: they are the user's.
    Returns HEAD and the branch as the same `git status` saw them."""
    busy = gitops.operation_in_progress(repo)
    if busy:
        raise OverlayError(f"the repository is in the middle of {busy}", path=gitops.work_root(repo),
                           hint=f"finish or abort the {busy} first (see `git status`)")
    state = gitops.worktree(repo)
    dirty = state.dirty
    if dirty:
        raise OverlayError(
            f"the checkout has uncommitted changes ({len(dirty)} path(s), e.g. {dirty[0]})",
            path=gitops.work_root(repo), hint="commit or stash them first; overlay never touches uncommitted work")
    return state


def _unfinished(repo: Repo, journal: dict) -> CheckFailed:
    return CheckFailed(
        f"an interrupted overlay run left this checkout on {journal.get('branch')} "
        f"(started from {journal.get('orig_branch') or 'detached HEAD'} at {journal.get('orig_head', '')[:12]})",
        path=journal_path(repo),
        hint="run the same `overlay apply` with --abort to restore the checkout, or --continue to finish",
    )


# -- applied state read back from commits ------------------------------------------------------

def _trailers(message: str) -> dict[str, str]:
    found = {}
    for line in message.splitlines():
        match = re.match(r"^(Overlay-[A-Za-z0-9-]+):\s*(.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def applied_commits(repo: Repo, tip: str) -> tuple[list[tuple[str, str, str]], str | None, str]:
    """Walk back from *tip* over overlay commits: ([(patch, sha256, commit)], overlay sha, base)."""
    patches: list[tuple[str, str, str]] = []
    overlay_sha = None
    base = ""
    for sha, message in gitops.first_parent_log(repo, tip):
        base = sha
        trailers = _trailers(message)
        if TRAILER_FILES in trailers and overlay_sha is None and not patches:
            overlay_sha = trailers[TRAILER_FILES]
        elif TRAILER_PATCH in trailers:
            patches.append((trailers[TRAILER_PATCH], trailers.get(TRAILER_SHA, ""), sha))
        else:
            break
    patches.reverse()
    return patches, overlay_sha, base


# -- base check --------------------------------------------------------------------------------

def version_tags(engine: str, version: str) -> list[str]:
    """The tags an upstream *version* may carry: ours from `overlay fetch`, then upstream's usual two."""
    from . import sources

    return [f"refs/tags/{sources.upstream_tag(engine, version)}", f"refs/tags/v{version}", f"refs/tags/{version}"]


def base_problem(repo: Repo, head: str | None, engine: str, pin: Pin) -> str | None:
    """None when *head* (the checkout's HEAD) is built on the pinned upstream, else what is wrong."""
    from packaging.version import Version

    from . import sources

    if head is None:
        return "the checkout has no commits"
    candidates = version_tags(engine, pin.version)
    if pin.source.commit:
        candidates.append(pin.source.commit)
    for rev in candidates:
        sha = gitops.rev_parse(repo, rev)
        if sha and gitops.is_ancestor(repo, sha, head):
            return None
    for meta in ("PKG-INFO",):
        data = gitops.read_at(repo, head, meta)
        if data:
            match = re.search(rb"^Version:\s*(\S+)", data, re.M)
            if match:
                found = match.group(1).decode()
                if Version(found).public == Version(pin.version).public:
                    return None
                return f"PKG-INFO says version {found}, the pin is {pin.version}"
    return (f"HEAD is not based on {engine} {pin.version} (no tag {sources.upstream_tag(engine, pin.version)}, "
            f"v{pin.version} or pinned commit below HEAD, no PKG-INFO)")


# -- the run ------------------------------------------------------------------------------------

def default_branch(label: str, version: str) -> str:
    return f"overlay/{label}-{version}" if version else f"overlay/{label}"


def target_for(engine: Engine, pin: Pin, checkout: Path | None) -> tuple[Path, str]:
    if checkout is not None:
        return checkout, "checkout"
    from . import sources

    tree = sources.tree_path(engine.name, pin.version)
    if not (tree / ".git").exists():
        raise OverlayError(f"{engine.name} {pin.version} has not been fetched", path=tree,
                           hint=f"run `overlay fetch {engine.name} --version {pin.version}` first")
    record = sources.source_record(tree)  # a tree made before records is checked by `fetch`
    problem = sources.tree_problem(pin, record) if record is not None else None
    if problem is not None:
        raise OverlayError(f"the cached tree of {engine.name} {pin.version} is not the pinned source: {problem}",
                           path=tree, hint=f"run `overlay fetch {engine.name} --version {pin.version}` again")
    return tree, "tree"


def apply_git(repo: Repo, payload: Payload, opts: ApplyOptions, target_kind: str,
              base_check: Callable[[Repo, str | None], str | None] | None = None, locked: bool = False, base_rev: str | None = None) -> Report:
    """Apply onto a git target; the branch grows from *base_rev* (default: HEAD).

    *base_check(repo, head)* says what is wrong with the checkout's base, if anything.

    *locked* when the caller already holds the target's lock.
    """
    root = gitops.work_root(repo)
    branch = opts.branch or default_branch(payload.label, payload.version)
    if not gitops.valid_branch_name(branch):
        where = "--branch" if opts.branch else f"the name {payload.label!r}"
        raise OverlayError(f"{branch!r} is not a valid git branch name (from {where})", path=root,
                           hint="pass --branch NAME with a valid name (see `git check-ref-format --branch`)")
    report = Report("apply", payload.label, payload.version, str(root), target_kind, "checked", branch)
    with contextlib.nullcontext() if locked else TargetLock(_state_dir(repo) / "lock", str(root)):
        journal = read_journal(repo)
        if journal is not None:
            raise _unfinished(repo, journal)
        before = require_clean(repo)
        if base_check is not None:
            problem = base_check(repo, before.head)
            if problem and not opts.force_base:
                raise OverlayError(f"base mismatch: {problem}", path=root,
                                   hint="check out the pinned upstream version, or pass --force-base")
            if problem:
                report.warnings.append(f"base mismatch ignored (--force-base): {problem}")
        orig_head, orig_branch = before.head, before.branch
        head = gitops.rev_parse(repo, base_rev) if base_rev else orig_head
        if head is None:
            raise OverlayError(f"base {base_rev or 'HEAD'} not found", path=root,
                               hint="fetch the pinned sources again (`overlay fetch`)")
        rebuild_from = None
        if gitops.branch_exists(repo, branch):
            try:
                return _existing_branch(repo, payload, branch, report)
            except CheckFailed:
                if not opts.rebuild or opts.check:
                    raise
            rebuild_from = gitops.rev_parse(repo, f"refs/heads/{branch}")
            head = _rebuild_base(repo, branch)
            report.warnings.append(f"--rebuild: recreated {branch} on {head[:12]} (the old tip "
                                   f"{rebuild_from[:12]} is kept as refs/overlay/previous/{branch})")
        state = GitTreeState(repo, head)  # the stored blobs, as `git apply --index` reads them
        try:
            result = plan(state, payload.patches, payload.overlay_files, payload.replaces,
                          overlay_label=f"overlay: {payload.label} files", remove_empty=opts.remove_empty,
                          three_way=opts.three_way)
            if result.ok and not opts.check:
                _refuse_untracked_in_the_way(repo, result, state if head == orig_head else None)
        finally:
            state.close()
        _fill(report, payload, result)
        upstream = [p.name for p in result.patches if p.status == ALREADY]
        if upstream:
            report.warnings.append(f"already upstream (drop from the series): {', '.join(upstream)}")
        if not result.ok:
            report.status = "failed"
            report.branch = None  # no branch was made
            if upstream and all(p.status in (ALREADY, *OK_PATCH) for p in result.patches):
                report.status = "already-upstream"  # nothing failed: the series only needs the drop
            if opts.keep and not opts.check and rebuild_from is None:
                report.branch = branch
                _keep_prefix(repo, result, branch, head)
                report.status = "kept"
                report.warnings.append(f"--keep: branch {branch} holds the patches before the first failure")
            return report
        if opts.check:
            report.branch = None  # a dry run creates no branch
            return report
        entry = {"phase": "import", "branch": branch, "orig_branch": orig_branch, "orig_head": orig_head,
                 "label": payload.label, "version": payload.version, "started": time.time() - 1,
                 "rebuild_from": rebuild_from}
        write_json_atomic(journal_path(repo), entry)
        try:
            if rebuild_from is not None:
                gitops.run(repo, "update-ref", f"refs/overlay/previous/{branch}", rebuild_from)
                if orig_branch == branch:
                    gitops.run(repo, "checkout", "-q", "--detach")  # same commit: no file changes
            shas = gitops.fast_import(repo, f"refs/heads/{branch}", head, _specs(result))
            write_json_atomic(journal_path(repo), {**entry, "phase": "checkout"})
            gitops.switch_branch(repo, branch)
            _verify_checkout(repo, branch, result)
        except (gitops.GitFailed, OSError) as exc:
            cause = _describe(exc)
            try:
                _restore(repo, entry)
            except (gitops.GitFailed, OSError) as again:
                raise CheckFailed(
                    f"writing the branch failed ({cause}) and so did restoring the checkout ({_describe(again)})",
                    path=journal_path(repo),
                    hint="free disk space / fix permissions, then run the same command with --abort",
                ) from exc
            journal_path(repo).unlink(missing_ok=True)
            raise CheckFailed(f"writing the branch failed ({cause}); the checkout was restored", path=root,
                              hint="free disk space / fix permissions, then run again") from exc
        journal_path(repo).unlink()
        for item, sha in zip([p for p in report.patches if p.status != SKIPPED and p.status != ALREADY], shas,
                             strict=False):
            item.commit = sha
        report.status = "applied"
        return report


def _rebuild_base(repo: Repo, branch: str) -> str:
    """The upstream commit an overlay branch grows from; refuses a branch with commits of the
    user's on top (a rebuild would drop them)."""
    tip = f"refs/heads/{branch}"
    first = next(iter(gitops.first_parent_log(repo, tip)), None)
    if first is not None and not (set(_trailers(first[1])) & {TRAILER_PATCH, TRAILER_FILES}):
        raise CheckFailed(f"branch {branch} has commits that are not overlay commits on top (e.g. {first[0][:12]})",
                          path=gitops.work_root(repo),
                          hint="turn them into patches first (`overlay export`), or apply to --branch NEW")
    return applied_commits(repo, tip)[2]


def _refuse_untracked_in_the_way(repo: Repo, result: Plan, head_state: GitTreeState | None) -> None:
    """An ignored (or otherwise untracked) file where the branch puts a file: `git checkout`
    would overwrite it silently, and switching back would delete it. `git apply` refuses."""
    root = gitops.work_root(repo)
    written = {path for commit in result.commits for path, (content, _m) in commit.changes.items()
               if content is not None}
    if head_state is not None:  # the checkout is at the base commit: what its tree has is tracked
        written = {p for p in written if head_state.base_kind(p) is None}
    suspects = set()
    for path in written:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            disk = root / prefix
            if not os.path.lexists(disk):
                break
            if depth == len(parts) or disk.is_symlink() or not disk.is_dir():
                suspects.add(prefix)
                break
    if head_state is not None:
        suspects = {p for p in suspects if head_state.base_kind(p) is None}
    if not suspects:
        return
    tracked = set(gitops.tracked_paths(repo, sorted(suspects)))
    in_the_way = sorted(suspects - tracked)
    if in_the_way:
        raise OverlayError(f"{in_the_way[0]}: already exists in the working directory (an ignored or untracked "
                           f"file{'' if len(in_the_way) == 1 else f', and {len(in_the_way) - 1} more'})",
                           path=root, hint="move it away; checking out the overlay branch would overwrite it")


def _verify_checkout(repo: Repo, branch: str, result: Plan) -> None:
    """A checkout can exit 0 without having written every file (a read-only directory, a path
    outside a sparse checkout): every file the branch changed must be on disk (and every file it
    deleted gone), and HEAD on the branch."""
    root = gitops.work_root(repo)
    final: dict[str, bytes | None] = {}
    for commit in result.commits:
        final.update({path: content for path, (content, mode) in commit.changes.items() if mode != 0o160000})
    below = {parent for path, content in final.items() if content is not None
             for parent in parents(path)}  # directories the branch puts files in
    for path, content in sorted(final.items()):
        disk = root / path
        if content is not None:
            wrong = not os.path.lexists(disk)
        else:  # deleted: gone, or a directory now (a file replaced by a directory of files)
            wrong = os.path.lexists(disk) and not (path in below and disk.is_dir() and not disk.is_symlink())
        if wrong:
            raise gitops.GitFailed(["checkout"], 0, f"the checkout left {path} "
                                   f"{'unwritten' if content is not None else 'in place'} (a sparse checkout, or "
                                   f"a read-only directory?)", repo.working_tree_dir)
    if gitops.current_branch(repo) != branch:
        raise gitops.GitFailed(["checkout"], 0, f"HEAD is not on {branch} after the checkout", repo.working_tree_dir)


def _specs(result: Plan) -> list[gitops.CommitSpec]:
    return [gitops.CommitSpec(c.message, c.author[0], c.author[1], c.when[0], c.when[1], c.changes)
            for c in result.commits]


def _fill(report: Report, payload: Payload, result: Plan) -> None:
    report.patches = result.patches + payload.skipped
    report.overlay_files = result.overlay_files


def _keep_prefix(repo: Repo, result: Plan, branch: str, head: str) -> None:
    """--keep: commit the patches before the first failure, check them out, journal-free."""
    first_bad = next(i for i, p in enumerate(result.patches) if p.status not in OK_PATCH)
    good = [c for c, _ in zip(result.commits, result.patches[:first_bad], strict=False)]
    if good:
        gitops.fast_import(repo, f"refs/heads/{branch}", head, _specs(Plan([], [], good, None)))
    else:
        gitops.create_branch(repo, branch, head)
    gitops.checkout(repo, branch)


def _existing_branch(repo: Repo, payload: Payload, branch: str, report: Report) -> Report:
    applied, overlay_sha, _base = applied_commits(repo, f"refs/heads/{branch}")
    wanted = [(p.name, p.sha256) for p, _ in payload.patches]
    have = [(name, sha) for name, sha, _ in applied]
    wanted_overlay = manifest_sha256(payload.overlay_files) if payload.overlay_files else None
    if have == wanted and overlay_sha == wanted_overlay:
        report.status = "already-applied"
        report.warnings.append(f"branch {branch} already holds this series; nothing to do")
        report.patches = [PatchResult(n, "applied", s, commit=c) for n, s, c in applied] + payload.skipped
        return report
    changed = [name for (name, sha) in have if (name, sha) not in wanted and name in dict(wanted)]
    detail = f"patch(es) changed since applied: {', '.join(changed)}" if changed else (
        "the overlay files changed since applied" if have == wanted else "the series changed since applied")
    raise CheckFailed(f"branch {branch} exists and differs from the series: {detail}",
                      path=gitops.work_root(repo),
                      hint=f"delete it (`git branch -D {branch}`) to re-apply, or pass --branch NEW")


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, gitops.GitFailed) else str(exc)


def _remove_stale_git_locks(repo: Repo, since: float) -> None:
    """A git command of ours that died on a full disk can leave its *.lock files behind;
    only those created during our run (after *since*) are removed."""
    base = gitops.git_dir(repo)
    candidates = [base / "index.lock", base / "HEAD.lock", base / "ORIG_HEAD.lock", base / "packed-refs.lock"]
    candidates += list((base / "refs").rglob("*.lock"))
    for lock in candidates:
        if lock.exists() and lock.stat().st_mtime >= since:
            lock.unlink()


def _remove_checkout_leftovers(repo: Repo, orig_head: str, branch: str) -> None:
    """Files that a checkout of *branch*, cut short, wrote where *orig_head* has none.

    Restoring *orig_head* leaves them as untracked files (git does not remove what it
    does not track). The tree was clean when the run started, so such a file is ours
    when it holds the branch's content or the start of it (a write cut short); any
    other content is left alone."""
    if not gitops.branch_exists(repo, branch):
        return
    root = gitops.work_root(repo)
    for rel in gitops.added_paths(repo, orig_head, f"refs/heads/{branch}"):
        path = root / rel
        if not path.is_file() or path.is_symlink():
            continue
        wanted = gitops.read_at(repo, f"refs/heads/{branch}", rel)
        if wanted is not None and wanted.startswith(path.read_bytes()):
            path.unlink()
            for parent in path.parents:
                if parent == root or any(parent.iterdir()):
                    break
                parent.rmdir()


def _restore(repo: Repo, journal: dict) -> None:
    if journal.get("started"):
        _remove_stale_git_locks(repo, journal["started"])
    orig_head = journal.get("orig_head")
    branch = journal.get("branch")
    ours = branch if branch and branch != journal.get("orig_branch") else None  # the branch this run made
    previous = journal.get("rebuild_from")  # --rebuild: the branch's tip before this run
    if orig_head:
        gitops.restore(repo, journal.get("orig_branch"), orig_head)
        if ours:
            _remove_checkout_leftovers(repo, orig_head, ours)
    if previous and branch:
        gitops.run(repo, "update-ref", f"refs/heads/{branch}", previous)
    elif ours:
        gitops.delete_branch(repo, ours)


def abort(repo: Repo) -> str:
    """Restore the checkout recorded in the journal of an interrupted run."""
    with TargetLock(_state_dir(repo) / "lock", str(gitops.work_root(repo))):
        journal = read_journal(repo)
        if journal is None:
            raise OverlayError("no interrupted overlay run to abort", path=gitops.work_root(repo))
        _restore(repo, journal)
        journal_path(repo).unlink()
        return f"restored {journal.get('orig_branch') or 'detached HEAD'} at {journal.get('orig_head', '')[:12]}"
