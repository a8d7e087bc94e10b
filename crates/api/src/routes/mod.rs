//! Route table and the helpers handlers share.

mod appmetrica;
mod compat;
pub(crate) mod docs;
mod exports;
mod health;
mod ingest;
mod metrica;
mod slices;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

pub use ingest::InFlightKeys;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Every resource answers other methods with a 405 that lists the allowed ones; GET
    // routes answer HEAD too.
    let resource = |path: &str, allow: &'static str| {
        web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
            method_not_allowed(req, allow)
        }))
    };
    // The web UI (ui.rs): the page and its assets need no token; the API they call does.
    cfg.service(
        resource("/", "GET, HEAD")
            .route(web::get().to(crate::ui::index))
            .route(web::head().to(crate::ui::index)),
    )
    .service(
        resource("/ui/{file}", "GET, HEAD")
            .route(web::get().to(crate::ui::asset))
            .route(web::head().to(crate::ui::asset)),
    );
    cfg.service(
        resource("/healthz", "GET, HEAD")
            .route(web::get().to(health::healthz))
            .route(web::head().to(health::healthz)),
    )
    .service(
        resource("/readyz", "GET, HEAD")
            .route(web::get().to(health::readyz))
            .route(web::head().to(health::readyz)),
    )
    .service(
        resource("/metrics", "GET, HEAD")
            .route(web::get().to(health::metrics))
            .route(web::head().to(health::metrics)),
    )
    .service(
        resource("/openapi.json", "GET, HEAD")
            .route(web::get().to(docs::openapi_json))
            .route(web::head().to(docs::openapi_json)),
    )
    .service(
        resource("/docs", "GET, HEAD")
            .route(web::get().to(docs::docs_page))
            .route(web::head().to(docs::docs_page)),
    )
    .service(
        resource("/v1/slices", "GET, HEAD")
            .route(web::get().to(slices::list))
            .route(web::head().to(slices::list)),
    )
    .service(
        resource("/v1/slices/{slice}", "GET, HEAD")
            .route(web::get().to(slices::get))
            .route(web::head().to(slices::get)),
    )
    .service(resource("/v1/ingest/{slice}", "POST").route(web::post().to(
        |req: HttpRequest, caller: Caller, state: web::Data<AppState>, body: web::Payload| {
            to_the_end(ingest::ingest(req, caller, state, body))
        },
    )))
    .service(
        resource("/v1/exports", "GET, HEAD, POST")
            .route(web::post().to(exports::create))
            .route(web::get().to(exports::list))
            .route(web::head().to(exports::list)),
    )
    .service(resource("/v1/exports/evaluate", "POST").route(web::post().to(exports::evaluate)))
    .service(
        resource("/v1/exports/{id}", "GET, HEAD, DELETE")
            .route(web::get().to(exports::get))
            .route(web::head().to(exports::get))
            .route(web::delete().to(
                |req: HttpRequest, caller: Caller, state: web::Data<AppState>| {
                    to_the_end(exports::delete(req, caller, state))
                },
            )),
    )
    .service(resource("/v1/exports/{id}/cancel", "POST").route(web::post().to(exports::cancel)))
    .service(
        resource("/v1/exports/{id}/manifest", "GET, HEAD")
            .route(web::get().to(exports::manifest))
            .route(web::head().to(exports::manifest)),
    )
    .service(
        resource("/v1/exports/{id}/parts/{n}", "GET, HEAD")
            .route(web::get().to(exports::part))
            .route(web::head().to(exports::part)),
    )
    .service(resource("/v1/logs/{slice}/preview", "POST").route(web::post().to(exports::preview)));
    // The public Logs API protocols (routes/appmetrica.rs, routes/metrica.rs); bodies
    // are gzip-compressed when the client accepts it.
    let compress = actix_web::middleware::Compress::default;
    cfg.service(
        resource("/logs/v1/export/{file}", "GET, HEAD")
            .route(web::get().to(appmetrica::export))
            .route(web::head().to(appmetrica::export))
            .wrap(compress()),
    )
    .service(
        resource("/management/v1/logsapi/status", "GET, HEAD")
            .route(web::get().to(appmetrica::status))
            .route(web::head().to(appmetrica::status)),
    )
    .service(
        resource(
            "/management/v1/counter/{counter_id}/logrequests/evaluate",
            "GET, HEAD",
        )
        .route(web::get().to(metrica::evaluate))
        .route(web::head().to(metrica::evaluate)),
    )
    .service(
        resource(
            "/management/v1/counter/{counter_id}/logrequests",
            "GET, HEAD, POST",
        )
        .route(web::post().to(metrica::create))
        .route(web::get().to(metrica::list))
        .route(web::head().to(metrica::list)),
    )
    .service(
        resource(
            "/management/v1/counter/{counter_id}/logrequest/{request_id}",
            "GET, HEAD",
        )
        .route(web::get().to(metrica::info))
        .route(web::head().to(metrica::info)),
    )
    .service(
        resource(
            "/management/v1/counter/{counter_id}/logrequest/{request_id}/part/{part_number}/download",
            "GET, HEAD",
        )
        .route(web::get().to(metrica::download))
        .route(web::head().to(metrica::download))
        .wrap(compress()),
    )
    .service(
        resource(
            "/management/v1/counter/{counter_id}/logrequest/{request_id}/clean",
            "POST",
        )
        .route(web::post().to(|req: HttpRequest, state: web::Data<AppState>| {
            to_the_end(metrica::clean(req, state))
        })),
    )
    .service(
        resource(
            "/management/v1/counter/{counter_id}/logrequest/{request_id}/cancel",
            "POST",
        )
        .route(web::post().to(metrica::cancel)),
    );
}

/// Runs a handler that writes in several steps to its end, even when its client goes
/// away. A closed connection stops a request's handler (the server does not keep
/// half-closed connections), which is right for reads — their ClickHouse queries are
/// then killed — but a write cut between its steps would release an ingest batch's
/// idempotency key before the batch is committed (a retry would store it twice), or
/// remove an export's files without marking it expired.
async fn to_the_end<E>(
    work: impl std::future::Future<Output = Result<HttpResponse, E>> + 'static,
) -> Result<HttpResponse, E>
where
    E: From<ApiError> + 'static,
{
    actix_web::rt::spawn(work)
        .await
        .map_err(|e| E::from(ApiError::Internal(format!("handler task: {e}"))))?
}

/// For the App's default service: an unknown path.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!("path {}", req.path())))
}

fn method_not_allowed(req: HttpRequest, allow: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        detail: format!(
            "{} is not allowed on {}; use {allow}",
            req.method(),
            req.path()
        ),
        allow,
    })
}

/// Whether `If-None-Match` names `etag` (or is `*`), by the weak comparison of RFC 9110
/// §13.1.2: `W/"x"` matches a strong `"x"`.
pub(crate) fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').map(str::trim).any(|t| {
                let t = t.strip_prefix("W/").unwrap_or(t);
                t == etag || t == "*"
            })
        })
}

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, if sent: 1–255 printable ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.chars().all(|c| c.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                Some("Idempotency-Key"),
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
            )
        })?;
    Ok(Some(key.to_string()))
}

/// A path parameter as matched (actix has already percent-decoded it).
fn param<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or("")
}

/// Reads a request body, decompressing `gzip`/`zstd`, refusing more than `limit`
/// bytes with 413 — on the wire and after decompression, which is bounded while it
/// runs, so a small "bomb" never expands in memory.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge(format!("the body is larger than {limit} bytes"));
    let mut announced = 0;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: usize = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad_request(None, "Content-Length is not a number"))?;
        if len > limit {
            return Err(too_large());
        }
        announced = len;
    }
    let encoding = match req.headers().get(header::CONTENT_ENCODING) {
        None => Encoding::Identity,
        Some(v) => match v.to_str().map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Ok("") | Ok("identity") => Encoding::Identity,
            Ok("gzip") | Ok("x-gzip") => Encoding::Gzip,
            Ok("zstd") => Encoding::Zstd,
            Ok(other) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Encoding `{other}` is not supported; use gzip or zstd"
                )))
            }
            Err(_) => {
                return Err(ApiError::UnsupportedMediaType(
                    "the Content-Encoding header is not text".into(),
                ))
            }
        },
    };
    let mut stream = payload.into_inner();
    // Sized once from Content-Length: growing a large body by doubling copied it
    // about twice over.
    let mut raw = BytesMut::with_capacity(announced);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(None, format!("the body could not be read: {e}")))?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large());
        }
        raw.extend_from_slice(&chunk);
    }
    let raw = raw.freeze();
    if encoding == Encoding::Identity {
        return Ok(raw);
    }
    web::block(move || decode(encoding, &raw, limit))
        .await
        .map_err(|e| ApiError::Internal(format!("decoder task: {e}")))?
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// Decompresses a whole body, stopping as soon as the output passes `limit`.
fn decode(encoding: Encoding, raw: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    use std::io::Read;
    let name = match encoding {
        Encoding::Gzip => "gzip",
        _ => "zstd",
    };
    let reader: Box<dyn Read> = match encoding {
        // Several gzip members in a row are one valid gzip stream.
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        _ => Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| {
            ApiError::bad_request(None, format!("the body is not valid zstd: {e}"))
        })?),
    };
    let mut out = Vec::new();
    let n = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request(
                None,
                format!("the body is not valid {name} (corrupt or truncated): {e}"),
            )
        })?;
    if n > limit {
        return Err(ApiError::TooLarge(format!(
            "the body is larger than {limit} bytes once decompressed"
        )));
    }
    if encoding == Encoding::Zstd && !zstd_is_complete(raw) {
        return Err(ApiError::bad_request(
            None,
            "the body is not valid zstd (truncated frame)",
        ));
    }
    Ok(Bytes::from(out))
}

/// Whether a zstd body consists of complete frames (a truncated last frame can still
/// decode part of its content without an error).
fn zstd_is_complete(raw: &[u8]) -> bool {
    let mut rest = raw;
    while !rest.is_empty() {
        match zstd::zstd_safe::find_frame_compressed_size(rest) {
            Ok(n) if n > 0 && n <= rest.len() => rest = &rest[n..],
            _ => return false,
        }
    }
    true
}
