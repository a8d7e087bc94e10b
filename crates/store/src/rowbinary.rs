//! One validated value in ClickHouse's binary form (as RowBinary writes it).
//!
//! Ingest sends Native blocks ([`crate::native`]), whose column data is these values
//! back to back: a handful of little-endian writes per value, no text for the server
//! to parse. Values arrive here already checked by [`Value::from_scalar`], so a
//! mismatch is a bug, reported as an error rather than a panic.

use logport_catalog::{ColumnType, Value};

#[inline]
pub fn write_value(out: &mut Vec<u8>, ty: &ColumnType, v: &Value) -> Result<(), String> {
    if let ColumnType::Nullable(inner) = ty {
        if matches!(v, Value::Null) {
            out.push(1);
            return Ok(());
        }
        out.push(0);
        return write_value(out, inner, v);
    }
    match (ty, v) {
        (ColumnType::String | ColumnType::LowCardinalityString, Value::Str(s)) => {
            write_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        (ColumnType::UInt8, Value::UInt(n)) => out.push(*n as u8),
        (ColumnType::UInt16, Value::UInt(n)) => out.extend_from_slice(&(*n as u16).to_le_bytes()),
        (ColumnType::UInt32, Value::UInt(n)) => out.extend_from_slice(&(*n as u32).to_le_bytes()),
        (ColumnType::UInt64, Value::UInt(n)) => out.extend_from_slice(&n.to_le_bytes()),
        (ColumnType::Int8, Value::Int(n)) => out.extend_from_slice(&(*n as i8).to_le_bytes()),
        (ColumnType::Int16, Value::Int(n)) => out.extend_from_slice(&(*n as i16).to_le_bytes()),
        (ColumnType::Int32, Value::Int(n)) => out.extend_from_slice(&(*n as i32).to_le_bytes()),
        (ColumnType::Int64, Value::Int(n)) => out.extend_from_slice(&n.to_le_bytes()),
        (ColumnType::Float32, Value::Float(f)) => out.extend_from_slice(&(*f as f32).to_le_bytes()),
        (ColumnType::Float64, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (ColumnType::Date, Value::Date(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (ColumnType::DateTime, Value::DateTime(s)) => out.extend_from_slice(&s.to_le_bytes()),
        (ColumnType::Uuid, Value::Uuid(u)) => {
            // ClickHouse keeps a UUID as two little-endian UInt64 halves, high half first.
            let b = u.as_bytes();
            let (hi, lo) = b.split_at(8);
            out.extend(hi.iter().rev());
            out.extend(lo.iter().rev());
        }
        (ColumnType::Enum8(_), Value::Enum(_, code)) => out.push(*code as u8),
        (ty, v) => return Err(format!("value {v:?} does not fit column type {ty}")),
    }
    Ok(())
}

#[inline]
pub fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ty: &str, v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, &ColumnType::parse(ty).unwrap(), &v).unwrap();
        out
    }

    #[test]
    fn encodes_each_type() {
        assert_eq!(enc("String", Value::Str("ab".into())), [2, b'a', b'b']);
        assert_eq!(
            enc("String", Value::Str("x".repeat(200)))[..2],
            [0xc8, 0x01]
        );
        assert_eq!(enc("UInt16", Value::UInt(258)), [2, 1]);
        assert_eq!(enc("Int8", Value::Int(-1)), [0xff]);
        assert_eq!(enc("Nullable(UInt8)", Value::Null), [1]);
        assert_eq!(enc("Nullable(UInt8)", Value::UInt(7)), [0, 7]);
        assert_eq!(enc("DateTime", Value::DateTime(1)), [1, 0, 0, 0]);
        assert_eq!(enc("Enum8('a' = -2)", Value::Enum("a".into(), -2)), [0xfe]);
        let u = uuid::Uuid::parse_str("00010203-0405-0607-0809-0a0b0c0d0e0f").unwrap();
        assert_eq!(
            enc("UUID", Value::Uuid(u)),
            [7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8]
        );
    }

    #[test]
    fn mismatches_are_errors() {
        let mut out = Vec::new();
        assert!(write_value(&mut out, &ColumnType::UInt8, &Value::Str("x".into())).is_err());
        assert!(write_value(&mut out, &ColumnType::String, &Value::Null).is_err());
    }
}
