//! Every query made for a request is bounded: it runs with `max_execution_time`
//! (`LOGPORT_QUERY_TIMEOUT`, `LOGPORT_PREVIEW_TIMEOUT`) and answers 504 past it, it is
//! killed on ClickHouse when its request ends early (the client disconnects, the
//! request times out), evaluate refuses a too-long range before counting, and a
//! preview answers at most `LOGPORT_PREVIEW_MAX_BYTES` of rows. (Preview rows, limits,
//! validation and tenant scoping are in exports_filters.rs and exports_errors.rs; the
//! part cap in exports_parts.rs.)
//!
//! Slow queries come from [`Service::slow_column`]: `click_id` of `clicks` takes about
//! 20 s to read, so a query still running seconds later was not stopped, and one gone
//! within a few seconds was.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use logport_tests::*;

#[tokio::test]
async fn a_preview_that_runs_out_of_time_answers_504() {
    let ch = PrivateClickHouse::launch();
    let svc = Service::start_with(
        Options::default()
            .clickhouse_url(&ch.url)
            .env("LOGPORT_PREVIEW_TIMEOUT", "1s"),
    )
    .await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "p1", "event_time": "2026-11-05T10:00:00Z"})],
    )
    .await;
    let body =
        json!({"date_since": "2026-11-05", "date_until": "2026-11-05", "fields": ["click_id"]});
    let resp = svc.post_json("/v1/logs/clicks/preview", ACME, &body).await;
    assert_eq!(resp.status(), 200);

    // A frozen server: the query is accepted and never answered.
    ch.pause();
    let started = Instant::now();
    let resp = svc.post_json("/v1/logs/clicks/preview", ACME, &body).await;
    let took = started.elapsed();
    let (status, problem) = problem(resp).await;
    ch.resume();
    assert_eq!(status, 504, "{problem}");
    assert_eq!(problem["type"], "/problems/timeout");
    assert_eq!(problem["title"], "The query took too long");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("within 1s") && detail.contains("narrow the date range"),
        "{detail}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    let resp = svc.post_json("/v1/logs/clicks/preview", ACME, &body).await;
    assert_eq!(resp.status(), 200);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["data"], json!([{"click_id": "p1"}]));
}

#[tokio::test]
async fn a_bad_preview_timeout_stops_start_up() {
    let svc = Service::start().await;
    let out = svc
        .command(&["serve"])
        .env("LOGPORT_PREVIEW_TIMEOUT", "forever")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("preview_timeout"), "{stderr}");
}

const DAY: &str = "2026-11-05";

fn slow_filter() -> Value {
    json!([{"field": "click_id", "op": "prefix", "value": "slow-"}])
}

/// Past `LOGPORT_QUERY_TIMEOUT` a count answers 504 (never 500 or 503), and past
/// `LOGPORT_REQUEST_TIMEOUT` so does a preview; either way the query no longer runs on
/// ClickHouse a few seconds later (unstopped, it would run for about 20 s).
#[tokio::test]
async fn a_query_past_its_bound_answers_504_and_stops() {
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_QUERY_TIMEOUT", "1s")
            .env("LOGPORT_PREVIEW_TIMEOUT", "30s")
            .env("LOGPORT_REQUEST_TIMEOUT", "2s"),
    )
    .await;
    svc.slow_column("clicks", "click_id", "acme", 0, DAY, 1_000_000);
    let slow = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
        "fields": ["click_id"], "filters": slow_filter()});

    // A count past its own bound: evaluate, and create (which counts for the part cap).
    let mut with_parts = slow.clone();
    with_parts["part_max_rows"] = json!(1000);
    for (path, body) in [
        ("/v1/exports/evaluate", &slow),
        ("/v1/exports", &with_parts),
    ] {
        let started = Instant::now();
        let resp = svc.post(path, ACME).json(body).send().await.unwrap();
        let took = started.elapsed();
        let (status, problem) = problem(resp).await;
        assert_eq!(status, 504, "{path}: {problem}");
        assert_eq!(problem["type"], "/problems/timeout", "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("narrow the date range"),
            "{problem}"
        );
        assert!(took < Duration::from_secs(4), "{path} took {took:?}");
        svc.wait_request_queries_gone(Duration::from_secs(5)).await;
    }
    // A preview may run 30 s, its request only 2 s: the request's end stops it.
    let started = Instant::now();
    let resp = svc.post_json("/v1/logs/clicks/preview", ACME, &slow).await;
    let (status, problem) = problem(resp).await;
    assert_eq!(status, 504, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("the request did not finish within"),
        "{problem}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    svc.wait_request_queries_gone(Duration::from_secs(5)).await;
    // Nothing was queued.
    let list = svc.list_exports(ACME, "").await;
    assert_eq!(list["exports"], json!([]));
}

/// A client that gives up (closes its connection) ends its request, and the query it
/// was waiting for is killed on ClickHouse, long before any time limit would end it.
/// Evaluate refuses a range past `LOGPORT_MAX_RANGE_DAYS`, or a bad request, without
/// counting anything: at once, however slow a count would be.
#[tokio::test]
async fn a_client_that_disconnects_stops_its_query() {
    let svc = Service::start().await;
    svc.slow_column("clicks", "click_id", "acme", 0, DAY, 1_000_000);
    let slow = json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
        "fields": ["click_id"], "filters": slow_filter()});

    for path in ["/v1/exports/evaluate", "/v1/logs/clicks/preview"] {
        let impatient = svc
            .post(path, ACME)
            .timeout(Duration::from_millis(1500))
            .json(&slow);
        let request = tokio::spawn(impatient.send());
        // The query is running on ClickHouse…
        let started = Instant::now();
        while svc.running_request_queries() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{path}: no query started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // …until the client gives up (its timeout closes the connection).
        let err = request.await.unwrap().unwrap_err();
        assert!(err.is_timeout(), "{path}: {err}");
        let gone = svc.wait_request_queries_gone(Duration::from_secs(6)).await;
        assert!(gone < Duration::from_secs(6), "{path}: {gone:?}");
    }

    // Evaluate checks the range (and the rest of the request) before counting.
    let mut ten_years = slow.clone();
    ten_years["date_since"] = json!("2016-11-05");
    let started = Instant::now();
    let resp = svc
        .post_json("/v1/exports/evaluate", ACME, &ten_years)
        .await;
    assert_eq!(resp.status(), 200);
    let e: Value = resp.json().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e["possible"], false, "{e}");
    assert_eq!(e["estimated_rows"], Value::Null, "nothing was counted: {e}");
    assert_eq!(e["estimated_bytes"], Value::Null, "{e}");
    assert!(e["reason"].as_str().unwrap().contains("3653 days"), "{e}");
    let mut bad = slow.clone();
    bad["filters"] = json!([{"field": "click_id", "op": "gt", "value": 5}]);
    let started = Instant::now();
    let resp = svc.post_json("/v1/exports/evaluate", ACME, &bad).await;
    let (status, problem) = problem(resp).await;
    assert_eq!(status, 422, "{problem}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(svc.running_request_queries(), 0);
}

/// A preview answers at most `LOGPORT_PREVIEW_MAX_BYTES` of rows: the newest rows that
/// fit whole, with `"truncated": true`, still one valid JSON document of the usual
/// shape; under the limit it says `"truncated": false`.
#[tokio::test]
async fn a_preview_is_cut_at_its_byte_limit() {
    let svc =
        Service::start_with(Options::default().env("LOGPORT_PREVIEW_MAX_BYTES", "2048")).await;
    // 60 rows of 100-character ids: each record is 116 bytes ({"click_id":"…"}\n).
    let rows: Vec<Value> = (0..60)
        .map(|i| {
            json!({"click_id": format!("{i:02}{}", "x".repeat(98)),
                "event_time": format!("{DAY}T10:{i:02}:00Z")})
        })
        .collect();
    svc.ingest(ACME, "clicks", &rows).await;
    let preview = |limit: u64| {
        let body =
            json!({"date_since": DAY, "date_until": DAY, "fields": ["click_id"], "limit": limit});
        let rb = svc.post("/v1/logs/clicks/preview", ACME).json(&body);
        async move {
            let resp = rb.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.headers()["content-type"].to_str().unwrap(),
                "application/json"
            );
            let text = resp.text().await.unwrap();
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        }
    };
    let p = preview(60).await;
    assert_eq!(p["truncated"], true, "{p}");
    // 2048 bytes hold 17 records of 116 bytes.
    assert_eq!(p["rows"], 17, "{p}");
    let data = p["data"].as_array().unwrap();
    assert_eq!(data.len(), 17);
    for (k, row) in data.iter().enumerate() {
        let id = row["click_id"].as_str().unwrap();
        assert_eq!(&id[..2], format!("{:02}", 59 - k), "newest first: {p}");
        assert_eq!(id.len(), 100);
    }
    assert_eq!(p["slice"], "clicks");
    assert_eq!(p["fields"], json!(["click_id"]));

    let p = preview(5).await;
    assert_eq!(p["truncated"], false, "{p}");
    assert_eq!(p["rows"], 5);
    assert_eq!(p["data"].as_array().unwrap().len(), 5);
    // No row matches: an empty array, not a cut one.
    let body = json!({"date_since": "2026-10-01", "date_until": "2026-10-01"});
    let resp = svc.post_json("/v1/logs/clicks/preview", ACME, &body).await;
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["data"], json!([]), "{p}");
    assert_eq!(
        (p["rows"].clone(), p["truncated"].clone()),
        (json!(0), json!(false))
    );
}

/// A write is not cut when its client goes away: an ingest whose client gave up runs
/// to its end, a retry meanwhile waits behind it (and would store nothing twice), and
/// once ClickHouse answers the batch is stored once and its answer kept for retries.
#[tokio::test]
async fn an_ingest_whose_client_gives_up_still_finishes_once() {
    let ch = PrivateClickHouse::launch();
    let svc = Service::start_with(Options::default().clickhouse_url(&ch.url)).await;
    let body: String = (0..10)
        .map(|i| {
            format!(
                "{}\n",
                json!({"click_id": format!("k{i}"), "event_time": format!("{DAY}T10:00:00Z")})
            )
        })
        .collect();
    let send = |timeout: Duration| {
        svc.post("/v1/ingest/clicks", ACME)
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", "batch-1")
            .timeout(timeout)
            .body(body.clone())
            .send()
    };
    ch.pause();
    let err = send(Duration::from_millis(500)).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The first request still runs; a retry now waits behind it.
    let err = send(Duration::from_millis(1500)).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    ch.resume();
    let answer: Value = send(Duration::from_secs(20))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 10, "{answer}");
    assert_eq!(svc.count("clicks", "acme"), 10);
    // Once the abandoned requests have recorded their answer, a retry replays it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again: Value = send(Duration::from_secs(20))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if again["duplicate"] == true {
            assert_eq!(again["accepted"], 10, "{again}");
            break;
        }
        assert!(Instant::now() < deadline, "no answer was recorded: {again}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(svc.count("clicks", "acme"), 10);
}
