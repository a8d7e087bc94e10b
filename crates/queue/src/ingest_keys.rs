//! What the job store remembers of ingest requests sent with an `Idempotency-Key`.
//!
//! The rows themselves never need it: ClickHouse stores each event once
//! (`logport_store::insert`). The ledger gives a retry — on any replica, after any
//! crash — the answer the first request got, and refuses a key reused for a
//! different body. An entry is written only once the body has been validated (a
//! refused body may be fixed and resent under the same key), and expires after a
//! configured time.

use async_trait::async_trait;

use crate::{PostgresJobStore, QueueError, SqliteJobStore};

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

/// Both backends run the same statements: `$n` placeholders (which SQLite reads as
/// named parameters numbered in order of appearance, so they appear in order) and
/// upserts both dialects share.
macro_rules! ingest_keys_impl {
    ($store:ty) => {
        #[async_trait]
        impl IngestKeys for $store {
            async fn begin_keyed_ingest(
                &self,
                key: &IngestKey,
                now: i64,
                expires_at: i64,
            ) -> Result<KeyedIngest, QueueError> {
                // A new key, or one whose entry expired, is (re)recorded; else nothing.
                let recorded = sqlx::query(
                    "INSERT INTO ingest_keys (tenant, slice, key, digest, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant, slice, key) DO UPDATE
                     SET digest = excluded.digest, answer = NULL,
                         created_at = excluded.created_at, expires_at = excluded.expires_at
                     WHERE ingest_keys.expires_at <= excluded.created_at",
                )
                .bind(&key.tenant)
                .bind(&key.slice)
                .bind(&key.key)
                .bind(&key.digest)
                .bind(now)
                .bind(expires_at)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if recorded > 0 {
                    return Ok(KeyedIngest::New);
                }
                let row: Option<(String, Option<String>)> = sqlx::query_as(
                    "SELECT digest, answer FROM ingest_keys
                     WHERE tenant = $1 AND slice = $2 AND key = $3",
                )
                .bind(&key.tenant)
                .bind(&key.slice)
                .bind(&key.key)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    Some((digest, answer)) => verdict(key, digest, answer),
                    // Purged in between: the key is free again.
                    None => KeyedIngest::New,
                })
            }

            async fn finish_keyed_ingest(
                &self,
                key: &IngestKey,
                answer: &str,
            ) -> Result<(), QueueError> {
                sqlx::query(
                    "UPDATE ingest_keys SET answer = $1
                     WHERE tenant = $2 AND slice = $3 AND key = $4 AND digest = $5",
                )
                .bind(answer)
                .bind(&key.tenant)
                .bind(&key.slice)
                .bind(&key.key)
                .bind(&key.digest)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn purge_ingest_keys(&self, now: i64) -> Result<u64, QueueError> {
                Ok(
                    sqlx::query("DELETE FROM ingest_keys WHERE expires_at <= $1")
                        .bind(now)
                        .execute(&self.pool)
                        .await?
                        .rows_affected(),
                )
            }
        }
    };
}

ingest_keys_impl!(PostgresJobStore);
ingest_keys_impl!(SqliteJobStore);
