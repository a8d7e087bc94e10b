//! What differs between ClickHouse versions, decided once from the server's
//! `version()` when the store connects. Everything else in this crate runs the same
//! SQL on 18.16 (Debian's, used by the tests) and on current servers.
//!
//! - `LowCardinality(String)`: production-ready from 19.x; experimental on 18.x, so
//!   such columns are plain `String` there (same values, same API type).
//! - Table TTL: from 21.x (`TTL …`, `MODIFY TTL`, `REMOVE TTL`,
//!   `materialize_ttl_after_modify`); older servers rely on dropping partitions.
//! - Compact parts: from 20.x a part below `min_bytes_for_wide_part` keeps all columns
//!   in one file and `system.columns` reports 0 bytes per column for it, so size
//!   estimates share the parts' bytes out among the columns.
//! - The epoch: before 19.x text output prints it as `0000-00-00`.

use logport_catalog::ColumnType;

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
    /// Parts may be compact (20.x on), reporting no per-column sizes.
    pub compact_parts: bool,
    /// Text output prints the epoch as `0000-00-00` (before 19.x).
    pub legacy_epoch: bool,
}

impl ServerCaps {
    pub fn from_major(major: u32) -> ServerCaps {
        ServerCaps {
            major,
            low_cardinality: major >= 19,
            ttl: major >= 21,
            compact_parts: major >= 20,
            legacy_epoch: major < 19,
        }
    }

    /// From `version()`'s text (`18.16.1`, `26.9.2.1`); an unreadable one is taken
    /// for the oldest server.
    pub fn from_version(version: &str) -> ServerCaps {
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        ServerCaps::from_major(major)
    }

    /// A column's type as this server stores it.
    pub(crate) fn column_type(&self, ty: &ColumnType) -> String {
        let text = ty.to_string();
        if self.low_cardinality {
            text
        } else {
            text.replace("LowCardinality(String)", "String")
        }
    }

    /// Settings every DDL statement carries on this server.
    pub(crate) fn ddl_settings(&self) -> &'static [(&'static str, &'static str)] {
        if self.low_cardinality {
            &[]
        } else {
            &[("allow_experimental_low_cardinality_type", "1")]
        }
    }

    /// The `TTL` clause of a table keeping rows `days` after they were received, where
    /// the server has TTL.
    pub(crate) fn ttl_clause(&self, days: Option<u32>) -> Option<String> {
        match days {
            Some(days) if self.ttl => Some(ttl_clause(days)),
            _ => None,
        }
    }
}

pub(crate) fn ttl_clause(days: u32) -> String {
    format!("TTL received_time + toIntervalDay({days})")
}

/// The days of a `TTL received_time + toIntervalDay(N)` in a table's `engine_full`.
pub(crate) fn ttl_days(engine_full: &str) -> Option<u32> {
    let rest = engine_full
        .split("TTL received_time + toIntervalDay(")
        .nth(1)?;
    rest.split(')').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_by_version() {
        let old = ServerCaps::from_version("18.16.1");
        assert!(!old.low_cardinality && !old.ttl && !old.compact_parts && old.legacy_epoch);
        let new = ServerCaps::from_version("26.9.2.1");
        assert!(new.low_cardinality && new.ttl && new.compact_parts && !new.legacy_epoch);
        assert_eq!(ServerCaps::from_version("garbage").major, 0);
        assert_eq!(ttl_days("MergeTree PARTITION BY x ORDER BY y"), None);
        assert_eq!(
            ttl_days("MergeTree ORDER BY y TTL received_time + toIntervalDay(30) SETTINGS a = 1"),
            Some(30)
        );
    }
}
