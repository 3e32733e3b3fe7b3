//! The REST API under `/api/v1/`: JSON in and out, bearer tokens (or the browser
//! session), described by the OpenAPI document at `/api/v1/openapi.json`.
//!
//! Each feature has its module with handlers and a `routes()`; every handler takes an
//! [`Auth`] (the middleware already refused anonymous callers) and asks
//! `atelier_core::authz` before acting.

pub mod accounts;
pub mod audit;
pub mod compute;
pub mod datasets;
pub mod endpoints;
pub mod error;
pub mod iam;
pub mod labeling;
pub mod models;
pub mod notebooks;
pub mod tokens;
pub mod training;

use atelier_core::authz::Principal;
use atelier_core::CoreError;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use std::sync::LazyLock;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

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

/// The OpenAPI description's frame; the paths are added by [`router`] as routes are
/// registered, so the document lists exactly the routes that exist.
#[derive(OpenApi)]
#[openapi(
    info(title = "Atelier API", description = "The REST API of the Atelier ML studio. Authenticate with `Authorization: Bearer <API token>`. Every route is authorized by the caller's IAM policies; `GET /api/v1/iam/catalogue` lists the actions and resource names policies use."),
    modifiers(&BearerAuth, &CatalogueDoc),
    security(("bearer" = [])),
    tags(
        (name = "accounts", description = "Users and passwords"),
        (name = "tokens", description = "API tokens"),
        (name = "iam", description = "Groups, policies, the catalogue and the policy simulator"),
        (name = "audit", description = "The audit log"),
        (name = "datasets", description = "Datasets: images and texts added in batches, for labeling and training"),
        (name = "labeling", description = "Labeling jobs, the task queue, review, quality and output manifests"),
        (name = "models", description = "The model registry"),
        (name = "training", description = "Training jobs, their logs, metrics and artifacts, and file uploads"),
        (name = "compute", description = "Compute nodes and their agents"),
        (name = "endpoints", description = "Endpoints serving approved model versions: deployments, invocations, metrics"),
        (name = "notebooks", description = "Notebooks (nbformat 4), their revisions and shares, and the Jupyter kernels that run their cells on compute nodes"),
    )
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

/// Puts the catalogue into the document: an `Action` schema listing every action, and
/// a table of actions and their resources in the `iam` tag's description.
struct CatalogueDoc;

impl Modify for CatalogueDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use atelier_core::iam::Action;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An action of the catalogue, as written in policy documents (`service:Verb`)."))
            .enum_values(Some(names))
            .build();
        openapi.components.get_or_insert_with(Default::default).schemas.insert("Action".into(), schema.into());
        let mut table = String::from("\n\n| Action | Access | Resource | |\n|---|---|---|---|\n");
        for a in Action::ALL {
            let d = a.def();
            table.push_str(&format!("| `{}` | {:?} | `{}` | {} |\n", d.name, d.access, d.resource, d.description));
        }
        if let Some(tag) = openapi.tags.iter_mut().flatten().find(|t| t.name == "iam") {
            tag.description = Some(format!("{}{table}", tag.description.clone().unwrap_or_default()));
        }
    }
}

fn split() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(tokens::routes())
        .merge(iam::routes())
        .merge(audit::routes())
        .merge(models::routes())
        .merge(training::routes())
        .merge(training::upload_routes())
        .merge(datasets::routes())
        .merge(datasets::upload_routes())
        .merge(labeling::routes())
        .merge(compute::routes())
        .merge(endpoints::routes())
        .merge(notebooks::routes())
        .split_for_parts()
}

/// The OpenAPI document: every REST route, generated from the route registrations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| split().1);
    DOC.clone()
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// The REST routes (full `/api/v1/...` paths) and the OpenAPI document route.
pub fn router() -> Router<AppState> {
    split().0.route("/api/v1/openapi.json", get(openapi_json))
}
