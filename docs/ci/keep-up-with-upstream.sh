#!/usr/bin/env bash
# Keep up with upstream, for one engine: preview the series on the engine's newest release and,
# where every patch applies and every marked block is intact, pin that release as the default on
# a branch of its own and run the checks there, so that the port is one reviewed pull request.
#
#   usage: keep-up-with-upstream.sh ENGINE        (run at the project's root, in a git checkout)
#
# Writes $KEEP_UP_DIR/ENGINE.md (the preview as markdown: a job summary, a PR or issue body) and
# ENGINE.json (the same, as JSON), and prints, one per line (also appended to $GITHUB_OUTPUT when
# set):
#   outcome=up-to-date   the newest release is the default pin already: nothing to do
#   outcome=ported       a branch keep-up/ENGINE-VERSION holds one commit pinning it; checks passed
#   outcome=broken       the series does not apply there (or a block changed): see ENGINE.md
#   version=VERSION  branch=BRANCH  summary=PATH
# Exit status: 0 for these three outcomes; non-zero when a command fails (the checks on the
# branch included: the branch is then left for a look, uncommitted).
#
# Environment: KEEP_UP_CHECK   the checks run on the branch (default: nox -s lint tests apply)
#              KEEP_UP_DIR     where the summaries go (default: .keep-up, keep it out of git)
#              KEEP_UP_PRE=1   consider pre-releases too
#              OVERLAY         the overlay command (default: overlay)
set -euo pipefail

engine=${1:?usage: keep-up-with-upstream.sh ENGINE}
out=${KEEP_UP_DIR:-.keep-up}
check=${KEEP_UP_CHECK:-nox -s lint tests apply}
overlay=${OVERLAY:-overlay}
pre=()
[[ ${KEEP_UP_PRE:-} == 1 ]] && pre=(--pre)
mkdir -p "$out"

say() {  # key=value on stdout, and for the workflow's later steps
    echo "$1"
    if [[ -n ${GITHUB_OUTPUT:-} ]]; then echo "$1" >>"$GITHUB_OUTPUT"; fi
}

# The preview is read-only: VERSIONS.toml, the series and the checkout stay as they are.
# Exit status 0: clean, 1: not clean (conflicts, 3-way only, already upstream, a block changed).
status=0
$overlay preview-upgrade "$engine" --to latest "${pre[@]}" --format json >"$out/$engine.json" || status=$?
if ((status > 1)); then
    cat "$out/$engine.json" >&2
    exit "$status"
fi
version=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["to_version"])' "$out/$engine.json")
$overlay preview-upgrade "$engine" --to "$version" "${pre[@]}" --format markdown >"$out/$engine.md" || true
say "version=$version"
say "summary=$out/$engine.md"

if ((status != 0)); then
    say "outcome=broken"
    exit 0
fi

# Clean: record exactly the release the preview judged (not `latest` again: one may appear meanwhile).
$overlay pin "$engine" "$version" --set-default "${pre[@]}" >&2
if git diff --quiet -- VERSIONS.toml; then
    say "outcome=up-to-date"
    exit 0
fi
branch="keep-up/$engine-$version"
git switch --quiet -c "$branch"
bash -c "$check" >&2
git add VERSIONS.toml
git commit --quiet -m "$engine $version: pin the new upstream release" \
    -m "The series applies at zero fuzz and every marked block is intact (overlay preview-upgrade $engine --to $version); checked with: $check"
say "branch=$branch"
say "outcome=ported"
