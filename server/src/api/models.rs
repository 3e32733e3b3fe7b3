//! `/api/v1/model-groups` and `/api/v1/model-approvals`: the model registry — groups,
//! versions, approval decisions and their timeline, aliases, and the reviewer inbox.

use std::collections::BTreeMap;

use atelier_core::models::{self, approvals, versions, webhooks, NewGroup};
use atelier_protocol::models::{
    Decision, Delivery, ModelGroup, ModelVersion, PendingVersion, RegisterVersion, VersionEvent, Webhook,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::training::artifact_response;
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Body of `POST /api/v1/model-groups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelGroupRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Distinct approvals a version needs (1-10, default 1).
    #[serde(default)]
    pub required_approvals: Option<i64>,
}

/// Body of `PATCH /api/v1/model-groups/{group}`: what is given changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModelGroupRequest {
    #[serde(default)]
    pub description: Option<String>,
    /// Replaces all tags.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub required_approvals: Option<i64>,
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Body of `PATCH .../versions/{version}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVersionRequest {
    #[serde(default)]
    pub description: Option<String>,
    /// Replaces all tags.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
}

/// Body of `PUT .../aliases/{alias}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasRequest {
    pub version: i64,
}

/// Body of `POST /api/v1/model-webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// The model group to watch; omit for every group (studio-wide).
    #[serde(default)]
    pub group: Option<String>,
    pub url: String,
    /// `model_version.created`, `model_version.status_changed` and/or
    /// `endpoint.alarm_changed` (default: all three).
    #[serde(default)]
    pub events: Vec<String>,
}

/// A new webhook with its signing secret, shown only now.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub webhook: Webhook,
    /// Deliveries carry `X-Atelier-Signature: sha256=<hex HMAC-SHA256 of the body under this secret>`.
    pub secret: String,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WebhookScope {
    /// A model group; omit for the studio-wide webhooks.
    pub group: Option<String>,
}

/// The status a decision led to.
#[derive(Debug, Serialize, ToSchema)]
pub struct Decided {
    pub status: String,
}

/// A group's deployment rule.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRule {
    /// The endpoint each newly approved version is deployed to (null: no rule).
    pub endpoint: Option<String>,
}

type GroupPath = Path<String>;
type VersionPath = Path<(String, i64)>;

/// Model groups the caller may read, with their latest and approved versions.
#[utoipa::path(get, path = "/api/v1/model-groups", tag = "models",
    responses((status = 200, body = Vec<ModelGroup>), (status = 403, body = ErrorBody)))]
pub async fn list_groups(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<ModelGroup>>, ApiError> {
    Ok(Json(models::list_groups(&state.db, &p).await?))
}

/// Creates a model group.
#[utoipa::path(post, path = "/api/v1/model-groups", tag = "models", request_body = CreateModelGroupRequest,
    responses((status = 201, body = ModelGroup), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_group(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<CreateModelGroupRequest>,
) -> Result<(StatusCode, Json<ModelGroup>), ApiError> {
    let new = NewGroup {
        name: &body.name,
        description: &body.description,
        tags: body.tags,
        required_approvals: body.required_approvals,
    };
    Ok((StatusCode::CREATED, Json(models::create_group(&state.db, &p, new).await?)))
}

/// One model group.
#[utoipa::path(get, path = "/api/v1/model-groups/{group}", tag = "models",
    params(("group" = String, Path, description = "Model group name")),
    responses((status = 200, body = ModelGroup), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_group(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(group): GroupPath,
) -> Result<Json<ModelGroup>, ApiError> {
    Ok(Json(models::get_group(&state.db, &p, &group).await?))
}

/// Changes a group's description, tags, quorum or name.
#[utoipa::path(patch, path = "/api/v1/model-groups/{group}", tag = "models", request_body = UpdateModelGroupRequest,
    params(("group" = String, Path, description = "Model group name")),
    responses((status = 200, body = ModelGroup), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_group(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(group): GroupPath,
    ApiJson(body): ApiJson<UpdateModelGroupRequest>,
) -> Result<Json<ModelGroup>, ApiError> {
    let view = models::update_group(
        &state.db,
        &p,
        &group,
        body.name.as_deref(),
        body.description.as_deref(),
        body.tags.as_ref(),
        body.required_approvals,
    )
    .await?;
    Ok(Json(view))
}

/// Deletes a group and all its versions.
#[utoipa::path(delete, path = "/api/v1/model-groups/{group}", tag = "models",
    params(("group" = String, Path, description = "Model group name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_group(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(group): GroupPath,
) -> Result<StatusCode, ApiError> {
    models::delete_group(&state.db, &p, &group).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A group's versions, newest first.
#[utoipa::path(get, path = "/api/v1/model-groups/{group}/versions", tag = "models",
    params(("group" = String, Path, description = "Model group name")),
    responses((status = 200, body = Vec<ModelVersion>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_versions(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(group): GroupPath,
) -> Result<Json<Vec<ModelVersion>>, ApiError> {
    Ok(Json(versions::list(&state.db, &p, &group).await?))
}

/// Registers a version from a completed training job or an uploaded artifact; it
/// starts `PendingManualApproval`.
#[utoipa::path(post, path = "/api/v1/model-groups/{group}/versions", tag = "models", request_body = RegisterVersion,
    params(("group" = String, Path, description = "Model group name")),
    responses((status = 201, body = ModelVersion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn register_version(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(group): GroupPath,
    ApiJson(body): ApiJson<RegisterVersion>,
) -> Result<(StatusCode, Json<ModelVersion>), ApiError> {
    Ok((StatusCode::CREATED, Json(versions::register(&state.db, &p, &group, body).await?)))
}

/// One version.
#[utoipa::path(get, path = "/api/v1/model-groups/{group}/versions/{version}", tag = "models",
    params(("group" = String, Path, description = "Model group name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = ModelVersion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_version(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((group, version)): VersionPath,
) -> Result<Json<ModelVersion>, ApiError> {
    Ok(Json(versions::get(&state.db, &p, &group, version).await?))
}

/// Changes a version's description or tags.
#[utoipa::path(patch, path = "/api/v1/model-groups/{group}/versions/{version}", tag = "models", request_body = UpdateVersionRequest,
    params(("group" = String, Path, description = "Model group name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = ModelVersion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_version(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((group, version)): VersionPath,
    ApiJson(body): ApiJson<UpdateVersionRequest>,
) -> Result<Json<ModelVersion>, ApiError> {
    Ok(Json(versions::update(&state.db, &p, &group, version, body.description.as_deref(), body.tags.as_ref()).await?))
}

/// Deletes a version.
#[utoipa::path(delete, path = "/api/v1/model-groups/{group}/versions/{version}", tag = "models",
    params(("group" = String, Path, description = "Model group name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_version(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((group, version)): VersionPath,
) -> Result<StatusCode, ApiError> {
    versions::delete(&state.db, &p, &group, version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Approves or rejects a version (`models:UpdateModelApprovalStatus`). A group with a
/// quorum needs that many distinct approvals; a stale `expected_status` or a
/// concurrent decision is 409.
#[utoipa::path(post, path = "/api/v1/model-groups/{group}/versions/{version}/approval", tag = "models", request_body = Decision,
    params(("group" = String, Path, description = "Model group name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = Decided), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn decide(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((group, version)): VersionPath,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Json<Decided>, ApiError> {
    let status = approvals::decide(&state.db, &p, &group, version, &body).await?;
    Ok(Json(Decided { status }))
}

/// A version's timeline: registration and every decision, oldest first.
#[utoipa::path(get, path = "/api/v1/model-groups/{group}/versions/{version}/timeline", tag = "models",
    params(("group" = String, Path, description = "Model group name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = Vec<VersionEvent>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn timeline(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((group, version)): VersionPath,
) -> Result<Json<Vec<VersionEvent>>, ApiError> {
    Ok(Json(approvals::timeline(&state.db, &p, &group, version).await?))
}

/// A version's model artifact, streamed.
#[utoipa::path(get, path = "/api/v1/model-groups/{group}/versions/{version}/artifact", tag = "models",
    params(("group" = String, Path, description = "Model group name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((group, version)): VersionPath,
) -> Result<Response, ApiError> {
    let row = versions::get_for(&state.db, &p, &group, version, atelier_core::authz::Action::GetModelVersion).await?;
    let artifact = atelier_core::artifacts::get(&state.db, &row.artifact_id).await?;
    artifact_response(&state, artifact).await
}

/// Points an alias of the group at a version.
#[utoipa::path(put, path = "/api/v1/model-groups/{group}/aliases/{alias}", tag = "models", request_body = AliasRequest,
    params(("group" = String, Path, description = "Model group name"), ("alias" = String, Path, description = "Alias")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_alias(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((group, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<AliasRequest>,
) -> Result<StatusCode, ApiError> {
    versions::set_alias(&state.db, &p, &group, &alias, body.version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an alias.
#[utoipa::path(delete, path = "/api/v1/model-groups/{group}/aliases/{alias}", tag = "models",
    params(("group" = String, Path, description = "Model group name"), ("alias" = String, Path, description = "Alias")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_alias(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((group, alias)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    versions::delete_alias(&state.db, &p, &group, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The reviewer inbox: pending versions the caller may decide on, oldest first.
#[utoipa::path(get, path = "/api/v1/model-approvals", tag = "models",
    responses((status = 200, body = Vec<PendingVersion>), (status = 403, body = ErrorBody)))]
pub async fn inbox(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<PendingVersion>>, ApiError> {
    Ok(Json(approvals::inbox(&state.db, &p).await?))
}

/// Adds a webhook for a group (or every group); deliveries are signed and retried.
#[utoipa::path(post, path = "/api/v1/model-webhooks", tag = "models", request_body = CreateWebhookRequest,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let (webhook, secret) =
        webhooks::create(&state.db, &p, &state.outbound, body.group.as_deref(), &body.url, &body.events).await?;
    Ok((StatusCode::CREATED, Json(CreatedWebhook { webhook, secret })))
}

/// The webhooks of a group, or the studio-wide ones.
#[utoipa::path(get, path = "/api/v1/model-webhooks", tag = "models", params(WebhookScope),
    responses((status = 200, body = Vec<Webhook>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<WebhookScope>,
) -> Result<Json<Vec<Webhook>>, ApiError> {
    Ok(Json(webhooks::list(&state.db, &p, q.group.as_deref()).await?))
}

/// Removes a webhook (its pending deliveries are dropped).
#[utoipa::path(delete, path = "/api/v1/model-webhooks/{id}", tag = "models",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    webhooks::delete(&state.db, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's deliveries, newest first: status, attempts, the last answer.
#[utoipa::path(get, path = "/api/v1/model-webhooks/{id}/deliveries", tag = "models",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = Vec<Delivery>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    Ok(Json(webhooks::deliveries(&state.db, &p, &id, 100).await?))
}

/// The group's deployment rule.
#[utoipa::path(get, path = "/api/v1/model-groups/{group}/deployment-rule", tag = "models",
    params(("group" = String, Path, description = "Model group name")),
    responses((status = 200, body = DeploymentRule), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_deployment_rule(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(group): GroupPath,
) -> Result<Json<DeploymentRule>, ApiError> {
    Ok(Json(DeploymentRule { endpoint: atelier_core::endpoints::rules::get(&state.db, &p, &group).await? }))
}

/// Sets the group's deployment rule: each newly approved version is deployed to the
/// endpoint (its first variant, blue/green); rejecting the version it serves rolls it
/// back to the latest earlier Approved one. Acts as the caller, who needs
/// `endpoints:UpdateEndpoint` on the endpoint.
#[utoipa::path(put, path = "/api/v1/model-groups/{group}/deployment-rule", tag = "models", request_body = DeploymentRule,
    params(("group" = String, Path, description = "Model group name")),
    responses((status = 200, body = DeploymentRule), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_deployment_rule(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(group): GroupPath,
    ApiJson(body): ApiJson<DeploymentRule>,
) -> Result<Json<DeploymentRule>, ApiError> {
    let endpoint = atelier_core::endpoints::rules::set(&state.db, &p, &group, body.endpoint.as_deref()).await?;
    Ok(Json(DeploymentRule { endpoint }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(list_versions, register_version))
        .routes(routes!(get_version, update_version, delete_version))
        .routes(routes!(decide))
        .routes(routes!(timeline))
        .routes(routes!(download))
        .routes(routes!(set_alias, delete_alias))
        .routes(routes!(inbox))
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(deliveries))
        .routes(routes!(get_deployment_rule, set_deployment_rule))
}
