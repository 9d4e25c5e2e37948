#!/usr/bin/env bash
# The trends benchmarks of issue 23: what live `metrics` frames cost ingest when 1,000 dashboards
# watch, and what they carry — every figure a ratio or a reading of the same run, on the same
# machine, with the same tools (bench/tools).
#
#   bench/trends.sh                    full run (~1 min after the build); writes its section into
#                                      BENCHMARKS.md
#   bench/trends.sh --smoke [FILE]     tiny configuration (~20 s) proving it works; writes its
#                                      section into FILE (default target/bench-smoke.md)
#
# Each round runs the same Riemann TCP load (statecast-load, 100 events per Msg, every event a
# metric that moved, over KEYS keys, no state changes) against a fresh statecast with
# `--metrics-interval 1s` and with `off`, in turn, while statecast-swarm's dashboards watch
# every key. The round with the median ratio is shown, every round's ratio beside it.
#
# The section sits between "<!-- trends:begin" and "<!-- trends:end" lines: replaced when it is
# there, otherwise put before "## Raw results" (or at the end).
#
# Knobs (environment): BENCH_DURATION (s per point, default 5), BENCH_TRENDS_CLIENTS (default
# 1000), BENCH_TRENDS_ROUNDS (default 3), BENCH_TRENDS_KEYS (moving keys per connection, 10
# connections; default 1000), BENCH_NO_BUILD=1 (the release binaries are built), BENCH_BIN_DIR
# (where statecast, statecast-load and statecast-swarm are; default target/release: point it at a
# copy holding another statecast to compare builds), BENCH_TRENDS_OUT (the file the section goes into,
# default BENCHMARKS.md; bench/trends-ab.sh points it elsewhere), BENCH_TRENDS_RATE (offered events/s
# over all load connections, e.g. 1000000 for the issue's "1M events/s ingest"; default 0: as
# fast as acknowledged — then the ratio is of the maximum rates).
# Needs: cargo, jq.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
OUT=${BENCH_TRENDS_OUT:-BENCHMARKS.md}
case "${1:-}" in
  --smoke) SMOKE=1; OUT=${2:-target/bench-smoke.md} ;;
  "") ;;
  *) echo "usage: bench/trends.sh [--smoke [FILE]]" >&2; exit 2 ;;
esac
for tool in cargo jq; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench/trends.sh: $tool is required" >&2; exit 1; }
done

if [ $SMOKE = 1 ]; then
  DUR=3; CLIENTS=20; ROUNDS=1; CONNS=2; KEYS=500
else
  DUR=${BENCH_DURATION:-5}; CLIENTS=${BENCH_TRENDS_CLIENTS:-1000}; ROUNDS=${BENCH_TRENDS_ROUNDS:-3}
  CONNS=10; KEYS=${BENCH_TRENDS_KEYS:-1000} # per connection: 10 × 1,000 = 10k keys by default
fi
BATCH=100
IN_FLIGHT=64
RATE=${BENCH_TRENDS_RATE:-0}
OFFERED="as fast as acknowledged"
RATE_ARGS=() # only when set: an older statecast-load (BENCH_BIN_DIR) has no --rate
if [ "$RATE" != 0 ]; then OFFERED="offered at $RATE events/s"; RATE_ARGS=(--rate "$RATE"); fi

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "==> building release binaries" >&2
  cargo build --release --workspace --bins --quiet
fi
T=${BENCH_BIN_DIR:-$ROOT/target/release}
COMMIT=${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-trends-bench.XXXXXX")
# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# point NAME INTERVAL: one load run with CLIENTS dashboards watching, against a fresh server.
point() {
  local name=$1 interval=$2 swarm_pid
  start_statecast --metrics-interval "$interval"
  # The dashboards measure inside the load's measured window (load warm-up 1 s, then DUR s).
  "$T/statecast-swarm" --ws "ws://$HTTP_ADDR/ws" -c "$CLIENTS" --warmup 1.5 \
    -d "$(awk -v d="$DUR" 'BEGIN { print d - 1 }')" --label "$name" \
    >"$WORK/swarm-$name.txt" 2>"$WORK/swarm-$name.txt.err" &
  swarm_pid=$!
  wait_for "$WORK/swarm-$name.txt.err" 'swarm connected' >/dev/null
  "$T/statecast-load" --addr "$TCP_ADDR" -c $CONNS -b $BATCH -k $IN_FLIGHT --keys $KEYS \
    --cover-keys --change-ratio 0 "${RATE_ARGS[@]}" -d "$DUR" --label "$name" >"$WORK/load-$name.txt" 2>&1 || true
  wait "$swarm_pid" || true
  echo "$(rss_kib "$SERVER_PID")" >"$WORK/rss-$name.txt"
  cpu_seconds "$SERVER_PID" >"$WORK/cpu-$name.txt"
  stop "$SERVER_PID"
  check "$WORK/load-$name.txt" "load ($name)" "$LOAD_OK" || true
  check "$WORK/swarm-$name.txt" "swarm ($name)" '.errored_clients == 0 and .closed_clients == 0' || true
  echo "  $name: $(head -1 "$WORK/load-$name.txt")" >&2
}

# cpu_seconds PID: the process's user + system CPU time so far, in seconds.
cpu_seconds() {
  sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / hz }'
}
# us_per_event NAME: the server's CPU µs per event acknowledged in point NAME.
us_per_event() {
  awk -v c="$(cat "$WORK/cpu-$1.txt")" -v e="$(get "$WORK/load-$1.txt" .acked_events)" \
    'BEGIN { if (e > 0) printf "%.2f", c * 1e6 / e; else print "n/a" }'
}

ratios=()
for r in $(seq 1 "$ROUNDS"); do
  echo "==> round $r: --metrics-interval 1s and off, $CLIENTS dashboards, $CONNS×$KEYS keys" >&2
  point "on-r$r" 1s
  point "off-r$r" off
  on=$(get "$WORK/load-on-r$r.txt" .events_per_s); off=$(get "$WORK/load-off-r$r.txt" .events_per_s)
  ratios+=("$(ratio "$on" "$off") $r")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk -v n="${#ratios[@]}" 'NR == int((n + 1) / 2) { print $2 }')
each=$(printf '%s\n' "${ratios[@]}" | sort -k2 -n | awk '{ printf "%s ", $1 }')

on=$WORK/load-on-r$median.txt; off=$WORK/load-off-r$median.txt; sw=$WORK/swarm-on-r$median.txt
section=$WORK/section.md
{
  echo "<!-- trends:begin: written by bench/trends.sh; edits here are overwritten -->"
  echo "## Trends: live \`metrics\` frames"
  echo
  echo "Produced by \`bench/trends.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC, statecast at commit \`$COMMIT\`, load average $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Riemann TCP ingest $OFFERED, $CONNS connections × $BATCH events per Msg ($IN_FLIGHT in flight), every event a"
  echo "metric that moved over $((CONNS * KEYS)) keys, no state changes, while $CLIENTS dashboards watch every key;"
  echo "a fresh server (persistence on) per point, ${DUR}s measured. Load generator, server and dashboards share"
  echo "this machine's $(nproc) cores."
  echo
  echo "| --metrics-interval | ingest ev/s | server CPU µs/event | reply p50 / p99 ms | server RSS after | metrics frames/s (all dashboards) | key values/s | bytes/s |"
  echo "|---|---|---|---|---|---|---|---|"
  for f in "$on" "$off"; do
    name=$(basename "$f" .txt); name=${name#load-}; s=$WORK/swarm-$name.txt
    echo "| ${name%%-r*} | $(human "$(get "$f" .events_per_s)") | $(us_per_event "$name") | $(msf "$(get "$f" .latency_us.p50)") / $(msf "$(get "$f" .latency_us.p99)") | $(cat "$WORK/rss-$name.txt") KiB | $(human "$(get "$s" .metrics_frames_per_s)") | $(human "$(get "$s" .metrics_values_per_s)") | $(human "$(get "$s" .metrics_bytes_per_s)") |"
  done
  echo
  echo "Ingest with live frames ÷ without: **$(ratio "$(get "$on" .events_per_s)" "$(get "$off" .events_per_s)")** (each round: $each)."
  echo "Per dashboard: $(awk -v f="$(get "$sw" .metrics_frames_per_s)" -v c="$CLIENTS" 'BEGIN { printf "%.2f", f / c }') frames/s"
  echo "(at most one per interval, of at most \`--metrics-max-bytes\`: 64 KiB by default), $(awk -v b="$(get "$sw" .metrics_bytes_per_s)" -v c="$CLIENTS" 'BEGIN { printf "%.0f", b / c }') bytes/s."
  echo
  echo "Raw results of this section:"
  echo
  echo '```'
  for f in "$WORK"/load-*.txt "$WORK"/swarm-*.txt; do
    grep -m1 '^{' "$f" 2>/dev/null | sed "s|^|$(basename "$f"): |" || true
  done
  echo '```'
  echo "<!-- trends:end -->"
} >"$section"

put_section trends "$section" "$OUT"
echo "==> wrote the trends section of $OUT" >&2
[ "$FAILED" = 0 ] || { echo "bench/trends.sh: some measurements failed (see above)" >&2; exit 1; }
