//! The shared job store: PostgreSQL, for several `logport serve` replicas on one queue.
//!
//! A claim runs in one transaction: a transaction-scoped advisory lock serialises
//! claimers (so the per-tenant running limit and the tenant turn order are exact
//! across replicas; a claim takes about a millisecond), and the candidate row is
//! locked `FOR UPDATE SKIP LOCKED`, so a row another transaction is touching (a
//! cancel, a heartbeat) is passed over instead of waited on.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};

use crate::{
    ClaimOptions, Created, FingerprintedJob, Heartbeat, Job, JobError, JobStatus, JobStore, Lease,
    ListQuery, NewJob, NumberedJob, Part, Progress, QueueError,
};

/// Key of the advisory lock that serialises claims ("logport" in ASCII).
const CLAIM_LOCK: i64 = 0x6c_6f67_706f_7274;

const FENCE: &str = "id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running'";

pub struct PostgresJobStore {
    pub(crate) pool: PgPool,
}

impl PostgresJobStore {
    pub async fn open(url: &str) -> Result<Self, QueueError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresJobStore { pool })
    }

    async fn with_parts(&self, row: &PgRow) -> Result<Job, QueueError> {
        let mut job = job_from_row(row)?;
        let published: Option<i32> = row.try_get("published_attempt")?;
        let attempt = published.map(|a| a as u32).unwrap_or(job.attempts);
        let rows = sqlx::query(
            "SELECT n, key, rows, bytes, sha256 FROM parts WHERE job_id = $1 AND attempt = $2 ORDER BY n",
        )
        .bind(&job.id)
        .bind(attempt as i32)
        .fetch_all(&self.pool)
        .await?;
        job.parts = rows
            .iter()
            .map(|r| {
                Ok(Part {
                    n: r.try_get::<i32, _>("n")? as u32,
                    key: r.try_get("key")?,
                    rows: r.try_get::<i64, _>("rows")? as u64,
                    bytes: r.try_get::<i64, _>("bytes")? as u64,
                    sha256: r.try_get("sha256")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(job)
    }

    async fn numbered_from_row(&self, row: &PgRow) -> Result<NumberedJob, QueueError> {
        Ok(NumberedJob {
            number: row.try_get::<i64, _>("number")? as u64,
            cleaned_at: row.try_get("cleaned_at")?,
            job: self.with_parts(row).await?,
        })
    }

    async fn one(&self, row: Option<PgRow>) -> Result<Option<Job>, QueueError> {
        match row {
            Some(r) => Ok(Some(self.with_parts(&r).await?)),
            None => Ok(None),
        }
    }
}

fn job_from_row(r: &PgRow) -> Result<Job, QueueError> {
    let status: String = r.try_get("status")?;
    let status = JobStatus::parse(&status)
        .ok_or_else(|| QueueError::Backend(format!("unknown job status `{status}` in store")))?;
    let request: String = r.try_get("request")?;
    let code: Option<String> = r.try_get("error_code")?;
    let message: Option<String> = r.try_get("error_message")?;
    Ok(Job {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        slice: r.try_get("slice")?,
        status,
        request: crate::parse_request(&request)?,
        idempotency_key: r.try_get("idempotency_key")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        expires_at: r.try_get("expires_at")?,
        watermark: r.try_get("watermark")?,
        attempts: r.try_get::<i32, _>("attempts")? as u32,
        max_attempts: r.try_get::<i32, _>("max_attempts")? as u32,
        progress: Progress {
            rows: r.try_get::<i64, _>("progress_rows")? as u64,
            bytes: r.try_get::<i64, _>("progress_bytes")? as u64,
            parts: 0,
        },
        error: code.map(|code| JobError {
            code,
            message: message.unwrap_or_default(),
        }),
        parts: Vec::new(),
        manifest_key: r.try_get("manifest_key")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until: r.try_get("lease_until")?,
    })
}

fn fenced<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    lease: &'q Lease,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(lease.attempt as i32)
}

#[async_trait]
impl JobStore for PostgresJobStore {
    async fn create(&self, new: NewJob, now: i64) -> Result<Created, QueueError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let hash = crate::request_hash(&new.request)?;
        let row = sqlx::query(
            "INSERT INTO jobs (id, tenant, slice, status, request, request_hash, idempotency_key,
                 created_at, updated_at, run_after, watermark, attempts, max_attempts,
                 app_id, fingerprint)
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $7, $7, $8, 0, $9, $10, $11)
             ON CONFLICT DO NOTHING
             RETURNING *",
        )
        .bind(&id)
        .bind(&new.tenant)
        .bind(&new.slice)
        .bind(crate::request_text(&new.request)?)
        .bind(&hash)
        .bind(&new.idempotency_key)
        .bind(now)
        .bind(now.div_euclid(1000))
        .bind(new.max_attempts as i32)
        // App ids are UInt64: stored bit for bit in the signed column.
        .bind(new.app_id.map(|a| a as i64))
        .bind(&new.fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Created::New(self.with_parts(&row).await?));
        }
        let key = new
            .idempotency_key
            .as_deref()
            .ok_or_else(|| QueueError::Backend("job id collision".into()))?;
        let row = sqlx::query("SELECT * FROM jobs WHERE tenant = $1 AND idempotency_key = $2")
            .bind(&new.tenant)
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        let existing: String = row.try_get("request_hash")?;
        if existing != hash {
            return Err(QueueError::IdempotencyConflict);
        }
        Ok(Created::Existing(self.with_parts(&row).await?))
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Job>, QueueError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        self.one(row).await
    }

    async fn list(&self, tenant: &str, q: &ListQuery) -> Result<Vec<Job>, QueueError> {
        let (before_at, before_id) = match &q.before {
            Some((at, id)) => (Some(*at), Some(id.clone())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE tenant = $1
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR slice = $3)
               AND ($4::bigint IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5))
               AND ($7::bigint[] IS NULL OR app_id = ANY($7))
               AND NOT (slice = ANY($8))
             ORDER BY created_at DESC, id DESC LIMIT $6",
        )
        .bind(tenant)
        .bind(q.status.map(|s| s.as_str()))
        .bind(q.slice.as_deref())
        .bind(before_at)
        .bind(before_id.as_deref())
        .bind(i64::from(q.limit))
        // App ids as stored: bit for bit in the signed column.
        .bind(
            q.apps
                .as_ref()
                .map(|a| a.iter().map(|&x| x as i64).collect::<Vec<_>>()),
        )
        .bind(&q.hidden_slices)
        .fetch_all(&self.pool)
        .await?;
        // With their parts, as a single job shows them.
        let mut jobs = Vec::with_capacity(rows.len());
        for r in &rows {
            jobs.push(self.with_parts(r).await?);
        }
        Ok(jobs)
    }

    async fn claim(
        &self,
        owner: &str,
        opts: &ClaimOptions,
        now: i64,
    ) -> Result<Option<Job>, QueueError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "WITH candidate AS (
                 SELECT j.id FROM jobs j LEFT JOIN tenant_turns t ON t.tenant = j.tenant
                 WHERE j.status = 'queued' AND j.run_after <= $3
                   AND (SELECT count(*) FROM jobs r
                        WHERE r.tenant = j.tenant AND r.status = 'running') < $4
                 ORDER BY (SELECT count(*) FROM jobs r
                           WHERE r.tenant = j.tenant AND r.status = 'running'),
                          COALESCE(t.last_claim_at, 0), j.created_at, j.id
                 LIMIT 1
                 FOR UPDATE OF j SKIP LOCKED)
             UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1,
                 lease_until = $2, started_at = COALESCE(started_at, $3), updated_at = $3,
                 progress_rows = 0, progress_bytes = 0
             FROM candidate WHERE jobs.id = candidate.id
             RETURNING jobs.*",
        )
        .bind(owner)
        .bind(now + opts.lease_ms)
        .bind(now)
        .bind(i64::from(opts.max_running_per_tenant))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let tenant: String = row.try_get("tenant")?;
        sqlx::query(
            "INSERT INTO tenant_turns (tenant, last_claim_at) VALUES ($1, $2)
             ON CONFLICT (tenant) DO UPDATE SET last_claim_at = excluded.last_claim_at",
        )
        .bind(&tenant)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(self.with_parts(&row).await?))
    }

    async fn count_queued(&self, tenant: &str) -> Result<u64, QueueError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant = $1 AND status = 'queued'")
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?;
        Ok(n as u64)
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        progress: Progress,
        lease_ms: i64,
        now: i64,
    ) -> Result<Heartbeat, QueueError> {
        let sql = format!(
            "UPDATE jobs SET lease_until = $4, progress_rows = $5, progress_bytes = $6, updated_at = $7
             WHERE {FENCE}"
        );
        let q = fenced(sqlx::query(AssertSqlSafe(sql)), lease)
            .bind(now + lease_ms)
            .bind(progress.rows as i64)
            .bind(progress.bytes as i64)
            .bind(now);
        if q.execute(&self.pool).await?.rows_affected() == 1 {
            return Ok(Heartbeat::Held);
        }
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM jobs WHERE id = $1 AND lease_owner = $2 AND attempts = $3",
        )
        .bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(lease.attempt as i32)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match status.as_deref() {
            Some("canceled") => Heartbeat::Canceled,
            _ => Heartbeat::Lost,
        })
    }

    async fn add_part(&self, lease: &Lease, part: &Part, now: i64) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await?;
        // Locks the job row until commit, so completion cannot slip in between.
        let sql = format!("UPDATE jobs SET updated_at = $4 WHERE {FENCE}");
        let held = fenced(sqlx::query(AssertSqlSafe(sql)), lease)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !held {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO parts (job_id, attempt, n, key, rows, bytes, sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (job_id, attempt, n) DO UPDATE SET key = excluded.key,
                 rows = excluded.rows, bytes = excluded.bytes, sha256 = excluded.sha256",
        )
        .bind(&lease.job_id)
        .bind(lease.attempt as i32)
        .bind(part.n as i32)
        .bind(&part.key)
        .bind(part.rows as i64)
        .bind(part.bytes as i64)
        .bind(&part.sha256)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn succeed(
        &self,
        lease: &Lease,
        manifest_key: &str,
        progress: Progress,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'succeeded', manifest_key = $4, published_attempt = attempts,
                 progress_rows = $5, progress_bytes = $6, expires_at = $7, finished_at = $8,
                 updated_at = $8, lease_until = NULL, error_code = NULL, error_message = NULL
             WHERE {FENCE}"
        );
        let q = fenced(sqlx::query(AssertSqlSafe(sql)), lease)
            .bind(manifest_key)
            .bind(progress.rows as i64)
            .bind(progress.bytes as i64)
            .bind(expires_at)
            .bind(now);
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn fail(&self, lease: &Lease, error: &JobError, now: i64) -> Result<bool, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'failed', error_code = $4, error_message = $5,
                 finished_at = $6, updated_at = $6, lease_until = NULL
             WHERE {FENCE}"
        );
        let q = fenced(sqlx::query(AssertSqlSafe(sql)), lease)
            .bind(&error.code)
            .bind(&error.message)
            .bind(now);
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn retry(
        &self,
        lease: &Lease,
        error: &JobError,
        run_after: i64,
        now: i64,
    ) -> Result<JobStatus, QueueError> {
        let sql = format!(
            "UPDATE jobs SET
                 status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN attempts >= max_attempts THEN $7 ELSE NULL END,
                 run_after = $4, error_code = $5, error_message = $6, updated_at = $7,
                 lease_owner = NULL, lease_until = NULL
             WHERE {FENCE}
             RETURNING status"
        );
        let q = fenced(sqlx::query(AssertSqlSafe(sql)), lease)
            .bind(run_after)
            .bind(&error.code)
            .bind(&error.message)
            .bind(now);
        let status: Option<String> = q
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("status"))
            .transpose()?;
        Ok(status
            .as_deref()
            .and_then(JobStatus::parse)
            .unwrap_or(JobStatus::Running))
    }

    async fn release(&self, lease: &Lease, now: i64) -> Result<bool, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'queued', run_after = $4, max_attempts = max_attempts + 1,
                 lease_owner = NULL, lease_until = NULL, updated_at = $4
             WHERE {FENCE}"
        );
        let q = fenced(sqlx::query(AssertSqlSafe(sql)), lease).bind(now);
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn reap_expired_leases(&self, now: i64) -> Result<u64, QueueError> {
        let n = sqlx::query(
            "UPDATE jobs SET
                 status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END,
                 error_code = 'lease_expired',
                 error_message = 'the worker running this job stopped answering',
                 lease_owner = NULL, lease_until = NULL, updated_at = $1
             WHERE status = 'running' AND lease_until < $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn due_for_expiry(&self, now: i64, limit: u32) -> Result<Vec<Job>, QueueError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE status = 'succeeded' AND expires_at <= $1
             ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for r in &rows {
            jobs.push(self.with_parts(r).await?);
        }
        Ok(jobs)
    }

    async fn mark_expired(&self, id: &str, now: i64) -> Result<bool, QueueError> {
        let n = sqlx::query(
            "UPDATE jobs SET status = 'expired', updated_at = $1 WHERE id = $2 AND status = 'succeeded'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> Result<Option<Job>, QueueError> {
        sqlx::query(
            "UPDATE jobs SET status = 'canceled', finished_at = $1, updated_at = $1,
                 error_code = NULL, error_message = NULL
             WHERE tenant = $2 AND id = $3 AND status = ANY($4)",
        )
        .bind(now)
        .bind(tenant)
        .bind(id)
        .bind(
            JobStatus::predecessors(JobStatus::Canceled)
                .iter()
                .map(|s| s.as_str().to_string())
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await?;
        self.get(tenant, id).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, QueueError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM jobs GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| JobStatus::parse(&s).map(|st| (st, n as u64)))
            .collect())
    }

    async fn find_by_fingerprint(
        &self,
        tenant: &str,
        fingerprint: &str,
    ) -> Result<Option<FingerprintedJob>, QueueError> {
        let row = sqlx::query(
            "SELECT * FROM jobs WHERE tenant = $1 AND fingerprint = $2
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(FingerprintedJob {
                served_at: r.try_get("served_at")?,
                job: self.with_parts(&r).await?,
            })),
            None => Ok(None),
        }
    }

    async fn mark_served(&self, tenant: &str, id: &str, now: i64) -> Result<bool, QueueError> {
        let n = sqlx::query(
            "UPDATE jobs SET served_at = $1 WHERE tenant = $2 AND id = $3 AND served_at IS NULL",
        )
        .bind(now)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn count_pending_for_app(&self, tenant: &str, app_id: u64) -> Result<u64, QueueError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE tenant = $1 AND app_id = $2
               AND status IN ('queued', 'running')",
        )
        .bind(tenant)
        .bind(app_id as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn number(&self, tenant: &str, id: &str) -> Result<Option<u64>, QueueError> {
        let existing = || {
            sqlx::query_scalar::<_, i64>(
                "SELECT number FROM numbered_jobs WHERE tenant = $1 AND job_id = $2",
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
        };
        if let Some(n) = existing().await? {
            return Ok(Some(n as u64));
        }
        let known: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM jobs WHERE tenant = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        if known.is_none() {
            return Ok(None);
        }
        // The upsert locks the tenant's counter row until commit: numbers are handed out
        // one at a time, without gaps between concurrent callers.
        let mut tx = self.pool.begin().await?;
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO request_numbers (tenant, last) VALUES ($1, 1)
             ON CONFLICT (tenant) DO UPDATE SET last = request_numbers.last + 1
             RETURNING last",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO numbered_jobs (tenant, number, job_id) VALUES ($1, $2, $3)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(next)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(existing().await?.map(|n| n as u64))
    }

    async fn numbered(&self, tenant: &str, number: u64) -> Result<Option<NumberedJob>, QueueError> {
        let row = sqlx::query(
            "SELECT n.number, n.cleaned_at, j.* FROM numbered_jobs n
             JOIN jobs j ON j.id = n.job_id
             WHERE n.tenant = $1 AND n.number = $2",
        )
        .bind(tenant)
        .bind(number as i64)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(self.numbered_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn list_numbered(
        &self,
        tenant: &str,
        app_id: Option<u64>,
        limit: u32,
    ) -> Result<Vec<NumberedJob>, QueueError> {
        let rows = sqlx::query(
            "SELECT n.number, n.cleaned_at, j.* FROM numbered_jobs n
             JOIN jobs j ON j.id = n.job_id
             WHERE n.tenant = $1 AND ($2::bigint IS NULL OR j.app_id = $2)
             ORDER BY n.number DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(app_id.map(|a| a as i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.numbered_from_row(r).await?);
        }
        Ok(out)
    }

    async fn mark_cleaned(&self, tenant: &str, number: u64, now: i64) -> Result<bool, QueueError> {
        let n = sqlx::query(
            "UPDATE numbered_jobs SET cleaned_at = $1
             WHERE tenant = $2 AND number = $3 AND cleaned_at IS NULL",
        )
        .bind(now)
        .bind(tenant)
        .bind(number as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn prepared_bytes(&self, tenant: &str, app_id: u64) -> Result<u64, QueueError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(j.progress_bytes), 0)::bigint FROM numbered_jobs n
             JOIN jobs j ON j.id = n.job_id
             WHERE n.tenant = $1 AND j.app_id = $2 AND j.status = 'succeeded'",
        )
        .bind(tenant)
        .bind(app_id as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }
}
