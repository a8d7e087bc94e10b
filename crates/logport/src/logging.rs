//! Log output: `text` for people, `json` (one object per line) for log pipelines.
//!
//! JSON lines have tracing-subscriber's usual layout — `timestamp`, `level`,
//! `fields` (the event's, with `message`), `target`, `span` and `spans` (each span's
//! `name` and fields) — with one addition: the fields of every enclosing span are also
//! merged into `fields`, so every line of an export carries `fields.job_id`,
//! `fields.tenant`, `fields.slice` and `fields.attempt`, and a log store can filter on
//! them without knowing which span set them. An event's own field wins over a span's
//! of the same name, an inner span's over an outer one's.
//!
//! ```json
//! {"timestamp":"2026-11-26T07:00:00.123Z","level":"INFO","target":"logport_export::worker",
//!  "fields":{"message":"export succeeded","rows":2,"job_id":"…","tenant":"acme","slice":"clicks","attempt":1},
//!  "span":{"name":"export","job_id":"…","tenant":"acme","slice":"clicks","attempt":1},"spans":[…]}
//! ```

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber: `json` or text, filtered by `RUST_LOG` (default
/// `info`), to stderr.
pub fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init();
    } else {
        builder.init();
    }
}

/// The JSON line format (span fields need [`JsonFields`] as the field formatter).
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut Visitor(&mut fields));
        let mut spans = Vec::new();
        let mut inherited = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let mut obj = Map::new();
                obj.insert("name".into(), span.name().into());
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(f)) = serde_json::from_str::<Value>(f) {
                        for (k, v) in f {
                            inherited.insert(k.clone(), v.clone());
                            obj.insert(k, v);
                        }
                    }
                }
                spans.push(Value::Object(obj));
            }
        }
        for (k, v) in inherited {
            fields.entry(k).or_insert(v);
        }
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("fields".into(), Value::Object(fields));
        line.insert("target".into(), meta.target().into());
        if let Some(innermost) = spans.last() {
            line.insert("span".into(), innermost.clone());
            line.insert("spans".into(), Value::Array(spans));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct Visitor<'a>(&'a mut Map<String, Value>);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn span_fields_are_merged_into_fields() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("export", job_id = "j1", tenant = "acme", attempt = 2);
            let _o = outer.enter();
            let inner = tracing::info_span!("part", n = 1, tenant = "inner");
            let _i = inner.enter();
            tracing::info!(rows = 5u64, n = 7, "export \"succeeded\"");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        let fields = &line["fields"];
        assert_eq!(fields["message"], "export \"succeeded\"");
        assert_eq!(line["level"], "INFO");
        assert_eq!(fields["job_id"], "j1");
        assert_eq!(fields["attempt"], 2);
        assert_eq!(fields["tenant"], "inner", "the inner span wins");
        assert_eq!(fields["n"], 7, "the event's own field wins");
        assert_eq!(fields["rows"], 5);
        assert_eq!(line["span"]["name"], "part");
        assert_eq!(line["spans"][0]["name"], "export");
        assert_eq!(line["spans"][0]["tenant"], "acme");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
