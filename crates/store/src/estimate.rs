//! Size estimates from table statistics, for `evaluate` and quotas.

use logport_catalog::ColumnType;
use serde::Deserialize;

use crate::sql::{ident, quote_string};
use crate::{Bounds, Store, StoreError};

impl Store {
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
        if compact > 0.0 && self.caps.compact_parts {
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
            let bounds = &bounds.next("sample");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_widths_of_column_types() {
        assert_eq!(fixed_width("UInt64"), Some(8.0));
        assert_eq!(fixed_width("Nullable(UInt32)"), Some(5.0));
        assert_eq!(fixed_width("Nullable(String)"), None);
        assert_eq!(fixed_width("LowCardinality(String)"), None);
        assert_eq!(fixed_width("Enum8('a' = 1)"), Some(1.0));
        assert_eq!(fixed_width("Array(UInt8)"), Some(8.0));
    }
}
