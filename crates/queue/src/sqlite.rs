//! The embedded job store: one SQLite file in WAL mode.
//!
//! SQLite serialises writers, so a claim (`UPDATE … WHERE id = (SELECT …) RETURNING`)
//! is atomic without row locks; several worker tasks of one process share the file.
//! For several processes use PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::Sqlite;

use crate::sql::{Dialect, Query, SqlStore};
use crate::QueueError;

pub type SqliteJobStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
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
        Ok(SqlStore { pool })
    }
}

/// Lists travel as JSON arrays, read by `json_each`.
impl Dialect for Sqlite {
    const SERIALIZE_CLAIMS: Option<&'static str> = None;

    fn skip_locked(_table: &str) -> String {
        String::new()
    }

    fn in_list(column: &str, param: &str) -> String {
        format!("{column} IN (SELECT value FROM json_each({param}))")
    }

    fn bind_ints(q: Query<Self>, items: Option<Vec<i64>>) -> Query<Self> {
        q.bind(items.map(|v| serde_json::Value::from(v).to_string()))
    }

    fn bind_texts(q: Query<Self>, items: &[String]) -> Query<Self> {
        q.bind(serde_json::Value::from(items).to_string())
    }

    fn rows_affected(result: SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}
