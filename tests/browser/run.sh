#!/usr/bin/env bash
# The browser test (ui.test.mjs): Logport's web UI in Debian's headless Chromium,
# driven by playwright-core from npm (it never downloads a browser of its own).
#
# Installs what is missing: Debian's chromium (apt-get), Node.js (apt-get) and the
# pinned npm packages (npm ci). Needs LOGPORT_TEST_CLICKHOUSE_URL and the logport
# binary (LOGPORT_BIN, default: cargo's target dir). A missing browser is a failure,
# never a skip. Screenshots go to $LOGPORT_ARTIFACTS/screenshots (default
# .ci-artifacts/screenshots).
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null || {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  }
}

export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "installing chromium (Debian package)…" >&2
  apt_install chromium || true
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "FAIL: $CHROMIUM is missing and could not be installed (apt-get install chromium)" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing Node.js (Debian packages)…" >&2
  apt_install nodejs npm
fi
if [ ! -f node_modules/playwright-core/package.json ] ||
   ! node -e 'const w=require("./package.json").dependencies["playwright-core"], h=require("playwright-core/package.json").version; process.exit(w===h?0:1)' 2>/dev/null; then
  echo "installing npm packages (npm ci)…" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

: "${LOGPORT_TEST_CLICKHOUSE_URL:?is not set: run ./scripts/test.sh, which starts ClickHouse}"
if [ -z "${LOGPORT_BIN:-}" ]; then
  target=$(cd ../.. && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export LOGPORT_BIN=$target/debug/logport
fi
exec node ui.test.mjs
