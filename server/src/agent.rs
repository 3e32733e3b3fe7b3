//! The routes compute agents call, under `/agent/v1/` (see `atelier_protocol`).
//!
//! They are authenticated by the middleware with a node token (never a user's token
//! or session) and authorized here by the one rule that governs agents: a node acts
//! only on work leased to it, attempt by attempt (`jobs::check_lease`).

use std::time::Duration;

use atelier_core::artifacts::{self, kind, NewArtifact};
use atelier_core::audit::{self, NewEvent};
use atelier_core::compute::jobs;
use atelier_core::compute::nodes::{self, NodeCaller};
use atelier_core::endpoints::reconcile;
use atelier_core::notebooks::kernels;
use atelier_core::CoreError;
use atelier_protocol::{
    Assignment, HeartbeatRequest, HeartbeatResponse, LogBatch, RegisterRequest, RegisterResponse, StatusReport,
};
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::TryStreamExt;
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::api::ApiJson;
use crate::state::AppState;

/// Every agent route starts with this.
pub const PREFIX: &str = "/agent/v1/";

/// The node whose token authenticated the request.
pub struct Node(pub NodeCaller);

impl<S: Send + Sync> FromRequestParts<S> for Node {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<NodeCaller>()
            .cloned()
            .map(Node)
            .ok_or_else(|| ApiError(CoreError::Unauthenticated("send the node token as a bearer token".into())))
    }
}

async fn register(
    State(state): State<AppState>,
    Node(node): Node,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if let Err(err) = nodes::register(&state.db, &node, &body.node).await {
        // A node coming back larger or elsewhere is refused, and an admin should see it.
        let event = NewEvent {
            principal: format!("node:{}", node.name),
            action: "agent:Register".into(),
            resource: format!("atelier:compute:node/{}", node.name),
            allowed: false,
            status: Some(if matches!(err, CoreError::Conflict(_)) { 409 } else { 422 }),
            summary: err.to_string().chars().take(500).collect(),
            ..NewEvent::default()
        };
        audit::record_or_log(&state.db, event).await;
        return Err(err.into());
    }
    let event = NewEvent {
        principal: format!("node:{}", node.name),
        action: "agent:Register".into(),
        resource: format!("atelier:compute:node/{}", node.name),
        allowed: true,
        status: Some(200),
        summary: format!(
            "agent {} registered: {} CPUs, {} MB, {} GPUs; sandbox: {}",
            body.node.agent_version,
            body.node.cpus,
            body.node.memory_mb,
            body.node.gpus.len(),
            if body.node.sandbox.is_empty() { "none" } else { body.node.sandbox.as_str() }
        ),
        ..NewEvent::default()
    };
    audit::record_or_log(&state.db, event).await;
    // Work it held went back to the queue.
    state.work.notify_waiters();
    let settings = state.config.compute();
    Ok(Json(RegisterResponse {
        node_id: node.id,
        node_name: node.name,
        heartbeat_secs: settings.heartbeat_secs,
        poll_wait_secs: settings.poll_wait_secs,
        lease_secs: settings.lease_secs,
    }))
}

async fn heartbeat(
    State(state): State<AppState>,
    Node(node): Node,
    ApiJson(body): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let mut answer = jobs::heartbeat(&state.db, &node, &body, &state.config.compute()).await?;
    answer.instances = reconcile::sync_node(&state.db, &node, &body.instances).await?;
    answer.kernels = kernels::sync_node(&state.db, &node, &body.kernels).await?;
    Ok(Json(answer))
}

/// The model artifact of an instance placed on this node.
async fn instance_artifact(
    State(state): State<AppState>,
    Node(node): Node,
    Path(instance_id): Path<String>,
) -> Result<Response, ApiError> {
    let artifact_id = reconcile::instance_artifact(&state.db, &node, &instance_id).await?;
    stream_artifact(&state, &artifact_id).await
}

async fn stream_artifact(state: &AppState, artifact_id: &str) -> Result<Response, ApiError> {
    let artifact = artifacts::get(&state.db, artifact_id).await?;
    let stream = state.artifacts.get(&artifact.id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, artifact.size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

/// Long-poll: a lease as soon as one fits this node, 202 when a kernel was placed on
/// it (the agent then sends a heartbeat at once, whose answer lists the kernel), or 204
/// after the wait.
async fn work(
    State(state): State<AppState>,
    Node(node): Node,
    Query(query): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let settings = state.config.compute();
    let wait = Duration::from_secs(query.wait.unwrap_or(settings.poll_wait_secs).min(settings.poll_wait_secs));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register interest before looking, so a wake-up between the look and the
        // wait is not lost.
        let (work, freed) = (state.work.notified(), state.freed.notified());
        if kernels::pending_on(&state.db, &node.id).await? {
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        let full = match jobs::lease(&state.db, &node, &settings).await? {
            jobs::Lease::Assigned(assignment) => return Ok(Json::<Assignment>(*assignment).into_response()),
            jobs::Lease::Full => true,
            jobs::Lease::NothingFits => false,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // New work cannot help a full node; a job ending can help anyone (and a kernel
        // placed, which also wakes `freed`, since kernels fit on full nodes). Another
        // replica's changes wake no one here, hence the periodic look.
        let wake = async {
            if full {
                freed.await
            } else {
                tokio::select! { _ = work => {}, _ = freed => {} }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout((deadline - now).min(RECHECK), wake) => {}
            // The agent polls again, of this server once it is back or of another replica.
            _ = state.shutdown.cancelled() => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// How often a waiting work poll looks at the queue without being woken (changes made
/// through another server replica wake no one here).
const RECHECK: Duration = Duration::from_secs(5);

async fn status(
    State(state): State<AppState>,
    Node(node): Node,
    Path(job_id): Path<String>,
    ApiJson(body): ApiJson<StatusReport>,
) -> Result<Json<serde_json::Value>, ApiError> {
    jobs::report_status(&state.db, &node, &job_id, &body).await?;
    if body.state.is_terminal() {
        state.freed.notify_waiters();
    }
    Ok(Json(serde_json::json!({"ok": true})))
}

async fn logs(
    State(state): State<AppState>,
    Node(node): Node,
    Path(job_id): Path<String>,
    ApiJson(body): ApiJson<LogBatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = jobs::append_logs(&state.db, &node, &job_id, &body).await?;
    Ok(Json(serde_json::json!({"stored": n})))
}

#[derive(Debug, Deserialize)]
struct AttemptQuery {
    attempt: i64,
}

/// An input file of a leased job (a code file, a channel file or its checkpoint).
async fn input(
    State(state): State<AppState>,
    Node(node): Node,
    Path((job_id, artifact_id)): Path<(String, String)>,
    Query(q): Query<AttemptQuery>,
) -> Result<Response, ApiError> {
    let job = jobs::check_lease(&state.db, &node, &job_id, q.attempt).await?;
    let spec = job.spec()?;
    let mut allowed: Vec<&String> = spec.channels.iter().flat_map(|c| c.artifacts.iter()).collect();
    if let atelier_protocol::Algorithm::Script { code, .. } = &spec.algorithm {
        allowed.extend(code.iter());
    }
    if !allowed.contains(&&artifact_id) && job.checkpoint_artifact.as_ref() != Some(&artifact_id) {
        return Err(CoreError::Forbidden(format!("artifact {artifact_id} is not an input of this job")).into());
    }
    stream_artifact(&state, &artifact_id).await
}

async fn store_upload(
    state: &AppState,
    node: &NodeCaller,
    job_id: &str,
    attempt: i64,
    name: &str,
    what: &str,
    body: Body,
) -> Result<(jobs::Job, artifacts::Artifact), ApiError> {
    let job = jobs::check_lease(&state.db, node, job_id, attempt).await?;
    let new = NewArtifact { name, kind: what, job_id: Some(&job.id), created_by: &format!("node:{}", node.name) };
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let artifact = state.artifacts.put(&state.db, new, stream, state.config.max_upload_bytes).await?;
    Ok((job, artifact))
}

/// A new checkpoint of the running attempt (replaces the previous one).
async fn checkpoint(
    State(state): State<AppState>,
    Node(node): Node,
    Path(job_id): Path<String>,
    Query(q): Query<AttemptQuery>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (job, artifact) =
        store_upload(&state, &node, &job_id, q.attempt, "checkpoints.tar.gz", kind::CHECKPOINT, body).await?;
    match jobs::set_checkpoint(&state.db, &node, &job, &artifact).await {
        Ok(Some(old)) => {
            if let Err(err) = state.artifacts.delete(&state.db, &old).await {
                tracing::warn!(error = %err, "superseded checkpoint could not be deleted");
            }
        }
        Ok(None) => {}
        Err(err) => {
            // The lease passed on during the upload: this checkpoint belongs to no one.
            let _ = state.artifacts.delete(&state.db, &artifact.id).await;
            return Err(err.into());
        }
    }
    Ok(Json(serde_json::json!({"artifact_id": artifact.id})))
}

/// The packed `model/` or `output/` directory of a finished attempt.
async fn output(
    State(state): State<AppState>,
    Node(node): Node,
    Path((job_id, what)): Path<(String, String)>,
    Query(q): Query<AttemptQuery>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (name, kind) = match what.as_str() {
        "model" => ("model.tar.gz", kind::MODEL),
        "output" => ("output.tar.gz", kind::OUTPUT),
        _ => return Err(CoreError::invalid("what", "outputs are model or output").into()),
    };
    let (_, artifact) = store_upload(&state, &node, &job_id, q.attempt, name, kind, body).await?;
    Ok(Json(serde_json::json!({"artifact_id": artifact.id})))
}

/// The agent routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agent/v1/register", post(register))
        .route("/agent/v1/heartbeat", post(heartbeat))
        .route("/agent/v1/work", get(work))
        .route("/agent/v1/jobs/{id}/status", post(status))
        .route("/agent/v1/jobs/{id}/logs", post(logs))
        .route("/agent/v1/jobs/{id}/inputs/{artifact}", get(input))
        .route("/agent/v1/jobs/{id}/checkpoint", put(checkpoint))
        .route("/agent/v1/jobs/{id}/outputs/{what}", put(output))
        .route("/agent/v1/instances/{id}/artifact", get(instance_artifact))
}
