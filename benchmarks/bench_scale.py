"""Scale: a generated 1,000-patch series onto a generated 100,000-file tree, and check-markers
on that tree, each against its baselines in one run.

The tree (one commit, made with `git fast-import`) holds --files small Python modules of 12
functions each; --marked of them hold one `Omni-new` block. The series is --patches
`git format-patch`-style mailbox files, three files each with one hunk per file, touching
200 files over and over, a new file in every 10th patch. Nothing is committed: the
benchmark generates both in a temporary directory.

Rows:
* "apply 1,000 patches, 100k files": `overlay apply --series` (a process, as users run it)
  against `git am -3`, `quilt push -a` and a GNU `patch -p1` loop that writes no commits,
  each on its own checkout of the tree, wall time and peak memory (the largest process of
  each run, from wait4). Every tool's resulting tree must be identical, and equal to the
  generator's own model of the patched files: otherwise the run fails.
* "check-markers 100k files (snapshot)" and "(git rev)": `overlay check-markers --against`
  a snapshot file / the tree's commit, as users run it (a process), against one
  `rg --count-matches` of the same tags over the same tree. Both reports must be ok with
  every block intact, and identical to each other.

Usage: python benchmarks/bench_scale.py [--quick] [--files N --patches N --marked N]
       [--repeats N] [--marker-repeats N] [--json PATH]
`git am -3` (about a minute at full size) and `quilt push -a` run once, the other tools
--repeats times, interleaved; check-markers and rg --marker-repeats times, interleaved.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table, result, summary, write_json  # noqa: E402

ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b", "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
       "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00", "QUILT_PC": ".pc"}
ENV.pop("PYTHONDONTWRITEBYTECODE", None)  # the tool runs with its bytecode cached, as installed
CACHE = "ENGINE_OVERLAY_CACHE"  # the tool's cache (its scan cache): the benchmark's own, in its directory
BASE_BRANCH = "upstream"
HOT_FILES = 200  # the files the series touches over and over
FUNCTIONS = 12
FULL = {"files": 100_000, "patches": 1_000, "marked": 2_000}
QUICK = {"files": 20_000, "patches": 200, "marked": 400}


# -- the generated tree and series ---------------------------------------------------------------

def module_path(n: int) -> str:
    return f"pkg/a{n // 10_000:02d}/b{n // 100 % 100:02d}/m{n:06d}.py"


def module_text(n: int, marked: bool) -> str:
    lines = [f'"""Synthetic module {n}."""\n', "import math\n"]
    for j in range(FUNCTIONS):
        lines += ["\n", "\n", f"def f{j}(x, scale={n % 97 + 1}):\n", f'    """Step {j} of module {n}."""\n',
                  f"    y = x * scale + {j}\n"]
        if marked and j == 5:
            tag = f"Omni-new: blk-{n}" if n % 2 else "Omni-new"
            lines += [f"    # ---- {tag} ----\n", f"    y = y + math.floor(scale / {j + 2}) + {n}\n",
                      f"    # ---- {tag} ----\n"]
        lines.append(f"    return math.floor(y) - {n % 13}\n")
    return "".join(lines)


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Generated:
    work: Path
    base: Path  # a bare repository: one commit on BASE_BRANCH
    series: Path  # the patches and their `series` file
    marked: list[str]  # files holding an Omni-new block
    final: dict[str, bytes] = field(default_factory=dict)  # every file the series changes: its bytes after
    names: list[str] = field(default_factory=list)  # the patch files, in order


def marked_numbers(files: int, marked: int) -> set[int]:
    step = max(1, files // max(1, marked))
    return set(range(0, files, step)[:marked])


def generate_tree(base: Path, files: int, marked: int) -> list[str]:
    """A bare repository with one commit of *files* modules (the marked ones among them), written
    by one `git fast-import` (faster than writing, adding and committing the files)."""
    subprocess.run(["git", "init", "-q", "--bare", f"--initial-branch={BASE_BRANCH}", str(base)], check=True)
    marks = marked_numbers(files, marked)
    proc = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=base, stdin=subprocess.PIPE, env=ENV)
    out = proc.stdin
    out.write(b"commit refs/heads/%s\ncommitter b <b@b> 1704067200 +0000\ndata 9\nupstream\n" % BASE_BRANCH.encode())
    chunk = []
    for n in range(files):
        data = module_text(n, n in marks).encode()
        chunk.append(b"M 100644 inline %s\ndata %d\n%s\n" % (module_path(n).encode(), len(data), data))
        if len(chunk) >= 1000:
            out.write(b"".join(chunk))
            chunk = []
    out.write(b"".join(chunk) + b"\n")
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed while generating the tree")
    return sorted(module_path(n) for n in marks)


def _hunk(path: str, old: list[str], new: list[str], at: int) -> str:
    """One `diff --git` entry: *new* is *old* with one line inserted at index *at* (0-based)."""
    before = old[max(0, at - 3):at]
    after = old[at:at + 3]
    start = at - len(before)
    old_count, new_count = len(before) + len(after), len(before) + len(after) + 1
    old_bytes, new_bytes = "".join(old).encode(), "".join(new).encode()
    lines = [f"diff --git a/{path} b/{path}\n", f"index {blob_id(old_bytes)}..{blob_id(new_bytes)} 100644\n",
             f"--- a/{path}\n", f"+++ b/{path}\n",
             f"@@ -{start + 1},{old_count} +{start + 1},{new_count} @@\n",
             *(" " + ln for ln in before), "+" + new[at], *(" " + ln for ln in after)]
    return "".join(lines)


def _new_file(path: str, text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join([f"diff --git a/{path} b/{path}\n", "new file mode 100644\n",
                    f"index {'0' * 40}..{blob_id(text.encode())}\n", "--- /dev/null\n", f"+++ b/{path}\n",
                    f"@@ -0,0 +1,{len(lines)} @@\n", *("+" + ln for ln in lines)])


def generate_series(out: Path, files: int, patches: int, marked: set[int]) -> tuple[list[str], dict[str, bytes]]:
    """*patches* mailbox files (and `series`): three files each, one hunk per file, over HOT_FILES
    files, a new file in every 10th patch. Returns the patch names and the final bytes of
    every file the series changes (the generator's own model, checked against every tool)."""
    out.mkdir(parents=True)
    hot = [n for n in range(7, files, max(1, files // HOT_FILES)) if n not in marked][:HOT_FILES]
    content = {module_path(n): module_text(n, False).splitlines(keepends=True) for n in hot}
    paths = [module_path(n) for n in hot]
    names = []
    for i in range(patches):
        entries = []
        targets = [paths[(3 * i + k) % len(paths)] for k in range(3)]
        if i % 10 == 9:
            new = f"pkg/new/p{i:04d}.py"
            text = f'"""Added by patch {i + 1}."""\n\n\ndef added_{i}(x):\n    return x + {i}\n'
            entries.append(_new_file(new, text))
            content[new] = text.splitlines(keepends=True)
            targets = targets[:2]
        for k, path in enumerate(targets):
            old = content[path]
            j = (i * 7 + k) % FUNCTIONS
            at = _def_line(old, j) + 2  # after the def line and its docstring
            new_lines = old[:at] + [f"    x = x + {i + 1}  # change {i + 1}\n"] + old[at:]
            entries.append(_hunk(path, old, new_lines, at))
            content[path] = new_lines
        name = f"{i + 1:04d}-scale-change-{i + 1}.patch"
        day = 1 + i % 28
        header = (f"From {'0' * 40} Mon Sep 17 00:00:00 2001\nFrom: Bench <bench@example.com>\n"
                  f"Date: Mon, {day} Jan 2024 00:00:00 +0000\nSubject: [PATCH] scale change {i + 1}\n\n"
                  f"Upstream-Status: Inappropriate [benchmark]\n---\n\n")
        (out / name).write_text(header + "".join(entries) + "-- \n2.39.5\n\n")
        names.append(name)
    (out / "series").write_text("".join(n + "\n" for n in names))
    return names, {path: "".join(lines).encode() for path, lines in content.items()}


def _def_line(lines: list[str], j: int) -> int:
    prefix = f"def f{j}("
    return next(k for k, ln in enumerate(lines) if ln.startswith(prefix))


def generate(work: Path, files: int, patches: int, marked: int) -> Generated:
    base = work / "base.git"
    marked_files = generate_tree(base, files, marked)
    series = work / "series"
    names, final = generate_series(series, files, patches, marked_numbers(files, marked))
    return Generated(work, base, series, marked_files, final, names)


# -- running the tools on one checkout -------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    peak_mb: float | None  # the largest process of the run (GNU time's %M); None without GNU time


TIME = shutil.which("time", path="/usr/bin:/bin")  # GNU time: a small process to fork the command from


def measured(cmd: list[str], cwd: Path, env: dict | None = None) -> Run:
    """Wall time and peak memory of one command; stderr is shown when it fails.

    The peak is GNU time's: the maximum resident set of the command or of any process it waited
    for. Python's own wait4 would count this (large) process too: a child's peak includes what it
    was before its exec."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "time"
        wrapped = [TIME, "-f", "%M", "-o", str(out), *cmd] if TIME else cmd
        with open(Path(tmp) / "err", "w+b") as err:
            start = time.perf_counter()
            code = subprocess.run(wrapped, cwd=cwd, env=env or ENV, stdout=subprocess.DEVNULL, stderr=err).returncode
            seconds = time.perf_counter() - start
            if code != 0:
                err.seek(0)
                raise RuntimeError(f"{cmd[0]} {' '.join(cmd[1:3])} ... failed ({code}): "
                                   f"{err.read().decode(errors='replace')[-2000:]}")
        peak = int(out.read_text().split()[-1]) / 1024 if TIME else None
    return Run(seconds, peak)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


def checkout(gen: Generated, target: Path) -> Path:
    """A work tree of the generated tree on branch `work`, settled (see :func:`settle`)."""
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(gen.base), str(target)], check=True, env=ENV)
    git(target, "checkout", "-q", "-b", "work", BASE_BRANCH)
    (target / ".git" / "info" / "exclude").write_text(".pc/\n")  # quilt's state, not the tree's
    settle(target)
    return target


def settle(target: Path) -> None:
    """Files written in the same second as the index are "racily clean": every git command would
    re-hash them until one writes the index in a later second (`git status` does)."""
    time.sleep(1.01 - time.time() % 1)
    git(target, "status", "--porcelain")


def reset(target: Path) -> None:
    """Back to the generated tree on `work`, whatever the last tool left."""
    if (target / ".git" / "rebase-apply").exists():
        git(target, "am", "--abort")
    git(target, "checkout", "-q", "-f", "-B", "work", BASE_BRANCH)
    git(target, "clean", "-qfdx")
    for branch in git(target, "branch", "--format=%(refname:short)").split():
        if branch not in ("work", BASE_BRANCH):
            git(target, "branch", "-q", "-D", branch)
    settle(target)


def tree_after(target: Path, committed: bool) -> str:
    """The tree the tool left: HEAD's (tools that commit), else the work tree's (added, untimed)."""
    if committed:
        if git(target, "status", "--porcelain", "--untracked-files=all").strip():
            raise RuntimeError(f"the checkout is not clean after the tool ran: {target}")
        return git(target, "rev-parse", "HEAD^{tree}").strip()
    git(target, "add", "-A")
    return git(target, "write-tree").strip()


def tools(gen: Generated, target: Path) -> dict[str, tuple[list[str], bool]]:
    """name -> (command line, whether it commits) for the four ways of applying the series."""
    patches = [str(gen.series / name) for name in gen.names]
    loop = ('while read -r p; do patch -p1 -s --no-backup-if-mismatch -i "$0/$p" || exit 1; done < "$0/series"')
    return {
        "overlay apply": ([sys.executable, "-m", "engine_overlay", "apply", "--series", str(gen.series),
                           "--checkout", str(target)], True),
        "git am -3": (["git", "am", "-q", "-3", *patches], True),
        "quilt push -a": (["env", f"QUILT_PATCHES={gen.series}", "quilt", "push", "-a", "-q"], False),
        "GNU patch -p1 loop (no commits)": (["sh", "-c", loop, str(gen.series)], False),
    }


def check_model(gen: Generated, target: Path) -> None:
    """The generator's own model of every file the series changes against the applied tree."""
    wrong = [path for path, data in gen.final.items()
             if not (target / path).is_file() or (target / path).read_bytes() != data]
    if wrong:
        raise RuntimeError(f"{len(wrong)} files differ from the generator's model, e.g. {wrong[0]}")


def bench_apply(gen: Generated, target: Path, repeats: dict[str, int]) -> tuple[dict, dict]:
    """Each tool its number of *repeats*, interleaved, from the same settled tree: times and peaks
    per tool. Every run must give the same tree, and the generator's model of the changed files."""
    commands = tools(gen, target)
    times: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, list[float]] = {name: [] for name in commands}
    trees: dict[str, str] = {}
    measured(commands["overlay apply"][0], target)  # warm-up: bytecode cache, page cache
    reset(target)
    for round_ in range(max(repeats.values())):
        for name, (cmd, committed) in commands.items():
            if round_ >= repeats[name]:
                continue
            run = measured(cmd, target)
            times[name].append(run.seconds)
            peaks[name].append(run.peak_mb)
            tree = tree_after(target, committed)
            if name not in trees:
                check_model(gen, target)
            if trees.setdefault(name, tree) != tree or tree != next(iter(trees.values())):
                raise RuntimeError(f"{name} gave tree {tree}, expected {next(iter(trees.values()))}: "
                                   f"the tools disagree")
            reset(target)
            print(f"  {name}: {run.seconds:.2f} s, peak {run.peak_mb or 0:.0f} MB", flush=True)
    return times, peaks


def bench_switch(target: Path, branch: str, repeats: int) -> tuple[list[float], list[float]]:
    """The branch switch of an apply onto this tree: `git checkout` against what apply now runs
    (`git read-tree -m -u` and a `git symbolic-ref`), back and forth between `work` and *branch*."""
    checkout_times, read_tree_times = [], []
    for _ in range(repeats):
        git(target, "checkout", "-q", "work")
        settle(target)
        start = time.perf_counter()
        git(target, "checkout", "-q", branch)
        checkout_times.append(time.perf_counter() - start)
        git(target, "checkout", "-q", "work")
        settle(target)
        start = time.perf_counter()
        git(target, "read-tree", "-m", "-u", "HEAD", f"refs/heads/{branch}")
        git(target, "symbolic-ref", "-m", "bench", "HEAD", f"refs/heads/{branch}")
        read_tree_times.append(time.perf_counter() - start)
    return checkout_times, read_tree_times


# -- check-markers on the tree ---------------------------------------------------------------------

def bench_markers(target: Path, work: Path, repeats: int, expected: int) -> dict[str, list[float]]:
    """check-markers against a snapshot and against HEAD, in this process (as bench_check_markers
    measures it) and as `overlay check-markers` processes, interleaved with `rg`."""
    from bench_check_markers import rg_command

    from engine_overlay.markers.check import check_markers
    from engine_overlay.markers.grammar import MarkerConfig
    from engine_overlay.markers.snapshot import find_rg, take_snapshot

    rg = find_rg()
    if rg is None:
        raise RuntimeError("rg (ripgrep) not found beside this Python or on PATH: pip install -e . installs it")
    config = MarkerConfig()
    work.mkdir(parents=True, exist_ok=True)
    snap = work / "snapshot.json"
    take_snapshot(target, None, config).write(snap)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn) -> object:
        start = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - start)
        return out

    def check(against: str) -> dict:
        report = check_markers(target, against).to_dict()
        if not report["ok"] or report["summary"]["intact"] != expected or len(report["blocks"]) != expected:
            raise RuntimeError(f"check-markers against {against}: not {expected} intact blocks: {report['summary']}")
        return report

    # first runs: the scan cache (in the tool's cache directory) empty, each in its own
    for name, against in (("first snapshot", str(snap)), ("first rev", "HEAD")):
        os.environ[CACHE] = ENV[CACHE] = str(work / name.replace(" ", "-"))
        timed(name, lambda a=against: check(a))
    reports = [check(str(snap)), check("HEAD")]  # warm: from here on
    if {**reports[0], "against": None} != {**reports[1], "against": None}:
        raise RuntimeError("check-markers gives another report against the snapshot than against HEAD")
    cli = [sys.executable, "-m", "engine_overlay", "check-markers", "--root", str(target), "--against"]
    cmd = rg_command(rg, target, config)
    for round_ in range(repeats):
        timed("rg", lambda: subprocess.run(cmd, capture_output=True, check=True))
        timed("snapshot", lambda: check(str(snap)))
        timed("rev", lambda: check("HEAD"))
        if round_ < max(1, repeats // 2):  # the processes: start-up on top, fewer runs
            timed("cli snapshot", lambda: measured([*cli, str(snap)], target))
            timed("cli rev", lambda: measured([*cli, "HEAD"], target))
    for name in ("snapshot", "rev"):
        print(f"  check-markers ({name}): median {summary(times[name])['median']:.3f} s, "
              f"rg {summary(times['rg'])['median']:.3f} s", flush=True)
    return times


# -- the report ------------------------------------------------------------------------------------

def tree_label(files: int) -> str:
    return f"{files // 1000}k files" if files >= 1000 else f"{files} files"


def rows(label: str, files: int, times: dict, peaks: dict, switch: tuple, markers: dict) -> list[dict]:
    out = []
    ours = summary(times["overlay apply"])
    ours_peak = summary(peaks["overlay apply"]) if None not in peaks["overlay apply"] else None
    for name in ("git am -3", "quilt push -a", "GNU patch -p1 loop (no commits)"):
        out.append(result(label, "wall time", ours, name, summary(times[name])))
    for name in ("git am -3", "quilt push -a", "GNU patch -p1 loop (no commits)"):
        if None not in peaks[name] + peaks["overlay apply"]:  # (no GNU time: no peaks)
            out.append(result(f"{label}: peak memory", "largest process", ours_peak, name,
                              summary(peaks[name]), unit="MB"))
    tree = tree_label(files)
    out.append(result(f"apply's branch switch, {tree}", "wall time", summary(switch[1]),
                      "git checkout", summary(switch[0])))
    rg = summary(markers["rg"])
    out += [
        result(f"check-markers {tree} (snapshot)", "wall time, in-process", summary(markers["snapshot"]),
               "rg --count-matches", rg),
        result(f"check-markers {tree} (git rev)", "wall time, in-process", summary(markers["rev"]),
               "rg --count-matches", rg),
        result(f"check-markers {tree} (snapshot), first run", "wall time, scan cache empty",
               summary(markers["first snapshot"]), "rg --count-matches", rg),
        result(f"check-markers {tree} (git rev), first run", "wall time, scan cache empty",
               summary(markers["first rev"]), "rg --count-matches", rg),
        result(f"check-markers {tree} (snapshot), as a process", "wall time, start-up included",
               summary(markers["cli snapshot"]), "rg --count-matches", rg),
        result(f"check-markers {tree} (git rev), as a process", "wall time, start-up included",
               summary(markers["cli rev"]), "rg --count-matches", rg),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a smaller tree and series: {QUICK}")
    parser.add_argument("--files", type=int)
    parser.add_argument("--patches", type=int)
    parser.add_argument("--marked", type=int)
    parser.add_argument("--repeats", type=int, default=3, help="runs of overlay apply and the patch loop")
    parser.add_argument("--marker-repeats", type=int, default=9, help="runs of check-markers and rg (each ~1 s)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    size = {**(QUICK if args.quick else FULL), **{k: v for k in FULL if (v := getattr(args, k)) is not None}}
    label = f"apply {size['patches']:,} patches, {tree_label(size['files'])}"
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        os.environ[CACHE] = ENV[CACHE] = str(work / "cache")
        ENV["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        start = time.perf_counter()
        gen = generate(work, size["files"], size["patches"], size["marked"])
        target = checkout(gen, work / "target")
        print(f"generated {size} in {time.perf_counter() - start:.1f} s", flush=True)
        times, peaks = bench_apply(gen, target, {"overlay apply": args.repeats, "git am -3": 1, "quilt push -a": 1,
                                                 "GNU patch -p1 loop (no commits)": args.repeats})
        measured(tools(gen, target)["overlay apply"][0], target)  # the branch apply switches to
        switch = bench_switch(target, "overlay/series", args.repeats)
        reset(target)
        markers = bench_markers(target, work, args.marker_repeats, len(gen.marked))
        results = rows(label, size["files"], times, peaks, switch, markers)
    print_table(results)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
