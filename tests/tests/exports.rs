//! The export path end to end: exact values in every format, ranges, filters, tenants, jobs, files and errors.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

use logport_tests::*;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// The day most test rows happen on; 2026-11-05T00:00:00Z is Unix 1_793_836_800.
const DAY: &str = "2026-11-05";
const DAY_START: i64 = 1_793_836_800;

/// A slice with the column types `clicks` lacks (signed integers, `Nullable(String)`,
/// `Date`, `UUID`), loaded with `LOGPORT_SCHEMA_DIR` next to the repository's schemas.
const TYPED_SCHEMA: &str = r#"
name = "typed"
description = "Test slice with one column of each scalar type."
group = "system"
partition = "day"
sort_key = ["label"]

[[fields]]
name = "label"
type = "String"
description = "Row label."
filterable = true
default = true
required = true

[[fields]]
name = "note"
type = "Nullable(String)"
description = "Nullable text."
filterable = true
default = true

[[fields]]
name = "big"
type = "UInt64"
description = "Unsigned 64-bit."
filterable = true
default = true

[[fields]]
name = "delta"
type = "Int64"
description = "Signed 64-bit."
filterable = true
default = true

[[fields]]
name = "small"
type = "Int8"
description = "Signed 8-bit."
filterable = true
default = false

[[fields]]
name = "ratio"
type = "Float64"
description = "A double."
filterable = true
default = false

[[fields]]
name = "maybe_n"
type = "Nullable(Int32)"
description = "Nullable signed 32-bit."
filterable = true
default = false

[[fields]]
name = "day"
type = "Date"
description = "A date."
filterable = true
default = false

[[fields]]
name = "uid"
type = "UUID"
description = "A UUID."
filterable = true
default = false

[[fields]]
name = "kind"
type = "Enum8('none' = 0, 'a b' = 1, 'x-y' = -2)"
description = "An enum."
filterable = true
default = false

[[fields]]
name = "lc"
type = "LowCardinality(String)"
description = "Dictionary text."
filterable = true
default = false
"#;

/// A schema directory: the repository's `schemas/*.toml` plus `typed.toml`.
fn schema_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("logport-schemas-")
        .tempdir()
        .unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    for entry in std::fs::read_dir(&repo).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.path().join("typed.toml"), TYPED_SCHEMA).unwrap();
    dir
}

/// Sends a request; any 5xx fails the test at once, with the body.
async fn send(rb: reqwest::RequestBuilder) -> reqwest::Response {
    let resp = rb.send().await.expect("request");
    if resp.status().is_server_error() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        panic!("server error {status}: {body}");
    }
    resp
}

/// A JSON answer with the expected status.
async fn json_answer(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A problem+json answer with the expected status and `field`.
async fn expect_problem(resp: reqwest::Response, status: u16, field: Option<&str>) -> Value {
    let (got, body) = problem(resp).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(
        body.get("field").and_then(Value::as_str),
        field,
        "field of {body}"
    );
    body
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_string()
}

/// Waits for a job to succeed and downloads its parts, checking each part's length
/// and sha256 against the job view.
async fn finish(svc: &Service, token: &str, id: &str) -> (Value, Vec<Vec<u8>>) {
    let job = svc.wait_export(token, id).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", svc.logs());
    let mut parts = Vec::new();
    for p in job["parts"].as_array().unwrap() {
        let url = p["url"].as_str().unwrap();
        let resp = send(svc.get(url, token)).await;
        assert_eq!(resp.status(), 200, "download {url}");
        let body = resp.bytes().await.unwrap().to_vec();
        assert_eq!(body.len() as u64, p["bytes"].as_u64().unwrap(), "{p}");
        assert_eq!(hex::encode(Sha256::digest(&body)), p["sha256"], "{p}");
        parts.push(body);
    }
    let rows: u64 = job["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(job["progress"]["rows"], rows, "{job}");
    (job, parts)
}

/// Creates every export first (so workers run them side by side), then finishes each.
async fn run_all(svc: &Service, token: &str, requests: &[Value]) -> Vec<(Value, Vec<Vec<u8>>)> {
    let mut ids = Vec::new();
    for r in requests {
        ids.push(id_of(&svc.create_export(token, r).await));
    }
    let mut out = Vec::new();
    for id in ids {
        out.push(finish(svc, token, &id).await);
    }
    out
}

/// Parses the CSV parts of one export: each part has the same header; rows concatenated.
fn csv_parts(parts: &[Vec<u8>]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for p in parts {
        let (h, r) = parse_csv(p);
        if let Some(first) = &header {
            assert_eq!(first, &h, "every part repeats the header");
        }
        header = Some(h);
        rows.extend(r);
    }
    (header.unwrap_or_default(), rows)
}

/// The sorted first column of a CSV export.
fn csv_first_column(parts: &[Vec<u8>]) -> Vec<String> {
    let (_, rows) = csv_parts(parts);
    let mut ids: Vec<String> = rows.into_iter().map(|r| r[0].clone()).collect();
    ids.sort();
    ids
}

/// Undoes ClickHouse's TabSeparated escaping of one field; `None` for `\N`.
fn tsv_unescape(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            assert!(
                c != '\t' && c != '\n',
                "raw tab or newline inside a TSV field: {field:?}"
            );
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('\'') => out.push('\''),
            other => panic!("unknown TSV escape \\{other:?} in {field:?}"),
        }
    }
    Some(out)
}

/// Parses one TSV part: header row and unescaped rows.
fn parse_tsv(bytes: &[u8]) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let text = std::str::from_utf8(bytes).expect("TSV is UTF-8");
    assert!(text.ends_with('\n'), "TSV ends with a newline: {text:?}");
    let mut lines = text[..text.len() - 1].split('\n');
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split('\t')
        .map(String::from)
        .collect();
    let rows = lines
        .map(|l| {
            let cells: Vec<Option<String>> = l.split('\t').map(tsv_unescape).collect();
            assert_eq!(cells.len(), header.len(), "TSV row {l:?}");
            cells
        })
        .collect();
    (header, rows)
}

fn tsv_parts(parts: &[Vec<u8>]) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for p in parts {
        let (h, r) = parse_tsv(p);
        if let Some(first) = &header {
            assert_eq!(first, &h, "every part repeats the header");
        }
        header = Some(h);
        rows.extend(r);
    }
    (header.unwrap_or_default(), rows)
}

/// Parses a `json` part: one whole document `{"data":[...]}`.
fn parse_json_doc(bytes: &[u8]) -> Vec<Value> {
    let doc: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "a json part is one JSON document ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    });
    let obj = doc.as_object().expect("the document is an object");
    assert_eq!(obj.len(), 1, "only `data`: {doc}");
    obj["data"].as_array().expect("data is an array").clone()
}

/// The raw text of the number a key holds in one JSON record line: serde_json's
/// default float parser may be one ULP off, Rust's `str::parse` is exact.
fn raw_json_number<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let at = line.find(&pat).unwrap_or_else(|| panic!("{key} in {line}")) + pat.len();
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim()
}

/// Each record line of a jsonl or json part, without the array's trailing comma.
fn json_record_lines(bytes: &[u8]) -> Vec<&str> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('{') && !l.starts_with("{\"data\""))
        .map(|l| l.strip_suffix(',').unwrap_or(l))
        .collect()
}

/// An expected exported value.
#[derive(Debug, Clone)]
enum Cell {
    S(String),
    Null,
    U(u64),
    I(i64),
    F(f64),
}

fn s(v: &str) -> Cell {
    Cell::S(v.to_string())
}

impl Cell {
    fn check_text(&self, got: Option<&str>, what: &str) {
        match (self, got) {
            (Cell::Null, None) => {}
            (Cell::S(want), Some(got)) => assert_eq!(got, want, "{what}"),
            (Cell::U(want), Some(got)) => assert_eq!(got, want.to_string(), "{what}"),
            (Cell::I(want), Some(got)) => assert_eq!(got, want.to_string(), "{what}"),
            (Cell::F(want), Some(got)) => {
                let parsed: f64 = got.parse().unwrap_or_else(|_| panic!("{what}: {got:?}"));
                assert_eq!(parsed.to_bits(), want.to_bits(), "{what}: {got}");
            }
            (want, got) => panic!("{what}: want {want:?}, got {got:?}"),
        }
    }

    /// CSV has no typed null: a NULL is an empty unquoted field (an empty string is a
    /// quoted `""`; see the raw-text checks).
    fn check_csv(&self, got: &str, what: &str) {
        match self {
            Cell::Null => assert_eq!(got, "", "{what}"),
            other => other.check_text(Some(got), what),
        }
    }

    fn check_json(&self, got: &Value, raw_line: &str, key: &str, what: &str) {
        match self {
            Cell::Null => assert!(got.is_null(), "{what}: {got}"),
            Cell::S(want) => assert_eq!(got.as_str(), Some(want.as_str()), "{what}"),
            Cell::U(want) => assert_eq!(got.as_u64(), Some(*want), "{what}: {got}"),
            Cell::I(want) => assert_eq!(got.as_i64(), Some(*want), "{what}: {got}"),
            Cell::F(want) => {
                assert!(got.is_number(), "{what}: {got}");
                let raw = raw_json_number(raw_line, key);
                let parsed: f64 = raw.parse().unwrap_or_else(|_| panic!("{what}: {raw}"));
                assert_eq!(parsed.to_bits(), want.to_bits(), "{what}: {raw}");
            }
        }
    }
}

/// Rows expected in an export, keyed by their first field's value.
struct Expected {
    fields: Vec<&'static str>,
    rows: BTreeMap<String, Vec<Cell>>,
}

impl Expected {
    fn check_csv(&self, parts: &[Vec<u8>]) {
        let (header, rows) = csv_parts(parts);
        assert_eq!(header, self.fields);
        assert_eq!(rows.len(), self.rows.len());
        let mut seen = BTreeSet::new();
        for row in rows {
            assert_eq!(row.len(), self.fields.len(), "{row:?}");
            let want = &self.rows[&row[0]];
            assert!(seen.insert(row[0].clone()), "duplicate {}", row[0]);
            for (i, cell) in want.iter().enumerate() {
                cell.check_csv(&row[i], &format!("csv {} {}", row[0], self.fields[i]));
            }
        }
    }

    fn check_tsv(&self, parts: &[Vec<u8>]) {
        let (header, rows) = tsv_parts(parts);
        assert_eq!(header, self.fields);
        assert_eq!(rows.len(), self.rows.len());
        let mut seen = BTreeSet::new();
        for row in rows {
            let key = row[0].clone().unwrap();
            let want = &self.rows[&key];
            assert!(seen.insert(key.clone()), "duplicate {key}");
            for (i, cell) in want.iter().enumerate() {
                cell.check_text(row[i].as_deref(), &format!("tsv {key} {}", self.fields[i]));
            }
        }
    }

    /// `records`: (parsed record, its raw line).
    fn check_json_records(&self, records: &[(Value, &str)], format: &str) {
        assert_eq!(records.len(), self.rows.len(), "{format} records");
        let want_keys: BTreeSet<&str> = self.fields.iter().copied().collect();
        let mut seen = BTreeSet::new();
        for (rec, raw) in records {
            let obj = rec.as_object().expect("record is an object");
            let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(keys, want_keys, "{format} keys");
            let key = obj[self.fields[0]].as_str().unwrap().to_string();
            let want = &self.rows[&key];
            assert!(seen.insert(key.clone()), "duplicate {key}");
            for (i, cell) in want.iter().enumerate() {
                let f = self.fields[i];
                cell.check_json(&obj[f], raw, f, &format!("{format} {key} {f}"));
            }
        }
    }

    fn check_jsonl(&self, parts: &[Vec<u8>]) {
        let mut records = Vec::new();
        for p in parts {
            let parsed = parse_jsonl(p);
            let raws = json_record_lines(p);
            assert_eq!(parsed.len(), raws.len());
            records.extend(parsed.into_iter().zip(raws));
        }
        self.check_json_records(&records, "jsonl");
    }

    fn check_json(&self, parts: &[Vec<u8>]) {
        let mut records = Vec::new();
        for p in parts {
            let data = parse_json_doc(p);
            let raws = json_record_lines(p);
            assert_eq!(data.len(), raws.len());
            for (d, raw) in data.iter().zip(&raws) {
                let reparsed: Value = serde_json::from_str(raw).unwrap();
                assert_eq!(d, &reparsed, "one record per line");
            }
            records.extend(data.into_iter().zip(raws));
        }
        self.check_json_records(&records, "json");
    }

    fn check(&self, format: &str, parts: &[Vec<u8>]) {
        match format {
            "csv" => self.check_csv(parts),
            "tsv" => self.check_tsv(parts),
            "jsonl" => self.check_jsonl(parts),
            "json" => self.check_json(parts),
            other => panic!("format {other}"),
        }
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
fn rfc3339_ms(t: &str) -> i64 {
    assert!(t.len() >= 20 && t.ends_with('Z'), "RFC 3339 UTC: {t}");
    let n = |a: usize, b: usize| -> i64 { t[a..b].parse().unwrap_or_else(|_| panic!("{t}")) };
    assert_eq!(&t[10..11], "T", "{t}");
    let days = days_from_civil(n(0, 4), n(5, 7), n(8, 10));
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    let ms = if t.len() > 20 {
        assert_eq!(&t[19..20], ".", "{t}");
        n(20, t.len() - 1)
    } else {
        0
    };
    secs * 1000 + ms
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix seconds.
fn utc_text(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Sleeps until the wall clock is past the end of the Unix second `secs`.
async fn sleep_past_second(secs: i64) {
    loop {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let target = (secs + 1) * 1000 + 50;
        if now_ms >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis((target - now_ms) as u64)).await;
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------------------------
// Round trip: every value exact in every format
// ---------------------------------------------------------------------------------

/// Strings that break naive CSV, TSV and JSON writers and readers.
const NASTY: &[&str] = &[
    "plain",
    "comma, inside",
    "say \"hi\"",
    "\"",
    "\"\"",
    "line1\nline2",
    "cr\r\nlf",
    "trailing cr\r",
    "\n",
    "tab\there",
    "back\\slash\\",
    "\\",
    "\\N",
    "\\t is not a tab",
    "it's 'quoted'",
    "😀 emoji, 中文 漢字, ünïcödé",
    "",
    "  padded  ",
    "nul\u{0}byte",
    "bell\u{7}\u{1b}[0m\u{7f}",
    "\u{2028}separators\u{2029}",
    ",\"\n\t\\'",
    "=1+2",
    "a\tb\tc\n\n",
];

const FLOATS: &[f64] = &[
    0.1,
    1e300,
    -2.5,
    0.0,
    f64::MAX,
    f64::MIN_POSITIVE,
    123_456.789,
    1e-300,
    0.300_000_000_000_000_04,
    -1e300,
    1.0 / 3.0,
    4_503_599_627_370_497.0,
];

#[tokio::test]
async fn values_round_trip_exactly_in_every_format() {
    let schemas = schema_dir();
    let svc = Service::start_with(
        Options::default().env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap()),
    )
    .await;

    // --- clicks: nasty strings, UInt64 extremes, floats, enum, flags, nullable time.
    let n = NASTY.len();
    let app_ids = [u64::MAX, 0, 1, 42, u64::MAX - 1];
    let event_types = ["visit", "lp_click", "impression", "unknown"];
    // (as sent, as exported) — every accepted timestamp form.
    let times: [(Value, &str); 4] = [
        (json!("2026-11-05T10:00:00Z"), "2026-11-05 10:00:00"),
        (json!("2026-11-05T12:30:00+02:00"), "2026-11-05 10:30:00"),
        (json!("2026-11-05 23:59:59"), "2026-11-05 23:59:59"),
        (json!(DAY_START), "2026-11-05 00:00:00"),
    ];
    let long: String = NASTY.concat().repeat(40);
    let mut lines = Vec::new();
    let mut rows = BTreeMap::new();
    for i in 0..n {
        let id = format!("r{i:02}");
        let (t_in, t_out) = &times[i % times.len()];
        let cost = FLOATS[i % FLOATS.len()];
        let app = app_ids[i % app_ids.len()];
        let et = event_types[i % event_types.len()];
        let lp: (Value, Cell) = match i % 3 {
            0 => (Value::Null, Cell::Null),
            1 => (json!("2026-11-05T11:00:00+01:00"), s("2026-11-05 10:00:00")),
            _ => (json!(DAY_START + 86_399), s("2026-11-05 23:59:59")),
        };
        let referrer = if i == 0 {
            long.clone()
        } else {
            NASTY[(i + 11) % n].to_string()
        };
        let event_id = format!("0190a0b1-2c3d-7e4f-8a9b-{i:012x}");
        let mut line = json!({
            "click_id": id,
            "event_time": t_in,
            "event_id": event_id,
            "app_id": app,
            "campaign_name": NASTY[(i + 3) % n],
            "sub1": NASTY[i],
            "sub2": NASTY[(i + 5) % n],
            "user_agent": NASTY[(i + 9) % n],
            "referrer": referrer,
            "cost": cost,
            "event_type": et,
            "lp_click_time": lp.0,
        });
        // UInt8 flags take JSON booleans and numbers.
        line["is_bot"] = if i % 2 == 0 { json!(true) } else { json!(0) };
        lines.push(line);
        rows.insert(
            id.clone(),
            vec![
                s(&id),
                s(t_out),
                Cell::U(app),
                s(&event_id),
                s(NASTY[(i + 3) % n]),
                s(NASTY[i]),
                s(NASTY[(i + 5) % n]),
                s(NASTY[(i + 9) % n]),
                Cell::S(referrer),
                Cell::F(cost),
                Cell::U(u64::from(i % 2 == 0)),
                s(et),
                lp.1,
            ],
        );
    }
    let answer = svc.ingest(ACME, "clicks", &lines).await;
    assert_eq!(answer["accepted"], n);
    let received = answer["received_time"].as_str().unwrap();
    let received_text = utc_text(rfc3339_ms(received) / 1000);
    for r in rows.values_mut() {
        r.push(Cell::S(received_text.clone()));
    }
    let clicks = Expected {
        fields: vec![
            "click_id",
            "event_time",
            "app_id",
            "event_id",
            "campaign_name",
            "sub1",
            "sub2",
            "user_agent",
            "referrer",
            "cost",
            "is_bot",
            "event_type",
            "lp_click_time",
            "received_time",
        ],
        rows,
    };

    // --- typed: signed extremes, Nullable(String) null vs "", Date, UUID, enum.
    let notes: [Option<&str>; 4] = [None, Some(""), Some("x"), Some("\\N")];
    let bigs = [u64::MAX, 0, 1, u64::MAX - 1];
    let deltas = [i64::MIN, -1, 0, i64::MAX];
    let smalls = [-128i64, -1, 0, 127];
    let maybes: [Option<i64>; 4] = [None, Some(-5), Some(i64::from(i32::MIN)), Some(0)];
    let days = ["1970-01-02", "2026-11-05", "2105-12-31", "2000-02-29"];
    let kinds = ["none", "a b", "x-y", "a b"];
    let mut typed_lines = Vec::new();
    let mut typed_rows = BTreeMap::new();
    for i in 0..4 {
        let label = format!("t{i}{}", NASTY[i + 1]);
        let uid = format!("67e55044-10b1-426f-9247-bb680e5fe0c{i}");
        let ratio = FLOATS[(i * 3) % FLOATS.len()];
        let mut line = json!({
            "label": label, "event_time": format!("{DAY} 12:00:0{i}"),
            "big": bigs[i], "delta": deltas[i], "small": smalls[i], "ratio": ratio,
            "day": days[i], "uid": uid, "kind": kinds[i], "lc": NASTY[i + 5],
        });
        // An explicit null (note) and an absent member (maybe_n) both mean null.
        line["note"] = json!(notes[i]);
        if let Some(m) = maybes[i] {
            line["maybe_n"] = json!(m);
        }
        // Integers may come as strings.
        if i == 1 {
            line["delta"] = json!("-1");
        }
        typed_lines.push(line);
        typed_rows.insert(
            label.clone(),
            vec![
                Cell::S(label),
                notes[i].map(s).unwrap_or(Cell::Null),
                Cell::U(bigs[i]),
                Cell::I(deltas[i]),
                Cell::I(smalls[i]),
                Cell::F(ratio),
                maybes[i].map(Cell::I).unwrap_or(Cell::Null),
                s(days[i]),
                Cell::S(uid),
                s(kinds[i]),
                s(NASTY[i + 5]),
            ],
        );
    }
    let answer = svc.ingest(ACME, "typed", &typed_lines).await;
    assert_eq!(answer["accepted"], 4);
    let typed = Expected {
        fields: vec![
            "label", "note", "big", "delta", "small", "ratio", "maybe_n", "day", "uid", "kind",
            "lc",
        ],
        rows: typed_rows,
    };

    let formats = ["csv", "tsv", "jsonl", "json"];
    let mut requests = Vec::new();
    for f in formats {
        requests.push(
            json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
            "fields": clicks.fields, "format": f}),
        );
    }
    for f in formats {
        requests.push(
            json!({"slice": "typed", "date_since": DAY, "date_until": DAY,
            "fields": typed.fields, "format": f}),
        );
    }
    // NULL and "" side by side, to read the raw CSV text.
    requests.push(
        json!({"slice": "typed", "date_since": DAY, "date_until": DAY,
        "fields": ["big", "note"], "format": "csv"}),
    );
    let done = run_all(&svc, ACME, &requests).await;
    for (i, (job, parts)) in done.iter().take(8).enumerate() {
        let format = formats[i % 4];
        let expected = if i < 4 { &clicks } else { &typed };
        assert_eq!(parts.len(), 1, "{job}");
        assert_eq!(job["progress"]["rows"], expected.rows.len(), "{job}");
        assert_eq!(job["request"]["format"], format);
        expected.check(format, parts);
    }

    // The exact text of a few cells, beyond what a lenient reader would accept.
    let csv = String::from_utf8(done[0].1[0].clone()).unwrap();
    assert!(csv.starts_with(&format!("{}\n", clicks.fields.join(","))));
    assert!(
        csv.contains(",\"say \"\"hi\"\"\","),
        "RFC 4180 quote doubling"
    );
    assert!(
        csv.contains(",18446744073709551615,"),
        "UInt64 max unquoted"
    );
    let tsv = String::from_utf8(done[1].1[0].clone()).unwrap();
    assert!(tsv.contains("\tline1\\nline2\t"), "TSV escapes newlines");
    assert!(tsv.contains("\ttab\\there\t"), "TSV escapes tabs");
    assert!(
        tsv.contains("\tback\\\\slash\\\\\t"),
        "TSV escapes backslashes"
    );
    let typed_tsv = String::from_utf8(done[5].1[0].clone()).unwrap();
    assert!(typed_tsv.contains("\t-9223372036854775808\t"));
    assert!(
        typed_tsv.contains("\t\\\\N\t"),
        "the string \\N is escaped, unlike NULL"
    );
    assert!(typed_tsv.contains("\t\\N\t"), "NULL is \\N in TSV");
    let typed_jsonl = String::from_utf8(done[6].1[0].clone()).unwrap();
    assert!(typed_jsonl.contains("\"note\":null"));
    assert!(typed_jsonl.contains("\"note\":\"\""));
    let mut raw: Vec<&str> = std::str::from_utf8(&done[8].1[0])
        .unwrap()
        .lines()
        .collect();
    raw.sort_unstable();
    assert_eq!(
        raw,
        [
            "0,\"\"",
            "1,\"x\"",
            "18446744073709551614,\"\\N\"",
            "18446744073709551615,",
            "big,note"
        ],
        "CSV: NULL is an empty field, the empty string is \"\""
    );
}

// ---------------------------------------------------------------------------------
// Date ranges
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn date_ranges_are_whole_days_timestamps_and_time_zones() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "4")).await;
    // Rows just before and after UTC, +03:00, -05:00 and Berlin (+01:00) midnights.
    let points: [(&str, &str); 10] = [
        ("d01", "2026-11-04T20:59:59Z"),
        ("d02", "2026-11-04T21:00:00Z"), // 2026-11-05 00:00 at +03:00
        ("d03", "2026-11-04T22:59:59Z"),
        ("d04", "2026-11-04T23:59:59Z"),
        ("d05", "2026-11-05T00:00:00Z"),
        ("d06", "2026-11-05T12:00:00Z"),
        ("d07", "2026-11-05T20:59:59Z"),
        ("d08", "2026-11-05T21:00:00Z"),
        ("d09", "2026-11-05T23:59:59Z"),
        ("d10", "2026-11-06T00:00:00Z"),
    ];
    let lines: Vec<Value> = points
        .iter()
        .map(|(id, t)| json!({"click_id": id, "event_time": t}))
        .collect();
    let batch = svc.ingest(ACME, "clicks", &lines).await;
    let batch_received = rfc3339_ms(batch["received_time"].as_str().unwrap()) / 1000;
    // Received long after the events (today), so the received dimension differs.
    let late = svc
        .ingest(
            ACME,
            "clicks",
            &[json!({"click_id": "late", "event_time": "2020-01-01T00:00:00Z"})],
        )
        .await;
    let received = rfc3339_ms(late["received_time"].as_str().unwrap()) / 1000;
    let received_day = &utc_text(received)[..10];

    let range = |since: &str, until: &str, extra: Value| {
        let mut r = json!({"slice": "clicks", "date_since": since, "date_until": until,
            "fields": ["click_id"]});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "one UTC day, both ends inclusive",
            range(DAY, DAY, json!({})),
            vec!["d05", "d06", "d07", "d08", "d09"],
        ),
        (
            "two UTC days",
            range("2026-11-04", DAY, json!({})),
            vec![
                "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08", "d09",
            ],
        ),
        (
            "explicit UTC",
            range(DAY, DAY, json!({"timezone": "UTC"})),
            vec!["d05", "d06", "d07", "d08", "d09"],
        ),
        (
            "+03:00 day is [11-04 21:00Z, 11-05 21:00Z)",
            range(DAY, DAY, json!({"timezone": "+03:00"})),
            vec!["d02", "d03", "d04", "d05", "d06", "d07"],
        ),
        (
            "-05:00 day is [11-05 05:00Z, 11-06 05:00Z)",
            range(DAY, DAY, json!({"timezone": "-05:00"})),
            vec!["d06", "d07", "d08", "d09", "d10"],
        ),
        (
            "Europe/Berlin in November is +01:00",
            range(DAY, DAY, json!({"timezone": "Europe/Berlin"})),
            vec!["d04", "d05", "d06", "d07", "d08"],
        ),
        (
            "RFC 3339 bounds; until includes its second",
            range("2026-11-05T00:00:00Z", "2026-11-05T12:00:00Z", json!({})),
            vec!["d05", "d06"],
        ),
        (
            "RFC 3339 with offsets",
            range(
                "2026-11-05T02:00:00+03:00",
                "2026-11-05T03:00:00+03:00",
                json!({"timezone": "-05:00"}),
            ),
            vec!["d04", "d05"],
        ),
        (
            "one-second range",
            range("2026-11-05T12:00:00Z", "2026-11-05T12:00:00Z", json!({})),
            vec!["d06"],
        ),
        (
            "timestamps without offset are read in the request's zone",
            range(
                "2026-11-05 00:00:00",
                "2026-11-05 23:59:59",
                json!({"timezone": "+03:00"}),
            ),
            vec!["d02", "d03", "d04", "d05", "d06", "d07"],
        ),
        (
            "received dimension: today's receipt, not the 2020 event",
            range(
                received_day,
                received_day,
                json!({"date_dimension": "received"}),
            ),
            vec![
                "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08", "d09", "d10", "late",
            ],
        ),
        (
            "received dimension excludes the event day",
            range(DAY, DAY, json!({"date_dimension": "received"})),
            vec![],
        ),
        (
            "event dimension finds the 2020 row by its event day",
            range(
                "2020-01-01",
                "2020-01-01",
                json!({"date_dimension": "event"}),
            ),
            vec!["late"],
        ),
    ];
    let requests: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let done = run_all(&svc, ACME, &requests).await;
    for ((name, req, want), (job, parts)) in cases.iter().zip(&done) {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(csv_first_column(parts), want, "{name}: {req}");
        assert_eq!(job["progress"]["rows"], want.len(), "{name}");
    }
    // The request is kept as sent, with defaults filled.
    assert_eq!(done[0].0["request"]["timezone"], "UTC");
    assert_eq!(done[0].0["request"]["date_dimension"], "event");
    assert_eq!(done[3].0["request"]["timezone"], "+03:00");
    assert_eq!(done[10].0["request"]["date_dimension"], "received");

    // Received-time bounds to the second: the second batch only.
    sleep_past_second(received).await;
    let later = svc
        .ingest(
            ACME,
            "clicks",
            &[json!({"click_id": "later", "event_time": "2020-01-01T00:00:00Z"})],
        )
        .await;
    let later_t = later["received_time"].as_str().unwrap();
    assert!(rfc3339_ms(later_t) / 1000 > received);
    let (_, parts) = svc
        .export(
            ACME,
            &range(later_t, later_t, json!({"date_dimension": "received"})),
        )
        .await;
    assert_eq!(csv_first_column(&parts), ["later"]);
    let (_, parts) = svc
        .export(
            ACME,
            &range(
                late["received_time"].as_str().unwrap(),
                late["received_time"].as_str().unwrap(),
                json!({"date_dimension": "received"}),
            ),
        )
        .await;
    // The first batch may share the second of `late`.
    let mut want: Vec<String> = vec!["late".into()];
    if batch_received == received {
        want.extend(points.iter().map(|(id, _)| id.to_string()));
    }
    want.sort();
    assert_eq!(csv_first_column(&parts), want);
}

// ---------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------

/// SQL-breaking strings; each is stored once, as a campaign id, and must match itself only.
const INJECTIONS: &[&str] = &[
    "' OR 1=1 --",
    "' OR '1'='1",
    "\\'",
    "\\\\'",
    "x\\' OR 1=1 --",
    "'); DROP TABLE clicks; --",
    "nul\u{0}byte",
    "\u{0}",
    "\\",
    "\\N",
    "%' OR ''='",
    "`campaign_id`",
    "{x:String}",
    "$1",
    "\n' OR 1=1 --",
    "\"; SELECT 1; --",
];

#[tokio::test]
async fn every_filter_op_selects_exactly_the_expected_rows() {
    let schemas = schema_dir();
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap())
            .env("LOGPORT_WORKERS", "4")
            .env("LOGPORT_MAX_QUEUED_PER_TENANT", "1000"),
    )
    .await;
    let uuid3 = "0190a0b1-2c3d-7e4f-8a9b-000000000003";
    // (id, app, country, campaign, cost, event_type, is_bot, lp_click_time)
    type Row<'a> = (
        &'a str,
        u64,
        &'a str,
        &'a str,
        f64,
        &'a str,
        u8,
        Option<&'a str>,
    );
    #[rustfmt::skip]
    let data: [Row; 8] = [
        ("k1", 1, "US", "summer",        0.5,   "visit",      0, None),
        ("k2", 1, "DE", "summer-sale",   1.0,   "lp_click",   1, Some("2026-11-05 11:00:00")),
        ("k3", 2, "FR", "winter",        0.0,   "impression", 0, None),
        ("k4", 2, "US", "autumn summer", 2.5,   "visit",      0, Some("2026-11-05T13:00:00Z")),
        ("k5", 1, "",   "Summer",        10.0,  "unknown",    0, None),
        ("k6", 3, "GB", "sum",           -1.0,  "visit",      1, Some("2026-11-06T00:00:00Z")),
        ("k7", 3, "DE", "100%_off",      0.1,   "lp_click",   0, None),
        ("k8", 0, "NL", "1000_off",      1e300, "impression", 0, None),
    ];
    let mut lines = Vec::new();
    for (i, (id, app, country, campaign, cost, et, bot, lp)) in data.iter().enumerate() {
        let mut l = json!({"click_id": id, "app_id": app, "country_code": country,
            "campaign_id": campaign, "cost": cost, "event_type": et, "is_bot": bot,
            "event_time": format!("{DAY}T{:02}:00:00Z", i + 1)});
        if let Some(t) = lp {
            l["lp_click_time"] = json!(t);
        }
        if *id == "k3" {
            l["event_id"] = json!(uuid3);
        }
        lines.push(l);
    }
    // Injection rows, on another day so the op cases above stay small.
    for (i, inj) in INJECTIONS.iter().enumerate() {
        lines.push(json!({"click_id": format!("inj{i:02}"), "campaign_id": inj,
            "country_code": inj, "event_time": "2026-11-07T12:00:00Z"}));
    }
    svc.ingest(ACME, "clicks", &lines).await;
    // Another tenant's identical rows must never show up.
    svc.ingest(GLOBEX, "clicks", &lines).await;

    let req = |filters: Value, app: Option<u64>| {
        let mut r = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
            "fields": ["click_id"], "filters": filters});
        if let Some(a) = app {
            r["app_id"] = json!(a);
        }
        r
    };
    let f =
        |field: &str, op: &str, value: Value| json!([{"field": field, "op": op, "value": value}]);
    let fs = |field: &str, op: &str, values: Value| json!([{"field": field, "op": op, "values": values}]);
    let all = ["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"];
    let c = |name: &str, r: Value, want: &[&'static str]| (name.to_string(), r, want.to_vec());
    #[rustfmt::skip]
    let mut cases: Vec<(String, Value, Vec<&str>)> = vec![
        c("eq", req(f("country_code", "eq", json!("US")), None), &["k1", "k4"]),
        c("eq empty", req(f("country_code", "eq", json!("")), None), &["k5"]),
        c("ne", req(f("country_code", "ne", json!("US")), None), &["k2", "k3", "k5", "k6", "k7", "k8"]),
        c("in", req(fs("country_code", "in", json!(["DE", "FR", "ZZ"])), None), &["k2", "k3", "k7"]),
        c("not_in", req(fs("country_code", "not_in", json!(["US", "DE"])), None), &["k3", "k5", "k6", "k8"]),
        c("lt float", req(f("cost", "lt", json!(1)), None), &["k1", "k3", "k6", "k7"]),
        c("lte float", req(f("cost", "lte", json!(1.0)), None), &["k1", "k2", "k3", "k6", "k7"]),
        c("gt float", req(f("cost", "gt", json!(1)), None), &["k4", "k5", "k8"]),
        c("gte float", req(f("cost", "gte", json!(2.5)), None), &["k4", "k5", "k8"]),
        c("between float inclusive", req(fs("cost", "between", json!([0, 1])), None), &["k1", "k2", "k3", "k7"]),
        c("between float as strings", req(fs("cost", "between", json!(["0.1", "2.5"])), None), &["k1", "k2", "k4", "k7"]),
        c("eq 0.1 exactly", req(f("cost", "eq", json!(0.1)), None), &["k7"]),
        c("gte 1e300", req(f("cost", "gte", json!(1e300)), None), &["k8"]),
        c("lt negative", req(f("cost", "lt", json!(-0.5)), None), &["k6"]),
        c("prefix", req(f("campaign_id", "prefix", json!("summer")), None), &["k1", "k2"]),
        c("contains", req(f("campaign_id", "contains", json!("summer")), None), &["k1", "k2", "k4"]),
        c("prefix with LIKE metacharacters", req(f("campaign_id", "prefix", json!("100%")), None), &["k7"]),
        c("contains %_ literally", req(f("campaign_id", "contains", json!("%_")), None), &["k7"]),
        c("contains _", req(f("campaign_id", "contains", json!("_")), None), &["k7", "k8"]),
        c("prefix _ is not a wildcard", req(f("campaign_id", "prefix", json!("1_")), None), &[]),
        c("text lt (byte order)", req(f("campaign_id", "lt", json!("b")), None), &["k4", "k5", "k7", "k8"]),
        c("text gt", req(f("campaign_id", "gt", json!("summer")), None), &["k2", "k3"]),
        c("text between", req(fs("campaign_id", "between", json!(["sum", "summer"])), None), &["k1", "k6"]),
        c("text gte and lte", req(json!([{"field": "campaign_id", "op": "gte", "value": "summer"},
            {"field": "campaign_id", "op": "lte", "value": "summer-sale"}]), None), &["k1", "k2"]),
        c("is_null", req(json!([{"field": "lp_click_time", "op": "is_null"}]), None), &["k1", "k3", "k5", "k7", "k8"]),
        c("not_null", req(json!([{"field": "lp_click_time", "op": "not_null"}]), None), &["k2", "k4", "k6"]),
        c("nullable datetime gt", req(f("lp_click_time", "gt", json!("2026-11-05T12:00:00Z")), None), &["k4", "k6"]),
        c("nullable datetime lte", req(f("lp_click_time", "lte", json!("2026-11-05 11:00:00")), None), &["k2"]),
        c("datetime between unix seconds", req(fs("lp_click_time", "between",
            json!([DAY_START + 11 * 3600, DAY_START + 13 * 3600])), None), &["k2", "k4"]),
        c("enum eq", req(f("event_type", "eq", json!("visit")), None), &["k1", "k4", "k6"]),
        c("enum ne", req(f("event_type", "ne", json!("visit")), None), &["k2", "k3", "k5", "k7", "k8"]),
        c("enum in", req(fs("event_type", "in", json!(["lp_click", "impression"])), None), &["k2", "k3", "k7", "k8"]),
        c("enum not_in", req(fs("event_type", "not_in", json!(["visit", "unknown"])), None), &["k2", "k3", "k7", "k8"]),
        c("flag eq 1", req(f("is_bot", "eq", json!(1)), None), &["k2", "k6"]),
        c("flag eq true", req(f("is_bot", "eq", json!(true)), None), &["k2", "k6"]),
        c("flag ne 1", req(f("is_bot", "ne", json!(1)), None), &["k1", "k3", "k4", "k5", "k7", "k8"]),
        c("event_time gte", req(f("event_time", "gte", json!("2026-11-05T06:00:00Z")), None), &["k6", "k7", "k8"]),
        c("event_time lt", req(f("event_time", "lt", json!("2026-11-05 03:00:00")), None), &["k1", "k2"]),
        c("uuid eq", req(f("event_id", "eq", json!(uuid3)), None), &["k3"]),
        c("app_id scope", req(json!([]), Some(1)), &["k1", "k2", "k5"]),
        c("app_id scope 0", req(json!([]), Some(0)), &["k8"]),
        c("app_id scope and filter", req(f("country_code", "eq", json!("DE")), Some(3)), &["k7"]),
        c("app_id scope without rows", req(json!([]), Some(99)), &[]),
        c("app_id filter in", req(fs("app_id", "in", json!([2, 3])), None), &["k3", "k4", "k6", "k7"]),
        c("app_id filter gt", req(f("app_id", "gt", json!(1)), None), &["k3", "k4", "k6", "k7"]),
        c("filters are ANDed", req(json!([{"field": "country_code", "op": "in", "values": ["US", "DE"]},
            {"field": "cost", "op": "gt", "value": 0.6}]), None), &["k2", "k4"]),
        c("no filters", req(json!([]), None), &all),
    ];

    // Injection attempts: plain literals matching exactly their own row.
    let inj_ids: Vec<String> = (0..INJECTIONS.len())
        .map(|i| format!("inj{i:02}"))
        .collect();
    let inj_day = |filters: Value| {
        json!({"slice": "clicks", "date_since": "2026-11-07", "date_until": "2026-11-07",
            "fields": ["click_id"], "filters": filters})
    };
    for (i, inj) in INJECTIONS.iter().enumerate() {
        let own = vec![inj_ids[i].as_str()];
        cases.push((
            format!("eq {inj:?}"),
            inj_day(f("campaign_id", "eq", json!(inj))),
            own.clone(),
        ));
        cases.push((
            format!("in {inj:?}"),
            inj_day(fs("country_code", "in", json!([inj]))),
            own,
        ));
        let starts: Vec<&str> = INJECTIONS
            .iter()
            .enumerate()
            .filter(|(_, other)| other.starts_with(inj))
            .map(|(j, _)| inj_ids[j].as_str())
            .collect();
        cases.push((
            format!("prefix {inj:?}"),
            inj_day(f("campaign_id", "prefix", json!(inj))),
            starts,
        ));
        let contains: Vec<&str> = INJECTIONS
            .iter()
            .enumerate()
            .filter(|(_, other)| other.contains(inj))
            .map(|(j, _)| inj_ids[j].as_str())
            .collect();
        cases.push((
            format!("contains {inj:?}"),
            inj_day(f("country_code", "contains", json!(inj))),
            contains,
        ));
        let others: Vec<&str> = inj_ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id.as_str())
            .collect();
        cases.push((
            format!("ne {inj:?}"),
            inj_day(f("campaign_id", "ne", json!(inj))),
            others,
        ));
    }

    // Typed slice: Nullable(String) null vs "", signed and 64-bit extremes, Date, UUID.
    #[rustfmt::skip]
    let typed_lines = [
        json!({"label": "t1", "event_time": format!("{DAY} 01:00:00"), "big": u64::MAX, "delta": i64::MIN,
            "small": -128, "day": "2026-11-04", "kind": "a b"}),
        json!({"label": "t2", "event_time": format!("{DAY} 02:00:00"), "note": "", "big": 0, "delta": -1,
            "small": -1, "maybe_n": -5, "day": DAY, "kind": "x-y"}),
        json!({"label": "t3", "event_time": format!("{DAY} 03:00:00"), "note": "x", "big": 1, "delta": 0,
            "small": 0, "maybe_n": 0, "day": DAY, "uid": uuid3}),
        json!({"label": "t4", "event_time": format!("{DAY} 04:00:00"), "note": "X y", "big": u64::MAX - 1,
            "delta": i64::MAX, "small": 127, "day": "2026-11-06", "maybe_n": null}),
    ];
    svc.ingest(ACME, "typed", &typed_lines).await;
    let treq = |filters: Value| {
        json!({"slice": "typed", "date_since": DAY, "date_until": DAY,
            "fields": ["label"], "filters": filters})
    };
    let is = |field: &str, op: &str| json!([{"field": field, "op": op}]);
    #[rustfmt::skip]
    let typed_cases: Vec<(&str, Value, &[&str])> = vec![
        ("nullable string is_null", treq(is("note", "is_null")), &["t1"]),
        ("nullable string not_null", treq(is("note", "not_null")), &["t2", "t3", "t4"]),
        ("empty string is not null", treq(f("note", "eq", json!(""))), &["t2"]),
        ("nullable string eq", treq(f("note", "eq", json!("x"))), &["t3"]),
        ("nullable string contains", treq(f("note", "contains", json!("y"))), &["t4"]),
        ("Int64 lt", treq(f("delta", "lt", json!(-1))), &["t1"]),
        ("Int64 lte", treq(f("delta", "lte", json!(-1))), &["t1", "t2"]),
        ("Int64 gte", treq(f("delta", "gte", json!(0))), &["t3", "t4"]),
        ("Int64 max", treq(f("delta", "eq", json!(i64::MAX))), &["t4"]),
        ("Int64 min as string", treq(f("delta", "eq", json!(i64::MIN.to_string()))), &["t1"]),
        ("Int64 between", treq(fs("delta", "between", json!([i64::MIN, -1]))), &["t1", "t2"]),
        ("UInt64 max", treq(f("big", "eq", json!(u64::MAX))), &["t1"]),
        ("UInt64 gt max-1", treq(f("big", "gt", json!(u64::MAX - 1))), &["t1"]),
        ("UInt64 gte max-1", treq(f("big", "gte", json!(u64::MAX - 1))), &["t1", "t4"]),
        ("UInt64 in", treq(fs("big", "in", json!([0, u64::MAX]))), &["t1", "t2"]),
        ("UInt64 not_in", treq(fs("big", "not_in", json!([0, u64::MAX]))), &["t3", "t4"]),
        ("Int8 lt", treq(f("small", "lt", json!(0))), &["t1", "t2"]),
        ("Int8 min", treq(f("small", "eq", json!(-128))), &["t1"]),
        ("nullable int is_null", treq(is("maybe_n", "is_null")), &["t1", "t4"]),
        ("nullable int lt", treq(f("maybe_n", "lt", json!(0))), &["t2"]),
        ("nullable int not_null", treq(is("maybe_n", "not_null")), &["t2", "t3"]),
        ("Date gte", treq(f("day", "gte", json!(DAY))), &["t2", "t3", "t4"]),
        ("Date eq", treq(f("day", "eq", json!(DAY))), &["t2", "t3"]),
        ("Date between", treq(fs("day", "between", json!(["2026-11-04", DAY]))), &["t1", "t2", "t3"]),
        ("UUID eq", treq(f("uid", "eq", json!(uuid3))), &["t3"]),
        ("UUID ne", treq(f("uid", "ne", json!(uuid3))), &["t1", "t2", "t4"]),
        ("enum with a space", treq(f("kind", "eq", json!("a b"))), &["t1"]),
        ("enum default", treq(f("kind", "eq", json!("none"))), &["t3", "t4"]),
    ];
    for (name, r, want) in typed_cases {
        cases.push(c(name, r, want));
    }

    let requests: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let done = run_all(&svc, ACME, &requests).await;
    for ((name, req, want), (_, parts)) in cases.iter().zip(&done) {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(csv_first_column(parts), want, "{name}: {req}");
    }

    // evaluate and preview agree with the export, row for row.
    for (name, req, want) in &cases {
        let resp = send(svc.post("/v1/exports/evaluate", ACME).json(req)).await;
        let eval = json_answer(resp, 200).await;
        assert_eq!(
            eval["estimated_rows"],
            want.len(),
            "evaluate {name}: {eval}"
        );
        let slice = req["slice"].as_str().unwrap();
        let mut p = req.clone();
        p["limit"] = json!(1000);
        let resp = send(
            svc.post(&format!("/v1/logs/{slice}/preview"), ACME)
                .json(&p),
        )
        .await;
        let preview = json_answer(resp, 200).await;
        let key = if slice == "typed" {
            "label"
        } else {
            "click_id"
        };
        let mut got: Vec<String> = preview["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_string())
            .collect();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "preview {name}");
    }

    // Nothing was dropped or altered by the attempts.
    assert_eq!(svc.count("clicks", "acme"), lines.len() as u64);
    assert_eq!(svc.count("clicks", "globex"), lines.len() as u64);
}

// ---------------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn tenants_never_see_each_other() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[
            json!({"click_id": "acme-1", "event_time": format!("{DAY}T01:00:00Z"), "country_code": "US"}),
            json!({"click_id": "acme-2", "event_time": format!("{DAY}T02:00:00Z"), "country_code": "US"}),
        ],
    )
    .await;
    svc.ingest(
        GLOBEX,
        "clicks",
        &[json!({"click_id": "globex-1", "event_time": format!("{DAY}T03:00:00Z"), "country_code": "US"})],
    )
    .await;
    let request = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
        "fields": ["click_id", "country_code"]});
    let (acme_job, acme_parts) = svc.export(ACME, &request).await;
    let (globex_job, globex_parts) = svc.export(GLOBEX, &request).await;
    assert_eq!(csv_first_column(&acme_parts), ["acme-1", "acme-2"]);
    assert_eq!(csv_first_column(&globex_parts), ["globex-1"]);
    // Filters cannot widen the scope.
    let (_, parts) = svc
        .export(
            GLOBEX,
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"],
                "filters": [{"field": "click_id", "op": "prefix", "value": "acme"}]}),
        )
        .await;
    assert!(csv_first_column(&parts).is_empty());

    // The other tenant's job, parts, manifest and cancel are all "not found".
    let acme_id = id_of(&acme_job);
    let globex_id = id_of(&globex_job);
    for path in [
        format!("/v1/exports/{acme_id}"),
        format!("/v1/exports/{acme_id}/parts/1"),
        format!("/v1/exports/{acme_id}/manifest"),
    ] {
        let resp = send(svc.get(&path, GLOBEX)).await;
        let body = expect_problem(resp, 404, None).await;
        assert_eq!(body["type"], "/problems/not-found", "{path}");
        assert!(!body.to_string().contains("acme-1"), "{body}");
    }
    let resp = send(svc.post(&format!("/v1/exports/{acme_id}/cancel"), GLOBEX)).await;
    expect_problem(resp, 404, None).await;
    // The owner still sees all of it.
    let resp = send(svc.get(&format!("/v1/exports/{acme_id}/manifest"), ACME)).await;
    assert_eq!(resp.status(), 200);
    let resp = send(svc.get(&format!("/v1/exports/{globex_id}/parts/1"), ACME)).await;
    expect_problem(resp, 404, None).await;

    // Lists are per tenant.
    let list = json_answer(send(svc.get("/v1/exports", GLOBEX)).await, 200).await;
    let ids: BTreeSet<&str> = list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(globex_id.as_str()) && !ids.contains(acme_id.as_str()));
    let list = json_answer(send(svc.get("/v1/exports", ACME)).await, 200).await;
    let acme_ids: Vec<&str> = list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(acme_ids, [acme_id.as_str()]);

    // Evaluate and preview are scoped too.
    let resp = send(svc.post("/v1/exports/evaluate", GLOBEX).json(&request)).await;
    assert_eq!(json_answer(resp, 200).await["estimated_rows"], 1);
    let resp = send(svc.post("/v1/logs/clicks/preview", GLOBEX).json(&json!({
        "date_since": DAY, "date_until": DAY, "fields": ["click_id"]})))
    .await;
    let preview = json_answer(resp, 200).await;
    assert_eq!(preview["data"], json!([{"click_id": "globex-1"}]));

    // The tenant column is neither a field nor a filter.
    let mut r = request.clone();
    r["fields"] = json!(["click_id", "tenant_id"]);
    let resp = send(svc.post("/v1/exports", GLOBEX).json(&r)).await;
    expect_problem(resp, 422, Some("fields[1]")).await;
    let mut r = request.clone();
    r["filters"] = json!([{"field": "tenant_id", "op": "eq", "value": "acme"}]);
    let resp = send(svc.post("/v1/exports", GLOBEX).json(&r)).await;
    expect_problem(resp, 422, Some("filters[0].field")).await;

    // Idempotency keys are per tenant: the same key makes two different jobs.
    let key = "shared-key-1";
    let a = send(
        svc.post("/v1/exports", ACME)
            .header("Idempotency-Key", key)
            .json(&request),
    )
    .await;
    let a = json_answer(a, 202).await;
    let g = send(
        svc.post("/v1/exports", GLOBEX)
            .header("Idempotency-Key", key)
            .json(&request),
    )
    .await;
    let g = json_answer(g, 202).await;
    assert_ne!(a["id"], g["id"]);
    let (_, parts) = finish(&svc, GLOBEX, &id_of(&g)).await;
    assert_eq!(csv_first_column(&parts), ["globex-1"]);
}

// ---------------------------------------------------------------------------------
// The job view, part downloads and the manifest
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn job_view_downloads_and_manifest() {
    let svc = Service::start().await;
    let lines: Vec<Value> = (0..5)
        .map(|i| json!({"click_id": format!("v{i}"), "event_time": format!("{DAY}T0{i}:00:00Z"), "cost": i}))
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;

    // What a default request becomes: defaults filled in the stored request.
    let slice = json_answer(send(svc.get("/v1/slices/clicks", ACME)).await, 200).await;
    let defaults: Vec<Value> = slice["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["default"] == true)
        .map(|f| f["name"].clone())
        .collect();
    assert!(defaults.len() > 3);
    let request = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY});
    let resp = send(svc.post("/v1/exports", ACME).json(&request)).await;
    assert_eq!(resp.status(), 202);
    let id_loc = header(&resp, "location").unwrap().to_string();
    let created = json_answer(resp, 202).await;
    let id = id_of(&created);
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(id_loc, format!("/v1/exports/{id}"));
    assert_eq!(created["status"], "queued");
    assert_eq!(created["slice"], "clicks");
    assert_eq!(
        created["request"],
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
            "date_dimension": "event", "timezone": "UTC", "fields": defaults,
            "filters": [], "format": "csv", "compression": "none"})
    );
    for k in [
        "started_at",
        "finished_at",
        "expires_at",
        "error",
        "manifest_url",
    ] {
        assert!(created.get(k).is_some_and(Value::is_null), "{k}: {created}");
    }
    assert_eq!(created["attempts"], 0);
    assert_eq!(
        created["progress"],
        json!({"rows": 0, "bytes": 0, "parts": 0})
    );
    assert_eq!(created["parts"], json!([]));
    let created_ms = rfc3339_ms(created["created_at"].as_str().unwrap());
    let watermark_ms = rfc3339_ms(created["watermark"].as_str().unwrap());
    assert!(watermark_ms <= created_ms && created_ms - watermark_ms < 1000);

    let job = svc.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["request"], created["request"]);
    assert_eq!(job["created_at"], created["created_at"]);
    assert_eq!(job["watermark"], created["watermark"]);
    let started = rfc3339_ms(job["started_at"].as_str().unwrap());
    let finished = rfc3339_ms(job["finished_at"].as_str().unwrap());
    let expires = rfc3339_ms(job["expires_at"].as_str().unwrap());
    assert!(created_ms <= started && started <= finished, "{job}");
    // The default TTL is 7 days.
    assert!((expires - finished - 7 * 86_400_000).abs() < 2_000, "{job}");
    assert_eq!(job["attempts"], 1);
    assert!(job["error"].is_null());
    let parts = job["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    let part = &parts[0];
    let sha = part["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    assert_eq!(part["n"], 1);
    assert_eq!(part["rows"], 5);
    assert_eq!(part["url"], format!("/v1/exports/{id}/parts/1"));
    assert_eq!(
        job["progress"],
        json!({"rows": 5, "bytes": part["bytes"], "parts": 1})
    );
    assert_eq!(job["manifest_url"], format!("/v1/exports/{id}/manifest"));

    // The part: type, disposition, length, ETag = sha256 of the body.
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type"),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        header(&resp, "content-disposition"),
        Some(format!("attachment; filename=\"{id}-part-00001.csv\"").as_str())
    );
    let etag = format!("\"{sha}\"");
    assert_eq!(header(&resp, "etag"), Some(etag.as_str()));
    let length: u64 = header(&resp, "content-length").unwrap().parse().unwrap();
    let body = resp.bytes().await.unwrap();
    assert_eq!(length, body.len() as u64);
    assert_eq!(length, part["bytes"].as_u64().unwrap());
    assert_eq!(hex::encode(Sha256::digest(&body)), sha);
    let (header_row, rows) = parse_csv(&body);
    let default_names: Vec<&str> = defaults.iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(header_row, default_names);
    assert_eq!(rows.len(), 5);

    // Conditional GETs.
    for inm in [etag.clone(), "*".to_string(), format!("\"nope\", {etag}")] {
        let resp = send(
            svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)
                .header("If-None-Match", &inm),
        )
        .await;
        assert_eq!(resp.status(), 304, "If-None-Match: {inm}");
        assert_eq!(header(&resp, "etag"), Some(etag.as_str()));
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let resp = send(
        svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)
            .header("If-None-Match", "\"0000\""),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), body);

    // The manifest: parts, rows, sha256, watermark, the request.
    let resp = send(svc.get(&format!("/v1/exports/{id}/manifest"), ACME)).await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("application/json"));
    let manifest: Value = resp.json().await.unwrap();
    assert_eq!(manifest["job_id"], id.as_str());
    assert_eq!(manifest["slice"], "clicks");
    assert_eq!(manifest["format"], "csv");
    assert_eq!(manifest["fields"], json!(defaults));
    assert_eq!(manifest["request"], job["request"]);
    assert_eq!(
        rfc3339_ms(manifest["watermark"].as_str().unwrap()),
        watermark_ms
    );
    assert_eq!(
        manifest["parts"],
        json!([{"n": 1, "file": "part-00001.csv", "rows": 5, "bytes": length, "sha256": sha}])
    );
    assert_eq!(manifest["totals"], job["progress"]);

    // Every format: its content type, file extension and ETag.
    for (format, ct, ext) in [
        ("tsv", "text/tab-separated-values; charset=utf-8", "tsv"),
        ("jsonl", "application/x-ndjson", "jsonl"),
        ("json", "application/json", "json"),
    ] {
        let (job, parts) = svc
            .export(
                ACME,
                &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
                    "fields": ["click_id", "cost"], "format": format}),
            )
            .await;
        let id = id_of(&job);
        let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
        assert_eq!(header(&resp, "content-type"), Some(ct), "{format}");
        assert_eq!(
            header(&resp, "content-disposition"),
            Some(format!("attachment; filename=\"{id}-part-00001.{ext}\"").as_str())
        );
        let sha = job["parts"][0]["sha256"].as_str().unwrap();
        assert_eq!(header(&resp, "etag"), Some(format!("\"{sha}\"").as_str()));
        assert_eq!(hex::encode(Sha256::digest(&parts[0])), sha);
        let manifest = json_answer(
            send(svc.get(&format!("/v1/exports/{id}/manifest"), ACME)).await,
            200,
        )
        .await;
        assert_eq!(manifest["format"], format);
        assert_eq!(manifest["parts"][0]["file"], format!("part-00001.{ext}"));
    }
}

// ---------------------------------------------------------------------------------
// Parts, limit, empty results
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn parts_limits_and_empty_results() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "4")).await;
    // Ten rows; some values span lines, so parts must be cut at record boundaries.
    let lines: Vec<Value> = (0..10)
        .map(|i| {
            json!({"click_id": format!("p{i}"), "event_time": format!("{DAY}T{i:02}:00:00Z"),
                "sub1": NASTY[(i * 5) % NASTY.len()], "sub2": "x\ny\r\n\"z\"", "cost": i})
        })
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;
    let all: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let fields = json!(["click_id", "sub1", "sub2", "cost"]);
    let req = |format: &str, extra: Value| {
        let mut r = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
            "fields": fields, "format": format});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let cases: Vec<(Value, Vec<u64>)> = vec![
        (req("csv", json!({"part_max_rows": 3})), vec![3, 3, 3, 1]),
        (req("tsv", json!({"part_max_rows": 3})), vec![3, 3, 3, 1]),
        (req("jsonl", json!({"part_max_rows": 3})), vec![3, 3, 3, 1]),
        (req("json", json!({"part_max_rows": 3})), vec![3, 3, 3, 1]),
        (req("csv", json!({"part_max_rows": 5})), vec![5, 5]),
        (req("json", json!({"part_max_rows": 10})), vec![10]),
        (req("csv", json!({"part_max_rows": 1})), vec![1; 10]),
        (req("csv", json!({"part_max_rows": 1_000_000})), vec![10]),
        (req("jsonl", json!({"limit": 4})), vec![4]),
        (
            req("csv", json!({"limit": 4, "part_max_rows": 3})),
            vec![3, 1],
        ),
        (req("csv", json!({"limit": 100})), vec![10]),
        (
            req("json", json!({"limit": 10, "part_max_rows": 5})),
            vec![5, 5],
        ),
    ];
    let requests: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
    let done = run_all(&svc, ACME, &requests).await;
    for ((req, sizes), (job, parts)) in cases.iter().zip(&done) {
        let format = req["format"].as_str().unwrap();
        let listed: Vec<u64> = job["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rows"].as_u64().unwrap())
            .collect();
        assert_eq!(&listed, sizes, "{req}");
        let ns: Vec<u64> = job["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (1..=sizes.len() as u64).collect::<Vec<_>>());
        assert_eq!(job["progress"]["parts"], sizes.len(), "{job}");
        let mut ids = Vec::new();
        for (part, want) in parts.iter().zip(sizes) {
            let part_ids: Vec<String> = match format {
                "csv" => {
                    let (h, rows) = parse_csv(part);
                    assert_eq!(h, ["click_id", "sub1", "sub2", "cost"]);
                    rows.into_iter().map(|r| r[0].clone()).collect()
                }
                "tsv" => {
                    let (h, rows) = parse_tsv(part);
                    assert_eq!(h, ["click_id", "sub1", "sub2", "cost"]);
                    rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
                }
                "jsonl" => parse_jsonl(part)
                    .iter()
                    .map(|r| r["click_id"].as_str().unwrap().to_string())
                    .collect(),
                _ => parse_json_doc(part)
                    .iter()
                    .map(|r| r["click_id"].as_str().unwrap().to_string())
                    .collect(),
            };
            assert_eq!(part_ids.len() as u64, *want, "{req}");
            ids.extend(part_ids);
        }
        let total: u64 = sizes.iter().sum();
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len() as u64, total, "no row twice: {req}");
        if total == 10 {
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, all, "{req}");
        } else {
            assert!(ids.iter().all(|i| all.contains(i)));
        }
    }
    // Parts of one export have their own names and checksums.
    let (job, _) = &done[0];
    let id = id_of(job);
    for n in 1..=4 {
        let resp = send(svc.get(&format!("/v1/exports/{id}/parts/{n}"), ACME)).await;
        assert_eq!(
            header(&resp, "content-disposition"),
            Some(format!("attachment; filename=\"{id}-part-{n:05}.csv\"").as_str())
        );
    }
    let manifest = json_answer(
        send(svc.get(&format!("/v1/exports/{id}/manifest"), ACME)).await,
        200,
    )
    .await;
    let rows: Vec<u64> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, [3, 3, 3, 1]);
    assert_eq!(manifest["totals"]["rows"], 10);
    assert_eq!(manifest["totals"]["parts"], 4);

    // An empty result is one header-only part with zero rows.
    let empty = |format: &str| {
        json!({"slice": "clicks", "date_since": "2026-11-01", "date_until": "2026-11-02",
            "fields": ["click_id", "cost"], "format": format, "part_max_rows": 3})
    };
    let done = run_all(
        &svc,
        ACME,
        &[empty("csv"), empty("tsv"), empty("jsonl"), empty("json")],
    )
    .await;
    for (format, (job, parts)) in ["csv", "tsv", "jsonl", "json"].iter().zip(&done) {
        assert_eq!(parts.len(), 1, "{format}: {job}");
        assert_eq!(job["parts"][0]["rows"], 0);
        assert_eq!(job["progress"]["rows"], 0);
        let text = String::from_utf8(parts[0].clone()).unwrap();
        match *format {
            "csv" => assert_eq!(text, "click_id,cost\n"),
            "tsv" => assert_eq!(text, "click_id\tcost\n"),
            "jsonl" => assert_eq!(text, ""),
            _ => assert!(parse_json_doc(&parts[0]).is_empty(), "{text:?}"),
        }
    }
}

/// The number of parts is capped (`LOGPORT_EXPORT_MAX_PARTS`, 10,000 by default): a
/// request whose part limits would pass it is refused at once with a 422 naming the
/// limit (`part_max_rows: 1` over 20,000 rows once wrote 20,000 files), evaluate says
/// why it is not possible, a legitimate multi-part export still works, and an export
/// whose bytes estimate was off fails for good at the cap instead of writing on.
#[tokio::test]
async fn part_limits_that_would_pass_the_part_cap_are_refused() {
    let mut svc = Service::start().await;
    let rows: Vec<Value> = (0..20_000)
        .map(|i| {
            json!({"click_id": format!("c{i:05}"),
                "event_time": format!("{DAY}T{:02}:{:02}:{:02}Z", i / 3600, (i / 60) % 60, i % 60)})
        })
        .collect();
    svc.ingest(ACME, "clicks", &rows).await;
    let req = |extra: Value| {
        let mut r = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
            "fields": ["click_id"]});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };

    let one_per_part = req(json!({"part_max_rows": 1}));
    let resp = send(svc.post("/v1/exports", ACME).json(&one_per_part)).await;
    let body = expect_problem(resp, 422, Some("part_max_rows")).await;
    assert_eq!(body["type"], "/problems/invalid-request");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("20000 parts")
            && detail.contains("at most 10000 parts")
            && detail.contains("at least 2"),
        "{detail}"
    );
    let e = json_answer(
        send(svc.post("/v1/exports/evaluate", ACME).json(&one_per_part)).await,
        200,
    )
    .await;
    assert_eq!(e["possible"], false, "{e}");
    assert_eq!(e["estimated_rows"], 20_000);
    assert_eq!(
        e["reason"], detail,
        "evaluate and create give the same reason"
    );
    // A limit that keeps the parts under the cap needs no count.
    let limited = req(json!({"part_max_rows": 1, "limit": 3}));
    let (job, parts) = svc.export(ACME, &limited).await;
    assert_eq!(parts.len(), 3, "{job}");
    // A legitimate multi-part export.
    let (job, parts) = svc.export(ACME, &req(json!({"part_max_rows": 5000}))).await;
    assert_eq!(parts.len(), 4, "{job}");
    let (_, all) = csv_parts(&parts);
    assert_eq!(all.len(), 20_000);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 20_000);
    let list = json_answer(send(svc.get("/v1/exports", ACME)).await, 200).await;
    assert_eq!(
        list["exports"].as_array().unwrap().len(),
        2,
        "nothing else queued"
    );

    // A cap of 3 parts.
    svc.restart_with(Options::default().env("LOGPORT_EXPORT_MAX_PARTS", "3"))
        .await;
    // Bytes: 20,000 timestamps are far more than 3 KiB.
    let by_bytes = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
        "fields": ["event_time"], "part_max_bytes": 1024});
    let resp = send(svc.post("/v1/exports", ACME).json(&by_bytes)).await;
    let body = expect_problem(resp, 422, Some("part_max_bytes")).await;
    assert!(
        body["detail"].as_str().unwrap().contains("at most 3 parts"),
        "{body}"
    );
    // 200 rows: the estimate (from ClickHouse's 4-byte DateTime column) fits 3 parts
    // of 1 KiB, but as CSV text each row takes 22 bytes, 4.4 KB in all. The export
    // stops at the cap and fails for good.
    let mut underestimated = by_bytes.clone();
    underestimated["limit"] = json!(200);
    let created = svc.create_export(ACME, &underestimated).await;
    let job = svc.wait_export(ACME, &id_of(&created)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "too_many_parts", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 parts"),
        "{job}"
    );
    assert_eq!(job["attempts"], 1, "not retried: {job}");
    assert_eq!(
        job["parts"].as_array().unwrap().len(),
        3,
        "never a 4th: {job}"
    );
    // Within the cap all is as before.
    let (job, parts) = svc
        .export(ACME, &req(json!({"part_max_rows": 10_000})))
        .await;
    assert_eq!(parts.len(), 2, "{job}");
}

// ---------------------------------------------------------------------------------
// An API-only node; jobs survive kill -9; watermark; cancel
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn queued_jobs_survive_a_crash_keep_their_watermark_and_cancel() {
    let mut svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let first: Vec<Value> = (0..4)
        .map(|i| json!({"click_id": format!("w{i}"), "event_time": format!("{DAY}T1{i}:00:00Z"), "sub1": "a,\"b\"\nc"}))
        .collect();
    let answer = svc.ingest(ACME, "clicks", &first).await;
    let first_received = rfc3339_ms(answer["received_time"].as_str().unwrap()) / 1000;
    let fields = json!(["click_id", "sub1"]);
    let csv_req =
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": fields});
    let jsonl_req = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": fields, "format": "jsonl"});
    let a = svc.create_export(ACME, &csv_req).await;
    let b = svc.create_export(ACME, &jsonl_req).await;
    let c = svc.create_export(ACME, &csv_req).await;
    for j in [&a, &b, &c] {
        assert_eq!(j["status"], "queued");
    }
    let (a, b, c) = (id_of(&a), id_of(&b), id_of(&c));

    // Nobody runs them on an API-only node; there is no manifest or part yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let job = json_answer(send(svc.get(&format!("/v1/exports/{a}"), ACME)).await, 200).await;
    assert_eq!(job["status"], "queued");
    assert_eq!(job["attempts"], 0);
    let resp = send(svc.get(&format!("/v1/exports/{a}/manifest"), ACME)).await;
    expect_problem(resp, 404, None).await;
    let resp = send(svc.get(&format!("/v1/exports/{a}/parts/1"), ACME)).await;
    expect_problem(resp, 404, None).await;

    // Cancel a queued job; canceling again changes nothing.
    let resp = send(svc.post(&format!("/v1/exports/{c}/cancel"), ACME)).await;
    let canceled = json_answer(resp, 200).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["id"], c.as_str());
    assert!(canceled["finished_at"].is_string(), "{canceled}");
    let resp = send(svc.post(&format!("/v1/exports/{c}/cancel"), ACME)).await;
    assert_eq!(json_answer(resp, 200).await["status"], "canceled");
    let resp = send(svc.get(&format!("/v1/exports/{c}/manifest"), ACME)).await;
    expect_problem(resp, 404, None).await;

    // Rows received after the jobs were created (a later second) are not theirs.
    let watermark = rfc3339_ms(
        json_answer(send(svc.get(&format!("/v1/exports/{b}"), ACME)).await, 200).await["watermark"]
            .as_str()
            .unwrap(),
    ) / 1000;
    assert!(watermark >= first_received);
    sleep_past_second(watermark).await;
    let late: Vec<Value> = (0..3)
        .map(
            |i| json!({"click_id": format!("late{i}"), "event_time": format!("{DAY}T0{i}:00:00Z")}),
        )
        .collect();
    let answer = svc.ingest(ACME, "clicks", &late).await;
    assert!(rfc3339_ms(answer["received_time"].as_str().unwrap()) / 1000 > watermark);

    // kill -9, then a node with workers: the queued jobs run, the canceled one does not.
    svc.kill();
    svc.restart_with(Options::default()).await;
    let (job_a, parts_a) = finish(&svc, ACME, &a).await;
    let (job_b, parts_b) = finish(&svc, ACME, &b).await;
    let expected = Expected {
        fields: vec!["click_id", "sub1"],
        rows: (0..4)
            .map(|i| {
                let id = format!("w{i}");
                (id.clone(), vec![Cell::S(id), s("a,\"b\"\nc")])
            })
            .collect(),
    };
    expected.check_csv(&parts_a);
    expected.check_jsonl(&parts_b);
    assert_eq!(job_a["attempts"], 1);
    assert_eq!(job_b["progress"]["rows"], 4);
    // A job created now does see the late rows.
    let (_, parts) = svc.export(ACME, &csv_req).await;
    assert_eq!(csv_first_column(&parts).len(), 7);
    let manifest = json_answer(
        send(svc.get(&format!("/v1/exports/{a}/manifest"), ACME)).await,
        200,
    )
    .await;
    assert_eq!(
        rfc3339_ms(manifest["watermark"].as_str().unwrap()) / 1000,
        rfc3339_ms(job_a["watermark"].as_str().unwrap()) / 1000
    );

    let job_c = json_answer(send(svc.get(&format!("/v1/exports/{c}"), ACME)).await, 200).await;
    assert_eq!(job_c["status"], "canceled", "{job_c}");
    assert_eq!(job_c["attempts"], 0);
    assert!(job_c["started_at"].is_null());
    assert_eq!(job_c["parts"], json!([]));
    assert!(job_c["manifest_url"].is_null());

    // Cancel: a finished job → 409; unknown ids → 404.
    let resp = send(svc.post(&format!("/v1/exports/{a}/cancel"), ACME)).await;
    expect_problem(resp, 409, None).await;
    let job = json_answer(send(svc.get(&format!("/v1/exports/{a}"), ACME)).await, 200).await;
    assert_eq!(job["status"], "succeeded");
    for unknown in [
        "0123456789abcdef0123456789abcdef",
        "nope",
        "%27%20OR%201%3D1",
    ] {
        let resp = send(svc.post(&format!("/v1/exports/{unknown}/cancel"), ACME)).await;
        expect_problem(resp, 404, None).await;
    }
}

/// The watermark promise at its finest grain: a row ingested after `POST /v1/exports`
/// answered, but within the same wall-clock second, is still "received after the job
/// was created" and must not be in the export (nor appear in a retry only).
#[tokio::test]
async fn rows_received_after_creation_in_the_same_second_are_not_exported() {
    let mut svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "before", "event_time": format!("{DAY}T10:00:00Z")})],
    )
    .await;
    let request =
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"]});
    // Create the job early in a second, then ingest in that same second.
    let mut attempt = 0;
    let (id, late_id) = loop {
        attempt += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        sleep_past_second(now / 1000).await;
        let job = svc.create_export(ACME, &request).await;
        let created_s = rfc3339_ms(job["created_at"].as_str().unwrap()) / 1000;
        let late_id = format!("after-{attempt}");
        let answer = svc
            .ingest(
                ACME,
                "clicks",
                &[json!({"click_id": late_id, "event_time": format!("{DAY}T11:00:00Z")})],
            )
            .await;
        let received_s = rfc3339_ms(answer["received_time"].as_str().unwrap()) / 1000;
        if received_s == created_s {
            break (id_of(&job), late_id);
        }
        assert!(attempt < 5, "could not ingest within the creation second");
    };
    svc.restart_with(Options::default()).await;
    let (_, parts) = finish(&svc, ACME, &id).await;
    let ids = csv_first_column(&parts);
    assert!(ids.contains(&"before".to_string()), "{ids:?}");
    assert!(
        !ids.contains(&late_id),
        "{late_id} was ingested after the job was created, yet it is in the export: {ids:?}"
    );
}

// ---------------------------------------------------------------------------------
// Listing and idempotency
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_list_shows_finished_exports_with_their_parts() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"app_id": 1, "event_time": format!("{DAY} 10:00:00"), "click_id": "listed"})],
    )
    .await;
    let job = svc
        .create_export(
            ACME,
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"]}),
        )
        .await;
    let id = id_of(&job);
    let (done, _) = finish(&svc, ACME, &id).await;
    let list = json_answer(send(svc.get("/v1/exports", ACME)).await, 200).await;
    let listed = list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is not listed: {list}"));
    assert_eq!(listed["parts"], done["parts"], "{listed}");
    assert_eq!(listed["progress"], done["progress"], "{listed}");
    assert_eq!(
        listed["parts"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

#[tokio::test]
async fn list_pages_newest_first_and_filters() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let mut created = Vec::new();
    for (i, slice) in [
        "clicks",
        "conversions",
        "clicks",
        "clicks",
        "conversions",
        "clicks",
    ]
    .iter()
    .enumerate()
    {
        let job = svc
            .create_export(
                ACME,
                &json!({"slice": slice, "date_since": DAY, "date_until": DAY, "limit": i + 1}),
            )
            .await;
        created.push(id_of(&job));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in [&created[1], &created[2]] {
        let resp = send(svc.post(&format!("/v1/exports/{id}/cancel"), ACME)).await;
        assert_eq!(resp.status(), 200);
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    let list_ids = |v: &Value| -> Vec<String> {
        v["exports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };

    let all = json_answer(send(svc.get("/v1/exports", ACME)).await, 200).await;
    assert_eq!(list_ids(&all), newest_first);
    assert!(all["next_cursor"].is_null(), "{all}");
    // Views in the list are full job views.
    let first = &all["exports"][0];
    for k in ["id", "status", "request", "created_at", "progress", "parts"] {
        assert!(first.get(k).is_some(), "{k}: {first}");
    }

    // Paging: every job exactly once, in order, for any page size.
    for limit in [1, 2, 4, 6] {
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/exports?limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = json_answer(send(svc.get(&path, ACME)).await, 200).await;
            let ids = list_ids(&page);
            assert!(ids.len() <= limit, "{page}");
            got.extend(ids);
            pages += 1;
            assert!(pages <= 10, "paging does not end");
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(got, newest_first, "limit {limit}");
    }

    let ids_of = |q: &'static str| {
        let svc = &svc;
        async move {
            list_ids(
                &json_answer(send(svc.get(&format!("/v1/exports?{q}"), ACME)).await, 200).await,
            )
        }
    };
    assert_eq!(
        ids_of("status=canceled").await,
        [created[2].clone(), created[1].clone()]
    );
    assert_eq!(
        ids_of("status=queued").await,
        [
            created[5].clone(),
            created[4].clone(),
            created[3].clone(),
            created[0].clone()
        ]
    );
    assert_eq!(
        ids_of("slice=conversions").await,
        [created[4].clone(), created[1].clone()]
    );
    assert_eq!(
        ids_of("slice=conversions&status=queued").await,
        [created[4].clone()]
    );
    assert!(ids_of("status=succeeded").await.is_empty());
    assert!(ids_of("slice=installations").await.is_empty());
    let page = ids_of("status=queued&limit=2").await;
    assert_eq!(page, [created[5].clone(), created[4].clone()]);

    for (q, field) in [
        ("status=done", Some("status")),
        ("status=QUEUED", Some("status")),
        ("cursor=abc", Some("cursor")),
        ("cursor=123-xyz", Some("cursor")),
        ("cursor=x-0123456789abcdef0123456789abcdef", Some("cursor")),
        ("limit=0", Some("limit")),
        ("limit=5000", Some("limit")),
    ] {
        let resp = send(svc.get(&format!("/v1/exports?{q}"), ACME)).await;
        expect_problem(resp, 400, field).await;
    }
    for q in ["limit=abc", "limit=-1", "colour=red"] {
        let resp = send(svc.get(&format!("/v1/exports?{q}"), ACME)).await;
        let (status, body) = problem(resp).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    let resp = send(svc.http.get(svc.url("/v1/exports"))).await;
    expect_problem(resp, 401, None).await;
}

#[tokio::test]
async fn idempotency_keys_replay_or_conflict() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "i1", "event_time": format!("{DAY}T10:00:00Z")})],
    )
    .await;
    let body =
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"]});
    let post = |key: &str, body: &Value| {
        svc.post("/v1/exports", ACME)
            .header("Idempotency-Key", key)
            .json(body)
    };
    let resp = send(post("key-1", &body)).await;
    assert_eq!(resp.status(), 202);
    assert!(header(&resp, "idempotent-replayed").is_none());
    let first = json_answer(resp, 202).await;
    let id = id_of(&first);
    finish(&svc, ACME, &id).await;

    // Same key, same body: the same job, 200, marked as a replay (even once it ran).
    let resp = send(post("key-1", &body)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "idempotent-replayed"), Some("true"));
    assert_eq!(
        header(&resp, "location"),
        Some(format!("/v1/exports/{id}").as_str())
    );
    let replay = json_answer(resp, 200).await;
    assert_eq!(replay["id"], id.as_str());
    assert_eq!(replay["status"], "succeeded");
    // The same request spelled differently (defaults explicit, members reordered).
    let spelled = json!({"format": "csv", "fields": ["click_id"], "date_until": DAY,
        "timezone": "UTC", "date_dimension": "event", "filters": [], "compression": "none",
        "date_since": DAY, "slice": "clicks"});
    let resp = send(post("key-1", &spelled)).await;
    assert_eq!(json_answer(resp, 200).await["id"], id.as_str());

    // Same key, another body: 409, and no new job.
    let mut other = body.clone();
    other["format"] = json!("jsonl");
    let resp = send(post("key-1", &other)).await;
    let problem_body = expect_problem(resp, 409, None).await;
    assert_eq!(problem_body["type"], "/problems/conflict");
    // Another key: a new job.
    let resp = send(post("key-2", &body)).await;
    let second = json_answer(resp, 202).await;
    assert_ne!(second["id"], id.as_str());
    // No key: always a new job.
    let third = svc.create_export(ACME, &body).await;
    assert_ne!(third["id"], id.as_str());
    assert_ne!(third["id"], second["id"]);
    let list = json_answer(send(svc.get("/v1/exports", ACME)).await, 200).await;
    assert_eq!(list["exports"].as_array().unwrap().len(), 3, "{list}");

    // Keys that are not 1..=255 printable ASCII characters.
    for key in [String::new(), "x".repeat(256), "with space".into()] {
        let resp = send(post(&key, &body)).await;
        expect_problem(resp, 400, Some("Idempotency-Key")).await;
    }
}

// ---------------------------------------------------------------------------------
// Evaluate and preview
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn evaluate_counts_exactly_and_preview_shows_newest_own_rows() {
    let svc = Service::start().await;
    let lines: Vec<Value> = (0..12)
        .map(|i| {
            json!({"click_id": format!("e{i:02}"), "event_time": format!("{DAY}T{i:02}:30:00Z"),
                "country_code": if i % 3 == 0 { "US" } else { "DE" }, "cost": f64::from(i) / 4.0,
                "app_id": u64::MAX})
        })
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;
    svc.ingest(
        GLOBEX,
        "clicks",
        &[
            json!({"click_id": "g-newest", "event_time": format!("{DAY}T23:59:59Z"), "country_code": "US"}),
        ],
    )
    .await;
    let base = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY});
    let with = |extra: Value| {
        let mut r = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let evaluate = |r: Value| {
        let svc = &svc;
        async move {
            json_answer(
                send(svc.post("/v1/exports/evaluate", ACME).json(&r)).await,
                200,
            )
            .await
        }
    };

    let e = evaluate(base.clone()).await;
    assert_eq!(e["possible"], true, "{e}");
    assert_eq!(e["estimated_rows"], 12);
    assert!(e["estimated_bytes"].as_u64().unwrap() > 0, "{e}");
    assert!(e.get("reason").is_some(), "{e}");
    let e = evaluate(with(
        json!({"filters": [{"field": "country_code", "op": "eq", "value": "US"}]}),
    ))
    .await;
    assert_eq!(e["estimated_rows"], 4);
    let e = evaluate(with(json!({"limit": 5}))).await;
    assert_eq!(e["estimated_rows"], 5);
    let e = evaluate(with(json!({"app_id": 7}))).await;
    assert_eq!(e["estimated_rows"], 0);
    assert_eq!(e["estimated_bytes"], 0);
    let e = evaluate(with(
        json!({"date_since": "2026-10-01", "date_until": "2026-10-31"}),
    ))
    .await;
    assert_eq!(e["estimated_rows"], 0);
    // Evaluate queues nothing.
    let list = json_answer(send(svc.get("/v1/exports", ACME)).await, 200).await;
    assert_eq!(list["exports"], json!([]));
    // An export of the same request has exactly the estimated rows.
    let (job, _) = svc
        .export(ACME, &with(json!({"fields": ["click_id"]})))
        .await;
    assert_eq!(job["progress"]["rows"], 12);
    let resp = send(svc.post("/v1/exports/evaluate", GLOBEX).json(&base)).await;
    assert_eq!(json_answer(resp, 200).await["estimated_rows"], 1);

    // Preview: newest first, limited, typed values, own rows only.
    let preview = |body: Value, token: &'static str| {
        let svc = &svc;
        async move {
            json_answer(
                send(svc.post("/v1/logs/clicks/preview", token).json(&body)).await,
                200,
            )
            .await
        }
    };
    let p = preview(
        json!({"date_since": DAY, "date_until": DAY, "limit": 5,
            "fields": ["click_id", "event_time", "app_id", "cost", "lp_click_time"]}),
        ACME,
    )
    .await;
    assert_eq!(p["slice"], "clicks");
    assert_eq!(p["rows"], 5);
    assert_eq!(
        p["fields"],
        json!(["click_id", "event_time", "app_id", "cost", "lp_click_time"])
    );
    let ids: Vec<&str> = p["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["click_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e11", "e10", "e09", "e08", "e07"]);
    assert_eq!(
        p["data"][0],
        json!({"click_id": "e11", "event_time": "2026-11-05 11:30:00", "app_id": u64::MAX,
            "cost": 2.75, "lp_click_time": null})
    );
    let p = preview(json!({"date_since": DAY, "date_until": DAY}), ACME).await;
    assert_eq!(p["rows"], 12, "default limit covers all twelve");
    assert!(p["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["click_id"].as_str().unwrap().starts_with('e')));
    let p = preview(
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "limit": 1000,
            "filters": [{"field": "country_code", "op": "eq", "value": "US"}], "fields": ["click_id"]}),
        ACME,
    )
    .await;
    assert_eq!(
        p["data"],
        json!([{"click_id": "e09"}, {"click_id": "e06"}, {"click_id": "e03"}, {"click_id": "e00"}])
    );
    let p = preview(
        json!({"date_since": DAY, "date_until": DAY, "fields": ["click_id"]}),
        GLOBEX,
    )
    .await;
    assert_eq!(p["data"], json!([{"click_id": "g-newest"}]));

    for (body, status, field) in [
        (
            json!({"date_since": DAY, "date_until": DAY, "limit": 1001}),
            422,
            Some("limit"),
        ),
        (
            json!({"date_since": DAY, "date_until": DAY, "limit": 5000}),
            422,
            Some("limit"),
        ),
        (
            json!({"date_since": DAY, "date_until": DAY, "limit": 0}),
            422,
            Some("limit"),
        ),
        (
            json!({"slice": "conversions", "date_since": DAY, "date_until": DAY}),
            422,
            Some("slice"),
        ),
        (
            json!({"date_since": DAY, "date_until": DAY, "fields": ["nope"]}),
            422,
            Some("fields[0]"),
        ),
        (json!([1, 2]), 400, None),
    ] {
        let resp = send(svc.post("/v1/logs/clicks/preview", ACME).json(&body)).await;
        expect_problem(resp, status, field).await;
    }
    let resp = send(
        svc.post("/v1/logs/nope/preview", ACME)
            .json(&json!({"date_since": DAY, "date_until": DAY})),
    )
    .await;
    expect_problem(resp, 404, Some("slice")).await;
    let resp = send(
        svc.http
            .post(svc.url("/v1/logs/clicks/preview"))
            .json(&json!({"date_since": DAY, "date_until": DAY})),
    )
    .await;
    expect_problem(resp, 401, None).await;
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Sends a raw HTTP/1.1 request with a chunked body and returns the status code.
fn chunked_post(base: &str, path: &str, token: &str, body: &[u8]) -> u16 {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = stream.write_all(&req);
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

#[tokio::test]
async fn bad_requests_are_precise_problems() {
    let svc = Service::start_with(Options::default().env("LOGPORT_JSON_MAX_BYTES", "4096")).await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "x1", "event_time": format!("{DAY}T10:00:00Z")})],
    )
    .await;
    let base = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY});
    let with = |extra: Value| {
        let mut r = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let filter = |f: Value| with(json!({ "filters": [f] }));
    let fv = |field: &str, op: &str, value: Value| {
        filter(json!({"field": field, "op": op, "value": value}))
    };
    let fvs = |field: &str, op: &str, values: Value| {
        filter(json!({"field": field, "op": op, "values": values}))
    };
    #[rustfmt::skip]
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (with(json!({"slice": "nope"})), 404, Some("slice")),
        (with(json!({"slice": "clicks; DROP TABLE clicks"})), 404, Some("slice")),
        (with(json!({"fields": ["nope"]})), 422, Some("fields[0]")),
        (with(json!({"fields": ["click_id", "cost` FROM system.tables --"]})), 422, Some("fields[1]")),
        (with(json!({"fields": []})), 422, Some("fields")),
        (with(json!({"fields": ["click_id", "click_id"]})), 422, Some("fields[1]")),
        (with(json!({"date_since": "2026-13-01"})), 422, Some("date_since")),
        (with(json!({"date_since": "05.11.2026"})), 422, Some("date_since")),
        (with(json!({"date_since": "2026-11-05' OR 1=1 --"})), 422, Some("date_since")),
        (with(json!({"date_until": "tomorrow"})), 422, Some("date_until")),
        (with(json!({"date_since": "1969-12-31"})), 422, Some("date_since")),
        (with(json!({"date_since": "2026-11-06", "date_until": DAY})), 422, Some("date_until")),
        (with(json!({"date_since": "2026-11-05T10:00:01Z", "date_until": "2026-11-05T10:00:00Z"})), 422, Some("date_until")),
        (with(json!({"date_dimension": "arrival"})), 422, Some("date_dimension")),
        (with(json!({"timezone": "Mars/Olympus"})), 422, Some("timezone")),
        (with(json!({"timezone": "UTC'; DROP TABLE clicks; --"})), 422, Some("timezone")),
        (with(json!({"timezone": "+99:00"})), 422, Some("timezone")),
        (with(json!({"format": "xlsx"})), 422, Some("format")),
        (with(json!({"format": "CSV"})), 422, Some("format")),
        (with(json!({"compression": "rar"})), 422, Some("compression")),
        (with(json!({"format": "parquet", "compression": "gzip"})), 422, Some("compression")),
        (with(json!({"format": "jsonl", "utf8_bom": true})), 422, Some("utf8_bom")),
        (with(json!({"part_max_rows": 0})), 422, Some("part_max_rows")),
        (with(json!({"part_max_bytes": 1023})), 422, Some("part_max_bytes")),
        (with(json!({"limit": 0})), 422, Some("limit")),
        (fv("cost", "like", json!(1)), 422, Some("filters[0].op")),
        (fv("cost", "prefix", json!("1")), 422, Some("filters[0].op")),
        (filter(json!({"field": "cost", "op": "is_null"})), 422, Some("filters[0].op")),
        (fv("event_type", "lt", json!("visit")), 422, Some("filters[0].op")),
        (fv("nope", "eq", json!(1)), 422, Some("filters[0].field")),
        (fv("user_agent", "eq", json!("x")), 422, Some("filters[0].field")),
        (fv("cost", "eq", json!("abc")), 422, Some("filters[0].value")),
        (fv("cost", "eq", json!("1; DROP TABLE clicks")), 422, Some("filters[0].value")),
        (fv("country_code", "eq", json!(5)), 422, Some("filters[0].value")),
        (fv("app_id", "eq", json!(-1)), 422, Some("filters[0].value")),
        (fv("is_bot", "eq", json!(256)), 422, Some("filters[0].value")),
        (fv("event_type", "eq", json!("click")), 422, Some("filters[0].value")),
        (fv("event_time", "gt", json!("yesterday")), 422, Some("filters[0].value")),
        (fv("event_id", "eq", json!("not-a-uuid")), 422, Some("filters[0].value")),
        (fv("cost", "eq", json!(null)), 422, Some("filters[0].value")),
        (filter(json!({"field": "cost", "op": "eq"})), 422, Some("filters[0].value")),
        (fv("cost", "in", json!(1)), 422, Some("filters[0].value")),
        (fvs("cost", "in", json!([])), 422, Some("filters[0].values")),
        (fvs("cost", "in", json!([1, "x"])), 422, Some("filters[0].values[1]")),
        (fvs("cost", "between", json!([1])), 422, Some("filters[0].values")),
        (fvs("cost", "eq", json!([1])), 422, Some("filters[0].values")),
        (with(json!({"filters": [{"field": "cost", "op": "gt", "value": 0},
            {"field": "cost", "op": "lt", "value": "x"}]})), 422, Some("filters[1].value")),
        (with(json!({"colour": "red"})), 400, Some("colour")),
        (filter(json!({"field": "cost", "op": "eq", "value": 1, "extra": 2})), 400, Some("filters[0].extra")),
        (with(json!({"app_id": "x"})), 400, Some("app_id")),
        (with(json!({"app_id": -1})), 400, Some("app_id")),
        (with(json!({"date_since": 20261105})), 400, Some("date_since")),
        (with(json!({"fields": "click_id"})), 400, Some("fields")),
        (json!({"slice": "clicks", "date_until": DAY}), 400, None),
        (json!([base.clone()]), 400, None),
        (json!(["clicks", null, DAY, DAY]), 400, None),
        (json!(["clicks", 7, DAY, DAY, "event", "UTC", ["click_id"]]), 400, None),
        (json!("clicks"), 400, None),
    ];
    for (body, status, field) in &cases {
        for path in ["/v1/exports", "/v1/exports/evaluate"] {
            let resp = send(svc.post(path, ACME).json(body)).await;
            let problem_body = expect_problem(resp, *status, *field).await;
            let kind = match status {
                404 => "/problems/unknown-slice",
                422 => "/problems/invalid-request",
                _ => "/problems/bad-request",
            };
            assert_eq!(problem_body["type"], kind, "{path} {body}");
        }
    }
    // The longest date range is a quota: 429 with Retry-After on create; evaluate says
    // it is not possible, and why.
    let too_long = with(json!({"date_since": "2025-11-04"}));
    let resp = send(svc.post("/v1/exports", ACME).json(&too_long)).await;
    assert!(header(&resp, "retry-after").is_some());
    let body = expect_problem(resp, 429, Some("date_until")).await;
    assert_eq!(body["type"], "/problems/quota-exceeded");
    assert_eq!(body["limit"], "max_range_days");
    let resp = send(svc.post("/v1/exports/evaluate", ACME).json(&too_long)).await;
    let e = json_answer(resp, 200).await;
    assert_eq!(e["possible"], false, "{e}");
    assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
    // The range is refused before anything is counted.
    assert_eq!(e["estimated_rows"], Value::Null, "{e}");
    // 366 days is allowed.
    let resp = send(
        svc.post("/v1/exports/evaluate", ACME)
            .json(&with(json!({"date_since": "2025-11-05"}))),
    )
    .await;
    let e = json_answer(resp, 200).await;
    assert_eq!(e["possible"], true, "{e}");
    assert!(e["reason"].is_null(), "{e}");

    // Nothing above was queued.
    let list = json_answer(send(svc.get("/v1/exports", ACME)).await, 200).await;
    assert_eq!(list["exports"], json!([]));
    // The missing member is named in the detail.
    let resp = send(
        svc.post("/v1/exports", ACME)
            .json(&json!({"slice": "clicks", "date_until": DAY})),
    )
    .await;
    let body = expect_problem(resp, 400, None).await;
    assert!(
        body["detail"].as_str().unwrap().contains("date_since"),
        "{body}"
    );

    // Malformed and oversized bodies.
    for raw in [
        "",
        "{",
        "{\"slice\": \"clicks\",}",
        "not json",
        "\u{feff}{}",
    ] {
        let resp = send(
            svc.post("/v1/exports", ACME)
                .header("content-type", "application/json")
                .body(raw),
        )
        .await;
        expect_problem(resp, 400, None).await;
    }
    let mut big = base.clone();
    big["fields"] = json!(vec!["click_id"; 600]);
    let big_body = big.to_string();
    assert!(big_body.len() > 4096);
    let resp = send(
        svc.post("/v1/exports", ACME)
            .header("content-type", "application/json")
            .body(big_body.clone()),
    )
    .await;
    let body = expect_problem(resp, 413, None).await;
    assert_eq!(body["type"], "/problems/too-large");
    let resp = send(
        svc.post("/v1/exports/evaluate", ACME)
            .body(big_body.clone()),
    )
    .await;
    expect_problem(resp, 413, None).await;
    let resp = send(
        svc.post("/v1/logs/clicks/preview", ACME)
            .body(big_body.clone()),
    )
    .await;
    expect_problem(resp, 413, None).await;
    let (base_url, bytes) = (svc.base.clone(), big_body.into_bytes());
    let status =
        tokio::task::spawn_blocking(move || chunked_post(&base_url, "/v1/exports", ACME, &bytes))
            .await
            .unwrap();
    assert_eq!(status, 413, "a chunked body over the limit");
    let resp = send(
        svc.post("/v1/exports", ACME)
            .header("content-encoding", "br")
            .json(&base),
    )
    .await;
    expect_problem(resp, 415, None).await;
    // A gzip body is read like any other.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(base.to_string().as_bytes()).unwrap();
    let resp = send(
        svc.post("/v1/exports/evaluate", ACME)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(gz.finish().unwrap()),
    )
    .await;
    assert_eq!(json_answer(resp, 200).await["estimated_rows"], 1);

    // Authentication.
    let no_token = send(svc.http.post(svc.url("/v1/exports")).json(&base)).await;
    assert_eq!(
        header(&no_token, "www-authenticate"),
        Some("Bearer realm=\"logport\"")
    );
    expect_problem(no_token, 401, None).await;
    for auth in ["Bearer wrong-token", "Basic dGVzdDp0ZXN0", "Bearer", ACME] {
        let resp = send(
            svc.http
                .post(svc.url("/v1/exports"))
                .header("authorization", auth)
                .json(&base),
        )
        .await;
        expect_problem(resp, 401, None).await;
    }
    // AppMetrica clients send `OAuth <token>`.
    let resp = send(
        svc.http
            .post(svc.url("/v1/exports/evaluate"))
            .header("authorization", format!("OAuth {ACME}"))
            .json(&base),
    )
    .await;
    assert_eq!(resp.status(), 200);
    for path in [
        "/v1/exports/0123456789abcdef0123456789abcdef",
        "/v1/exports/0123456789abcdef0123456789abcdef/parts/1",
    ] {
        let resp = send(svc.http.get(svc.url(path))).await;
        expect_problem(resp, 401, None).await;
    }

    // Unknown jobs, parts and paths.
    let (job, _) = svc
        .export(
            ACME,
            &with(json!({"fields": ["click_id"], "part_max_rows": 1})),
        )
        .await;
    let id = id_of(&job);
    assert_eq!(job["parts"].as_array().unwrap().len(), 1);
    for path in [
        "/v1/exports/0123456789abcdef0123456789abcdef".to_string(),
        "/v1/exports/0123456789ABCDEF0123456789ABCDEF".to_string(),
        "/v1/exports/nope".to_string(),
        "/v1/exports/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/v1/exports/%27%20OR%201%3D1%20--".to_string(),
        format!("/v1/exports/{id}0"),
        "/v1/exports/0123456789abcdef0123456789abcdef/manifest".to_string(),
        "/v1/exports/0123456789abcdef0123456789abcdef/parts/1".to_string(),
        format!("/v1/exports/{id}/parts/2"),
        format!("/v1/exports/{id}/parts/0"),
        format!("/v1/exports/{id}/parts/-1"),
        format!("/v1/exports/{id}/parts/abc"),
        format!("/v1/exports/{id}/parts/1.0"),
        format!("/v1/exports/{id}/parts/99999999999999999999"),
        format!("/v1/exports/{id}/parts/%2e%2e"),
        format!("/v1/exports/{id}/nope"),
        "/v1/nope".to_string(),
    ] {
        let resp = send(svc.get(&path, ACME)).await;
        expect_problem(resp, 404, None).await;
    }
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
    assert_eq!(resp.status(), 200);
    // Wrong methods are problems too, never server errors.
    let resp = send(svc.get("/v1/exports/evaluate", ACME)).await;
    expect_problem(resp, 405, None).await;
    let resp = send(svc.get(&format!("/v1/exports/{id}/cancel"), ACME)).await;
    expect_problem(resp, 405, None).await;
}

/// Filter values at the edges of what ClickHouse 18.16 parses: the largest and smallest
/// normal doubles work; subnormal ones (which 18.16 cannot parse) are a 422, never a 5xx.
#[tokio::test]
async fn extreme_filter_values_never_fail_the_server() {
    let svc = Service::start().await;
    svc.ingest(
        ACME,
        "clicks",
        &[
            json!({"click_id": "zero", "event_time": format!("{DAY}T10:00:00Z"), "cost": 0.0}),
            json!({"click_id": "tiny", "event_time": format!("{DAY}T10:00:00Z"), "cost": f64::MIN_POSITIVE}),
            json!({"click_id": "huge", "event_time": format!("{DAY}T10:00:00Z"), "cost": f64::MAX}),
            json!({"click_id": "neg", "event_time": format!("{DAY}T10:00:00Z"), "cost": -f64::MAX}),
        ],
    )
    .await;
    let req = |filter: Value| {
        json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": ["click_id"],
            "filters": [filter]})
    };
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"field": "cost", "op": "gt", "value": 0}),
            vec!["huge", "tiny"],
        ),
        (
            json!({"field": "cost", "op": "gte", "value": f64::MAX}),
            vec!["huge"],
        ),
        (
            json!({"field": "cost", "op": "lte", "value": -f64::MAX}),
            vec!["neg"],
        ),
        (
            json!({"field": "cost", "op": "eq", "value": f64::MIN_POSITIVE}),
            vec!["tiny"],
        ),
        (
            json!({"field": "cost", "op": "lt", "value": "2.2250738585072014e-308"}),
            vec!["neg", "zero"],
        ),
        (
            json!({"field": "cost", "op": "in", "values": [f64::MAX, -f64::MAX, 0]}),
            vec!["huge", "neg", "zero"],
        ),
    ];
    for (filter, want) in &cases {
        let r = req(filter.clone());
        let resp = send(svc.post("/v1/exports/evaluate", ACME).json(&r)).await;
        let e = json_answer(resp, 200).await;
        assert_eq!(e["estimated_rows"], want.len(), "{filter}: {e}");
        let resp = send(svc.post("/v1/logs/clicks/preview", ACME).json(&r)).await;
        let p = json_answer(resp, 200).await;
        assert_eq!(p["rows"], want.len(), "{filter}: {p}");
        let (_, parts) = svc.export(ACME, &r).await;
        assert_eq!(&csv_first_column(&parts), want, "{filter}");
    }
    for (filter, field) in [
        (
            json!({"field": "cost", "op": "gt", "value": 5e-324}),
            "filters[0].value",
        ),
        (
            json!({"field": "cost", "op": "lt", "value": "1e-320"}),
            "filters[0].value",
        ),
        (
            json!({"field": "cost", "op": "between", "values": [-1e-310, 1]}),
            "filters[0].values[0]",
        ),
    ] {
        let r = req(filter.clone());
        for path in [
            "/v1/exports",
            "/v1/exports/evaluate",
            "/v1/logs/clicks/preview",
        ] {
            let resp = send(svc.post(path, ACME).json(&r)).await;
            expect_problem(resp, 422, Some(field)).await;
        }
    }
}

// ---------------------------------------------------------------------------------
// Compression, byte order mark, part_max_bytes, Parquet
// ---------------------------------------------------------------------------------

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn compressed_bom_byte_split_and_parquet_parts() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "4")).await;
    let lines: Vec<Value> = (0..10)
        .map(|i| {
            json!({"click_id": format!("c{i}"), "event_time": format!("{DAY}T{i:02}:00:00Z"),
                "sub1": format!("{}{}", NASTY[i], "x".repeat(200)), "cost": f64::from(i as u8) / 8.0,
                "app_id": u64::MAX - i as u64})
        })
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;
    let fields = json!(["click_id", "sub1", "cost", "app_id", "lp_click_time"]);
    let req = |extra: Value| {
        let mut r =
            json!({"slice": "clicks", "date_since": DAY, "date_until": DAY, "fields": fields});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let requests = [
        req(json!({})),
        req(json!({"compression": "gzip"})),
        req(json!({"compression": "zstd", "part_max_rows": 4})),
        req(json!({"format": "jsonl", "compression": "gzip"})),
        req(json!({"utf8_bom": true, "part_max_rows": 6})),
        req(json!({"format": "tsv", "utf8_bom": true})),
        req(json!({"part_max_bytes": 1024})),
        req(json!({"format": "parquet"})),
        req(json!({"format": "parquet", "part_max_rows": 4})),
    ];
    let done = run_all(&svc, ACME, &requests).await;
    let (_, plain_parts) = &done[0];
    let (plain_header, mut plain_rows) = csv_parts(plain_parts);
    plain_rows.sort();
    assert_eq!(plain_rows.len(), 10);

    // gzip: one valid gzip stream per part, the same CSV inside.
    let (job, parts) = &done[1];
    let id = id_of(job);
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
    assert_eq!(header(&resp, "content-type"), Some("application/gzip"));
    assert_eq!(
        header(&resp, "content-disposition"),
        Some(format!("attachment; filename=\"{id}-part-00001.csv.gz\"").as_str())
    );
    let (h, mut rows) = parse_csv(&gunzip(&parts[0]));
    rows.sort();
    assert_eq!((h, rows), (plain_header.clone(), plain_rows.clone()));
    let manifest = json_answer(
        send(svc.get(&format!("/v1/exports/{id}/manifest"), ACME)).await,
        200,
    )
    .await;
    assert_eq!(manifest["compression"], "gzip");
    assert_eq!(manifest["parts"][0]["file"], "part-00001.csv.gz");
    // The part's bytes and sha256 are those of the compressed file.
    assert_eq!(job["parts"][0]["bytes"], parts[0].len());

    // zstd, split: each part its own zstd frame with a header row.
    let (job, parts) = &done[2];
    assert_eq!(parts.len(), 3, "{job}");
    let id = id_of(job);
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/3"), ACME)).await;
    assert_eq!(header(&resp, "content-type"), Some("application/zstd"));
    assert_eq!(
        header(&resp, "content-disposition"),
        Some(format!("attachment; filename=\"{id}-part-00003.csv.zst\"").as_str())
    );
    let decoded: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| zstd::decode_all(&p[..]).unwrap())
        .collect();
    let (h, mut rows) = csv_parts(&decoded);
    rows.sort();
    assert_eq!((h, rows), (plain_header.clone(), plain_rows.clone()));

    // jsonl.gz
    let (_, parts) = &done[3];
    let records = parse_jsonl(&gunzip(&parts[0]));
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r["lp_click_time"].is_null()));

    // A UTF-8 BOM starts every CSV/TSV part, then the header.
    let bom = "\u{feff}".as_bytes();
    let (_, parts) = &done[4];
    assert_eq!(parts.len(), 2);
    let mut rows = Vec::new();
    for p in parts {
        assert!(p.starts_with(bom), "BOM in every part");
        let (h, r) = parse_csv(&p[3..]);
        assert_eq!(h, plain_header);
        rows.extend(r);
    }
    rows.sort();
    assert_eq!(rows, plain_rows);
    let (_, parts) = &done[5];
    assert!(parts[0].starts_with(bom));
    let (h, r) = parse_tsv(&parts[0][3..]);
    assert_eq!(h, plain_header);
    assert_eq!(r.len(), 10);

    // part_max_bytes: a part is closed at the first record boundary past the limit.
    let (job, parts) = &done[6];
    assert!(parts.len() > 1, "{job}");
    let header_len = plain_header.join(",").len() + 1;
    let longest = lines
        .iter()
        .map(|l| l.to_string().len() + 64)
        .max()
        .unwrap();
    let mut rows = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            p.len() < 1024 + longest + header_len,
            "part {i}: {}",
            p.len()
        );
        if i + 1 < parts.len() {
            assert!(p.len() >= 1024, "part {i} closed early: {}", p.len());
        }
        let (h, r) = parse_csv(p);
        assert_eq!(h, plain_header);
        assert!(!r.is_empty());
        rows.extend(r);
    }
    rows.sort();
    assert_eq!(rows, plain_rows);

    // Parquet: a real Parquet file per part, counted rows.
    for (i, sizes) in [(7, vec![10]), (8, vec![4, 4, 2])] {
        let (job, parts) = &done[i];
        let listed: Vec<u64> = job["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rows"].as_u64().unwrap())
            .collect();
        assert_eq!(listed, sizes, "{job}");
        for p in parts {
            assert!(
                p.starts_with(b"PAR1") && p.ends_with(b"PAR1"),
                "Parquet magic"
            );
        }
        let id = id_of(job);
        let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
        assert_eq!(
            header(&resp, "content-type"),
            Some("application/vnd.apache.parquet")
        );
        assert_eq!(
            header(&resp, "content-disposition"),
            Some(format!("attachment; filename=\"{id}-part-00001.parquet\"").as_str())
        );
    }
}

/// The epoch is a valid `Date` and `DateTime` (ingest accepts it, and it is what an
/// omitted non-nullable date field defaults to): it must come back as 1970-01-01, the
/// same on every server version, not as ClickHouse 18.x's `0000-00-00`.
#[tokio::test]
async fn epoch_dates_come_back_as_1970_01_01() {
    let schemas = schema_dir();
    let svc = Service::start_with(
        Options::default().env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap()),
    )
    .await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "epoch", "event_time": "1970-01-01T00:00:00Z", "lp_click_time": 0})],
    )
    .await;
    svc.ingest(
        ACME,
        "typed",
        &[
            json!({"label": "explicit", "event_time": "1970-01-01 00:00:00", "day": "1970-01-01"}),
            json!({"label": "omitted", "event_time": 0}),
        ],
    )
    .await;
    let day = "1970-01-01";
    let (_, parts) = svc
        .export(
            ACME,
            &json!({"slice": "clicks", "date_since": day, "date_until": day,
                "fields": ["click_id", "event_time", "lp_click_time"]}),
        )
        .await;
    let (_, rows) = parse_csv(&parts[0]);
    assert_eq!(
        rows,
        [["epoch", "1970-01-01 00:00:00", "1970-01-01 00:00:00"]]
    );
    let (_, parts) = svc
        .export(
            ACME,
            &json!({"slice": "typed", "date_since": day, "date_until": day,
                "fields": ["label", "event_time", "day"], "format": "jsonl"}),
        )
        .await;
    let mut records = parse_jsonl(&parts[0]);
    records.sort_by_key(|r| r["label"].as_str().unwrap().to_string());
    assert_eq!(
        records,
        [
            json!({"label": "explicit", "event_time": "1970-01-01 00:00:00", "day": "1970-01-01"}),
            json!({"label": "omitted", "event_time": "1970-01-01 00:00:00", "day": "1970-01-01"}),
        ]
    );
}

/// Data that looks like the exception text ClickHouse 18.x appends to a broken stream
/// is still data, in every format and wherever it sits in the result.
#[tokio::test]
async fn rows_that_look_like_server_errors_are_data() {
    let svc = Service::start().await;
    let fake = "Code: 241, e.displayText() = DB::Exception: Memory limit exceeded, e.what() = DB::Exception";
    let lines: Vec<Value> = (0..3)
        .map(|i| json!({"click_id": format!("{fake} #{i}"), "event_time": format!("{DAY}T0{i}:00:00Z"), "sub1": fake}))
        .collect();
    svc.ingest(ACME, "clicks", &lines).await;
    let mut want: Vec<String> = (0..3).map(|i| format!("{fake} #{i}")).collect();
    want.sort();
    let requests: Vec<Value> = ["csv", "tsv", "jsonl", "json"]
        .iter()
        .flat_map(|f| {
            [None, Some(1)].map(|max| {
                let mut r = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
                    "fields": ["click_id", "sub1"], "format": f});
                if let Some(m) = max {
                    r["part_max_rows"] = json!(m);
                }
                r
            })
        })
        .collect();
    let mut ids = Vec::new();
    for r in &requests {
        ids.push(id_of(&svc.create_export(ACME, r).await));
    }
    for (r, id) in requests.iter().zip(ids) {
        let job = svc.wait_export(ACME, &id).await;
        assert_eq!(job["status"], "succeeded", "{r}: {job}");
        let (_, parts) = finish(&svc, ACME, &id).await;
        let mut got: Vec<String> = match r["format"].as_str().unwrap() {
            "csv" => csv_parts(&parts)
                .1
                .into_iter()
                .map(|row| row[0].clone())
                .collect(),
            "tsv" => tsv_parts(&parts)
                .1
                .into_iter()
                .map(|row| row[0].clone().unwrap())
                .collect(),
            "jsonl" => parts
                .iter()
                .flat_map(|p| parse_jsonl(p))
                .map(|v| v["click_id"].as_str().unwrap().to_string())
                .collect(),
            _ => parts
                .iter()
                .flat_map(|p| parse_json_doc(p))
                .map(|v| v["click_id"].as_str().unwrap().to_string())
                .collect(),
        };
        got.sort();
        assert_eq!(got, want, "{r}");
    }
}
