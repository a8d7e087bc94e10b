//! The store's batches → Parquet on a thread of its own.
//!
//! Decoding and encoding are the CPU work of a Parquet export; done inside the async
//! reader they would share one runtime thread with every parallel reader of the
//! export (the readers are joined futures of one task). A blocking thread per reader
//! lets each use a core, while the async side only ferries ClickHouse's chunks in and
//! encoded bytes out to the upload. Both channels are bounded, so memory stays at a
//! few chunks plus one row group per reader.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::ZstdLevel;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tokio::sync::mpsc;

use crate::ExportError;
use logport_store::arrow::DICTIONARY_HINT;
use logport_store::BatchDecoder;

/// Rows per Arrow batch.
pub const BATCH_ROWS: usize = 16 * 1024;
/// Rows per Parquet row group (a row group is what a Parquet writer holds in memory,
/// once per parallel reader).
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// A row group is closed early once it buffers this many bytes, to bound memory.
const ROW_GROUP_BYTES: usize = 32 << 20;
/// Encoded bytes handed to the upload at a time.
const OUT_CHUNK: usize = 1 << 20;
/// About how many bytes of ClickHouse's chunks the reader hands over at once.
pub const GROUP_BYTES: usize = 256 << 10;

/// Undecoded chunks of the store's batches; `true` with the last of them.
pub type ChunkGroup = (Vec<Bytes>, bool);

/// What the encoder thread reports, in order.
pub enum EncoderEvent {
    /// The next bytes of the current part (a new part begins with the first `Data`
    /// after `PartEnd`).
    Data { bytes: Bytes },
    /// Rows written into the current part since the last report.
    Rows(u64),
    /// The current part is complete with this many rows.
    PartEnd { rows: u64 },
    /// The input ended cleanly and every part was reported.
    Finished,
}

/// Where parts are cut.
#[derive(Clone, Copy)]
pub struct PartLimits {
    pub max_rows: u64,
    /// File bytes, counting the row group still in memory.
    pub max_bytes: u64,
}

/// Starts the encoder of one reader: send it groups of undecoded chunks (`true` with
/// the last group), which `decoder` turns into batches; receive [`EncoderEvent`]s.
/// Dropping either end stops it.
pub fn spawn(
    decoder: BatchDecoder,
    limits: PartLimits,
) -> (
    mpsc::Sender<ChunkGroup>,
    mpsc::Receiver<Result<EncoderEvent, ExportError>>,
) {
    let (in_tx, in_rx) = mpsc::channel(2);
    let (out_tx, out_rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let result = encode(decoder, limits, in_rx, &out_tx);
        // A closed output means the reader gave up; nobody is left to tell.
        let _ = match result {
            Ok(Some(())) => out_tx.blocking_send(Ok(EncoderEvent::Finished)),
            Ok(None) => Ok(()),
            Err(e) => out_tx.blocking_send(Err(e)),
        };
    });
    (in_tx, out_rx)
}

/// The writer properties of every Parquet part: zstd, dictionaries only where values
/// repeat, chunk statistics.
pub fn properties(schema: &SchemaRef) -> Result<WriterProperties, ExportError> {
    let mut props = WriterProperties::builder()
        // Level 1: most of level 3's ratio on these columns at a fraction of the CPU.
        .set_compression(parquet::basic::Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(parquet_error)?,
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_dictionary_enabled(false)
        .set_created_by(format!("logport {}", env!("CARGO_PKG_VERSION")));
    for field in schema.fields() {
        let path = || ColumnPath::from(field.name().as_str());
        if field.metadata().contains_key(DICTIONARY_HINT) {
            props = props.set_column_dictionary_enabled(path(), true);
        } else if field.data_type() == &arrow_schema::DataType::Utf8 {
            // Min/max of ids, IPs and URLs prune nothing and cost a comparison per
            // value; times, numbers and low-cardinality strings keep theirs.
            props = props.set_column_statistics_enabled(path(), EnabledStatistics::None);
        }
    }
    Ok(props.build())
}

/// The Parquet part being written; the writer's output accumulates in its `Vec`.
struct OpenParquetPart {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

/// Writes one reader's batches into Parquet parts, cutting a part at its limits, and
/// reports the parts' bytes and rows.
struct ParquetPartWriter<'a> {
    schema: SchemaRef,
    props: WriterProperties,
    limits: PartLimits,
    out: &'a mpsc::Sender<Result<EncoderEvent, ExportError>>,
    current: Option<OpenParquetPart>,
    /// Whether any part was started (an empty result is still one, empty, file).
    started: bool,
}

/// `Ok(None)` when the reader went away.
type Flow = Result<Option<()>, ExportError>;

fn encode(
    mut decoder: BatchDecoder,
    limits: PartLimits,
    mut input: mpsc::Receiver<ChunkGroup>,
    out: &mpsc::Sender<Result<EncoderEvent, ExportError>>,
) -> Flow {
    let schema = decoder.schema();
    let mut parts = ParquetPartWriter {
        props: properties(&schema)?,
        schema,
        limits,
        out,
        current: None,
        started: false,
    };
    loop {
        // `None`: the reader stopped without ending the input, an error on its side.
        let Some((chunks, last)) = input.blocking_recv() else {
            return Ok(None);
        };
        for chunk in chunks {
            let batches = decoder.push(&chunk)?;
            for batch in batches {
                if parts.write(batch)?.is_none() {
                    return Ok(None);
                }
            }
        }
        if last {
            break;
        }
    }
    if let Some(batch) = decoder.finish()? {
        if parts.write(batch)?.is_none() {
            return Ok(None);
        }
    }
    if !parts.started {
        parts.open()?;
    }
    parts.close()
}

impl ParquetPartWriter<'_> {
    fn send(&self, m: EncoderEvent) -> Option<()> {
        self.out.blocking_send(Ok(m)).ok()
    }

    fn open(&mut self) -> Result<(), ExportError> {
        let writer = ArrowWriter::try_new(
            Vec::with_capacity(OUT_CHUNK),
            self.schema.clone(),
            Some(self.props.clone()),
        )
        .map_err(parquet_error)?;
        self.current = Some(OpenParquetPart { writer, rows: 0 });
        self.started = true;
        Ok(())
    }

    /// Hands the encoded bytes so far to the reader once there are enough of them.
    fn drain(&mut self, at_least: usize) -> Option<()> {
        let part = self.current.as_mut()?;
        let buf = part.writer.inner_mut();
        if buf.is_empty() || buf.len() < at_least {
            return Some(());
        }
        // The writer counts its own offsets; taking what it wrote is safe.
        let bytes = Bytes::from(std::mem::replace(buf, Vec::with_capacity(OUT_CHUNK)));
        self.send(EncoderEvent::Data { bytes })
    }

    fn write(&mut self, mut batch: RecordBatch) -> Flow {
        while batch.num_rows() > 0 {
            if self.current.is_none() {
                self.open()?;
            }
            let Some(part) = self.current.as_mut() else {
                continue;
            };
            let room = usize::try_from(self.limits.max_rows - part.rows).unwrap_or(usize::MAX);
            let take = room.min(batch.num_rows());
            part.writer
                .write(&batch.slice(0, take))
                .map_err(parquet_error)?;
            if part.writer.in_progress_size() >= ROW_GROUP_BYTES {
                part.writer.flush().map_err(parquet_error)?;
            }
            part.rows += take as u64;
            let size = (part.writer.bytes_written() + part.writer.in_progress_size()) as u64;
            let full = part.rows >= self.limits.max_rows || size >= self.limits.max_bytes;
            batch = batch.slice(take, batch.num_rows() - take);
            if self.send(EncoderEvent::Rows(take as u64)).is_none()
                || self.drain(OUT_CHUNK).is_none()
            {
                return Ok(None);
            }
            if full && self.close()?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(()))
    }

    /// Writes the footer of the current part and reports it complete.
    fn close(&mut self) -> Flow {
        let Some(part) = self.current.take() else {
            return Ok(Some(()));
        };
        let rows = part.rows;
        let bytes = Bytes::from(part.writer.into_inner().map_err(parquet_error)?);
        if !bytes.is_empty() && self.send(EncoderEvent::Data { bytes }).is_none() {
            return Ok(None);
        }
        Ok(self.send(EncoderEvent::PartEnd { rows }))
    }
}

fn parquet_error(e: parquet::errors::ParquetError) -> ExportError {
    ExportError::Encode(e.to_string())
}
