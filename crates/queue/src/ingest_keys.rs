//! What the job store remembers of ingest requests sent with an `Idempotency-Key`.
//!
//! The rows themselves never need it: ClickHouse stores each event once
//! (`logport_store::insert`). The ledger gives a retry — on any replica, after any
//! crash — the answer the first request got, and refuses a key reused for a
//! different body. An entry is written only once the body has been validated (a
//! refused body may be fixed and resent under the same key), and expires after a
//! configured time.

use async_trait::async_trait;

use sqlx::Executor;

use crate::sql::{query, Args, Columns, Dialect, SqlStore};
use crate::QueueError;

/// One keyed request: whose, which key, and a digest of what it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestKey {
    pub tenant: String,
    pub slice: String,
    pub key: String,
    pub digest: String,
}

/// What the ledger knew when a keyed request began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedIngest {
    /// The first request with this key (recorded now).
    New,
    /// An earlier request with this key and the same body: `answer` once it was
    /// committed, `None` while it runs (or if it died before answering).
    Same { answer: Option<String> },
    /// The key was used for a different body.
    Conflict,
}

#[async_trait]
pub trait IngestKeys: Send + Sync + 'static {
    /// Records a keyed request, or tells what an earlier one with the key was. An
    /// expired entry counts as absent.
    async fn begin_keyed_ingest(
        &self,
        key: &IngestKey,
        now: i64,
        expires_at: i64,
    ) -> Result<KeyedIngest, QueueError>;

    /// Stores the answer of a committed keyed request (for the same body only).
    async fn finish_keyed_ingest(&self, key: &IngestKey, answer: &str) -> Result<(), QueueError>;

    /// Forgets entries that have expired; returns how many.
    async fn purge_ingest_keys(&self, now: i64) -> Result<u64, QueueError>;
}

fn verdict(key: &IngestKey, digest: String, answer: Option<String>) -> KeyedIngest {
    if digest == key.digest {
        KeyedIngest::Same { answer }
    } else {
        KeyedIngest::Conflict
    }
}

#[async_trait]
impl<DB> IngestKeys for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    async fn begin_keyed_ingest(
        &self,
        key: &IngestKey,
        now: i64,
        expires_at: i64,
    ) -> Result<KeyedIngest, QueueError> {
        // A new key, or one whose entry expired, is (re)recorded; else nothing.
        let q = query::<DB>(
            "INSERT INTO ingest_keys (tenant, slice, key, digest, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant, slice, key) DO UPDATE
             SET digest = excluded.digest, answer = NULL,
                 created_at = excluded.created_at, expires_at = excluded.expires_at
             WHERE ingest_keys.expires_at <= excluded.created_at",
        )
        .arg(key.tenant.as_str())
        .arg(key.slice.as_str())
        .arg(key.key.as_str())
        .arg(key.digest.as_str())
        .arg(now)
        .arg(expires_at);
        if DB::rows_affected(q.execute(&self.pool).await?) > 0 {
            return Ok(KeyedIngest::New);
        }
        let row = query::<DB>(
            "SELECT digest, answer FROM ingest_keys
             WHERE tenant = $1 AND slice = $2 AND key = $3",
        )
        .arg(key.tenant.as_str())
        .arg(key.slice.as_str())
        .arg(key.key.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => verdict(key, r.col("digest")?, r.col("answer")?),
            // Purged in between: the key is free again.
            None => KeyedIngest::New,
        })
    }

    async fn finish_keyed_ingest(&self, key: &IngestKey, answer: &str) -> Result<(), QueueError> {
        query::<DB>(
            "UPDATE ingest_keys SET answer = $1
             WHERE tenant = $2 AND slice = $3 AND key = $4 AND digest = $5",
        )
        .arg(answer)
        .arg(key.tenant.as_str())
        .arg(key.slice.as_str())
        .arg(key.key.as_str())
        .arg(key.digest.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_ingest_keys(&self, now: i64) -> Result<u64, QueueError> {
        let q = query::<DB>("DELETE FROM ingest_keys WHERE expires_at <= $1").arg(now);
        Ok(DB::rows_affected(q.execute(&self.pool).await?))
    }
}
