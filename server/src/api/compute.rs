//! `/api/v1/compute/nodes`: compute nodes, adding one (its agent token and command),
//! deregistering, and utilization history.

use app::compute::{AddedNode, NodeView};
use atelier_core::compute::nodes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Body of `POST /api/v1/compute/nodes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNodeRequest {
    /// The node's name; the agent registers under it.
    pub name: String,
}

/// Compute nodes the caller may see.
#[utoipa::path(get, path = "/api/v1/compute/nodes", tag = "compute",
    responses((status = 200, body = Vec<NodeView>), (status = 403, body = ErrorBody)))]
pub async fn list_nodes(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<NodeView>>, ApiError> {
    Ok(Json(app::compute::list_node_views(&state.db, &p).await?))
}

/// Adds a node: returns its token (shown once) and the command that starts its agent.
#[utoipa::path(post, path = "/api/v1/compute/nodes", tag = "compute", request_body = AddNodeRequest,
    responses((status = 201, body = AddedNode), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_node(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<AddNodeRequest>,
) -> Result<(StatusCode, Json<AddedNode>), ApiError> {
    let url = state.config.public_url.clone().unwrap_or_else(|| format!("http://{}", state.config.addr));
    Ok((StatusCode::CREATED, Json(app::compute::add_node_for(&state.db, &p, &body.name, &url).await?)))
}

/// One node.
#[utoipa::path(get, path = "/api/v1/compute/nodes/{node}", tag = "compute",
    params(("node" = String, Path, description = "Node name")),
    responses((status = 200, body = NodeView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_node(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let node = nodes::get(&state.db, &p, &name).await?;
    Ok(Json(app::compute::node_view(&state.db, node).await?))
}

/// Deregisters a node: its token stops working and its work is requeued.
#[utoipa::path(delete, path = "/api/v1/compute/nodes/{node}", tag = "compute",
    params(("node" = String, Path, description = "Node name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn deregister_node(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    nodes::deregister(&state.db, &p, &name).await?;
    state.work.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// Which utilization history to return.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageQuery {
    /// Minutes of history (default 60, at most 1440).
    pub minutes: Option<i64>,
}

/// A utilization sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageSample {
    pub ts: i64,
    pub cpu_pct: f64,
    pub memory_used_mb: i64,
    pub gpus: Vec<atelier_protocol::GpuUsage>,
}

/// The node's utilization history, oldest first.
#[utoipa::path(get, path = "/api/v1/compute/nodes/{node}/usage", tag = "compute",
    params(("node" = String, Path, description = "Node name"), UsageQuery),
    responses((status = 200, body = Vec<UsageSample>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn node_usage(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<Vec<UsageSample>>, ApiError> {
    let since = atelier_core::now() - q.minutes.unwrap_or(60).clamp(1, 1440) * 60;
    let (_, samples) = nodes::samples(&state.db, &p, &name, since).await?;
    Ok(Json(
        samples
            .into_iter()
            .map(|s| UsageSample {
                ts: s.ts,
                cpu_pct: s.cpu_pct,
                memory_used_mb: s.memory_used_mb,
                gpus: serde_json::from_str(&s.gpus).unwrap_or_default(),
            })
            .collect(),
    ))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_nodes, add_node))
        .routes(routes!(get_node, deregister_node))
        .routes(routes!(node_usage))
}
