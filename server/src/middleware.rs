//! Request middleware: who is calling (session or API token), whether they may reach
//! the route at all, and cross-site request forgery protection.
//!
//! Authentication happens here, once, for every request. Authorization of a specific
//! action happens in the handler or server function through `atelier_core::authz`.
//! The only routes reachable without a principal are listed in [`is_public`].

use std::net::SocketAddr;

use atelier_core::authz::{Credential, Principal};
use atelier_core::sessions::{self, ClientIp};
use atelier_core::{tokens, CoreError};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use leptos::server_fn::ServerFn;
use tower_sessions::Session;

use app::error::{AppError, ErrorKind};

use crate::api::error::ApiError;
use crate::state::AppState;

/// The reviewed list of routes that need no signed-in principal: the sign-in page and
/// its server function, probes and metrics, the browser bundle and the API description.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/login" | "/healthz" | "/readyz" | "/metrics" | "/api/v1/openapi.json")
        || path == <app::auth::SignIn as ServerFn>::PATH
        || path.starts_with("/pkg/")
}

/// Resolves the principal (API token first, then session), records the client address,
/// and turns away anonymous requests to non-public routes.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(ip) = client_ip(&state, &request) {
        request.extensions_mut().insert(ClientIp(ip));
    }
    let bearer = bearer_token(request.headers());
    let session = request.extensions().get::<Session>().cloned();
    let principal = match resolve_principal(&state, bearer, session).await {
        Ok(principal) => principal,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let path = request.uri().path().to_string();
    match principal {
        Some(principal) => {
            if path == "/login" && request.method() == Method::GET {
                return Redirect::to("/").into_response();
            }
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        None if is_public(&path) => next.run(request).await,
        None if !path.starts_with("/api/") && matches!(*request.method(), Method::GET | Method::HEAD) => {
            let target = request.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
            Redirect::to(&format!("/login?next={}", percent_encode(target))).into_response()
        }
        // Server functions answer in the error shape the page's client decodes, so an
        // expired session reads as such in the UI.
        None if !path.starts_with("/api/v1/") => {
            let error = AppError::new(ErrorKind::Unauthenticated, "Your session has ended. Sign in again.");
            (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response()
        }
        None => ApiError::from(CoreError::Unauthenticated(
            "Sign in, or send an API token as 'Authorization: Bearer <token>'.".into(),
        ))
        .into_response(),
    }
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
) -> Result<Option<Principal>, CoreError> {
    if let Some(secret) = bearer {
        let (user, token_id) = tokens::authenticate(&state.db, &secret).await?;
        return Ok(Some(Principal { user, via: Credential::ApiToken(token_id) }));
    }
    let Some(session) = session else {
        return Ok(None);
    };
    let user = sessions::current_user(&state.db, &session, state.config.session_absolute_timeout_secs).await?;
    Ok(user.map(|user| Principal { user, via: Credential::Session }))
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
