//! The job store, written once for SQLite and PostgreSQL.
//!
//! Statements use `$N` placeholders (sqlx's SQLite driver binds `$N` to the N-th
//! argument, as PostgreSQL does) and SQL both dialects read: upserts, `RETURNING`,
//! `CAST`. What differs — how a claim locks, how a list is bound — is a [`Dialect`],
//! in sqlite.rs and postgres.rs. Every write a
//! worker makes after claiming is fenced by its lease: the job, the owner and the
//! attempt must match and the job must still be running.

use async_trait::async_trait;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type,
};

use crate::{
    ClaimOptions, Created, Heartbeat, Job, JobError, JobStatus, JobStore, Lease, ListQuery, NewJob,
    NumberedJob, Part, Progress, QueueError,
};

/// A query with the backend's arguments.
pub type Query<DB> = sqlx::query::Query<'static, DB, <DB as Database>::Arguments>;

/// Binding a `T` to a statement.
pub trait Binds<T>: Database {
    fn bind_value(q: Query<Self>, value: T) -> Query<Self>;
}

impl<DB: Database, T: for<'q> Encode<'q, DB> + Type<DB>> Binds<T> for DB {
    fn bind_value(q: Query<DB>, value: T) -> Query<DB> {
        q.bind(value)
    }
}

/// Reading a `T` from a column of a row.
pub trait Reads<T>: Row {
    fn read(&self, column: &str) -> Result<T, sqlx::Error>;
}

impl<R: Row, T> Reads<T> for R
where
    T: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    for<'a> &'a str: ColumnIndex<R>,
{
    fn read(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
}

/// `.arg(value)`: binds any value the backend [`Binds`].
pub(crate) trait Args<DB: Database> {
    fn arg<T>(self, value: T) -> Self
    where
        DB: Binds<T>;
}

impl<DB: Database> Args<DB> for Query<DB> {
    fn arg<T>(self, value: T) -> Self
    where
        DB: Binds<T>,
    {
        DB::bind_value(self, value)
    }
}

/// `.col(name)`: reads any column type the row [`Reads`].
pub(crate) trait Columns: Row {
    fn col<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        Self: Reads<T>,
    {
        self.read(column)
    }
}

impl<R: Row> Columns for R {}

/// What a backend's SQL does its own way, and the value types every statement here
/// binds and reads. Those are supertraits, not where clauses, so that they hold
/// wherever `DB: Dialect` does (a where clause would have to be repeated on every
/// impl). PostgreSQL's attempts and part numbers are `INTEGER` (read as `i32`).
pub trait Dialect:
    Database<
        Arguments: IntoArguments<Self>,
        Row: Reads<i32>
                 + Reads<Option<i32>>
                 + Reads<i64>
                 + Reads<Option<i64>>
                 + Reads<String>
                 + Reads<Option<String>>,
    > + Binds<i64>
    + Binds<Option<i64>>
    + for<'a> Binds<&'a str>
    + Binds<Option<String>>
{
    /// Runs first in a claim's transaction, to serialise claimers.
    const SERIALIZE_CLAIMS: Option<&'static str>;

    /// Ends a claim's `SELECT` of candidates from `table`: rows other transactions hold
    /// are passed over, not waited on.
    fn skip_locked(table: &str) -> String;

    /// `column` is in the list bound at `param` (by [`Dialect::bind_ints`] or
    /// [`Dialect::bind_texts`]).
    fn in_list(column: &str, param: &str) -> String;

    /// Binds a list of integers, or NULL.
    fn bind_ints(q: Query<Self>, items: Option<Vec<i64>>) -> Query<Self>;

    /// Binds a list of strings.
    fn bind_texts(q: Query<Self>, items: &[String]) -> Query<Self>;

    /// How many rows a statement changed.
    fn rows_affected(result: Self::QueryResult) -> u64;
}

/// A job store (and token store, and ingest-key ledger) on one database.
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
}

/// A statement whose text is built from constants (never from input).
pub(crate) fn query<DB: Database>(sql: impl Into<String>) -> Query<DB> {
    sqlx::query(AssertSqlSafe(sql.into()))
}

/// `'a', 'b'` for an SQL `IN` list of states (constants, never input).
fn states(list: &[JobStatus]) -> String {
    list.iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lease's fence; its job, owner and attempt are bound first (`$1` to `$3`).
const FENCE: &str = "id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running'";

fn fenced<DB: Dialect>(sql: impl Into<String>, lease: &Lease) -> Query<DB> {
    query(sql)
        .arg(lease.job_id.as_str())
        .arg(lease.owner.as_str())
        .arg(i64::from(lease.attempt))
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// A job row with the parts of its published attempt (of its current one before).
    pub(crate) async fn with_parts(&self, r: &DB::Row) -> Result<Job, QueueError> {
        let status: String = r.col("status")?;
        let status = JobStatus::parse(&status).ok_or_else(|| {
            QueueError::Backend(format!("unknown job status `{status}` in store"))
        })?;
        let request: String = r.col("request")?;
        let code: Option<String> = r.col("error_code")?;
        let message: Option<String> = r.col("error_message")?;
        let attempts = r.col::<i32>("attempts")? as u32;
        let published: Option<i32> = r.col("published_attempt")?;
        let id: String = r.col("id")?;
        let parts = query::<DB>(
            "SELECT n, key, rows, bytes, sha256 FROM parts WHERE job_id = $1 AND attempt = $2
             ORDER BY n",
        )
        .arg(id.as_str())
        .arg(published.map_or(i64::from(attempts), Into::into))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|p| {
            Ok(Part {
                n: p.col::<i32>("n")? as u32,
                key: p.col("key")?,
                rows: p.col::<i64>("rows")? as u64,
                bytes: p.col::<i64>("bytes")? as u64,
                sha256: p.col("sha256")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        Ok(Job {
            id,
            tenant: r.col("tenant")?,
            slice: r.col("slice")?,
            status,
            request: crate::parse_request(&request)?,
            idempotency_key: r.col("idempotency_key")?,
            created_at: r.col("created_at")?,
            started_at: r.col("started_at")?,
            finished_at: r.col("finished_at")?,
            expires_at: r.col("expires_at")?,
            attempts,
            max_attempts: r.col::<i32>("max_attempts")? as u32,
            progress: Progress {
                rows: r.col::<i64>("progress_rows")? as u64,
                bytes: r.col::<i64>("progress_bytes")? as u64,
                parts: 0,
            },
            error: code.map(|code| JobError {
                code,
                message: message.unwrap_or_default(),
            }),
            parts,
            manifest_key: r.col("manifest_key")?,
            lease_owner: r.col("lease_owner")?,
            lease_until: r.col("lease_until")?,
        })
    }

    /// Every row as a job with its parts.
    pub(crate) async fn jobs(&self, rows: &[DB::Row]) -> Result<Vec<Job>, QueueError> {
        let mut jobs = Vec::with_capacity(rows.len());
        for r in rows {
            jobs.push(self.with_parts(r).await?);
        }
        Ok(jobs)
    }

    /// Every row (of `numbered_jobs` joined with `jobs`) as a numbered job.
    pub(crate) async fn numbered_jobs(
        &self,
        rows: &[DB::Row],
    ) -> Result<Vec<NumberedJob>, QueueError> {
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(NumberedJob {
                number: r.col::<i64>("number")? as u64,
                cleaned_at: r.col("cleaned_at")?,
                job: self.with_parts(r).await?,
            });
        }
        Ok(out)
    }

    /// A count or sum named `n`.
    pub(crate) async fn count(&self, q: Query<DB>) -> Result<u64, QueueError> {
        Ok(q.fetch_one(&self.pool).await?.col::<i64>("n")? as u64)
    }

    async fn one(&self, row: Option<DB::Row>) -> Result<Option<Job>, QueueError> {
        match row {
            Some(r) => Ok(Some(self.with_parts(&r).await?)),
            None => Ok(None),
        }
    }

    /// Runs a statement; whether it changed one row (for a fenced one: whether the
    /// lease held).
    pub(crate) async fn changed_one(&self, q: Query<DB>) -> Result<bool, QueueError> {
        Ok(DB::rows_affected(q.execute(&self.pool).await?) == 1)
    }
}

#[async_trait]
impl<DB> JobStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    async fn create(&self, new: NewJob, now: i64) -> Result<Created, QueueError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let text = crate::request_text(&new.request)?;
        let hash = crate::text_hash(&text);
        // A unique index on (tenant, idempotency_key) decides races between duplicates.
        // `watermark` (the creation second) is no longer read; it is written because
        // the column is NOT NULL.
        let row = query::<DB>(
            "INSERT INTO jobs (id, tenant, slice, status, request, request_hash, idempotency_key,
                 created_at, updated_at, run_after, watermark, attempts, max_attempts,
                 app_id, fingerprint)
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $7, $7, $8, 0, $9, $10, $11)
             ON CONFLICT DO NOTHING
             RETURNING *",
        )
        .arg(id.as_str())
        .arg(new.tenant.as_str())
        .arg(new.slice.as_str())
        .arg(text.as_str())
        .arg(hash.as_str())
        .arg(new.idempotency_key.clone())
        .arg(now)
        .arg(now.div_euclid(1000))
        .arg(i64::from(new.max_attempts))
        // App ids are UInt64: stored bit for bit in the signed column.
        .arg(new.app_id.map(|a| a as i64))
        .arg(new.fingerprint.clone())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Created::New(self.with_parts(&row).await?));
        }
        let key = new
            .idempotency_key
            .as_deref()
            .ok_or_else(|| QueueError::Backend("job id collision".into()))?;
        let row = query::<DB>("SELECT * FROM jobs WHERE tenant = $1 AND idempotency_key = $2")
            .arg(new.tenant.as_str())
            .arg(key)
            .fetch_one(&self.pool)
            .await?;
        let existing: String = row.col("request_hash")?;
        if existing != hash {
            return Err(QueueError::IdempotencyConflict);
        }
        Ok(Created::Existing(self.with_parts(&row).await?))
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Job>, QueueError> {
        let row = query::<DB>("SELECT * FROM jobs WHERE tenant = $1 AND id = $2")
            .arg(tenant)
            .arg(id)
            .fetch_optional(&self.pool)
            .await?;
        self.one(row).await
    }

    async fn list(&self, tenant: &str, q: &ListQuery) -> Result<Vec<Job>, QueueError> {
        let (before_at, before_id) = match &q.before {
            Some((at, id)) => (Some(*at), Some(id.clone())),
            None => (None, None),
        };
        let sql = format!(
            "SELECT * FROM jobs WHERE tenant = $1
               AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR slice = $3)
               AND ($4 IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5))
               AND ($6 IS NULL OR {})
               AND NOT ({})
             ORDER BY created_at DESC, id DESC LIMIT $8",
            DB::in_list("app_id", "$6"),
            DB::in_list("slice", "$7"),
        );
        let select = query::<DB>(sql)
            .arg(tenant)
            .arg(q.status.map(|s| s.as_str().to_owned()))
            .arg(q.slice.clone())
            .arg(before_at)
            .arg(before_id);
        // App ids as stored: bit for bit in the signed column.
        let apps = q
            .apps
            .as_ref()
            .map(|a| a.iter().map(|&x| x as i64).collect());
        let select = DB::bind_texts(DB::bind_ints(select, apps), &q.hidden_slices);
        let rows = select.arg(i64::from(q.limit)).fetch_all(&self.pool).await?;
        // With their parts, as a single job shows them.
        self.jobs(&rows).await
    }

    async fn claim(
        &self,
        owner: &str,
        opts: &ClaimOptions,
        now: i64,
    ) -> Result<Option<Job>, QueueError> {
        // On SQLite the UPDATE is the transaction's first statement, so it takes the
        // write lock at once; PostgreSQL serialises claimers first, so the per-tenant
        // running limit and the turn order are exact across replicas.
        let mut tx = self.pool.begin().await?;
        if let Some(lock) = DB::SERIALIZE_CLAIMS {
            query::<DB>(lock).execute(&mut *tx).await?;
        }
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1,
                 lease_until = $2, started_at = COALESCE(started_at, $3), updated_at = $3,
                 progress_rows = 0, progress_bytes = 0
             WHERE id = (
                 SELECT j.id FROM jobs j LEFT JOIN tenant_turns t ON t.tenant = j.tenant
                 WHERE j.status = 'queued' AND j.run_after <= $3
                   AND (SELECT count(*) FROM jobs r
                        WHERE r.tenant = j.tenant AND r.status = 'running') < $4
                 ORDER BY (SELECT count(*) FROM jobs r
                           WHERE r.tenant = j.tenant AND r.status = 'running'),
                          COALESCE(t.last_claim_at, 0), j.created_at, j.id
                 LIMIT 1 {})
               AND status = 'queued'
             RETURNING *",
            DB::skip_locked("j"),
        );
        let row = query::<DB>(sql)
            .arg(owner)
            .arg(now + opts.lease_ms)
            .arg(now)
            .arg(i64::from(opts.max_running_per_tenant))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let tenant: String = row.col("tenant")?;
        query::<DB>(
            "INSERT INTO tenant_turns (tenant, last_claim_at) VALUES ($1, $2)
             ON CONFLICT (tenant) DO UPDATE SET last_claim_at = excluded.last_claim_at",
        )
        .arg(tenant.as_str())
        .arg(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(self.with_parts(&row).await?))
    }

    async fn count_queued(&self, tenant: &str) -> Result<u64, QueueError> {
        let q =
            query::<DB>("SELECT count(*) AS n FROM jobs WHERE tenant = $1 AND status = 'queued'");
        self.count(q.arg(tenant)).await
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        progress: Progress,
        lease_ms: i64,
        now: i64,
    ) -> Result<Heartbeat, QueueError> {
        let sql = format!(
            "UPDATE jobs SET lease_until = $4, progress_rows = $5, progress_bytes = $6,
                 updated_at = $7
             WHERE {FENCE}"
        );
        let q = fenced(sql, lease)
            .arg(now + lease_ms)
            .arg(progress.rows as i64)
            .arg(progress.bytes as i64)
            .arg(now);
        if self.changed_one(q).await? {
            return Ok(Heartbeat::Held);
        }
        let sql = "SELECT status FROM jobs WHERE id = $1 AND lease_owner = $2 AND attempts = $3";
        let row = fenced(sql, lease).fetch_optional(&self.pool).await?;
        let status: Option<String> = row.map(|r| r.col("status")).transpose()?;
        Ok(match status.as_deref() {
            Some("canceled") => Heartbeat::Canceled,
            _ => Heartbeat::Lost,
        })
    }

    async fn add_part(&self, lease: &Lease, part: &Part, now: i64) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await?;
        // Takes the write lock (SQLite) or locks the job row (PostgreSQL) until commit,
        // so completion cannot slip in between.
        let sql = format!("UPDATE jobs SET updated_at = $4 WHERE {FENCE}");
        let held = fenced(sql, lease).arg(now).execute(&mut *tx).await?;
        if DB::rows_affected(held) != 1 {
            return Ok(false);
        }
        query::<DB>(
            "INSERT INTO parts (job_id, attempt, n, key, rows, bytes, sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (job_id, attempt, n) DO UPDATE SET key = excluded.key,
                 rows = excluded.rows, bytes = excluded.bytes, sha256 = excluded.sha256",
        )
        .arg(lease.job_id.as_str())
        .arg(i64::from(lease.attempt))
        .arg(i64::from(part.n))
        .arg(part.key.as_str())
        .arg(part.rows as i64)
        .arg(part.bytes as i64)
        .arg(part.sha256.as_str())
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
        let q = fenced(sql, lease)
            .arg(manifest_key)
            .arg(progress.rows as i64)
            .arg(progress.bytes as i64)
            .arg(expires_at)
            .arg(now);
        self.changed_one(q).await
    }

    async fn fail(&self, lease: &Lease, error: &JobError, now: i64) -> Result<bool, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'failed', error_code = $4, error_message = $5,
                 finished_at = $6, updated_at = $6, lease_until = NULL
             WHERE {FENCE}"
        );
        let q = fenced(sql, lease)
            .arg(error.code.as_str())
            .arg(error.message.as_str())
            .arg(now);
        self.changed_one(q).await
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
        let q = fenced(sql, lease)
            .arg(run_after)
            .arg(error.code.as_str())
            .arg(error.message.as_str())
            .arg(now);
        let row = q.fetch_optional(&self.pool).await?;
        let status: Option<String> = row.map(|r| r.col("status")).transpose()?;
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
        self.changed_one(fenced(sql, lease).arg(now)).await
    }

    async fn reap_expired_leases(&self, now: i64) -> Result<u64, QueueError> {
        let done = query::<DB>(
            "UPDATE jobs SET
                 status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END,
                 error_code = 'lease_expired',
                 error_message = 'the worker running this job stopped answering',
                 lease_owner = NULL, lease_until = NULL, updated_at = $1
             WHERE status = 'running' AND lease_until < $1",
        )
        .arg(now)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(done))
    }

    async fn due_for_expiry(&self, now: i64, limit: u32) -> Result<Vec<Job>, QueueError> {
        let rows = query::<DB>(
            "SELECT * FROM jobs WHERE status = 'succeeded' AND expires_at <= $1
             ORDER BY expires_at LIMIT $2",
        )
        .arg(now)
        .arg(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.jobs(&rows).await
    }

    async fn mark_expired(&self, id: &str, now: i64) -> Result<bool, QueueError> {
        let q = query::<DB>(
            "UPDATE jobs SET status = 'expired', updated_at = $1
             WHERE id = $2 AND status = 'succeeded'",
        )
        .arg(now)
        .arg(id);
        self.changed_one(q).await
    }

    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> Result<Option<Job>, QueueError> {
        let sql = format!(
            "UPDATE jobs SET status = 'canceled', finished_at = $1, updated_at = $1,
                 error_code = NULL, error_message = NULL
             WHERE tenant = $2 AND id = $3 AND status IN ({})",
            states(&JobStatus::predecessors(JobStatus::Canceled))
        );
        query::<DB>(sql)
            .arg(now)
            .arg(tenant)
            .arg(id)
            .execute(&self.pool)
            .await?;
        self.get(tenant, id).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        query::<DB>("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, QueueError> {
        let rows = query::<DB>("SELECT status, count(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let status: String = r.col("status")?;
            if let Some(status) = JobStatus::parse(&status) {
                out.push((status, r.col::<i64>("n")? as u64));
            }
        }
        Ok(out)
    }
}
