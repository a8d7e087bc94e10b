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

# The end-to-end tests run the real binary; cargo does not build it for them.
cargo build -p logport --bin logport
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
