//! The kernel gateway: a kernel offered to the server over HTTP (routes documented in
//! `atelier_protocol::notebooks`). Every route demands `Authorization: Bearer
//! {secret}`, the order's secret; errors are `{"error": message}`.

use std::convert::Infallible;
use std::sync::Arc;

use atelier_protocol::notebooks::ExecuteRequest;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::wire::constant_time_eq;
use super::Kernel;

pub(super) fn router(kernel: Arc<Kernel>) -> Router {
    Router::new()
        .route("/execute", post(execute))
        .route("/interrupt", post(interrupt))
        .route("/restart", post(restart))
        .route("/status", get(status))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route".into()) })
        .with_state(kernel)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The refusal of a request without the kernel's secret.
fn refuse(kernel: &Kernel, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if kernel.secret.is_empty() || !constant_time_eq(token.as_bytes(), kernel.secret.as_bytes()) {
        return Some(error(StatusCode::UNAUTHORIZED, "a valid bearer token is required".into()));
    }
    None
}

/// `POST /execute`: the execution's messages as ND-JSON, as they come.
async fn execute(
    State(kernel): State<Arc<Kernel>>,
    headers: HeaderMap,
    request: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Response {
    if let Some(refused) = refuse(&kernel, &headers) {
        return refused;
    }
    let Json(request) = match request {
        Ok(r) => r,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match kernel.execute(&request.code, request.silent).await {
        Ok(lines) => {
            let stream = futures::stream::unfold(lines, |mut lines| async move {
                lines.recv().await.map(|line| (Ok::<_, Infallible>(line), lines))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err((status, message)) => error(status, message),
    }
}

/// `POST /interrupt`: SIGINT to the kernel.
async fn interrupt(State(kernel): State<Arc<Kernel>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&kernel, &headers) {
        return refused;
    }
    match kernel.interrupt() {
        Ok(()) => Json(json!({})).into_response(),
        Err(message) => error(StatusCode::CONFLICT, message),
    }
}

/// `POST /restart`: a new kernel process; answers once it is ready.
async fn restart(State(kernel): State<Arc<Kernel>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&kernel, &headers) {
        return refused;
    }
    // In a task of its own, so that a caller hanging up does not leave it half done.
    let restarted = tokio::spawn(async move { kernel.restart().await }).await;
    match restarted {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// `GET /status`: the kernel's report.
async fn status(State(kernel): State<Arc<Kernel>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&kernel, &headers) {
        return refused;
    }
    Json(kernel.report()).into_response()
}
