//! Independent readers of what exports write: CSV (the `csv` crate), TSV and JSON
//! lines decoded here by the rules ClickHouse documents, gzip with flate2, so a test
//! never checks Logport's output with Logport's own code.

use std::io::Read;

use serde_json::Value;

/// Parses CSV bytes (with a header row) into records, with the `csv` crate as an
/// independent reader.
pub fn parse_csv(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let header = r
        .headers()
        .expect("csv header")
        .iter()
        .map(String::from)
        .collect();
    let rows = r
        .records()
        .map(|rec| rec.expect("csv record").iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// Parses JSON lines.
pub fn parse_jsonl(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Parses the CSV parts of one export: each part has the same header; rows concatenated.
pub fn csv_parts(parts: &[Vec<u8>]) -> (Vec<String>, Vec<Vec<String>>) {
    concat_parts(parts, parse_csv)
}

/// Every part of one export read with `parse`: each part repeats the header (checked),
/// the rows are concatenated.
fn concat_parts<R>(
    parts: &[Vec<u8>],
    parse: impl Fn(&[u8]) -> (Vec<String>, Vec<R>),
) -> (Vec<String>, Vec<R>) {
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for p in parts {
        let (h, r) = parse(p);
        if let Some(first) = &header {
            assert_eq!(first, &h, "every part repeats the header");
        }
        header = Some(h);
        rows.extend(r);
    }
    (header.unwrap_or_default(), rows)
}

/// The sorted first column of a CSV export.
pub fn csv_first_column(parts: &[Vec<u8>]) -> Vec<String> {
    let (_, rows) = csv_parts(parts);
    let mut ids: Vec<String> = rows.into_iter().map(|r| r[0].clone()).collect();
    ids.sort();
    ids
}

/// Parses a `json` part: one whole document `{"data":[...]}`.
pub fn parse_json_doc(bytes: &[u8]) -> Vec<Value> {
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

/// Undoes ClickHouse's TabSeparated escaping of one field; `None` for `\N`. Panics on
/// a raw tab or newline inside the field and on an escape ClickHouse does not write.
/// The store's conformance suite (crates/store/tests/conformance.rs) decodes with this
/// too.
pub fn tsv_unescape(field: &str) -> Option<String> {
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
pub fn parse_tsv(bytes: &[u8]) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let text = std::str::from_utf8(bytes).expect("TSV is UTF-8");
    assert!(text.ends_with('\n'), "TSV ends with a newline: {text:?}");
    let mut lines = text[..text.len() - 1].split('\n');
    let header: Vec<String> = lines
        .next()
        .expect("a header row")
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

/// [`parse_tsv`] over every part of one export: each part has the same header.
pub fn tsv_parts(parts: &[Vec<u8>]) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    concat_parts(parts, parse_tsv)
}

/// Decompresses a gzip file: one member, nothing after it.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut decoder = flate2::bufread::GzDecoder::new(bytes);
    decoder.read_to_end(&mut out).expect("valid gzip");
    let rest = decoder.into_inner();
    assert!(
        rest.is_empty(),
        "{} bytes after the gzip member",
        rest.len()
    );
    out
}

/// A log without its ANSI colour sequences (`ESC [ … final byte`).
pub fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d != '[' && ('@'..='~').contains(&d) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
