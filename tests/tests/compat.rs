//! The public Logs API protocols (docs/logs-api-protocols.md), used the way an existing
//! client uses them: plain HTTP requests, step by step, reading only what the protocol
//! answers (status, headers, body). The `/v1` API is read only to count the jobs a
//! protocol request made.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use logport_tests::*;

// ---------------------------------------------------------------------------------
// A client's toolbox
// ---------------------------------------------------------------------------------

/// What a protocol request got back.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    async fn of(resp: reqwest::Response) -> Answer {
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.expect("body").to_vec(),
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.status, self.text()))
    }
}

/// `Authorization: OAuth <token>`, as AppMetrica and Metrica clients send it.
fn oauth(token: &str) -> (&'static str, String) {
    ("Authorization", format!("OAuth {token}"))
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// A URL with its query string, each pair form-encoded (a space becomes `+`).
fn with_query(url: &str, params: &[(&str, &str)]) -> reqwest::Url {
    reqwest::Url::parse_with_params(url, params).expect("url")
}

async fn send(
    svc: &Service,
    method: reqwest::Method,
    path: &str,
    params: &[(&str, &str)],
    headers: &[(&str, String)],
) -> Answer {
    let mut req = svc.http.request(method, with_query(&svc.url(path), params));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    Answer::of(req.send().await.expect("request")).await
}

/// One AppMetrica export request: `GET /logs/v1/export/{file}?params`.
async fn export(
    svc: &Service,
    file: &str,
    params: &[(&str, &str)],
    headers: &[(&str, String)],
) -> Answer {
    send(
        svc,
        reqwest::Method::GET,
        &format!("/logs/v1/export/{file}"),
        params,
        headers,
    )
    .await
}

/// The AppMetrica loop: repeat the identical request while it answers 202 `Wait for
/// result`; returns the final answer and how many 202s came before it.
async fn poll(
    svc: &Service,
    file: &str,
    params: &[(&str, &str)],
    headers: &[(&str, String)],
) -> (Answer, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut waits = 0;
    loop {
        let a = export(svc, file, params, headers).await;
        if a.status != 202 {
            return (a, waits);
        }
        assert_eq!(a.header("content-type"), "text/plain; charset=utf-8");
        // A running job adds what it has written so far.
        let text = a.text();
        if text != "Wait for result" {
            assert!(written_so_far(&text).is_some(), "{text}");
        }
        waits += 1;
        assert!(
            Instant::now() < deadline,
            "still 202 after {waits} polls\n{}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rows and bytes of a running job's 202, `Wait for result. Written so far: R
/// rows, B bytes`.
fn written_so_far(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix("Wait for result. Written so far: ")?;
    let (rows, bytes) = rest.strip_suffix(" bytes")?.split_once(" rows, ")?;
    Some((rows.parse().ok()?, bytes.parse().ok()?))
}

/// The tenant's export jobs, through `/v1` (how many jobs the protocol made).
async fn jobs(svc: &Service, token: &str) -> Vec<Value> {
    let list = svc.list_exports(token, "limit=1000").await;
    list["exports"].as_array().unwrap().clone()
}

/// Today (UTC) minus `days`, as ClickHouse's clock says: the protocols refuse days
/// that are not over, so test data lives in the recent past.
fn day(svc: &Service, days_ago: u32) -> String {
    svc.clickhouse(&format!("SELECT toString(today() - {days_ago})"))
        .trim()
        .to_string()
}

/// `n` events of app `app` on `day`: session ids `first..first+n`, names ev0..ev2.
fn events(app: u64, day: &str, first: u64, n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let s = first + i;
            json!({
                "app_id": app,
                "event_time": format!("{day} {:02}:{:02}:{:02}", 8 + i / 3600, (i / 60) % 60, i % 60),
                "event_name": format!("ev{}", s % 3),
                "session_id": s,
                "event_json": format!("{{\"level\":{s},\"note\":\"row {s}, with a comma\"}}"),
            })
        })
        .collect()
}

/// Session ids of CSV rows, from the `session_id` column.
fn csv_sessions(body: &[u8]) -> Vec<u64> {
    let (header, rows) = parse_csv(body);
    let col = header.iter().position(|h| h == "session_id").unwrap();
    rows.iter().map(|r| r[col].parse().unwrap()).collect()
}

// ---------------------------------------------------------------------------------
// A. AppMetrica-style export
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn appmetrica_polls_until_the_whole_file_is_ready() {
    let svc = Service::start().await;
    let d = day(&svc, 3);
    let other = day(&svc, 4);
    svc.ingest(ACME, "events", &events(42, &d, 1000, 60)).await;
    svc.ingest(ACME, "events", &events(42, &other, 5000, 5))
        .await;
    svc.ingest(ACME, "events", &events(43, &d, 7000, 5)).await;
    svc.ingest(GLOBEX, "events", &events(42, &d, 9000, 5)).await;

    let params = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        ("fields", "event_name,session_id,event_time,event_json"),
    ];
    // Step 1: the first request queues the job and says so.
    let first = export(&svc, "events.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(first.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(first.text(), "Wait for result");

    // Step 2: the identical request, repeated, until 200 with the whole file.
    let (done, _) = poll(&svc, "events.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(done.header("content-length"), done.body.len().to_string());
    let (header, rows) = parse_csv(&done.body);
    assert_eq!(
        header,
        ["event_name", "session_id", "event_time", "event_json"]
    );
    let mut sessions = csv_sessions(&done.body);
    sessions.sort_unstable();
    assert_eq!(
        sessions,
        (1000..1060).collect::<Vec<_>>(),
        "only app 42, only that day, only this tenant"
    );
    let row = rows.iter().find(|r| r[1] == "1007").unwrap();
    assert_eq!(row[0], "ev2");
    assert_eq!(row[2], format!("{d} 08:00:07"));
    assert_eq!(
        row[3],
        "{\"level\":1007,\"note\":\"row 1007, with a comma\"}"
    );
    assert_eq!(jobs(&svc, ACME).await.len(), 1, "polling made one job");

    // The file stays at that URL: the same request (parameters in another order, the
    // list of fields repeated instead of comma-separated) answers 200 at once.
    let again = export(
        &svc,
        "events.csv",
        &[
            ("fields", "event_name"),
            ("date_until", d.as_str()),
            ("fields", "session_id,event_time"),
            ("application_id", "42"),
            ("fields", "event_json"),
            ("date_since", d.as_str()),
        ],
        &[oauth(ACME)],
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.body, done.body);
    assert_eq!(jobs(&svc, ACME).await.len(), 1, "served from the same job");

    // Bearer works as well as OAuth; another tenant's identical request is its own.
    let globex = poll(&svc, "events.csv", &params, &[bearer(GLOBEX)]).await.0;
    assert_eq!(globex.status, 200);
    let mut g = csv_sessions(&globex.body);
    g.sort_unstable();
    assert_eq!(g, (9000..9005).collect::<Vec<_>>());

    // Any other parameter is an equality filter on that field; repeated, any of them.
    let mut filtered = params.to_vec();
    filtered.push(("event_name", "ev1"));
    let (ev1, _) = poll(&svc, "events.csv", &filtered, &[oauth(ACME)]).await;
    assert_eq!(ev1.status, 200, "{}", ev1.text());
    let got: BTreeSet<u64> = csv_sessions(&ev1.body).into_iter().collect();
    let want: BTreeSet<u64> = (1000..1060).filter(|s| s % 3 == 1).collect();
    assert_eq!(got, want);
    filtered.push(("event_name", "ev2"));
    let (ev12, _) = poll(&svc, "events.csv", &filtered, &[oauth(ACME)]).await;
    let got: BTreeSet<u64> = csv_sessions(&ev12.body).into_iter().collect();
    let want: BTreeSet<u64> = (1000..1060).filter(|s| s % 3 != 0).collect();
    assert_eq!(got, want);

    // Timestamps bound the range to the second; limit caps the rows.
    let window = [
        ("application_id", "42"),
        ("date_since", &*format!("{d} 08:00:10")),
        ("date_until", &*format!("{d} 08:00:19")),
        ("fields", "session_id"),
    ];
    let (w, _) = poll(&svc, "events.csv", &window, &[oauth(ACME)]).await;
    let mut got = csv_sessions(&w.body);
    got.sort_unstable();
    assert_eq!(got, (1010..1020).collect::<Vec<_>>());
    let mut limited = window.to_vec();
    limited.push(("limit", "4"));
    let (l, _) = poll(&svc, "events.csv", &limited, &[oauth(ACME)]).await;
    assert_eq!(csv_sessions(&l.body).len(), 4);
}

/// A poll of a running request answers from the job store: what the worker recorded
/// so far, without a query of its own (polls are frequent, and a count per poll
/// would be as slow as the export itself). So it answers at once while ClickHouse is
/// frozen.
#[tokio::test]
async fn appmetrica_polls_report_recorded_progress_without_querying() {
    let ch = PrivateClickHouse::launch();
    let svc = Service::start_with(Options::default().clickhouse_url(&ch.url)).await;
    let d = day(&svc, 3);
    // The export reads click_id for about 20 s; the request's estimate does not.
    svc.slow_column("clicks", "click_id", "acme", 42, &d, 1_000_000);
    let params = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        ("fields", "click_id"),
    ];
    let first = export(&svc, "clicks.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    // Wait until the worker has recorded some rows (GET /v1 reads the job store).
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let all = jobs(&svc, ACME).await;
        let job = &all[0];
        if job["status"] == "running" && job["progress"]["rows"].as_u64() > Some(0) {
            break id_of(job);
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Freeze ClickHouse; once a heartbeat has passed, the recorded progress is final.
    ch.pause();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, job) = svc.get_json(&format!("/v1/exports/{id}"), ACME).await;
    let started = Instant::now();
    let a = export(&svc, "clicks.csv", &params, &[oauth(ACME)]).await;
    let took = started.elapsed();
    ch.resume();
    assert_eq!(a.status, 202, "{}", a.text());
    assert!(took < Duration::from_secs(1), "{took:?}");
    let recorded = (
        job["progress"]["rows"].as_u64().unwrap(),
        job["progress"]["bytes"].as_u64().unwrap(),
    );
    assert_eq!(written_so_far(&a.text()), Some(recorded), "{}", a.text());
    assert_eq!(jobs(&svc, ACME).await.len(), 1, "the poll started nothing");
}

#[tokio::test]
async fn appmetrica_date_dimensions_and_undated_requests() {
    let svc = Service::start().await;
    // Events that happened long ago, received today.
    let long_ago = day(&svc, 200);
    let today = day(&svc, 0);
    svc.ingest(ACME, "events", &events(42, &long_ago, 1, 7))
        .await;
    let by_receive = [
        ("application_id", "42"),
        ("date_since", today.as_str()),
        ("date_until", today.as_str()),
        ("date_dimension", "receive"),
        ("fields", "session_id,event_time"),
    ];
    let (a, _) = poll(&svc, "events.csv", &by_receive, &[oauth(ACME)]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(csv_sessions(&a.body).len(), 7);
    let by_event = [
        ("application_id", "42"),
        ("date_since", today.as_str()),
        ("date_until", today.as_str()),
        ("date_dimension", "default"),
        ("fields", "session_id,event_time"),
    ];
    let (b, _) = poll(&svc, "events.csv", &by_event, &[oauth(ACME)]).await;
    assert_eq!(b.status, 200);
    assert!(csv_sessions(&b.body).is_empty(), "{}", b.text());
    assert_eq!(
        b.text(),
        "session_id,event_time\n",
        "an empty result is a header"
    );

    // Without dates (as loaders ask for undated exports): the whole history.
    svc.ingest(ACME, "events", &events(42, &today, 100, 3))
        .await;
    let undated = [("application_id", "42"), ("fields", "session_id")];
    let (c, _) = poll(&svc, "events.csv", &undated, &[oauth(ACME)]).await;
    assert_eq!(c.status, 200, "{}", c.text());
    let mut all = csv_sessions(&c.body);
    all.sort_unstable();
    assert_eq!(all, [1, 2, 3, 4, 5, 6, 7, 100, 101, 102]);
}

#[tokio::test]
async fn appmetrica_no_cache_on_every_poll_never_restarts_a_pending_job() {
    // No workers: the job stays queued while the client polls.
    let mut svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 20)).await;
    let params = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        ("fields", "session_id"),
    ];
    let no_cache = [oauth(ACME), ("Cache-Control", "no-cache".to_string())];
    for _ in 0..5 {
        let a = export(&svc, "events.csv", &params, &no_cache).await;
        assert_eq!(a.status, 202, "{}", a.text());
        assert_eq!(a.text(), "Wait for result");
    }
    let pending = jobs(&svc, ACME).await;
    assert_eq!(pending.len(), 1, "no-cache restarted a queued job");
    let job_id = pending[0]["id"].clone();

    // Workers start; the client keeps sending no-cache with every poll and still gets
    // the file of the job it started.
    svc.restart_with(Options::default()).await;
    let (a, _) = poll(&svc, "events.csv", &params, &no_cache).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(csv_sessions(&a.body).len(), 20);
    let after = jobs(&svc, ACME).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], job_id);

    // That file was delivered: a new no-cache request asks for a fresh one.
    svc.ingest(ACME, "events", &events(42, &d, 100, 5)).await;
    let fresh = export(&svc, "events.csv", &params, &no_cache).await;
    assert_eq!(fresh.status, 202, "{}", fresh.text());
    let (b, _) = poll(&svc, "events.csv", &params, &no_cache).await;
    assert_eq!(b.status, 200);
    assert_eq!(
        csv_sessions(&b.body).len(),
        25,
        "the fresh file has the new rows"
    );
    assert_eq!(jobs(&svc, ACME).await.len(), 2);

    // Without Cache-Control, the file (fresh, under 24 hours old) is reused.
    let reused = export(&svc, "events.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(reused.status, 200);
    assert_eq!(reused.body, b.body);
    assert_eq!(jobs(&svc, ACME).await.len(), 2);
}

#[tokio::test]
async fn appmetrica_max_age_reuses_only_recent_files() {
    let svc = Service::start().await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 10)).await;
    let params = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        ("fields", "session_id"),
    ];
    let (a, _) = poll(&svc, "events.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(a.status, 200);
    assert_eq!(jobs(&svc, ACME).await.len(), 1);

    let hour = [oauth(ACME), ("Cache-Control", "max-age=3600".to_string())];
    let b = export(&svc, "events.csv", &params, &hour).await;
    assert_eq!(
        b.status, 200,
        "a file made a moment ago is younger than an hour"
    );
    assert_eq!(b.body, a.body);
    assert_eq!(jobs(&svc, ACME).await.len(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = [oauth(ACME), ("Cache-Control", "max-age=1".to_string())];
    let c = export(&svc, "events.csv", &params, &second).await;
    assert_eq!(c.status, 202, "the file is older than 1 second: a new job");
    assert_eq!(jobs(&svc, ACME).await.len(), 2);
    // Polling with the same header ends with that new job's file.
    let (c, _) = poll(&svc, "events.csv", &params, &second).await;
    assert_eq!(c.status, 200);
    assert_eq!(jobs(&svc, ACME).await.len(), 2);
}

#[tokio::test]
async fn appmetrica_json_has_string_values_csv_takes_a_bom_and_gzip_is_negotiated() {
    let svc = Service::start().await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 12)).await;
    // An organic install has no click time (Nullable(DateTime) → null).
    svc.ingest(
        ACME,
        "installations",
        &[
            json!({"app_id": 42, "event_time": format!("{d} 09:00:00"), "installation_id": "i-1",
                   "click_time": format!("{d} 08:59:00")}),
            json!({"app_id": 42, "event_time": format!("{d} 09:30:00"), "installation_id": "i-2"}),
        ],
    )
    .await;

    let params = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        (
            "fields",
            "event_name,session_id,event_time,event_json,app_id",
        ),
    ];
    let (a, _) = poll(&svc, "events.json", &params, &[oauth(ACME)]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), "application/json; charset=utf-8");
    let doc = a.json();
    let data = doc["data"].as_array().unwrap();
    assert_eq!(data.len(), 12);
    for row in data {
        let obj = row.as_object().unwrap();
        assert_eq!(obj.len(), 5);
        assert!(
            obj.values().all(Value::is_string),
            "every value is a string: {row}"
        );
    }
    let row = data.iter().find(|r| r["session_id"] == "5").unwrap();
    assert_eq!(row["app_id"], "42");
    assert_eq!(row["event_name"], "ev2");
    assert_eq!(row["event_time"], format!("{d} 08:00:04"));
    assert_eq!(
        row["event_json"],
        "{\"level\":5,\"note\":\"row 5, with a comma\"}"
    );

    let installs = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        ("fields", "installation_id,click_time"),
    ];
    let (i, _) = poll(&svc, "installations.json", &installs, &[oauth(ACME)]).await;
    assert_eq!(i.status, 200, "{}", i.text());
    let mut rows: Vec<Value> = i.json()["data"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["installation_id"].as_str().unwrap().to_string());
    assert_eq!(
        rows,
        [
            json!({"installation_id": "i-1", "click_time": format!("{d} 08:59:00")}),
            json!({"installation_id": "i-2", "click_time": ""}),
        ],
        "NULL is an empty string"
    );

    // use_utf8_bom=true: the CSV starts with a byte order mark.
    let mut bom = params.to_vec();
    bom.push(("use_utf8_bom", "true"));
    let (b, _) = poll(&svc, "events.csv", &bom, &[oauth(ACME)]).await;
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(&b.body[..3], b"\xEF\xBB\xBF");
    assert!(b.body[3..].starts_with(b"event_name,session_id,"));
    let (plain, _) = poll(&svc, "events.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(
        &b.body[3..],
        &plain.body[..],
        "the BOM is the only difference"
    );

    // Accept-Encoding: gzip → a gzip body that is the same file.
    let gz = export(
        &svc,
        "events.json",
        &params,
        &[oauth(ACME), ("Accept-Encoding", "gzip".to_string())],
    )
    .await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert_eq!(gunzip(&gz.body), a.body);
    // Without it, the body is not encoded.
    let raw = export(&svc, "events.json", &params, &[oauth(ACME)]).await;
    assert_eq!(raw.header("content-encoding"), "");
    assert_eq!(raw.body, a.body);
    // The 202s are compressed too when asked (clients decode every answer alike).
    let mut other = params.to_vec();
    other.push(("limit", "3"));
    let wait = export(
        &svc,
        "events.json",
        &other,
        &[oauth(ACME), ("Accept-Encoding", "gzip".to_string())],
    )
    .await;
    assert_eq!(wait.status, 202);
    assert_eq!(gunzip(&wait.body), b"Wait for result");
}

#[tokio::test]
async fn appmetrica_reports_a_failed_request_once_then_starts_over() {
    let svc = Service::start().await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 5)).await;
    // The column goes missing behind the catalog's back: the export query fails, and
    // ClickHouse's "unknown column" is not worth a retry.
    svc.clickhouse(&format!(
        "ALTER TABLE {}.events DROP COLUMN event_json",
        svc.database
    ));
    let params = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        ("fields", "session_id,event_json"),
    ];
    let (failed, _) = poll(&svc, "events.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert_eq!(failed.header("content-type"), "text/plain; charset=utf-8");
    assert!(
        failed.text().starts_with("The request failed: "),
        "{}",
        failed.text()
    );
    assert_eq!(jobs(&svc, ACME).await[0]["status"], "failed");

    // Reported once: the identical request starts a new job, which now succeeds.
    svc.clickhouse(&format!(
        "ALTER TABLE {}.events ADD COLUMN event_json String",
        svc.database
    ));
    let again = export(&svc, "events.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(again.status, 202, "{}", again.text());
    let (ok, _) = poll(&svc, "events.csv", &params, &[oauth(ACME)]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(csv_sessions(&ok.body).len(), 5);
    assert_eq!(jobs(&svc, ACME).await.len(), 2);
}

#[tokio::test]
async fn appmetrica_allows_three_enqueued_requests_per_app() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 10)).await;
    let request = |app: &'static str, limit: &'static str| {
        vec![
            ("application_id", app),
            ("date_since", "DAY"),
            ("date_until", "DAY"),
            ("fields", "session_id"),
            ("limit", limit),
        ]
    };
    let with_day = |mut p: Vec<(&'static str, &'static str)>, d: &str| -> Vec<(String, String)> {
        p.iter_mut()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    if *v == "DAY" {
                        d.to_string()
                    } else {
                        v.to_string()
                    },
                )
            })
            .collect()
    };
    let send_one = |p: Vec<(String, String)>| {
        let svc = &svc;
        async move {
            let pairs: Vec<(&str, &str)> =
                p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            export(svc, "events.csv", &pairs, &[oauth(ACME)]).await
        }
    };
    for limit in ["1", "2", "3"] {
        let a = send_one(with_day(request("42", limit), &d)).await;
        assert_eq!(a.status, 202, "{}", a.text());
    }
    let fourth = send_one(with_day(request("42", "4"), &d)).await;
    assert_eq!(fourth.status, 429);
    assert_eq!(fourth.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        fourth.text(),
        "There are already 3 enqueued queries for given application_id. Wait until they are completed."
    );
    // Polling one of the three is not a new request.
    let poll_first = send_one(with_day(request("42", "1"), &d)).await;
    assert_eq!(poll_first.status, 202);
    // The quota is per app.
    let other_app = send_one(with_day(request("43", "1"), &d)).await;
    assert_eq!(other_app.status, 202, "{}", other_app.text());
    assert_eq!(jobs(&svc, ACME).await.len(), 4);
}

#[tokio::test]
async fn appmetrica_splits_a_too_large_result_into_parts() {
    let svc =
        Service::start_with(Options::default().env("LOGPORT_COMPAT_MAX_RESPONSE_BYTES", "12000"))
            .await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 200)).await;
    let base = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        ("fields", "event_id,session_id,event_json"),
    ];
    // The whole result does not fit one response: 400 before any job is queued.
    let whole = export(&svc, "events.csv", &base, &[oauth(ACME)]).await;
    assert_eq!(whole.status, 400, "{}", whole.text());
    assert_eq!(whole.header("content-type"), "text/plain; charset=utf-8");
    assert!(
        whole.text().contains("Try to use more parts."),
        "{}",
        whole.text()
    );
    assert!(jobs(&svc, ACME).await.is_empty());

    // A loader retries with parts_count/part_number: the parts are disjoint and
    // together hold every row.
    let mut seen: Vec<u64> = Vec::new();
    let mut event_ids = BTreeSet::new();
    for n in 0..4 {
        let number = n.to_string();
        let mut p = base.to_vec();
        p.push(("parts_count", "4"));
        p.push(("part_number", &number));
        let (a, _) = poll(&svc, "events.csv", &p, &[oauth(ACME)]).await;
        assert_eq!(a.status, 200, "part {n}: {}", a.text());
        assert!(a.body.len() <= 12000);
        let part = csv_sessions(&a.body);
        assert!(!part.is_empty(), "part {n} is empty");
        let (_, rows) = parse_csv(&a.body);
        event_ids.extend(rows.iter().map(|r| r[0].clone()));
        seen.extend(part);
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a row is in two parts");
    assert_eq!(unique, (1..201).collect::<BTreeSet<u64>>());
    assert_eq!(event_ids.len(), 200);
    // The split is deterministic: the same part again is the same rows.
    let mut p = base.to_vec();
    p.push(("parts_count", "4"));
    p.push(("part_number", "2"));
    p.push(("event_name", "ev0"));
    let (a, _) = poll(&svc, "events.csv", &p, &[oauth(ACME)]).await;
    assert!(csv_sessions(&a.body).iter().all(|s| s % 3 == 0));

    // part_number must be below parts_count.
    let mut bad = base.to_vec();
    bad.push(("parts_count", "4"));
    bad.push(("part_number", "4"));
    let a = export(&svc, "events.csv", &bad, &[oauth(ACME)]).await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn appmetrica_errors_are_plain_text() {
    let svc = Service::start().await;
    let d = day(&svc, 3);
    let good = [
        ("application_id", "42"),
        ("date_since", d.as_str()),
        ("date_until", d.as_str()),
        ("fields", "session_id"),
    ];
    let check = |a: &Answer, status: u16, needle: &str| {
        assert_eq!(a.status, status, "{}", a.text());
        assert_eq!(a.header("content-type"), "text/plain; charset=utf-8");
        assert!(a.text().contains(needle), "{} lacks {needle}", a.text());
    };
    let a = export(&svc, "events.csv", &good, &[]).await;
    check(&a, 401, "Authorization");
    let a = export(&svc, "events.csv", &good, &[oauth("not-a-known-token")]).await;
    check(&a, 401, "Invalid OAuth token");
    let a = export(&svc, "nope.csv", &good, &[oauth(ACME)]).await;
    check(&a, 404, "nope");
    let a = export(&svc, "events.xml", &good, &[oauth(ACME)]).await;
    check(&a, 404, "events.xml");
    let without = |name: &str| -> Vec<(&str, &str)> {
        good.iter().copied().filter(|(k, _)| *k != name).collect()
    };
    for name in ["application_id", "date_since", "date_until", "fields"] {
        let a = export(&svc, "events.csv", &without(name), &[oauth(ACME)]).await;
        check(&a, 400, name);
    }
    let mut p = good.to_vec();
    p.push(("colour", "red"));
    let a = export(&svc, "events.csv", &p, &[oauth(ACME)]).await;
    check(&a, 400, "colour");
    let mut p = without("date_since");
    p.push(("date_since", "05.11.2026"));
    let a = export(&svc, "events.csv", &p, &[oauth(ACME)]).await;
    check(&a, 400, "date_since");
    let mut p = good.to_vec();
    p.push(("date_dimension", "server"));
    let a = export(&svc, "events.csv", &p, &[oauth(ACME)]).await;
    check(&a, 400, "date_dimension");
    let mut p = without("fields");
    p.push(("fields", "session_id,no_such_field"));
    let a = export(&svc, "events.csv", &p, &[oauth(ACME)]).await;
    check(&a, 400, "no_such_field");
    assert!(jobs(&svc, ACME).await.is_empty(), "no error made a job");

    // The availability probe.
    let status = send(
        &svc,
        reqwest::Method::GET,
        "/management/v1/logsapi/status",
        &[],
        &[oauth(ACME)],
    )
    .await;
    assert_eq!(status.status, 200);
    assert_eq!(
        status.json(),
        json!({"logs_api_availability_status": "enabled"})
    );
    let status = send(
        &svc,
        reqwest::Method::GET,
        "/management/v1/logsapi/status",
        &[],
        &[],
    )
    .await;
    assert_eq!(status.status, 401);
    assert_eq!(status.json()["errors"][0]["error_type"], "unauthorized");
}

// ---------------------------------------------------------------------------------
// B. Metrica-style log requests
// ---------------------------------------------------------------------------------

const NOT_PROCESSED: &str = "Only log of requests in status 'processed' can be downloaded";

async fn metrica(
    svc: &Service,
    method: reqwest::Method,
    path: &str,
    params: &[(&str, &str)],
    token: (&'static str, String),
) -> Answer {
    send(
        svc,
        method,
        &format!("/management/v1/counter/{path}"),
        params,
        &[token],
    )
    .await
}

/// A Metrica `GET` without query parameters.
async fn metrica_get(svc: &Service, path: &str, token: (&'static str, String)) -> Answer {
    metrica(svc, reqwest::Method::GET, path, &[], token).await
}

/// A Metrica `POST` (its parameters go in the query string, as clients send them).
async fn metrica_post(
    svc: &Service,
    path: &str,
    params: &[(&str, &str)],
    token: (&'static str, String),
) -> Answer {
    metrica(svc, reqwest::Method::POST, path, params, token).await
}

/// A Metrica error: status, the JSON shape, its type and message.
fn metrica_error(a: &Answer, status: u16, error_type: &str) -> String {
    assert_eq!(a.status, status, "{}", a.text());
    assert!(
        a.header("content-type").starts_with("application/json"),
        "{}",
        a.header("content-type")
    );
    let body = a.json();
    assert_eq!(body["code"], status, "{body}");
    assert_eq!(body["errors"][0]["error_type"], error_type, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap().to_string();
    assert_eq!(body["message"], message.as_str(), "{body}");
    message
}

/// Polls `info` until the request leaves `created`; returns the LogRequest.
async fn wait_processed(svc: &Service, counter: u64, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = metrica_get(svc, &format!("{counter}/logrequest/{id}"), oauth(ACME)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let lr = a.json()["log_request"].clone();
        if lr["status"] != "created" {
            return lr;
        }
        assert!(Instant::now() < deadline, "still created: {lr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Downloads parts from 0 until `Incorrect part number`, as clients walk them.
async fn download_all(svc: &Service, counter: u64, id: u64) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    loop {
        let a = metrica_get(
            svc,
            &format!("{counter}/logrequest/{id}/part/{}/download", parts.len()),
            oauth(ACME),
        )
        .await;
        if a.status == 400 {
            assert_eq!(
                metrica_error(&a, 400, "invalid_parameter"),
                "Incorrect part number"
            );
            return parts;
        }
        assert_eq!(a.status, 200, "{}", a.text());
        parts.push(a.body);
    }
}

/// Session ids of a TSV part (header row first).
fn tsv_sessions(part: &[u8], header: &[&str]) -> Vec<u64> {
    let text = std::str::from_utf8(part).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap().split('\t').collect::<Vec<_>>(),
        header
    );
    let col = header.iter().position(|h| *h == "session_id").unwrap();
    lines
        .map(|l| l.split('\t').nth(col).unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn metrica_log_request_from_evaluate_to_clean() {
    // Small parts, so a request has several.
    let svc =
        Service::start_with(Options::default().env("LOGPORT_COMPAT_PART_MAX_BYTES", "1024")).await;
    let d1 = day(&svc, 3);
    let d2 = day(&svc, 2);
    svc.ingest(ACME, "events", &events(42, &d1, 1, 60)).await;
    svc.ingest(ACME, "events", &events(42, &d2, 101, 40)).await;
    svc.ingest(ACME, "events", &events(43, &d1, 500, 10)).await;
    let asked = [
        ("date1", d1.as_str()),
        ("date2", d2.as_str()),
        ("source", "events"),
        ("fields", "event_name,session_id"),
        ("fields", "event_time"),
    ];

    // evaluate
    let a = metrica(
        &svc,
        reqwest::Method::GET,
        "42/logrequests/evaluate",
        &asked,
        oauth(ACME),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let ev = a.json();
    assert_eq!(ev["log_request_evaluation"]["possible"], true, "{ev}");
    assert!(
        ev["log_request_evaluation"]["max_possible_day_quantity"]
            .as_u64()
            .unwrap()
            >= 2
    );

    // create: parameters in the query string, an empty body of any content type.
    let resp = svc
        .http
        .post(with_query(
            &svc.url("/management/v1/counter/42/logrequests"),
            &[asked.as_slice(), &[("attribution", "LASTSIGN")]].concat(),
        ))
        .header("Authorization", format!("OAuth {ACME}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    let a = Answer::of(resp).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let lr = a.json()["log_request"].clone();
    let id = lr["request_id"].as_u64().expect("request_id is an integer");
    assert_eq!(id, 1);
    assert_eq!(lr["counter_id"], 42);
    assert_eq!(lr["source"], "events");
    assert_eq!(lr["date1"], d1.as_str());
    assert_eq!(lr["date2"], d2.as_str());
    assert_eq!(
        lr["fields"],
        json!(["event_name", "session_id", "event_time"])
    );
    assert_eq!(lr["attribution"], "LASTSIGN");
    assert!(
        ["created", "processed"].contains(&lr["status"].as_str().unwrap()),
        "{lr}"
    );

    // info until processed
    let lr = wait_processed(&svc, 42, id).await;
    assert_eq!(lr["status"], "processed", "{lr}");
    let parts = lr["parts"].as_array().unwrap();
    assert!(parts.len() >= 2, "1 KiB parts: {lr}");
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["part_number"], i as u64, "parts number from 0");
    }
    let sizes: Vec<u64> = parts.iter().map(|p| p["size"].as_u64().unwrap()).collect();
    assert_eq!(lr["size"].as_u64().unwrap(), sizes.iter().sum::<u64>());

    // list
    let a = metrica_get(&svc, "42/logrequests", bearer(ACME)).await;
    assert_eq!(a.status, 200);
    let listed = a.json()["requests"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0], lr);
    let a = metrica_get(&svc, "43/logrequests", bearer(ACME)).await;
    assert_eq!(
        a.json(),
        json!({"requests": []}),
        "requests are per counter"
    );

    // download parts from 0 until `Incorrect part number`
    let files = download_all(&svc, 42, id).await;
    assert_eq!(files.len(), parts.len());
    let mut sessions = Vec::new();
    for (f, size) in files.iter().zip(&sizes) {
        assert_eq!(f.len() as u64, *size);
        sessions.extend(tsv_sessions(f, &["event_name", "session_id", "event_time"]));
    }
    sessions.sort_unstable();
    let want: Vec<u64> = (1..61).chain(101..141).collect();
    assert_eq!(
        sessions, want,
        "every row of counter 42 in those days, once"
    );

    // clean: the files go, the status says who removed them.
    let a = metrica_post(&svc, &format!("42/logrequest/{id}/clean"), &[], oauth(ACME)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["log_request"]["status"], "cleaned_by_user");
    let a = metrica_get(
        &svc,
        &format!("42/logrequest/{id}/part/0/download"),
        oauth(ACME),
    )
    .await;
    assert_eq!(metrica_error(&a, 400, "invalid_parameter"), NOT_PROCESSED);
    let a = metrica_get(&svc, &format!("42/logrequest/{id}"), oauth(ACME)).await;
    assert_eq!(a.json()["log_request"]["status"], "cleaned_by_user");
    // Cleaning twice is harmless.
    let a = metrica_post(&svc, &format!("42/logrequest/{id}/clean"), &[], oauth(ACME)).await;
    assert_eq!(a.status, 200);

    // The next request gets the next number.
    let a = metrica_post(&svc, "42/logrequests", &asked, bearer(ACME)).await;
    assert_eq!(a.json()["log_request"]["request_id"], 2);
}

#[tokio::test]
async fn metrica_download_waits_for_processed_and_cancel_stops_a_request() {
    let mut svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 10)).await;
    let asked = [
        ("date1", d.as_str()),
        ("date2", d.as_str()),
        ("source", "events"),
        ("fields", "session_id"),
    ];
    let a = metrica_post(&svc, "42/logrequests", &asked, oauth(ACME)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let first = a.json()["log_request"]["request_id"].as_u64().unwrap();
    assert_eq!(a.json()["log_request"]["status"], "created");

    // Not processed yet: the exact message clients wait on.
    let a = metrica_get(
        &svc,
        &format!("42/logrequest/{first}/part/0/download"),
        oauth(ACME),
    )
    .await;
    assert_eq!(metrica_error(&a, 400, "invalid_parameter"), NOT_PROCESSED);
    // Cleaning is for processed requests.
    let a = metrica_post(
        &svc,
        &format!("42/logrequest/{first}/clean"),
        &[],
        oauth(ACME),
    )
    .await;
    metrica_error(&a, 400, "invalid_parameter");

    // cancel
    let a = metrica_post(
        &svc,
        &format!("42/logrequest/{first}/cancel"),
        &[],
        oauth(ACME),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["log_request"]["status"], "canceled");
    let a = metrica_get(
        &svc,
        &format!("42/logrequest/{first}/part/0/download"),
        oauth(ACME),
    )
    .await;
    assert_eq!(metrica_error(&a, 400, "invalid_parameter"), NOT_PROCESSED);

    // A second request, then workers: it is processed, the canceled one never runs.
    let a = metrica_post(&svc, "42/logrequests", &asked, oauth(ACME)).await;
    let second = a.json()["log_request"]["request_id"].as_u64().unwrap();
    assert_eq!(second, first + 1);
    svc.restart_with(Options::default()).await;
    let lr = wait_processed(&svc, 42, second).await;
    assert_eq!(lr["status"], "processed");
    let files = download_all(&svc, 42, second).await;
    assert_eq!(files.len(), 1);
    assert_eq!(tsv_sessions(&files[0], &["session_id"]).len(), 10);
    // A processed request cannot be canceled.
    let a = metrica_post(
        &svc,
        &format!("42/logrequest/{second}/cancel"),
        &[],
        oauth(ACME),
    )
    .await;
    metrica_error(&a, 400, "invalid_parameter");
    let a = metrica_get(&svc, &format!("42/logrequest/{first}"), oauth(ACME)).await;
    assert_eq!(a.json()["log_request"]["status"], "canceled");
}

#[tokio::test]
async fn metrica_counter_quota_counts_processed_logs_until_cleaned() {
    let mut svc = Service::start().await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 80)).await;
    let asked = [
        ("date1", d.as_str()),
        ("date2", d.as_str()),
        ("source", "events"),
        ("fields", "session_id,event_json"),
    ];
    let a = metrica_post(&svc, "42/logrequests", &asked, oauth(ACME)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let lr = wait_processed(&svc, 42, 1).await;
    let size = lr["size"].as_u64().unwrap();

    // A quota of one and a half such requests: the processed one counts against it.
    let quota = (size + size / 2).to_string();
    svc.restart_with(Options::default().env("LOGPORT_COMPAT_COUNTER_QUOTA_BYTES", &quota))
        .await;
    async fn evaluate(svc: &Service, asked: &[(&str, &str)]) -> Value {
        let a = metrica(
            svc,
            reqwest::Method::GET,
            "42/logrequests/evaluate",
            asked,
            oauth(ACME),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["log_request_evaluation"].clone()
    }
    let ev = evaluate(&svc, &asked).await;
    assert_eq!(ev["possible"], false, "{ev}");
    let a = metrica_post(&svc, "42/logrequests", &asked, oauth(ACME)).await;
    let message = metrica_error(&a, 429, "quota_requests");
    assert!(message.contains("clean"), "{message}");
    // Another counter has its own quota.
    let a = metrica(
        &svc,
        reqwest::Method::GET,
        "43/logrequests/evaluate",
        &asked,
        oauth(ACME),
    )
    .await;
    assert_eq!(a.json()["log_request_evaluation"]["possible"], true);

    // clean frees it.
    let a = metrica_post(&svc, "42/logrequest/1/clean", &[], oauth(ACME)).await;
    assert_eq!(a.status, 200);
    let ev = evaluate(&svc, &asked).await;
    assert_eq!(ev["possible"], true, "{ev}");
    assert!(ev["max_possible_day_quantity"].as_u64().unwrap() >= 1);
    let a = metrica_post(&svc, "42/logrequests", &asked, oauth(ACME)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["log_request"]["request_id"], 2);

    // A request that would be cut into more parts than one export may have is refused
    // before it is queued (parts of 1 KiB, at most 2 of them).
    assert!(size > 2048, "{size}");
    svc.restart_with(
        Options::default()
            .env("LOGPORT_COMPAT_PART_MAX_BYTES", "1024")
            .env("LOGPORT_EXPORT_MAX_PARTS", "2"),
    )
    .await;
    let a = metrica_post(&svc, "42/logrequests", &asked, oauth(ACME)).await;
    let message = metrica_error(&a, 400, "invalid_parameter");
    assert!(message.contains("at most 2 parts"), "{message}");
}

#[tokio::test]
async fn metrica_validates_parameters_and_tokens_with_its_error_json() {
    let svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let d = day(&svc, 3);
    let today = day(&svc, 0);
    let tomorrow = svc
        .clickhouse("SELECT toString(today() + 1)")
        .trim()
        .to_string();
    let long_ago = day(&svc, 400);
    let asked = |date1: &str, date2: &str| -> Vec<(String, String)> {
        vec![
            ("date1".into(), date1.into()),
            ("date2".into(), date2.into()),
            ("source".into(), "events".into()),
            ("fields".into(), "session_id".into()),
        ]
    };
    let create = |params: Vec<(String, String)>, token: (&'static str, String)| {
        let svc = &svc;
        async move {
            let pairs: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            metrica_post(svc, "42/logrequests", &pairs, token).await
        }
    };

    // date2 may not be today or later; one year at most; date1 not after date2.
    for (date1, date2) in [
        (d.as_str(), today.as_str()),
        (d.as_str(), tomorrow.as_str()),
        (long_ago.as_str(), d.as_str()),
        (d.as_str(), long_ago.as_str()),
        ("2026-02-30", d.as_str()),
    ] {
        let a = create(asked(date1, date2), oauth(ACME)).await;
        metrica_error(&a, 400, "invalid_parameter");
    }
    let mut no_fields = asked(&d, &d);
    no_fields.retain(|(k, _)| k != "fields");
    metrica_error(
        &create(no_fields, oauth(ACME)).await,
        400,
        "missing_parameter",
    );
    let mut no_source = asked(&d, &d);
    no_source.retain(|(k, _)| k != "source");
    metrica_error(
        &create(no_source, oauth(ACME)).await,
        400,
        "missing_parameter",
    );
    let mut bad_source = asked(&d, &d);
    bad_source[2].1 = "visits".into();
    metrica_error(
        &create(bad_source, oauth(ACME)).await,
        400,
        "invalid_parameter",
    );
    let mut bad_field = asked(&d, &d);
    bad_field[3].1 = "session_id,ym:s:visitID".into();
    metrica_error(
        &create(bad_field, oauth(ACME)).await,
        400,
        "invalid_parameter",
    );

    // Tokens: none is 401 unauthorized, an unknown one 403 invalid_token; OAuth and
    // Bearer both work.
    let a = send(
        &svc,
        reqwest::Method::POST,
        "/management/v1/counter/42/logrequests",
        &[
            ("date1", d.as_str()),
            ("date2", d.as_str()),
            ("source", "events"),
            ("fields", "session_id"),
        ],
        &[],
    )
    .await;
    metrica_error(&a, 401, "unauthorized");
    metrica_error(
        &create(asked(&d, &d), oauth("not-a-known-token")).await,
        403,
        "invalid_token",
    );
    let a = create(asked(&d, &d), bearer(ACME)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let id = a.json()["log_request"]["request_id"].as_u64().unwrap();
    let a = create(asked(&d, &d), oauth(GLOBEX)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json()["log_request"]["request_id"],
        1,
        "numbers are per account"
    );

    // Unknown requests: another counter's, another account's, a number never given.
    assert_eq!(id, 1);
    let a = create(asked(&d, &d), oauth(ACME)).await;
    assert_eq!(a.json()["log_request"]["request_id"], 2);
    for (path, token) in [
        ("43/logrequest/1", oauth(ACME)),
        ("42/logrequest/2", oauth(GLOBEX)),
        ("42/logrequest/99", oauth(ACME)),
    ] {
        let a = metrica_get(&svc, path, token).await;
        metrica_error(&a, 404, "not_found");
    }
    let a = metrica_get(&svc, "42/logrequest/seven", oauth(ACME)).await;
    metrica_error(&a, 400, "invalid_parameter");
    let a = metrica_get(&svc, "app/logrequests", oauth(ACME)).await;
    metrica_error(&a, 400, "invalid_parameter");
    let a = metrica_get(
        &svc,
        &format!("42/logrequest/{id}/part/x/download"),
        oauth(ACME),
    )
    .await;
    metrica_error(&a, 400, "invalid_parameter");
}

#[tokio::test]
async fn metrica_failed_processing_is_processing_failed() {
    let svc = Service::start().await;
    let d = day(&svc, 3);
    svc.ingest(ACME, "events", &events(42, &d, 1, 5)).await;
    // The column goes missing behind the catalog's back: the request cannot be made.
    svc.clickhouse(&format!(
        "ALTER TABLE {}.events DROP COLUMN event_json",
        svc.database
    ));
    let asked = [
        ("date1", d.as_str()),
        ("date2", d.as_str()),
        ("source", "events"),
        ("fields", "session_id,event_json"),
    ];
    let a = metrica_post(&svc, "42/logrequests", &asked, oauth(ACME)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let lr = wait_processed(&svc, 42, 1).await;
    assert_eq!(lr["status"], "processing_failed", "{lr}");
    assert!(lr.get("parts").is_none());
    let a = metrica_get(&svc, "42/logrequest/1/part/0/download", oauth(ACME)).await;
    assert_eq!(metrica_error(&a, 400, "invalid_parameter"), NOT_PROCESSED);
}
