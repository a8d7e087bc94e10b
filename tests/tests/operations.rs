//! Running Logport for many customers, end to end: retention drops expired partitions
//! (back-dated rows written straight into ClickHouse) and exports never return expired
//! rows; Prometheus metrics, readiness and JSON logs; a two-shard ClickHouse cluster
//! (two private servers, Distributed tables); two replicas sharing one PostgreSQL job
//! store and one S3 bucket under concurrent ingest and exports; a job store restored
//! from a `pg_dump`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logport_tests::*;

const DAY_SECS: i64 = 86_400;

/// `YYYY-MM-DD` of a Unix second, as ClickHouse (UTC) prints it.
fn date_of(svc: &Service, secs: i64) -> String {
    svc.clickhouse(&format!("SELECT toDate(toDateTime({secs}))"))
        .trim()
        .to_string()
}

/// Writes one row straight into a table, as if it had been received at `received`
/// (ingest always stamps "now"): how a test makes old partitions.
fn backdate(url: &str, table: &str, key: (&str, &str), received: i64) -> String {
    let sql = format!(
        "INSERT INTO {table} (tenant_id, app_id, event_id, event_time, received_time, {}) \
         SELECT 'acme', toUInt64(0), toUUID('{}'), toDateTime({received}), toDateTime({received}), '{}'",
        key.0,
        uuid::Uuid::new_v4(),
        key.1
    );
    clickhouse_blocking(url, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The values of one column, from SQL.
fn column(url: &str, sql: &str) -> BTreeSet<String> {
    clickhouse_blocking(url, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .lines()
        .map(String::from)
        .collect()
}

/// Every record of a JSON-lines export, through a replica.
async fn download_jsonl(svc: &Service, token: &str, job: &Value) -> Vec<Value> {
    let listed = job["parts"].as_array().expect("parts");
    let mut rows = Vec::new();
    for (p, bytes) in listed.iter().zip(svc.download_parts(token, job).await) {
        let part = parse_jsonl(&bytes);
        assert_eq!(part.len() as u64, p["rows"].as_u64().unwrap(), "{p}");
        rows.extend(part);
    }
    rows
}

fn strings(rows: &[Value], field: &str) -> Vec<String> {
    rows.iter()
        .map(|r| r[field].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. Retention.
// ---------------------------------------------------------------------------------

/// Waits until the service has finished a retention pass (its metrics say so).
async fn wait_for_retention_pass(svc: &Service) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = svc.metrics_text().await;
        if text.contains("logport_retention_runs_total{outcome=\"ok\"}") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no retention pass\n{}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the server has table TTL, as the store decides it (`ServerCaps::ttl` in
/// `crates/store/src/server.rs`: 21.x and later).
fn server_has_ttl(svc: &Service) -> bool {
    let version = svc.clickhouse("SELECT version()");
    let major: u32 = version.trim().split('.').next().unwrap().parse().unwrap();
    major >= 21
}

/// Retention on both kinds of server. On 18.16 (no TTL) expired rows stay on disk
/// until `logport retention` drops their partitions, and only the exports' bound
/// hides them. From 21.x `migrate` also gives bounded tables a TTL, and the server
/// may remove expired rows by itself at any time (26.9 does so as soon as a
/// back-dated part is written): there the test holds what Logport guarantees on every
/// server (exports, previews and estimates never show an expired row; after a
/// retention pass no expired row or partition is left; the scheduled pass drops
/// partitions) and checks the TTL clauses; its last step stops TTL merges on one
/// table so that the scheduled pass, not TTL, must be what removes the row.
#[tokio::test]
async fn retention_drops_expired_partitions_and_exports_never_return_expired_rows() {
    // The start-up pass runs before the back-dated rows exist, and the next is an
    // hour away: until `logport retention` runs, expired rows are on disk (unless the
    // server's TTL removed them) and only the export's bound hides them.
    let options = Options::default()
        .env("LOGPORT_RETENTION", "clicks=30,push_tokens=40")
        .env("LOGPORT_RETENTION_INTERVAL", "1h");
    let mut svc = Service::start_with(options.clone()).await;
    wait_for_retention_pass(&svc).await;
    let db = svc.database.clone();
    let ch = svc.clickhouse.clone();
    let ttl = server_has_ttl(&svc);
    let now = now_secs();
    svc.ingest(
        ACME,
        "api_postbacks",
        &[json!({"request_id": "fresh", "event_time": now})],
    )
    .await;
    let postbacks = format!("{db}.api_postbacks");
    for (id, age_days) in [("kept-3d", 3), ("old-8d", 8), ("old-10d", 10)] {
        backdate(
            &ch,
            &postbacks,
            ("request_id", id),
            now - age_days * DAY_SECS,
        );
    }
    let clicks = format!("{db}.clicks");
    for (id, age_days) in [("c-10d", 10), ("c-40d", 40), ("c-400d", 400)] {
        backdate(&ch, &clicks, ("click_id", id), now - age_days * DAY_SECS);
    }
    backdate(
        &ch,
        &format!("{db}.push_tokens"),
        ("token", "t-100d"),
        now - 100 * DAY_SECS,
    );
    backdate(
        &ch,
        &format!("{db}.events"),
        ("event_name", "e-1000d"),
        now - 1000 * DAY_SECS,
    );

    // api_postbacks keeps 7 days (the catalog): the export, the preview and the
    // estimate see only the fresh and the 3-day-old rows, though all four are stored.
    let request = json!({
        "slice": "api_postbacks", "date_dimension": "received",
        "date_since": date_of(&svc, now - 20 * DAY_SECS), "date_until": date_of(&svc, now + DAY_SECS),
        "fields": ["request_id"], "format": "jsonl",
    });
    let (_, parts) = svc.export(ACME, &request).await;
    let exported: BTreeSet<String> = parts
        .iter()
        .flat_map(|p| strings(&parse_jsonl(p), "request_id"))
        .collect();
    assert_eq!(exported, BTreeSet::from(["fresh".into(), "kept-3d".into()]));
    let preview_request = json!({"date_dimension": "received", "date_since": request["date_since"],
        "date_until": request["date_until"], "fields": ["request_id"], "limit": 100});
    let (_, preview) = status_and_json(
        svc.post_json("/v1/logs/api_postbacks/preview", ACME, &preview_request)
            .await,
    )
    .await;
    assert_eq!(preview["rows"], 2, "{preview}");
    let (_, evaluate) =
        status_and_json(svc.post_json("/v1/exports/evaluate", ACME, &request).await).await;
    assert_eq!(evaluate["estimated_rows"], 2, "{evaluate}");
    let ids = |table: &str, col: &str| column(&ch, &format!("SELECT {col} FROM {db}.{table}"));
    let stored = ids("api_postbacks", "request_id");
    let all_four: BTreeSet<String> = ["fresh", "kept-3d", "old-8d", "old-10d"]
        .map(String::from)
        .into();
    if ttl {
        // TTL may already have removed the expired rows, never a live one.
        assert!(
            stored.is_subset(&all_four) && stored.contains("fresh") && stored.contains("kept-3d"),
            "{stored:?}"
        );
        // `migrate` gave each bounded table its retention as TTL, overrides included.
        for (table, days) in [("api_postbacks", 7), ("clicks", 30), ("push_tokens", 40)] {
            let ddl = svc.clickhouse(&format!("SHOW CREATE TABLE {db}.{table}"));
            assert!(
                ddl.contains(&format!("TTL received_time + toIntervalDay({days})")),
                "{table}: {ddl}"
            );
        }
        let ddl = svc.clickhouse(&format!("SHOW CREATE TABLE {db}.events"));
        assert!(
            !ddl.contains("TTL"),
            "events keep their rows forever: {ddl}"
        );
    } else {
        assert_eq!(stored, all_four, "expired rows are still stored");
    }
    // The override shortens clicks to 30 days for exports too.
    let (_, parts) = svc
        .export(
            ACME,
            &json!({"slice": "clicks", "date_dimension": "received",
                    "date_since": date_of(&svc, now - 300 * DAY_SECS), "date_until": date_of(&svc, now),
                    "fields": ["click_id"], "format": "jsonl"}),
        )
        .await;
    assert_eq!(strings(&parse_jsonl(&parts[0]), "click_id"), ["c-10d"]);

    // One pass of `logport retention`: whole expired partitions go, on every table.
    let (ok, printed, stderr) = svc.logport_cli(&["retention"]);
    assert!(ok, "logport retention: {stderr}");
    // One line per dropped partition: slice, partition, rows, server. Every expired
    // partition that still has a part is dropped; on a TTL server some may already
    // have gone with their rows.
    let mut dropped: Vec<(String, u64)> = printed
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "{printed}");
            (f[0].to_string(), f[2].parse().unwrap())
        })
        .collect();
    dropped.sort();
    let expected: Vec<(String, u64)> = [
        ("api_postbacks", 1),
        ("api_postbacks", 1),
        ("clicks", 1),
        ("clicks", 1),
        ("push_tokens", 1),
    ]
    .map(|(s, r)| (s.to_string(), r))
    .into();
    if ttl {
        assert!(dropped.len() <= 5, "{printed}");
        for (slice, rows) in &dropped {
            assert!(
                expected.iter().any(|(s, _)| s == slice) && *rows <= 1,
                "{printed}"
            );
        }
    } else {
        assert_eq!(dropped, expected, "{printed}");
    }
    assert_eq!(
        ids("api_postbacks", "request_id"),
        BTreeSet::from(["fresh".into(), "kept-3d".into()])
    );
    assert_eq!(ids("clicks", "click_id"), BTreeSet::from(["c-10d".into()]));
    assert!(ids("push_tokens", "token").is_empty(), "a month partition");
    assert_eq!(
        ids("events", "event_name"),
        BTreeSet::from(["e-1000d".into()]),
        "events keep their rows forever"
    );
    let parts_left = column(
        &ch,
        &format!(
            "SELECT DISTINCT partition FROM system.parts WHERE database = '{db}' \
             AND table = 'api_postbacks' AND active"
        ),
    );
    assert_eq!(parts_left.len(), 2, "{parts_left:?}");

    // The schedule in `serve` does the same on its own. Where the server has TTL, its
    // TTL merges stop on this table first, so the row can only go with its partition.
    svc.restart_with(options.env("LOGPORT_RETENTION_INTERVAL", "1s"))
        .await;
    if ttl {
        svc.clickhouse(&format!("SYSTEM STOP TTL MERGES {postbacks}"));
    }
    backdate(
        &ch,
        &postbacks,
        ("request_id", "old-9d"),
        now - 9 * DAY_SECS,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids("api_postbacks", "request_id").contains("old-9d") {
        assert!(
            Instant::now() < deadline,
            "the scheduled pass did not drop it\n{}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let partition = svc
        .clickhouse(&format!(
            "SELECT toYYYYMMDD(toDateTime({}))",
            now - 9 * DAY_SECS
        ))
        .trim()
        .to_string();
    let logs = svc.logs();
    assert!(
        logs.lines().map(strip_ansi).any(|l| {
            l.contains("dropped an expired partition")
                && l.contains("slice=api_postbacks")
                && l.contains(&format!("partition={partition}"))
                && l.contains("rows=1")
        }),
        "the scheduled pass did not log dropping partition {partition} with its row\n{logs}"
    );
}

// ---------------------------------------------------------------------------------
// 2. Metrics, readiness, JSON logs.
// ---------------------------------------------------------------------------------

/// `name{labels} value` lines of a Prometheus text page.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the one sample whose name and labels contain all of `parts`.
fn sample(all: &BTreeMap<String, f64>, parts: &[&str]) -> f64 {
    let hits: Vec<(&String, &f64)> = all
        .iter()
        .filter(|(k, _)| parts.iter().all(|p| k.contains(p)))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{parts:?} matches {hits:?} in {:#?}",
        all.keys()
    );
    *hits[0].1
}

async fn scrape(svc: &Service) -> BTreeMap<String, f64> {
    let resp = svc.get("/metrics", "scrape-me").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    samples(&resp.text().await.unwrap())
}

/// Polls `/readyz` (with `token`, if any) until it answers `want`; returns the body.
async fn ready_within(svc: &Service, token: Option<&str>, want: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let mut rb = svc.http.get(svc.url("/readyz"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/readyz` under load and with a backend down: hundreds of concurrent calls make at most one
/// probe a second (one at a time), counted by `logport_readiness_probes_total` and by
/// the ClickHouse pings themselves; an anonymous caller learns which check failed but
/// never the backend's error text (which names hosts and ports), an admin token does,
/// and a bad token is simply anonymous.
#[tokio::test]
async fn readiness_is_cheap_under_load_and_hides_backend_errors_from_anonymous_callers() {
    let ch = PrivateClickHouse::launch();
    let svc = Service::start_with(Options::default().clickhouse_url(&ch.url)).await;
    let pings = |m: &BTreeMap<String, f64>| {
        m.iter()
            .filter(|(k, _)| {
                k.starts_with("logport_clickhouse_query_duration_seconds_count")
                    && k.contains("op=\"ping\"")
            })
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    let probes = |m: &BTreeMap<String, f64>| {
        m.get("logport_readiness_probes_total")
            .copied()
            .unwrap_or(0.0)
    };
    let before = scrape(&svc).await;
    // 32 clients calling back to back for 2.5 seconds.
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (http, url) = (svc.http.clone(), svc.url("/readyz"));
        clients.spawn(async move {
            let mut n = 0u32;
            while started.elapsed() < Duration::from_millis(2500) {
                let resp = http.get(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                n += 1;
            }
            n
        });
    }
    let mut calls = 0;
    while let Some(n) = clients.join_next().await {
        calls += n.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(calls >= 200, "only {calls} calls");
    let after = scrape(&svc).await;
    let bound = elapsed.as_secs_f64().ceil() + 1.0;
    let (made, pinged) = (
        probes(&after) - probes(&before),
        pings(&after) - pings(&before),
    );
    eprintln!("{calls} /readyz calls in {elapsed:?}: {made} probes, {pinged} ClickHouse pings");
    assert!(made >= 1.0 && made <= bound, "{made} probes in {elapsed:?}");
    assert!(pinged <= bound, "{pinged} ClickHouse pings in {elapsed:?}");

    // ClickHouse goes away.
    ch.kill();
    let body = ready_within(&svc, None, 503, Duration::from_secs(5)).await;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["clickhouse"], json!({"ok": false}), "{body}");
    assert_eq!(body["checks"]["job_store"], json!({"ok": true}), "{body}");
    assert_eq!(
        body["checks"]["object_store"],
        json!({"ok": true}),
        "{body}"
    );
    let port = ch.url.rsplit(':').next().unwrap().to_string();
    for (token, shown) in [
        (None, false),
        (Some("not-a-token"), false),
        (Some(ACME), true),
    ] {
        let mut rb = svc.http.get(svc.url("/readyz"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 503, "{token:?}");
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        let error = &body["checks"]["clickhouse"]["error"];
        if shown {
            assert!(error.as_str().is_some_and(|e| !e.is_empty()), "{text}");
        } else {
            assert_eq!(*error, Value::Null, "{token:?}: {text}");
            for secret in [port.as_str(), "127.0.0.1", "refused", "rror"] {
                assert!(!text.contains(secret), "{token:?} sees `{secret}`: {text}");
            }
        }
    }
    // The log has the reason, for operators.
    assert!(svc.logs().contains("not ready"), "{}", svc.logs());
}

#[tokio::test]
async fn metrics_readiness_and_json_logs() {
    let pg = PgDatabase::create();
    let svc = Service::start_with(
        Options::default()
            .env("LOGPORT_LOG_FORMAT", "json")
            .env("LOGPORT_METRICS_TOKEN", "scrape-me")
            .job_store_url(&pg.url),
    )
    .await;
    let (status, body) = svc.ready().await;
    assert_eq!(status, 200, "{body}");
    for check in ["clickhouse", "job_store", "object_store"] {
        assert_eq!(body["checks"][check]["ok"], true, "{body}");
    }

    let day = "2026-11-05";
    svc.ingest(
        ACME,
        "clicks",
        &[
            json!({"click_id": "m1", "event_time": format!("{day}T01:00:00Z")}),
            json!({"click_id": "m2", "event_time": format!("{day}T02:00:00Z")}),
        ],
    )
    .await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "m3", "event_time": format!("{day}T03:00:00Z")})],
    )
    .await;
    let (job, parts) = svc
        .export(
            ACME,
            &json!({"slice": "clicks", "date_since": day, "date_until": day,
                    "fields": ["click_id"], "format": "csv"}),
        )
        .await;
    let job_id = id_of(&job);
    let bytes: usize = parts.iter().map(Vec::len).sum();

    // Unauthenticated scrapes are refused when a metrics token is set.
    let resp = svc.http.get(svc.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let m = scrape(&svc).await;
    let clicks = "slice=\"clicks\"";
    assert_eq!(sample(&m, &["logport_ingest_rows_total{", clicks]), 3.0);
    assert_eq!(sample(&m, &["logport_ingest_requests_total{", clicks]), 2.0);
    assert!(sample(&m, &["logport_ingest_batches_total{", clicks]) >= 1.0);
    assert_eq!(sample(&m, &["logport_export_rows_total{", clicks]), 3.0);
    assert_eq!(
        sample(&m, &["logport_export_bytes_total{", clicks]),
        bytes as f64
    );
    assert_eq!(sample(&m, &["logport_jobs{", "state=\"succeeded\""]), 1.0);
    assert_eq!(sample(&m, &["logport_jobs{", "state=\"queued\""]), 0.0);
    assert_eq!(
        sample(&m, &["logport_export_queue_wait_seconds_count"]),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            &["logport_export_run_seconds_count{", "outcome=\"succeeded\""]
        ),
        1.0
    );
    assert!(
        sample(
            &m,
            &[
                "logport_clickhouse_query_duration_seconds_count{",
                "op=\"insert\""
            ]
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            &[
                "logport_clickhouse_query_duration_seconds_count{",
                "op=\"export\""
            ]
        ),
        1.0
    );
    assert!(m.contains_key("logport_build_info{version=\"0.1.0\"}"));

    // A ClickHouse error is counted by its code: 60, unknown table.
    svc.clickhouse(&format!("DROP TABLE {}.events", svc.database));
    let resp = svc
        .post("/v1/ingest/events", ACME)
        .body(format!(
            "{}\n",
            json!({"event_name": "x", "event_time": format!("{day}T01:00:00Z")})
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_server_error(), "{}", resp.status());
    let m = scrape(&svc).await;
    assert_eq!(
        sample(
            &m,
            &[
                "logport_clickhouse_errors_total{",
                "code=\"60\"",
                "op=\"insert\""
            ]
        ),
        1.0
    );

    // The JSON log: one object per line; every line of an export carries job_id and
    // tenant among its fields.
    let logs = svc.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done = lines
        .iter()
        .find(|l| l["fields"]["message"] == "export succeeded")
        .expect("an `export succeeded` line");
    let fields = &done["fields"];
    assert_eq!(fields["job_id"], job_id.as_str(), "{done}");
    assert_eq!(fields["tenant"], "acme", "{done}");
    assert_eq!(fields["slice"], "clicks", "{done}");
    assert_eq!(fields["rows"], 3, "{done}");
    assert_eq!(done["span"]["name"], "export", "{done}");
    let job_lines = lines
        .iter()
        .filter(|l| l["fields"]["job_id"] == job_id.as_str())
        .count();
    assert!(job_lines >= 3, "queued, started, succeeded: {job_lines}");

    // The object store goes away: readiness says which dependency, and the failures
    // are counted.
    let root = svc.object_store_dir().to_path_buf();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    let body = ready_within(&svc, None, 503, Duration::from_secs(5)).await;
    assert_eq!(body["checks"]["object_store"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["clickhouse"]["ok"], true, "{body}");
    let m = scrape(&svc).await;
    assert!(sample(&m, &["logport_object_store_errors_total{", "op=\"list\""]) >= 1.0);

    // So does the job store (once the last probe's second is over).
    drop(pg);
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let (status, body) = svc.ready().await;
        assert_eq!(status, 503, "{body}");
        if body["checks"]["job_store"]["ok"] == false {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["checks"]["object_store"]["ok"], false, "{body}");
    let m = scrape(&svc).await;
    assert_eq!(sample(&m, &["logport_job_store_up"]), 0.0);
}

// ---------------------------------------------------------------------------------
// 3. A two-shard ClickHouse cluster.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_two_shard_cluster_spreads_rows_and_exports_each_once() {
    const ROWS: usize = 2_000;
    let shards = PrivateClickHouse::launch_cluster("logport_test", 2);
    let servers = format!("{},{}", shards[0].url, shards[1].url);
    let db = format!("lpc_{}", uuid::Uuid::new_v4().simple());
    let scratch = tempfile::tempdir().unwrap();

    // `logport migrate --cluster` makes both tables on every server.
    let out = Command::new(logport_bin())
        .args(["migrate", "--cluster", "logport_test"])
        .current_dir(scratch.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOGPORT_CLICKHOUSE_URL", &shards[0].url)
        .env("LOGPORT_CLICKHOUSE_DATABASE", &db)
        .env("LOGPORT_CLICKHOUSE_CLUSTER_SERVERS", &servers)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate --cluster: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in &shards {
        let engines = s.query(&format!(
            "SELECT name, engine FROM system.tables WHERE database = '{db}' \
             AND name IN ('clicks', 'clicks_local') ORDER BY name FORMAT CSV"
        ));
        assert_eq!(
            engines,
            "\"clicks\",\"Distributed\"\n\"clicks_local\",\"MergeTree\"\n"
        );
        let tables: usize = s
            .query(&format!(
                "SELECT count() FROM system.tables WHERE database = '{db}'"
            ))
            .trim()
            .parse()
            .unwrap();
        assert_eq!(tables, 2 * 17, "a local and a Distributed table per slice");
    }

    let svc = Service::start_with(
        Options::default()
            .clickhouse_url(&shards[0].url)
            .clickhouse_database(&db)
            .env("LOGPORT_CLICKHOUSE_CLUSTER", "logport_test")
            .env("LOGPORT_CLICKHOUSE_CLUSTER_SERVERS", &servers)
            .env("LOGPORT_RETENTION", "clicks=30"),
    )
    .await;
    let day = "2026-11-05";
    let rows: Vec<Value> = (0..ROWS)
        .map(|i| {
            json!({"click_id": format!("k{i:05}"),
                   "event_time": format!("{day} {:02}:{:02}:00", i / 60 % 24, i % 60)})
        })
        .collect();
    // A request goes to one shard as a whole (it stays atomic); requests spread.
    // Sent at once, they are coalesced into INSERTs that span both shards.
    let mut sends = tokio::task::JoinSet::new();
    for batch in rows.chunks(100) {
        let rb = svc
            .post("/v1/ingest/clicks", ACME)
            .body(batch.iter().map(|r| format!("{r}\n")).collect::<String>());
        sends.spawn(async move {
            let resp = rb.send().await.unwrap();
            assert_eq!(resp.status(), 200);
        });
    }
    while let Some(r) = sends.join_next().await {
        r.unwrap();
    }
    // The acknowledgement means committed on the shards: no waiting for
    // background sends.
    let on: Vec<u64> = shards
        .iter()
        .map(|s| {
            s.query(&format!("SELECT count() FROM {db}.clicks_local"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(on.iter().sum::<u64>(), ROWS as u64, "{on:?}");
    assert!(on.iter().all(|n| *n > 0), "both shards: {on:?}");
    assert!(
        on.iter().all(|n| n % 100 == 0),
        "each request on one shard: {on:?}"
    );

    let request = json!({"slice": "clicks", "date_since": day, "date_until": day,
                         "fields": ["click_id", "event_time"], "format": "jsonl",
                         "part_max_rows": 700});
    let (job, _) = svc.export(ACME, &request).await;
    assert_eq!(job["parts"].as_array().unwrap().len(), 3, "{job}");
    let exported = strings(&download_jsonl(&svc, ACME, &job).await, "click_id");
    let distinct: BTreeSet<&String> = exported.iter().collect();
    assert_eq!(exported.len(), ROWS, "every row once");
    assert_eq!(distinct.len(), ROWS, "no row twice");
    let (_, evaluate) =
        status_and_json(svc.post_json("/v1/exports/evaluate", ACME, &request).await).await;
    assert_eq!(evaluate["estimated_rows"], ROWS, "{evaluate}");

    // Retention runs on every shard's local table.
    let old = now_secs() - 45 * DAY_SECS;
    for (i, s) in shards.iter().enumerate() {
        backdate(
            &s.url,
            &format!("{db}.clicks_local"),
            ("click_id", &format!("old-{i}")),
            old,
        );
    }
    let count_old = || -> u64 {
        shards[0]
            .query(&format!(
                "SELECT count() FROM {db}.clicks WHERE click_id LIKE 'old-%'"
            ))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        count_old(),
        2,
        "both back-dated rows are visible through the cluster"
    );
    let (ok, printed, stderr) = svc.logport_cli(&["retention"]);
    assert!(ok, "{stderr}");
    for s in &shards {
        assert!(printed.contains(&s.url), "dropped on {}: {printed}", s.url);
    }
    assert_eq!(count_old(), 0);
    assert_eq!(
        shards[0]
            .query(&format!("SELECT count() FROM {db}.clicks"))
            .trim(),
        ROWS.to_string()
    );

    // A re-sent window is found on whichever shard took it: stored once.
    let resent: Vec<Value> = rows[..300]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r["event_id"] = json!(format!("0189abcd-0000-7000-8000-{i:012}"));
            r["click_id"] = json!(format!("e{i:05}"));
            r
        })
        .collect();
    for window in [&resent[..200], &resent[100..], &resent[..]] {
        let resp = svc
            .post("/v1/ingest/clicks", ACME)
            .body(window.iter().map(|r| format!("{r}\n")).collect::<String>())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let with_ids: u64 = shards[0]
        .query(&format!(
            "SELECT count() FROM {db}.clicks WHERE click_id LIKE 'e%'"
        ))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(with_ids, 300, "each event once across the shards");

    // Readiness needs every shard, not only the one the service talks to. (A probe's
    // result answers for a second; an admin token sees which server failed.)
    let (status, _) = svc.ready().await;
    assert_eq!(status, 200);
    shards[1].kill();
    let body = ready_within(&svc, Some(ACME), 503, Duration::from_secs(5)).await;
    assert_eq!(body["checks"]["clickhouse"]["ok"], false, "{body}");
    assert!(
        body["checks"]["clickhouse"]["error"]
            .as_str()
            .unwrap()
            .contains(&shards[1].url),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------
// 4. Two replicas, one PostgreSQL job store, one S3 bucket.
// ---------------------------------------------------------------------------------

/// Job ids of the `export started` lines of a JSON log.
fn started_jobs(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "export started")
        .map(|l| l["fields"]["job_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn two_replicas_share_postgres_and_s3_under_concurrent_ingest_and_exports() {
    const BATCHES: usize = 12;
    const PER_BATCH: usize = 100;
    const EXPORTS: usize = 12;
    let pg = PgDatabase::create();
    let bucket = S3Bucket::create().await;
    let shared = bucket
        .options("logport")
        .job_store_url(&pg.url)
        .env("LOGPORT_WORKERS", "2")
        .env("LOGPORT_LOG_FORMAT", "json")
        .env("LOGPORT_MAX_QUEUED_PER_TENANT", "1000");
    let a = Service::start_with(shared.clone()).await;
    let b = Service::start_with(shared.clickhouse_database(&a.database)).await;
    let replicas = [&a, &b];
    let day = "2026-11-05";
    let request = json!({"slice": "clicks", "date_since": day, "date_until": day,
                         "fields": ["click_id"], "format": "jsonl", "part_max_rows": 500});
    let batch = |n: usize| -> Vec<Value> {
        (0..PER_BATCH)
            .map(|i| json!({"click_id": format!("b{n:02}-{i:03}"), "event_time": format!("{day}T10:00:00Z")}))
            .collect()
    };

    // Ingest and exports at once, alternating replicas: ingest requests land on
    // both, and exports are created on both while rows are still arriving.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..BATCHES {
        let svc = replicas[n % 2];
        let rb = svc.post("/v1/ingest/clicks", ACME).body(
            batch(n)
                .iter()
                .map(|r| format!("{r}\n"))
                .collect::<String>(),
        );
        tasks.spawn(async move {
            let resp = rb.send().await.expect("ingest");
            assert_eq!(resp.status(), 200);
            None
        });
    }
    for n in 0..EXPORTS / 2 {
        let rb = replicas[n % 2].post("/v1/exports", ACME).json(&request);
        tasks.spawn(async move {
            let resp = rb.send().await.expect("create export");
            assert_eq!(resp.status(), 202);
            let job: Value = resp.json().await.unwrap();
            Some((id_of(&job), false))
        });
    }
    let mut jobs: Vec<(String, bool)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        jobs.extend(r.unwrap());
    }
    // Once every row is in, exports on either replica must return all of them.
    for n in 0..EXPORTS / 2 {
        let job = replicas[n % 2].create_export(ACME, &request).await;
        jobs.push((id_of(&job), true));
    }
    assert_eq!(jobs.len(), EXPORTS);

    let all_rows = BATCHES * PER_BATCH;
    for (i, (id, complete)) in jobs.iter().enumerate() {
        let job = replicas[i % 2].wait_export(ACME, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "ran exactly once: {job}");
        // Every part downloads through either replica, byte for byte the same.
        let via_a = download_jsonl(&a, ACME, &job).await;
        let via_b = download_jsonl(&b, ACME, &job).await;
        assert_eq!(via_a, via_b);
        let ids = strings(&via_a, "click_id");
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "no row twice: {job}");
        assert_eq!(ids.len() as u64, job["progress"]["rows"].as_u64().unwrap());
        // A request's rows are in an export all or not at all (the watermark).
        let mut per_batch: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &ids {
            *per_batch.entry(&id[..3]).or_default() += 1;
        }
        assert!(per_batch.values().all(|n| *n == PER_BATCH), "{per_batch:?}");
        if *complete {
            assert_eq!(ids.len(), all_rows, "{job}");
        }
    }

    // Each job started once, and both replicas ran some.
    let (from_a, from_b) = (started_jobs(&a.logs()), started_jobs(&b.logs()));
    let mut all = from_a.clone();
    all.extend(from_b.iter().cloned());
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        EXPORTS,
        "{} starts for {EXPORTS} jobs",
        all.len()
    );
    assert_eq!(distinct.len(), EXPORTS);
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both replicas ran exports: {} and {}",
        from_a.len(),
        from_b.len()
    );
    assert_eq!(
        pg.query("SELECT sum(attempts), count(*) FROM jobs").trim(),
        format!("{EXPORTS}|{EXPORTS}")
    );
    // One manifest per job in the bucket.
    let manifests = bucket
        .list("logport/exports/acme/")
        .await
        .into_iter()
        .filter(|o| o.key.ends_with("/manifest.json"))
        .count();
    assert_eq!(manifests, EXPORTS);
}

// ---------------------------------------------------------------------------------
// 5. Backup and restore of the job store (docs/operations.md).
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_restored_postgres_job_store_serves_the_jobs_it_held() {
    let pg = PgDatabase::create();
    let files = tempfile::tempdir().unwrap();
    let shared = Options::default()
        .job_store_url(&pg.url)
        .object_store_dir(files.path());
    let a = Service::start_with(shared.clone()).await;
    let day = "2026-11-05";
    a.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "r1", "event_time": format!("{day}T01:00:00Z")})],
    )
    .await;
    let request = json!({"slice": "clicks", "date_since": day, "date_until": day,
                         "fields": ["click_id"], "format": "jsonl"});
    let (kept, _) = a.export(ACME, &request).await;

    // pg_dump while the replica runs; a job made after the backup.
    let dump = files.path().join("jobs.dump");
    let status = Command::new("pg_dump")
        .args(["-Fc", "-d", &pg.url, "-f"])
        .arg(&dump)
        .status()
        .unwrap();
    assert!(status.success(), "pg_dump");
    let (lost, _) = a.export(ACME, &request).await;
    drop(a);

    // pg_restore into an empty database; a replica on it serves the backed-up job.
    let restored = PgDatabase::create();
    let out = Command::new("pg_restore")
        .args(["--no-owner", "-d", &restored.url])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = Service::start_with(
        Options::default()
            .job_store_url(&restored.url)
            .object_store_dir(files.path())
            .env("LOGPORT_ORPHAN_SWEEP_INTERVAL", "1s"),
    )
    .await;
    let job = b.wait_export(ACME, kept["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        strings(&download_jsonl(&b, ACME, &job).await, "click_id"),
        ["r1"]
    );
    // The job made after the backup is unknown, and the orphan sweep removes its
    // files.
    let resp = b
        .get(
            &format!("/v1/exports/{}", lost["id"].as_str().unwrap()),
            ACME,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let lost_dir = files
        .path()
        .join("exports/acme")
        .join(lost["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while lost_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "orphaned files stayed\n{}",
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(files
        .path()
        .join("exports/acme")
        .join(kept["id"].as_str().unwrap())
        .exists());
}
