//! The compatibility protocols' part of the job store, on both backends.

use async_trait::async_trait;
use sqlx::Executor;

use crate::sql::{query, Args, Columns, Dialect, SqlStore};
use crate::{CompatJobs, FingerprintedJob, NumberedJob, QueueError};

#[async_trait]
impl<DB> CompatJobs for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    async fn find_by_fingerprint(
        &self,
        tenant: &str,
        fingerprint: &str,
    ) -> Result<Option<FingerprintedJob>, QueueError> {
        let row = query::<DB>(
            "SELECT * FROM jobs WHERE tenant = $1 AND fingerprint = $2
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .arg(tenant)
        .arg(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(FingerprintedJob {
                served_at: r.col("served_at")?,
                job: self.with_parts(&r).await?,
            })),
            None => Ok(None),
        }
    }

    async fn mark_served(&self, tenant: &str, id: &str, now: i64) -> Result<bool, QueueError> {
        let q = query::<DB>(
            "UPDATE jobs SET served_at = $1 WHERE tenant = $2 AND id = $3 AND served_at IS NULL",
        )
        .arg(now)
        .arg(tenant)
        .arg(id);
        self.changed_one(q).await
    }

    async fn count_pending_for_app(&self, tenant: &str, app_id: u64) -> Result<u64, QueueError> {
        let q = query::<DB>(
            "SELECT count(*) AS n FROM jobs WHERE tenant = $1 AND app_id = $2
               AND status IN ('queued', 'running')",
        )
        .arg(tenant)
        .arg(app_id as i64);
        self.count(q).await
    }

    async fn number(&self, tenant: &str, id: &str) -> Result<Option<u64>, QueueError> {
        let existing = || async {
            let row =
                query::<DB>("SELECT number FROM numbered_jobs WHERE tenant = $1 AND job_id = $2")
                    .arg(tenant)
                    .arg(id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(|r| r.col::<i64>("number").map(|n| n as u64))
                .transpose()
        };
        if let Some(n) = existing().await? {
            return Ok(Some(n));
        }
        let known = query::<DB>("SELECT id FROM jobs WHERE tenant = $1 AND id = $2")
            .arg(tenant)
            .arg(id)
            .fetch_optional(&self.pool)
            .await?;
        if known.is_none() {
            return Ok(None);
        }
        // The counter's upsert comes first: on SQLite it takes the write lock at once, on
        // PostgreSQL it locks the tenant's counter row until commit. Either way numbers
        // are handed out one at a time, without gaps between concurrent callers.
        let mut tx = self.pool.begin().await?;
        let next = query::<DB>(
            "INSERT INTO request_numbers (tenant, last) VALUES ($1, 1)
             ON CONFLICT (tenant) DO UPDATE SET last = request_numbers.last + 1
             RETURNING last",
        )
        .arg(tenant)
        .fetch_one(&mut *tx)
        .await?
        .col::<i64>("last")?;
        query::<DB>(
            "INSERT INTO numbered_jobs (tenant, number, job_id) VALUES ($1, $2, $3)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .arg(tenant)
        .arg(next)
        .arg(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(existing().await?)
    }

    async fn numbered(&self, tenant: &str, number: u64) -> Result<Option<NumberedJob>, QueueError> {
        let rows = query::<DB>(
            "SELECT n.number, n.cleaned_at, j.* FROM numbered_jobs n
             JOIN jobs j ON j.id = n.job_id
             WHERE n.tenant = $1 AND n.number = $2",
        )
        .arg(tenant)
        .arg(number as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.numbered_jobs(&rows).await?.pop())
    }

    async fn list_numbered(
        &self,
        tenant: &str,
        app_id: Option<u64>,
        limit: u32,
    ) -> Result<Vec<NumberedJob>, QueueError> {
        let rows = query::<DB>(
            "SELECT n.number, n.cleaned_at, j.* FROM numbered_jobs n
             JOIN jobs j ON j.id = n.job_id
             WHERE n.tenant = $1 AND ($2 IS NULL OR j.app_id = $2)
             ORDER BY n.number DESC LIMIT $3",
        )
        .arg(tenant)
        .arg(app_id.map(|a| a as i64))
        .arg(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.numbered_jobs(&rows).await
    }

    async fn mark_cleaned(&self, tenant: &str, number: u64, now: i64) -> Result<bool, QueueError> {
        let q = query::<DB>(
            "UPDATE numbered_jobs SET cleaned_at = $1
             WHERE tenant = $2 AND number = $3 AND cleaned_at IS NULL",
        )
        .arg(now)
        .arg(tenant)
        .arg(number as i64);
        self.changed_one(q).await
    }

    async fn prepared_bytes(&self, tenant: &str, app_id: u64) -> Result<u64, QueueError> {
        let q = query::<DB>(
            "SELECT CAST(COALESCE(SUM(j.progress_bytes), 0) AS BIGINT) AS n FROM numbered_jobs n
             JOIN jobs j ON j.id = n.job_id
             WHERE n.tenant = $1 AND j.app_id = $2 AND j.status = 'succeeded'",
        )
        .arg(tenant)
        .arg(app_id as i64);
        self.count(q).await
    }
}
