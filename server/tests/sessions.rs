//! Sign-in, sessions, throttling and deactivation, through the real router and database.

mod common;

use std::time::Duration;

use atelier_core::throttle::FREE_ATTEMPTS;
use axum::http::{Method, StatusCode};
use common::{Auth, TestApp, PASSWORD};
use leptos::server_fn::ServerFn;
use serde_json::json;

#[tokio::test]
async fn sign_in_with_the_right_password_starts_a_session() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let response = app.sign_in_response("Alice", PASSWORD, Auth::None).await;
    assert_eq!(response.status, StatusCode::OK);
    let cookie_header =
        response.headers.get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(cookie_header.contains("HttpOnly"), "{cookie_header}");
    assert!(cookie_header.contains("SameSite=Lax"), "{cookie_header}");
    assert!(!cookie_header.contains("Secure"), "plain-HTTP deployments must not get Secure cookies");
    let cookie = response.session_cookie().expect("cookie");
    let me = app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["username"], "alice");
}

#[tokio::test]
async fn cookies_are_secure_when_the_public_url_is_https() {
    let app = TestApp::with_config(|c| c.public_url = Some("https://studio.example".into())).await;
    app.create_user("alice", false).await;
    let response = app.sign_in_response("alice", PASSWORD, Auth::None).await;
    let cookie_header = response.header("set-cookie").unwrap_or_default();
    assert!(cookie_header.contains("Secure"), "{cookie_header}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let wrong = app.sign_in_response("alice", "not the password", Auth::None).await;
    let unknown = app.sign_in_response("mallory", "not the password", Auth::None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["message"], "Incorrect username or password.");
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.session_cookie().is_none());
}

#[tokio::test]
async fn sign_in_rotates_the_session_id() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let first = app.sign_in("alice", PASSWORD).await;
    // Signing in again from a browser that already holds a session (or one planted by
    // an attacker) must hand out a new id and retire the old one.
    let again = app.sign_in_response("alice", PASSWORD, Auth::Cookie(&first)).await;
    let second = again.session_cookie().expect("new cookie");
    assert_ne!(first, second);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&first), None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&second), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_survive_a_server_restart() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    // A second router over the same database stands in for a restarted server or a
    // second replica: nothing about the session lives in process memory.
    let restarted = atelier_server::app(app.state.clone());
    let request = axum::http::Request::builder()
        .uri("/api/v1/me")
        .header("cookie", &cookie)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = tower::ServiceExt::oneshot(restarted, request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let out = app.server_fn(<app::auth::SignOut as ServerFn>::PATH, &[], Auth::Cookie(&cookie), &[]).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text());
    assert_eq!(out.header("location").as_deref(), Some("/login"));
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await.status, StatusCode::UNAUTHORIZED);
    let remaining: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&app.state.db.pool).await.expect("count");
    assert_eq!(remaining, 0);
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = TestApp::with_config(|c| c.session_idle_timeout_secs = 1).await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_active_session_still_ends_at_the_absolute_timeout() {
    let app = TestApp::with_config(|c| c.session_absolute_timeout_secs = 1).await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repeated_failures_throttle_the_account_even_for_the_right_password() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    app.create_user("bob", false).await;
    for _ in 0..FREE_ATTEMPTS {
        let r = app.sign_in_response("alice", "guess", Auth::None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let blocked = app.sign_in_response("alice", PASSWORD, Auth::None).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(blocked.json()["kind"], "TooManyRequests");
    assert!(blocked.json()["message"].as_str().unwrap_or_default().contains("Try again in"));
    // Another account is not affected.
    assert_eq!(app.sign_in_response("bob", PASSWORD, Auth::None).await.status, StatusCode::OK);
    // Unknown accounts are throttled the same way, revealing nothing.
    for _ in 0..FREE_ATTEMPTS {
        app.sign_in_response("nobody", "guess", Auth::None).await;
    }
    assert_eq!(app.sign_in_response("nobody", "guess", Auth::None).await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_delay_grows_and_success_after_waiting_resets_it() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    for _ in 0..FREE_ATTEMPTS {
        app.sign_in_response("alice", "guess", Auth::None).await;
    }
    // The first delay is one second; after it the right password works and clears the count.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(app.sign_in_response("alice", PASSWORD, Auth::None).await.status, StatusCode::OK);
    let failures: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sign_in_failures WHERE throttle_key = 'user:alice'")
        .fetch_one(&app.state.db.pool)
        .await
        .expect("count");
    assert_eq!(failures, 0);
}

#[tokio::test]
async fn deactivation_ends_sessions_and_tokens_at_once() {
    let app = TestApp::new().await;
    app.create_user("root", true).await;
    let alice = app.create_user("alice", false).await;
    let admin = app.sign_in("root", PASSWORD).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let token = app.call(Method::POST, "/api/v1/tokens", Auth::Cookie(&cookie), Some(json!({"name": "laptop"}))).await;
    assert_eq!(token.status, StatusCode::CREATED);
    let secret = token.json()["secret"].as_str().unwrap_or_default().to_string();

    let path = format!("/api/v1/users/{}", alice.id);
    let off = app.call(Method::PATCH, &path, Auth::Cookie(&admin), Some(json!({"active": false}))).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text());
    assert_eq!(off.json()["active"], false);

    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Bearer(&secret), None).await.status, StatusCode::UNAUTHORIZED);
    let again = app.sign_in_response("alice", PASSWORD, Auth::None).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.json()["message"], "Incorrect username or password.");

    let on = app.call(Method::PATCH, &path, Auth::Cookie(&admin), Some(json!({"active": true}))).await;
    assert_eq!(on.status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Bearer(&secret), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn users_cannot_deactivate_others_and_admins_not_themselves() {
    let app = TestApp::new().await;
    let root = app.create_user("root", true).await;
    let bob = app.create_user("bob", false).await;
    app.create_user("alice", false).await;
    let alice = app.sign_in("alice", PASSWORD).await;
    let admin = app.sign_in("root", PASSWORD).await;

    let denied = app
        .call(Method::PATCH, &format!("/api/v1/users/{}", bob.id), Auth::Cookie(&alice), Some(json!({"active": false})))
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json()["error"]["code"], "forbidden");
    assert_eq!(app.call(Method::GET, "/api/v1/users", Auth::Cookie(&alice), None).await.status, StatusCode::FORBIDDEN);

    let own = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", root.id),
            Auth::Cookie(&admin),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(own.status, StatusCode::CONFLICT);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&admin), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions_but_keeps_this_one() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let laptop = app.sign_in("alice", PASSWORD).await;
    let phone = app.sign_in("alice", PASSWORD).await;

    let wrong = app
        .call(
            Method::PUT,
            "/api/v1/me/password",
            Auth::Cookie(&laptop),
            Some(json!({"current_password": "nope", "new_password": "another long one"})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong.json()["error"]["field"], "current_password");

    let short = app
        .call(
            Method::PUT,
            "/api/v1/me/password",
            Auth::Cookie(&laptop),
            Some(json!({"current_password": PASSWORD, "new_password": "short"})),
        )
        .await;
    assert_eq!(short.json()["error"]["field"], "new_password");

    let ok = app
        .call(
            Method::PUT,
            "/api/v1/me/password",
            Auth::Cookie(&laptop),
            Some(json!({"current_password": PASSWORD, "new_password": "another long one"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.text());
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&laptop), None).await.status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&phone), None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.sign_in_response("alice", PASSWORD, Auth::None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.sign_in_response("alice", "another long one", Auth::None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn signing_in_without_javascript_works_and_shows_errors() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let path = <app::auth::SignIn as ServerFn>::PATH;
    let browser = [("accept", "text/html"), ("referer", "http://localhost/login?next=/account/tokens")];

    let failed =
        app.server_fn(path, &[("username", "alice"), ("password", "wrong password")], Auth::None, &browser).await;
    assert!(failed.status.is_redirection(), "{}", failed.status);
    let back = failed.header("location").unwrap_or_default();
    assert!(back.contains("/login?") && back.contains("__err="), "{back}");
    let page = app.call(Method::GET, back.trim_start_matches("http://localhost"), Auth::None, None).await;
    assert!(page.text().contains("Incorrect username or password."), "{}", page.text());

    let form = [("username", "alice"), ("password", PASSWORD), ("next", "/account/tokens")];
    let ok = app.server_fn(path, &form, Auth::None, &browser).await;
    assert!(ok.status.is_redirection(), "{}", ok.status);
    assert_eq!(ok.header("location").as_deref(), Some("/account/tokens"));
    assert!(ok.session_cookie().is_some());
}

#[tokio::test]
async fn many_failures_from_one_address_throttle_that_address_only() {
    use atelier_core::throttle::FREE_ATTEMPTS_PER_IP;
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    // Different usernames each time, so only the address key accumulates.
    for i in 0..FREE_ATTEMPTS_PER_IP {
        let r = app.sign_in_from([10, 0, 0, 7], &format!("guess{i}"), "x").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let blocked = app.sign_in_from([10, 0, 0, 7], "alice", PASSWORD).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    let elsewhere = app.sign_in_from([10, 0, 0, 8], "alice", PASSWORD).await;
    assert_eq!(elsewhere.status, StatusCode::OK);
}

#[tokio::test]
async fn server_functions_without_a_session_answer_in_the_page_error_shape() {
    let app = TestApp::new().await;
    let r = app.server_fn(<app::tokens::ListTokens as ServerFn>::PATH, &[], Auth::None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let error: app::error::AppError = serde_json::from_slice(&r.body).expect("AppError JSON");
    assert_eq!(error.kind, app::error::ErrorKind::Unauthenticated);
}

#[tokio::test]
async fn guessing_the_current_password_is_throttled() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let guess = json!({"current_password": "guess", "new_password": "another long one"});
    for _ in 0..FREE_ATTEMPTS {
        let r = app.call(Method::PUT, "/api/v1/me/password", Auth::Cookie(&cookie), Some(guess.clone())).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let right = json!({"current_password": PASSWORD, "new_password": "another long one"});
    let blocked = app.call(Method::PUT, "/api/v1/me/password", Auth::Cookie(&cookie), Some(right)).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(blocked.header("retry-after").is_some());
}

#[tokio::test]
async fn absurdly_long_usernames_are_refused_like_any_wrong_credential() {
    let app = TestApp::new().await;
    let r = app.sign_in_response(&"a".repeat(10_000), "x", Auth::None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["message"], "Incorrect username or password.");
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sign_in_failures").fetch_one(&app.state.db.pool).await.expect("count");
    assert_eq!(rows, 0);
}
