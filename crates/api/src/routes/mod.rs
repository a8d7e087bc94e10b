//! Route table and the helpers handlers share.

mod exports;
mod health;
mod ingest;
mod slices;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .service(resource("/v1/slices").route(web::get().to(slices::list)))
        .service(resource("/v1/slices/{slice}").route(web::get().to(slices::get)))
        .service(resource("/v1/ingest/{slice}").route(web::post().to(ingest::ingest)))
        .service(
            resource("/v1/exports")
                .route(web::post().to(exports::create))
                .route(web::get().to(exports::list)),
        )
        .service(resource("/v1/exports/evaluate").route(web::post().to(exports::evaluate)))
        .service(resource("/v1/exports/{id}").route(web::get().to(exports::get)))
        .service(resource("/v1/exports/{id}/cancel").route(web::post().to(exports::cancel)))
        .service(resource("/v1/exports/{id}/manifest").route(web::get().to(exports::manifest)))
        .service(resource("/v1/exports/{id}/parts/{n}").route(web::get().to(exports::part)))
        .service(resource("/v1/logs/{slice}/preview").route(web::post().to(exports::preview)));
}

/// For the App's default service: an unknown path.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!("path {}", req.path())))
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.path()
    )))
}

/// A path parameter as matched (actix has already percent-decoded it).
fn param<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or("")
}

/// Reads a request body, decompressing `gzip`/`zstd`, refusing more than `limit`
/// bytes (before and after decompression) with 413.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge(format!("the body is larger than {limit} bytes"));
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: usize = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad_request(None, "Content-Length is not a number"))?;
        if len > limit {
            return Err(too_large());
        }
    }
    let encoding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") | Some("gzip") | Some("x-gzip") | Some("zstd") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding `{other}` is not supported; use gzip or zstd"
            )))
        }
    }
    let mut stream = actix_web::dev::Decompress::from_headers(payload.into_inner(), req.headers());
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                None,
                format!("the body could not be read or decompressed: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
