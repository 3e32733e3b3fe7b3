//! The REST API under `/api/v1/`: JSON in and out, bearer tokens (or the browser
//! session), described by the OpenAPI document at `/api/v1/openapi.json`.
//!
//! Each feature has its module with handlers and a `routes()`; every handler takes an
//! [`Auth`] (the middleware already refused anonymous callers) and asks
//! `atelier_core::authz` before acting.

pub mod accounts;
pub mod error;
pub mod tokens;

use atelier_core::authz::Principal;
use atelier_core::CoreError;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use self::error::ApiError;
use crate::state::AppState;

/// The authenticated principal of a request.
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Auth)
            .ok_or_else(|| ApiError(CoreError::Unauthenticated("not signed in".into())))
    }
}

/// `axum::Json` whose rejections are JSON errors naming what is wrong.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// The OpenAPI description of the REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Atelier API", description = "The REST API of the Atelier ML studio. Authenticate with `Authorization: Bearer <API token>`."),
    paths(
        accounts::get_me,
        accounts::change_password,
        accounts::list_users,
        accounts::create_user,
        accounts::get_user,
        accounts::update_user,
        tokens::list_tokens,
        tokens::create_token,
        tokens::revoke_token,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "accounts", description = "Users and passwords"), (name = "tokens", description = "API tokens"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError(CoreError::NotFound("API route"))
}

/// The `/api/v1` router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .merge(accounts::routes())
        .merge(tokens::routes())
        .fallback(not_found)
}
