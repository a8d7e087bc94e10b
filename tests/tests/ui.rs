//! The web UI as HTTP sees it: the page and its assets come from the binary, need no
//! token, carry the right types, caching and security headers; the API they call still
//! needs a token. (tests/browser/ drives the screens themselves in Chromium.)

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use logport_tests::*;

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The `?v=` an asset is named with in the page.
fn asset_url(page: &str, name: &str) -> String {
    let start = page
        .find(&format!("/ui/{name}?v="))
        .unwrap_or_else(|| panic!("the page does not load {name}"));
    let rest = &page[start..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test]
async fn the_page_and_assets_need_no_token_and_are_typed_and_cached() {
    let svc = Service::start().await;
    let resp = svc.http.get(svc.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&resp, "cache-control"), "no-cache");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(header(&resp, "referrer-policy"), "no-referrer");
    let csp = header(&resp, "content-security-policy").to_string();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    let page_etag = header(&resp, "etag").to_string();
    assert!(
        page_etag.starts_with('"') && page_etag.len() > 10,
        "{page_etag}"
    );
    let page = resp.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("<html lang=\"en\">"));
    // No inline script: the CSP would block it, and the token is safer without.
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script src=\"/ui/").count()
    );
    assert!(!page.contains("{{version}}"));

    let resp = svc
        .http
        .get(svc.url("/"))
        .header("if-none-match", &page_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(header(&resp, "etag"), page_etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = svc.http.head(svc.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");

    for (name, content_type, marker) in [
        ("app.js", "text/javascript; charset=utf-8", "'use strict'"),
        ("app.css", "text/css; charset=utf-8", ":focus-visible"),
    ] {
        let versioned = asset_url(&page, name);
        let resp = svc.http.get(svc.url(&versioned)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{versioned}");
        assert_eq!(header(&resp, "content-type"), content_type);
        assert_eq!(
            header(&resp, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        let etag = header(&resp, "etag").to_string();
        assert!(resp.text().await.unwrap().contains(marker), "{name}");
        // Without the current version the browser must ask again.
        for stale in [
            format!("/ui/{name}"),
            format!("/ui/{name}?v=0000000000000000"),
        ] {
            let resp = svc.http.get(svc.url(&stale)).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(header(&resp, "cache-control"), "no-cache", "{stale}");
            assert_eq!(header(&resp, "etag"), etag);
        }
        let resp = svc
            .http
            .get(svc.url(&format!("/ui/{name}")))
            .header("if-none-match", format!("W/{etag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304, "{name}");
        let resp = svc.http.head(svc.url(&versioned)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), content_type);
    }

    // Only the UI's own files are served under /ui/.
    for path in [
        "/ui/nope.js",
        "/ui/index.html",
        "/ui/",
        "/ui/..%2FCargo.toml",
    ] {
        let resp = svc.http.get(svc.url(path)).send().await.unwrap();
        let (status, _) = problem(resp).await;
        assert_eq!(status, 404, "{path}");
    }
    for (path, allow) in [("/", "GET, HEAD"), ("/ui/app.js", "GET, HEAD")] {
        let resp = svc.http.post(svc.url(path)).send().await.unwrap();
        assert_eq!(header(&resp, "allow"), allow, "{path}");
        let (status, _) = problem(resp).await;
        assert_eq!(status, 405, "{path}");
    }

    // The API the page calls is not opened by it.
    for path in ["/v1/slices", "/v1/exports"] {
        let resp = svc.http.get(svc.url(path)).send().await.unwrap();
        let (status, _) = problem(resp).await;
        assert_eq!(status, 401, "{path}");
        let resp = svc.get(path, ACME).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}
