//! The OpenAPI 3.1 document (`GET /openapi.json`) and its human-readable page
//! (`GET /docs`), generated from the code.
//!
//! Every handler carries a `#[utoipa::path]` with its parameters, bodies and every
//! answer it can give (routes/docs.rs collects them); request and response bodies are
//! the Rust types themselves where the handler serialises one (`Job`, `ExportRequest`)
//! and the [`schemas`] below where it builds JSON by hand. What only the running server
//! knows — the catalog's slice and field names — is filled in when the document is
//! served ([`with_catalog`]), so a client (or a fuzzer) sees exactly what this server
//! accepts. `schemathesis` checks in CI that the server answers as the document says.
//!
//! The docs page is rendered here, on the server, from the same document: one
//! self-contained HTML file with no script and nothing fetched from elsewhere.

use logport_catalog::{Catalog, ColumnType, FilterOp, Slice, TypeFamily};
use serde_json::{json, Value as Json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::Modify;

/// Shapes of answers the handlers build as JSON, for the document only.
pub mod schemas {
    #![allow(dead_code)] // read by the OpenAPI derive, never constructed

    use serde::Serialize;
    use serde_json::Value as Json;
    use utoipa::ToSchema;

    /// An RFC 9457 problem: every error of the `/v1` API.
    #[derive(Serialize, ToSchema)]
    pub struct Problem {
        /// `/problems/<slug>`: stable, for programs.
        #[serde(rename = "type")]
        pub kind: String,
        pub title: String,
        /// The HTTP status.
        pub status: u16,
        /// What went wrong and what to do, for people.
        pub detail: String,
        /// The offending request member (`filters[0].op`), when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        pub field: Option<String>,
        /// The rejected lines of an ingest body.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        pub errors: Option<Vec<LineProblem>>,
        /// Which limit a 429 is about (`rate_limit`, `max_queued_per_tenant`, …).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        pub limit: Option<String>,
    }

    /// One rejected line (or CSV record) of an ingest body.
    #[derive(Serialize, ToSchema)]
    pub struct LineProblem {
        /// 1-based.
        pub line: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        pub field: Option<String>,
        pub detail: String,
    }

    #[derive(Serialize, ToSchema)]
    pub struct Health {
        /// `ok`.
        pub status: String,
    }

    #[derive(Serialize, ToSchema)]
    pub struct Check {
        pub ok: bool,
        /// Why not, when not: shown to admin tokens only.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        pub error: Option<String>,
    }

    #[derive(Serialize, ToSchema)]
    pub struct Checks {
        pub clickhouse: Check,
        pub job_store: Check,
        pub object_store: Check,
    }

    /// Whether every dependency answers.
    #[derive(Serialize, ToSchema)]
    pub struct Readiness {
        /// `ready` or `unavailable`.
        pub status: String,
        pub checks: Checks,
    }

    /// A slice of the catalog, in a list.
    #[derive(Serialize, ToSchema)]
    pub struct SliceSummary {
        pub name: String,
        pub description: String,
        /// `ad_tracking`, `app_analytics`, `system`, …
        pub group: String,
        /// How long rows are kept; `null`: forever.
        pub retention_days: Option<u32>,
    }

    #[derive(Serialize, ToSchema)]
    pub struct SliceList {
        pub slices: Vec<SliceSummary>,
    }

    /// A field of a slice.
    #[derive(Serialize, ToSchema)]
    pub struct FieldInfo {
        pub name: String,
        /// The ClickHouse type: `String`, `LowCardinality(String)`, `UInt64`,
        /// `DateTime`, `Nullable(…)`, `Enum8(…)`, …
        #[serde(rename = "type")]
        pub ty: String,
        pub description: String,
        /// May be used in filters.
        pub filterable: bool,
        /// Exported when a request names no fields.
        pub default: bool,
        /// An ingest record without it is rejected.
        pub required: bool,
        /// The filter operators for this field (filterable fields only).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        pub ops: Option<Vec<String>>,
    }

    /// A slice with its fields.
    #[derive(Serialize, ToSchema)]
    pub struct SliceInfo {
        pub name: String,
        pub description: String,
        pub group: String,
        pub retention_days: Option<u32>,
        /// The fields that make two of a tenant's rows the same event (stored once):
        /// `app_id`, `event_time`, the slice's sort key, `event_id`.
        pub dedup_key: Vec<String>,
        pub fields: Vec<FieldInfo>,
    }

    /// What an ingest request stored.
    #[derive(Serialize, ToSchema)]
    pub struct IngestResult {
        /// Records now stored: written by this request, or already stored before (a
        /// repeated event is stored once, see the slice's `dedup_key`).
        pub accepted: u64,
        /// Records refused (`on_error=skip`).
        pub rejected: u64,
        /// The first 100 refused records.
        pub errors: Vec<LineProblem>,
        /// This answer repeats the one given to an earlier request with the same
        /// `Idempotency-Key` and body, which was committed: nothing was done now.
        pub duplicate: bool,
        /// The `received_time` of every stored row, RFC 3339.
        pub received_time: String,
    }

    /// A page of exports, newest first.
    #[derive(Serialize, ToSchema)]
    pub struct JobList {
        #[schema(value_type = Vec<crate::views::JobView>)]
        pub exports: Vec<Json>,
        /// Pass as `cursor` for the next page; `null` on the last.
        pub next_cursor: Option<String>,
    }

    /// What an export would produce, without queuing it.
    #[derive(Serialize, ToSchema)]
    pub struct Evaluation {
        pub possible: bool,
        /// Null when the request is refused before anything is counted (its date
        /// range is longer than allowed).
        pub estimated_rows: Option<u64>,
        /// About how large the export's files are (uncompressed); null like
        /// `estimated_rows`.
        pub estimated_bytes: Option<u64>,
        /// Why it is not possible, when it is not.
        pub reason: Option<String>,
    }

    /// The newest matching rows.
    #[derive(Serialize, ToSchema)]
    pub struct Preview {
        pub slice: String,
        pub fields: Vec<String>,
        /// How many rows `data` holds.
        pub rows: u64,
        /// More rows matched than LOGPORT_PREVIEW_MAX_BYTES holds: `data` is the newest
        /// that fit whole.
        pub truncated: bool,
        /// One object per row, keyed by field.
        #[schema(value_type = Vec<Object>)]
        pub data: Vec<Json>,
    }

    /// A finished export's manifest (written last: its presence means every part is
    /// complete): parts with rows, bytes and SHA-256, the spec, the watermark.
    #[derive(Serialize, ToSchema)]
    pub struct Manifest {
        #[schema(value_type = Object)]
        pub manifest: Json,
    }

    /// An error of the Metrica-style management API.
    #[derive(Serialize, ToSchema)]
    pub struct MetricaError {
        pub errors: Vec<MetricaErrorItem>,
        /// The HTTP status.
        pub code: u16,
        pub message: String,
    }

    #[derive(Serialize, ToSchema)]
    pub struct MetricaErrorItem {
        /// `invalid_parameter`, `missing_parameter`, `not_found`, `unauthorized`,
        /// `invalid_token`, `access_denied`, `quota_requests`, `backend_error`.
        pub error_type: String,
        pub message: String,
    }

    #[derive(Serialize, ToSchema)]
    pub struct LogsApiStatus {
        /// `enabled`.
        pub logs_api_availability_status: String,
    }

    #[derive(Serialize, ToSchema)]
    pub struct LogRequestEvaluation {
        pub possible: bool,
        pub max_possible_day_quantity: u64,
    }

    #[derive(Serialize, ToSchema)]
    pub struct LogRequestEvaluationAnswer {
        pub log_request_evaluation: LogRequestEvaluation,
    }

    #[derive(Serialize, ToSchema)]
    pub struct LogRequestPart {
        /// From 0.
        pub part_number: u32,
        pub size: u64,
    }

    /// A Metrica-style log request.
    #[derive(Serialize, ToSchema)]
    pub struct LogRequest {
        /// Counted per account from 1.
        pub request_id: u64,
        pub counter_id: u64,
        /// The slice.
        pub source: String,
        pub date1: String,
        pub date2: String,
        pub fields: Vec<String>,
        /// `created`, `awaiting_retry`, `processed`, `processing_failed`, `canceled`,
        /// `cleaned_by_user`, `cleaned_automatically_as_too_old`.
        pub status: String,
        /// Always `LASTSIGN`.
        pub attribution: String,
        /// Bytes of every part (processed requests only).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        pub size: Option<u64>,
        /// Processed requests only.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        pub parts: Option<Vec<LogRequestPart>>,
    }

    #[derive(Serialize, ToSchema)]
    pub struct LogRequestAnswer {
        pub log_request: LogRequest,
    }

    #[derive(Serialize, ToSchema)]
    pub struct LogRequestList {
        pub requests: Vec<LogRequest>,
    }
}

/// What every authenticated `/v1` operation may answer besides its own responses:
/// written once here, named in each operation's `responses(…)`.
#[derive(utoipa::IntoResponses)]
pub enum V1Errors {
    #[response(
        status = 401,
        description = "Missing, unknown, revoked or expired token"
    )]
    Unauthorized,
    #[response(
        status = 429,
        description = "The token's request rate is used up (Retry-After), or a quota"
    )]
    TooManyRequests,
    #[response(
        status = 503,
        description = "A backend is unavailable; retry after Retry-After"
    )]
    Unavailable,
}

/// What every Metrica Logs API operation may answer besides its own responses, each
/// with Metrica's error body.
#[derive(utoipa::IntoResponses)]
pub enum MetricaErrors {
    #[response(status = 400, description = "A bad or missing parameter")]
    BadRequest(schemas::MetricaError),
    #[response(status = 401, description = "No token")]
    Unauthorized(schemas::MetricaError),
    #[response(
        status = 403,
        description = "Invalid token; or no export scope, or a counter outside the token's apps"
    )]
    Forbidden(schemas::MetricaError),
    #[response(status = 429, description = "A quota, or the token's rate limit")]
    TooManyRequests(schemas::MetricaError),
    #[response(status = 503, description = "A backend is unavailable")]
    Unavailable(schemas::MetricaError),
}

/// Adds the security schemes and what every operation may answer regardless of its
/// handler (the limits middleware's 431 and 504).
pub struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <token>`: a token from `logport token create` \
                         (or LOGPORT_STATIC_TOKENS in development)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "oauth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Authorization: OAuth <token>`, as AppMetrica and Metrica clients send it",
            ))),
        );
        components.add_security_scheme(
            "oauth_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "oauth_token",
                "The token as a query parameter (compatibility endpoints only, for older \
                 AppMetrica and Metrica clients)",
            ))),
        );
    }
}

/// The JSON of a problem response, for [`add_common_responses`].
fn problem_response(description: &str) -> Json {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

/// Every operation may answer 431 (headers too large) and 504 (timed out): the limits
/// middleware answers before (or instead of) the handler.
fn add_common_responses(doc: &mut Json) {
    let Some(paths) = doc.get_mut("paths").and_then(Json::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(Json::as_object_mut) else {
                continue;
            };
            // An error described without a body is a problem (the /v1 convention);
            // the compatibility endpoints name their own bodies.
            for (status, response) in responses.iter_mut() {
                let error = status.parse::<u16>().is_ok_and(|s| s >= 400);
                if error && response.get("content").is_none() {
                    response["content"] = json!({"application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}
                    }});
                }
            }
            responses
                .entry("431")
                .or_insert_with(|| problem_response("The request line and headers are too large"));
            responses.entry("504").or_insert_with(|| {
                problem_response("The request took longer than LOGPORT_REQUEST_TIMEOUT")
            });
        }
    }
}

/// An operation, its answer's status, the operations it leads to, and how their
/// parameters come from it.
type Link = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

/// Links from an answer to the operations that take what it names (`id` of a new
/// export, `request_id` of a new log request): how clients — and the fuzzer's
/// stateful phase — go from creating a resource to using it.
const LINKS: [Link; 2] = [
    (
        "create_export",
        "202",
        &[
            "get_export",
            "cancel_export",
            "delete_export",
            "get_manifest",
            "download_part",
        ],
        &[("id", "$response.body#/id")],
    ),
    (
        "metrica_create",
        "200",
        &[
            "metrica_info",
            "metrica_download",
            "metrica_clean",
            "metrica_cancel",
        ],
        &[
            ("counter_id", "$request.path.counter_id"),
            ("request_id", "$response.body#/log_request/request_id"),
        ],
    ),
];

fn add_links(doc: &mut Json) {
    let Some(paths) = doc.get_mut("paths").and_then(Json::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let id = op["operationId"].as_str().unwrap_or("").to_string();
            for (from, status, targets, params) in LINKS {
                if id != from {
                    continue;
                }
                let parameters: serde_json::Map<String, Json> = params
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                let links: serde_json::Map<String, Json> = targets
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            json!({"operationId": t, "parameters": parameters}),
                        )
                    })
                    .collect();
                if let Some(r) = op.pointer_mut(&format!("/responses/{status}")) {
                    r["links"] = Json::Object(links);
                }
            }
        }
    }
}

/// Where `value` is a JSON object, `value[key]`, made an object when missing.
fn at<'a>(value: &'a mut Json, key: &str) -> Option<&'a mut Json> {
    value
        .as_object_mut()
        .map(|o| o.entry(key).or_insert(json!({})))
}

/// The document this server answers with: the code's, plus the catalog's names as
/// enums (slices, fields, operators, formats), so what is listed is what is accepted.
pub fn with_catalog(doc: &Document, catalog: &Catalog) -> Json {
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    add_common_responses(&mut doc);
    add_links(&mut doc);
    let slices: Vec<Json> = catalog.slices().map(|s| json!(s.name)).collect();
    let files: Vec<Json> = catalog
        .slices()
        .flat_map(|s| {
            [
                json!(format!("{}.csv", s.name)),
                json!(format!("{}.json", s.name)),
            ]
        })
        .collect();
    let ops: Vec<Json> = FilterOp::ALL.iter().map(|(n, _)| json!(n)).collect();
    let formats: Vec<Json> = logport_catalog::Format::ALL
        .iter()
        .map(|(n, _)| json!(n))
        .collect();
    let compressions: Vec<Json> = logport_catalog::Compression::ALL
        .iter()
        .map(|(n, _)| json!(n))
        .collect();
    // Path parameters named `slice` and `file` list what exists.
    if let Some(paths) = doc.get_mut("paths").and_then(Json::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(Json::as_array_mut) else {
                    continue;
                };
                for p in params {
                    let pattern = match (p["in"].as_str(), p["name"].as_str()) {
                        (Some("query"), Some("date1" | "date2")) => Some(DAY_PATTERN),
                        (Some("query"), Some("date_since" | "date_until")) => {
                            Some(APPMETRICA_DATE_PATTERN)
                        }
                        _ => None,
                    };
                    if let (Some(pattern), Some(schema)) = (pattern, at(p, "schema")) {
                        schema["pattern"] = json!(pattern);
                        continue;
                    }
                    let values = match (p["in"].as_str(), p["name"].as_str()) {
                        (Some("path"), Some("slice")) => slices.clone(),
                        (Some("path"), Some("file")) => files.clone(),
                        (Some("query"), Some("source")) => slices.clone(),
                        _ => continue,
                    };
                    if let Some(schema) = at(p, "schema") {
                        schema["enum"] = Json::Array(values);
                    }
                }
            }
        }
    }
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Json::as_object_mut);
    if let Some(schemas) = schemas {
        // The request as this catalog takes it: one variant per slice, with that
        // slice's fields and, per filterable field, its operators and value type. The
        // members common to every slice keep the code's descriptions.
        if let Some(mut members) = schemas
            .get("ExportRequest")
            .and_then(|s| s.get("properties"))
            .cloned()
        {
            members["format"]["enum"] = Json::Array(formats);
            members["compression"]["enum"] = Json::Array(compressions);
            members["date_dimension"]["enum"] = json!(["event", "received"]);
            members["timezone"]["pattern"] = json!(ZONE_PATTERN);
            let variants: Vec<Json> = catalog
                .slices()
                .map(|slice| slice_request(slice, &members))
                .collect();
            schemas.insert(
                "ExportRequest".into(),
                json!({
                    "description": "An export request (the body of POST /v1/exports, of \
                        evaluate and of preview): one variant per slice of the catalog.",
                    "anyOf": variants,
                }),
            );
        }
        if let Some(first) = catalog.slices().next() {
            let defaults: Vec<&str> = first.default_fields().map(|f| f.name.as_str()).collect();
            if let Some(req) = schemas.get_mut("ExportRequest") {
                req["example"] = json!({
                    "slice": first.name,
                    "date_since": "2026-11-01",
                    "date_until": "2026-11-07",
                    "fields": defaults,
                    "format": "csv",
                });
            }
        }
        if let Some(props) = schemas
            .get_mut("FilterRequest")
            .and_then(|s| s.get_mut("properties"))
        {
            props["op"]["enum"] = Json::Array(ops);
        }
    }
    doc
}

/// The request variant of one slice.
fn slice_request(slice: &Slice, members: &Json) -> Json {
    let mut props = members.clone();
    let names: Vec<&str> = slice.fields.iter().map(|f| f.name.as_str()).collect();
    props["slice"] = json!({"const": slice.name, "description": slice.description});
    props["fields"] = json!({
        "type": "array",
        "items": {"enum": names},
        "minItems": 1,
        "uniqueItems": true,
        "description": "Fields of this slice; default: its default fields.",
    });
    let filters: Vec<Json> = slice
        .fields
        .iter()
        .filter(|f| f.filterable)
        .map(|f| {
            let ops: Vec<&str> = FilterOp::valid_for(&f.ty)
                .iter()
                .map(|o| o.name())
                .collect();
            let value = value_schema(&f.ty);
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["field", "op"],
                "properties": {
                    "field": {"const": f.name},
                    "op": {"enum": ops},
                    "value": value,
                    "values": {"type": "array", "items": value, "maxItems": 10_000},
                },
            })
        })
        .collect();
    props["filters"] = json!({
        "type": "array",
        "maxItems": logport_catalog::spec::MAX_FILTERS,
        "items": {"anyOf": filters},
    });
    props["date_since"]["pattern"] = json!(DATE_PATTERN);
    props["date_until"]["pattern"] = json!(DATE_PATTERN);
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["slice", "date_since", "date_until"],
        "properties": props,
    })
}

/// The JSON a filter value of a column type may be (null never is: use is_null).
fn value_schema(ty: &ColumnType) -> Json {
    let base = ty.base();
    match base.family() {
        TypeFamily::Text => json!({"type": "string"}),
        TypeFamily::Unsigned | TypeFamily::Signed => {
            let (lo, hi) = base.int_range().unwrap_or((0, 0));
            let bound = |v: i128| {
                i64::try_from(v)
                    .map(Json::from)
                    .or_else(|_| u64::try_from(v).map(Json::from))
                    .unwrap_or(Json::Null)
            };
            json!({"type": "integer", "minimum": bound(lo), "maximum": bound(hi)})
        }
        TypeFamily::Float => json!({"type": "number"}),
        TypeFamily::Date => json!({"type": "string", "format": "date"}),
        TypeFamily::DateTime => json!({"anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "integer", "minimum": 0, "maximum": u32::MAX},
        ]}),
        TypeFamily::Uuid => json!({"type": "string", "format": "uuid"}),
        TypeFamily::Enum => {
            let names: Vec<&str> = base
                .enum_variants()
                .unwrap_or_default()
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            json!({"enum": names})
        }
    }
}

/// The dates and timestamps requests take: a day ClickHouse can store (1970 to 2105),
/// optionally with a time and an offset.
const DATE_PATTERN: &str = concat!(
    "^(19[7-9][0-9]|20[0-9]{2}|210[0-5])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "([T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?)?$"
);
/// `UTC`, an offset (`+03:00`) or the shape of an IANA zone name (`Europe/Berlin`).
const ZONE_PATTERN: &str =
    "^(UTC|[+-](0[0-9]|1[0-4]):[0-5][0-9]|[A-Z][A-Za-z_]+(/[A-Z][A-Za-z_-]+){0,2})$";
/// A day `ClickHouse` can store (1970 to 2105), for the protocols' date parameters.
const DAY_PATTERN: &str =
    "^(19[7-9][0-9]|20[0-9]{2}|210[0-5])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$";
/// AppMetrica's dates: a day or a day and a time.
const APPMETRICA_DATE_PATTERN: &str = concat!(
    "^(19[7-9][0-9]|20[0-9]{2}|210[0-5])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "( ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])?$"
);

/// The document as one HTML page: operations by tag, with their parameters, bodies
/// and answers, and the schemas they refer to. No script, no external resources.
pub fn render_html(doc: &Json) -> String {
    let mut out = String::with_capacity(64 << 10);
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    out.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str(&format!("<title>{} {}</title>", esc(title), esc(version)));
    out.push_str(concat!(
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:72rem;margin:2rem auto;",
        "padding:0 1rem;color:#222}code,pre{font:13px ui-monospace,monospace}",
        "pre{background:#f5f5f5;padding:.6rem;overflow:auto}",
        "h2{border-bottom:1px solid #ddd;margin-top:2.5rem}",
        ".op{border:1px solid #ddd;border-radius:4px;margin:1rem 0;padding:.3rem 1rem}",
        ".m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}",
        ".get{color:#1a7f37}.post{color:#0969da}.delete{color:#cf222e}",
        "table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #ddd;",
        "padding:.2rem .5rem;vertical-align:top;text-align:left}nav a{margin-right:1rem}",
        "</style></head><body>"
    ));
    out.push_str(&format!(
        "<h1>{} <small>{}</small></h1>",
        esc(title),
        esc(version)
    ));
    if let Some(d) = doc["info"]["description"].as_str() {
        out.push_str(&paragraphs(d));
    }
    out.push_str(
        "<p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p>",
    );
    // Operations grouped by their first tag, in the order of the document's tags.
    let mut tags: Vec<String> = doc["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut ops: Vec<(String, String, String, &Json)> = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                if !tags.contains(&tag) {
                    tags.push(tag.clone());
                }
                ops.push((tag, path.clone(), method.clone(), op));
            }
        }
    }
    out.push_str("<nav>");
    for t in &tags {
        out.push_str(&format!("<a href=\"#tag-{0}\">{0}</a>", esc(t)));
    }
    out.push_str("<a href=\"#schemas\">schemas</a></nav>");
    for t in &tags {
        out.push_str(&format!("<h2 id=\"tag-{0}\">{0}</h2>", esc(t)));
        if let Some(desc) = doc["tags"]
            .as_array()
            .and_then(|all| all.iter().find(|x| x["name"] == json!(t)))
            .and_then(|x| x["description"].as_str())
        {
            out.push_str(&paragraphs(desc));
        }
        for (_, path, method, op) in ops.iter().filter(|(tag, ..)| tag == t) {
            render_operation(&mut out, path, method, op);
        }
    }
    out.push_str("<h2 id=\"schemas\">Schemas</h2>");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            out.push_str(&format!("<h3 id=\"schema-{0}\">{0}</h3>", esc(name)));
            if let Some(d) = schema["description"].as_str() {
                out.push_str(&paragraphs(d));
            }
            render_properties(&mut out, schema);
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn render_operation(out: &mut String, path: &str, method: &str, op: &Json) {
    out.push_str("<div class=\"op\">");
    out.push_str(&format!(
        "<h3><span class=\"m {0}\">{0}</span> <code>{1}</code></h3>",
        esc(method),
        esc(path)
    ));
    if let Some(s) = op["summary"].as_str() {
        out.push_str(&format!("<p><b>{}</b></p>", esc(s)));
    }
    if let Some(d) = op["description"].as_str() {
        out.push_str(&paragraphs(d));
    }
    if let Some(sec) = op["security"].as_array() {
        let names: Vec<String> = sec
            .iter()
            .filter_map(|r| r.as_object())
            .flat_map(|r| r.keys().cloned())
            .collect();
        if !names.is_empty() {
            out.push_str(&format!(
                "<p>Authentication: {}</p>",
                esc(&names.join(", "))
            ));
        }
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str(
            "<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>",
        );
        for p in params {
            out.push_str(&format!(
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(p["name"].as_str().unwrap_or("")),
                if p["required"] == json!(true) {
                    " *"
                } else {
                    ""
                },
                esc(p["in"].as_str().unwrap_or("")),
                esc(&type_of(&p["schema"])),
                esc(p["description"].as_str().unwrap_or(""))
            ));
        }
        out.push_str("</table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        out.push_str("<p>Request body:</p><ul>");
        for (ct, media) in content {
            out.push_str(&format!(
                "<li><code>{}</code>: {}</li>",
                esc(ct),
                esc(&type_of(&media["schema"]))
            ));
        }
        out.push_str("</ul>");
    }
    if let Some(responses) = op["responses"].as_object() {
        out.push_str("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>");
        for (status, r) in responses {
            let bodies: Vec<String> = r["content"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .map(|(ct, m)| format!("{ct}: {}", type_of(&m["schema"])))
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(status),
                esc(r["description"].as_str().unwrap_or("")),
                esc(&bodies.join("; "))
            ));
        }
        out.push_str("</table>");
    }
    out.push_str("</div>");
}

fn render_properties(out: &mut String, schema: &Json) {
    // Variants (the export request has one per slice): name them, show the first.
    if let Some(variants) = schema["anyOf"].as_array().filter(|v| v.len() > 1) {
        let names: Vec<String> = variants
            .iter()
            .filter_map(|v| v["properties"]["slice"]["const"].as_str().map(String::from))
            .collect();
        if !names.is_empty() {
            out.push_str(&format!(
                "<p>One variant per slice ({}); each lists that slice's fields and, per \
                 filterable field, its operators and value type. The members:</p>",
                esc(&names.join(", "))
            ));
            render_properties(out, &variants[0]);
            return;
        }
    }
    let Some(props) = schema["properties"].as_object() else {
        if let Some(values) = schema["enum"].as_array() {
            let names: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            out.push_str(&format!("<p>One of {}</p>", esc(&names.join(", "))));
        }
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    out.push_str("<table><tr><th>member</th><th>type</th><th>description</th></tr>");
    for (name, p) in props {
        out.push_str(&format!(
            "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            if required.contains(&name.as_str()) {
                " *"
            } else {
                ""
            },
            esc(&type_of(p)),
            esc(p["description"].as_str().unwrap_or(""))
        ));
    }
    out.push_str("</table>");
}

/// A short name for a schema: `Job`, `array of string`, `integer`.
fn type_of(schema: &Json) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema[key].as_array() {
            let names: Vec<String> = list.iter().map(type_of).collect();
            return names.join(" | ");
        }
    }
    let ty = match &schema["type"] {
        Json::String(t) => t.clone(),
        Json::Array(ts) => ts
            .iter()
            .filter_map(Json::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_string(),
    };
    if ty.starts_with("array") {
        return format!("array of {}", type_of(&schema["items"]));
    }
    match schema["enum"].as_array() {
        Some(values) if values.len() <= 12 => {
            let v: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            format!("{ty} ({})", v.join(", "))
        }
        Some(_) => format!("{ty} (enumerated)"),
        None => ty,
    }
}

fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|p| format!("<p>{}</p>", esc(p)))
        .collect()
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        let doc = json!({
            "info": {"title": "T<script>", "version": "1"},
            "paths": {"/x": {"get": {"tags": ["t"], "summary": "<b>", "responses": {"200": {"description": "ok"}}}}}
        });
        let html = render_html(&doc);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;b&gt;"));
        assert!(!html.contains("src="), "nothing is fetched");
    }
}
