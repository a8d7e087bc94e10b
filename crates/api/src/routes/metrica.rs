//! Metrica-style log requests under `/management/v1/counter/{counter_id}/`: evaluate,
//! create, list, info, download of parts, clean, cancel (docs/logs-api-protocols.md,
//! "Metrica style").
//!
//! Decisions:
//! - A log request is an ordinary export job: `counter_id` is its `app_id`, `source`
//!   its slice, `date1`..`date2` whole UTC days, format TSV with a header row in every
//!   part, parts cut at about `LOGPORT_COMPAT_PART_MAX_BYTES`. Parameters come in the
//!   query string (a body is ignored, whatever its Content-Type); `fields` is
//!   comma-separated, repeated, or both. `attribution` is accepted and answered as
//!   `LASTSIGN`: raw logs have no attribution model.
//! - `request_id` is the job's number, counted per tenant from 1 in the job store (a
//!   Metrica client stores integers). Part `N` (from 0) is the job's part `N + 1`.
//! - Status: queued or running → `created` (`awaiting_retry` when queued again after a
//!   failed attempt), succeeded → `processed`, failed → `processing_failed`, canceled →
//!   `canceled`, expired → `cleaned_automatically_as_too_old`, or `cleaned_by_user`
//!   once `clean` removed its files.
//! - Quota: the processed, not yet cleaned requests of one counter may hold at most
//!   `LOGPORT_COMPAT_COUNTER_QUOTA_BYTES` together with the estimate of a new one:
//!   `evaluate` says `possible:false`, `create` answers 429 `quota_requests`. How many
//!   run in parallel is the queue's per-tenant running limit.
//! - `date2` must be before today (UTC); a request covers at most 365 days.
//! - Errors are Metrica's JSON `{"errors":[{error_type, message}], code, message}`,
//!   with the exact messages clients match for downloads that are not possible yet
//!   (`Only log of requests in status 'processed' can be downloaded`) and for walking
//!   past the last part (`Incorrect part number`), both 400. A missing token is 401
//!   `unauthorized`, an unknown one 403 `invalid_token`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use logport_catalog::{ExportRequest, ExportSpec, Format, SpecError};
use logport_queue::{JobStatus, NumberedJob, Scope};
use serde_json::{json, Value as Json};

use super::compat::{self, AuthFailure, Params, Wire, WireError};
use super::param;
use crate::activity;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::{self, Dedup, Quota};
use crate::AppState;

/// The exact message clients wait on (and retry) while a request is prepared.
pub const NOT_PROCESSED: &str = "Only log of requests in status 'processed' can be downloaded";
/// The exact message clients stop walking parts at.
pub const BAD_PART: &str = "Incorrect part number";
/// Longest span of one log request, in days.
pub const MAX_DAYS: i64 = 365;
/// Most requests `list` returns (the newest).
const LIST_LIMIT: u32 = 1000;

/// Metrica's errors: `{"errors":[{error_type, message}], code, message}`.
#[derive(Debug)]
pub struct Metrica;

pub type MetricaError = WireError<Metrica>;

impl Wire for Metrica {
    fn unauthenticated(f: &AuthFailure) -> Option<MetricaError> {
        match f {
            AuthFailure::Missing => Some(MetricaError::new(
                StatusCode::UNAUTHORIZED,
                "Authorization required: send Authorization: OAuth <token>",
            )),
            AuthFailure::Invalid(_) => Some(
                MetricaError::new(StatusCode::FORBIDDEN, "Invalid oauth_token")
                    .typed("invalid_token"),
            ),
            _ => None,
        }
    }

    fn render(e: &MetricaError) -> HttpResponse {
        let mut resp = HttpResponse::build(e.status);
        if let Some(s) = e.retry_after {
            resp.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        resp.json(json!({
            "errors": [{"error_type": e.error_type, "message": e.message}],
            "code": e.status.as_u16(),
            "message": e.message,
        }))
    }
}

impl MetricaError {
    fn invalid(message: impl Into<String>) -> Self {
        MetricaError::bad(message)
    }

    fn missing(name: &str) -> Self {
        MetricaError::bad(format!("Parameter {name} is required")).typed("missing_parameter")
    }

    fn not_found(message: impl Into<String>) -> Self {
        MetricaError::new(StatusCode::NOT_FOUND, message)
    }
}

/// A log request's status in Metrica's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogRequestStatus {
    Created,
    AwaitingRetry,
    Processed,
    ProcessingFailed,
    Canceled,
    CleanedByUser,
    CleanedAutomaticallyAsTooOld,
}

/// The caller (with the `export` scope), its counter (one of the token's apps) and the
/// query string.
async fn caller(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(Caller, u64, Params), MetricaError> {
    let params = Params::parse(req).map_err(MetricaError::invalid)?;
    let caller = compat::caller(req, state, &params)
        .await
        .map_err(MetricaError::auth)?;
    caller.require(Scope::Export)?;
    let counter = integer(req, "counter_id")?;
    caller.require_app(Some(counter), "counter_id")?;
    Ok((caller, counter, params))
}

fn integer(req: &HttpRequest, name: &str) -> Result<u64, MetricaError> {
    param(req, name)
        .parse()
        .map_err(|_| MetricaError::invalid(format!("Wrong parameter value: {name}")))
}

/// The dates, source and fields of a new log request.
struct Asked {
    source: String,
    date1: NaiveDate,
    date2: NaiveDate,
    fields: Vec<String>,
}

impl Asked {
    fn parse(params: &Params, today: NaiveDate) -> Result<Asked, MetricaError> {
        let required = |name: &str| {
            params
                .first(name)
                .ok_or_else(|| MetricaError::missing(name))
        };
        let date = |name: &str| -> Result<NaiveDate, MetricaError> {
            let text = required(name)?;
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                MetricaError::invalid(format!(
                    "Wrong parameter value: {name} must be a date YYYY-MM-DD, not `{text}`"
                ))
            })
        };
        let date1 = date("date1")?;
        let date2 = date("date2")?;
        let source = required("source")?.to_string();
        let fields = params.list("fields");
        if fields.is_empty() {
            return Err(MetricaError::missing("fields"));
        }
        if date2 >= today {
            return Err(MetricaError::invalid(format!(
                "date2 must be before today ({today}): the logs of a day can be requested \
                 once it is over"
            )));
        }
        if date1 > date2 {
            return Err(MetricaError::invalid("date1 must not be after date2"));
        }
        Ok(Asked {
            source,
            date1,
            date2,
            fields,
        })
    }

    /// The export request of these parameters, validated, and no longer than
    /// [`MAX_DAYS`].
    fn request(
        &self,
        state: &AppState,
        counter: u64,
    ) -> Result<(ExportRequest, ExportSpec), MetricaError> {
        let request = ExportRequest {
            slice: self.source.clone(),
            app_id: Some(counter),
            date_since: self.date1.to_string(),
            date_until: self.date2.to_string(),
            fields: Some(self.fields.clone()),
            format: Some(Format::Tsv),
            part_max_bytes: Some(state.compat.part_max_bytes),
            ..ExportRequest::default()
        };
        let spec = request.validate(&state.catalog).map_err(|e| match e {
            SpecError::UnknownSlice(s) => {
                MetricaError::invalid(format!("Wrong parameter value: source `{s}` is unknown"))
            }
            other => MetricaError::invalid(other.to_string()),
        })?;
        let days = service::days_covered(&spec);
        if days > MAX_DAYS {
            return Err(MetricaError::invalid(format!(
                "A log request covers at most {MAX_DAYS} days; this one covers {days}"
            )));
        }
        Ok((request, spec))
    }
}

fn today(state: &AppState) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(state.clock.now_ms())
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// Room left in the counter's quota, and the new request's estimated bytes.
async fn quota_room(
    state: &AppState,
    tenant: &str,
    counter: u64,
    spec: &ExportSpec,
) -> Result<(u64, u64, u64), MetricaError> {
    let prepared = state.compat_jobs.prepared_bytes(tenant, counter).await?;
    let (_, estimate) = service::estimate(state, tenant, spec).await?;
    Ok((
        prepared,
        state.compat.counter_quota_bytes.saturating_sub(prepared),
        estimate,
    ))
}

/// `GET …/logrequests/evaluate`
#[utoipa::path(
    get,
    path = "/management/v1/counter/{counter_id}/logrequests/evaluate",
    operation_id = "metrica_evaluate",
    tag = "metrica",
    summary = "Metrica Logs API: whether a log request is possible",
    params(
        ("counter_id" = u64, Path, description = "The counter (Logport app_id)"),
        ("date1" = String, Query, description = "First day, YYYY-MM-DD"),
        ("date2" = String, Query, description = "Last day, YYYY-MM-DD, before today"),
        ("source" = String, Query, description = "The slice"),
        ("fields" = String, Query, description = "Comma-separated catalog fields"),
        ("attribution" = Option<String>, Query, description = "Accepted; raw logs have none (LASTSIGN)")
    ),
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "The evaluation", body = crate::openapi::schemas::LogRequestEvaluationAnswer),
        crate::openapi::MetricaErrors,
    )
)]
pub async fn evaluate(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, MetricaError> {
    let (caller, counter, params) = caller(&req, &state).await?;
    let tenant = caller.tenant.clone();
    let asked = Asked::parse(&params, today(&state))?;
    let (_, spec) = asked.request(&state, counter)?;
    caller.require_slice(&spec.slice)?;
    let (_, room, estimate) = quota_room(&state, &tenant, counter, &spec).await?;
    let days = service::days_covered(&spec).unsigned_abs();
    let per_day = estimate.div_ceil(days);
    // Days of this density that fit the room left (any number when they are empty);
    // never fewer than asked when the request fits.
    let possible = estimate <= room;
    let mut max_days = room
        .checked_div(per_day)
        .map_or(MAX_DAYS as u64, |d| d.min(MAX_DAYS as u64));
    if possible {
        max_days = max_days.max(days);
    }
    Ok(HttpResponse::Ok().json(json!({
        "log_request_evaluation": {
            "possible": possible,
            "max_possible_day_quantity": max_days,
        }
    })))
}

/// `POST …/logrequests`
#[utoipa::path(
    post,
    path = "/management/v1/counter/{counter_id}/logrequests",
    operation_id = "metrica_create",
    tag = "metrica",
    summary = "Metrica Logs API: create a log request",
    params(
        ("counter_id" = u64, Path, description = "The counter (Logport app_id)"),
        ("date1" = String, Query, description = "First day, YYYY-MM-DD"),
        ("date2" = String, Query, description = "Last day, YYYY-MM-DD, before today"),
        ("source" = String, Query, description = "The slice"),
        ("fields" = String, Query, description = "Comma-separated catalog fields"),
        ("attribution" = Option<String>, Query, description = "Accepted; raw logs have none (LASTSIGN)")
    ),
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "Created", body = crate::openapi::schemas::LogRequestAnswer),
        crate::openapi::MetricaErrors,
    )
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, MetricaError> {
    let (caller, counter, params) = caller(&req, &state).await?;
    let tenant = caller.tenant.clone();
    let asked = Asked::parse(&params, today(&state))?;
    let (request, spec) = asked.request(&state, counter)?;
    caller.require_slice(&spec.slice)?;
    let (prepared, room, estimate) = quota_room(&state, &tenant, counter, &spec).await?;
    if estimate > room {
        return Err(MetricaError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "The prepared logs of counter {counter} take {prepared} of its {} bytes and \
                 this request needs about {estimate} more: clean processed requests or \
                 request fewer days",
                state.compat.counter_quota_bytes
            ),
        ));
    }
    // Parts are cut at about compat_part_max_bytes; past the cap the export could
    // not finish.
    if let Some(Quota::PartBytes { parts, max, .. }) =
        service::byte_part_cap(&state, &spec, estimate)
    {
        return Err(MetricaError::invalid(format!(
            "The log request would take about {estimate} bytes in about {parts} parts; a \
             request may have at most {max} parts: request fewer days"
        )));
    }
    if let Some(Quota::Queued { queued, .. }) = service::check_queue(&state, &tenant).await? {
        return Err(MetricaError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{queued} log requests are already waiting to be processed; wait until \
                 some are done"
            ),
        )
        .retry_after(30));
    }
    let created = service::submit(&state, &caller, &request, &spec, Dedup::default()).await?;
    let job_id = created.job().id.clone();
    let number = state
        .compat_jobs
        .number(&tenant, &job_id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("job {job_id} vanished before its number")))?;
    tracing::info!(%tenant, job_id = %job_id, request_id = number, counter, "metrica log request numbered");
    let numbered = load(&state, &caller, counter, number).await?;
    Ok(HttpResponse::Ok().json(json!({ "log_request": log_request(&numbered, counter) })))
}

/// `GET …/logrequests`
#[utoipa::path(
    get,
    path = "/management/v1/counter/{counter_id}/logrequests",
    operation_id = "metrica_list",
    tag = "metrica",
    summary = "Metrica Logs API: the counter's log requests",
    params(
        ("counter_id" = u64, Path, description = "The counter (Logport app_id)")
    ),
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "The requests", body = crate::openapi::schemas::LogRequestList),
        crate::openapi::MetricaErrors,
    )
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, MetricaError> {
    let (caller, counter, _) = caller(&req, &state).await?;
    let mut all = state
        .compat_jobs
        .list_numbered(&caller.tenant, Some(counter), LIST_LIMIT)
        .await?;
    all.retain(|n| caller.sees_job(&n.job));
    all.reverse();
    let requests: Vec<Json> = all.iter().map(|n| log_request(n, counter)).collect();
    Ok(HttpResponse::Ok().json(json!({ "requests": requests })))
}

/// The counter's log request, or 404.
async fn load(
    state: &AppState,
    caller: &Caller,
    counter: u64,
    number: u64,
) -> Result<NumberedJob, MetricaError> {
    state
        .compat_jobs
        .numbered(&caller.tenant, number)
        .await?
        .filter(|n| n.job.request.app_id == Some(counter))
        .filter(|n| caller.sees_job(&n.job))
        .ok_or_else(|| {
            MetricaError::not_found(format!(
                "Log request {number} of counter {counter} not found"
            ))
        })
}

async fn load_from_path(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(Caller, u64, NumberedJob), MetricaError> {
    let (caller, counter, _) = caller(req, state).await?;
    let number = integer(req, "request_id")?;
    let numbered = load(state, &caller, counter, number).await?;
    Ok((caller, counter, numbered))
}

/// `GET …/logrequest/{request_id}`
#[utoipa::path(
    get,
    path = "/management/v1/counter/{counter_id}/logrequest/{request_id}",
    operation_id = "metrica_info",
    tag = "metrica",
    summary = "Metrica Logs API: one log request",
    params(
        ("counter_id" = u64, Path, description = "The counter (Logport app_id)"),
        ("request_id" = u64, Path, description = "The log request (from 1)")
    ),
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "The request", body = crate::openapi::schemas::LogRequestAnswer),
        (status = 404, description = "No such request of this counter", body = crate::openapi::schemas::MetricaError),
        crate::openapi::MetricaErrors,
    )
)]
pub async fn info(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, MetricaError> {
    let (_, counter, numbered) = load_from_path(&req, &state).await?;
    Ok(HttpResponse::Ok().json(json!({ "log_request": log_request(&numbered, counter) })))
}

/// `GET …/logrequest/{request_id}/part/{part_number}/download`
#[utoipa::path(
    get,
    path = "/management/v1/counter/{counter_id}/logrequest/{request_id}/part/{part_number}/download",
    operation_id = "metrica_download",
    tag = "metrica",
    summary = "Metrica Logs API: download a part (TSV with a header row)",
    params(
        ("counter_id" = u64, Path, description = "The counter (Logport app_id)"),
        ("request_id" = u64, Path, description = "The log request (from 1)"),
        ("part_number" = u32, Path, description = "From 0")
    ),
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "The part", body = String, content_type = "text/tab-separated-values"),
        (status = 404, description = "No such request of this counter", body = crate::openapi::schemas::MetricaError),
        crate::openapi::MetricaErrors,
    )
)]
pub async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, MetricaError> {
    let (_, _, numbered) = load_from_path(&req, &state).await?;
    if status(&numbered) != LogRequestStatus::Processed {
        return Err(MetricaError::invalid(NOT_PROCESSED));
    }
    let n: u32 = param(&req, "part_number")
        .parse()
        .map_err(|_| MetricaError::invalid(BAD_PART))?;
    let part = n
        .checked_add(1)
        .and_then(|ours| numbered.job.parts.iter().find(|p| p.n == ours))
        .ok_or_else(|| MetricaError::invalid(BAD_PART))?;
    Ok(compat::stream_parts(
        &state.files,
        &[part],
        "text/tab-separated-values; charset=utf-8",
    )
    .await?)
}

/// `POST …/logrequest/{request_id}/clean`
#[utoipa::path(
    post,
    path = "/management/v1/counter/{counter_id}/logrequest/{request_id}/clean",
    operation_id = "metrica_clean",
    tag = "metrica",
    summary = "Metrica Logs API: remove a processed request's files",
    params(
        ("counter_id" = u64, Path, description = "The counter (Logport app_id)"),
        ("request_id" = u64, Path, description = "The log request (from 1)")
    ),
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "Cleaned", body = crate::openapi::schemas::LogRequestAnswer),
        (status = 404, description = "No such request of this counter", body = crate::openapi::schemas::MetricaError),
        crate::openapi::MetricaErrors,
    )
)]
pub async fn clean(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, MetricaError> {
    let (caller, counter, numbered) = load_from_path(&req, &state).await?;
    let tenant = caller.tenant.as_str();
    match status(&numbered) {
        LogRequestStatus::Processed => {
            let job = &numbered.job;
            // The state first, the files after: a client never sees a processed
            // request whose files are gone.
            let now = state.clock.now_ms();
            state.jobs.mark_expired(&job.id, now).await?;
            let removed = service::delete_files(&state, job).await?;
            state
                .compat_jobs
                .mark_cleaned(tenant, numbered.number, now)
                .await?;
            tracing::info!(%tenant, job_id = %job.id, request_id = numbered.number, files = removed, "metrica log request cleaned");
            activity::record(
                &state,
                &caller,
                service::export_changed(job, "deleted", job.status, "expired"),
            );
        }
        LogRequestStatus::CleanedByUser | LogRequestStatus::CleanedAutomaticallyAsTooOld => {}
        _ => {
            return Err(MetricaError::invalid(
                "Only log of requests in status 'processed' can be cleaned",
            ))
        }
    }
    let numbered = load(&state, &caller, counter, numbered.number).await?;
    Ok(HttpResponse::Ok().json(json!({ "log_request": log_request(&numbered, counter) })))
}

/// `POST …/logrequest/{request_id}/cancel`
#[utoipa::path(
    post,
    path = "/management/v1/counter/{counter_id}/logrequest/{request_id}/cancel",
    operation_id = "metrica_cancel",
    tag = "metrica",
    summary = "Metrica Logs API: cancel a request being prepared",
    params(
        ("counter_id" = u64, Path, description = "The counter (Logport app_id)"),
        ("request_id" = u64, Path, description = "The log request (from 1)")
    ),
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "Canceled", body = crate::openapi::schemas::LogRequestAnswer),
        (status = 404, description = "No such request of this counter", body = crate::openapi::schemas::MetricaError),
        crate::openapi::MetricaErrors,
    )
)]
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, MetricaError> {
    let (caller, counter, numbered) = load_from_path(&req, &state).await?;
    let tenant = caller.tenant.as_str();
    match numbered.job.status {
        JobStatus::Queued | JobStatus::Running => {
            service::cancel(&state, &caller, &numbered.job).await?;
            tracing::info!(%tenant, job_id = %numbered.job.id, request_id = numbered.number, "metrica log request canceled");
        }
        JobStatus::Canceled => {}
        _ => {
            return Err(MetricaError::invalid(
                "Only log of requests in status 'created' can be canceled",
            ))
        }
    }
    let numbered = load(&state, &caller, counter, numbered.number).await?;
    Ok(HttpResponse::Ok().json(json!({ "log_request": log_request(&numbered, counter) })))
}

/// A job's status in Metrica's words.
pub fn status(n: &NumberedJob) -> LogRequestStatus {
    use LogRequestStatus::*;
    if n.cleaned_at.is_some() {
        return CleanedByUser;
    }
    match n.job.status {
        JobStatus::Queued if n.job.attempts > 0 => AwaitingRetry,
        JobStatus::Queued | JobStatus::Running => Created,
        JobStatus::Succeeded => Processed,
        JobStatus::Failed => ProcessingFailed,
        JobStatus::Canceled => Canceled,
        JobStatus::Expired => CleanedAutomaticallyAsTooOld,
    }
}

/// The LogRequest object.
fn log_request(n: &NumberedJob, counter: u64) -> Json {
    let request = &n.job.request;
    let status = status(n);
    let mut view = json!({
        "request_id": n.number,
        "counter_id": counter,
        "source": n.job.slice,
        "date1": request.date_since,
        "date2": request.date_until,
        "fields": request.fields,
        "status": status,
        "attribution": "LASTSIGN",
    });
    if status == LogRequestStatus::Processed {
        let parts: Vec<Json> = n
            .job
            .parts
            .iter()
            .map(|p| json!({"part_number": p.n.saturating_sub(1), "size": p.bytes}))
            .collect();
        view["size"] = json!(n.job.parts.iter().map(|p| p.bytes).sum::<u64>());
        view["parts"] = Json::Array(parts);
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use logport_queue::{Job, Progress};

    fn numbered(status: JobStatus, attempts: u32, cleaned: bool) -> NumberedJob {
        NumberedJob {
            number: 7,
            cleaned_at: cleaned.then_some(1),
            job: Job {
                id: "j".into(),
                tenant: "t".into(),
                slice: "events".into(),
                status,
                request: ExportRequest {
                    slice: "events".into(),
                    app_id: Some(42),
                    date_since: "2026-11-01".into(),
                    date_until: "2026-11-02".into(),
                    fields: Some(vec!["session_id".into()]),
                    ..ExportRequest::default()
                },
                idempotency_key: None,
                created_at: 0,
                started_at: None,
                finished_at: None,
                expires_at: None,
                attempts,
                max_attempts: 5,
                progress: Progress::default(),
                error: None,
                parts: vec![
                    logport_queue::Part {
                        n: 1,
                        key: "k1".into(),
                        rows: 1,
                        bytes: 10,
                        sha256: "a".into(),
                    },
                    logport_queue::Part {
                        n: 2,
                        key: "k2".into(),
                        rows: 1,
                        bytes: 5,
                        sha256: "b".into(),
                    },
                ],
                manifest_key: None,
                lease_owner: None,
                lease_until: None,
            },
        }
    }

    #[test]
    fn statuses_in_metrica_words() {
        use JobStatus::*;
        for (status, attempts, cleaned, want) in [
            (Queued, 0, false, "created"),
            (Queued, 1, false, "awaiting_retry"),
            (Running, 2, false, "created"),
            (Succeeded, 1, false, "processed"),
            (Failed, 5, false, "processing_failed"),
            (Canceled, 0, false, "canceled"),
            (Expired, 1, false, "cleaned_automatically_as_too_old"),
            (Expired, 1, true, "cleaned_by_user"),
        ] {
            let got = super::status(&numbered(status, attempts, cleaned));
            assert_eq!(serde_json::to_value(got).unwrap(), want);
        }
    }

    #[test]
    fn log_request_shape() {
        assert_eq!(
            log_request(&numbered(JobStatus::Succeeded, 1, false), 42),
            json!({"request_id": 7, "counter_id": 42, "source": "events",
                "date1": "2026-11-01", "date2": "2026-11-02", "fields": ["session_id"],
                "status": "processed", "attribution": "LASTSIGN", "size": 15,
                "parts": [{"part_number": 0, "size": 10}, {"part_number": 1, "size": 5}]})
        );
        let created = log_request(&numbered(JobStatus::Queued, 0, false), 42);
        assert_eq!(created["status"], "created");
        assert!(created.get("parts").is_none() && created.get("size").is_none());
    }
}
