#!/usr/bin/env bash
# Same-run A/B of two statecast binaries under the same load tools and settings, alternating
# rounds (old, new, old, new, ...): TCP ingest (statecast-load, 8 connections, 1 and 10 events
# per Msg, 64 in flight) and websocket fan-out (statecast-swarm, 500 clients, as fast as posts are
# answered). Prints each tool's JSON line; compare the two binaries round by round (ratios), as
# this machine's run-to-run spread is large.
#
#   cargo build --release --workspace --bins    # the tools, and the "new" binary
#   bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]  # ROUNDS defaults to 2
set -u
OLD=$1 NEW=$2 ROUNDS=${3:-2}
T=$(cd "$(dirname "$0")/.." && pwd)/target/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/statecast-ab.XXXXXX")
for round in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$OLD; [ $which = new ] && bin=$NEW
    ready=$WORK/ready.$which.$round
    "$bin" --tcp 127.0.0.1:0 --udp off --http 127.0.0.1:0 --data-dir off >"$ready" 2>"$WORK/log.$which.$round" &
    pid=$!
    for _ in $(seq 100); do [ -s "$ready" ] && break; sleep 0.1; done
    tcp=$(jq -r .tcp "$ready"); http=$(jq -r .http "$ready")
    for b in 1 10; do
      "$T/statecast-load" --addr "$tcp" -c 8 -b $b -k 64 --change-ratio 0.01 -d 4 --warmup 1 \
        --label "load-b$b-$which-$round" 2>&1 | tail -1
    done
    "$T/statecast-swarm" --ws "ws://$http/ws" --post "http://$http/api/event" -c 500 \
      --rate 0 --batch 10 --drivers 2 -d 4 --warmup 1 --label "swarm-$which-$round" 2>/dev/null | tail -1
    kill "$pid"; wait "$pid" 2>/dev/null
  done
done
