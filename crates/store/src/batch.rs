//! Ingest batches: rows on their way into a slice's table, in ClickHouse's Native
//! form ([`crate::native`]).
//!
//! Every row of a block is one tenant's and was received at one instant. That
//! instant is the block's: it fixes the rows' `received_time` second (so the day
//! partition the rows land in), and `received_ms`, the millisecond within it that
//! an export's watermark compares, so neither can disagree with the other or with the
//! partition a batch is coalesced into.

use logport_catalog::ingest::{RowContext, RowSink};
use logport_catalog::{ColumnType, Slice, Value, TENANT_COLUMN};

use crate::insert::Rows;
use crate::native::NativeBlock;
use crate::{StoreError, RECEIVED_MS_COLUMN};

/// One tenant's rows of one slice received at one instant, being built: an ingest
/// request's lines go in ([`RowSink`], for [`logport_catalog::ingest::LineEncoder`],
/// or [`RowSink::push_row`]), an [`IngestBatch`] comes out.
pub struct IngestBlock {
    native: NativeBlock,
    tenant: String,
    received_at_ms: i64,
    received_time: Option<usize>,
}

impl IngestBlock {
    /// An empty block of `tenant`'s rows of `slice`, received at `received_at_ms`
    /// (Unix milliseconds).
    pub fn new(
        slice: &Slice,
        tenant: &str,
        received_at_ms: i64,
    ) -> Result<IngestBlock, StoreError> {
        let received_ms = received_at_ms.rem_euclid(1000) as u64;
        let native = NativeBlock::for_slice(slice)
            .and_then(|b| {
                b.with_first(
                    TENANT_COLUMN,
                    &ColumnType::String,
                    &Value::Str(tenant.into()),
                )
            })
            .and_then(|b| {
                b.with_last(
                    RECEIVED_MS_COLUMN,
                    &ColumnType::UInt16,
                    &Value::UInt(received_ms),
                )
            })
            .map_err(StoreError::Client)?;
        Ok(IngestBlock {
            native,
            tenant: tenant.to_string(),
            received_at_ms,
            received_time: slice.fields.iter().position(|f| f.name == "received_time"),
        })
    }

    /// The rows' `received_time` (Unix seconds).
    pub fn received_time(&self) -> u32 {
        self.received_at_ms.div_euclid(1000) as u32
    }

    /// What the server adds to each row of this block (`id_seed`: see
    /// [`RowContext`]).
    pub fn context<'a>(&self, id_seed: Option<&'a [u8]>) -> RowContext<'a> {
        RowContext {
            received_time: self.received_time(),
            id_seed,
        }
    }

    pub fn rows(&self) -> usize {
        self.native.rows()
    }

    /// Bytes the block holds, reserved room included.
    pub fn held_bytes(&self) -> usize {
        self.native.held_bytes()
    }

    /// Bytes the block will hold with `more` rows of its mean width.
    pub fn held_bytes_with(&self, more: usize) -> usize {
        self.native.held_bytes_with(more)
    }

    /// Makes room for `more` rows of the mean width so far.
    pub fn reserve_rows(&mut self, more: usize) {
        self.native.reserve_rows(more);
    }

    /// Gives back room reserved for rows that did not come.
    pub fn shrink_to_fit(&mut self) {
        self.native.shrink_to_fit();
    }

    /// The columns as ClickHouse's external-data `_structure` names them.
    pub(crate) fn structure(&self) -> String {
        self.native.structure()
    }

    /// The rows, ready to insert. `event_times`: the earliest and latest
    /// `event_time` (Unix seconds); `distinct_ids`: no `event_id` appears twice
    /// among them (the duplicate check then skips the batch's own repeats).
    pub fn finish(self, event_times: (u32, u32), distinct_ids: bool) -> IngestBatch {
        let rows = self.native.rows() as u64;
        let day = self.received_time() / 86_400;
        IngestBatch {
            rows: Rows {
                data: self.native.into_chunks(),
                rows,
                tenants: vec![self.tenant],
                event_times,
                distinct_ids,
            },
            day: Some(day),
        }
    }
}

impl RowSink for IngestBlock {
    #[inline]
    fn encode_value(out: &mut Vec<u8>, ty: &ColumnType, v: &Value) -> Result<(), String> {
        NativeBlock::encode_value(out, ty, v)
    }

    #[inline]
    fn encode_text(out: &mut Vec<u8>, ty: &ColumnType, s: &str) {
        NativeBlock::encode_text(out, ty, s);
    }

    #[inline]
    fn encode_enum(out: &mut Vec<u8>, ty: &ColumnType, code: i8) {
        NativeBlock::encode_enum(out, ty, code);
    }

    #[inline]
    fn push_encoded(&mut self, i: usize, encoded: &[u8]) {
        self.native.push_encoded(i, encoded);
    }

    #[inline]
    fn end_row(&mut self) {
        self.native.end_row();
    }

    /// Refuses a row whose `received_time` is not the block's.
    fn push_row(&mut self, slice: &Slice, values: &[Value]) -> Result<(), String> {
        if let Some(i) = self.received_time {
            if values.get(i) != Some(&Value::DateTime(self.received_time())) {
                return Err(format!(
                    "the row's received_time is not the block's ({})",
                    self.received_time()
                ));
            }
        }
        self.native.push_row(slice, values)
    }
}

/// Rows ready to insert ([`crate::Store::insert`], [`crate::Inserter::insert`]): one
/// or more blocks, all received on one day.
#[derive(Debug, Clone, Default)]
pub struct IngestBatch {
    pub(crate) rows: Rows,
    /// Day (Unix days) of the rows' `received_time`; `None` while empty.
    pub(crate) day: Option<u32>,
}

impl IngestBatch {
    pub fn rows(&self) -> u64 {
        self.rows.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes of the encoded rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Adds another batch's rows after these; both must have been received on the
    /// same day (one INSERT writes one partition).
    pub fn append(&mut self, other: IngestBatch) -> Result<(), StoreError> {
        if other.is_empty() {
            return Ok(());
        }
        match (self.day, other.day) {
            (Some(a), Some(b)) if a != b => {
                return Err(StoreError::Client(format!(
                    "a batch of day {a} cannot take rows received on day {b}"
                )))
            }
            (None, day) => self.day = day,
            _ => {}
        }
        self.rows.append(other.rows);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logport_catalog::Catalog;

    #[test]
    fn a_block_fixes_received_time_and_day() {
        let catalog = Catalog::builtin().unwrap();
        let slice = catalog.slice("clicks").unwrap();
        let at = 1_793_527_260_123;
        let mut block = IngestBlock::new(slice, "acme", at).unwrap();
        assert_eq!(block.received_time(), 1_793_527_260);
        assert_eq!(block.context(None).received_time, 1_793_527_260);
        let mut row: Vec<Value> = slice
            .fields
            .iter()
            .map(|f| Value::default_for(&f.ty))
            .collect();
        assert!(block.push_row(slice, &row).is_err(), "received_time 0");
        let i = slice
            .fields
            .iter()
            .position(|f| f.name == "received_time")
            .unwrap();
        row[i] = Value::DateTime(1_793_527_260);
        block.push_row(slice, &row).unwrap();
        let mut batch = block.finish((5, 5), true);
        assert_eq!(batch.day, Some(20_758));
        assert_eq!(batch.rows(), 1);
        let mut one_row = |tenant: &str, at: i64| {
            let mut b = IngestBlock::new(slice, tenant, at).unwrap();
            row[i] = Value::DateTime(b.received_time());
            b.push_row(slice, &row).unwrap();
            b.finish((5, 5), true)
        };
        assert!(batch.append(one_row("acme", at + 86_400_000)).is_err());
        // An empty batch of another day adds nothing, and fits.
        let empty_block = IngestBlock::new(slice, "acme", at + 86_400_000).unwrap();
        batch.append(empty_block.finish((0, 0), true)).unwrap();
        batch.append(one_row("globex", at + 1)).unwrap();
        assert_eq!(batch.rows.tenants, ["acme", "globex"]);
        assert_eq!(batch.rows(), 2);
        let mut empty = IngestBatch::default();
        empty.append(batch).unwrap();
        assert_eq!(empty.day, Some(20_758));
    }
}
