#!/usr/bin/env bash
# Kafka throughput, flowgate beside a bare librdkafka client in one sitting
# (README "Scaling out with Kafka"):
#   consume: one daemon, kafka -> file, against a confluent-kafka consumer
#            reading the same topic (a group of its own, earliest);
#   produce: file -> kafka, against a confluent-kafka producer of the same
#            lines with the sink's settings (acks=all, idempotent, no
#            compression, librdkafka's default batching).
# Events/s over the first-to-last event (consume: excludes the group join)
# or the whole run (produce). Release build; the data is
# ../shared/bench/gen_data.py's NDJSON (~190-byte lines).
#
# Usage: benches/kafka_throughput.sh [EVENTS] (default 1000000)
# Broker: FLOWGATE_BENCH_KAFKA_BROKERS=host:port, else a Tansu started here
# from TANSU=/path/to/tansu (e.g. the one .ci/kafka.sh installs).
# Python: PYTHON with confluent-kafka installed (default /tmp/ckvenv/bin/python;
# python3 -m venv /tmp/ckvenv && /tmp/ckvenv/bin/pip install confluent-kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-1000000}"
py="${PYTHON:-/tmp/ckvenv/bin/python}"
[ -n "${NO_BUILD:-}" ] || cargo build --release -q
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
echo "# $events events, $(wc -c <"$dir/data.ndjson") bytes; broker $brokers; $(nproc) cores; $(date -u +%F)"

# produce: flowgate file -> kafka, then the bare producer, each to its own topic
cat >"$dir/produce.yaml" <<YAML
sources:
  in: {type: file, path: $dir/data.ndjson}
sinks:
  bus: {type: kafka, inputs: [in], brokers: ['$brokers'], topic: 'fg-$run_id'}
YAML
t0=$(date +%s.%N)
target/release/flowgate run "$dir/produce.yaml" --metrics-address off 2>"$dir/produce.log"
t1=$(date +%s.%N)
python3 -c "print(f'produce  flowgate file -> kafka        {$events / ($t1 - $t0):>10.0f} events/s  ({$t1 - $t0:.2f} s)')"
# A batch is written once all its messages are acknowledged: `workers: 8`
# keeps 8 batches in flight.
sed -e "s/topic: 'fg-$run_id'}/topic: 'fg8-$run_id', workers: 8}/" "$dir/produce.yaml" >"$dir/produce8.yaml"
t0=$(date +%s.%N)
target/release/flowgate run "$dir/produce8.yaml" --metrics-address off 2>"$dir/produce8.log"
t1=$(date +%s.%N)
python3 -c "print(f'produce  flowgate ... workers: 8       {$events / ($t1 - $t0):>10.0f} events/s  ({$t1 - $t0:.2f} s)')"
"$py" - "$brokers" "bare-$run_id" "$dir/data.ndjson" <<'PY'
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
print(f"produce  bare confluent-kafka producer {len(lines) / t:>10.0f} events/s  ({t:.2f} s)")
PY

# consume: the flowgate topic written above, by each reader in a group of its own
"$py" - "$brokers" "fg-$run_id" "$events" <<'PY'
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
print(f"consume  bare confluent-kafka consumer {n / t:>10.0f} events/s  ({t:.2f} s first to last)")
PY
cat >"$dir/consume.yaml" <<YAML
sources:
  bus: {type: kafka, brokers: ['$brokers'], topics: ['fg-$run_id'], group_id: 'fg-$run_id', options: {session.timeout.ms: '6000'}}
sinks:
  out: {type: file, inputs: [bus], path: $dir/out.ndjson}
YAML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/flowgate run "$dir/consume.yaml" --metrics-address "127.0.0.1:$port" --data-dir "$dir/state" 2>"$dir/consume.log" &
daemon=$!
# The sink's written count, every 50 ms: first and last change give the span.
python3 - "$port" "$events" <<'PY'
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
print(f"consume  flowgate kafka -> file         {(n - at_first) / t:>10.0f} events/s  ({t:.2f} s first to last)")
PY
kill -TERM "$daemon"; wait "$daemon" || true
