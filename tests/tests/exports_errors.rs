//! Bad export requests are precise problems: the status, the problem type and the
//! field at fault.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{Read, Write};
use std::time::Duration;

use logport_tests::*;

/// The day most test rows happen on; 2026-11-05T00:00:00Z is Unix 1_793_836_800.
const DAY: &str = "2026-11-05";

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Sends a raw HTTP/1.1 request with a chunked body and returns the status code.
fn chunked_post(base: &str, path: &str, token: &str, body: &[u8]) -> u16 {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = stream.write_all(&req);
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

#[tokio::test]
async fn bad_requests_are_precise_problems() {
    let svc = Service::start_with(Options::default().env("LOGPORT_JSON_MAX_BYTES", "4096")).await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "x1", "event_time": format!("{DAY}T10:00:00Z")})],
    )
    .await;
    let base = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY});
    let with = |extra: Value| merged(&base, extra);
    let filter = |f: Value| with(json!({ "filters": [f] }));
    let fv = |field: &str, op: &str, value: Value| {
        filter(json!({"field": field, "op": op, "value": value}))
    };
    let fvs = |field: &str, op: &str, values: Value| {
        filter(json!({"field": field, "op": op, "values": values}))
    };
    #[rustfmt::skip]
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (with(json!({"slice": "nope"})), 404, Some("slice")),
        (with(json!({"slice": "clicks; DROP TABLE clicks"})), 404, Some("slice")),
        (with(json!({"fields": ["nope"]})), 422, Some("fields[0]")),
        (with(json!({"fields": ["click_id", "cost` FROM system.tables --"]})), 422, Some("fields[1]")),
        (with(json!({"fields": []})), 422, Some("fields")),
        (with(json!({"fields": ["click_id", "click_id"]})), 422, Some("fields[1]")),
        (with(json!({"date_since": "2026-13-01"})), 422, Some("date_since")),
        (with(json!({"date_since": "05.11.2026"})), 422, Some("date_since")),
        (with(json!({"date_since": "2026-11-05' OR 1=1 --"})), 422, Some("date_since")),
        (with(json!({"date_until": "tomorrow"})), 422, Some("date_until")),
        (with(json!({"date_since": "1969-12-31"})), 422, Some("date_since")),
        (with(json!({"date_since": "2026-11-06", "date_until": DAY})), 422, Some("date_until")),
        (with(json!({"date_since": "2026-11-05T10:00:01Z", "date_until": "2026-11-05T10:00:00Z"})), 422, Some("date_until")),
        (with(json!({"date_dimension": "arrival"})), 422, Some("date_dimension")),
        (with(json!({"timezone": "Mars/Olympus"})), 422, Some("timezone")),
        (with(json!({"timezone": "UTC'; DROP TABLE clicks; --"})), 422, Some("timezone")),
        (with(json!({"timezone": "+99:00"})), 422, Some("timezone")),
        (with(json!({"format": "xlsx"})), 422, Some("format")),
        (with(json!({"format": "CSV"})), 422, Some("format")),
        (with(json!({"compression": "rar"})), 422, Some("compression")),
        (with(json!({"format": "parquet", "compression": "gzip"})), 422, Some("compression")),
        (with(json!({"format": "jsonl", "utf8_bom": true})), 422, Some("utf8_bom")),
        (with(json!({"part_max_rows": 0})), 422, Some("part_max_rows")),
        (with(json!({"part_max_bytes": 1023})), 422, Some("part_max_bytes")),
        (with(json!({"limit": 0})), 422, Some("limit")),
        (fv("cost", "like", json!(1)), 422, Some("filters[0].op")),
        (fv("cost", "prefix", json!("1")), 422, Some("filters[0].op")),
        (filter(json!({"field": "cost", "op": "is_null"})), 422, Some("filters[0].op")),
        (fv("event_type", "lt", json!("visit")), 422, Some("filters[0].op")),
        (fv("nope", "eq", json!(1)), 422, Some("filters[0].field")),
        (fv("user_agent", "eq", json!("x")), 422, Some("filters[0].field")),
        (fv("cost", "eq", json!("abc")), 422, Some("filters[0].value")),
        (fv("cost", "eq", json!("1; DROP TABLE clicks")), 422, Some("filters[0].value")),
        (fv("country_code", "eq", json!(5)), 422, Some("filters[0].value")),
        (fv("app_id", "eq", json!(-1)), 422, Some("filters[0].value")),
        (fv("is_bot", "eq", json!(256)), 422, Some("filters[0].value")),
        (fv("event_type", "eq", json!("click")), 422, Some("filters[0].value")),
        (fv("event_time", "gt", json!("yesterday")), 422, Some("filters[0].value")),
        (fv("event_id", "eq", json!("not-a-uuid")), 422, Some("filters[0].value")),
        (fv("cost", "eq", json!(null)), 422, Some("filters[0].value")),
        (filter(json!({"field": "cost", "op": "eq"})), 422, Some("filters[0].value")),
        (fv("cost", "in", json!(1)), 422, Some("filters[0].value")),
        (fvs("cost", "in", json!([])), 422, Some("filters[0].values")),
        (fvs("cost", "in", json!([1, "x"])), 422, Some("filters[0].values[1]")),
        (fvs("cost", "between", json!([1])), 422, Some("filters[0].values")),
        (fvs("cost", "eq", json!([1])), 422, Some("filters[0].values")),
        (with(json!({"filters": [{"field": "cost", "op": "gt", "value": 0},
            {"field": "cost", "op": "lt", "value": "x"}]})), 422, Some("filters[1].value")),
        (with(json!({"colour": "red"})), 400, Some("colour")),
        (filter(json!({"field": "cost", "op": "eq", "value": 1, "extra": 2})), 400, Some("filters[0].extra")),
        (with(json!({"app_id": "x"})), 400, Some("app_id")),
        (with(json!({"app_id": -1})), 400, Some("app_id")),
        (with(json!({"date_since": 20261105})), 400, Some("date_since")),
        (with(json!({"fields": "click_id"})), 400, Some("fields")),
        (json!({"slice": "clicks", "date_until": DAY}), 400, None),
        (json!([base.clone()]), 400, None),
        (json!(["clicks", null, DAY, DAY]), 400, None),
        (json!(["clicks", 7, DAY, DAY, "event", "UTC", ["click_id"]]), 400, None),
        (json!("clicks"), 400, None),
    ];
    for (body, status, field) in &cases {
        for path in ["/v1/exports", "/v1/exports/evaluate"] {
            let resp = send(svc.post(path, ACME).json(body)).await;
            let problem_body = expect_problem(resp, *status, *field).await;
            let kind = match status {
                404 => "/problems/unknown-slice",
                422 => "/problems/invalid-request",
                _ => "/problems/bad-request",
            };
            assert_eq!(problem_body["type"], kind, "{path} {body}");
        }
    }
    // The longest date range is a quota: 429 with Retry-After on create; evaluate says
    // it is not possible, and why.
    let too_long = with(json!({"date_since": "2025-11-04"}));
    let resp = send(svc.post("/v1/exports", ACME).json(&too_long)).await;
    assert!(header(&resp, "retry-after").is_some());
    let body = expect_problem(resp, 429, Some("date_until")).await;
    assert_eq!(body["type"], "/problems/quota-exceeded");
    assert_eq!(body["limit"], "max_range_days");
    let resp = send(svc.post("/v1/exports/evaluate", ACME).json(&too_long)).await;
    let e = json_answer(resp, 200).await;
    assert_eq!(e["possible"], false, "{e}");
    assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
    // The range is refused before anything is counted.
    assert_eq!(e["estimated_rows"], Value::Null, "{e}");
    // 366 days is allowed.
    let resp = send(
        svc.post("/v1/exports/evaluate", ACME)
            .json(&with(json!({"date_since": "2025-11-05"}))),
    )
    .await;
    let e = json_answer(resp, 200).await;
    assert_eq!(e["possible"], true, "{e}");
    assert!(e["reason"].is_null(), "{e}");

    // Nothing above was queued.
    let list = svc.get_ok_json("/v1/exports", ACME).await;
    assert_eq!(list["exports"], json!([]));
    // The missing member is named in the detail.
    let resp = send(
        svc.post("/v1/exports", ACME)
            .json(&json!({"slice": "clicks", "date_until": DAY})),
    )
    .await;
    let body = expect_problem(resp, 400, None).await;
    assert!(
        body["detail"].as_str().unwrap().contains("date_since"),
        "{body}"
    );

    // Malformed and oversized bodies.
    for raw in [
        "",
        "{",
        "{\"slice\": \"clicks\",}",
        "not json",
        "\u{feff}{}",
    ] {
        let resp = send(
            svc.post("/v1/exports", ACME)
                .header("content-type", "application/json")
                .body(raw),
        )
        .await;
        expect_problem(resp, 400, None).await;
    }
    let mut big = base.clone();
    big["fields"] = json!(vec!["click_id"; 600]);
    let big_body = big.to_string();
    assert!(big_body.len() > 4096);
    let resp = send(
        svc.post("/v1/exports", ACME)
            .header("content-type", "application/json")
            .body(big_body.clone()),
    )
    .await;
    let body = expect_problem(resp, 413, None).await;
    assert_eq!(body["type"], "/problems/too-large");
    let resp = send(
        svc.post("/v1/exports/evaluate", ACME)
            .body(big_body.clone()),
    )
    .await;
    expect_problem(resp, 413, None).await;
    let resp = send(
        svc.post("/v1/logs/clicks/preview", ACME)
            .body(big_body.clone()),
    )
    .await;
    expect_problem(resp, 413, None).await;
    let (base_url, bytes) = (svc.base.clone(), big_body.into_bytes());
    let status =
        tokio::task::spawn_blocking(move || chunked_post(&base_url, "/v1/exports", ACME, &bytes))
            .await
            .unwrap();
    assert_eq!(status, 413, "a chunked body over the limit");
    let resp = send(
        svc.post("/v1/exports", ACME)
            .header("content-encoding", "br")
            .json(&base),
    )
    .await;
    expect_problem(resp, 415, None).await;
    // A gzip body is read like any other.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(base.to_string().as_bytes()).unwrap();
    let resp = send(
        svc.post("/v1/exports/evaluate", ACME)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(gz.finish().unwrap()),
    )
    .await;
    assert_eq!(json_answer(resp, 200).await["estimated_rows"], 1);

    // Authentication.
    let no_token = send(svc.http.post(svc.url("/v1/exports")).json(&base)).await;
    assert_eq!(
        header(&no_token, "www-authenticate").as_deref(),
        Some("Bearer realm=\"logport\"")
    );
    expect_problem(no_token, 401, None).await;
    for auth in ["Bearer wrong-token", "Basic dGVzdDp0ZXN0", "Bearer", ACME] {
        let resp = send(
            svc.http
                .post(svc.url("/v1/exports"))
                .header("authorization", auth)
                .json(&base),
        )
        .await;
        expect_problem(resp, 401, None).await;
    }
    // AppMetrica clients send `OAuth <token>`.
    let resp = send(
        svc.http
            .post(svc.url("/v1/exports/evaluate"))
            .header("authorization", format!("OAuth {ACME}"))
            .json(&base),
    )
    .await;
    assert_eq!(resp.status(), 200);
    for path in [
        "/v1/exports/0123456789abcdef0123456789abcdef",
        "/v1/exports/0123456789abcdef0123456789abcdef/parts/1",
    ] {
        let resp = send(svc.http.get(svc.url(path))).await;
        expect_problem(resp, 401, None).await;
    }

    // Unknown jobs, parts and paths.
    let (job, _) = svc
        .export(
            ACME,
            &with(json!({"fields": ["click_id"], "part_max_rows": 1})),
        )
        .await;
    let id = id_of(&job);
    assert_eq!(job["parts"].as_array().unwrap().len(), 1);
    for path in [
        "/v1/exports/0123456789abcdef0123456789abcdef".to_string(),
        "/v1/exports/0123456789ABCDEF0123456789ABCDEF".to_string(),
        "/v1/exports/nope".to_string(),
        "/v1/exports/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/v1/exports/%27%20OR%201%3D1%20--".to_string(),
        format!("/v1/exports/{id}0"),
        "/v1/exports/0123456789abcdef0123456789abcdef/manifest".to_string(),
        "/v1/exports/0123456789abcdef0123456789abcdef/parts/1".to_string(),
        format!("/v1/exports/{id}/parts/2"),
        format!("/v1/exports/{id}/parts/0"),
        format!("/v1/exports/{id}/parts/-1"),
        format!("/v1/exports/{id}/parts/abc"),
        format!("/v1/exports/{id}/parts/1.0"),
        format!("/v1/exports/{id}/parts/99999999999999999999"),
        format!("/v1/exports/{id}/parts/%2e%2e"),
        format!("/v1/exports/{id}/nope"),
        "/v1/nope".to_string(),
    ] {
        let resp = send(svc.get(&path, ACME)).await;
        expect_problem(resp, 404, None).await;
    }
    let resp = send(svc.get(&format!("/v1/exports/{id}/parts/1"), ACME)).await;
    assert_eq!(resp.status(), 200);
    // Wrong methods are problems too, never server errors.
    let resp = send(svc.get("/v1/exports/evaluate", ACME)).await;
    expect_problem(resp, 405, None).await;
    let resp = send(svc.get(&format!("/v1/exports/{id}/cancel"), ACME)).await;
    expect_problem(resp, 405, None).await;
}
