//! Ingest stores every event exactly once: overlapping windows, retries, keys reused,
//! clients that give up before the commit, and retries that reach another replica.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::time::Duration;

use logport_tests::*;

fn click(n: u32) -> Value {
    json!({
        "event_id": event_id(n),
        "click_id": format!("c{n}"),
        "event_time": format!("2026-11-10 10:{:02}:{:02}", n / 60 % 60, n % 60),
        "campaign_id": format!("camp{}", n % 3),
    })
}

fn event_id(n: u32) -> String {
    format!("0189abcd-0000-7000-8000-{n:012}")
}

/// Ingests an NDJSON body into `clicks`: the status and the JSON answer.
async fn ingest_clicks(svc: &Service, body: String, key: Option<&str>) -> (u16, Value) {
    status_and_json(svc.ingest_body(ACME, "clicks", body, key).await).await
}

/// `event_id` → how many rows carry it, as stored.
fn stored(svc: &Service) -> BTreeMap<String, u64> {
    svc.clickhouse(&format!(
        "SELECT toString(event_id), count() FROM {}.clicks WHERE tenant_id = 'acme' \
         GROUP BY event_id",
        svc.database
    ))
    .lines()
    .map(|l| {
        let (id, n) = l.split_once('\t').unwrap();
        (id.to_string(), n.parse().unwrap())
    })
    .collect()
}

fn ids(range: std::ops::Range<u32>) -> BTreeMap<String, u64> {
    range.map(|n| (event_id(n), 1)).collect()
}

#[tokio::test]
async fn overlapping_batches_store_every_new_event_once() {
    let svc = Service::start().await;
    // The first case: U1 under key k1, then U1 and U2 under k2.
    let (s, a) = ingest_clicks(&svc, ndjson(&[click(1)]), Some("k1")).await;
    assert_eq!((s, a["accepted"].clone()), (200, json!(1)), "{a}");
    let (s, a) = ingest_clicks(&svc, ndjson(&[click(1), click(2)]), Some("k2")).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["accepted"], 2, "{a}");
    assert_eq!(a["duplicate"], false, "a new key is a new request: {a}");
    assert_eq!(stored(&svc), ids(1..3), "U2 is stored, U1 once");

    // Without a key: first and last already stored, the middle one new.
    let (s, a) = ingest_clicks(&svc, ndjson(&[click(1), click(3), click(2)]), None).await;
    assert_eq!((s, a["accepted"].clone()), (200, json!(3)), "{a}");
    assert_eq!(stored(&svc), ids(1..4), "the middle row is stored");

    // A loader re-sending a trailing window: three 50-row batches overlapping by 25,
    // with and without keys.
    for (w, key) in [(0u32, Some("w0")), (1, None), (2, Some("w2"))] {
        let rows: Vec<Value> = (100 + 25 * w..150 + 25 * w).map(click).collect();
        let (s, a) = ingest_clicks(&svc, ndjson(&rows), key).await;
        assert_eq!((s, a["accepted"].clone()), (200, json!(50)), "{a}");
    }
    let mut want = ids(1..4);
    want.extend(ids(100..200));
    assert_eq!(stored(&svc), want, "100 distinct rows, each once");

    // An export reads exactly those rows.
    assert_eq!(svc.exported_event_ids(ACME, "2026-11-10").await, want);
}

#[tokio::test]
async fn repeats_inside_one_batch_are_stored_once_and_the_rule_is_the_dedup_key() {
    let svc = Service::start().await;
    let mut later = click(7);
    later["event_time"] = json!("2026-11-10 11:00:00");
    let mut other_campaign = click(7);
    other_campaign["campaign_id"] = json!("elsewhere");
    let mut other_app = click(7);
    other_app["app_id"] = json!(42);
    let body = ndjson(&[
        click(7),
        click(7),
        click(8),
        click(7),
        later,
        other_campaign,
        other_app,
    ]);
    let (s, a) = ingest_clicks(&svc, body, None).await;
    assert_eq!((s, a["accepted"].clone()), (200, json!(7)), "{a}");
    // The same event_id with another event_time, campaign (the clicks sort key) or
    // app is another event: GET /v1/slices/clicks says which fields decide.
    let mut want = BTreeMap::new();
    want.insert(event_id(7), 4);
    want.insert(event_id(8), 1);
    assert_eq!(stored(&svc), want);
    let (_, desc) = svc.get_json("/v1/slices/clicks", ACME).await;
    assert_eq!(
        desc["dedup_key"],
        json!(["app_id", "event_time", "campaign_id", "event_id"])
    );
    // Another tenant's identical rows are its own.
    let resp = svc
        .post("/v1/ingest/clicks", GLOBEX)
        .body(ndjson(&[click(7), click(8)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(svc.count("clicks", "globex"), 2);
    assert_eq!(svc.count("clicks", "acme"), 5);
}

#[tokio::test]
async fn a_key_replays_its_answer_and_refuses_another_body() {
    let svc = Service::start().await;
    // A body refused as invalid does not take the key: the fixed body may use it.
    let (s, p) = ingest_clicks(&svc, "{\"click_id\": 5}\n".into(), Some("batch-1")).await;
    assert_eq!(s, 422, "{p}");
    // Generated event ids derive from the key: a retry carries the same ones.
    let rows: Vec<Value> = (0..20)
        .map(|i| json!({"click_id": format!("k{i}"), "event_time": "2026-11-10 10:00:00"}))
        .collect();
    let (s, first) = ingest_clicks(&svc, ndjson(&rows), Some("batch-1")).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    for _ in 0..2 {
        let (s, again) = ingest_clicks(&svc, ndjson(&rows), Some("batch-1")).await;
        assert_eq!(s, 200, "{again}");
        assert_eq!(again["duplicate"], true, "{again}");
        for k in ["accepted", "rejected", "errors", "received_time"] {
            assert_eq!(again[k], first[k], "the first answer, replayed: {again}");
        }
    }
    assert_eq!(svc.count("clicks", "acme"), 20);
    // The key reused for another body: 409, nothing stored.
    let (s, p) = ingest_clicks(&svc, ndjson(&rows[..5]), Some("batch-1")).await;
    assert_eq!(s, 409, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("Idempotency-Key"),
        "{p}"
    );
    assert_eq!(svc.count("clicks", "acme"), 20);
    // Another tenant's same key is its own.
    let resp = svc
        .post("/v1/ingest/clicks", GLOBEX)
        .header("Idempotency-Key", "batch-1")
        .body(ndjson(&rows[..5]))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["duplicate"], false, "{body}");
    assert_eq!(svc.count("clicks", "globex"), 5);
}

/// Holds the ingest fence of the service's clicks table (see `logport_store::insert`)
/// with a query that sleeps, so the service's INSERT waits behind it.
fn hold_fence(svc: &Service, seconds: u32) -> std::thread::JoinHandle<()> {
    let (url, db) = (svc.clickhouse.clone(), svc.database.clone());
    let handle = std::thread::spawn(move || {
        let sql = format!("SELECT sleep({seconds})");
        let q = format!("query_id=logport-ingest-{db}-clicks");
        let out = std::process::Command::new("curl")
            .args(["-sS", &format!("{url}/?{q}"), "--data-binary", &sql])
            .output()
            .unwrap();
        assert!(out.status.success());
    });
    // Until ClickHouse runs it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while clickhouse_blocking(
        &svc.clickhouse,
        &format!(
            "SELECT count() FROM system.processes WHERE query_id = 'logport-ingest-{}-clicks'",
            svc.database
        ),
    )
    .unwrap()
    .trim()
        != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the fence query never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    handle
}

#[tokio::test]
async fn a_client_gone_before_the_commit_finds_its_rows_stored_once_on_retry() {
    let svc = Service::start().await;
    let rows: Vec<Value> = (0..30).map(click).collect();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let fence = hold_fence(&svc, 3);
    // Both clients give up while the service waits for the table: one with a key,
    // one without (its rows carry their event ids).
    for key in [Some("gone-1"), None] {
        let mut req = impatient
            .post(svc.url("/v1/ingest/clicks"))
            .bearer_auth(ACME)
            .body(ndjson(&rows));
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        assert!(req.send().await.unwrap_err().is_timeout());
    }
    assert_eq!(svc.count("clicks", "acme"), 0, "nothing committed yet");
    fence.join().unwrap();
    // The abandoned requests commit on their own once the table is free.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while svc.count("clicks", "acme") < 30 {
        assert!(std::time::Instant::now() < deadline, "{}", svc.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The retries: the keyed one gets the recorded answer, the other stores nothing.
    let (s, a) = ingest_clicks(&svc, ndjson(&rows), Some("gone-1")).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["accepted"], 30, "{a}");
    let (s, a) = ingest_clicks(&svc, ndjson(&rows), None).await;
    assert_eq!((s, a["accepted"].clone()), (200, json!(30)), "{a}");
    assert_eq!(stored(&svc), ids(0..30), "each event once: {}", svc.logs());
}

#[tokio::test]
async fn a_retry_on_another_replica_is_answered_from_the_shared_job_store() {
    let pg = PgDatabase::create();
    let shared = Options::default().job_store_url(&pg.url);
    let a = Service::start_with(shared.clone()).await;
    let b = Service::start_with(shared.clickhouse_database(&a.database)).await;
    let rows: Vec<Value> = (0..10)
        .map(|i| json!({"click_id": format!("r{i}"), "event_time": "2026-11-10 10:00:00"}))
        .collect();
    let (s, first) = ingest_clicks(&a, ndjson(&rows), Some("replica-key")).await;
    assert_eq!(s, 200, "{first}");
    let (s, again) = ingest_clicks(&b, ndjson(&rows), Some("replica-key")).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["received_time"], first["received_time"], "{again}");
    let (s, p) = ingest_clicks(&b, ndjson(&rows[..3]), Some("replica-key")).await;
    assert_eq!(s, 409, "{p}");
    // Without the job store's record (expired, say), the rows still are not doubled:
    // the generated ids repeat and ClickHouse keeps each event once.
    pg.query("DELETE FROM ingest_keys");
    let (s, again) = ingest_clicks(&b, ndjson(&rows), Some("replica-key")).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], false, "{again}");
    assert_eq!(a.count("clicks", "acme"), 10);
}
