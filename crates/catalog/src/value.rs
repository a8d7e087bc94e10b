//! Typed values: what an ingest line or a filter value becomes after validation.
//!
//! JSON input is checked against the field's ClickHouse type here, once, so later
//! stages (the store's wire encoding, SQL literals) only ever see values that fit.

use serde_json::Value as Json;
use uuid::Uuid;

use crate::time;
use crate::types::{ColumnType, TypeFamily};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Str(String),
    UInt(u64),
    Int(i64),
    Float(f64),
    /// Days since 1970-01-01.
    Date(u16),
    /// Unix seconds.
    DateTime(u32),
    Uuid(Uuid),
    /// An `Enum8` variant by name and code.
    Enum(String, i8),
}

impl Value {
    /// The value of a field missing from an ingest line.
    pub fn default_for(ty: &ColumnType) -> Value {
        match ty {
            ColumnType::Nullable(_) => Value::Null,
            ColumnType::String | ColumnType::LowCardinalityString => Value::Str(String::new()),
            ColumnType::Float32 | ColumnType::Float64 => Value::Float(0.0),
            ColumnType::Date => Value::Date(0),
            ColumnType::DateTime => Value::DateTime(0),
            ColumnType::Uuid => Value::Uuid(Uuid::nil()),
            ColumnType::Enum8(v) => Value::Enum(v[0].0.clone(), v[0].1),
            t if t.family() == TypeFamily::Signed => Value::Int(0),
            _ => Value::UInt(0),
        }
    }

    /// Checks a JSON value against a column type. The error is a sentence for the
    /// client; the caller adds which line and field it was.
    pub fn from_json(ty: &ColumnType, v: &Json) -> Result<Value, String> {
        let scalar = match v {
            Json::Null => Scalar::Null,
            Json::Bool(b) => Scalar::Bool(*b),
            Json::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Scalar::U64(u),
                (None, Some(i)) => Scalar::I64(i),
                _ => Scalar::F64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Scalar::Str(s),
            Json::Array(_) => Scalar::Other("an array"),
            Json::Object(_) => Scalar::Other("an object"),
        };
        Value::from_scalar(ty, scalar)
    }

    /// Checks one JSON scalar (as a streaming parser sees it) against a column type.
    pub fn from_scalar(ty: &ColumnType, v: Scalar<'_>) -> Result<Value, String> {
        if matches!(v, Scalar::Null) {
            return if ty.is_nullable() {
                Ok(Value::Null)
            } else {
                Err(format!("null is not allowed for {ty}"))
            };
        }
        let base = ty.base();
        match base.family() {
            TypeFamily::Text => match v {
                Scalar::Str(s) => Ok(Value::Str(s.to_string())),
                other => Err(format!("expected a string for {ty}, got {}", other.kind())),
            },
            TypeFamily::Unsigned | TypeFamily::Signed => parse_int(base, v),
            TypeFamily::Float => parse_float(base, v),
            TypeFamily::Date => match v {
                Scalar::Str(s) => {
                    time::parse_date(s).map(|d| Value::Date(time::date_to_days(d) as u16))
                }
                other => Err(format!(
                    "expected a date string YYYY-MM-DD, got {}",
                    other.kind()
                )),
            },
            TypeFamily::DateTime => {
                let secs = match v {
                    Scalar::Str(s) => time::parse_timestamp(s)?,
                    Scalar::U64(u) => time::check_timestamp(i64::try_from(u).unwrap_or(i64::MAX))?,
                    Scalar::I64(i) => time::check_timestamp(i)?,
                    Scalar::F64(f) => return Err(format!("{f} is not a whole number of seconds")),
                    other => {
                        return Err(format!(
                            "expected a timestamp string or Unix seconds, got {}",
                            other.kind()
                        ))
                    }
                };
                Ok(Value::DateTime(secs as u32))
            }
            TypeFamily::Uuid => match v {
                Scalar::Str(s) => Uuid::parse_str(s.trim())
                    .map(Value::Uuid)
                    .map_err(|_| format!("`{s}` is not a UUID")),
                other => Err(format!("expected a UUID string, got {}", other.kind())),
            },
            TypeFamily::Enum => {
                let variants = base.enum_variants().unwrap_or_default();
                match v {
                    Scalar::Str(s) => variants
                        .iter()
                        .find(|(name, _)| name == s)
                        .map(|(name, code)| Value::Enum(name.clone(), *code))
                        .ok_or_else(|| {
                            let names: Vec<_> = variants.iter().map(|(n, _)| n.as_str()).collect();
                            format!("`{s}` is not one of {}", names.join(", "))
                        }),
                    other => Err(format!(
                        "expected one of the enum's names, got {}",
                        other.kind()
                    )),
                }
            }
        }
    }
}

/// One JSON value as a parser meets it; arrays and objects only by their kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'a str),
    Other(&'static str),
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::U64(_) | Scalar::I64(_) | Scalar::F64(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Other(kind) => kind,
        }
    }
}

fn parse_int(ty: &ColumnType, v: Scalar<'_>) -> Result<Value, String> {
    let n: i128 = match v {
        Scalar::U64(u) => i128::from(u),
        Scalar::I64(i) => i128::from(i),
        // `42.0`: JSON Schema's integer too; exact up to 2^53.
        Scalar::F64(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => f as i128,
        Scalar::F64(f) => return Err(format!("{f} is not an integer")),
        // Flags arrive as true/false from CSV and some trackers.
        Scalar::Str(s) if *ty == ColumnType::UInt8 && matches!(s, "true" | "false") => {
            i128::from(s == "true")
        }
        // Trackers often send numbers as strings ("sub ids", macros); accept exact ones.
        Scalar::Str(s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| format!("`{s}` is not an integer"))?,
        // Flags are UInt8; accept JSON booleans for them.
        Scalar::Bool(b) if *ty == ColumnType::UInt8 => i128::from(b),
        other => {
            return Err(format!(
                "expected an integer for {ty}, got {}",
                other.kind()
            ))
        }
    };
    let (lo, hi) = ty.int_range().unwrap_or((0, 0));
    if n < lo || n > hi {
        return Err(format!("{n} is out of range for {ty} ({lo}..={hi})"));
    }
    Ok(if ty.family() == TypeFamily::Signed {
        Value::Int(n as i64)
    } else {
        Value::UInt(n as u64)
    })
}

fn parse_float(ty: &ColumnType, v: Scalar<'_>) -> Result<Value, String> {
    let f = match v {
        Scalar::U64(u) => u as f64,
        Scalar::I64(i) => i as f64,
        Scalar::F64(f) => f,
        Scalar::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("`{s}` is not a number"))?,
        other => return Err(format!("expected a number for {ty}, got {}", other.kind())),
    };
    if !f.is_finite() {
        return Err(format!("{f} is not a finite number"));
    }
    if *ty == ColumnType::Float32 && f.abs() > f32::MAX as f64 {
        return Err(format!("{f} is out of range for Float32"));
    }
    Ok(Value::Float(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> ColumnType {
        ColumnType::parse(s).unwrap()
    }

    #[test]
    fn accepts_values_of_each_type() {
        assert_eq!(
            Value::from_json(&t("String"), &json!("a,\"b\"\n\t\\ü")).unwrap(),
            Value::Str("a,\"b\"\n\t\\ü".into())
        );
        assert_eq!(
            Value::from_json(&t("UInt8"), &json!(true)).unwrap(),
            Value::UInt(1)
        );
        assert_eq!(
            Value::from_json(&t("UInt64"), &json!(u64::MAX)).unwrap(),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            Value::from_json(&t("Int64"), &json!("-5")).unwrap(),
            Value::Int(-5)
        );
        assert_eq!(
            Value::from_json(&t("Float64"), &json!("1.5")).unwrap(),
            Value::Float(1.5)
        );
        assert_eq!(
            Value::from_json(&t("Nullable(String)"), &json!(null)).unwrap(),
            Value::Null
        );
        assert_eq!(
            Value::from_json(&t("Date"), &json!("1970-01-03")).unwrap(),
            Value::Date(2)
        );
        assert_eq!(
            Value::from_json(&t("DateTime"), &json!(1_793_872_800)).unwrap(),
            Value::DateTime(1_793_872_800)
        );
        assert_eq!(
            Value::from_json(&t("Enum8('unknown' = 0, 'wifi' = 1)"), &json!("wifi")).unwrap(),
            Value::Enum("wifi".into(), 1)
        );
        assert!(matches!(
            Value::from_json(&t("UUID"), &json!("67e55044-10b1-426f-9247-bb680e5fe0c8")).unwrap(),
            Value::Uuid(_)
        ));
    }

    #[test]
    fn rejects_wrong_types_with_a_reason() {
        let cases = [
            ("String", json!(5)),
            ("String", json!(null)),
            ("UInt8", json!(256)),
            ("UInt8", json!(-1)),
            ("UInt32", json!(1.5)),
            ("UInt32", json!("12abc")),
            ("Int8", json!(true)),
            ("Float64", json!("NaN")),
            ("Float64", json!("inf")),
            ("Float32", json!(1e300)),
            ("Date", json!("2026-02-30")),
            ("DateTime", json!("tomorrow")),
            ("DateTime", json!(-1)),
            ("DateTime", json!(1.5)),
            ("UUID", json!("not-a-uuid")),
            ("Enum8('a' = 1)", json!("b")),
            ("String", json!({"a": 1})),
            ("String", json!([1])),
        ];
        for (ty, v) in cases {
            let e = Value::from_json(&t(ty), &v);
            assert!(e.is_err(), "{ty} must reject {v}");
        }
    }

    #[test]
    fn defaults() {
        assert_eq!(Value::default_for(&t("Nullable(UInt8)")), Value::Null);
        assert_eq!(Value::default_for(&t("Int32")), Value::Int(0));
        assert_eq!(Value::default_for(&t("UInt32")), Value::UInt(0));
        assert_eq!(
            Value::default_for(&t("Enum8('unknown' = 0, 'x' = 1)")),
            Value::Enum("unknown".into(), 0)
        );
    }
}

#[cfg(test)]
mod whole_float_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_may_be_written_as_whole_floats() {
        let t = |s: &str| ColumnType::parse(s).unwrap();
        assert_eq!(
            Value::from_json(&t("UInt32"), &json!(42.0)).unwrap(),
            Value::UInt(42)
        );
        assert_eq!(
            Value::from_json(&t("Int8"), &json!(-3.0)).unwrap(),
            Value::Int(-3)
        );
        assert!(Value::from_json(&t("UInt32"), &json!(4.5)).is_err());
        assert!(Value::from_json(&t("UInt8"), &json!(256.0)).is_err());
        assert!(
            Value::from_json(&t("UInt64"), &json!(1e19)).is_err(),
            "inexact"
        );
    }
}
