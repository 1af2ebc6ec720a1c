#!/usr/bin/env bash
# Added latency of a disk buffer: a generator at a fixed rate, a map that
# stamps `.t0 = now`, then a map with the buffer under test that stamps
# `.t1 = now` (its input queue is the buffer), into a file; prints
# p50/p99/max of t1 - t0 for a memory buffer and for a disk buffer.
# Release build. Usage: benches/disk_buffer_latency.sh [RATE] (default 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
rate="${1:-50000}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for buffer in "{size: 1000}" "{type: disk, max_bytes: 1GiB}"; do
  sed -e "s/BUF/$buffer/" -e "s/rate: 50000/rate: $rate/" -e "s|/tmp/dq/lat.ndjson|$dir/out.ndjson|" \
    benches/disk_buffer_latency.yaml > "$dir/p.yaml"
  rm -rf "$dir/out.ndjson" "$dir/state"
  target/release/flowgate run "$dir/p.yaml" --metrics-address off --data-dir "$dir/state" 2>/dev/null
  python3 - "$buffer" "$dir/out.ndjson" <<'PY'
import json, sys
d = sorted((e["t1"] - e["t0"]) * 1000 for e in map(json.loads, open(sys.argv[2])))
n = len(d)
print(f"{sys.argv[1]:<32} {n} events  p50 {d[n // 2]:.3f} ms  p99 {d[int(n * .99)]:.3f} ms  max {d[-1]:.1f} ms")
PY
done
