#!/usr/bin/env bash
# The server side of the storm (issue 24): C connected dashboards on this machine, 10 changes/s
# delivered to every one of them, statecast beside the Node `ws` hub (bench/peers/node-ws-hub) at
# the same count in the same run. Per server and count: deliveries/s (and the fraction of
# posted × clients), p50/p99 event→client latency, RSS per connection, clients behind, and the
# load average at that moment (the machine is shared).
#
#   bench/storm/server.sh                 counts from STORM_CLIENTS (default "1000 10000 19000")
#   STORM_CLIENTS=100000 bench/storm/server.sh
#
# Clients connect from several loopback source addresses (127.0.0.1 … 127.0.0.STORM_SOURCES) so
# ephemeral ports do not run out (one source has ~28,000 towards one server port). The script
# raises the open-file limit as far as the hard limit allows and says so when a count cannot fit
# (each websocket is one descriptor in the server and one in the swarm); statecast gets
# --max-ws-connections and --max-http-connections above the count.
# Knobs: STORM_RATE (changes/s, default 10), STORM_SECONDS (measured, default 20), STORM_SOURCES
# (default 8), STORM_DRIVERS (POST connections, default 10). Prints a markdown table on stdout; raw JSON lines go to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CLIENTS=${STORM_CLIENTS:-"1000 10000 19000"}
RATE=${STORM_RATE:-10}
SECS=${STORM_SECONDS:-20}
SOURCES=${STORM_SOURCES:-8}
# Changes are posted over this many connections, each at RATE/DRIVERS: one connection waiting
# for each answer would post fewer than RATE while a server is busy fanning out.
DRIVERS=${STORM_DRIVERS:-10}

[ "${STORM_NO_BUILD:-0}" = 1 ] || cargo build --release --workspace --bins --quiet
T=$ROOT/target/release
PEER_DIR=$ROOT/bench/peers/node-ws-hub
[ -d "$PEER_DIR/node_modules" ] || (cd "$PEER_DIR" && npm ci --no-audit --no-fund --silent)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-storm.XXXXXX")
cleanup() {
  local pid
  for pid in $(jobs -pr); do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
source "$ROOT/bench/lib.sh"

# As many descriptors as we may have: the hard limit bounds a process without CAP_SYS_RESOURCE.
want=1048576
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)
echo "==> open-file limit $FDS (hard $(ulimit -Hn))" >&2

src_list=$(seq -s, -f '127.0.0.%g' 1 "$SOURCES")

start_node() {
  local log=$WORK/node.$RANDOM.log
  (cd "$PEER_DIR" && exec node server.js) 2>"$log" &
  SERVER_PID=$!
  HTTP_ADDR=$(wait_for "$log" 'node-ws-hub http listening')
}

rows=()
for c in $CLIENTS; do
  if [ $((c + 200)) -gt "$FDS" ]; then
    echo "==> $c clients need $((c + 200)) descriptors per process; the limit is $FDS: skipped" >&2
    rows+=("| $c | skipped: needs $((c + 200)) open files per process, the hard limit here is $FDS | | | | | |")
    continue
  fi
  for server in node statecast; do
    if [ $server = node ]; then
      start_node
    else
      start_statecast --data-dir off --max-ws-connections $((c + 100)) --max-http-connections $((c + 1100))
    fi
    sleep 1
    before=$(rss_kib "$SERVER_PID")
    log=$WORK/swarm-$server-$c.err
    out=$WORK/swarm-$server-$c.txt
    "$T/statecast-swarm" --ws "ws://$HTTP_ADDR/ws" --post "http://$HTTP_ADDR/api/event" \
      -c "$c" --rate "$RATE" --batch 1 --drivers "$DRIVERS" --duration "$SECS" --warmup 3 --source "$src_list" \
      --connect-concurrency 512 --connect-timeout 300 --label "$server" >"$out" 2>"$log" &
    S=$!
    # RSS while every client is connected and receiving: the largest of samples over the run.
    peak=$before
    while kill -0 "$S" 2>/dev/null; do
      if grep -q 'swarm connected' "$log" 2>/dev/null; then
        r=$(rss_kib "$SERVER_PID" 2>/dev/null || echo 0)
        [ "${r:-0}" -gt "$peak" ] && peak=$r
      fi
      sleep 1
    done
    wait "$S" || true
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    stop "$SERVER_PID"
    if ! json "$out" >/dev/null 2>&1; then
      echo "==> $server at $c: no result: $(tail -3 "$log")" >&2
      rows+=("| $c | $server: failed ($(tail -1 "$log" | cut -c1-120)) | | | | | $load |")
      continue
    fi
    json "$out" | jq -c --arg load "$load" --argjson before "$before" --argjson peak "$peak" \
      '. + {loadavg: $load, rss_before_kib: $before, rss_peak_kib: $peak}' >&2
    dps=$(get "$out" .deliveries_per_s)
    frac=$(get "$out" '.delivery_fraction * 100 | floor')
    p50=$(get "$out" .latency_us.p50)
    p99=$(get "$out" .latency_us.p99)
    behind=$(get "$out" '.resynced_clients + .closed_clients + .errored_clients')
    per=$(awk -v a="$peak" -v b="$before" -v n="$c" 'BEGIN { printf "%.1f", (a - b) / n }')
    rows+=("| $c | $server | $(human "$dps") ($frac%) | $(msf "$p50") / $(msf "$p99") | $per KiB ($before → $peak KiB) | $behind | $load |")
    echo "==> $server at $c clients: $(head -1 "$out") | RSS $before → $peak KiB | load $load" >&2
  done
done

echo "| clients | server | deliveries/s (of posted × clients) | latency p50 / p99 ms | RSS per connection (before → peak) | behind | load average 1/5/15 min |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
