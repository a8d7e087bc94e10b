//! Retention: how long each slice keeps its rows, and dropping what expired.
//!
//! A row expires `retention_days` after its `received_time`. Tables are partitioned
//! by day (`toYYYYMMDD(received_time)`) or month (`toYYYYMM(received_time)`), so
//! expiry removes whole partitions with `ALTER TABLE … DROP PARTITION`: cheap (files
//! are unlinked, nothing is rewritten) and available on every server version we
//! support, including 18.16, which has no TTL. A partition is dropped only once it is
//! *entirely* expired (its last second is before the cutoff); rows of a partly
//! expired partition stay on disk until the next run after their partition ends, and
//! every export, preview and count filters them out (`received_time >= cutoff`, see
//! [`crate::Selection`]), so no client ever reads an expired row.
//!
//! Where the server supports TTL (21.x and later here), tables also carry
//! `TTL received_time + toIntervalDay(N)` as a second line of defence; the partition
//! drop stays the mechanism we test and rely on.
//!
//! The days come from the catalog (`retention_days`; `api_postbacks` and
//! `cost_updates` keep 7), can be overridden per slice by configuration, and a
//! default applies to slices the catalog leaves unbounded. 0 means "keep forever".

use std::collections::BTreeMap;

use std::time::Instant;

use logport_catalog::{Catalog, Partition, Slice};
use serde::Deserialize;

use crate::observe::record;
use crate::sql::{ident, quote_string};
use crate::{Server, Store, StoreError};

/// Retention days per slice; a slice without an entry keeps its rows forever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    days: BTreeMap<String, u32>,
}

impl RetentionPolicy {
    /// The catalog's retention, then `default_days` for slices without one, then the
    /// per-slice `overrides` (0: keep forever). An override for a slice the catalog
    /// does not have is an error naming it.
    pub fn new(
        catalog: &Catalog,
        default_days: Option<u32>,
        overrides: &BTreeMap<String, u32>,
    ) -> Result<RetentionPolicy, String> {
        if let Some(name) = overrides.keys().find(|s| catalog.slice(s).is_none()) {
            return Err(format!("retention for unknown slice `{name}`"));
        }
        let mut days = BTreeMap::new();
        for slice in catalog.slices() {
            let d = overrides
                .get(&slice.name)
                .copied()
                .or(slice.retention_days)
                .or(default_days)
                .unwrap_or(0);
            if d > 0 {
                days.insert(slice.name.clone(), d);
            }
        }
        Ok(RetentionPolicy { days })
    }

    /// Only what the catalog says.
    pub fn from_catalog(catalog: &Catalog) -> RetentionPolicy {
        RetentionPolicy::new(catalog, None, &BTreeMap::new()).unwrap_or_default()
    }

    /// Days the slice keeps rows, `None` for forever.
    pub fn days(&self, slice: &str) -> Option<u32> {
        self.days.get(slice).copied()
    }

    /// Rows received before this Unix second have expired (`None`: nothing expires).
    pub fn cutoff(&self, slice: &str, now_secs: i64) -> Option<i64> {
        self.days(slice).map(|d| now_secs - i64::from(d) * 86_400)
    }

    /// Every slice with a bound, and its days.
    pub fn bounded(&self) -> impl Iterator<Item = (&str, u32)> {
        self.days.iter().map(|(s, d)| (s.as_str(), *d))
    }
}

/// The first second after a partition (exclusive end), from its id as
/// `system.parts.partition` prints it: `YYYYMMDD` (day) or `YYYYMM` (month).
pub fn partition_end(partition: Partition, id: &str) -> Option<i64> {
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = id.parse().ok()?;
    let (y, m, d) = match partition {
        Partition::Day if id.len() == 8 => (n / 10_000, n / 100 % 100, n % 100),
        Partition::Month if id.len() == 6 => (n / 100, n % 100, 1),
        _ => return None,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let start = days_from_civil(i64::from(y), m, d);
    let end = match partition {
        Partition::Day => start + 1,
        Partition::Month if m == 12 => days_from_civil(i64::from(y) + 1, 1, 1),
        Partition::Month => days_from_civil(i64::from(y), m + 1, 1),
    };
    Some(end * 86_400)
}

/// Whether every row a partition can hold was received before `cutoff`.
pub fn partition_expired(partition: Partition, id: &str, cutoff: i64) -> bool {
    partition_end(partition, id).is_some_and(|end| end <= cutoff)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One dropped partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedPartition {
    pub slice: String,
    /// The ClickHouse URL of the server it was on (one per shard in a cluster).
    pub server: String,
    pub partition: String,
    pub rows: u64,
}

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub dropped: Vec<DroppedPartition>,
}

impl RetentionReport {
    pub fn rows(&self) -> u64 {
        self.dropped.iter().map(|d| d.rows).sum()
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct PartitionRow {
    partition: String,
    rows: u64,
}

impl Store {
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
            if !partition_expired(slice.partition, &p.partition, cutoff) {
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
            report.dropped.push(DroppedPartition {
                slice: slice.name.clone(),
                server: server.url.clone(),
                partition: p.partition,
                rows: p.rows,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ends() {
        // 2026-11-05 is day 20762.
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 11, 5), 20_762);
        assert_eq!(
            partition_end(Partition::Day, "20261105"),
            Some(20_763 * 86_400)
        );
        assert_eq!(
            partition_end(Partition::Month, "202611"),
            Some(days_from_civil(2026, 12, 1) * 86_400)
        );
        assert_eq!(
            partition_end(Partition::Month, "202612"),
            Some(days_from_civil(2027, 1, 1) * 86_400)
        );
        assert_eq!(
            partition_end(Partition::Month, "202402"),
            Some(days_from_civil(2024, 3, 1) * 86_400)
        );
        for bad in ["", "2026110", "202611051", "2026-11", "20261305", "tuple()"] {
            assert_eq!(partition_end(Partition::Day, bad), None, "{bad}");
        }
        assert_eq!(partition_end(Partition::Month, "20261105"), None);
    }

    #[test]
    fn only_wholly_expired_partitions() {
        let day_end = 20_763 * 86_400; // end of 2026-11-05
        assert!(partition_expired(Partition::Day, "20261105", day_end));
        assert!(!partition_expired(Partition::Day, "20261105", day_end - 1));
        assert!(!partition_expired(Partition::Day, "garbage", i64::MAX));
        let month_end = days_from_civil(2026, 12, 1) * 86_400;
        assert!(!partition_expired(
            Partition::Month,
            "202611",
            month_end - 86_400
        ));
        assert!(partition_expired(Partition::Month, "202611", month_end));
    }

    #[test]
    fn policy_from_catalog_default_and_overrides() {
        let catalog = Catalog::builtin().unwrap();
        let p = RetentionPolicy::from_catalog(&catalog);
        assert_eq!(p.days("api_postbacks"), Some(7));
        assert_eq!(p.days("cost_updates"), Some(7));
        assert_eq!(p.days("clicks"), None);
        assert_eq!(
            p.cutoff("api_postbacks", 700_000),
            Some(700_000 - 7 * 86_400)
        );
        assert_eq!(p.cutoff("clicks", 700_000), None);

        let overrides = BTreeMap::from([("clicks".to_string(), 30), ("cost_updates".into(), 0)]);
        let p = RetentionPolicy::new(&catalog, Some(400), &overrides).unwrap();
        assert_eq!(p.days("clicks"), Some(30));
        assert_eq!(p.days("cost_updates"), None, "0 keeps forever");
        assert_eq!(
            p.days("api_postbacks"),
            Some(7),
            "the catalog beats the default"
        );
        assert_eq!(p.days("events"), Some(400));

        let bad = BTreeMap::from([("nope".to_string(), 3)]);
        let e = RetentionPolicy::new(&catalog, None, &bad).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }
}
