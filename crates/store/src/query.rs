//! SELECT statements for exports, previews and estimates.
//!
//! Every statement starts from the same WHERE clause: the caller's tenant (always),
//! the app (when given), the time range on the chosen dimension, the ingest watermark
//! (when given), the retention cutoff (for slices that expire rows), then the filters. Column names come from the validated spec, values
//! through [`crate::sql::literal`]; nothing else from the request reaches the text.

use logport_catalog::{ColumnType, ExportSpec, Filter, FilterOp, Slice, TENANT_COLUMN};

use crate::RECEIVED_MS_COLUMN;

use crate::sql::{ident, literal, quote_string};

/// First characters that make a spreadsheet read a cell as a formula.
const FORMULA_LEADS: [&str; 6] = ["=", "+", "-", "@", "\t", "\r"];

/// What a query reads: one tenant's rows of one slice, as an export spec selects them.
/// Made by [`crate::Store::select`], which knows the server; read by the store's
/// typed queries ([`crate::Store::count`], [`crate::Store::preview`], exports).
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub(crate) database: &'a str,
    pub(crate) slice: &'a Slice,
    pub(crate) tenant: &'a str,
    pub(crate) spec: &'a ExportSpec,
    /// Only rows received at or before this Unix millisecond: the export's ingest
    /// watermark (the job's creation time).
    pub(crate) watermark_ms: Option<i64>,
    /// Only rows received at or after this Unix second: older ones have expired
    /// (retention), even while their partition awaits the next drop.
    pub(crate) retention_cutoff: Option<i64>,
    /// The server prints the epoch as `0000-00-00` (ClickHouse before 19.x); text
    /// output spells it `1970-01-01` like current servers.
    pub(crate) legacy_epoch: bool,
}

impl<'a> Selection<'a> {
    /// Only rows received at or before this Unix millisecond (an export's watermark).
    pub fn with_watermark(self, ms: i64) -> Selection<'a> {
        Selection {
            watermark_ms: Some(ms),
            ..self
        }
    }

    /// The same tenant, slice and bounds, as another spec selects (one time range of
    /// a split export).
    pub fn with_spec(self, spec: &'a ExportSpec) -> Selection<'a> {
        Selection { spec, ..self }
    }

    pub fn spec(&self) -> &'a ExportSpec {
        self.spec
    }

    pub fn slice(&self) -> &'a Slice {
        self.slice
    }

    pub fn tenant(&self) -> &'a str {
        self.tenant
    }
}

impl Selection<'_> {
    pub(crate) fn table(&self) -> String {
        format!("{}.{}", ident(self.database), ident(&self.slice.name))
    }

    pub(crate) fn where_sql(&self) -> String {
        let spec = self.spec;
        let dim = ident(spec.dimension.column());
        let mut conds = vec![format!(
            "{} = {}",
            ident(TENANT_COLUMN),
            quote_string(self.tenant)
        )];
        if let Some(app) = spec.app_id {
            conds.push(format!("{} = {app}", ident("app_id")));
        }
        // The day bounds let the primary key (…, toDate(event_time), …) prune granules;
        // the second bounds make the range exact.
        let first_day = spec.since.div_euclid(86_400);
        let last_day = (spec.until - 1).div_euclid(86_400);
        conds.push(format!(
            "toDate({dim}) >= {} AND toDate({dim}) <= {}",
            literal(&logport_catalog::Value::Date(first_day as u16)),
            literal(&logport_catalog::Value::Date(last_day as u16)),
        ));
        conds.push(format!(
            "{dim} >= toDateTime({}) AND {dim} < toDateTime({})",
            spec.since, spec.until
        ));
        if let Some(ms) = self.watermark_ms {
            // received_time has whole seconds; received_ms orders rows within one.
            let (sec, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
            let rt = ident("received_time");
            conds.push(format!(
                "{rt} < toDateTime({sec}) OR ({rt} = toDateTime({sec}) AND {} <= {milli})",
                ident(RECEIVED_MS_COLUMN)
            ));
        }
        if let Some(cutoff) = self.retention_cutoff {
            conds.push(format!(
                "{} >= toDateTime({cutoff})",
                ident("received_time")
            ));
        }
        conds.extend(spec.filters.iter().map(filter_sql));
        if let Some((count, number)) = spec.bucket {
            // 18.16's cityHash64 takes no UUID, so the hash is of its text: the same
            // split on every server version.
            conds.push(format!(
                "cityHash64(toString({})) % {count} = {number}",
                ident("event_id")
            ));
        }
        conds
            .into_iter()
            .map(|c| format!("({c})"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn columns(&self) -> String {
        self.spec
            .fields
            .iter()
            .map(|f| ident(f))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The export in the columns' own types (for RowBinary): the chosen columns,
    /// unordered (ClickHouse streams in storage order, which keeps memory flat), capped
    /// by the spec's `limit`.
    pub(crate) fn export_sql(&self) -> String {
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {}",
            self.columns(),
            self.table(),
            self.where_sql()
        );
        if let Some(limit) = self.spec.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }

    /// The export for a text format: [`Self::export_sql`] with the text each column
    /// should print as. With `json_strings` every column becomes its text (NULL an
    /// empty string); on old servers an epoch date prints as 1970-01-01. Both happen
    /// in an outer SELECT: an alias named like its column would otherwise change what
    /// the WHERE compares.
    pub(crate) fn text_export_sql(&self) -> String {
        self.outer_with(self.export_sql(), self.spec.csv_excel_safe)
    }

    fn outer(&self, inner: String) -> String {
        self.outer_with(inner, false)
    }

    /// With `excel_safe` (`csv_excel_safe`, exports only), a text column's value that a
    /// spreadsheet would take for a formula (first character `=`, `+`, `-`, `@`, tab or
    /// carriage return, as OWASP's CSV injection guidance lists them) gets a leading
    /// `'`; NULL stays NULL and other types are never touched.
    fn outer_with(&self, inner: String, excel_safe: bool) -> String {
        let mut changed = false;
        let exprs: Vec<String> = self
            .spec
            .fields
            .iter()
            .map(|f| {
                let col = ident(f);
                let ty = self.slice.field(f).map(|fd| &fd.ty);
                let nullable = ty.is_some_and(ColumnType::is_nullable);
                let epoch = match ty.map(ColumnType::base) {
                    Some(ColumnType::Date) if self.legacy_epoch => {
                        Some(("toDate(0)", "1970-01-01"))
                    }
                    Some(ColumnType::DateTime) if self.legacy_epoch => {
                        Some(("toDateTime(0)", "1970-01-01 00:00:00"))
                    }
                    _ => None,
                };
                let text = match epoch {
                    Some((zero, shown)) => {
                        format!(
                            "if({col} = {zero}, {}, toString({col}))",
                            quote_string(shown)
                        )
                    }
                    None => format!("toString({col})"),
                };
                let text_family =
                    ty.is_some_and(|t| t.family() == logport_catalog::TypeFamily::Text);
                if excel_safe && text_family {
                    changed = true;
                    let leading = FORMULA_LEADS
                        .iter()
                        .map(|c| quote_string(c))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return format!(
                        "if(substring({col}, 1, 1) IN ({leading}), concat({}, {col}), {col}) AS {col}",
                        quote_string("'")
                    );
                }
                if self.spec.json_strings {
                    changed = true;
                    if nullable {
                        format!("ifNull({text}, '') AS {col}")
                    } else {
                        format!("{text} AS {col}")
                    }
                } else if epoch.is_some() {
                    changed = true;
                    format!("{text} AS {col}")
                } else {
                    col
                }
            })
            .collect();
        if changed {
            format!("SELECT {} FROM ({inner})", exprs.join(", "))
        } else {
            inner
        }
    }

    /// The newest matching rows, for the preview table.
    pub(crate) fn preview_sql(&self, limit: u64) -> String {
        self.outer(format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {} DESC LIMIT {limit}",
            self.columns(),
            self.table(),
            self.where_sql(),
            ident(self.spec.dimension.column()),
        ))
    }

    /// Rows per hour of the date dimension (`hour` as Unix seconds, `rows`).
    pub(crate) fn hour_counts_sql(&self) -> String {
        format!(
            "SELECT toUInt32(toStartOfHour({})) AS hour, count() AS rows FROM {} WHERE {} \
             GROUP BY hour ORDER BY hour",
            ident(self.spec.dimension.column()),
            self.table(),
            self.where_sql()
        )
    }

    /// The rows selected (`rows`).
    pub(crate) fn count_sql(&self) -> String {
        format!(
            "SELECT count() AS rows FROM {} WHERE {}",
            self.table(),
            self.where_sql()
        )
    }
}

fn filter_sql(f: &Filter) -> String {
    let col = ident(&f.field);
    let v = |i: usize| {
        f.values
            .get(i)
            .map(literal)
            .unwrap_or_else(|| "NULL".into())
    };
    let list = || f.values.iter().map(literal).collect::<Vec<_>>().join(", ");
    match f.op {
        FilterOp::Eq => format!("{col} = {}", v(0)),
        FilterOp::Ne => format!("{col} != {}", v(0)),
        FilterOp::In => format!("{col} IN ({})", list()),
        FilterOp::NotIn => format!("{col} NOT IN ({})", list()),
        FilterOp::Lt => format!("{col} < {}", v(0)),
        FilterOp::Lte => format!("{col} <= {}", v(0)),
        FilterOp::Gt => format!("{col} > {}", v(0)),
        FilterOp::Gte => format!("{col} >= {}", v(0)),
        FilterOp::Between => format!("{col} >= {} AND {col} <= {}", v(0), v(1)),
        FilterOp::Prefix => format!("startsWith({col}, {})", v(0)),
        FilterOp::Contains => format!("position({col}, {}) > 0", v(0)),
        FilterOp::IsNull => format!("isNull({col})"),
        FilterOp::NotNull => format!("isNotNull({col})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logport_catalog::{Catalog, ExportRequest};

    const SCHEMA: &str = r#"
name = "clicks"
description = "Clicks"
group = "ad_tracking"
partition = "day"
[[fields]]
name = "country"
type = "String"
description = "Country"
filterable = true
default = true
"#;

    #[test]
    fn builds_a_scoped_statement() {
        let catalog = Catalog::from_files([("clicks.toml".into(), SCHEMA.into())]).unwrap();
        let req = ExportRequest::from_json(
            br#"{"slice":"clicks","app_id":7,"date_since":"2026-11-01","date_until":"2026-11-01",
                "fields":["country"],"limit":10,
                "filters":[{"field":"country","op":"in","values":["US","x') OR 1=1 --"]}]}"#,
        )
        .unwrap();
        let spec = req.validate(&catalog).unwrap();
        let sel = Selection {
            database: "logport",
            slice: catalog.slice("clicks").unwrap(),
            tenant: "acme'",
            spec: &spec,
            watermark_ms: Some(1_793_500_000_250),
            retention_cutoff: Some(1_792_900_000),
            legacy_epoch: true,
        };
        assert_eq!(
            sel.export_sql(),
            "SELECT `country` FROM `logport`.`clicks` WHERE (`tenant_id` = 'acme\\'') \
             AND (`app_id` = 7) \
             AND (toDate(`event_time`) >= toDate('2026-11-01') AND toDate(`event_time`) <= toDate('2026-11-01')) \
             AND (`event_time` >= toDateTime(1793491200) AND `event_time` < toDateTime(1793577600)) \
             AND (`received_time` < toDateTime(1793500000) OR (`received_time` = toDateTime(1793500000) AND `received_ms` <= 250)) \
             AND (`received_time` >= toDateTime(1792900000)) \
             AND (`country` IN ('US', 'x\\') OR 1=1 --')) LIMIT 10"
        );
    }

    #[test]
    fn buckets_and_string_values() {
        let catalog = Catalog::from_files([("clicks.toml".into(), SCHEMA.into())]).unwrap();
        let req = ExportRequest::from_json(
            br#"{"slice":"clicks","date_since":"2026-11-01","date_until":"2026-11-01",
                "fields":["country","app_id"],"format":"json","json_strings":true,
                "bucket":{"count":3,"number":2}}"#,
        )
        .unwrap();
        let spec = req.validate(&catalog).unwrap();
        let sel = Selection {
            database: "logport",
            slice: catalog.slice("clicks").unwrap(),
            tenant: "acme",
            spec: &spec,
            watermark_ms: None,
            retention_cutoff: None,
            legacy_epoch: false,
        };
        let sql = sel.text_export_sql();
        assert!(
            sql.starts_with(
                "SELECT toString(`country`) AS `country`, toString(`app_id`) AS `app_id` \
                 FROM (SELECT `country`, `app_id` FROM `logport`.`clicks` WHERE "
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with("AND (cityHash64(toString(`event_id`)) % 3 = 2))"),
            "{sql}"
        );
        assert!(sel
            .count_sql()
            .ends_with("AND (cityHash64(toString(`event_id`)) % 3 = 2)"));
    }
    #[test]
    fn excel_safe_text_prefixes_formula_leads_in_text_columns_only() {
        let catalog = Catalog::from_files([("clicks.toml".into(), SCHEMA.into())]).unwrap();
        let req = ExportRequest::from_json(
            br#"{"slice":"clicks","date_since":"2026-11-01","date_until":"2026-11-01",
                "fields":["country","app_id"],"format":"csv","csv_excel_safe":true}"#,
        )
        .unwrap();
        let spec = req.validate(&catalog).unwrap();
        let sel = Selection {
            database: "logport",
            slice: catalog.slice("clicks").unwrap(),
            tenant: "acme",
            spec: &spec,
            watermark_ms: None,
            retention_cutoff: None,
            legacy_epoch: false,
        };
        let sql = sel.text_export_sql();
        assert!(
            sql.starts_with(
                "SELECT if(substring(`country`, 1, 1) IN ('=', '+', '-', '@', '\\x09', '\\x0D'), \
                 concat('\\'', `country`), `country`) AS `country`, `app_id` \
                 FROM (SELECT `country`, `app_id` FROM `logport`.`clicks` WHERE "
            ),
            "{sql}"
        );
        // Previews and the Parquet (RowBinary) query are never rewritten.
        assert!(!sel.preview_sql(5).contains("concat"));
        assert!(!sel.export_sql().contains("concat"));
    }
}
