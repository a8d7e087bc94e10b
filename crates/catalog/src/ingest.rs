//! Validating one ingest line (a JSON object) into a row of typed values.
//!
//! A row holds one value per public field, in catalog order, ready for the store's
//! RowBinary writer. The server owns `tenant_id` and `received_time`; `event_id` is
//! generated (UUID v7, time-ordered) when the line has none.

use serde_json::{Map, Value as Json};

use crate::schema::{Slice, TENANT_COLUMN};
use crate::value::Value;

/// Why a line was rejected: the member (when one is to blame) and a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub field: Option<String>,
    pub detail: String,
}

impl LineError {
    fn at(field: &str, detail: impl Into<String>) -> Self {
        LineError {
            field: Some(field.to_string()),
            detail: detail.into(),
        }
    }
}

/// Parses and validates one NDJSON line.
pub fn parse_line(slice: &Slice, line: &[u8], received_time: u32) -> Result<Vec<Value>, LineError> {
    let obj: Map<String, Json> = serde_json::from_slice(line).map_err(|e| LineError {
        field: None,
        detail: if e.is_data() {
            "the line must be a JSON object".to_string()
        } else {
            format!("not valid JSON: {e}")
        },
    })?;
    row_from_object(slice, &obj, received_time)
}

/// Validates an already parsed object.
pub fn row_from_object(
    slice: &Slice,
    obj: &Map<String, Json>,
    received_time: u32,
) -> Result<Vec<Value>, LineError> {
    for key in obj.keys() {
        if key == TENANT_COLUMN || key == "received_time" {
            return Err(LineError::at(
                key,
                format!("`{key}` is set by the server and cannot be sent"),
            ));
        }
        if slice.field(key).is_none() {
            return Err(LineError::at(
                key,
                format!("`{key}` is not a field of slice `{}`", slice.name),
            ));
        }
    }
    let mut row = Vec::with_capacity(slice.fields.len());
    for field in &slice.fields {
        let value = match obj.get(&field.name) {
            _ if field.name == "received_time" => Value::DateTime(received_time),
            Some(v) => Value::from_json(&field.ty, v).map_err(|d| LineError::at(&field.name, d))?,
            None if field.required => {
                return Err(LineError::at(
                    &field.name,
                    format!("`{}` is required", field.name),
                ))
            }
            None if field.name == "event_id" => Value::Uuid(uuid::Uuid::now_v7()),
            None => Value::default_for(&field.ty),
        };
        row.push(value);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;

    const SCHEMA: &str = r#"
name = "clicks"
description = "Clicks"
group = "ad_tracking"
partition = "day"
[[fields]]
name = "click_id"
type = "String"
description = "Click"
filterable = true
default = true
required = true
[[fields]]
name = "cost"
type = "Nullable(Float64)"
description = "Cost"
filterable = true
default = true
"#;

    fn slice() -> Slice {
        Catalog::from_files([("clicks.toml".into(), SCHEMA.into())])
            .unwrap()
            .slice("clicks")
            .unwrap()
            .clone()
    }

    #[test]
    fn fills_server_fields_and_defaults() {
        let row = parse_line(
            &slice(),
            br#"{"click_id":"c1","event_time":"2026-11-05T10:00:00Z"}"#,
            99,
        )
        .unwrap();
        // app_id, event_id, event_time, received_time, click_id, cost
        assert_eq!(row[0], Value::UInt(0));
        assert!(matches!(row[1], Value::Uuid(u) if !u.is_nil()));
        assert_eq!(row[2], Value::DateTime(1_793_872_800));
        assert_eq!(row[3], Value::DateTime(99));
        assert_eq!(row[4], Value::Str("c1".into()));
        assert_eq!(row[5], Value::Null);
    }

    #[test]
    fn rejects_bad_lines_naming_the_field() {
        let s = slice();
        let field = |line: &str| parse_line(&s, line.as_bytes(), 1).unwrap_err().field;
        assert_eq!(
            field(r#"{"click_id":"c","event_time":1,"nope":1}"#).as_deref(),
            Some("nope")
        );
        assert_eq!(
            field(r#"{"click_id":"c","event_time":1,"tenant_id":"x"}"#).as_deref(),
            Some("tenant_id")
        );
        assert_eq!(
            field(r#"{"click_id":"c","event_time":1,"received_time":1}"#).as_deref(),
            Some("received_time")
        );
        assert_eq!(field(r#"{"event_time":1}"#).as_deref(), Some("click_id"));
        assert_eq!(field(r#"{"click_id":"c"}"#).as_deref(), Some("event_time"));
        assert_eq!(
            field(r#"{"click_id":"c","event_time":1,"cost":"x"}"#).as_deref(),
            Some("cost")
        );
        assert_eq!(
            field(r#"{"click_id":"c","event_time":1,"event_id":"x"}"#).as_deref(),
            Some("event_id")
        );
        assert_eq!(field(r#"{"click_id":"c","#), None);
        assert_eq!(field(r#"[1,2]"#), None);
        assert_eq!(field("{\"click_id\":\"\u{0}\\ud800\"}"), None);
        assert!(parse_line(&s, b"{\"click_id\":\"\xff\",\"event_time\":1}", 1).is_err());
    }
}
