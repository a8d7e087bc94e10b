#!/usr/bin/env python3
"""Runs Logport's ingest and export benchmarks next to clickhouse-client.

Called by bench/run.sh, which builds the release binary, starts a private ClickHouse
and generates the data. Each measurement is wall-clock time; peak RSS is sampled
from /proc (Logport's server process) or taken from getrusage (clickhouse-client).
"""

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

TOKEN = "bench-token-0001"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RssSampler:
    """Samples a process's resident memory every 50 ms; keeps the maximum."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _rss(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.05)

    def __enter__(self):
        self.peak = self._rss()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def child_run(cmd, stdin=None, stdout=None):
    """Runs a command; returns (seconds, peak RSS bytes of that command)."""
    report = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-time-{os.getpid()}")
    t0 = time.monotonic()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report] + cmd,
                   stdin=stdin, stdout=stdout, check=True)
    secs = time.monotonic() - t0
    with open(report) as f:
        kib = int(f.read().strip().splitlines()[-1])
    os.remove(report)
    return secs, kib * 1024


def api(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data=data, timeout=3600) as r:
        return json.loads(r.read() or b"null")


def ch_query(url, sql):
    with urllib.request.urlopen(url + "/", data=sql.encode(), timeout=600) as r:
        return r.read().decode()


def mib(n):
    return f"{n / 1048576:.0f} MiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--clickhouse", required=True)
    ap.add_argument("--tcp-port", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--fields", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    fields = a.fields.split(",")
    size = os.path.getsize(a.data)
    results = []
    env_base = dict(os.environ, RUST_LOG="warn", LOGPORT_CLICKHOUSE_URL=a.clickhouse,
                    LOGPORT_STATIC_TOKENS=f"{TOKEN}@bench", LOGPORT_WORKERS="2",
                    LOGPORT_MAX_RANGE_DAYS="3660", LOGPORT_INGEST_MAX_BYTES=str(256 << 20),
                    LOGPORT_INGEST_MAX_INFLIGHT_BYTES=str(1024 << 20))

    # --- ingest: clickhouse-client -------------------------------------------------
    subprocess.run([a.bin, "migrate"], check=True,
                   env=dict(env_base, LOGPORT_CLICKHOUSE_DATABASE="bench_client"))
    cols = ", ".join(fields)
    with open(a.data, "rb") as f:
        secs, rss = child_run(["clickhouse-client", "--port", a.tcp_port, "--query",
                               f"INSERT INTO bench_client.clicks ({cols}) FORMAT JSONEachRow"],
                              stdin=f)
    n = int(ch_query(a.clickhouse, "SELECT count() FROM bench_client.clicks"))
    assert n == a.rows, f"clickhouse-client stored {n} rows"
    base_ingest = secs
    results.append(("ingest NDJSON", "clickhouse-client INSERT … FORMAT JSONEachRow", secs, rss, a.rows))
    ch_query(a.clickhouse, "DROP DATABASE bench_client")

    # --- ingest: logport -----------------------------------------------------------
    port = free_port()
    store = os.path.join(a.work, "exports")
    shutil.rmtree(store, ignore_errors=True)
    env = dict(env_base, LOGPORT_CLICKHOUSE_DATABASE="bench_logport",
               LOGPORT_LISTEN=f"127.0.0.1:{port}",
               LOGPORT_OBJECT_STORE_URL=f"file://{store}",
               LOGPORT_JOB_STORE_URL=f"sqlite://{a.work}/jobs-{port}.db")
    ch_query(a.clickhouse, "DROP DATABASE IF EXISTS bench_logport")
    server = subprocess.Popen([a.bin, "serve"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with RssSampler(server.pid) as s:
            t0 = time.monotonic()
            subprocess.run([a.bin, "ingest", a.data, "--slice", "clicks", "--url", base,
                            "--token", TOKEN, "--batch-rows", "100000", "--concurrency", "2",
                            "--quiet"], check=True)
            secs = time.monotonic() - t0
        n = int(ch_query(a.clickhouse, "SELECT count() FROM bench_logport.clicks"))
        assert n == a.rows, f"logport stored {n} rows"
        results.append(("ingest NDJSON", "logport ingest → POST /v1/ingest (server RSS)", secs, s.peak, a.rows))
        ingest_ratio = base_ingest / secs

        # --- exports -------------------------------------------------------------------
        # A fresh process, so the exports' peak RSS is theirs, not what the allocator
        # kept from ingest.
        server.terminate()
        server.wait(timeout=60)
        server = subprocess.Popen([a.bin, "serve"], env=env)
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        where = "tenant_id = 'bench'"
        sel = f"SELECT {', '.join(fields)} FROM bench_logport.clicks WHERE {where}"
        baselines = {}
        for fmt, ch_fmt in (("csv", "CSVWithNames"), ("jsonl", "JSONEachRow")):
            out = os.path.join(a.work, f"client.{fmt}")
            with open(out, "wb") as f:
                secs, rss = child_run(["clickhouse-client", "--port", a.tcp_port,
                                       "--output_format_json_quote_64bit_integers", "0",
                                       "--query", f"{sel} FORMAT {ch_fmt}"], stdout=f)
            os.remove(out)
            baselines[fmt] = secs
            results.append((f"export {fmt}", f"clickhouse-client … FORMAT {ch_fmt} > file", secs, rss, a.rows))
        ratios = {}
        for fmt in ("csv", "jsonl", "parquet"):
            body = {"slice": "clicks", "date_since": "2026-10-01", "date_until": "2026-12-31",
                    "fields": fields, "format": fmt}
            with RssSampler(server.pid) as s:
                t0 = time.monotonic()
                job = api(base, "POST", "/v1/exports", body)
                while job["status"] in ("queued", "running"):
                    time.sleep(0.05)
                    job = api(base, "GET", f"/v1/exports/{job['id']}")
                secs = time.monotonic() - t0
            assert job["status"] == "succeeded", job
            assert job["progress"]["rows"] == a.rows, job["progress"]
            results.append((f"export {fmt}", "logport export job (server RSS)", secs, s.peak, a.rows))
            ratios[fmt] = secs
            shutil.rmtree(store, ignore_errors=True)
    finally:
        server.terminate()
        server.wait(timeout=60)

    lines = [
        f"Measured {datetime.date.today()} on this machine ({os.cpu_count()} cores), "
        f"{a.rows:,} clicks × {len(fields)} fields ({mib(size)} of NDJSON), ClickHouse "
        f"{ch_query(a.clickhouse, 'SELECT version()').strip()} on the same cores.",
        "",
        "| task | tool | seconds | rows/s | peak RSS |",
        "|---|---|---:|---:|---:|",
    ]
    for task, tool, secs, rss, rows in results:
        lines.append(f"| {task} | {tool} | {secs:.1f} | {rows / secs:,.0f} | {mib(rss)} |")
    lines += [
        "",
        f"- ingest: Logport reaches **{ingest_ratio:.2f}×** clickhouse-client's throughput (target ≥ 0.8×).",
        f"- CSV export: **{baselines['csv'] / ratios['csv']:.2f}×** clickhouse-client (target ≥ 1.0×); "
        f"JSON lines **{baselines['jsonl'] / ratios['jsonl']:.2f}×**.",
        f"- Parquet takes **{ratios['parquet'] / ratios['csv']:.2f}×** our CSV time (target ≤ 1.5×).",
    ]
    text = "\n".join(lines) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
