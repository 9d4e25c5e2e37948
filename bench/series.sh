#!/usr/bin/env bash
# Metric series on ÷ off: the same release binary, same run, alternating rounds (off, on, off,
# on, …) of Riemann TCP ingest at 100 events per Msg where every event carries a metric, over
# 10,000 keys (8 connections × 1,250 keys; 1 change in 10,000 events, so that the load's cycle of
# frames reaches every key), each round on a fresh data directory. Prints each
# round's statecast-load JSON line, then the on ÷ off ratio of the summed event rates (goal ≥ 0.9);
# the last round also prints each mode's RSS (10,000 keys indexed, each with its open buckets
# when on) and the series counters. Disk per key-day: bench/series-size.py.
#
#   cargo build --release -p statecast -p statecast-bench
#   bench/series.sh [ROUNDS] [SECONDS]      # defaults: 3 rounds of 6 s
set -u
ROUNDS=${1:-3} DUR=${2:-6}
T=$(cd "$(dirname "$0")/.." && pwd)/target/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-series.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
declare -A SUM=([on]=0 [off]=0)
for round in $(seq "$ROUNDS"); do
  for series in off on; do
    dir=$WORK/data.$series.$round ready=$WORK/ready.$series.$round
    "$T/statecast" --tcp 127.0.0.1:0 --udp off --http 127.0.0.1:0 --data-dir "$dir" \
      --series "$series" >"$ready" 2>"$WORK/log.$series.$round" &
    pid=$!
    for _ in $(seq 100); do [ -s "$ready" ] && break; sleep 0.1; done
    tcp=$(jq -r .tcp "$ready"); http=$(jq -r .http "$ready")
    line=$("$T/statecast-load" --addr "$tcp" -c 8 -b 100 -k 64 --keys 1250 --change-ratio 0.0001 \
      -d "$DUR" --warmup 1 --label "series-$series-$round" 2>&1 | tail -1)
    echo "$line"
    rate=$(echo "$line" | jq -r '.events_per_s // 0')
    SUM[$series]=$(echo "${SUM[$series]} + $rate" | bc -l)
    if [ "$round" = "$ROUNDS" ]; then
      curl -s "http://$http/metrics" | grep -E '^statecast_series_(keys|points_total|buckets_written_total) |^statecast_series_points_dropped_total|^process_resident_memory_bytes' | sed "s/^/$series: /"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null
  done
done
echo "series on ÷ off (events/s summed over $ROUNDS rounds): $(echo "${SUM[on]} / ${SUM[off]}" | bc -l | cut -c1-5)"
