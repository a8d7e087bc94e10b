#!/usr/bin/env bash
# Runs a private ClickHouse server (Debian's clickhouse-server) with its own data dir
# and ports, without systemd. Used by .ci/run, scripts/test.sh and scripts/serve.sh.
#
#   private-server.sh start DIR [HTTP_PORT [TCP_PORT]]   prints the HTTP URL when ready
#     (exit 3: another server answers on the port — pick other ports and retry)
#   private-server.sh stop DIR
#
# Ports default to free ones chosen at random. UTC is the server time zone, because CSV
# and JSON render DateTime in it.
set -euo pipefail

cmd=${1:?usage: private-server.sh start|stop DIR [HTTP_PORT [TCP_PORT]]}
dir=${2:?data directory}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the server on the given ports: 0 when it answers, 3 when another server
# answers on the port, 1 when it did not start.
start_on() {
  http_port=$1
  tcp_port=$2
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/server.log</log>
        <errorlog>$dir/log/error.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <http_port>$http_port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>536870912</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
  cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval><duration>3600</duration><queries>0</queries><errors>0</errors>
            <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval>
        </default>
    </quotas>
</yandex>
XML
  # Every fd redirected: a caller's $(...) must not wait for the server to exit.
  cd "$dir"
  nohup clickhouse-server --config-file="$dir/config.xml" </dev/null >"$dir/log/stdout.log" 2>&1 &
  echo $! > "$dir/server.pid"
  cd - >/dev/null
  url="http://127.0.0.1:$http_port"
  # The server that answers must be this one, not another that holds the port (two
  # callers may pick the same free port): it reads back a token only its
  # user_files directory holds.
  token=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
  printf '%s\n' "$token" > "$dir/user_files/instance.tsv"
  probe="SELECT%20x%20FROM%20file('instance.tsv',%20'TSV',%20'x%20String')"
  for _ in $(seq 1 150); do
    if answer=$(curl -fsS "$url/?query=$probe" 2>/dev/null); then
      if [ "$answer" = "$token" ]; then
        echo "$url" > "$dir/url"; echo "$url"; return 0
      fi
      echo "port $http_port answers for another server" >&2
      kill -9 "$(cat "$dir/server.pid")" 2>/dev/null || true
      rm -f "$dir/server.pid"
      return 3
    fi
    if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "clickhouse-server did not start; see $dir/log" >&2
  tail -n 30 "$dir/log/error.log" "$dir/log/stdout.log" >&2 2>/dev/null || true
  return 1
}

case "$cmd" in
start)
  if [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
    cat "$dir/url"; exit 0
  fi
  command -v clickhouse-server >/dev/null || { echo "clickhouse-server is not installed (apt-get install clickhouse-server)" >&2; exit 1; }
  # Ports the caller chose are used as they are (a restart keeps its URL); ports
  # chosen here are chosen again when another server turns out to hold one.
  for _ in 1 2 3 4 5; do
    rc=0
    start_on "${3:-$(free_port)}" "${4:-$(free_port)}" || rc=$?
    if [ "$rc" != 3 ] || [ -n "${3:-}" ]; then exit "$rc"; fi
  done
  exit 3
  ;;
stop)
  if [ -f "$dir/server.pid" ]; then
    pid=$(cat "$dir/server.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/server.pid"
  fi
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
