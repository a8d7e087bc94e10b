//! The shared job store: PostgreSQL, for several `logport serve` replicas on one queue.
//!
//! A claim runs in one transaction: a transaction-scoped advisory lock serialises
//! claimers (so the per-tenant running limit and the tenant turn order are exact
//! across replicas; a claim takes about a millisecond), and the candidate row is
//! locked `FOR UPDATE SKIP LOCKED`, so a row another transaction is touching (a
//! cancel, a heartbeat) is passed over instead of waited on.

use std::time::Duration;

use sqlx::postgres::{PgPoolOptions, PgQueryResult};
use sqlx::Postgres;

use crate::sql::{Dialect, Query, SqlStore};
use crate::QueueError;

pub type PostgresJobStore = SqlStore<Postgres>;

impl SqlStore<Postgres> {
    pub async fn open(url: &str) -> Result<Self, QueueError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(SqlStore { pool })
    }
}

/// Lists travel as arrays.
impl Dialect for Postgres {
    /// The advisory lock's key is "logport" in ASCII (0x6c_6f67_706f_7274).
    const SERIALIZE_CLAIMS: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(30521787543417460)");

    fn skip_locked(table: &str) -> String {
        format!("FOR UPDATE OF {table} SKIP LOCKED")
    }

    fn in_list(column: &str, param: &str) -> String {
        format!("{column} = ANY({param})")
    }

    fn bind_ints(q: Query<Self>, items: Option<Vec<i64>>) -> Query<Self> {
        q.bind(items)
    }

    fn bind_texts(q: Query<Self>, items: &[String]) -> Query<Self> {
        q.bind(items.to_vec())
    }

    fn rows_affected(result: PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_keep_their_lock_key() {
        // Replicas of older and newer versions must take the same lock.
        let key: i64 = 0x6c_6f67_706f_7274;
        assert_eq!(
            Postgres::SERIALIZE_CLAIMS,
            Some(format!("SELECT pg_advisory_xact_lock({key})").as_str())
        );
    }
}
