//! Every error the API answers, mapped to HTTP in one place.
//!
//! Bodies are RFC 9457 `application/problem+json`: `type`, `title`, `status`, `detail`,
//! and `field` naming the offending member when there is one. Internal failures are
//! logged in full and answered with an opaque 500; a backend that is down (ClickHouse,
//! the job store) is a 503 with `Retry-After`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use logport_catalog::SpecError;
use logport_export::FilesError;
use logport_queue::QueueError;
use logport_store::StoreError;
use serde::Serialize;

/// One rejected line of an ingest body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LineProblem {
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("unknown slice `{0}`")]
    UnknownSlice(String),
    #[error("{detail}")]
    BadRequest {
        field: Option<String>,
        detail: String,
    },
    #[error("{detail}")]
    Invalid {
        field: Option<String>,
        detail: String,
        errors: Vec<LineProblem>,
    },
    #[error("{0}")]
    TooLarge(String),
    /// The request line and headers are larger than the server takes.
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{detail}")]
    MethodNotAllowed { detail: String, allow: &'static str },
    /// A per-tenant quota is used up.
    #[error("{detail}")]
    TooMany {
        /// Which limit: `max_queued_per_tenant`, `max_range_days`, `max_rows_per_export`.
        limit: &'static str,
        field: Option<String>,
        detail: String,
        retry_after: u32,
    },
    /// A dependency is down or overloaded; the client should retry.
    #[error("{detail}")]
    Unavailable { detail: String, retry_after: u32 },
    /// A synchronous query (a preview, a count or estimate) ran out of time; a
    /// narrower request may not.
    #[error("{0}")]
    Timeout(String),
    /// The request body arrived slower than the minimum rate.
    #[error("{0}")]
    BodyTooSlow(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(field: Option<&str>, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.map(String::from),
            detail: detail.into(),
        }
    }

    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: Some(field.to_string()),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound { what: what.into() }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or invalid token",
            ),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            NotFound { .. } => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            UnknownSlice(_) => (StatusCode::NOT_FOUND, "unknown-slice", "Unknown slice"),
            BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad-request", "Malformed request"),
            Invalid { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "The request is not acceptable",
            ),
            TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request too large",
            ),
            HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request headers too large",
            ),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Gone(_) => (StatusCode::GONE, "gone", "Gone"),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            TooMany { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "quota-exceeded",
                "Quota exceeded",
            ),
            Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
            ),
            Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "The query took too long",
            ),
            BodyTooSlow(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "body-too-slow",
                "The request body arrived too slowly",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [LineProblem],
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, slug, title) = self.parts();
        let (field, errors): (Option<&str>, &[LineProblem]) = match self {
            ApiError::BadRequest { field, .. } => (field.as_deref(), &[]),
            ApiError::Invalid { field, errors, .. } => (field.as_deref(), errors),
            ApiError::UnknownSlice(_) => (Some("slice"), &[]),
            ApiError::TooMany { field, .. } => (field.as_deref(), &[]),
            _ => (None, &[]),
        };
        let limit = match self {
            ApiError::TooMany { limit, .. } => Some(*limit),
            _ => None,
        };
        let detail = match self {
            ApiError::Internal(inner) => {
                tracing::error!(error = %inner, "internal error");
                "the server failed to handle the request; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let body = Problem {
            kind: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail,
            field,
            errors,
            limit,
        };
        let mut resp = HttpResponse::build(status);
        resp.content_type("application/problem+json");
        match self {
            ApiError::Unauthorized(_) => {
                resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"logport\""));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.insert_header((header::ALLOW, *allow));
            }
            ApiError::Unavailable { retry_after, .. } | ApiError::TooMany { retry_after, .. } => {
                resp.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            _ => {}
        }
        resp.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Malformed { field, detail } => ApiError::BadRequest { field, detail },
            SpecError::UnknownSlice(s) => ApiError::UnknownSlice(s),
            SpecError::Invalid { field, detail } => ApiError::Invalid {
                field: Some(field),
                detail,
                errors: Vec::new(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // A query past its time limit (a count, an estimate): the request asked for
        // too much at once, which a retry of the same request does not change.
        if e.is_timeout() {
            tracing::info!(error = %e, "clickhouse query ran out of time");
            return ApiError::Timeout(
                "the query did not finish within its time limit: narrow the date range or \
                 the filters"
                    .into(),
            );
        }
        if e.is_retryable() {
            tracing::warn!(error = %e, "clickhouse unavailable");
            ApiError::Unavailable {
                detail: "the event store is temporarily unavailable; retry later".into(),
                retry_after: 5,
            }
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::IdempotencyConflict => ApiError::Conflict(
                "this Idempotency-Key was already used with a different request body".into(),
            ),
            // Our own bug, not the store's failure: a retry would not help.
            QueueError::Request(e) => ApiError::Internal(e),
            other => {
                tracing::warn!(error = %other, "job store unavailable");
                ApiError::Unavailable {
                    detail: "the job store is temporarily unavailable; retry later".into(),
                    retry_after: 2,
                }
            }
        }
    }
}

/// The one mapping of file-store failures, whichever protocol asked: a file that is
/// not there any more is gone (410; a retry would not bring it back), anything else
/// is the store being unavailable (503). The store's own message (bucket, path) is
/// logged, never answered.
impl From<FilesError> for ApiError {
    fn from(e: FilesError) -> Self {
        if e.is_not_found() {
            tracing::info!(error = %e, "export file not found");
            return ApiError::Gone("the files of this export are gone".into());
        }
        tracing::warn!(error = %e, "object store unavailable");
        ApiError::Unavailable {
            detail: "the file store is temporarily unavailable; retry later".into(),
            retry_after: 5,
        }
    }
}

/// `/v1`'s answer to a limit a new export would pass: a quota is 429 with
/// `Retry-After` (a later or smaller request may fit), a part cap 422 naming the
/// member to change.
impl From<crate::service::Quota> for ApiError {
    fn from(q: crate::service::Quota) -> Self {
        use crate::service::Quota::*;
        let (limit, field, retry_after) = match q {
            RangeDays { .. } => ("max_range_days", Some("date_until"), 60),
            Queued { .. } => ("max_queued_per_tenant", None, 30),
            Rows { .. } => ("max_rows_per_export", None, 60),
            PartRows { .. } => return ApiError::invalid("part_max_rows", q.detail()),
            PartBytes { .. } => return ApiError::invalid("part_max_bytes", q.detail()),
        };
        ApiError::TooMany {
            limit,
            field: field.map(String::from),
            detail: q.detail(),
            retry_after,
        }
    }
}
