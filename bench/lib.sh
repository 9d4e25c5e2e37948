# Shell helpers shared by the benchmark scripts (bench/run.sh, bench/cluster.sh); sourced.
# The caller sets WORK (its scratch directory) and T (the release binaries).

# wait_for FILE REGEX: waits up to 20 s for a line matching REGEX, prints its addr=… value.
wait_for() {
  local file=$1 regex=$2 i
  for i in $(seq 1 200); do
    if grep -qE "$regex" "$file" 2>/dev/null; then
      { grep -E "$regex" "$file" | head -1 | grep -oE 'addr=[0-9.:]+' | head -1 | sed 's/addr=//'; } || true
      return 0
    fi
    sleep 0.1
  done
  echo "bench/${0##*/}: timed out waiting for /$regex/ in $file:" >&2
  cat "$file" >&2
  return 1
}

# wait_ready FILE PID: waits up to 20 s for statecast's ready file (its ready line, written once
# every listener is bound), prints it; fails early if the server exited.
wait_ready() {
  local file=$1 pid=$2 i
  for i in $(seq 1 200); do
    if [ -s "$file" ]; then cat "$file"; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench/${0##*/}: statecast did not write its ready file $file:" >&2
  cat "$file.log" >&2 2>/dev/null
  return 1
}

stop() { # stop PID: end a server we started, wait for it
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Servers. Each sets SERVER_PID and the addresses it listens on.
start_statecast() { # [extra flags]: default is persistence on, in a fresh data directory; the
  # binary is $STATECAST_BIN when set (bench/cluster-ab.sh), else $T/statecast
  local ready=$WORK/ready.$RANDOM.json line
  local data=(--data-dir "$WORK/data.$RANDOM")
  [ "${1:-}" = "--data-dir" ] && data=()
  RUST_LOG=warn,statecast::server=info "${STATECAST_BIN:-$T/statecast}" --tcp 127.0.0.1:0 --udp off --http 127.0.0.1:0 \
    --ready-file "$ready" "${data[@]}" "$@" >/dev/null 2>"$ready.log" &
  SERVER_PID=$!
  line=$(wait_ready "$ready" $SERVER_PID)
  TCP_ADDR=$(jq -r .tcp <<<"$line")
  HTTP_ADDR=$(jq -r .http <<<"$line")
}

# json FILE: the JSON line a tool printed.
json() { grep -m1 '^{' "$1"; }
get() { json "$1" | jq -r "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
human() { awk -v x="$1" 'BEGIN { if (x >= 1e6) printf "%.2fM", x/1e6; else if (x >= 1e3) printf "%.1fk", x/1e3; else printf "%.0f", x }'; }
msf() { awk -v x="$1" 'BEGIN { printf "%.1f", x/1000 }'; }

FAILED=0
check() { # check FILE WHAT [JQ]: the tool printed its JSON line (and JQ holds on it)
  if ! json "$1" >/dev/null 2>&1; then
    echo "bench/${0##*/}: $2 produced no result:" >&2; cat "$1" "$1.err" >&2 2>/dev/null; FAILED=1; return 1
  fi
  if [ -n "${3:-}" ] && [ "$(json "$1" | jq "$3")" != true ]; then
    echo "bench/${0##*/}: $2 failed the check $3:" >&2; cat "$1" >&2; FAILED=1; return 1
  fi
}
LOAD_OK='(.errors | length) == 0 and .acked_events > 0'
SWARM_OK='.deliveries > 0 and .post_errors == 0 and .errored_clients == 0' 

# put_section NAME SECTION_FILE OUT: puts a generated section (between "<!-- NAME:begin" and
# "<!-- NAME:end" lines) into OUT: in place of the old one, else before "## Raw results", else at
# the end. bench/cluster.sh and bench/trends.sh write their sections of BENCHMARKS.md with it.
put_section() {
  local name=$1 section=$2 out=$3
  mkdir -p "$(dirname "$out")"
  touch "$out"
  if grep -q "^<!-- $name:begin" "$out"; then
    awk -v file="$section" -v name="$name" '
      $0 ~ "^<!-- " name ":begin" { while ((getline line < file) > 0) print line; skip = 1; next }
      $0 ~ "^<!-- " name ":end" { skip = 0; next }
      !skip { print }' "$out" >"$out.tmp"
  elif grep -q '^## Raw results' "$out"; then
    awk -v file="$section" '
      /^## Raw results/ && !done { while ((getline line < file) > 0) print line; print ""; done = 1 }
      { print }' "$out" >"$out.tmp"
  else
    { cat "$out"; echo; cat "$section"; } >"$out.tmp"
  fi
  mv "$out.tmp" "$out"
}
