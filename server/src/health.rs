//! Liveness and readiness probes (public routes).

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the database and the artifact store answer.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if !state.db.is_ready().await {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    } else if state.artifacts.check().await.is_err() {
        (StatusCode::SERVICE_UNAVAILABLE, "artifact store unreachable")
    } else {
        (StatusCode::OK, "ready")
    }
}
