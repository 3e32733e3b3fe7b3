//! `/api/v1/me` and `/api/v1/users`: the caller's account and user administration.
//! A `{user}` path segment is a user id or a username.

use app::users::UserInfo;
use atelier_core::accounts::{self, NewUser};
use atelier_core::authz::{authorize, Action, Credential, Resource};
use atelier_core::iam::admin;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use tower_sessions::Session;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Body of `PUT /api/v1/me/password`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    pub password: String,
    /// Policies to attach (needs `iam:AttachPolicy` on each).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Groups to join (needs `iam:UpdateGroup` on each).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Body of `PATCH /api/v1/users/{user}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// `false` deactivates: the user's sessions and tokens stop working at once.
    pub active: Option<bool>,
}

/// Body of `PUT /api/v1/users/{user}/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    pub password: String,
}

type ApiResult<T> = Result<T, ApiError>;

/// The caller's own account.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses((status = 200, body = UserInfo), (status = 401, body = ErrorBody)))]
pub async fn get_me(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<UserInfo>> {
    Ok(Json(admin::get_user(&state.db, &principal, &principal.user.id).await?.into()))
}

/// Changes the caller's password. Their other browser sessions end.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "accounts", request_body = ChangePasswordRequest,
    responses((status = 204), (status = 422, body = ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    Auth(principal): Auth,
    session: Option<Extension<Session>>,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    authorize(&principal, Action::ChangePassword, &Resource::user(&principal.user.username))?;
    let keep = match principal.via {
        Credential::Session => session.and_then(|Extension(s)| s.id()).map(|id| id.to_string()),
        Credential::ApiToken(_) => None,
    };
    accounts::change_password(&state.db, &principal.user, &body.current_password, &body.new_password, keep.as_deref())
        .await?;
    principal.note_change("changed own password");
    Ok(StatusCode::NO_CONTENT)
}

/// All users, with their directly attached policies and groups.
#[utoipa::path(get, path = "/api/v1/users", tag = "accounts",
    responses((status = 200, body = Vec<UserInfo>), (status = 403, body = ErrorBody)))]
pub async fn list_users(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<UserInfo>>> {
    let users = admin::list_users(&state.db, &principal).await?;
    Ok(Json(users.into_iter().map(UserInfo::from).collect()))
}

/// Creates a user, optionally attaching policies and joining groups.
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = CreateUserRequest,
    responses((status = 201, body = UserInfo), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    let new = NewUser {
        username: body.username,
        display_name: body.display_name,
        password: body.password,
        policies: body.policies,
        groups: body.groups,
    };
    let user = admin::create_user(&state.db, &principal, new).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{user}", tag = "accounts",
    params(("user" = String, Path, description = "User id or username")),
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(user): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    Ok(Json(admin::get_user(&state.db, &principal, &user).await?.into()))
}

/// Updates a user (activation).
#[utoipa::path(patch, path = "/api/v1/users/{user}", tag = "accounts", request_body = UpdateUserRequest,
    params(("user" = String, Path, description = "User id or username")),
    responses((status = 200, body = UserInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(user): Path<String>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<UserInfo>> {
    let record = match body.active {
        Some(active) => admin::set_active(&state.db, &principal, &user, active).await?,
        None => admin::get_user(&state.db, &principal, &user).await?,
    };
    Ok(Json(record.into()))
}

/// Sets a user's password (an administrator's reset); the user's sessions end.
#[utoipa::path(put, path = "/api/v1/users/{user}/password", tag = "accounts", request_body = ResetPasswordRequest,
    params(("user" = String, Path, description = "User id or username")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reset_password(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(user): Path<String>,
    ApiJson(body): ApiJson<ResetPasswordRequest>,
) -> ApiResult<StatusCode> {
    admin::reset_password(&state.db, &principal, &user, &body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attaches a policy to a user.
#[utoipa::path(put, path = "/api/v1/users/{user}/policies/{policy}", tag = "accounts",
    params(("user" = String, Path, description = "User id or username"), ("policy" = String, Path, description = "Policy name")),
    responses((status = 200, body = UserInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn attach_user_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((user, policy)): Path<(String, String)>,
) -> ApiResult<Json<UserInfo>> {
    Ok(Json(admin::set_user_policy(&state.db, &principal, &user, &policy, true).await?.into()))
}

/// Detaches a policy from a user.
#[utoipa::path(delete, path = "/api/v1/users/{user}/policies/{policy}", tag = "accounts",
    params(("user" = String, Path, description = "User id or username"), ("policy" = String, Path, description = "Policy name")),
    responses((status = 200, body = UserInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn detach_user_policy(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((user, policy)): Path<(String, String)>,
) -> ApiResult<Json<UserInfo>> {
    Ok(Json(admin::set_user_policy(&state.db, &principal, &user, &policy, false).await?.into()))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me))
        .routes(routes!(change_password))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(reset_password))
        .routes(routes!(attach_user_policy, detach_user_policy))
}
