#!/usr/bin/env bash
# Metric series on ÷ off: the same release binary, same run, alternating rounds (off, on, off,
# on, …) of Riemann TCP ingest at 100 events per Msg where every event carries a metric, over
# 10,000 keys (8 connections × 1,250 keys; 1 change in 10,000 events, so that the load's cycle of
# frames reaches every key), each round on a fresh data directory. Prints each
# round's statecast-load JSON line, then the on ÷ off ratio of the summed event rates (goal ≥ 0.9)
# and the server's CPU time per acknowledged event (utime + stime, warm-up included: steadier
# than the rates on a loaded machine); the last round also prints each mode's RSS (10,000 keys
# indexed, each with its open buckets when on) and the series counters. Disk per key-day:
# bench/series-size.py.
#
# Given binaries (an old and a new build, say), each round runs each of them off then on, in the
# order given, and the figures are printed per binary: a same-run A/B.
#
#   cargo build --release -p statecast -p statecast-bench
#   bench/series.sh [ROUNDS] [SECONDS] [BINARY...]   # defaults: 3 rounds of 6 s, target/release
set -u
ROUNDS=${1:-3} DUR=${2:-6}
shift $(($# < 2 ? $# : 2))
# BENCH_BIN_DIR: where statecast-load (and the default statecast) are; default target/release.
T=${BENCH_BIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
BINS=("$@")
[ ${#BINS[@]} -eq 0 ] && BINS=("$T/statecast")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-series.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
declare -A SUM CPU EVENTS
for round in $(seq "$ROUNDS"); do
  for b in "${!BINS[@]}"; do
    for series in off on; do
      dir=$WORK/data.$b.$series.$round ready=$WORK/ready.$b.$series.$round
      "${BINS[$b]}" --tcp 127.0.0.1:0 --udp off --http 127.0.0.1:0 --data-dir "$dir" \
        --series "$series" >"$ready" 2>"$WORK/log.$b.$series.$round" &
      pid=$!
      for _ in $(seq 100); do [ -s "$ready" ] && break; sleep 0.1; done
      tcp=$(jq -r .tcp "$ready"); http=$(jq -r .http "$ready")
      line=$("$T/statecast-load" --addr "$tcp" -c 8 -b 100 -k 64 --keys 1250 --change-ratio 0.0001 \
        -d "$DUR" --warmup 1 --label "series-$series-$round${BINS[1]:+-bin$b}" 2>&1 | tail -1)
      echo "$line"
      ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      SUM[$b-$series]=$(echo "${SUM[$b-$series]:-0} + $(echo "$line" | jq -r '.events_per_s // 0')" | bc -l)
      EVENTS[$b-$series]=$(echo "${EVENTS[$b-$series]:-0} + $(echo "$line" | jq -r '.acked_events // 0')" | bc -l)
      CPU[$b-$series]=$(( ${CPU[$b-$series]:-0} + ticks ))
      if [ "$round" = "$ROUNDS" ]; then
        curl -s "http://$http/metrics" | grep -E '^statecast_series_(keys|points_total|buckets_written_total) |^statecast_series_points_dropped_total|^process_resident_memory_bytes' | sed "s/^/${BINS[1]:+bin$b }$series: /"
      fi
      kill "$pid"; wait "$pid" 2>/dev/null
    done
  done
done
hz=$(getconf CLK_TCK)
for b in "${!BINS[@]}"; do
  [ ${#BINS[@]} -gt 1 ] && echo "${BINS[$b]}:"
  echo "series on ÷ off (events/s summed over $ROUNDS rounds): $(echo "${SUM[$b-on]} / ${SUM[$b-off]}" | bc -l | cut -c1-5)"
  per_event() { echo "${CPU[$b-$1]} * 1000000 / $hz / ${EVENTS[$b-$1]}" | bc -l | cut -c1-5; }
  echo "server CPU µs per event: off $(per_event off), on $(per_event on)"
done
