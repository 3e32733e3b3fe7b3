//! `/api/v1/training-jobs` and `/api/v1/artifacts`: submit, list, inspect and stop
//! training jobs, read their logs and metrics, upload input files and download
//! artifacts.

use std::collections::BTreeMap;

use app::training::{server as views, ArtifactView, LogLineView, TrainingJobDetail, TrainingJobView};
use atelier_core::artifacts::{self, kind, NewArtifact};
use atelier_core::authz::{authorize, Action, Resource};
use atelier_core::compute::jobs::{self, ListFilter, Point};
use atelier_core::CoreError;
use atelier_protocol::{JobSpec, JobState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Body of `POST /api/v1/training-jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTrainingJobRequest {
    pub name: String,
    pub spec: JobSpec,
}

/// Filters of the job list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct JobFilter {
    /// Only jobs in this state (Pending, Starting, Downloading, Training, Uploading, Completed, Failed, Stopped).
    pub state: Option<String>,
    /// Only jobs created by this user.
    pub created_by: Option<String>,
    /// Only jobs whose name contains this (case-insensitive).
    pub name_contains: Option<String>,
}

/// Submits a training job. Input files are uploaded first (`POST /api/v1/artifacts`)
/// and named by id in the spec's channels and script code.
#[utoipa::path(post, path = "/api/v1/training-jobs", tag = "training", request_body = CreateTrainingJobRequest,
    responses((status = 201, body = TrainingJobView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_job(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<CreateTrainingJobRequest>,
) -> Result<(StatusCode, Json<TrainingJobView>), ApiError> {
    let job = jobs::submit(&state.db, &state.artifacts, &p, &body.name, body.spec).await?;
    state.work.notify_waiters();
    Ok((StatusCode::CREATED, Json(views::view(&state.db, &jobs::node_names(&state.db).await?, job, true).await?)))
}

/// Training jobs the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/training-jobs", tag = "training", params(JobFilter),
    responses((status = 200, body = Vec<TrainingJobView>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(f): Query<JobFilter>,
) -> Result<Json<Vec<TrainingJobView>>, ApiError> {
    let state_filter = match f.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| CoreError::invalid("state", format!("unknown state {s}")))?),
    };
    let filter = ListFilter { state: state_filter, created_by: f.created_by, name_contains: f.name_contains };
    Ok(Json(views::list(&state.db, &p, &filter).await?))
}

/// One training job: status, transitions, artifacts and inputs.
#[utoipa::path(get, path = "/api/v1/training-jobs/{job}", tag = "training",
    params(("job" = String, Path, description = "Job name")),
    responses((status = 200, body = TrainingJobDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<TrainingJobDetail>, ApiError> {
    Ok(Json(views::detail(&state.db, &p, &name).await?))
}

/// Stops a job (SIGTERM, then SIGKILL after the grace period).
#[utoipa::path(post, path = "/api/v1/training-jobs/{job}/stop", tag = "training",
    params(("job" = String, Path, description = "Job name")),
    responses((status = 200, body = TrainingJobView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_job(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<TrainingJobView>, ApiError> {
    let job = jobs::stop(&state.db, &p, &name).await?;
    state.work.notify_waiters();
    Ok(Json(views::view(&state.db, &jobs::node_names(&state.db).await?, job, false).await?))
}

/// Which log lines to return.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LogQuery {
    /// Lines after this sequence number (default: from the start).
    pub after: Option<i64>,
    /// At most this many (default 1000, at most 5000).
    pub limit: Option<i64>,
}

/// The job's output lines (stdout, stderr and the agent's notes).
#[utoipa::path(get, path = "/api/v1/training-jobs/{job}/logs", tag = "training",
    params(("job" = String, Path, description = "Job name"), LogQuery),
    responses((status = 200, body = Vec<LogLineView>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn job_logs(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Vec<LogLineView>>, ApiError> {
    let job = jobs::get(&state.db, &p, &name).await?;
    let rows = jobs::logs(&state.db, &job, q.after.unwrap_or(0), q.limit.unwrap_or(1000)).await?;
    Ok(Json(rows.into_iter().map(views::log_view).collect()))
}

/// A metric value at a time.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricPoint {
    pub ts_ms: i64,
    pub value: f64,
}

/// Every metric series of the job, by metric name, oldest first.
#[utoipa::path(get, path = "/api/v1/training-jobs/{job}/metrics", tag = "training",
    params(("job" = String, Path, description = "Job name")),
    responses((status = 200, body = BTreeMap<String, Vec<MetricPoint>>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn job_metrics(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<BTreeMap<String, Vec<MetricPoint>>>, ApiError> {
    let job = jobs::get(&state.db, &p, &name).await?;
    let series = jobs::metrics(&state.db, &job).await?;
    Ok(Json(
        series
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().map(|Point { ts_ms, value }| MetricPoint { ts_ms, value }).collect()))
            .collect(),
    ))
}

/// The name of an uploaded file.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UploadQuery {
    /// The file name (one path component); it becomes the file's name on the node.
    pub name: String,
}

/// Uploads a file (the raw request body) for use as a job's code or channel data.
#[utoipa::path(post, path = "/api/v1/artifacts", tag = "training", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ArtifactView), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload_artifact(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<(StatusCode, Json<ArtifactView>), ApiError> {
    authorize(&p, Action::CreateTrainingJob, &Resource::new("atelier:training:job/*"))?;
    let new = NewArtifact { name: &q.name, kind: kind::UPLOAD, job_id: None, created_by: &p.user.username };
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let artifact = state.artifacts.put(&state.db, new, stream, state.config.max_upload_bytes).await?;
    p.note_change(format!("uploaded {} ({} bytes)", artifact.name, artifact.size));
    Ok((StatusCode::CREATED, Json(views::artifact_view(artifact, None))))
}

/// An artifact's record.
#[utoipa::path(get, path = "/api/v1/artifacts/{id}", tag = "training",
    params(("id" = String, Path, description = "Artifact id")),
    responses((status = 200, body = ArtifactView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_artifact(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<ArtifactView>, ApiError> {
    let artifact = artifacts::get(&state.db, &id).await?;
    artifacts::authorize_read(&state.db, &p, &artifact).await?;
    Ok(Json(views::artifact_view(artifact, None)))
}

/// An artifact's bytes, streamed.
#[utoipa::path(get, path = "/api/v1/artifacts/{id}/content", tag = "training",
    params(("id" = String, Path, description = "Artifact id")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download_artifact(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let artifact = artifacts::get(&state.db, &id).await?;
    artifacts::authorize_read(&state.db, &p, &artifact).await?;
    artifact_response(&state, artifact).await
}

/// An artifact's bytes as a download, with its size and SHA-256 in the headers.
pub async fn artifact_response(state: &AppState, artifact: artifacts::Artifact) -> Result<Response, ApiError> {
    let stream = state.artifacts.get(&artifact.id).await?;
    let disposition = format!("attachment; filename=\"{}\"", artifact.name.replace(['"', '\\'], "_"));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, artifact.size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::HeaderName::from_static("x-content-sha256"), artifact.sha256.clone()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs, create_job))
        .routes(routes!(get_job))
        .routes(routes!(stop_job))
        .routes(routes!(job_logs))
        .routes(routes!(job_metrics))
        .routes(routes!(get_artifact))
        .routes(routes!(download_artifact))
}

/// Routes whose request bodies are large uploads (kept apart from the normal body
/// limit and request timeout).
pub fn upload_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upload_artifact))
}
