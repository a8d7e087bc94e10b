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
pub use pipeline::{Counters, Exporter, Outcome};
pub use worker::{WorkerConfig, Workers};

use std::sync::OnceLock;

use logport_queue::QueueError;
use logport_store::StoreError;

/// Why an attempt did not finish. [`ExportError::is_retryable`] alone decides whether
/// the job is requeued or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The stored request no longer validates (the catalog changed): never retried.
    #[error("the export request is invalid: {0}")]
    InvalidRequest(String),
    #[error("format {0} is not supported by this build")]
    Unsupported(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("object store: {0}")]
    Files(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The store's result did not decode (a transient garbled response).
    #[error("decoding the result failed: {0}")]
    Decode(String),
    /// The store's result ended inside a record.
    #[error("the result stream from ClickHouse ended early")]
    Truncated,
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

impl ExportError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::InvalidRequest(_)
            | ExportError::Unsupported(_)
            | ExportError::TooManyParts { .. } => false,
            ExportError::Store(e) => e.is_retryable(),
            ExportError::Files(_)
            | ExportError::Queue(_)
            | ExportError::Truncated
            | ExportError::Decode(_) => true,
            ExportError::Canceled | ExportError::LeaseLost => false,
        }
    }

    /// The stable `error.code` clients see.
    pub fn code(&self) -> &'static str {
        match self {
            ExportError::InvalidRequest(_) => "invalid_request",
            ExportError::Unsupported(_) => "unsupported_format",
            ExportError::Store(e) if e.is_retryable() => "clickhouse_unavailable",
            ExportError::Store(_) => "clickhouse_error",
            ExportError::Files(_) => "object_store_error",
            ExportError::Queue(_) => "job_store_error",
            ExportError::Truncated => "truncated_result",
            ExportError::Decode(_) => "decode_error",
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
