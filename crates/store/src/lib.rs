//! ClickHouse, and the only crate that writes SQL.
//!
//! Tables are created from the catalog (`migrate`), ingest rows are written as
//! Native blocks, each event once ([`insert`]), and exports stream the server's own formatted bytes
//! (`stream`), so no result is ever materialised here. Everything must run on
//! ClickHouse 18.16 (Debian's, used by the tests) and on current servers: no
//! server-side parameters, no RowBinaryWithNamesAndTypes, no TTL-only logic.
//!
//! Retention ([`retention`]) drops whole expired partitions. On a cluster
//! ([`ClusterConfig`]) each slice is a MergeTree table `{slice}_local` on every
//! server plus a `Distributed` table `{slice}` over them: ingest and exports use the
//! Distributed table, DDL and retention go to every server directly (so no
//! ZooKeeper/Keeper is needed for `ON CLUSTER`). Every query is timed and its
//! failures counted by error code (`logport_clickhouse_*` metrics).

pub mod bounds;
pub mod error;
pub mod insert;
pub mod inserter;
mod observe;
pub mod query;
pub mod retention;
pub mod sql;

use std::sync::Arc;
use std::time::Instant;

use bounds::{server_done, KillOnDrop};
use bytes::{Bytes, BytesMut};
use logport_catalog::{Catalog, ColumnType, Partition, TENANT_COLUMN};
use serde::Deserialize;

pub use bounds::Bounds;
pub use error::{trailing_exception, StoreError};
pub use insert::{Rows, FENCE_BUSY};
pub use inserter::{Batch, Inserter, InserterConfig, SubmitError};
pub use logport_catalog::Slice;
use observe::record;
pub use query::Selection;
pub use retention::{RetentionPolicy, RetentionReport};
use sql::{ident, quote_string};

/// Internal column: the millisecond of `received_time`'s second at which a row was
/// received, so an export's watermark (its creation instant) is exact to the
/// millisecond on servers whose `DateTime` has whole seconds.
pub const RECEIVED_MS_COLUMN: &str = "received_ms";

/// How to reach ClickHouse.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
    /// Shard the tables over a cluster of servers (`None`: one server).
    pub cluster: Option<ClusterConfig>,
}

/// A ClickHouse cluster as the servers' `<remote_servers>` configuration names it.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// The cluster's name in `<remote_servers>` (`[A-Za-z_][A-Za-z0-9_]*`).
    pub name: String,
    /// HTTP URL of every server of the cluster, where DDL and retention run. Empty:
    /// the hosts `system.clusters` lists, on the HTTP port of [`StoreConfig::url`].
    pub server_urls: Vec<String>,
}

/// What the connected server can do; decided once from `version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCaps {
    pub major: u32,
    /// `LowCardinality` is production-ready from 19.x; on 18.x it is experimental, so
    /// such columns are plain `String` there (same values, same API type).
    pub low_cardinality: bool,
    /// Table TTL (`TTL … `, `MODIFY TTL`, `REMOVE TTL` and the
    /// `materialize_ttl_after_modify` setting all exist from 21.x).
    pub ttl: bool,
}

impl ServerCaps {
    pub fn from_major(major: u32) -> ServerCaps {
        ServerCaps {
            major,
            low_cardinality: major >= 19,
            ttl: major >= 21,
        }
    }
}

/// Connection to one ClickHouse database (or one cluster's).
#[derive(Clone)]
pub struct Store {
    client: clickhouse::Client,
    url: String,
    database: String,
    caps: ServerCaps,
    cluster: Option<Arc<Cluster>>,
    retention: Arc<RetentionPolicy>,
    /// Ingest INSERTs go out by hand: they carry external data, which the
    /// `clickhouse` crate does not send ([`insert`]).
    http: reqwest::Client,
    user: Option<String>,
    password: Option<String>,
}

/// The servers of a cluster, each reached directly for DDL and retention.
struct Cluster {
    name: String,
    servers: Vec<Server>,
}

#[derive(Clone)]
struct Server {
    url: String,
    client: clickhouse::Client,
}

/// Suffix of the per-server MergeTree tables under a cluster's Distributed tables.
pub const LOCAL_SUFFIX: &str = "_local";

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

#[derive(clickhouse::Row, Deserialize)]
struct ClusterHostRow {
    host: String,
}

#[derive(clickhouse::Row, Deserialize)]
struct PartitionRow {
    partition: String,
    rows: u64,
}

async fn server_version(client: &clickhouse::Client) -> Result<String, StoreError> {
    Ok(client
        .query_raw("SELECT version() AS text")
        .fetch_one::<TextRow>()
        .await?
        .text)
}

fn client_for(url: &str, cfg: &StoreConfig) -> clickhouse::Client {
    let mut client = clickhouse::Client::default()
        .with_url(url.trim_end_matches('/'))
        .with_validation(false)
        .with_compression(clickhouse::Compression::None);
    if let Some(user) = &cfg.user {
        client = client.with_user(user);
    }
    if let Some(password) = &cfg.password {
        client = client.with_password(password);
    }
    client
}

impl Store {
    /// Connects and reads the server version. The database need not exist yet. With
    /// a cluster, checks that the server knows it and that every server answers.
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        if !sql::is_safe_ident(&cfg.database) {
            return Err(StoreError::Client(format!(
                "database name `{}` must match [A-Za-z_][A-Za-z0-9_]*",
                cfg.database
            )));
        }
        // A client with a missing database fails every query on 18.x, even CREATE
        // DATABASE; table names are always qualified, so the client sets none.
        let root = client_for(&cfg.url, cfg);
        let version = server_version(&root).await?;
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        tracing::info!(%version, "connected to clickhouse");
        let cluster = match &cfg.cluster {
            None => None,
            Some(c) => Some(Arc::new(Self::resolve_cluster(&root, cfg, c).await?)),
        };
        Ok(Store {
            client: root,
            url: cfg.url.trim_end_matches('/').to_string(),
            database: cfg.database.clone(),
            caps: ServerCaps::from_major(major),
            cluster,
            retention: Arc::default(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| StoreError::Client(format!("HTTP client: {e}")))?,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
        })
    }

    /// The servers of a cluster: the configured URLs, or the hosts the connected
    /// server lists for it on the connected URL's HTTP port.
    async fn resolve_cluster(
        root: &clickhouse::Client,
        cfg: &StoreConfig,
        c: &ClusterConfig,
    ) -> Result<Cluster, StoreError> {
        if !sql::is_safe_ident(&c.name) {
            return Err(StoreError::Client(format!(
                "cluster name `{}` must match [A-Za-z_][A-Za-z0-9_]*",
                c.name
            )));
        }
        let hosts = root
            .query_raw(&format!(
                "SELECT DISTINCT host_name AS host FROM system.clusters WHERE cluster = {}",
                quote_string(&c.name)
            ))
            .fetch_all::<ClusterHostRow>()
            .await?;
        if hosts.is_empty() {
            return Err(StoreError::Client(format!(
                "the server at {} has no cluster `{}` in its remote_servers configuration",
                cfg.url, c.name
            )));
        }
        let urls: Vec<String> = if c.server_urls.is_empty() {
            let (scheme, rest) = cfg.url.split_once("://").unwrap_or(("http", &cfg.url));
            let port = rest
                .trim_end_matches('/')
                .rsplit_once(':')
                .map(|(_, p)| p.to_string())
                .unwrap_or_else(|| "8123".into());
            hosts
                .iter()
                .map(|h| format!("{scheme}://{}:{port}", h.host))
                .collect()
        } else {
            c.server_urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect()
        };
        let mut servers = Vec::new();
        for url in urls {
            let client = client_for(&url, cfg);
            server_version(&client)
                .await
                .map_err(|e| StoreError::Unreachable(format!("cluster server {url}: {e}")))?;
            servers.push(Server { url, client });
        }
        tracing::info!(cluster = %c.name, servers = servers.len(), "clickhouse cluster");
        Ok(Cluster {
            name: c.name.clone(),
            servers,
        })
    }

    /// Sets the retention policy exports, previews and counts filter by, and that
    /// [`Store::apply_retention`] and TTL (where supported) enforce.
    pub fn with_retention(mut self, policy: RetentionPolicy) -> Store {
        self.retention = Arc::new(policy);
        self
    }

    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn caps(&self) -> ServerCaps {
        self.caps
    }

    /// The cluster's name when the tables are sharded.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref().map(|c| c.name.as_str())
    }

    /// The servers DDL and retention run on: every server of the cluster, or the one.
    fn servers(&self) -> Vec<Server> {
        match &self.cluster {
            Some(c) => c.servers.clone(),
            None => vec![Server {
                url: self.url.clone(),
                client: self.client.clone(),
            }],
        }
    }

    /// The name of the MergeTree table holding a slice's rows on each server.
    fn local_name(&self, slice: &str) -> String {
        match &self.cluster {
            Some(_) => format!("{slice}{LOCAL_SUFFIX}"),
            None => slice.to_string(),
        }
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
            retention_cutoff: self.retention.cutoff(&slice.name, now_secs()),
            legacy_epoch: self.caps.major < 19,
        }
    }

    /// Is the server answering (on a cluster: every server, since a Distributed
    /// query needs all shards)?
    pub async fn ping(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut r = Ok(());
        for server in self.servers() {
            r = server
                .client
                .query_raw("SELECT toUInt64(1) AS rows")
                .fetch_one::<CountRow>()
                .await
                .map(|_| ())
                .map_err(|e| match StoreError::from(e) {
                    StoreError::Unreachable(m) if self.cluster.is_some() => {
                        StoreError::Unreachable(format!("{}: {m}", server.url))
                    }
                    other => other,
                });
            if r.is_err() {
                break;
            }
        }
        record("ping", started, &r);
        r
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
    /// the catalog. Idempotent, and safe to run from several processes at once. On a
    /// cluster: on every server, a MergeTree `{slice}_local` and a Distributed
    /// `{slice}` over the cluster's `{slice}_local` tables.
    pub async fn migrate(&self, catalog: &Catalog) -> Result<MigrationReport, StoreError> {
        let started = Instant::now();
        let r = self.migrate_all(catalog).await;
        record("migrate", started, &r);
        r
    }

    async fn migrate_all(&self, catalog: &Catalog) -> Result<MigrationReport, StoreError> {
        let mut report = MigrationReport::default();
        let servers = self.servers();
        for server in &servers {
            let at = match self.cluster {
                Some(_) => format!(" on {}", server.url),
                None => String::new(),
            };
            server
                .client
                .query_raw(&format!(
                    "CREATE DATABASE IF NOT EXISTS {}",
                    ident(&self.database)
                ))
                .execute()
                .await?;
            for slice in catalog.slices() {
                let local = self.local_name(&slice.name);
                let create = self.create_sql_named(slice, &local);
                self.migrate_table(&server.client, &local, &create, slice, &at, &mut report)
                    .await?;
                if self.caps.ttl {
                    self.reconcile_ttl(&server.client, &local, slice).await?;
                }
                if let Some(cluster) = &self.cluster {
                    let create = self.distributed_sql(slice, &cluster.name);
                    self.migrate_table(
                        &server.client,
                        &slice.name,
                        &create,
                        slice,
                        &at,
                        &mut report,
                    )
                    .await?;
                }
            }
        }
        for m in &report.type_mismatches {
            tracing::warn!(column = %m, "column type differs from the catalog; not changed");
        }
        Ok(report)
    }

    /// Creates one table, or adds the columns it lacks.
    async fn migrate_table(
        &self,
        client: &clickhouse::Client,
        table: &str,
        create: &str,
        slice: &Slice,
        at: &str,
        report: &mut MigrationReport,
    ) -> Result<(), StoreError> {
        let existing = self.columns(client, table).await?;
        if existing.is_empty() {
            self.ddl(client, create).await?;
            report.created_tables.push(format!("{table}{at}"));
            return Ok(());
        }
        let wanted = slice
            .fields
            .iter()
            .map(|f| (f.name.as_str(), self.ddl_type(&f.ty)))
            .chain([(RECEIVED_MS_COLUMN, "UInt16".to_string())]);
        for (name, want) in wanted {
            match existing.iter().find(|c| c.name == name) {
                Some(have) if have.ty != want => report.type_mismatches.push(format!(
                    "{}.{}: have {}, catalog says {}{at}",
                    table, name, have.ty, want
                )),
                Some(_) => {}
                None => {
                    let sql = format!(
                        "ALTER TABLE {}.{} ADD COLUMN {} {}",
                        ident(&self.database),
                        ident(table),
                        ident(name),
                        want
                    );
                    match self.ddl(client, &sql).await {
                        Ok(()) => {}
                        // Another process added it first (DUPLICATE_COLUMN / ILLEGAL_COLUMN).
                        Err(StoreError::Server { code: 15 | 44, .. }) => continue,
                        Err(e) => return Err(e),
                    }
                    report.added_columns.push(format!("{table}.{name}{at}"));
                }
            }
        }
        Ok(())
    }

    /// Makes a table's TTL match the retention policy (servers with TTL only).
    async fn reconcile_ttl(
        &self,
        client: &clickhouse::Client,
        table: &str,
        slice: &Slice,
    ) -> Result<(), StoreError> {
        let engine = client
            .query_raw(&format!(
                "SELECT engine_full AS text FROM system.tables WHERE database = {} AND name = {}",
                quote_string(&self.database),
                quote_string(table)
            ))
            .fetch_all::<TextRow>()
            .await?;
        let Some(engine) = engine.first() else {
            return Ok(());
        };
        let want = self.retention.days(&slice.name);
        let have = ttl_days(&engine.text);
        if have == want && (want.is_some() || !engine.text.contains(" TTL ")) {
            return Ok(());
        }
        let qualified = format!("{}.{}", ident(&self.database), ident(table));
        let sql = match want {
            Some(days) => format!("ALTER TABLE {qualified} MODIFY {}", ttl_clause(days)),
            None => format!("ALTER TABLE {qualified} REMOVE TTL"),
        };
        tracing::info!(table, ?want, ?have, "changing the table TTL");
        client
            .query_raw(&sql)
            // Old parts are dropped by retention; do not rewrite them all now.
            .with_setting("materialize_ttl_after_modify", "0")
            .execute()
            .await?;
        Ok(())
    }

    async fn ddl(&self, client: &clickhouse::Client, sql: &str) -> Result<(), StoreError> {
        let mut q = client.query_raw(sql);
        if !self.caps.low_cardinality {
            q = q.with_setting("allow_experimental_low_cardinality_type", "1");
        }
        q.execute().await.map_err(StoreError::from)
    }

    async fn columns(
        &self,
        client: &clickhouse::Client,
        table: &str,
    ) -> Result<Vec<ColumnRow>, StoreError> {
        let sql = format!(
            "SELECT name, type FROM system.columns WHERE database = {} AND table = {}",
            quote_string(&self.database),
            quote_string(table)
        );
        Ok(client.query_raw(&sql).fetch_all::<ColumnRow>().await?)
    }

    /// The DDL of a slice's table (on a cluster: of its table on each server).
    pub fn create_table_sql(&self, slice: &Slice) -> String {
        self.create_sql_named(slice, &self.local_name(&slice.name))
    }

    fn column_list(&self, slice: &Slice) -> String {
        let mut cols = vec![format!("{} String", ident(TENANT_COLUMN))];
        cols.extend(
            slice
                .fields
                .iter()
                .map(|f| format!("{} {}", ident(&f.name), self.ddl_type(&f.ty))),
        );
        cols.push(format!("{} UInt16", ident(RECEIVED_MS_COLUMN)));
        cols.join(", ")
    }

    /// The Distributed table over every server's `{slice}_local`.
    ///
    /// The sharding key is the ingest request: every row of one request has the same
    /// tenant and `received_time`/`received_ms`, so the whole request goes to one
    /// shard and stays atomic (an INSERT is atomic per shard, not across shards),
    /// which the ingest deduplication relies on: a retried request is either wholly
    /// stored or not at all. Different requests hash to different shards, so one
    /// tenant's rows spread over every shard and its exports read them in parallel.
    fn distributed_sql(&self, slice: &Slice, cluster: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE = Distributed({}, {}, {}, \
             cityHash64({}, toUInt32({}), {}))",
            self.table(&slice.name),
            self.column_list(slice),
            quote_string(cluster),
            quote_string(&self.database),
            quote_string(&self.local_name(&slice.name)),
            ident(TENANT_COLUMN),
            ident("received_time"),
            ident(RECEIVED_MS_COLUMN),
        )
    }

    fn create_sql_named(&self, slice: &Slice, table: &str) -> String {
        let cols = self.column_list(slice);
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
        let ttl = match self.retention.days(&slice.name) {
            Some(days) if self.caps.ttl => format!(" {}", ttl_clause(days)),
            _ => String::new(),
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{} ({}) ENGINE = MergeTree PARTITION BY {} ORDER BY ({}){ttl} \
             SETTINGS index_granularity = 8192",
            ident(&self.database),
            ident(table),
            cols,
            partition,
            key.join(", ")
        )
    }

    /// Drops every partition of every bounded slice that has wholly expired, on
    /// every server. Keeps going past a failing table; the report lists what was
    /// dropped and the errors.
    pub async fn apply_retention(
        &self,
        catalog: &Catalog,
        now_secs: i64,
    ) -> (RetentionReport, Vec<StoreError>) {
        let mut report = RetentionReport::default();
        let mut errors = Vec::new();
        for (name, _) in self.retention.bounded() {
            let (Some(slice), Some(cutoff)) =
                (catalog.slice(name), self.retention.cutoff(name, now_secs))
            else {
                continue;
            };
            for server in self.servers() {
                if let Err(e) = self.drop_expired(&server, slice, cutoff, &mut report).await {
                    tracing::warn!(slice = %slice.name, server = %server.url, error = %e, "retention failed");
                    errors.push(e);
                }
            }
        }
        (report, errors)
    }

    /// The active partitions of one slice's table on one server, and their rows.
    async fn partitions(
        &self,
        server: &Server,
        slice: &Slice,
    ) -> Result<Vec<PartitionRow>, StoreError> {
        let sql = format!(
            "SELECT partition, toUInt64(sum(rows)) AS rows FROM system.parts \
             WHERE database = {} AND table = {} AND active GROUP BY partition ORDER BY partition",
            quote_string(&self.database),
            quote_string(&self.local_name(&slice.name)),
        );
        let started = Instant::now();
        let r = server
            .client
            .query_raw(&sql)
            .fetch_all::<PartitionRow>()
            .await
            .map_err(StoreError::from);
        record("retention", started, &r);
        r
    }

    async fn drop_expired(
        &self,
        server: &Server,
        slice: &Slice,
        cutoff: i64,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        for p in self.partitions(server, slice).await? {
            if !retention::partition_expired(slice.partition, &p.partition, cutoff) {
                continue;
            }
            // partition_expired accepted only digits: the id is a numeric literal.
            let sql = format!(
                "ALTER TABLE {}.{} DROP PARTITION {}",
                ident(&self.database),
                ident(&self.local_name(&slice.name)),
                p.partition
            );
            let started = Instant::now();
            let r = server
                .client
                .query_raw(&sql)
                .execute()
                .await
                .map_err(StoreError::from);
            record("retention", started, &r);
            r?;
            tracing::info!(slice = %slice.name, server = %server.url, partition = %p.partition, rows = p.rows, "dropped an expired partition");
            report.dropped.push(retention::DroppedPartition {
                slice: slice.name.clone(),
                server: server.url.clone(),
                partition: p.partition,
                rows: p.rows,
            });
        }
        Ok(())
    }

    /// Average uncompressed bytes per row of the given columns, from table statistics
    /// (on a cluster, of the connected server's share of the rows).
    ///
    /// `system.columns` counts the bytes of *wide* parts only: from 20.x a part smaller
    /// than `min_bytes_for_wide_part` is *compact* (all columns in one file) and reports
    /// 0 per column. The bytes of compact parts are the active parts' total less what
    /// the columns account for, shared among the columns by their typical width.
    /// (A scalar subquery is `Nullable` on current servers, hence the `ifNull`s.)
    pub async fn bytes_per_row(
        &self,
        slice: &str,
        fields: &[String],
        bounds: &Bounds,
    ) -> Result<f64, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Stats {
            name: String,
            #[serde(rename = "type")]
            ty: String,
            bytes: u64,
            part_bytes: u64,
            rows: u64,
        }
        let table = self.local_name(slice);
        let (db, tbl) = (quote_string(&self.database), quote_string(&table));
        let sql = format!(
            "SELECT name, type, toUInt64(data_uncompressed_bytes) AS bytes, \
             toUInt64(ifNull((SELECT sum(data_uncompressed_bytes) FROM system.parts \
             WHERE database = {db} AND table = {tbl} AND active), 0)) AS part_bytes, \
             toUInt64(ifNull((SELECT count() FROM {}.{}), 0)) AS rows \
             FROM system.columns WHERE database = {db} AND table = {tbl}",
            ident(&self.database),
            ident(&table),
        );
        let query = self.bounded_query(&sql, bounds);
        let columns = self
            .bounded("estimate", bounds, async {
                Ok(query.fetch_all::<Stats>().await?)
            })
            .await?;
        let Some(first) = columns.first() else {
            return Ok(0.0);
        };
        if first.rows == 0 {
            return Ok(0.0);
        }
        let in_columns: u64 = columns.iter().map(|c| c.bytes).sum();
        let compact = first.part_bytes.saturating_sub(in_columns) as f64;
        let selected = |c: &Stats| fields.contains(&c.name);
        let mut bytes = columns
            .iter()
            .filter(|c| selected(c))
            .map(|c| c.bytes)
            .sum::<u64>() as f64;
        if compact > 0.0 {
            let types: Vec<(&str, &str)> = columns
                .iter()
                .map(|c| (c.name.as_str(), c.ty.as_str()))
                .collect();
            let widths = self.sampled_widths(&table, &types, bounds).await?;
            let all: f64 = widths.iter().sum();
            if all > 0.0 {
                let chosen: f64 = columns
                    .iter()
                    .zip(&widths)
                    .filter(|(c, _)| selected(c))
                    .map(|(_, w)| w)
                    .sum();
                bytes += compact * chosen / all;
            }
        }
        Ok(bytes / first.rows as f64)
    }

    /// Uncompressed bytes a value of each column takes: a fixed width, or for text
    /// its length byte and the mean length of the first rows (a bounded read).
    async fn sampled_widths(
        &self,
        table: &str,
        columns: &[(&str, &str)],
        bounds: &Bounds,
    ) -> Result<Vec<f64>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Lengths {
            lengths: Vec<f64>,
        }
        let texts: Vec<&str> = columns
            .iter()
            .filter(|(_, ty)| fixed_width(ty).is_none())
            .map(|(name, _)| *name)
            .collect();
        let mut lengths = Vec::new();
        if !texts.is_empty() {
            let sql = format!(
                "SELECT [{}] AS lengths FROM (SELECT {} FROM {}.{} LIMIT {TEXT_SAMPLE_ROWS})",
                texts
                    .iter()
                    .map(|c| format!("toFloat64(avg(length(ifNull({}, ''))))", ident(c)))
                    .collect::<Vec<_>>()
                    .join(", "),
                texts
                    .iter()
                    .map(|c| ident(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                ident(&self.database),
                ident(table),
            );
            let query = self.bounded_query(&sql, bounds);
            lengths = self
                .bounded("estimate", bounds, async {
                    Ok(query.fetch_one::<Lengths>().await?.lengths)
                })
                .await?;
        }
        let mut lengths = lengths.into_iter();
        Ok(columns
            .iter()
            .map(|(_, ty)| match fixed_width(ty) {
                Some(w) => w,
                None => {
                    let mean = lengths.next().filter(|l| l.is_finite()).unwrap_or(0.0);
                    let null_map = if ty.starts_with("Nullable(") {
                        1.0
                    } else {
                        0.0
                    };
                    null_map + 1.0 + mean
                }
            })
            .collect())
    }

    /// The whole JSONEachRow records of a SELECT, at most `max_bytes` of them (a
    /// preview). Reading stops at the bound and the query is killed; the answer keeps
    /// the records that fit whole and says it was cut. Nothing is parsed into values:
    /// each record is only checked to be one JSON object, so an exception the server
    /// appended to a started answer (18.x) is an error, never a record.
    pub async fn json_rows(
        &self,
        sql: &str,
        bounds: &Bounds,
        max_bytes: usize,
    ) -> Result<JsonRows, StoreError> {
        let started = Instant::now();
        let guard = KillOnDrop::new(&self.client, bounds);
        let r = bounds
            .within(self.read_json_rows(sql, bounds, max_bytes))
            .await;
        // A cut answer leaves the query running: the guard kills it.
        guard.settle(
            matches!(&r, Ok(rows) if !rows.truncated)
                || matches!(r, Err(StoreError::Server { .. })),
        );
        record("preview", started, &r);
        r
    }

    async fn read_json_rows(
        &self,
        sql: &str,
        bounds: &Bounds,
        max_bytes: usize,
    ) -> Result<JsonRows, StoreError> {
        let mut cursor = self
            .bounded_query(sql, bounds)
            .with_setting("output_format_json_quote_64bit_integers", "0")
            .with_setting("output_format_json_escape_forward_slashes", "0")
            .fetch_bytes("JSONEachRow")?;
        let mut buf = BytesMut::new();
        let mut truncated = false;
        while let Some(chunk) = cursor.next().await? {
            buf.extend_from_slice(&chunk);
            if buf.len() > max_bytes {
                truncated = true;
                break;
            }
        }
        if truncated {
            // The records that fit whole; what follows is never read.
            let keep = buf[..max_bytes]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            buf.truncate(keep);
        } else if buf.last().is_some_and(|&b| b != b'\n') {
            if let Some(e) = error::exception_in_lines(&buf) {
                return Err(e);
            }
            return Err(StoreError::Unreachable(
                "the result ended inside a record".into(),
            ));
        }
        let rows = JsonRows::check(&buf)?;
        Ok(JsonRows {
            records: buf,
            rows,
            truncated,
        })
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
        let cursor = q.fetch_bytes(format).map_err(StoreError::from);
        let started = Instant::now();
        if let Err(e) = &cursor {
            record::<()>("export", started, &Err(e.clone()));
        }
        Ok(ByteStream {
            cursor: cursor?,
            started,
            done: false,
        })
    }

    /// Runs a `SELECT count()`.
    pub async fn count(&self, sql: &str, bounds: &Bounds) -> Result<u64, StoreError> {
        let sql = sql.replacen("SELECT count()", "SELECT count() AS rows", 1);
        let query = self.bounded_query(&sql, bounds);
        self.bounded("count", bounds, async {
            Ok(query.fetch_one::<CountRow>().await?.rows)
        })
        .await
    }

    /// Rows per hour of the selection's date dimension, in order: where to split a
    /// large export into parallel reads of about equal size.
    pub async fn hour_counts(
        &self,
        sel: &Selection<'_>,
        bounds: &Bounds,
    ) -> Result<Vec<(u32, u64)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct HourRow {
            hour: u32,
            rows: u64,
        }
        let query = self.bounded_query(&sel.hour_counts_sql(), bounds);
        let hours = self
            .bounded("hour_counts", bounds, async {
                Ok(query.fetch_all::<HourRow>().await?)
            })
            .await?;
        Ok(hours.into_iter().map(|h| (h.hour, h.rows)).collect())
    }

    /// A query under `bounds`: its id, and its `max_execution_time` when it has one.
    fn bounded_query(&self, sql: &str, bounds: &Bounds) -> clickhouse::query::Query {
        let mut q = self
            .client
            .query_raw(sql)
            .with_setting("query_id", bounds.query_id());
        if let Some(secs) = bounds.max_execution_secs() {
            q = q.with_setting("max_execution_time", secs.to_string());
        }
        q
    }

    /// Awaits a query made by [`Store::bounded_query`] within its deadline, times it as
    /// `op`, and kills it on the server when the caller stops waiting first (this
    /// future dropped, or the deadline passed).
    async fn bounded<T>(
        &self,
        op: &'static str,
        bounds: &Bounds,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let guard = KillOnDrop::new(&self.client, bounds);
        let r = bounds.within(work).await;
        guard.settle(server_done(&r));
        record(op, started, &r);
        r
    }

    /// Stops running queries whose id starts with `prefix` (used to cancel exports,
    /// which may read with several queries).
    pub async fn kill_queries(&self, prefix: &str) -> Result<(), StoreError> {
        let sql = format!(
            "KILL QUERY WHERE startsWith(query_id, {}) ASYNC",
            quote_string(prefix)
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

/// The formatted bytes of a running SELECT, chunk by chunk. Its duration (to the
/// last chunk) and failure are recorded as an `export` query.
pub struct ByteStream {
    cursor: clickhouse::query::BytesCursor,
    started: Instant,
    done: bool,
}

impl ByteStream {
    pub async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        let r = self.cursor.next().await.map_err(StoreError::from);
        if !self.done && !matches!(r, Ok(Some(_))) {
            self.done = true;
            record("export", self.started, &r);
        }
        r
    }
}

/// Whole JSONEachRow records, each one JSON object on its own line.
#[derive(Debug)]
pub struct JsonRows {
    records: BytesMut,
    pub rows: u64,
    /// More records (or bytes) followed; they were not read.
    pub truncated: bool,
}

impl JsonRows {
    /// Counts the records of `buf`, checking that each is one JSON object (without
    /// building values). A line that is not is the exception an old server appended.
    fn check(buf: &[u8]) -> Result<u64, StoreError> {
        let mut rows = 0;
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let object = line.first() == Some(&b'{')
                && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
            if !object {
                let text = String::from_utf8_lossy(line);
                return Err(match text.find("Code: ") {
                    Some(at) => StoreError::from_exception_text(&text[at..]),
                    None => StoreError::Client(format!(
                        "the server sent a record that is not a JSON object: {}",
                        text.chars().take(200).collect::<String>()
                    )),
                });
            }
            rows += 1;
        }
        Ok(rows)
    }

    /// The records separated by commas: the inside of a JSON array. (JSON escapes a
    /// newline inside a string, so every newline byte ends a record.)
    pub fn into_array_items(self) -> Bytes {
        let mut records = self.records;
        if records.last() == Some(&b'\n') {
            records.truncate(records.len() - 1);
        }
        for b in records.iter_mut() {
            if *b == b'\n' {
                *b = b',';
            }
        }
        records.freeze()
    }
}

/// The `TTL` clause of a table keeping rows `days` after they were received.
fn ttl_clause(days: u32) -> String {
    format!("TTL received_time + toIntervalDay({days})")
}

/// The days of a `TTL received_time + toIntervalDay(N)` in a table's `engine_full`.
fn ttl_days(engine_full: &str) -> Option<u32> {
    let rest = engine_full
        .split("TTL received_time + toIntervalDay(")
        .nth(1)?;
    rest.split(')').next()?.trim().parse().ok()
}

/// Rows whose text lengths stand for a table's in a size estimate.
const TEXT_SAMPLE_ROWS: u64 = 8192;

/// Uncompressed bytes of a value of a fixed-width column type (with its null map);
/// `None` for text, whose width is measured.
fn fixed_width(ty: &str) -> Option<f64> {
    fn width(ty: &ColumnType) -> Option<f64> {
        Some(match ty {
            ColumnType::String | ColumnType::LowCardinalityString => return None,
            ColumnType::UInt8 | ColumnType::Int8 | ColumnType::Enum8(_) => 1.0,
            ColumnType::UInt16 | ColumnType::Int16 | ColumnType::Date => 2.0,
            ColumnType::UInt32 | ColumnType::Int32 | ColumnType::Float32 | ColumnType::DateTime => {
                4.0
            }
            ColumnType::UInt64 | ColumnType::Int64 | ColumnType::Float64 => 8.0,
            ColumnType::Uuid => 16.0,
            ColumnType::Nullable(inner) => 1.0 + width(inner)?,
        })
    }
    // A type the catalog does not make (never in our tables) counts as 8 bytes.
    ColumnType::parse(ty).map_or(Some(8.0), |t| width(&t))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline(major: u32, cluster: bool, retention: RetentionPolicy) -> Store {
        Store {
            client: clickhouse::Client::default(),
            url: "http://127.0.0.1:1".into(),
            database: "logport".into(),
            caps: ServerCaps::from_major(major),
            cluster: cluster.then(|| {
                Arc::new(Cluster {
                    name: "two".into(),
                    servers: Vec::new(),
                })
            }),
            retention: Arc::new(retention),
            http: reqwest::Client::new(),
            user: None,
            password: None,
        }
    }

    #[test]
    fn ttl_only_where_the_server_has_it() {
        let catalog = Catalog::builtin().unwrap();
        let slice = catalog.slice("api_postbacks").unwrap();
        let policy = RetentionPolicy::from_catalog(&catalog);
        let old = offline(18, false, policy.clone()).create_table_sql(slice);
        assert!(!old.contains("TTL"), "{old}");
        assert!(old.starts_with("CREATE TABLE IF NOT EXISTS `logport`.`api_postbacks` ("));
        assert!(old.contains("PARTITION BY toYYYYMMDD(received_time)"));
        let new = offline(24, false, policy).create_table_sql(slice);
        assert!(
            new.contains(") TTL received_time + toIntervalDay(7) SETTINGS index_granularity"),
            "{new}"
        );
        assert_eq!(ttl_days(&new), Some(7));
        assert_eq!(ttl_days("MergeTree PARTITION BY x ORDER BY y"), None);
        assert_eq!(
            ttl_days("MergeTree ORDER BY y TTL received_time + toIntervalDay(30) SETTINGS a = 1"),
            Some(30)
        );
    }

    #[test]
    fn json_records_are_checked_and_joined_without_parsing() {
        let ok = b"{\"a\":1,\"s\":\"x\\ny\"}\n{\"a\":2}\n";
        assert_eq!(JsonRows::check(ok).unwrap(), 2);
        let rows = JsonRows {
            records: BytesMut::from(&ok[..]),
            rows: 2,
            truncated: false,
        };
        let items = rows.into_array_items();
        let array: serde_json::Value =
            serde_json::from_slice(&[b"[", &items[..], b"]"].concat()).unwrap();
        assert_eq!(array, serde_json::json!([{"a": 1, "s": "x\ny"}, {"a": 2}]));
        assert_eq!(JsonRows::check(b"").unwrap(), 0);
        // An exception appended after a record, at a line start or inside a line.
        let appended = b"{\"a\":1}\nCode: 159, e.displayText() = DB::Exception: Timeout exceeded, e.what() = DB::Exception\n";
        assert_eq!(JsonRows::check(appended).unwrap_err().code(), Some(159));
        let inside = b"{\"a\":1,\"b\":Code: 241, e.displayText() = DB::Exception: Memory limit\n";
        assert_eq!(JsonRows::check(inside).unwrap_err().code(), Some(241));
        assert!(matches!(
            JsonRows::check(b"[1,2]\n"),
            Err(StoreError::Client(_))
        ));
        assert!(JsonRows::check(b"{\"a\":\n").is_err());
    }

    #[test]
    fn fixed_widths_of_column_types() {
        assert_eq!(fixed_width("UInt64"), Some(8.0));
        assert_eq!(fixed_width("Nullable(UInt32)"), Some(5.0));
        assert_eq!(fixed_width("Nullable(String)"), None);
        assert_eq!(fixed_width("LowCardinality(String)"), None);
        assert_eq!(fixed_width("Enum8('a' = 1)"), Some(1.0));
        assert_eq!(fixed_width("Array(UInt8)"), Some(8.0));
    }

    #[test]
    fn cluster_tables() {
        let catalog = Catalog::builtin().unwrap();
        let slice = catalog.slice("clicks").unwrap();
        let store = offline(18, true, RetentionPolicy::default());
        assert!(store
            .create_table_sql(slice)
            .starts_with("CREATE TABLE IF NOT EXISTS `logport`.`clicks_local` ("));
        let dist = store.distributed_sql(slice, "two");
        assert!(
            dist.starts_with("CREATE TABLE IF NOT EXISTS `logport`.`clicks` (`tenant_id` String, "),
            "{dist}"
        );
        assert!(
            dist.ends_with(
                "ENGINE = Distributed('two', 'logport', 'clicks_local', \
                 cityHash64(`tenant_id`, toUInt32(`received_time`), `received_ms`))"
            ),
            "{dist}"
        );
    }
}
