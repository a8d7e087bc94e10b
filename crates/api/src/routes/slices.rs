//! The catalog, as clients see it.

use actix_web::{web, HttpRequest, HttpResponse};
use logport_catalog::{FilterOp, Slice};
use serde_json::json;

use super::param;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    get,
    path = "/v1/slices",
    operation_id = "list_slices",
    tag = "catalog",
    summary = "The slices that can be ingested and exported",
    description = "Readable with any scope: the catalog holds no customer data.",
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "The catalog", body = crate::openapi::schemas::SliceList),
        crate::openapi::V1Errors,
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/slices/{slice}",
    operation_id = "get_slice",
    tag = "catalog",
    summary = "A slice: its fields, their types and filter operators",
    params(
        ("slice" = String, Path, description = "A slice of GET /v1/slices")
    ),
    security(("bearer" = []), ("oauth" = [])),
    responses(
        (status = 200, description = "The slice", body = crate::openapi::schemas::SliceInfo),
        (status = 404, description = "Unknown slice"),
        crate::openapi::V1Errors,
    )
)]
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
        "dedup_key": s.dedup_key(),
        "fields": fields,
    })
}
