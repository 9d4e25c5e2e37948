#!/usr/bin/env bash
# Two statecast builds compared on the trends benchmark (bench/trends.sh), round by round in turn
# (OLD then NEW each round), so that a machine shared with other work swings both alike.
#
#   bench/trends-ab.sh OLD_DIR NEW_DIR [KEYS …]
#
# OLD_DIR and NEW_DIR each hold statecast, statecast-load and statecast-swarm (e.g. a copy of
# target/release made before a change, and target/release). KEYS: moving keys per load
# connection (10 connections; default 1000 and 100, i.e. 10,000 and 1,000 keys). Knobs:
# BENCH_TRENDS_ROUNDS (rounds per build and KEYS, default 3) and the others of bench/trends.sh.
# Prints one line per build and KEYS: the median ingest ratio (live frames on ÷ off), each
# round's, and the median round's frames/s, values/s, bytes/s and server CPU µs/event with
# frames on. Writes nothing into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/trends-ab.sh OLD_DIR NEW_DIR [KEYS …]" >&2; exit 2; }
OLD=$1 NEW=$2
shift 2
KEYS_LIST=("${@:-1000}")
[ $# -ge 1 ] || KEYS_LIST=(1000 100)
ROUNDS=${BENCH_TRENDS_ROUNDS:-3}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/statecast-trends-ab.XXXXXX")
echo "==> sections in $OUT" >&2

for keys in "${KEYS_LIST[@]}"; do
  for r in $(seq 1 "$ROUNDS"); do
    for build in old new; do
      dir=$OLD; [ $build = new ] && dir=$NEW
      echo "==> $((keys * 10)) keys, round $r, $build ($dir)" >&2
      BENCH_NO_BUILD=1 BENCH_BIN_DIR=$dir BENCH_TRENDS_KEYS=$keys BENCH_TRENDS_ROUNDS=1 \
        BENCH_TRENDS_OUT="$OUT/$build-$keys-r$r.md" bash bench/trends.sh || true
    done
  done
done

# The numbers of one section: ratio, then the "on" row's frames/s, values/s, bytes/s, CPU µs/event.
numbers() {
  local ratio row
  ratio=$(grep -o 'without: \*\*[0-9.na/]*\*\*' "$1" | tr -d '*' | awk '{ print $2 }')
  row=$(grep '^| on |' "$1" | awk -F'|' '{ gsub(/ /, ""); print $7, $8, $9, $4 }')
  echo "$ratio $row"
}
echo
echo "| moving keys | build | ingest ÷ without, median (every round, sorted) | frames/s | key values/s | bytes/s | server CPU µs/event (on) |"
echo "|---|---|---|---|---|---|---|"
for keys in "${KEYS_LIST[@]}"; do
  for build in old new; do
    rows=$(for f in "$OUT/$build-$keys"-r*.md; do [ -f "$f" ] && numbers "$f"; done | sort -n)
    n=$(echo "$rows" | grep -c . || true)
    [ "$n" -gt 0 ] || continue
    median=$(echo "$rows" | awk -v n="$n" 'NR == int((n + 1) / 2)')
    each=$(echo "$rows" | awk '{ printf "%s ", $1 }')
    set -- $median
    echo "| $((keys * 10)) | $build | **$1** ($each) | $2 | $3 | $4 | $5 |"
  done
done
