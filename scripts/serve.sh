#!/usr/bin/env bash
# Starts Logport with its defaults: ClickHouse on 127.0.0.1:8123 (a local server is
# installed and started under ./data/clickhouse when none answers there), the
# local-disk object store under ./data/exports and the SQLite job store ./data/jobs.db.
# Extra arguments go to `logport serve`; LOGPORT_* variables configure it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ch_url=${LOGPORT_CLICKHOUSE_URL:-http://127.0.0.1:8123}
if ! curl -fsS "$ch_url/?query=SELECT%201" >/dev/null 2>&1; then
  if [ -n "${LOGPORT_CLICKHOUSE_URL:-}" ]; then
    echo "ClickHouse does not answer at $LOGPORT_CLICKHOUSE_URL" >&2; exit 1
  fi
  if ! command -v clickhouse-server >/dev/null; then
    echo "installing clickhouse-server (Debian package)…" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server >/dev/null
  fi
  echo "starting a local ClickHouse on 127.0.0.1:8123 (data in ./data/clickhouse)…" >&2
  deploy/clickhouse/private-server.sh start ./data/clickhouse 8123 9000 >/dev/null
fi

if [ -z "${LOGPORT_STATIC_TOKENS:-}" ]; then
  export LOGPORT_STATIC_TOKENS="dev-token-change-me@demo"
  echo "no LOGPORT_STATIC_TOKENS set: using the development token dev-token-change-me (tenant demo)" >&2
fi
exec cargo run --release -p logport --bin logport -- serve "$@"
