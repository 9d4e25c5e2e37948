#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints what each did.
#
#   fuzz/run.sh            each target 60 s
#   fuzz/run.sh 300 query  one target, 300 s
#
# Needs the nightly toolchain (rustup) and cargo-fuzz (installed here when missing). Corpora
# grow under fuzz/corpus/<target> and crashes land in fuzz/artifacts/<target> (both ignored by
# git); a crash makes this script fail and prints the reproducer's path. The same invariants run
# in the normal suite as proptests (tests/it/inputs.rs).
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(frame json query wal engine cluster)

rustup toolchain list | grep -q '^nightly' || { echo "fuzz/run.sh: needs 'rustup toolchain install nightly'" >&2; exit 2; }
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# Build first, so a compile error is reported as one and not as a finding.
cargo +nightly fuzz build || { echo "fuzz/run.sh: the fuzz targets do not build" >&2; exit 2; }

status=0
for target in "${TARGETS[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="artifacts/$target/last-run.log"
  echo "==> $target for ${SECS}s"
  # -timeout: one input taking over 10 s is a finding (an unbounded regex compile was 24 s);
  # -rss_limit_mb: so is memory past 2 GiB.
  if cargo +nightly fuzz run "$target" "corpus/$target" -- \
      -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
    :
  else
    status=1
    echo "    FOUND something: see $log and artifacts/$target/"
  fi
  grep -E '^(#[0-9]+\s+DONE|Done [0-9]+ runs)' "$log" | tail -2 | sed 's/^/    /' || true
  echo "    corpus: $(find "corpus/$target" -type f | wc -l) inputs"
done
exit $status
