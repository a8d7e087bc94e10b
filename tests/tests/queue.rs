//! The export queue under failure, end to end: a process killed at every failpoint,
//! two replicas on one PostgreSQL queue, ClickHouse crashing under a running export,
//! a bad stored spec, a frozen (zombie) worker, cancellation of a running export,
//! concurrent idempotent submits, quotas and tenant fairness, and graceful shutdown.
//! Real `logport` processes, real ClickHouse 18.16 (private servers where a test must
//! stop or freeze it), real PostgreSQL, real files; every outcome is read back through
//! the API, the object store directory and the process logs.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use logport_tests::*;

const DAY: &str = "2026-11-05";
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long the pipeline waits for `KILL QUERY` on a canceled export
/// (crates/export/src/pipeline.rs).
const KILL_QUERY_BOUND: Duration = Duration::from_secs(5);

/// Short leases, heartbeats and backoff, so crashes and retries resolve in seconds.
fn fast() -> Options {
    Options::default()
        .env("LOGPORT_LEASE", "2s")
        .env("LOGPORT_HEARTBEAT", "500ms")
        .env("LOGPORT_RETRY_BACKOFF", "200ms")
        .env("LOGPORT_RETRY_BACKOFF_MAX", "1s")
}

/// The `user_agent` of a click: carries its id, padded to about `pad` bytes, so a
/// row cut, mixed or duplicated by a retry cannot go unnoticed.
fn agent(id: &str, pad: usize) -> String {
    format!("ua/{id}/{}", "x".repeat(pad))
}

/// `n` clicks on [`DAY`], ids `{prefix}-000000`…; returns the rows and what an export
/// of `click_id, user_agent` must contain.
fn clicks(prefix: &str, n: usize, pad: usize) -> (Vec<Value>, BTreeMap<String, String>) {
    let mut rows = Vec::with_capacity(n);
    let mut expected = BTreeMap::new();
    for i in 0..n {
        let id = format!("{prefix}-{i:06}");
        let s = i % 86_400;
        rows.push(json!({
            "click_id": id,
            "event_time": format!("{DAY} {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
            "country_code": if i % 2 == 0 { "US" } else { "DE" },
            "user_agent": agent(&id, pad),
        }));
        expected.insert(id.clone(), agent(&id, pad));
    }
    (rows, expected)
}

async fn ingest_all(svc: &Service, token: &str, rows: &[Value]) {
    for batch in rows.chunks(10_000) {
        let answer = svc.ingest(token, "clicks", batch).await;
        assert_eq!(answer["accepted"], batch.len(), "{answer}");
    }
}

/// An export of every click of [`DAY`] as CSV.
fn request() -> Value {
    json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
           "fields": ["click_id", "user_agent"], "format": "csv"})
}

async fn get_job(svc: &Service, token: &str, id: &str) -> Value {
    let (status, job) = svc.get_json(&format!("/v1/exports/{id}"), token).await;
    assert_eq!(status, 200, "{job}");
    job
}

/// Polls the job until `pred` holds; panics with the job and the log after `within`.
async fn wait_job(
    svc: &Service,
    token: &str,
    id: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let job = get_job(svc, token, id).await;
        if pred(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "export {id}: not {what} within {within:?}: {job}\n{}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the worker is running `id` (its ClickHouse query is in flight).
async fn wait_running(svc: &Service, token: &str, id: &str, attempt: u64) -> Value {
    wait_job(svc, token, id, Duration::from_secs(20), "running", |j| {
        j["status"] == "running" && j["attempts"] == attempt
    })
    .await
}

/// Polls `cond` every 25 ms until it holds; panics with `what` after `within`.
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    start.elapsed()
}

/// Downloads every part of a succeeded job, checks each against the sha256 the job
/// lists, and returns the `(click_id, user_agent)` rows.
async fn download(svc: &Service, token: &str, job: &Value) -> Vec<(String, String)> {
    assert_eq!(job["status"], "succeeded", "{job}");
    let listed = job["parts"].as_array().expect("parts");
    let mut rows = Vec::new();
    for (p, bytes) in listed.iter().zip(svc.download_parts(token, job).await) {
        let (header, records) = parse_csv(&bytes);
        assert_eq!(header, ["click_id", "user_agent"]);
        assert_eq!(records.len() as u64, p["rows"].as_u64().unwrap(), "{p}");
        rows.extend(records.into_iter().map(|r| (r[0].clone(), r[1].clone())));
    }
    rows
}

/// Exactly the expected rows: none missing, none duplicated, none altered.
fn assert_exact(rows: &[(String, String)], expected: &BTreeMap<String, String>) {
    let got: BTreeMap<String, String> = rows.iter().cloned().collect();
    assert_eq!(
        got.len(),
        rows.len(),
        "{} duplicated rows",
        rows.len() - got.len()
    );
    if got != *expected {
        let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
        let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
        panic!(
            "content differs: {} rows, {missing} missing, {extra} unexpected (of {} expected)",
            rows.len(),
            expected.len()
        );
    }
}

/// Every file under `dir`, relative to it, sorted; empty when `dir` does not exist.
fn walk(dir: &Path) -> Vec<String> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                go(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}

/// The files one job has in the object store, relative to its directory
/// (`2/manifest.json`, `2/part-00001.csv`, …), as they are on disk.
fn job_files(store: &Path, tenant: &str, id: &str) -> Vec<String> {
    walk(&store.join("exports").join(tenant).join(id))
}

/// What the object store must hold after a job succeeded: its published attempt's
/// parts and one manifest, nothing of any other attempt (no staged uploads either).
fn assert_only_published_files(store: &Path, tenant: &str, job: &Value) {
    let id = job["id"].as_str().unwrap();
    let attempt = job["attempts"].as_u64().unwrap();
    let mut want: Vec<String> = (1..=job["parts"].as_array().unwrap().len())
        .map(|n| format!("{attempt}/part-{n:05}.csv"))
        .collect();
    want.push(format!("{attempt}/manifest.json"));
    want.sort();
    let files = job_files(store, tenant, id);
    let manifests = files
        .iter()
        .filter(|f| f.ends_with("manifest.json"))
        .count();
    assert_eq!(manifests, 1, "export {id}: manifests on disk: {files:?}");
    assert_eq!(
        files, want,
        "export {id}: the object store holds files besides the published attempt {attempt}"
    );
}

/// Lines the worker pool logged for one job with this message.
fn worker_lines(log: &str, id: &str, message: &str) -> Vec<String> {
    strip_ansi(log)
        .lines()
        .filter(|l| {
            l.contains("logport_export::worker")
                && l.contains(&format!("job_id={id}"))
                && l.contains(message)
        })
        .map(String::from)
        .collect()
}

/// The job id of every "export started" line of a log.
fn started_jobs(log: &str) -> Vec<String> {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("logport_export::worker") && l.ends_with("export started"))
        .filter_map(|l| {
            let at = l.find("job_id=")? + "job_id=".len();
            l.get(at..at + 32).map(String::from)
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. kill -9 at every failpoint, then a restart without it.
// ---------------------------------------------------------------------------------

/// Starts a service that aborts at `point`, runs an export into the crash, checks
/// what the dead process left, restarts without the failpoint on the same data, and
/// checks that the job then succeeds exactly once with exactly the ingested rows and
/// nothing of the dead attempt left behind.
async fn crash_and_recover(point: &str, n: usize, pad: usize, part_max_rows: Option<u64>) {
    let workers = fast().env("LOGPORT_WORKERS", "1");
    let mut svc = Service::start_with(workers.clone().env("LOGPORT_FAILPOINTS", point)).await;
    let (rows, expected) = clicks(point, n, pad);
    ingest_all(&svc, ACME, &rows).await;
    let mut req = request();
    if let Some(m) = part_max_rows {
        req["part_max_rows"] = json!(m);
    }
    // The worker may claim the job, and so abort, before the answer to the create
    // request is written (after_claim: how soon depends on how fast the server's
    // estimates are): then the id comes from the list once the service is back.
    let created = svc.post("/v1/exports", ACME).json(&req).send().await;
    let id = match created {
        Ok(resp) => {
            assert_eq!(resp.status(), 202);
            let body: Value = resp.json().await.expect("export answer is JSON");
            Some(id_of(&body))
        }
        Err(e) if point == "after_claim" => {
            eprintln!("the create answer was lost in the abort: {e}");
            None
        }
        Err(e) => panic!("create export: {e}"),
    };

    let status = svc.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        status.signal(),
        Some(6),
        "the process should have aborted (SIGABRT) at {point}: {status}\n{}",
        svc.logs()
    );
    assert!(svc
        .logs()
        .contains(&format!("failpoint {point} reached: aborting")));
    let store = svc.object_store_dir().to_path_buf();
    let id = match id {
        Some(id) => id,
        None => {
            // One job, found in the job store after the restart below would make it
            // run: list it from a service without workers first.
            svc.restart_with(workers.clone().env("LOGPORT_WORKERS", "0"))
                .await;
            let list = svc.list_exports(ACME, "").await;
            let jobs = list["exports"].as_array().unwrap();
            assert_eq!(jobs.len(), 1, "{list}");
            jobs[0]["id"].as_str().unwrap().to_string()
        }
    };
    let left = job_files(&store, "acme", &id);
    match point {
        "after_claim" => assert!(left.is_empty(), "nothing written yet: {left:?}"),
        "mid_upload" => assert!(
            !left.iter().any(|f| f.ends_with("manifest.json"))
                && left.iter().any(|f| f.starts_with("1/part-00001.csv")),
            "a part upload of attempt 1 had begun and no manifest was written: {left:?}"
        ),
        "before_commit" => assert!(
            left.contains(&"1/manifest.json".to_string())
                && left.contains(&"1/part-00001.csv".to_string()),
            "attempt 1 wrote its parts and manifest: {left:?}"
        ),
        _ => unreachable!(),
    }

    svc.restart_with(workers).await;
    let job = svc.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", svc.logs());
    assert_eq!(
        job["attempts"], 2,
        "the dead attempt, then one that succeeded: {job}"
    );
    assert_eq!(job["error"], Value::Null, "{job}");
    assert_eq!(job["progress"]["rows"], n, "{job}");
    let (status, manifest) = svc
        .get_json(&format!("/v1/exports/{id}/manifest"), ACME)
        .await;
    assert_eq!(status, 200, "{manifest}");
    assert_eq!(manifest["attempt"], 2, "{manifest}");
    assert_eq!(manifest["totals"]["rows"], n, "{manifest}");
    assert_eq!(
        worker_lines(&svc.logs(), &id, "export succeeded").len(),
        1,
        "succeeded exactly once"
    );
    assert_exact(&download(&svc, ACME, &job).await, &expected);
    assert_only_published_files(&store, "acme", &job);
}

#[tokio::test]
async fn crash_after_claim_is_retried_once_and_succeeds() {
    crash_and_recover("after_claim", 2_000, 50, Some(700)).await;
}

#[tokio::test]
async fn crash_mid_upload_is_retried_once_and_succeeds() {
    // ~16 MB in one part: its upload is a multipart upload past the 8 MiB buffer.
    crash_and_recover("mid_upload", 40_000, 400, None).await;
}

#[tokio::test]
async fn crash_before_commit_is_retried_once_and_succeeds() {
    crash_and_recover("before_commit", 2_000, 50, Some(700)).await;
}

// ---------------------------------------------------------------------------------
// 2. Two replicas on one PostgreSQL job store.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn two_replicas_share_one_postgres_queue_and_run_each_job_once() {
    const JOBS: usize = 200;
    let pg = PgDatabase::create();
    let files = tempfile::tempdir().unwrap();
    let shared = fast()
        .env("LOGPORT_WORKERS", "2")
        .env("LOGPORT_MAX_QUEUED_PER_TENANT", "1000")
        .job_store_url(&pg.url)
        .object_store_dir(files.path());
    let a = Service::start_with(shared.clone()).await;
    let b = Service::start_with(shared.clickhouse_database(&a.database)).await;

    let (acme_rows, acme_expected) = clicks("acme", 30, 20);
    let (globex_rows, globex_expected) = clicks("globex", 20, 20);
    ingest_all(&a, ACME, &acme_rows).await;
    ingest_all(&b, GLOBEX, &globex_rows).await;

    // 200 submits at once, alternating replicas and tenants.
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..JOBS {
        let svc = if i % 2 == 0 { &a } else { &b };
        let token = if i % 4 < 2 { ACME } else { GLOBEX };
        let rb = svc.post("/v1/exports", token).json(&request());
        posts.spawn(async move {
            let resp = rb.send().await.expect("create export");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("JSON");
            (status, body, token)
        });
    }
    let mut jobs: Vec<(String, &str)> = Vec::new();
    while let Some(r) = posts.join_next().await {
        let (status, body, token) = r.unwrap();
        assert_eq!(status, 202, "{body}");
        jobs.push((id_of(&body), token));
    }
    let ids: BTreeSet<&String> = jobs.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), JOBS, "every submit made its own job");

    // Wait until no job is queued or running (read through both replicas).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut open = 0;
        for (svc, token) in [(&a, ACME), (&b, GLOBEX)] {
            let list = svc.list_exports(token, "limit=1000").await;
            open += list["exports"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|j| j["status"] == "queued" || j["status"] == "running")
                .count();
        }
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} exports still open\n{}\n{}",
            a.logs(),
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for (i, (id, token)) in jobs.iter().enumerate() {
        let (tenant, expected) = if *token == ACME {
            ("acme", &acme_expected)
        } else {
            ("globex", &globex_expected)
        };
        let job = get_job(&a, token, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "ran exactly once: {job}");
        assert_eq!(job["progress"]["rows"], expected.len(), "{job}");
        assert_only_published_files(files.path(), tenant, &job);
        // Files are downloadable through either replica, identically.
        if i % 5 == 0 {
            let via_a = download(&a, token, &job).await;
            let via_b = download(&b, token, &job).await;
            assert_eq!(via_a, via_b);
            assert_exact(&via_a, expected);
        }
    }
    let manifests = walk(files.path())
        .iter()
        .filter(|f| f.ends_with("/manifest.json"))
        .count();
    assert_eq!(manifests, JOBS, "one manifest per job, nothing else");

    // Both replicas worked, and no job was started twice.
    let (from_a, from_b) = (started_jobs(&a.logs()), started_jobs(&b.logs()));
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both replicas ran exports: {} and {}",
        from_a.len(),
        from_b.len()
    );
    let mut all = from_a.clone();
    all.extend(from_b.iter().cloned());
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "{} starts for {JOBS} jobs", all.len());
    assert_eq!(distinct.len(), JOBS);
    let pg_attempts = pg.query("SELECT sum(attempts), count(*) FROM jobs");
    assert_eq!(pg_attempts.trim(), format!("{JOBS}|{JOBS}"));
}

// ---------------------------------------------------------------------------------
// 3. ClickHouse going away; a spec the catalog no longer accepts.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn clickhouse_crash_under_a_running_export_is_retried_until_it_is_back() {
    let ch = PrivateClickHouse::launch();
    let svc = Service::start_with(
        fast()
            .clickhouse_url(&ch.url)
            .env("LOGPORT_WORKERS", "1")
            .env("LOGPORT_MAX_ATTEMPTS", "100"),
    )
    .await;
    let (rows, expected) = clicks("chdown", 500, 30);
    ingest_all(&svc, ACME, &rows).await;

    // The query is in flight on a frozen server when the server dies.
    ch.pause();
    let id = id_of(&svc.create_export(ACME, &request()).await);
    wait_running(&svc, ACME, &id, 1).await;
    ch.kill();

    // Retried, not failed: attempts grow while ClickHouse is down.
    let queued = wait_job(
        &svc,
        ACME,
        &id,
        Duration::from_secs(20),
        "queued for a retry after ClickHouse failures",
        |j| {
            j["status"] == "queued"
                && j["attempts"].as_u64() >= Some(2)
                && j["error"]["code"] == "clickhouse_unavailable"
        },
    )
    .await;
    assert!(queued["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ClickHouse"));
    assert_eq!(queued["parts"], json!([]), "{queued}");

    ch.start();
    let job = svc.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", svc.logs());
    let attempts = job["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "{job}");
    assert_eq!(
        job["error"],
        Value::Null,
        "a success clears the retry error: {job}"
    );
    assert_exact(&download(&svc, ACME, &job).await, &expected);
    assert_only_published_files(svc.object_store_dir(), "acme", &job);
    // Every failed attempt was recorded as a retry, none as a failure.
    let retries = worker_lines(&svc.logs(), &id, "will retry").len() as u64;
    assert_eq!(retries, attempts - 1, "{}", svc.logs());
}

#[tokio::test]
async fn a_stored_spec_the_catalog_no_longer_accepts_fails_without_retry() {
    let schemas = tempfile::tempdir().unwrap();
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    for e in std::fs::read_dir(&builtin).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            std::fs::copy(e.path(), schemas.path().join(e.file_name())).unwrap();
        }
    }
    let clicks_toml = schemas.path().join("clicks.toml");
    let mut text = std::fs::read_to_string(&clicks_toml).unwrap();
    text.push_str(
        "\n[[fields]]\nname = \"promo_code\"\ntype = \"String\"\n\
         description = \"A field only the extended catalog has.\"\n\
         filterable = true\ndefault = false\n",
    );
    std::fs::write(&clicks_toml, text).unwrap();

    let mut svc = Service::start_with(
        fast()
            .env("LOGPORT_WORKERS", "0")
            .env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap()),
    )
    .await;
    svc.ingest(
        ACME,
        "clicks",
        &[json!({"click_id": "p1", "event_time": format!("{DAY} 10:00:00"), "promo_code": "SPRING"})],
    )
    .await;
    let id = svc
        .create_export(
            ACME,
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
                    "fields": ["click_id", "promo_code"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get_job(&svc, ACME, &id).await["status"], "queued");

    // Back to the built-in catalog, with workers and generous retries.
    svc.restart_with(fast().env("LOGPORT_MAX_ATTEMPTS", "5"))
        .await;
    let job = svc.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "invalid_request", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("promo_code"),
        "{job}"
    );
    assert_eq!(job["attempts"], 1, "not retried: {job}");
    assert!(job["finished_at"].is_string(), "{job}");
    assert!(job_files(svc.object_store_dir(), "acme", &id).is_empty());
    assert_eq!(
        worker_lines(&svc.logs(), &id, "will retry").len(),
        0,
        "{}",
        svc.logs()
    );
}

// ---------------------------------------------------------------------------------
// 4. A frozen worker whose lease ran out.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_zombie_worker_cannot_complete_or_overwrite_a_reaped_job() {
    let ch = PrivateClickHouse::launch();
    let pg = PgDatabase::create();
    let files = tempfile::tempdir().unwrap();
    let shared = |workers: &str| {
        fast()
            .env("LOGPORT_WORKERS", workers)
            .clickhouse_url(&ch.url)
            .job_store_url(&pg.url)
            .object_store_dir(files.path())
    };
    let zombie = Service::start_with(shared("1")).await;
    // The rescuer's orphan sweep runs every second: what the zombie's abandoned attempt
    // left (a worker that lost its lease removes nothing itself) is its to remove.
    let rescuer_opts = |workers: &str| {
        shared(workers)
            .clickhouse_database(&zombie.database)
            .env("LOGPORT_ORPHAN_SWEEP_INTERVAL", "1s")
    };
    let mut rescuer = Service::start_with(rescuer_opts("0")).await;
    let (rows, expected) = clicks("zombie", 300, 30);
    ingest_all(&zombie, ACME, &rows).await;

    // The zombie claims the export; its query hangs on the frozen ClickHouse.
    ch.pause();
    let id = id_of(&zombie.create_export(ACME, &request()).await);
    wait_running(&zombie, ACME, &id, 1).await;
    // The whole process freezes past its lease, its query still in flight.
    zombie.pause();
    ch.resume();

    // The other replica (now with a worker) reaps the lease and completes the job.
    rescuer.restart_with(rescuer_opts("1")).await;
    let job = rescuer.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", rescuer.logs());
    assert_eq!(job["attempts"], 2, "{job}");
    let rescuer_parts = job["parts"].clone();

    // The zombie wakes up: it must notice it lost the lease and write nothing that
    // counts.
    zombie.resume();
    wait_until(
        Duration::from_secs(15),
        "the zombie gives its attempt up",
        || !worker_lines(&zombie.logs(), &id, "lease lost").is_empty(),
    )
    .await;
    assert!(worker_lines(&zombie.logs(), &id, "export succeeded").is_empty());

    for svc in [&zombie, &rescuer] {
        let now = get_job(svc, ACME, &id).await;
        assert_eq!(now["status"], "succeeded", "{now}");
        assert_eq!(now["attempts"], 2, "{now}");
        assert_eq!(now["parts"], rescuer_parts, "{now}");
        let (status, manifest) = svc
            .get_json(&format!("/v1/exports/{id}/manifest"), ACME)
            .await;
        assert_eq!(status, 200, "{manifest}");
        assert_eq!(manifest["attempt"], 2, "{manifest}");
        assert_exact(&download(svc, ACME, &now).await, &expected);
    }
    wait_until(
        Duration::from_secs(15),
        "the orphan sweep removes the zombie's attempt",
        || {
            job_files(files.path(), "acme", &id)
                .iter()
                .all(|f| f.starts_with("2/"))
        },
    )
    .await;
    assert_only_published_files(files.path(), "acme", &job);
}

// ---------------------------------------------------------------------------------
// 5. Canceling a running export.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn canceling_a_running_export_stops_it_for_good() {
    let ch = PrivateClickHouse::launch();
    let mut svc =
        Service::start_with(fast().clickhouse_url(&ch.url).env("LOGPORT_WORKERS", "1")).await;
    let (rows, expected) = clicks("cancel", 200, 30);
    ingest_all(&svc, ACME, &rows).await;

    ch.pause();
    let id = id_of(&svc.create_export(ACME, &request()).await);
    wait_running(&svc, ACME, &id, 1).await;

    let resp = svc
        .post(&format!("/v1/exports/{id}/cancel"), ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let canceled: Value = resp.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    // The worker learns of it at its next heartbeat, then asks ClickHouse (still
    // frozen) to kill the query, which the pipeline bounds by KILL_QUERY_BOUND.
    let took = wait_until(
        2 * HEARTBEAT + KILL_QUERY_BOUND + Duration::from_secs(3),
        "the worker logs `export canceled`",
        || !worker_lines(&svc.logs(), &id, "export canceled").is_empty(),
    )
    .await;
    eprintln!("worker stopped the canceled export after {took:?}");

    ch.resume();
    let query_id = format!("logport-{id}");
    wait_until(
        Duration::from_secs(15),
        "the export query is gone from system.processes",
        || {
            ch.query(&format!(
                "SELECT count() FROM system.processes WHERE startsWith(query_id, '{query_id}')"
            ))
            .trim()
                == "0"
        },
    )
    .await;

    let job = get_job(&svc, ACME, &id).await;
    assert_eq!(job["status"], "canceled", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["parts"], json!([]), "{job}");
    assert_eq!(job["manifest_url"], Value::Null, "{job}");
    let (status, _) = svc
        .get_json(&format!("/v1/exports/{id}/manifest"), ACME)
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        job_files(svc.object_store_dir(), "acme", &id),
        Vec::<String>::new(),
        "a canceled export leaves no files"
    );

    // The only worker is free again, and after a restart the job stays canceled
    // while the queue keeps working.
    let (other, _) = svc.export(ACME, &request()).await;
    assert_eq!(other["attempts"], 1);
    svc.restart().await;
    let (after, parts) = svc.export(ACME, &request()).await;
    assert_eq!(after["status"], "succeeded");
    assert!(!parts.is_empty());
    assert_exact(&download(&svc, ACME, &after).await, &expected);
    let still = get_job(&svc, ACME, &id).await;
    assert_eq!(still["status"], "canceled", "{still}");
    assert_eq!(still["attempts"], 1, "never resurrected: {still}");
    assert_eq!(still["finished_at"], job["finished_at"]);
    assert!(job_files(svc.object_store_dir(), "acme", &id).is_empty());
}

// ---------------------------------------------------------------------------------
// 6. Idempotent submits under concurrency.
// ---------------------------------------------------------------------------------

async fn concurrent_idempotent_submits(options: Options) {
    let svc = Service::start_with(options.env("LOGPORT_WORKERS", "0")).await;
    let body = request();
    let key = "queue-test-key-1";
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let rb = svc
            .post("/v1/exports", ACME)
            .header("Idempotency-Key", key)
            .json(&body);
        posts.spawn(async move {
            let resp = rb.send().await.expect("create export");
            let status = resp.status().as_u16();
            let replayed = resp
                .headers()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap().to_string());
            let location = resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = resp.json().await.expect("JSON");
            (status, replayed, location, body)
        });
    }
    let mut answers = Vec::new();
    while let Some(r) = posts.join_next().await {
        answers.push(r.unwrap());
    }
    let created: Vec<_> = answers.iter().filter(|a| a.0 == 202).collect();
    let replayed: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    assert_eq!(created.len(), 1, "exactly one 202: {answers:?}");
    assert_eq!(replayed.len(), 19, "{answers:?}");
    assert_eq!(created[0].1, None, "the first answer is not a replay");
    assert!(replayed.iter().all(|a| a.1.as_deref() == Some("true")));
    let ids: BTreeSet<&str> = answers
        .iter()
        .map(|a| a.3["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one job id across all answers: {ids:?}");
    let id = *ids.iter().next().unwrap();
    let location = format!("/v1/exports/{id}");
    assert!(answers
        .iter()
        .all(|a| a.2.as_deref() == Some(location.as_str())));

    let list = svc.list_exports(ACME, "").await;
    let listed = listed_ids(&list);
    assert_eq!(listed, [id]);

    // The same key with another body is a conflict.
    let mut other = body.clone();
    other["format"] = json!("jsonl");
    let resp = svc
        .post("/v1/exports", ACME)
        .header("Idempotency-Key", key)
        .json(&other)
        .send()
        .await
        .unwrap();
    let (status, problem) = problem(resp).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "/problems/conflict");
    // Keys belong to a tenant: globex may use the same one.
    let resp = svc
        .post("/v1/exports", GLOBEX)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let theirs: Value = resp.json().await.unwrap();
    assert_ne!(theirs["id"].as_str().unwrap(), id);
    let list = svc.list_exports(ACME, "").await;
    assert_eq!(list["exports"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn twenty_concurrent_submits_with_one_key_make_one_job_sqlite() {
    concurrent_idempotent_submits(fast()).await;
}

#[tokio::test]
async fn twenty_concurrent_submits_with_one_key_make_one_job_postgres() {
    let pg = PgDatabase::create();
    concurrent_idempotent_submits(fast().job_store_url(&pg.url)).await;
}

// ---------------------------------------------------------------------------------
// 7. Quotas and fairness.
// ---------------------------------------------------------------------------------

/// Asserts a 429 quota problem naming `limit`, with a usable Retry-After.
async fn assert_quota(resp: reqwest::Response, limit: &str) -> Value {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = problem(resp).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["type"], "/problems/quota-exceeded", "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    let secs: u64 = retry_after
        .expect("429 carries Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(secs > 0);
    body
}

#[tokio::test]
async fn queued_and_range_quotas_answer_429() {
    let svc = Service::start_with(
        fast()
            .env("LOGPORT_WORKERS", "0")
            .env("LOGPORT_MAX_QUEUED_PER_TENANT", "3")
            .env("LOGPORT_MAX_RANGE_DAYS", "7"),
    )
    .await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(svc.create_export(ACME, &request()).await["id"].clone());
    }
    let resp = svc.post_json("/v1/exports", ACME, &request()).await;
    assert_quota(resp, "max_queued_per_tenant").await;
    // The limit is per tenant …
    svc.create_export(GLOBEX, &request()).await;
    // … and counts queued jobs: canceling one frees a place.
    let id = queued[0].as_str().unwrap();
    let resp = svc
        .post(&format!("/v1/exports/{id}/cancel"), ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    svc.create_export(ACME, &request()).await;
    let list = svc.list_exports(ACME, "status=queued").await;
    assert_eq!(list["exports"].as_array().unwrap().len(), 3);

    // 8 whole days is over a 7-day limit; 7 is not (globex has room in its queue).
    let range =
        |until: &str| json!({"slice": "clicks", "date_since": "2026-11-01", "date_until": until});
    let resp = svc
        .post_json("/v1/exports", GLOBEX, &range("2026-11-08"))
        .await;
    let body = assert_quota(resp, "max_range_days").await;
    assert_eq!(body["field"], "date_until", "{body}");
    svc.create_export(GLOBEX, &range("2026-11-07")).await;
}

#[tokio::test]
async fn row_quota_answers_429_unless_a_limit_fits() {
    let svc = Service::start_with(fast().env("LOGPORT_MAX_ROWS_PER_EXPORT", "5")).await;
    let (rows, _) = clicks("rows", 10, 10);
    ingest_all(&svc, ACME, &rows).await;
    let resp = svc.post_json("/v1/exports", ACME, &request()).await;
    let body = assert_quota(resp, "max_rows_per_export").await;
    assert!(
        body["detail"].as_str().unwrap().contains("10 rows"),
        "{body}"
    );
    let list = svc.list_exports(ACME, "").await;
    assert_eq!(list["exports"], json!([]), "a refused export is not stored");

    // `limit: 5` fits, and the export holds exactly 5 of the rows.
    let mut limited = request();
    limited["limit"] = json!(5);
    let (job, _) = svc.export(ACME, &limited).await;
    let got = download(&svc, ACME, &job).await;
    assert_eq!(got.len(), 5);
    let ids: BTreeSet<&String> = got.iter().map(|r| &r.0).collect();
    assert_eq!(ids.len(), 5);
    assert!(got
        .iter()
        .all(|(id, ua)| id.starts_with("rows-") && *ua == agent(id, 10)));
    // So does a filter that matches 5 of them.
    let mut filtered = request();
    filtered["filters"] = json!([{"field": "country_code", "op": "eq", "value": "US"}]);
    let (job, _) = svc.export(ACME, &filtered).await;
    assert_eq!(job["progress"]["rows"], 5);
}

#[tokio::test]
async fn tenants_take_turns() {
    let mut svc = Service::start_with(fast().env("LOGPORT_WORKERS", "0")).await;
    let (rows, _) = clicks("turns", 5, 10);
    ingest_all(&svc, ACME, &rows).await;
    ingest_all(&svc, GLOBEX, &rows).await;
    let mut acme = Vec::new();
    for _ in 0..10 {
        acme.push(id_of(&svc.create_export(ACME, &request()).await));
    }
    let globex = id_of(&svc.create_export(GLOBEX, &request()).await);

    svc.restart_with(fast().env("LOGPORT_WORKERS", "1")).await;
    let globex_job = svc.wait_export(GLOBEX, &globex).await;
    assert_eq!(globex_job["status"], "succeeded", "{globex_job}");
    let globex_started = globex_job["started_at"].as_str().unwrap().to_string();
    let mut before = Vec::new();
    for id in &acme {
        let job = svc.wait_export(ACME, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let started = job["started_at"].as_str().unwrap().to_string();
        if started <= globex_started {
            before.push(started);
        }
    }
    assert!(
        before.len() <= 1,
        "globex waited behind {} of acme's 10 exports (started {globex_started}, acme: {before:?})",
        before.len()
    );
}

// ---------------------------------------------------------------------------------
// 8. Graceful shutdown.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_releases_a_hung_export_without_spending_an_attempt() {
    let ch = PrivateClickHouse::launch();
    // One attempt only: a shutdown that spent it would fail the job.
    let opts = || {
        fast()
            .clickhouse_url(&ch.url)
            .env("LOGPORT_WORKERS", "1")
            .env("LOGPORT_MAX_ATTEMPTS", "1")
            .env("LOGPORT_SHUTDOWN_GRACE", "1s")
    };
    let mut svc = Service::start_with(opts()).await;
    let (rows, expected) = clicks("term", 300, 30);
    ingest_all(&svc, ACME, &rows).await;

    ch.pause();
    let id = id_of(&svc.create_export(ACME, &request()).await);
    wait_running(&svc, ACME, &id, 1).await;
    let t0 = Instant::now();
    svc.signal("TERM");
    let status = svc.wait_exit(Duration::from_secs(1 + 10)).await;
    assert!(status.success(), "{status}\n{}", svc.logs());
    eprintln!("exited {:?} after SIGTERM", t0.elapsed());
    assert_eq!(
        worker_lines(&svc.logs(), &id, "export released to the queue at shutdown").len(),
        1,
        "{}",
        svc.logs()
    );
    ch.resume();

    // Back in the queue, as it was: attempt 1 done, no error, no files.
    svc.restart_with(opts().env("LOGPORT_WORKERS", "0")).await;
    let job = get_job(&svc, ACME, &id).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["error"], Value::Null, "{job}");
    assert!(job_files(svc.object_store_dir(), "acme", &id).is_empty());

    svc.restart_with(opts()).await;
    let job = svc.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", svc.logs());
    assert_eq!(job["attempts"], 2, "{job}");
    assert_exact(&download(&svc, ACME, &job).await, &expected);
    assert_only_published_files(svc.object_store_dir(), "acme", &job);
}

#[tokio::test]
async fn sigterm_lets_a_running_export_finish_within_the_grace_period() {
    let ch = PrivateClickHouse::launch();
    let opts = || {
        fast()
            .clickhouse_url(&ch.url)
            .env("LOGPORT_WORKERS", "1")
            .env("LOGPORT_SHUTDOWN_GRACE", "10s")
    };
    let mut svc = Service::start_with(opts()).await;
    let (rows, expected) = clicks("grace", 300, 30);
    ingest_all(&svc, ACME, &rows).await;

    ch.pause();
    let id = id_of(&svc.create_export(ACME, &request()).await);
    wait_running(&svc, ACME, &id, 1).await;
    svc.signal("TERM");
    wait_until(
        Duration::from_secs(5),
        "logport acknowledges SIGTERM",
        || svc.logs().contains("shutdown requested"),
    )
    .await;
    // The export is still running when ClickHouse answers again, inside the grace.
    assert!(svc.try_exit_status().is_none(), "{}", svc.logs());
    ch.resume();
    let status = svc.wait_exit(Duration::from_secs(10 + 10)).await;
    assert!(status.success(), "{status}\n{}", svc.logs());
    assert_eq!(worker_lines(&svc.logs(), &id, "export succeeded").len(), 1);

    svc.restart_with(opts().env("LOGPORT_WORKERS", "0")).await;
    let job = get_job(&svc, ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_exact(&download(&svc, ACME, &job).await, &expected);
    assert_only_published_files(svc.object_store_dir(), "acme", &job);
}

// ---------------------------------------------------------------------------------
// 9. Races: DELETE against completion; a worker whose lease was taken over.
// ---------------------------------------------------------------------------------

/// Sends `DELETE /v1/exports/{id}` and expects 204.
async fn delete_export(svc: &Service, id: &str) {
    let resp = svc
        .delete(&format!("/v1/exports/{id}"), ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap());
}

/// After a DELETE answered 204: the job is `canceled` or `expired` — never
/// `succeeded` — serves no file, and (once its worker is done) has none left.
async fn assert_deleted(svc: &Service, id: &str) -> Value {
    let job = get_job(svc, ACME, id).await;
    let status = job["status"].as_str().unwrap().to_string();
    assert!(
        status == "canceled" || status == "expired",
        "a deleted export is {status}: {job}\n{}",
        svc.logs()
    );
    for path in [
        format!("/v1/exports/{id}/parts/1"),
        format!("/v1/exports/{id}/manifest"),
    ] {
        let code = svc.get(&path, ACME).send().await.unwrap().status().as_u16();
        assert!(
            code == 404 || code == 410,
            "{path}: {code} for a deleted export"
        );
    }
    wait_until(
        Duration::from_secs(15),
        "the deleted export's files are gone",
        || job_files(svc.object_store_dir(), "acme", id).is_empty(),
    )
    .await;
    // Still not resurrected once the worker is done with it.
    let later = get_job(svc, ACME, id).await;
    assert_eq!(later["status"], job["status"], "{later}");
    job
}

/// The two interleavings that matter, forced with pause failpoints, then a plain race
/// many times over. (1) DELETE lands while the worker holds parts and manifest but has
/// not marked the job succeeded: DELETE cancels, the worker's succeed fails its fence,
/// and the worker removes what it wrote. (2) DELETE read the job as running, and the
/// worker completed before DELETE changed the state: DELETE expires the succeeded job
/// before removing its files. Either way the job ends canceled or expired, without
/// files — never succeeded with files missing.
#[tokio::test]
async fn delete_racing_completion_never_leaves_a_succeeded_job_without_files() {
    // A lease longer than any pause: the worker does not heartbeat between writing
    // the manifest and committing, and must not lose the job there.
    let opts = |failpoints: &str| {
        let o = fast()
            .env("LOGPORT_WORKERS", "1")
            .env("LOGPORT_LEASE", "10s");
        if failpoints.is_empty() {
            o
        } else {
            o.env("LOGPORT_FAILPOINTS", failpoints)
        }
    };
    let mut svc = Service::start_with(opts("before_commit=pause:3000")).await;
    let (rows, _) = clicks("race", 40, 10);
    ingest_all(&svc, ACME, &rows).await;
    let mut req = request();
    req["part_max_rows"] = json!(15);
    let paused = |svc: &Service, point: &str| {
        strip_ansi(&svc.logs())
            .lines()
            .filter(|l| l.contains(&format!("failpoint=\"{point}\"")) && l.contains("pausing"))
            .count()
    };

    // (1) The worker waits at before_commit with 3 parts and the manifest written.
    let id = id_of(&svc.create_export(ACME, &req).await);
    wait_until(
        Duration::from_secs(20),
        "the worker reaches before_commit",
        || paused(&svc, "before_commit") == 1,
    )
    .await;
    let written = job_files(svc.object_store_dir(), "acme", &id);
    assert!(
        written.contains(&"1/manifest.json".to_string()),
        "{written:?}"
    );
    delete_export(&svc, &id).await;
    let job = assert_deleted(&svc, &id).await;
    assert_eq!(job["status"], "canceled", "{job}");
    wait_until(Duration::from_secs(10), "the worker gives up", || {
        !worker_lines(&svc.logs(), &id, "export canceled").is_empty()
    })
    .await;
    assert!(worker_lines(&svc.logs(), &id, "export succeeded").is_empty());
    let job = get_job(&svc, ACME, &id).await;
    assert_eq!(job["status"], "canceled", "{job}");
    assert!(job_files(svc.object_store_dir(), "acme", &id).is_empty());

    // (2) DELETE reads the job while it runs, then waits; the worker commits first.
    // (The log file goes on across restarts: count from here.)
    svc.restart_with(opts(
        "before_commit=pause:1500,delete_before_transition=pause:3000",
    ))
    .await;
    let seen = paused(&svc, "before_commit");
    let id = id_of(&svc.create_export(ACME, &req).await);
    wait_until(
        Duration::from_secs(20),
        "the worker reaches before_commit",
        || paused(&svc, "before_commit") == seen + 1,
    )
    .await;
    assert_eq!(get_job(&svc, ACME, &id).await["status"], "running");
    delete_export(&svc, &id).await;
    assert_eq!(
        paused(&svc, "delete_before_transition"),
        1,
        "{}",
        svc.logs()
    );
    assert_eq!(
        worker_lines(&svc.logs(), &id, "export succeeded").len(),
        1,
        "the worker committed while DELETE waited: {}",
        svc.logs()
    );
    let job = assert_deleted(&svc, &id).await;
    assert_eq!(job["status"], "expired", "{job}");

    // (3) No failpoints: DELETE at a random moment of each of many short exports.
    svc.restart_with(opts("")).await;
    let mut outcomes = BTreeMap::<String, usize>::new();
    for i in 0..24u64 {
        let id = id_of(&svc.create_export(ACME, &req).await);
        tokio::time::sleep(Duration::from_millis((i * 7) % 60)).await;
        delete_export(&svc, &id).await;
        let job = assert_deleted(&svc, &id).await;
        *outcomes
            .entry(job["status"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    eprintln!("DELETE against completion: {outcomes:?}");
    // The worker is still healthy: a new export succeeds with all its files.
    let (job, parts) = svc.export(ACME, &req).await;
    assert_eq!(parts.len(), 3);
    assert_only_published_files(svc.object_store_dir(), "acme", &job);
}

/// A worker whose lease ran out while it waited (here: paused right after its claim)
/// and whose job another replica then completed must remove nothing when it wakes,
/// even on the path that used to remove every file of the job (a failure that is not
/// retried: its catalog no longer accepts the stored request). The other replica's
/// files stay whole and downloadable; the job stays succeeded.
#[tokio::test]
async fn a_worker_that_lost_its_lease_removes_no_files() {
    let pg = PgDatabase::create();
    let files = tempfile::tempdir().unwrap();
    // The rescuer's catalog has a field the zombie's (the built-in one) lacks.
    let schemas = tempfile::tempdir().unwrap();
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    for e in std::fs::read_dir(&builtin).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            std::fs::copy(e.path(), schemas.path().join(e.file_name())).unwrap();
        }
    }
    let clicks_toml = schemas.path().join("clicks.toml");
    let mut text = std::fs::read_to_string(&clicks_toml).unwrap();
    text.push_str(
        "\n[[fields]]\nname = \"promo_code\"\ntype = \"String\"\n\
         description = \"A field only the rescuer's catalog has.\"\n\
         filterable = true\ndefault = false\n",
    );
    std::fs::write(&clicks_toml, text).unwrap();
    let shared = |workers: &str| {
        fast()
            .env("LOGPORT_WORKERS", workers)
            .job_store_url(&pg.url)
            .object_store_dir(files.path())
    };
    let rescuer_opts =
        |workers: &str| shared(workers).env("LOGPORT_SCHEMA_DIR", schemas.path().to_str().unwrap());
    let mut rescuer = Service::start_with(rescuer_opts("0")).await;
    rescuer
        .ingest(
            ACME,
            "clicks",
            &(0..30)
                .map(|i| {
                    json!({"click_id": format!("z{i}"), "event_time": format!("{DAY} 10:00:00"),
                           "promo_code": format!("P{i}")})
                })
                .collect::<Vec<_>>(),
        )
        .await;
    let zombie = Service::start_with(
        shared("1")
            .clickhouse_database(&rescuer.database)
            .env("LOGPORT_FAILPOINTS", "after_claim=pause:9000"),
    )
    .await;
    let id = rescuer
        .create_export(
            ACME,
            &json!({"slice": "clicks", "date_since": DAY, "date_until": DAY,
                    "fields": ["click_id", "promo_code"], "part_max_rows": 10}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(Duration::from_secs(10), "the zombie claims the job", || {
        zombie.logs().contains("failpoint reached: pausing")
    })
    .await;

    // Its lease (2 s) runs out; the job is reaped and the rescuer completes it, all
    // well before the zombie wakes.
    rescuer.restart_with(rescuer_opts("1")).await;
    let job = rescuer.wait_export(ACME, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", rescuer.logs());
    assert_eq!(job["attempts"], 2, "{job}");
    let published = job_files(files.path(), "acme", &id);
    assert_eq!(published.len(), 4, "3 parts and a manifest: {published:?}");

    // The zombie wakes, cannot validate the request, and its fail() finds the fence
    // gone: it must leave every file where it is.
    wait_until(
        Duration::from_secs(20),
        "the zombie gives its attempt up",
        || !worker_lines(&zombie.logs(), &id, "lease lost").is_empty(),
    )
    .await;
    let lost = worker_lines(&zombie.logs(), &id, "lease lost");
    assert!(
        lost.iter().any(|l| l.contains("stage=\"fail\"")),
        "the zombie reached fail() and found the fence gone: {lost:?}"
    );
    assert!(worker_lines(&zombie.logs(), &id, "export failed").is_empty());
    assert_eq!(job_files(files.path(), "acme", &id), published);
    let now = get_job(&rescuer, ACME, &id).await;
    assert_eq!(now["status"], "succeeded", "{now}");
    assert_eq!(now["attempts"], 2, "{now}");
    let mut rows = 0;
    for bytes in rescuer.download_parts(ACME, &now).await {
        rows += parse_csv(&bytes).1.len();
    }
    assert_eq!(rows, 30);
}
