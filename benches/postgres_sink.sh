#!/usr/bin/env bash
# `postgres` sink rows/s with batches of 500 and 5,000, beside `psql \copy`
# of the same rows in the same sitting: N rows (default 200000) of
# (bigint key, text, numeric, timestamptz, jsonb) from an NDJSON file through
# `flowgate run` (file source -> postgres sink, one worker and two), and the
# same rows as CSV through `\copy`. Each run starts from an empty table.
# Release build. Server: $FLOWGATE_TEST_POSTGRES_URL, or a private cluster
# started here as the `postgres` user (as .ci/postgres.sh does).
# Usage: benches/postgres_sink.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
n="${1:-200000}"
dir=$(mktemp -d)
chmod 755 "$dir"
cleanup() {
  if [ -n "${pg_dir:-}" ]; then
    runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
url="${FLOWGATE_TEST_POSTGRES_URL:-}"
if [ -z "$url" ]; then
  source .ci/postgres.sh
  url="$FLOWGATE_TEST_POSTGRES_URL"
fi
python3 - "$n" "$dir" <<'PY'
import json, sys
n, d = int(sys.argv[1]), sys.argv[2]
with open(f"{d}/rows.ndjson", "w") as j, open(f"{d}/rows.csv", "w") as c:
    for i in range(n):
        amount = f"{i // 100}.{i % 100:02}"
        at = f"2026-12-01T{(i // 3600) % 24:02}:{(i // 60) % 60:02}:{i % 60:02}Z"
        doc = {"k": i, "tags": ["a", "b"]}
        j.write(json.dumps({"id": i, "name": f"user {i}", "amount": amount, "at": at, "doc": doc}) + "\n")
        c.write(f'{i},user {i},{amount},{at},"{json.dumps(doc).replace(chr(34), chr(34) * 2)}"\n')
PY
q() { PGOPTIONS="-c client_min_messages=warning" psql "$url" -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }
q "DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows (id bigint PRIMARY KEY, name text, amount numeric(12,2), at timestamptz, doc jsonb)"
rate() { python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]):>10,.0f} rows/s  ({float(sys.argv[2]):.2f} s)')" "$n" "$1"; }
printf '%-36s %s\n' "run" "rows/s"
for workers in 1 2; do
  for batch in 500 5000; do
    q "TRUNCATE bench_rows"
    cat > "$dir/p.yaml" <<YAML
sources:
  in: {type: file, path: '$dir/rows.ndjson'}
sinks:
  db:
    type: postgres
    inputs: [in]
    url: '$url'
    table: bench_rows
    columns: {id: .id, name: .name, amount: .amount, at: .at, doc: .doc}
    batch: {max_events: $batch}
    workers: $workers
    buffer: {size: $((batch * 2))}
YAML
    start=$(date +%s.%N)
    target/release/flowgate run "$dir/p.yaml" --metrics-address off --data-dir "$dir/state" 2>"$dir/log"
    end=$(date +%s.%N)
    [ "$(q 'SELECT count(*) FROM bench_rows')" = "$n" ] || { cat "$dir/log"; exit 1; }
    printf '%-36s %s\n' "flowgate batch $batch, workers $workers" "$(rate "$(echo "$end - $start" | bc)")"
  done
done
q "TRUNCATE bench_rows"
start=$(date +%s.%N)
psql "$url" -X -q -v ON_ERROR_STOP=1 -c "\\copy bench_rows FROM '$dir/rows.csv' WITH (FORMAT csv)"
end=$(date +%s.%N)
[ "$(q 'SELECT count(*) FROM bench_rows')" = "$n" ]
printf '%-36s %s\n' "psql \\copy (CSV)" "$(rate "$(echo "$end - $start" | bc)")"
q "DROP TABLE bench_rows"
