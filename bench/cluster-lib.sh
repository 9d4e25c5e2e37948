# Shell helpers of the cluster benchmarks (bench/cluster.sh, bench/cluster-ab.sh); sourced after
# bench/lib.sh. The caller sets WORK, T and NATS_SERVER, and STREAM before start_cluster.

# start_nats: a fresh nats-server with JetStream on a loopback port of its own and its own store;
# sets NATS_PID, NATS_URL, NATS_DIR.
start_nats() {
  NATS_DIR=$WORK/nats.$RANDOM
  mkdir -p "$NATS_DIR"
  cat >"$NATS_DIR/nats.conf" <<EOF
listen: "127.0.0.1:-1"
ports_file_dir: "$NATS_DIR"
jetstream { store_dir: "$NATS_DIR/store", max_memory_store: 64MB, max_file_store: 8GB }
EOF
  "$NATS_SERVER" -c "$NATS_DIR/nats.conf" 2>"$NATS_DIR/log" &
  NATS_PID=$!
  wait_for "$NATS_DIR/log" 'Server is ready' >/dev/null
  NATS_URL=$(jq -r '.nats[0]' "$NATS_DIR/nats-server_$NATS_PID.ports")
}
stop_nats() { stop "$NATS_PID"; rm -rf "$NATS_DIR"; }

# readyz HTTP_ADDR: 0 when GET /readyz answers 200 (bash's /dev/tcp: no curl needed).
readyz() {
  local host=${1%:*} port=${1##*:}
  (
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    printf 'GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
    read -r _ status _ <&3 && [ "$status" = 200 ]
  ) 2>/dev/null
}

# metric HTTP_ADDR NAME: the value of one line of the node's /metrics (0 when it has none).
metric() {
  local host=${1%:*} port=${1##*:}
  (
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
    cat <&3
  ) 2>/dev/null | awk -v n="$2" '$1 == n { v = $2 } END { print v + 0 }'
}

# start_cluster_node ID: a statecast node of stream $STREAM on $NATS_URL (persistence on, like the
# single node it is compared with); waits for its /readyz. Sets SERVER_PID, TCP_ADDR, HTTP_ADDR.
start_cluster_node() {
  local i
  start_statecast --cluster "$NATS_URL" --cluster-stream "$STREAM" --cluster-node-id "$1"
  for i in $(seq 1 200); do
    readyz "$HTTP_ADDR" && return 0
    sleep 0.1
  done
  echo "bench/cluster.sh: node $1 not ready within 20 s" >&2
  return 1
}

# start_cluster N: nats-server and N nodes on stream $STREAM; sets PIDS, TCPS, HTTPS (arrays).
start_cluster() {
  local n=$1 i
  start_nats
  PIDS=(); TCPS=(); HTTPS=()
  for i in $(seq 1 "$n"); do
    start_cluster_node "node$i"
    PIDS+=("$SERVER_PID"); TCPS+=("$TCP_ADDR"); HTTPS+=("$HTTP_ADDR")
  done
}
stop_cluster() { # kill -9: nothing measured needs a clean stop, and the stream goes with nats-server
  local pid
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  stop_nats
}
# cpu PID: CPU seconds (user + system) the process used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
