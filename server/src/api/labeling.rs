//! `/api/v1/labeling`: labeling jobs, the task queue labelers work through, the review
//! queue, the quality report and the output manifest.

use atelier_core::labeling::{jobs, output, tasks};
use atelier_protocol::labeling::{
    Answer, LabelingJob, LabelingJobDetail, LabelingJobSpec, MyWork, NextTask, Quality, ReviewItem, Submitted,
};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::datasets::content_headers;
use super::error::{ApiError, ErrorBody};
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Body of `POST .../tasks/next`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NextTaskRequest {
    /// The task on screen: the answer is another task (the labeling page preloads the
    /// next one). Without it, a task the caller holds comes back first.
    #[serde(default)]
    pub besides: Option<String>,
}

/// Body of `POST .../tasks/{task}/submit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub answer: Answer,
    /// Time spent on the task, as the client measured it.
    #[serde(default)]
    pub duration_ms: Option<i64>,
}

/// Body of `POST .../review/{seq}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// The label the reviewer settles on (the consolidated one to confirm it).
    pub answer: Answer,
}

/// What a review did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reviewed {
    /// `confirmed` or `corrected`.
    pub verdict: String,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ReviewPage {
    /// At most this many items (1-200, default 50).
    pub limit: Option<i64>,
}

async fn detail(state: &AppState, job: jobs::Job) -> Result<LabelingJobDetail, ApiError> {
    let progress = jobs::progress(&state.db, &job).await?;
    Ok(LabelingJobDetail { job: job.info(), progress })
}

/// Labeling jobs the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/labeling/jobs", tag = "labeling",
    responses((status = 200, body = Vec<LabelingJob>), (status = 403, body = ErrorBody)))]
pub async fn list_jobs(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<LabelingJob>>, ApiError> {
    Ok(Json(jobs::list(&state.db, &p).await?.iter().map(jobs::Job::info).collect()))
}

/// Creates a labeling job over the items the dataset holds now.
#[utoipa::path(post, path = "/api/v1/labeling/jobs", tag = "labeling", request_body = LabelingJobSpec,
    responses((status = 201, body = LabelingJobDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_job(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(spec): ApiJson<LabelingJobSpec>,
) -> Result<(StatusCode, Json<LabelingJobDetail>), ApiError> {
    let job = jobs::create(&state.db, &p, &spec).await?;
    Ok((StatusCode::CREATED, Json(detail(&state, job).await?)))
}

/// A job with its progress.
#[utoipa::path(get, path = "/api/v1/labeling/jobs/{job}", tag = "labeling",
    params(("job" = String, Path, description = "Labeling job name")),
    responses((status = 200, body = LabelingJobDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<LabelingJobDetail>, ApiError> {
    let job = jobs::get_for(&state.db, &p, &name, atelier_core::authz::Action::GetLabelingJob).await?;
    Ok(Json(detail(&state, job).await?))
}

/// Stops a job: no more tasks are handed out and what was labeled is consolidated.
#[utoipa::path(post, path = "/api/v1/labeling/jobs/{job}/stop", tag = "labeling",
    params(("job" = String, Path, description = "Labeling job name")),
    responses((status = 200, body = LabelingJobDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_job(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<LabelingJobDetail>, ApiError> {
    let job = jobs::stop(&state.db, &p, &name).await?;
    Ok(Json(detail(&state, job).await?))
}

/// The caller's labeling work: in-progress jobs of their teams, with their own counts.
#[utoipa::path(get, path = "/api/v1/labeling/my-work", tag = "labeling",
    responses((status = 200, body = Vec<MyWork>), (status = 403, body = ErrorBody)))]
pub async fn my_work(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<MyWork>>, ApiError> {
    Ok(Json(jobs::my_work(&state.db, &p).await?))
}

/// Takes the caller's next task: an item they have not labeled or skipped that still
/// needs annotations. The task is held for the job's time limit. `task` is null when
/// nothing is left for the caller now.
#[utoipa::path(post, path = "/api/v1/labeling/jobs/{job}/tasks/next", tag = "labeling", request_body = NextTaskRequest,
    params(("job" = String, Path, description = "Labeling job name")),
    responses((status = 200, body = NextTask), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn next_task(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<NextTask>, ApiError> {
    // The body is optional: an empty one asks for any task.
    let request: NextTaskRequest = if body.iter().all(u8::is_ascii_whitespace) {
        NextTaskRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| atelier_core::CoreError::invalid("body", format!("bad JSON body: {e}")))?
    };
    let besides = request.besides;
    let (job, task) = tasks::next(&state.db, &p, &name, besides.as_deref()).await?;
    Ok(Json(NextTask { task, job_status: job.status }))
}

/// Submits the answer for a held task. Submitting the same task again with the same
/// answer records nothing more (`recorded: false`).
#[utoipa::path(post, path = "/api/v1/labeling/jobs/{job}/tasks/{task}/submit", tag = "labeling", request_body = SubmitRequest,
    params(("job" = String, Path, description = "Labeling job name"), ("task" = String, Path, description = "Task id")),
    responses((status = 200, body = Submitted), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn submit_task(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, task)): Path<(String, String)>,
    ApiJson(body): ApiJson<SubmitRequest>,
) -> Result<Json<Submitted>, ApiError> {
    Ok(Json(tasks::submit(&state.db, &p, &name, &task, &body.answer, body.duration_ms).await?))
}

/// Skips a held task (recorded; the item goes to someone else).
#[utoipa::path(post, path = "/api/v1/labeling/jobs/{job}/tasks/{task}/skip", tag = "labeling",
    params(("job" = String, Path, description = "Labeling job name"), ("task" = String, Path, description = "Task id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn skip_task(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, task)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    tasks::skip(&state.db, &p, &name, &task).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An image item of the job: labelers get the items given to them, reviewers and
/// those who may read the output any item.
#[utoipa::path(get, path = "/api/v1/labeling/jobs/{job}/items/{seq}/content", tag = "labeling",
    params(("job" = String, Path, description = "Labeling job name"), ("seq" = i64, Path, description = "Item position in the dataset")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn item_content(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, seq)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let (artifact, media_type) = tasks::item_artifact(&state.db, &p, &name, seq).await?;
    let stream = state.artifacts.get(&artifact).await?;
    Ok((content_headers(media_type), Body::from_stream(stream)).into_response())
}

/// The output manifest (JSON Lines, Ground Truth's format): one line per consolidated
/// item with the label attribute and its `-metadata`. Streamed. Needs
/// `labeling:GetLabelingJobOutput`.
#[utoipa::path(get, path = "/api/v1/labeling/jobs/{job}/output", tag = "labeling",
    params(("job" = String, Path, description = "Labeling job name")),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn output_manifest(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (job, lines) = output::output_manifest(&state.db, &p, &name).await?;
    let disposition = format!("attachment; filename=\"{}.manifest\"", job.name);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Per-labeler accuracy on gold items, agreement (Cohen's kappa per pair, Fleiss'
/// kappa, Krippendorff's alpha), the confusion matrix and throughput.
#[utoipa::path(get, path = "/api/v1/labeling/jobs/{job}/quality", tag = "labeling",
    params(("job" = String, Path, description = "Labeling job name")),
    responses((status = 200, body = Quality), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn quality(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<Quality>, ApiError> {
    Ok(Json(output::quality(&state.db, &p, &name).await?.1))
}

/// The review queue: consolidated items below the job's confidence threshold, least
/// confident first, with each worker's answer.
#[utoipa::path(get, path = "/api/v1/labeling/jobs/{job}/review", tag = "labeling",
    params(("job" = String, Path, description = "Labeling job name"), ReviewPage),
    responses((status = 200, body = Vec<ReviewItem>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn review_queue(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    Query(page): Query<ReviewPage>,
) -> Result<Json<Vec<ReviewItem>>, ApiError> {
    Ok(Json(output::review_queue(&state.db, &p, &name, page.limit.unwrap_or(50)).await?.1))
}

/// Confirms or corrects an item in the review queue (recorded as a human review).
#[utoipa::path(post, path = "/api/v1/labeling/jobs/{job}/review/{seq}", tag = "labeling", request_body = ReviewRequest,
    params(("job" = String, Path, description = "Labeling job name"), ("seq" = i64, Path, description = "Item position in the dataset")),
    responses((status = 200, body = Reviewed), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn review_item(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, seq)): Path<(String, i64)>,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> Result<Json<Reviewed>, ApiError> {
    let verdict = output::review(&state.db, &p, &name, seq, &body.answer).await?;
    Ok(Json(Reviewed { verdict: verdict.to_string() }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs, create_job))
        .routes(routes!(get_job))
        .routes(routes!(stop_job))
        .routes(routes!(my_work))
        .routes(routes!(next_task))
        .routes(routes!(submit_task))
        .routes(routes!(skip_task))
        .routes(routes!(item_content))
        .routes(routes!(output_manifest))
        .routes(routes!(quality))
        .routes(routes!(review_queue))
        .routes(routes!(review_item))
}
