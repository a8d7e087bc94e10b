//! ClickHouse, and the only crate that writes SQL.
//!
//! Tables are created from the catalog (`migrate`), ingest rows are written as
//! RowBinary (`insert`), and exports stream the server's own formatted bytes
//! (`stream`), so no result is ever materialised here. Everything must run on
//! ClickHouse 18.16 (Debian's, used by the tests) and on current servers: no
//! server-side parameters, no RowBinaryWithNamesAndTypes, no TTL-only logic.

pub mod error;
pub mod inserter;
pub mod query;
pub mod rowbinary;
pub mod sql;

use bytes::Bytes;
use logport_catalog::{Catalog, ColumnType, Partition, Value, TENANT_COLUMN};
use serde::Deserialize;

pub use error::{trailing_exception, StoreError};
pub use inserter::{Batch, Inserter, InserterConfig, SubmitError};
pub use logport_catalog::Slice;
pub use query::Selection;
use sql::{ident, quote_string};

/// Internal column: the millisecond of `received_time`'s second at which a row was
/// received, so an export's watermark (its creation instant) is exact to the
/// millisecond on servers whose `DateTime` has whole seconds.
pub const RECEIVED_MS_COLUMN: &str = "received_ms";

/// How to reach ClickHouse.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
}

/// What the connected server can do; decided once from `version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCaps {
    pub major: u32,
    /// `LowCardinality` is production-ready from 19.x; on 18.x it is experimental, so
    /// such columns are plain `String` there (same values, same API type).
    pub low_cardinality: bool,
}

/// Connection to one ClickHouse database.
#[derive(Clone)]
pub struct Store {
    client: clickhouse::Client,
    database: String,
    caps: ServerCaps,
}

/// What `migrate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub created_tables: Vec<String>,
    /// `table.column` of every column added.
    pub added_columns: Vec<String>,
    /// `table.column: have X, catalog says Y` — left alone, reported.
    pub type_mismatches: Vec<String>,
}

impl MigrationReport {
    pub fn is_noop(&self) -> bool {
        self.created_tables.is_empty() && self.added_columns.is_empty()
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct ColumnRow {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

#[derive(clickhouse::Row, Deserialize)]
struct CountRow {
    rows: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct TextRow {
    text: String,
}

impl Store {
    /// Connects and reads the server version. The database need not exist yet.
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        if !sql::is_safe_ident(&cfg.database) {
            return Err(StoreError::Client(format!(
                "database name `{}` must match [A-Za-z_][A-Za-z0-9_]*",
                cfg.database
            )));
        }
        let mut root = clickhouse::Client::default()
            .with_url(cfg.url.trim_end_matches('/'))
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        if let Some(user) = &cfg.user {
            root = root.with_user(user);
        }
        if let Some(password) = &cfg.password {
            root = root.with_password(password);
        }
        let version = root
            .query_raw("SELECT version() AS text")
            .fetch_one::<TextRow>()
            .await?
            .text;
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        tracing::info!(%version, "connected to clickhouse");
        Ok(Store {
            // A client with a missing database fails every query on 18.x, even CREATE
            // DATABASE; table names are always qualified, so the client sets none.
            client: root,
            database: cfg.database.clone(),
            caps: ServerCaps {
                major,
                low_cardinality: major >= 19,
            },
        })
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn caps(&self) -> ServerCaps {
        self.caps
    }

    /// What a query over one tenant's rows of a slice reads, as the spec selects them.
    pub fn select<'a>(
        &'a self,
        slice: &'a Slice,
        tenant: &'a str,
        spec: &'a logport_catalog::ExportSpec,
    ) -> Selection<'a> {
        Selection {
            database: &self.database,
            slice,
            tenant,
            spec,
            watermark_ms: None,
            legacy_epoch: self.caps.major < 19,
        }
    }

    /// Is the server answering?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .query_raw("SELECT toUInt64(1) AS rows")
            .fetch_one::<CountRow>()
            .await?;
        Ok(())
    }

    fn table(&self, slice: &str) -> String {
        format!("{}.{}", ident(&self.database), ident(slice))
    }

    /// The column type as this server stores it.
    fn ddl_type(&self, ty: &ColumnType) -> String {
        let text = ty.to_string();
        if self.caps.low_cardinality {
            text
        } else {
            text.replace("LowCardinality(String)", "String")
        }
    }

    /// Creates the database and one table per slice; adds columns for fields new to
    /// the catalog. Idempotent, and safe to run from several processes at once.
    pub async fn migrate(&self, catalog: &Catalog) -> Result<MigrationReport, StoreError> {
        self.client
            .query_raw(&format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                ident(&self.database)
            ))
            .execute()
            .await?;
        let mut report = MigrationReport::default();
        for slice in catalog.slices() {
            let existing = self.columns(&slice.name).await?;
            if existing.is_empty() {
                self.ddl(&self.create_table_sql(slice)).await?;
                report.created_tables.push(slice.name.clone());
                continue;
            }
            let wanted = slice
                .fields
                .iter()
                .map(|f| (f.name.as_str(), self.ddl_type(&f.ty)))
                .chain([(RECEIVED_MS_COLUMN, "UInt16".to_string())]);
            for (name, want) in wanted {
                match existing.iter().find(|c| c.name == name) {
                    Some(have) if have.ty != want => report.type_mismatches.push(format!(
                        "{}.{}: have {}, catalog says {}",
                        slice.name, name, have.ty, want
                    )),
                    Some(_) => {}
                    None => {
                        let sql = format!(
                            "ALTER TABLE {} ADD COLUMN {} {}",
                            self.table(&slice.name),
                            ident(name),
                            want
                        );
                        match self.ddl(&sql).await {
                            Ok(()) => {}
                            // Another process added it first (DUPLICATE_COLUMN / ILLEGAL_COLUMN).
                            Err(StoreError::Server { code: 15 | 44, .. }) => continue,
                            Err(e) => return Err(e),
                        }
                        report
                            .added_columns
                            .push(format!("{}.{}", slice.name, name));
                    }
                }
            }
        }
        for m in &report.type_mismatches {
            tracing::warn!(column = %m, "column type differs from the catalog; not changed");
        }
        Ok(report)
    }

    async fn ddl(&self, sql: &str) -> Result<(), StoreError> {
        let mut q = self.client.query_raw(sql);
        if !self.caps.low_cardinality {
            q = q.with_setting("allow_experimental_low_cardinality_type", "1");
        }
        q.execute().await.map_err(StoreError::from)
    }

    async fn columns(&self, table: &str) -> Result<Vec<ColumnRow>, StoreError> {
        let sql = format!(
            "SELECT name, type FROM system.columns WHERE database = {} AND table = {}",
            quote_string(&self.database),
            quote_string(table)
        );
        Ok(self.client.query_raw(&sql).fetch_all::<ColumnRow>().await?)
    }

    /// The DDL of a slice's table.
    pub fn create_table_sql(&self, slice: &Slice) -> String {
        let mut cols = vec![format!("{} String", ident(TENANT_COLUMN))];
        cols.extend(
            slice
                .fields
                .iter()
                .map(|f| format!("{} {}", ident(&f.name), self.ddl_type(&f.ty))),
        );
        cols.push(format!("{} UInt16", ident(RECEIVED_MS_COLUMN)));
        let partition = match slice.partition {
            Partition::Day => "toYYYYMMDD(received_time)",
            Partition::Month => "toYYYYMM(received_time)",
        };
        let mut key = vec![
            ident(TENANT_COLUMN),
            ident("app_id"),
            "toDate(event_time)".to_string(),
        ];
        key.extend(slice.sort_key.iter().map(|k| ident(k)));
        key.push(ident("event_time"));
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE = MergeTree PARTITION BY {} ORDER BY ({}) \
             SETTINGS index_granularity = 8192",
            self.table(&slice.name),
            cols.join(", "),
            partition,
            key.join(", ")
        )
    }

    /// Appends one validated row (values in the slice's field order) for a tenant to
    /// a RowBinary buffer, the form [`Store::insert_rowbinary`] sends.
    /// `received_ms` is the millisecond within the row's `received_time` second.
    pub fn encode_row(
        slice: &Slice,
        tenant: &str,
        row: &[Value],
        received_ms: u16,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        if row.len() != slice.fields.len() {
            return Err(StoreError::Client(format!(
                "row has {} values for {} fields",
                row.len(),
                slice.fields.len()
            )));
        }
        rowbinary::write_value(out, &ColumnType::String, &Value::Str(tenant.into()))
            .map_err(StoreError::Client)?;
        for (field, v) in slice.fields.iter().zip(row) {
            rowbinary::write_value(out, &field.ty, v).map_err(StoreError::Client)?;
        }
        out.extend_from_slice(&received_ms.min(999).to_le_bytes());
        Ok(())
    }

    /// Sends rows encoded by [`Store::encode_row`] as one INSERT. Returns once the
    /// server has committed them; one INSERT into one partition is atomic.
    pub async fn insert_rowbinary(&self, slice: &Slice, data: Bytes) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        let mut columns = vec![ident(TENANT_COLUMN)];
        columns.extend(slice.fields.iter().map(|f| ident(&f.name)));
        columns.push(ident(RECEIVED_MS_COLUMN));
        let sql = format!(
            "INSERT INTO {} ({}) FORMAT RowBinary",
            self.table(&slice.name),
            columns.join(", ")
        );
        let mut insert = self.client.insert_formatted_with(sql);
        const CHUNK: usize = 1 << 20;
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(CHUNK));
            insert.send(chunk).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Whether a tenant's slice holds an event with this id (looked up on the day of
    /// its `event_time`, which the primary key narrows to).
    pub async fn contains_event(
        &self,
        slice: &Slice,
        tenant: &str,
        app_id: u64,
        event_id: &uuid::Uuid,
        event_time: u32,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT count() AS rows FROM {} WHERE {} = {} AND app_id = {app_id} \
             AND toDate(event_time) = toDate(toDateTime({event_time})) AND event_id = {}",
            self.table(&slice.name),
            ident(TENANT_COLUMN),
            quote_string(tenant),
            sql::literal(&Value::Uuid(*event_id)),
        );
        Ok(self
            .client
            .query_raw(&sql)
            .fetch_one::<CountRow>()
            .await?
            .rows
            > 0)
    }

    /// Average uncompressed bytes per row of the given columns, from table statistics.
    pub async fn bytes_per_row(&self, slice: &str, fields: &[String]) -> Result<f64, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stats {
            bytes: u64,
            rows: u64,
        }
        let names = fields
            .iter()
            .map(|f| quote_string(f))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT toUInt64(sum(data_uncompressed_bytes)) AS bytes, \
             toUInt64((SELECT count() FROM {})) AS rows \
             FROM system.columns WHERE database = {} AND table = {} AND name IN ({})",
            self.table(slice),
            quote_string(&self.database),
            quote_string(slice),
            if names.is_empty() {
                "''".to_string()
            } else {
                names
            }
        );
        let s = self.client.query_raw(&sql).fetch_one::<Stats>().await?;
        Ok(if s.rows == 0 {
            0.0
        } else {
            s.bytes as f64 / s.rows as f64
        })
    }

    /// Runs a preview SELECT and returns its JSONEachRow text.
    pub async fn fetch_json_rows(
        &self,
        sql: &str,
        settings: &[(&str, &str)],
    ) -> Result<Vec<u8>, StoreError> {
        let mut q = self.client.query_raw(sql);
        for (k, v) in settings {
            q = q.with_setting(*k, *v);
        }
        let mut cursor = q.fetch_bytes("JSONEachRow")?;
        let mut out = Vec::new();
        while let Some(chunk) = cursor.next().await? {
            out.extend_from_slice(&chunk);
        }
        if let Some(e) = error::exception_in_lines(&out) {
            return Err(e);
        }
        Ok(out)
    }

    /// Streams a SELECT in a ClickHouse output format. `query_id` lets a canceller
    /// `KILL QUERY` it.
    pub fn stream(
        &self,
        sql: &str,
        format: &str,
        query_id: &str,
        settings: &[(&str, &str)],
    ) -> Result<ByteStream, StoreError> {
        let mut q = self
            .client
            .query_raw(sql)
            .with_setting("query_id", query_id);
        for (k, v) in settings {
            q = q.with_setting(*k, *v);
        }
        Ok(ByteStream {
            cursor: q.fetch_bytes(format)?,
        })
    }

    /// Runs a `SELECT count()`.
    pub async fn count(&self, sql: &str) -> Result<u64, StoreError> {
        let sql = sql.replacen("SELECT count()", "SELECT count() AS rows", 1);
        Ok(self
            .client
            .query_raw(&sql)
            .fetch_one::<CountRow>()
            .await?
            .rows)
    }

    /// Stops a running query by id (used to cancel exports).
    pub async fn kill_query(&self, query_id: &str) -> Result<(), StoreError> {
        let sql = format!(
            "KILL QUERY WHERE query_id = {} ASYNC",
            quote_string(query_id)
        );
        self.client.query_raw(&sql).execute().await?;
        Ok(())
    }

    /// Drops the database (tests clean up with it).
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.client
            .query_raw(&format!(
                "DROP DATABASE IF EXISTS {}",
                ident(&self.database)
            ))
            .execute()
            .await?;
        Ok(())
    }
}

/// The formatted bytes of a running SELECT, chunk by chunk.
pub struct ByteStream {
    cursor: clickhouse::query::BytesCursor,
}

impl ByteStream {
    pub async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        Ok(self.cursor.next().await?)
    }
}
