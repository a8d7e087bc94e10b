//! Reading: counts, previews and export streams, each bounded by its [`Bounds`].

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::bounds::KillOnDrop;
use crate::observe::record;
use crate::{error, Bounds, CountRow, Selection, Store, StoreError};

impl Store {
    /// The newest `limit` rows of a selection as JSON records, at most `max_bytes`
    /// of them (a preview). Reading stops at the bound and the query is killed; the
    /// answer keeps the records that fit whole and says it was cut. Nothing is parsed
    /// into values: each record is only checked to be one JSON object, so an
    /// exception the server appended to a started answer (18.x) is an error, never a
    /// record.
    pub async fn preview(
        &self,
        sel: &Selection<'_>,
        limit: u64,
        bounds: &Bounds,
        max_bytes: usize,
    ) -> Result<JsonRows, StoreError> {
        let sql = sel.preview_sql(limit);
        let sql = sql.as_str();
        let started = Instant::now();
        let guard = KillOnDrop::new(&self.client, bounds);
        let r = bounds
            .within(self.read_json_rows(sql, bounds, max_bytes))
            .await;
        // A cut answer leaves the query running: the guard kills it.
        guard.settle(
            matches!(&r, Ok(rows) if !rows.truncated)
                || matches!(&r, Err(e) if e.is_server_answer()),
        );
        record("preview", started, &r);
        r
    }

    async fn read_json_rows(
        &self,
        sql: &str,
        bounds: &Bounds,
        max_bytes: usize,
    ) -> Result<JsonRows, StoreError> {
        let mut cursor = self
            .bounded_query(sql, bounds)
            .with_setting("output_format_json_quote_64bit_integers", "0")
            .with_setting("output_format_json_escape_forward_slashes", "0")
            .fetch_bytes("JSONEachRow")?;
        let mut buf = BytesMut::new();
        let mut truncated = false;
        while let Some(chunk) = cursor.next().await? {
            buf.extend_from_slice(&chunk);
            if buf.len() > max_bytes {
                truncated = true;
                break;
            }
        }
        if truncated {
            // The records that fit whole; what follows is never read.
            let keep = buf[..max_bytes]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            buf.truncate(keep);
        } else if buf.last().is_some_and(|&b| b != b'\n') {
            if let Some(e) = error::exception_in_lines(&buf) {
                return Err(e);
            }
            return Err(StoreError::Unreachable(
                "the result ended inside a record".into(),
            ));
        }
        let rows = JsonRows::check(&buf)?;
        Ok(JsonRows {
            records: buf,
            rows,
            truncated,
        })
    }

    /// The rows a selection reads now (its `limit` not applied).
    pub async fn count(&self, sel: &Selection<'_>, bounds: &Bounds) -> Result<u64, StoreError> {
        let query = self.bounded_query(&sel.count_sql(), bounds);
        self.bounded("count", bounds, async {
            Ok(query.fetch_one::<CountRow>().await?.rows)
        })
        .await
    }

    /// Rows per hour of the selection's date dimension, in order: where to split a
    /// large export into parallel reads of about equal size.
    pub async fn hour_counts(
        &self,
        sel: &Selection<'_>,
        bounds: &Bounds,
    ) -> Result<Vec<(u32, u64)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct HourRow {
            hour: u32,
            rows: u64,
        }
        let query = self.bounded_query(&sel.hour_counts_sql(), bounds);
        let hours = self
            .bounded("hour_counts", bounds, async {
                Ok(query.fetch_all::<HourRow>().await?)
            })
            .await?;
        Ok(hours.into_iter().map(|h| (h.hour, h.rows)).collect())
    }
}

/// Whole JSONEachRow records, each one JSON object on its own line.
#[derive(Debug)]
pub struct JsonRows {
    records: BytesMut,
    pub rows: u64,
    /// More records (or bytes) followed; they were not read.
    pub truncated: bool,
}

impl JsonRows {
    /// Counts the records of `buf`, checking that each is one JSON object (without
    /// building values). A line that is not is the exception an old server appended.
    fn check(buf: &[u8]) -> Result<u64, StoreError> {
        let mut rows = 0;
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let object = line.first() == Some(&b'{')
                && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
            if !object {
                let text = String::from_utf8_lossy(line);
                return Err(match text.find("Code: ") {
                    Some(at) => StoreError::from_exception_text(&text[at..]),
                    None => StoreError::Client(format!(
                        "the server sent a record that is not a JSON object: {}",
                        text.chars().take(200).collect::<String>()
                    )),
                });
            }
            rows += 1;
        }
        Ok(rows)
    }

    /// The records separated by commas: the inside of a JSON array. (JSON escapes a
    /// newline inside a string, so every newline byte ends a record.)
    pub fn into_array_items(self) -> Bytes {
        let mut records = self.records;
        if records.last() == Some(&b'\n') {
            records.truncate(records.len() - 1);
        }
        for b in records.iter_mut() {
            if *b == b'\n' {
                *b = b',';
            }
        }
        records.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_records_are_checked_and_joined_without_parsing() {
        let ok = b"{\"a\":1,\"s\":\"x\\ny\"}\n{\"a\":2}\n";
        assert_eq!(JsonRows::check(ok).unwrap(), 2);
        let rows = JsonRows {
            records: BytesMut::from(&ok[..]),
            rows: 2,
            truncated: false,
        };
        let items = rows.into_array_items();
        let array: serde_json::Value =
            serde_json::from_slice(&[b"[", &items[..], b"]"].concat()).unwrap();
        assert_eq!(array, serde_json::json!([{"a": 1, "s": "x\ny"}, {"a": 2}]));
        assert_eq!(JsonRows::check(b"").unwrap(), 0);
        // An exception appended after a record, at a line start or inside a line.
        let appended = b"{\"a\":1}\nCode: 159, e.displayText() = DB::Exception: Timeout exceeded, e.what() = DB::Exception\n";
        assert_eq!(JsonRows::check(appended).unwrap_err().code(), Some(159));
        let inside = b"{\"a\":1,\"b\":Code: 241, e.displayText() = DB::Exception: Memory limit\n";
        assert_eq!(JsonRows::check(inside).unwrap_err().code(), Some(241));
        assert!(matches!(
            JsonRows::check(b"[1,2]\n"),
            Err(StoreError::Client(_))
        ));
        assert!(JsonRows::check(b"{\"a\":\n").is_err());
    }
}
