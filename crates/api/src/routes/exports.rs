//! Export jobs: create (stored before the 202), poll, list, cancel, download; plus the
//! synchronous neighbours `evaluate` and `preview` that share the request body.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use logport_catalog::{ExportRequest, ExportSpec};
use logport_export::files;
use logport_queue::{Created, JobStatus, ListQuery, Scope};
use logport_store::Bounds;
use serde::Deserialize;
use serde_json::json;

use super::{idempotency_key, param, read_body};
use crate::activity;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::{self, Dedup, Quota};
use crate::views::job_view;
use crate::AppState;

/// Most rows a preview may return.
const MAX_PREVIEW_ROWS: u64 = 1000;

/// The export request of a body, once the caller may make it: the `export` scope,
/// a slice it may read, an app it may read.
async fn read_request(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    caller: &Caller,
) -> Result<(ExportRequest, ExportSpec), ApiError> {
    caller.require(Scope::Export)?;
    let body = read_body(req, payload, state.limits.json_max_bytes).await?;
    let request = ExportRequest::from_json(&body)?;
    let spec = request.validate(&state.catalog)?;
    check_access(caller, &spec)?;
    Ok((request, spec))
}

/// 403 unless the caller may read what the spec selects.
fn check_access(caller: &Caller, spec: &ExportSpec) -> Result<(), ApiError> {
    caller.require_slice(&spec.slice)?;
    caller.require_app(spec.app_id, "app_id")
}

#[utoipa::path(
    post,
    path = "/v1/exports",
    operation_id = "create_export",
    tag = "exports",
    summary = "Queue an export (stored before the answer)",
    description = "Needs the export scope; a token limited to apps must name one of them as app_id.",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Same key and body: the same job")
    ),
    request_body(content = logport_catalog::ExportRequest, content_type = "application/json"),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "An earlier request with this Idempotency-Key made this job", body = crate::views::JobView),
        (status = 202, description = "Queued; Location names the job", body = crate::views::JobView, headers(("Location" = String, description = "/v1/exports/{id}"))),
        (status = 400, description = "Malformed query string, header or body"),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "Unknown slice"),
        (status = 409, description = "This Idempotency-Key was used with another body"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "Unsupported Content-Encoding or Content-Type"),
        (status = 422, description = "Well-formed but not acceptable: unknown field, bad date, filter or value; or part_max_rows/part_max_bytes so small that the export would pass LOGPORT_EXPORT_MAX_PARTS parts (`field` names which)"),
        (status = 504, description = "Counting the rows (for a quota or the part cap) took longer than LOGPORT_QUERY_TIMEOUT"),
        crate::openapi::V1Errors,
    )
)]
pub async fn create(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let (request, spec) = read_request(&req, payload, &state, &caller).await?;
    if let Some(quota) = service::check_quotas(&state, &caller.tenant, &spec).await? {
        return Err(quota.into());
    }
    let dedup = Dedup {
        idempotency_key: key,
        fingerprint: None,
    };
    let created = service::submit(&state, &caller, &request, &spec, dedup).await?;
    let job = created.job();
    let location = format!("/v1/exports/{}", job.id);
    let mut resp = match created {
        Created::New(_) => HttpResponse::Accepted(),
        Created::Existing(_) => {
            let mut r = HttpResponse::Ok();
            r.insert_header(("Idempotent-Replayed", "true"));
            r
        }
    };
    Ok(resp
        .insert_header((header::LOCATION, location))
        .json(job_view(job)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    slice: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/exports",
    operation_id = "list_exports",
    tag = "exports",
    summary = "The exports of the token's tenant (and apps), newest first",
    params(
        ("status" = Option<logport_queue::JobStatus>, Query, description = "Only exports in this state"),
        ("slice" = Option<String>, Query, description = "Only exports of this slice"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 50)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "A page", body = crate::openapi::schemas::JobList),
        (status = 400, description = "Malformed query string, header or body"),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        crate::openapi::V1Errors,
    )
)]
pub async fn list(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let p = web::Query::<ListParams>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(None, format!("bad query string: {e}")))?
        .into_inner();
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                Some("status"),
                "status must be one of queued, running, succeeded, failed, canceled, expired",
            )
        })?),
    };
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            Some("limit"),
            "limit must be 1 to 1000",
        ));
    }
    let before = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| {
            ApiError::bad_request(Some("cursor"), "cursor is not one this API returned")
        })?),
    };
    let jobs = state
        .jobs
        .list(
            &caller.tenant,
            &ListQuery {
                status,
                slice: p.slice.filter(|s| !s.is_empty()),
                limit,
                before,
                apps: caller.apps.clone(),
                hidden_slices: caller.hidden_slices(),
            },
        )
        .await?;
    let next_cursor = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| format!("{}-{}", j.created_at, j.id)))
        .flatten();
    let views: Vec<_> = jobs.iter().map(job_view).collect();
    Ok(HttpResponse::Ok().json(json!({"exports": views, "next_cursor": next_cursor})))
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (at, id) = c.split_once('-')?;
    let valid_id = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    valid_id.then_some(())?;
    Some((at.parse().ok()?, id.to_string()))
}

/// One of the caller's exports. Another tenant's, another app's (for a token limited
/// to apps) or one of a slice the caller may not read is "not found", exactly like an
/// id that does not exist: a 403 would confirm that it does.
async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<logport_queue::Job, ApiError> {
    caller.require(Scope::Export)?;
    // Ids are 32 hex digits; anything else cannot exist, and is not sent to the store.
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("export"));
    }
    state
        .jobs
        .get(&caller.tenant, id)
        .await?
        .filter(|job| caller.sees_job(job))
        .ok_or_else(|| ApiError::not_found(format!("export {id}")))
}

#[utoipa::path(
    get,
    path = "/v1/exports/{id}",
    operation_id = "get_export",
    tag = "exports",
    summary = "An export: status, progress, parts",
    params(
        ("id" = String, Path, description = "The export id (32 hex digits)", pattern = "^[0-9a-f]{32}$")
    ),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "The export", body = crate::views::JobView),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "No such export (or not this token's)"),
        crate::openapi::V1Errors,
    )
)]
pub async fn get(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &caller, param(&req, "id")).await?;
    Ok(HttpResponse::Ok().json(job_view(&job)))
}

#[utoipa::path(
    post,
    path = "/v1/exports/{id}/cancel",
    operation_id = "cancel_export",
    tag = "exports",
    summary = "Stop a queued or running export",
    params(
        ("id" = String, Path, description = "The export id (32 hex digits)", pattern = "^[0-9a-f]{32}$")
    ),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "The export, canceled", body = crate::views::JobView),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "No such export (or not this token's)"),
        (status = 409, description = "The export already finished"),
        crate::openapi::V1Errors,
    )
)]
pub async fn cancel(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &caller, param(&req, "id")).await?;
    if job.status.is_terminal() && job.status != JobStatus::Canceled {
        return Err(ApiError::Conflict(format!(
            "export {} is already {} and cannot be canceled",
            job.id,
            job.status.as_str()
        )));
    }
    let job = service::cancel(&state, &caller, &job)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("export {}", job.id)))?;
    Ok(HttpResponse::Ok().json(job_view(&job)))
}

#[utoipa::path(
    get,
    path = "/v1/exports/{id}/manifest",
    operation_id = "get_manifest",
    tag = "exports",
    summary = "The manifest of a finished export: parts, rows, bytes, SHA-256, watermark",
    params(
        ("id" = String, Path, description = "The export id (32 hex digits)", pattern = "^[0-9a-f]{32}$")
    ),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "The manifest", body = Object),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "No such export, or it has not succeeded"),
        (status = 410, description = "The export expired"),
        crate::openapi::V1Errors,
    )
)]
pub async fn manifest(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &caller, param(&req, "id")).await?;
    let key = match (&job.status, &job.manifest_key) {
        (JobStatus::Succeeded, Some(k)) => k.clone(),
        (JobStatus::Expired, _) => {
            return Err(ApiError::Gone(format!("export {} has expired", job.id)))
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "manifest of export {} (it is {})",
                job.id,
                job.status.as_str()
            )))
        }
    };
    let body = state.files.read(&key).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// A single `Range: bytes=…` against a file of `size` bytes: `Ok(None)` means serve
/// the whole file (no header, several ranges, or another unit); `Err` means 416.
fn byte_range(req: &HttpRequest, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    match req.headers().get(header::RANGE).map(|v| v.to_str()) {
        None => Ok(None),
        // Not text: not a range this server understands, so it is ignored.
        Some(Err(_)) => Ok(None),
        Some(Ok(value)) => parse_byte_range(value, size),
    }
}

/// RFC 9110 §14.1.2 for one `bytes=` range set against `size` bytes, in integers that
/// cannot wrap: a last position at or past the end (however large, even beyond
/// `u64`) means "to the end", a suffix longer than the file means the whole file, a
/// first position at or past the end (or a suffix of 0) is unsatisfiable (416), and so
/// is a range that is not one (`5-3`, `abc`, signs, spaces inside numbers): RFC 9110
/// lets a server reject invalid ranges with 416. Several ranges or another unit: the
/// whole file (a server may ignore Range).
///
/// actix-web's typed [`ByteRangeSpec`] holds the range and decides what of the file it
/// covers; its `Range` header parser is not used, because it reads what the tests pin
/// otherwise (`byte_ranges_follow_rfc_9110_without_wrapping`): it drops an invalid
/// range of a set without a word, takes `+1` as a position (`u64::from_str` allows a
/// sign), and refuses a position past `u64`, which RFC 9110 allows to be any length.
fn parse_byte_range(value: &str, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let spec = match (a.trim(), b.trim()) {
        ("", "") => return Err(()),
        // bytes=-N: the last N bytes
        ("", n) => header::ByteRangeSpec::Last(position(n)?),
        (first, "") => header::ByteRangeSpec::From(position(first)?),
        (first, last) => {
            let (first, last) = (position(first)?, position(last)?);
            if last < first {
                return Err(());
            }
            header::ByteRangeSpec::FromTo(first, last)
        }
    };
    // Inclusive, and `last` is below `size`, so `last + 1` cannot wrap.
    let (first, last) = spec.to_satisfiable_range(size).ok_or(())?;
    Ok(Some(first..last + 1))
}

/// A byte position: ASCII digits only (no sign, no space); a value past `u64` is
/// `u64::MAX`, which is past the end of any file.
fn position(digits: &str) -> Result<u64, ()> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    Ok(digits.parse().unwrap_or(u64::MAX))
}

#[utoipa::path(
    get,
    path = "/v1/exports/{id}/parts/{n}",
    operation_id = "download_part",
    tag = "exports",
    summary = "Download one part of an export",
    params(
        ("id" = String, Path, description = "The export id (32 hex digits)", pattern = "^[0-9a-f]{32}$"),
        ("n" = u32, Path, description = "Part number, from 1"),
        ("Range" = Option<String>, Header, description = "bytes=START-END (one range)"),
        ("If-None-Match" = Option<String>, Header),
        ("If-Range" = Option<String>, Header)
    ),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "The file", content(("text/csv"), ("text/tab-separated-values"), ("application/x-ndjson"), ("application/json"), ("application/vnd.apache.parquet"), ("application/gzip"), ("application/zstd"), ("application/octet-stream")), headers(("ETag" = String), ("Content-Disposition" = String))),
        (status = 206, description = "A byte range of the file", content(("text/csv"), ("text/tab-separated-values"), ("application/x-ndjson"), ("application/json"), ("application/vnd.apache.parquet"), ("application/gzip"), ("application/zstd"), ("application/octet-stream")), headers(("Content-Range" = String))),
        (status = 302, description = "A presigned URL of the object store (when enabled)", headers(("Location" = String))),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "No such export or part"),
        (status = 410, description = "The export expired"),
        (status = 416, description = "The range is not satisfiable"),
        crate::openapi::V1Errors,
    )
)]
pub async fn part(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &caller, param(&req, "id")).await?;
    let raw_n = param(&req, "n");
    let n: u32 = raw_n
        .parse()
        .map_err(|_| ApiError::not_found(format!("part {raw_n} of export {}", job.id)))?;
    if job.status == JobStatus::Expired {
        return Err(ApiError::Gone(format!("export {} has expired", job.id)));
    }
    let part = job
        .parts
        .iter()
        .find(|p| p.n == n)
        .ok_or_else(|| ApiError::not_found(format!("part {n} of export {}", job.id)))?;
    let etag = format!("\"{}\"", part.sha256);
    // If-Range below keeps the strong comparison.
    if super::if_none_match(&req, &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    let file = part.key.rsplit('/').next().unwrap_or("part");
    // Job ids are hex and part names are ours, so the file name needs no escaping.
    let filename = format!("{}-{file}", job.id);
    let content_type = files::content_type(&part.key);
    if state.downloads.presigned {
        let signed = state
            .files
            .presign(
                &part.key,
                state.downloads.presign_ttl,
                &filename,
                content_type,
            )
            .await?;
        if let Some(url) = signed {
            return Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, url.to_string()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish());
        }
    }
    let mut resp = HttpResponse::Ok();
    resp.content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header((header::ETAG, etag.clone()))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    // If-Range: the range applies only to the version the client already has, by the
    // strong comparison (RFC 9110 §13.1.5); a date never matches, as parts carry no
    // Last-Modified.
    let if_range_ok = !req.headers().contains_key(header::IF_RANGE)
        || matches!(
            <header::IfRange as header::Header>::parse(&req),
            Ok(header::IfRange::EntityTag(tag))
                if tag.strong_eq(&header::EntityTag::new_strong(part.sha256.clone()))
        );
    let range = if if_range_ok {
        byte_range(&req, part.bytes)
    } else {
        Ok(None)
    };
    match range {
        Err(()) => Ok(HttpResponse::RangeNotSatisfiable()
            .insert_header((header::CONTENT_RANGE, format!("bytes */{}", part.bytes)))
            .content_type("application/problem+json")
            .body(format!(
                "{{\"type\":\"/problems/range-not-satisfiable\",\"title\":\"Range not satisfiable\",\"status\":416,\"detail\":\"the file has {} bytes\"}}",
                part.bytes
            ))),
        Ok(Some(r)) => {
            let stream = state
                .files
                .open_range(&part.key, r.clone())
                .await?;
            Ok(resp
                .status(actix_web::http::StatusCode::PARTIAL_CONTENT)
                .insert_header((
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{}", r.start, r.end - 1, part.bytes),
                ))
                .no_chunking(r.end - r.start)
                .streaming(stream))
        }
        Ok(None) => {
            let (size, stream) = state
                .files
                .open(&part.key)
                .await?;
            Ok(resp.no_chunking(size).streaming(stream))
        }
    }
}

/// Removes an export's files at once: a queued or running export is canceled first;
/// a succeeded one becomes `expired`. The state changes first, through the job store,
/// and the files go only after it: a worker finishing meanwhile cannot publish (its
/// succeed is fenced on `running`), and an export that finished first is expired
/// before its files go, so no client ever sees `succeeded` without files.
#[utoipa::path(
    delete,
    path = "/v1/exports/{id}",
    operation_id = "delete_export",
    tag = "exports",
    summary = "Remove an export's files now (cancels it first when it runs)",
    params(
        ("id" = String, Path, description = "The export id (32 hex digits)", pattern = "^[0-9a-f]{32}$")
    ),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "No such export (or not this token's)"),
        (status = 410, description = "The files are already gone"),
        crate::openapi::V1Errors,
    )
)]
pub async fn delete(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &caller, param(&req, "id")).await?;
    let before = job.status;
    logport_export::failpoint("delete_before_transition").await;
    let job = retire(&state, &caller, job).await?;
    let removed = service::delete_files(&state, &job).await?;
    tracing::info!(tenant = %caller.tenant, job_id = %job.id, status = job.status.as_str(), files = removed, "export deleted");
    activity::record(
        &state,
        &caller,
        service::export_changed(&job, "deleted", before, "deleted"),
    );
    Ok(HttpResponse::NoContent().finish())
}

/// Moves a job to a state whose files are dead, whatever a worker does meanwhile:
/// queued or running → `canceled`, succeeded → `expired`; failed, canceled and expired
/// stay. Each step is a conditional update; when one loses a race (the worker
/// succeeded between our read and our cancel, the janitor expired it), the job is read
/// again. Jobs move forward only, so this ends within a few steps.
async fn retire(
    state: &AppState,
    caller: &Caller,
    mut job: logport_queue::Job,
) -> Result<logport_queue::Job, ApiError> {
    let id = job.id.clone();
    let gone = || ApiError::not_found(format!("export {id}"));
    for _ in 0..8 {
        let now = state.clock.now_ms();
        match job.status {
            JobStatus::Queued | JobStatus::Running => {
                job = state
                    .jobs
                    .cancel(&caller.tenant, &id, now)
                    .await?
                    .ok_or_else(gone)?;
                if job.status == JobStatus::Canceled {
                    return Ok(job);
                }
            }
            JobStatus::Succeeded => {
                if state.jobs.mark_expired(&id, now).await? {
                    job.status = JobStatus::Expired;
                    return Ok(job);
                }
                job = state
                    .jobs
                    .get(&caller.tenant, &id)
                    .await?
                    .ok_or_else(gone)?;
            }
            JobStatus::Failed | JobStatus::Canceled | JobStatus::Expired => return Ok(job),
        }
    }
    Err(ApiError::Unavailable {
        detail: format!("export {id} kept changing state; try again"),
        retry_after: 1,
    })
}

#[utoipa::path(
    post,
    path = "/v1/exports/evaluate",
    operation_id = "evaluate_export",
    tag = "exports",
    summary = "Estimate an export without queuing it",
    request_body(content = logport_catalog::ExportRequest, content_type = "application/json"),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "The estimate", body = crate::openapi::schemas::Evaluation),
        (status = 400, description = "Malformed query string, header or body"),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "Unknown slice"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "Unsupported Content-Encoding or Content-Type"),
        (status = 422, description = "Well-formed but not acceptable: unknown field, bad date, filter or value"),
        (status = 504, description = "The estimate took longer than LOGPORT_QUERY_TIMEOUT"),
        crate::openapi::V1Errors,
    )
)]
pub async fn evaluate(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (_, spec) = read_request(&req, payload, &state, &caller).await?;
    // Validated above; the range is checked before anything is counted, so a request
    // over ten years costs no query.
    if let Some(quota) = service::check_range(&state, &spec) {
        return Ok(HttpResponse::Ok().json(json!({
            "possible": false,
            "estimated_rows": null,
            "estimated_bytes": null,
            "reason": evaluation_reason(&quota),
        })));
    }
    let (rows, bytes) = service::estimate(&state, &caller.tenant, &spec).await?;
    let refused = match service::check_rows(&state, rows) {
        Some(quota) => Some(quota),
        None => service::part_cap(&state, &spec, rows).await?,
    };
    Ok(HttpResponse::Ok().json(json!({
        "possible": refused.is_none(),
        "estimated_rows": rows,
        "estimated_bytes": bytes,
        "reason": refused.as_ref().map(evaluation_reason),
    })))
}

/// Why an export is not possible, as evaluate says it.
fn evaluation_reason(quota: &Quota) -> String {
    match quota {
        Quota::RangeDays { days, max } => {
            format!("the date range covers {days} days; at most {max} are allowed")
        }
        Quota::Rows { rows, max } => {
            format!("{rows} rows match; at most {max} may be exported at once")
        }
        other => other.detail(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/logs/{slice}/preview",
    operation_id = "preview",
    tag = "exports",
    summary = "The newest matching rows, synchronously (at most 1,000)",
    params(
        ("slice" = String, Path, description = "A slice of GET /v1/slices")
    ),
    request_body(content = logport_catalog::ExportRequest, content_type = "application/json", description = "An export request; `slice` may be left out (the path's) and `limit` is at most 1,000 (default 100)"),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "The rows", body = crate::openapi::schemas::Preview),
        (status = 400, description = "Malformed query string, header or body"),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "Unknown slice"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "Unsupported Content-Encoding or Content-Type"),
        (status = 422, description = "Well-formed but not acceptable: unknown field, bad date, filter or value"),
        (status = 504, description = "The preview took longer than LOGPORT_PREVIEW_TIMEOUT"),
        crate::openapi::V1Errors,
    )
)]
pub async fn preview(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let name = param(&req, "slice").to_string();
    let body = read_body(&req, payload, state.limits.json_max_bytes).await?;
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(None, format!("the body is not valid JSON: {e}")))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request(None, "the body must be a JSON object"))?;
    match obj.get("slice") {
        None => {
            obj.insert("slice".into(), json!(name));
        }
        Some(s) if s == &json!(name) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "slice",
                "the body's slice differs from the path's",
            ))
        }
    }
    let request = ExportRequest::from_json(value.to_string().as_bytes())?;
    let spec = request.validate(&state.catalog)?;
    check_access(&caller, &spec)?;
    let limit = spec.limit.unwrap_or(100);
    if limit > MAX_PREVIEW_ROWS {
        return Err(ApiError::invalid(
            "limit",
            format!("a preview returns at most {MAX_PREVIEW_ROWS} rows"),
        ));
    }
    let slice = state
        .catalog
        .slice(&spec.slice)
        .ok_or_else(|| ApiError::UnknownSlice(spec.slice.clone()))?;
    let sel = state.store.select(slice, &caller.tenant, &spec);
    // ClickHouse stops the query itself after the timeout (whole seconds); the store's
    // own deadline also covers a server that does not answer at all, and a client that
    // goes away kills it. Either way the client gets a 504 that says what to do.
    let timeout = state.limits.preview_timeout;
    let bounds = Bounds::request(timeout);
    let max_bytes = state.limits.preview_max_bytes;
    let rows = match state.store.preview(&sel, limit, &bounds, max_bytes).await {
        Ok(rows) => rows,
        Err(e) if e.is_timeout() => {
            tracing::info!(tenant = %caller.tenant, slice = %spec.slice, "preview timed out");
            return Err(ApiError::Timeout(format!(
                "the preview did not finish within {timeout:?}: narrow the date range or the \
                 filters, ask for fewer rows, or run an export (exports have no time limit)"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if rows.truncated {
        tracing::info!(tenant = %caller.tenant, slice = %spec.slice, rows = rows.rows, max_bytes, "preview cut at its byte limit");
    }
    // ClickHouse's records, as they came, are the items of `data`: the answer is
    // assembled around them, never parsed into values and written again.
    let head = serde_json::to_vec(&json!({
        "slice": spec.slice,
        "fields": spec.fields,
        "rows": rows.rows,
        "truncated": rows.truncated,
    }))
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    // `{…}` becomes `{…,"data":[` + records + `]}`.
    let mut prefix = head;
    prefix.pop();
    prefix.extend_from_slice(b",\"data\":[");
    let items = rows.into_array_items();
    let chunks = [Bytes::from(prefix), items, Bytes::from_static(b"]}")];
    let len = chunks.iter().map(|c| c.len() as u64).sum();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .no_chunking(len)
        .streaming(futures::stream::iter(
            chunks.map(Ok::<_, std::convert::Infallible>),
        )))
}

#[cfg(test)]
mod tests {
    use super::parse_byte_range;

    #[test]
    fn byte_ranges_follow_rfc_9110_without_wrapping() {
        let size = 100;
        for (header, want) in [
            ("bytes=0-9", 0..10),
            ("bytes=10-", 10..100),
            ("bytes=-5", 95..100),
            ("bytes=99-99", 99..100),
            // A last position at or past the end: up to the end, whatever its size.
            ("bytes=0-18446744073709551615", 0..100),
            ("bytes=0-18446744073709551614", 0..100),
            ("bytes=5-99999999999999999999999999", 5..100),
            // A suffix longer than the file: the whole file.
            ("bytes=-18446744073709551615", 0..100),
            ("bytes=-99999999999999999999999999", 0..100),
            (" bytes=1-2 ", 1..3),
        ] {
            assert_eq!(parse_byte_range(header, size), Ok(Some(want)), "{header}");
        }
        // Unsatisfiable or invalid: 416.
        for header in [
            "bytes=100-",
            "bytes=18446744073709551615-",
            "bytes=18446744073709551615-18446744073709551615",
            "bytes=99999999999999999999999999-",
            "bytes=-0",
            "bytes=5-3",
            "bytes=-",
            "bytes=",
            "bytes=abc",
            "bytes=1-x",
            "bytes=+1-2",
            "bytes=-+5",
            "bytes=1 0-20",
            "bytes=0-1-2",
        ] {
            assert_eq!(parse_byte_range(header, size), Err(()), "{header}");
        }
        // Several ranges or another unit: the whole file.
        for header in ["bytes=0-1,4-5", "items=0-3", "0-5"] {
            assert_eq!(parse_byte_range(header, size), Ok(None), "{header}");
        }
        // An empty file has no satisfiable range.
        assert_eq!(parse_byte_range("bytes=0-", 0), Err(()));
        assert_eq!(parse_byte_range("bytes=-5", 0), Err(()));
        assert_eq!(
            parse_byte_range("bytes=0-18446744073709551615", u64::MAX),
            Ok(Some(0..u64::MAX))
        );
    }
}
