//! `/api/v1/audit-events`: the audit log, paginated and filterable, and its export as
//! JSON Lines.

use app::audit::{AuditFilter, AuditPage};
use atelier_core::audit::Query;
use atelier_core::iam::admin;
use atelier_core::CoreError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query as QueryParams, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::Auth;
use crate::state::AppState;

fn filter(params: Result<QueryParams<AuditFilter>, QueryRejection>) -> Result<Query, ApiError> {
    let QueryParams(f) = params.map_err(|e| ApiError(CoreError::invalid("query", e.body_text())))?;
    Ok(f.into())
}

/// Events matching the filters, newest first; pass `next` as `before` for older ones.
#[utoipa::path(get, path = "/api/v1/audit-events", tag = "audit", params(AuditFilter),
    responses((status = 200, body = AuditPage), (status = 403, body = ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    Auth(principal): Auth,
    params: Result<QueryParams<AuditFilter>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let query = filter(params)?;
    Ok(Json(admin::audit_events(&state.db, &principal, &query).await?.into()))
}

/// Every event matching the filters (oldest pages last), one JSON object per line.
#[utoipa::path(get, path = "/api/v1/audit-events/export", tag = "audit", params(AuditFilter),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 403, body = ErrorBody)))]
pub async fn export_events(
    State(state): State<AppState>,
    Auth(principal): Auth,
    params: Result<QueryParams<AuditFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mut query = filter(params)?;
    query.limit = Some(1000);
    let mut out = String::new();
    loop {
        let page = admin::audit_events(&state.db, &principal, &query).await?;
        for event in &page.events {
            out.push_str(&serde_json::to_string(event).map_err(CoreError::internal)?);
            out.push('\n');
        }
        match page.next {
            Some(cursor) => query.before = Some(cursor),
            None => break,
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"atelier-audit.jsonl\""),
        ],
        out,
    )
        .into_response())
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events)).routes(routes!(export_events))
}
