"""The `overlay` command: a thin click layer over plain functions.

Each command parses options, calls one function, and hands its report to
:mod:`ui`. User errors (:class:`OverlayError`) become one message and an exit
status: 0 ok, 1 check failed / conflict, 2 usage or configuration error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__, ui
from .errors import EXIT_CHECK_FAILED, OverlayError

if TYPE_CHECKING:
    from .config import Project

# Each command imports the modules it needs when it runs: a short apply or status is
# dominated by interpreter start-up and imports, so no command pays for another's.

# Commands that live in their own subpackages, imported only when invoked (start-up time).
_LAZY_COMMANDS = {
    "markers": ("markers.cli", "markers_group"),
    "check-markers": ("markers.cli", "check_markers_cmd"),
    "transplant": ("markers.cli", "transplant_cmd"),
    "verify": ("verify", "verify_cmd"),
}


# --project and --format: options of the group (before the subcommand) and, added to every
# command as it is resolved, after it too (`overlay apply vllm --format json`, as `pip list
# --format json` is typed). Both land in the shared ui.AppContext; a value after the
# subcommand wins over one before it.
_PROJECT_HELP = "Project directory holding VERSIONS.toml (default: walk up from here)."
_FORMAT_HELP = "Output format; json is a stable schema (see README)."
_FORMATS = ("human", "json")
_SHARED_FIELDS = {"overlay_project": "project", "overlay_fmt": "fmt"}  # option name -> AppContext field


def _store_shared_option(ctx: click.Context, param: click.Parameter, value) -> None:
    if value is not None:
        setattr(ctx.ensure_object(ui.AppContext), _SHARED_FIELDS[param.name], value)


def _shared_options() -> list[click.Option]:
    """--project and --format for a subcommand: not passed to its function (expose_value=False),
    stored into the AppContext when given."""
    return [
        click.Option(["--project", "overlay_project"], type=click.Path(file_okay=False, path_type=Path),
                     expose_value=False, callback=_store_shared_option, help=_PROJECT_HELP),
        click.Option(["--format", "overlay_fmt"], type=click.Choice(_FORMATS), expose_value=False,
                     callback=_store_shared_option, help=_FORMAT_HELP),
    ]


def _add_shared_options(command: click.Command) -> click.Command:
    """Give *command* (and, for a group, its subcommands) --project and --format, once; a command
    that has an option of that name itself (say `--format markdown`) keeps its own."""
    if getattr(command, "_overlay_shared_options", False):
        return command
    taken = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    command.params.extend(option for option in _shared_options() if not taken.intersection(option.opts))
    command._overlay_shared_options = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_shared_options(sub)
    return command


class OverlayGroup(click.Group):
    """Turns user errors (and OS errors such as a full disk) into one message, no traceback;
    commands of the subpackages are imported only when invoked (start-up time); every
    command, lazy ones too, accepts --project and --format after its name as well."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx, name):
        if name in _LAZY_COMMANDS and name not in self.commands:
            import importlib

            module, attr = _LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(f"{__package__}.{module}"), attr), name)
        command = super().get_command(ctx, name)
        return _add_shared_options(command) if command is not None else None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OverlayError as exc:
            ui.emit_error(exc, ui.app_context(ctx).fmt)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            error = OverlayError(f"{exc.strerror or exc}", path=exc.filename, exit_code=EXIT_CHECK_FAILED,
                                 hint="check free space and permissions, then run again")
            ui.emit_error(error, ui.app_context(ctx).fmt)
            ctx.exit(error.exit_code)
        except (RecursionError, MemoryError) as exc:  # hostile input: nested too deeply, or huge
            what = "nested too deeply" if isinstance(exc, RecursionError) else "too large"
            error = OverlayError(f"an input is {what} to process ({type(exc).__name__})", exit_code=EXIT_CHECK_FAILED,
                                 hint="a file this command reads (patch, overlay, snapshot, archive) is malformed")
            ui.emit_error(error, ui.app_context(ctx).fmt)
            ctx.exit(error.exit_code)
        except Exception as exc:
            # gitpython is imported only by the commands that use it; its errors end up here
            gitpython = sys.modules.get("git")
            if gitpython is None or not isinstance(exc, gitpython.GitCommandError):
                raise
            error = OverlayError(f"git {exc.command[1] if len(exc.command) > 1 else ''} failed: "
                                 f"{(exc.stderr or '').strip()}", exit_code=EXIT_CHECK_FAILED)
            ui.emit_error(error, ui.app_context(ctx).fmt)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            ui.emit_error(OverlayError("interrupted", hint="run the command again; an unfinished apply "
                                       "can be resolved with --abort or --continue"), ui.app_context(ctx).fmt)
            ctx.exit(130)


@click.group(cls=OverlayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help=_PROJECT_HELP)
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="human", help=_FORMAT_HELP)
@click.version_option(__version__, prog_name="overlay")
@click.pass_context
def cli(ctx: click.Context, project: Path | None, fmt: str) -> None:
    """Apply pinned patch series and overlay files onto inference engine sources.

    --project and --format may also follow the command (`overlay apply vllm --format json`).
    """
    ctx.obj = ui.AppContext(project=project, fmt=fmt)


def _project() -> Project:
    from .config import find_project, load_project

    app = ui.app_context()
    return load_project(app.project.resolve() if app.project else find_project())


def _finish(report) -> None:
    from .report import render

    ui.emit(report.command, report, lambda console: render(report, console))
    if report.status in ("failed", "kept", "out-of-date", "already-upstream"):
        raise click.exceptions.Exit(EXIT_CHECK_FAILED)


@cli.command()
@click.argument("engine")
@click.option("--version", "version", help="Pinned version (default: the engine's `version`).")
def fetch(engine: str, version: str | None) -> None:
    """Download, verify and extract ENGINE's pinned sources into a git work tree."""
    from . import sources

    eng = _project().engine(engine)
    result = sources.fetch(eng, version)

    def human(console):
        how = "downloaded" if result.downloaded else "cached"
        tree = "created" if result.tree_created else "cached"
        console.print(f"{result.engine} {result.version}: archive {how}, work tree {tree}", markup=False)
        console.print(f"  tree: {result.tree}\n  tag:  {result.tag} ({result.commit[:12]})", markup=False)
        for warning in result.warnings:
            console.print(f"warning: {warning}", markup=False)

    ui.emit("fetch", result, human)


@cli.command()
def lint() -> None:
    """Check VERSIONS.toml, series, patches and overlay files; report every problem."""
    from .config import find_project
    from .lint import lint_project

    app = ui.app_context()
    root = app.project.resolve() if app.project else find_project()
    _, problems = lint_project(root)
    errors = [p for p in problems if p.severity == "error"]

    def human(console):
        for problem in problems:
            console.print(str(problem), markup=False)
        console.print(f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)", markup=False)

    ui.emit("lint", {"problems": problems, "errors": len(errors)}, human)
    if errors:
        raise click.exceptions.Exit(EXIT_CHECK_FAILED)


def _target_options(func):
    func = click.option("--version", "version", help="Pinned version (default: the engine's `version`).")(func)
    func = click.option("--checkout", type=click.Path(file_okay=False, path_type=Path),
                        help="A git checkout of the engine (your fork).")(func)
    func = click.option("--installed", is_flag=True, help="Target the installed distribution of the engine.")(func)
    func = click.option("--site-packages", "site", type=click.Path(file_okay=False, path_type=Path),
                        help="With --installed: the site-packages directory (default: this Python's).")(func)
    return func


@cli.command()
@click.argument("engine", required=False)
@_target_options
@click.option("--check", is_flag=True, help="Dry run: the same report, nothing written.")
@click.option("--keep", is_flag=True, help="On failure keep the patches that applied, on the branch.")
@click.option("--force-base", is_flag=True, help="Apply even if the base is not the pinned version.")
@click.option("--branch", help="Branch to create (default overlay/<engine>-<version>).")
@click.option("--rebuild", is_flag=True, help="Recreate the overlay branch if the series changed since.")
@click.option("-3", "--3way", "three_way", is_flag=True,
              help="Like `git am -3`: merge a file whose hunks do not match from the blob its index line names.")
@click.option("--remove-empty", is_flag=True,
              help="Delete files a patch leaves empty, like `patch -E` (dpkg-source); quilt keeps them.")
@click.option("--series", "series_path", type=click.Path(exists=True, path_type=Path),
              help="With --checkout: apply this quilt/format-patch series instead of an engine's.")
@click.option("--abort", "do_abort", is_flag=True, help="Restore the checkout after an interrupted run.")
@click.option("--continue", "do_continue", is_flag=True, help="Finish an interrupted run.")
def apply(engine, version, checkout, installed, site, check, keep, force_base, branch, rebuild, remove_empty,
          three_way, series_path, do_abort, do_continue) -> None:
    """Apply ENGINE's series and overlay files (to the fetched tree by default)."""
    from . import gitops
    from .apply import (
        ApplyOptions,
        apply_git,
        base_problem,
        engine_payload,
        series_payload,
        target_for,
    )

    if installed and checkout:
        raise click.UsageError("--installed and --checkout exclude each other")
    opts = ApplyOptions(check=check, keep=keep, force_base=force_base, branch=branch, rebuild=rebuild,
                        remove_empty=remove_empty, three_way=three_way)
    if series_path is not None:
        if checkout is None:
            raise click.UsageError("--series needs --checkout PATH")
        repo = gitops.open_repo(checkout)
        if not _resolve_interrupted(repo, do_abort, do_continue):
            _finish(apply_git(repo, series_payload(series_path.resolve()), opts, "checkout"))
        return
    if not engine:
        raise click.UsageError("missing ENGINE (or use --series with --checkout)")
    eng = _project().engine(engine)
    pin = eng.pin(version)
    payload = engine_payload(eng, pin)
    if installed:
        from .installed import apply_installed  # only here: importlib.metadata is slow to import

        _finish(apply_installed(eng, pin, payload, site, check, force_base))
        return
    path, kind = target_for(eng, pin, checkout)
    repo = gitops.open_repo(path)
    if _resolve_interrupted(repo, do_abort, do_continue):
        return
    from . import sources

    # a fetched tree always grows from its upstream tag, whatever branch is checked out there
    base_rev = f"refs/tags/{sources.upstream_tag(eng.name, pin.version)}" if kind == "tree" else None
    report = apply_git(repo, payload, opts, kind, base_check=lambda r, head: base_problem(r, head, eng.name, pin),
                       base_rev=base_rev)
    check = _marker_check(eng)
    if check is not None and report.status in ("applied", "already-applied"):
        _run_markers(report, check, path)
    _finish(report)


def _resolve_interrupted(repo, do_abort: bool, do_continue: bool) -> bool:
    """--abort / --continue: restore the journalled state; True when the command is done.

    Commits are deterministic, so --continue is a restore followed by the same apply.
    """
    if not (do_abort or do_continue):
        return False
    from .apply import abort

    message = abort(repo)
    if do_continue:
        return False
    ui.emit("apply", {"status": "aborted", "message": message}, lambda c: c.print(message, markup=False))
    return True


def _marker_check(engine):
    """check-markers over an engine's overlay files in the target (against the engine's
    snapshot when VERSIONS.toml names one): returns root -> JSON-able report."""
    from .markers import MarkerConfig, verify_tree
    from .overlay_files import collect

    config = MarkerConfig.from_dict(engine.markers, "VERSIONS.toml")
    root_dir = engine.overlay.parent.parent  # the project directory
    snapshot = root_dir / config.snapshot if config.snapshot else None
    waivers = root_dir / config.waivers if config.waivers else None
    paths = [item.path for item in collect(engine.overlay)]
    if snapshot is None and not paths:
        return None

    def check(tree: Path) -> dict:
        report = verify_tree(Path(tree), snapshot, config, waivers, paths=None if snapshot else paths)
        data = report.to_dict()
        if not report.ok:
            raise MarkerCheckFailed(data)
        return data

    return check


class MarkerCheckFailed(Exception):
    def __init__(self, data: dict) -> None:
        super().__init__("marked blocks lost or changed")
        self.data = data


@cli.command()
@click.argument("engine")
@click.option("--installed", is_flag=True, required=True, help="Restore the installed distribution.")
@click.option("--site-packages", "site", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Restore originals even over files edited since apply.")
def unapply(engine, installed, site, force) -> None:
    """Restore every file `apply --installed` touched, byte for byte."""
    from .installed import unapply_installed

    result = unapply_installed(_project().engine(engine), site, force)
    ui.emit("unapply", result, lambda c: c.print(
        f"restored {len(result['restored'])} file(s) in {result['target']}", markup=False))


@cli.command()
@click.argument("engine")
@_target_options
@click.option("--branch", help="Overlay branch (default overlay/<engine>-<version>).")
def status(engine, version, checkout, installed, site, branch) -> None:
    """Per patch: applied / pending / applied-but-changed; per overlay file: in-sync / differs / missing."""
    from . import gitops
    from .apply import engine_payload, target_for
    from .status import status_git

    eng = _project().engine(engine)
    pin = eng.pin(version)
    payload = engine_payload(eng, pin)
    if installed:
        from .installed import status_installed

        _finish(status_installed(eng, pin, payload, site))
        return
    path, kind = target_for(eng, pin, checkout)
    report = status_git(gitops.open_repo(path), payload, kind, branch)
    check = _marker_check(eng)
    if check is not None and report.status == "ok":
        _run_markers(report, check, path)
    _finish(report)


def _run_markers(report, check, tree: Path) -> None:
    try:
        report.markers = check(tree)
    except MarkerCheckFailed as failed:
        report.markers = failed.data
        report.status = "failed"


@cli.command()
@click.argument("engine")
@click.argument("version")
@click.option("--set-default", is_flag=True, help="Also make it the engine's default `version`.")
@click.option("--pre", is_flag=True, help="Allow a pre-release (with `latest`: consider them too).")
@click.option("--allow-yanked", is_flag=True, help="Allow a file the index has yanked (PEP 592), when named.")
@click.option("--kind", type=click.Choice(["sdist", "wheel", "git"]),
              help="Source kind (default: the sdist, else a wheel like the engine's; git for a git engine).")
@click.option("--file", "filename", help="The release's file to pin (default: its sdist, else a wheel like the engine's).")
@click.option("--index", help="The package index (default: the engine's default pin's).")
@click.option("--url", help="git: the remote (default: the engine's git pin's).")
@click.option("--tag-pattern", help="git: the tag name with {version} (default: from the engine's git pin, e.g. v{version}).")
def pin(engine, version, set_default, pre, allow_yanked, kind, filename, index, url, tag_pattern) -> None:
    """Record VERSION (or `latest`) of ENGINE in VERSIONS.toml, found and verified on the index."""
    from .pinning import pin as do_pin

    result = do_pin(_project(), engine, version, set_default=set_default, pre=pre, allow_yanked=allow_yanked,
                    kind=kind, filename=filename, index=index, url=url, tag_pattern=tag_pattern)

    def human(console):
        source = result.source
        what = (f"{source['kind']} {source['file']} (sha256 {source['sha256']})" if source["kind"] != "git"
                else f"git {source['url']} tag {source['tag']} (commit {source['commit']})")
        if result.status == "pinned":
            verified = ", downloaded and verified" if result.downloaded else ", verified" if result.archive else ""
            console.print(f"pinned {result.engine} {result.version}: {what}{verified}", markup=False)
            console.print(f"  {result.versions_file}: added [{result.engine}.pins.\"{result.version}\"]", markup=False)
        else:
            console.print(f"{result.engine} {result.version} is pinned already: {what}", markup=False)
        if result.default_changed:
            console.print(f"  default version of {result.engine} is now {result.default}", markup=False)
        elif result.default != result.version:
            console.print(f"  default version stays {result.default} (--set-default moves it)", markup=False)
        for note in result.notes:
            console.print(f"note: {note}", markup=False)

    ui.emit("pin", result, human)


@cli.command("preview-upgrade")
@click.argument("engine")
@click.option("--to", "to_version", required=True,
              help="The version to move to: a pinned one, one on the index not pinned yet, or `latest`.")
@click.option("--from", "from_version", help="The version the series is on (default: the engine's `version`).")
@click.option("--pre", is_flag=True, help="With --to latest: consider pre-releases (and allow naming one).")
@click.option("--format", "out_format", type=click.Choice(["human", "json", "markdown"]),
              help="Output format; json is a stable schema, markdown a CI job summary or PR comment.")
def preview_upgrade(engine, to_version, from_version, pre, out_format) -> None:
    """Read-only: how the series would fare on another version, per patch and hunk; exit 0 only
    when every patch applies at zero fuzz and every marked block is intact."""
    from .report import preview_markdown, render
    from .upgrade import preview

    app = ui.app_context()
    if out_format is not None:
        app.fmt = "human" if out_format == "markdown" else out_format
    project = _project()
    eng = project.engine(engine)
    result = preview(eng, to_version, from_version, _marker_check(eng), pre=pre)

    def human(console):
        for note in result.notes:
            console.print(f"note: {note}", markup=False)
        render(result.report, console)
        for touch in result.touched:
            console.print(f"upstream-touched: {touch.patch} {touch.file} hunk #{touch.hunk}: {touch.what}",
                          markup=False)
        for suggestion in result.suggestions:
            console.print(f"suggestion: {suggestion}", markup=False)
        for reason in result.verdict.reasons:
            console.print(f"not clean: {reason}", markup=False)

    if out_format == "markdown":
        ui.emit_text(preview_markdown(result))
    else:
        ui.emit("preview-upgrade", result, human)
    if not result.verdict.ok:
        raise click.exceptions.Exit(EXIT_CHECK_FAILED)


@cli.command()
@click.argument("engine")
@click.option("--to", "to_version", help="The pinned version to move to.")
@click.option("--from", "from_version", help="The version the series is on (default: the engine's `version`).")
@click.option("--checkout", type=click.Path(file_okay=False, path_type=Path),
              help="Your fork (must have the new upstream tag); default: the fetched new tree.")
@click.option("--continue", "do_continue", is_flag=True, help="Commit your fix of the stopped patch and go on.")
@click.option("--skip", "do_skip", is_flag=True, help="Leave the stopped patch out and go on.")
@click.option("--abort", "do_abort", is_flag=True, help="Restore everything as before the upgrade.")
def upgrade(engine, to_version, from_version, checkout, do_continue, do_skip, do_abort) -> None:
    """Move the series to a new pin: apply what applies, stop at conflicts like `git am`."""
    from .report import render
    from .upgrade import resume_upgrade, start_upgrade

    project = _project()
    eng = project.engine(engine)
    actions = [a for a, on in (("continue", do_continue), ("skip", do_skip), ("abort", do_abort)) if on]
    if len(actions) > 1:
        raise click.UsageError("--continue, --skip and --abort exclude each other")
    if actions:
        result = resume_upgrade(project, eng, checkout, actions[0], to_version)
    elif not to_version:
        raise click.UsageError("missing --to VERSION")
    else:
        result = start_upgrade(project, eng, to_version, checkout, from_version)

    def human(console):
        if "report" in result:
            render(result["report"], console)
        for name, reason in result.get("dropped", []):
            console.print(f"dropped {name}: {reason}", markup=False)
        console.print(result.get("message", result["status"]), markup=False)

    data = {k: v for k, v in result.items() if k != "state"}
    ui.emit("upgrade", data, human)
    if result["status"] == "conflict":
        raise click.exceptions.Exit(EXIT_CHECK_FAILED)


@cli.command()
@click.argument("engine")
@click.option("--checkout", type=click.Path(file_okay=False, path_type=Path),
              help="The checkout holding the overlay branch (default: the fetched tree).")
@click.option("--version", "version", help="Pinned version (default: the engine's `version`).")
@click.option("--branch", help="Overlay branch (default overlay/<engine>-<version>).")
def export(engine, checkout, version, branch) -> None:
    """Regenerate patches/<engine>/ from the overlay branch's commits (churn-free)."""
    from . import gitops
    from .apply import default_branch, target_for
    from .export import export as do_export

    eng = _project().engine(engine)
    pin = eng.pin(version)
    path, _ = target_for(eng, pin, checkout)
    result = do_export(gitops.open_repo(path), eng.name, eng.series, branch or default_branch(eng.name, pin.version))

    def human(console):
        console.print(f"{len(result.written)} patch(es) rewritten, {len(result.unchanged)} unchanged, "
                      f"{len(result.added)} added, {len(result.removed)} removed from the series", markup=False)
        for name in result.written + result.added:
            console.print(f"  wrote {name}", markup=False)

    ui.emit("export", result, human)


@cli.command("import")
@click.argument("engine")
@click.option("--checkout", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Your fork: a git checkout with commits on top of the pinned upstream release.")
@click.option("--base", help="The upstream commit or tag the fork starts from (default: the pin's tag or commit).")
@click.option("--branch", help="The fork's branch (default: the checkout's current branch).")
@click.option("--flatten", is_flag=True,
              help="Import the first-parent history, each merge as one patch of its first-parent diff.")
def import_cmd(engine, checkout, base, branch, flatten) -> None:
    """Turn a fork's commits on the pinned base into patches appended to ENGINE's series."""
    from .importing import import_fork

    result = import_fork(_project(), engine, checkout, base=base, branch=branch, flatten=flatten)

    def human(console):
        for item in result.imported:
            console.print(f"imported {item.commit[:12]} {item.subject} -> {item.patch}", markup=False)
        for item in result.skipped:
            console.print(f"skipped  {item.commit[:12]} {item.subject}: {item.reason}", markup=False)
        for warning in result.warnings:
            console.print(f"warning: {warning}", markup=False)
        tip = result.branch or "HEAD"
        console.print(f"{len(result.imported)} commit(s) imported, {len(result.skipped)} skipped, from "
                      f"{result.base_ref} ({result.base[:12]}) to {tip} ({result.tip[:12]}) into {result.series}"
                      + ("; the series gives exactly the fork's tree" if result.verified else ""), markup=False)

    ui.emit("import", result, human)


@cli.command("diff-upstream")
@click.argument("engine")
@click.option("--from", "from_version", required=True)
@click.option("--to", "to_version", required=True)
@click.argument("paths", nargs=-1)
def diff_upstream_cmd(engine, from_version, to_version, paths) -> None:
    """What upstream changed between two pins in the files the series and overlay touch."""
    from .upgrade import diff_upstream

    result = diff_upstream(_project().engine(engine), from_version, to_version, list(paths) or None)

    def human(console):
        for item in result["files"]:
            console.out(item["diff"], end="", highlight=False)
        console.print(f"{len(result['files'])} of {len(result['paths'])} touched file(s) changed upstream "
                      f"between {from_version} and {to_version}", markup=False)

    ui.emit("diff-upstream", result, human)


def main() -> None:
    """The `overlay` entry point: what escapes OverlayGroup.invoke (Ctrl-C while options are
    parsed or `--help` imports the lazy commands, an error while one is reported) never
    becomes a traceback either — Ctrl-C is one line and status 130, click's own errors keep
    their message and status, and a RecursionError or MemoryError is one message and status 1."""
    try:
        code = cli.main(prog_name="overlay", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if not isinstance(exc.__cause__, KeyboardInterrupt):
            sys.stderr.write("Aborted!\n")
            sys.exit(1)
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (RecursionError, MemoryError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else "too large"
        sys.stderr.write(f"error: an input is {what} to process ({type(exc).__name__})\n")
        sys.exit(EXIT_CHECK_FAILED)
    sys.exit(code if isinstance(code, int) else 0)
