#!/usr/bin/env bash
# The incident-scale storm of issue 24, in one command: the dashboard in headless chromium
# (baseline page against this page, same run, same server binary) and the server with many
# dashboards against the Node `ws` hub. Prints the figures; BENCHMARKS.md's "Incident-scale
# storm" section is written by hand from them (bench/run.sh keeps that section).
#
#   bench/storm/run.sh                  baseline = the page at `git merge-base HEAD main`
#   STORM_BASE=<commit> bench/storm/run.sh
#
# Knobs: STORM_BASE, STORM_SECONDS_BROWSER (default 60), STORM_RATE_BROWSER (default 1000),
# STORM_PROFILE (seconds of trace + CPU profile after each measured window, default 5),
# STORM_SKIP_SERVER=1 (browser part only); bench/storm/server.sh's own knobs for the server part.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BASE=${STORM_BASE:-$(git merge-base HEAD main)}
SECS=${STORM_SECONDS_BROWSER:-60}
RATE=${STORM_RATE_BROWSER:-1000}
PROFILE=${STORM_PROFILE:-5}

[ "${STORM_NO_BUILD:-0}" = 1 ] || cargo build --release --workspace --bins --quiet
[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund --silent)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-storm-page.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
git archive "$BASE" static | tar -x -C "$WORK"
echo "==> baseline page: static/ at $(git rev-parse --short "$BASE"); this page: static/ at $(git rev-parse --short HEAD)$([ -n "$(git status --porcelain -- static)" ] && echo ' + uncommitted changes')" >&2

for scenario in problems grid; do
  echo "==> browser storm: $scenario, $RATE changes/s for ${SECS}s" >&2
  node --experimental-websocket bench/storm/browser.mjs --bin "$ROOT/target/release/statecast" \
    --page "base=$WORK/static" --page "new=$ROOT/static" --scenario "$scenario" \
    --seconds "$SECS" --rate "$RATE" --profile "$PROFILE"
done

if [ "${STORM_SKIP_SERVER:-0}" != 1 ]; then
  echo "==> server storm" >&2
  bench/storm/server.sh
fi
