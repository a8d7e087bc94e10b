//! The NDJSON ingest hot path: a line validated straight into the store's encoding.
//!
//! [`super::parse_line`] builds a row of [`Value`]s for the store to encode; at a few
//! hundred thousand lines per second per core those values (a string allocated per
//! member, vectors per line) and the second pass over them were most of the server's
//! ingest work. This encoder has each member encoded by the [`RowSink`] (the store's
//! wire format, which the catalog does not know) into a scratch buffer as the parser
//! meets it, then appends the encoded values to the sink's columns, filling in
//! defaults; nothing is allocated per line. It accepts and rejects exactly what
//! `parse_line` does, with the same messages (tested against it below).

use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;

use super::fast::{KeySeed, ScalarSeed};
use super::{field_of_key, json_error, keep_first_refusal, LineError, RowContext};
use crate::schema::Slice;
use crate::types::{ColumnType, TypeFamily};
use crate::value::{Scalar, Value};

/// Leading fields whose values are also kept as [`Value`]s: the common fields
/// `app_id`, `event_id` and `event_time` come first in every slice, and the caller
/// needs them (app scoping, repeat detection).
pub const HEAD: usize = 3;

/// Where validated rows go: a batch in the store's wire encoding. The catalog
/// validates; how a value is laid out is the sink's business. A line's values are
/// encoded as they are met and appended to the columns only once the whole line is
/// good, so encoding (associated functions) is apart from appending (methods).
pub trait RowSink {
    /// Appends the encoding of `v`, a value of type `ty`.
    fn encode_value(out: &mut Vec<u8>, ty: &ColumnType, v: &Value) -> Result<(), String>;
    /// Appends the encoding of a text value of `ty` (the text family, maybe
    /// `Nullable`): what `encode_value` writes for `Value::Str(s)`, without the value.
    fn encode_text(out: &mut Vec<u8>, ty: &ColumnType, s: &str);
    /// Appends the encoding of an `Enum8` variant of `ty` (maybe `Nullable`) by its
    /// code: what `encode_value` writes for the variant.
    fn encode_enum(out: &mut Vec<u8>, ty: &ColumnType, code: i8);
    /// Appends column `i`'s encoded value to the row being built. Every column gets
    /// exactly one value per row, then [`RowSink::end_row`].
    fn push_encoded(&mut self, i: usize, encoded: &[u8]);
    fn end_row(&mut self);

    /// Appends a row of validated values (one per field, in catalog order); an error
    /// leaves the sink as it was.
    fn push_row(&mut self, slice: &Slice, values: &[Value]) -> Result<(), String> {
        if slice.fields.len() != values.len() {
            return Err(format!(
                "row has {} values for {} fields",
                values.len(),
                slice.fields.len()
            ));
        }
        let mut encoded = Vec::with_capacity(values.len());
        let mut buf = Vec::new();
        for (f, v) in slice.fields.iter().zip(values) {
            let start = buf.len();
            Self::encode_value(&mut buf, &f.ty, v)?;
            encoded.push(start..buf.len());
        }
        for (i, range) in encoded.into_iter().enumerate() {
            self.push_encoded(i, &buf[range]);
        }
        self.end_row();
        Ok(())
    }
}

/// What one member of the line became.
#[derive(Debug, Clone)]
enum Slot {
    Absent,
    /// Its encoded bytes in the scratch buffer.
    Given(usize, usize),
    /// Why the value does not fit the field.
    Bad(String),
}

/// A line that was encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct LineInfo {
    /// The row's first [`HEAD`] values (fewer when the slice has fewer fields).
    pub head: Vec<Value>,
    /// The line carried its own `event_id`.
    pub event_id_given: bool,
}

/// Encodes the lines of one request into a sink of type `S`; keeps its buffers from
/// line to line.
pub struct LineEncoder<'s, S> {
    slice: &'s Slice,
    slots: Vec<Slot>,
    scratch: Vec<u8>,
    /// The encoding of each field's default.
    defaults: Vec<Vec<u8>>,
    head: Vec<Option<Value>>,
    /// The fields in the order the previous line named them: lines of one producer
    /// share a key order, so a key is usually found by one comparison.
    order: Vec<usize>,
    sink: std::marker::PhantomData<fn(&mut S)>,
}

impl<'s, S: RowSink> LineEncoder<'s, S> {
    pub fn new(slice: &'s Slice) -> Result<LineEncoder<'s, S>, String> {
        let defaults = slice
            .fields
            .iter()
            .map(|f| {
                let mut b = Vec::new();
                S::encode_value(&mut b, &f.ty, &Value::default_for(&f.ty)).map(|()| b)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(LineEncoder {
            slice,
            slots: vec![Slot::Absent; slice.fields.len()],
            scratch: Vec::with_capacity(1024),
            defaults,
            head: vec![None; HEAD.min(slice.fields.len())],
            order: Vec::with_capacity(slice.fields.len()),
            sink: std::marker::PhantomData,
        })
    }

    /// Validates one NDJSON line (`line` is its 1-based number in the body) and, when
    /// it is good, appends its row to `block`. A bad line leaves `block` as it was.
    pub fn encode(
        &mut self,
        bytes: &[u8],
        ctx: &RowContext<'_>,
        line: u64,
        block: &mut S,
    ) -> Result<LineInfo, LineError> {
        self.slots.fill(Slot::Absent);
        self.head.fill(None);
        self.scratch.clear();
        let mut unknown: Option<LineError> = None;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let visitor = LineVisitor {
            enc: self,
            unknown: &mut unknown,
        };
        de.deserialize_map(visitor)
            .and_then(|()| de.end())
            .map_err(json_error)?;
        if let Some(e) = unknown {
            return Err(e);
        }
        let event_id_given = self.complete(ctx, line)?;
        // The line is good: every field has its bytes or takes its default.
        for i in 0..self.slots.len() {
            match self.slots[i] {
                Slot::Given(a, b) => block.push_encoded(i, &self.scratch[a..b]),
                _ => block.push_encoded(i, &self.defaults[i]),
            }
        }
        block.end_row();
        Ok(LineInfo {
            head: self.head.iter_mut().map_while(Option::take).collect(),
            event_id_given,
        })
    }

    /// Checks the line's fields in catalog order (the first bad or missing one is
    /// the error) and adds what the server supplies. Returns whether the line
    /// carried its own `event_id`.
    fn complete(&mut self, ctx: &RowContext<'_>, line: u64) -> Result<bool, LineError> {
        let mut event_id_given = true;
        for (i, field) in self.slice.fields.iter().enumerate() {
            let made = if field.name == "received_time" {
                Value::DateTime(ctx.received_time)
            } else {
                match &self.slots[i] {
                    Slot::Given(..) => continue,
                    Slot::Bad(d) => return Err(LineError::at(&field.name, d.clone())),
                    Slot::Absent if field.required => {
                        return Err(LineError::at(
                            &field.name,
                            format!("`{}` is required", field.name),
                        ))
                    }
                    Slot::Absent if field.name == "event_id" => {
                        event_id_given = false;
                        Value::Uuid(ctx.event_id(line))
                    }
                    Slot::Absent => {
                        if i < HEAD {
                            self.head[i] = Some(Value::default_for(&field.ty));
                        }
                        continue;
                    }
                }
            };
            let start = self.scratch.len();
            S::encode_value(&mut self.scratch, &field.ty, &made)
                .map_err(|e| LineError::at(&field.name, e))?;
            self.slots[i] = Slot::Given(start, self.scratch.len());
            if i < HEAD {
                self.head[i] = Some(made);
            }
        }
        Ok(event_id_given)
    }

    /// The field a key names, or why it may not be sent.
    fn field_of(&mut self, position: usize, key: &str) -> Result<usize, LineError> {
        let fields = &self.slice.fields;
        if let Some(&i) = self.order.get(position) {
            if fields[i].name == key && key != "received_time" {
                return Ok(i);
            }
        }
        let i = field_of_key(self.slice, key)?;
        if position < self.order.len() {
            self.order[position] = i;
        } else if position == self.order.len() {
            self.order.push(i);
        }
        Ok(i)
    }

    /// Encodes a member's value into the scratch buffer.
    fn put(&mut self, i: usize, v: Scalar<'_>) {
        let ty = &self.slice.fields[i].ty;
        let start = self.scratch.len();
        let result = if i < HEAD {
            // Kept as a value too.
            Value::from_scalar(ty, v).and_then(|value| {
                S::encode_value(&mut self.scratch, ty, &value)?;
                self.head[i] = Some(value);
                Ok(())
            })
        } else {
            encode_scalar::<S>(&mut self.scratch, ty, v)
        };
        self.slots[i] = match result {
            Ok(()) => Slot::Given(start, self.scratch.len()),
            Err(e) => {
                self.scratch.truncate(start);
                if i < HEAD {
                    self.head[i] = None;
                }
                Slot::Bad(e)
            }
        };
    }
}

/// The encoding of one JSON scalar for a column type, checked exactly as
/// [`Value::from_scalar`] checks it. Strings and enum names, the common case, are
/// encoded without building a value.
fn encode_scalar<S: RowSink>(
    out: &mut Vec<u8>,
    ty: &ColumnType,
    v: Scalar<'_>,
) -> Result<(), String> {
    let base = ty.base();
    match (base.family(), &v) {
        (TypeFamily::Text, Scalar::Str(s)) => {
            S::encode_text(out, ty, s);
            return Ok(());
        }
        (TypeFamily::Enum, Scalar::Str(s)) => {
            if let Some((_, code)) = base
                .enum_variants()
                .and_then(|vs| vs.iter().find(|(name, _)| name == s))
            {
                S::encode_enum(out, ty, *code);
                return Ok(());
            }
        }
        _ => {}
    }
    S::encode_value(out, ty, &Value::from_scalar(ty, v)?)
}

struct LineVisitor<'e, 's, S> {
    enc: &'e mut LineEncoder<'s, S>,
    /// The first (in key order) member that may not be sent.
    unknown: &'e mut Option<LineError>,
}

impl<'de, S: RowSink> Visitor<'de> for LineVisitor<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut position = 0;
        while let Some(key) = {
            let enc = &mut *self.enc;
            map.next_key_seed(KeySeed(|key: &str| enc.field_of(position, key)))?
        } {
            position += 1;
            match key {
                Ok(i) => {
                    let enc = &mut *self.enc;
                    map.next_value_seed(ScalarSeed(|v: Scalar<'_>| enc.put(i, v)))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse_line;
    use crate::Catalog;

    /// A sink that spells values out, so equal values encode equally however they
    /// came (the store tests its own encoding's fast paths).
    #[derive(Default)]
    struct Spelled {
        columns: Vec<Vec<u8>>,
        rows: usize,
    }

    impl RowSink for Spelled {
        fn encode_value(out: &mut Vec<u8>, _: &ColumnType, v: &Value) -> Result<(), String> {
            match v {
                Value::Str(s) => Self::encode_text(out, &ColumnType::String, s),
                Value::Enum(_, code) => Self::encode_enum(out, &ColumnType::UInt8, *code),
                other => out.extend_from_slice(format!("{other:?};").as_bytes()),
            }
            Ok(())
        }
        fn encode_text(out: &mut Vec<u8>, _: &ColumnType, s: &str) {
            out.extend_from_slice(format!("S{s:?};").as_bytes());
        }
        fn encode_enum(out: &mut Vec<u8>, _: &ColumnType, code: i8) {
            out.extend_from_slice(format!("E{code};").as_bytes());
        }
        fn push_encoded(&mut self, i: usize, encoded: &[u8]) {
            if self.columns.len() <= i {
                self.columns.resize(i + 1, Vec::new());
            }
            self.columns[i].extend_from_slice(encoded);
        }
        fn end_row(&mut self) {
            self.rows += 1;
        }
    }

    #[test]
    fn encodes_and_rejects_exactly_as_parse_line_does() {
        let catalog = Catalog::builtin().unwrap();
        let lines: &[&str] = &[
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"a,\"b\"\n\tc\\ü","cost":1.5,"device_type":"phone","is_bot":1,"lp_click_time":null}"#,
            r#"{"event_time":"2026-11-05T10:00:00Z","app_id":2,"click_id":"x","event_id":"00010203-0405-0607-0809-0a0b0c0d0e0f","lp_click_time":"2026-11-05 10:00:01"}"#,
            r#"{"app_id":1,"event_time":1793527200,"click_id":"y","cost":-0.0,"device_type":"tablet","connection_type":"wifi"}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"dup","click_id":"dup2"}"#,
            r#"{"app_id":1}"#,
            r#"{"app_id":"1","event_time":"2026-11-05 10:00:00","click_id":"z"}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":7}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z","device_type":"fridge"}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z","is_bot":300}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z","cost":null}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z","sub1":[1,2],"sub2":{"a":1}}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z","zeta":1,"alpha":2}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z","received_time":"2026-11-05 10:00:00"}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z","tenant_id":"other"}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z","event_id":"nope"}"#,
            r#"{"app_id":1,"event_time":"2026-13-05 10:00:00","click_id":"z"}"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z""#,
            r#"[1,2]"#,
            r#"{"app_id":1,"event_time":"2026-11-05 10:00:00","click_id":"z"} trailing"#,
            r#"{}"#,
        ];
        let mut accepted = 0;
        for name in ["clicks", "conversions", "events", "activity", "profiles"] {
            let slice = catalog.slice(name).unwrap();
            let mut enc = LineEncoder::<Spelled>::new(slice).unwrap();
            for seed in [None, Some(&b"tenant\0key"[..])] {
                let ctx = RowContext {
                    received_time: 1_793_527_260,
                    id_seed: seed,
                };
                let mut got_block = Spelled::default();
                let mut want_block = Spelled::default();
                // Twice over: the second pass runs with the key order learnt.
                for (n, text) in lines.iter().chain(lines.iter()).enumerate() {
                    let line = n as u64 % lines.len() as u64 + 1;
                    let rows = got_block.rows;
                    let got = enc.encode(text.as_bytes(), &ctx, line, &mut got_block);
                    let want = parse_line(slice, text.as_bytes(), &ctx, line);
                    match (&got, &want) {
                        (Ok(g), Ok(w)) => {
                            accepted += 1;
                            want_block.push_row(slice, &w.values).unwrap();
                            assert_eq!(g.event_id_given, w.event_id_given, "{name}: {text}");
                            if seed.is_some() || g.event_id_given {
                                let head: Vec<Value> =
                                    w.values.iter().take(HEAD).cloned().collect();
                                assert_eq!(g.head, head, "{name}: {text}");
                            }
                        }
                        (Err(g), Err(w)) => {
                            assert_eq!(g, w, "{name}: {text}");
                            assert_eq!(got_block.rows, rows, "a bad line adds nothing");
                        }
                        _ => panic!("{name}: {text}: {got:?} vs {want:?}"),
                    }
                }
                let g = got_block.columns.concat();
                let w = want_block.columns.concat();
                if seed.is_some() {
                    // Generated ids are derived from the seed: the very same bytes.
                    assert_eq!(g, w, "{name}");
                } else {
                    // UUID v7 ids differ from call to call; nothing else does.
                    assert_eq!(g.len(), w.len(), "{name}");
                }
            }
        }
        // Good lines of clicks, both passes, both seeds.
        assert!(accepted >= 4 * 4, "{accepted}");
    }
}
