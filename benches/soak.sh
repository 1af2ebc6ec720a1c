#!/usr/bin/env bash
# Soak run (README "Soak run", issue #10); not run in CI.
#
# An `http_server` source with acknowledgements -> a map -> an `http` sink
# (retry: 10 attempts, 50ms-1s backoff, request_timeout 2s) posting to a
# flaky Python service (0-50 ms per request, 10% answered 503, 0.5% hung
# past the sink's request_timeout), driven by concurrent clients with good,
# huge, malformed and deeply nested bodies. At the end the daemon gets
# SIGTERM and the script checks that every event answered 200 reached the
# service at least once, and that RSS stayed flat.
#
#   cargo build --release && benches/soak.sh       # 10 minutes
#   DURATION=60 benches/soak.sh                     # a short run
#
# Environment: DURATION (seconds, 600), CLIENTS (16), SEED (the time),
# FAIL_RATE (0.10), HANG_RATE (0.005), SAMPLE_EVERY (RSS, seconds, 10),
# FLOWGATE (target/release/flowgate), KEEP=1 keeps the work directory
# (it is kept anyway when the run fails). Needs python3.
# Exit status: 0 when nothing was missing and RSS was flat, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FLOWGATE:-target/release/flowgate}
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set FLOWGATE=path/to/flowgate)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/flowgate-soak.XXXXXX")
status=1
driver=""
cleanup() {
  # The driver stops its children when it ends, also on SIGTERM.
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    wait "$driver" 2>/dev/null || true
  fi
  # What is left when it could not (killed, crashed): only pids it
  # recorded whose command line names this work directory.
  if [ -f "$work/pids" ]; then
    while read -r p; do
      if [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF "$work"; then
        kill -TERM "$p" 2>/dev/null || true
        sleep 1
        kill -KILL "$p" 2>/dev/null || true
      fi
    done <"$work/pids"
  fi
  if [ "$status" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$work"
  else
    echo "soak: work directory kept: $work (flowgate.log, requests.ndjson, service.ids, summary.json)" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# In the background so that a signal to this script runs the traps at once.
python3 benches/soak.py run --work "$work" --bin "$BIN" &
driver=$!
wait "$driver" && status=0 || status=$?
driver=""
exit "$status"
