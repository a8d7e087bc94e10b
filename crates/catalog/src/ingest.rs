//! Validating ingest records (NDJSON objects or CSV rows) into rows of typed values.
//!
//! A row holds one value per public field, in catalog order, ready for a [`RowSink`]
//! (the store's Native block, which the catalog does not know). The server owns `tenant_id` and `received_time`. An `event_id`
//! missing from a record is generated: time-ordered (UUID v7) normally, or derived
//! from the request's idempotency seed and the record's line number (UUID v5) when the
//! client sent an `Idempotency-Key` — so a retried request produces the very same ids.

use serde_json::{Map, Value as Json};

use crate::schema::{Field, Slice, TENANT_COLUMN};
use crate::value::Value;

mod encoder;
pub use encoder::{LineEncoder, LineInfo, RowSink, HEAD};

/// Why a record was rejected: the member (when one is to blame) and a sentence.
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

/// A validated record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// One value per public field, in catalog order.
    pub values: Vec<Value>,
    /// The record carried its own `event_id` (rather than one generated here).
    pub event_id_given: bool,
}

/// What the server adds to every row of one request.
#[derive(Debug, Clone, Copy)]
pub struct RowContext<'a> {
    pub received_time: u32,
    /// Tenant and idempotency key of the request: makes generated ids deterministic.
    pub id_seed: Option<&'a [u8]>,
}

/// Namespace of the UUID v5 event ids derived from idempotency keys.
const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
    0x6c, 0x6f, 0x67, 0x70, 0x6f, 0x72, 0x74, 0x2d, 0x65, 0x76, 0x65, 0x6e, 0x74, 0x2d, 0x69, 0x64,
]);

impl RowContext<'_> {
    fn event_id(&self, line: u64) -> uuid::Uuid {
        match self.id_seed {
            Some(seed) => {
                let mut name = Vec::with_capacity(seed.len() + 9);
                name.extend_from_slice(seed);
                name.push(0);
                name.extend_from_slice(&line.to_be_bytes());
                uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
            }
            None => uuid::Uuid::now_v7(),
        }
    }
}

/// Parses and validates one NDJSON line (`line` is its 1-based number in the body).
///
/// This is the ingest hot path, so the line is read in one streaming pass: keys are
/// looked up in the catalog as they are met and values are checked against their
/// field's type straight from the parser, without building a JSON tree. What it
/// accepts and how it reports errors is exactly [`row_from_object`]'s.
pub fn parse_line(
    slice: &Slice,
    bytes: &[u8],
    ctx: &RowContext<'_>,
    line: u64,
) -> Result<Row, LineError> {
    use serde::Deserializer as _;
    let mut given: Vec<Option<Result<Value, String>>> = vec![None; slice.fields.len()];
    let mut unknown: Option<LineError> = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let visitor = fast::LineVisitor {
        slice,
        given: &mut given,
        unknown: &mut unknown,
    };
    de.deserialize_map(visitor)
        .and_then(|()| de.end())
        .map_err(json_error)?;
    if let Some(e) = unknown {
        return Err(e);
    }
    assemble(slice, ctx, line, |i, _| given[i].take())
}

/// Why a line that serde_json could not read was rejected.
fn json_error(e: serde_json::Error) -> LineError {
    LineError {
        field: None,
        detail: if e.is_data() {
            "the line must be a JSON object".to_string()
        } else {
            format!("not valid JSON: {e}")
        },
    }
}

/// The field a key names, or why it may not be sent.
fn field_of_key(slice: &Slice, key: &str) -> Result<usize, LineError> {
    // One lookup for the common case; the reasons for a refusal after.
    match slice.field_index(key) {
        Some(i) if slice.fields[i].name != "received_time" => Ok(i),
        _ => Err(match check_member(slice, key) {
            Err(e) => e,
            Ok(()) => LineError::at(key, "unknown field"),
        }),
    }
}

/// Keeps the refusal of the member whose name sorts first, so a line's error does
/// not depend on its key order.
fn keep_first_refusal(kept: &mut Option<LineError>, e: LineError) {
    let earlier = kept
        .as_ref()
        .and_then(|k| k.field.as_deref())
        .zip(e.field.as_deref())
        .is_some_and(|(k, name)| k <= name);
    if !earlier {
        *kept = Some(e);
    }
}

/// The streaming pieces of [`parse_line`] (and of [`super::LineEncoder`]).
mod fast {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::{field_of_key, keep_first_refusal, LineError};
    use crate::schema::Slice;
    use crate::value::{Scalar, Value};

    pub(super) struct LineVisitor<'a> {
        pub slice: &'a Slice,
        pub given: &'a mut Vec<Option<Result<Value, String>>>,
        /// The first (in key order) member that may not be sent.
        pub unknown: &'a mut Option<LineError>,
    }

    impl<'de> Visitor<'de> for LineVisitor<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let slice = self.slice;
            while let Some(key) =
                map.next_key_seed(KeySeed(|key: &str| field_of_key(slice, key)))?
            {
                match key {
                    Ok(i) => {
                        let ty = &slice.fields[i].ty;
                        self.given[i] =
                            Some(map.next_value_seed(ScalarSeed(|v: Scalar<'_>| {
                                Value::from_scalar(ty, v)
                            }))?);
                    }
                    Err(e) => {
                        map.next_value::<IgnoredAny>()?;
                        keep_first_refusal(self.unknown, e);
                    }
                }
            }
            Ok(())
        }
    }

    /// A member's key, handed to the closure.
    pub(in crate::ingest) struct KeySeed<F>(pub F);

    impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for KeySeed<F> {
        type Value = T;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for KeySeed<F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a field name")
        }

        fn visit_str<E: de::Error>(self, key: &str) -> Result<T, E> {
            Ok((self.0)(key))
        }
    }

    /// A member's value, handed to the closure as the scalar it is (arrays and
    /// objects are read past and named).
    pub(in crate::ingest) struct ScalarSeed<F>(pub F);

    impl<'de, T, F: FnOnce(Scalar<'_>) -> T> DeserializeSeed<'de> for ScalarSeed<F> {
        type Value = T;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de, T, F: FnOnce(Scalar<'_>) -> T> Visitor<'de> for ScalarSeed<F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
            Ok((self.0)(Scalar::Bool(v)))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            Ok((self.0)(Scalar::U64(v)))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            Ok((self.0)(Scalar::I64(v)))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            Ok((self.0)(Scalar::F64(v)))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            Ok((self.0)(Scalar::Str(v)))
        }

        fn visit_unit<E: de::Error>(self) -> Result<T, E> {
            Ok((self.0)(Scalar::Null))
        }

        fn visit_none<E: de::Error>(self) -> Result<T, E> {
            self.visit_unit()
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok((self.0)(Scalar::Other("an array")))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok((self.0)(Scalar::Other("an object")))
        }
    }
}

/// Validates an already parsed object.
pub fn row_from_object(
    slice: &Slice,
    obj: &Map<String, Json>,
    ctx: &RowContext<'_>,
    line: u64,
) -> Result<Row, LineError> {
    for key in obj.keys() {
        check_member(slice, key)?;
    }
    assemble(slice, ctx, line, |_, f| {
        obj.get(&f.name).map(|v| Value::from_json(&f.ty, v))
    })
}

/// The columns of a CSV body, from its header row.
#[derive(Debug, Clone)]
pub struct CsvHeader {
    /// For each CSV column, the index of its catalog field.
    fields: Vec<usize>,
}

impl CsvHeader {
    pub fn parse(slice: &Slice, names: &[&str]) -> Result<CsvHeader, LineError> {
        let mut fields = Vec::with_capacity(names.len());
        for name in names {
            let name = name.trim();
            check_member(slice, name)?;
            let i = slice
                .fields
                .iter()
                .position(|f| f.name == name)
                .ok_or_else(|| LineError::at(name, "unknown field"))?;
            if fields.contains(&i) {
                return Err(LineError::at(
                    name,
                    format!("`{name}` appears twice in the header"),
                ));
            }
            fields.push(i);
        }
        Ok(CsvHeader { fields })
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Validates one CSV record against its header. An empty value means "absent": the
/// field's default (NULL for Nullable fields).
pub fn row_from_csv(
    slice: &Slice,
    header: &CsvHeader,
    values: &[&str],
    ctx: &RowContext<'_>,
    line: u64,
) -> Result<Row, LineError> {
    if values.len() != header.fields.len() {
        return Err(LineError {
            field: None,
            detail: format!(
                "the record has {} values but the header names {} fields",
                values.len(),
                header.fields.len()
            ),
        });
    }
    assemble(slice, ctx, line, |_, f| {
        let col = header
            .fields
            .iter()
            .position(|&i| slice.fields[i].name == f.name)?;
        let text = values[col];
        (!text.is_empty()).then(|| Value::from_json(&f.ty, &Json::String(text.to_string())))
    })
}

fn check_member(slice: &Slice, key: &str) -> Result<(), LineError> {
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
    Ok(())
}

/// Builds the row from whatever `given` finds for each field.
fn assemble(
    slice: &Slice,
    ctx: &RowContext<'_>,
    line: u64,
    mut given: impl FnMut(usize, &Field) -> Option<Result<Value, String>>,
) -> Result<Row, LineError> {
    let mut row = Vec::with_capacity(slice.fields.len());
    let mut event_id_given = true;
    for (i, field) in slice.fields.iter().enumerate() {
        let value = if field.name == "received_time" {
            Value::DateTime(ctx.received_time)
        } else {
            match given(i, field) {
                Some(v) => v.map_err(|d| LineError::at(&field.name, d))?,
                None if field.required => {
                    return Err(LineError::at(
                        &field.name,
                        format!("`{}` is required", field.name),
                    ))
                }
                None if field.name == "event_id" => {
                    event_id_given = false;
                    Value::Uuid(ctx.event_id(line))
                }
                None => Value::default_for(&field.ty),
            }
        };
        row.push(value);
    }
    Ok(Row {
        values: row,
        event_id_given,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;

    const CTX: RowContext<'static> = RowContext {
        received_time: 99,
        id_seed: None,
    };

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
            &CTX,
            1,
        )
        .unwrap()
        .values;
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
        let field = |line: &str| parse_line(&s, line.as_bytes(), &CTX, 1).unwrap_err().field;
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
        assert!(parse_line(&s, b"{\"click_id\":\"\xff\",\"event_time\":1}", &CTX, 1).is_err());
    }

    #[test]
    fn idempotency_seeds_make_ids_deterministic() {
        let s = slice();
        let seed = RowContext {
            received_time: 1,
            id_seed: Some(b"acme\0key-1"),
        };
        let line = br#"{"click_id":"c","event_time":1}"#;
        let a = parse_line(&s, line, &seed, 3).unwrap().values;
        let b = parse_line(&s, line, &seed, 3).unwrap().values;
        let c = parse_line(&s, line, &seed, 4).unwrap().values;
        assert_eq!(a[1], b[1]);
        assert_ne!(a[1], c[1]);
        let other = RowContext {
            received_time: 1,
            id_seed: Some(b"acme\0key-2"),
        };
        assert_ne!(parse_line(&s, line, &other, 3).unwrap().values[1], a[1]);
        let random = parse_line(&s, line, &CTX, 3).unwrap().values;
        assert_ne!(random[1], parse_line(&s, line, &CTX, 3).unwrap().values[1]);
        assert!(!parse_line(&s, line, &CTX, 3).unwrap().event_id_given);
        let given =
            br#"{"click_id":"c","event_time":1,"event_id":"67e55044-10b1-426f-9247-bb680e5fe0c8"}"#;
        assert!(parse_line(&s, given, &CTX, 3).unwrap().event_id_given);
    }

    #[test]
    fn csv_records() {
        let s = slice();
        let header = CsvHeader::parse(&s, &["event_time", "click_id", "cost"]).unwrap();
        let row = row_from_csv(&s, &header, &["2026-11-05 10:00:00", "c,1", ""], &CTX, 2)
            .unwrap()
            .values;
        assert_eq!(row[4], Value::Str("c,1".into()));
        assert_eq!(row[5], Value::Null, "empty means absent");
        let row = row_from_csv(&s, &header, &["1", "c", "2.5"], &CTX, 3)
            .unwrap()
            .values;
        assert_eq!(row[5], Value::Float(2.5));
        let bad = row_from_csv(&s, &header, &["1", "c", "x"], &CTX, 4).unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("cost"));
        assert!(row_from_csv(&s, &header, &["1", "c"], &CTX, 5).is_err());
        assert!(
            row_from_csv(&s, &header, &["1", "", ""], &CTX, 6).is_err(),
            "click_id is required"
        );
        for bad in [&["nope"][..], &["tenant_id"], &["cost", "cost"]] {
            assert!(CsvHeader::parse(&s, bad).is_err(), "{bad:?}");
        }
    }

    /// The streaming parser agrees with the tree-based one on every input.
    #[test]
    fn the_fast_path_matches_the_tree_path() {
        let s = slice();
        let ctx = RowContext {
            received_time: 5,
            id_seed: Some(b"t\0k"),
        };
        let tree = |bytes: &[u8]| -> Result<Row, LineError> {
            let obj: Map<String, Json> = serde_json::from_slice(bytes).map_err(|e| LineError {
                field: None,
                detail: if e.is_data() {
                    "the line must be a JSON object".to_string()
                } else {
                    format!("not valid JSON: {e}")
                },
            })?;
            row_from_object(&s, &obj, &ctx, 9)
        };
        let lines: &[&[u8]] = &[
            br#"{"click_id":"c","event_time":1}"#,
            br#"{"event_time":"2026-11-05T10:00:00+02:00","click_id":"a\"b\\c\u00fc","cost":1.5}"#,
            br#"{"click_id":"c","event_time":1,"cost":null,"app_id":7}"#,
            br#"{"click_id":"c","event_time":1,"cost":"2.25"}"#,
            br#"{"click_id":"c","click_id":"d","event_time":1}"#,
            br#"{"click_id":"c","event_time":1,"zeta":1,"alpha":[1,{"x":2}]}"#,
            br#"{"click_id":"c","event_time":1,"tenant_id":"x"}"#,
            br#"{"click_id":5,"event_time":"bad","cost":[1]}"#,
            br#"{"click_id":"c","event_time":1.5}"#,
            br#"{"click_id":"c","event_time":1,"cost":{"a":1}}"#,
            br#"{"click_id":"c","event_time":1,"event_id":"not-a-uuid"}"#,
            br#"{"click_id":"c","event_time":1,"event_id":"67e55044-10b1-426f-9247-bb680e5fe0c8"}"#,
            br#"{"click_id":"c","event_time":1,"app_id":-1}"#,
            br#"{"click_id":"c","event_time":1,"app_id":18446744073709551615}"#,
            br#"{"event_time":1}"#,
            br#"[1,2]"#,
            br#""str""#,
            br#"{"click_id":"c","event_time":1} x"#,
            br#"{"click_id":"c""#,
            b"{\"click_id\":\"\xff\",\"event_time\":1}",
            br#"{"click_id":"\ud800","event_time":1}"#,
            br#"{}"#,
        ];
        for line in lines {
            let fast = parse_line(&s, line, &ctx, 9);
            let slow = tree(line);
            match (&fast, &slow) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", String::from_utf8_lossy(line)),
                (Err(a), Err(b)) => {
                    assert_eq!(a.field, b.field, "{}", String::from_utf8_lossy(line))
                }
                _ => panic!(
                    "{}: fast {fast:?} vs tree {slow:?}",
                    String::from_utf8_lossy(line)
                ),
            }
        }
    }
}
