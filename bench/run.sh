#!/usr/bin/env bash
# Logport benchmarks, side by side with clickhouse-client on the same machine.
#
#   bench/run.sh [ROWS]        (default 10,000,000 clicks)
#
# Builds a release binary (in its own target dir), starts a private ClickHouse,
# generates ROWS realistic clicks with `logport gen`, then measures:
#   ingest: clickhouse-client INSERT … FORMAT JSONEachRow < file   vs   logport ingest
#   export: clickhouse-client SELECT … FORMAT CSVWithNames/JSONEachRow > file
#           vs Logport exports (csv, jsonl, parquet) into its local object store
# and prints a Markdown table (also written to bench/results.md). Timings are wall
# clock; peak RSS is the process's maximum resident memory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${1:-10000000}
work=${BENCH_DIR:-/tmp/logport-bench}
mkdir -p "$work"
export CARGO_TARGET_DIR=${BENCH_TARGET_DIR:-$HOME/.cache/logport/target-bench}
cargo build --release -p logport --bin logport
bin=$CARGO_TARGET_DIR/release/logport

ch_dir=$work/clickhouse
deploy/clickhouse/private-server.sh stop "$ch_dir" >/dev/null 2>&1 || true
rm -rf "$ch_dir"
url=$(deploy/clickhouse/private-server.sh start "$ch_dir")
trap 'deploy/clickhouse/private-server.sh stop "$ch_dir"' EXIT
tcp_port=$(sed -n 's:.*<tcp_port>\([0-9]*\)</tcp_port>.*:\1:p' "$ch_dir/config.xml")

fields=event_time,event_id,app_id,click_id,campaign_id,traffic_source_id,offer_id,country_code,city,device_type,os,browser,ip,cost,is_bot
data=$work/clicks-$rows.ndjson
if [ ! -s "$data" ]; then
  echo "generating $rows clicks…" >&2
  "$bin" gen --slice clicks --rows "$rows" --seed 1 --days 7 --fields "$fields" --out "$data.tmp"
  mv "$data.tmp" "$data"
fi

python3 bench/bench.py --bin "$bin" --clickhouse "$url" --tcp-port "$tcp_port" \
  --data "$data" --rows "$rows" --fields "$fields" --work "$work" --out bench/results.md
