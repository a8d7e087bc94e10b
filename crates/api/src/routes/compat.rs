//! What the two public Logs API protocols ([`super::appmetrica`], [`super::metrica`])
//! share: who is calling, their query strings, result size estimates, and streaming a
//! finished job's files.
//!
//! Both protocols sit on the same catalog, job queue and object store as `/v1`: a
//! protocol request becomes an ordinary export job (visible in `GET /v1/exports`), and
//! its answer is read from that job. Only the wire format differs, including errors:
//! these routes never answer problem+json, because existing clients parse their own
//! protocol's bodies.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use logport_catalog::{ExportSpec, Format};
use logport_export::{files, Files, FilesError};
use logport_queue::Part;
use logport_store::{Bounds, StoreError};

use crate::auth::Caller;
use crate::AppState;

pub(super) use crate::auth::AuthFailure;

/// The caller, from `Authorization: OAuth <token>` or `Bearer <token>`, or — as older
/// AppMetrica and Metrica clients send it — an `oauth_token` query parameter when
/// there is no header. Charges the token's rate limit.
pub(super) async fn caller(
    req: &HttpRequest,
    state: &AppState,
    params: &Params,
) -> Result<Caller, AuthFailure> {
    let token = if req.headers().contains_key(header::AUTHORIZATION) {
        crate::auth::bearer(req)
            .map_err(|e| AuthFailure::Invalid(e.to_string()))?
            .to_string()
    } else {
        params
            .first("oauth_token")
            .map(str::to_string)
            .ok_or(AuthFailure::Missing)?
    };
    state.tokens.caller(req, &token, state.clock.now_ms()).await
}

/// A query string as the list of its pairs: both protocols repeat parameters
/// (`fields=a&fields=b`), which a struct would not keep.
pub(super) struct Params(Vec<(String, String)>);

/// Parameters that carry credentials, never data.
pub(super) const AUTH_PARAMS: [&str; 1] = ["oauth_token"];

impl Params {
    pub(super) fn parse(req: &HttpRequest) -> Result<Params, String> {
        web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(|q| Params(q.into_inner()))
            .map_err(|e| format!("the query string is malformed: {e}"))
    }

    /// The first non-empty value of a parameter.
    pub(super) fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    /// Every value of a parameter given as a comma-separated list, repeated, or both.
    pub(super) fn list(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    pub(super) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Rows and bytes an export would produce: a count of the selection times the average
/// uncompressed row size of its columns (what `POST /v1/exports/evaluate` answers),
/// plus what the text format adds to every row (JSON's keys and quotes, CSV's quotes
/// and separators). An estimate: the file's real size is checked again when served.
pub(super) async fn estimate(
    state: &AppState,
    tenant: &str,
    spec: &ExportSpec,
) -> Result<(u64, u64), StoreError> {
    let rows = count(state, tenant, spec).await?;
    Ok((rows, bytes_of(state, spec, rows).await?))
}

/// Rows the export selects now (capped by its `limit`). Bounded like every query of a
/// request: `LOGPORT_QUERY_TIMEOUT`, and killed if the request ends first.
pub(super) async fn count(
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
pub(super) async fn bytes_of(
    state: &AppState,
    spec: &ExportSpec,
    rows: u64,
) -> Result<u64, StoreError> {
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

/// Days an export covers, a started day counting whole.
pub(super) fn days_covered(spec: &ExportSpec) -> i64 {
    (spec.until - spec.since + 86_399).div_euclid(86_400)
}

/// A 200 streaming the given parts one after the other, as one body. Every part is
/// opened before the answer starts, so a missing file is an error, not a cut body.
/// (Compression for `Accept-Encoding: gzip` is the routes' `Compress` middleware.)
pub(super) async fn stream_parts(
    files: &Files,
    parts: &[&Part],
    content_type: &'static str,
) -> Result<HttpResponse, FilesError> {
    let mut streams = Vec::with_capacity(parts.len());
    let mut total = 0;
    for p in parts {
        let (size, stream) = files.open(&p.key).await?;
        total += size;
        streams.push(stream);
    }
    let body = futures::stream::iter(streams).flatten();
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "private"))
        .no_chunking(total)
        .streaming(body))
}

/// Deletes a job's files (every attempt).
pub(super) async fn delete_files(
    files: &Files,
    tenant: &str,
    job_id: &str,
) -> Result<u64, FilesError> {
    files
        .delete_prefix(&files::job_prefix(tenant, job_id))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_come_comma_separated_or_repeated() {
        let p = Params(vec![
            ("fields".into(), "a, b".into()),
            ("x".into(), "".into()),
            ("fields".into(), "c".into()),
            ("fields".into(), ",".into()),
            ("x".into(), " 1 ".into()),
        ]);
        assert_eq!(p.list("fields"), ["a", "b", "c"]);
        assert_eq!(p.first("x"), Some("1"));
        assert_eq!(p.first("y"), None);
        assert!(p.list("y").is_empty());
    }
}
