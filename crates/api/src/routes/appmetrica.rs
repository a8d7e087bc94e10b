//! AppMetrica-style Logs API: `GET /logs/v1/export/{slice}.{csv|json}` answers 202
//! `Wait for result` until the file of that request is ready, then 200 with the file.
//! (docs/logs-api-protocols.md, "AppMetrica style".)
//!
//! Decisions:
//! - A request becomes an ordinary export job: `application_id` is the job's `app_id`,
//!   `date_dimension=default|receive` is `event|received`, every other non-reserved
//!   parameter `<field>=<value>` an `eq` filter (repeated: an `in` filter). Dates take
//!   `yyyy-mm-dd` (whole day) or `yyyy-mm-dd hh:mm:ss`, in UTC; a request with neither
//!   (AppMetrica's undated exports, such as push tokens) covers the whole history and
//!   is exempt from the date-range limit. JSON is `{"data":[…]}` with every value a
//!   string (NULL an empty string), as AppMetrica writes it; the catalog's
//!   `json_strings` does it inside ClickHouse. `use_utf8_bom` applies to CSV (a BOM is
//!   not valid at the start of JSON).
//! - "Identical request": the fingerprint of the normalised export request (parameter
//!   order does not matter; the token's tenant is part of it). The newest job with
//!   that fingerprint decides the answer:
//!   - queued or running: 202 (running: with the rows and bytes written so far, as the
//!     job store recorded them — a poll never queries ClickHouse), whatever
//!     `Cache-Control` says — a client that sends `no-cache` with every poll must not
//!     restart its own job;
//!   - succeeded and never served yet: 200 — it was made for whoever is polling, so
//!     `no-cache` and `max-age` take it too (otherwise a client sending `no-cache` on
//!     every poll would never get its file);
//!   - succeeded and served before: 200 if it finished within the last 24 hours (or
//!     within `max-age=N` seconds), and not with `no-cache`; otherwise a new job;
//!   - failed: its error once (500, `text/plain`), then a new job on the next request;
//!   - canceled, expired or older than 24 hours: a new job.
//!
//!   "Served" is recorded when a GET's 200 starts (a HEAD does not count); `no-store`
//!   counts as `no-cache`. Two identical first requests arriving at the same moment
//!   may each queue a job; every later request follows the newest.
//! - Before queuing, the result is estimated (rows counted × average row size): past
//!   `LOGPORT_COMPAT_MAX_RESPONSE_BYTES` the answer is 400 `… Try to use more parts.`,
//!   and so is a finished file that turned out larger. `parts_count`/`part_number`
//!   split the result deterministically by a hash of `event_id`: the parts of one
//!   request are disjoint and together are the whole result.
//! - Quota: at most 3 queued or running jobs per app (429 with AppMetrica's text),
//!   whichever API queued them; the tenant-wide limits of `/v1` apply too.
//! - The job's file is one part (no part limits are set), streamed as the 200 body;
//!   `Accept-Encoding: gzip` compresses it on the fly (the routes' `Compress`).

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use logport_catalog::{
    BucketRequest, DateDimension, ExportRequest, ExportSpec, FilterOp, FilterRequest, Format,
    SpecError,
};
use logport_queue::{FingerprintedJob, Job, JobStatus, Progress, Scope};
use serde_json::{json, Value as Json};

use super::compat::{self, AuthFailure, Params, Wire, WireError};
use super::param;
use crate::error::ApiError;
use crate::service::{self, Dedup, Quota};
use crate::AppState;

/// Queued or running requests one app may have (AppMetrica's quota).
pub const MAX_PENDING_PER_APP: u64 = 3;
/// The range of a request without dates: every day a `Date` can hold.
const WHOLE_HISTORY: (&str, &str) = ("1970-01-01", "2105-12-31");
/// How long a finished file answers identical requests.
pub const REUSE_MS: i64 = 24 * 3600 * 1000;

/// Parameters with a meaning of their own; any other is a field filter.
const RESERVED: [&str; 9] = [
    "application_id",
    "date_since",
    "date_until",
    "date_dimension",
    "fields",
    "limit",
    "use_utf8_bom",
    "parts_count",
    "part_number",
];

/// AppMetrica's errors: a status and a `text/plain` sentence.
#[derive(Debug)]
pub struct AppMetrica;

pub type TextError = WireError<AppMetrica>;

impl Wire for AppMetrica {
    fn unauthenticated(f: &AuthFailure) -> Option<TextError> {
        let text = match f {
            AuthFailure::Missing => "Authorization required: send Authorization: OAuth <token>",
            AuthFailure::Invalid(_) => "Invalid OAuth token",
            _ => return None,
        };
        Some(TextError::new(StatusCode::UNAUTHORIZED, text))
    }

    fn render(e: &TextError) -> HttpResponse {
        let mut resp = HttpResponse::build(e.status);
        resp.content_type("text/plain; charset=utf-8");
        if let Some(s) = e.retry_after {
            resp.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if e.status == StatusCode::UNAUTHORIZED {
            resp.insert_header((header::WWW_AUTHENTICATE, "OAuth realm=\"logport\""));
        }
        resp.body(e.message.clone())
    }
}

/// What `Cache-Control` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_cache: bool,
    pub max_age: Option<u64>,
}

impl CacheControl {
    /// Read through actix-web's typed header. Its directive names are case-sensitive,
    /// so `No-Cache` or `max-age = 5` (RFC 9111 §5.2 names are case-insensitive)
    /// arrive as extensions and are read here; a `max-age` past `u32` (136 years) is
    /// no number to it and counts as absent.
    pub fn parse(req: &HttpRequest) -> CacheControl {
        use header::{CacheDirective, Header};
        let mut cc = CacheControl::default();
        let directives = header::CacheControl::parse(req).map_or_else(|_| Vec::new(), |h| h.0);
        for directive in directives {
            let (name, arg) = match directive {
                CacheDirective::NoCache | CacheDirective::NoStore => ("no-cache".to_string(), None),
                CacheDirective::MaxAge(n) => ("max-age".to_string(), Some(u64::from(n))),
                CacheDirective::Extension(name, arg) => (
                    name.trim().to_ascii_lowercase(),
                    arg.and_then(|a| a.trim().trim_matches('"').parse().ok()),
                ),
                _ => continue,
            };
            match name.as_str() {
                "no-cache" | "no-store" => cc.no_cache = true,
                "max-age" => {
                    if let Some(n) = arg {
                        cc.max_age = Some(cc.max_age.map_or(n, |m: u64| m.min(n)));
                    }
                }
                _ => {}
            }
        }
        cc
    }
}

/// What to answer, given the newest job of an identical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 202: it is being prepared.
    Wait,
    /// 200 with its file.
    Serve,
    /// Its failure, once.
    ReportFailure,
    /// Queue a new job.
    Start,
}

/// The caching rules of the module doc, in one place.
pub fn decide(found: Option<&FingerprintedJob>, cc: CacheControl, now: i64) -> Decision {
    let Some(found) = found else {
        return Decision::Start;
    };
    let job = &found.job;
    match job.status {
        JobStatus::Queued | JobStatus::Running => Decision::Wait,
        JobStatus::Succeeded => {
            let age = now - job.finished_at.unwrap_or(job.created_at);
            if age > REUSE_MS {
                Decision::Start
            } else if found.served_at.is_none() {
                Decision::Serve
            } else if cc.no_cache {
                Decision::Start
            } else {
                let limit = cc.max_age.map_or(REUSE_MS, |s| {
                    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
                });
                if age <= limit {
                    Decision::Serve
                } else {
                    Decision::Start
                }
            }
        }
        JobStatus::Failed if found.served_at.is_none() => Decision::ReportFailure,
        JobStatus::Failed | JobStatus::Canceled | JobStatus::Expired => Decision::Start,
    }
}

/// `GET /logs/v1/export/{file}` where file is `{slice}.csv` or `{slice}.json`.
#[utoipa::path(
    get,
    path = "/logs/v1/export/{file}",
    operation_id = "appmetrica_export",
    tag = "appmetrica",
    summary = "AppMetrica Logs API: the file of a request, once ready",
    description = "Any other parameter <field>=<value> is an equality filter on that catalog field (repeated: any of the values). Errors are text/plain, as AppMetrica's.",
    params(
        ("file" = String, Path, description = "{slice}.csv or {slice}.json"),
        ("application_id" = u64, Query, description = "The app"),
        ("date_since" = Option<String>, Query, description = "yyyy-mm-dd or yyyy-mm-dd hh:mm:ss (UTC); without both dates, the whole history"),
        ("date_until" = Option<String>, Query, description = "yyyy-mm-dd or yyyy-mm-dd hh:mm:ss (UTC)"),
        ("date_dimension" = Option<String>, Query, description = "default (event time) or receive", pattern = "^(default|receive)$"),
        ("fields" = String, Query, description = "Comma-separated catalog fields"),
        ("limit" = Option<u64>, Query, minimum = 1),
        ("use_utf8_bom" = Option<bool>, Query),
        ("parts_count" = Option<u32>, Query, description = "Split the result this many ways", minimum = 1, maximum = 10000),
        ("part_number" = Option<u32>, Query, description = "Which of the parts_count parts (from 0)"),
        ("Cache-Control" = Option<String>, Header, description = "no-cache: a fresh file once the current one was delivered; max-age=N")
    ),
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "The whole file", content(("text/csv"), ("application/json"))),
        (status = 202, description = "Wait for result (running: the rows and bytes written so far)", body = String, content_type = "text/plain"),
        (status = 400, description = "A bad parameter, or a result too large (Try to use more parts)", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or invalid token", body = String, content_type = "text/plain"),
        (status = 403, description = "The token may not read this (scope, slice or application_id)", body = String, content_type = "text/plain"),
        (status = 404, description = "Unknown export type", body = String, content_type = "text/plain"),
        (status = 429, description = "Too many requests of this application are queued, or the token's rate limit", body = String, content_type = "text/plain"),
        (status = 500, description = "The request failed (answered once; repeat it to try again)", body = String, content_type = "text/plain"),
        (status = 503, description = "A backend is unavailable", body = String, content_type = "text/plain"),
    )
)]
pub async fn export(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, TextError> {
    let params = Params::parse(&req).map_err(TextError::bad)?;
    let caller = compat::caller(&req, &state, &params)
        .await
        .map_err(TextError::auth)?;
    caller.require(Scope::Export)?;
    let tenant = caller.tenant.clone();
    let file = param(&req, "file");
    let (slice, ext) = file
        .rsplit_once('.')
        .filter(|(_, ext)| matches!(*ext, "csv" | "json"))
        .ok_or_else(|| {
            TextError::new(
                StatusCode::NOT_FOUND,
                format!("Unknown export `{file}`: use /logs/v1/export/{{type}}.csv or .json"),
            )
        })?;
    let (request, undated) = export_request(&state, slice, ext, &params)?;
    let spec = request.validate(&state.catalog).map_err(spec_error)?;
    let app_id = spec.app_id.unwrap_or_default();
    caller.require_slice(&spec.slice)?;
    caller.require_app(Some(app_id), "application_id")?;
    let fingerprint = fingerprint(&request.normalized(&state.catalog))?;
    let now = state.clock.now_ms();

    let found = state
        .compat_jobs
        .find_by_fingerprint(&tenant, &fingerprint)
        .await?;
    let cc = CacheControl::parse(&req);
    match decide(found.as_ref(), cc, now) {
        Decision::Wait => {
            // What the worker recorded in the job store: a poll never queries
            // ClickHouse, however often a client polls.
            let progress = found
                .map(|f| f.job)
                .filter(|job| job.status == JobStatus::Running)
                .map(|job| job.progress);
            Ok(wait(progress.as_ref()))
        }
        Decision::Serve => {
            let job = found.map(|f| f.job).ok_or_else(|| {
                TextError::from(ApiError::Internal("a served job vanished".into()))
            })?;
            let head = req.method() == actix_web::http::Method::HEAD;
            serve(&state, &tenant, &job, ext, now, head).await
        }
        Decision::ReportFailure => {
            let job = found.map(|f| f.job).ok_or_else(|| {
                TextError::from(ApiError::Internal("a failed job vanished".into()))
            })?;
            state.compat_jobs.mark_served(&tenant, &job.id, now).await?;
            let why = job
                .error
                .as_ref()
                .map_or("unknown error".to_string(), |e| e.message.clone());
            Err(TextError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The request failed: {why}. Repeat it to try again."),
            ))
        }
        Decision::Start => {
            check_quotas(&state, &tenant, app_id, &spec, undated).await?;
            let (_, bytes) = service::estimate(&state, &tenant, &spec).await?;
            let max = state.compat.max_response_bytes;
            if bytes > max {
                return Err(too_large(bytes, max));
            }
            let dedup = Dedup {
                idempotency_key: None,
                fingerprint: Some(fingerprint),
            };
            service::submit(&state, &caller, &request, &spec, dedup).await?;
            Ok(wait(None))
        }
    }
}

/// `GET /management/v1/logsapi/status`: whether the Logs API takes requests. Its
/// errors are the management API's JSON, as Metrica's.
#[utoipa::path(
    get,
    path = "/management/v1/logsapi/status",
    operation_id = "appmetrica_status",
    tag = "appmetrica",
    summary = "Whether the Logs API takes requests",
    security(("bearer" = []), ("oauth" = []), ("oauth_token" = [])),
    responses(
        (status = 200, description = "Enabled", body = crate::openapi::schemas::LogsApiStatus),
        (status = 400, description = "Malformed query string", body = crate::openapi::schemas::MetricaError),
        (status = 401, description = "No token", body = crate::openapi::schemas::MetricaError),
        (status = 403, description = "Invalid token, or no export scope", body = crate::openapi::schemas::MetricaError),
        (status = 429, description = "The token's rate limit", body = crate::openapi::schemas::MetricaError),
        (status = 503, description = "A backend is unavailable", body = crate::openapi::schemas::MetricaError),
    )
)]
pub async fn status(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, super::metrica::MetricaError> {
    let params = Params::parse(&req)
        .map_err(|e| super::metrica::MetricaError::from(ApiError::bad_request(None, e)))?;
    let caller = compat::caller(&req, &state, &params)
        .await
        .map_err(super::metrica::MetricaError::auth)?;
    caller.require(Scope::Export)?;
    Ok(HttpResponse::Ok().json(json!({"logs_api_availability_status": "enabled"})))
}

/// 202 `Wait for result`; for a running job, what it has written so far, as its
/// worker last recorded it (rows and bytes; the total is not known without counting
/// again, so there is no percentage).
fn wait(progress: Option<&Progress>) -> HttpResponse {
    let body = match progress {
        Some(p) => format!(
            "Wait for result. Written so far: {} rows, {} bytes",
            p.rows, p.bytes
        ),
        None => "Wait for result".to_string(),
    };
    HttpResponse::Accepted()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

fn too_large(bytes: u64, max: u64) -> TextError {
    TextError::bad(format!(
        "Result is too large (about {bytes} bytes; one response carries at most {max}). \
         Try to use more parts."
    ))
}

async fn serve(
    state: &AppState,
    tenant: &str,
    job: &Job,
    ext: &str,
    now: i64,
    head: bool,
) -> Result<HttpResponse, TextError> {
    let total: u64 = job.parts.iter().map(|p| p.bytes).sum();
    let max = state.compat.max_response_bytes;
    if total > max {
        return Err(too_large(total, max));
    }
    let parts: Vec<_> = job.parts.iter().collect();
    let content_type = match ext {
        "json" => "application/json; charset=utf-8",
        _ => "text/csv; charset=utf-8",
    };
    let resp = compat::stream_parts(&state.files, &parts, content_type).await?;
    // A HEAD carries no file: the file still waits for its GET.
    if !head {
        state.compat_jobs.mark_served(tenant, &job.id, now).await?;
    }
    Ok(resp)
}

/// The quotas a new job must fit: the tenant's date range (unless undated) and queue,
/// and AppMetrica's own per-app limit, in AppMetrica's words.
async fn check_quotas(
    state: &AppState,
    tenant: &str,
    app_id: u64,
    spec: &ExportSpec,
    undated: bool,
) -> Result<(), TextError> {
    if let Some(Quota::RangeDays { days, max }) = service::check_range(state, spec) {
        if !undated {
            return Err(TextError::bad(format!(
                "The date range covers {days} days; at most {max} are allowed"
            )));
        }
    }
    if state
        .compat_jobs
        .count_pending_for_app(tenant, app_id)
        .await?
        >= MAX_PENDING_PER_APP
    {
        return Err(TextError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "There are already {MAX_PENDING_PER_APP} enqueued queries for given \
                 application_id. Wait until they are completed."
            ),
        )
        .retry_after(30));
    }
    if let Some(Quota::Queued { queued, .. }) = service::check_queue(state, tenant).await? {
        return Err(TextError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "There are already {queued} enqueued queries for this account. \
                 Wait until they are completed."
            ),
        )
        .retry_after(30));
    }
    Ok(())
}

fn spec_error(e: SpecError) -> TextError {
    match e {
        SpecError::UnknownSlice(s) => {
            TextError::new(StatusCode::NOT_FOUND, format!("Unknown export type `{s}`"))
        }
        other => TextError::bad(other.to_string()),
    }
}

/// Same normalised request, same fingerprint.
fn fingerprint(normalized: &ExportRequest) -> Result<String, ApiError> {
    use sha2::Digest;
    let text = serde_json::to_string(normalized).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(hex::encode(sha2::Sha256::digest(
        format!("appmetrica-v1\n{text}").as_bytes(),
    )))
}

/// The export request an AppMetrica query string stands for, and whether it came
/// without dates.
fn export_request(
    state: &AppState,
    slice_name: &str,
    ext: &str,
    params: &Params,
) -> Result<(ExportRequest, bool), TextError> {
    let slice = state.catalog.slice(slice_name).ok_or_else(|| {
        TextError::new(
            StatusCode::NOT_FOUND,
            format!("Unknown export type `{slice_name}`"),
        )
    })?;
    let required = |name: &str| {
        params
            .first(name)
            .ok_or_else(|| TextError::bad(format!("Parameter `{name}` is required")))
    };
    let number = |name: &str| -> Result<Option<u64>, TextError> {
        params
            .first(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    TextError::bad(format!("Parameter `{name}` must be a non-negative integer"))
                })
            })
            .transpose()
    };
    let app_id = required("application_id")?
        .parse::<u64>()
        .map_err(|_| TextError::bad("Parameter `application_id` must be a number"))?;
    // Without dates (AppMetrica's undated exports, e.g. push tokens): the whole history.
    let undated = params.first("date_since").is_none() && params.first("date_until").is_none();
    let (date_since, date_until) = if undated {
        (WHOLE_HISTORY.0, WHOLE_HISTORY.1)
    } else {
        (required("date_since")?, required("date_until")?)
    };
    for (name, value) in [("date_since", date_since), ("date_until", date_until)] {
        if !is_appmetrica_date(value) {
            return Err(TextError::bad(format!(
                "Parameter `{name}` must be yyyy-mm-dd or yyyy-mm-dd hh:mm:ss, not `{value}`"
            )));
        }
    }
    let dimension = match params.first("date_dimension").unwrap_or("default") {
        "default" => DateDimension::Event,
        "receive" => DateDimension::Received,
        other => {
            return Err(TextError::bad(format!(
                "Parameter `date_dimension` must be default or receive, not `{other}`"
            )))
        }
    };
    let fields = params.list("fields");
    if fields.is_empty() {
        return Err(TextError::bad("Parameter `fields` is required"));
    }
    let bom = match params.first("use_utf8_bom") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(TextError::bad(format!(
                "Parameter `use_utf8_bom` must be true or false, not `{other}`"
            )))
        }
    };
    let bucket = match (number("parts_count")?, number("part_number")?) {
        (None, None) => None,
        (Some(count), number) => Some(bucket(count, number.unwrap_or(0))?),
        (None, Some(_)) => {
            return Err(TextError::bad(
                "Parameter `part_number` needs `parts_count`",
            ))
        }
    };
    let json = ext == "json";
    let request = ExportRequest {
        slice: slice_name.to_string(),
        app_id: Some(app_id),
        date_since: date_since.to_string(),
        date_until: date_until.to_string(),
        date_dimension: Some(dimension),
        fields: Some(fields),
        filters: filters(slice, params)?,
        format: Some(if json { Format::Json } else { Format::Csv }),
        limit: number("limit")?,
        utf8_bom: (bom && !json).then_some(true),
        json_strings: json.then_some(true),
        bucket,
        // The answer is one file, served whole.
        single_file: Some(true),
        ..ExportRequest::default()
    };
    Ok((request, undated))
}

/// `parts_count` and `part_number` as a bucket of the result.
fn bucket(count: u64, number: u64) -> Result<BucketRequest, TextError> {
    let max = logport_catalog::spec::MAX_BUCKETS;
    let fits = |n: u64| u32::try_from(n).ok().filter(|&n| n <= max);
    match (fits(count), fits(number)) {
        (Some(count), Some(number)) if count > 0 && number < count => {
            Ok(BucketRequest { count, number })
        }
        _ => Err(TextError::bad(format!(
            "part_number must be below parts_count, and parts_count 1 to {max}"
        ))),
    }
}

/// Every parameter that is not reserved names a field: an `eq` filter on its value, or
/// `in` when it is repeated. Sorted, so the order of the parameters does not change
/// the request's fingerprint.
fn filters(
    slice: &logport_catalog::Slice,
    params: &Params,
) -> Result<Vec<FilterRequest>, TextError> {
    let mut filters: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, value) in params.pairs() {
        if RESERVED.contains(&name) || compat::AUTH_PARAMS.contains(&name) {
            continue;
        }
        if slice.field(name).is_none() {
            return Err(TextError::bad(format!(
                "Unknown parameter `{name}`: not a field of `{}`",
                slice.name
            )));
        }
        filters.entry(name).or_default().push(value);
    }
    Ok(filters
        .into_iter()
        .map(|(field, mut values)| {
            values.sort_unstable();
            values.dedup();
            let values: Vec<Json> = values.into_iter().map(Json::from).collect();
            let (op, value, values) = match values.as_slice() {
                [one] => (FilterOp::Eq, Some(one.clone()), None),
                _ => (FilterOp::In, None, Some(values)),
            };
            FilterRequest {
                field: field.to_string(),
                op,
                value,
                values,
            }
        })
        .collect())
}

/// `yyyy-mm-dd` or `yyyy-mm-dd hh:mm:ss`.
fn is_appmetrica_date(v: &str) -> bool {
    let shape = |s: &str, pattern: &str| {
        s.len() == pattern.len()
            && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
                b'd' => c.is_ascii_digit(),
                _ => c == p,
            })
    };
    shape(v, "dddd-dd-dd") || shape(v, "dddd-dd-dd dd:dd:dd")
}

#[cfg(test)]
mod tests {
    use super::*;
    use logport_queue::{Job, Progress};

    fn job(status: JobStatus, finished_at: Option<i64>) -> Job {
        Job {
            id: "j".into(),
            tenant: "t".into(),
            slice: "events".into(),
            status,
            request: ExportRequest::default(),
            idempotency_key: None,
            created_at: 0,
            started_at: None,
            finished_at,
            expires_at: None,
            attempts: 1,
            max_attempts: 5,
            progress: Progress::default(),
            error: None,
            parts: Vec::new(),
            manifest_key: None,
            lease_owner: None,
            lease_until: None,
        }
    }

    fn found(status: JobStatus, finished_at: Option<i64>, served: bool) -> FingerprintedJob {
        FingerprintedJob {
            job: job(status, finished_at),
            served_at: served.then_some(1),
        }
    }

    const NO_CACHE: CacheControl = CacheControl {
        no_cache: true,
        max_age: None,
    };

    #[test]
    fn caching_rules() {
        let plain = CacheControl::default();
        let hour = 3600 * 1000;
        assert_eq!(decide(None, plain, 0), Decision::Start);
        for s in [JobStatus::Queued, JobStatus::Running] {
            assert_eq!(
                decide(Some(&found(s, None, false)), NO_CACHE, 9),
                Decision::Wait
            );
        }
        // Never served: whoever asks gets it, even with no-cache.
        let fresh = found(JobStatus::Succeeded, Some(hour), false);
        assert_eq!(decide(Some(&fresh), NO_CACHE, 2 * hour), Decision::Serve);
        // Served before: no-cache starts over; otherwise 24 hours or max-age.
        let served = found(JobStatus::Succeeded, Some(hour), true);
        assert_eq!(decide(Some(&served), NO_CACHE, 2 * hour), Decision::Start);
        assert_eq!(decide(Some(&served), plain, 2 * hour), Decision::Serve);
        assert_eq!(decide(Some(&served), plain, 26 * hour), Decision::Start);
        let max_age = |s| CacheControl {
            no_cache: false,
            max_age: Some(s),
        };
        assert_eq!(
            decide(Some(&served), max_age(3600), 2 * hour),
            Decision::Serve
        );
        assert_eq!(
            decide(Some(&served), max_age(3599), 2 * hour),
            Decision::Start
        );
        assert_eq!(
            decide(Some(&fresh), plain, 26 * hour),
            Decision::Start,
            "a day-old file is never reused"
        );
        assert_eq!(
            decide(Some(&found(JobStatus::Failed, Some(1), false)), plain, 2),
            Decision::ReportFailure
        );
        for s in [JobStatus::Failed, JobStatus::Canceled, JobStatus::Expired] {
            assert_eq!(
                decide(Some(&found(s, Some(1), true)), plain, 2),
                Decision::Start
            );
        }
    }

    /// Jobs stored before the request was typed are found by the fingerprint a request
    /// made now computes: the text it hashes (members in declaration order, names as
    /// the wire spells them) is the same.
    #[test]
    fn fingerprints_of_identical_requests_stay_the_same() {
        let filter =
            |field: &str, op, value: Option<Json>, values: Option<Vec<Json>>| FilterRequest {
                field: field.into(),
                op,
                value,
                values,
            };
        let request = ExportRequest {
            slice: "events".into(),
            app_id: Some(42),
            date_since: "2026-11-01".into(),
            date_until: "2026-11-02 10:00:00".into(),
            date_dimension: Some(DateDimension::Received),
            timezone: Some("UTC".into()),
            fields: Some(vec!["session_id".into(), "event_name".into()]),
            filters: vec![
                filter(
                    "event_name",
                    FilterOp::In,
                    None,
                    Some(vec![json!("a"), json!("b")]),
                ),
                filter("os", FilterOp::Eq, Some(json!("ios")), None),
            ],
            format: Some(Format::Json),
            compression: Some(logport_catalog::Compression::None),
            limit: Some(10),
            json_strings: Some(true),
            bucket: Some(BucketRequest {
                count: 4,
                number: 1,
            }),
            single_file: Some(true),
            ..ExportRequest::default()
        };
        assert_eq!(
            fingerprint(&request).unwrap(),
            "38f82c4f2746ae66c04c628487b0d9e6afc65307f7b1c3184fc76e190329f804"
        );
    }

    #[test]
    fn buckets_of_parts_count_and_part_number() {
        assert_eq!(
            bucket(4, 3).unwrap(),
            BucketRequest {
                count: 4,
                number: 3
            }
        );
        for (count, number) in [(0, 0), (4, 4), (10_001, 0), (u64::MAX, 0), (4, u64::MAX)] {
            assert!(bucket(count, number).is_err(), "{count} {number}");
        }
    }

    #[test]
    fn dates() {
        assert!(is_appmetrica_date("2026-11-01"));
        assert!(is_appmetrica_date("2026-11-01 10:00:00"));
        assert!(!is_appmetrica_date("2026-11-01T10:00:00"));
        assert!(!is_appmetrica_date("1793491200"));
        assert!(!is_appmetrica_date("2026-1-01"));
    }
}
