#!/usr/bin/env python3
"""Reads Logport export files with independent readers and compares them with the
rows that were ingested.

    python3 tests/readers/check_exports.py SPEC.json

Run by tests/tests/formats.rs, which ingests a tricky dataset, exports it in every
format and compression, downloads every part and writes SPEC:

    {"datasets": {"<name>": {"key": "<column that identifies a row>",
                             "columns": [{"name": "...", "type": "<ClickHouse type>"}],
                             "rows": [{"<column>": <expected value>, ...}]}},
     "exports": [{"name": "...", "dataset": "<name>", "format": "csv|tsv|jsonl|json|parquet",
                  "compression": "none|gzip|zstd", "utf8_bom": false,
                  "files": ["/tmp/.../<id>-part-00001.csv.gz", ...],
                  "part_rows": [<rows the job view lists for each part>]}]}

Expected values are JSON: integers exact (UInt64 up to 2^64-1), floats as JSON numbers,
DateTime as "YYYY-MM-DD HH:MM:SS" (UTC), Date as "YYYY-MM-DD", null for NULL.

Every part is read on its own (each must be a complete file: header row, JSON document,
Parquet footer) and must hold the rows the job view says; the rows of all parts
together must equal the expected rows (matched by the key column; order is not
guaranteed). Column names and order must be the requested fields.

What each reader is and what it can tell apart (asserted as far as it can):

  csv  pyarrow.csv.read_csv   explicit column types from the catalog (uint64 stays
                              uint64, DateTime → timestamp), newlines_in_values=True,
                              null_values=[""], quoted_strings_can_be_null=False:
                              an empty unquoted field is NULL and "" is the empty
                              string — every value asserted.
       duckdb read_csv        auto-detected types (asserted: integers integer, floats
                              DOUBLE, DateTime TIMESTAMP, Date DATE), string columns
                              declared VARCHAR (auto-detection would turn a string
                              such as "17.1" into DOUBLE); allow_quoted_nulls=false
                              makes "" the empty string and an empty unquoted field
                              NULL — every value asserted. (A column that is NULL in
                              every row of a part gives duckdb nothing to detect a
                              type from: any detected type is accepted there; a
                              float column whose values in a part are all whole
                              numbers may be sniffed as an integer column — in
                              every duckdb text reader.)
       pandas read_csv        dtypes from the catalog (nullable integers as Int64 /
                              UInt64), parse_dates for DateTime/Date. pandas cannot
                              tell a quoted "" from an empty unquoted field: in a
                              Nullable(String) column NULL and "" both read as "".
                              Everything else asserted.
  tsv  (same three readers, tab-separated, no quoting) — ClickHouse's TSV escapes
                              \\t \\n \\r \\\\ \\0 \\' \\b \\f inside values and writes
                              NULL as \\N; no generic reader undoes those escapes, so
                              string fields are unescaped here (the documented TSV
                              convention) after the reader split the records. \\N is
                              declared the null value, so NULL and "" are told apart
                              by every reader.
  jsonl json (stdlib)         the reference: exact integers and floats, null vs "".
       duckdb read_json       auto-detected types asserted (UInt64 → UBIGINT/HUGEINT,
                              DateTime → TIMESTAMP, UUID → UUID or VARCHAR).
       pandas read_json       lines=True, dtype=False. Its default float parser is
                              approximate (1.7976931348623157e308 comes back as
                              1.7976931348623151e308, 5e-324 as 0.0) and
                              precise_float=True refuses subnormal numbers ("Range
                              error"), so floats are compared within 1e-15 relative;
                              integers (UInt64 max too), strings, NULL vs "" exactly,
                              but an integer column with NULLs becomes float64.
                              DateTime stays text (pandas guesses dates only from
                              column names) and is compared as text.
  json json (stdlib)          {"data": [...]}: one object with one member.
       duckdb read_json       unnest(data, recursive := true).
       pandas                 has no orient for an object wrapping a record list:
                              not used.
  parquet pyarrow.parquet     schema asserted exactly: integers keep width and sign,
                              floats are float32/float64, DateTime is timestamp[ms,
                              tz=UTC], Date date32, strings (also enums and UUIDs)
                              string, Nullable columns nullable and the others not;
                              row count in the footer; every value.
       duckdb read_parquet    types asserted (UBIGINT, BIGINT, TIMESTAMP WITH TIME
                              ZONE, ...); every value.
       pandas read_parquet    dtypes asserted (uint64, datetime64[ms, UTC], ...).
                              pandas turns a Nullable integer column into float64
                              (NaN for NULL): those values are compared as floats.
       ClickHouse 26.9        `SELECT * FROM file(path, Parquet)` in chDB
       file(Parquet)          (clickhouse_parquet.py beside this file, run by the
                              Python of deploy/clickhouse/current-server.sh's
                              virtualenv, installed when missing; or
                              $LOGPORT_TEST_CHDB_PYTHON), default settings. Types
                              from DESCRIBE asserted exactly: integers keep width and
                              sign (UInt64, Int8, ...), Float32/Float64, DateTime is
                              DateTime64(3, 'UTC'), Date Date32, strings (enums, UUIDs,
                              LowCardinality) String, Nullable(...) exactly for the
                              Nullable columns; every value (ClickHouse's JSON output:
                              exact 64-bit integers, shortest round-trip floats).

Compressed parts: pyarrow reads the .gz / .zst file itself (codec from the extension),
duckdb too (compression='gzip'/'zstd'); pandas is handed pyarrow's decompressed stream
(its own .zst support needs the optional `zstandard` module). The magic bytes of every
compressed part, UTF-8 validity, the header row and the UTF-8 BOM (present exactly when
asked for) are checked on the raw bytes. Float32 columns are compared at float32
precision (ClickHouse prints the shortest decimal of the float32, e.g. 0.1).

Exit status: 0 every check passed; 1 some failed (each is listed); 2 bad usage;
3 a required Python module or reader is missing (the message says how to install it).
"""

import csv
import datetime as dt
import io
import json
import math
import os
import subprocess
import sys
import traceback

REQUIRED = ("pyarrow", "duckdb", "pandas", "numpy")
INSTALL = 'python3 -m pip install pyarrow duckdb pandas "moto[server]"'

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    import duckdb
    import pandas as pd
except ImportError as e:  # pragma: no cover - the point is the message
    print(
        f"check_exports.py: missing Python module {e.name!r} ({e}). The export reader "
        f"checks need {', '.join(REQUIRED)}: install them with\n    {INSTALL}\n"
        f"(./scripts/test.sh does this when they are missing).",
        file=sys.stderr,
    )
    sys.exit(3)

UTC = dt.timezone.utc
BOM = b"\xef\xbb\xbf"
MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}


# ---------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------


class Col:
    """One column: its name, ClickHouse type and what kind of value it holds."""

    def __init__(self, name, ch_type):
        self.name = name
        self.ch_type = ch_type
        t = ch_type.strip()
        self.nullable = t.startswith("Nullable(")
        if self.nullable:
            t = t[len("Nullable(") : -1]
        if t.startswith("LowCardinality("):
            t = t[len("LowCardinality(") : -1]
        self.base = t
        if t.startswith("Enum8("):
            self.kind = "str"
            self.base = "Enum8"
        elif t in ("String", "UUID"):
            self.kind = "str"
        elif t in ("UInt8", "UInt16", "UInt32", "UInt64", "Int8", "Int16", "Int32", "Int64"):
            self.kind = "int"
        elif t == "Float64":
            self.kind = "float"
        elif t == "Float32":
            self.kind = "float32"
        elif t == "DateTime":
            self.kind = "datetime"
        elif t == "Date":
            self.kind = "date"
        else:
            raise ValueError(f"column {name}: type {ch_type} is not known to the checker")

    def arrow_type(self):
        """The Arrow type Logport's Parquet writer uses (and a typed CSV read asks for)."""
        return {
            "UInt8": pa.uint8(),
            "UInt16": pa.uint16(),
            "UInt32": pa.uint32(),
            "UInt64": pa.uint64(),
            "Int8": pa.int8(),
            "Int16": pa.int16(),
            "Int32": pa.int32(),
            "Int64": pa.int64(),
            "Float32": pa.float32(),
            "Float64": pa.float64(),
            "Date": pa.date32(),
        }.get(self.base, pa.string())

    def pandas_dtype(self):
        if self.kind == "int":
            name = self.base.lower()  # uint64, int8, ...
            return name.capitalize().replace("Uint", "UInt") if self.nullable else name
        if self.kind == "float":
            return "float64"
        if self.kind == "float32":
            return "float32"
        return None  # strings: str; dates: parse_dates

    def expected(self, v):
        """The canonical Python value of an expected JSON value."""
        if v is None:
            return None
        if self.kind == "int":
            return int(v)
        if self.kind == "float":
            return float(v)
        if self.kind == "float32":
            return float(np.float32(v))
        if self.kind == "datetime":
            return dt.datetime.strptime(v, "%Y-%m-%d %H:%M:%S")
        if self.kind == "date":
            return dt.date.fromisoformat(v)
        return str(v)


def is_missing(v):
    if v is None or v is pd.NaT or v is pd.NA:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if isinstance(v, np.floating) and np.isnan(v):
        return True
    return False


def canonical(v, col):
    """A value as a reader returned it, in the same shape as `Col.expected`."""
    if is_missing(v):
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, pd.Timestamp):
        v = v.to_pydatetime()
    if col.kind == "datetime":
        if isinstance(v, str):
            return dt.datetime.strptime(v, "%Y-%m-%d %H:%M:%S")
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            return v.astimezone(UTC).replace(tzinfo=None)
        return v
    if col.kind == "date":
        if isinstance(v, str):
            return dt.date.fromisoformat(v)
        if isinstance(v, dt.datetime):
            if v.time() != dt.time(0):
                return v  # not a plain date: will not compare equal
            return v.date()
        return v
    if col.kind == "str" and not isinstance(v, str):
        return str(v)  # uuid.UUID from duckdb
    return v


def same(a, b, col):
    """Is the value a reader returned (canonical) the expected one?"""
    if a is None or b is None:
        return a is None and b is None
    if col.kind == "int" and isinstance(b, float):
        # A reader that turns this integer column into floats (see its transform).
        return isinstance(a, (int, float)) and float(a) == b
    if col.kind == "int":
        return type(a) is int and a == b
    if isinstance(b, Approx):
        return isinstance(a, (int, float)) and math.isclose(a, b.v, rel_tol=1e-15, abs_tol=1e-307)
    if col.kind == "float":
        return isinstance(a, (int, float)) and not isinstance(a, bool) and float(a) == b
    if col.kind == "float32":
        return isinstance(a, (int, float)) and np.float32(a) == np.float32(b)
    if col.kind == "datetime":
        return isinstance(a, dt.datetime) and a == b
    if col.kind == "date":
        return type(a) is dt.date and a == b
    return isinstance(a, str) and a == b


# ---------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------


class Failure(Exception):
    pass


def raw_bytes(path, compression):
    """The decompressed bytes of a part (pyarrow's codecs), after the magic check."""
    with open(path, "rb") as f:
        head = f.read(4)
    if compression != "none":
        if not head.startswith(MAGIC[compression]):
            raise Failure(f"{path}: not a {compression} stream (starts with {head!r})")
        with pa.input_stream(path, compression=compression) as s:
            return s.read()
    with open(path, "rb") as f:
        return f.read()


def text_stream(path, compression):
    """A binary file object of the decompressed part, for readers without zstd."""
    return io.BytesIO(raw_bytes(path, compression))


TSV_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "0": "\0", "'": "'", "b": "\b", "f": "\f", "a": "\a", "v": "\v"}


def tsv_unescape(s):
    """ClickHouse TabSeparated escaping, undone (\\N as a whole field is NULL and is
    handled by the readers' null value)."""
    if not isinstance(s, str) or "\\" not in s:
        return s
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            out.append(TSV_ESCAPES.get(nxt, nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def duck():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


DUCK_INT = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}


def duck_type_ok(col, t, source):
    """Does an auto-detected (text) or stored (parquet) duckdb type fit the column?"""
    t = str(t).upper()
    if source == "parquet":
        want = {
            "UInt8": "UTINYINT", "UInt16": "USMALLINT", "UInt32": "UINTEGER", "UInt64": "UBIGINT",
            "Int8": "TINYINT", "Int16": "SMALLINT", "Int32": "INTEGER", "Int64": "BIGINT",
            "Float32": "FLOAT", "Float64": "DOUBLE", "DateTime": "TIMESTAMP WITH TIME ZONE",
            "Date": "DATE",
        }.get(col.base, "VARCHAR")
        return t == want
    if col.kind == "int":
        return t in DUCK_INT
    if col.kind in ("float", "float32"):
        return t in ("DOUBLE", "FLOAT")
    if col.kind == "datetime":
        return t == "TIMESTAMP"
    if col.kind == "date":
        return t == "DATE"
    if col.base == "UUID":
        return t in ("UUID", "VARCHAR")
    return t == "VARCHAR"


# ---------------------------------------------------------------------------------
# Readers: each returns (column names, rows as lists, notes) for one part
# ---------------------------------------------------------------------------------


def csv_pyarrow(path, cols, ex, tsv=False):
    parse = (
        pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, newlines_in_values=False)
        if tsv
        else pacsv.ParseOptions(newlines_in_values=True)
    )
    convert = pacsv.ConvertOptions(
        column_types={c.name: (pa.timestamp("s") if c.kind == "datetime" else c.arrow_type()) for c in cols},
        null_values=["\\N"] if tsv else [""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=[],
        false_values=[],
    )
    t = pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    names = t.column_names
    for c in cols:
        if c.name in names and not t.schema.field(c.name).type.equals(
            pa.timestamp("s") if c.kind == "datetime" else c.arrow_type()
        ):
            raise Failure(f"pyarrow typed {c.name} as {t.schema.field(c.name).type}")
    rows = [list(r.values()) for r in t.to_pylist()]
    if tsv:
        rows = unescape_rows(rows, names, cols)
    return names, rows


def unescape_rows(rows, names, cols):
    by = {c.name: c for c in cols}
    strs = [i for i, n in enumerate(names) if n in by and by[n].kind == "str"]
    for r in rows:
        for i in strs:
            r[i] = tsv_unescape(r[i])
    return rows


def csv_duckdb(path, cols, ex, tsv=False):
    con = duck()
    types = "{" + ", ".join(f"{sql_str(c.name)}: 'VARCHAR'" for c in cols if c.kind == "str") + "}"
    opts = ["header = true", f"types = {types}", "auto_detect = true"]
    if tsv:
        opts += ["delim = '\t'", "quote = ''", "escape = ''", "nullstr = '\\N'"]
    else:
        opts += ["allow_quoted_nulls = false"]
    if ex["compression"] != "none":
        opts.append(f"compression = '{ex['compression']}'")
    rel = con.sql(f"SELECT * FROM read_csv({sql_str(path)}, {', '.join(opts)})")
    names = rel.columns
    rows = [list(r) for r in rel.fetchall()]
    check_duck_types(names, rel.types, cols, "text", rows)
    if tsv:
        rows = unescape_rows(rows, names, cols)
    return names, rows


def check_duck_types(names, types, cols, source, rows=None):
    """Detected types must fit; a column that is NULL in every row of a file has
    nothing to detect a type from (duckdb says VARCHAR or "NULL"): any type goes."""
    by = {c.name: c for c in cols}
    empty, whole = set(), set()
    if rows is not None:
        empty = {n for i, n in enumerate(names) if all(r[i] is None for r in rows)}
        # Floats that are all whole numbers in a file ("0", "-0", "16777216") are
        # sniffed as integers; the values still have to be equal.
        whole = {
            n
            for i, n in enumerate(names)
            if source == "text" and all(r[i] is None or type(r[i]) is int for r in rows)
        }

    def ok(n, t):
        c = by[n]
        if n in empty:
            return True
        if n in whole and c.kind in ("float", "float32") and str(t).upper() in DUCK_INT:
            return True
        return duck_type_ok(c, t, source)

    bad = [f"{n}: {t}" for n, t in zip(names, types) if n in by and not ok(n, t)]
    if bad:
        raise Failure(f"duckdb typed columns wrongly: {', '.join(bad)}")


def csv_pandas(path, cols, ex, tsv=False):
    dtypes = {}
    dates = []
    na = {}
    for c in cols:
        d = c.pandas_dtype()
        if c.kind == "str":
            dtypes[c.name] = str
        elif d:
            dtypes[c.name] = d
        else:
            dates.append(c.name)
            dtypes[c.name] = str
        if tsv:
            na[c.name] = ["\\N"]
        elif c.nullable and c.kind != "str":
            na[c.name] = [""]
    kwargs = dict(dtype=dtypes, keep_default_na=False, na_values=na, encoding="utf-8")
    if tsv:
        kwargs.update(sep="\t", quoting=csv.QUOTE_NONE)
    else:
        kwargs.update(na_filter=True)
    df = pd.read_csv(text_stream(path, ex["compression"]), **kwargs)
    for name in dates:
        c = next(c for c in cols if c.name == name)
        fmt = "%Y-%m-%d %H:%M:%S" if c.kind == "datetime" else "%Y-%m-%d"
        df[name] = pd.to_datetime(df[name], format=fmt)
    names = list(df.columns)
    check_pandas_types(df, cols, "text")
    rows = [list(r) for r in df.astype(object).itertuples(index=False, name=None)]
    if tsv:
        rows = unescape_rows(rows, names, cols)
    return names, rows


def check_pandas_types(df, cols, source):
    bad = []
    for c in cols:
        if c.name not in df.columns:
            continue
        got = str(df[c.name].dtype)
        if c.kind == "int":
            want = c.base.lower()
            if c.nullable:
                want = "float64" if source == "parquet" else c.pandas_dtype()
        elif c.kind == "float":
            want = "float64"
        elif c.kind == "float32":
            want = "float32"
        elif c.kind == "datetime":
            want = "datetime64[ms, UTC]" if source == "parquet" else "datetime64[ns]|datetime64[s]|datetime64[us]"
        elif c.kind == "date":
            want = "object" if source == "parquet" else "datetime64[ns]|datetime64[s]|datetime64[us]"
        else:
            want = "object|str|string"
        if got not in want.split("|"):
            bad.append(f"{c.name}: {got} (want {want})")
    if bad:
        raise Failure(f"pandas dtypes: {', '.join(bad)}")


def jsonl_stdlib(path, cols, ex):
    text = raw_bytes(path, ex["compression"]).decode("utf-8")
    if not text.endswith("\n"):
        raise Failure("the last JSON line has no newline")
    names, rows = None, []
    for i, line in enumerate(text.split("\n")[:-1], 1):
        obj = json.loads(line, parse_float=float, parse_int=int)
        if not isinstance(obj, dict):
            raise Failure(f"line {i} is not an object")
        if names is None:
            names = list(obj)
        if list(obj) != names:
            raise Failure(f"line {i} has members {list(obj)}, line 1 {names}")
        rows.append(list(obj.values()))
    return names or [c.name for c in cols], rows


def json_stdlib(path, cols, ex):
    doc = json.loads(raw_bytes(path, ex["compression"]).decode("utf-8"))
    if not isinstance(doc, dict) or list(doc) != ["data"] or not isinstance(doc["data"], list):
        raise Failure('the document is not {"data": [...]}')
    names = list(doc["data"][0]) if doc["data"] else [c.name for c in cols]
    for i, obj in enumerate(doc["data"]):
        if list(obj) != names:
            raise Failure(f"record {i} has members {list(obj)}")
    return names, [list(o.values()) for o in doc["data"]]


def json_duckdb(path, cols, ex, wrapped=False):
    con = duck()
    comp = "" if ex["compression"] == "none" else f", compression = '{ex['compression']}'"
    if wrapped:
        q = f"SELECT unnest(data, recursive := true) FROM read_json({sql_str(path)}, format = 'auto'{comp})"
    else:
        q = f"SELECT * FROM read_json({sql_str(path)}, format = 'newline_delimited'{comp})"
    rel = con.sql(q)
    names = rel.columns
    rows = [list(r) for r in rel.fetchall()]
    check_duck_types(names, rel.types, cols, "text", rows)
    return names, rows


def jsonl_pandas(path, cols, ex):
    df = pd.read_json(text_stream(path, ex["compression"]), lines=True, dtype=False)
    bad = []
    for c in cols:
        if c.kind == "int" and not c.nullable and c.name in df.columns:
            got = str(df[c.name].dtype)
            if got not in ("int64", "uint64"):
                bad.append(f"{c.name}: {got}")
    if bad:
        raise Failure(f"pandas read integer columns as {', '.join(bad)}")
    return list(df.columns), [list(r) for r in df.astype(object).itertuples(index=False, name=None)]


def parquet_pyarrow(path, cols, ex):
    f = pq.ParquetFile(path)
    schema = f.schema_arrow
    bad = []
    for c in cols:
        if c.name not in schema.names:
            continue
        field = schema.field(c.name)
        want = pa.timestamp("ms", tz="UTC") if c.kind == "datetime" else c.arrow_type()
        got = field.type
        if pa.types.is_large_string(got) and want == pa.string():
            got = pa.string()
        if not got.equals(want):
            bad.append(f"{c.name}: {field.type} (want {want})")
        if field.nullable != c.nullable:
            bad.append(f"{c.name}: nullable={field.nullable} (want {c.nullable})")
    if bad:
        raise Failure(f"parquet schema: {'; '.join(bad)}")
    codecs = {f.metadata.row_group(g).column(i).compression for g in range(f.num_row_groups) for i in range(f.metadata.num_columns)}
    if codecs and codecs != {"ZSTD"}:
        raise Failure(f"parquet column chunks are compressed with {codecs}, not ZSTD")
    t = f.read()
    if f.metadata.num_rows != t.num_rows:
        raise Failure(f"footer says {f.metadata.num_rows} rows, read {t.num_rows}")
    return t.column_names, [list(r.values()) for r in t.to_pylist()]


def parquet_duckdb(path, cols, ex):
    con = duck()
    rel = con.sql(f"SELECT * FROM read_parquet({sql_str(path)})")
    check_duck_types(rel.columns, rel.types, cols, "parquet")
    return rel.columns, [list(r) for r in rel.fetchall()]


def parquet_pandas(path, cols, ex):
    df = pd.read_parquet(path)
    check_pandas_types(df, cols, "parquet")
    return list(df.columns), [list(r) for r in df.astype(object).itertuples(index=False, name=None)]


HERE = os.path.dirname(os.path.abspath(__file__))


class ClickHouseFiles:
    """What ClickHouse 26.9 read from every Parquet file of the spec: one chDB process
    for all of them (loading the engine takes a second)."""

    version = None
    files = {}

    @classmethod
    def load(cls, paths):
        python = os.environ.get("LOGPORT_TEST_CHDB_PYTHON")
        if not python:
            server = os.path.join(HERE, "..", "..", "deploy", "clickhouse", "current-server.sh")
            got = subprocess.run([server, "python"], capture_output=True, text=True)
            if got.returncode != 0:
                print(
                    "check_exports.py: ClickHouse 26.9 (chdb-core) is missing and "
                    f"`deploy/clickhouse/current-server.sh python` could not install it:\n"
                    f"{got.stderr}",
                    file=sys.stderr,
                )
                sys.exit(3)
            python = got.stdout.strip()
        got = subprocess.run(
            [python, os.path.join(HERE, "clickhouse_parquet.py"), *paths],
            capture_output=True,
            text=True,
        )
        if got.returncode != 0:
            raise RuntimeError(f"clickhouse_parquet.py failed ({got.returncode}):\n{got.stderr}")
        doc = json.loads(got.stdout)
        cls.version, cls.files = doc["version"], doc["files"]


def clickhouse_type(col):
    """The type ClickHouse's Parquet schema inference should give the column."""
    t = {"Float32": "Float32", "Float64": "Float64", "DateTime": "DateTime64(3, 'UTC')",
         "Date": "Date32"}.get(col.base)
    if t is None:
        t = col.base if col.kind == "int" else "String"
    return f"Nullable({t})" if col.nullable else t


def parquet_clickhouse(path, cols, ex):
    got = ClickHouseFiles.files.get(path)
    if got is None:
        raise Failure(f"{path}: not read by ClickHouse")
    if "error" in got:
        raise Failure(f"ClickHouse cannot read {path}: {got['error']}")
    names = [n for n, _ in got["columns"]]
    by = {c.name: c for c in cols}
    bad = [
        f"{n}: {t} (want {clickhouse_type(by[n])})"
        for n, t in got["columns"]
        if n in by and t != clickhouse_type(by[n])
    ]
    if bad:
        raise Failure(f"ClickHouse typed columns wrongly: {', '.join(bad)}")
    rows = []
    for r in got["rows"]:
        row = []
        for n, v in zip(names, r):
            c = by.get(n)
            if c is not None and isinstance(v, str):
                if c.kind == "datetime":
                    v = dt.datetime.fromisoformat(v)  # DateTime64(3, 'UTC'): naive UTC
                elif c.kind == "date":
                    v = dt.date.fromisoformat(v)
                elif c.kind in ("float", "float32"):
                    v = float(v)  # "inf", "-inf", "nan"
            row.append(v)
        rows.append(row)
    return names, rows


# A reader: (name, function, expected-value transform for what it cannot represent).
def pandas_csv_strings(col, v):
    # A quoted "" and an empty unquoted field are the same to pandas.
    return "" if (col.kind == "str" and v is None) else v


def pandas_parquet_nullable_ints(col, v):
    # Nullable integer columns become float64.
    return float(v) if (col.kind == "int" and col.nullable and v is not None) else v


class Approx:
    """An expected float a reader only gets approximately (within 1e-15 relative)."""

    def __init__(self, v):
        self.v = v

    def __repr__(self):
        return f"≈{self.v!r}"


def pandas_json_floats(col, v):
    # read_json's default float parser is approximate (1.7976931348623157e308 comes back
    # as 1.7976931348623151e308, 5e-324 as 0.0); precise_float=True is exact but
    # refuses subnormal numbers ("Range error when decoding numeric as double").
    # And, as for Parquet, an integer column with NULLs becomes float64.
    if col.kind == "float" and v is not None:
        return Approx(v)
    return pandas_parquet_nullable_ints(col, v)


READERS = {
    "csv": [
        ("pyarrow.csv.read_csv", csv_pyarrow, None),
        ("duckdb.read_csv", csv_duckdb, None),
        ("pandas.read_csv", csv_pandas, pandas_csv_strings),
    ],
    "tsv": [
        ("pyarrow.csv.read_csv(tsv)", lambda p, c, e: csv_pyarrow(p, c, e, tsv=True), None),
        ("duckdb.read_csv(tsv)", lambda p, c, e: csv_duckdb(p, c, e, tsv=True), None),
        ("pandas.read_csv(tsv)", lambda p, c, e: csv_pandas(p, c, e, tsv=True), None),
    ],
    "jsonl": [
        ("json (stdlib)", jsonl_stdlib, None),
        ("duckdb.read_json", json_duckdb, None),
        ("pandas.read_json(lines)", jsonl_pandas, pandas_json_floats),
    ],
    "json": [
        ("json (stdlib)", json_stdlib, None),
        ("duckdb.read_json+unnest", lambda p, c, e: json_duckdb(p, c, e, wrapped=True), None),
    ],
    "parquet": [
        ("pyarrow.parquet", parquet_pyarrow, None),
        ("duckdb.read_parquet", parquet_duckdb, None),
        ("pandas.read_parquet", parquet_pandas, pandas_parquet_nullable_ints),
        ("clickhouse file(Parquet)", parquet_clickhouse, None),
    ],
}


# ---------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------


def check_raw(ex, cols, path, n_rows):
    """Byte-level facts: compression magic, BOM, header row, UTF-8."""
    if ex["format"] == "parquet":
        with open(path, "rb") as f:
            data = f.read()
        if not (data[:4] == b"PAR1" and data[-4:] == b"PAR1"):
            raise Failure(f"{path}: not a Parquet file")
        return
    data = raw_bytes(path, ex["compression"])
    has_bom = data.startswith(BOM)
    if has_bom != bool(ex.get("utf8_bom")):
        raise Failure(f"{path}: BOM present={has_bom}, asked for {bool(ex.get('utf8_bom'))}")
    text = data.decode("utf-8")  # raises on invalid UTF-8
    if has_bom:
        text = text[1:]
    if ex["format"] in ("csv", "tsv"):
        sep = "," if ex["format"] == "csv" else "\t"
        header = text.split("\n", 1)[0]
        if header != sep.join(c.name for c in cols):
            raise Failure(f"{path}: header row {header!r}")
    if ex["format"] == "jsonl" and text.count("\n") != n_rows:
        raise Failure(f"{path}: {text.count(chr(10))} lines for {n_rows} rows")


def compare(ex, reader, names, got_rows, ds, cols, transform):
    want_names = [c.name for c in cols]
    if list(names) != want_names:
        raise Failure(f"columns {list(names)}, want {want_names}")
    key = ds["key"]
    ki = want_names.index(key)
    expected = {}
    for r in ds["rows"]:
        expected[r[key]] = [c.expected(r.get(c.name)) for c in cols]
    got = {}
    for r in got_rows:
        k = canonical(r[ki], cols[ki])
        if k in got:
            raise Failure(f"row {k!r} twice")
        got[k] = [canonical(v, c) for v, c in zip(r, cols)]
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise Failure(f"rows missing {missing}, unexpected {extra}")
    diffs = []
    for k, want in expected.items():
        for c, w, g in zip(cols, want, got[k]):
            if transform:
                w = transform(c, w)
            if not same(g, w, c):
                diffs.append(f"row {k!r} column {c.name} ({c.ch_type}): got {g!r}, want {w!r}")
    if diffs:
        raise Failure(f"{len(diffs)} values differ:\n      " + "\n      ".join(diffs[:25]))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    failures = []
    checked = 0
    parquet = [f for ex in spec["exports"] if ex["format"] == "parquet" for f in ex["files"]]
    clickhouse = ""
    if parquet:
        ClickHouseFiles.load(parquet)
        clickhouse = f", ClickHouse {ClickHouseFiles.version} (chDB)"
    print(
        f"readers: pyarrow {pa.__version__}, duckdb {duckdb.__version__}, "
        f"pandas {pd.__version__}{clickhouse}"
    )
    for ex in spec["exports"]:
        ds = spec["datasets"][ex["dataset"]]
        cols = [Col(c["name"], c["type"]) for c in ds["columns"]]
        files, part_rows = ex["files"], ex["part_rows"]
        if len(files) != len(part_rows) or not files:
            failures.append(f"{ex['name']}: {len(files)} files for {len(part_rows)} parts")
            continue
        try:
            for path, n in zip(files, part_rows):
                check_raw(ex, cols, path, n)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failures.append(f"{ex['name']}: {e}")
            continue
        for reader, fn, transform in READERS[ex["format"]]:
            try:
                names, rows = None, []
                for path, n in zip(files, part_rows):
                    part_names, part = fn(path, cols, ex)
                    if len(part) != n:
                        raise Failure(f"{path}: {len(part)} rows, the job says {n}")
                    if names is not None and list(part_names) != list(names):
                        raise Failure(f"{path}: columns differ between parts")
                    names = part_names
                    rows.extend(part)
                compare(ex, reader, names, rows, ds, cols, transform)
                checked += 1
                print(f"ok    {ex['name']:<28} {reader:<26} {len(rows):>5} rows in {len(files)} part(s)")
            except Failure as e:
                failures.append(f"{ex['name']} / {reader}: {e}")
                print(f"FAIL  {ex['name']:<28} {reader:<26} {e}")
            except Exception as e:  # noqa: BLE001 - a reader that cannot read the file fails
                failures.append(f"{ex['name']} / {reader}: {type(e).__name__}: {e}")
                print(f"FAIL  {ex['name']:<28} {reader:<26} {type(e).__name__}: {e}")
                traceback.print_exc()
    if failures:
        print(f"\n{len(failures)} check(s) failed ({checked} passed):")
        for f in failures:
            print(f"  - {f}")
        return 1
    print(f"\nall {checked} reader checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
