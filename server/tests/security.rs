//! Protections every response carries, and the server's refusals that keep one
//! compromised piece from becoming everything: security headers, the sign-in
//! throttle under a parallel burst, hashed session ids, the last administrator and
//! outbound requests to private addresses.

mod common;

use axum::http::{Method, StatusCode};
use common::{Auth, TestApp, PASSWORD};

/// The value of `directive` in a Content-Security-Policy header.
fn directive<'a>(csp: &'a str, name: &str) -> Option<&'a str> {
    csp.split(';').map(str::trim).find_map(|d| d.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
}

#[tokio::test]
async fn pages_and_api_responses_carry_security_headers() {
    let app = TestApp::new().await;
    let admin = app.create_user("root", true).await;
    let token = app.token_for(&admin, None).await;
    let cookie = app.sign_in("root", PASSWORD).await;

    let login = app.call(Method::GET, "/login", Auth::None, None).await;
    let home = app.call(Method::GET, "/", Auth::Cookie(&cookie), None).await;
    let api = app.call(Method::GET, "/api/v1/me", Auth::Bearer(&token), None).await;
    let refused = app.call(Method::GET, "/api/v1/me", Auth::None, None).await;
    assert_eq!((login.status, home.status, api.status), (StatusCode::OK, StatusCode::OK, StatusCode::OK));
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    for (what, response) in [("login page", &login), ("home page", &home), ("API", &api), ("401", &refused)] {
        let csp = response.header("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
        assert_eq!(directive(&csp, "frame-ancestors"), Some(" 'none'"), "{what}: {csp}");
        assert_eq!(directive(&csp, "object-src"), Some(" 'none'"), "{what}: {csp}");
        let scripts = directive(&csp, "script-src").unwrap_or_else(|| panic!("{what}: no script-src in {csp}"));
        assert!(!scripts.contains("'unsafe-inline'") && !scripts.contains("'unsafe-eval'"), "{what}: {csp}");
        assert_eq!(response.header("x-content-type-options").as_deref(), Some("nosniff"), "{what}");
        assert_eq!(response.header("x-frame-options").as_deref(), Some("DENY"), "{what}");
        assert_eq!(response.header("referrer-policy").as_deref(), Some("strict-origin-when-cross-origin"), "{what}");
    }

    // The page's inline hydration script carries the nonce the header allows, and a
    // new response gets a new one.
    for page in [&login, &home] {
        let csp = page.header("content-security-policy").unwrap_or_default();
        let scripts = directive(&csp, "script-src").unwrap_or_default();
        let nonce = scripts
            .split_whitespace()
            .find_map(|s| s.strip_prefix("'nonce-").and_then(|s| s.strip_suffix('\'')))
            .unwrap_or_else(|| panic!("no nonce in {csp}"));
        assert!(nonce.len() >= 16, "{nonce}");
        let html = page.text();
        let inline_scripts = html.matches("<script").count();
        assert!(inline_scripts >= 1, "{html}");
        assert_eq!(
            html.matches(&format!("<script type=\"module\" nonce=\"{nonce}\"")).count()
                + html.matches(&format!("<script nonce=\"{nonce}\"")).count(),
            inline_scripts,
            "every script in the page carries this response's nonce: {html}"
        );
    }
    let again = app.call(Method::GET, "/login", Auth::None, None).await;
    assert_ne!(again.header("content-security-policy"), login.header("content-security-policy"));
}
