//! The REST API, CSRF protection, public routes and service endpoints.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Auth, TestApp, PASSWORD};
use serde_json::json;

#[tokio::test]
async fn anonymous_requests_are_refused_except_on_public_routes() {
    let app = TestApp::new().await;
    let api = app.call(Method::GET, "/api/v1/me", Auth::None, None).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"]["code"], "unauthenticated");
    assert_eq!(api.header("www-authenticate").as_deref(), Some("Bearer"));

    let page = app.call(Method::GET, "/account/tokens?tab=1", Auth::None, None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location").as_deref(), Some("/login?next=/account/tokens%3Ftab%3D1"));

    let login = app.call(Method::GET, "/login", Auth::None, None).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.text().contains("Sign in"));
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(app.call(Method::GET, path, Auth::None, None).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn the_home_page_renders_the_signed_in_user_on_the_server() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let home = app.call(Method::GET, "/", Auth::Cookie(&cookie), None).await;
    assert_eq!(home.status, StatusCode::OK);
    let html = home.text();
    assert!(html.contains("Welcome, ") && html.contains("alice</h1>"), "{html}");
    assert!(html.contains("Sign out"));
    assert!(html.contains("/pkg/atelier.js"), "hydration script missing");
    // Signed-in users skip the sign-in page.
    let login = app.call(Method::GET, "/login", Auth::Cookie(&cookie), None).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn unknown_pages_and_api_routes_are_404() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let page = app.call(Method::GET, "/no/such/page", Auth::Cookie(&cookie), None).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.text().contains("Page not found"));
    let api = app.call(Method::GET, "/api/v1/nothing-here", Auth::Cookie(&cookie), None).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.json()["error"]["code"], "not_found");
}

#[tokio::test]
async fn tokens_are_created_listed_used_and_revoked_over_the_api() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let created = app
        .call(Method::POST, "/api/v1/tokens", Auth::Cookie(&cookie), Some(json!({"name": "ci", "expires_in_days": 30})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let body = created.json();
    let secret = body["secret"].as_str().unwrap_or_default().to_string();
    let id = body["token"]["id"].as_str().unwrap_or_default().to_string();
    assert!(secret.starts_with("atl_"));
    assert!(body["token"]["expires_at"].as_i64().is_some());

    // The token works by itself, and the listing never shows the secret.
    let list = app.call(Method::GET, "/api/v1/tokens", Auth::Bearer(&secret), None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json()[0]["name"], "ci");
    assert!(!list.text().contains(&secret));
    let stored: String =
        sqlx::query_scalar("SELECT token_hash FROM api_tokens").fetch_one(&app.state.db.pool).await.expect("row");
    assert_ne!(stored, secret, "tokens are stored hashed");

    let revoked = app.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), Auth::Bearer(&secret), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Bearer(&secret), None).await.status, StatusCode::UNAUTHORIZED);
    let list = app.call(Method::GET, "/api/v1/tokens", Auth::Cookie(&cookie), None).await;
    assert!(list.json()[0]["revoked_at"].as_i64().is_some());
}

#[tokio::test]
async fn a_token_cannot_be_revoked_by_another_user() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    app.create_user("bob", false).await;
    let alice = app.sign_in("alice", PASSWORD).await;
    let bob = app.sign_in("bob", PASSWORD).await;
    let created = app.call(Method::POST, "/api/v1/tokens", Auth::Cookie(&alice), Some(json!({"name": "mine"}))).await;
    let id = created.json()["token"]["id"].as_str().unwrap_or_default().to_string();
    let secret = created.json()["secret"].as_str().unwrap_or_default().to_string();
    let attempt = app.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), Auth::Cookie(&bob), None).await;
    assert_eq!(attempt.status, StatusCode::NOT_FOUND);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Bearer(&secret), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_bearer_tokens_are_refused() {
    let app = TestApp::new().await;
    for token in ["atl_not-a-real-token", "something-else"] {
        let r = app.call(Method::GET, "/api/v1/me", Auth::Bearer(token), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token}");
    }
    let basic =
        Request::builder().uri("/api/v1/me").header("authorization", "Basic YTpi").body(Body::empty()).expect("req");
    assert_eq!(app.send(basic).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_gets_an_error_naming_the_problem_and_changes_nothing() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let missing = app.call(Method::POST, "/api/v1/tokens", Auth::Cookie(&cookie), Some(json!({}))).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(missing.json()["error"]["message"].as_str().unwrap_or_default().contains("name"), "{}", missing.text());

    let empty = app.call(Method::POST, "/api/v1/tokens", Auth::Cookie(&cookie), Some(json!({"name": "  "}))).await;
    assert_eq!(empty.json()["error"]["field"], "name");
    let expiry = app
        .call(Method::POST, "/api/v1/tokens", Auth::Cookie(&cookie), Some(json!({"name": "x", "expires_in_days": 0})))
        .await;
    assert_eq!(expiry.json()["error"]["field"], "expires_in_days");

    let garbage = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/tokens")
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .expect("req");
    let garbage = app.send(garbage).await;
    assert_eq!(garbage.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(garbage.json()["error"]["code"], "invalid");

    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens").fetch_one(&app.state.db.pool).await.expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn admins_create_users_and_duplicates_conflict() {
    let app = TestApp::new().await;
    app.create_user("root", true).await;
    let admin = app.sign_in("root", PASSWORD).await;
    let body = json!({"username": "Carol", "password": "carol-password", "display_name": "Carol C"});
    let created = app.call(Method::POST, "/api/v1/users", Auth::Cookie(&admin), Some(body.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.json()["username"], "carol");
    let dup = app.call(Method::POST, "/api/v1/users", Auth::Cookie(&admin), Some(body)).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert!(dup.json()["error"]["message"].as_str().unwrap_or_default().contains("carol"));
    let bad = app
        .call(
            Method::POST,
            "/api/v1/users",
            Auth::Cookie(&admin),
            Some(json!({"username": "x y", "password": "long enough"})),
        )
        .await;
    assert_eq!(bad.json()["error"]["field"], "username");
    assert_eq!(app.sign_in_response("carol", "carol-password", Auth::None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn cross_site_writes_are_refused_for_api_routes_and_server_functions() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let forged = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/tokens")
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(r#"{"name":"forged"}"#))
        .expect("req");
    let forged = app.send(forged).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(forged.json()["error"]["code"], "csrf_rejected");

    let old_browser = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/tokens")
        .header("cookie", &cookie)
        .header("host", "studio.local:3000")
        .header("origin", "http://evil.example")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"name":"forged"}"#))
        .expect("req");
    assert_eq!(app.send(old_browser).await.status, StatusCode::FORBIDDEN);

    // A forged sign-out (a server function) is refused too, and the session lives on.
    let sign_out = <app::auth::SignOut as leptos::server_fn::ServerFn>::PATH;
    let forged_out = app.server_fn(sign_out, &[], Auth::Cookie(&cookie), &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(forged_out.status, StatusCode::FORBIDDEN);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await.status, StatusCode::OK);

    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens").fetch_one(&app.state.db.pool).await.expect("count");
    assert_eq!(count, 0);

    let same_origin = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/tokens")
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(r#"{"name":"legit"}"#))
        .expect("req");
    assert_eq!(app.send(same_origin).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = TestApp::with_config(|c| c.max_body_bytes = 1024).await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let big = json!({"name": "x".repeat(4096)});
    let r = app.call(Method::POST, "/api/v1/tokens", Auth::Cookie(&cookie), Some(big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"]["code"], "too_large");
}

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let app = TestApp::new().await;
    let health = app.call(Method::GET, "/healthz", Auth::None, None).await;
    assert_eq!(health.text(), "ok");
    assert!(health.header("x-request-id").is_some_and(|id| id.len() >= 32));
    assert_eq!(app.call(Method::GET, "/readyz", Auth::None, None).await.text(), "ready");
    app.call(Method::GET, "/api/v1/me", Auth::None, None).await;
    let metrics = app.call(Method::GET, "/metrics", Auth::None, None).await.text();
    assert!(
        metrics.contains("atelier_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/api/v1/me\",status=\"401\"} 1"), "{metrics}");
    assert!(metrics
        .contains("atelier_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\",le=\"+Inf\"} 1"));
}

#[tokio::test]
async fn openapi_document_describes_the_routes_and_bearer_auth() {
    let app = TestApp::new().await;
    let doc = app.call(Method::GET, "/api/v1/openapi.json", Auth::None, None).await.json();
    assert!(doc["openapi"].as_str().unwrap_or_default().starts_with("3."));
    for path in ["/api/v1/me", "/api/v1/tokens", "/api/v1/tokens/{id}", "/api/v1/users", "/api/v1/users/{user}"] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn the_cli_creates_a_working_token_against_the_same_database() {
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["token", "create", "--user", "alice", "--name", "from-cli"])
        .env("DATABASE_URL", app.database_url())
        .env("RUST_LOG", "error")
        .output()
        .expect("run atelier");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let secret = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let me = app.call(Method::GET, "/api/v1/me", Auth::Bearer(&secret), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["username"], "alice");

    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["token", "create", "--user", "nobody", "--name", "x"])
        .env("DATABASE_URL", app.database_url())
        .output()
        .expect("run atelier");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user named 'nobody'"));
}

#[tokio::test]
async fn sqlite_runs_with_wal_and_foreign_keys() {
    let app = TestApp::new().await;
    if app.state.db.backend != atelier_core::db::Backend::Sqlite {
        return; // PostgreSQL run: nothing SQLite-specific to check.
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&app.state.db.pool).await.expect("pragma");
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&app.state.db.pool).await.expect("pragma");
    assert_eq!(fk, 1);
    let orphan = sqlx::query("INSERT INTO api_tokens (id, user_id, name, token_hash, token_prefix, created_at) VALUES ('t', 'nobody', 'n', 'h', 'p', 0)")
        .execute(&app.state.db.pool)
        .await;
    assert!(orphan.is_err(), "a token for a missing user must be refused");
}

/// Artifacts round-trip byte for byte in whichever store the run uses (a local directory,
/// or S3 in the PostgreSQL + S3 run); this one is larger than the store's write buffer, so
/// S3 takes the multipart upload path.
#[tokio::test]
async fn a_large_artifact_round_trips_with_its_hash() {
    use sha2::Digest;
    let app = TestApp::new().await;
    let admin = app.create_user("root", true).await;
    let token = app.token_for(&admin, None).await;
    // 12 MiB that no compression or deduplication can shortcut.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..12 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/artifacts?name=weights.bin")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(bytes.clone()))
        .expect("request");
    let created = app.send(request).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let id = created.json()["id"].as_str().expect("artifact id").to_string();
    let expected: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();

    let record = app.call(Method::GET, &format!("/api/v1/artifacts/{id}"), Auth::Bearer(&token), None).await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.text());
    assert_eq!(record.json()["sha256"], expected);
    assert_eq!(record.json()["size"], bytes.len());
    let content = app.call(Method::GET, &format!("/api/v1/artifacts/{id}/content"), Auth::Bearer(&token), None).await;
    assert_eq!(content.status, StatusCode::OK);
    assert!(content.body == bytes, "downloaded bytes differ from the upload");
    assert_eq!(app.send(Request::get("/readyz").body(Body::empty()).expect("request")).await.status, StatusCode::OK);
}

/// A store URL that cannot work stops the server at start with the reason, instead of
/// failing the first upload.
#[tokio::test]
async fn a_bad_artifact_store_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("atelier-store-{}", uuid::Uuid::new_v4().simple()));
    let mut config = atelier_server::config::Config::for_data_dir(dir.clone(), None);
    config.artifact_store = Some("ftp://files.example/artifacts".into());
    let err = atelier_server::AppState::new(config).await.err().expect("an ftp store is refused");
    assert!(err.to_string().contains("not a supported artifact store URL"), "{err}");

    // Against a real S3 endpoint (the PostgreSQL + S3 run): a bucket that does not exist.
    if let Some(base) = common::s3_test_url() {
        let mut config = atelier_server::config::Config::for_data_dir(dir.clone(), None);
        config.artifact_store = Some(format!("{base}-missing-{}/x", uuid::Uuid::new_v4().simple()));
        let err = atelier_server::AppState::new(config).await.err().expect("a missing bucket is refused");
        assert!(err.to_string().contains("not reachable"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
