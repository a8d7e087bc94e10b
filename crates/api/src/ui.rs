//! The web UI: Logport's "Logs" screens (pick a slice, dates, columns and filters,
//! preview rows, export, download), served by `logport serve` itself at `/`.
//!
//! Decisions:
//! - Plain HTML, CSS and JavaScript under `crates/api/ui/`, compiled into the binary
//!   with `include_bytes!`: nothing to build or install, no CDN. The page is a client
//!   of the public API like any other; it has no endpoints of its own.
//! - The page and its assets need no token (they hold no data). The UI keeps the token
//!   the user types in `sessionStorage` only (gone with the tab) and sends it as
//!   `Authorization: Bearer`; downloads are fetched with that header and saved from a
//!   blob, so the token never appears in a URL, a log line or `localStorage`.
//! - A strict Content-Security-Policy (scripts and styles from this origin only, no
//!   inline code, no framing) limits what injected markup could do with the token.
//! - Caching: every answer carries an ETag (If-None-Match answers 304). The page is
//!   `no-cache`; it names its assets with `?v=<hash of their content>`, and an asset
//!   asked for with the current hash is `immutable`, so an upgraded binary is picked up
//!   at once and an unchanged one costs no requests.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// `{{version}}` in the page becomes the assets' content hash.
const VERSION_MARK: &str = "{{version}}";

const PAGE: &str = include_str!("../ui/index.html");

/// The files under `/ui/`: name, Content-Type, bytes.
const ASSETS: [(&str, &str, &[u8]); 2] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/app.css"),
    ),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Built {
    /// Hash of every asset, in the page's asset URLs.
    version: String,
    page: String,
    page_etag: String,
    asset_etags: Vec<String>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut all = Sha256::new();
        for (_, _, body) in ASSETS {
            all.update(body);
        }
        let version = hex::encode(&all.finalize()[..8]);
        let page = PAGE.replace(VERSION_MARK, &version);
        Built {
            page_etag: etag(page.as_bytes()),
            asset_etags: ASSETS.iter().map(|(_, _, body)| etag(body)).collect(),
            version,
            page,
        }
    })
}

fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16]))
}

/// `GET /`: the page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    let b = built();
    respond(
        &req,
        "text/html; charset=utf-8",
        b.page.as_bytes(),
        &b.page_etag,
        "no-cache",
    )
}

/// `GET /ui/{file}`: a script or stylesheet.
pub async fn asset(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let name = req.match_info().get("file").unwrap_or("");
    let b = built();
    let (i, (_, content_type, body)) = ASSETS
        .iter()
        .enumerate()
        .find(|(_, (n, _, _))| *n == name)
        .ok_or_else(|| ApiError::not_found(format!("path {}", req.path())))?;
    let current = req
        .query_string()
        .split('&')
        .any(|kv| kv.strip_prefix("v=") == Some(b.version.as_str()));
    let cache = if current {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok(respond(&req, content_type, body, &b.asset_etags[i], cache))
}

fn respond(
    req: &HttpRequest,
    content_type: &str,
    body: &'static [u8],
    etag: &str,
    cache: &str,
) -> HttpResponse {
    let fresh = crate::routes::if_none_match(req, etag);
    let mut resp = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::ETAG, etag.to_string()))
        .insert_header((header::CACHE_CONTROL, cache.to_string()))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if fresh {
        return resp.finish();
    }
    resp.content_type(content_type.to_string()).body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_assets_by_version() {
        let b = built();
        assert!(!b.page.contains(VERSION_MARK));
        for (name, _, _) in ASSETS {
            assert!(
                b.page.contains(&format!("/ui/{name}?v={}", b.version)),
                "{name}"
            );
        }
    }
}
