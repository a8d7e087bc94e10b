//! Limits every request meets before its handler: the size of its request line and
//! headers (431), and how long its handler may take to start answering (504). Body
//! sizes are the handlers' own (`LOGPORT_INGEST_MAX_BYTES`, `LOGPORT_JSON_MAX_BYTES`,
//! 413); the per-token request rate is checked with the token (`auth`, 429).
//!
//! Wrap the App with `actix_web::middleware::from_fn(logport_api::limits::guard)`;
//! the limits are read from [`crate::AppState`]'s `limits`.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use crate::error::ApiError;
use crate::AppState;

/// Bytes of the request line and headers, as they came on the wire (near enough:
/// `name: value\r\n` per header).
pub fn head_bytes(req: &actix_web::HttpRequest) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(limits) = req
        .app_data::<web::Data<AppState>>()
        .map(|s| (s.limits.max_header_bytes, s.limits.request_timeout))
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let (max_head, timeout) = limits;
    let head = head_bytes(req.request());
    if head > max_head {
        let err = ApiError::HeadersTooLarge(format!(
            "the request line and headers take {head} bytes; at most {max_head} are accepted"
        ));
        return Ok(req.into_response(err.error_response()));
    }
    let path = req.path().to_string();
    match tokio::time::timeout(timeout, next.call(req)).await {
        Ok(resp) => Ok(resp?.map_into_boxed_body()),
        Err(_) => {
            tracing::warn!(%path, ?timeout, "request timed out");
            Err(ApiError::Timeout(format!(
                "the request did not finish within {timeout:?}; retry, or make it smaller"
            ))
            .into())
        }
    }
}
