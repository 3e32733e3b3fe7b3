//! Endpoint traffic: `POST /endpoints/{name}/invocations` routed by variant weight to
//! a healthy model server instance over kept-alive connections, and the background
//! reconciler that deploys endpoints and the flusher that stores their metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atelier_core::authz::{authorize, Action, Principal};
use atelier_core::endpoints::metrics::Recorder;
use atelier_core::endpoints::reconcile::{self, Route, RouteInstance, RouteVariant};
use atelier_core::endpoints::{capture, resource};
use atelier_core::CoreError;
use atelier_protocol::endpoints::{TARGET_VARIANT_HEADER, VARIANT_HEADER};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use rand::Rng;

use crate::api::error::ApiError;
use crate::api::Auth;
use crate::state::AppState;

/// SageMaker's limit on an invocation's payload.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// How long a route read from the database is used before it is read again: an
/// instance that became healthy (or was stopped) is seen within this long.
const ROUTE_TTL: Duration = Duration::from_secs(1);

/// At most this many instances are tried for one invocation.
const MAX_TRIES: usize = 3;

/// Routes invocations and counts them.
pub struct Invoker {
    http: reqwest::Client,
    routes: Mutex<HashMap<String, (Instant, Arc<Route>)>>,
    pub recorder: Recorder,
    /// Captured records not yet stored, by endpoint and hour.
    captured: Mutex<HashMap<(String, i64), capture::Batch>>,
    /// Held while counts and captures are written: a flush returns only once what an
    /// earlier one took is stored too.
    flushing: tokio::sync::Mutex<()>,
    timeout: Duration,
}

/// A replica keeps at most this much captured data of one endpoint between flushes;
/// beyond it records are dropped rather than memory grown.
const CAPTURE_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// One invocation as the caller sent it.
pub struct Call<'a> {
    pub endpoint: &'a str,
    /// The variant asked for (`X-Atelier-Target-Variant`), if any.
    pub target: Option<&'a str>,
    pub content_type: Option<HeaderValue>,
    pub accept: Option<HeaderValue>,
    pub body: Bytes,
}

/// What an invocation answered (the model's own status and body, passed through).
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub variant: String,
    pub body: Bytes,
}

impl Invoker {
    pub fn new(timeout: Duration) -> anyhow::Result<Invoker> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Invoker {
            http,
            routes: Mutex::new(HashMap::new()),
            recorder: Recorder::default(),
            captured: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
            timeout,
        })
    }

    async fn route(&self, state: &AppState, name: &str) -> Result<Arc<Route>, CoreError> {
        if let Ok(routes) = self.routes.lock() {
            if let Some((at, route)) = routes.get(name) {
                if at.elapsed() < ROUTE_TTL {
                    return Ok(route.clone());
                }
            }
        }
        let route = Arc::new(reconcile::route(&state.db, name).await?);
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(name.to_string(), (Instant::now(), route.clone()));
        }
        Ok(route)
    }

    /// Drops a cached route (an endpoint was deleted or changed through this replica;
    /// the others see it within [`ROUTE_TTL`]).
    pub fn forget(&self, name: &str) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(name);
        }
    }

    /// Sends one invocation for `p`, who must be allowed `endpoints:InvokeEndpoint`.
    pub async fn invoke(&self, state: &AppState, p: &Principal, call: Call<'_>) -> Result<Answer, CoreError> {
        let Call { endpoint: name, target, content_type, accept, body } = call;
        let started = Instant::now();
        authorize(p, Action::InvokeEndpoint, &resource(name))?;
        if body.len() > MAX_PAYLOAD_BYTES {
            return Err(CoreError::TooLarge(format!(
                "the payload is {} bytes; an invocation carries at most {MAX_PAYLOAD_BYTES} bytes",
                body.len()
            )));
        }
        let route = self.route(state, name).await?;
        authorize(p, Action::InvokeEndpoint, &route.resource)?;
        let candidates = candidates(&route, target, name)?;
        let (request_type, request_body) = (content_type.clone(), body.clone());
        let mut last_error = None;
        for &(variant, instance) in candidates.iter().take(MAX_TRIES) {
            let url = &instance.url;
            let mut request = self.http.post(format!("{url}/invocations")).timeout(self.timeout).body(body.clone());
            if !instance.secret.is_empty() {
                request = request.bearer_auth(&instance.secret);
            }
            if let Some(ct) = &content_type {
                request = request.header(header::CONTENT_TYPE, ct.clone());
            }
            if let Some(accept) = &accept {
                request = request.header(header::ACCEPT, accept.clone());
            }
            let sent = Instant::now();
            let response = match request.send().await {
                Ok(response) => response,
                // Nothing reached the model: safe to try another instance.
                Err(err) if err.is_connect() => {
                    tracing::warn!(endpoint = name, %url, error = %err, "instance unreachable; trying another");
                    self.forget(name);
                    last_error = Some(format!("instance of variant {variant} unreachable"));
                    continue;
                }
                Err(err) => {
                    let model_us = sent.elapsed().as_micros() as u64;
                    let (status, message) = if err.is_timeout() {
                        (504, format!("the model did not answer within {} s", self.timeout.as_secs()))
                    } else {
                        (502, format!("the model server's answer was cut short: {err}"))
                    };
                    self.record(state, &route, variant, status, model_us, started);
                    return Err(upstream(status, message));
                }
            };
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let body = match bounded_answer(response).await {
                Ok(body) => body,
                Err(message) => {
                    self.record(state, &route, variant, 502, sent.elapsed().as_micros() as u64, started);
                    return Err(upstream(502, message));
                }
            };
            let model_us = sent.elapsed().as_micros() as u64;
            self.record(state, &route, variant, status.as_u16(), model_us, started);
            let answer = Answer { status, content_type, variant: variant.to_string(), body };
            if route.capture_percent > 0 && rand::thread_rng().gen_range(0..100) < route.capture_percent {
                self.capture(state, &route, request_type.as_ref(), &request_body, &answer);
            }
            return Ok(answer);
        }
        Err(upstream(503, last_error.unwrap_or_else(|| format!("endpoint {name} has no healthy instance"))))
    }

    /// Adds one request and its response to the endpoint's capture, in SageMaker's
    /// capture record format.
    fn capture(
        &self,
        state: &AppState,
        route: &Route,
        content_type: Option<&HeaderValue>,
        body: &Bytes,
        answer: &Answer,
    ) {
        let at = time::OffsetDateTime::now_utc();
        let t = at.unix_timestamp();
        let record = serde_json::json!({
            "captureData": {
                "endpointInput": capture_data("INPUT", content_type, body),
                "endpointOutput": capture_data("OUTPUT", answer.content_type.as_ref(), &answer.body),
            },
            "eventMetadata": {
                "eventId": uuid::Uuid::new_v4().to_string(),
                "inferenceTime": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "variant": answer.variant,
                "status": answer.status.as_u16(),
            },
            "eventVersion": "0",
        });
        let Ok(mut line) = serde_json::to_vec(&record) else { return };
        line.push(b'\n');
        let hour = t - t.rem_euclid(3600);
        let Ok(mut captured) = self.captured.lock() else { return };
        let batch = captured.entry((route.endpoint_id.clone(), hour)).or_insert_with(|| capture::Batch {
            endpoint_id: route.endpoint_id.clone(),
            endpoint: route.name.clone(),
            hour,
            first_at: t,
            last_at: t,
            records: 0,
            lines: Vec::new(),
        });
        if batch.lines.len() + line.len() > CAPTURE_BUFFER_BYTES {
            state.metrics.capture_dropped(&route.name);
            return;
        }
        batch.last_at = t;
        batch.records += 1;
        batch.lines.extend_from_slice(&line);
    }

    /// Stores the counted metrics and the captured records.
    pub async fn flush(&self, state: &AppState) {
        let _one_at_a_time = self.flushing.lock().await;
        if let Err(err) = self.recorder.flush(&state.db).await {
            tracing::warn!(error = %err, "endpoint metrics could not be stored");
        }
        let batches: Vec<capture::Batch> = match self.captured.lock() {
            Ok(mut captured) => captured.drain().map(|(_, b)| b).collect(),
            Err(_) => return,
        };
        for batch in batches {
            if let Err(err) = capture::store(&state.db, &state.artifacts, batch).await {
                tracing::warn!(error = %err, "captured invocations could not be stored");
            }
        }
        // A paused or changed capture is seen at the next route read.
    }

    fn record(&self, state: &AppState, route: &Route, variant: &str, status: u16, model_us: u64, started: Instant) {
        let overhead_us = started.elapsed().as_micros().saturating_sub(model_us as u128) as u64;
        self.recorder.record(&route.endpoint_id, variant, status, model_us, overhead_us);
        state.metrics.observe_invocation(&route.name, variant, status, model_us, overhead_us);
    }
}

/// The instances to try, in order: the chosen variant's (picked by weight, or the one
/// asked for) from a random start, then, unless one was asked for, the others'.
fn candidates<'r>(
    route: &'r Route,
    target: Option<&str>,
    name: &str,
) -> Result<Vec<(&'r str, &'r RouteInstance)>, CoreError> {
    let live: Vec<_> = route.variants.iter().filter(|v| !v.instances.is_empty()).collect();
    let chosen = match target {
        Some(target) => {
            let Some(v) = route.variants.iter().find(|v| v.name == target) else {
                let names: Vec<&str> = route.variants.iter().map(|v| v.name.as_str()).collect();
                return Err(CoreError::invalid(
                    "X-Atelier-Target-Variant",
                    format!("endpoint {name} has no variant {target}; its variants: {}", names.join(", ")),
                ));
            };
            v
        }
        None => {
            let total: f64 = live.iter().map(|v| v.weight).sum();
            if live.is_empty() || total <= 0.0 {
                return Err(upstream(503, format!("endpoint {name} has no healthy instance")));
            }
            let mut x = rand::thread_rng().gen_range(0.0..total);
            let mut pick = live[live.len() - 1];
            for v in &live {
                if x < v.weight {
                    pick = v;
                    break;
                }
                x -= v.weight;
            }
            pick
        }
    };
    let mut out = Vec::new();
    let mut push = |v: &'r RouteVariant| {
        if v.instances.is_empty() {
            return;
        }
        let start = rand::thread_rng().gen_range(0..v.instances.len());
        for i in 0..v.instances.len() {
            out.push((v.name.as_str(), &v.instances[(start + i) % v.instances.len()]));
        }
    };
    push(chosen);
    if target.is_none() {
        for v in live.iter().filter(|v| v.name != chosen.name) {
            push(v);
        }
    }
    if out.is_empty() {
        return Err(upstream(503, format!("variant {} of endpoint {name} has no healthy instance", chosen.name)));
    }
    Ok(out)
}

/// A captured payload: text as it was (JSON or CSV), anything else in base64.
fn capture_data(mode: &str, content_type: Option<&HeaderValue>, body: &Bytes) -> serde_json::Value {
    use base64::Engine;
    let observed = content_type.and_then(|c| c.to_str().ok()).unwrap_or("");
    let (encoding, data) = match std::str::from_utf8(body) {
        Ok(text) if observed.contains("json") => ("JSON", text.to_string()),
        Ok(text) if observed.contains("csv") => ("CSV", text.to_string()),
        Ok(text) if observed.starts_with("text/") || observed.is_empty() => ("TEXT", text.to_string()),
        _ => ("BASE64", base64::engine::general_purpose::STANDARD.encode(body)),
    };
    serde_json::json!({"observedContentType": observed, "mode": mode, "data": data, "encoding": encoding})
}

/// Errors that are the model server's or the fleet's, not the caller's.
fn upstream(status: u16, message: String) -> CoreError {
    CoreError::Upstream { status, message }
}

pub async fn invoke(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = authorized_payload(&p, &name, body).await?;
    let target = headers.get(TARGET_VARIANT_HEADER).and_then(|v| v.to_str().ok());
    let call = Call {
        endpoint: &name,
        target,
        content_type: headers.get(header::CONTENT_TYPE).cloned(),
        accept: headers.get(header::ACCEPT).cloned(),
        body,
    };
    let answer = state.invoker.invoke(&state, &p, call).await?;
    let mut response = (answer.status, answer.body).into_response();
    if let Some(ct) = answer.content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Ok(v) = HeaderValue::from_str(&answer.variant) {
        response.headers_mut().insert(VARIANT_HEADER, v);
    }
    Ok(response)
}

/// The invocation's payload, read only once `p` may invoke the endpoint (by name; the
/// invoker checks the endpoint's full resource again) and at most
/// [`MAX_PAYLOAD_BYTES`] of it: a caller who may not invoke makes the server read nothing.
async fn authorized_payload(p: &Principal, name: &str, body: Body) -> Result<Bytes, CoreError> {
    authorize(p, Action::InvokeEndpoint, &resource(name))?;
    axum::body::to_bytes(body, MAX_PAYLOAD_BYTES).await.map_err(|_| {
        CoreError::TooLarge(format!(
            "the payload is too large; an invocation carries at most {MAX_PAYLOAD_BYTES} bytes"
        ))
    })
}

/// Reads a model server's answer, refusing one over [`MAX_PAYLOAD_BYTES`] (SageMaker's
/// limit on a response too): a model that streams without end cannot fill the
/// server's memory.
async fn bounded_answer(mut response: reqwest::Response) -> Result<Bytes, String> {
    if response.content_length().is_some_and(|n| n > MAX_PAYLOAD_BYTES as u64) {
        return Err(format!("the model's answer is larger than the limit of {MAX_PAYLOAD_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|e| format!("the model server's answer was cut short: {e}"))?
    {
        if body.len() + chunk.len() > MAX_PAYLOAD_BYTES {
            return Err(format!("the model's answer is larger than the limit of {MAX_PAYLOAD_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// Whether a path is an invocation (it gets the payload limit and API-style errors).
pub fn is_invocation(path: &str) -> bool {
    (path.starts_with("/endpoints/") && path.ends_with("/invocations"))
        || (path.starts_with("/v2/models/") && path.ends_with("/infer"))
}

/// The invocation route.
pub fn router() -> Router<AppState> {
    Router::new().route("/endpoints/{name}/invocations", post(invoke))
}

/// Background work: deploys endpoints and evaluates alarms (every second); stores
/// invocation counts and captures, autoscales, and starts due monitor runs (every
/// five); folds and deletes old metrics (every minute).
pub fn spawn_background(state: AppState) {
    let s = state.clone();
    let retention = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = reconcile::reconcile(&s.db).await {
                tracing::warn!(error = %err, "endpoint reconciliation failed");
            }
            // Each alarm is evaluated once per completed minute, whichever tick sees it.
            if let Err(err) = atelier_core::endpoints::alarms::evaluate_minutes(&s.db, &s.artifacts).await {
                tracing::warn!(error = %err, "endpoint alarms could not be evaluated");
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            state.invoker.flush(&state).await;
            // Autoscaling reads the counts just stored.
            if let Err(err) = atelier_core::endpoints::autoscaling::autoscale(&state.db).await {
                tracing::warn!(error = %err, "endpoint autoscaling failed");
            }
            // Scheduled model monitor runs, checked on the same beat.
            if let Err(err) = atelier_core::monitor::runs::run_due(&state.db, &state.artifacts).await {
                tracing::warn!(error = %err, "scheduled model monitor runs failed");
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = atelier_core::retention::run(&retention.db, retention.config.retention()).await {
                tracing::warn!(error = %err, "old metrics could not be folded or deleted");
            }
        }
    });
}

/// Open Inference Protocol v2 (KServe, Triton) for the same endpoints: the model name is
/// the endpoint's. A request's inputs are columns (`shape` `[N]` or `[N, 1]`), turned into
/// `N` JSON instances for the model; the answer's predictions become one output per field.
pub mod v2 {
    use super::*;
    use axum::routing::get;
    use axum::Json;
    use serde::Deserialize;
    use serde_json::{json, Map, Value};

    /// A v2 error: `{"error": "..."}` with the status.
    fn error(status: StatusCode, message: impl Into<String>) -> Response {
        (status, Json(json!({"error": message.into()}))).into_response()
    }

    fn core_error(err: CoreError) -> Response {
        let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &err {
            CoreError::Internal(source) => {
                tracing::error!(error = %source, "v2 inference request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        error(status, message)
    }

    #[derive(Debug, Deserialize)]
    struct InferRequest {
        #[serde(default)]
        id: Option<String>,
        inputs: Vec<Tensor>,
    }

    #[derive(Debug, Deserialize)]
    struct Tensor {
        name: String,
        shape: Vec<i64>,
        #[serde(default)]
        datatype: String,
        data: Value,
    }

    /// Server readiness, for load balancers and KServe clients (public, like `/readyz`).
    async fn ready(state: State<AppState>) -> Response {
        crate::health::readyz(state).await.into_response()
    }

    async fn metadata(State(state): State<AppState>, Auth(p): Auth, Path(name): Path<String>) -> Response {
        let endpoint = match atelier_core::endpoints::get(&state.db, &p, &name).await {
            Ok(e) => e,
            Err(err) => return core_error(err),
        };
        let inputs: Vec<Value> = match atelier_core::monitor::runs::get(&state.db, &p, &name).await {
            Ok(Some(m)) => m
                .baseline
                .features
                .iter()
                .map(|f| {
                    let datatype = match f.kind {
                        atelier_protocol::monitor::FeatureKind::Numeric => "FP64",
                        atelier_protocol::monitor::FeatureKind::Categorical => "BYTES",
                    };
                    json!({"name": f.name, "datatype": datatype, "shape": [-1]})
                })
                .collect(),
            _ => Vec::new(),
        };
        let versions: Vec<String> = endpoint.active_generation.iter().map(i64::to_string).collect();
        Json(json!({"name": endpoint.name, "versions": versions, "platform": "atelier", "inputs": inputs}))
            .into_response()
    }

    async fn model_ready(State(state): State<AppState>, Auth(p): Auth, Path(name): Path<String>) -> Response {
        match atelier_core::endpoints::get(&state.db, &p, &name).await {
            Ok(e) if e.variants.iter().any(|v| v.healthy > 0) && e.active_generation.is_some() => {
                StatusCode::OK.into_response()
            }
            Ok(_) => error(StatusCode::SERVICE_UNAVAILABLE, format!("model {name} has no healthy instance")),
            Err(err) => core_error(err),
        }
    }

    /// Columns to instances: input `i`'s value `n` becomes field `name_i` of instance `n`.
    fn instances(inputs: &[Tensor]) -> Result<Vec<Value>, String> {
        let mut rows: Option<usize> = None;
        let mut columns = Vec::new();
        for input in inputs {
            let values = input.data.as_array().ok_or_else(|| format!("input {}: data must be a list", input.name))?;
            let flat: Vec<&Value> = values
                .iter()
                .flat_map(|v| v.as_array().map(|a| a.iter().collect()).unwrap_or_else(|| vec![v]))
                .collect();
            let n = match input.shape.as_slice() {
                [n] | [n, 1] if *n >= 0 => *n as usize,
                other => {
                    return Err(format!(
                        "input {}: shape {other:?} is not a column; send each feature as its own input of shape [N]",
                        input.name
                    ))
                }
            };
            if flat.len() != n {
                return Err(format!("input {}: shape says {n} values, data has {}", input.name, flat.len()));
            }
            if rows.is_some_and(|r| r != n) {
                return Err(format!("input {}: every input must have the same number of rows", input.name));
            }
            rows = Some(n);
            let _ = &input.datatype;
            columns.push((input.name.clone(), flat));
        }
        let n = rows.ok_or("inputs is empty")?;
        Ok((0..n)
            .map(|i| {
                Value::Object(
                    columns.iter().map(|(name, values)| (name.clone(), values[i].clone())).collect::<Map<_, _>>(),
                )
            })
            .collect())
    }

    /// Predictions to outputs: one per field, strings as BYTES, numbers as FP64, and
    /// anything else (such as class probabilities) as JSON text.
    fn outputs(predictions: &[Value]) -> Vec<Value> {
        let mut names: Vec<String> = Vec::new();
        for p in predictions {
            match p.as_object() {
                Some(o) => names.extend(o.keys().filter(|k| !names.contains(k)).cloned().collect::<Vec<_>>()),
                None if !names.iter().any(|n| n == "prediction") => names.push("prediction".into()),
                None => {}
            }
        }
        names
            .into_iter()
            .map(|name| {
                let values: Vec<&Value> =
                    predictions.iter().map(|p| p.as_object().map_or(p, |o| o.get(&name).unwrap_or(&Value::Null))).collect();
                let numeric = values.iter().all(|v| v.is_number());
                let data: Vec<Value> = values
                    .iter()
                    .map(|v| match v {
                        Value::String(_) | Value::Number(_) => (*v).clone(),
                        other => Value::String(other.to_string()),
                    })
                    .collect();
                json!({"name": name, "shape": [data.len()], "datatype": if numeric { "FP64" } else { "BYTES" }, "data": data})
            })
            .collect()
    }

    async fn infer(State(state): State<AppState>, Auth(p): Auth, Path(name): Path<String>, body: Body) -> Response {
        let body = match authorized_payload(&p, &name, body).await {
            Ok(body) => body,
            Err(err) => return core_error(err),
        };
        let request: InferRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("not an inference request: {e}")),
        };
        let rows = match instances(&request.inputs) {
            Ok(rows) => rows,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let payload = Bytes::from(json!({"instances": rows}).to_string());
        let json_type = Some(HeaderValue::from_static("application/json"));
        let call =
            Call { endpoint: &name, target: None, content_type: json_type.clone(), accept: json_type, body: payload };
        let answer = match state.invoker.invoke(&state, &p, call).await {
            Ok(a) => a,
            Err(err) => return core_error(err),
        };
        let parsed: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if !answer.status.is_success() {
            let message = parsed["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned());
            return error(answer.status, message);
        }
        let Some(predictions) = parsed["predictions"].as_array().or_else(|| parsed.as_array()) else {
            return error(StatusCode::BAD_GATEWAY, "the model's answer has no predictions list");
        };
        let mut response = Json(json!({
            "model_name": name,
            "id": request.id.unwrap_or_default(),
            "parameters": {"variant": answer.variant},
            "outputs": outputs(predictions),
        }))
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&answer.variant) {
            response.headers_mut().insert(VARIANT_HEADER, v);
        }
        response
    }

    /// The v2 routes.
    pub fn router() -> Router<AppState> {
        Router::new()
            .route("/v2/health/ready", get(ready))
            .route("/v2/health/live", get(|| async { StatusCode::OK }))
            .route("/v2/models/{name}", get(metadata))
            .route("/v2/models/{name}/ready", get(model_ready))
            .route("/v2/models/{name}/infer", post(infer))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn columns_become_instances_and_predictions_become_outputs() {
            let inputs: Vec<Tensor> = serde_json::from_value(json!([
                {"name": "x1", "shape": [2], "datatype": "FP32", "data": [0.5, -1]},
                {"name": "colour", "shape": [2, 1], "datatype": "BYTES", "data": [["red"], ["blue"]]},
            ]))
            .expect("tensors");
            let rows = instances(&inputs).expect("rows");
            assert_eq!(rows, vec![json!({"x1": 0.5, "colour": "red"}), json!({"x1": -1, "colour": "blue"})]);
            let bad: Vec<Tensor> =
                serde_json::from_value(json!([{"name": "x", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}])).expect("t");
            assert!(instances(&bad).is_err_and(|e| e.contains("not a column")));
            let short: Vec<Tensor> =
                serde_json::from_value(json!([{"name": "x", "shape": [3], "data": [1]}])).expect("t");
            assert!(instances(&short).is_err_and(|e| e.contains("3 values")));
            let out = outputs(&[
                json!({"label": "a", "probabilities": {"a": 1.0}}),
                json!({"label": "b", "probabilities": {"b": 1.0}}),
            ]);
            assert_eq!(out[0], json!({"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}));
            assert_eq!(out[1]["datatype"], "BYTES");
            let out = outputs(&[json!({"value": 1.5})]);
            assert_eq!(out[0]["datatype"], "FP64");
        }
    }
}
