//! `POST /v1/ingest/{slice}`: NDJSON or CSV in, committed rows out.
//!
//! Every record is validated against the catalog before anything is written. Strict
//! mode (the default) rejects the whole batch if any record is bad, so a client can fix
//! and resend it; `?on_error=skip` stores the good records and reports the bad ones.
//! All rows of a request share one `received_time`, land in one partition and are
//! written by one INSERT (possibly coalesced with other small requests, see
//! `logport_store::inserter`): all or nothing. The answer comes only after ClickHouse
//! has committed the rows.
//!
//! Retries add nothing twice. Every row is stored once per event
//! (`logport_store::insert`: the slice's dedup key — `app_id`, `event_time`, the
//! sort-key fields, `event_id`): a retried batch, a re-sent window that overlaps
//! stored rows, or a batch whose first attempt's answer was lost stores only the
//! rows not stored yet. With an `Idempotency-Key`, generated event ids derive from
//! (tenant, key, line), so a retry carries the same ids, and the job store keeps the
//! answer (for `LOGPORT_INGEST_KEY_TTL`): a retry of a committed request — on any
//! replica — gets it back with `duplicate: true` without touching ClickHouse, and the
//! key reused for a different body is refused with 409.
//!
//! Admission (`crate::admission`): a request is charged for the memory it holds as it
//! comes to hold it — the body as it arrives, the decoded text, the column block as
//! lines are encoded — and answered 413, 503 or 408 (too slow a body) before anything
//! is written when it may not hold more.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use logport_catalog::ingest::{row_from_csv, CsvHeader, LineEncoder, Row, RowContext, RowSink};
use logport_catalog::{time, Slice, Value};
use logport_queue::{IngestKey, KeyedIngest};
use logport_store::{IngestBatch, IngestBlock, SubmitError};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{idempotency_key, param, read_ingest_body};
use crate::activity::{self, Entry};
use crate::admission::{self, BlockMeter, Charge};
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

#[utoipa::path(
    post,
    path = "/v1/ingest/{slice}",
    operation_id = "ingest",
    tag = "ingest",
    summary = "Store events: NDJSON (one JSON object per line) or CSV with a header row",
    description = "Needs the ingest scope (the activity slice: admin). Strict by default: one bad record rejects the batch with 422 and the line numbers. The answer comes after ClickHouse committed the rows.",
    params(
        ("slice" = String, Path, description = "A slice of GET /v1/slices"),
        ("on_error" = Option<String>, Query, description = "reject (default): one bad record rejects the batch; skip: store the good ones", pattern = "^(reject|skip)$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters: a retry with the same key stores nothing twice"),
        ("Content-Encoding" = Option<String>, Header, description = "gzip, x-gzip or zstd (or none)")
    ),
    request_body(description = "The events: `tenant_id` and `received_time` come from the server; `event_id` is generated when absent. Every row's app_id must be one of the token's apps.", content((String = "application/x-ndjson"), (String = "text/csv"))),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "Committed in ClickHouse (or a recognised repeat)", body = crate::openapi::schemas::IngestResult),
        (status = 400, description = "Malformed query string, header or body"),
        (status = 403, description = "The token lacks the scope, the slice (activity needs admin) or the app"),
        (status = 404, description = "Unknown slice"),
        (status = 409, description = "A request with this Idempotency-Key is being handled"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "Unsupported Content-Encoding or Content-Type"),
        (status = 422, description = "Bad records (with their line numbers); nothing was stored"),
        (status = 401, description = "Missing, unknown, revoked or expired token"),
        (status = 408, description = "The body arrived slower than the minimum rate; nothing was stored"),
        (status = 429, description = "The token's request rate is used up (Retry-After), or a quota"),
        (status = 503, description = "A backend is unavailable, or ingest memory is held by other requests; retry after Retry-After"),
    )
)]
pub async fn ingest(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (slice, skip_bad) = target(&req, &caller, &state)?;
    let csv = is_csv(&req)?;
    let key = idempotency_key(&req)?;

    // Admission (crate::admission): the request is charged for the memory it holds as
    // it comes to hold it; first for its parsing state, before its body is read.
    let mut charge = state.ingest_budget.charge(&caller.tenant);
    charge.grow(admission::REQUEST_BASE)?;
    let wire = read_ingest_body(
        &req,
        payload,
        state.limits.ingest_max_bytes,
        &state.limits.ingest_pace,
        &mut charge,
    )
    .await?;
    let now_ms = state.clock.now_ms();
    let parse = Parse {
        slice: slice.clone(),
        tenant: caller.tenant.clone(),
        apps: caller.apps.clone(),
        key: key.clone(),
        csv,
        skip_bad,
        now_ms,
    };
    // `held`: the block stays charged until the request answers (it is held until
    // ClickHouse committed it).
    let (mut batch, held) = parse.run(wire, state.limits.clone(), charge).await?;
    refuse_bad(&mut batch, skip_bad)?;

    let ledger = match (key, batch.digest.take()) {
        (Some(key), Some(digest)) => Some(IngestKey {
            tenant: caller.tenant.clone(),
            slice: slice.name.clone(),
            key,
            digest,
        }),
        _ => None,
    };
    if let Some(lk) = &ledger {
        if let Some(answer) = claim_key(&state, lk, now_ms).await? {
            tracing::info!(tenant = %caller.tenant, slice = %slice.name, "ingest request repeats a committed one; answered from the job store");
            return Ok(HttpResponse::Ok().json(answer));
        }
    }

    // Once here the request runs to its end even if its client goes away (the route
    // is wrapped in `to_the_end`): the batch is committed and its answer recorded.
    let answer = commit(&state, &caller, &slice, batch, ledger).await?;
    drop(held);
    Ok(HttpResponse::Ok().json(answer))
}

/// The slice a request writes to (checked against the caller's scope and slices) and
/// whether it skips bad records (`?on_error=skip`).
fn target(req: &HttpRequest, caller: &Caller, state: &AppState) -> Result<(Slice, bool), ApiError> {
    caller.require(logport_queue::Scope::Ingest)?;
    let name = param(req, "slice");
    let slice = state
        .catalog
        .slice(name)
        .ok_or_else(|| ApiError::UnknownSlice(name.to_string()))?
        .clone();
    caller.require_slice(&slice.name)?;
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
    Ok((slice, skip_bad))
}

/// What decoding and validating one request's body needs, moved to a blocking thread.
struct Parse {
    slice: Slice,
    tenant: String,
    apps: Option<Vec<u64>>,
    key: Option<String>,
    csv: bool,
    skip_bad: bool,
    now_ms: i64,
}

impl Parse {
    /// Decodes the body and validates every record into one block, on a blocking
    /// thread; answers the batch and the charge that still holds its block.
    async fn run(
        self,
        wire: super::WireBody,
        limits: ApiLimits,
        mut charge: Charge,
    ) -> Result<(Encoded, Charge), ApiError> {
        web::block(move || {
            let body = wire.decode(limits.ingest_max_bytes, &mut charge)?;
            let block = IngestBlock::new(&self.slice, &self.tenant, self.now_ms)?;
            let seed = self
                .key
                .as_ref()
                .map(|k| format!("{}\0{}\0{k}", self.tenant, self.slice.name));
            let ctx = block.context(seed.as_deref().map(str::as_bytes));
            let mut enc = Encoded::new(block.received_time());
            enc.allowed_apps = self.apps;
            if self.key.is_some() {
                enc.digest = Some(body_digest(self.csv, self.skip_bad, &body));
            }
            let enc = (enc, block);
            let encoded = if self.csv {
                encode_csv(enc, &self.slice, &body, &ctx, &limits, &mut charge)
            } else {
                encode_ndjson(enc, &self.slice, &body, &ctx, &limits, &mut charge)
            }?;
            let text = body.capacity();
            drop(body);
            charge.shrink(text);
            Ok::<_, ApiError>((encoded, charge))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("ingest worker: {e}")))?
    }
}

/// Strict mode's 422 for a batch with bad records, and the 422 for a body without
/// events.
fn refuse_bad(batch: &mut Encoded, skip_bad: bool) -> Result<(), ApiError> {
    if let Some(first) = batch.errors.first().filter(|_| !skip_bad) {
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
            errors: std::mem::take(&mut batch.errors),
        });
    }
    if batch.accepted == 0 && batch.errors.is_empty() {
        return Err(ApiError::Invalid {
            field: None,
            detail:
                "the body holds no events (send one JSON object per line, or CSV with a header row)"
                    .into(),
            errors: Vec::new(),
        });
    }
    Ok(())
}

/// Claims a keyed request's `Idempotency-Key` in the job store: the answer of the
/// committed request it repeats (marked `duplicate`), or `None` to go on and commit.
async fn claim_key(
    state: &AppState,
    lk: &IngestKey,
    now_ms: i64,
) -> Result<Option<serde_json::Value>, ApiError> {
    let expires = now_ms + state.ingest_key_ttl.as_millis() as i64;
    match state
        .ingest_keys
        .begin_keyed_ingest(lk, now_ms, expires)
        .await?
    {
        KeyedIngest::Conflict => Err(ApiError::Conflict(
            "this Idempotency-Key was used for a different body; send new events under a new key"
                .into(),
        )),
        KeyedIngest::Same {
            answer: Some(answer),
        } => {
            let mut answer: serde_json::Value = serde_json::from_str(&answer)
                .map_err(|e| ApiError::Internal(format!("stored ingest answer: {e}")))?;
            answer["duplicate"] = json!(true);
            Ok(Some(answer))
        }
        KeyedIngest::New | KeyedIngest::Same { answer: None } => Ok(None),
    }
}

/// Stores a validated batch, records the answer of a keyed request and the activity
/// row, and answers.
async fn commit(
    state: &AppState,
    caller: &Caller,
    slice: &Slice,
    mut batch: Encoded,
    ledger: Option<IngestKey>,
) -> Result<serde_json::Value, ApiError> {
    let received = batch.received;
    if batch.accepted > 0 {
        state
            .inserter
            .insert(slice, std::mem::take(&mut batch.rows))
            .await
            .map_err(|e| match e {
                SubmitError::Busy => ApiError::Unavailable {
                    detail:
                        "too many ingest requests are waiting for the event store; retry shortly"
                            .into(),
                    retry_after: 1,
                },
                SubmitError::Store(e) => e.into(),
            })?;
        tracing::info!(tenant = %caller.tenant, slice = %slice.name, rows = batch.accepted, rejected = batch.rejected, "ingest batch committed");
    }
    let answer = json!({
        "accepted": batch.accepted,
        "rejected": batch.rejected,
        "errors": batch.errors,
        "duplicate": false,
        "received_time": time::format_rfc3339(i64::from(received)),
    });
    if let Some(lk) = &ledger {
        // The rows are stored: a failure here only costs a retry the shortcut.
        if let Err(e) = state
            .ingest_keys
            .finish_keyed_ingest(lk, &answer.to_string())
            .await
        {
            tracing::warn!(tenant = %caller.tenant, slice = %slice.name, error = %e, "cannot record the answer of a keyed ingest request");
        }
    }
    activity::record(
        state,
        caller,
        Entry {
            action: "imported",
            entity_type: "ingest_batch",
            entity_id: ledger
                .map(|lk| lk.key)
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            entity_name: slice.name.clone(),
            app_id: if batch.mixed_apps {
                0
            } else {
                batch.first_app.unwrap_or(0)
            },
            changes: json!({
                "accepted": batch.accepted,
                "rejected": batch.rejected,
            }),
        },
    );
    Ok(answer)
}

/// What identifies a keyed request's content: its format, its error mode and its
/// (decompressed) body.
fn body_digest(csv: bool, skip_bad: bool, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update([u8::from(csv), u8::from(skip_bad)]);
    h.update(body);
    hex::encode(h.finalize())
}

/// `Content-Type: text/csv` selects CSV; JSON types (or none) select NDJSON.
fn is_csv(req: &HttpRequest) -> Result<bool, ApiError> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(false);
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    match mime {
        "text/csv" | "application/csv" => Ok(true),
        ""
        | "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/json"
        | "text/plain"
        | "application/octet-stream"
        | "application/x-www-form-urlencoded" => Ok(false),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type `{other}` is not supported; send application/x-ndjson or text/csv"
        ))),
    }
}

struct Encoded {
    rows: IngestBatch,
    /// The rows' `received_time` (Unix seconds).
    received: u32,
    accepted: u64,
    rejected: u64,
    errors: Vec<LineProblem>,
    /// Earliest and latest `event_time` of the accepted rows.
    event_times: (u32, u32),
    /// [`body_digest`], for a request with an `Idempotency-Key`.
    digest: Option<String>,
    /// The accepted rows' event ids, while encoding: to tell whether any repeats.
    event_ids: Vec<u128>,
    /// No event id appears twice among the accepted rows.
    distinct_ids: bool,
    /// The apps the token may write (`None`: any).
    allowed_apps: Option<Vec<u64>>,
    /// The app of the first accepted row, and whether others differ.
    first_app: Option<u64>,
    mixed_apps: bool,
}

impl Encoded {
    fn new(received: u32) -> Encoded {
        Encoded {
            rows: IngestBatch::default(),
            received,
            accepted: 0,
            rejected: 0,
            errors: Vec::new(),
            event_times: (u32::MAX, 0),
            digest: None,
            event_ids: Vec::new(),
            distinct_ids: false,
            allowed_apps: None,
            first_app: None,
            mixed_apps: false,
        }
    }

    fn check_room(&self, limits: &ApiLimits) -> Result<(), ApiError> {
        if (self.accepted + self.rejected) as usize >= limits.ingest_max_rows {
            return Err(ApiError::TooLarge(format!(
                "a request may carry at most {} events; split the batch",
                limits.ingest_max_rows
            )));
        }
        Ok(())
    }

    fn take(
        &mut self,
        slice: &Slice,
        line: u64,
        parsed: Result<Row, logport_catalog::ingest::LineError>,
        block: &mut IngestBlock,
    ) -> Result<(), ApiError> {
        match parsed {
            Ok(row) => {
                block
                    .push_row(slice, &row.values)
                    .map_err(ApiError::Internal)?;
                self.accept(line, &row.values)
            }
            Err(e) => {
                self.reject(line, e.field, e.detail);
                Ok(())
            }
        }
    }

    /// Counts a row already appended to the output; `head` holds its first values.
    fn accept(&mut self, line: u64, head: &[Value]) -> Result<(), ApiError> {
        // Common fields come first in catalog order: app_id is the first value.
        let app = match head.first() {
            Some(Value::UInt(a)) => *a,
            _ => 0,
        };
        if let Some(allowed) = &self.allowed_apps {
            if !allowed.contains(&app) {
                // Not a bad line but a request the token may not make: nothing
                // of it is stored, whatever `on_error` says.
                return Err(ApiError::Forbidden(format!(
                    "line {line}: this token may not write app_id {app}; it is \
                     limited to apps {allowed:?}; nothing was stored"
                )));
            }
        }
        match self.first_app {
            None => self.first_app = Some(app),
            Some(first) if first != app => self.mixed_apps = true,
            Some(_) => {}
        }
        // Common fields come first in catalog order: app_id, event_id, event_time.
        if let Some(Value::Uuid(id)) = head.get(1) {
            self.event_ids.push(id.as_u128());
        }
        if let Some(Value::DateTime(t)) = head.get(2) {
            self.event_times = (self.event_times.0.min(*t), self.event_times.1.max(*t));
        }
        self.accepted += 1;
        Ok(())
    }

    fn reject(&mut self, line: u64, field: Option<String>, detail: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_REPORTED {
            self.errors.push(LineProblem {
                line,
                field,
                detail,
            });
        }
    }

    fn finish(mut self, block: IngestBlock) -> Encoded {
        let mut ids = std::mem::take(&mut self.event_ids);
        ids.sort_unstable();
        self.distinct_ids = ids.windows(2).all(|w| w[0] != w[1]);
        self.rows = block.finish(self.event_times, self.distinct_ids);
        self
    }
}

fn encode_ndjson(
    (mut enc, mut block): (Encoded, IngestBlock),
    slice: &Slice,
    body: &[u8],
    ctx: &RowContext<'_>,
    limits: &ApiLimits,
    charge: &mut Charge,
) -> Result<Encoded, ApiError> {
    let mut lines = LineEncoder::<IngestBlock>::new(slice).map_err(ApiError::Internal)?;
    let mut meter = BlockMeter::new();
    let mut start = 0;
    let mut line = 0u64;
    while start <= body.len() {
        meter.check(
            &mut block,
            start,
            body.len(),
            limits.ingest_max_rows,
            charge,
        )?;
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        let raw = &body[start..end];
        start = end + 1;
        line += 1;
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if text.len() > limits.ingest_max_line_bytes {
            enc.reject(
                line,
                None,
                format!(
                    "the line is longer than {} bytes",
                    limits.ingest_max_line_bytes
                ),
            );
            continue;
        }
        enc.check_room(limits)?;
        match lines.encode(text, ctx, line, &mut block) {
            Ok(info) => enc.accept(line, &info.head)?,
            Err(e) => enc.reject(line, e.field, e.detail),
        }
    }
    meter.finish(&mut block, charge)?;
    Ok(enc.finish(block))
}

fn encode_csv(
    (mut enc, mut block): (Encoded, IngestBlock),
    slice: &Slice,
    body: &[u8],
    ctx: &RowContext<'_>,
    limits: &ApiLimits,
    charge: &mut Charge,
) -> Result<Encoded, ApiError> {
    let mut meter = BlockMeter::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut header: Option<CsvHeader> = None;
    let mut record = csv::ByteRecord::new();
    loop {
        let done = usize::try_from(reader.position().byte()).unwrap_or(usize::MAX);
        meter.check(&mut block, done, body.len(), limits.ingest_max_rows, charge)?;
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A broken quote or similar: the rest of the body cannot be framed.
                enc.reject(line, None, format!("malformed CSV: {e}"));
                break;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        let values: Result<Vec<&str>, _> = record.iter().map(std::str::from_utf8).collect();
        let Ok(values) = values else {
            enc.reject(line, None, "the record is not valid UTF-8".into());
            continue;
        };
        let Some(h) = &header else {
            match CsvHeader::parse(slice, &values) {
                Ok(h) => header = Some(h),
                Err(e) => {
                    // Without a header no record can be read: reject the whole body.
                    return Err(ApiError::Invalid {
                        field: e.field.clone(),
                        detail: format!(
                            "line {line}: header row: {}; nothing was stored",
                            e.detail
                        ),
                        errors: vec![LineProblem {
                            line,
                            field: e.field,
                            detail: e.detail,
                        }],
                    });
                }
            }
            continue;
        };
        if record.as_slice().len() > limits.ingest_max_line_bytes {
            enc.reject(
                line,
                None,
                format!(
                    "the record is longer than {} bytes",
                    limits.ingest_max_line_bytes
                ),
            );
            continue;
        }
        enc.check_room(limits)?;
        let parsed = row_from_csv(slice, h, &values, ctx, line);
        enc.take(slice, line, parsed, &mut block)?;
    }
    meter.finish(&mut block, charge)?;
    Ok(enc.finish(block))
}
