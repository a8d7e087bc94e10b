//! API tokens made with `logport token`, and the activity log: the real binary, its
//! job store and ClickHouse.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use logport_tests::*;

const DAY: &str = "2026-11-05";

fn click(id: &str, app: u64) -> Value {
    json!({"click_id": id, "app_id": app, "event_time": "2026-11-05T10:00:00Z", "country_code": "US"})
}

async fn status_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Polls `GET /v1/slices` with `token` until it answers `want`; returns how long it took.
async fn until_status(svc: &Service, token: &str, want: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let resp = svc.get("/v1/slices", token).send().await.unwrap();
        if resp.status().as_u16() == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "still {} after {within:?}, want {want}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cli_tokens_are_stored_only_as_digests_and_authenticate_bearer_and_oauth() {
    let svc = Service::start().await;
    let t = svc.create_token("acme", "ingest,export", &["--name", "ci loader"]);
    assert!(
        t.secret.starts_with("lp_") && t.secret.len() == 67,
        "{}",
        t.secret
    );
    assert!(t.id.starts_with("tok_") && t.id.len() == 20, "{}", t.id);
    assert_eq!(t.info["tenant"], "acme");
    assert_eq!(t.info["scopes"], json!(["ingest", "export"]));
    assert_eq!(t.info["apps"], Value::Null);
    assert_eq!(t.info["status"], "active");

    // Both schemes, on the API and on the compatibility protocols.
    let oauth_get = |path: &str| {
        svc.http
            .get(svc.url(path))
            .header("authorization", format!("OAuth {}", t.secret))
    };
    assert_eq!(
        svc.get("/v1/slices", &t.secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let oauth = oauth_get("/v1/slices").send().await.unwrap();
    assert_eq!(oauth.status(), 200);
    let status = oauth_get("/management/v1/logsapi/status")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let body = svc.ingest(&t.secret, "clicks", &[click("c1", 1)]).await;
    assert_eq!(body["accepted"], 1);
    assert_eq!(
        svc.count("clicks", "acme"),
        1,
        "rows belong to the token's tenant"
    );

    // `token list` shows it, never its secret.
    let (ok, list, _) = svc.logport_cli(&["token", "list", "--json"]);
    assert!(ok);
    assert!(!list.contains(&t.secret), "{list}");
    let list: Value = serde_json::from_str(list.trim()).unwrap();
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == json!(t.id))
        .unwrap();
    assert_eq!(mine["name"], "ci loader");
    assert!(mine.get("token").is_none());
    let (ok, table, _) = svc.logport_cli(&["token", "list", "--tenant", "acme"]);
    assert!(
        ok && table.contains(&t.id) && !table.contains(&t.secret),
        "{table}"
    );

    // The job store holds the SHA-256 of the secret and never the secret itself.
    let digest = sha256_hex(t.secret.as_bytes());
    let mut stored = Vec::new();
    for name in ["jobs.db", "jobs.db-wal"] {
        if let Ok(bytes) = std::fs::read(svc.dir.path().join(name)) {
            stored.extend_from_slice(&bytes);
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains(&digest), "the digest is stored");
    assert!(
        !stored.contains(&t.secret) && !stored.contains(&t.secret[3..]),
        "the secret is not stored"
    );
}

#[tokio::test]
async fn revoked_tokens_stop_working_within_seconds_everywhere() {
    let svc = Service::start().await;
    let t = svc.create_token("acme", "export", &["--name", "to revoke"]);
    assert_eq!(
        svc.get("/v1/slices", &t.secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let revoked = svc.revoke_token(&t.id);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["already_revoked"], false);
    let took = until_status(&svc, &t.secret, 401, Duration::from_secs(3)).await;
    eprintln!("revocation took effect after {took:?}");
    let (status, body) = problem(svc.get("/v1/exports", &t.secret).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );

    // The compatibility protocols refuse it in their own words.
    let appmetrica = svc
        .http
        .get(svc.url(
            "/logs/v1/export/events.csv?application_id=1&date_since=2026-11-01&date_until=2026-11-01&fields=event_name",
        ))
        .header("authorization", format!("OAuth {}", t.secret))
        .send()
        .await
        .unwrap();
    let (status, text) = status_of(appmetrica).await;
    assert_eq!((status, text.as_str()), (401, "Invalid OAuth token"));
    let metrica = svc
        .http
        .get(svc.url(&format!(
            "/management/v1/counter/1/logrequests?oauth_token={}",
            t.secret
        )))
        .send()
        .await
        .unwrap();
    let (status, text) = status_of(metrica).await;
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["errors"][0]["error_type"],
        "invalid_token"
    );

    // Revoking again changes nothing; an unknown id is an error.
    assert_eq!(svc.revoke_token(&t.id)["already_revoked"], true);
    let (ok, _, err) = svc.logport_cli(&["token", "revoke", "tok_00000000000000ff"]);
    assert!(!ok && err.contains("no token"), "{err}");
    let (ok, _, err) = svc.logport_cli(&["token", "revoke", "../../etc/passwd"]);
    assert!(!ok && err.contains("not a token id"), "{err}");
    let (_, list, _) = svc.logport_cli(&["token", "list", "--json"]);
    let list: Value = serde_json::from_str(list.trim()).unwrap();
    assert_eq!(list[0]["status"], "revoked");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let svc = Service::start().await;
    let t = svc.create_token("acme", "admin", &["--expires", "2s"]);
    assert!(t.info["expires_at"].is_string(), "{}", t.info);
    assert_eq!(
        svc.get("/v1/slices", &t.secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    until_status(&svc, &t.secret, 401, Duration::from_secs(6)).await;
    let (status, body) = problem(svc.get("/v1/slices", &t.secret).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let (_, list, _) = svc.logport_cli(&["token", "list", "--json"]);
    assert!(list.contains("\"status\":\"expired\""), "{list}");
}

#[tokio::test]
async fn token_commands_check_their_arguments_and_need_only_the_job_store() {
    let svc = Service::start().await;
    for (args, why) in [
        (vec!["--tenant", "Acme", "--scopes", "export"], "--tenant"),
        (vec!["--tenant", "../x", "--scopes", "export"], "--tenant"),
        (vec!["--tenant", "acme", "--scopes", "read"], "--scopes"),
        (vec!["--tenant", "acme", "--scopes", ""], "--scopes"),
        (
            vec!["--tenant", "acme", "--scopes", "export", "--apps", "1,x"],
            "--apps",
        ),
        (
            vec![
                "--tenant",
                "acme",
                "--scopes",
                "export",
                "--expires",
                "2020-01-01",
            ],
            "--expires",
        ),
        (
            vec![
                "--tenant",
                "acme",
                "--scopes",
                "export",
                "--expires",
                "soon",
            ],
            "--expires",
        ),
        (
            vec![
                "--tenant", "acme", "--scopes", "export", "--name", "a\u{7}b",
            ],
            "--name",
        ),
    ] {
        let mut all = vec!["token", "create"];
        all.extend(args.iter());
        let (ok, out, err) = svc.logport_cli(&all);
        assert!(!ok, "{args:?} was accepted: {out}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // No ClickHouse at all: the token commands still work.
    let mut cmd = svc.command(&["token", "create", "--tenant", "acme", "--scopes", "ingest"]);
    cmd.env("LOGPORT_CLICKHOUSE_URL", "http://127.0.0.1:9");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let secret = printed
        .split_whitespace()
        .find(|w| w.starts_with("lp_"))
        .unwrap()
        .to_string();
    assert_eq!(
        svc.get("/v1/slices", &secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The activity rows of a tenant, read through a preview with an admin token.
async fn activity(svc: &Service, admin: &str) -> Vec<Value> {
    let resp = svc
        .post("/v1/logs/activity/preview", admin)
        .json(&json!({
            "date_since": "2020-01-01", "date_until": "2100-01-01", "limit": 1000,
            "fields": ["app_id", "event_id", "event_time", "actor_id", "actor_name", "actor_type", "token_id",
                       "action", "entity_type", "entity_id", "entity_name", "changes",
                       "source", "status", "ip", "user_agent"],
        }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// Waits until `pred` holds for the tenant's activity rows.
async fn wait_activity(
    svc: &Service,
    admin: &str,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = activity(svc, admin).await;
        if pred(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "activity never showed {what}: {rows:#?}\n{}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn find<'a>(rows: &'a [Value], entity_id: &str, action: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["entity_id"] == json!(entity_id) && r["action"] == json!(action))
}

fn changes(row: &Value) -> Value {
    serde_json::from_str(row["changes"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn every_mutating_action_is_in_the_activity_log_and_exportable() {
    // No workers: exports stay queued until canceled or deleted.
    let mut svc = Service::start_with(Options::default().env("LOGPORT_WORKERS", "0")).await;
    let writer = svc.create_token("acme", "ingest,export", &["--name", "pipeline"]);
    let admin = svc.create_token("acme", "admin", &["--name", "auditor"]);
    let globex_admin = svc.create_token("globex", "admin", &[]);

    // An ingest batch, with a user agent of our own.
    let resp = svc
        .post("/v1/ingest/clicks?on_error=skip", &writer.secret)
        .header("user-agent", "security-test/1.0")
        .header("idempotency-key", "batch-1")
        .body(ndjson(&[click("a", 7), click("b", 7), json!({"nope": 1})]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Exports: one canceled, one deleted.
    let request = json!({"slice": "clicks", "app_id": 7, "date_since": DAY, "date_until": DAY});
    let canceled = id_of(&svc.create_export(&writer.secret, &request).await);
    let resp = svc
        .post(&format!("/v1/exports/{canceled}/cancel"), &writer.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deleted = id_of(&svc.create_export(&writer.secret, &request).await);
    let resp = svc
        .delete(&format!("/v1/exports/{deleted}"), &writer.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    // Tokens, from the command line (the server moves their rows from the job store).
    let extra = svc.create_token(
        "acme",
        "ingest",
        &["--name", "short-lived", "--apps", "3,4"],
    );
    svc.revoke_token(&extra.id);

    let rows = wait_activity(&svc, &admin.secret, "every action", |rows| {
        find(rows, "batch-1", "imported").is_some()
            && find(rows, &canceled, "created").is_some()
            && find(rows, &canceled, "updated").is_some()
            && find(rows, &deleted, "deleted").is_some()
            && find(rows, &extra.id, "created").is_some()
            && find(rows, &extra.id, "updated").is_some()
    })
    .await;

    let batch = find(&rows, "batch-1", "imported").unwrap();
    assert_eq!(batch["entity_type"], "ingest_batch");
    assert_eq!(batch["entity_name"], "clicks");
    assert_eq!(batch["app_id"], 7);
    assert_eq!(changes(batch), json!({"accepted": 2, "rejected": 1}));
    assert_eq!(batch["actor_id"], json!(writer.id));
    assert_eq!(batch["token_id"], json!(writer.id));
    assert_eq!(batch["actor_name"], "pipeline");
    assert_eq!(batch["actor_type"], "api_token");
    assert_eq!(batch["source"], "api");
    assert_eq!(batch["status"], "success");
    assert_eq!(batch["ip"], "127.0.0.1");
    assert_eq!(batch["user_agent"], "security-test/1.0");

    let created = find(&rows, &canceled, "created").unwrap();
    assert_eq!(created["entity_type"], "export");
    assert_eq!(created["entity_name"], "clicks");
    assert_eq!(created["app_id"], 7);
    assert_eq!(changes(created)["status"], json!([null, "queued"]));
    assert_eq!(changes(created)["request"][1]["app_id"], 7);
    let cancel = find(&rows, &canceled, "updated").unwrap();
    assert_eq!(changes(cancel)["status"], json!(["queued", "canceled"]));
    assert_eq!(cancel["actor_id"], json!(writer.id));
    assert!(find(&rows, &deleted, "deleted").is_some());

    let token_created = find(&rows, &extra.id, "created").unwrap();
    assert_eq!(token_created["entity_type"], "token");
    assert_eq!(token_created["entity_name"], "short-lived");
    assert_eq!(token_created["actor_type"], "system");
    assert_eq!(token_created["source"], "system");
    assert_eq!(changes(token_created)["scopes"], json!([null, "ingest"]));
    assert_eq!(changes(token_created)["apps"], json!([null, [3, 4]]));
    let token_revoked = find(&rows, &extra.id, "updated").unwrap();
    assert_eq!(
        changes(token_revoked)["status"],
        json!(["active", "revoked"])
    );
    // Every row carries its own event id: nothing was written twice.
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate activity rows: {rows:#?}");

    // Activity belongs to the acting tenant: globex sees none of acme's.
    let theirs = activity(&svc, &globex_admin.secret).await;
    assert!(
        theirs.iter().all(|r| r["entity_id"] != json!(canceled)
            && r["entity_id"] != json!(extra.id)
            && r["entity_id"] != json!("batch-1")),
        "{theirs:#?}"
    );
    // The audit log is admin-only.
    let resp = svc
        .post("/v1/logs/activity/preview", &writer.secret)
        .json(&json!({"date_since": DAY, "date_until": DAY}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, 403);

    // Exportable like any slice: run an export of it (workers on now).
    svc.restart_with(Options::default().env("LOGPORT_WORKERS", "1"))
        .await;
    let mut days: Vec<&str> = rows
        .iter()
        .map(|r| &r["event_time"].as_str().unwrap()[..10])
        .collect();
    days.sort_unstable();
    let (first, last) = (days[0], days[days.len() - 1]);
    let (job, parts) = svc
        .export(
            &admin.secret,
            &json!({"slice": "activity", "date_since": first, "date_until": last,
                    "fields": ["action", "entity_type", "entity_id", "actor_id"], "format": "csv"}),
        )
        .await;
    assert_eq!(job["status"], "succeeded");
    let (header, records) = parse_csv(&parts.concat());
    assert_eq!(header, ["action", "entity_type", "entity_id", "actor_id"]);
    for (entity, action) in [
        ("batch-1", "imported"),
        (canceled.as_str(), "created"),
        (canceled.as_str(), "updated"),
        (deleted.as_str(), "deleted"),
        (extra.id.as_str(), "created"),
        (extra.id.as_str(), "updated"),
    ] {
        assert!(
            records.iter().any(|r| r[2] == entity && r[0] == action),
            "{entity} {action} missing from the export: {records:?}"
        );
    }
}

#[tokio::test]
async fn replicas_on_postgres_share_tokens_revocation_and_one_activity_row_each() {
    let pg = PgDatabase::create();
    let a = Service::start_with(Options::default().job_store_url(&pg.url)).await;
    let b = Service::start_with(
        Options::default()
            .job_store_url(&pg.url)
            .clickhouse_database(&a.database),
    )
    .await;
    let admin = a.create_token("acme", "admin", &["--name", "replicated"]);
    let t = b.create_token("acme", "export", &[]);
    for svc in [&a, &b] {
        assert_eq!(
            svc.get("/v1/slices", &t.secret)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let table = pg.query("SELECT * FROM tokens");
    assert!(
        !table.contains(&t.secret) && !table.contains(&admin.secret),
        "{table}"
    );
    assert!(table.contains(&t.id), "{table}");
    a.revoke_token(&t.id);
    for svc in [&a, &b] {
        let took = until_status(svc, &t.secret, 401, Duration::from_secs(3)).await;
        eprintln!("refused {took:?} after revocation");
    }
    // Both replicas move the job store's activity rows; each lands once.
    let rows = wait_activity(&a, &admin.secret, "the token rows", |rows| {
        find(rows, &t.id, "created").is_some() && find(rows, &t.id, "updated").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows_later = activity(&b, &admin.secret).await;
    for action in ["created", "updated"] {
        let n = rows_later
            .iter()
            .filter(|r| r["entity_id"] == json!(t.id) && r["action"] == json!(action))
            .count();
        assert_eq!(n, 1, "{action}: {rows_later:#?}");
    }
    assert!(rows.len() <= rows_later.len());
    assert_eq!(pg.query("SELECT count(*) FROM activity_outbox").trim(), "0");
}

/// One malformed row in the job store's activity outbox — stored text that is not
/// JSON, or JSON that does not fit the `activity` slice — never blocks or drops the
/// rows around it: the server sets it aside (kept in the outbox with the reason,
/// never claimed again), counts it in `logport_activity_rows_set_aside_total`, logs
/// it, and moves the rest.
#[tokio::test]
async fn a_malformed_outbox_row_is_set_aside_and_the_others_move() {
    let pg = PgDatabase::create();
    let mut svc = Service::start_with(Options::default().job_store_url(&pg.url)).await;
    // With the server stopped, the outbox gets two bad rows (the oldest, so first in
    // the batch) and then the rows of two real token commands.
    svc.kill();
    pg.query(
        "INSERT INTO activity_outbox (id, tenant, row, created_at) VALUES
           ('bad-not-json', 'acme', '{\"action\": \"created\", truncated', 1),
           ('bad-unfit', 'acme', '{\"event_time\": \"not a time\", \"action\": \"created\"}', 2)",
    );
    let admin = svc.create_token("acme", "admin", &["--name", "auditor"]);
    let other = svc.create_token("acme", "export", &["--name", "next in line"]);
    assert_eq!(
        pg.query("SELECT count(*) FROM activity_outbox").trim(),
        "4",
        "two bad rows and two token rows wait"
    );
    svc.restart().await;

    let rows = wait_activity(&svc, &admin.secret, "both token rows", |rows| {
        find(rows, &admin.id, "created").is_some() && find(rows, &other.id, "created").is_some()
    })
    .await;
    assert_eq!(
        rows.iter().filter(|r| r["entity_type"] == "token").count(),
        2,
        "{rows:#?}"
    );
    // The bad rows are kept, set aside with their reason; nothing else is left.
    let kept = pg.query(
        "SELECT id, set_aside_at IS NOT NULL, set_aside_reason FROM activity_outbox ORDER BY id",
    );
    let lines: Vec<&str> = kept.lines().collect();
    assert_eq!(lines.len(), 2, "{kept}");
    assert!(
        lines[0].starts_with("bad-not-json|t|") && lines[0].contains("not JSON"),
        "{kept}"
    );
    assert!(
        lines[1].starts_with("bad-unfit|t|") && lines[1].contains("event_time"),
        "{kept}"
    );
    // Counted and logged, once each: a row set aside is not tried again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = svc.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "logport_activity_rows_set_aside_total 2"),
        "{metrics}"
    );
    let logs = svc.logs();
    for id in ["bad-not-json", "bad-unfit"] {
        let lines = logs
            .lines()
            .filter(|l| l.contains("outbox activity row set aside") && l.contains(id))
            .count();
        assert_eq!(lines, 1, "{id}:\n{logs}");
    }
    // New rows keep moving past the rows set aside.
    let late = svc.create_token("acme", "ingest", &["--name", "after"]);
    wait_activity(&svc, &admin.secret, "the later token row", |rows| {
        find(rows, &late.id, "created").is_some()
    })
    .await;
    assert_eq!(pg.query("SELECT count(*) FROM activity_outbox").trim(), "2");
}
