//! `/api/v1/model-groups`: the model registry's groups.

use app::models::ModelGroupInfo;
use atelier_core::models;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Body of `POST /api/v1/model-groups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelGroupRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// Model groups the caller may read.
#[utoipa::path(get, path = "/api/v1/model-groups", tag = "models",
    responses((status = 200, body = Vec<ModelGroupInfo>), (status = 403, body = ErrorBody)))]
pub async fn list_groups(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Json<Vec<ModelGroupInfo>>, ApiError> {
    Ok(Json(models::list_groups(&state.db, &principal).await?.into_iter().map(ModelGroupInfo::from).collect()))
}

/// Creates a model group.
#[utoipa::path(post, path = "/api/v1/model-groups", tag = "models", request_body = CreateModelGroupRequest,
    responses((status = 201, body = ModelGroupInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_group(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateModelGroupRequest>,
) -> Result<(StatusCode, Json<ModelGroupInfo>), ApiError> {
    let group = models::create_group(&state.db, &principal, &body.name, &body.description).await?;
    Ok((StatusCode::CREATED, Json(group.into())))
}

/// One model group.
#[utoipa::path(get, path = "/api/v1/model-groups/{group}", tag = "models",
    params(("group" = String, Path, description = "Model group name")),
    responses((status = 200, body = ModelGroupInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_group(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group): Path<String>,
) -> Result<Json<ModelGroupInfo>, ApiError> {
    Ok(Json(models::get_group(&state.db, &principal, &group).await?.into()))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_groups, create_group)).routes(routes!(get_group))
}
