//! Export reads: a selection's rows as the server formats them, streamed.
//!
//! Text encodings ([`Encoding`]) are the server's own output (`CSV`, `TabSeparated`,
//! `JSONEachRow` — the fastest path there is), passed on chunk by chunk as they
//! arrive; nothing holds more than a chunk. Parquet is built from Arrow record
//! batches ([`Store::export_batches`]), decoded from RowBinary ([`crate::arrow`]).
//! Both stream in storage order, capped by the spec's `limit`.

use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use logport_catalog::ColumnType;

use crate::arrow::{BatchDecoder, DecodeError};
use crate::observe::record;
use crate::{Selection, Store, StoreError};

/// A text encoding of an export's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// RFC 4180, strings quoted, NULL an empty field.
    Csv,
    /// Tab-separated, special characters backslash-escaped, NULL `\N`.
    Tsv,
    /// One JSON object per line.
    JsonLines,
}

/// How an encoding delimits records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Every newline ends a record (newlines inside values are escaped).
    Lines,
    /// RFC 4180: newlines inside double quotes belong to the value.
    Csv,
}

impl Encoding {
    pub fn framing(self) -> Framing {
        match self {
            Encoding::Csv => Framing::Csv,
            Encoding::Tsv | Encoding::JsonLines => Framing::Lines,
        }
    }

    /// Values are written as they are, unquoted: a record may begin like the
    /// exception text an old server appends ([`crate::trailing_exception`]).
    pub fn unquoted(self) -> bool {
        self == Encoding::Tsv
    }

    fn format(self) -> &'static str {
        match self {
            Encoding::Csv => "CSV",
            Encoding::Tsv => "TabSeparated",
            Encoding::JsonLines => "JSONEachRow",
        }
    }

    /// Settings that make the output exact and identical across server versions.
    pub(crate) fn settings(self) -> &'static [(&'static str, &'static str)] {
        &[
            ("output_format_json_quote_64bit_integers", "0"),
            ("output_format_json_escape_forward_slashes", "0"),
        ]
    }
}

impl Store {
    /// Streams a selection's rows in a text encoding, in the spec's fields (as text
    /// when `json_strings`; formula-safe when `csv_excel_safe`). `query_id` lets a
    /// canceller stop it ([`Store::kill_queries`]).
    pub fn export_stream(
        &self,
        sel: &Selection<'_>,
        encoding: Encoding,
        query_id: &str,
    ) -> Result<ByteStream, StoreError> {
        let sql = sel.text_export_sql();
        tracing::debug!(%sql, %query_id, "export query");
        let nulls =
            encoding == Encoding::Csv && columns(sel).iter().any(|(_, ty)| ty.is_nullable());
        let mut stream = self.stream(&sql, encoding.format(), query_id, encoding.settings())?;
        if nulls {
            stream.csv_nulls = Some(CsvNulls::default());
        }
        Ok(stream)
    }

    /// Streams a selection's rows as Arrow record batches of at most `batch_rows`
    /// rows, in the spec's fields and their own types. `expected_rows` is what the
    /// selection counts ([`Store::count`], capped by its `limit`): a result with
    /// another count is an error.
    pub fn export_batches(
        &self,
        sel: &Selection<'_>,
        query_id: &str,
        batch_rows: usize,
        expected_rows: u64,
    ) -> Result<BatchStream, StoreError> {
        let sql = sel.export_sql();
        tracing::debug!(%sql, %query_id, "export query");
        let bytes = self.stream(&sql, "RowBinary", query_id, &[])?;
        Ok(BatchStream {
            bytes,
            decoder: BatchDecoder::new(&columns(sel), batch_rows, expected_rows),
            ready: Vec::new().into_iter(),
            ended: false,
        })
    }

    /// Streams a SELECT in a ClickHouse output format.
    fn stream(
        &self,
        sql: &str,
        format: &str,
        query_id: &str,
        settings: &[(&str, &str)],
    ) -> Result<ByteStream, StoreError> {
        let mut q = self
            .client
            .query_raw(sql)
            .with_setting("query_id", query_id);
        for (k, v) in settings {
            q = q.with_setting(*k, *v);
        }
        let cursor = q.fetch_bytes(format).map_err(StoreError::from);
        let started = Instant::now();
        if let Err(e) = &cursor {
            record::<()>("export", started, &Err(e.clone()));
        }
        Ok(ByteStream {
            cursor: cursor?,
            started,
            done: false,
            csv_nulls: None,
        })
    }
}

/// The spec's fields with their types.
fn columns(sel: &Selection<'_>) -> Vec<(String, ColumnType)> {
    sel.spec
        .fields
        .iter()
        .filter_map(|f| sel.slice.field(f).map(|fd| (f.clone(), fd.ty.clone())))
        .collect()
}

/// The encoded bytes of a running export, chunk by chunk. Its duration (to the last
/// chunk) and failure are recorded as an `export` query.
pub struct ByteStream {
    cursor: clickhouse::query::BytesCursor,
    started: Instant,
    done: bool,
    csv_nulls: Option<CsvNulls>,
}

impl ByteStream {
    pub async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        let r = self.cursor.next().await.map_err(StoreError::from);
        if !self.done && !matches!(r, Ok(Some(_))) {
            self.done = true;
            record("export", self.started, &r);
        }
        match (r, &mut self.csv_nulls) {
            (Ok(Some(chunk)), Some(nulls)) => {
                let mut out = Vec::with_capacity(chunk.len());
                nulls.strip(&chunk, &mut out);
                Ok(Some(Bytes::from(out)))
            }
            (r, _) => r,
        }
    }
}

/// ClickHouse writes a CSV NULL as an unquoted `\N`; RFC 4180 readers expect an empty
/// field. Strings are always quoted, so an unquoted backslash is a NULL. The state
/// carries over from chunk to chunk.
#[derive(Debug, Default)]
struct CsvNulls {
    in_quotes: bool,
    held_backslash: bool,
}

impl CsvNulls {
    fn strip(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &b in data {
            if self.in_quotes {
                out.push(b);
                if b == b'"' {
                    self.in_quotes = false;
                }
                continue;
            }
            if self.held_backslash {
                self.held_backslash = false;
                if b == b'N' {
                    continue;
                }
                out.push(b'\\');
            }
            match b {
                b'\\' => self.held_backslash = true,
                b'"' => {
                    self.in_quotes = true;
                    out.push(b);
                }
                _ => out.push(b),
            }
        }
    }
}

/// An export's rows as Arrow record batches. [`BatchStream::next`] decodes where it
/// is awaited; a reader with much to decode splits the stream
/// ([`BatchStream::into_parts`]) and decodes on a thread of its own.
pub struct BatchStream {
    bytes: ByteStream,
    decoder: BatchDecoder,
    ready: std::vec::IntoIter<RecordBatch>,
    ended: bool,
}

impl BatchStream {
    pub fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }

    pub async fn next(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        loop {
            if let Some(batch) = self.ready.next() {
                return Ok(Some(batch));
            }
            if self.ended {
                return Ok(None);
            }
            match self.bytes.next().await? {
                Some(chunk) => self.ready = self.decoder.push(&chunk)?.into_iter(),
                None => {
                    self.ended = true;
                    return self.decoder.finish();
                }
            }
        }
    }

    /// The undecoded chunks and their decoder: push every chunk into the decoder,
    /// then [`BatchDecoder::finish`] it.
    pub fn into_parts(self) -> (ByteStream, BatchDecoder) {
        (self.bytes, self.decoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_nulls_become_empty_fields_outside_quotes_only() {
        let input = b"\\N,\"a\\Nb\",1,\"x\"\"\\N\"\n\"\",\\N\n";
        let want = b",\"a\\Nb\",1,\"x\"\"\\N\"\n\"\",\n";
        for i in 0..input.len() {
            let mut nulls = CsvNulls::default();
            let mut out = Vec::new();
            nulls.strip(&input[..i], &mut out);
            nulls.strip(&input[i..], &mut out);
            assert_eq!(out, want, "split at {i}");
        }
    }
}
