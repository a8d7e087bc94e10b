#!/usr/bin/env python3
"""Reads Parquet files with ClickHouse 26.9 (chDB), as a BI user's `file()` does.

    PYTHON_WITH_CHDB clickhouse_parquet.py FILE...

Run by check_exports.py with the Python of deploy/clickhouse/current-server.sh's
virtualenv (chdb-core, pinned there). For every file, with the engine's default
settings (schema inference takes nullability from the Parquet schema):

    DESCRIBE file('FILE', Parquet)
    SELECT * FROM file('FILE', Parquet)   -- as JSONCompactEachRow

Prints one JSON document: {"version": "<SELECT version()>", "files": {FILE:
{"columns": [[name, type], ...], "rows": [[value, ...], ...]} or {"error": "..."}}}.
Values are ClickHouse's JSON: 64-bit integers as numbers
(output_format_json_quote_64bit_integers = 0), non-finite floats as "inf", "-inf",
"nan" strings (output_format_json_quote_denormals = 1), DateTime64 and Date32 as
text.
"""

import json
import os
import sys

os.environ["TZ"] = "UTC"  # before the engine loads, as chdb-server.py does

import chdb  # noqa: E402

OUTPUT = (
    " SETTINGS output_format_json_quote_64bit_integers = 0,"
    " output_format_json_quote_denormals = 1"
)


def literal(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main():
    conn = chdb.connect(":memory:")
    version = conn.query("SELECT version()", "TSV").bytes().decode().strip()
    files = {}
    for path in sys.argv[1:]:
        source = f"file({literal(os.path.abspath(path))}, Parquet)"
        try:
            described = conn.query(f"DESCRIBE {source}", "JSONCompactEachRow").bytes()
            columns = [json.loads(line)[:2] for line in described.decode().splitlines()]
            data = conn.query(f"SELECT * FROM {source}{OUTPUT}", "JSONCompactEachRow").bytes()
            rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
            files[path] = {"columns": columns, "rows": rows}
        except Exception as e:  # noqa: BLE001 - reported per file by check_exports.py
            files[path] = {"error": f"{type(e).__name__}: {e}"}
    json.dump({"version": version, "files": files}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
