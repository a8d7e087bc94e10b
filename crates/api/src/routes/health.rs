//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use logport_queue::Scope;
use serde_json::json;

use crate::auth::Caller;
use crate::AppState;

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    summary = "Liveness: the process answers",
    responses(
        (status = 200, description = "Up", body = crate::openapi::schemas::Health),
    )
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Every dependency answers: ClickHouse, the job store, the object store. Anyone may
/// ask, and learns which check failed; why (backend error text, which can name hosts
/// and users) is shown only to an admin token, and logged.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    summary = "Readiness: ClickHouse, the job store and the object store answer",
    description = "The result of one probe of the backends is reused for a second, and only one probe runs at a time. Each check's `error` is shown to admin tokens only.",
    responses(
        (status = 200, description = "Every dependency answers", body = crate::openapi::schemas::Readiness),
        (status = 503, description = "A dependency does not answer", body = crate::openapi::schemas::Readiness),
    )
)]
pub async fn readyz(state: web::Data<AppState>, caller: Option<Caller>) -> HttpResponse {
    let probe = state.readiness.current(&state).await;
    let detail = caller.is_some_and(|c| c.has(Scope::Admin));
    let show = |error: &Option<String>| match error {
        None => json!({"ok": true}),
        Some(e) if detail => json!({"ok": false, "error": e}),
        Some(_) => json!({"ok": false}),
    };
    let ok = probe.ok();
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": {
            "clickhouse": show(&probe.clickhouse),
            "job_store": show(&probe.job_store),
            "object_store": show(&probe.object_store),
        }
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus' scrape: this process's metrics, plus the job store's jobs by state
/// (every replica reports the same shared counts; aggregate them with `max`).
pub async fn metrics(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, crate::ApiError> {
    let Some(endpoint) = &state.metrics else {
        return Err(crate::ApiError::not_found("path /metrics"));
    };
    if let Some(token) = &endpoint.token {
        let sent = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(sent.trim().as_bytes(), token.as_bytes()) {
            return Err(crate::ApiError::Unauthorized(
                "/metrics needs the metrics token (Authorization: Bearer …)".into(),
            ));
        }
    }
    match state.jobs.count_by_status().await {
        Ok(counts) => {
            for status in logport_queue::JobStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("logport_jobs", "state" => status.as_str()).set(n as f64);
            }
            metrics::gauge!("logport_job_store_up").set(1.0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot count jobs for /metrics");
            metrics::gauge!("logport_job_store_up").set(0.0);
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body((endpoint.render)()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
