#!/usr/bin/env bash
# Same-run A/B of two statecast binaries in cluster mode (one node on one nats-server), the way
# bench/cluster.sh measures a node's ingest: statecast-load, 6 connections, 64 Msgs in flight,
# 0.01 of events change, at 1 and 100 events per Msg. Each round runs the single node (NEW),
# then the cluster node with OLD and with NEW (their order swapped every other round: this
# machine's load moves between neighbouring runs), then the end-to-end latency at a low rate
# (statecast-swarm, 100 changes/s, 1 per POST, A → A) with OLD and NEW.
#
#   cargo build --release --workspace --bins          # the tools and the NEW binary
#   bench/cluster-ab.sh OLD_BINARY NEW_BINARY [ROUNDS] # ROUNDS defaults to 3
#
# Prints one line per run: ev/s, cluster ÷ single of the same round, CPU µs per event of
# statecast and nats-server (utime + stime from /proc, warm-up included), inputs and events per
# stream message, reply p50/p99 ms, and the load average; then the median of each figure.
# Knobs: BENCH_DURATION (s per point, default 4), BENCH_BATCHES (default "1 100").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ $# -ge 2 ] || { echo "usage: bench/cluster-ab.sh OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
OLD=$(realpath "$1") NEW=$(realpath "$2") ROUNDS=${3:-3}
T=$ROOT/target/release
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
DUR=${BENCH_DURATION:-4}; WARM=1; CONNS=6; IN_FLIGHT=64; CHANGE_RATIO=0.01
BATCHES=${BENCH_BATCHES:-1 100}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-cluster-ab.XXXXXX")
cleanup() {
  local pid
  for pid in $(jobs -pr); do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
source "$ROOT/bench/lib.sh"
source "$ROOT/bench/cluster-lib.sh"

# per CPU_SECONDS EVENTS_PER_S: µs of CPU per acknowledged event over warm-up and measurement.
per() { awk -v c="$1" -v e="$2" -v t="$DUR" -v w="$WARM" 'BEGIN { if (e > 0) printf "%.2f", c * 1e6 / (e * (t + w)); else print "n/a" }'; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
load() { # OUT_FILE LABEL ADDR BATCH
  "$T/statecast-load" --addr "$3" -c $CONNS -b "$4" -k $IN_FLIGHT --change-ratio $CHANGE_RATIO \
    -d "$DUR" --warmup "$WARM" --label "$2" >"$1" 2>&1 || true
  json "$1" >/dev/null 2>&1 || { echo "statecast-load $2 failed:" >&2; cat "$1" >&2; return 1; }
}
ev() { get "$1" .events_per_s; }
# per_read HTTP_ADDR EVENTS_PER_S: events per answered socket read (the node's count of TCP acks).
per_read() { awk -v e="$2" -v t="$DUR" -v w="$WARM" -v n="$(metric "$1" statecast_tcp_ack_seconds_count)" 'BEGIN { if (n > 0) printf "%.0f", e * (t + w) / n; else print 0 }'; }

# RESULTS: one line per run: kind batch round ev/s ratio statecast_us nats_us inputs/msg events/msg p50 p99 load events/read
RESULTS=$WORK/results
single() { # BATCH ROUND: sets SINGLE_EPS
  local out=$WORK/single-$1-$2 c0 l
  STATECAST_BIN=$NEW start_statecast
  c0=$(cpu "$SERVER_PID"); l=$(loadavg)
  load "$out" single "$TCP_ADDR" "$1"
  SINGLE_EPS=$(ev "$out")
  echo "single $1 $2 $SINGLE_EPS 1 $(per "$(awk -v a="$(cpu "$SERVER_PID")" -v b="$c0" 'BEGIN{print a-b}')" "$SINGLE_EPS") 0 0 0 $(get "$out" .latency_us.p50) $(get "$out" .latency_us.p99) $l $(per_read "$HTTP_ADDR" "$SINGLE_EPS")" >>"$RESULTS"
  stop "$SERVER_PID"
}
cluster() { # WHICH(old|new) BATCH ROUND
  local out=$WORK/$1-$2-$3 c0 n0 l eps inputs messages
  STREAM=ab$2; STATECAST_BIN=${1^^}; STATECAST_BIN=${!STATECAST_BIN}
  start_cluster 1
  c0=$(cpu "${PIDS[0]}"); n0=$(cpu "$NATS_PID"); l=$(loadavg)
  load "$out" "cluster-$1" "${TCPS[0]}" "$2"
  eps=$(ev "$out")
  local sc nc
  sc=$(awk -v a="$(cpu "${PIDS[0]}")" -v b="$c0" 'BEGIN{print a-b}')
  nc=$(awk -v a="$(cpu "$NATS_PID")" -v b="$n0" 'BEGIN{print a-b}')
  inputs=$(metric "${HTTPS[0]}" statecast_cluster_inputs_published_total)
  messages=$(metric "${HTTPS[0]}" statecast_cluster_messages_published_total)
  echo "$1 $2 $3 $eps $(ratio "$eps" "$SINGLE_EPS") $(per "$sc" "$eps") $(per "$nc" "$eps") $(ratio "$inputs" "$messages") $(awk -v e="$eps" -v t="$DUR" -v w="$WARM" -v m="$messages" 'BEGIN { if (m > 0) printf "%.0f", e * (t + w) / m; else print 0 }') $(get "$out" .latency_us.p50) $(get "$out" .latency_us.p99) $l $(per_read "${HTTPS[0]}" "$eps")" >>"$RESULTS"
  stop_cluster
  unset STATECAST_BIN
}
latency() { # WHICH ROUND: 10 dashboards on the node, 100 changes/s posted into it, 1 per POST
  local out=$WORK/lat-$1-$2
  STREAM=latency; STATECAST_BIN=${1^^}; STATECAST_BIN=${!STATECAST_BIN}
  start_cluster 1
  "$T/statecast-swarm" --ws "ws://${HTTPS[0]}/ws" --post "http://${HTTPS[0]}/api/event" -c 10 \
    --rate 100 --batch 1 -d "$DUR" --warmup "$WARM" --label "lat-$1" >"$out" 2>"$out.err" || true
  json "$out" >/dev/null 2>&1 &&
    echo "lat-$1 1 $2 $(get "$out" .posted_per_s) 0 0 0 0 0 $(get "$out" .latency_us.p50) $(get "$out" .latency_us.p99) $(loadavg)" >>"$RESULTS"
  stop_cluster
  unset STATECAST_BIN
}

for r in $(seq 1 "$ROUNDS"); do
  for b in $BATCHES; do
    single "$b" "$r"
    if [ $((r % 2)) = 1 ]; then cluster old "$b" "$r"; cluster new "$b" "$r"; else cluster new "$b" "$r"; cluster old "$b" "$r"; fi
    grep " $b $r " "$RESULTS" >&2
  done
  latency old "$r"; latency new "$r"
done

echo "old: $OLD"
echo "new: $NEW"
printf '%-8s %5s %5s %10s %6s %8s %8s %9s %9s %7s %7s %5s %7s\n' run batch round ev/s ratio sc_us/ev nats_us in/msg ev/msg p50_ms p99_ms load ev/read
awk '{ printf "%-8s %5s %5s %10.0f %6s %8s %8s %9s %9s %7.1f %7.1f %5s %7s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10/1000, $11/1000, $12, $13 }' "$RESULTS"
echo "medians over rounds:"
for kind in single old new lat-old lat-new; do
  for b in $BATCHES; do
    awk -v k="$kind" -v b="$b" '$1 == k && $2 == b' "$RESULTS" >"$WORK/sel"
    [ -s "$WORK/sel" ] || continue
    med() { sort -g | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'; }
    printf '%-8s %5s  ev/s %s  ratio %s  statecast %s µs/ev  nats %s µs/ev  events/msg %s  p50 %s ms  p99 %s ms\n' "$kind" "$b" \
      "$(cut -d' ' -f4 "$WORK/sel" | med | awk '{printf "%.0f", $1}')" "$(cut -d' ' -f5 "$WORK/sel" | med)" \
      "$(cut -d' ' -f6 "$WORK/sel" | med)" "$(cut -d' ' -f7 "$WORK/sel" | med)" "$(cut -d' ' -f9 "$WORK/sel" | med)" \
      "$(cut -d' ' -f10 "$WORK/sel" | med | awk '{printf "%.2f", $1/1000}')" "$(cut -d' ' -f11 "$WORK/sel" | med | awk '{printf "%.2f", $1/1000}')"
  done
done
