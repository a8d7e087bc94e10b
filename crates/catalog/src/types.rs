//! ClickHouse column types the catalog may use.
//!
//! The set is deliberately small: every type here must exist on Debian's ClickHouse
//! 18.16 (our test server) and on current ClickHouse, and must have a lossless text,
//! JSON and Parquet representation. Booleans are `UInt8`, IP addresses `String`,
//! money `Float64` (docs/fields.md gives the reasoning).

use std::fmt;

/// One column type, parsed from its ClickHouse spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    String,
    /// `LowCardinality(String)`: dictionary-encoded in ClickHouse and Parquet.
    LowCardinalityString,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Date,
    DateTime,
    Uuid,
    /// `Enum8('a' = 1, ...)`: the first variant is the default for a missing value.
    Enum8(Vec<(String, i8)>),
    /// `Nullable(T)` for any non-nullable `T` above.
    Nullable(Box<ColumnType>),
}

/// Broad families of types, for deciding which filter operators and JSON values fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFamily {
    Text,
    Unsigned,
    Signed,
    Float,
    Date,
    DateTime,
    Uuid,
    Enum,
}

impl ColumnType {
    /// Parses a ClickHouse type such as `Nullable(String)` or `Enum8('a' = 1, 'b' = 2)`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(inner) = strip_call(t, "Nullable") {
            let inner = ColumnType::parse(inner)?;
            if matches!(inner, ColumnType::Nullable(_)) {
                return Err("Nullable(Nullable(...)) is not a valid type".into());
            }
            return Ok(ColumnType::Nullable(Box::new(inner)));
        }
        if let Some(inner) = strip_call(t, "LowCardinality") {
            return match inner.trim() {
                "String" => Ok(ColumnType::LowCardinalityString),
                other => Err(format!(
                    "LowCardinality is supported for String only, not {other}"
                )),
            };
        }
        if let Some(inner) = strip_call(t, "Enum8") {
            return parse_enum(inner).map(ColumnType::Enum8);
        }
        Ok(match t {
            "String" => ColumnType::String,
            "UInt8" => ColumnType::UInt8,
            "UInt16" => ColumnType::UInt16,
            "UInt32" => ColumnType::UInt32,
            "UInt64" => ColumnType::UInt64,
            "Int8" => ColumnType::Int8,
            "Int16" => ColumnType::Int16,
            "Int32" => ColumnType::Int32,
            "Int64" => ColumnType::Int64,
            "Float32" => ColumnType::Float32,
            "Float64" => ColumnType::Float64,
            "Date" => ColumnType::Date,
            "DateTime" => ColumnType::DateTime,
            "UUID" => ColumnType::Uuid,
            "IPv4" | "IPv6" => {
                return Err(format!(
                    "{t} does not exist on ClickHouse 18.16; store addresses as String"
                ))
            }
            "Bool" => return Err("Bool does not exist on ClickHouse 18.16; use UInt8".into()),
            _ => return Err(format!("unsupported ClickHouse type `{t}`")),
        })
    }

    /// The type without a `Nullable` wrapper.
    pub fn base(&self) -> &ColumnType {
        match self {
            ColumnType::Nullable(inner) => inner,
            other => other,
        }
    }

    pub fn is_nullable(&self) -> bool {
        matches!(self, ColumnType::Nullable(_))
    }

    pub fn family(&self) -> TypeFamily {
        match self.base() {
            ColumnType::String | ColumnType::LowCardinalityString => TypeFamily::Text,
            ColumnType::UInt8 | ColumnType::UInt16 | ColumnType::UInt32 | ColumnType::UInt64 => {
                TypeFamily::Unsigned
            }
            ColumnType::Int8 | ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => {
                TypeFamily::Signed
            }
            ColumnType::Float32 | ColumnType::Float64 => TypeFamily::Float,
            ColumnType::Date => TypeFamily::Date,
            ColumnType::DateTime => TypeFamily::DateTime,
            ColumnType::Uuid => TypeFamily::Uuid,
            ColumnType::Enum8(_) => TypeFamily::Enum,
            ColumnType::Nullable(_) => unreachable!("base() strips Nullable"),
        }
    }

    /// Inclusive integer range of an integer type.
    pub fn int_range(&self) -> Option<(i128, i128)> {
        Some(match self.base() {
            ColumnType::UInt8 => (0, u8::MAX as i128),
            ColumnType::UInt16 => (0, u16::MAX as i128),
            ColumnType::UInt32 => (0, u32::MAX as i128),
            ColumnType::UInt64 => (0, u64::MAX as i128),
            ColumnType::Int8 => (i8::MIN as i128, i8::MAX as i128),
            ColumnType::Int16 => (i16::MIN as i128, i16::MAX as i128),
            ColumnType::Int32 => (i32::MIN as i128, i32::MAX as i128),
            ColumnType::Int64 => (i64::MIN as i128, i64::MAX as i128),
            _ => return None,
        })
    }

    /// Variants of an `Enum8` (also inside `Nullable`).
    pub fn enum_variants(&self) -> Option<&[(String, i8)]> {
        match self.base() {
            ColumnType::Enum8(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for ColumnType {
    /// The canonical ClickHouse spelling, used in DDL and in `GET /v1/slices/{slice}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => f.write_str("String"),
            ColumnType::LowCardinalityString => f.write_str("LowCardinality(String)"),
            ColumnType::UInt8 => f.write_str("UInt8"),
            ColumnType::UInt16 => f.write_str("UInt16"),
            ColumnType::UInt32 => f.write_str("UInt32"),
            ColumnType::UInt64 => f.write_str("UInt64"),
            ColumnType::Int8 => f.write_str("Int8"),
            ColumnType::Int16 => f.write_str("Int16"),
            ColumnType::Int32 => f.write_str("Int32"),
            ColumnType::Int64 => f.write_str("Int64"),
            ColumnType::Float32 => f.write_str("Float32"),
            ColumnType::Float64 => f.write_str("Float64"),
            ColumnType::Date => f.write_str("Date"),
            ColumnType::DateTime => f.write_str("DateTime"),
            ColumnType::Uuid => f.write_str("UUID"),
            ColumnType::Enum8(variants) => {
                f.write_str("Enum8(")?;
                for (i, (name, code)) in variants.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    // Variant names are restricted to safe characters at parse time.
                    write!(f, "'{name}' = {code}")?;
                }
                f.write_str(")")
            }
            ColumnType::Nullable(inner) => write!(f, "Nullable({inner})"),
        }
    }
}

fn strip_call<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// Parses `'a' = 1, 'b' = 2`. Names are limited to characters that need no escaping
/// anywhere (DDL, CSV, JSON), so an enum can never carry an injection.
fn parse_enum(body: &str) -> Result<Vec<(String, i8)>, String> {
    let mut variants: Vec<(String, i8)> = Vec::new();
    for item in body.split(',') {
        let (name, code) = item
            .split_once('=')
            .ok_or_else(|| format!("enum variant `{}` must look like 'name' = 1", item.trim()))?;
        let name = name.trim();
        let name = name
            .strip_prefix('\'')
            .and_then(|n| n.strip_suffix('\''))
            .ok_or_else(|| format!("enum variant name {name} must be in single quotes"))?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/'))
        {
            return Err(format!(
                "enum variant name '{name}' may only use letters, digits, space and _ - . /"
            ));
        }
        let code: i8 = code
            .trim()
            .parse()
            .map_err(|_| format!("enum code `{}` must be an Int8", code.trim()))?;
        if variants.iter().any(|(n, c)| n == name || *c == code) {
            return Err(format!("enum variant '{name}' = {code} is a duplicate"));
        }
        variants.push((name.to_string(), code));
    }
    if variants.is_empty() {
        return Err("an Enum8 needs at least one variant".into());
    }
    Ok(variants)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        for text in [
            "String",
            "LowCardinality(String)",
            "Nullable(String)",
            "Nullable(DateTime)",
            "UInt64",
            "Int8",
            "Float64",
            "Date",
            "UUID",
            "Enum8('unknown' = 0, 'wifi' = 1, 'cell' = 2)",
        ] {
            let t = ColumnType::parse(text).unwrap();
            assert_eq!(t.to_string(), text);
        }
        assert_eq!(
            ColumnType::parse(" Enum8( 'a'=1,'b' = -2 ) ")
                .unwrap()
                .to_string(),
            "Enum8('a' = 1, 'b' = -2)"
        );
    }

    #[test]
    fn rejects_unsupported_types() {
        for bad in [
            "Strin",
            "IPv4",
            "Bool",
            "Nullable(Nullable(String))",
            "LowCardinality(UInt8)",
            "Enum8()",
            "Enum8('a' = 1, 'a' = 2)",
            "Enum8('it''s' = 1)",
            "Enum8('x' = 300)",
            "DateTime64(3)",
        ] {
            assert!(ColumnType::parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn families_and_ranges() {
        let t = ColumnType::parse("Nullable(UInt16)").unwrap();
        assert_eq!(t.family(), TypeFamily::Unsigned);
        assert_eq!(t.int_range(), Some((0, 65535)));
        assert!(t.is_nullable());
        assert_eq!(
            ColumnType::parse("LowCardinality(String)")
                .unwrap()
                .family(),
            TypeFamily::Text
        );
    }
}
