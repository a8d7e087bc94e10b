//! JSON shapes the API answers with.

use chrono::{TimeZone, Utc};
use logport_queue::{Job, JobError, Progress};
use serde::Serialize;

/// RFC 3339 UTC with milliseconds, from Unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// One file of a finished export.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PartView {
    /// Part number, from 1.
    pub n: u32,
    /// The file's name (`part-00001.csv.gz`): what a client saves it as.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the file's bytes (also its ETag).
    pub sha256: String,
    /// Where to download it: `/v1/exports/{id}/parts/{n}`.
    pub url: String,
}

/// An export job.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobView<'a> {
    /// 32 hex digits.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    pub id: &'a str,
    #[schema(value_type = logport_queue::JobStatus)]
    pub status: &'static str,
    #[schema(value_type = String)]
    pub slice: &'a str,
    /// The request as it runs: every defaulted member filled in.
    pub request: &'a logport_catalog::ExportRequest,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub expires_at: Option<String>,
    /// Rows received after this instant are not in the export.
    pub watermark: String,
    pub attempts: u32,
    pub progress: Progress,
    #[schema(value_type = Option<JobError>)]
    pub error: Option<&'a JobError>,
    pub parts: Vec<PartView>,
    pub manifest_url: Option<String>,
}

pub fn job_view(job: &Job) -> JobView<'_> {
    let base = format!("/v1/exports/{}", job.id);
    let mut progress = job.progress;
    progress.parts = job.parts.len() as u32;
    JobView {
        id: &job.id,
        status: job.status.as_str(),
        slice: &job.slice,
        request: &job.request,
        created_at: rfc3339_ms(job.created_at),
        started_at: job.started_at.map(rfc3339_ms),
        finished_at: job.finished_at.map(rfc3339_ms),
        expires_at: job.expires_at.map(rfc3339_ms),
        watermark: rfc3339_ms(job.created_at),
        attempts: job.attempts,
        progress,
        error: job.error.as_ref(),
        parts: job
            .parts
            .iter()
            .map(|p| PartView {
                n: p.n,
                file: p.key.rsplit('/').next().unwrap_or(&p.key).to_string(),
                rows: p.rows,
                bytes: p.bytes,
                sha256: p.sha256.clone(),
                url: format!("{base}/parts/{}", p.n),
            })
            .collect(),
        manifest_url: job
            .manifest_key
            .as_ref()
            .map(|_| format!("{base}/manifest")),
    }
}
