//! Logport's REST API (actix-web): thin handlers that validate, then hand work to the
//! store (ingest, previews, estimates) or the queue (exports). Every data route takes
//! a [`auth::Caller`] and scopes what it reads or writes to the caller's tenant.

pub mod activity;
pub mod admission;
pub mod auth;
pub mod error;
pub mod limits;
pub mod openapi;
pub mod readiness;
mod routes;
pub mod service;
mod ui;
mod views;

use std::sync::Arc;

use actix_web::web;
use logport_catalog::Catalog;
use logport_export::Files;
use logport_queue::{Clock, CompatJobs, IngestKeys, JobStore};
use logport_store::Store;
use tokio::sync::Notify;

pub use auth::{RateLimit, Tokens};
pub use error::ApiError;

/// Request-size limits.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest ingest body after decompression.
    pub ingest_max_bytes: usize,
    /// Longest single NDJSON line.
    pub ingest_max_line_bytes: usize,
    /// Most rows one ingest request may carry (one INSERT must stay atomic).
    pub ingest_max_rows: usize,
    /// Largest JSON request body (exports, evaluate, preview).
    pub json_max_bytes: usize,
    /// Longest a preview may take before it answers 504 (ClickHouse's
    /// `max_execution_time` for it, too).
    pub preview_timeout: std::time::Duration,
    /// Largest request line plus headers (431 beyond).
    pub max_header_bytes: usize,
    /// Longest a handler may take to start its answer (504 beyond); a download's
    /// body may stream for longer.
    pub request_timeout: std::time::Duration,
    /// How fast an ingest body must arrive (408 when slower).
    pub ingest_pace: admission::BodyPace,
    /// Longest a ClickHouse query made for a request may run (counts and size
    /// estimates of create, evaluate and the compatibility protocols): its
    /// `max_execution_time`, and 504 beyond. Previews have `preview_timeout`.
    pub query_timeout: std::time::Duration,
    /// Most bytes of rows a preview answers; past them it stops reading and says
    /// `"truncated": true`.
    pub preview_max_bytes: usize,
    /// Most parts one export may write: a request whose estimate passes it is a 422
    /// naming `part_max_rows` or `part_max_bytes`.
    pub export_max_parts: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            ingest_max_bytes: 64 << 20,
            ingest_max_line_bytes: 1 << 20,
            ingest_max_rows: 1_000_000,
            json_max_bytes: 1 << 20,
            preview_timeout: std::time::Duration::from_secs(15),
            max_header_bytes: 16 << 10,
            request_timeout: std::time::Duration::from_secs(120),
            ingest_pace: admission::BodyPace::default(),
            query_timeout: std::time::Duration::from_secs(30),
            preview_max_bytes: 4 << 20,
            export_max_parts: 10_000,
        }
    }
}

/// Limits every tenant gets (answered with 429 and `Retry-After`).
#[derive(Debug, Clone)]
pub struct Quotas {
    /// Most exports a tenant may have waiting in the queue.
    pub max_queued_per_tenant: u64,
    /// Longest date range one export may cover.
    pub max_range_days: u32,
    /// Most rows one export may produce (checked with a count at submission).
    pub max_rows_per_export: Option<u64>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_queued_per_tenant: 100,
            max_range_days: 366,
            max_rows_per_export: None,
        }
    }
}

/// How part downloads are served.
#[derive(Debug, Clone)]
pub struct Downloads {
    /// Answer with a 302 to a presigned URL when the object store can sign (S3).
    pub presigned: bool,
    pub presign_ttl: std::time::Duration,
}

impl Default for Downloads {
    fn default() -> Self {
        Downloads {
            presigned: false,
            presign_ttl: std::time::Duration::from_secs(900),
        }
    }
}

/// Limits of the compatibility protocols (AppMetrica's and Metrica's Logs APIs).
#[derive(Debug, Clone)]
pub struct CompatLimits {
    /// Largest AppMetrica response (estimated before queuing, checked again when
    /// served): beyond it the answer is 400 `… Try to use more parts.`
    pub max_response_bytes: u64,
    /// Bytes the processed, not yet cleaned Metrica log requests of one counter may hold.
    pub counter_quota_bytes: u64,
    /// Metrica log requests are cut into parts of about this many bytes.
    pub part_max_bytes: u64,
}

impl Default for CompatLimits {
    fn default() -> Self {
        CompatLimits {
            max_response_bytes: 1 << 30,
            counter_quota_bytes: 10 << 30,
            part_max_bytes: 256 << 20,
        }
    }
}

/// `GET /metrics`: how it renders, and who may read it.
#[derive(Clone)]
pub struct MetricsEndpoint {
    /// Every metric of this process in Prometheus' text format.
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    /// When set, a scrape must send `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// Everything handlers share.
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub store: Store,
    pub jobs: Arc<dyn JobStore>,
    /// What only the AppMetrica and Metrica protocols ask of the job store.
    pub compat_jobs: Arc<dyn CompatJobs>,
    pub files: Files,
    pub tokens: Tokens,
    pub limits: ApiLimits,
    pub quotas: Quotas,
    pub downloads: Downloads,
    /// Attempts an export gets before it fails for good.
    pub max_attempts: u32,
    /// Writes ingest batches, coalescing small ones.
    pub inserter: Arc<logport_store::Inserter>,
    /// The memory ingest requests may hold, shared fairly by tenants.
    pub ingest_budget: Arc<admission::IngestBudget>,
    /// Answers of ingest requests sent with an `Idempotency-Key`, for their retries.
    pub ingest_keys: Arc<dyn IngestKeys>,
    /// How long such an answer is kept.
    pub ingest_key_ttl: std::time::Duration,
    /// Limits of the AppMetrica and Metrica protocols.
    pub compat: CompatLimits,
    /// Wakes an idle worker when a job is queued.
    pub wake: Arc<Notify>,
    pub clock: Arc<dyn Clock>,
    /// `GET /metrics` (`None`: 404).
    pub metrics: Option<MetricsEndpoint>,
    /// The latest readiness probe, which `/readyz` answers from.
    pub readiness: readiness::Readiness,
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    routes::configure(cfg);
}

/// The App's default service: a problem+json 404 for unknown paths.
pub use routes::not_found;
