//! `/api/v1/notebooks` and `/api/v1/kernels`: notebooks (nbformat 4), their revisions
//! and shares, and the kernels that run their cells.

use atelier_core::notebooks::{self, kernels};
use atelier_protocol::notebooks::{
    ExecuteRequest, Kernel, KernelMessage, KernelReport, NewNotebook, Notebook, NotebookName, NotebookSummary,
    Revision, SaveNotebook, Share, StartKernel,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::{ApiJson, Auth};
use crate::state::AppState;

/// The notebooks the caller may open (own, shared with them, or allowed by policy).
#[utoipa::path(get, path = "/api/v1/notebooks", tag = "notebooks",
    responses((status = 200, body = Vec<NotebookSummary>), (status = 403, body = ErrorBody)))]
pub async fn list_notebooks(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<Vec<NotebookSummary>>, ApiError> {
    Ok(Json(notebooks::list(&state.db, &p).await?))
}

/// Creates a notebook: empty, or from nbformat 4 JSON in `content`.
#[utoipa::path(post, path = "/api/v1/notebooks", tag = "notebooks", request_body = NewNotebook,
    responses((status = 201, body = Notebook), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_notebook(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<NewNotebook>,
) -> Result<(StatusCode, Json<Notebook>), ApiError> {
    Ok((StatusCode::CREATED, Json(notebooks::create(&state.db, &p, &body).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ImportQuery {
    /// The new notebook's name.
    pub name: String,
}

/// Imports an `.ipynb` file (nbformat 4, at most 16 MiB) sent as the request body.
#[utoipa::path(post, path = "/api/v1/notebooks/import", tag = "notebooks", params(ImportQuery),
    request_body(content = String, content_type = "application/x-ipynb+json", description = "The .ipynb file"),
    responses((status = 201, body = Notebook), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn import_notebook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ImportQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<Notebook>), ApiError> {
    Ok((StatusCode::CREATED, Json(notebooks::import(&state.db, &p, &q.name, &body).await?)))
}

/// A notebook with its content and version.
#[utoipa::path(get, path = "/api/v1/notebooks/{id}", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 200, body = Notebook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_notebook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Notebook>, ApiError> {
    Ok(Json(notebooks::get(&state.db, &p, &id).await?))
}

/// Renames a notebook.
#[utoipa::path(patch, path = "/api/v1/notebooks/{id}", tag = "notebooks", request_body = NotebookName,
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 200, body = Notebook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rename_notebook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NotebookName>,
) -> Result<Json<Notebook>, ApiError> {
    Ok(Json(notebooks::rename(&state.db, &p, &id, &body.name).await?))
}

/// Deletes a notebook, its revisions and shares; its kernels are shut down.
#[utoipa::path(delete, path = "/api/v1/notebooks/{id}", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_notebook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    notebooks::delete(&state.db, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Saves a notebook's content. Refused with 409 when someone saved since
/// `base_version`: nothing is overwritten.
#[utoipa::path(put, path = "/api/v1/notebooks/{id}/content", tag = "notebooks", request_body = SaveNotebook,
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 200, body = Notebook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn save_notebook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SaveNotebook>,
) -> Result<Json<Notebook>, ApiError> {
    Ok(Json(notebooks::save(&state.db, &p, &id, &body).await?))
}

/// A copy of the notebook, owned by the caller.
#[utoipa::path(post, path = "/api/v1/notebooks/{id}/duplicate", tag = "notebooks", request_body = NotebookName,
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 201, body = Notebook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn duplicate_notebook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NotebookName>,
) -> Result<(StatusCode, Json<Notebook>), ApiError> {
    Ok((StatusCode::CREATED, Json(notebooks::duplicate(&state.db, &p, &id, &body.name).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExportQuery {
    /// `ipynb` (default) or `py`.
    pub format: Option<String>,
}

/// Downloads the notebook as `.ipynb` (nbformat 4.5) or as a `.py` script (percent
/// format).
#[utoipa::path(get, path = "/api/v1/notebooks/{id}/export", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id"), ExportQuery),
    responses((status = 200, description = "The file"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn export_notebook(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = q.format.as_deref().unwrap_or("ipynb");
    let (file_name, content_type, bytes) = notebooks::export(&state.db, &p, &id, format).await?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file_name}\"")),
        ],
        bytes,
    )
        .into_response())
}

/// The Content-Security-Policy of an output's document. `sandbox allow-scripts` puts it
/// in an opaque origin even when opened on its own (not in the editor's sandboxed
/// frame): its scripts reach neither the studio's pages, cookies nor API. Inline
/// scripts, styles and `data:`/`blob:` media run and show; nothing is fetched from
/// anywhere, the studio included. Only the studio's own pages may frame it.
pub const OUTPUT_CSP: &str = "sandbox allow-scripts; default-src 'none'; \
    script-src 'unsafe-inline' 'unsafe-eval' data: blob:; style-src 'unsafe-inline' data:; \
    img-src data: blob:; media-src data: blob:; font-src data:; frame-ancestors 'self'";

/// A rich output (HTML, JavaScript, SVG) of a code cell as a document of its own, as
/// the editor shows it in `<iframe sandbox="allow-scripts">`: the output as the kernel
/// gave it, served with a sandbox Content-Security-Policy so its scripts run in an
/// opaque origin. For whoever may open the notebook; 404 for outputs shown in the page
/// (text, PNG and JPEG images).
#[utoipa::path(get, path = "/api/v1/notebooks/{id}/outputs/{cell}/{index}", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id"), ("cell" = String, Path, description = "Cell id"),
           ("index" = usize, Path, description = "The output's position in the cell, from 0")),
    responses((status = 200, description = "text/html: the output's document", content_type = "text/html"),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_output(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((id, cell, index)): Path<(String, String, usize)>,
) -> Result<Response, ApiError> {
    let output = notebooks::output(&state.db, &p, &id, &cell, index).await?;
    let document =
        notebooks::ipynb::output_document(&output).ok_or(ApiError(atelier_core::CoreError::NotFound("rich output")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, OUTPUT_CSP),
            // The security headers' default is DENY; the editor frames this.
            (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        document,
    )
        .into_response())
}

/// Earlier contents: automatic snapshots, checkpoints, and what restores replaced.
#[utoipa::path(get, path = "/api/v1/notebooks/{id}/revisions", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 200, body = Vec<Revision>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_revisions(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<Revision>>, ApiError> {
    Ok(Json(notebooks::revisions(&state.db, &p, &id).await?))
}

/// A named checkpoint of the notebook as saved now.
#[utoipa::path(post, path = "/api/v1/notebooks/{id}/revisions", tag = "notebooks", request_body = NotebookName,
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 201, body = Revision), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_checkpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NotebookName>,
) -> Result<(StatusCode, Json<Revision>), ApiError> {
    Ok((StatusCode::CREATED, Json(notebooks::checkpoint(&state.db, &p, &id, &body.name).await?)))
}

/// The content of an earlier revision (nbformat 4).
#[utoipa::path(get, path = "/api/v1/notebooks/{id}/revisions/{revision}", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id"), ("revision" = String, Path, description = "Revision id")),
    responses((status = 200, description = "The notebook as it was"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_revision(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((id, revision)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(notebooks::revision_content(&state.db, &p, &id, &revision).await?))
}

/// Makes an earlier revision the notebook's content (what it replaces is kept).
#[utoipa::path(post, path = "/api/v1/notebooks/{id}/revisions/{revision}/restore", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id"), ("revision" = String, Path, description = "Revision id")),
    responses((status = 200, body = Notebook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn restore_revision(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((id, revision)): Path<(String, String)>,
) -> Result<Json<Notebook>, ApiError> {
    Ok(Json(notebooks::restore(&state.db, &p, &id, &revision).await?))
}

/// Whom the notebook is shared with.
#[utoipa::path(get, path = "/api/v1/notebooks/{id}/shares", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 200, body = Vec<Share>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_shares(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<Share>>, ApiError> {
    Ok(Json(notebooks::shares(&state.db, &p, &id).await?))
}

/// The role to share a notebook with.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ShareRole {
    /// `reader` or `editor`.
    pub role: String,
}

/// Shares the notebook with a user as reader or editor.
#[utoipa::path(put, path = "/api/v1/notebooks/{id}/shares/{username}", tag = "notebooks", request_body = ShareRole,
    params(("id" = String, Path, description = "Notebook id"), ("username" = String, Path, description = "User")),
    responses((status = 200, body = Vec<Share>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_share(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((id, username)): Path<(String, String)>,
    ApiJson(body): ApiJson<ShareRole>,
) -> Result<Json<Vec<Share>>, ApiError> {
    Ok(Json(notebooks::share(&state.db, &p, &id, &username, &body.role).await?))
}

/// Stops sharing the notebook with a user.
#[utoipa::path(delete, path = "/api/v1/notebooks/{id}/shares/{username}", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id"), ("username" = String, Path, description = "User")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_share(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((id, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    notebooks::unshare(&state.db, &p, &id, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's kernel for the notebook: the live one, else the last (404 if none).
#[utoipa::path(get, path = "/api/v1/notebooks/{id}/kernel", tag = "notebooks",
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 200, body = Kernel), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_kernel(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Kernel>, ApiError> {
    kernels::for_notebook(&state.db, &p, &id)
        .await?
        .map(Json)
        .ok_or(ApiError(atelier_core::CoreError::NotFound("kernel")))
}

/// Starts the caller's kernel for the notebook on a compute node (any with room, or the
/// one named), with GPUs if asked; a live one is answered as it is.
#[utoipa::path(post, path = "/api/v1/notebooks/{id}/kernel", tag = "notebooks", request_body = StartKernel,
    params(("id" = String, Path, description = "Notebook id")),
    responses((status = 201, body = Kernel), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start_kernel(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartKernel>,
) -> Result<(StatusCode, Json<Kernel>), ApiError> {
    let kernel = kernels::start(&state.db, &p, &id, &body).await?;
    // Wakes the node's agent (its work poll answers 202), so the kernel starts now
    // rather than at the next heartbeat.
    state.freed.notify_waiters();
    Ok((StatusCode::CREATED, Json(kernel)))
}

/// The caller's running kernels.
#[utoipa::path(get, path = "/api/v1/kernels", tag = "notebooks",
    responses((status = 200, body = Vec<Kernel>)))]
pub async fn list_kernels(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<Kernel>>, ApiError> {
    Ok(Json(kernels::list(&state.db, &p).await?))
}

/// Shuts a kernel down.
#[utoipa::path(delete, path = "/api/v1/kernels/{id}", tag = "notebooks",
    params(("id" = String, Path, description = "Kernel id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_kernel(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    kernels::stop(&state.db, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs code on the kernel. The answer is a stream of server-sent events, one
/// `KernelMessage` JSON per `data:` line, as the kernel sends them: `status`,
/// `execute_input`, `stream`, `display_data`, `execute_result`, `error`,
/// `clear_output`, then `execute_reply`; `kernel_dead` if the kernel dies. Outputs are
/// as the kernel gave them; a cell's are bounded (stream text at 1 MiB, all outputs at
/// 8 MiB): beyond, they are cut and a `stream` message says how much was left out.
#[utoipa::path(post, path = "/api/v1/kernels/{id}/execute", tag = "notebooks", request_body = ExecuteRequest,
    params(("id" = String, Path, description = "Kernel id")),
    responses((status = 200, description = "text/event-stream of kernel messages", body = KernelMessage), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn execute(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    Ok(crate::notebooks::execute(&state, &p, &id, body).await?)
}

/// Interrupts the running cell (KeyboardInterrupt in Python).
#[utoipa::path(post, path = "/api/v1/kernels/{id}/interrupt", tag = "notebooks",
    params(("id" = String, Path, description = "Kernel id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn interrupt(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::notebooks::interrupt(&state, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restarts the kernel (also a dead one): a fresh Python process; answers once ready.
#[utoipa::path(post, path = "/api/v1/kernels/{id}/restart", tag = "notebooks",
    params(("id" = String, Path, description = "Kernel id")),
    responses((status = 200, description = "The kernel's state"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn restart(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<KernelReport>, ApiError> {
    Ok(Json(crate::notebooks::restart(&state, &p, &id).await?))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notebooks, create_notebook))
        .routes(routes!(import_notebook))
        .routes(routes!(get_notebook, rename_notebook, delete_notebook))
        .routes(routes!(save_notebook))
        .routes(routes!(duplicate_notebook))
        .routes(routes!(export_notebook))
        .routes(routes!(get_output))
        .routes(routes!(list_revisions, create_checkpoint))
        .routes(routes!(get_revision))
        .routes(routes!(restore_revision))
        .routes(routes!(list_shares))
        .routes(routes!(put_share, delete_share))
        .routes(routes!(get_kernel, start_kernel))
        .routes(routes!(list_kernels))
        .routes(routes!(stop_kernel))
        .routes(routes!(execute))
        .routes(routes!(interrupt))
        .routes(routes!(restart))
}
