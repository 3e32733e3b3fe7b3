//! Endpoint traffic: `POST /endpoints/{name}/invocations` routed by variant weight to
//! a healthy model server instance over kept-alive connections, and the background
//! reconciler that deploys endpoints and the flusher that stores their metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atelier_core::authz::{authorize, Action, Principal};
use atelier_core::endpoints::metrics::Recorder;
use atelier_core::endpoints::reconcile::{self, Route};
use atelier_core::endpoints::resource;
use atelier_core::CoreError;
use atelier_protocol::endpoints::{TARGET_VARIANT_HEADER, VARIANT_HEADER};
use axum::body::Bytes;
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
    timeout: Duration,
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
        Ok(Invoker { http, routes: Mutex::new(HashMap::new()), recorder: Recorder::default(), timeout })
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
    pub async fn invoke(
        &self,
        state: &AppState,
        p: &Principal,
        name: &str,
        target: Option<&str>,
        content_type: Option<HeaderValue>,
        accept: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<Answer, CoreError> {
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
        let mut last_error = None;
        for (variant, url) in candidates.iter().take(MAX_TRIES) {
            let mut request = self.http.post(format!("{url}/invocations")).timeout(self.timeout).body(body.clone());
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
                    self.record(&route, variant, status, model_us, started);
                    return Err(upstream(status, message));
                }
            };
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(err) => {
                    self.record(&route, variant, 502, sent.elapsed().as_micros() as u64, started);
                    return Err(upstream(502, format!("the model server's answer was cut short: {err}")));
                }
            };
            let model_us = sent.elapsed().as_micros() as u64;
            self.record(&route, variant, status.as_u16(), model_us, started);
            return Ok(Answer { status, content_type, variant: variant.clone(), body });
        }
        Err(upstream(503, last_error.unwrap_or_else(|| format!("endpoint {name} has no healthy instance"))))
    }

    fn record(&self, route: &Route, variant: &str, status: u16, model_us: u64, started: Instant) {
        let total = started.elapsed().as_micros() as u64;
        self.recorder.record(&route.endpoint_id, variant, status, model_us, total.saturating_sub(model_us));
    }
}

/// The instances to try, in order: the chosen variant's (picked by weight, or the one
/// asked for) from a random start, then, unless one was asked for, the others'.
fn candidates(route: &Route, target: Option<&str>, name: &str) -> Result<Vec<(String, String)>, CoreError> {
    let live: Vec<_> = route.variants.iter().filter(|v| !v.urls.is_empty()).collect();
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
    let mut push = |v: &atelier_core::endpoints::reconcile::RouteVariant| {
        if v.urls.is_empty() {
            return;
        }
        let start = rand::thread_rng().gen_range(0..v.urls.len());
        for i in 0..v.urls.len() {
            out.push((v.name.clone(), v.urls[(start + i) % v.urls.len()].clone()));
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

/// Errors that are the model server's or the fleet's, not the caller's.
fn upstream(status: u16, message: String) -> CoreError {
    CoreError::Upstream { status, message }
}

pub async fn invoke(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = headers.get(TARGET_VARIANT_HEADER).and_then(|v| v.to_str().ok());
    let answer = state
        .invoker
        .invoke(
            &state,
            &p,
            &name,
            target,
            headers.get(header::CONTENT_TYPE).cloned(),
            headers.get(header::ACCEPT).cloned(),
            body,
        )
        .await?;
    let mut response = (answer.status, answer.body).into_response();
    if let Some(ct) = answer.content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Ok(v) = HeaderValue::from_str(&answer.variant) {
        response.headers_mut().insert(VARIANT_HEADER, v);
    }
    Ok(response)
}

/// Whether a path is an invocation (it gets the payload limit and API-style errors).
pub fn is_invocation(path: &str) -> bool {
    path.starts_with("/endpoints/") && path.ends_with("/invocations")
}

/// The invocation route.
pub fn router() -> Router<AppState> {
    Router::new().route("/endpoints/{name}/invocations", post(invoke))
}

/// Deploys endpoints (every second) and stores invocation counts (every five).
pub fn spawn_background(state: AppState) {
    let s = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = reconcile::reconcile(&s.db).await {
                tracing::warn!(error = %err, "endpoint reconciliation failed");
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = state.invoker.recorder.flush(&state.db).await {
                tracing::warn!(error = %err, "endpoint metrics could not be stored");
            }
        }
    });
}
