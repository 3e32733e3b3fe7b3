//! `/api/v1/groups`, `/api/v1/policies` and `/api/v1/iam/*`: access administration,
//! the catalogue and the policy simulator.

use app::iam::{Catalogue, GroupDetail, GroupInfo, PolicyDetail, PolicyInfo, SimulationResult};
use atelier_core::authz::{authorize, Action, Resource};
use atelier_core::iam::admin;
use atelier_core::iam::simulate::SimulationRequest;
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

type ApiResult<T> = Result<T, ApiError>;

/// Body of `POST /api/v1/groups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// Body of `PATCH /api/v1/groups/{group}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    pub description: String,
}

/// A policy document: either a JSON object or the same as a string.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DocumentBody {
    Text(String),
    #[schema(value_type = Object)]
    Json(serde_json::Value),
}

impl DocumentBody {
    fn text(&self) -> String {
        match self {
            DocumentBody::Text(t) => t.clone(),
            DocumentBody::Json(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        }
    }
}

/// Body of `POST /api/v1/policies`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicyRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub document: DocumentBody,
}

/// Body of `PATCH /api/v1/policies/{policy}`: a new version (which becomes the default)
/// and/or a new description.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicyRequest {
    pub document: Option<DocumentBody>,
    pub description: Option<String>,
}

/// Body of `PUT /api/v1/policies/{policy}/default-version`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultVersionRequest {
    pub version: i64,
}

/// Body of `POST /api/v1/iam/simulate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    pub username: String,
    /// `service:Verb`.
    pub action: String,
    /// Resource name, such as `atelier:models:group/fraud/version/3`.
    pub resource: String,
    /// Condition keys and values, such as `{"atelier:ResourceCreator": "bob"}`.
    #[serde(default)]
    pub context: std::collections::BTreeMap<String, String>,
}

/// Every action, resource type and condition key that policies may use.
#[utoipa::path(get, path = "/api/v1/iam/catalogue", tag = "iam", responses((status = 200, body = Catalogue)))]
pub async fn get_catalogue(Auth(principal): Auth) -> ApiResult<Json<Catalogue>> {
    authorize(&principal, Action::GetCatalogue, &Resource::new("atelier:iam:catalogue"))?;
    Ok(Json(Catalogue::new()))
}

/// Runs the policy simulator: the decision and the statement that made it.
#[utoipa::path(post, path = "/api/v1/iam/simulate", tag = "iam", request_body = SimulateRequest,
    responses((status = 200, body = SimulationResult), (status = 422, body = ErrorBody)))]
pub async fn simulate(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<SimulateRequest>,
) -> ApiResult<Json<SimulationResult>> {
    let request = SimulationRequest {
        username: body.username,
        action: body.action,
        resource: body.resource,
        context: body.context.into_iter().collect(),
    };
    Ok(Json(admin::simulate(&state.db, &principal, &request).await?.into()))
}

/// All groups.
#[utoipa::path(get, path = "/api/v1/groups", tag = "iam", responses((status = 200, body = Vec<GroupInfo>)))]
pub async fn list_groups(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<GroupInfo>>> {
    Ok(Json(admin::list_groups(&state.db, &principal).await?.into_iter().map(GroupInfo::from).collect()))
}

/// Creates a group.
#[utoipa::path(post, path = "/api/v1/groups", tag = "iam", request_body = CreateGroupRequest,
    responses((status = 201, body = GroupDetail), (status = 409, body = ErrorBody)))]
pub async fn create_group(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<GroupDetail>)> {
    let group = admin::create_group(&state.db, &principal, &body.name, &body.description).await?;
    Ok((StatusCode::CREATED, Json(group.into())))
}

/// A group with its members and policies.
#[utoipa::path(get, path = "/api/v1/groups/{group}", tag = "iam",
    params(("group" = String, Path, description = "Group name")),
    responses((status = 200, body = GroupDetail), (status = 404, body = ErrorBody)))]
pub async fn get_group(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group): Path<String>,
) -> ApiResult<Json<GroupDetail>> {
    Ok(Json(admin::get_group(&state.db, &principal, &group).await?.into()))
}

/// Changes a group's description.
#[utoipa::path(patch, path = "/api/v1/groups/{group}", tag = "iam", request_body = UpdateGroupRequest,
    params(("group" = String, Path, description = "Group name")),
    responses((status = 200, body = GroupDetail), (status = 404, body = ErrorBody)))]
pub async fn update_group(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group): Path<String>,
    ApiJson(body): ApiJson<UpdateGroupRequest>,
) -> ApiResult<Json<GroupDetail>> {
    Ok(Json(admin::update_group(&state.db, &principal, &group, &body.description).await?.into()))
}

/// Deletes a group.
#[utoipa::path(delete, path = "/api/v1/groups/{group}", tag = "iam",
    params(("group" = String, Path, description = "Group name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_group(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(group): Path<String>,
) -> ApiResult<StatusCode> {
    admin::delete_group(&state.db, &principal, &group).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a user to a group.
#[utoipa::path(put, path = "/api/v1/groups/{group}/members/{user}", tag = "iam",
    params(("group" = String, Path, description = "Group name"), ("user" = String, Path, description = "User id or username")),
    responses((status = 200, body = GroupDetail), (status = 404, body = ErrorBody)))]
pub async fn add_member(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((group, user)): Path<(String, String)>,
) -> ApiResult<Json<GroupDetail>> {
    Ok(Json(admin::set_member(&state.db, &principal, &group, &user, true).await?.into()))
}

/// Removes a user from a group.
#[utoipa::path(delete, path = "/api/v1/groups/{group}/members/{user}", tag = "iam",
    params(("group" = String, Path, description = "Group name"), ("user" = String, Path, description = "User id or username")),
    responses((status = 200, body = GroupDetail), (status = 404, body = ErrorBody)))]
pub async fn remove_member(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((group, user)): Path<(String, String)>,
) -> ApiResult<Json<GroupDetail>> {
    Ok(Json(admin::set_member(&state.db, &principal, &group, &user, false).await?.into()))
}

/// Attaches a policy to a group.
#[utoipa::path(put, path = "/api/v1/groups/{group}/policies/{policy}", tag = "iam",
    params(("group" = String, Path, description = "Group name"), ("policy" = String, Path, description = "Policy name")),
    responses((status = 200, body = GroupDetail), (status = 404, body = ErrorBody)))]
pub async fn attach_group_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((group, policy)): Path<(String, String)>,
) -> ApiResult<Json<GroupDetail>> {
    Ok(Json(admin::set_group_policy(&state.db, &principal, &group, &policy, true).await?.into()))
}

/// Detaches a policy from a group.
#[utoipa::path(delete, path = "/api/v1/groups/{group}/policies/{policy}", tag = "iam",
    params(("group" = String, Path, description = "Group name"), ("policy" = String, Path, description = "Policy name")),
    responses((status = 200, body = GroupDetail), (status = 404, body = ErrorBody)))]
pub async fn detach_group_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((group, policy)): Path<(String, String)>,
) -> ApiResult<Json<GroupDetail>> {
    Ok(Json(admin::set_group_policy(&state.db, &principal, &group, &policy, false).await?.into()))
}

/// All policies, built-in first.
#[utoipa::path(get, path = "/api/v1/policies", tag = "iam", responses((status = 200, body = Vec<PolicyInfo>)))]
pub async fn list_policies(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<PolicyInfo>>> {
    Ok(Json(admin::list_policies(&state.db, &principal).await?.into_iter().map(PolicyInfo::from).collect()))
}

/// Creates a customer-managed policy. An invalid document is refused with a 400 that
/// names the statement and the reason.
#[utoipa::path(post, path = "/api/v1/policies", tag = "iam", request_body = CreatePolicyRequest,
    responses((status = 201, body = PolicyDetail), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreatePolicyRequest>,
) -> ApiResult<(StatusCode, Json<PolicyDetail>)> {
    let detail =
        admin::create_policy(&state.db, &principal, &body.name, &body.description, &body.document.text()).await?;
    Ok((StatusCode::CREATED, Json(detail.into())))
}

/// A policy: its default document, every version and who holds it.
#[utoipa::path(get, path = "/api/v1/policies/{policy}", tag = "iam",
    params(("policy" = String, Path, description = "Policy name")),
    responses((status = 200, body = PolicyDetail), (status = 404, body = ErrorBody)))]
pub async fn get_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(policy): Path<String>,
) -> ApiResult<Json<PolicyDetail>> {
    Ok(Json(admin::get_policy(&state.db, &principal, &policy).await?.into()))
}

/// Adds a version (which becomes the default) and/or changes the description. An
/// invalid document is refused and the stored policy stays as it was.
#[utoipa::path(patch, path = "/api/v1/policies/{policy}", tag = "iam", request_body = UpdatePolicyRequest,
    params(("policy" = String, Path, description = "Policy name")),
    responses((status = 200, body = PolicyDetail), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(policy): Path<String>,
    ApiJson(body): ApiJson<UpdatePolicyRequest>,
) -> ApiResult<Json<PolicyDetail>> {
    let document = body.document.as_ref().map(DocumentBody::text);
    let detail =
        admin::update_policy(&state.db, &principal, &policy, document.as_deref(), body.description.as_deref()).await?;
    Ok(Json(detail.into()))
}

/// Makes another stored version the default (rollback).
#[utoipa::path(put, path = "/api/v1/policies/{policy}/default-version", tag = "iam", request_body = DefaultVersionRequest,
    params(("policy" = String, Path, description = "Policy name")),
    responses((status = 200, body = PolicyDetail), (status = 404, body = ErrorBody)))]
pub async fn set_default_version(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(policy): Path<String>,
    ApiJson(body): ApiJson<DefaultVersionRequest>,
) -> ApiResult<Json<PolicyDetail>> {
    Ok(Json(admin::set_default_version(&state.db, &principal, &policy, body.version).await?.into()))
}

/// Deletes a customer-managed policy that is attached to nobody.
#[utoipa::path(delete, path = "/api/v1/policies/{policy}", tag = "iam",
    params(("policy" = String, Path, description = "Policy name")),
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn delete_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(policy): Path<String>,
) -> ApiResult<StatusCode> {
    admin::delete_policy(&state.db, &principal, &policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_catalogue))
        .routes(routes!(simulate))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(add_member, remove_member))
        .routes(routes!(attach_group_policy, detach_group_policy))
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, update_policy, delete_policy))
        .routes(routes!(set_default_version))
}
