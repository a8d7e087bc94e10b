#!/usr/bin/env bash
# Fuzzes the running API against its own OpenAPI document with schemathesis (PyPI):
# starts `logport serve` on a free port (its own ClickHouse database, job store and
# files), fills every slice with synthetic events, then lets schemathesis generate
# requests from GET /openapi.json for a bounded time. Fails on any finding: a 5xx, a
# status code, content type or body the document does not describe, a runtime error —
# or the service dying under it.
#
# ClickHouse: LOGPORT_TEST_CLICKHOUSE_URL (as scripts/test.sh and .ci/run export it), or
# a private server started here. Time: LOGPORT_FUZZ_SECONDS (default 150) of fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
cleanups=()
cleanup() {
  local i
  for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[i]}" || true; done
}
trap cleanup EXIT

seconds=${LOGPORT_FUZZ_SECONDS:-150}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/logport/target}

if [ -z "${LOGPORT_TEST_CLICKHOUSE_URL:-}" ]; then
  ch_dir=$(mktemp -d /tmp/logport-fuzz-ch.XXXXXX)
  cleanups+=('deploy/clickhouse/private-server.sh stop "$ch_dir"; rm -rf "$ch_dir"')
  LOGPORT_TEST_CLICKHOUSE_URL=$(deploy/clickhouse/private-server.sh start "$ch_dir")
fi
ch=$LOGPORT_TEST_CLICKHOUSE_URL

# schemathesis, from PyPI: the system Python, or a virtualenv of ours where that Python
# is "externally managed" (the same fallback as scripts/test.sh).
py_venv=${LOGPORT_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/logport/venv}
st_ready() { command -v schemathesis >/dev/null && schemathesis --version >/dev/null 2>&1; }
if ! st_ready && [ -x "$py_venv/bin/schemathesis" ]; then export PATH="$py_venv/bin:$PATH"; fi
if ! st_ready; then
  echo "installing schemathesis (PyPI)…" >&2
  pip_user=()
  if [ "$(id -u)" != 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then pip_user=(--user); fi
  if ! python3 -m pip install --quiet "${pip_user[@]}" schemathesis; then
    echo "… into a virtualenv at $py_venv instead" >&2
    python3 -m venv "$py_venv" 2>/dev/null || {
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
      python3 -m venv "$py_venv"
    }
    "$py_venv/bin/python3" -m pip install --quiet schemathesis
  fi
  export PATH="$py_venv/bin:$HOME/.local/bin:$PATH"
  st_ready || { echo "schemathesis is still not runnable" >&2; exit 1; }
fi
echo "$(schemathesis --version)" >&2

cargo build -q -p logport --bin logport
bin=$CARGO_TARGET_DIR/debug/logport

work=$(mktemp -d /tmp/logport-fuzz.XXXXXX)
database=lpfuzz_$(date +%s)_$$
cleanups+=('rm -rf "$work"')
cleanups+=('curl -fsS -o /dev/null "$ch/" --data-binary "DROP DATABASE IF EXISTS $database"')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=fuzz-token-$$-$RANDOM
base=http://127.0.0.1:$port

# The limits stay on, but far from what one fuzzer sends: it should reach the handlers.
env -i PATH="$PATH" HOME="$HOME" RUST_LOG=info \
  LOGPORT_LISTEN=127.0.0.1:$port \
  LOGPORT_CLICKHOUSE_URL="$ch" \
  LOGPORT_CLICKHOUSE_DATABASE="$database" \
  LOGPORT_JOB_STORE_URL="sqlite://$work/jobs.db" \
  LOGPORT_OBJECT_STORE_URL="file://$work/exports" \
  LOGPORT_STATIC_TOKENS="$token@fuzz" \
  LOGPORT_RATE_LIMIT_PER_SECOND=100000 \
  LOGPORT_RATE_LIMIT_BURST=100000 \
  LOGPORT_AUTH_FAILURE_BURST=100000 \
  LOGPORT_MAX_QUEUED_PER_TENANT=100000 \
  "$bin" serve >"$work/serve.log" 2>&1 &
pid=$!
cleanups+=('kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null')
for _ in $(seq 1 150); do
  curl -fsS -o /dev/null "$base/healthz" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; echo "logport exited" >&2; exit 1; }
  sleep 0.2
done
curl -fsS -o /dev/null "$base/healthz" || { cat "$work/serve.log" >&2; exit 1; }

# Rows of every slice, so previews, estimates and exports have something to read.
for slice in $("$bin" catalog 2>/dev/null | awk '{print $1}'); do
  "$bin" gen --slice "$slice" --rows 300 --apps 3 |
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" \
      -H 'Content-Type: application/x-ndjson' --data-binary @- "$base/v1/ingest/$slice"
done

# One worker: the CPython 3.11 AST parser that Hypothesis calls is not thread-safe.
# schemathesis keeps a cache (crashes to replay first) in its working directory: ours,
# outside the repository, kept between runs.
st_home=${XDG_CACHE_HOME:-$HOME/.cache}/logport/schemathesis
mkdir -p "$st_home"
status=0
(cd "$st_home" && schemathesis run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --workers 1 \
  --max-examples 100 \
  --max-time "$seconds" \
  --request-timeout 30 \
  --suppress-health-check too_slow,filter_too_much \
  --warnings off \
  --report junit --report-dir "$work/report") || status=$?

if ! kill -0 "$pid" 2>/dev/null || ! curl -fsS -o /dev/null "$base/healthz"; then
  echo "logport died during fuzzing:" >&2
  tail -n 50 "$work/serve.log" >&2
  exit 1
fi
if grep -E "panicked|internal error" "$work/serve.log" >&2; then
  echo "logport logged a panic or an internal error during fuzzing" >&2
  exit 1
fi
if [ "$status" != 0 ]; then
  echo "schemathesis found problems (exit $status); service log tail:" >&2
  tail -n 30 "$work/serve.log" >&2
  exit "$status"
fi
echo "fuzzing found nothing in ${seconds}s" >&2
