#!/usr/bin/env bash
# Lints deploy/ (Dockerfile, compose, Kubernetes, systemd, Prometheus) without a
# container runtime: see deploy/lint.py for what is checked. Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import yaml' 2>/dev/null; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-yaml >/dev/null 2>&1 \
    || python3 -m pip install --quiet pyyaml
fi
bash -n deploy/clickhouse/private-server.sh
bash -n deploy/clickhouse/current-server.sh
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' deploy/clickhouse/chdb-server.py
python3 deploy/lint.py
