#!/usr/bin/env bash
# Kafka throughput, flowgate beside a bare librdkafka client, runs in turn
# in one sitting (README "Scaling out with Kafka"). Each round:
#   produce: flowgate file -> kafka (by default: up to 8 batches in flight,
#            `max_in_flight_batches`), with one batch at a time
#            (`max_in_flight_batches: 1`, the sink before the window) and
#            with two encoding workers (`workers: 2`), then a confluent-kafka
#            producer of the same lines with the sink's settings (acks=all,
#            idempotent, no compression, librdkafka's default batching),
#            each to a topic of its own;
#   consume: the topic flowgate wrote, by a confluent-kafka consumer, then
#            by one daemon kafka -> file and one kafka -> blackhole (each in
#            a group of its own, earliest).
# Events/s over the whole run (produce) or first to last event (consume:
# the group join is left out). The summary gives, per line, min–max and
# median over the rounds, and the median of the per-round ratios
# flowgate/bare. Release build; the data is ../shared/bench/gen_data.py's
# NDJSON (~190-byte lines).
#
# Usage: benches/kafka_throughput.sh [EVENTS] [ROUNDS] (default 1000000 3)
# Broker: FLOWGATE_BENCH_KAFKA_BROKERS=host:port, else a Tansu started here
# from TANSU=/path/to/tansu (e.g. the one .ci/kafka.sh installs).
# Python: PYTHON with confluent-kafka installed (default /tmp/ckvenv/bin/python;
# python3 -m venv /tmp/ckvenv && /tmp/ckvenv/bin/pip install confluent-kafka).
# FLOWGATE: the binary to measure (default target/release/flowgate, built here).
# SINK_EXTRA: more sink keys for flowgate's producers, e.g. 'options: {linger.ms: 5}'.
# CONSUME_ONLY=1: produce only the default way (the topic to consume), skip
# the other producers. BASE=/path/to/an/older/flowgate: its kafka -> file
# runs in each round too (consume_base), for a before/after in one sitting.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-1000000}"
rounds="${2:-3}"
py="${PYTHON:-/tmp/ckvenv/bin/python}"
fg="${FLOWGATE:-target/release/flowgate}"
[ -n "${NO_BUILD:-}" ] || [ -n "${FLOWGATE:-}" ] || cargo build --release -q
dir=$(mktemp -d)
broker_pid=
trap '[ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null; rm -rf "$dir"' EXIT
if [ -n "${FLOWGATE_BENCH_KAFKA_BROKERS:-}" ]; then
  brokers=$FLOWGATE_BENCH_KAFKA_BROKERS
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${TANSU:?set TANSU or FLOWGATE_BENCH_KAFKA_BROKERS}" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >"$dir/broker.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  brokers="127.0.0.1:$port"
fi
python3 ../shared/bench/gen_data.py "$events" "$dir/data.ndjson" >/dev/null
run_id=$$-$(date +%s)
results="$dir/results"
echo "# $events events, $(wc -c <"$dir/data.ndjson") bytes; broker $brokers; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M')"

# Appends "<round> <name> <events/s>" to $results and prints it.
record() {
  printf '%s %-34s %10.0f events/s  (%s)\n' "$1" "$2" "$3" "$4"
  echo "$1 $2 $3" >>"$results"
}

fg_produce() { # round topic name [sink keys]
  cat >"$dir/produce.yaml" <<YAML
sources:
  in: {type: file, path: $dir/data.ndjson}
sinks:
  bus: {type: kafka, inputs: [in], brokers: ['$brokers'], topic: '$2', ${4:-} ${SINK_EXTRA:-}}
YAML
  local t0 t1
  t0=$(date +%s.%N)
  "$fg" run "$dir/produce.yaml" --metrics-address off 2>"$dir/produce.log"
  t1=$(date +%s.%N)
  record "$1" "$3" "$(python3 -c "print($events / ($t1 - $t0))")" "$(python3 -c "print(f'{$t1 - $t0:.2f} s')")"
}

bare_produce() { # round topic
  local out
  out=$("$py" - "$brokers" "$2" "$dir/data.ndjson" <<'PY'
import sys, time
from confluent_kafka import Producer
brokers, topic, path = sys.argv[1:]
lines = open(path, "rb").read().splitlines()
p = Producer({"bootstrap.servers": brokers, "acks": "all", "enable.idempotence": True,
              "compression.codec": "none", "message.timeout.ms": 30000})
t0 = time.monotonic()
for line in lines:
    while True:
        try:
            p.produce(topic, line)
            break
        except BufferError:
            p.poll(0.01)
    p.poll(0)
assert p.flush(60) == 0
t = time.monotonic() - t0
print(len(lines) / t, f"{t:.2f} s")
PY
)
  record "$1" produce_bare "${out%% *}" "${out#* }"
}

bare_consume() { # round topic
  local out
  out=$("$py" - "$brokers" "$2" "$events" <<'PY'
import sys, time
from confluent_kafka import Consumer
brokers, topic, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": brokers, "group.id": "bare-" + topic,
              "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
c.subscribe([topic])
n, first = 0, None
while n < total:
    for m in c.consume(num_messages=1000, timeout=1.0):
        if m.error() is None:
            if first is None:
                first = time.monotonic()
            n += 1
t = time.monotonic() - first
c.close()
print(n / t, f"{t:.2f} s first to last")
PY
)
  record "$1" consume_bare "${out%% *}" "${out#* }"
}

fg_consume() { # round topic name sink-type-and-keys [binary]
  local fg="${5:-$fg}"
  cat >"$dir/consume.yaml" <<YAML
sources:
  bus: {type: kafka, brokers: ['$brokers'], topics: ['$2'], group_id: '$3-$2', options: {session.timeout.ms: '6000'}}
sinks:
  out: {inputs: [bus], $4}
YAML
  rm -f "$dir/out.ndjson"
  local port daemon out
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$fg" run "$dir/consume.yaml" --metrics-address "127.0.0.1:$port" --data-dir "$dir/state-$1" 2>"$dir/consume.log" &
  daemon=$!
  # The sink's written count, every 50 ms: first and last change give the span.
  out=$(python3 - "$port" "$events" <<'PY'
import sys, time, urllib.request
port, total = sys.argv[1], int(sys.argv[2])
def written():
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0
    for l in text.splitlines():
        if l.startswith("flowgate_events_out_total{") and 'component="out"' in l:
            return int(float(l.rsplit(" ", 1)[1]))
    return 0
first = None
while True:
    n = written()
    now = time.monotonic()
    if n and first is None:
        first, at_first = now, n
    if n >= total:
        break
    time.sleep(0.05)
# The first sample already counted `at_first` events: rate over the rest.
t = now - first
print((n - at_first) / t, f"{t:.2f} s first to last")
PY
)
  kill -TERM "$daemon"; wait "$daemon" || true
  record "$1" "$3" "${out%% *}" "${out#* }"
}

for r in $(seq 1 "$rounds"); do
  fg_produce "$r" "fg-$run_id-$r" produce_flowgate
  if [ -z "${CONSUME_ONLY:-}" ]; then
    fg_produce "$r" "fg1-$run_id-$r" produce_flowgate_window1 "max_in_flight_batches: 1,"
    fg_produce "$r" "fgw2-$run_id-$r" produce_flowgate_workers2 "workers: 2,"
    bare_produce "$r" "bare-$run_id-$r"
  fi
  bare_consume "$r" "fg-$run_id-$r"
  fg_consume "$r" "fg-$run_id-$r" consume_flowgate "type: file, path: $dir/out.ndjson"
  if [ -n "${BASE:-}" ]; then
    fg_consume "$r" "fg-$run_id-$r" consume_base "type: file, path: $dir/out.ndjson" "$BASE"
  fi
  fg_consume "$r" "fg-$run_id-$r" consume_flowgate_blackhole "type: blackhole"
done

python3 - "$results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r, name, v in rows:
    by.setdefault(name, {})[r] = float(v)
print(f"# over {len(next(iter(by.values())))} rounds: min–max, median events/s")
for name, vs in by.items():
    v = sorted(vs.values())
    print(f"{name:<26} {v[0]:>9.0f}–{v[-1]:<9.0f} median {statistics.median(v):>9.0f}")
for name, fg in by.items():
    side = name.split("_")[0]
    bare = by.get(side + "_bare", {})
    ratios = [fg[r] / bare[r] for r in fg if r in bare]
    if ("_flowgate" in name or name.endswith("_base")) and ratios:
        print(f"{name}/bare per round: " + " ".join(f"{x:.2f}" for x in ratios)
              + f"; median {statistics.median(ratios):.2f}")
PY
