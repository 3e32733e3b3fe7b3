//! The HTTP surface in one place: routes, then the middleware stack around them.

use app::{shell, App};
use atelier_core::sessions::SqlSessionStore;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::nonce::Nonce;
use leptos::prelude::{provide_context, use_context};
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::{time, SameSite};
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::api::error::ApiError;
use crate::state::AppState;
use crate::{api, assets, health, metrics, middleware};

/// Builds the complete application router.
pub fn app(state: AppState) -> Router {
    let db = state.db.clone();
    let (store, work, upload_limit) = (state.artifacts.clone(), state.work.clone(), state.config.max_upload_bytes);
    let public_url = state.config.public_url.clone();
    let invoke = invoke_for_pages(state.clone());
    let outbound = state.outbound.clone();
    let leptos_context = move || {
        provide_context(db.clone());
        provide_context(store.clone());
        provide_context(app::training::UploadLimit(upload_limit));
        provide_context(app::compute::PublicUrl(public_url.clone()));
        let work = work.clone();
        provide_context(app::training::WorkSignal(std::sync::Arc::new(move || work.notify_waiters())));
        provide_context(invoke.clone());
        provide_context((*outbound).clone());
        // Leptos generates its own nonce per render; use the one the security-headers
        // middleware already put in this response's Content-Security-Policy instead.
        let nonce = use_context::<http::request::Parts>().and_then(|parts| parts.extensions.get::<Nonce>().cloned());
        if let Some(nonce) = nonce {
            provide_context(nonce);
        }
    };
    let options = state.leptos_options.clone();
    let render_page = leptos_axum::render_app_to_stream_with_context(leptos_context.clone(), {
        let options = options.clone();
        move || shell(options.clone())
    });
    let fallback = move |request: Request| {
        let render_page = render_page.clone();
        async move {
            if request.uri().path().starts_with(crate::mlflow::PREFIX) {
                return crate::mlflow::endpoint_not_found(request.uri().path());
            }
            if request.uri().path().starts_with("/api/") {
                return ApiError(atelier_core::CoreError::NotFound("API route")).into_response();
            }
            not_found_status(render_page(request).await)
        }
    };

    let sessions = SessionManagerLayer::new(SqlSessionStore::new(state.db.clone()))
        .with_name("atelier_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.config.secure_cookies())
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(state.config.session_idle_timeout_secs)));

    let sensitive = std::sync::Arc::from([header::AUTHORIZATION, header::COOKIE]);

    // Layers run outermost-last: metrics see every request, then request ids and
    // tracing, body limits and timeouts, compression, the session, CSRF and finally authentication.
    // Each layer is added on its own so that every one receives axum's body type.
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::serve))
        .route("/pkg/{*path}", get(assets::serve))
        .merge(api::router())
        .merge(crate::mlflow::router())
        .merge(crate::agent::router())
        .merge(crate::endpoints::router())
        .merge(crate::endpoints::v2::router())
        .leptos_routes_with_context(&state, generate_route_list(App), leptos_context, move || shell(options.clone()))
        .fallback(fallback)
        .layer(from_fn_with_state(state.clone(), middleware::authenticate))
        .layer(from_fn(middleware::csrf_protect))
        .layer(sessions)
        .layer(CompressionLayer::new())
        .layer(from_fn_with_state(state.clone(), middleware::limits))
        // `limits` decides every body's limit; axum's own 2 MB default for extractors
        // such as `Multipart` would cut uploads short.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok());
            tracing::info_span!("request", id, method = %request.method(), path = %request.uri().path())
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
        .layer(from_fn(middleware::security_headers))
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// The endpoint test page's path to a model: the same as an API invocation.
fn invoke_for_pages(state: AppState) -> app::endpoints::Invoke {
    app::endpoints::Invoke(std::sync::Arc::new(move |p, name, content_type, body| {
        let state = state.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let content_type = header::HeaderValue::from_str(&content_type).ok();
            let call =
                crate::endpoints::Call { endpoint: &name, target: None, content_type, accept: None, body: body.into() };
            let answer = state.invoker.invoke(&state, &p, call).await?;
            Ok(app::endpoints::InvokeResult {
                status: answer.status.as_u16(),
                variant: answer.variant,
                content_type: answer.content_type.and_then(|c| c.to_str().ok().map(str::to_string)).unwrap_or_default(),
                body: String::from_utf8_lossy(&answer.body).into_owned(),
                millis: started.elapsed().as_secs_f64() * 1000.0,
            })
        })
    }))
}

/// Pages the router does not know render the app's "not found" view with status 404.
fn not_found_status(mut response: Response) -> Response {
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}
