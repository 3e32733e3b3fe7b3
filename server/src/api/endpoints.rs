//! `/api/v1/endpoints`: endpoints, their deployments, events and metrics, and
//! invocations (also served at `/endpoints/{name}/invocations`).

use atelier_core::endpoints::{self, alarms, autoscaling, capture, metrics};
use atelier_core::monitor::runs;
use atelier_core::CoreError;
use atelier_protocol::endpoints::{
    Alarm, AlarmMute, Autoscaling, CaptureFile, DataCapture, DataCaptureStatus, Endpoint, EndpointConfig,
    EndpointEvent, EndpointMetrics, NewAlarm, NewEndpoint,
};
use atelier_protocol::monitor::{Monitor, MonitorConfig, MonitorRun};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::training::artifact_response;
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Endpoints the caller may read.
#[utoipa::path(get, path = "/api/v1/endpoints", tag = "endpoints",
    responses((status = 200, body = Vec<Endpoint>), (status = 403, body = ErrorBody)))]
pub async fn list_endpoints(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<Endpoint>>, ApiError> {
    Ok(Json(endpoints::list(&state.db, &p).await?))
}

/// Creates an endpoint and deploys its variants (each an Approved model version).
#[utoipa::path(post, path = "/api/v1/endpoints", tag = "endpoints", request_body = NewEndpoint,
    responses((status = 201, body = Endpoint), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    Ok((StatusCode::CREATED, Json(endpoints::create(&state.db, &p, &body).await?)))
}

/// One endpoint: status, variants, instances.
#[utoipa::path(get, path = "/api/v1/endpoints/{name}", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, body = Endpoint), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(endpoints::get(&state.db, &p, &name).await?))
}

/// Deploys a new configuration blue/green: the current one serves until every new
/// instance is healthy; if the new instances keep failing, the update is rolled back.
#[utoipa::path(put, path = "/api/v1/endpoints/{name}", tag = "endpoints", request_body = EndpointConfig,
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, body = Endpoint), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<EndpointConfig>,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(endpoints::update(&state.db, &p, &name, &body).await?))
}

/// Deletes an endpoint; its model servers are stopped.
#[utoipa::path(delete, path = "/api/v1/endpoints/{name}", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    endpoints::delete(&state.db, &state.artifacts, &p, &name).await?;
    state.invoker.forget(&name);
    Ok(StatusCode::NO_CONTENT)
}

/// An endpoint's history: deployments, instances failing and recovering, rollbacks.
#[utoipa::path(get, path = "/api/v1/endpoints/{name}/events", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, body = Vec<EndpointEvent>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn endpoint_events(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<Vec<EndpointEvent>>, ApiError> {
    Ok(Json(endpoints::events(&state.db, &p, &name).await?))
}

/// The range of a metrics query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct MetricsQuery {
    /// Seconds since the epoch (default: an hour before `to`).
    pub from: Option<i64>,
    /// Seconds since the epoch (default: now).
    pub to: Option<i64>,
    /// A variant's name, or `*` (default) for the whole endpoint.
    pub variant: Option<String>,
}

/// Invocations, 4xx and 5xx counts, instance counts and latency percentiles (model and
/// overhead), per minute up to a day, in coarser steps beyond.
#[utoipa::path(get, path = "/api/v1/endpoints/{name}/metrics", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name"), MetricsQuery),
    responses((status = 200, body = EndpointMetrics), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn endpoint_metrics(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<EndpointMetrics>, ApiError> {
    let to = q.to.unwrap_or_else(|| atelier_core::now() + 60);
    let from = q.from.unwrap_or(to - 3600);
    let variant = q.variant.as_deref().unwrap_or("*");
    Ok(Json(metrics::series(&state.db, &p, &name, variant, from, to).await?))
}

/// Sends a request to the endpoint's model (JSON, CSV, an image: the content type is
/// passed through) and answers with the model's response; `X-Atelier-Variant` names
/// the variant that answered, `X-Atelier-Target-Variant` picks one. 503 when no
/// instance is healthy, 504 when the model takes too long; the model's own 4xx pass
/// through.
#[utoipa::path(post, path = "/api/v1/endpoints/{name}/invocations", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    request_body(content = String, description = "The payload, in the content type the model takes"),
    responses((status = 200, description = "The model's answer"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn invoke_endpoint(
    state: State<AppState>,
    auth: Auth,
    name: Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    crate::endpoints::invoke(state, auth, name, headers, body).await
}

/// Turns data capture on or off, or changes its share or budget.
#[utoipa::path(put, path = "/api/v1/endpoints/{name}/data-capture", tag = "endpoints", request_body = DataCapture,
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, body = DataCaptureStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_data_capture(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<DataCapture>,
) -> Result<Json<DataCaptureStatus>, ApiError> {
    let status = capture::configure(&state.db, &p, &name, &body).await?;
    state.invoker.forget(&name);
    Ok(Json(status))
}

/// The range of a capture listing.
#[derive(Debug, Deserialize, IntoParams)]
pub struct CaptureQuery {
    /// Seconds since the epoch (default: a day before `to`).
    pub from: Option<i64>,
    /// Seconds since the epoch (default: now).
    pub to: Option<i64>,
}

/// The captured files (JSON Lines, SageMaker's capture record format) with records
/// between `from` and `to`, oldest first.
#[utoipa::path(get, path = "/api/v1/endpoints/{name}/captures", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name"), CaptureQuery),
    responses((status = 200, body = Vec<CaptureFile>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_captures(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    Query(q): Query<CaptureQuery>,
) -> Result<Json<Vec<CaptureFile>>, ApiError> {
    let to = q.to.unwrap_or_else(atelier_core::now);
    let from = q.from.unwrap_or(to - 86_400);
    Ok(Json(capture::files(&state.db, &p, &name, from, to).await?))
}

/// One captured file's content.
#[utoipa::path(get, path = "/api/v1/endpoints/{name}/captures/{id}/content", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name"), ("id" = String, Path, description = "The file's artifact id")),
    responses((status = 200, description = "JSON Lines"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn capture_content(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let artifact = capture::file(&state.db, &p, &name, &id).await?;
    artifact_response(&state, artifact).await
}

/// The endpoint's model monitor: baseline, constraints, thresholds and schedule (null
/// when none is set up).
#[utoipa::path(get, path = "/api/v1/endpoints/{name}/monitor", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, body = Option<Monitor>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_monitor(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<Option<Monitor>>, ApiError> {
    Ok(Json(runs::get(&state.db, &p, &name).await?))
}

/// Sets up the model monitor: profiles the training data of the version the endpoint
/// serves as the baseline, suggests constraints, and schedules runs (`hourly`, `daily`
/// or `manual`). Drift thresholds default to PSI 0.2, KS 0.1, Jensen–Shannon 0.1.
#[utoipa::path(put, path = "/api/v1/endpoints/{name}/monitor", tag = "endpoints", request_body = MonitorConfig,
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, body = Monitor), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_monitor(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<MonitorConfig>,
) -> Result<Json<Monitor>, ApiError> {
    Ok(Json(runs::configure(&state.db, &state.artifacts, &p, &name, &body).await?))
}

/// The window of an on-demand run.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Seconds since the epoch (default: the last run, or an hour before `to`).
    #[serde(default)]
    pub from: Option<i64>,
    /// Seconds since the epoch (default: now).
    #[serde(default)]
    pub to: Option<i64>,
}

/// Runs the monitor now over a window of captured inputs; answers with the report.
#[utoipa::path(post, path = "/api/v1/endpoints/{name}/monitor/runs", tag = "endpoints", request_body = RunRequest,
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 201, body = MonitorRun), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn run_monitor(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RunRequest>,
) -> Result<(StatusCode, Json<MonitorRun>), ApiError> {
    let run = runs::run_now(&state.db, &state.artifacts, &p, &name, body.from, body.to).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

/// The monitor's runs, newest first (without their reports).
#[utoipa::path(get, path = "/api/v1/endpoints/{name}/monitor/runs", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, body = Vec<MonitorRun>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_monitor_runs(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<Vec<MonitorRun>>, ApiError> {
    Ok(Json(runs::runs(&state.db, &p, &name).await?))
}

/// One run with its report: drift per feature and constraint violations.
#[utoipa::path(get, path = "/api/v1/endpoints/{name}/monitor/runs/{id}", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name"), ("id" = String, Path, description = "Run id")),
    responses((status = 200, body = MonitorRun), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_monitor_run(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<MonitorRun>, ApiError> {
    Ok(Json(runs::run(&state.db, &p, &name, &id).await?))
}

/// The endpoint's alarms with their state and history.
#[utoipa::path(get, path = "/api/v1/endpoints/{name}/alarms", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, body = Vec<Alarm>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_alarms(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<Vec<Alarm>>, ApiError> {
    Ok(Json(alarms::list(&state.db, &p, &name).await?))
}

/// An alarm's body, read so that a value of the wrong type is a 422 naming its field
/// (`"threshold": "high"`), not one about the whole body.
fn alarm_body(body: serde_json::Value) -> Result<NewAlarm, ApiError> {
    for (field, what) in [("threshold", "a number"), ("periods", "a whole number"), ("retrain", "true or false")] {
        let fits = match body.get(field) {
            None | Some(serde_json::Value::Null) => true,
            Some(v) if field == "retrain" => v.is_boolean(),
            Some(v) if field == "periods" => v.is_i64(),
            Some(v) => v.is_number(),
        };
        if !fits {
            return Err(CoreError::invalid(field, format!("{field} must be {what}")).into());
        }
    }
    serde_json::from_value(body).map_err(|e| CoreError::invalid("body", e.to_string()).into())
}

/// Adds an alarm: a threshold on a per-minute metric or on the model monitor's drift,
/// in alarm after `periods` breaching periods in a row; changes go to the webhooks
/// (`endpoint.alarm_changed`) and, with `retrain`, open a retraining job. A name the
/// endpoint's alarms already use is a 409 (change that alarm with `PUT`).
#[utoipa::path(post, path = "/api/v1/endpoints/{name}/alarms", tag = "endpoints", request_body = NewAlarm,
    params(("name" = String, Path, description = "Endpoint name")),
    responses((status = 201, body = Alarm), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "An alarm of that name exists", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_alarm(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<Alarm>), ApiError> {
    let body = alarm_body(body)?;
    Ok((StatusCode::CREATED, Json(alarms::create(&state.db, &p, &name, &body).await?)))
}

/// Changes an alarm: its condition, and its name when the body's differs (a name
/// another alarm uses is a 409). Its history stays; breaching periods are counted again.
#[utoipa::path(put, path = "/api/v1/endpoints/{name}/alarms/{alarm}", tag = "endpoints", request_body = NewAlarm,
    params(("name" = String, Path, description = "Endpoint name"), ("alarm" = String, Path, description = "Alarm name")),
    responses((status = 200, body = Alarm), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Another alarm has the new name", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_alarm(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, alarm)): Path<(String, String)>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<Alarm>, ApiError> {
    let body = alarm_body(body)?;
    Ok(Json(alarms::update(&state.db, &p, &name, &alarm, &body).await?))
}

/// Mutes or unmutes an alarm. A muted alarm is still evaluated and keeps its history,
/// but sends no webhook, writes no endpoint event, opens no retraining job and is not
/// shown as firing.
#[utoipa::path(put, path = "/api/v1/endpoints/{name}/alarms/{alarm}/mute", tag = "endpoints", request_body = AlarmMute,
    params(("name" = String, Path, description = "Endpoint name"), ("alarm" = String, Path, description = "Alarm name")),
    responses((status = 200, body = Alarm), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn mute_alarm(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, alarm)): Path<(String, String)>,
    ApiJson(body): ApiJson<AlarmMute>,
) -> Result<Json<Alarm>, ApiError> {
    Ok(Json(alarms::set_muted(&state.db, &p, &name, &alarm, body.muted).await?))
}

/// Deletes an alarm.
#[utoipa::path(delete, path = "/api/v1/endpoints/{name}/alarms/{alarm}", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name"), ("alarm" = String, Path, description = "Alarm name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_alarm(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, alarm)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    alarms::delete(&state.db, &p, &name, &alarm).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a variant's autoscaling policy: the instance count follows the last minute's
/// invocations (one instance per `target_invocations_per_instance`) within
/// `min_instances`-`max_instances`; each scaling is in the endpoint's history.
#[utoipa::path(put, path = "/api/v1/endpoints/{name}/variants/{variant}/autoscaling", tag = "endpoints",
    request_body = Autoscaling,
    params(("name" = String, Path, description = "Endpoint name"), ("variant" = String, Path, description = "Variant name")),
    responses((status = 200, body = Autoscaling), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_autoscaling(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, variant)): Path<(String, String)>,
    ApiJson(body): ApiJson<Autoscaling>,
) -> Result<Json<Autoscaling>, ApiError> {
    Ok(Json(autoscaling::put(&state.db, &p, &name, &variant, &body).await?))
}

/// Removes a variant's autoscaling policy; its instance count stays as it is.
#[utoipa::path(delete, path = "/api/v1/endpoints/{name}/variants/{variant}/autoscaling", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name"), ("variant" = String, Path, description = "Variant name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_autoscaling(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, variant)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    autoscaling::delete(&state.db, &p, &name, &variant).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(endpoint_events))
        .routes(routes!(endpoint_metrics))
        .routes(routes!(invoke_endpoint))
        .routes(routes!(set_data_capture))
        .routes(routes!(list_captures))
        .routes(routes!(capture_content))
        .routes(routes!(get_monitor, set_monitor))
        .routes(routes!(run_monitor, list_monitor_runs))
        .routes(routes!(get_monitor_run))
        .routes(routes!(list_alarms, create_alarm))
        .routes(routes!(update_alarm, delete_alarm))
        .routes(routes!(mute_alarm))
        .routes(routes!(put_autoscaling, delete_autoscaling))
}
