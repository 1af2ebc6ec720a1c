#!/usr/bin/env bash
# NATS JetStream throughput, the three figures of README "Performance"
# (scale-out), for each packing in EVENTS_PER_MESSAGE (events per JetStream
# message, the ingest sink's `events_per_message`; default "1 100": before
# and after), RUNS times in turn (default 1), each against a fresh
# nats-server:
#   1. the publisher alone: pipelines/scaleout/ingest.yaml (a followed file
#      -> nats sink), timed until the file source has every event
#      acknowledged (that is, JetStream acknowledged every message);
#   2. one consumer alone: pipelines/scaleout/worker.yaml (nats -> map ->
#      file) on the stream step 1 filled, timed until its sink wrote every
#      event;
#   3. the demo: deploy/scaleout-demo.sh with KILL=0 (its own server, the
#      publisher and three workers at once).
# Release build. Usage: benches/nats_throughput.sh [EVENTS] (default 1000000)
#   RUNS=3 EVENTS_PER_MESSAGE="1 100" benches/nats_throughput.sh 300000
# Needs nats-server (Debian: apt install nats-server), python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FLOWGATE:-target/release/flowgate}
EVENTS=${1:-${EVENTS:-1000000}}
PACKINGS=${EVENTS_PER_MESSAGE:-1 100}
RUNS=${RUNS:-1}
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set FLOWGATE=path/to/flowgate)" >&2; exit 2; }
command -v nats-server >/dev/null || { echo "nats-server not found: apt install nats-server" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { date +%s.%N; }
rate() { python3 -c "import sys; n, t = int(sys.argv[1]), float(sys.argv[2]) - float(sys.argv[3]); print(f'{t:.2f}s  {int(n / t):>7} events/s')" "$EVENTS" "$1" "$2"; }
# Events the publisher's file source has had acknowledged (0 at first).
acknowledged() {
  curl -s "http://127.0.0.1:$1/metrics" |
    awk '/^flowgate_acknowledged_events_total\{/ && /component="logs"/ && /outcome="delivered"/ { v = $2 } END { print v + 0 }'
}
# Events the worker's file sink wrote (its own count: re-reading the file
# each poll would take CPU from the run).
written() {
  curl -s "http://127.0.0.1:$1/metrics" |
    awk '/^flowgate_events_out_total\{/ && /component="out"/ { v = $2 } END { printf "%d", v + 0 }'
}
wait_for() { # DESCRIPTION COMMAND...: until COMMAND prints at least EVENTS, for 600 s at most
  local what=$1; shift
  local deadline=$(( $(date +%s) + 600 ))
  until [ "$("$@")" -ge "$EVENTS" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || {
      echo "FAILED: $what: $("$@") of $EVENTS; the logs' ends:" >&2
      tail -n 20 "$work"/*.log >&2
      exit 1
    }
    sleep 0.05
  done
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
# CPU seconds (user + system) a process has used so far: on a busy
# machine, CPU per event says more than events/s.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
per_event() { python3 -c "import sys; print(f'{(float(sys.argv[1]) - float(sys.argv[2])) * 1e6 / int(sys.argv[3]):.1f}')" "$1" "$2" "$EVENTS"; }

python3 - "$work/input.ndjson" "$EVENTS" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"i":%d,"level":"%s","msg":"request served","latency_ms":%d}\n' % (i, ("info", "warn", "error")[i % 3], i % 500))
PY
echo "$EVENTS events ($(($(stat -c %s "$work/input.ndjson") / EVENTS)) bytes each), $(nats-server --version), $RUNS run(s) of events_per_message $PACKINGS in turn"

# One round: a fresh server, the publisher alone, one consumer alone on
# what it published; then the demo.
round() {
  local per=$1
  nats_port=$(free_port)
  nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/js" >"$work/nats.log" 2>&1 &
  nats_pid=$!
  pids+=($nats_pid)
  wait_port "$nats_port"
  export NATS_URL="nats://127.0.0.1:$nats_port" ACK_WAIT=5s EVENTS_PER_MESSAGE=$per

  port=$(free_port)
  server_cpu=$(cpu "$nats_pid")
  start=$(now)
  INPUT="$work/input.ndjson" "$BIN" run pipelines/scaleout/ingest.yaml \
    --metrics-address "127.0.0.1:$port" --data-dir "$work/ingest" 2>"$work/ingest.log" &
  ingest=$!
  pids+=($ingest)
  wait_for "publisher" acknowledged "$port"
  end=$(now)
  echo "events_per_message $per  publisher alone (file -> nats):            $(rate "$end" "$start")  CPU per event: flowgate $(per_event "$(cpu "$ingest")" 0) us, nats-server $(per_event "$(cpu "$nats_pid")" "$server_cpu") us"
  stop "$ingest"

  port=$(free_port)
  server_cpu=$(cpu "$nats_pid")
  start=$(now)
  WORKER=1 OUTPUT="$work/out.ndjson" "$BIN" run pipelines/scaleout/worker.yaml \
    --metrics-address "127.0.0.1:$port" --data-dir "$work/worker" 2>"$work/worker.log" &
  worker=$!
  pids+=($worker)
  wait_for "consumer" written "$port"
  end=$(now)
  echo "events_per_message $per  one consumer alone (nats -> map -> file):  $(rate "$end" "$start")  CPU per event: flowgate $(per_event "$(cpu "$worker")" 0) us, nats-server $(per_event "$(cpu "$nats_pid")" "$server_cpu") us"
  stop "$worker"
  stop "$nats_pid"
  rm -rf "$work/js" "$work/ingest" "$work/worker" "$work/out.ndjson"

  printf 'events_per_message %s  the demo (file -> nats -> 3 workers):      ' "$per"
  EVENTS=$EVENTS KILL=0 FLOWGATE=$BIN EVENTS_PER_MESSAGE=$per deploy/scaleout-demo.sh | sed -n 's/^all [0-9]* events written in \([0-9.]*s\) (\([0-9]*\) events\/s.*/\1  \2 events\/s/p'
}

for _ in $(seq 1 "$RUNS"); do
  for per in $PACKINGS; do round "$per"; done
done
