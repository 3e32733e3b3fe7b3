//! `/api/v1/me` and `/api/v1/users`: the caller's account and user administration.

use app::users::UserInfo;
use atelier_core::accounts::{self, NewUser};
use atelier_core::authz::{authorize, Action, Credential, Resource};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tower_sessions::Session;
use utoipa::ToSchema;

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
pub struct CreateUserRequest {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    pub password: String,
    #[serde(default)]
    pub is_admin: bool,
}

/// Body of `PATCH /api/v1/users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// `false` deactivates: the user's sessions and tokens stop working at once.
    pub active: Option<bool>,
}

type ApiResult<T> = Result<T, ApiError>;

/// The caller's own account.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses((status = 200, body = UserInfo), (status = 401, body = ErrorBody)))]
pub async fn get_me(Auth(principal): Auth) -> ApiResult<Json<UserInfo>> {
    authorize(&principal, Action::GetUser, &Resource::user(&principal.user.username))?;
    Ok(Json(principal.user.into()))
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
    Ok(StatusCode::NO_CONTENT)
}

/// All users.
#[utoipa::path(get, path = "/api/v1/users", tag = "accounts",
    responses((status = 200, body = Vec<UserInfo>), (status = 403, body = ErrorBody)))]
pub async fn list_users(State(state): State<AppState>, Auth(principal): Auth) -> ApiResult<Json<Vec<UserInfo>>> {
    authorize(&principal, Action::ListUsers, &Resource::all_users())?;
    let users = accounts::list_users(&state.db).await?;
    Ok(Json(users.into_iter().map(UserInfo::from).collect()))
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = CreateUserRequest,
    responses((status = 201, body = UserInfo), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    authorize(&principal, Action::CreateUser, &Resource::all_users())?;
    let user = accounts::create_user(
        &state.db,
        NewUser {
            username: body.username,
            display_name: body.display_name,
            password: body.password,
            is_admin: body.is_admin,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "accounts",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    let user = accounts::get_user(&state.db, &id).await?;
    authorize(&principal, Action::GetUser, &Resource::user(&user.username))?;
    Ok(Json(user.into()))
}

/// Updates a user (activation).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "accounts", request_body = UpdateUserRequest,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<UserInfo>> {
    let user = accounts::get_user(&state.db, &id).await?;
    authorize(&principal, Action::UpdateUser, &Resource::user(&user.username))?;
    let user = match body.active {
        Some(active) => accounts::set_active(&state.db, &principal.user, &id, active).await?,
        None => user,
    };
    Ok(Json(user.into()))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/me", get(get_me))
        .route("/me/password", put(change_password))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user).patch(update_user))
}
