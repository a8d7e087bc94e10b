//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::AppState;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Every dependency answers: ClickHouse, the job store, the object store.
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
