//! `migrate`: one table per slice from the catalog, created or extended, never
//! rewritten; on a cluster a MergeTree table on every server and a Distributed table
//! over them.

use std::time::Instant;

use logport_catalog::{Catalog, Partition, Slice, TENANT_COLUMN};
use serde::Deserialize;

use crate::observe::record;
use crate::server::{ttl_clause, ttl_days};
use crate::sql::{ident, quote_string};
use crate::{Store, StoreError, TextRow, RECEIVED_MS_COLUMN};

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

impl Store {
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
            .map(|f| (f.name.as_str(), self.caps.column_type(&f.ty)))
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
                        // Another process added it first.
                        Err(e) if e.is_duplicate_column() => continue,
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
        for (k, v) in self.caps.ddl_settings() {
            q = q.with_setting(*k, *v);
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
    #[cfg(test)]
    pub(crate) fn create_table_sql(&self, slice: &Slice) -> String {
        self.create_sql_named(slice, &self.local_name(&slice.name))
    }

    fn column_list(&self, slice: &Slice) -> String {
        let mut cols = vec![format!("{} String", ident(TENANT_COLUMN))];
        cols.extend(
            slice
                .fields
                .iter()
                .map(|f| format!("{} {}", ident(&f.name), self.caps.column_type(&f.ty))),
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
        let ttl = match self.caps.ttl_clause(self.retention.days(&slice.name)) {
            Some(clause) => format!(" {clause}"),
            None => String::new(),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline;
    use crate::RetentionPolicy;

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
