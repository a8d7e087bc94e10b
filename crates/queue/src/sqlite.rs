//! The embedded job store: one SQLite file in WAL mode.
//!
//! SQLite serialises writers, so a claim (`UPDATE … WHERE id = (SELECT …) RETURNING`)
//! is atomic without row locks; several worker tasks of one process share the file.
//! For several processes use PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use crate::{
    ClaimOptions, Created, FingerprintedJob, Heartbeat, Job, JobError, JobStatus, JobStore, Lease,
    ListQuery, NewJob, NumberedJob, Part, Progress, QueueError,
};

pub struct SqliteJobStore {
    pub(crate) pool: SqlitePool,
}

/// `'a', 'b'` for an SQL `IN` list of states (constants, never input).
fn states(list: &[JobStatus]) -> String {
    list.iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

const FENCE: &str = "id = ? AND lease_owner = ? AND attempts = ? AND status = 'running'";

impl SqliteJobStore {
    pub async fn open(path: &str) -> Result<Self, QueueError> {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    QueueError::Backend(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged job survives power loss, not just a process crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteJobStore { pool })
    }

    async fn load_parts(&self, job: &mut Job, attempt: u32) -> Result<(), QueueError> {
        let rows = sqlx::query(
            "SELECT n, key, rows, bytes, sha256 FROM parts WHERE job_id = ? AND attempt = ? ORDER BY n",
        )
        .bind(&job.id)
        .bind(attempt as i64)
        .fetch_all(&self.pool)
        .await?;
        job.parts = rows
            .iter()
            .map(|r| {
                Ok(Part {
                    n: r.try_get::<i64, _>("n")? as u32,
                    key: r.try_get("key")?,
                    rows: r.try_get::<i64, _>("rows")? as u64,
                    bytes: r.try_get::<i64, _>("bytes")? as u64,
                    sha256: r.try_get("sha256")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(())
    }

    async fn with_parts(&self, row: &SqliteRow) -> Result<Job, QueueError> {
        let mut job = job_from_row(row)?;
        let published: Option<i64> = row.try_get("published_attempt")?;
        let attempt = published.map(|a| a as u32).unwrap_or(job.attempts);
        self.load_parts(&mut job, attempt).await?;
        Ok(job)
    }

    async fn numbered_from_row(&self, row: &SqliteRow) -> Result<NumberedJob, QueueError> {
        Ok(NumberedJob {
            number: row.try_get::<i64, _>("number")? as u64,
            cleaned_at: row.try_get("cleaned_at")?,
            job: self.with_parts(row).await?,
        })
    }

    async fn get_any(&self, id: &str) -> Result<Option<Job>, QueueError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.with_parts(&r).await?)),
            None => Ok(None),
        }
    }
}

fn job_from_row(r: &SqliteRow) -> Result<Job, QueueError> {
    let status: String = r.try_get("status")?;
    let status = JobStatus::parse(&status)
        .ok_or_else(|| QueueError::Backend(format!("unknown job status `{status}` in store")))?;
    let request: String = r.try_get("request")?;
    let code: Option<String> = r.try_get("error_code")?;
    let message: Option<String> = r.try_get("error_message")?;
    let progress = Progress {
        rows: r.try_get::<i64, _>("progress_rows")? as u64,
        bytes: r.try_get::<i64, _>("progress_bytes")? as u64,
        parts: 0,
    };
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
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        max_attempts: r.try_get::<i64, _>("max_attempts")? as u32,
        progress,
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
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    lease: &'q Lease,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(lease.attempt as i64)
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn create(&self, new: NewJob, now: i64) -> Result<Created, QueueError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let hash = crate::request_hash(&new.request)?;
        let request = crate::request_text(&new.request)?;
        // A unique index on (tenant, idempotency_key) decides races between duplicates.
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, tenant, slice, status, request, request_hash, idempotency_key,
                 created_at, updated_at, run_after, watermark, attempts, max_attempts,
                 app_id, fingerprint)
             VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&new.tenant)
        .bind(&new.slice)
        .bind(&request)
        .bind(&hash)
        .bind(&new.idempotency_key)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(now.div_euclid(1000))
        .bind(new.max_attempts as i64)
        // App ids are UInt64: stored bit for bit in the signed column.
        .bind(new.app_id.map(|a| a as i64))
        .bind(&new.fingerprint)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            let job = self
                .get_any(&id)
                .await?
                .ok_or_else(|| QueueError::Backend("inserted job vanished".into()))?;
            return Ok(Created::New(job));
        }
        let key = new
            .idempotency_key
            .as_deref()
            .ok_or_else(|| QueueError::Backend("job id collision".into()))?;
        let row = sqlx::query("SELECT * FROM jobs WHERE tenant = ? AND idempotency_key = ?")
            .bind(&new.tenant)
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        let existing_hash: String = row.try_get("request_hash")?;
        if existing_hash != hash {
            return Err(QueueError::IdempotencyConflict);
        }
        Ok(Created::Existing(self.with_parts(&row).await?))
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Job>, QueueError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE tenant = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.with_parts(&r).await?)),
            None => Ok(None),
        }
    }

    async fn list(&self, tenant: &str, q: &ListQuery) -> Result<Vec<Job>, QueueError> {
        let (before_at, before_id) = match &q.before {
            Some((at, id)) => (Some(*at), Some(id.clone())),
            None => (None, None),
        };
        // JSON arrays for json_each: app ids as stored (bit for bit in the signed column).
        let apps = q.apps.as_ref().map(|a| {
            serde_json::Value::from(a.iter().map(|&x| x as i64).collect::<Vec<_>>()).to_string()
        });
        let hidden = serde_json::Value::from(q.hidden_slices.clone()).to_string();
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE tenant = ?
               AND (? IS NULL OR status = ?)
               AND (? IS NULL OR slice = ?)
               AND (? IS NULL OR created_at < ? OR (created_at = ? AND id < ?))
               AND (? IS NULL OR app_id IN (SELECT value FROM json_each(?)))
               AND slice NOT IN (SELECT value FROM json_each(?))
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(tenant)
        .bind(q.status.map(|s| s.as_str()))
        .bind(q.status.map(|s| s.as_str()))
        .bind(q.slice.as_deref())
        .bind(q.slice.as_deref())
        .bind(before_at)
        .bind(before_at)
        .bind(before_at)
        .bind(before_id.as_deref())
        .bind(apps.as_deref())
        .bind(apps.as_deref())
        .bind(hidden)
        .bind(i64::from(q.limit))
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
        // The UPDATE comes first so the transaction takes SQLite's write lock at once.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?,
                 lease_until = ?, started_at = COALESCE(started_at, ?), updated_at = ?,
                 progress_rows = 0, progress_bytes = 0
             WHERE id = (
                 SELECT j.id FROM jobs j LEFT JOIN tenant_turns t ON t.tenant = j.tenant
                 WHERE j.status = 'queued' AND j.run_after <= ?
                   AND (SELECT count(*) FROM jobs r
                        WHERE r.tenant = j.tenant AND r.status = 'running') < ?
                 ORDER BY (SELECT count(*) FROM jobs r
                           WHERE r.tenant = j.tenant AND r.status = 'running'),
                          COALESCE(t.last_claim_at, 0), j.created_at, j.id
                 LIMIT 1)
               AND status = 'queued'
             RETURNING *",
        )
        .bind(owner)
        .bind(now + opts.lease_ms)
        .bind(now)
        .bind(now)
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
            "INSERT INTO tenant_turns (tenant, last_claim_at) VALUES (?, ?)
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
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant = ? AND status = 'queued'")
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
            "UPDATE jobs SET lease_until = ?, progress_rows = ?, progress_bytes = ?, updated_at = ?
             WHERE {FENCE}"
        );
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(now + lease_ms)
            .bind(progress.rows as i64)
            .bind(progress.bytes as i64)
            .bind(now);
        if fenced(q, lease).execute(&self.pool).await?.rows_affected() == 1 {
            return Ok(Heartbeat::Held);
        }
        let row = sqlx::query(
            "SELECT status FROM jobs WHERE id = ? AND lease_owner = ? AND attempts = ?",
        )
        .bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(lease.attempt as i64)
        .fetch_optional(&self.pool)
        .await?;
        let status: Option<String> = row.map(|r| r.try_get("status")).transpose()?;
        Ok(match status.as_deref() {
            Some("canceled") => Heartbeat::Canceled,
            _ => Heartbeat::Lost,
        })
    }

    async fn add_part(&self, lease: &Lease, part: &Part, now: i64) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!("UPDATE jobs SET updated_at = ? WHERE {FENCE}");
        let held = fenced(sqlx::query(AssertSqlSafe(sql)).bind(now), lease)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !held {
            return Ok(false);
        }
        sqlx::query(
            "INSERT OR REPLACE INTO parts (job_id, attempt, n, key, rows, bytes, sha256)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&lease.job_id)
        .bind(lease.attempt as i64)
        .bind(i64::from(part.n))
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
            "UPDATE jobs SET status = 'succeeded', manifest_key = ?, published_attempt = attempts,
                 progress_rows = ?, progress_bytes = ?, expires_at = ?, finished_at = ?,
                 updated_at = ?, lease_until = NULL, error_code = NULL, error_message = NULL
             WHERE {FENCE}"
        );
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(manifest_key)
            .bind(progress.rows as i64)
            .bind(progress.bytes as i64)
            .bind(expires_at)
            .bind(now)
            .bind(now);
        Ok(fenced(q, lease).execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn fail(&self, lease: &Lease, error: &JobError, now: i64) -> Result<bool, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'failed', error_code = ?, error_message = ?, finished_at = ?,
                 updated_at = ?, lease_until = NULL
             WHERE {FENCE}"
        );
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(&error.code)
            .bind(&error.message)
            .bind(now)
            .bind(now);
        Ok(fenced(q, lease).execute(&self.pool).await?.rows_affected() == 1)
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
                 finished_at = CASE WHEN attempts >= max_attempts THEN ? ELSE NULL END,
                 run_after = ?, error_code = ?, error_message = ?, updated_at = ?,
                 lease_owner = NULL, lease_until = NULL
             WHERE {FENCE}
             RETURNING status"
        );
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(run_after)
            .bind(&error.code)
            .bind(&error.message)
            .bind(now);
        let row = fenced(q, lease).fetch_optional(&self.pool).await?;
        let status: Option<String> = row.map(|r| r.try_get("status")).transpose()?;
        Ok(status
            .as_deref()
            .and_then(JobStatus::parse)
            .unwrap_or(JobStatus::Running))
    }

    async fn release(&self, lease: &Lease, now: i64) -> Result<bool, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'queued', run_after = ?, max_attempts = max_attempts + 1,
                 lease_owner = NULL, lease_until = NULL, updated_at = ?
             WHERE {FENCE}"
        );
        let q = sqlx::query(AssertSqlSafe(sql)).bind(now).bind(now);
        Ok(fenced(q, lease).execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn due_for_expiry(&self, now: i64, limit: u32) -> Result<Vec<Job>, QueueError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE status = 'succeeded' AND expires_at <= ?
             ORDER BY expires_at LIMIT ?",
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
            "UPDATE jobs SET status = 'expired', updated_at = ? WHERE id = ? AND status = 'succeeded'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn reap_expired_leases(&self, now: i64) -> Result<u64, QueueError> {
        let n = sqlx::query(
            "UPDATE jobs SET
                 status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN attempts >= max_attempts THEN ? ELSE NULL END,
                 error_code = 'lease_expired',
                 error_message = 'the worker running this job stopped answering',
                 lease_owner = NULL, lease_until = NULL, updated_at = ?
             WHERE status = 'running' AND lease_until < ?",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> Result<Option<Job>, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'canceled', finished_at = ?, updated_at = ?,
                 error_code = NULL, error_message = NULL
             WHERE tenant = ? AND id = ? AND status IN ({})",
            states(&JobStatus::predecessors(JobStatus::Canceled))
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(now)
            .bind(tenant)
            .bind(id)
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
            "SELECT * FROM jobs WHERE tenant = ? AND fingerprint = ?
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
            "UPDATE jobs SET served_at = ? WHERE tenant = ? AND id = ? AND served_at IS NULL",
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
            "SELECT count(*) FROM jobs WHERE tenant = ? AND app_id = ?
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
                "SELECT number FROM numbered_jobs WHERE tenant = ? AND job_id = ?",
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
        };
        if let Some(n) = existing().await? {
            return Ok(Some(n as u64));
        }
        let known: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM jobs WHERE tenant = ? AND id = ?")
                .bind(tenant)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        if known.is_none() {
            return Ok(None);
        }
        // The counter's upsert comes first so the transaction takes the write lock at once.
        let mut tx = self.pool.begin().await?;
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO request_numbers (tenant, last) VALUES (?, 1)
             ON CONFLICT (tenant) DO UPDATE SET last = request_numbers.last + 1
             RETURNING last",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO numbered_jobs (tenant, number, job_id) VALUES (?, ?, ?)
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
             WHERE n.tenant = ? AND n.number = ?",
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
        let app = app_id.map(|a| a as i64);
        let rows = sqlx::query(
            "SELECT n.number, n.cleaned_at, j.* FROM numbered_jobs n
             JOIN jobs j ON j.id = n.job_id
             WHERE n.tenant = ? AND (? IS NULL OR j.app_id = ?)
             ORDER BY n.number DESC LIMIT ?",
        )
        .bind(tenant)
        .bind(app)
        .bind(app)
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
            "UPDATE numbered_jobs SET cleaned_at = ?
             WHERE tenant = ? AND number = ? AND cleaned_at IS NULL",
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
            "SELECT COALESCE(SUM(j.progress_bytes), 0) FROM numbered_jobs n
             JOIN jobs j ON j.id = n.job_id
             WHERE n.tenant = ? AND j.app_id = ? AND j.status = 'succeeded'",
        )
        .bind(tenant)
        .bind(app_id as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }
}
