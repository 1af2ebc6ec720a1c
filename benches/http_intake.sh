#!/usr/bin/env bash
# Intake of the http_server source (README "Performance"): the release
# binary runs http_server -> blackhole, with `acknowledgements` off and
# then on; wrk (Debian: apt install wrk) drives it with CLIENTS keep-alive
# connections for DURATION seconds each, every request a 100-event NDJSON body
# (~9 KiB). Prints requests/s answered 200, events/s (from the daemon's
# own flowgate_events_in_total), p50/p99 latency, and what was refused.
#
#   cargo build --release && benches/http_intake.sh
#   CLIENTS=16 DURATION=20 benches/http_intake.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FLOWGATE:-target/release/flowgate}
CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set FLOWGATE=path/to/flowgate)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk not found: apt install wrk" >&2; exit 2; }

work=$(mktemp -d)
daemon=""
cleanup() {
  [ -z "$daemon" ] || { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
events_in() {
  curl -s "http://127.0.0.1:$1/metrics" |
    awk '/^flowgate_events_in_total\{/ && /component="intake"/ { v = $2 } END { print v + 0 }'
}

python3 - "$work/body.ndjson" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(100):
        f.write('{"i":%d,"host":"web-%02d","level":"%s","status":%d,"msg":"GET /api/orders served","latency_ms":%d}\n'
                % (i, i % 16, ("info", "warn", "error")[i % 3], (200, 404, 500)[i % 3], i * 7 % 500))
PY
echo "$CLIENTS clients, ${DURATION}s per run, 100 events ($(stat -c %s "$work/body.ndjson") bytes) per request, wrk $THREADS threads"
for acks in false true; do
  port=$(free_port)
  metrics=$(free_port)
  cat >"$work/intake.yaml" <<YAML
name: intake
sources:
  intake:
    type: http_server
    address: 127.0.0.1:$port
    acknowledgements: $acks
sinks:
  sink:
    type: blackhole
    inputs: [intake]
YAML
  "$BIN" run "$work/intake.yaml" --metrics-address "127.0.0.1:$metrics" --data-dir "$work/state" 2>"$work/daemon.log" &
  daemon=$!
  wait_port "$port"
  wait_port "$metrics"
  before=$(events_in "$metrics")
  result=$(BODY="$work/body.ndjson" wrk -t "$THREADS" -c "$CLIENTS" -d "${DURATION}s" --latency \
    -s benches/http_intake.lua "http://127.0.0.1:$port/" | grep '^RESULT')
  after=$(events_in "$metrics")
  kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
  python3 - "$acks" "$((after - before))" "$result" <<'PY'
import sys
acks, events, fields = sys.argv[1], int(sys.argv[2]), dict(kv.split("=") for kv in sys.argv[3].split()[1:])
s, ok = float(fields["seconds"]), int(fields["requests"]) - int(fields["non2xx"])
print(f"acknowledgements {acks:<5}  {ok / s:>8.0f} requests/s (200)  {events / s:>9.0f} events/s  "
      f"p50 {float(fields['p50_ms']):.2f} ms  p99 {float(fields['p99_ms']):.2f} ms  "
      f"refused {fields['non2xx']}  socket errors {fields['socket_errors']}")
PY
done
