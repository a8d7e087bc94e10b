//! Loading and validating `schemas/*.toml`, the single source of truth for slices.
//!
//! A schema file names a slice and lists only the slice's own fields; the common
//! fields every slice has (`app_id`, `event_id`, `event_time`, `received_time`, and the
//! internal `tenant_id`) are added here, so they cannot drift between slices. Every
//! problem is reported as `file: key: message`, and start-up stops on the first one.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use serde::Deserialize;

use crate::types::ColumnType;

/// The internal tenant column: never ingested from the body, never exported as a field.
pub const TENANT_COLUMN: &str = "tenant_id";

/// Names no schema file may declare, because the catalog owns them (`received_ms`
/// is the store's internal sub-second receive order).
pub const COMMON_FIELDS: [&str; 6] = [
    TENANT_COLUMN,
    "app_id",
    "event_id",
    "event_time",
    "received_time",
    "received_ms",
];

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct SchemaError {
    pub file: String,
    pub key: String,
    pub message: String,
}

/// How a slice's table is partitioned (by `received_time`, so retention can drop whole
/// partitions and an ingest batch lands in exactly one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    Day,
    Month,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: ColumnType,
    pub description: String,
    /// May be used in export filters.
    pub filterable: bool,
    /// Exported when a request names no fields.
    pub default: bool,
    /// An ingest line without it is rejected.
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct Slice {
    pub name: String,
    pub description: String,
    pub group: String,
    pub retention_days: Option<u32>,
    pub partition: Partition,
    /// Columns after the fixed `(tenant_id, app_id, toDate(event_time))` prefix.
    pub sort_key: Vec<String>,
    /// Public fields in catalog order: common fields first, then the file's own.
    pub fields: Vec<Field>,
    index: HashMap<String, usize, BuildHasherDefault<Fnv1a>>,
}

impl Slice {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.index.get(name).map(|&i| &self.fields[i])
    }

    /// Position of a field in [`Slice::fields`].
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn default_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.default)
    }

    /// The fields that make two rows of a tenant the same event: `app_id`,
    /// `event_time`, the sort key and `event_id`. Ingest stores such a row once. The
    /// sort-key fields are part of it because they let ClickHouse find earlier copies
    /// through the primary key instead of scanning (every retry and every re-sent
    /// window repeats them anyway).
    pub fn dedup_key(&self) -> Vec<&str> {
        let mut key = vec!["app_id", "event_time"];
        key.extend(self.sort_key.iter().map(String::as_str));
        key.push("event_id");
        key
    }
}

/// FNV-1a: field names are short and the map never grows, so a simple hash beats
/// SipHash on the ingest hot path (one lookup per JSON key); the map is built from the
/// catalog only, so clients cannot aim collisions at it.
#[derive(Default)]
pub struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// All slices, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    slices: BTreeMap<String, Slice>,
}

include!(concat!(env!("OUT_DIR"), "/builtin_schemas.rs"));

impl Catalog {
    /// The catalog compiled into the binary from the repository's `schemas/`.
    pub fn builtin() -> Result<Self, SchemaError> {
        Self::from_files(
            BUILTIN_SCHEMAS
                .iter()
                .map(|(name, text)| (format!("schemas/{name}"), text.to_string())),
        )
    }

    /// Every `*.toml` file of a directory.
    pub fn load_dir(dir: &Path) -> Result<Self, SchemaError> {
        let shown = dir.display().to_string();
        let err = |message: String| SchemaError {
            file: shown.clone(),
            key: "-".into(),
            message,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| err(format!("cannot read schema directory: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| SchemaError {
                file: path.display().to_string(),
                key: "-".into(),
                message: format!("cannot read: {e}"),
            })?;
            files.push((path.display().to_string(), text));
        }
        Self::from_files(files)
    }

    pub fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SchemaError> {
        let mut slices = BTreeMap::new();
        for (file, text) in files {
            let slice = parse_slice(&file, &text)?;
            if slices.contains_key(&slice.name) {
                return Err(SchemaError {
                    file,
                    key: "name".into(),
                    message: format!("slice `{}` is defined twice", slice.name),
                });
            }
            slices.insert(slice.name.clone(), slice);
        }
        if slices.is_empty() {
            return Err(SchemaError {
                file: "schemas".into(),
                key: "-".into(),
                message: "no schema files found".into(),
            });
        }
        Ok(Catalog { slices })
    }

    pub fn slice(&self, name: &str) -> Option<&Slice> {
        self.slices.get(name)
    }

    pub fn slices(&self) -> impl Iterator<Item = &Slice> {
        self.slices.values()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SliceFile {
    name: String,
    description: String,
    group: String,
    #[serde(default)]
    retention_days: Option<u32>,
    partition: Partition,
    #[serde(default)]
    sort_key: Vec<String>,
    /// Slice-specific wording for `event_time` ("click time", "install time", ...).
    #[serde(default)]
    event_time_description: Option<String>,
    fields: Vec<FieldFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    description: String,
    filterable: bool,
    default: bool,
    #[serde(default)]
    required: bool,
}

const GROUPS: [&str; 3] = ["ad_tracking", "app_analytics", "system"];

/// Identifiers reach SQL unquoted, so they are restricted to a safe alphabet.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

fn parse_slice(file: &str, text: &str) -> Result<Slice, SchemaError> {
    let err = |key: String, message: String| SchemaError {
        file: file.to_string(),
        key,
        message,
    };
    let raw: SliceFile = toml::from_str(text).map_err(|e| {
        // toml reports the offending key in its message and span; keep both.
        let key = e
            .span()
            .map(|s| format!("line {}", text[..s.start].lines().count().max(1)))
            .unwrap_or_else(|| "-".into());
        err(key, e.message().to_string())
    })?;
    check_header(file, &raw).map_err(|(key, m)| err(key, m))?;

    let event_time_description = raw
        .event_time_description
        .unwrap_or_else(|| "When the event happened (UTC).".into());
    let mut fields = common_fields(&event_time_description);
    for (i, f) in raw.fields.into_iter().enumerate() {
        let field = parse_field(f, &fields).map_err(|(k, m)| err(format!("fields[{i}].{k}"), m))?;
        fields.push(field);
    }
    check_sort_key(&raw.sort_key, &fields).map_err(|(key, m)| err(key, m))?;

    let index = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i))
        .collect();
    Ok(Slice {
        name: raw.name,
        description: raw.description,
        group: raw.group,
        retention_days: raw.retention_days,
        partition: raw.partition,
        sort_key: raw.sort_key,
        fields,
        index,
    })
}

/// A problem in a slice file: the key it is about and what is wrong.
type Problem = (String, String);

fn not_an_identifier(name: &str) -> String {
    format!("`{name}` must match [a-z][a-z0-9_]* (at most 64 characters)")
}

/// The slice's own keys: name (and its file's name), description, group, retention.
fn check_header(file: &str, raw: &SliceFile) -> Result<(), Problem> {
    if !is_identifier(&raw.name) {
        return Err(("name".into(), not_an_identifier(&raw.name)));
    }
    let stem = Path::new(file).file_stem().and_then(|s| s.to_str());
    if stem != Some(raw.name.as_str()) {
        return Err((
            "name".into(),
            format!(
                "slice `{}` must live in a file named {}.toml",
                raw.name, raw.name
            ),
        ));
    }
    if raw.description.trim().is_empty() {
        return Err(("description".into(), "must not be empty".into()));
    }
    if !GROUPS.contains(&raw.group.as_str()) {
        return Err((
            "group".into(),
            format!("`{}` is not one of {}", raw.group, GROUPS.join(", ")),
        ));
    }
    if raw.retention_days == Some(0) {
        return Err((
            "retention_days".into(),
            "must be at least 1 (leave it out to keep rows forever)".into(),
        ));
    }
    Ok(())
}

/// One `[[fields]]` entry, checked against the fields before it; the problem's key is
/// relative to the entry (`name`, `type`, …).
fn parse_field(f: FieldFile, before: &[Field]) -> Result<Field, Problem> {
    if !is_identifier(&f.name) {
        return Err(("name".into(), not_an_identifier(&f.name)));
    }
    if COMMON_FIELDS.contains(&f.name.as_str()) {
        return Err((
            "name".into(),
            format!("`{}` is a common field the catalog adds itself", f.name),
        ));
    }
    if before.iter().any(|g| g.name == f.name) {
        return Err(("name".into(), format!("field `{}` is listed twice", f.name)));
    }
    let ty = ColumnType::parse(&f.ty).map_err(|m| ("type".to_string(), m))?;
    if f.description.trim().is_empty() {
        return Err(("description".into(), "must not be empty".into()));
    }
    if f.required && ty.is_nullable() {
        return Err((
            "required".into(),
            "a Nullable field cannot be required".into(),
        ));
    }
    Ok(Field {
        name: f.name,
        ty,
        description: f.description,
        filterable: f.filterable,
        default: f.default,
        required: f.required,
    })
}

/// Every sort key is a field of the slice and not Nullable.
fn check_sort_key(sort_key: &[String], fields: &[Field]) -> Result<(), Problem> {
    for (i, k) in sort_key.iter().enumerate() {
        match fields.iter().find(|f| &f.name == k) {
            None => {
                return Err((
                    format!("sort_key[{i}]"),
                    format!("`{k}` is not a field of this slice"),
                ))
            }
            Some(f) if f.ty.is_nullable() => {
                return Err((
                    format!("sort_key[{i}]"),
                    format!("`{k}` is Nullable and cannot be in the sort key"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn common_fields(event_time_description: &str) -> Vec<Field> {
    let f = |name: &str, ty: ColumnType, description: &str, default: bool, required: bool| Field {
        name: name.into(),
        ty,
        description: description.into(),
        filterable: true,
        default,
        required,
    };
    vec![
        f(
            "app_id",
            ColumnType::UInt64,
            "Application or workspace the event belongs to (0 when the source has none).",
            true,
            false,
        ),
        f(
            "event_id",
            ColumnType::Uuid,
            "Unique id of the event; the deduplication key. Generated at ingest when absent.",
            false,
            false,
        ),
        f(
            "event_time",
            ColumnType::DateTime,
            event_time_description,
            true,
            true,
        ),
        f(
            "received_time",
            ColumnType::DateTime,
            "When Logport received the event (UTC, set by the server).",
            false,
            false,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "clicks"
description = "Clicks"
group = "ad_tracking"
retention_days = 30
partition = "day"
sort_key = ["campaign_id"]

[[fields]]
name = "campaign_id"
type = "String"
description = "Campaign"
filterable = true
default = true

[[fields]]
name = "cost"
type = "Nullable(Float64)"
description = "Cost"
filterable = true
default = false
"#;

    fn load(text: &str) -> Result<Catalog, SchemaError> {
        Catalog::from_files([("schemas/clicks.toml".to_string(), text.to_string())])
    }

    #[test]
    fn loads_a_good_file_with_common_fields() {
        let c = load(GOOD).unwrap();
        let s = c.slice("clicks").unwrap();
        let names: Vec<_> = s.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "app_id",
                "event_id",
                "event_time",
                "received_time",
                "campaign_id",
                "cost"
            ]
        );
        assert!(s.field("event_time").unwrap().required);
        assert!(s.field(TENANT_COLUMN).is_none());
        assert_eq!(s.retention_days, Some(30));
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases = [
            (
                GOOD.replace("type = \"String\"", "type = \"Strin\""),
                "fields[0].type",
            ),
            (
                GOOD.replace("name = \"cost\"", "name = \"Cost\""),
                "fields[1].name",
            ),
            (
                GOOD.replace("name = \"cost\"", "name = \"event_time\""),
                "fields[1].name",
            ),
            (
                GOOD.replace("name = \"cost\"", "name = \"campaign_id\""),
                "fields[1].name",
            ),
            (
                GOOD.replace("[\"campaign_id\"]", "[\"nope\"]"),
                "sort_key[0]",
            ),
            (
                GOOD.replace("[\"campaign_id\"]", "[\"cost\"]"),
                "sort_key[0]",
            ),
            (
                GOOD.replace("group = \"ad_tracking\"", "group = \"x\""),
                "group",
            ),
            (
                GOOD.replace("name = \"clicks\"", "name = \"other\""),
                "name",
            ),
            (
                GOOD.replace("retention_days = 30", "retention_days = 0"),
                "retention_days",
            ),
        ];
        for (text, key) in cases {
            let e = load(&text).unwrap_err();
            assert_eq!(e.file, "schemas/clicks.toml");
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn toml_errors_name_the_line() {
        let text = GOOD.replace(
            "filterable = true\ndefault = false",
            "filterable = true\ndefault = false\ncolour = 1",
        );
        let e = load(&text).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        assert!(e.key.starts_with("line "), "{e}");
    }

    #[test]
    fn the_builtin_catalog_is_valid() {
        let c = Catalog::builtin().unwrap();
        for name in [
            "clicks",
            "conversions",
            "postbacks",
            "api_postbacks",
            "cost_updates",
            "activity",
            "installations",
            "events",
            "sessions_starts",
            "revenue",
            "ad_revenue",
            "ecommerce",
            "deeplinks",
            "push_tokens",
            "crashes",
            "errors",
            "profiles",
        ] {
            let s = c
                .slice(name)
                .unwrap_or_else(|| panic!("slice {name} missing"));
            assert!(
                s.default_fields().count() >= 2,
                "{name} needs default fields"
            );
        }
        assert!(c.slice("clicks").unwrap().fields.len() >= 34);
        assert_eq!(c.slice("api_postbacks").unwrap().retention_days, Some(7));
        assert_eq!(c.slice("cost_updates").unwrap().retention_days, Some(7));
    }
}
