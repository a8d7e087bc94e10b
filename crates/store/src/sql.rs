//! The one place where values become SQL text.
//!
//! Every value that reaches a ClickHouse query goes through [`quote_string`] or
//! [`literal`]; every identifier through [`ident`]. Identifiers come only from the
//! catalog (which restricts them to `[a-z][a-z0-9_]*`) or from configuration
//! (checked at start-up), so `ident` refuses anything else instead of escaping it.
//! We render literals client-side because ClickHouse 18.16 has no server-side query
//! parameters; the escaping below is the complete set its parser understands.

use std::fmt::Write;

use logport_catalog::{time, Value};

/// A single-quoted ClickHouse string literal. Backslash and quote are escaped, and every
/// control character (including NUL) is written as `\xHH`, so the literal is one line
/// of printable text whatever the input.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A ClickHouse literal for a typed value.
pub fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Str(s) => quote_string(s),
        Value::UInt(n) => n.to_string(),
        Value::Int(n) => n.to_string(),
        // Scientific notation is exact (shortest round-trip) and short for any magnitude.
        Value::Float(f) => format!("{f:e}"),
        Value::Date(d) => format!(
            "toDate({})",
            quote_string(&time::days_to_date(i64::from(*d)).to_string())
        ),
        Value::DateTime(s) => format!("toDateTime({s})"),
        Value::Uuid(u) => format!("toUUID({})", quote_string(&u.to_string())),
        Value::Enum(name, _) => quote_string(name),
    }
}

/// A back-quoted identifier. Panics on anything but `[A-Za-z_][A-Za-z0-9_]*`: callers
/// only pass catalog names and validated configuration, so anything else is a bug.
pub fn ident(name: &str) -> String {
    assert!(is_safe_ident(name), "unsafe SQL identifier {name:?}");
    format!("`{name}`")
}

pub fn is_safe_ident(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_dangerous_character() {
        assert_eq!(quote_string(""), "''");
        assert_eq!(quote_string("plain"), "'plain'");
        assert_eq!(quote_string("it's"), r"'it\'s'");
        assert_eq!(quote_string(r"back\slash"), r"'back\\slash'");
        assert_eq!(quote_string(r"\'"), r"'\\\''");
        assert_eq!(quote_string("nul\0byte"), r"'nul\x00byte'");
        assert_eq!(
            quote_string("line\nbreak\r\ttab"),
            r"'line\x0Abreak\x0D\x09tab'"
        );
        assert_eq!(quote_string("\u{7f}"), r"'\x7F'");
        assert_eq!(quote_string("ünï😀 中文"), "'ünï😀 中文'");
        assert_eq!(
            quote_string("x' OR 1=1; DROP TABLE clicks; --"),
            r"'x\' OR 1=1; DROP TABLE clicks; --'"
        );
        assert_eq!(quote_string("\\' OR '1'='1"), r"'\\\' OR \'1\'=\'1'");
    }

    #[test]
    fn a_quoted_string_never_ends_early() {
        // Whatever the input, the only unescaped quotes are the outer two.
        for s in ["'", "\\", "\\'", "'\\", "a'b'c", "\\\\'", "'''", "\0'\n"] {
            let q = quote_string(s);
            let inner = &q[1..q.len() - 1];
            let mut escaped = false;
            for c in inner.chars() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else {
                    assert_ne!(c, '\'', "{s:?} -> {q}");
                }
            }
            assert!(!escaped, "{s:?} -> {q} ends inside an escape");
        }
    }

    #[test]
    fn literals_of_each_type() {
        assert_eq!(literal(&Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(literal(&Value::Int(-5)), "-5");
        assert_eq!(literal(&Value::Float(1.5)), "1.5e0");
        assert_eq!(literal(&Value::Float(-1e300)), "-1e300");
        assert_eq!(literal(&Value::Date(1)), "toDate('1970-01-02')");
        assert_eq!(literal(&Value::DateTime(60)), "toDateTime(60)");
        assert_eq!(literal(&Value::Enum("wifi".into(), 1)), "'wifi'");
        assert_eq!(literal(&Value::Null), "NULL");
        let u = uuid::Uuid::nil();
        assert_eq!(
            literal(&Value::Uuid(u)),
            "toUUID('00000000-0000-0000-0000-000000000000')"
        );
    }

    #[test]
    fn identifiers() {
        assert_eq!(ident("click_id"), "`click_id`");
        for bad in ["", "1a", "a-b", "a`b", "a b", "a;drop", "ü"] {
            assert!(!is_safe_ident(bad), "{bad}");
        }
    }

    #[test]
    #[should_panic(expected = "unsafe SQL identifier")]
    fn ident_refuses_unsafe_names() {
        ident("x` OR 1");
    }
}
