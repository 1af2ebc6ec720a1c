# Sourced by .ci/run: a PostgreSQL 15 cluster (Debian's `postgresql`
# package) in a temporary data directory on a free loopback port, for
# tests/postgres.rs, which finds it through FLOWGATE_TEST_POSTGRES_URL (and
# fails in CI without it). The server refuses to run as root, so the data
# directory belongs to the `postgres` user and the server runs as it; trust
# authentication on 127.0.0.1 only (a throwaway test cluster). .ci/run's
# EXIT trap stops it (`pg_stop`).
pg_bin=/usr/lib/postgresql/15/bin
if ! command -v psql >/dev/null 2>&1 || [ ! -x "$pg_bin/initdb" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
pg_dir=$(mktemp -d)
chown postgres: "$pg_dir"
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >"$pg_dir/initdb.log" 2>&1
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c max_connections=200" start >/dev/null
pg_stop() {
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
export FLOWGATE_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
# tests/postgres.rs starts a cluster of its own (to stop it mid-run) with these.
export FLOWGATE_TEST_POSTGRES_BIN="$pg_bin"
