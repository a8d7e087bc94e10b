//! `GET /openapi.json` and `GET /docs`: the API described by its own code.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use utoipa::OpenApi;

use crate::openapi::{self, schemas, Common};
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Logport",
        description = "A self-hosted Logs API: raw events in ClickHouse, exported on demand \
                       as CSV, TSV, JSON lines, JSON or Parquet files.\n\nAuthenticate with \
                       `Authorization: Bearer <token>` (or `OAuth <token>`). Tokens carry \
                       scopes — ingest, export, admin — and may be limited to apps; every \
                       answer is scoped to the token's tenant, and another tenant's (or \
                       app's) export answers 404. Errors of /v1 are application/problem+json; \
                       the AppMetrica and Metrica compatible endpoints answer in their own \
                       protocols' formats."
    ),
    paths(
        super::health::healthz,
        super::health::readyz,
        metrics_doc,
        openapi_json,
        docs_page,
        ui_index_doc,
        ui_asset_doc,
        super::slices::list,
        super::slices::get,
        super::ingest::ingest,
        super::exports::create,
        super::exports::list,
        super::exports::evaluate,
        super::exports::get,
        super::exports::delete,
        super::exports::cancel,
        super::exports::manifest,
        super::exports::part,
        super::exports::preview,
        super::appmetrica::export,
        super::appmetrica::status,
        super::metrica::evaluate,
        super::metrica::create,
        super::metrica::list,
        super::metrica::info,
        super::metrica::download,
        super::metrica::clean,
        super::metrica::cancel,
    ),
    components(schemas(
        schemas::Problem,
        schemas::LineProblem,
        logport_catalog::ExportRequest,
        logport_catalog::spec::FilterRequest,
        logport_catalog::spec::BucketRequest,
        logport_queue::JobStatus,
        logport_queue::Progress,
        logport_queue::JobError,
    )),
    modifiers(&Common),
    tags(
        (name = "ingest", description = "Writing events (scope ingest)."),
        (name = "exports", description = "Exports, their files, estimates and previews (scope export)."),
        (name = "catalog", description = "The slices and their fields (any scope)."),
        (name = "appmetrica", description = "AppMetrica's Logs API protocol, on the same catalog and queue (scope export)."),
        (name = "metrica", description = "Metrica's log requests protocol, on the same catalog and queue (scope export)."),
        (name = "health", description = "Liveness, readiness, metrics."),
        (name = "docs", description = "This document."),
        (name = "ui", description = "The web UI (a client of this API)."),
    )
)]
pub struct ApiDoc;

/// The document of this server (the code's, with its catalog's names), made once.
pub fn document(state: &AppState) -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| openapi::with_catalog(&ApiDoc::openapi(), &state.catalog))
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "docs",
    summary = "This API's OpenAPI 3.1 document",
    responses((status = 200, description = "The document", body = Object))
)]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(document(&state))
}

#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "docs",
    summary = "This API's documentation, as a web page",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
pub async fn docs_page(state: web::Data<AppState>) -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| openapi::render_html(document(&state)));
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ))
        .body(page.clone())
}

// Endpoints whose handlers live elsewhere (the UI, the metrics endpoint), described
// here so the document lists every route.

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    summary = "Prometheus metrics",
    description = "When LOGPORT_METRICS_TOKEN is set, it must be sent as `Authorization: Bearer`.",
    responses(
        (status = 200, description = "The metrics, in Prometheus' text format", body = String, content_type = "text/plain"),
        (status = 401, description = "The metrics token is required"),
        (status = 404, description = "Metrics are not enabled"),
    )
)]
#[allow(dead_code)]
fn metrics_doc() {}

#[utoipa::path(
    get,
    path = "/",
    operation_id = "ui_page",
    tag = "ui",
    summary = "The web UI",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified (If-None-Match)"),
    )
)]
#[allow(dead_code)]
fn ui_index_doc() {}

#[utoipa::path(
    get,
    path = "/ui/{file}",
    operation_id = "ui_asset",
    tag = "ui",
    summary = "An asset of the web UI",
    params(("file" = String, Path, description = "app.js or app.css")),
    responses(
        (status = 200, description = "The asset", content(("text/javascript"), ("text/css"))),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "No such asset"),
    )
)]
#[allow(dead_code)]
fn ui_asset_doc() {}
