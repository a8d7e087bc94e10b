//! `POST /v1/ingest/{slice}`: NDJSON in, one atomic INSERT out.
//!
//! Every line is validated against the catalog before anything is written. Strict
//! mode (the default) rejects the whole batch if any line is bad, so a client can fix
//! and resend it without creating duplicates; `?on_error=skip` stores the good lines
//! and reports the bad ones. All rows of a request share one `received_time`, so they
//! land in one partition, and the INSERT is all-or-nothing. The answer comes only
//! after ClickHouse has committed the rows.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use logport_catalog::{ingest::parse_line, time, Slice};
use logport_store::Store;
use serde::Deserialize;
use serde_json::json;

use super::{param, read_body};
use crate::auth::Caller;
use crate::error::{ApiError, LineProblem};
use crate::{ApiLimits, AppState};

/// Most line errors reported in one answer.
const MAX_REPORTED: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestParams {
    #[serde(default)]
    on_error: Option<String>,
}

pub async fn ingest(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = param(&req, "slice");
    let slice = state
        .catalog
        .slice(name)
        .ok_or_else(|| ApiError::UnknownSlice(name.to_string()))?
        .clone();
    let params = web::Query::<IngestParams>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(None, format!("bad query string: {e}")))?;
    let skip_bad = match params.on_error.as_deref() {
        None | Some("reject") => false,
        Some("skip") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                Some("on_error"),
                format!("on_error must be reject or skip, not `{other}`"),
            ))
        }
    };
    let body = read_body(&req, payload, state.limits.ingest_max_bytes).await?;
    let received = (logport_queue::now_ms() / 1000) as u32;
    let limits = state.limits.clone();
    let tenant = caller.tenant.clone();
    let slice_for_parse = slice.clone();
    let batch =
        web::block(move || encode_batch(&slice_for_parse, &tenant, &body, received, &limits))
            .await
            .map_err(|e| ApiError::Internal(format!("ingest worker: {e}")))??;

    if !batch.errors.is_empty() && !skip_bad {
        let first = &batch.errors[0];
        let more = batch.rejected.saturating_sub(1);
        return Err(ApiError::Invalid {
            field: first.field.clone(),
            detail: format!(
                "line {}: {}{}; nothing was stored",
                first.line,
                first.detail,
                if more > 0 {
                    format!(" (and {more} more bad lines)")
                } else {
                    String::new()
                }
            ),
            errors: batch.errors,
        });
    }
    if batch.accepted == 0 && batch.errors.is_empty() {
        return Err(ApiError::Invalid {
            field: None,
            detail: "the body holds no events (send one JSON object per line)".into(),
            errors: Vec::new(),
        });
    }
    state.store.insert_rowbinary(&slice, batch.data).await?;
    tracing::info!(tenant = %caller.tenant, slice = %slice.name, rows = batch.accepted, rejected = batch.rejected, "ingest batch committed");
    Ok(HttpResponse::Ok().json(json!({
        "accepted": batch.accepted,
        "rejected": batch.rejected,
        "errors": batch.errors,
        "received_time": time::format_rfc3339(i64::from(received)),
    })))
}

struct Batch {
    data: Bytes,
    accepted: u64,
    rejected: u64,
    errors: Vec<LineProblem>,
}

fn encode_batch(
    slice: &Slice,
    tenant: &str,
    body: &[u8],
    received: u32,
    limits: &ApiLimits,
) -> Result<Batch, ApiError> {
    let mut data = Vec::with_capacity(body.len());
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut errors = Vec::new();
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.len() > limits.ingest_max_line_bytes {
            rejected += 1;
            report(
                &mut errors,
                line_no,
                None,
                format!(
                    "the line is longer than {} bytes",
                    limits.ingest_max_line_bytes
                ),
            );
            continue;
        }
        if (accepted + rejected) as usize >= limits.ingest_max_rows {
            return Err(ApiError::TooLarge(format!(
                "a request may carry at most {} events; split the batch",
                limits.ingest_max_rows
            )));
        }
        match parse_line(slice, line, received) {
            Ok(row) => {
                Store::encode_row(slice, tenant, &row, &mut data)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                accepted += 1;
            }
            Err(e) => {
                rejected += 1;
                report(&mut errors, line_no, e.field, e.detail);
            }
        }
    }
    Ok(Batch {
        data: Bytes::from(data),
        accepted,
        rejected,
        errors,
    })
}

fn report(errors: &mut Vec<LineProblem>, line: u64, field: Option<String>, detail: String) {
    if errors.len() < MAX_REPORTED {
        errors.push(LineProblem {
            line,
            field,
            detail,
        });
    }
}
