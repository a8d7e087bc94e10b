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

use crate::admission::{BodyPace, Charge};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// The paths that handlers' `#[utoipa::path(path = …)]` declare (through the
/// `__path_*` types utoipa generates beside each handler): each path is written once,
/// there, and both the router and /openapi.json read it.
macro_rules! documented {
    ($($module:ident :: $doc:ident),+ $(,)?) => {
        &[$(<$module::$doc as utoipa::Path>::path()),+]
    };
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    site(cfg);
    v1(cfg);
    protocols(cfg);
}

/// A resource at the one path its handlers declare. Every resource answers other
/// methods with a 405 that lists the allowed ones; GET routes answer HEAD too.
fn resource(paths: &[String], allow: &'static str) -> actix_web::Resource {
    let path = paths.first().map_or("", String::as_str);
    assert!(
        paths.iter().all(|p| p == path),
        "the handlers of one resource declare different paths: {paths:?}"
    );
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        method_not_allowed(req, allow)
    }))
}

/// The web UI, health, metrics and this API's own description.
fn site(cfg: &mut web::ServiceConfig) {
    // The web UI (ui.rs): the page and its assets need no token; the API they call does.
    cfg.service(
        resource(documented!(docs::__path_ui_index_doc), "GET, HEAD")
            .route(web::get().to(crate::ui::index))
            .route(web::head().to(crate::ui::index)),
    )
    .service(
        resource(documented!(docs::__path_ui_asset_doc), "GET, HEAD")
            .route(web::get().to(crate::ui::asset))
            .route(web::head().to(crate::ui::asset)),
    );
    cfg.service(
        resource(documented!(health::__path_healthz), "GET, HEAD")
            .route(web::get().to(health::healthz))
            .route(web::head().to(health::healthz)),
    )
    .service(
        resource(documented!(health::__path_readyz), "GET, HEAD")
            .route(web::get().to(health::readyz))
            .route(web::head().to(health::readyz)),
    )
    .service(
        resource(documented!(docs::__path_metrics_doc), "GET, HEAD")
            .route(web::get().to(health::metrics))
            .route(web::head().to(health::metrics)),
    )
    .service(
        resource(documented!(docs::__path_openapi_json), "GET, HEAD")
            .route(web::get().to(docs::openapi_json))
            .route(web::head().to(docs::openapi_json)),
    )
    .service(
        resource(documented!(docs::__path_docs_page), "GET, HEAD")
            .route(web::get().to(docs::docs_page))
            .route(web::head().to(docs::docs_page)),
    );
}

/// The `/v1` API: catalog, ingest, exports.
fn v1(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(documented!(slices::__path_list), "GET, HEAD")
            .route(web::get().to(slices::list))
            .route(web::head().to(slices::list)),
    )
    .service(
        resource(documented!(slices::__path_get), "GET, HEAD")
            .route(web::get().to(slices::get))
            .route(web::head().to(slices::get)),
    )
    .service(
        resource(documented!(ingest::__path_ingest), "POST").route(web::post().to(
            |req: HttpRequest, caller: Caller, state: web::Data<AppState>, body: web::Payload| {
                to_the_end(ingest::ingest(req, caller, state, body))
            },
        )),
    )
    .service(
        resource(
            documented!(exports::__path_create, exports::__path_list),
            "GET, HEAD, POST",
        )
        .route(web::post().to(exports::create))
        .route(web::get().to(exports::list))
        .route(web::head().to(exports::list)),
    )
    .service(
        resource(documented!(exports::__path_evaluate), "POST")
            .route(web::post().to(exports::evaluate)),
    )
    .service(
        resource(
            documented!(exports::__path_get, exports::__path_delete),
            "GET, HEAD, DELETE",
        )
        .route(web::get().to(exports::get))
        .route(web::head().to(exports::get))
        .route(web::delete().to(
            |req: HttpRequest, caller: Caller, state: web::Data<AppState>| {
                to_the_end(exports::delete(req, caller, state))
            },
        )),
    )
    .service(
        resource(documented!(exports::__path_cancel), "POST")
            .route(web::post().to(exports::cancel)),
    )
    .service(
        resource(documented!(exports::__path_manifest), "GET, HEAD")
            .route(web::get().to(exports::manifest))
            .route(web::head().to(exports::manifest)),
    )
    .service(
        resource(documented!(exports::__path_part), "GET, HEAD")
            .route(web::get().to(exports::part))
            .route(web::head().to(exports::part)),
    )
    .service(
        resource(documented!(exports::__path_preview), "POST")
            .route(web::post().to(exports::preview)),
    );
}

/// The public Logs API protocols (routes/appmetrica.rs, routes/metrica.rs); bodies are
/// gzip-compressed when the client accepts it.
fn protocols(cfg: &mut web::ServiceConfig) {
    let compress = actix_web::middleware::Compress::default;
    cfg.service(
        resource(documented!(appmetrica::__path_export), "GET, HEAD")
            .route(web::get().to(appmetrica::export))
            .route(web::head().to(appmetrica::export))
            .wrap(compress()),
    )
    .service(
        resource(documented!(appmetrica::__path_status), "GET, HEAD")
            .route(web::get().to(appmetrica::status))
            .route(web::head().to(appmetrica::status)),
    )
    .service(
        resource(documented!(metrica::__path_evaluate), "GET, HEAD")
            .route(web::get().to(metrica::evaluate))
            .route(web::head().to(metrica::evaluate)),
    )
    .service(
        resource(
            documented!(metrica::__path_create, metrica::__path_list),
            "GET, HEAD, POST",
        )
        .route(web::post().to(metrica::create))
        .route(web::get().to(metrica::list))
        .route(web::head().to(metrica::list)),
    )
    .service(
        resource(documented!(metrica::__path_info), "GET, HEAD")
            .route(web::get().to(metrica::info))
            .route(web::head().to(metrica::info)),
    )
    .service(
        resource(documented!(metrica::__path_download), "GET, HEAD")
            .route(web::get().to(metrica::download))
            .route(web::head().to(metrica::download))
            .wrap(compress()),
    )
    .service(resource(documented!(metrica::__path_clean), "POST").route(
        web::post().to(|req: HttpRequest, state: web::Data<AppState>| {
            to_the_end(metrica::clean(req, state))
        }),
    ))
    .service(
        resource(documented!(metrica::__path_cancel), "POST")
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

/// Whether `If-None-Match` names `etag` (a quoted entity tag) or is `*`, by the weak
/// comparison of RFC 9110 §13.1.2: `W/"x"` matches a strong `"x"`.
pub(crate) fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    use header::{EntityTag, Header, IfNoneMatch};
    let Ok(ours) = etag.parse::<EntityTag>() else {
        return false;
    };
    match IfNoneMatch::parse(req) {
        Ok(IfNoneMatch::Any) => true,
        Ok(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&ours)),
        Err(_) => false,
    }
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
    let (announced, encoding) = body_head(req, limit)?;
    let mut stream = payload.into_inner();
    // Sized once from Content-Length: growing a large body by doubling copied it
    // about twice over.
    let mut raw = BytesMut::with_capacity(announced);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(unreadable)?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        raw.extend_from_slice(&chunk);
    }
    let raw = raw.freeze();
    if encoding == Encoding::Identity {
        return Ok(raw);
    }
    web::block(move || decode(encoding, &raw, limit, &mut |_| Ok(())))
        .await
        .map_err(|e| ApiError::Internal(format!("decoder task: {e}")))?
        .map(Bytes::from)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::TooLarge(format!("the body is larger than {limit} bytes"))
}

fn unreadable(e: actix_web::error::PayloadError) -> ApiError {
    ApiError::bad_request(None, format!("the body could not be read: {e}"))
}

/// A body's announced length (413 beyond `limit`) and its `Content-Encoding`.
fn body_head(req: &HttpRequest, limit: usize) -> Result<(usize, Encoding), ApiError> {
    let mut announced = 0;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: usize = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad_request(None, "Content-Length is not a number"))?;
        if len > limit {
            return Err(too_large(limit));
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
    Ok((announced, encoding))
}

/// An ingest body as it came off the wire (still compressed), charged to its request.
pub(crate) struct WireBody {
    raw: Vec<u8>,
    encoding: Encoding,
}

/// Reads an ingest body as [`read_body`] does, but charges `charge` for the buffer as
/// it grows (never for what Content-Length announces), and ends with 408 when the
/// body arrives slower than `pace` allows. Blocking nothing: decoding comes later,
/// with [`WireBody::decode`], off the async threads.
pub(crate) async fn read_ingest_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    pace: &BodyPace,
    charge: &mut Charge,
) -> Result<WireBody, ApiError> {
    let (announced, encoding) = body_head(req, limit)?;
    let mut stream = payload.into_inner();
    let mut raw: Vec<u8> = Vec::new();
    let start = tokio::time::Instant::now();
    loop {
        let next = match pace.deadline(start, raw.len() as u64) {
            Some(deadline) => tokio::time::timeout_at(deadline, stream.next())
                .await
                .map_err(|_| pace.too_slow(raw.len() as u64))?,
            None => stream.next().await,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(unreadable)?;
        let need = raw.len() + chunk.len();
        if need > limit {
            return Err(too_large(limit));
        }
        if need > raw.capacity() {
            // Doubling, but never past what Content-Length announced (a body is
            // not charged for bytes that have not come).
            let mut cap = need.max(raw.capacity() * 2).max(16 << 10).min(limit);
            if announced >= need {
                cap = cap.min(announced);
            }
            charge.grow(cap - raw.capacity())?;
            raw.reserve_exact(cap - raw.len());
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(WireBody { raw, encoding })
}

impl WireBody {
    /// The body's text: decoded (the decoder's state and the text charged as they
    /// grow, the wire bytes released once decoded), at most `limit` bytes.
    pub(crate) fn decode(self, limit: usize, charge: &mut Charge) -> Result<Vec<u8>, ApiError> {
        let WireBody { raw, encoding } = self;
        if encoding == Encoding::Identity {
            return Ok(raw);
        }
        let state = match encoding {
            Encoding::Zstd => zstd_window(&raw).saturating_add(ZSTD_STATE),
            _ => GZIP_STATE,
        } + DECODE_PIECE;
        charge.grow(state)?;
        let text = decode(encoding, &raw, limit, &mut |more| {
            charge.grow(more).map_err(ApiError::from)
        });
        let wire = raw.capacity();
        drop(raw);
        charge.shrink(state + wire);
        text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// Bytes read from a decoder at a time.
const DECODE_PIECE: usize = 64 << 10;
/// A gzip decoder's state: its 32 KiB window, input buffer and tables.
const GZIP_STATE: usize = 96 << 10;
/// A zstd decoder's state besides its window: context and block buffers.
const ZSTD_STATE: usize = 384 << 10;

/// Decompresses a whole body, stopping as soon as the output passes `limit`. The
/// output grows in steps (from the size the body's trailer or frame headers declare,
/// doubling beyond it), and `grow` is told of each step before it is allocated.
fn decode(
    encoding: Encoding,
    raw: &[u8],
    limit: usize,
    grow: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<Vec<u8>, ApiError> {
    use std::io::Read;
    let name = match encoding {
        Encoding::Gzip => "gzip",
        _ => "zstd",
    };
    let mut reader: Box<dyn Read> = match encoding {
        // Several gzip members in a row are one valid gzip stream.
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        _ => Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| {
            ApiError::bad_request(None, format!("the body is not valid zstd: {e}"))
        })?),
    };
    let corrupt = |e: std::io::Error| {
        ApiError::bad_request(
            None,
            format!("the body is not valid {name} (corrupt or truncated): {e}"),
        )
    };
    let declared = match encoding {
        Encoding::Gzip => gzip_size(raw),
        _ => zstd_content_size(raw),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut piece = vec![0u8; DECODE_PIECE];
    loop {
        let n = match reader.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        let need = out.len() + n;
        if need > limit {
            return Err(ApiError::TooLarge(format!(
                "the body is larger than {limit} bytes once decompressed"
            )));
        }
        if need > out.capacity() {
            let first = if out.capacity() == 0 { declared } else { 0 };
            let cap = need
                .max(out.capacity() * 2)
                .max(first.min(limit))
                .min(limit);
            grow(cap - out.capacity())?;
            out.reserve_exact(cap - out.len());
        }
        out.extend_from_slice(&piece[..n]);
    }
    if encoding == Encoding::Zstd && !zstd_is_complete(raw) {
        return Err(ApiError::bad_request(
            None,
            "the body is not valid zstd (truncated frame)",
        ));
    }
    Ok(out)
}

/// The size a gzip body's last member declares (its trailer; modulo 4 GiB).
fn gzip_size(raw: &[u8]) -> usize {
    match raw.len().checked_sub(4).and_then(|at| raw.get(at..)) {
        Some(&[a, b, c, d]) if raw.len() >= 18 => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => 0,
    }
}

/// The decoded size zstd frames declare (0 when any frame does not).
fn zstd_content_size(raw: &[u8]) -> usize {
    let mut total = 0u64;
    for frame in zstd_frames(raw) {
        match zstd_header(frame) {
            Some(h) if h.content_size.is_some() || h.skippable => {
                total = total.saturating_add(h.content_size.unwrap_or(0));
            }
            _ => return 0,
        }
    }
    usize::try_from(total).unwrap_or(usize::MAX)
}

/// The largest window a zstd body's frames declare: what its decoder allocates (a
/// frame that declares its size needs no more than that).
fn zstd_window(raw: &[u8]) -> usize {
    let window = zstd_frames(raw)
        .filter_map(zstd_header)
        .map(|h| match (h.window, h.content_size) {
            (Some(w), Some(c)) => w.min(c),
            (Some(w), None) => w,
            (None, c) => c.unwrap_or(0),
        })
        .max()
        .unwrap_or(0);
    usize::try_from(window).unwrap_or(usize::MAX)
}

/// The frames of a zstd body, as far as they can be delimited.
fn zstd_frames(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = match zstd::zstd_safe::find_frame_compressed_size(rest) {
            Ok(n) if n > 0 && n <= rest.len() => n,
            // A truncated frame: its header is all there is to read.
            _ => rest.len(),
        };
        let (frame, tail) = rest.split_at(n);
        rest = tail;
        Some(frame)
    })
}

struct ZstdHeader {
    skippable: bool,
    window: Option<u64>,
    content_size: Option<u64>,
}

/// A zstd frame header (RFC 8878 §3.1.1.1): the window and the content size.
fn zstd_header(frame: &[u8]) -> Option<ZstdHeader> {
    let magic = u32::from_le_bytes(frame.get(..4)?.try_into().ok()?);
    if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
        return Some(ZstdHeader {
            skippable: true,
            window: None,
            content_size: None,
        });
    }
    if magic != 0xFD2F_B528 {
        return None;
    }
    let descriptor = *frame.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    let dict_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = 5;
    let window = if single_segment {
        None
    } else {
        let w = *frame.get(at)?;
        at += 1;
        let base = 1u64 << (10 + u32::from(w >> 3));
        Some(base + base / 8 * u64::from(w & 7))
    };
    at += dict_len;
    let content_size = match size_len {
        0 => None,
        n => {
            let bytes = frame.get(at..at + n)?;
            let v = bytes
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            Some(if n == 2 { v + 256 } else { v })
        }
    };
    Some(ZstdHeader {
        skippable: false,
        window,
        content_size,
    })
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

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::appmetrica::CacheControl;
    use super::if_none_match;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_any() {
        let etag = "\"abc\"";
        for (sent, fresh) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("\"x\", \"abc\"", true),
            ("*", true),
            ("\"stale\"", false),
            ("abc", false),
        ] {
            let req = TestRequest::default()
                .insert_header(("if-none-match", sent))
                .to_http_request();
            assert_eq!(if_none_match(&req, etag), fresh, "{sent}");
        }
        assert!(!if_none_match(
            &TestRequest::default().to_http_request(),
            etag
        ));
    }

    #[test]
    fn cache_control_reads_no_cache_and_the_smallest_max_age() {
        let cc = |values: &[&str]| {
            let mut req = TestRequest::default();
            for v in values {
                req = req.append_header(("cache-control", *v));
            }
            CacheControl::parse(&req.to_http_request())
        };
        let age = |no_cache, max_age| CacheControl { no_cache, max_age };
        assert_eq!(cc(&[]), age(false, None));
        assert_eq!(cc(&["no-cache"]), age(true, None));
        assert_eq!(cc(&["no-store"]), age(true, None));
        assert_eq!(cc(&["No-Cache"]), age(true, None));
        assert_eq!(cc(&["max-age=60"]), age(false, Some(60)));
        assert_eq!(cc(&["max-age=\"60\", max-age=5"]), age(false, Some(5)));
        assert_eq!(cc(&["Max-Age = 7", "private"]), age(false, Some(7)));
        assert_eq!(cc(&["max-age=soon"]), age(false, None));
    }
}
