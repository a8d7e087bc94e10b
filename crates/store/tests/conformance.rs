//! The store's conformance suite: its typed API against the real ClickHouse named by
//! `LOGPORT_TEST_CLICKHOUSE_URL`, whatever its version (CI runs it on 18.16 and on
//! a current server). Without that variable every test fails; none skips. Each test
//! works in a database of its own, dropped at its end.
//!
//! Run: `LOGPORT_TEST_CLICKHOUSE_URL=http://127.0.0.1:8123 cargo test -p logport-store`.

use std::path::Path;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMillisecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::Array;
use arrow_schema::{DataType, TimeUnit};
use logport_catalog::ingest::{parse_line, LineEncoder, RowSink};
use logport_catalog::{time, Catalog, ColumnType, ExportRequest, ExportSpec, Format, Value};
use logport_store::{
    Bounds, Encoding, IngestBlock, RetentionPolicy, Selection, Slice, Store, StoreConfig,
};
use serde_json::{json, Value as Json};

const TENANT: &str = "acme";
const OTHER: &str = "globex";

/// A slice with a field of every column type the catalog knows, each filterable.
const KINDS: &str = r#"
name = "kinds"
description = "Every column type"
group = "system"
retention_days = 7
partition = "day"
sort_key = ["lc"]

[[fields]]
name = "s"
type = "String"
description = "text"
filterable = true
default = true

[[fields]]
name = "lc"
type = "LowCardinality(String)"
description = "repetitive text"
filterable = true
default = true

[[fields]]
name = "ns"
type = "Nullable(String)"
description = "optional text"
filterable = true
default = true

[[fields]]
name = "u8"
type = "UInt8"
description = "u8"
filterable = true
default = true

[[fields]]
name = "u16"
type = "UInt16"
description = "u16"
filterable = true
default = true

[[fields]]
name = "u32"
type = "UInt32"
description = "u32"
filterable = true
default = true

[[fields]]
name = "u64"
type = "UInt64"
description = "u64"
filterable = true
default = true

[[fields]]
name = "i8"
type = "Int8"
description = "i8"
filterable = true
default = true

[[fields]]
name = "i16"
type = "Int16"
description = "i16"
filterable = true
default = true

[[fields]]
name = "i32"
type = "Int32"
description = "i32"
filterable = true
default = true

[[fields]]
name = "i64"
type = "Int64"
description = "i64"
filterable = true
default = true

[[fields]]
name = "f32"
type = "Float32"
description = "f32"
filterable = true
default = true

[[fields]]
name = "f64"
type = "Float64"
description = "f64"
filterable = true
default = true

[[fields]]
name = "d"
type = "Date"
description = "date"
filterable = true
default = true

[[fields]]
name = "dt"
type = "DateTime"
description = "time"
filterable = true
default = true

[[fields]]
name = "ndt"
type = "Nullable(DateTime)"
description = "optional time"
filterable = true
default = true

[[fields]]
name = "uid"
type = "UUID"
description = "uuid"
filterable = true
default = true

[[fields]]
name = "e"
type = "Enum8('n' = -2, 'a' = 1, 'b' = 3)"
description = "enum"
filterable = true
default = true

[[fields]]
name = "nu64"
type = "Nullable(UInt64)"
description = "optional number"
filterable = true
default = true
"#;

fn clickhouse_url() -> String {
    match std::env::var("LOGPORT_TEST_CLICKHOUSE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "LOGPORT_TEST_CLICKHOUSE_URL is not set: the store conformance suite needs a \
             ClickHouse server (deploy/clickhouse/private-server.sh start DIR prints one)"
        ),
    }
}

/// The repository's slices and `kinds`.
fn catalog() -> Catalog {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("schemas/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("schema file");
            (p.display().to_string(), text)
        })
        .collect();
    files.push(("kinds.toml".into(), KINDS.into()));
    Catalog::from_files(files).expect("catalog")
}

/// A store on a database of its own, migrated, and dropped when the test ends well.
struct Db {
    store: Store,
    catalog: Catalog,
    url: String,
    database: String,
}

impl Db {
    async fn new(test: &str) -> Db {
        let url = clickhouse_url();
        let database = format!(
            "conformance_{test}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
        );
        let catalog = catalog();
        let store = Store::connect(&StoreConfig {
            url: url.clone(),
            database: database.clone(),
            ..StoreConfig::default()
        })
        .await
        .unwrap_or_else(|e| panic!("ClickHouse at {url} is not answering ({e}); tests need it"))
        .with_retention(RetentionPolicy::from_catalog(&catalog));
        store.migrate(&catalog).await.expect("migrate");
        Db {
            store,
            catalog,
            url,
            database,
        }
    }

    fn slice(&self, name: &str) -> &Slice {
        self.catalog.slice(name).expect("slice")
    }

    /// Raw SQL, for what the typed API must not offer (system tables, back-dating).
    async fn sql(&self, sql: &str) -> String {
        let resp = reqwest::Client::new()
            .post(&self.url)
            .body(sql.to_string())
            .send()
            .await
            .expect("ClickHouse answers");
        let ok = resp.status().is_success();
        let text = resp.text().await.expect("body");
        assert!(ok, "{sql}: {text}");
        text
    }

    async fn drop(self) {
        self.store.drop_database().await.expect("drop database");
    }

    /// Stores NDJSON lines of one tenant as ingest does, received at `received`
    /// (and 123 ms), half through the line encoder and half as values.
    async fn insert(&self, slice: &str, tenant: &str, lines: &[Json], received: u32) {
        let slice = self.slice(slice);
        let mut block =
            IngestBlock::new(slice, tenant, i64::from(received) * 1000 + 123).expect("block");
        assert_eq!(block.received_time(), received);
        let ctx = block.context(None);
        let mut encoder = LineEncoder::<IngestBlock>::new(slice).expect("encoder");
        let at = slice
            .fields
            .iter()
            .position(|f| f.name == "event_time")
            .expect("event_time");
        let (mut min, mut max) = (u32::MAX, 0);
        for (i, line) in lines.iter().enumerate() {
            let text = serde_json::to_vec(line).expect("json");
            let row = parse_line(slice, &text, &ctx, i as u64 + 1)
                .unwrap_or_else(|e| panic!("{line}: {e:?}"));
            if let Value::DateTime(t) = row.values[at] {
                (min, max) = (min.min(t), max.max(t));
            }
            if i % 2 == 0 {
                block.push_row(slice, &row.values).expect("row");
            } else {
                encoder
                    .encode(&text, &ctx, i as u64 + 1, &mut block)
                    .unwrap_or_else(|e| panic!("{line}: {e:?}"));
            }
        }
        assert_eq!(block.rows(), lines.len());
        let batch = block.finish((min, max), false);
        self.store.insert(slice, &batch).await.expect("insert");
    }

    fn spec(&self, request: Json) -> ExportSpec {
        ExportRequest::from_json(request.to_string().as_bytes())
            .expect("request")
            .validate(&self.catalog)
            .expect("valid request")
    }

    fn select<'a>(&'a self, spec: &'a ExportSpec, tenant: &'a str) -> Selection<'a> {
        self.store.select(self.slice(&spec.slice), tenant, spec)
    }

    async fn count(&self, spec: &ExportSpec) -> u64 {
        let sel = self.select(spec, TENANT);
        self.store.count(&sel, &bounds()).await.expect("count")
    }

    /// The export's bytes in a text encoding.
    async fn export_text(&self, spec: &ExportSpec) -> String {
        let sel = self.select(spec, TENANT);
        let encoding = match spec.format {
            Format::Csv => Encoding::Csv,
            Format::Tsv => Encoding::Tsv,
            _ => Encoding::JsonLines,
        };
        let mut stream = self
            .store
            .export_stream(&sel, encoding, &query_id())
            .expect("stream");
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await.expect("chunk") {
            out.extend_from_slice(&chunk);
        }
        String::from_utf8(out).expect("utf-8")
    }

    /// The export as Arrow batches (of two rows, so that several come), each row's
    /// values as JSON.
    async fn export_arrow(&self, spec: &ExportSpec) -> Vec<Vec<Json>> {
        let sel = self.select(spec, TENANT);
        let rows = self.count(spec).await;
        let mut batches = self
            .store
            .export_batches(&sel, &query_id(), 2, rows)
            .expect("batches");
        assert_eq!(batches.schema().fields().len(), spec.fields.len());
        let mut out = Vec::new();
        while let Some(batch) = batches.next().await.expect("batch") {
            assert!(batch.num_rows() <= 2);
            for row in 0..batch.num_rows() {
                out.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| arrow_json(c.as_ref(), row))
                        .collect(),
                );
            }
        }
        out
    }

    async fn preview(&self, spec: &ExportSpec, limit: u64) -> Vec<Json> {
        let sel = self.select(spec, TENANT);
        let rows = self
            .store
            .preview(&sel, limit, &bounds(), 1 << 20)
            .await
            .expect("preview");
        let items = rows.into_array_items();
        let array: Json =
            serde_json::from_slice(&[b"[", &items[..], b"]"].concat()).expect("JSON rows");
        array.as_array().cloned().unwrap_or_default()
    }
}

fn query_id() -> String {
    format!("conformance-{}", uuid::Uuid::new_v4())
}

/// One value of an Arrow column as the JSON encoding shows it.
fn arrow_json(col: &dyn Array, row: usize) -> Json {
    if col.is_null(row) {
        return Json::Null;
    }
    match col.data_type() {
        DataType::Utf8 => json!(col.as_string::<i32>().value(row)),
        DataType::UInt8 => json!(col.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => json!(col.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => json!(col.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => json!(col.as_primitive::<UInt64Type>().value(row)),
        DataType::Int8 => json!(col.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => json!(col.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(col.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => json!(f64::from(col.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(row)),
        DataType::Date32 => json!(date(i64::from(col.as_primitive::<Date32Type>().value(row)))),
        DataType::Timestamp(TimeUnit::Millisecond, _) => json!(time::format_timestamp(
            col.as_primitive::<TimestampMillisecondType>()
                .value(row)
                .div_euclid(1000)
        )),
        other => panic!("unexpected Arrow type {other}"),
    }
}

fn bounds() -> Bounds {
    Bounds::request(Duration::from_secs(30))
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Yesterday (Unix days): inside every default limit, and whole.
fn day() -> i64 {
    i64::from(now()) / 86_400 - 1
}

fn date(day: i64) -> String {
    time::days_to_date(day).format("%Y-%m-%d").to_string()
}

fn at(day: i64, hour: i64) -> String {
    time::format_timestamp(day * 86_400 + hour * 3600)
}

/// Three rows of `kinds`: the extremes of every type, ordinary values with NULLs,
/// and a line with only what is required (every other field takes its default).
fn kinds_rows(d: i64) -> Vec<Json> {
    vec![
        json!({
            "app_id": 42, "event_id": "00010203-0405-0607-0809-0a0b0c0d0e0f",
            "event_time": at(d, 10),
            "s": "a,\"b\"\n\tc\\ü'x/y", "lc": "lc-a", "ns": "ns-a",
            "u8": 255, "u16": 65535, "u32": 4_294_967_295u64, "u64": u64::MAX,
            "i8": -128, "i16": -32768, "i32": i32::MIN, "i64": i64::MIN,
            "f32": 1.5, "f64": -2.25, "d": date(d), "dt": at(d, 10), "ndt": at(d, 11),
            "uid": "ffffffff-0000-4000-8000-000000000001", "e": "b", "nu64": 7,
        }),
        json!({
            "app_id": 42, "event_id": "10010203-0405-0607-0809-0a0b0c0d0e0f",
            "event_time": at(d, 11),
            "s": "=plain", "lc": "lc-b", "ns": null,
            "u8": 1, "u16": 2, "u32": 3, "u64": 4, "i8": 5, "i16": 6, "i32": 7, "i64": 8,
            "f32": 0.5, "f64": 10_000_000_000.0, "d": date(d - 1), "dt": at(d, 11),
            "ndt": null, "uid": "00000000-0000-4000-8000-0000000000ff", "e": "a",
            "nu64": null,
        }),
        json!({"app_id": 42, "event_time": at(d, 12)}),
    ]
}

/// What the export shows of a stored line: the line's own values, the defaults of
/// what it left out, and the server's `received_time`.
fn expected(slice: &Slice, line: &Json, received: u32) -> Vec<Json> {
    slice
        .fields
        .iter()
        .map(|f| {
            if f.name == "received_time" {
                return json!(time::format_timestamp(i64::from(received)));
            }
            match line.get(&f.name) {
                Some(v) => v.clone(),
                None => default_json(&f.ty),
            }
        })
        .collect()
}

fn default_json(ty: &ColumnType) -> Json {
    match Value::default_for(ty) {
        Value::Null => Json::Null,
        Value::Str(s) => json!(s),
        Value::UInt(n) => json!(n),
        Value::Int(n) => json!(n),
        Value::Float(f) => json!(f),
        Value::Date(d) => json!(date(i64::from(d))),
        Value::DateTime(t) => json!(time::format_timestamp(i64::from(t))),
        Value::Uuid(u) => json!(u.hyphenated().to_string()),
        Value::Enum(name, _) => json!(name),
    }
}

/// Does an exported JSON value show the expected one? Floats compare as numbers
/// (`1e10` may print as an integer).
fn same_json(ty: &ColumnType, got: &Json, want: &Json) -> bool {
    match (ty.base(), got, want) {
        (ColumnType::Float32 | ColumnType::Float64, Json::Number(a), Json::Number(b)) => {
            a.as_f64() == b.as_f64()
        }
        _ => got == want,
    }
}

/// Does a text cell (CSV or TSV, already unescaped; `None` for NULL) show the
/// expected value?
fn same_text(ty: &ColumnType, got: Option<&str>, want: &Json) -> bool {
    match (got, want) {
        (None, Json::Null) => true,
        (None, _) | (_, Json::Null) => false,
        (Some(g), Json::String(w)) => g == w,
        (Some(g), Json::Number(w)) => match ty.base() {
            ColumnType::Float32 | ColumnType::Float64 => g.parse::<f64>().ok() == w.as_f64(),
            _ => {
                w.as_u64().is_some_and(|w| g.parse::<u64>() == Ok(w))
                    || w.as_i64().is_some_and(|w| g.parse::<i64>() == Ok(w))
            }
        },
        _ => false,
    }
}

/// The cells of CSV: RFC 4180, NULL an empty unquoted field (the empty string is
/// `""`).
fn csv_cells(text: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut cell = String::new();
    let (mut quoted, mut in_quotes) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => in_quotes = false,
                _ => cell.push(c),
            }
            continue;
        }
        match c {
            '"' => (quoted, in_quotes) = (true, true),
            ',' | '\n' => {
                let value = std::mem::take(&mut cell);
                row.push((quoted || !value.is_empty()).then_some(value));
                quoted = false;
                if c == '\n' {
                    rows.push(std::mem::take(&mut row));
                }
            }
            _ => cell.push(c),
        }
    }
    assert!(row.is_empty() && cell.is_empty(), "CSV ends with a newline");
    rows
}

/// The cells of TabSeparated (no header row): escaped values, NULL `\N`, decoded
/// by the end-to-end harness's reader.
fn tsv_cells(text: &str) -> Vec<Vec<Option<String>>> {
    text.lines()
        .map(|line| line.split('\t').map(logport_tests::tsv_unescape).collect())
        .collect()
}

/// An export request over one whole day, of every field of the slice.
fn request(slice: &Slice, d: i64, format: &str) -> Json {
    json!({
        "slice": slice.name, "date_since": date(d), "date_until": date(d),
        "fields": slice.fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        "format": format,
    })
}

#[tokio::test]
async fn migrate_uses_what_the_server_has_and_is_idempotent() {
    let db = Db::new("migrate").await;
    let caps = db.store.caps();
    let again = db.store.migrate(&db.catalog).await.expect("second migrate");
    assert!(again.is_noop(), "{again:?}");
    assert!(again.type_mismatches.is_empty(), "{again:?}");
    let tables = db
        .sql(&format!(
            "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
            db.database
        ))
        .await;
    let mut want: Vec<&str> = db.catalog.slices().map(|s| s.name.as_str()).collect();
    want.sort_unstable();
    assert_eq!(tables.lines().collect::<Vec<_>>(), want);
    let lc = db
        .sql(&format!(
            "SELECT type FROM system.columns WHERE database = '{}' AND table = 'kinds' AND name = 'lc'",
            db.database
        ))
        .await;
    let lc_type = if caps.low_cardinality {
        "LowCardinality(String)"
    } else {
        "String"
    };
    assert_eq!(lc.trim(), lc_type, "{caps:?}");
    let engine = db
        .sql(&format!(
            "SELECT engine_full FROM system.tables WHERE database = '{}' AND name = 'kinds'",
            db.database
        ))
        .await;
    assert_eq!(
        engine.contains("TTL received_time + toIntervalDay(7)"),
        caps.ttl,
        "{caps:?}: {engine}"
    );
    db.drop().await;
}

#[tokio::test]
async fn every_type_round_trips_through_every_text_encoding() {
    let db = Db::new("kinds").await;
    let d = day();
    let received = now();
    let lines = kinds_rows(d);
    db.insert("kinds", TENANT, &lines, received).await;
    // Another tenant's row never shows.
    db.insert("kinds", OTHER, &lines[..1], received).await;
    let slice = db.slice("kinds");
    let want: Vec<Vec<Json>> = lines.iter().map(|l| expected(slice, l, received)).collect();
    let position = |name: &str| {
        slice
            .fields
            .iter()
            .position(|f| f.name == name)
            .expect("common field")
    };
    let (event_id, event_time) = (position("event_id"), position("event_time"));
    let check = |format: &str, got: Vec<Vec<Json>>| {
        assert_eq!(got.len(), want.len(), "{format}: {got:?}");
        // Storage order is not time order: match rows by their event time.
        for w in &want {
            let g = got
                .iter()
                .find(|g| g[event_time] == w[event_time])
                .unwrap_or_else(|| panic!("{format}: no row at {}", w[event_time]));
            for (i, f) in slice.fields.iter().enumerate() {
                if i == event_id && !lines.iter().any(|l| l.get("event_id") == Some(&w[i])) {
                    continue; // generated at ingest
                }
                assert!(
                    same_json(&f.ty, &g[i], &w[i]),
                    "{format}: {} is {} where {} was stored",
                    f.name,
                    g[i],
                    w[i]
                );
            }
        }
    };
    let jsonl = db.export_text(&db.spec(request(slice, d, "jsonl"))).await;
    let got: Vec<Vec<Json>> = jsonl
        .lines()
        .map(|l| {
            let obj: serde_json::Map<String, Json> = serde_json::from_str(l).expect("record");
            slice.fields.iter().map(|f| obj[&f.name].clone()).collect()
        })
        .collect();
    check("jsonl", got);
    assert!(!jsonl.contains("\\/"), "slashes are not escaped: {jsonl}");

    check(
        "parquet",
        db.export_arrow(&db.spec(request(slice, d, "parquet")))
            .await,
    );

    for (format, cells) in [
        ("csv", csv_cells as fn(&str) -> Vec<Vec<Option<String>>>),
        ("tsv", tsv_cells),
    ] {
        let text = db.export_text(&db.spec(request(slice, d, format))).await;
        let rows = cells(&text);
        assert_eq!(rows.len(), want.len(), "{format}: {text}");
        for w in &want {
            let time = w[event_time].as_str().expect("event_time");
            let g = rows
                .iter()
                .find(|r| r[event_time].as_deref() == Some(time))
                .unwrap_or_else(|| panic!("{format}: no row at {time}: {text}"));
            for (i, f) in slice.fields.iter().enumerate() {
                if i == event_id && !lines.iter().any(|l| l.get("event_id") == Some(&w[i])) {
                    continue;
                }
                assert!(
                    same_text(&f.ty, g[i].as_deref(), &w[i]),
                    "{format}: {} is {:?} where {} was stored",
                    f.name,
                    g[i],
                    w[i]
                );
            }
        }
    }
    db.drop().await;
}

#[tokio::test]
async fn every_slice_takes_a_full_row_and_gives_it_back() {
    let db = Db::new("slices").await;
    let d = day();
    let received = now();
    for slice in db.catalog.slices() {
        // Every field given a value of its type (the first variant of an enum).
        let mut line = serde_json::Map::new();
        for (i, f) in slice.fields.iter().enumerate() {
            if f.name == "received_time" {
                continue;
            }
            let v = match f.ty.base() {
                ColumnType::String | ColumnType::LowCardinalityString => {
                    json!(format!("{}-{i}", f.name))
                }
                ColumnType::Float32 | ColumnType::Float64 => json!(i as f64 + 0.5),
                ColumnType::Date => json!(date(d)),
                ColumnType::DateTime => json!(at(d, 3)),
                ColumnType::Uuid => json!(format!("00000000-0000-4000-8000-{i:012}")),
                ColumnType::Enum8(v) => json!(v[v.len() - 1].0),
                ColumnType::Int8 | ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => {
                    json!(-(i as i64))
                }
                _ => json!(i),
            };
            line.insert(f.name.clone(), v);
        }
        let line = Json::Object(line);
        db.insert(&slice.name, TENANT, std::slice::from_ref(&line), received)
            .await;
        let spec = db.spec(request(slice, d, "jsonl"));
        assert_eq!(db.count(&spec).await, 1, "{}", slice.name);
        let text = db.export_text(&spec).await;
        let obj: serde_json::Map<String, Json> = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("{}: {e}: {text}", slice.name));
        let arrow = db
            .export_arrow(&db.spec(request(slice, d, "parquet")))
            .await;
        assert_eq!(arrow.len(), 1, "{}", slice.name);
        for (i, (f, w)) in slice
            .fields
            .iter()
            .zip(expected(slice, &line, received))
            .enumerate()
        {
            assert!(
                same_json(&f.ty, &obj[&f.name], &w),
                "{}.{}: {} where {w} was stored",
                slice.name,
                f.name,
                obj[&f.name]
            );
            assert!(
                same_json(&f.ty, &arrow[0][i], &w),
                "{}.{} in Arrow: {} where {w} was stored",
                slice.name,
                f.name,
                arrow[0][i]
            );
        }
    }
    db.drop().await;
}

#[tokio::test]
async fn filters_of_every_op_count_and_preview() {
    let db = Db::new("filters").await;
    let d = day();
    db.insert("kinds", TENANT, &kinds_rows(d), now()).await;
    db.insert("kinds", OTHER, &kinds_rows(d), now()).await;
    let slice = db.slice("kinds");
    let cases: &[(Json, u64)] = &[
        (json!({"field": "s", "op": "eq", "value": "=plain"}), 1),
        (json!({"field": "s", "op": "ne", "value": "=plain"}), 2),
        (
            json!({"field": "u32", "op": "in", "values": [3, 4_294_967_295u64]}),
            2,
        ),
        (json!({"field": "u32", "op": "not_in", "values": [3]}), 2),
        (json!({"field": "u64", "op": "lt", "value": 4}), 1),
        (json!({"field": "u64", "op": "lte", "value": 4}), 2),
        (json!({"field": "i64", "op": "gt", "value": 0}), 1),
        (json!({"field": "i64", "op": "gte", "value": 0}), 2),
        (
            json!({"field": "i32", "op": "between", "values": [-1, 7]}),
            2,
        ),
        (
            json!({"field": "dt", "op": "between", "values": [at(d, 10), at(d, 10)]}),
            1,
        ),
        (json!({"field": "d", "op": "lt", "value": date(d)}), 2),
        (json!({"field": "f64", "op": "lt", "value": 0}), 1),
        (json!({"field": "s", "op": "prefix", "value": "a,\"b"}), 1),
        (json!({"field": "s", "op": "contains", "value": "\\ü'"}), 1),
        (json!({"field": "lc", "op": "eq", "value": "lc-b"}), 1),
        (json!({"field": "e", "op": "eq", "value": "b"}), 1),
        (
            json!({"field": "uid", "op": "eq", "value": "00000000-0000-4000-8000-0000000000ff"}),
            1,
        ),
        (json!({"field": "ns", "op": "is_null"}), 2),
        (json!({"field": "ns", "op": "not_null"}), 1),
        (json!({"field": "ndt", "op": "is_null"}), 2),
        (json!({"field": "nu64", "op": "not_null"}), 1),
    ];
    for (filter, rows) in cases {
        let mut req = request(slice, d, "jsonl");
        req["filters"] = json!([filter]);
        let spec = db.spec(req);
        assert_eq!(db.count(&spec).await, *rows, "{filter}");
    }
    // Previews: the newest rows first, at most `limit`, only the tenant's.
    let spec = db.spec(request(slice, d, "jsonl"));
    let rows = db.preview(&spec, 2).await;
    let times: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["event_time"].as_str())
        .collect();
    assert_eq!(times, [at(d, 12), at(d, 11)]);
    // The epoch prints alike on every server.
    assert_eq!(rows[0]["d"], "1970-01-01");
    assert_eq!(db.preview(&spec, 10).await.len(), 3);
    db.drop().await;
}

#[tokio::test]
async fn hour_counts_and_size_estimates() {
    let db = Db::new("hours").await;
    let d = day();
    db.insert("kinds", TENANT, &kinds_rows(d), now()).await;
    let slice = db.slice("kinds");
    let spec = db.spec(request(slice, d, "csv"));
    let sel = db.select(&spec, TENANT);
    let hours = db.store.hour_counts(&sel, &bounds()).await.expect("hours");
    let h = |n: i64| (d * 86_400 + n * 3600) as u32;
    assert_eq!(hours, [(h(10), 1), (h(11), 1), (h(12), 1)]);
    let fields = vec!["s".to_string(), "u64".to_string()];
    let per_row = db
        .store
        .bytes_per_row("kinds", &fields, &bounds())
        .await
        .expect("estimate");
    assert!(per_row > 0.0, "{per_row}");
    let all: Vec<String> = slice.fields.iter().map(|f| f.name.clone()).collect();
    let wide = db
        .store
        .bytes_per_row("kinds", &all, &bounds())
        .await
        .expect("estimate");
    assert!(wide > per_row, "{wide} > {per_row}");
    let empty = db
        .store
        .bytes_per_row("clicks", &fields, &bounds())
        .await
        .expect("estimate");
    assert_eq!(empty, 0.0);
    db.drop().await;
}

#[tokio::test]
async fn retention_hides_and_drops_expired_rows() {
    let db = Db::new("retention").await;
    let d = day();
    let long_ago = now() - 30 * 86_400;
    let lines = kinds_rows(d);
    db.insert("kinds", TENANT, &lines[..1], long_ago).await;
    db.insert("kinds", TENANT, &lines[1..], now()).await;
    let slice = db.slice("kinds");
    // Expired rows never show, whether or not the server removed them yet.
    let spec = db.spec(request(slice, d, "csv"));
    assert_eq!(db.count(&spec).await, 2);
    let (report, errors) = db
        .store
        .apply_retention(&db.catalog, i64::from(now()))
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    // On servers with TTL a merge may have removed the rows first.
    if !db.store.caps().ttl {
        assert_eq!(report.dropped.len(), 1, "{report:?}");
        assert_eq!(report.dropped[0].rows, 1);
    }
    assert!(report.dropped.iter().all(|p| p.slice == "kinds"));
    let left = db
        .sql(&format!(
            "SELECT count() FROM `{}`.`kinds` WHERE received_time < now() - 86400",
            db.database
        ))
        .await;
    assert_eq!(left.trim(), "0");
    assert_eq!(db.count(&spec).await, 2);
    db.drop().await;
}

#[tokio::test]
async fn errors_say_what_happened() {
    let db = Db::new("errors").await;
    let slice = db.slice("kinds");
    let spec = db.spec(request(slice, day(), "csv"));
    let sel = db.select(&spec, TENANT);
    // A deadline shorter than any answer: a timeout, worth retrying.
    let e = db
        .store
        .count(&sel, &Bounds::request(Duration::from_nanos(1)))
        .await
        .expect_err("no server answers in a nanosecond");
    assert!(e.is_timeout() && e.is_retryable(), "{e:?}");
    db.store.drop_database().await.expect("drop database");
    // A missing table: the request's fault, never retried.
    let e = db
        .store
        .count(&sel, &bounds())
        .await
        .expect_err("the database is gone");
    assert!(!e.is_timeout() && !e.is_retryable(), "{e:?}");
    // Nobody listening: unreachable, worth retrying.
    let gone = Store::connect(&StoreConfig {
        url: "http://127.0.0.1:1".into(),
        database: "x".into(),
        ..StoreConfig::default()
    })
    .await
    .err()
    .expect("nothing listens on port 1");
    assert!(gone.is_retryable() && !gone.is_timeout(), "{gone:?}");
}
