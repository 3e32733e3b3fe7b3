//! `/api/v1/tokens`: the caller's API tokens.

use app::tokens::TokenInfo;
use atelier_core::authz::{authorize, Action, Resource};
use atelier_core::tokens;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    pub name: String,
    /// Days until the token expires; omit for no expiry.
    pub expires_in_days: Option<i64>,
    /// An inline policy document (JSON text) narrowing what the token may do.
    pub policy: Option<String>,
}

/// A new token. `secret` is shown only in this response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: TokenInfo,
    pub secret: String,
}

/// The caller's tokens, newest first.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    authorize(&principal, Action::ListAccessTokens, &Resource::user(&principal.user.username))?;
    let list = tokens::list(&state.db, &principal.user.id).await?;
    Ok(Json(list.into_iter().map(TokenInfo::from).collect()))
}

/// Creates a token acting as the caller.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    authorize(&principal, Action::CreateAccessToken, &Resource::user(&principal.user.username))?;
    principal.refuse_if_narrowed("create tokens")?;
    let created =
        tokens::create(&state.db, &principal.user, &body.name, body.expires_in_days, body.policy.as_deref()).await?;
    principal.note_change(format!("created API token {} ({})", created.token.name, created.token.id));
    Ok((StatusCode::CREATED, Json(CreatedToken { token: created.token.into(), secret: created.secret })))
}

/// Revokes one of the caller's tokens; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&principal, Action::DeleteAccessToken, &Resource::user(&principal.user.username))?;
    tokens::revoke(&state.db, &principal.user.id, &id).await?;
    principal.note_change(format!("revoked API token {id}"));
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(revoke_token))
}
