//! What the two public Logs API protocols ([`super::appmetrica`], [`super::metrica`])
//! share: who is calling, their query strings, their error type, and streaming a
//! finished job's files. (The export policy itself is [`crate::service`]'s.)
//!
//! Both protocols sit on the same catalog, job queue and object store as `/v1`: a
//! protocol request becomes an ordinary export job (visible in `GET /v1/exports`), and
//! its answer is read from that job. Only the wire format differs, including errors:
//! these routes never answer problem+json, because existing clients parse their own
//! protocol's bodies.

use std::marker::PhantomData;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use logport_export::{Files, FilesError};
use logport_queue::{Part, QueueError};
use logport_store::StoreError;

use crate::auth::Caller;
use crate::error::ApiError;
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

/// How one protocol writes its errors.
pub(crate) trait Wire: Sized + 'static {
    /// Its answer to a request without a token, or with one that is not known;
    /// `None` for the other failures, which `/v1` classifies.
    fn unauthenticated(f: &AuthFailure) -> Option<WireError<Self>>;
    /// The response of an error.
    fn render(e: &WireError<Self>) -> HttpResponse;
}

/// An error of a compat protocol `W`: a status, the protocol's error type (Metrica's
/// `error_type`; AppMetrica's text has none), a message and maybe `Retry-After`.
/// Failures of the backends reach it through [`ApiError`], the one place they are
/// classified, so both protocols answer them with the same status.
#[derive(Debug)]
pub struct WireError<W> {
    pub(super) status: StatusCode,
    pub(super) error_type: &'static str,
    pub(super) message: String,
    pub(super) retry_after: Option<u32>,
    wire: PhantomData<W>,
}

impl<W: Wire> WireError<W> {
    /// An error of this status, of the type the status implies.
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        WireError {
            status,
            error_type: error_type_of(status),
            message: message.into(),
            retry_after: None,
            wire: PhantomData,
        }
    }

    /// 400 with the protocol's sentence.
    pub(super) fn bad(message: impl Into<String>) -> Self {
        WireError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn typed(mut self, error_type: &'static str) -> Self {
        self.error_type = error_type;
        self
    }

    pub(super) fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A request that is not authenticated, in the protocol's words.
    pub(super) fn auth(f: AuthFailure) -> Self {
        W::unauthenticated(&f).unwrap_or_else(|| ApiError::from(f).into())
    }
}

/// Metrica's `error_type` for a status.
fn error_type_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthorized",
        403 => "access_denied",
        404 | 410 => "not_found",
        429 => "quota_requests",
        400..=499 => "invalid_parameter",
        _ => "backend_error",
    }
}

impl<W> std::fmt::Display for WireError<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<W: Wire + std::fmt::Debug> ResponseError for WireError<W> {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        W::render(self)
    }
}

/// Failures of the backends (and internal ones), as `/v1` classifies them; an
/// internal error is logged and answered without its details.
impl<W: Wire> From<ApiError> for WireError<W> {
    fn from(e: ApiError) -> Self {
        let retry_after = match &e {
            ApiError::Unavailable { retry_after, .. } | ApiError::TooMany { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        };
        let message = match &e {
            ApiError::Internal(inner) => {
                tracing::error!(error = %inner, "internal error");
                "Internal server error".to_string()
            }
            other => other.to_string(),
        };
        WireError {
            retry_after,
            ..WireError::new(e.status_code(), message)
        }
    }
}

impl<W: Wire> From<QueueError> for WireError<W> {
    fn from(e: QueueError) -> Self {
        ApiError::from(e).into()
    }
}

impl<W: Wire> From<StoreError> for WireError<W> {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl<W: Wire> From<FilesError> for WireError<W> {
    fn from(e: FilesError) -> Self {
        ApiError::from(e).into()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures of the backends answer the same status on every protocol (`/v1`'s
    /// classification, each protocol's words), and never with the backend's details.
    #[test]
    fn backend_failures_have_one_status_on_every_protocol() {
        use super::super::appmetrica::TextError;
        use super::super::metrica::MetricaError;
        let errors = || {
            vec![
                ApiError::from(FilesError::Io {
                    path: "/secret/dir".into(),
                    source: std::io::Error::other("disk gone"),
                }),
                ApiError::Gone("the files of this export are gone".into()),
                ApiError::Internal("secret detail".into()),
                ApiError::from(QueueError::Backend("secret host".into())),
                ApiError::from(QueueError::Request("secret bug".into())),
            ]
        };
        let want = [503, 410, 500, 503, 500];
        let texts = errors().into_iter().map(TextError::from);
        let metricas = errors().into_iter().map(MetricaError::from);
        for (((api, text), metrica), want) in
            errors().into_iter().zip(texts).zip(metricas).zip(want)
        {
            assert_eq!(api.status_code().as_u16(), want, "{api:?}");
            assert_eq!(text.status.as_u16(), want, "{text:?}");
            assert_eq!(metrica.status.as_u16(), want, "{metrica:?}");
            for shown in [api.to_string(), text.message, metrica.message] {
                assert!(
                    !shown.contains("secret") && !shown.contains("disk"),
                    "{shown}"
                );
            }
        }
    }

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
