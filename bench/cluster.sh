#!/usr/bin/env bash
# The cluster-mode benchmarks of issue 14: statecast nodes sharing one JetStream stream on
# Debian's nats-server, each figure next to the same measurement on one single-node statecast,
# in the same run, on the same machine, with the same tools (bench/tools).
#
#   bench/cluster.sh                   full run (~2 min after the build); writes its section
#                                      into BENCHMARKS.md
#   bench/cluster.sh --smoke [FILE]    tiny configuration (~30 s) proving it works; writes its
#                                      section into FILE (default target/bench-smoke.md)
#
# The section sits between "<!-- cluster:begin" and "<!-- cluster:end" lines: replaced when it is
# there, otherwise put before "## Raw results" (or at the end). bench/run.sh runs this script
# after writing its own file, so one command still regenerates everything.
#
# Knobs (environment): BENCH_DURATION (s per point, default 4), BENCH_CLUSTER_FANOUT_CLIENTS
# (default 1000), BENCH_CLUSTER_ROUNDS (ingest rounds, default 3), BENCH_NO_BUILD=1 (the release binaries are already built: bench/run.sh),
# BENCH_BIN_DIR (the binaries' directory, default target/release).
# Needs: cargo, jq, nats-server (Debian's package; scripts/test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
OUT=BENCHMARKS.md
case "${1:-}" in
  --smoke) SMOKE=1; OUT=${2:-target/bench-smoke.md} ;;
  "") ;;
  *) echo "usage: bench/cluster.sh [--smoke [FILE]]" >&2; exit 2 ;;
esac

NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
for tool in cargo jq "$NATS_SERVER"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench/cluster.sh: $tool is required" >&2; exit 1; }
done

# The ingest pairs run ROUNDS times, single and cluster in turn: this machine is shared, and the
# round with the median ratio is the one shown (every round's ratio beside it).
if [ $SMOKE = 1 ]; then
  DUR=0.5; WARM=0.2; FAN_CLIENTS=30; LAT_CLIENTS=5; BATCHES="1 100"; ROUNDS=1
else
  DUR=${BENCH_DURATION:-4}; WARM=1; FAN_CLIENTS=${BENCH_CLUSTER_FANOUT_CLIENTS:-1000}; LAT_CLIENTS=10
  BATCHES="1 100"; ROUNDS=${BENCH_CLUSTER_ROUNDS:-3}
fi
CONNS=6 # divisible by 3: the aggregate run gives each of 3 nodes 2 connections
IN_FLIGHT=64
CHANGE_RATIO=0.01
# Fan-out drivers: enough POSTs in flight that the cluster's longer acknowledgement (publish, then
# apply) does not decide the rate of changes on its own.
DRIVERS=8

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "==> building release binaries" >&2
  cargo build --release --workspace --bins --quiet
fi
# BENCH_BIN_DIR: where the release binaries are (another build, e.g. a copy of an older one).
T=${BENCH_BIN_DIR:-$ROOT/target/release}
COMMIT=${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${BENCH_COMMIT:-}" ] && [ -n "$(git status --porcelain -- src build.rs proto Cargo.toml 2>/dev/null || true)" ]; then
  COMMIT="$COMMIT + uncommitted changes"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-cluster-bench.XXXXXX")
cleanup() {
  # Only this script's own background jobs that are still running.
  local pid
  for pid in $(jobs -pr); do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # After a failed measurement the servers' logs are worth reading: kept, and named.
  if [ "${FAILED:-0}" = 1 ]; then echo "bench/cluster.sh: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# wait_for, wait_ready, stop, start_statecast, json, get, ratio, human, msf, check.
source "$ROOT/bench/lib.sh"
# start_nats, stop_nats, readyz, metric, start_cluster_node, start_cluster, stop_cluster, cpu.
source "$ROOT/bench/cluster-lib.sh"

join() { local IFS=,; echo "$*"; }

load() { # OUT_FILE LABEL ADDRS BATCH
  "$T/statecast-load" --addr "$3" -c $CONNS -b "$4" -k $IN_FLIGHT --change-ratio $CHANGE_RATIO \
    -d "$DUR" --warmup "$WARM" --label "$2" >"$1" 2>&1 || true
  check "$1" "statecast-load $2 (b=$4)" "$LOAD_OK" && head -1 "$1" >&2
}
latency() { # OUT_FILE LABEL WS_URLS POST_URL: $LAT_CLIENTS dashboards, 100 changes/s, 1 per POST
  "$T/statecast-swarm" --ws "$3" --post "$4" -c $LAT_CLIENTS --rate 100 --batch 1 -d "$DUR" \
    --warmup "$WARM" --label "$2" >"$1" 2>"$1.err" || true
  check "$1" "statecast-swarm latency $2" "$SWARM_OK" && head -1 "$1" >&2
}
fanout() { # OUT_FILE LABEL WS_URLS POST_URL: $FAN_CLIENTS dashboards, $DRIVERS drivers as fast as acked
  "$T/statecast-swarm" --ws "$3" --post "$4" -c "$FAN_CLIENTS" --rate 0 --batch 10 --drivers $DRIVERS \
    -d "$DUR" --warmup "$WARM" --label "$2" >"$1" 2>"$1.err" || true
  check "$1" "statecast-swarm fan-out $2" "$SWARM_OK" && head -1 "$1" >&2
}

# ---------------------------------------------------------------------------------------------
echo "==> ingest: one node in cluster mode vs the same binary single-node ($CONNS connections, $ROUNDS rounds)" >&2
for r in $(seq 1 "$ROUNDS"); do
  for b in $BATCHES; do
    start_statecast
    c0=$(cpu "$SERVER_PID")
    load "$WORK/ingest-single-b$b-r$r.txt" single "$TCP_ADDR" "$b"
    echo "{\"statecast\":$(awk -v a="$(cpu "$SERVER_PID")" -v b="$c0" 'BEGIN{print a-b}')}" >"$WORK/cpu-single-b$b-r$r.json"
    stop "$SERVER_PID"
    STREAM=ingest$b
    start_cluster 1
    c0=$(cpu "${PIDS[0]}"); n0=$(cpu "$NATS_PID")
    load "$WORK/ingest-cluster-b$b-r$r.txt" cluster-1 "${TCPS[0]}" "$b"
    echo "{\"statecast\":$(awk -v a="$(cpu "${PIDS[0]}")" -v b="$c0" 'BEGIN{print a-b}'),\"nats\":$(awk -v a="$(cpu "$NATS_PID")" -v b="$n0" 'BEGIN{print a-b}'),\"inputs\":$(metric "${HTTPS[0]}" statecast_cluster_inputs_published_total),\"messages\":$(metric "${HTTPS[0]}" statecast_cluster_messages_published_total)}" >"$WORK/cpu-cluster-b$b-r$r.json"
    stop_cluster
  done
done

echo "==> aggregate ingest: 3 nodes, $((CONNS / 3)) connections into each" >&2
STREAM=aggregate
start_cluster 3
load "$WORK/ingest-cluster3-b100.txt" cluster-3 "$(join "${TCPS[@]}")" 100
stop_cluster

# ---------------------------------------------------------------------------------------------
echo "==> end-to-end latency: POST on A → change on a dashboard of B (100 changes/s)" >&2
start_statecast
latency "$WORK/lat-single.txt" single "ws://$HTTP_ADDR/ws" "http://$HTTP_ADDR/api/event"
stop "$SERVER_PID"
# A fresh cluster for each path: the swarm's keys start from the same states every run.
STREAM=latency
start_cluster 2
latency "$WORK/lat-same.txt" cluster-A-to-A "ws://${HTTPS[0]}/ws" "http://${HTTPS[0]}/api/event"
stop_cluster
start_cluster 2
latency "$WORK/lat-cross.txt" cluster-A-to-B "ws://${HTTPS[1]}/ws" "http://${HTTPS[0]}/api/event"
stop_cluster

# ---------------------------------------------------------------------------------------------
echo "==> fan-out: $FAN_CLIENTS dashboards on one node vs spread over 3 nodes" >&2
start_statecast
fanout "$WORK/fan-single.txt" single "ws://$HTTP_ADDR/ws" "http://$HTTP_ADDR/api/event"
stop "$SERVER_PID"
STREAM=fanout
start_cluster 3
fanout "$WORK/fan-cluster3.txt" cluster-3 \
  "$(join "ws://${HTTPS[0]}/ws" "ws://${HTTPS[1]}/ws" "ws://${HTTPS[2]}/ws")" "http://${HTTPS[0]}/api/event"
stop_cluster

# ---------------------------------------------------------------------------------------------
ev() { json "$1" >/dev/null 2>&1 && get "$1" .events_per_s || echo 0; }
section() {
  echo "<!-- cluster:begin: written by bench/cluster.sh (bench/run.sh runs it); edits here are overwritten -->"
  echo "## Cluster mode (NATS JetStream)"
  echo
  if [ $SMOKE = 1 ]; then echo "**Smoke configuration: proves the script runs; the numbers mean nothing.**"; echo; fi
  echo "Produced by \`bench/cluster.sh${1:+ $1}\` on $(date -u '+%Y-%m-%d %H:%M UTC'), statecast at commit \`$COMMIT\`,"
  echo "$("$NATS_SERVER" --version) (Debian) with JetStream on its file store, one server, stream replicas 1."
  echo "Every node, nats-server and the tools share this machine's $(nproc) cores: a cluster here measures"
  echo "what the cluster path costs, not what several machines add. Each ratio divides two figures of this run."
  echo "Cluster nodes keep their own history (\`--data-dir\`, as the single node); ${DUR}s measured after ${WARM}s warm-up."
  echo
  echo "### Ingest through one node (statecast-load, $CONNS connections, $IN_FLIGHT in flight, $CHANGE_RATIO of events change)"
  echo
  echo "| events/Msg | single node ev/s | cluster node ev/s | cluster ÷ single (goal ≥ 0.75 at 100, ≥ 0.6 at 1) | ratio in each round | single reply p50 / p99 ms | cluster reply p50 / p99 ms |"
  echo "|---|---|---|---|---|---|---|"
  local b s c r rs m
  declare -A MEDIAN_ROUND=()
  for b in $BATCHES; do
    # Every round's ratio, and the round with the median one.
    rs=""; m=""
    for r in $(seq 1 "$ROUNDS"); do
      s=$WORK/ingest-single-b$b-r$r.txt; c=$WORK/ingest-cluster-b$b-r$r.txt
      json "$s" >/dev/null 2>&1 && json "$c" >/dev/null 2>&1 || continue
      rs="$rs $(ratio "$(ev "$c")" "$(ev "$s")"):$r"
    done
    [ -n "$rs" ] || { echo "| $b | (failed) ||||||"; continue; }
    m=$(tr ' ' '\n' <<<"$rs" | grep . | sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }')
    r=${m##*:}
    s=$WORK/ingest-single-b$b-r$r.txt; c=$WORK/ingest-cluster-b$b-r$r.txt
    [ "$b" = 100 ] && MEDIAN_CLUSTER_B100=$c
    MEDIAN_ROUND[$b]=$r
    echo "| $b | $(human "$(ev "$s")") | $(human "$(ev "$c")") | **$(ratio "$(ev "$c")" "$(ev "$s")")** | $(tr ' ' '\n' <<<"$rs" | grep . | cut -d: -f1 | paste -sd' ') | $(msf "$(get "$s" .latency_us.p50)") / $(msf "$(get "$s" .latency_us.p99)") | $(msf "$(get "$c" .latency_us.p50)") / $(msf "$(get "$c" .latency_us.p99)") |"
  done
  echo
  # CPU per event of each batch size's median round: where the difference goes on this machine.
  # µs of CPU per acknowledged event, over warm-up and measurement (events/s × their length).
  per() { awk -v cpu="$1" -v eps="$2" -v t="$(awk -v d="$DUR" -v w="$WARM" 'BEGIN{print d+w}')" 'BEGIN { if (eps > 0) printf "%.2f", cpu * 1e6 / (eps * t); else print "n/a" }'; }
  for b in $BATCHES; do
    r=${MEDIAN_ROUND[$b]:-}
    [ -n "$r" ] || continue
    s=$WORK/ingest-single-b$b-r$r.txt; c=$WORK/ingest-cluster-b$b-r$r.txt
    echo "CPU per event at $b events/Msg (same round): single node statecast $(per "$(jq .statecast "$WORK/cpu-single-b$b-r$r.json")" "$(ev "$s")") µs;"
    echo "cluster node statecast $(per "$(jq .statecast "$WORK/cpu-cluster-b$b-r$r.json")" "$(ev "$c")") µs + nats-server $(per "$(jq .nats "$WORK/cpu-cluster-b$b-r$r.json")" "$(ev "$c")") µs;"
    # Inputs (one per socket read) and the stream messages they took, warm-up included.
    local inputs messages
    inputs=$(jq -r '.inputs // 0' "$WORK/cpu-cluster-b$b-r$r.json"); messages=$(jq -r '.messages // 0' "$WORK/cpu-cluster-b$b-r$r.json")
    echo "The node published $messages stream messages for $inputs inputs (one per socket read): $(ratio "$inputs" "$messages") inputs,"
    echo "about $(awk -v e="$(ev "$c")" -v t="$(awk -v d="$DUR" -v w="$WARM" 'BEGIN{print d+w}')" -v m="$messages" 'BEGIN { if (m > 0) printf "%.0f", e * t / m; else print "n/a" }') events per message."
  done
  echo "(Every core is busy in these runs, the load generator included, so throughput follows CPU per event.)"
  echo
  c=$WORK/ingest-cluster3-b100.txt
  if json "$c" >/dev/null 2>&1; then
    echo "Aggregate, 3 nodes, $((CONNS / 3)) connections into each (100 events/Msg): **$(human "$(ev "$c")") ev/s**, $(ratio "$(ev "$c")" "$(ev "${MEDIAN_CLUSTER_B100:-none}")") × one cluster node"
    echo "above (reply p50 / p99 $(msf "$(get "$c" .latency_us.p50)") / $(msf "$(get "$c" .latency_us.p99)") ms). Every node applies every batch, so the aggregate is bounded"
    echo "by what one node applies, whichever node takes the connection."
  else
    echo "Aggregate, 3 nodes: (failed)"
  fi
  echo
  echo "### End-to-end latency (statecast-swarm: POST → change on a dashboard, $LAT_CLIENTS dashboards, 100 changes/s)"
  echo
  echo "| path | p50 ms | p99 ms | max ms |"
  echo "|---|---|---|---|"
  local f label
  for f in single same cross; do
    case $f in single) label="single node" ;; same) label="cluster: POST on A → dashboard on A" ;; cross) label="cluster: POST on A → dashboard on B" ;; esac
    f=$WORK/lat-$f.txt
    json "$f" >/dev/null 2>&1 || { echo "| $label | (failed) |||"; continue; }
    echo "| $label | $(msf "$(get "$f" .latency_us.p50)") | $(msf "$(get "$f" .latency_us.p99)") | $(msf "$(get "$f" .latency_us.max)") |"
  done
  echo
  echo "### Fan-out (statecast-swarm: $FAN_CLIENTS dashboards, $DRIVERS drivers posting 10 changes per POST into one node, as fast as acknowledged)"
  echo
  echo "| dashboards on | changes posted/s | deliveries/s | delivered of posted×clients | behind | p99 ms |"
  echo "|---|---|---|---|---|---|"
  for f in single cluster3; do
    case $f in single) label="one single node" ;; cluster3) label="3 cluster nodes (spread evenly)" ;; esac
    f=$WORK/fan-$f.txt
    json "$f" >/dev/null 2>&1 || { echo "| $label | (failed) |||||"; continue; }
    echo "| $label | $(human "$(get "$f" .posted_per_s)") | $(human "$(get "$f" .deliveries_per_s)") | $(awk -v a="$(get "$f" .delivery_fraction)" 'BEGIN{printf "%.0f%%", a*100}') | $(get "$f" '.resynced_clients + .closed_clients') | $(msf "$(get "$f" .latency_us.p99)") |"
  done
  if json "$WORK/fan-single.txt" >/dev/null 2>&1 && json "$WORK/fan-cluster3.txt" >/dev/null 2>&1; then
    echo
    echo "3 nodes ÷ one node: **$(ratio "$(get "$WORK/fan-cluster3.txt" .deliveries_per_s)" "$(get "$WORK/fan-single.txt" .deliveries_per_s)")** deliveries/s."
  fi
  echo
  echo "Raw results of this section:"
  echo
  echo '```'
  for f in "$WORK"/ingest-*.txt "$WORK"/lat-*.txt "$WORK"/fan-*.txt; do
    [ -f "$f" ] && grep -m1 '^{' "$f" 2>/dev/null | sed "s|^|$(basename "$f"): |" || true
  done
  echo '```'
  echo "<!-- cluster:end -->"
}

echo "==> writing the cluster section of $OUT" >&2
section "${1:-}" >"$WORK/section.md"
put_section cluster "$WORK/section.md" "$OUT"
echo "==> wrote the cluster section of $OUT" >&2
if [ $FAILED = 1 ]; then
  echo "bench/cluster.sh: some measurements failed (see above)" >&2
  exit 1
fi
