#!/usr/bin/env bash
# Runs every Logport test against real dependencies.
#
# Starts a private ClickHouse server (Debian's clickhouse-server, installed when
# missing) on free ports with a temporary data dir, unless LOGPORT_TEST_CLICKHOUSE_URL
# already names one. With LOGPORT_TEST_CLICKHOUSE_FLAVOUR=current the tests share the
# current engine instead: ClickHouse 26.9 from PyPI's chdb-core, installed into a
# cached virtualenv, behind deploy/clickhouse/chdb-server.py (current-server.sh);
# tests that run a ClickHouse of their own (PrivateClickHouse) still run Debian's.
# Installs the Python packages the export reader checks and the S3
# tests use (pyarrow, duckdb, pandas, moto[server]) when missing and starts moto's S3
# server on a free port, unless LOGPORT_TEST_S3_ENDPOINT already names one; builds the
# logport binary the end-to-end tests run; runs the whole workspace's tests and the
# browser test of the web UI (tests/browser/); stops the servers it started.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Whatever this script starts is stopped on exit, in reverse order.
cleanups=()
cleanup() {
  local i
  for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[i]}" || true; done
}
trap cleanup EXIT

flavour=${LOGPORT_TEST_CLICKHOUSE_FLAVOUR:-debian}
case "$flavour" in
debian) ch_server=deploy/clickhouse/private-server.sh ;;
current) ch_server=deploy/clickhouse/current-server.sh ;;
*) echo "LOGPORT_TEST_CLICKHOUSE_FLAVOUR is debian (default) or current, not $flavour" >&2; exit 2 ;;
esac
if [ -z "${LOGPORT_TEST_CLICKHOUSE_URL:-}" ]; then
  if ! command -v clickhouse-server >/dev/null; then
    echo "installing clickhouse-server (Debian package)…" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server >/dev/null
  fi
  ch_dir=$(mktemp -d /tmp/logport-test-ch.XXXXXX)
  cleanups+=('$ch_server stop "$ch_dir"; rm -rf "$ch_dir"')
  LOGPORT_TEST_CLICKHOUSE_URL=$($ch_server start "$ch_dir")
  export LOGPORT_TEST_CLICKHOUSE_URL
  echo "ClickHouse ($flavour) for tests: $LOGPORT_TEST_CLICKHOUSE_URL" >&2
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

# tests/readers/check_exports.py reads export files with pyarrow, duckdb and pandas;
# tests/tests/s3.rs needs an S3-compatible server: moto's. Tests fail (never skip)
# without them.
# tests/tests/security.rs validates GET /openapi.json with openapi-spec-validator.
py_packages=(pyarrow duckdb pandas "moto[server]" openapi-spec-validator)
py_ready() { python3 -c 'import pyarrow, duckdb, pandas, moto.server, openapi_spec_validator' 2>/dev/null; }
# A virtualenv of ours, used where the system Python is "externally managed" (PEP 668).
py_venv=${LOGPORT_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/logport/venv}
if ! py_ready && [ -x "$py_venv/bin/python3" ]; then export PATH="$py_venv/bin:$PATH"; fi
if ! py_ready; then
  if ! command -v python3 >/dev/null; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-pip python3-venv >/dev/null
  fi
  echo "installing Python test packages (${py_packages[*]})…" >&2
  pip_user=()
  if [ "$(id -u)" != 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then pip_user=(--user); fi
  if ! python3 -m pip install --quiet "${pip_user[@]}" "${py_packages[@]}"; then
    echo "… into a virtualenv at $py_venv instead" >&2
    python3 -m venv "$py_venv" 2>/dev/null || {
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
      python3 -m venv "$py_venv"
    }
    "$py_venv/bin/python3" -m pip install --quiet "${py_packages[@]}"
    export PATH="$py_venv/bin:$PATH"
  fi
  py_ready || { echo "pyarrow, duckdb, pandas, moto or openapi_spec_validator are still not importable by python3" >&2; exit 1; }
fi
if [ -z "${LOGPORT_TEST_S3_ENDPOINT:-}" ]; then
  s3_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  s3_log=$(mktemp /tmp/logport-test-s3.XXXXXX.log)
  python3 -m moto.server -H 127.0.0.1 -p "$s3_port" >"$s3_log" 2>&1 &
  s3_pid=$!
  cleanups+=('kill "$s3_pid" 2>/dev/null; wait "$s3_pid" 2>/dev/null; rm -f "$s3_log"')
  LOGPORT_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$LOGPORT_TEST_S3_ENDPOINT/" 2>/dev/null && break
    if ! kill -0 "$s3_pid" 2>/dev/null; then cat "$s3_log" >&2; echo "moto_server exited" >&2; exit 1; fi
    sleep 0.2
  done
  curl -fsS -o /dev/null "$LOGPORT_TEST_S3_ENDPOINT/" || { cat "$s3_log" >&2; echo "moto_server did not answer" >&2; exit 1; }
  export LOGPORT_TEST_S3_ENDPOINT
  echo "S3 (moto) for tests: $LOGPORT_TEST_S3_ENDPOINT" >&2
fi

# The end-to-end tests run the real binary; cargo does not build it for them.
cargo build -p logport --bin logport
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi

# The web UI in Debian's headless Chromium (tests/browser/run.sh installs chromium and
# playwright-core when missing; screenshots go to $LOGPORT_ARTIFACTS/screenshots or
# .ci-artifacts/screenshots). Part of the whole suite; arguments select cargo tests only.
if [ $# -eq 0 ]; then
  tests/browser/run.sh || status=$?
fi
exit "$status"
