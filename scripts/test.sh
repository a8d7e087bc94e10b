#!/usr/bin/env bash
# Runs every Logport test against real dependencies, on both ClickHouse servers.
#
# Two lanes, one after the other (LOGPORT_TEST_CLICKHOUSE_FLAVOUR=debian or current
# runs only that one; both is the default):
#  1. debian: the whole workspace's tests and the browser test of the web UI
#     (tests/browser/) against Debian's ClickHouse 18.16, a private server on free
#     ports with a temporary data dir (deploy/clickhouse/private-server.sh,
#     clickhouse-server installed when missing), unless LOGPORT_TEST_CLICKHOUSE_URL
#     already names one.
#  2. current: the store's tests (`-p logport-store`) and the end-to-end tests again,
#     against ClickHouse 26.9 (PyPI's chdb-core in a cached virtualenv behind
#     deploy/clickhouse/chdb-server.py, started by current-server.sh), unless
#     LOGPORT_TEST_CURRENT_CLICKHOUSE_URL names one (or LOGPORT_TEST_CLICKHOUSE_URL
#     when only this lane runs). Tests that start a ClickHouse of their own (the
#     nextest group `own-clickhouse`, .config/nextest.toml: always 18.16) ran in lane 1
#     and are left out; this lane needs cargo-nextest for that.
# A lane's failure fails the script; both lanes run whatever the first did.
#
# Installs the Python packages the export reader checks and the S3 tests use
# (pyarrow, duckdb, pandas, moto[server]; chdb-core comes with the current engine's
# virtualenv) when missing and starts moto's S3 server on a free port, unless
# LOGPORT_TEST_S3_ENDPOINT already names one; builds the logport binary the
# end-to-end tests run; stops the servers it started. Arguments go to every cargo
# run (e.g. `--test operations`); with arguments the browser test does not run.
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

flavour=${LOGPORT_TEST_CLICKHOUSE_FLAVOUR:-both}
case "$flavour" in
both) lanes=(debian current) ;;
debian | current) lanes=("$flavour") ;;
*) echo "LOGPORT_TEST_CLICKHOUSE_FLAVOUR is both (default), debian or current, not $flavour" >&2; exit 2 ;;
esac
# The server each lane uses when the caller names one.
debian_url=""
current_url=${LOGPORT_TEST_CURRENT_CLICKHOUSE_URL:-}
if [ "$flavour" = current ]; then
  current_url=${current_url:-${LOGPORT_TEST_CLICKHOUSE_URL:-}}
else
  debian_url=${LOGPORT_TEST_CLICKHOUSE_URL:-}
fi
unset LOGPORT_TEST_CLICKHOUSE_URL

# Starts the lane's ClickHouse and sets `url` to it (not in a subshell: the cleanup
# must be registered here).
start_clickhouse() {
  local lane=$1 script dir
  case "$lane" in
  debian)
    script=deploy/clickhouse/private-server.sh
    if ! command -v clickhouse-server >/dev/null; then
      echo "installing clickhouse-server (Debian package)…" >&2
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server >/dev/null
    fi
    ;;
  current) script=deploy/clickhouse/current-server.sh ;;
  esac
  dir=$(mktemp -d "/tmp/logport-test-ch-$lane.XXXXXX")
  cleanups+=("$script stop '$dir'; rm -rf '$dir'")
  url=$($script start "$dir") || { echo "the $lane ClickHouse did not start" >&2; return 1; }
}

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

# tests/readers/check_exports.py reads export files with pyarrow, duckdb and pandas
# (and Parquet with ClickHouse 26.9, below);
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
# ClickHouse 26.9 reads every Parquet export too (tests/readers/clickhouse_parquet.py),
# with the Python of the current engine's virtualenv (chdb-core, installed when missing).
LOGPORT_TEST_CHDB_PYTHON=${LOGPORT_TEST_CHDB_PYTHON:-$(deploy/clickhouse/current-server.sh python)}
export LOGPORT_TEST_CHDB_PYTHON
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

have_nextest=false
if cargo nextest --version >/dev/null 2>&1; then have_nextest=true; fi
status=0
summary=()
for lane in "${lanes[@]}"; do
  lane_start=$(date +%s)
  url=${debian_url}
  if [ "$lane" = current ]; then url=$current_url; fi
  if [ -z "$url" ] && ! start_clickhouse "$lane"; then
    status=1
    summary+=("$lane: ClickHouse did not start")
    continue
  fi
  version=$(curl -fsS "$url/?query=SELECT%20version()" || echo "not answering")
  echo "== lane $lane: ClickHouse $version at $url" >&2
  lane_status=0
  case "$lane" in
  debian)
    if $have_nextest; then
      LOGPORT_TEST_CLICKHOUSE_URL=$url cargo nextest run --workspace --no-fail-fast "$@" || lane_status=$?
    else
      LOGPORT_TEST_CLICKHOUSE_URL=$url cargo test --workspace --no-fail-fast "$@" || lane_status=$?
    fi
    # The web UI in Debian's headless Chromium (tests/browser/run.sh installs chromium
    # and playwright-core when missing; screenshots go to $LOGPORT_ARTIFACTS/screenshots
    # or .ci-artifacts/screenshots). Arguments select cargo tests only.
    if [ $# -eq 0 ]; then
      LOGPORT_TEST_CLICKHOUSE_URL=$url tests/browser/run.sh || lane_status=$?
    fi
    ;;
  current)
    if $have_nextest; then
      LOGPORT_TEST_CLICKHOUSE_URL=$url LOGPORT_TEST_SHARED_CLICKHOUSE_ONLY=1 \
        cargo nextest run -p logport-store -p logport-tests --no-fail-fast \
        -E 'not group(own-clickhouse)' "$@" || lane_status=$?
    else
      echo "the current-engine lane selects its tests with cargo-nextest (cargo install cargo-nextest)" >&2
      lane_status=1
    fi
    ;;
  esac
  outcome=passed
  if [ "$lane_status" != 0 ]; then outcome="FAILED (exit $lane_status)"; status=1; fi
  summary+=("$lane (ClickHouse $version): $outcome in $(($(date +%s) - lane_start))s")
done
for line in "${summary[@]}"; do echo "lane $line" >&2; done
exit "$status"
