//! RowBinary → Arrow record batches, for Parquet exports ([`crate::Store::export_batches`]).
//!
//! ClickHouse 18.16 cannot write Parquet (or Arrow), so we ask for RowBinary — the
//! cheapest format to decode — and build Arrow columns from the catalog's types.
//! RowBinary has no room for the exception an old server appends to an answer it
//! already began, so a decoder is told how many rows to expect and a different
//! count is an error ([`BatchDecoder::finish`]).
//! Rows arrive in arbitrary chunks; a row is appended only once all of its bytes are
//! here (a first pass measures it), so a row never half-lands in a batch.
//!
//! Type mapping: integers and floats keep their width and signedness, `Date` becomes
//! `Date32`, `DateTime` a UTC `Timestamp(Millisecond)` (readers such as pyarrow turn
//! second-precision timestamps into plain integers), strings, enums, UUIDs and
//! `LowCardinality(String)` become UTF-8 (Parquet dictionary-encodes them), and
//! `Nullable(T)` becomes a nullable column.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, Date32Builder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, Int8Builder, StringBuilder, TimestampMillisecondBuilder, UInt16Builder,
    UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use logport_catalog::ColumnType;

use crate::StoreError;

/// Field metadata marking the columns whose few distinct values make a Parquet
/// dictionary pay off (`LowCardinality(String)`, enums, flags, dates); for the others
/// (ids, IPs, amounts) a dictionary is work that is thrown away.
pub const DICTIONARY_HINT: &str = "logport.dictionary";

/// The Arrow schema of an export's columns.
pub fn schema(columns: &[(String, ColumnType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, ty)| {
                let field = Field::new(name, arrow_type(ty.base()), ty.is_nullable());
                let repetitive = matches!(
                    ty.base(),
                    ColumnType::LowCardinalityString
                        | ColumnType::Enum8(_)
                        | ColumnType::UInt8
                        | ColumnType::Date
                );
                if repetitive {
                    field.with_metadata(std::collections::HashMap::from([(
                        DICTIONARY_HINT.to_string(),
                        "true".to_string(),
                    )]))
                } else {
                    field
                }
            })
            .collect::<Vec<_>>(),
    ))
}

fn arrow_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::UInt8 => DataType::UInt8,
        ColumnType::UInt16 => DataType::UInt16,
        ColumnType::UInt32 => DataType::UInt32,
        ColumnType::UInt64 => DataType::UInt64,
        ColumnType::Int8 => DataType::Int8,
        ColumnType::Int16 => DataType::Int16,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Date => DataType::Date32,
        ColumnType::DateTime => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        _ => DataType::Utf8,
    }
}

enum Builder {
    Utf8(StringBuilder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Date(Date32Builder),
    Time(TimestampMillisecondBuilder),
}

impl Builder {
    fn for_type(ty: &ColumnType, capacity: usize) -> Builder {
        match ty.base() {
            ColumnType::UInt8 => Builder::U8(UInt8Builder::with_capacity(capacity)),
            ColumnType::UInt16 => Builder::U16(UInt16Builder::with_capacity(capacity)),
            ColumnType::UInt32 => Builder::U32(UInt32Builder::with_capacity(capacity)),
            ColumnType::UInt64 => Builder::U64(UInt64Builder::with_capacity(capacity)),
            ColumnType::Int8 => Builder::I8(Int8Builder::with_capacity(capacity)),
            ColumnType::Int16 => Builder::I16(Int16Builder::with_capacity(capacity)),
            ColumnType::Int32 => Builder::I32(Int32Builder::with_capacity(capacity)),
            ColumnType::Int64 => Builder::I64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float32 => Builder::F32(Float32Builder::with_capacity(capacity)),
            ColumnType::Float64 => Builder::F64(Float64Builder::with_capacity(capacity)),
            ColumnType::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::DateTime => Builder::Time(
                TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            _ => Builder::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Utf8(b) => b.append_null(),
            Builder::U8(b) => b.append_null(),
            Builder::U16(b) => b.append_null(),
            Builder::U32(b) => b.append_null(),
            Builder::U64(b) => b.append_null(),
            Builder::I8(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::U8(b) => Arc::new(b.finish()),
            Builder::U16(b) => Arc::new(b.finish()),
            Builder::U32(b) => Arc::new(b.finish()),
            Builder::U64(b) => Arc::new(b.finish()),
            Builder::I8(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Builder::Utf8(b) => b.len(),
            Builder::U8(b) => b.len(),
            Builder::U16(b) => b.len(),
            Builder::U32(b) => b.len(),
            Builder::U64(b) => b.len(),
            Builder::I8(b) => b.len(),
            Builder::I16(b) => b.len(),
            Builder::I32(b) => b.len(),
            Builder::I64(b) => b.len(),
            Builder::F32(b) => b.len(),
            Builder::F64(b) => b.len(),
            Builder::Date(b) => b.len(),
            Builder::Time(b) => b.len(),
        }
    }
}

/// Why an export's result did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Malformed bytes (a bug or a schema mismatch, never user input).
    #[error("RowBinary decoding failed: {0}")]
    Malformed(String),
    /// The result ended inside a row.
    #[error("the result ended inside a row")]
    Truncated,
    /// The result had another number of rows than the selection counted: the server
    /// stopped early (an error it could not report in this encoding), or rows went
    /// between the count and the read.
    #[error("the result had {got} rows where {expected} were expected")]
    RowCount { expected: u64, got: u64 },
    /// The stream itself failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns an export's result bytes into record batches of at most `batch_rows` rows.
/// Synchronous: a caller with much to decode runs it on a thread of its own.
pub struct BatchDecoder {
    types: Vec<ColumnType>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    batch_rows: usize,
    /// Bytes of an unfinished row carried over to the next chunk.
    carry: Vec<u8>,
    /// Rows decoded so far, and how many the result must have.
    rows: u64,
    expected_rows: u64,
}

impl BatchDecoder {
    pub(crate) fn new(
        columns: &[(String, ColumnType)],
        batch_rows: usize,
        expected_rows: u64,
    ) -> Self {
        let types: Vec<ColumnType> = columns.iter().map(|(_, t)| t.clone()).collect();
        BatchDecoder {
            builders: types
                .iter()
                .map(|t| Builder::for_type(t, batch_rows))
                .collect(),
            schema: schema(columns),
            types,
            batch_rows,
            carry: Vec::new(),
            rows: 0,
            expected_rows,
        }
    }

    /// After the last chunk: the rows still buffered, once the result is known to
    /// have ended on a row boundary with as many rows as expected.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.pending_bytes() > 0 {
            return Err(DecodeError::Truncated);
        }
        if self.rows != self.expected_rows {
            return Err(DecodeError::RowCount {
                expected: self.expected_rows,
                got: self.rows,
            });
        }
        self.take_batch()
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Rows decoded but not yet returned in a batch.
    pub fn buffered_rows(&self) -> usize {
        self.builders.first().map_or(0, Builder::len)
    }

    /// Bytes of an unfinished row held back.
    pub fn pending_bytes(&self) -> usize {
        self.carry.len()
    }

    /// Decodes every whole row of `chunk` (after the bytes carried from the last
    /// one) and returns the batches that filled up to `batch_rows`; the rest stays
    /// buffered until [`Self::take_batch`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>, DecodeError> {
        let mut batches = Vec::new();
        let mut chunk = chunk;
        // Finish the row carried over from the last chunk by moving over only as many
        // bytes as it needs (copying whole chunks behind it was most of the copying).
        if !self.carry.is_empty() {
            let had = self.carry.len();
            let mut want = had.max(4096);
            loop {
                let step = want.min(chunk.len());
                self.carry.extend_from_slice(&chunk[..step]);
                if let Some(n) = row_len(&self.types, &self.carry) {
                    // The carried bytes were not a whole row, so the row ends in `chunk`.
                    let carry = std::mem::take(&mut self.carry);
                    self.append_row(&carry[..n])?;
                    chunk = &chunk[n - had..];
                    if self.buffered_rows() >= self.batch_rows {
                        batches.extend(self.take_batch()?);
                    }
                    break;
                }
                if step == chunk.len() {
                    // Still not a whole row: all of it waits for the next chunk.
                    return Ok(batches);
                }
                self.carry.truncate(had);
                want *= 2;
            }
        }
        let mut pos = 0;
        while let Some(n) = row_len(&self.types, &chunk[pos..]) {
            self.append_row(&chunk[pos..pos + n])?;
            pos += n;
            if self.buffered_rows() >= self.batch_rows {
                batches.extend(self.take_batch()?);
            }
        }
        self.carry = chunk[pos..].to_vec();
        Ok(batches)
    }

    fn append_row(&mut self, mut row: &[u8]) -> Result<(), DecodeError> {
        for (ty, b) in self.types.iter().zip(self.builders.iter_mut()) {
            row = append_value(ty, b, row)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows built so far as one batch (empty builders afterwards).
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.buffered_rows() == 0 {
            return Ok(None);
        }
        // Fresh builders of full capacity: a finished Arrow builder starts over empty,
        // and regrowing it by doubling copied every batch several times.
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .zip(&self.types)
            .map(|(b, ty)| std::mem::replace(b, Builder::for_type(ty, self.batch_rows)))
            .map(|mut full| full.finish())
            .collect();
        RecordBatch::try_new(Arc::clone(&self.schema), arrays)
            .map(Some)
            .map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

/// The byte length of the first row of `buf`, or `None` if it is not all there.
fn row_len(types: &[ColumnType], buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    for ty in types {
        pos += value_len(ty, buf.get(pos..)?)?;
    }
    Some(pos)
}

fn value_len(ty: &ColumnType, buf: &[u8]) -> Option<usize> {
    Some(match ty {
        ColumnType::Nullable(inner) => match *buf.first()? {
            0 => 1 + value_len(inner, &buf[1..])?,
            _ => 1,
        },
        ColumnType::String | ColumnType::LowCardinalityString => {
            let (len, n) = varint(buf)?;
            let total = n.checked_add(usize::try_from(len).ok()?)?;
            (buf.len() >= total).then_some(total)?
        }
        other => {
            let w = fixed_width(other);
            (buf.len() >= w).then_some(w)?
        }
    })
}

fn fixed_width(ty: &ColumnType) -> usize {
    match ty {
        ColumnType::UInt8 | ColumnType::Int8 | ColumnType::Enum8(_) => 1,
        ColumnType::UInt16 | ColumnType::Int16 | ColumnType::Date => 2,
        ColumnType::UInt32 | ColumnType::Int32 | ColumnType::Float32 | ColumnType::DateTime => 4,
        ColumnType::UInt64 | ColumnType::Int64 | ColumnType::Float64 => 8,
        ColumnType::Uuid => 16,
        _ => 0,
    }
}

fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn array<const N: usize>(buf: &[u8]) -> Result<[u8; N], DecodeError> {
    buf.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DecodeError::Malformed("row ended early".into()))
}

/// Appends one value (whose bytes are known to be complete) and returns the rest.
fn append_value<'a>(
    ty: &ColumnType,
    b: &mut Builder,
    buf: &'a [u8],
) -> Result<&'a [u8], DecodeError> {
    if let ColumnType::Nullable(inner) = ty {
        let (flag, rest) = buf
            .split_first()
            .ok_or_else(|| DecodeError::Malformed("row ended early".into()))?;
        if *flag != 0 {
            b.append_null();
            return Ok(rest);
        }
        return append_value(inner, b, rest);
    }
    let mismatch = || DecodeError::Malformed(format!("builder does not fit {ty}"));
    let w = fixed_width(ty);
    let rest = match (ty, b) {
        (ColumnType::String | ColumnType::LowCardinalityString, Builder::Utf8(s)) => {
            let (len, n) =
                varint(buf).ok_or_else(|| DecodeError::Malformed("bad string length".into()))?;
            let end = n + len as usize;
            let bytes = buf
                .get(n..end)
                .ok_or_else(|| DecodeError::Malformed("string ended early".into()))?;
            // Ingest only ever stores valid UTF-8; be lenient with anything else.
            match std::str::from_utf8(bytes) {
                Ok(text) => s.append_value(text),
                Err(_) => s.append_value(String::from_utf8_lossy(bytes)),
            }
            return Ok(&buf[end..]);
        }
        (ColumnType::Enum8(variants), Builder::Utf8(s)) => {
            let code = array::<1>(buf)?[0] as i8;
            let name = variants
                .iter()
                .find(|(_, c)| *c == code)
                .map(|(n, _)| n.as_str())
                .unwrap_or("");
            s.append_value(name);
            &buf[1..]
        }
        (ColumnType::Uuid, Builder::Utf8(s)) => {
            let raw = array::<16>(buf)?;
            let mut bytes = [0u8; 16];
            // Two little-endian UInt64 halves, high half first.
            for i in 0..8 {
                bytes[i] = raw[7 - i];
                bytes[8 + i] = raw[15 - i];
            }
            let mut text = [0u8; 36];
            s.append_value(uuid_text(&bytes, &mut text));
            &buf[16..]
        }
        (ColumnType::UInt8, Builder::U8(x)) => {
            x.append_value(array::<1>(buf)?[0]);
            &buf[w..]
        }
        (ColumnType::UInt16, Builder::U16(x)) => {
            x.append_value(u16::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::UInt32, Builder::U32(x)) => {
            x.append_value(u32::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::UInt64, Builder::U64(x)) => {
            x.append_value(u64::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::Int8, Builder::I8(x)) => {
            x.append_value(i8::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::Int16, Builder::I16(x)) => {
            x.append_value(i16::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::Int32, Builder::I32(x)) => {
            x.append_value(i32::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::Int64, Builder::I64(x)) => {
            x.append_value(i64::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::Float32, Builder::F32(x)) => {
            x.append_value(f32::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::Float64, Builder::F64(x)) => {
            x.append_value(f64::from_le_bytes(array(buf)?));
            &buf[w..]
        }
        (ColumnType::Date, Builder::Date(x)) => {
            x.append_value(i32::from(u16::from_le_bytes(array(buf)?)));
            &buf[w..]
        }
        (ColumnType::DateTime, Builder::Time(x)) => {
            x.append_value(i64::from(u32::from_le_bytes(array(buf)?)) * 1000);
            &buf[w..]
        }
        _ => return Err(mismatch()),
    };
    Ok(rest)
}

/// The canonical text of a UUID, written into `out` (no allocation: this runs once
/// per row).
fn uuid_text<'a>(b: &[u8; 16], out: &'a mut [u8; 36]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = 0;
    for (k, byte) in b.iter().enumerate() {
        if matches!(k, 4 | 6 | 8 | 10) {
            out[i] = b'-';
            i += 1;
        }
        out[i] = DIGITS[(byte >> 4) as usize];
        out[i + 1] = DIGITS[(byte & 0xf) as usize];
        i += 2;
    }
    // Only ASCII hex digits and dashes were written.
    std::str::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{TimestampMillisecondType, UInt64Type};
    use arrow_array::Array;

    fn cols() -> Vec<(String, ColumnType)> {
        [
            ("s", "String"),
            ("n", "Nullable(UInt64)"),
            ("t", "DateTime"),
            ("e", "Enum8('a' = 1, 'b' = 2)"),
            ("u", "UUID"),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), ColumnType::parse(t).unwrap()))
        .collect()
    }

    fn row(s: &str, n: Option<u64>, t: u32, e: i8) -> Vec<u8> {
        let mut out = Vec::new();
        crate::rowbinary::write_varint(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
        match n {
            None => out.push(1),
            Some(v) => {
                out.push(0);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&t.to_le_bytes());
        out.push(e as u8);
        // 00010203-0405-0607-0809-0a0b0c0d0e0f
        out.extend_from_slice(&[7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8]);
        out
    }

    #[test]
    fn decodes_rows_split_anywhere() {
        let mut data = row("héllo, \"x\"\n", Some(u64::MAX), 60, 2);
        data.extend(row("", None, 0, 1));
        for split in 0..data.len() {
            let mut d = BatchDecoder::new(&cols(), 100, 0);
            assert!(d.push(&data[..split]).unwrap().is_empty());
            assert!(d.push(&data[split..]).unwrap().is_empty());
            assert_eq!(d.pending_bytes(), 0);
            assert_eq!(d.buffered_rows(), 2, "split at {split}");
            let batch = d.take_batch().unwrap().unwrap();
            assert_eq!(batch.num_rows(), 2);
            assert_eq!(
                batch.column(0).as_string::<i32>().value(0),
                "héllo, \"x\"\n"
            );
            let n = batch.column(1).as_primitive::<UInt64Type>();
            assert_eq!(n.value(0), u64::MAX);
            assert!(n.is_null(1));
            let t = batch.column(2).as_primitive::<TimestampMillisecondType>();
            assert_eq!(t.value(0), 60_000);
            assert_eq!(batch.column(3).as_string::<i32>().value(0), "b");
            assert_eq!(
                batch.column(4).as_string::<i32>().value(0),
                "00010203-0405-0607-0809-0a0b0c0d0e0f"
            );
            assert!(d.take_batch().unwrap().is_none());
        }
    }

    #[test]
    fn decodes_rows_fed_in_pieces_of_any_size() {
        let long = "y".repeat(10_000);
        let mut data = Vec::new();
        for i in 0..50u64 {
            let text = if i % 7 == 0 { long.as_str() } else { "short" };
            data.extend(row(text, (i % 3 != 0).then_some(i), i as u32, 1));
        }
        for piece in [1, 2, 3, 5, 17, 100, 4095, 4096, 4097, 9999, 100_000] {
            let mut d = BatchDecoder::new(&cols(), 8, 0);
            let mut rows = 0;
            for c in data.chunks(piece) {
                rows += d
                    .push(c)
                    .unwrap()
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>();
            }
            let last = d.take_batch().unwrap();
            rows += last.as_ref().map_or(0, |b| b.num_rows());
            assert_eq!((rows, d.pending_bytes()), (50, 0), "pieces of {piece}");
            let b = last.unwrap();
            // Rows 48 and 49 are in the last batch of 8: 48 = 6 × 8.
            let n = b.column(1).as_primitive::<UInt64Type>();
            assert!(n.is_null(0));
            assert_eq!(n.value(1), 49);
            // 49 = 7 × 7: the long one.
            assert_eq!(b.column(0).as_string::<i32>().value(1).len(), 10_000);
            assert_eq!(b.column(0).as_string::<i32>().value(0), "short");
        }
    }

    #[test]
    fn full_batches_come_out_as_they_fill() {
        let mut data = Vec::new();
        for i in 0..5 {
            data.extend(row("x", Some(i), 1, 1));
        }
        let mut d = BatchDecoder::new(&cols(), 2, 0);
        let batches = d.push(&data).unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [2, 2]
        );
        assert_eq!(d.buffered_rows(), 1);
        // A truncated row stays pending.
        d.push(&row("y", None, 1, 1)[..3]).unwrap();
        assert_eq!(d.pending_bytes(), 3);
    }

    #[test]
    fn finish_checks_the_row_count() {
        let mut d = BatchDecoder::new(&cols(), 8, 3);
        d.push(&row("x", Some(1), 1, 1)).unwrap();
        assert!(matches!(
            d.finish(),
            Err(DecodeError::RowCount {
                expected: 3,
                got: 1
            })
        ));
        let mut d = BatchDecoder::new(&cols(), 8, 1);
        d.push(&row("x", Some(1), 1, 1)).unwrap();
        assert_eq!(d.finish().unwrap().map(|b| b.num_rows()), Some(1));
        let mut d = BatchDecoder::new(&cols(), 8, 1);
        d.push(&row("x", Some(1), 1, 1)[..3]).unwrap();
        assert!(matches!(d.finish(), Err(DecodeError::Truncated)));
    }
}
