#!/usr/bin/env bash
# The benchmarks of issue 6, in one command. Every figure is compared with a baseline or a peer
# measured in the same run, on the same machine.
#
#   bench/run.sh           full run (several minutes); writes BENCHMARKS.md
#   bench/run.sh --smoke   tiny configuration (~45 s after the build, bench/cluster.sh's ~30 s
#                          included) proving the tools work, on the debug build; writes
#                          target/bench-smoke.md, never touches BENCHMARKS.md
#
# Knobs (environment): BENCH_DURATION (s per ingest point, default 4), BENCH_FANOUT_CLIENTS
# (default "100 1000 5000"), BENCH_IDLE_CLIENTS (default 10000), BENCH_SOAK_SECS (default 60).
# Needs: cargo, node + npm (for the peer), jq, nats-server (bench/cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
case "${1:-}" in
  --smoke) SMOKE=1 ;;
  "") ;;
  *) echo "usage: bench/run.sh [--smoke]" >&2; exit 2 ;;
esac

for tool in cargo node npm jq; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench/run.sh: $tool is required" >&2; exit 1; }
done

if [ $SMOKE = 1 ]; then
  DUR=0.5; WARM=0.2; BATCHES="10"; CONNS="1"; FAN_CLIENTS="20"; IDLE_CLIENTS=100; SOAK=1; SETTLE=0.5
  OUT=target/bench-smoke.md
else
  DUR=${BENCH_DURATION:-4}; WARM=1; BATCHES="1 10 100"; CONNS="1 8"
  FAN_CLIENTS=${BENCH_FANOUT_CLIENTS:-"100 1000 5000"}; IDLE_CLIENTS=${BENCH_IDLE_CLIENTS:-10000}
  SOAK=${BENCH_SOAK_SECS:-60}; SETTLE=3
  OUT=BENCHMARKS.md
fi
IN_FLIGHT=64
CHANGE_RATIO=0.01
WATCHERS=10

# The tools are the workspace member bench/tools (crate statecast-bench); one target directory.
if [ $SMOKE = 1 ]; then
  # The smoke run proves the tools work and its numbers mean nothing: it runs the debug build
  # that scripts/test has just built and tested, rather than compiling everything again with
  # optimizations (the largest single step of CI's wall time).
  echo "==> building debug binaries (smoke run)" >&2
  cargo build --workspace --bins --quiet
  T=$ROOT/target/debug
else
  echo "==> building release binaries" >&2
  cargo build --release --workspace --bins --quiet
  T=$ROOT/target/release
fi
PEER_DIR=$ROOT/bench/peers/node-ws-hub
if [ ! -d "$PEER_DIR/node_modules" ]; then
  echo "==> installing the node peer's dependencies (npm ci)" >&2
  (cd "$PEER_DIR" && npm ci --no-audit --no-fund --silent)
fi

# What was measured: the commit, and whether the server's sources differed from it.
COMMIT=${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${BENCH_COMMIT:-}" ] && [ -n "$(git status --porcelain -- src build.rs proto Cargo.toml 2>/dev/null || true)" ]; then
  COMMIT="$COMMIT + uncommitted changes"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-bench.XXXXXX")
SHM_DIR="" # a tmpfs directory for one of the durability runs, made below when there is one
cleanup() {
  # Only this script's own background jobs that are still running.
  local pid
  for pid in $(jobs -pr); do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$SHM_DIR" ]; then rm -rf "$SHM_DIR"; fi
}
trap cleanup EXIT

# wait_for, wait_ready, stop, rss_kib, start_statecast, json, get, ratio, human, msf, check.
source "$ROOT/bench/lib.sh"

# The peers. Each sets SERVER_PID and the address it listens on.
start_peer() { # framing-only | decode-only
  local log=$WORK/peer.$RANDOM.log
  "$T/statecast-bench-peer" --mode "$1" 2>"$log" &
  SERVER_PID=$!
  TCP_ADDR=$(wait_for "$log" 'bench-peer listening')
}
start_node() {
  local log=$WORK/node.$RANDOM.log
  (cd "$PEER_DIR" && exec node server.js) 2>"$log" &
  SERVER_PID=$!
  HTTP_ADDR=$(wait_for "$log" 'node-ws-hub http listening')
}

# ---------------------------------------------------------------------------------------------
echo "==> ingest: statecast vs framing-only vs decode-only (in flight $IN_FLIGHT, changes $CHANGE_RATIO)" >&2
for c in $CONNS; do
  for b in $BATCHES; do
    for server in framing-only decode-only statecast; do
      f=$WORK/ingest-$server-c$c-b$b.txt
      if [ $server = statecast ]; then
        start_statecast
        # Changes are broadcast to $WATCHERS websocket clients while the load runs.
        "$T/statecast-swarm" --ws "ws://$HTTP_ADDR/ws" -c $WATCHERS --warmup 0 \
          --duration "$(awk -v d=$DUR -v w=$WARM 'BEGIN{print d+w+1}')" --label watchers \
          >"$WORK/watch-c$c-b$b.txt" 2>"$WORK/watch-c$c-b$b.err" &
        W=$!
        wait_for "$WORK/watch-c$c-b$b.err" 'swarm connected' >/dev/null
      else
        start_peer $server
      fi
      "$T/statecast-load" --addr "$TCP_ADDR" -c "$c" -b "$b" -k $IN_FLIGHT \
        --change-ratio $CHANGE_RATIO -d "$DUR" --warmup "$WARM" --label "$server" >"$f" 2>&1 || true
      check "$f" "statecast-load against $server (c=$c b=$b)" "$LOAD_OK" && head -1 "$f" >&2
      if [ $server = statecast ]; then
        wait "$W" 2>/dev/null || true
        check "$WORK/watch-c$c-b$b.txt" "watchers (c=$c b=$b)" || true
      fi
      stop "$SERVER_PID"
    done
  done
done

# ---------------------------------------------------------------------------------------------
if [ $SMOKE = 1 ]; then DURABLE_POINTS="100:0.01"; else DURABLE_POINTS="1:0.01 100:0.01 100:1"; fi
# Three stores under the same load: none (memory only), one on tmpfs (the same code, but a log write
# costs no device round trip: what the software costs) and the default on this machine's disk.
if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
  SHM_DIR=$(mktemp -d /dev/shm/statecast-bench.XXXXXX)
fi
DURABLE_MODES="off on"; [ -n "$SHM_DIR" ] && DURABLE_MODES="off tmpfs on"
echo "==> durability: statecast ingest with persistence off / on tmpfs / on disk (8 connections)" >&2
for point in $DURABLE_POINTS; do
  b=${point%%:*}; r=${point##*:}
  for mode in $DURABLE_MODES; do
    case $mode in
      off) start_statecast --data-dir off ;;
      tmpfs) start_statecast --data-dir "$SHM_DIR/data.$RANDOM" ;;
      on) start_statecast ;;
    esac
    f=$WORK/durable-$mode-b$b-r$r.txt
    "$T/statecast-load" --addr "$TCP_ADDR" -c 8 -b "$b" -k $IN_FLIGHT --change-ratio "$r" -d "$DUR" \
      --warmup "$WARM" --label "persist-$mode" >"$f" 2>&1 || true
    check "$f" "statecast-load against statecast, persistence $mode (b=$b r=$r)" "$LOAD_OK" && head -1 "$f" >&2
    stop "$SERVER_PID"
  done
done

# ---------------------------------------------------------------------------------------------
echo "==> fan-out: statecast vs node ws hub" >&2
for n in $FAN_CLIENTS; do
  for server in node statecast; do
    if [ $server = node ]; then start_node; else start_statecast; fi
    # Latency at a fixed 100 changes/s, then throughput with the driver as fast as answers come.
    f=$WORK/fan-lat-$server-$n.txt
    "$T/statecast-swarm" --ws "ws://$HTTP_ADDR/ws" --post "http://$HTTP_ADDR/api/event" -c "$n" \
      --rate 100 --batch 1 -d "$DUR" --warmup "$WARM" --label "$server" >"$f" 2>"$f.err" || true
    check "$f" "swarm latency against $server ($n clients)" "$SWARM_OK" && head -1 "$f" >&2
    f=$WORK/fan-max-$server-$n.txt
    "$T/statecast-swarm" --ws "ws://$HTTP_ADDR/ws" --post "http://$HTTP_ADDR/api/event" -c "$n" \
      --rate 0 --batch 10 --drivers 2 -d "$DUR" --warmup "$WARM" --label "$server" >"$f" 2>"$f.err" || true
    check "$f" "swarm throughput against $server ($n clients)" "$SWARM_OK" && head -1 "$f" >&2
    stop "$SERVER_PID"
  done
done

# ---------------------------------------------------------------------------------------------
echo "==> memory per idle websocket ($IDLE_CLIENTS clients)" >&2
for server in node statecast; do
  if [ $server = node ]; then start_node; else start_statecast; fi
  sleep "$SETTLE"
  before=$(rss_kib "$SERVER_PID")
  log=$WORK/idle-$server.err
  "$T/statecast-swarm" --ws "ws://$HTTP_ADDR/ws" -c "$IDLE_CLIENTS" --idle --duration 600 \
    --label "$server" >"$WORK/idle-$server.txt" 2>"$log" &
  S=$!
  wait_for "$log" 'swarm connected' >/dev/null || FAILED=1
  sleep 0.5
  connected=$(grep -oE 'clients=[0-9]+' "$log" | head -1 | sed 's/clients=//')
  sleep "$SETTLE" # let every session settle (statecast sends a snapshot and a stats tick)
  after=$(rss_kib "$SERVER_PID")
  stop "$S"
  echo "{\"server\":\"$server\",\"clients\":${connected:-0},\"rss_before_kib\":$before,\"rss_after_kib\":$after}" \
    >"$WORK/idle-$server.json"
  echo "$server: RSS $before KiB -> $after KiB with ${connected:-0} idle websockets" >&2
  stop "$SERVER_PID"
done

# ---------------------------------------------------------------------------------------------
echo "==> soak: statecast RSS over ${SOAK}s of steady load" >&2
start_statecast
"$T/statecast-swarm" --ws "ws://$HTTP_ADDR/ws" --post "http://$HTTP_ADDR/api/event" -c 100 \
  --rate 1000 --batch 10 --warmup 0 -d "$SOAK" --label soak >"$WORK/soak.txt" 2>"$WORK/soak.err" &
S=$!
wait_for "$WORK/soak.err" 'swarm connected' >/dev/null || FAILED=1
"$T/statecast-load" --addr "$TCP_ADDR" -c 1 -b 100 -k 8 --change-ratio 0 --warmup 0 -d "$SOAK" \
  --label soak >"$WORK/soak-load.txt" 2>&1 &
L=$!
sleep "$(awk -v s="$SOAK" 'BEGIN{print (s > 10) ? 5 : 1}')"
soak_start=$(rss_kib "$SERVER_PID")
soak_samples="$soak_start"
# RSS every tenth of the run (at least every 5 s), to tell a plateau from steady growth.
SOAK_STEP=$(awk -v s="$SOAK" 'BEGIN{ t = s / 10; if (t < 5) t = 5; print int(t) }')
soak_elapsed=5
while kill -0 "$L" 2>/dev/null; do
  sleep 1; soak_elapsed=$((soak_elapsed + 1))
  if [ $((soak_elapsed % SOAK_STEP)) = 0 ] && kill -0 "$L" 2>/dev/null; then
    soak_samples="$soak_samples $(rss_kib "$SERVER_PID")"
  fi
done
wait "$L" || true
wait "$S" || true
soak_end=$(rss_kib "$SERVER_PID")
soak_samples="$soak_samples $soak_end"
# Growth over the second half of the run: a leak keeps growing, a warming cache levels off.
soak_mid=$(echo "$soak_samples" | awk '{ print $(int((NF + 1) / 2)) }')
check "$WORK/soak.txt" "soak swarm" "$SWARM_OK" || true
check "$WORK/soak-load.txt" "soak load" "$LOAD_OK" || true
stop "$SERVER_PID"
echo "soak: RSS samples (KiB) $soak_samples" >&2

# ---------------------------------------------------------------------------------------------
echo "==> writing $OUT" >&2
{
  echo "# Benchmarks"
  echo
  if [ $SMOKE = 1 ]; then echo "**Smoke configuration: proves the tools run; the numbers mean nothing.**"; echo; fi
  echo "Produced by \`bench/run.sh${1:+ $1}\` on $(date -u '+%Y-%m-%d %H:%M UTC'), statecast at commit \`$COMMIT\`."
  echo "Machine: \`nproc\` = $(nproc), memory $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
  echo "Servers, load generator and websocket clients share these cores; every ratio compares two"
  echo "servers measured one after the other in this same run with the same tool and settings."
  echo
  echo "## Tools"
  echo
  echo "- \`statecast-load\` (bench/tools/src/bin/statecast-load.rs): N TCP connections speaking Riemann protobuf, M events"
  echo "  per Msg, K Msgs in flight per connection (a writer keeps K outstanding, a reader matches replies"
  echo "  FIFO), \`--change-ratio\` of events flipping ok/critical; acknowledged events/s, msgs/s, reply latency."
  echo "- \`statecast-bench-peer --mode framing-only|decode-only\` (bench/tools/src/bin/statecast-bench-peer.rs): the"
  echo "  ingest limits; one task per connection, replies for everything read in one read written in one write."
  echo "- \`statecast-swarm\` (bench/tools/src/bin/statecast-swarm.rs): C websocket clients plus a driver posting"
  echo "  changes with \`sent_us\`; deliveries/s, event→client latency, clients behind; \`--idle\` for memory."
  echo "- \`bench/peers/node-ws-hub\`: the Node.js (npm \`ws\`) hub a user would write by hand."
  echo "- Each tool prints a summary line and a JSON line; \`--help\` lists every option."
  echo
  echo "## Ingest (Riemann protobuf over TCP)"
  echo
  echo "\`statecast-load\`: $IN_FLIGHT messages in flight per connection, $CHANGE_RATIO of events change state, ${DUR}s measured after ${WARM}s warm-up."
  echo "statecast broadcasts the resulting changes to $WATCHERS websocket clients during its runs."
  echo "The baselines are \`statecast-bench-peer --mode framing-only\` (replies ok per frame, no decoding) and"
  echo "\`--mode decode-only\` (decodes every Msg into statecast's Event, drops it)."
  echo
  echo "| conns | events/Msg | framing-only ev/s | decode-only ev/s | statecast ev/s | statecast msgs/s | ÷ framing-only | ÷ decode-only (target ≥ 0.50) | statecast reply p50 / p99 / max ms | decode-only p99 ms | watchers: deliveries/s, behind |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for c in $CONNS; do
    for b in $BATCHES; do
      fo=$WORK/ingest-framing-only-c$c-b$b.txt; de=$WORK/ingest-decode-only-c$c-b$b.txt; sc=$WORK/ingest-statecast-c$c-b$b.txt
      w=$WORK/watch-c$c-b$b.txt
      json "$fo" >/dev/null 2>&1 && json "$de" >/dev/null 2>&1 && json "$sc" >/dev/null 2>&1 || { echo "| $c | $b | (failed) |||||||||"; continue; }
      F=$(get "$fo" .events_per_s); D=$(get "$de" .events_per_s); S=$(get "$sc" .events_per_s)
      wd="n/a"; json "$w" >/dev/null 2>&1 && wd="$(human "$(get "$w" .deliveries_per_s)"), $(get "$w" '.resynced_clients + .closed_clients')"
      echo "| $c | $b | $(human "$F") | $(human "$D") | $(human "$S") | $(human "$(get "$sc" .msgs_per_s)") | $(ratio "$S" "$F") | **$(ratio "$S" "$D")** | $(msf "$(get "$sc" .latency_us.p50)") / $(msf "$(get "$sc" .latency_us.p99)") / $(msf "$(get "$sc" .latency_us.max)") | $(msf "$(get "$de" .latency_us.p99)") | $wd |"
    done
  done
  echo
  echo "## Durability: persistence on vs off"
  echo
  echo "statecast with \`--data-dir\` on this machine's disk (each group of changes written to the change log"
  echo "with one \`O_DSYNC\` write before the \`ok\` of the messages that caused them; redb checkpointed each"
  echo "second), with \`--data-dir\` on tmpfs (the same code, but the log write costs no device round trip:"
  echo "what the software costs) and with \`--data-dir off\` (memory only). Same load: 8 connections,"
  echo "$IN_FLIGHT in flight, no watchers. \"÷ decode-only\" uses the decode-only run of the ingest table above"
  echo "(8 connections, same batch)."
  echo
  echo "| events/Msg | changing fraction | off ev/s | tmpfs ev/s | disk ev/s | disk ÷ off | tmpfs ÷ off | ÷ decode-only: off / tmpfs / disk | disk reply p50 / p99 ms | off reply p50 / p99 ms |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for point in $DURABLE_POINTS; do
    b=${point%%:*}; r=${point##*:}
    off=$WORK/durable-off-b$b-r$r.txt; on=$WORK/durable-on-b$b-r$r.txt; tm=$WORK/durable-tmpfs-b$b-r$r.txt
    de=$WORK/ingest-decode-only-c8-b$b.txt
    json "$off" >/dev/null 2>&1 && json "$on" >/dev/null 2>&1 || { echo "| $b | $r | (failed) ||||||||"; continue; }
    O=$(get "$off" .events_per_s); N=$(get "$on" .events_per_s); M=0; D=0
    json "$tm" >/dev/null 2>&1 && M=$(get "$tm" .events_per_s)
    json "$de" >/dev/null 2>&1 && D=$(get "$de" .events_per_s)
    echo "| $b | $r | $(human "$O") | $(human "$M") | $(human "$N") | **$(ratio "$N" "$O")** | $(ratio "$M" "$O") | $(ratio "$O" "$D") / $(ratio "$M" "$D") / $(ratio "$N" "$D") | $(msf "$(get "$on" .latency_us.p50)") / $(msf "$(get "$on" .latency_us.p99)") | $(msf "$(get "$off" .latency_us.p50)") / $(msf "$(get "$off" .latency_us.p99)") |"
  done
  echo
  echo "## Fan-out (POST /api/event → every websocket client)"
  echo
  echo "\`statecast-swarm\`: every event is a state change carrying \`sent_us\`; latency is event sent → change"
  echo "received by the client (one clock). *Fixed rate*: 100 events/s, 1 per POST. *Max*: 2 driver"
  echo "connections posting 10 events per POST back to back. The peer is \`bench/peers/node-ws-hub\` (npm \`ws\`,"
  echo "skips a client over 1 MiB \`bufferedAmount\`). \"behind\" = clients resynchronised (second snapshot) or closed."
  echo
  echo "| clients | node p50 / p99 ms @100/s | statecast p50 / p99 ms @100/s (target p99 < 50 at 1,000) | node max deliveries/s | statecast max deliveries/s | statecast ÷ node (target ≥ 3 at 1,000) | delivered of posted×clients node / statecast | behind node / statecast | p99 ms at max node / statecast |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for n in $FAN_CLIENTS; do
    nl=$WORK/fan-lat-node-$n.txt; sl=$WORK/fan-lat-statecast-$n.txt; nm=$WORK/fan-max-node-$n.txt; sm=$WORK/fan-max-statecast-$n.txt
      json "$nl" >/dev/null 2>&1 && json "$sl" >/dev/null 2>&1 && json "$nm" >/dev/null 2>&1 && json "$sm" >/dev/null 2>&1 || { echo "| $n | (failed) ||||||||"; continue; }
    ND=$(get "$nm" .deliveries_per_s); SD=$(get "$sm" .deliveries_per_s)
    echo "| $n | $(msf "$(get "$nl" .latency_us.p50)") / $(msf "$(get "$nl" .latency_us.p99)") | $(msf "$(get "$sl" .latency_us.p50)") / $(msf "$(get "$sl" .latency_us.p99)") | $(human "$ND") | $(human "$SD") | **$(ratio "$SD" "$ND")** | $(awk -v a="$(get "$nm" .delivery_fraction)" -v b="$(get "$sm" .delivery_fraction)" 'BEGIN{printf "%.0f%% / %.0f%%", a*100, b*100}') | $(get "$nm" '.resynced_clients + .closed_clients') / $(get "$sm" '.resynced_clients + .closed_clients') | $(msf "$(get "$nm" .latency_us.p99)") / $(msf "$(get "$sm" .latency_us.p99)") |"
  done
  echo
  echo "## Memory per idle websocket"
  echo
  echo "| server | idle clients | RSS before | RSS after | per connection (target < 16 KiB for statecast) |"
  echo "|---|---|---|---|---|"
  for server in node statecast; do
    j=$WORK/idle-$server.json
    [ -f "$j" ] || { echo "| $server | (failed) ||||"; continue; }
    c=$(jq .clients "$j"); b=$(jq .rss_before_kib "$j"); a=$(jq .rss_after_kib "$j")
    echo "| $server | $c | $b KiB | $a KiB | $(awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN{ if (c>0) printf "%.1f KiB", (a-b)/c; else print "n/a"}') |"
  done
  echo
  echo "## Soak"
  echo
  echo "statecast for ${SOAK}s with 100 websocket clients receiving 1,000 changes/s (POSTs of 10) and one"
  echo "Riemann connection sending 100-event messages (8 in flight, no changes) as fast as answered:"
  echo "RSS $soak_start KiB after warm-up → $soak_mid KiB at half time → $soak_end KiB at the end"
  echo "(second half: $(awk -v a="$soak_end" -v b="$soak_mid" 'BEGIN{ printf "%+.1f%%", (a - b) * 100 / b }'))."
  echo "RSS samples every ${SOAK_STEP}s (KiB): $soak_samples"
  json "$WORK/soak.txt" >/dev/null 2>&1 && echo "Swarm during soak: $(head -1 "$WORK/soak.txt")"
  json "$WORK/soak-load.txt" >/dev/null 2>&1 && echo "Load during soak: $(head -1 "$WORK/soak-load.txt")"
  echo
  # Hand-written notes (from the marker line to "## Raw results") survive regeneration.
  if [ -f "$OUT" ] && grep -q '^<!-- notes' "$OUT"; then
    sed -n '/^<!-- notes/,/^## Raw results/p' "$OUT" | sed '$d'
  fi
  echo "## Raw results"
  echo
  echo '```'
  for f in "$WORK"/ingest-*.txt "$WORK"/durable-*.txt "$WORK"/watch-*.txt "$WORK"/fan-*.txt "$WORK"/idle-*.json "$WORK"/soak*.txt; do
    [ -f "$f" ] && grep -m1 '^{' "$f" 2>/dev/null | sed "s|^|$(basename "$f"): |" || true
  done
  echo '```'
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "==> wrote $OUT" >&2
# Cluster mode (issue 14): its own script, which writes its section into the same file.
CLUSTER_ARGS=(); [ $SMOKE = 1 ] && CLUSTER_ARGS=(--smoke "$OUT")
BENCH_NO_BUILD=1 BENCH_BIN_DIR=$T BENCH_COMMIT="$COMMIT" bash bench/cluster.sh "${CLUSTER_ARGS[@]}" || FAILED=1
# Trends (issue 23): live metrics frames to many dashboards (its own section), and series on ÷ off
# (printed; the figures in BENCHMARKS.md come from its full run).
BENCH_NO_BUILD=1 BENCH_BIN_DIR=$T BENCH_COMMIT="$COMMIT" bash bench/trends.sh "${CLUSTER_ARGS[@]}" || FAILED=1
if [ $SMOKE = 1 ]; then BENCH_BIN_DIR=$T bash bench/series.sh 1 1 >/dev/null || FAILED=1; fi
rm -rf "$WORK"
if [ $FAILED = 1 ]; then
  echo "bench/run.sh: some measurements failed (see above)" >&2
  exit 1
fi
