#!/usr/bin/env bash
# Runs the current ClickHouse engine (26.9, from the `chdb-core` package on PyPI)
# behind chdb-server.py, the HTTP front beside this script, with its own data dir
# and port: the tests' second ClickHouse beside Debian's 18.16 (private-server.sh).
#
#   current-server.sh start DIR [HTTP_PORT]   prints the HTTP URL when ready
#   current-server.sh stop DIR
#   current-server.sh python                  prints the Python that has chdb-core
#
# chdb-core is installed when missing into a virtualenv of ours, $LOGPORT_CHDB_VENV
# (default ~/.cache/logport/chdb-venv; about 0.56 GB, which CI caches), without its
# pandas and pyarrow dependencies: the front uses only the engine. The port defaults
# to a free one chosen at random. The server time zone is UTC.
set -euo pipefail

# The engine the tests pin: chdb-core 26.9.0 embeds ClickHouse 26.9.2.1.
version=${LOGPORT_CHDB_CORE_VERSION:-26.9.0}
venv=${LOGPORT_CHDB_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/logport/chdb-venv}
here=$(cd "$(dirname "$0")" && pwd)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The venv's Python, after installing chdb-core into it if needed.
chdb_python() {
  local check="import chdb, sys; sys.exit(chdb.__version__ != '$version')"
  if ! "$venv/bin/python3" -c "$check" 2>/dev/null; then
    echo "installing chdb-core $version into $venv…" >&2
    python3 -m venv "$venv" 2>/dev/null || {
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
      python3 -m venv "$venv"
    }
    "$venv/bin/python3" -m pip install --quiet --no-deps "chdb-core==$version" >&2
    "$venv/bin/python3" -c "$check"
  fi
  echo "$venv/bin/python3"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd=${1:?usage: current-server.sh start|stop DIR [HTTP_PORT] | python}
if [ "$cmd" = python ]; then chdb_python; exit 0; fi
dir=${2:?data directory}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

case "$cmd" in
start)
  if [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
    cat "$dir/url"; exit 0
  fi
  python=$(chdb_python)
  http_port=${3:-$(free_port)}
  mkdir -p "$dir/data" "$dir/log"
  # Every fd redirected: a caller's $(...) must not wait for the server to exit.
  nohup "$python" "$here/chdb-server.py" --data "$dir/data" --port "$http_port" \
    </dev/null >"$dir/log/server.log" 2>&1 &
  echo $! > "$dir/server.pid"
  url="http://127.0.0.1:$http_port"
  for _ in $(seq 1 300); do
    if curl -fsS "$url/?query=SELECT%201" >/dev/null 2>&1; then
      echo "$url" > "$dir/url"; echo "$url"; exit 0
    fi
    if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "chdb-server did not start; see $dir/log/server.log" >&2
  tail -n 30 "$dir/log/server.log" >&2 2>/dev/null || true
  exit 1
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
