//! Request middleware: who is calling (session or API token), whether they may reach
//! the route at all, and cross-site request forgery protection.
//!
//! Authentication happens here, once, for every request. Authorization of a specific
//! action happens in the handler or server function through `atelier_core::authz`.
//! The only routes reachable without a principal are listed in [`is_public`]. Agent
//! routes (`/agent/v1/`) are reachable only with a node token.

use std::net::SocketAddr;

use atelier_core::accounts::User;
use atelier_core::audit::{self, NewEvent};
use atelier_core::authz::{Credential, Noted, Principal};
use atelier_core::iam::store;
use atelier_core::sessions::{self, ClientIp};
use atelier_core::{tokens, CoreError};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use leptos::server_fn::ServerFn;
use tower_http::request_id::RequestId;
use tower_sessions::Session;
use tracing::Instrument;

use app::error::{AppError, ErrorKind};

use crate::api::error::ApiError;
use crate::state::AppState;

/// The reviewed list of routes that need no signed-in principal: the sign-in page and
/// its server function, probes (with the inference protocol's health routes) and metrics,
/// the browser bundle and the API description.
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/login"
            | "/healthz"
            | "/readyz"
            | "/metrics"
            | "/api/v1/openapi.json"
            | "/v2/health/ready"
            | "/v2/health/live"
    ) || path == <app::auth::SignIn as ServerFn>::PATH
        || path.starts_with("/pkg/")
}

/// The reviewed list of server functions that need a signed-in principal but no
/// particular permission: they only read or end the caller's own session. Everything
/// else is authorized by `atelier_core::authz` (a test checks every registered route
/// and server function against these two lists).
pub fn authenticated_only_server_fns() -> [&'static str; 2] {
    [<app::auth::GetMe as ServerFn>::PATH, <app::auth::SignOut as ServerFn>::PATH]
}

/// Resolves the principal (API token first, then session) with its compiled policies,
/// records the client address, turns away anonymous requests to non-public routes,
/// and writes the request's audit events once the response status is known.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let ip = client_ip(&state, &request);
    if let Some(ip) = &ip {
        request.extensions_mut().insert(ClientIp(ip.clone()));
    }
    let request_id =
        request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).map(str::to_string);
    let bearer = bearer_token(request.headers());
    let session = request.extensions().get::<Session>().cloned();
    let path = request.uri().path().to_string();
    if path.starts_with(crate::agent::PREFIX) {
        return authenticate_node(&state, request, next, bearer, ip, request_id).await;
    }
    let principal = match resolve_principal(&state, bearer, session, ip.clone()).await {
        Ok(principal) => principal,
        Err(err) => {
            if matches!(err, CoreError::Unauthenticated(_)) {
                let summary = format!("refused credentials: {} {path}", request.method());
                audit_anonymous(&state, &path, summary, ip, request_id).await;
            }
            return ApiError::from(err).into_response();
        }
    };
    let Some(principal) = principal else {
        return anonymous(&state, request, next, ip, request_id).await;
    };
    if path == "/login" && request.method() == Method::GET {
        return Redirect::to("/").into_response();
    }
    request.extensions_mut().insert(principal.clone());
    // The handler and the audit writes run in their own task: a client that hangs up
    // (or a timeout) drops this future, and must not cancel a change halfway or leave
    // it unaudited.
    let token_id = match &principal.via {
        Credential::ApiToken(id) => Some(id.clone()),
        Credential::Session => None,
    };
    let task = tokio::spawn(
        async move {
            let response = next.run(request).await;
            for noted in audit_events(principal.take_noted()) {
                let event = NewEvent {
                    principal: principal.user.username.clone(),
                    action: noted.action.name().to_string(),
                    resource: noted.resource,
                    allowed: noted.allowed,
                    status: Some(response.status().as_u16()),
                    source_ip: ip.clone(),
                    request_id: request_id.clone(),
                    summary: noted.summary,
                    token_id: token_id.clone(),
                };
                if let Err(err) = audit::record(&state.db, event).await {
                    // The change is made; failing the response now would invite a retry of it.
                    tracing::error!(error = %err, "audit event could not be written");
                }
            }
            response
        }
        // Keep the request's span (and its id) on the handler's log lines.
        .instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(response) => response,
        Err(err) => {
            tracing::error!(error = %err, "request task failed");
            ApiError::from(CoreError::internal(err)).into_response()
        }
    }
}

/// Agent routes: the caller must present a node token (user tokens and sessions do
/// not reach them); what a node may do is then decided per job by its lease.
async fn authenticate_node(
    state: &AppState,
    mut request: Request,
    next: Next,
    bearer: Option<String>,
    ip: Option<String>,
    request_id: Option<String>,
) -> Response {
    let path = request.uri().path().to_string();
    let refused = match bearer {
        None => CoreError::Unauthenticated("agent routes need a node token: 'Authorization: Bearer atn_...'".into()),
        Some(secret) => match atelier_core::compute::nodes::authenticate(&state.db, &secret).await {
            Ok(node) => {
                request.extensions_mut().insert(node);
                return next.run(request).await;
            }
            Err(err) => err,
        },
    };
    if matches!(refused, CoreError::Unauthenticated(_)) {
        let summary = format!("refused node credentials: {} {path}", request.method());
        audit_anonymous(state, &path, summary, ip, request_id).await;
    }
    ApiError::from(refused).into_response()
}

/// The events a request leaves: each denial, and one event for the change it made —
/// the first write it was allowed, with the summary the route gave and the further
/// permissions the change needed (creating a user with a policy also needs
/// `iam:AttachPolicy`).
fn audit_events(noted: Vec<Noted>) -> Vec<Noted> {
    let (allowed, mut events): (Vec<Noted>, Vec<Noted>) = noted.into_iter().partition(|n| n.allowed);
    let mut allowed = allowed.into_iter();
    if let Some(mut change) = allowed.next() {
        let also: Vec<String> = allowed.map(|n| format!("{} on {}", n.action, n.resource)).collect();
        if !also.is_empty() {
            let separator = if change.summary.is_empty() { "" } else { "; " };
            change.summary = format!("{}{separator}also allowed {}", change.summary, also.join(", "));
        }
        events.insert(0, change);
    }
    events
}

/// Requests without a principal: public routes pass, pages redirect to sign-in, API
/// calls and server functions are refused (and audited).
async fn anonymous(
    state: &AppState,
    request: Request,
    next: Next,
    ip: Option<String>,
    request_id: Option<String>,
) -> Response {
    let path = request.uri().path().to_string();
    if is_public(&path) {
        // Small enough to read here whole, so that an over-long body is a clear 413
        // whatever the route (a server function would call a cut-short body a 500).
        let (parts, body) = request.into_parts();
        return match axum::body::to_bytes(body, ANONYMOUS_BODY_BYTES).await {
            Ok(bytes) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
            Err(_) => ApiError(CoreError::TooLarge(format!(
                "the request body is larger than the limit of {ANONYMOUS_BODY_BYTES} bytes for a caller not signed in"
            )))
            .into_response(),
        };
    }
    if !path.starts_with("/api/")
        && !path.starts_with("/v2/")
        && matches!(*request.method(), Method::GET | Method::HEAD)
    {
        let target = request.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        return Redirect::to(&format!("/login?next={}", percent_encode(target))).into_response();
    }
    let summary = format!("not signed in: {} {path}", request.method());
    audit_anonymous(state, &path, summary, ip, request_id).await;
    if path.starts_with(crate::mlflow::PREFIX) {
        return crate::mlflow::MlflowError::from(CoreError::Unauthenticated(
            "send an API token: set MLFLOW_TRACKING_TOKEN".into(),
        ))
        .into_response();
    }
    if path.starts_with("/api/v1/") || crate::endpoints::is_invocation(&path) || path.starts_with("/v2/") {
        return ApiError::from(CoreError::Unauthenticated(
            "Sign in, or send an API token as 'Authorization: Bearer <token>'.".into(),
        ))
        .into_response();
    }
    // Server functions answer in the error shape the page's client decodes, so an
    // expired session reads as such in the UI.
    let error = AppError::new(ErrorKind::Unauthenticated, "Your session has ended. Sign in again.");
    (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response()
}

/// The largest body an anonymous caller may send: the sign-in form is the only public
/// route that takes one, and nobody unknown gets to make the server read megabytes.
pub const ANONYMOUS_BODY_BYTES: usize = 16 * 1024;

/// Records a request refused for want of a principal. Anyone can send these, so they
/// are rate-limited per client address before being written (see
/// `atelier_core::audit::UnauthenticatedLimiter`); signed-in principals' denials are
/// not, and are always written.
async fn audit_anonymous(
    state: &AppState,
    path: &str,
    summary: String,
    source_ip: Option<String>,
    request_id: Option<String>,
) {
    let event = NewEvent {
        principal: "anonymous".into(),
        action: "-".into(),
        resource: path.to_string(),
        allowed: false,
        status: Some(401),
        source_ip,
        request_id,
        summary,
        token_id: None,
    };
    audit::record_unauthenticated(&state.db, &state.unauthenticated_audit, event).await;
}

/// The token of an `Authorization: Bearer ...` header. Other schemes (say, Basic auth
/// added by a fronting proxy) are not Atelier credentials and are ignored.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

async fn resolve_principal(
    state: &AppState,
    bearer: Option<String>,
    session: Option<Session>,
    ip: Option<String>,
) -> Result<Option<Principal>, CoreError> {
    if let Some(secret) = bearer {
        let token = tokens::authenticate(&state.db, &secret).await?;
        let generation = token.iam_generation;
        let token_policies = match &token.policy {
            Some(text) => Some(
                state
                    .policy_cache
                    .get_or_compile(&format!("token:{}", token.token_id), generation, || {
                        store::compile_token_policy(&state.db, &token.user, &token.token_id, text)
                    })
                    .await?,
            ),
            None => None,
        };
        let policies = user_policies(state, &token.user, generation).await?;
        let via = Credential::ApiToken(token.token_id);
        return Ok(Some(Principal::new(token.user, via, policies, token_policies, ip)));
    }
    let Some(session) = session else {
        return Ok(None);
    };
    let Some(user) = sessions::current_user(&state.db, &session, state.config.session_absolute_timeout_secs).await?
    else {
        return Ok(None);
    };
    let generation = store::generation(&state.db).await?;
    let policies = user_policies(state, &user, generation).await?;
    Ok(Some(Principal::new(user, Credential::Session, policies, None, ip)))
}

async fn user_policies(
    state: &AppState,
    user: &User,
    generation: i64,
) -> Result<std::sync::Arc<atelier_core::iam::CompiledPolicies>, CoreError> {
    state.policy_cache.get_or_compile(&user.id, generation, || store::compile_for_user(&state.db, user)).await
}

fn client_ip(state: &AppState, request: &Request) -> Option<String> {
    if state.config.trust_proxy_headers {
        let forwarded = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            // The last entry is the one our proxy appended; earlier ones are whatever
            // the client claimed.
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// Whether a request carries a large upload: these get the upload size limit and no
/// request timeout (they take as long as the bytes take).
fn is_upload(method: &Method, path: &str) -> bool {
    (*method == Method::POST
        && (path == "/api/v1/artifacts"
            || path == <app::training::CreateTrainingJob as ServerFn>::PATH
            || crate::api::datasets::is_upload(path)))
        || (*method == Method::PUT && path.starts_with(crate::agent::PREFIX))
}

/// Body size limits and the request timeout: the normal limit and timeout for most
/// requests, the upload limit for uploads, and agents' long-polls wait as long as
/// they asked (bounded by the server).
pub async fn limits(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let upload = is_upload(request.method(), path);
    let long_poll = path == "/agent/v1/work";
    let limit = if upload { state.config.max_upload_bytes } else { state.config.max_body_bytes as u64 };
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return ApiError(CoreError::TooLarge(format!("the request body is larger than the limit of {limit} bytes")))
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let request = Request::from_parts(parts, axum::body::Body::new(limited));
    if upload || long_poll {
        return next.run(request).await;
    }
    let timeout = std::time::Duration::from_secs(state.config.request_timeout_secs);
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out").into_response(),
    }
}

/// The Content-Security-Policy of every response. Scripts run only from the studio's
/// own bundle and from inline scripts carrying this response's nonce (Leptos's
/// hydration script and the resources it serializes into the page); WebAssembly needs
/// `'wasm-unsafe-eval'` to be compiled. Styles allow `'unsafe-inline'` because the
/// pages and the server-drawn SVG charts use `style` attributes, which a nonce cannot
/// cover; a style cannot run code. Images include `data:` for notebook image outputs.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Security headers on every response, pages and API alike: the CSP above with a
/// fresh nonce, no framing by other sites, no MIME sniffing (an uploaded file served
/// as `text/plain` stays text), and no full URLs leaking to other origins in `Referer`.
///
/// The nonce is generated here, before the handler runs, and handed to the page
/// renderer through the request's extensions (see `router::app`), so the header and
/// the `nonce` attributes in the HTML are the same value.
pub async fn security_headers(mut request: Request, next: Next) -> Response {
    let nonce = leptos::nonce::Nonce::new();
    request.extensions_mut().insert(nonce.clone());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A route that set its own policy keeps it: users' uploaded files are served with a
    // stricter one (`sandbox; default-src 'none'`) than the studio's pages need.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        if let Ok(csp) = header::HeaderValue::from_str(&content_security_policy(&nonce)) {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
    }
    headers.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(header::HeaderValue::from_static("nosniff"));
    headers.entry(header::X_FRAME_OPTIONS).or_insert(header::HeaderValue::from_static("DENY"));
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(header::HeaderValue::from_static("strict-origin-when-cross-origin"));
    response
}

/// Rejects state-changing requests that a browser sent from another site.
///
/// Same approach as Go's `http.CrossOriginProtection`: browsers label every request
/// with `Sec-Fetch-Site`, and older ones with `Origin`; a request whose labels say it
/// came from a different origin is refused. Requests without either header did not
/// come from a browser page and carry no ambient credentials worth forging; requests
/// with a bearer token carry their credential explicitly (a browser never adds one on
/// its own, unlike Basic credentials). This covers
/// plain forms, `fetch` and server functions alike, with no token to thread through
/// every form.
pub async fn csrf_protect(request: Request, next: Next) -> Response {
    if is_cross_site_write(request.method(), request.headers()) {
        tracing::warn!(path = %request.uri().path(), "cross-site request refused");
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": {
                "code": "csrf_rejected",
                "message": "cross-site request refused: state-changing requests must come from this site",
            }})),
        )
            .into_response();
    }
    next.run(request).await
}

/// The decision behind [`csrf_protect`].
pub fn is_cross_site_write(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || bearer_token(headers).is_some() {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin") | Ok("none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, host)| host);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin_host, host) {
        (Some(origin_host), Some(host)) => !origin_host.eq_ignore_ascii_case(host),
        _ => true,
    }
}

fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn same_origin_and_non_browser_writes_pass() {
        assert!(!is_cross_site_write(&Method::POST, &headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!is_cross_site_write(&Method::POST, &headers(&[])));
        assert!(!is_cross_site_write(
            &Method::POST,
            &headers(&[("origin", "http://127.0.0.1:3000"), ("host", "127.0.0.1:3000")])
        ));
    }

    #[test]
    fn cross_site_writes_are_refused() {
        assert!(is_cross_site_write(&Method::POST, &headers(&[("sec-fetch-site", "cross-site")])));
        assert!(is_cross_site_write(&Method::POST, &headers(&[("sec-fetch-site", "same-site")])));
        assert!(is_cross_site_write(
            &Method::DELETE,
            &headers(&[("origin", "https://evil.example"), ("host", "127.0.0.1:3000")])
        ));
        assert!(is_cross_site_write(&Method::POST, &headers(&[("origin", "null"), ("host", "a")])));
    }

    #[test]
    fn only_bearer_credentials_exempt_a_write() {
        assert!(!is_cross_site_write(
            &Method::POST,
            &headers(&[("sec-fetch-site", "cross-site"), ("authorization", "Bearer atl_x")])
        ));
        assert!(is_cross_site_write(
            &Method::POST,
            &headers(&[("sec-fetch-site", "cross-site"), ("authorization", "Basic YTpi")])
        ));
    }

    #[test]
    fn reads_are_never_refused() {
        assert!(!is_cross_site_write(&Method::GET, &headers(&[("sec-fetch-site", "cross-site")])));
    }

    #[test]
    fn next_parameter_is_percent_encoded() {
        assert_eq!(percent_encode("/a b?x=1&y"), "/a%20b%3Fx%3D1%26y");
    }
}
