#!/usr/bin/env python3
"""A ClickHouse HTTP interface over chDB, so the tests can run on the current engine.

`chdb-core` (PyPI) embeds ClickHouse 26.9 as a library; it cannot listen on a port
itself. This program serves the part of ClickHouse's HTTP interface Logport uses,
over chDB on one data directory, so Logport and its tests talk to it as to a
`clickhouse-server`:

    chdb-server.py --data DIR --port PORT [--host 127.0.0.1]

(`current-server.sh start DIR` runs it in the background; see there.)

What it serves, as ClickHouse does:
- `GET /` and `GET /ping` answer `Ok.`; a query in the `query` URL parameter, in the
  POST body, or both (the body follows the parameter after a newline, so an
  `INSERT INTO t VALUES` in the URL takes its rows from the body).
- INSERT data in the body: for an `INSERT … FORMAT X` in the URL, the body is the data,
  in any format chDB reads, binary too (Native, RowBinary, Parquet…): it is written
  to a temporary file and inserted with `FROM INFILE … FORMAT X`, which makes chDB's
  own format readers do the work.
- A compressed request body (`Content-Encoding`): as INSERT data, every method
  ClickHouse knows (gzip, deflate, br, xz, zstd, lz4, bz2, snappy: `FROM INFILE …
  COMPRESSION`); a query or multipart body, gzip, deflate, xz and bz2.
- Compressed answers: with `enable_http_compression=1`, gzip or deflate when the
  client's `Accept-Encoding` names one (level `http_zlib_compression_level`, default
  3), streamed answers too.
- A `multipart/form-data` body: parts without a file name are parameters (`query`,
  `param_*`, settings), as ClickHouse's form reader takes them.
- `database`, `default_format` (else TabSeparated; a FORMAT clause wins), `param_*`
  query parameters, and every other URL parameter as a setting of that query (it
  runs `SET name = 'value'` first, so an unknown setting fails with code 115).
- External data: the file parts of a `multipart/form-data` body become temporary
  tables named by their form field, typed by `<name>_structure` or `<name>_types`, read
  in `<name>_format` (default TabSeparated), loaded before the query runs. The
  temporary tables and settings belong to the query's own chDB connection.
- `query_id` (default: a fresh UUID): while a query runs, another query of the same
  user with the same id is refused with code 216 (QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING),
  as `replace_running_query = 0` does. The id is held from the moment the request
  is read until its answer is sent, external data loading included.
- `system.processes` lists running queries under their `query_id`, and
  `KILL QUERY WHERE …` selects them by it (see the rewrite below).
- Queries run at once, each in a chDB connection of its own, from a thread per
  HTTP connection (keep-alive; HTTP/1.0 clients get the answer, then EOF).
- Results stream chunk by chunk (chunked transfer encoding) for queries chDB can
  stream (SELECT and the like); others are answered when they are done. A client
  that goes away mid-stream cancels its query, as the server's failed write does;
  an INSERT or DDL whose client left runs to its end, holding its query id.
- Multi-statement queries are refused (code 62), as by ClickHouse's HTTP interface.
- Errors: ClickHouse's status codes and text, `Code: N. DB::Exception: … (NAME)
  (version 26.9.2.1 (official build))`, with `X-ClickHouse-Exception-Code: N`. An
  error after a streamed answer began is written the way 25.11 and later servers
  do: the `X-ClickHouse-Exception-Tag` header names a tag and the body ends with
  `__exception__` framing around the message.
- The server time zone is UTC (TZ=UTC), as `private-server.sh` configures it.

What it does not emulate (Logport does not use it):
- Authentication and users: every query runs as chDB's `default` user; the user
  name (`X-ClickHouse-User`, basic auth, `user`) only scopes query ids.
- ClickHouse's own compressed blocks (`decompress=1` is refused with code 48,
  `compress=1` is ignored: the answer is plain), and br, xz, zstd or lz4 answers
  (`Accept-Encoding` naming only those gets a plain answer, which HTTP allows).
- Sessions (`session_id`), progress headers, `X-ClickHouse-Summary`,
  `wait_end_of_query`, readonly GET, `/play`, `/replicas_status`, HTTPS, the native
  TCP protocol, clusters and Distributed tables (`system.clusters` is empty).
- Binary data in a body that is not INSERT data (the query in the URL ending in
  `FORMAT X`) nor a multipart file part: refused with code 48. Inline data after
  `FORMAT X` in the body itself must be text.
- Request bodies are read whole into memory before the query starts, and a request
  line (the URL with its query) over 64 KiB is refused (Python's limit; ClickHouse's
  `http_max_uri_size` is 1 MiB; Logport's longest, an ingest INSERT, is about 11 KiB).
- The query id is not chDB's own: chDB names its queries itself, so the front sets
  the setting `log_comment` to the id and rewrites, outside string literals,
  `system.processes` (spelled so, not back-quoted) into a view whose `query_id` is
  that `log_comment`, and `query_id` inside a `KILL QUERY` into
  `Settings['log_comment']`. Other columns (`initial_query_id`, the `query_id` column
  KILL answers with) keep chDB's ids, and a client's own `log_comment` is overwritten.
"""

import argparse
import base64
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

# ClickHouse takes its default time zone from TZ; it must be set before chDB loads.
os.environ["TZ"] = "UTC"

# URL parameters that are not settings (ClickHouse's HTTPHandler reserves these).
RESERVED = {
    "query", "database", "default_format", "query_id", "user", "password",
    "quota_key", "session_id", "session_timeout", "session_check", "compress",
    "decompress", "buffer_size", "wait_end_of_query", "role", "stacktrace",
    "http_response_buffer_size", "client_protocol_version",
}

# exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp), by
# error name; the codes come from the engine's own system.errors at start.
STATUS_BY_NAME = {
    401: ["REQUIRED_PASSWORD"],
    403: ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED",
          "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"],
    400: ["BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
          "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING",
          "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
          "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4",
          "CANNOT_PARSE_IPV6", "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
          "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
          "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE",
          "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
          "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA",
          "TYPE_MISMATCH", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"],
    404: ["UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
          "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING",
          "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
          "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY",
          "UNKNOWN_ROLE"],
    413: ["QUERY_IS_TOO_LARGE"],
    501: ["NOT_IMPLEMENTED"],
    503: ["SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"],
    411: ["HTTP_LENGTH_REQUIRED"],
    408: ["TIMEOUT_EXCEEDED"],
    415: ["UNSUPPORTED_MEDIA_TYPE"],
}

SYNTAX_ERROR = 62
NOT_IMPLEMENTED = 48
CANNOT_DECOMPRESS = 271
QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING = 216
STD_EXCEPTION = 1001

# A string literal: what the rewrites below leave alone.
LITERAL = re.compile(r"'(?:[^'\\]|\\.|'')*'", re.S)
# Literals and quoted identifiers, blanked before looking for keywords.
QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|`(?:[^`\\]|\\.|``)*`|\"(?:[^\"\\]|\\.)*\"", re.S)
# An INSERT whose data follows in the body, in the named format.
INSERT_DATA = re.compile(r"^\s*INSERT\s+INTO\b.*?(\bSETTINGS\b.*?)?(\bFORMAT\s+\w+)\s*;?\s*$", re.S | re.I)
# Content-Encoding of a request body -> `FROM INFILE … COMPRESSION` (ClickHouse's names).
INFILE_COMPRESSION = {
    "gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate", "br": "br", "xz": "xz",
    "zstd": "zstd", "lz4": "lz4", "bz2": "bz2", "snappy": "snappy",
}
PROCESSES = re.compile(r"\bsystem\s*\.\s*processes\b", re.I)
PROCESSES_VIEW = (
    "(SELECT * REPLACE (Settings['log_comment'] AS query_id) FROM system.processes)"
)
KILL_QUERY = re.compile(r"^\s*KILL\s+QUERY\b", re.I)
QUERY_ID = re.compile(r"\bquery_id\b")


def outside_literals(sql, pattern, replacement):
    """`pattern` replaced by `replacement` everywhere but inside string literals."""
    out, pos = [], 0
    for m in LITERAL.finditer(sql):
        out.append(pattern.sub(replacement, sql[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(pattern.sub(replacement, sql[pos:]))
    return "".join(out)


def blank(m):
    """A quoted literal or identifier as spaces of its length (offsets stay the same)."""
    return " " * len(m.group(0))


def quote(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Failure(Exception):
    """A ClickHouse exception: its code and its text (`Code: N. DB::Exception: …`)."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


class Engine:
    """chDB on one data directory, and what the front keeps beside it."""

    def __init__(self, data_dir):
        from chdb import _chdb  # ~0.5 GB library: loaded once, after TZ is set

        self._chdb = _chdb
        self.path = f"file:{data_dir}"
        self.tmp = os.path.join(data_dir, "front-tmp")
        os.makedirs(self.tmp, exist_ok=True)
        # Held open for the whole run: chDB keeps its engine while a connection lives.
        self.main = _chdb.connect(self.path)
        self.version = self.main.query("SELECT version()", "TSV").bytes().decode().strip()
        names = [n for names in STATUS_BY_NAME.values() for n in names]
        rows = self.main.query(
            "SELECT DISTINCT name, code FROM system.errors WHERE name IN ("
            + ", ".join(quote(n) for n in names)
            + ") SETTINGS system_events_show_zero_values = 1",
            "TSV",
        ).bytes().decode()
        code_of = dict(line.split("\t") for line in rows.splitlines())
        self.status_of = {
            int(code_of[n]): status
            for status, names in STATUS_BY_NAME.items()
            for n in names
            if n in code_of
        }
        self.running = set()  # (user, query_id) of the queries under way
        self.lock = threading.Lock()

    def connect(self):
        return self._chdb.connect(self.path)

    def failure(self, error):
        """The ClickHouse exception for whatever chDB or the front raised."""
        if isinstance(error, Failure):
            return error
        text = str(error).strip()
        m = re.search(r"Code: (\d+)\. DB::Exception", text)
        if m:
            text = text[m.start():]
            code = int(m.group(1))
        else:
            code = STD_EXCEPTION
            text = f"Code: {code}. DB::Exception: {text}. (STD_EXCEPTION)"
        return Failure(code, f"{text} (version {self.version} (official build))")

    def error(self, code, message, name):
        return Failure(
            code,
            f"Code: {code}. DB::Exception: {message}. ({name}) "
            f"(version {self.version} (official build))",
        )

    def hold(self, user, query_id):
        """Registers a running query id, or fails as ClickHouse does for a duplicate."""
        with self.lock:
            if (user, query_id) in self.running:
                raise self.error(
                    QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING,
                    f"Query with id = {query_id} is already running",
                    "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING",
                )
            self.running.add((user, query_id))

    def release(self, user, query_id):
        with self.lock:
            self.running.discard((user, query_id))


def parse_multipart(body, content_type):
    """The fields of a multipart/form-data body: [(name, filename or None, bytes)]."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise Failure(NOT_IMPLEMENTED, "multipart body without a boundary")
    delimiter = b"--" + m.group(1).encode()
    fields = []
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        name = re.search(rb'\bname="([^"]*)"', head)
        filename = re.search(rb'\bfilename="([^"]*)"', head)
        if name:
            fields.append((name.group(1).decode(), filename and filename.group(1).decode(), data))
    return fields


def decoded(engine, body, encoding):
    """A request body without its Content-Encoding (the ones Python decodes)."""
    if encoding is None:
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 47)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "xz":
            import lzma

            return lzma.decompress(body)
        if encoding == "bz2":
            import bz2

            return bz2.decompress(body)
    except Exception as e:  # noqa: BLE001 - a damaged body is the client's error
        raise engine.error(
            CANNOT_DECOMPRESS, f"Cannot decode the {encoding} request body: {e}", "CANNOT_DECOMPRESS"
        ) from None
    raise engine.error(
        NOT_IMPLEMENTED,
        f"chdb-server decodes a {encoding} body only when it is INSERT data (the query in "
        "the URL, ending in FORMAT)",
        "NOT_IMPLEMENTED",
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb-server"
    # Headers and body go out in separate writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK (40 ms a query).
    disable_nagle_algorithm = True
    engine: Engine  # set on the class by main()

    def log_message(self, fmt, *args):
        pass  # requests are logged by `log` with their query id and duration

    def log(self, status, query_id, sql, started):
        head = " ".join(sql.split())[:300]
        sys.stderr.write(
            f"{time.strftime('%H:%M:%S')} {status} {time.monotonic() - started:.3f}s "
            f"{query_id} {head}\n"
        )

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away between requests or before its answer

    def do_GET(self):
        self.serve(b"")

    def do_POST(self):
        self.serve(self.read_body())

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def user(self, params):
        user = self.headers.get("X-ClickHouse-User") or params.get("user")
        auth = self.headers.get("Authorization", "")
        if not user and auth.lower().startswith("basic "):
            try:
                user = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            except ValueError:
                user = None
        return user or "default"

    def serve(self, body):
        started = time.monotonic()
        url = urlsplit(self.path)
        # Repeated parameters: the last one wins, as in ClickHouse.
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path not in ("/", "/ping", ""):
            return self.plain(404, f"There is no handle {url.path}\n")
        if url.path == "/ping" or (self.command == "GET" and "query" not in params):
            return self.plain(200, "Ok.\n")
        engine = self.engine
        query_id = params.get("query_id") or str(uuid.uuid4())
        sql = params.get("query", "")
        try:
            external = []
            infile = None  # the body, when it is the data of an INSERT in the URL
            content_type = self.headers.get("Content-Type", "")
            encoding = self.headers.get("Content-Encoding", "").strip().lower() or None
            if encoding == "identity":
                encoding = None
            if params.get("decompress") in ("1", "true"):
                raise engine.error(
                    NOT_IMPLEMENTED,
                    "chdb-server does not emulate ClickHouse's compressed blocks (decompress=1)",
                    "NOT_IMPLEMENTED",
                )
            if encoding is not None and encoding not in INFILE_COMPRESSION:
                raise engine.error(
                    NOT_IMPLEMENTED, f"Unknown Content-Encoding: {encoding}", "NOT_IMPLEMENTED"
                )
            if content_type.startswith("multipart/form-data"):
                # Parts with a file name are external tables; the others are
                # parameters (query, param_*, settings), as ClickHouse's HTMLForm reads.
                for name, filename, data in parse_multipart(decoded(engine, body, encoding), content_type):
                    if filename is None:
                        params[name] = data.decode("utf-8", "replace")
                    else:
                        external.append((name, data))
                sql = params.get("query", "")
            elif body and sql and INSERT_DATA.match(QUOTED.sub(blank, sql)):
                infile = (body, encoding)
            elif body:
                try:
                    text = decoded(engine, body, encoding).decode("utf-8")
                except UnicodeDecodeError:
                    raise engine.error(
                        NOT_IMPLEMENTED,
                        "chdb-server takes binary data in the request body only for an "
                        "INSERT … FORMAT X in the URL, or as external data",
                        "NOT_IMPLEMENTED",
                    ) from None
                sql = f"{sql}\n{text}" if sql else text
            if not sql.strip():
                raise engine.error(SYNTAX_ERROR, "Empty query", "SYNTAX_ERROR")
        except Failure as f:
            self.log(f.code, query_id, sql, started)
            return self.fail(f)
        user = self.user(params)
        try:
            engine.hold(user, query_id)
        except Failure as f:
            self.log(f.code, query_id, sql, started)
            return self.fail(f)
        status = 200
        try:
            status = self.run(sql, params, query_id, external, infile)
        finally:
            engine.release(user, query_id)
            self.log(status, query_id, sql, started)

    def run(self, sql, params, query_id, external, infile):
        """Runs one query on a connection of its own; returns what was answered."""
        engine = self.engine
        conn = engine.connect()
        files = []
        fmt = params.get("default_format") or "TabSeparated"
        self.compressor = self.response_compressor(params)
        try:
            try:
                if infile is not None:
                    sql = self.with_infile(sql, infile, files)
                result, stream = self.execute(conn, sql, params, query_id, external, files, fmt)
            except Exception as e:  # noqa: BLE001 — every failure is ClickHouse's answer
                if not isinstance(e, (Failure, RuntimeError)):
                    traceback.print_exc()
                f = engine.failure(e)
                self.fail(f)
                return f.code
            if stream is not None:
                return self.stream(conn, stream, query_id, fmt)
            return self.whole(result, query_id, fmt)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away
            return 499
        finally:
            conn.close()
            for path in files:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def with_infile(self, sql, infile, files):
        """`INSERT … FORMAT X` whose data is the request body, as `INSERT … FROM INFILE
        'tmp' [COMPRESSION 'c'] FORMAT X` over the body written to a temporary file: how
        chDB takes data of any format, binary (Native, RowBinary…) or text."""
        data, encoding = infile
        fd, path = tempfile.mkstemp(dir=self.engine.tmp, suffix=".insert")
        files.append(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        m = INSERT_DATA.match(QUOTED.sub(blank, sql))
        at = m.start(1) if m.group(1) else m.start(2)
        clause = f"FROM INFILE {quote(path)} "
        if encoding is not None:
            clause += f"COMPRESSION {quote(INFILE_COMPRESSION[encoding])} "
        return sql[:at] + clause + sql[at:]

    def response_compressor(self, params):
        """(Content-Encoding, zlib compressor) when the client asked for a compressed
        answer (`enable_http_compression=1` and Accept-Encoding gzip or deflate)."""
        if params.get("enable_http_compression") not in ("1", "true"):
            return None
        level = int(params.get("http_zlib_compression_level") or 3)
        for e in self.headers.get("Accept-Encoding", "").split(","):
            e = e.split(";")[0].strip().lower()
            if e in ("gzip", "x-gzip"):
                return e, zlib.compressobj(level, zlib.DEFLATED, 31)
            if e == "deflate":
                return e, zlib.compressobj(level, zlib.DEFLATED, 15)
        return None

    def execute(self, conn, sql, params, query_id, external, files, fmt):
        """Starts the query: (whole result, None), or (None, a chDB stream)."""
        kind = conn.classify_query(sql)
        if kind["statement_count"] > 1:
            raise self.engine.error(
                SYNTAX_ERROR, "Syntax error: Multi-statements are not allowed", "SYNTAX_ERROR"
            )
        self.prepare(conn, params, query_id, external, files)
        sql = outside_literals(sql, PROCESSES, PROCESSES_VIEW)
        if KILL_QUERY.match(sql):
            sql = outside_literals(sql, QUERY_ID, "Settings['log_comment']")
        qparams = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        if kind["query_class"].name == "READ_ONLY":
            try:
                return None, conn.send_query(sql, fmt, params=qparams)
            except RuntimeError as e:
                if "Streaming query is not supported" not in str(e):
                    raise
        return conn.query(sql, fmt, params=qparams).bytes(), None

    def prepare(self, conn, params, query_id, external, files):
        """Settings, database and external tables of the query, on its connection."""
        for name, value in params.items():
            if name in RESERVED or name.startswith("param_"):
                continue
            if any(name in (f"{t}_format", f"{t}_structure", f"{t}_types") for t, _ in external):
                continue
            conn.query(f"SET {ident(name)} = {quote(value)}", "TSV")
        conn.query(f"SET log_comment = {quote(query_id)}", "TSV")
        if params.get("database"):
            conn.query(f"USE {ident(params['database'])}", "TSV")
        for name, data in external:
            structure = params.get(f"{name}_structure")
            if structure is None and f"{name}_types" in params:
                types = [t.strip() for t in params[f"{name}_types"].split(",")]
                structure = ", ".join(f"_{i + 1} {t}" for i, t in enumerate(types))
            if structure is None:
                raise self.engine.error(
                    36,
                    f"Neither structure nor types have not been provided for external table {name}. "
                    f"Use fields {name}_structure or {name}_types to do so.",
                    "BAD_ARGUMENTS",
                )
            fmt = params.get(f"{name}_format", "TabSeparated")
            fd, path = tempfile.mkstemp(dir=self.engine.tmp, suffix=".data")
            files.append(path)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            conn.query(
                f"CREATE TEMPORARY TABLE {ident(name)} ({structure}) ENGINE = Memory", "TSV"
            )
            conn.query(
                f"INSERT INTO {ident(name)} SELECT * FROM file({quote(path)}, "
                f"{quote(fmt)}, {quote(structure)})",
                "TSV",
            )

    def headers_for(self, query_id, fmt):
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb-server")

    def whole(self, data, query_id, fmt):
        self.send_response(200)
        self.headers_for(query_id, fmt)
        self.send_header("Content-Type", content_type(fmt))
        if self.compressor:
            encoding, c = self.compressor
            data = c.compress(data) + c.flush()
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return 200

    def stream(self, conn, stream, query_id, fmt):
        """Sends a streaming result as chDB makes it. An error before the first chunk
        is an ordinary error answer; after it, the tagged exception of 25.11+."""

        def next_chunk():
            r = conn.streaming_fetch_result(stream)
            if r is None:
                return None, True
            if r.has_error():
                raise RuntimeError(r.error_message())
            return r.bytes(), r.rows_read() == 0

        try:
            first, done = next_chunk()
        except Exception as e:  # noqa: BLE001
            f = self.engine.failure(e)
            self.fail(f)
            return f.code
        chunked = self.request_version != "HTTP/1.0"
        tag = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(16))
        self.send_response(200)
        self.headers_for(query_id, fmt)
        self.send_header("Content-Type", content_type(fmt))
        self.send_header("X-ClickHouse-Exception-Tag", tag)
        compressor = None
        if self.compressor:
            encoding, compressor = self.compressor
            self.send_header("Content-Encoding", encoding)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

        def write(data, last=False):
            if compressor is not None:
                data = compressor.compress(data) + (compressor.flush() if last else b"")
            if not data:
                return
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)

        try:
            write(first)
            try:
                while not done:
                    data, done = next_chunk()
                    write(data)
                write(b"", last=True)
            except Exception as e:  # noqa: BLE001
                f = self.engine.failure(e)
                message = f.text + "\n"
                write(
                    f"\r\n__exception__\r\n{tag}\r\n{message}{len(message.encode())} {tag}"
                    "\r\n__exception__\r\n".encode(),
                    last=True,
                )
                self.close_connection = True
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                return f.code
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            return 200
        except (BrokenPipeError, ConnectionResetError):
            # The client went away: the query stops, as the server's would.
            if not done:
                try:
                    conn.streaming_cancel_query(stream)
                except RuntimeError:
                    pass
            raise

    def fail(self, f):
        body = (f.text + "\n").encode()
        self.send_response(self.engine.status_of.get(f.code, 500))
        self.send_header("X-ClickHouse-Exception-Code", str(f.code))
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def plain(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def content_type(fmt):
    f = fmt.lower()
    if f.startswith(("rowbinary", "native", "parquet", "arrow", "orc", "avro")):
        return "application/octet-stream"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    return "text/tab-separated-values; charset=UTF-8"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="chDB data directory")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    os.makedirs(args.data, exist_ok=True)
    Handler.engine = Engine(os.path.abspath(args.data))
    server = Server((args.host, args.port), Handler)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(
        f"chdb-server: ClickHouse {Handler.engine.version} (chDB) on "
        f"http://{args.host}:{args.port}, data in {args.data}\n"
    )
    server.serve_forever()
    Handler.engine.main.close()


if __name__ == "__main__":
    main()
