//! ClickHouse, and the only crate that knows it: SQL text, settings, format names,
//! server error codes, the Native and RowBinary wire codecs, and what differs between
//! server versions. Crates above speak in typed values.
//!
//! - [`Store::migrate`] creates and extends one table per slice from the catalog.
//! - Ingest rows go in as [`IngestBatch`]es built in Native form ([`IngestBlock`]), each
//!   event stored once ([`insert`]), coalesced by the [`Inserter`].
//! - Reads take a [`Selection`] (one tenant's rows as an export spec selects them):
//!   [`Store::count`], [`Store::preview`], [`Store::hour_counts`], and exports
//!   streamed in a text [`Encoding`] ([`Store::export_stream`], the server's own
//!   bytes) or as Arrow record batches ([`Store::export_batches`]), so no result is
//!   ever materialised here.
//! - Failures are [`StoreError`]s that say whether a retry helps and whether time ran
//!   out; codes stay inside.
//! - What differs between 18.16 (Debian's, used by the tests) and current servers is
//!   in [`server`], chosen once from `version()`; everything else runs as is on both:
//!   no server-side parameters, no RowBinaryWithNamesAndTypes, no TTL-only logic.
//!
//! Retention ([`retention`]) drops whole expired partitions. On a cluster
//! ([`ClusterConfig`]) each slice is a MergeTree table `{slice}_local` on every
//! server plus a `Distributed` table `{slice}` over them: ingest and exports use the
//! Distributed table, DDL and retention go to every server directly (so no
//! ZooKeeper/Keeper is needed for `ON CLUSTER`). Every query is timed and its
//! failures counted by error code (`logport_clickhouse_*` metrics).

pub mod arrow;
mod batch;
pub mod bounds;
pub mod error;
mod estimate;
pub mod insert;
pub mod inserter;
mod migrate;
mod native;
mod observe;
mod query;
mod read;
pub mod retention;
mod rowbinary;
pub mod server;
mod sql;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use bounds::{server_done, KillOnDrop};
use serde::Deserialize;

pub use arrow::{BatchDecoder, DecodeError};
pub use batch::{IngestBatch, IngestBlock};
pub use bounds::Bounds;
pub use error::{trailing_exception, Exception, StoreError, EXCEPTION_HEAD};
pub use inserter::{Inserter, InserterConfig, SubmitError};
pub use logport_catalog::Slice;
pub use migrate::MigrationReport;
use observe::record;
pub use query::Selection;
pub use read::JsonRows;
pub use retention::{RetentionPolicy, RetentionReport};
pub use server::ServerCaps;
pub use sql::is_safe_ident;
use sql::{ident, quote_string};
pub use stream::{BatchStream, ByteStream, Encoding, Framing};

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
        tracing::info!(%version, "connected to clickhouse");
        let cluster = match &cfg.cluster {
            None => None,
            Some(c) => Some(Arc::new(Self::resolve_cluster(&root, cfg, c).await?)),
        };
        Ok(Store {
            client: root,
            url: cfg.url.trim_end_matches('/').to_string(),
            database: cfg.database.clone(),
            caps: ServerCaps::from_version(&version),
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
            legacy_epoch: self.caps.legacy_epoch,
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

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) fn offline(major: u32, cluster: bool, retention: RetentionPolicy) -> Store {
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
