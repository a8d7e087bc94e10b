//! Expected rows, checked value by value in every text format (CSV, TSV, JSON lines
//! and the `json` document), floats to the bit.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::{csv_parts, parse_json_doc, parse_jsonl, tsv_parts};

/// Strings that break naive CSV, TSV and JSON writers and readers.
pub const NASTY: &[&str] = &[
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
        .expect("a text part is UTF-8")
        .lines()
        .filter(|l| l.starts_with('{') && !l.starts_with("{\"data\""))
        .map(|l| l.strip_suffix(',').unwrap_or(l))
        .collect()
}

/// An expected exported value.
#[derive(Debug, Clone)]
pub enum Cell {
    S(String),
    Null,
    U(u64),
    I(i64),
    F(f64),
}

impl Cell {
    pub fn check_text(&self, got: Option<&str>, what: &str) {
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
    pub fn check_csv(&self, got: &str, what: &str) {
        match self {
            Cell::Null => assert_eq!(got, "", "{what}"),
            other => other.check_text(Some(got), what),
        }
    }

    pub fn check_json(&self, got: &Value, raw_line: &str, key: &str, what: &str) {
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
pub struct Expected {
    pub fields: Vec<&'static str>,
    pub rows: BTreeMap<String, Vec<Cell>>,
}

impl Expected {
    pub fn check_csv(&self, parts: &[Vec<u8>]) {
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

    pub fn check_tsv(&self, parts: &[Vec<u8>]) {
        let (header, rows) = tsv_parts(parts);
        assert_eq!(header, self.fields);
        assert_eq!(rows.len(), self.rows.len());
        let mut seen = BTreeSet::new();
        for row in rows {
            let key = row[0].clone().expect("the first field is not NULL");
            let want = &self.rows[&key];
            assert!(seen.insert(key.clone()), "duplicate {key}");
            for (i, cell) in want.iter().enumerate() {
                cell.check_text(row[i].as_deref(), &format!("tsv {key} {}", self.fields[i]));
            }
        }
    }

    /// `records`: (parsed record, its raw line).
    pub fn check_json_records(&self, records: &[(Value, &str)], format: &str) {
        assert_eq!(records.len(), self.rows.len(), "{format} records");
        let want_keys: BTreeSet<&str> = self.fields.iter().copied().collect();
        let mut seen = BTreeSet::new();
        for (rec, raw) in records {
            let obj = rec.as_object().expect("record is an object");
            let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(keys, want_keys, "{format} keys");
            let key = obj[self.fields[0]]
                .as_str()
                .expect("the first field is text")
                .to_string();
            let want = &self.rows[&key];
            assert!(seen.insert(key.clone()), "duplicate {key}");
            for (i, cell) in want.iter().enumerate() {
                let f = self.fields[i];
                cell.check_json(&obj[f], raw, f, &format!("{format} {key} {f}"));
            }
        }
    }

    pub fn check_jsonl(&self, parts: &[Vec<u8>]) {
        let mut records = Vec::new();
        for p in parts {
            let parsed = parse_jsonl(p);
            let raws = json_record_lines(p);
            assert_eq!(parsed.len(), raws.len());
            records.extend(parsed.into_iter().zip(raws));
        }
        self.check_json_records(&records, "jsonl");
    }

    pub fn check_json(&self, parts: &[Vec<u8>]) {
        let mut records = Vec::new();
        for p in parts {
            let data = parse_json_doc(p);
            let raws = json_record_lines(p);
            assert_eq!(data.len(), raws.len());
            for (d, raw) in data.iter().zip(&raws) {
                let reparsed: Value = serde_json::from_str(raw).expect("a record line is JSON");
                assert_eq!(d, &reparsed, "one record per line");
            }
            records.extend(data.into_iter().zip(raws));
        }
        self.check_json_records(&records, "json");
    }

    pub fn check(&self, format: &str, parts: &[Vec<u8>]) {
        match format {
            "csv" => self.check_csv(parts),
            "tsv" => self.check_tsv(parts),
            "jsonl" => self.check_jsonl(parts),
            "json" => self.check_json(parts),
            other => panic!("format {other}"),
        }
    }
}
