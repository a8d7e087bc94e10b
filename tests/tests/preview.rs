//! `POST /v1/logs/{slice}/preview` when ClickHouse does not answer in time: a 504
//! problem that says what to do, within the configured timeout, and the next preview
//! works once ClickHouse answers again. (Its rows, limits, validation and tenant
//! scoping are in exports.rs.)

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
    let resp = svc
        .post("/v1/logs/clicks/preview", ACME)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A frozen server: the query is accepted and never answered.
    ch.pause();
    let started = Instant::now();
    let resp = svc
        .post("/v1/logs/clicks/preview", ACME)
        .json(&body)
        .send()
        .await
        .unwrap();
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

    let resp = svc
        .post("/v1/logs/clicks/preview", ACME)
        .json(&body)
        .send()
        .await
        .unwrap();
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
