//! The catalog, as clients see it.

use actix_web::{web, HttpRequest, HttpResponse};
use logport_catalog::{FilterOp, Slice};
use serde_json::json;

use super::param;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

pub async fn list(_caller: Caller, state: web::Data<AppState>) -> HttpResponse {
    let slices: Vec<_> = state
        .catalog
        .slices()
        .map(|s| {
            json!({
                "name": s.name,
                "description": s.description,
                "group": s.group,
                "retention_days": s.retention_days,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "slices": slices }))
}

pub async fn get(
    req: HttpRequest,
    _caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = param(&req, "slice");
    let slice = state
        .catalog
        .slice(name)
        .ok_or_else(|| ApiError::UnknownSlice(name.to_string()))?;
    Ok(HttpResponse::Ok().json(describe(slice)))
}

fn describe(s: &Slice) -> serde_json::Value {
    let fields: Vec<_> = s
        .fields
        .iter()
        .map(|f| {
            let mut v = json!({
                "name": f.name,
                "type": f.ty.to_string(),
                "description": f.description,
                "filterable": f.filterable,
                "default": f.default,
                "required": f.required,
            });
            if f.filterable {
                v["ops"] = json!(FilterOp::valid_for(&f.ty)
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>());
            }
            v
        })
        .collect();
    json!({
        "name": s.name,
        "description": s.description,
        "group": s.group,
        "retention_days": s.retention_days,
        "fields": fields,
    })
}
