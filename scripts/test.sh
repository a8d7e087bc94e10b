#!/usr/bin/env bash
# Runs every Logport test against real dependencies.
#
# Starts a private ClickHouse server (Debian's clickhouse-server, installed when
# missing) on free ports with a temporary data dir, unless LOGPORT_TEST_CLICKHOUSE_URL
# already names one; builds the logport binary the end-to-end tests run; runs the
# whole workspace's tests; stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${LOGPORT_TEST_CLICKHOUSE_URL:-}" ]; then
  if ! command -v clickhouse-server >/dev/null; then
    echo "installing clickhouse-server (Debian package)…" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server >/dev/null
  fi
  ch_dir=$(mktemp -d /tmp/logport-test-ch.XXXXXX)
  trap 'deploy/clickhouse/private-server.sh stop "$ch_dir"; rm -rf "$ch_dir"' EXIT
  LOGPORT_TEST_CLICKHOUSE_URL=$(deploy/clickhouse/private-server.sh start "$ch_dir")
  export LOGPORT_TEST_CLICKHOUSE_URL
  echo "ClickHouse for tests: $LOGPORT_TEST_CLICKHOUSE_URL" >&2
fi

# The job store conformance suite and the replica tests need PostgreSQL.
if [ -z "${LOGPORT_TEST_POSTGRES_URL:-}" ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if [ ! -d /etc/postgresql ]; then
      echo "installing postgresql (Debian package)…" >&2
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  export LOGPORT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres
fi

# The end-to-end tests run the real binary; cargo does not build it for them.
cargo build -p logport --bin logport
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
