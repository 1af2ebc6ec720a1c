#!/usr/bin/env bash
# Scale-out on one machine (README "Scaling out with NATS JetStream"):
# a JetStream server, three worker daemons sharing the durable consumer
# `workers`, and an ingest daemon following a file and publishing it.
# With KILL=1 (default) one worker is killed with `kill -9` half-way; the
# script then checks that the union of the outputs holds every event.
# The publisher packs EVENTS_PER_MESSAGE events (default 100) into each
# JetStream message; 1 is one message per event.
#
#   cargo build --release && deploy/scaleout-demo.sh
#   EVENTS=500000 KILL=0 deploy/scaleout-demo.sh      # throughput only
#   EVENTS_PER_MESSAGE=1 KILL=0 deploy/scaleout-demo.sh
#
# Needs nats-server (Debian: apt install nats-server) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FLOWGATE:-target/release/flowgate}
EVENTS=${EVENTS:-200000}
KILL=${KILL:-1}
export EVENTS_PER_MESSAGE=${EVENTS_PER_MESSAGE:-100}
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set FLOWGATE=path/to/flowgate)" >&2; exit 2; }
command -v nats-server >/dev/null || { echo "nats-server not found: apt install nats-server" >&2; exit 2; }

work=$(mktemp -d)
pids=()
nats_pid=""
cleanup() {
  # The daemons drain (and acknowledge) first, then the server stops.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$nats_pid" ] || { kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# Counts over the workers' outputs: `lines` written, `unique` events.
count() {
  python3 - "$1" "$work"/out*.ndjson <<'PY'
import json, sys
seen, lines = set(), 0
for name in sys.argv[2:]:
    try:
        with open(name) as f:
            for l in f:
                if l.endswith("\n"):
                    lines += 1
                    seen.add(json.loads(l)["i"])
    except FileNotFoundError:
        pass
print(lines if sys.argv[1] == "lines" else len(seen))
PY
}
count_lines() { cat "$work"/out*.ndjson 2>/dev/null | wc -l || true; }
count_unique() { count unique; }

nats_port=$(free_port)
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/js" >"$work/nats.log" 2>&1 &
nats_pid=$!
wait_port "$nats_port"
export NATS_URL="nats://127.0.0.1:$nats_port" ACK_WAIT=5s

python3 - "$work/input.ndjson" "$EVENTS" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"i":%d,"level":"%s","msg":"request served","latency_ms":%d}\n' % (i, ("info", "warn", "error")[i % 3], i % 500))
PY

declare -A worker_pid metrics_port
for n in 1 2 3; do
  metrics_port[$n]=$(free_port)
  WORKER=$n OUTPUT="$work/out$n.ndjson" "$BIN" run pipelines/scaleout/worker.yaml \
    --metrics-address "127.0.0.1:${metrics_port[$n]}" --data-dir "$work/state$n" 2>"$work/worker$n.log" &
  worker_pid[$n]=$!
  pids+=($!)
done
for n in 1 2 3; do wait_port "${metrics_port[$n]}"; done

start=$(date +%s.%N)
INPUT="$work/input.ndjson" "$BIN" run pipelines/scaleout/ingest.yaml \
  --metrics-address off --data-dir "$work/ingest" 2>"$work/ingest.log" &
pids+=($!)

# Events the workers' sinks wrote: the live ones' own count (reading every
# output file each poll would take CPU from the run it measures), the
# killed one's file.
killed="" killed_lines=0
written() {
  local total=$killed_lines n
  for n in 1 2 3; do
    [ "$n" = "$killed" ] && continue
    total=$(( total + $(curl -s "http://127.0.0.1:${metrics_port[$n]}/metrics" |
      awk '/^flowgate_events_out_total\{/ && /component="out"/ { v = $2 } END { printf "%d", v + 0 }') ))
  done
  echo "$total"
}
deadline=$(( $(date +%s) + 300 ))
while :; do
  now=$(date +%s.%N)
  lines=$(written)
  if [ "$KILL" = 1 ] && [ -z "$killed" ] && [ "$lines" -ge $((EVENTS / 2)) ]; then
    kill -9 "${worker_pid[2]}"
    wait "${worker_pid[2]}" 2>/dev/null || true
    killed=2
    killed_lines=$(wc -l <"$work/out2.ndjson")
    echo "killed worker 2 with kill -9 after $lines events were written"
  fi
  if [ "$lines" -ge "$EVENTS" ] && [ "$(count_lines)" -ge "$EVENTS" ] && [ "$(count_unique)" -ge "$EVENTS" ]; then break; fi
  if [ "$(date +%s)" -gt "$deadline" ]; then echo "FAILED: only $(count_unique) of $EVENTS events arrived" >&2; exit 1; fi
  sleep 0.05
done
# Up to the poll that saw every event (not the check of the files after).
elapsed=$(python3 -c "print(f'{$now - $start:.2f}')")

echo "all $EVENTS events written in ${elapsed}s ($(python3 -c "print(int($EVENTS / $elapsed))") events/s, file -> nats -> 3 workers -> files, $EVENTS_PER_MESSAGE events per message)"
for n in 1 2 3; do
  written=$(wc -l <"$work/out$n.ndjson" 2>/dev/null || echo 0)
  if [ "$n" = "$killed" ]; then
    echo "worker $n: wrote $written events, then was killed"
  else
    share=$(curl -s "http://127.0.0.1:${metrics_port[$n]}/metrics" | awk '/^flowgate_events_in_total\{.*component="bus"/ {print $2}')
    echo "worker $n: wrote $written events (flowgate_events_in_total{component=\"bus\"} = ${share:-?})"
  fi
done
echo "duplicates (written twice, from the killed worker's unacknowledged window): $(( $(count_lines) - $(count_unique) ))"
