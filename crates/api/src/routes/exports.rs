//! Export jobs: create (stored before the 202), poll, list, cancel, download; plus the
//! synchronous neighbours `evaluate` and `preview` that share the request body.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use logport_catalog::{ExportRequest, ExportSpec};
use logport_export::files;
use logport_queue::{Created, JobStatus, ListQuery, NewJob};
use serde::Deserialize;
use serde_json::json;

use super::{idempotency_key, param, read_body};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::views::job_view;
use crate::AppState;

/// Most rows a preview may return.
const MAX_PREVIEW_ROWS: u64 = 1000;

async fn read_request(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(ExportRequest, ExportSpec), ApiError> {
    let body = read_body(req, payload, state.limits.json_max_bytes).await?;
    let request = ExportRequest::from_json(&body)?;
    let spec = request.validate(&state.catalog, &state.spec_limits)?;
    Ok((request, spec))
}

pub async fn create(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let (request, spec) = read_request(&req, payload, &state).await?;
    check_quotas(&state, &caller, &spec).await?;
    let normalized = serde_json::to_value(request.normalized(&state.catalog))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let created = state
        .jobs
        .create(
            NewJob {
                tenant: caller.tenant.clone(),
                slice: spec.slice.clone(),
                request: normalized,
                idempotency_key: key,
                max_attempts: state.max_attempts,
                app_id: spec.app_id,
                fingerprint: None,
            },
            state.clock.now_ms(),
        )
        .await?;
    let job = created.job();
    let location = format!("/v1/exports/{}", job.id);
    let mut resp = match created {
        Created::New(_) => {
            state.wake.notify_one();
            tracing::info!(tenant = %caller.tenant, job_id = %job.id, slice = %job.slice, "export queued");
            HttpResponse::Accepted()
        }
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

/// The per-tenant limits a new export must fit.
async fn check_quotas(
    state: &AppState,
    caller: &Caller,
    spec: &ExportSpec,
) -> Result<(), ApiError> {
    let q = &state.quotas;
    let days = (spec.until - spec.since).div_euclid(86_400)
        + i64::from((spec.until - spec.since) % 86_400 != 0);
    if days > i64::from(q.max_range_days) {
        return Err(ApiError::TooMany {
            limit: "max_range_days",
            field: Some("date_until".into()),
            detail: format!(
                "an export may cover at most {} days; this one covers {days}: split it",
                q.max_range_days
            ),
            retry_after: 60,
        });
    }
    let queued = state.jobs.count_queued(&caller.tenant).await?;
    if queued >= q.max_queued_per_tenant {
        return Err(ApiError::TooMany {
            limit: "max_queued_per_tenant",
            field: None,
            detail: format!(
                "{queued} exports are already queued for this account (the limit is {}); \
                 wait until some finish",
                q.max_queued_per_tenant
            ),
            retry_after: 30,
        });
    }
    if let Some(max_rows) = q.max_rows_per_export {
        let slice = state
            .catalog
            .slice(&spec.slice)
            .ok_or_else(|| ApiError::UnknownSlice(spec.slice.clone()))?;
        let sel = state.store.select(slice, &caller.tenant, spec);
        let rows = state.store.count(&sel.count_sql()).await?;
        let rows = spec.limit.map_or(rows, |l| rows.min(l));
        if rows > max_rows {
            return Err(ApiError::TooMany {
                limit: "max_rows_per_export",
                field: None,
                detail: format!(
                    "this export would return {rows} rows; the limit is {max_rows}: \
                     narrow the date range or the filters, or set `limit`"
                ),
                retry_after: 60,
            });
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    slice: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
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

async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<logport_queue::Job, ApiError> {
    // Ids are 32 hex digits; anything else cannot exist, and is not sent to the store.
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found(format!("export {id}")));
    }
    state
        .jobs
        .get(&caller.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("export {id}")))
}

pub async fn get(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &caller, param(&req, "id")).await?;
    Ok(HttpResponse::Ok().json(job_view(&job)))
}

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
    let job = state
        .jobs
        .cancel(&caller.tenant, &job.id, state.clock.now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("export {}", job.id)))?;
    tracing::info!(tenant = %caller.tenant, job_id = %job.id, "export canceled");
    Ok(HttpResponse::Ok().json(job_view(&job)))
}

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
    let body = state.files.read(&key).await.map_err(|e| {
        if e.is_not_found() {
            ApiError::Gone(format!("the files of export {} are gone", job.id))
        } else {
            ApiError::Unavailable {
                detail: format!("object store: {e}"),
                retry_after: 5,
            }
        }
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

fn store_error(job: &str, e: logport_export::FilesError) -> ApiError {
    if e.is_not_found() {
        ApiError::Gone(format!("the files of export {job} are gone"))
    } else {
        ApiError::Unavailable {
            detail: format!("object store: {e}"),
            retry_after: 5,
        }
    }
}

/// A single `Range: bytes=…` against a file of `size` bytes: `Ok(None)` means serve
/// the whole file (no header, several ranges, or another unit); `Err` means 416.
fn byte_range(req: &HttpRequest, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(value) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            size.saturating_sub(n)..size
        }
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| ())?;
            let end = if b.is_empty() {
                size
            } else {
                let last: u64 = b.parse().map_err(|_| ())?;
                if last < start {
                    return Err(());
                }
                (last + 1).min(size)
            };
            start..end
        }
        (true, true) => return Err(()),
    };
    if range.start >= size || range.is_empty() {
        return Err(());
    }
    Ok(Some(range))
}

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
    if let Some(inm) = req.headers().get(header::IF_NONE_MATCH) {
        // If-None-Match uses the weak comparison (RFC 9110 §13.1.2): `W/"x"` matches
        // our strong `"x"`; If-Range below keeps the strong one.
        let matches = inm
            .to_str()
            .map(|v| {
                v.split(',').map(str::trim).any(|t| {
                    let t = t.strip_prefix("W/").unwrap_or(t);
                    t == etag || t == "*"
                })
            })
            .unwrap_or(false);
        if matches {
            return Ok(HttpResponse::NotModified()
                .insert_header((header::ETAG, etag))
                .finish());
        }
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
            .await
            .map_err(|e| store_error(&job.id, e))?;
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
    // If-Range: the range applies only to the version the client already has.
    let if_range_ok = req
        .headers()
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().map(|t| t.trim() == etag).unwrap_or(false));
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
                .await
                .map_err(|e| store_error(&job.id, e))?;
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
                .await
                .map_err(|e| store_error(&job.id, e))?;
            Ok(resp.no_chunking(size).streaming(stream))
        }
    }
}

/// Removes an export's files at once: a queued or running export is canceled first;
/// a succeeded one becomes `expired`.
pub async fn delete(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job = load(&state, &caller, param(&req, "id")).await?;
    let now = state.clock.now_ms();
    if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
        state.jobs.cancel(&caller.tenant, &job.id, now).await?;
    }
    let removed = state
        .files
        .delete_prefix(&files::job_prefix(&job.tenant, &job.id))
        .await
        .map_err(|e| store_error(&job.id, e))?;
    if job.status == JobStatus::Succeeded {
        state.jobs.mark_expired(&job.id, now).await?;
    }
    tracing::info!(tenant = %caller.tenant, job_id = %job.id, files = removed, "export deleted");
    Ok(HttpResponse::NoContent().finish())
}

pub async fn evaluate(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (_, spec) = read_request(&req, payload, &state).await?;
    let slice = state
        .catalog
        .slice(&spec.slice)
        .ok_or_else(|| ApiError::UnknownSlice(spec.slice.clone()))?;
    let sel = state.store.select(slice, &caller.tenant, &spec);
    let mut rows = state.store.count(&sel.count_sql()).await?;
    if let Some(limit) = spec.limit {
        rows = rows.min(limit);
    }
    let per_row = state.store.bytes_per_row(&spec.slice, &spec.fields).await?;
    let days = (spec.until - spec.since + 86_399).div_euclid(86_400);
    let reason = if days > i64::from(state.quotas.max_range_days) {
        Some(format!(
            "the date range covers {days} days; at most {} are allowed",
            state.quotas.max_range_days
        ))
    } else {
        match state.quotas.max_rows_per_export {
            Some(max) if rows > max => Some(format!(
                "{rows} rows match; at most {max} may be exported at once"
            )),
            _ => None,
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "possible": reason.is_none(),
        "estimated_rows": rows,
        "estimated_bytes": (per_row * rows as f64).round() as u64,
        "reason": reason,
    })))
}

pub async fn preview(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
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
    let spec = request.validate(&state.catalog, &state.spec_limits)?;
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
    let text = state
        .store
        .fetch_json_rows(
            &sel.preview_sql(limit),
            &[
                ("output_format_json_quote_64bit_integers", "0"),
                ("output_format_json_escape_forward_slashes", "0"),
                ("max_execution_time", "15"),
            ],
        )
        .await?;
    let rows: Vec<serde_json::Value> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::Internal(format!("preview rows: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({
        "slice": spec.slice,
        "fields": spec.fields,
        "rows": rows.len(),
        "data": rows,
    })))
}
