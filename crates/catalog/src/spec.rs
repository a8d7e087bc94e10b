//! Export requests: the JSON a client sends, and the validated spec a worker runs.
//!
//! Validation happens here, against the catalog, before a job is stored: a spec that
//! passes names only catalog fields, carries typed filter values, and has a half-open
//! UTC time range `[since, until)`. The job store keeps the (normalised) request, and
//! the worker validates it again, so a catalog change can never run a stale spec.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::schema::{Catalog, Slice};
use crate::time::{self, Zone};
use crate::types::TypeFamily;
use crate::value::Value;

/// Most values an `in`/`not_in` filter may list.
pub const MAX_IN_VALUES: usize = 10_000;
/// Most filters one request may carry.
pub const MAX_FILTERS: usize = 100;

/// What went wrong with a request, and which member of it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// The body is not JSON of the right shape (400).
    #[error("{detail}")]
    Malformed {
        field: Option<String>,
        detail: String,
    },
    /// The slice does not exist (404).
    #[error("unknown slice `{0}`")]
    UnknownSlice(String),
    /// Well-formed but not acceptable (422).
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            SpecError::Malformed { field, .. } => field.as_deref(),
            SpecError::UnknownSlice(_) => Some("slice"),
            SpecError::Invalid { field, .. } => Some(field),
        }
    }
}

/// The body of `POST /v1/exports` (and of evaluate and preview). `Default` is an
/// empty request, to build one member by member (it does not validate as it is).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// A slice of `GET /v1/slices` (preview: optional, the path's).
    pub slice: String,
    /// Only this app / workspace (required for tokens limited to apps).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integral::opt_u64"
    )]
    #[schema(nullable = false)]
    pub app_id: Option<u64>,
    /// `YYYY-MM-DD` (a whole day) or an RFC 3339 / `YYYY-MM-DD HH:MM:SS` timestamp.
    #[schema(example = "2026-11-01")]
    pub date_since: String,
    /// Inclusive: `YYYY-MM-DD` (a whole day) or a timestamp.
    #[schema(example = "2026-11-07")]
    pub date_until: String,
    /// `event` (`event_time`, default) or `received` (`received_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub date_dimension: Option<DateDimension>,
    /// How dates are read: `UTC` (default), `+03:00`, `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub timezone: Option<String>,
    /// Catalog fields; default: the slice's default fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fields: Option<Vec<String>>,
    /// At most 100; every one must hold.
    #[serde(default)]
    pub filters: Vec<FilterRequest>,
    /// `csv` (default), `tsv`, `jsonl`, `json` or `parquet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub format: Option<Format>,
    /// `none` (default), `gzip` or `zstd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub compression: Option<Compression>,
    /// Split the result into parts of at most this many rows.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integral::opt_u64"
    )]
    #[schema(nullable = false)]
    pub part_max_rows: Option<u64>,
    /// Split parts once they hold this many (uncompressed) bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integral::opt_u64"
    )]
    #[schema(nullable = false)]
    pub part_max_bytes: Option<u64>,
    /// Start every CSV/TSV part with a UTF-8 byte order mark (for Excel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub utf8_bom: Option<bool>,
    /// `csv`/`tsv` only, off by default: a text value starting with `=`, `+`, `-`,
    /// `@`, a tab or a carriage return gets a leading `'`, so a spreadsheet shows it
    /// as text instead of running it as a formula (CSV injection). Only string fields
    /// change (numbers, dates and enums never do); the file no longer holds the exact
    /// stored text, which is why it is off unless asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub csv_excel_safe: Option<bool>,
    /// At most this many rows (a preview: at most 1,000, default 100).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integral::opt_u64"
    )]
    #[schema(nullable = false)]
    pub limit: Option<u64>,
    /// `json`/`jsonl` only: write every value as a JSON string (`"1.5"`, `""` for
    /// NULL), as AppMetrica's Logs API does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub json_strings: Option<bool>,
    /// Only the rows of one of `count` disjoint buckets (by a hash of `event_id`): the
    /// buckets `0..count` of one request together hold exactly its rows, once each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub bucket: Option<BucketRequest>,
    /// Exactly one file: no splitting, and no parallel reading of a large result
    /// (which otherwise writes one part per reader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub single_file: Option<bool>,
}

/// Integer members that also take a JSON number with a zero fraction (`42.0`): JSON
/// Schema calls that an integer, and some clients (Python's `json`, fuzzers) write it.
mod integral {
    use serde::{de::Error, Deserialize, Deserializer};

    fn whole<E: Error>(n: serde_json::Number, max: u64) -> Result<u64, E> {
        if let Some(u) = n.as_u64() {
            return (u <= max)
                .then_some(u)
                .ok_or_else(|| E::custom(format!("{u} is too large (at most {max})")));
        }
        match n.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= max as f64 && f < u64::MAX as f64 => {
                Ok(f as u64)
            }
            _ => Err(E::custom(format!(
                "invalid type: `{n}`, expected a whole number from 0 to {max}"
            ))),
        }
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(|n| whole(n, u64::MAX))
            .transpose()
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        whole(serde_json::Number::deserialize(d)?, u64::from(u32::MAX)).map(|n| n as u32)
    }
}

/// One bucket of a result split `count` ways (AppMetrica's `parts_count` and
/// `part_number`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketRequest {
    /// 1 to 10,000.
    #[serde(deserialize_with = "integral::u32")]
    pub count: u32,
    /// 0 to `count - 1`.
    #[serde(deserialize_with = "integral::u32")]
    pub number: u32,
}

/// Most buckets a result may be split into.
pub const MAX_BUCKETS: u32 = 10_000;

/// One condition: `{field, op, value}` or `{field, op, values}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterRequest {
    /// A filterable field of the slice.
    pub field: String,
    /// `eq ne in not_in lt lte gt gte between prefix contains is_null not_null`, as
    /// `GET /v1/slices/{slice}` lists per field.
    #[schema(value_type = String)]
    pub op: FilterOp,
    /// The value of a one-value operator, typed as the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>, nullable = false)]
    pub value: Option<Json>,
    /// The values of `in`, `not_in` (at most 10,000) and `between` (two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<serde_json::Value>>, nullable = false)]
    pub values: Option<Vec<Json>>,
}

impl ExportRequest {
    /// Parses a request body, naming the offending member on error.
    ///
    /// A misspelled name (`"format": "xlsx"`, `"op": "like"`) is well-formed JSON
    /// that is not acceptable: 422 with the names it may be, as for any other
    /// unacceptable value, not serde's 400 about an unknown variant.
    pub fn from_json(body: &[u8]) -> Result<Self, SpecError> {
        // serde also reads a struct from a JSON array, member by member in declaration
        // order; a request is an object, so `["clicks", null, …]` is not one.
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(SpecError::Malformed {
                field: None,
                detail: "the body must be a JSON object, not an array".into(),
            });
        }
        parse_json_body(body).map_err(|e| misspelled_name(body, &e).unwrap_or(e))
    }
}

/// The 422 of a member that names one of a fixed set (format, compression, date
/// dimension, filter operator) with a string that is none of them, when `e` is the
/// error serde reported at that member.
fn misspelled_name(body: &[u8], e: &SpecError) -> Option<SpecError> {
    let SpecError::Malformed {
        field: Some(path), ..
    } = e
    else {
        return None;
    };
    let names = match path.as_str() {
        "date_dimension" => names_of(&DateDimension::ALL),
        "format" => names_of(&Format::ALL),
        "compression" => names_of(&Compression::ALL),
        p if p.starts_with("filters[") && p.ends_with("].op") => names_of(&FilterOp::ALL),
        _ => return None,
    };
    // `filters[3].op` → `/filters/3/op`
    let pointer = format!("/{}", path.replace("].", "/").replace('[', "/"));
    let value: Json = serde_json::from_slice(body).ok()?;
    let given = value.pointer(&pointer)?.as_str()?;
    Some(SpecError::invalid(
        path.as_str(),
        format!("`{given}` is not one of {names}"),
    ))
}

fn names_of<T>(all: &[(&str, T)]) -> String {
    all.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Deserialises a JSON body into `T`, turning serde's message into a problem with the
/// path of the offending member (`filters[0].op`).
pub fn parse_json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SpecError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // The path already ends in the member for unknown-field errors.
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        if syntax {
            return SpecError::Malformed {
                field: None,
                detail: format!("the body is not valid JSON: {msg}"),
            };
        }
        let field = (path != "." && !path.is_empty()).then_some(path);
        let detail = msg;
        SpecError::Malformed { field, detail }
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DateDimension {
    /// `event_time`: when it happened.
    #[default]
    Event,
    /// `received_time`: when Logport received it.
    Received,
}

impl DateDimension {
    /// Every dimension under its wire name (as serde spells it).
    pub const ALL: [(&'static str, DateDimension); 2] = [
        ("event", DateDimension::Event),
        ("received", DateDimension::Received),
    ];

    pub fn column(self) -> &'static str {
        match self {
            DateDimension::Event => "event_time",
            DateDimension::Received => "received_time",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Csv,
    Tsv,
    Jsonl,
    Json,
    Parquet,
}

impl Format {
    /// Every format under its wire name (as serde spells it).
    pub const ALL: [(&'static str, Format); 5] = [
        ("csv", Format::Csv),
        ("tsv", Format::Tsv),
        ("jsonl", Format::Jsonl),
        ("json", Format::Json),
        ("parquet", Format::Parquet),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Jsonl => "jsonl",
            Format::Json => "json",
            Format::Parquet => "parquet",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Every compression under its wire name (as serde spells it).
    pub const ALL: [(&'static str, Compression); 3] = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("zstd", Compression::Zstd),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Ne,
    In,
    NotIn,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    Prefix,
    Contains,
    IsNull,
    NotNull,
}

impl FilterOp {
    /// Every operator under its wire name (as serde spells it).
    pub const ALL: [(&'static str, FilterOp); 13] = [
        ("eq", FilterOp::Eq),
        ("ne", FilterOp::Ne),
        ("in", FilterOp::In),
        ("not_in", FilterOp::NotIn),
        ("lt", FilterOp::Lt),
        ("lte", FilterOp::Lte),
        ("gt", FilterOp::Gt),
        ("gte", FilterOp::Gte),
        ("between", FilterOp::Between),
        ("prefix", FilterOp::Prefix),
        ("contains", FilterOp::Contains),
        ("is_null", FilterOp::IsNull),
        ("not_null", FilterOp::NotNull),
    ];

    pub fn name(self) -> &'static str {
        use FilterOp::*;
        match self {
            Eq => "eq",
            Ne => "ne",
            In => "in",
            NotIn => "not_in",
            Lt => "lt",
            Lte => "lte",
            Gt => "gt",
            Gte => "gte",
            Between => "between",
            Prefix => "prefix",
            Contains => "contains",
            IsNull => "is_null",
            NotNull => "not_null",
        }
    }

    /// The operators that make sense for a field's type.
    pub fn valid_for(ty: &crate::types::ColumnType) -> Vec<FilterOp> {
        use FilterOp::*;
        let mut ops = vec![Eq, Ne, In, NotIn];
        match ty.family() {
            TypeFamily::Text => ops.extend([Lt, Lte, Gt, Gte, Between, Prefix, Contains]),
            TypeFamily::Unsigned
            | TypeFamily::Signed
            | TypeFamily::Float
            | TypeFamily::Date
            | TypeFamily::DateTime => ops.extend([Lt, Lte, Gt, Gte, Between]),
            TypeFamily::Uuid | TypeFamily::Enum => {}
        }
        if ty.is_nullable() {
            ops.extend([IsNull, NotNull]);
        }
        ops
    }
}

/// A validated filter: a catalog field, an operator fit for its type, typed values.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: String,
    pub op: FilterOp,
    pub values: Vec<Value>,
}

/// A validated export: everything a worker needs, nothing it must re-check.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSpec {
    pub slice: String,
    pub app_id: Option<u64>,
    pub dimension: DateDimension,
    /// Inclusive lower bound, Unix seconds.
    pub since: i64,
    /// Exclusive upper bound, Unix seconds.
    pub until: i64,
    pub fields: Vec<String>,
    pub filters: Vec<Filter>,
    pub format: Format,
    pub compression: Compression,
    pub part_max_rows: Option<u64>,
    pub part_max_bytes: Option<u64>,
    pub utf8_bom: bool,
    /// Text values that a spreadsheet would run as a formula get a leading `'`
    /// (`csv`/`tsv` only).
    pub csv_excel_safe: bool,
    pub limit: Option<u64>,
    /// Every value as a JSON string (`json`/`jsonl` only).
    pub json_strings: bool,
    /// `(count, number)`: only rows with `hash(event_id) % count = number`.
    pub bucket: Option<(u32, u32)>,
    /// One file only (see [`ExportRequest::single_file`]).
    pub single_file: bool,
}

impl ExportRequest {
    /// Fills every defaulted member, so the stored request says exactly what ran.
    pub fn normalized(&self, catalog: &Catalog) -> ExportRequest {
        let mut r = self.clone();
        if r.fields.is_none() {
            if let Some(slice) = catalog.slice(&r.slice) {
                r.fields = Some(slice.default_fields().map(|f| f.name.clone()).collect());
            }
        }
        r.date_dimension.get_or_insert_with(DateDimension::default);
        r.timezone.get_or_insert_with(|| "UTC".into());
        r.format.get_or_insert_with(Format::default);
        r.compression.get_or_insert_with(Compression::default);
        r
    }

    /// The spec of this request against the catalog, or the first member that is not
    /// acceptable. (Per-tenant quotas such as the longest date range are the API's
    /// business, not validity.)
    pub fn validate(&self, catalog: &Catalog) -> Result<ExportSpec, SpecError> {
        let slice = catalog
            .slice(&self.slice)
            .ok_or_else(|| SpecError::UnknownSlice(self.slice.clone()))?;
        let (since, until) = self.time_range()?;
        let fields = self.checked_fields(slice)?;
        let filters = self.checked_filters(slice)?;
        let encoding = self.checked_encoding()?;
        let bucket = self.checked_bucket()?;
        Ok(ExportSpec {
            slice: slice.name.clone(),
            app_id: self.app_id,
            dimension: self.date_dimension.unwrap_or_default(),
            since,
            until,
            fields,
            filters,
            format: encoding.format,
            compression: encoding.compression,
            part_max_rows: self.part_max_rows,
            part_max_bytes: self.part_max_bytes,
            utf8_bom: encoding.utf8_bom,
            csv_excel_safe: encoding.csv_excel_safe,
            limit: self.limit,
            json_strings: encoding.json_strings,
            bucket,
            single_file: self.single_file.unwrap_or(false),
        })
    }

    /// `[since, until)` in Unix seconds, the dates read in the request's time zone.
    fn time_range(&self) -> Result<(i64, i64), SpecError> {
        let zone = Zone::parse(self.timezone.as_deref().unwrap_or("UTC"))
            .map_err(|d| SpecError::invalid("timezone", d))?;
        let since = parse_bound(&self.date_since, &zone, false)
            .map_err(|d| SpecError::invalid("date_since", d))?;
        let until = parse_bound(&self.date_until, &zone, true)
            .map_err(|d| SpecError::invalid("date_until", d))?;
        if since >= until {
            return Err(SpecError::invalid(
                "date_until",
                format!(
                    "date_since ({}) must not be after date_until ({})",
                    self.date_since, self.date_until
                ),
            ));
        }
        Ok((since, until))
    }

    /// The fields asked for (the slice's defaults when none are), each once.
    fn checked_fields(&self, slice: &Slice) -> Result<Vec<String>, SpecError> {
        let Some(list) = &self.fields else {
            return Ok(slice.default_fields().map(|f| f.name.clone()).collect());
        };
        if list.is_empty() {
            return Err(SpecError::invalid("fields", "name at least one field"));
        }
        let mut out: Vec<String> = Vec::with_capacity(list.len());
        for (i, name) in list.iter().enumerate() {
            if slice.field(name).is_none() {
                return Err(unknown_field(slice, &format!("fields[{i}]"), name));
            }
            if out.contains(name) {
                return Err(SpecError::invalid(
                    format!("fields[{i}]"),
                    format!("`{name}` is listed twice"),
                ));
            }
            out.push(name.clone());
        }
        Ok(out)
    }

    fn checked_filters(&self, slice: &Slice) -> Result<Vec<Filter>, SpecError> {
        if self.filters.len() > MAX_FILTERS {
            return Err(SpecError::invalid(
                "filters",
                format!("at most {MAX_FILTERS} filters"),
            ));
        }
        self.filters
            .iter()
            .enumerate()
            .map(|(i, f)| validate_filter(slice, i, f))
            .collect()
    }

    /// How the file is written: format, compression, part sizes and the options that
    /// apply to some formats only.
    fn checked_encoding(&self) -> Result<Encoding, SpecError> {
        let format = self.format.unwrap_or_default();
        let compression = self.compression.unwrap_or_default();
        if format == Format::Parquet && compression != Compression::None {
            return Err(SpecError::invalid(
                "compression",
                "Parquet compresses inside the file; use compression none",
            ));
        }
        if self.part_max_rows == Some(0) {
            return Err(SpecError::invalid("part_max_rows", "must be at least 1"));
        }
        if self.part_max_bytes.is_some_and(|b| b < 1024) {
            return Err(SpecError::invalid(
                "part_max_bytes",
                "must be at least 1024",
            ));
        }
        let text = matches!(format, Format::Csv | Format::Tsv);
        let utf8_bom = self.utf8_bom.unwrap_or(false);
        if utf8_bom && !text {
            return Err(SpecError::invalid(
                "utf8_bom",
                "a byte order mark applies to csv and tsv only",
            ));
        }
        let csv_excel_safe = self.csv_excel_safe.unwrap_or(false);
        if csv_excel_safe && !text {
            return Err(SpecError::invalid(
                "csv_excel_safe",
                "formula neutralisation applies to csv and tsv only",
            ));
        }
        if self.limit == Some(0) {
            return Err(SpecError::invalid("limit", "must be at least 1"));
        }
        let json_strings = self.json_strings.unwrap_or(false);
        if json_strings && !matches!(format, Format::Json | Format::Jsonl) {
            return Err(SpecError::invalid(
                "json_strings",
                "string values apply to json and jsonl only",
            ));
        }
        Ok(Encoding {
            format,
            compression,
            utf8_bom,
            csv_excel_safe,
            json_strings,
        })
    }

    /// `(count, number)` of a bucket that is not the whole result.
    fn checked_bucket(&self) -> Result<Option<(u32, u32)>, SpecError> {
        match self.bucket {
            None => Ok(None),
            Some(b) if b.count == 0 || b.count > MAX_BUCKETS => Err(SpecError::invalid(
                "bucket.count",
                format!("must be 1 to {MAX_BUCKETS}"),
            )),
            Some(b) if b.number >= b.count => Err(SpecError::invalid(
                "bucket.number",
                format!("must be 0 to {} (below bucket.count)", b.count - 1),
            )),
            // One bucket is the whole result.
            Some(b) if b.count == 1 => Ok(None),
            Some(b) => Ok(Some((b.count, b.number))),
        }
    }
}

/// The checked encoding members of a request.
struct Encoding {
    format: Format,
    compression: Compression,
    utf8_bom: bool,
    csv_excel_safe: bool,
    json_strings: bool,
}

fn unknown_field(slice: &Slice, at: &str, name: &str) -> SpecError {
    SpecError::invalid(
        at,
        format!("`{name}` is not a field of slice `{}`", slice.name),
    )
}

/// A date means a whole local day: `date_since` its start, `date_until` its end.
/// A timestamp is taken as given, and `date_until` includes its second.
fn parse_bound(text: &str, zone: &Zone, upper: bool) -> Result<i64, String> {
    let t = text.trim();
    if t.len() == 10 {
        let date = time::parse_date(t)?;
        let day = if upper {
            date.succ_opt().ok_or("date out of range")?
        } else {
            date
        };
        return Ok(zone.start_of_day(day));
    }
    // A timestamp without an offset is read in the request's time zone.
    let has_offset =
        t.ends_with('Z') || t.ends_with('z') || t.rfind(['+', '-']).is_some_and(|i| i > 10);
    let secs = if has_offset || t.bytes().all(|b| b.is_ascii_digit()) {
        time::parse_timestamp(t)?
    } else {
        let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
            .ok_or_else(|| format!("`{t}` is not a date (YYYY-MM-DD) or timestamp (RFC 3339)"))?;
        time::check_timestamp(zone.local_to_utc(naive))?
    };
    Ok(if upper { secs + 1 } else { secs })
}

fn validate_filter(slice: &Slice, i: usize, f: &FilterRequest) -> Result<Filter, SpecError> {
    let at = |k: &str| format!("filters[{i}].{k}");
    let field = slice
        .field(&f.field)
        .ok_or_else(|| unknown_field(slice, &at("field"), &f.field))?;
    if !field.filterable {
        return Err(SpecError::invalid(
            at("field"),
            format!("`{}` cannot be filtered on", f.field),
        ));
    }
    let op = f.op;
    let valid = FilterOp::valid_for(&field.ty);
    if !valid.contains(&op) {
        let names: Vec<_> = valid.iter().map(|o| o.name()).collect();
        return Err(SpecError::invalid(
            at("op"),
            format!(
                "`{}` does not apply to `{}` ({}); use one of {}",
                op.name(),
                field.name,
                field.ty,
                names.join(", ")
            ),
        ));
    }
    Ok(Filter {
        field: field.name.clone(),
        op,
        values: filter_values(i, f, &field.ty)?,
    })
}

/// The values of filter `i`, as many as its operator takes, typed as its field.
fn filter_values(
    i: usize,
    f: &FilterRequest,
    ty: &crate::types::ColumnType,
) -> Result<Vec<Value>, SpecError> {
    let at = |k: &str| format!("filters[{i}].{k}");
    let op = f.op;
    match op {
        FilterOp::IsNull | FilterOp::NotNull => {
            if f.value.is_some() || f.values.is_some() {
                return Err(SpecError::invalid(
                    at("value"),
                    format!("`{}` takes no value", op.name()),
                ));
            }
            Ok(Vec::new())
        }
        FilterOp::In | FilterOp::NotIn | FilterOp::Between => {
            if f.value.is_some() {
                return Err(SpecError::invalid(
                    at("value"),
                    format!("`{}` takes `values` (a list), not `value`", op.name()),
                ));
            }
            let list = f.values.as_ref().ok_or_else(|| {
                SpecError::invalid(at("values"), format!("`{}` needs `values`", op.name()))
            })?;
            let ok = match op {
                FilterOp::Between => list.len() == 2,
                _ => !list.is_empty() && list.len() <= MAX_IN_VALUES,
            };
            if !ok {
                return Err(SpecError::invalid(
                    at("values"),
                    match op {
                        FilterOp::Between => {
                            "`between` needs exactly two values [low, high]".into()
                        }
                        _ => format!("give between 1 and {MAX_IN_VALUES} values"),
                    },
                ));
            }
            list.iter()
                .enumerate()
                .map(|(j, v)| typed_value(format!("filters[{i}].values[{j}]"), ty, v))
                .collect()
        }
        _ => {
            if f.values.is_some() {
                return Err(SpecError::invalid(
                    at("values"),
                    format!("`{}` takes one `value`, not `values`", op.name()),
                ));
            }
            let v = f.value.as_ref().ok_or_else(|| {
                SpecError::invalid(at("value"), format!("`{}` needs a `value`", op.name()))
            })?;
            Ok(vec![typed_value(at("value"), ty, v)?])
        }
    }
}

/// One filter value (at member `k`) as a value of type `ty`.
fn typed_value(k: String, ty: &crate::types::ColumnType, v: &Json) -> Result<Value, SpecError> {
    if v.is_null() {
        return Err(SpecError::invalid(
            k,
            "null is not a filter value; use is_null or not_null",
        ));
    }
    let value = Value::from_json(ty, v).map_err(|d| SpecError::invalid(&k, d))?;
    // ClickHouse 18.16 cannot parse a subnormal literal (5e-324 is a syntax error,
    // and '5e-324' reads as 0), so such a value could only fail or mislead.
    if let Value::Float(x) = value {
        if x != 0.0 && !x.is_normal() {
            return Err(SpecError::invalid(
                k,
                format!(
                    "{x:e} is too close to zero to compare with; use 0 or a number of \
                     magnitude at least {:e}",
                    f64::MIN_POSITIVE
                ),
            ));
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &str = r#"
name = "clicks"
description = "Clicks"
group = "ad_tracking"
partition = "day"

[[fields]]
name = "country"
type = "LowCardinality(String)"
description = "Country"
filterable = true
default = true

[[fields]]
name = "cost"
type = "Float64"
description = "Cost"
filterable = true
default = true

[[fields]]
name = "lp_click_time"
type = "Nullable(DateTime)"
description = "LP click"
filterable = true
default = false

[[fields]]
name = "user_agent"
type = "String"
description = "UA"
filterable = false
default = false
"#;

    fn catalog() -> Catalog {
        Catalog::from_files([("clicks.toml".into(), SCHEMA.into())]).unwrap()
    }

    fn req(v: Json) -> Result<ExportSpec, SpecError> {
        let r = ExportRequest::from_json(v.to_string().as_bytes())?;
        r.validate(&catalog())
    }

    fn base() -> Json {
        json!({"slice": "clicks", "date_since": "2026-11-01", "date_until": "2026-11-07"})
    }

    fn with(extra: Json) -> Json {
        let mut b = base();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    }

    fn err_field(v: Json) -> String {
        req(v).unwrap_err().field().unwrap_or("-").to_string()
    }

    #[test]
    fn defaults_and_date_bounds() {
        let s = req(base()).unwrap();
        assert_eq!(s.fields, ["app_id", "event_time", "country", "cost"]);
        assert_eq!(s.since, 1_793_491_200); // 2026-11-01T00:00:00Z
        assert_eq!(s.until, 1_793_491_200 + 7 * 86_400);
        assert_eq!(s.format, Format::Csv);
        assert_eq!(s.dimension, DateDimension::Event);

        let s = req(with(json!({"date_since": "2026-11-01T10:00:00Z",
            "date_until": "2026-11-01 11:00:00", "timezone": "+01:00"})))
        .unwrap();
        assert_eq!(s.since, 1_793_491_200 + 10 * 3600);
        assert_eq!(s.until, 1_793_491_200 + 10 * 3600 + 1);
    }

    #[test]
    fn every_filter_op() {
        let f = json!([
            {"field": "country", "op": "eq", "value": "US"},
            {"field": "country", "op": "ne", "value": "x'); DROP TABLE t; --"},
            {"field": "country", "op": "in", "values": ["US", "DE"]},
            {"field": "country", "op": "not_in", "values": ["RU"]},
            {"field": "cost", "op": "lt", "value": 5},
            {"field": "cost", "op": "lte", "value": "5.5"},
            {"field": "cost", "op": "gt", "value": 0},
            {"field": "cost", "op": "gte", "value": 0},
            {"field": "cost", "op": "between", "values": [0, 10]},
            {"field": "country", "op": "prefix", "value": "U"},
            {"field": "country", "op": "contains", "value": "S"},
            {"field": "lp_click_time", "op": "is_null"},
            {"field": "lp_click_time", "op": "not_null"},
            {"field": "event_time", "op": "gte", "value": "2026-11-02T00:00:00Z"}
        ]);
        let s = req(with(json!({ "filters": f }))).unwrap();
        assert_eq!(s.filters.len(), 14);
        assert_eq!(s.filters[4].values, [Value::Float(5.0)]);
    }

    #[test]
    fn errors_name_the_member() {
        assert_eq!(err_field(with(json!({"fields": ["nope"]}))), "fields[0]");
        assert_eq!(err_field(with(json!({"fields": []}))), "fields");
        assert_eq!(
            err_field(with(json!({"fields": ["cost", "cost"]}))),
            "fields[1]"
        );
        assert_eq!(
            err_field(with(json!({"date_since": "2026-13-01"}))),
            "date_since"
        );
        assert_eq!(
            err_field(with(json!({"date_since": "2026-11-09"}))),
            "date_until"
        );

        assert_eq!(
            err_field(with(json!({"date_dimension": "x"}))),
            "date_dimension"
        );
        assert_eq!(err_field(with(json!({"timezone": "Nowhere"}))), "timezone");
        assert_eq!(err_field(with(json!({"format": "xls"}))), "format");
        assert_eq!(
            err_field(with(json!({"compression": "rar"}))),
            "compression"
        );
        assert_eq!(
            err_field(with(json!({"part_max_rows": 0}))),
            "part_max_rows"
        );
        assert_eq!(
            err_field(with(json!({"part_max_bytes": 10}))),
            "part_max_bytes"
        );
        assert_eq!(
            err_field(with(json!({"utf8_bom": true, "format": "jsonl"}))),
            "utf8_bom"
        );
        assert_eq!(err_field(with(json!({"limit": 0}))), "limit");
        assert_eq!(
            err_field(with(json!({"json_strings": true}))),
            "json_strings"
        );
        for format in ["jsonl", "json"] {
            assert_eq!(
                err_field(with(json!({"csv_excel_safe": true, "format": format}))),
                "csv_excel_safe"
            );
        }
        assert_eq!(
            err_field(with(json!({"csv_excel_safe": "yes"}))),
            "csv_excel_safe"
        );
        assert_eq!(
            err_field(with(json!({"bucket": {"count": 0, "number": 0}}))),
            "bucket.count"
        );
        assert_eq!(
            err_field(with(json!({"bucket": {"count": 3, "number": 3}}))),
            "bucket.number"
        );
        assert_eq!(
            err_field(with(json!({"bucket": {"count": 3, "number": 0, "x": 1}}))),
            "bucket.x"
        );
        assert_eq!(err_field(with(json!({"colour": 1}))), "colour");
        assert_eq!(err_field(with(json!({"app_id": "x"}))), "app_id");
        assert_eq!(err_field(with(json!({"app_id": -1}))), "app_id");
        let fe = |f: Json| err_field(with(json!({ "filters": [f] })));
        assert_eq!(
            fe(json!({"field": "nope", "op": "eq", "value": 1})),
            "filters[0].field"
        );
        assert_eq!(
            fe(json!({"field": "user_agent", "op": "eq", "value": "x"})),
            "filters[0].field"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "like", "value": 1})),
            "filters[0].op"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "prefix", "value": "1"})),
            "filters[0].op"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "is_null"})),
            "filters[0].op"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "eq", "value": "abc"})),
            "filters[0].value"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "gt", "value": 5e-324})),
            "filters[0].value"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "between", "values": [0, "1e-310"]})),
            "filters[0].values[1]"
        );
        assert_eq!(fe(json!({"field": "cost", "op": "eq"})), "filters[0].value");
        assert_eq!(
            fe(json!({"field": "cost", "op": "eq", "value": null})),
            "filters[0].value"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "in", "values": []})),
            "filters[0].values"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "in", "value": 1})),
            "filters[0].value"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "between", "values": [1]})),
            "filters[0].values"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "in", "values": [1, "x"]})),
            "filters[0].values[1]"
        );
        assert_eq!(
            fe(json!({"field": "cost", "op": "eq", "value": 1, "extra": 2})),
            "filters[0].extra"
        );
        assert!(matches!(
            req(with(json!({"slice": "nope"}))),
            Err(SpecError::UnknownSlice(_))
        ));
        assert!(matches!(
            ExportRequest::from_json(b"{\"slice\": "),
            Err(SpecError::Malformed { field: None, .. })
        ));
        assert!(matches!(
            ExportRequest::from_json(b"[1]"),
            Err(SpecError::Malformed { .. })
        ));
        assert!(matches!(
            ExportRequest::from_json(br#" ["clicks", null, "2026-11-01", "2026-11-07"]"#),
            Err(SpecError::Malformed { field: None, .. })
        ));
    }

    #[test]
    fn strings_and_buckets() {
        let s = req(with(json!({"format": "json", "json_strings": true,
            "bucket": {"count": 4, "number": 3}})))
        .unwrap();
        assert!(s.json_strings);
        assert_eq!(s.bucket, Some((4, 3)));
        let whole = req(with(json!({"bucket": {"count": 1, "number": 0}}))).unwrap();
        assert_eq!(whole.bucket, None);
        assert!(!req(base()).unwrap().json_strings);
    }

    #[test]
    fn csv_excel_safe_is_off_by_default_and_for_csv_and_tsv() {
        assert!(!req(base()).unwrap().csv_excel_safe);
        for format in ["csv", "tsv"] {
            let s = req(with(json!({"format": format, "csv_excel_safe": true}))).unwrap();
            assert!(s.csv_excel_safe, "{format}");
        }
        assert!(
            !req(with(json!({"format": "json", "csv_excel_safe": false})))
                .unwrap()
                .csv_excel_safe
        );
    }

    #[test]
    fn normalized_fills_defaults() {
        let r: ExportRequest = serde_json::from_value(base()).unwrap();
        let n = r.normalized(&catalog());
        assert_eq!(n.format, Some(Format::Csv));
        assert_eq!(n.fields.as_ref().unwrap().len(), 4);
        assert_eq!(n.validate(&catalog()), r.validate(&catalog()));
    }

    #[test]
    fn names_are_spelled_as_serde_spells_them() {
        fn check<T>(all: &[(&str, T)], name: fn(T) -> &'static str)
        where
            T: Copy + PartialEq + std::fmt::Debug + Serialize + serde::de::DeserializeOwned,
        {
            for (n, v) in all {
                assert_eq!(name(*v), *n);
                assert_eq!(serde_json::to_value(v).unwrap(), json!(n));
                assert_eq!(serde_json::from_value::<T>(json!(n)).unwrap(), *v);
            }
        }
        check(&Format::ALL, Format::name);
        check(&Compression::ALL, Compression::name);
        check(&FilterOp::ALL, FilterOp::name);
        check(&DateDimension::ALL, |d| match d {
            DateDimension::Event => "event",
            DateDimension::Received => "received",
        });
    }

    #[test]
    fn misspelled_names_are_unacceptable_values_not_malformed_bodies() {
        let invalid = |v: Json| match req(v) {
            Err(SpecError::Invalid { field, detail }) => (field, detail),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            invalid(with(json!({"format": "xlsx"}))),
            (
                "format".into(),
                "`xlsx` is not one of csv, tsv, jsonl, json, parquet".into()
            )
        );
        assert_eq!(invalid(with(json!({"format": "CSV"}))).0, "format");
        assert_eq!(
            invalid(with(json!({"compression": "rar"}))).1,
            "`rar` is not one of none, gzip, zstd"
        );
        assert_eq!(
            invalid(with(json!({"date_dimension": "arrival"}))).1,
            "`arrival` is not one of event, received"
        );
        let filters = json!([{"field": "cost", "op": "gt", "value": 0},
            {"field": "cost", "op": "like", "value": 1}]);
        let (field, detail) = invalid(with(json!({ "filters": filters })));
        assert_eq!(field, "filters[1].op");
        assert!(
            detail.starts_with("`like` is not one of eq, ne, in, not_in,"),
            "{detail}"
        );
        // Not a string at all: the body is malformed, as before.
        for bad in [
            json!({"format": 5}),
            json!({"filters": [{"field": "cost", "op": 1}]}),
        ] {
            assert!(
                matches!(req(with(bad.clone())), Err(SpecError::Malformed { .. })),
                "{bad}"
            );
        }
        // Parquet is always available.
        assert_eq!(
            req(with(json!({"format": "parquet"}))).unwrap().format,
            Format::Parquet
        );
    }
}

#[cfg(test)]
mod integral_tests {
    use super::*;

    #[test]
    fn integer_members_take_whole_floats_only() {
        let r = ExportRequest::from_json(
            br#"{"slice":"clicks","date_since":"2026-11-01","date_until":"2026-11-01",
                "app_id":42.0,"limit":7,"bucket":{"count":4.0,"number":1}}"#,
        )
        .unwrap();
        assert_eq!((r.app_id, r.limit), (Some(42), Some(7)));
        assert_eq!(
            r.bucket,
            Some(BucketRequest {
                count: 4,
                number: 1
            })
        );
        for bad in [
            r#""app_id":4.5"#,
            r#""app_id":-1"#,
            r#""app_id":"7""#,
            r#""limit":1e300"#,
            r#""bucket":{"count":4294967296,"number":0}"#,
        ] {
            let body = format!(
                r#"{{"slice":"clicks","date_since":"2026-11-01","date_until":"2026-11-01",{bad}}}"#
            );
            let e = ExportRequest::from_json(body.as_bytes()).unwrap_err();
            assert!(matches!(e, SpecError::Malformed { .. }), "{bad}: {e:?}");
        }
        let r = ExportRequest::from_json(
            br#"{"slice":"clicks","date_since":"2026-11-01","date_until":"2026-11-01","app_id":null}"#,
        )
        .unwrap();
        assert_eq!(r.app_id, None);
    }
}
