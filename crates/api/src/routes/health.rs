//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

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

/// Every dependency answers: ClickHouse, the job store, the object store.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    summary = "Readiness: ClickHouse, the job store and the object store answer",
    responses(
        (status = 200, description = "Every dependency answers", body = crate::openapi::schemas::Readiness),
        (status = 503, description = "A dependency does not answer", body = crate::openapi::schemas::Readiness),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (ch, jobs, files) = tokio::join!(state.store.ping(), state.jobs.ping(), state.files.ping());
    let show = |r: Result<(), String>| match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let ok = ch.is_ok() && jobs.is_ok() && files.is_ok();
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": {
            "clickhouse": show(ch.map_err(|e| e.to_string())),
            "job_store": show(jobs.map_err(|e| e.to_string())),
            "object_store": show(files.map_err(|e| e.to_string())),
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
