//! The export service: what every protocol front (`/v1/exports`, AppMetrica's and
//! Metrica's Logs APIs) does the same way — the limits a new export must fit, how
//! many rows and bytes it would take, queuing it (stored, workers woken, the audit
//! row written), canceling it and removing its files.
//!
//! The fronts only translate their wire format to and from these calls: a [`Quota`]
//! says which limit a request would pass, with the numbers, and each front words it
//! in its protocol (`/v1` through `From<Quota> for ApiError`).

use logport_catalog::{ExportRequest, ExportSpec, Format};
use logport_export::files;
use logport_queue::{Created, Job, JobStatus, NewJob};
use logport_store::{Bounds, StoreError};
use serde_json::json;

use crate::activity::{self, Entry};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

const DAY_SECS: i64 = 86_400;

/// A limit a new export would pass, with what it would have taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quota {
    /// The date range covers more days than `LOGPORT_MAX_RANGE_DAYS`.
    RangeDays { days: i64, max: u32 },
    /// The tenant already has this many exports queued (the limit is `max`).
    Queued { queued: u64, max: u64 },
    /// The export would return more rows than one export may.
    Rows { rows: u64, max: u64 },
    /// `part_max_rows` would cut the export into more parts than one may have.
    PartRows {
        per_part: u64,
        rows: u64,
        parts: u64,
        max: u64,
    },
    /// `part_max_bytes` would cut the export (about `bytes`) into more parts than one
    /// may have.
    PartBytes {
        per_part: u64,
        bytes: u64,
        parts: u64,
        max: u64,
    },
}

impl Quota {
    /// What passes which limit, in `/v1`'s words.
    pub fn detail(&self) -> String {
        match *self {
            Quota::RangeDays { days, max } => {
                format!("an export may cover at most {max} days; this one covers {days}: split it")
            }
            Quota::Queued { queued, max } => format!(
                "{queued} exports are already queued for this account (the limit is {max}); \
                 wait until some finish"
            ),
            Quota::Rows { rows, max } => format!(
                "this export would return {rows} rows; the limit is {max}: narrow the date \
                 range or the filters, or set `limit`"
            ),
            Quota::PartRows {
                per_part,
                rows,
                parts,
                max,
            } => format!(
                "part_max_rows {per_part} would cut the {rows} rows of this export into \
                 {parts} parts; one export may have at most {max} parts: use part_max_rows \
                 of at least {}, or narrow the request",
                rows.div_ceil(max)
            ),
            Quota::PartBytes {
                per_part,
                bytes,
                parts,
                max,
            } => format!(
                "part_max_bytes {per_part} would cut this export (about {bytes} bytes) into \
                 about {parts} parts; one export may have at most {max} parts: use \
                 part_max_bytes of at least {}, or narrow the request",
                bytes.div_ceil(max)
            ),
        }
    }
}

/// Days an export covers, a started day counting whole (the range is `[since,
/// until)` and never empty once validated). The one formula of every front: `/v1`'s
/// quota used to count whole days plus one for a remainder, its evaluate and the
/// compat fronts rounded up — the same number for every non-empty range — and
/// Metrica counted `date2 - date1 + 1` whole UTC days, which is this for its
/// requests.
pub fn days_covered(spec: &ExportSpec) -> i64 {
    (spec.until - spec.since + DAY_SECS - 1).div_euclid(DAY_SECS)
}

/// The longest date range a tenant may export at once.
pub fn check_range(state: &AppState, spec: &ExportSpec) -> Option<Quota> {
    let days = days_covered(spec);
    let max = state.quotas.max_range_days;
    (days > i64::from(max)).then_some(Quota::RangeDays { days, max })
}

/// How many exports a tenant may have waiting.
pub async fn check_queue(state: &AppState, tenant: &str) -> Result<Option<Quota>, ApiError> {
    let queued = state.jobs.count_queued(tenant).await?;
    let max = state.quotas.max_queued_per_tenant;
    Ok((queued >= max).then_some(Quota::Queued { queued, max }))
}

/// The row quota, for an export of `rows` rows.
pub fn check_rows(state: &AppState, rows: u64) -> Option<Quota> {
    let max = state.quotas.max_rows_per_export?;
    (rows > max).then_some(Quota::Rows { rows, max })
}

/// Every per-tenant limit of a new export, in order: the date range, the queue, the
/// rows and the part cap. One count serves both of the last two, and only when one of
/// them needs it.
pub async fn check_quotas(
    state: &AppState,
    tenant: &str,
    spec: &ExportSpec,
) -> Result<Option<Quota>, ApiError> {
    if let Some(q) = check_range(state, spec) {
        return Ok(Some(q));
    }
    if let Some(q) = check_queue(state, tenant).await? {
        return Ok(Some(q));
    }
    let max_parts = state.limits.export_max_parts;
    if state.quotas.max_rows_per_export.is_none() && !parts_may_pass(spec, max_parts) {
        return Ok(None);
    }
    let rows = capped_count(state, tenant, spec).await?;
    if let Some(q) = check_rows(state, rows) {
        return Ok(Some(q));
    }
    part_cap(state, spec, rows).await
}

/// Whether the part limits of a spec could cut it into more than `max_parts` parts
/// (answered without counting where the spec's `limit` settles it).
fn parts_may_pass(spec: &ExportSpec, max_parts: u32) -> bool {
    let by_rows = spec.part_max_rows.is_some_and(|per_part| {
        spec.limit
            .is_none_or(|limit| limit.div_ceil(per_part) > u64::from(max_parts))
    });
    by_rows || spec.part_max_bytes.is_some()
}

/// Estimates the parts an export of `rows` rows writes (rows over `part_max_rows`,
/// estimated bytes over `part_max_bytes`); `Some` when that passes the cap. Without
/// part limits an export writes one part (or one per parallel reader, and there are
/// never more readers than the cap).
pub async fn part_cap(
    state: &AppState,
    spec: &ExportSpec,
    rows: u64,
) -> Result<Option<Quota>, ApiError> {
    let max = u64::from(state.limits.export_max_parts);
    if let Some(per_part) = spec.part_max_rows {
        let parts = rows.div_ceil(per_part);
        if parts > max {
            return Ok(Some(Quota::PartRows {
                per_part,
                rows,
                parts,
                max,
            }));
        }
    }
    if spec.part_max_bytes.is_none() {
        return Ok(None);
    }
    let bytes = bytes_of(state, spec, rows).await?;
    Ok(byte_part_cap(state, spec, bytes))
}

/// The part cap for an export of about `bytes` bytes cut at its `part_max_bytes`.
pub fn byte_part_cap(state: &AppState, spec: &ExportSpec, bytes: u64) -> Option<Quota> {
    let per_part = spec.part_max_bytes?;
    let max = u64::from(state.limits.export_max_parts);
    let parts = bytes.div_ceil(per_part);
    (parts > max).then_some(Quota::PartBytes {
        per_part,
        bytes,
        parts,
        max,
    })
}

/// Rows and bytes an export would produce: a count of the selection times the average
/// uncompressed row size of its columns (what `POST /v1/exports/evaluate` answers),
/// plus what the text format adds to every row (JSON's keys and quotes, CSV's quotes
/// and separators). An estimate: a compat file's real size is checked again when
/// served.
pub async fn estimate(
    state: &AppState,
    tenant: &str,
    spec: &ExportSpec,
) -> Result<(u64, u64), StoreError> {
    let rows = capped_count(state, tenant, spec).await?;
    Ok((rows, bytes_of(state, spec, rows).await?))
}

/// Rows the export selects now, capped by its `limit`. Bounded like every query of a
/// request: `LOGPORT_QUERY_TIMEOUT`, and killed if the request ends first.
pub async fn capped_count(
    state: &AppState,
    tenant: &str,
    spec: &ExportSpec,
) -> Result<u64, StoreError> {
    let Some(slice) = state.catalog.slice(&spec.slice) else {
        return Ok(0);
    };
    let sel = state.store.select(slice, tenant, spec);
    let bounds = Bounds::request(state.limits.query_timeout);
    let rows = state.store.count(&sel, &bounds).await?;
    Ok(spec.limit.map_or(rows, |l| rows.min(l)))
}

/// About how many bytes `rows` rows of the export take in its format.
async fn bytes_of(state: &AppState, spec: &ExportSpec, rows: u64) -> Result<u64, StoreError> {
    if rows == 0 {
        return Ok(0);
    }
    let bounds = Bounds::request(state.limits.query_timeout);
    let per_row = state
        .store
        .bytes_per_row(&spec.slice, &spec.fields, &bounds)
        .await?
        + text_overhead(spec);
    Ok((per_row * rows as f64).round() as u64)
}

/// Bytes a text format adds to each row around its values.
fn text_overhead(spec: &ExportSpec) -> f64 {
    let names: usize = spec.fields.iter().map(String::len).sum();
    let n = spec.fields.len();
    let bytes = match spec.format {
        // {"name":"value",…}\n with every value quoted in the worst case.
        Format::Json | Format::Jsonl => names + 6 * n + 3,
        // "value", for strings.
        Format::Csv => 3 * n,
        Format::Tsv => n,
        Format::Parquet => 0,
    };
    bytes as f64
}

/// What tells a new export apart from earlier identical ones.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    /// `/v1`'s `Idempotency-Key`: the same key and request make the same job.
    pub idempotency_key: Option<String>,
    /// AppMetrica's "identical request" (see `JobStore::find_by_fingerprint`).
    pub fingerprint: Option<String>,
}

/// Queues an export of a validated request (stored normalised, so the job says
/// exactly what runs). A new job wakes a worker and is written to the audit log; an
/// earlier job of the same idempotency key is returned as it is.
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    request: &ExportRequest,
    spec: &ExportSpec,
    dedup: Dedup,
) -> Result<Created, ApiError> {
    let created = state
        .jobs
        .create(
            NewJob {
                tenant: caller.tenant.clone(),
                slice: spec.slice.clone(),
                request: request.normalized(&state.catalog),
                idempotency_key: dedup.idempotency_key,
                max_attempts: state.max_attempts,
                app_id: spec.app_id,
                fingerprint: dedup.fingerprint,
            },
            state.clock.now_ms(),
        )
        .await?;
    if let Created::New(job) = &created {
        state.wake.notify_one();
        tracing::info!(tenant = %caller.tenant, job_id = %job.id, slice = %job.slice, app_id = ?spec.app_id, "export queued");
        activity::record(state, caller, export_created(job));
    }
    Ok(created)
}

/// Cancels a queued or running export; records it when this call canceled it.
/// Returns the job as it is now (`None`: not the caller's).
pub async fn cancel(state: &AppState, caller: &Caller, job: &Job) -> Result<Option<Job>, ApiError> {
    let before = job.status;
    let now = state
        .jobs
        .cancel(&caller.tenant, &job.id, state.clock.now_ms())
        .await?;
    if let Some(j) = &now {
        if before != JobStatus::Canceled && j.status == JobStatus::Canceled {
            tracing::info!(tenant = %caller.tenant, job_id = %j.id, "export canceled");
            activity::record(
                state,
                caller,
                export_changed(j, "updated", before, "canceled"),
            );
        }
    }
    Ok(now)
}

/// Deletes every file of a job (every attempt's). Returns how many there were.
pub async fn delete_files(state: &AppState, job: &Job) -> Result<u64, ApiError> {
    Ok(state
        .files
        .delete_prefix(&files::job_prefix(&job.tenant, &job.id))
        .await?)
}

/// The audit row of a new export.
fn export_created(job: &Job) -> Entry {
    Entry {
        action: "created",
        entity_type: "export",
        entity_id: job.id.clone(),
        entity_name: job.slice.clone(),
        app_id: job.request.app_id.unwrap_or(0),
        changes: json!({"status": [null, job.status.as_str()], "request": [null, job.request]}),
    }
}

/// The audit row of an export that changed status.
pub fn export_changed(job: &Job, action: &'static str, from: JobStatus, to: &str) -> Entry {
    Entry {
        action,
        entity_type: "export",
        entity_id: job.id.clone(),
        entity_name: job.slice.clone(),
        app_id: job.request.app_id.unwrap_or(0),
        changes: json!({"status": [from.as_str(), to]}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logport_catalog::{Catalog, ExportRequest};

    fn spec(since: &str, until: &str) -> ExportSpec {
        let catalog = Catalog::builtin().unwrap();
        let request = ExportRequest {
            slice: "clicks".into(),
            date_since: since.into(),
            date_until: until.into(),
            ..Default::default()
        };
        request.validate(&catalog).unwrap()
    }

    #[test]
    fn a_started_day_counts_whole() {
        assert_eq!(days_covered(&spec("2026-11-01", "2026-11-01")), 1);
        assert_eq!(days_covered(&spec("2026-11-01", "2026-11-07")), 7);
        assert_eq!(
            days_covered(&spec("2026-11-01 10:00:00", "2026-11-01 10:00:00")),
            1
        );
        assert_eq!(
            days_covered(&spec("2026-11-01 23:00:00", "2026-11-02 00:59:59")),
            1
        );
        assert_eq!(
            days_covered(&spec("2026-11-01 23:00:00", "2026-11-03 00:00:00")),
            2
        );
    }

    #[test]
    fn parts_are_counted_only_when_limits_could_pass_the_cap() {
        let mut s = spec("2026-11-01", "2026-11-01");
        assert!(!parts_may_pass(&s, 10));
        s.part_max_rows = Some(10);
        assert!(parts_may_pass(&s, 10));
        s.limit = Some(100);
        assert!(!parts_may_pass(&s, 10));
        s.limit = Some(101);
        assert!(parts_may_pass(&s, 10));
        s.part_max_rows = None;
        s.part_max_bytes = Some(1 << 20);
        assert!(parts_may_pass(&s, 10));
    }
}
