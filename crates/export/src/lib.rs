//! The export pipeline and the workers that run it.
//!
//! The only crate that knows file formats. A worker claims a job from the queue,
//! streams the rows from ClickHouse into parts in object storage, records each part
//! as it completes, writes the manifest last, and only then marks the job succeeded.

pub mod encoder;
pub mod files;
pub mod metered;
pub mod pipeline;
pub mod scan;
pub mod worker;

pub use files::{Files, FilesError};
pub use pipeline::{Counters, Exporter, Published};
pub use worker::{WorkerConfig, Workers};

use std::sync::OnceLock;

use logport_queue::QueueError;
use logport_store::{DecodeError, StoreError};

/// Why an attempt did not finish. [`ExportError::is_retryable`] alone decides whether
/// the job is requeued or failed; [`ExportError::code`] is what clients see.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The stored request no longer validates (the catalog changed): never retried.
    #[error("the export request is invalid: {0}")]
    InvalidRequest(String),
    /// Retried when the store says a later attempt can succeed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the export files failed: retried, buckets recover.
    #[error("object store: {0}")]
    Files(String),
    /// Retried: the job store is shared and comes back.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The store's result did not decode (a transient garbled response): retried.
    #[error("decoding the result failed: {0}")]
    Decode(String),
    /// The store's result ended inside a record: retried.
    #[error("the result stream from ClickHouse ended early")]
    Truncated,
    /// The Parquet result had another number of rows than the same selection
    /// counted (the server ended early without saying so, or retention dropped rows
    /// in between): retried, the next attempt counts again.
    #[error("the result had {got} rows where {expected} were expected")]
    RowCountMismatch { expected: u64, got: u64 },
    /// The Parquet writer refused the rows: never retried, the same rows would be
    /// refused again.
    #[error("encoding the Parquet file failed: {0}")]
    Encode(String),
    /// The Parquet encoder's thread ended without a word, which only a panic does:
    /// never retried, the same rows would panic again.
    #[error("the Parquet encoder stopped unexpectedly")]
    EncoderStopped,
    /// gzip or zstd failed (only the zstd library's own allocations can): retried,
    /// a later attempt may find the memory.
    #[error("compression failed: {0}")]
    Compression(String),
    /// The manifest did not serialise: never retried, the same job serialises the
    /// same way.
    #[error("writing the manifest failed: {0}")]
    Manifest(String),
    #[error("the export was canceled")]
    Canceled,
    #[error("the worker lost its lease on the job")]
    LeaseLost,
    /// The export needs more parts than one export may have (the estimate at
    /// creation was off): never retried, the next attempt would need as many.
    #[error(
        "the export needs more than {max} parts (the most one export may have): \
         raise part_max_rows or part_max_bytes, or narrow the request"
    )]
    TooManyParts { max: u32 },
}

impl From<FilesError> for ExportError {
    fn from(e: FilesError) -> Self {
        ExportError::Files(e.to_string())
    }
}

impl From<object_store::Error> for ExportError {
    fn from(e: object_store::Error) -> Self {
        ExportError::Files(e.to_string())
    }
}

impl From<DecodeError> for ExportError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Malformed(_) => ExportError::Decode(e.to_string()),
            DecodeError::Truncated => ExportError::Truncated,
            DecodeError::RowCount { expected, got } => {
                ExportError::RowCountMismatch { expected, got }
            }
            DecodeError::Store(e) => ExportError::Store(e),
        }
    }
}

impl ExportError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::Store(e) => e.is_retryable(),
            ExportError::Files(_)
            | ExportError::Queue(_)
            | ExportError::Decode(_)
            | ExportError::Truncated
            | ExportError::RowCountMismatch { .. }
            | ExportError::Compression(_) => true,
            ExportError::InvalidRequest(_)
            | ExportError::Encode(_)
            | ExportError::EncoderStopped
            | ExportError::Manifest(_)
            | ExportError::TooManyParts { .. }
            | ExportError::Canceled
            | ExportError::LeaseLost => false,
        }
    }

    /// The stable `error.code` clients see.
    pub fn code(&self) -> &'static str {
        match self {
            ExportError::InvalidRequest(_) => "invalid_request",
            ExportError::Store(e) if e.is_retryable() => "clickhouse_unavailable",
            ExportError::Store(_) => "clickhouse_error",
            ExportError::Files(_) => "object_store_error",
            ExportError::Queue(_) => "job_store_error",
            ExportError::Decode(_) => "decode_error",
            ExportError::Truncated => "truncated_result",
            ExportError::RowCountMismatch { .. } => "row_count_mismatch",
            ExportError::Encode(_) | ExportError::EncoderStopped => "encode_error",
            ExportError::Compression(_) => "compression_error",
            ExportError::Manifest(_) => "manifest_error",
            ExportError::Canceled => "canceled",
            ExportError::LeaseLost => "lease_lost",
            ExportError::TooManyParts { .. } => "too_many_parts",
        }
    }
}

/// Crash-test hooks. `LOGPORT_FAILPOINTS` is a comma-separated list of points, each
/// `NAME` (the process aborts on the spot, as `kill -9` would) or `NAME=pause:MS` (the
/// task sleeps MS milliseconds there, so a test can act inside a window that is
/// otherwise microseconds wide). Points: `after_claim`, `mid_upload` (a part's
/// multipart upload has begun), `before_commit` (parts and manifest are written, the
/// job is not yet marked succeeded), `delete_before_transition` (`DELETE
/// /v1/exports/{id}` has read the job, not yet changed its state). Tests only; unset in
/// production.
pub async fn failpoint(name: &str) {
    static POINTS: OnceLock<Vec<(String, Option<u64>)>> = OnceLock::new();
    let points = POINTS.get_or_init(|| {
        std::env::var("LOGPORT_FAILPOINTS")
            .map(|v| v.split(',').filter_map(parse_failpoint).collect())
            .unwrap_or_default()
    });
    for (point, pause) in points {
        if point != name {
            continue;
        }
        match pause {
            None => {
                eprintln!("logport: failpoint {name} reached: aborting");
                std::process::abort();
            }
            Some(ms) => {
                tracing::warn!(failpoint = name, ms, "failpoint reached: pausing");
                tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
            }
        }
    }
}

/// `NAME` → abort; `NAME=pause:MS` → pause; anything else is ignored.
fn parse_failpoint(item: &str) -> Option<(String, Option<u64>)> {
    let item = item.trim();
    match item.split_once('=') {
        None if !item.is_empty() => Some((item.to_string(), None)),
        None => None,
        Some((name, action)) => {
            let ms = action.trim().strip_prefix("pause:")?.trim().parse().ok()?;
            Some((name.trim().to_string(), Some(ms)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_own_code_and_retry_decision() {
        let cases = [
            (ExportError::Encode("x".into()), "encode_error", false),
            (ExportError::EncoderStopped, "encode_error", false),
            (
                ExportError::Compression("x".into()),
                "compression_error",
                true,
            ),
            (ExportError::Manifest("x".into()), "manifest_error", false),
            (ExportError::Files("x".into()), "object_store_error", true),
            (
                DecodeError::RowCount {
                    expected: 2,
                    got: 1,
                }
                .into(),
                "row_count_mismatch",
                true,
            ),
            (DecodeError::Truncated.into(), "truncated_result", true),
            (
                DecodeError::Malformed("x".into()).into(),
                "decode_error",
                true,
            ),
            (
                StoreError::Unreachable("refused".into()).into(),
                "clickhouse_unavailable",
                true,
            ),
            (
                StoreError::Client("bad".into()).into(),
                "clickhouse_error",
                false,
            ),
            (
                ExportError::TooManyParts { max: 1 },
                "too_many_parts",
                false,
            ),
        ];
        for (e, code, retry) in cases {
            assert_eq!((e.code(), e.is_retryable()), (code, retry), "{e}");
        }
    }
}
