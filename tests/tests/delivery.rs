//! Ingest delivery: CSV bodies, idempotent retries, coalescing, backpressure and crashes.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::time::{Duration, Instant};

use logport_tests::*;

fn click(id: &str) -> Value {
    json!({"click_id": id, "event_time": "2026-11-05T10:00:00Z", "country_code": "US"})
}

/// `POST /v1/ingest/clicks` as ACME, with an `Idempotency-Key` if given.
async fn ingest_clicks(svc: &Service, body: String, key: Option<&str>) -> reqwest::Response {
    svc.ingest_body(ACME, "clicks", body, key).await
}

#[tokio::test]
async fn csv_bodies_with_a_header_row() {
    let svc = Service::start().await;
    let body = "click_id,event_time,country_code,cost,user_agent,is_bot\r\n\
                c1,2026-11-05 10:00:00,US,0.5,\"Mozilla, \"\"quoted\"\"\nnext line\",true\r\n\
                c2,1793872800,DE,,,0\n";
    let resp = svc
        .post("/v1/ingest/clicks", ACME)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["accepted"], 2, "{out}");
    let rows = svc.clickhouse(&format!(
        "SELECT click_id, cost, user_agent, is_bot FROM {}.clicks ORDER BY click_id FORMAT JSONEachRow",
        svc.database
    ));
    let rows: Vec<Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["user_agent"], "Mozilla, \"quoted\"\nnext line");
    assert_eq!(rows[0]["is_bot"], 1);
    assert_eq!(rows[0]["cost"], 0.5);
    assert_eq!(rows[1]["user_agent"], "");

    // A bad value names its line (the physical line of the record) and field.
    let bad = "click_id,event_time,cost\nc3,2026-11-05 10:00:00,1\nc4,2026-11-05 10:00:00,abc\n";
    let resp = svc
        .post("/v1/ingest/clicks", ACME)
        .header("content-type", "text/csv")
        .body(bad)
        .send()
        .await
        .unwrap();
    let (status, p) = problem(resp).await;
    assert_eq!(status, 422);
    assert_eq!(p["errors"][0]["line"], 3, "{p}");
    assert_eq!(p["errors"][0]["field"], "cost", "{p}");
    // An unknown column in the header rejects the body.
    for header in ["click_id,nope", "click_id,tenant_id", "click_id,click_id"] {
        let resp = svc
            .post("/v1/ingest/clicks", ACME)
            .header("content-type", "text/csv; charset=utf-8")
            .body(format!("{header}\nx,y\n"))
            .send()
            .await
            .unwrap();
        let (status, p) = problem(resp).await;
        assert_eq!(status, 422, "{header}: {p}");
        assert_eq!(p["errors"][0]["line"], 1, "{p}");
    }
    // A record with the wrong number of values, and an unknown media type.
    let resp = svc
        .post("/v1/ingest/clicks", ACME)
        .header("content-type", "text/csv")
        .body("click_id,event_time\nc5\n")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, 422);
    let resp = svc
        .post("/v1/ingest/clicks", ACME)
        .header("content-type", "application/xml")
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, 415);
    assert_eq!(
        svc.count("clicks", "acme"),
        2,
        "nothing stored from the bad bodies"
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_retries_free() {
    let svc = Service::start().await;
    let rows: Vec<Value> = (0..50).map(|i| click(&format!("c{i}"))).collect();
    let first: Value = ingest_clicks(&svc, ndjson(&rows), Some("batch-0001"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["accepted"], 50);
    assert_eq!(first["duplicate"], false);
    for _ in 0..3 {
        let again: Value = ingest_clicks(&svc, ndjson(&rows), Some("batch-0001"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(again["accepted"], 50, "{again}");
        assert_eq!(again["duplicate"], true, "{again}");
    }
    assert_eq!(svc.count("clicks", "acme"), 50);
    // Generated ids are deterministic per (tenant, key, line) and distinct per line.
    let ids = svc.clickhouse(&format!(
        "SELECT uniqExact(event_id) FROM {}.clicks",
        svc.database
    ));
    assert_eq!(ids.trim(), "50");
    // Another key is another batch; another tenant's same key too.
    ingest_clicks(&svc, ndjson(&rows), Some("batch-0002")).await;
    assert_eq!(svc.count("clicks", "acme"), 100);
    let resp = svc
        .post("/v1/ingest/clicks", GLOBEX)
        .header("Idempotency-Key", "batch-0001")
        .body(ndjson(&rows))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["duplicate"], false);
    assert_eq!(svc.count("clicks", "globex"), 50);
    // A malformed key is refused.
    let resp = ingest_clicks(&svc, ndjson(&rows), Some("has space")).await;
    assert_eq!(problem(resp).await.0, 400);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_store_one_batch() {
    let svc = Service::start().await;
    let rows: Vec<Value> = (0..200).map(|i| click(&format!("c{i}"))).collect();
    let body = ndjson(&rows);
    let sends = (0..10).map(|_| ingest_clicks(&svc, body.clone(), Some("same-key")));
    let answers = futures::future::join_all(sends).await;
    // Each one is answered 200: the events are stored once whoever commits first.
    for r in answers {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 200, "{body}");
    }
    assert_eq!(
        svc.count("clicks", "acme"),
        200,
        "one batch, whatever the races"
    );
}

#[tokio::test]
async fn small_concurrent_requests_are_coalesced() {
    let svc = Service::start().await;
    let sends = (0..40).map(|i| {
        let body = ndjson(&[click(&format!("c{i}"))]);
        let svc = &svc;
        async move { ingest_clicks(svc, body, None).await.status().as_u16() }
    });
    let started = Instant::now();
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(svc.count("clicks", "acme"), 40);
    // Every request was acknowledged after its commit, and together they took far
    // fewer INSERTs than requests.
    let logs = svc.logs();
    let inserts = logs.matches("coalesced insert committed").count();
    assert!(
        (1..40).contains(&inserts),
        "{inserts} inserts for 40 requests"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn clickhouse_down_answers_503_and_recovers() {
    let ch = PrivateClickHouse::launch();
    let svc = Service::start_with(Options::default().clickhouse_url(&ch.url)).await;
    svc.ingest(ACME, "clicks", &[click("before")]).await;
    ch.stop();
    let resp = ingest_clicks(&svc, ndjson(&[click("during")]), Some("k-during")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let (_, p) = problem(resp).await;
    assert_eq!(p["status"], 503);
    ch.start();
    // The same request, retried, now goes through exactly once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = ingest_clicks(&svc, ndjson(&[click("during")]), Some("k-during")).await;
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ingest_clicks(&svc, ndjson(&[click("during")]), Some("k-during")).await;
    let n = ch.query(&format!(
        "SELECT count() FROM {}.clicks WHERE tenant_id = 'acme'",
        svc.database
    ));
    assert_eq!(n.trim(), "2");
}

#[tokio::test]
async fn overload_answers_503_instead_of_buffering() {
    let ch = PrivateClickHouse::launch();
    let svc = Service::start_with(
        Options::default()
            .clickhouse_url(&ch.url)
            .env("LOGPORT_INGEST_MAX_BYTES", "100000")
            // What a request holds is its body, its parsing state and its column
            // block (about 250 KB here): three fit in the tenant's half.
            .env("LOGPORT_INGEST_MAX_INFLIGHT_BYTES", "2000000"),
    )
    .await;
    // A paused server holds every insert (and the memory of its request); requests
    // pile up until the budget is held.
    ch.pause();
    let body = ndjson(
        &(0..500)
            .map(|i| click(&format!("c{i}")))
            .collect::<Vec<_>>(),
    );
    assert!(body.len() > 30_000 && body.len() < 100_000);
    let sends = (0..12).map(|_| {
        let svc = &svc;
        let body = body.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(3), ingest_clicks(svc, body, None))
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    });
    let statuses = futures::future::join_all(sends).await;
    let refused = statuses.iter().filter(|s| **s == Some(503)).count();
    assert!(refused >= 5, "{statuses:?}");
    ch.resume();
}

/// A client that retries every unacknowledged request with its idempotency key,
/// while the service is killed (-9) and restarted under it: afterwards every
/// acknowledged event is stored exactly once.
#[tokio::test]
async fn kill_9_during_sustained_ingest_loses_and_doubles_nothing() {
    let mut svc = Service::start().await;
    let batches = 60;
    let per_batch = 100;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = svc.base.clone();
    let client = tokio::spawn(async move {
        let mut acked = 0;
        for b in 0..batches {
            let rows: Vec<Value> = (0..per_batch)
                .map(|i| click(&format!("b{b}-r{i}")))
                .collect();
            let body = ndjson(&rows);
            let key = format!("batch-{b}");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let sent = http
                    .post(format!("{base}/v1/ingest/clicks"))
                    .bearer_auth(ACME)
                    .header("Idempotency-Key", &key)
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(r) = sent {
                    if r.status() == 200 {
                        acked += 1;
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "batch {b} never acknowledged");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        acked
    });
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        svc.restart().await;
    }
    let acked = client.await.unwrap();
    assert_eq!(acked, batches);
    let total = svc.count("clicks", "acme");
    let distinct = svc.clickhouse(&format!(
        "SELECT uniqExact(click_id) FROM {}.clicks WHERE tenant_id = 'acme'",
        svc.database
    ));
    assert_eq!(
        total,
        (batches * per_batch) as u64,
        "no event lost or doubled"
    );
    assert_eq!(distinct.trim(), (batches * per_batch).to_string());
    let ids: HashSet<String> = svc
        .clickhouse(&format!(
            "SELECT toString(event_id) FROM {}.clicks",
            svc.database
        ))
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), batches * per_batch);
}
