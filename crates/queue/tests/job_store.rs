//! The job store conformance suite: every backend must pass every case.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;

use logport_queue::tokens::token_digest;
use logport_queue::{
    AuditRecord, ClaimOptions, CompatJobs, Created, Heartbeat, IngestKey, IngestKeys, Job,
    JobError, JobStatus, JobStore, KeyedIngest, ListQuery, NewJob, NewToken, Part,
    PostgresJobStore, Progress, QueueError, Revoked, Scope, SqliteJobStore, TokenStore,
};
use serde_json::json;

const LEASE: i64 = 30_000;
const OPTS: ClaimOptions = ClaimOptions {
    lease_ms: LEASE,
    max_running_per_tenant: 100,
};
const T0: i64 = 1_800_000_000_000;

/// A job whose request carries `body` as the value of its one filter: the store keeps
/// requests as they are, so tests tell jobs apart (and bodies apart) by it.
fn new_job(tenant: &str, key: Option<&str>, body: serde_json::Value) -> NewJob {
    let request = serde_json::from_value(json!({
        "slice": "clicks", "date_since": "2026-11-01", "date_until": "2026-11-01",
        "filters": [{"field": "tag", "op": "eq", "value": body}],
    }))
    .unwrap();
    NewJob {
        tenant: tenant.into(),
        slice: "clicks".into(),
        request,
        idempotency_key: key.map(String::from),
        max_attempts: 3,
        app_id: None,
        fingerprint: None,
    }
}

/// The body a job was made with (see [`new_job`]).
fn body(job: &Job) -> &serde_json::Value {
    job.request.filters[0].value.as_ref().unwrap()
}

fn compat_job(tenant: &str, app_id: u64, fingerprint: Option<&str>, i: i64) -> NewJob {
    NewJob {
        app_id: Some(app_id),
        fingerprint: fingerprint.map(String::from),
        ..new_job(tenant, None, json!({ "app": app_id, "i": i }))
    }
}

enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Database(String),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Database(name) = self {
            let _ = std::process::Command::new("psql")
                .args([
                    &admin_url(),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .output();
        }
    }
}

/// A backend is every store, on one database.
trait Backend: JobStore + CompatJobs + TokenStore + IngestKeys {}
impl<T: JobStore + CompatJobs + TokenStore + IngestKeys> Backend for T {}

async fn sqlite() -> (Arc<dyn Backend>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteJobStore::open(path.to_str().unwrap()).await.unwrap();
    (Arc::new(store), Guard::Dir(dir))
}

/// The PostgreSQL server tests use; each test gets a database of its own.
fn admin_url() -> String {
    std::env::var("LOGPORT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn postgres() -> (Arc<dyn Backend>, Guard) {
    use sqlx::Executor;
    let admin = admin_url();
    let name = format!("lpq_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for these tests: {e}"));
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    let store = PostgresJobStore::open(&format!("{base}/{name}"))
        .await
        .unwrap();
    (Arc::new(store), Guard::Database(name))
}

/// Every case, on each backend.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        suite!(@on sqlite, $($case),*);
        suite!(@on postgres, $($case),*);
    };
    (@on $backend:ident, $($case:ident),*) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _guard) = super::$backend().await;
                    super::$case(store.as_ref()).await;
                }
            )*
        }
    };
}

suite!(
    create_get_and_tenant_walls,
    counts_by_status,
    claim_runs_each_job_once,
    fencing_rejects_a_stale_lease,
    cancel_queued_and_running,
    retry_then_fail_after_max_attempts,
    expired_leases_are_requeued,
    idempotency_keys,
    list_pages_newest_first,
    parts_of_the_published_attempt,
    a_part_written_again_replaces_the_first,
    tenants_take_turns,
    a_freed_worker_goes_to_the_tenant_running_fewest,
    running_limit_per_tenant,
    release_gives_the_job_back,
    expiry,
    concurrent_idempotent_creates_make_one_job,
    concurrent_claims_take_each_job_once,
    fingerprints_find_the_newest_job,
    pending_jobs_per_app,
    numbers_count_per_tenant,
    numbered_jobs_list_clean_and_quota,
    concurrent_numbering_gives_distinct_numbers,
    job_lists_by_app_and_hidden_slices,
    tokens_are_stored_as_digests_and_revoked,
    tokens_list_per_tenant,
    activity_outbox_is_claimed_under_a_lease,
    ingest_keys_replay_refuse_and_expire,
    concurrent_keyed_ingests_record_one_entry,
    activity_rows_set_aside_are_kept_and_never_claimed_again,
);

async fn create_get_and_tenant_walls(s: &dyn JobStore) {
    let c = s
        .create(new_job("acme", None, json!({"a": 1})), T0)
        .await
        .unwrap();
    let job = c.job().clone();
    assert!(matches!(c, Created::New(_)));
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.created_at, T0);
    assert_eq!(job.id.len(), 32);
    assert_eq!(s.get("acme", &job.id).await.unwrap().unwrap(), job);
    assert!(s.get("globex", &job.id).await.unwrap().is_none());
    assert!(s.cancel("globex", &job.id, T0).await.unwrap().is_none());
    assert_eq!(
        s.get("acme", &job.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert!(s
        .list(
            "globex",
            &ListQuery {
                limit: 10,
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .is_empty());
}

async fn claim_runs_each_job_once(s: &dyn JobStore) {
    let a = s
        .create(new_job("acme", None, json!({"n": 1})), T0)
        .await
        .unwrap();
    let b = s
        .create(new_job("acme", None, json!({"n": 2})), T0 + 1)
        .await
        .unwrap();
    let first = s.claim("w1", &OPTS, T0 + 10).await.unwrap().unwrap();
    let second = s.claim("w2", &OPTS, T0 + 10).await.unwrap().unwrap();
    assert_eq!(first.id, a.job().id);
    assert_eq!(second.id, b.job().id);
    assert_eq!(first.status, JobStatus::Running);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.started_at, Some(T0 + 10));
    assert!(s.claim("w3", &OPTS, T0 + 10).await.unwrap().is_none());
}

async fn fencing_rejects_a_stale_lease(s: &dyn JobStore) {
    s.create(new_job("acme", None, json!({})), T0)
        .await
        .unwrap();
    let job = s.claim("w1", &OPTS, T0).await.unwrap().unwrap();
    let stale = job.lease().unwrap();
    // The lease runs out; the job is requeued and claimed by another worker.
    assert_eq!(s.reap_expired_leases(T0 + LEASE + 1).await.unwrap(), 1);
    let again = s.claim("w2", &OPTS, T0 + LEASE + 2).await.unwrap().unwrap();
    assert_eq!(again.attempts, 2);
    let now = T0 + LEASE + 3;
    let part = Part {
        n: 1,
        key: "k".into(),
        rows: 1,
        bytes: 1,
        sha256: "x".into(),
    };
    assert_eq!(
        s.heartbeat(&stale, Progress::default(), LEASE, now)
            .await
            .unwrap(),
        Heartbeat::Lost
    );
    assert!(!s.add_part(&stale, &part, now).await.unwrap());
    assert!(!s
        .succeed(&stale, "m", Progress::default(), now + 1, now)
        .await
        .unwrap());
    let err = JobError {
        code: "x".into(),
        message: "y".into(),
    };
    assert!(!s.fail(&stale, &err, now).await.unwrap());
    assert_eq!(
        s.retry(&stale, &err, now, now).await.unwrap(),
        JobStatus::Running
    );
    let current = again.lease().unwrap();
    assert_eq!(
        s.heartbeat(
            &current,
            Progress {
                rows: 5,
                bytes: 6,
                parts: 0
            },
            LEASE,
            now
        )
        .await
        .unwrap(),
        Heartbeat::Held
    );
    assert!(s.add_part(&current, &part, now).await.unwrap());
    assert!(s
        .succeed(
            &current,
            "m",
            Progress {
                rows: 5,
                bytes: 6,
                parts: 1
            },
            now + 99,
            now
        )
        .await
        .unwrap());
    let done = s.get("acme", &job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.progress.rows, 5);
    assert_eq!(done.expires_at, Some(now + 99));
    assert_eq!(done.parts.len(), 1);
    assert!(done.error.is_none());
}

async fn cancel_queued_and_running(s: &dyn JobStore) {
    let q = s
        .create(new_job("acme", None, json!({"q": 1})), T0)
        .await
        .unwrap();
    let canceled = s
        .cancel("acme", &q.job().id, T0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(canceled.status, JobStatus::Canceled);
    assert!(
        s.claim("w", &OPTS, T0 + 2).await.unwrap().is_none(),
        "a canceled job never runs"
    );

    s.create(new_job("acme", None, json!({"r": 1})), T0 + 3)
        .await
        .unwrap();
    let running = s.claim("w", &OPTS, T0 + 4).await.unwrap().unwrap();
    let after = s
        .cancel("acme", &running.id, T0 + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.status, JobStatus::Canceled);
    let lease = running.lease().unwrap();
    assert_eq!(
        s.heartbeat(&lease, Progress::default(), LEASE, T0 + 6)
            .await
            .unwrap(),
        Heartbeat::Canceled
    );
    assert!(!s
        .succeed(&lease, "m", Progress::default(), 0, T0 + 7)
        .await
        .unwrap());
    // Canceling again changes nothing; a finished job stays finished.
    let again = s
        .cancel("acme", &running.id, T0 + 8)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.finished_at, after.finished_at);
    assert_eq!(s.reap_expired_leases(T0 + 10 * LEASE).await.unwrap(), 0);
    assert_eq!(
        s.get("acme", &running.id).await.unwrap().unwrap().status,
        JobStatus::Canceled
    );
}

async fn retry_then_fail_after_max_attempts(s: &dyn JobStore) {
    s.create(new_job("acme", None, json!({})), T0)
        .await
        .unwrap();
    let err = JobError {
        code: "clickhouse_unavailable".into(),
        message: "refused".into(),
    };
    let mut now = T0;
    for attempt in 1..=3 {
        let job = s.claim("w", &OPTS, now).await.unwrap().unwrap();
        assert_eq!(job.attempts, attempt);
        let next = s
            .retry(&job.lease().unwrap(), &err, now + 1000, now)
            .await
            .unwrap();
        if attempt < 3 {
            assert_eq!(next, JobStatus::Queued);
            assert!(
                s.claim("w", &OPTS, now + 999).await.unwrap().is_none(),
                "backoff respected"
            );
            now += 1000;
        } else {
            assert_eq!(next, JobStatus::Failed);
            let failed = s.get("acme", &job.id).await.unwrap().unwrap();
            assert_eq!(failed.error.unwrap().code, "clickhouse_unavailable");
            assert!(failed.finished_at.is_some());
        }
    }
}

async fn expired_leases_are_requeued(s: &dyn JobStore) {
    s.create(new_job("acme", None, json!({})), T0)
        .await
        .unwrap();
    let job = s.claim("w", &OPTS, T0).await.unwrap().unwrap();
    assert_eq!(
        s.heartbeat(
            &job.lease().unwrap(),
            Progress::default(),
            LEASE,
            T0 + LEASE - 1
        )
        .await
        .unwrap(),
        Heartbeat::Held
    );
    assert_eq!(
        s.reap_expired_leases(T0 + LEASE + 1).await.unwrap(),
        0,
        "heartbeat extended it"
    );
    assert_eq!(s.reap_expired_leases(T0 + 2 * LEASE).await.unwrap(), 1);
    let requeued = s.get("acme", &job.id).await.unwrap().unwrap();
    assert_eq!(requeued.status, JobStatus::Queued);
    assert_eq!(requeued.error.unwrap().code, "lease_expired");
}

async fn idempotency_keys(s: &dyn JobStore) {
    let a = s
        .create(new_job("acme", Some("k1"), json!({"x": 1})), T0)
        .await
        .unwrap();
    let b = s
        .create(new_job("acme", Some("k1"), json!({"x": 1})), T0 + 5)
        .await
        .unwrap();
    assert!(matches!(b, Created::Existing(_)));
    assert_eq!(a.job().id, b.job().id);
    let conflict = s
        .create(new_job("acme", Some("k1"), json!({"x": 2})), T0 + 6)
        .await;
    assert!(matches!(conflict, Err(QueueError::IdempotencyConflict)));
    let other_tenant = s
        .create(new_job("globex", Some("k1"), json!({"x": 1})), T0)
        .await
        .unwrap();
    assert!(matches!(other_tenant, Created::New(_)));
}

async fn list_pages_newest_first(s: &dyn JobStore) {
    for i in 0..5 {
        s.create(new_job("acme", None, json!({"i": i})), T0 + i)
            .await
            .unwrap();
    }
    let page = s
        .list(
            "acme",
            &ListQuery {
                limit: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(body(&page[0])["i"], 4);
    let last = page.last().unwrap();
    let rest = s
        .list(
            "acme",
            &ListQuery {
                limit: 3,
                before: Some((last.created_at, last.id.clone())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        rest.iter()
            .map(|j| body(j)["i"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 0]
    );
    let queued = s
        .list(
            "acme",
            &ListQuery {
                limit: 10,
                status: Some(JobStatus::Running),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(queued.is_empty());
}

async fn parts_of_the_published_attempt(s: &dyn JobStore) {
    s.create(new_job("acme", None, json!({})), T0)
        .await
        .unwrap();
    let first = s.claim("w", &OPTS, T0).await.unwrap().unwrap();
    let l1 = first.lease().unwrap();
    let part = |n: u32, key: &str| Part {
        n,
        key: key.into(),
        rows: 1,
        bytes: 2,
        sha256: "s".into(),
    };
    assert!(s.add_part(&l1, &part(1, "a1/p1"), T0).await.unwrap());
    let err = JobError {
        code: "x".into(),
        message: "y".into(),
    };
    s.retry(&l1, &err, T0, T0).await.unwrap();
    let second = s.claim("w", &OPTS, T0 + 1).await.unwrap().unwrap();
    assert!(
        second.parts.is_empty(),
        "a new attempt starts with no parts"
    );
    let l2 = second.lease().unwrap();
    s.add_part(&l2, &part(1, "a2/p1"), T0 + 2).await.unwrap();
    s.add_part(&l2, &part(2, "a2/p2"), T0 + 2).await.unwrap();
    s.succeed(&l2, "a2/manifest.json", Progress::default(), T0 + 9, T0 + 3)
        .await
        .unwrap();
    let done = s.get("acme", &first.id).await.unwrap().unwrap();
    assert_eq!(
        done.parts
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>(),
        ["a2/p1", "a2/p2"]
    );
    assert_eq!(done.manifest_key.as_deref(), Some("a2/manifest.json"));
}

/// A worker that writes part n again (a retried upload) leaves one part n: the last.
async fn a_part_written_again_replaces_the_first(s: &dyn JobStore) {
    s.create(new_job("acme", None, json!({})), T0)
        .await
        .unwrap();
    let job = s.claim("w", &OPTS, T0).await.unwrap().unwrap();
    let lease = job.lease().unwrap();
    for (key, rows) in [("p1-first", 1), ("p1-again", 5)] {
        let part = Part {
            n: 1,
            key: key.into(),
            rows,
            bytes: 10 * rows,
            sha256: key.into(),
        };
        assert!(s.add_part(&lease, &part, T0).await.unwrap());
    }
    let running = s.get("acme", &job.id).await.unwrap().unwrap();
    assert_eq!(
        running.parts,
        [Part {
            n: 1,
            key: "p1-again".into(),
            rows: 5,
            bytes: 50,
            sha256: "p1-again".into(),
        }]
    );
}

async fn tenants_take_turns(s: &dyn JobStore) {
    // acme queues 100 jobs first; globex's single job must run within one slot.
    for i in 0..100 {
        s.create(new_job("acme", None, json!({"i": i})), T0 + i)
            .await
            .unwrap();
    }
    s.create(new_job("globex", None, json!({})), T0 + 200)
        .await
        .unwrap();
    let first = s.claim("w", &OPTS, T0 + 300).await.unwrap().unwrap();
    let second = s.claim("w", &OPTS, T0 + 301).await.unwrap().unwrap();
    let tenants = [first.tenant.as_str(), second.tenant.as_str()];
    assert!(
        tenants.contains(&"globex"),
        "globex waited more than one slot: {tenants:?}"
    );
    // Then turns alternate while both have work.
    s.create(new_job("globex", None, json!({"again": 1})), T0 + 302)
        .await
        .unwrap();
    let third = s.claim("w", &OPTS, T0 + 303).await.unwrap().unwrap();
    let fourth = s.claim("w", &OPTS, T0 + 304).await.unwrap().unwrap();
    assert_ne!(third.tenant, fourth.tenant);
}

async fn a_freed_worker_goes_to_the_tenant_running_fewest(s: &dyn JobStore) {
    for (n, tenant) in ["acme", "globex", "initech"].into_iter().enumerate() {
        for i in 0..3 {
            let at = T0 + 10 * n as i64 + i;
            s.create(new_job(tenant, None, json!({"i": i})), at)
                .await
                .unwrap();
        }
    }
    // Three workers, one job each: every tenant runs one.
    let mut running = Vec::new();
    for k in 0..3 {
        running.push(s.claim("w", &OPTS, T0 + 100 + k).await.unwrap().unwrap());
    }
    let mut tenants: Vec<&str> = running.iter().map(|j| j.tenant.as_str()).collect();
    tenants.sort_unstable();
    assert_eq!(tenants, ["acme", "globex", "initech"]);
    // initech's job ends: the freed worker goes to initech (running none), not to
    // acme, which claimed least recently but still runs one.
    let initech = running.iter().find(|j| j.tenant == "initech").unwrap();
    s.succeed(
        &initech.lease().unwrap(),
        "m",
        Progress::default(),
        T0 + 9_999,
        T0 + 103,
    )
    .await
    .unwrap();
    let next = s.claim("w", &OPTS, T0 + 104).await.unwrap().unwrap();
    assert_eq!(next.tenant, "initech");
    // Then every tenant runs one again, and the next worker goes by turns.
    let next = s.claim("w", &OPTS, T0 + 105).await.unwrap().unwrap();
    assert_eq!(next.tenant, "acme");
}

async fn running_limit_per_tenant(s: &dyn JobStore) {
    for i in 0..3 {
        s.create(new_job("acme", None, json!({"i": i})), T0 + i)
            .await
            .unwrap();
    }
    let opts = ClaimOptions {
        lease_ms: LEASE,
        max_running_per_tenant: 2,
    };
    let a = s.claim("w", &opts, T0 + 10).await.unwrap().unwrap();
    s.claim("w", &opts, T0 + 11).await.unwrap().unwrap();
    assert!(
        s.claim("w", &opts, T0 + 12).await.unwrap().is_none(),
        "limit of 2 running"
    );
    assert_eq!(s.count_queued("acme").await.unwrap(), 1);
    assert_eq!(s.count_queued("globex").await.unwrap(), 0);
    s.succeed(
        &a.lease().unwrap(),
        "m",
        Progress::default(),
        T0 + 99,
        T0 + 13,
    )
    .await
    .unwrap();
    assert!(s.claim("w", &opts, T0 + 14).await.unwrap().is_some());
}

async fn release_gives_the_job_back(s: &dyn JobStore) {
    let mut job = new_job("acme", None, json!({}));
    job.max_attempts = 1;
    s.create(job, T0).await.unwrap();
    let claimed = s.claim("w1", &OPTS, T0).await.unwrap().unwrap();
    let lease = claimed.lease().unwrap();
    assert!(s.release(&lease, T0 + 1).await.unwrap());
    assert!(
        !s.release(&lease, T0 + 1).await.unwrap(),
        "a released lease is gone"
    );
    let again = s.claim("w2", &OPTS, T0 + 2).await.unwrap().unwrap();
    assert_eq!(again.attempts, 2);
    // The release did not spend the only attempt: a retryable error still gets a retry.
    let err = JobError {
        code: "x".into(),
        message: "y".into(),
    };
    assert_eq!(
        s.retry(&again.lease().unwrap(), &err, T0, T0 + 3)
            .await
            .unwrap(),
        JobStatus::Failed
    );
    assert_eq!(
        s.heartbeat(&lease, Progress::default(), LEASE, T0 + 4)
            .await
            .unwrap(),
        Heartbeat::Lost
    );
}

async fn expiry(s: &dyn JobStore) {
    s.create(new_job("acme", None, json!({})), T0)
        .await
        .unwrap();
    let job = s.claim("w", &OPTS, T0).await.unwrap().unwrap();
    s.succeed(
        &job.lease().unwrap(),
        "m",
        Progress::default(),
        T0 + 1000,
        T0,
    )
    .await
    .unwrap();
    assert!(s.due_for_expiry(T0 + 999, 10).await.unwrap().is_empty());
    let due = s.due_for_expiry(T0 + 1000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(s.mark_expired(&job.id, T0 + 1001).await.unwrap());
    assert!(!s.mark_expired(&job.id, T0 + 1002).await.unwrap());
    assert_eq!(
        s.get("acme", &job.id).await.unwrap().unwrap().status,
        JobStatus::Expired
    );
    assert!(s.due_for_expiry(T0 + 5000, 10).await.unwrap().is_empty());
}

async fn concurrent_idempotent_creates_make_one_job(s: &dyn JobStore) {
    let tries = (0..20).map(|_| s.create(new_job("acme", Some("same"), json!({"k": 1})), T0));
    let results = futures::future::join_all(tries).await;
    let ids: std::collections::HashSet<String> = results
        .into_iter()
        .map(|r| r.unwrap().job().id.clone())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(s.count_queued("acme").await.unwrap(), 1);
}

async fn concurrent_claims_take_each_job_once(s: &dyn JobStore) {
    for i in 0..40 {
        s.create(
            new_job(
                if i % 2 == 0 { "acme" } else { "globex" },
                None,
                json!({"i": i}),
            ),
            T0 + i,
        )
        .await
        .unwrap();
    }
    let claims = (0..8).map(|w| async move {
        let mut mine = Vec::new();
        while let Some(job) = s.claim(&format!("w{w}"), &OPTS, T0 + 100).await.unwrap() {
            mine.push(job.id);
        }
        mine
    });
    let all: Vec<String> = futures::future::join_all(claims)
        .await
        .into_iter()
        .flatten()
        .collect();
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 40);
    assert_eq!(unique.len(), 40, "a job was claimed twice");
}

async fn fingerprints_find_the_newest_job(s: &dyn Backend) {
    assert!(s.find_by_fingerprint("acme", "fp").await.unwrap().is_none());
    let old = s
        .create(compat_job("acme", 7, Some("fp"), 1), T0)
        .await
        .unwrap();
    let new = s
        .create(compat_job("acme", 7, Some("fp"), 2), T0 + 10)
        .await
        .unwrap();
    s.create(compat_job("acme", 7, Some("other"), 3), T0 + 20)
        .await
        .unwrap();
    s.create(compat_job("acme", 7, None, 4), T0 + 30)
        .await
        .unwrap();
    let found = s.find_by_fingerprint("acme", "fp").await.unwrap().unwrap();
    assert_eq!(found.job.id, new.job().id);
    assert_ne!(found.job.id, old.job().id);
    assert_eq!(found.served_at, None);
    assert!(
        s.find_by_fingerprint("globex", "fp")
            .await
            .unwrap()
            .is_none(),
        "fingerprints are per tenant"
    );

    assert!(!s
        .mark_served("globex", &new.job().id, T0 + 40)
        .await
        .unwrap());
    assert!(s.mark_served("acme", &new.job().id, T0 + 40).await.unwrap());
    assert!(
        !s.mark_served("acme", &new.job().id, T0 + 50).await.unwrap(),
        "only the first time counts"
    );
    let found = s.find_by_fingerprint("acme", "fp").await.unwrap().unwrap();
    assert_eq!(found.served_at, Some(T0 + 40));
    // The job itself is unchanged by the fingerprint columns.
    assert_eq!(
        found.job,
        s.get("acme", &new.job().id).await.unwrap().unwrap()
    );
}

async fn pending_jobs_per_app(s: &dyn Backend) {
    for i in 0..3 {
        s.create(compat_job("acme", 7, None, i), T0 + i)
            .await
            .unwrap();
    }
    s.create(compat_job("acme", 8, None, 9), T0 + 5)
        .await
        .unwrap();
    s.create(compat_job("globex", 7, None, 9), T0 + 5)
        .await
        .unwrap();
    s.create(new_job("acme", None, json!({})), T0 + 6)
        .await
        .unwrap();
    assert_eq!(s.count_pending_for_app("acme", 7).await.unwrap(), 3);
    assert_eq!(s.count_pending_for_app("acme", 8).await.unwrap(), 1);
    assert_eq!(s.count_pending_for_app("acme", 9).await.unwrap(), 0);
    // A running job is still pending; a finished one is not.
    let running = s.claim("w", &OPTS, T0 + 10).await.unwrap().unwrap();
    assert_eq!(s.count_pending_for_app("acme", 7).await.unwrap(), 3);
    s.succeed(
        &running.lease().unwrap(),
        "m",
        Progress::default(),
        T0 + 99,
        T0 + 11,
    )
    .await
    .unwrap();
    assert_eq!(s.count_pending_for_app("acme", 7).await.unwrap(), 2);
    // App ids use the whole UInt64 range.
    s.create(compat_job("acme", u64::MAX, None, 1), T0 + 12)
        .await
        .unwrap();
    assert_eq!(s.count_pending_for_app("acme", u64::MAX).await.unwrap(), 1);
}

async fn numbers_count_per_tenant(s: &dyn Backend) {
    let a = s.create(compat_job("acme", 7, None, 1), T0).await.unwrap();
    let b = s
        .create(compat_job("acme", 8, None, 2), T0 + 1)
        .await
        .unwrap();
    let g = s
        .create(compat_job("globex", 7, None, 3), T0 + 2)
        .await
        .unwrap();
    assert_eq!(s.number("acme", &a.job().id).await.unwrap(), Some(1));
    assert_eq!(
        s.number("acme", &a.job().id).await.unwrap(),
        Some(1),
        "a job keeps its number"
    );
    assert_eq!(s.number("acme", &b.job().id).await.unwrap(), Some(2));
    assert_eq!(s.number("globex", &g.job().id).await.unwrap(), Some(1));
    assert_eq!(s.number("globex", &a.job().id).await.unwrap(), None);
    assert_eq!(s.number("acme", "0123456789abcdef").await.unwrap(), None);

    let one = s.numbered("acme", 1).await.unwrap().unwrap();
    assert_eq!(one.number, 1);
    assert_eq!(one.job, s.get("acme", &a.job().id).await.unwrap().unwrap());
    assert_eq!(one.cleaned_at, None);
    assert_eq!(
        s.numbered("globex", 1).await.unwrap().unwrap().job.id,
        g.job().id
    );
    assert!(s.numbered("globex", 2).await.unwrap().is_none());
    assert!(s.numbered("acme", 3).await.unwrap().is_none());
}

async fn numbered_jobs_list_clean_and_quota(s: &dyn Backend) {
    let mut ids = Vec::new();
    for (i, app) in [7u64, 8, 7].into_iter().enumerate() {
        let c = s
            .create(compat_job("acme", app, None, i as i64), T0 + i as i64)
            .await
            .unwrap();
        s.number("acme", &c.job().id).await.unwrap().unwrap();
        ids.push(c.job().id.clone());
    }
    // An unnumbered job of the same app is not a numbered one.
    s.create(compat_job("acme", 7, None, 9), T0 + 9)
        .await
        .unwrap();
    let all = s.list_numbered("acme", None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|n| n.number).collect::<Vec<_>>(),
        [3, 2, 1],
        "newest first"
    );
    let app7 = s.list_numbered("acme", Some(7), 10).await.unwrap();
    assert_eq!(app7.iter().map(|n| n.number).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(s.list_numbered("acme", Some(7), 1).await.unwrap().len(), 1);
    assert!(s
        .list_numbered("globex", None, 10)
        .await
        .unwrap()
        .is_empty());

    // Jobs 1 and 3 (app 7) succeed with 100 and 50 bytes; the unnumbered one with 1000.
    assert_eq!(s.prepared_bytes("acme", 7).await.unwrap(), 0);
    let mut now = T0 + 100;
    while let Some(job) = s.claim("w", &OPTS, now).await.unwrap() {
        let bytes = match ids.iter().position(|id| *id == job.id) {
            Some(0) => 100,
            Some(2) => 50,
            Some(_) => 7,
            None => 1000,
        };
        let part = Part {
            n: 1,
            key: format!("{}/p1", job.id),
            rows: 1,
            bytes,
            sha256: "s".into(),
        };
        let lease = job.lease().unwrap();
        s.add_part(&lease, &part, now).await.unwrap();
        let progress = Progress {
            rows: 1,
            bytes,
            parts: 1,
        };
        assert!(s
            .succeed(&lease, "m", progress, now + 1000, now)
            .await
            .unwrap());
        now += 1;
    }
    assert_eq!(s.prepared_bytes("acme", 7).await.unwrap(), 150);
    assert_eq!(s.prepared_bytes("acme", 8).await.unwrap(), 7);
    assert_eq!(s.prepared_bytes("globex", 7).await.unwrap(), 0);
    let first = s.numbered("acme", 1).await.unwrap().unwrap();
    assert_eq!(
        first.job.parts.len(),
        1,
        "numbered jobs come with their parts"
    );
    assert_eq!(first.job.parts[0].bytes, 100);

    // Cleaning: the files go (the job expires) and the number remembers who did it.
    assert!(s.mark_cleaned("acme", 1, now).await.unwrap());
    assert!(!s.mark_cleaned("acme", 1, now + 1).await.unwrap());
    assert!(!s.mark_cleaned("globex", 1, now).await.unwrap());
    assert!(s.mark_expired(&ids[0], now).await.unwrap());
    let cleaned = s.numbered("acme", 1).await.unwrap().unwrap();
    assert_eq!(cleaned.cleaned_at, Some(now));
    assert_eq!(cleaned.job.status, JobStatus::Expired);
    assert_eq!(s.prepared_bytes("acme", 7).await.unwrap(), 50);
}

async fn concurrent_numbering_gives_distinct_numbers(s: &dyn Backend) {
    let mut ids = Vec::new();
    for i in 0..20 {
        let c = s
            .create(compat_job("acme", 7, None, i), T0 + i)
            .await
            .unwrap();
        ids.push(c.job().id.clone());
    }
    // Every job numbered by several callers at once.
    let calls = ids
        .iter()
        .chain(ids.iter())
        .map(|id| async move { (id.clone(), s.number("acme", id).await.unwrap().unwrap()) });
    let results = futures::future::join_all(calls).await;
    let mut by_job = std::collections::HashMap::new();
    for (id, n) in results {
        let first = *by_job.entry(id).or_insert(n);
        assert_eq!(first, n, "a job got two numbers");
    }
    let mut numbers: Vec<u64> = by_job.values().copied().collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 20, "two jobs share a number");
}

async fn job_lists_by_app_and_hidden_slices(s: &dyn JobStore) {
    let mut made = Vec::new();
    for (i, (app, slice)) in [
        (Some(1), "clicks"),
        (Some(2), "clicks"),
        (None, "clicks"),
        (Some(1), "activity"),
        // Beyond i64: stored bit for bit, listed as it came.
        (Some(u64::MAX), "clicks"),
    ]
    .into_iter()
    .enumerate()
    {
        let c = s
            .create(
                NewJob {
                    app_id: app,
                    slice: slice.into(),
                    ..new_job("acme", None, json!({ "i": i }))
                },
                T0 + i as i64,
            )
            .await
            .unwrap();
        made.push(c.job().id.clone());
    }
    let list = |apps: Option<Vec<u64>>, hidden: Vec<String>| async move {
        s.list(
            "acme",
            &ListQuery {
                limit: 10,
                apps,
                hidden_slices: hidden,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect::<Vec<_>>()
    };
    let ids = |idx: &[usize]| idx.iter().map(|&i| made[i].clone()).collect::<Vec<_>>();
    assert_eq!(list(None, vec![]).await, ids(&[4, 3, 2, 1, 0]));
    assert_eq!(list(Some(vec![1]), vec![]).await, ids(&[3, 0]));
    assert_eq!(
        list(Some(vec![1, 2]), vec!["activity".into()]).await,
        ids(&[1, 0])
    );
    assert_eq!(
        list(None, vec!["activity".into()]).await,
        ids(&[4, 2, 1, 0])
    );
    assert_eq!(list(Some(vec![u64::MAX]), vec![]).await, ids(&[4]));
    assert!(list(Some(vec![]), vec![]).await.is_empty());
    assert!(list(Some(vec![3]), vec![]).await.is_empty());
}

fn audit(id: &str, action: &str) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        row: json!({ "action": action, "entity_type": "token" }),
    }
}

async fn tokens_are_stored_as_digests_and_revoked(s: &dyn TokenStore) {
    let (new, secret) = NewToken::generate(
        "acme",
        "ci loader",
        vec![Scope::Ingest, Scope::Export],
        Some(vec![1, u64::MAX]),
        Some(T0 + 60_000),
    );
    let made = s
        .create_token(&new, &audit("a1", "created"), T0)
        .await
        .unwrap();
    assert_eq!(made.id, new.id);
    assert_eq!(made.apps, Some(vec![1, u64::MAX]));
    let found = s
        .token_by_digest(&token_digest(&secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, made);
    assert!(found.is_active(T0 + 59_999));
    assert!(!found.is_active(T0 + 60_000), "expired");
    // The secret itself is not a key: only its digest finds the token.
    assert!(s.token_by_digest(&secret).await.unwrap().is_none());
    assert!(s
        .token_by_digest(&token_digest("lp_guess"))
        .await
        .unwrap()
        .is_none());

    // An unrestricted, never-expiring token.
    let (other, other_secret) = NewToken::generate("acme", "admin", vec![Scope::Admin], None, None);
    s.create_token(&other, &audit("a2", "created"), T0 + 1)
        .await
        .unwrap();
    let o = s
        .token_by_digest(&token_digest(&other_secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((o.apps, o.expires_at), (None, None));

    match s
        .revoke_token(&made.id, &audit("a3", "updated"), T0 + 10)
        .await
        .unwrap()
    {
        Revoked::Now(t) => assert_eq!(t.revoked_at, Some(T0 + 10)),
        other => panic!("{other:?}"),
    }
    let revoked = s
        .token_by_digest(&token_digest(&secret))
        .await
        .unwrap()
        .unwrap();
    assert!(!revoked.is_active(T0 + 11));
    // Again: nothing changes, and no second activity row.
    match s
        .revoke_token(&made.id, &audit("a4", "updated"), T0 + 20)
        .await
        .unwrap()
    {
        Revoked::Already(t) => assert_eq!(t.revoked_at, Some(T0 + 10)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.revoke_token("tok_0000000000000000", &audit("a5", "updated"), T0)
            .await
            .unwrap(),
        Revoked::NotFound
    );
    let pending = s.claim_audit("m", 100, 1000, T0 + 30).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["a1", "a2", "a3"]
    );
    assert!(pending.iter().all(|p| p.tenant == "acme"));
    assert_eq!(pending[2].row.as_ref().unwrap()["action"], "updated");

    // Digests are unique: the same secret cannot be stored twice.
    let dup = NewToken {
        id: "tok_00000000000000aa".into(),
        ..new.clone()
    };
    assert!(matches!(
        s.create_token(&dup, &audit("a6", "created"), T0).await,
        Err(QueueError::Backend(_))
    ));
    // ... and the failed creation left no activity row behind.
    assert!(
        s.claim_audit("m2", 100, 1000, T0 + 5000)
            .await
            .unwrap()
            .len()
            == 3
    );
}

async fn tokens_list_per_tenant(s: &dyn TokenStore) {
    for (i, (tenant, name)) in [("acme", "one"), ("globex", "two"), ("acme", "three")]
        .into_iter()
        .enumerate()
    {
        let (t, _) = NewToken::generate(tenant, name, vec![Scope::Export], None, None);
        s.create_token(&t, &audit(&format!("l{i}"), "created"), T0 + i as i64)
            .await
            .unwrap();
    }
    let names =
        |list: Vec<logport_queue::TokenInfo>| list.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.list_tokens(None).await.unwrap()),
        ["one", "two", "three"]
    );
    assert_eq!(
        names(s.list_tokens(Some("acme")).await.unwrap()),
        ["one", "three"]
    );
    assert!(s.list_tokens(Some("initech")).await.unwrap().is_empty());
}

async fn activity_outbox_is_claimed_under_a_lease(s: &dyn TokenStore) {
    for i in 0..5 {
        let (t, _) = NewToken::generate("acme", "t", vec![Scope::Admin], None, None);
        s.create_token(&t, &audit(&format!("o{i}"), "created"), T0 + i)
            .await
            .unwrap();
    }
    let first = s.claim_audit("m1", 3, 1000, T0 + 10).await.unwrap();
    assert_eq!(
        first.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["o0", "o1", "o2"]
    );
    // Another mover gets only what nobody holds.
    let second = s.claim_audit("m2", 10, 1000, T0 + 20).await.unwrap();
    assert_eq!(
        second.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["o3", "o4"]
    );
    // Only the holder acknowledges.
    assert_eq!(s.ack_audit("m2", &["o0".into()]).await.unwrap(), 0);
    assert_eq!(
        s.ack_audit("m1", &["o0".into(), "o1".into()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.ack_audit("m1", &[]).await.unwrap(), 0);
    // m1 stopped before acknowledging o2: once its lease runs out, o2 comes back.
    assert!(s
        .claim_audit("m3", 10, 1000, T0 + 500)
        .await
        .unwrap()
        .is_empty());
    let again = s.claim_audit("m3", 10, 1000, T0 + 2000).await.unwrap();
    assert_eq!(
        again.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["o2", "o3", "o4"]
    );
    assert_eq!(
        s.ack_audit("m3", &["o2".into(), "o3".into(), "o4".into()])
            .await
            .unwrap(),
        3
    );
    assert!(s
        .claim_audit("m4", 10, 1000, T0 + 9000)
        .await
        .unwrap()
        .is_empty());
}

async fn counts_by_status(s: &dyn JobStore) {
    assert!(s.count_by_status().await.unwrap().is_empty());
    for n in 0..3 {
        s.create(new_job("acme", None, json!({ "n": n })), T0)
            .await
            .unwrap();
    }
    s.create(new_job("globex", None, json!({"n": 9})), T0)
        .await
        .unwrap();
    s.claim("w1", &OPTS, T0 + 1).await.unwrap().unwrap();
    let mut counts = s.count_by_status().await.unwrap();
    counts.sort_by_key(|(st, _)| st.as_str());
    assert_eq!(
        counts,
        [(JobStatus::Queued, 3), (JobStatus::Running, 1)],
        "every tenant's jobs are counted"
    );
}

fn ingest_key(tenant: &str, key: &str, digest: &str) -> IngestKey {
    IngestKey {
        tenant: tenant.into(),
        slice: "clicks".into(),
        key: key.into(),
        digest: digest.into(),
    }
}

async fn ingest_keys_replay_refuse_and_expire(s: &dyn Backend) {
    let k = ingest_key("acme", "batch-1", "d1");
    let ttl = 60_000;
    assert_eq!(
        s.begin_keyed_ingest(&k, T0, T0 + ttl).await.unwrap(),
        KeyedIngest::New
    );
    // Running (or died before answering): the same body may go ahead.
    assert_eq!(
        s.begin_keyed_ingest(&k, T0 + 1, T0 + ttl).await.unwrap(),
        KeyedIngest::Same { answer: None }
    );
    let other_body = ingest_key("acme", "batch-1", "d2");
    assert_eq!(
        s.begin_keyed_ingest(&other_body, T0 + 2, T0 + ttl)
            .await
            .unwrap(),
        KeyedIngest::Conflict
    );
    // An answer is recorded for its own body only.
    s.finish_keyed_ingest(&other_body, "{\"wrong\":1}")
        .await
        .unwrap();
    s.finish_keyed_ingest(&k, "{\"accepted\":3}").await.unwrap();
    assert_eq!(
        s.begin_keyed_ingest(&k, T0 + 3, T0 + ttl).await.unwrap(),
        KeyedIngest::Same {
            answer: Some("{\"accepted\":3}".into())
        }
    );
    // Keys are per tenant and per slice.
    assert_eq!(
        s.begin_keyed_ingest(&ingest_key("globex", "batch-1", "d2"), T0, T0 + ttl)
            .await
            .unwrap(),
        KeyedIngest::New
    );
    let mut events = ingest_key("acme", "batch-1", "d2");
    events.slice = "events".into();
    assert_eq!(
        s.begin_keyed_ingest(&events, T0, T0 + ttl).await.unwrap(),
        KeyedIngest::New
    );
    // Once expired, the key is free again, for any body.
    assert_eq!(
        s.begin_keyed_ingest(&other_body, T0 + ttl, T0 + 2 * ttl)
            .await
            .unwrap(),
        KeyedIngest::New
    );
    assert_eq!(
        s.begin_keyed_ingest(&k, T0 + ttl + 1, T0 + 2 * ttl)
            .await
            .unwrap(),
        KeyedIngest::Conflict
    );
    // Purging forgets what expired, nothing else.
    assert_eq!(
        s.purge_ingest_keys(T0 + ttl).await.unwrap(),
        2,
        "globex's and events'"
    );
    assert_eq!(
        s.begin_keyed_ingest(&k, T0 + ttl + 2, T0 + 2 * ttl)
            .await
            .unwrap(),
        KeyedIngest::Conflict,
        "the replaced entry is still there"
    );
    assert_eq!(s.purge_ingest_keys(T0 + 2 * ttl).await.unwrap(), 1);
    assert_eq!(
        s.begin_keyed_ingest(&k, T0 + 2 * ttl, T0 + 3 * ttl)
            .await
            .unwrap(),
        KeyedIngest::New
    );
}

async fn concurrent_keyed_ingests_record_one_entry(s: &dyn Backend) {
    let k = ingest_key("acme", "race", "d");
    let outcomes =
        futures::future::join_all((0..16).map(|i| s.begin_keyed_ingest(&k, T0 + i, T0 + 60_000)))
            .await;
    let new = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(KeyedIngest::New)))
        .count();
    let same = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(KeyedIngest::Same { answer: None })))
        .count();
    assert_eq!((new, same), (1, 15), "{outcomes:?}");
}

async fn activity_rows_set_aside_are_kept_and_never_claimed_again(s: &dyn TokenStore) {
    for i in 0..3 {
        let (t, _) = NewToken::generate("acme", "t", vec![Scope::Admin], None, None);
        s.create_token(&t, &audit(&format!("b{i}"), "created"), T0 + i)
            .await
            .unwrap();
    }
    let held = s.claim_audit("m1", 10, 1000, T0 + 10).await.unwrap();
    assert_eq!(held.len(), 3);
    assert!(held.iter().all(|p| p.row.is_ok()));
    // Only the holder sets a row aside.
    assert!(!s
        .set_aside_audit("m2", "b1", "does not fit", T0 + 11)
        .await
        .unwrap());
    assert!(s
        .set_aside_audit("m1", "b1", "does not fit", T0 + 11)
        .await
        .unwrap());
    assert_eq!(
        s.ack_audit("m1", &["b0".into(), "b2".into()])
            .await
            .unwrap(),
        2
    );
    // Long after every lease ran out, the row set aside is not claimed again, and it
    // is not acknowledged away either: it stays for an operator.
    assert!(s
        .claim_audit("m3", 10, 1000, T0 + 60_000)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.ack_audit("m1", &["b1".into()]).await.unwrap(), 0);
    assert!(!s
        .set_aside_audit("m1", "b1", "again", T0 + 12)
        .await
        .unwrap());
}

/// A job stored while `Job.request` was untyped JSON — its text and idempotency hash
/// exactly as that version wrote them — still loads, and a retry of its create (same
/// key, same body) finds it instead of answering a conflict.
#[tokio::test]
async fn jobs_stored_before_requests_were_typed_load_and_match_retries() {
    const OLD_TEXT: &str = r#"{"app_id":7,"compression":"gzip","csv_excel_safe":true,"date_dimension":"event","date_since":"2026-11-01","date_until":"2026-11-01","fields":["click_id"],"filters":[{"field":"country_code","op":"eq","value":"US"}],"format":"csv","part_max_bytes":1048576,"slice":"clicks","timezone":"UTC","utf8_bom":true}"#;
    const OLD_HASH: &str = "c795f152c61666c43ff2b766babe008f80628a56488caf72a48184cf9589da2e";
    const ID: &str = "0123456789abcdef0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteJobStore::open(path.to_str().unwrap()).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, tenant, slice, status, request, request_hash, idempotency_key,
             created_at, updated_at, run_after, watermark, attempts, max_attempts, app_id)
         VALUES (?, 'acme', 'clicks', 'queued', ?, ?, 'k-old', ?, ?, ?, ?, 0, 3, 7)",
    )
    .bind(ID)
    .bind(OLD_TEXT)
    .bind(OLD_HASH)
    .bind(T0)
    .bind(T0)
    .bind(T0)
    .bind(T0 / 1000)
    .execute(&pool)
    .await
    .unwrap();
    let job = store.get("acme", ID).await.unwrap().unwrap();
    assert_eq!(job.request.format, Some(logport_catalog::Format::Csv));
    assert_eq!(job.request.filters[0].op, logport_catalog::FilterOp::Eq);
    assert_eq!(logport_queue::request_text(&job.request).unwrap(), OLD_TEXT);
    // The client retries with the same body (as the API normalised it then).
    let retry = NewJob {
        app_id: Some(7),
        request: serde_json::from_str(OLD_TEXT).unwrap(),
        ..new_job("acme", Some("k-old"), json!({}))
    };
    match store.create(retry, T0 + 1).await.unwrap() {
        Created::Existing(j) => assert_eq!(j.id, ID),
        Created::New(j) => panic!("a second job {}", j.id),
    }
    let mut changed = new_job("acme", Some("k-old"), json!({}));
    changed.request = serde_json::from_str(&OLD_TEXT.replace("gzip", "zstd")).unwrap();
    assert!(matches!(
        store.create(changed, T0 + 2).await,
        Err(QueueError::IdempotencyConflict)
    ));
}
