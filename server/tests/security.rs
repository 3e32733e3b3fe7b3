//! Protections every response carries, and the server's refusals that keep one
//! compromised piece from becoming everything: security headers, the sign-in
//! throttle under a parallel burst, hashed session ids, the last administrator and
//! outbound requests to private addresses, and an audit log that an anonymous flood
//! cannot grow without bound.

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

/// Whether `token` may still administer users.
async fn administers(app: &TestApp, token: &str) -> bool {
    app.call(Method::GET, "/api/v1/users", Auth::Bearer(token), None).await.status == StatusCode::OK
}

#[tokio::test]
async fn the_last_active_administrator_cannot_lose_administrator_access() {
    let app = TestApp::new().await;
    let root = app.create_user("root", true).await;
    let root_token = app.token_for(&root, None).await;

    // The only administrator detaching the policy from themselves.
    let detach = app
        .call(Method::DELETE, "/api/v1/users/root/policies/AdministratorAccess", Auth::Bearer(&root_token), None)
        .await;
    assert_eq!(detach.status, StatusCode::CONFLICT, "{}", detach.text());
    let message = detach.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("detaching AdministratorAccess from user root")
            && message.contains("no active user holding AdministratorAccess"),
        "{message}"
    );
    assert!(administers(&app, &root_token).await);

    // A group becomes the only source: carol holds AdministratorAccess through it.
    let carol = app.create_user("carol", false).await;
    let carol_token = app.token_for(&carol, None).await;
    app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&root_token), Some(serde_json::json!({"name": "admins"})))
        .await;
    app.call(Method::PUT, "/api/v1/groups/admins/policies/AdministratorAccess", Auth::Bearer(&root_token), None).await;
    app.call(Method::PUT, "/api/v1/groups/admins/members/carol", Auth::Bearer(&root_token), None).await;
    // With carol in place, root may step down.
    let step_down = app
        .call(Method::DELETE, "/api/v1/users/root/policies/AdministratorAccess", Auth::Bearer(&root_token), None)
        .await;
    assert_eq!(step_down.status, StatusCode::OK, "{}", step_down.text());
    assert!(!administers(&app, &root_token).await);
    assert!(administers(&app, &carol_token).await);

    for (method, path, change) in [
        (Method::DELETE, "/api/v1/groups/admins/members/carol", "removing carol from group admins"),
        (
            Method::DELETE,
            "/api/v1/groups/admins/policies/AdministratorAccess",
            "detaching AdministratorAccess from group admins",
        ),
        (Method::DELETE, "/api/v1/groups/admins", "deleting group admins"),
    ] {
        let refused = app.call(method.clone(), path, Auth::Bearer(&carol_token), None).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{method} {path}: {}", refused.text());
        assert!(refused.text().contains(change), "{}", refused.text());
        assert!(administers(&app, &carol_token).await, "{method} {path} took effect");
    }

    // Someone allowed to deactivate users cannot deactivate the last administrator.
    let helpdesk = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["iam:UpdateUser", "iam:GetUser"], "Resource": "*"}]});
    let created = app
        .call(
            Method::POST,
            "/api/v1/policies",
            Auth::Bearer(&carol_token),
            Some(serde_json::json!({"name": "Helpdesk", "document": helpdesk})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let help = app.create_user_with("help", &["Helpdesk".into()]).await;
    let help_token = app.token_for(&help, None).await;
    let body = Some(serde_json::json!({"active": false}));
    let deactivate =
        app.call(Method::PATCH, &format!("/api/v1/users/{}", carol.id), Auth::Bearer(&help_token), body.clone()).await;
    assert_eq!(deactivate.status, StatusCode::CONFLICT, "{}", deactivate.text());
    assert!(deactivate.text().contains("deactivating carol"), "{}", deactivate.text());
    assert!(administers(&app, &carol_token).await);

    // An inactive holder does not count: with root back as an administrator but then
    // deactivated, carol is again the last one.
    app.call(Method::PUT, "/api/v1/users/root/policies/AdministratorAccess", Auth::Bearer(&carol_token), None).await;
    let off = app.call(Method::PATCH, &format!("/api/v1/users/{}", root.id), Auth::Bearer(&help_token), body).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text());
    let leave = app.call(Method::DELETE, "/api/v1/groups/admins/members/carol", Auth::Bearer(&carol_token), None).await;
    assert_eq!(leave.status, StatusCode::CONFLICT, "{}", leave.text());
}

#[tokio::test]
async fn admin_recover_restores_a_deactivated_administrator_with_a_new_password() {
    let app = TestApp::new().await;
    let root = app.create_user("root", true).await;
    let alice = app.create_user("alice", false).await;
    // A lost administrator: alice gets AdministratorAccess, root steps down, then
    // alice is deactivated by a direct database change (as if the studio were broken).
    let root_token = app.token_for(&root, None).await;
    app.call(Method::PUT, "/api/v1/users/alice/policies/AdministratorAccess", Auth::Bearer(&root_token), None).await;
    app.call(Method::DELETE, "/api/v1/users/root/policies/AdministratorAccess", Auth::Bearer(&root_token), None).await;
    sqlx::query("UPDATE users SET active = 0 WHERE id = $1")
        .bind(&alice.id)
        .execute(&app.state.db.pool)
        .await
        .expect("deactivate");
    assert!(!administers(&app, &root_token).await);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["admin", "recover", "--user", "root"])
        .env("DATABASE_URL", app.database_url())
        .env("RUST_LOG", "error")
        .output()
        .expect("run atelier");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let password = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(password.len() >= 20, "{password}");
    // The old password no longer works; the printed one does, and root administers again.
    assert_eq!(app.sign_in_response("root", PASSWORD, Auth::None).await.status, StatusCode::UNAUTHORIZED);
    let cookie = app.sign_in("root", &password).await;
    let users = app.call(Method::GET, "/api/v1/users", Auth::Cookie(&cookie), None).await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.text());
    let me = app.call(Method::GET, "/api/v1/users/root", Auth::Cookie(&cookie), None).await;
    assert_eq!(me.json()["policies"], serde_json::json!(["AdministratorAccess"]), "{}", me.text());
    let events = app.call(Method::GET, "/api/v1/audit-events", Auth::Cookie(&cookie), None).await;
    assert!(events.text().contains("atelier admin recover"), "{}", events.text());

    // A deactivated user is reactivated too.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["admin", "recover", "--user", "alice"])
        .env("DATABASE_URL", app.database_url())
        .env("RUST_LOG", "error")
        .output()
        .expect("run atelier");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let alice_password = String::from_utf8_lossy(&output.stdout).trim().to_string();
    app.sign_in("alice", &alice_password).await;

    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["admin", "recover", "--user", "nobody"])
        .env("DATABASE_URL", app.database_url())
        .output()
        .expect("run atelier");
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("there is no user named nobody"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

#[tokio::test]
async fn admin_recover_warns_when_an_explicit_deny_still_wins() {
    let app = TestApp::new().await;
    let root = app.create_user("root", true).await;
    let root_token = app.token_for(&root, None).await;
    let deny = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "NoIam", "Effect": "Deny", "Action": "iam:*", "Resource": "*"}]});
    let created = app
        .call(
            Method::POST,
            "/api/v1/policies",
            Auth::Bearer(&root_token),
            Some(serde_json::json!({"name": "NoIam", "document": deny})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    app.create_user("alice", false).await;
    let attached = app.call(Method::PUT, "/api/v1/users/alice/policies/NoIam", Auth::Bearer(&root_token), None).await;
    assert_eq!(attached.status, StatusCode::OK, "{}", attached.text());

    let run = |user: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["admin", "recover", "--user", user])
            .env("DATABASE_URL", app.database_url())
            .env("RUST_LOG", "error")
            .output()
            .expect("run atelier")
    };
    let denied = run("alice");
    assert!(denied.status.success(), "{}", String::from_utf8_lossy(&denied.stderr));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("warning") && stderr.contains("NoIam"), "{stderr}");
    // Without such a policy there is no warning.
    let clean = run("root");
    assert!(clean.status.success());
    assert!(!String::from_utf8_lossy(&clean.stderr).contains("warning"), "{}", String::from_utf8_lossy(&clean.stderr));
}

/// The account's failure counter.
async fn failures(app: &TestApp, key: &str) -> i64 {
    sqlx::query_scalar("SELECT failures FROM sign_in_failures WHERE throttle_key = $1")
        .bind(key)
        .fetch_optional(&app.state.db.pool)
        .await
        .expect("read counter")
        .unwrap_or(0)
}

/// Moves the account's last failure back so that its throttle delay has passed.
async fn wait_out_the_delay(app: &TestApp, key: &str) {
    sqlx::query("UPDATE sign_in_failures SET last_failure_at = $1 WHERE throttle_key = $2")
        .bind(atelier_core::now() - 60)
        .bind(key)
        .execute(&app.state.db.pool)
        .await
        .expect("back-date");
}

/// 50 sign-ins at once through the router; the statuses, in order.
async fn burst(app: &TestApp, passwords: &[&str]) -> Vec<StatusCode> {
    let attempts = passwords.iter().map(|p| app.sign_in_response("alice", p, Auth::None));
    futures::future::join_all(attempts).await.into_iter().map(|r| r.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parallel_burst_of_sign_ins_gets_no_more_tries_than_a_sequence() {
    use atelier_core::throttle::FREE_ATTEMPTS;
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(app.sign_in_response("alice", "guess", Auth::None).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(failures(&app, "user:alice").await, FREE_ATTEMPTS);

    // After the delay, one attempt may be evaluated; a sequence of 50 would get exactly
    // one 401 and 49 refusals, and leave the counter one higher. So must a burst.
    wait_out_the_delay(&app, "user:alice").await;
    let statuses = burst(&app, &["guess"; 50]).await;
    let evaluated = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((evaluated, refused), (1, 49), "{statuses:?}");
    assert_eq!(failures(&app, "user:alice").await, FREE_ATTEMPTS + 1);
    // The right password right after the burst is refused too: the account waits.
    assert_eq!(app.sign_in_response("alice", PASSWORD, Auth::None).await.status, StatusCode::TOO_MANY_REQUESTS);

    // The right password inside a burst is one of the 50: at most one attempt is
    // evaluated, whichever it is; the other 49 are refused without a password check.
    wait_out_the_delay(&app, "user:alice").await;
    let mut passwords = vec!["guess"; 50];
    passwords[25] = PASSWORD;
    let statuses = burst(&app, &passwords).await;
    let evaluated: Vec<usize> = (0..statuses.len()).filter(|i| statuses[*i] != StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!(evaluated.len(), 1, "{statuses:?}");
    if statuses[25] == StatusCode::OK {
        assert_eq!(failures(&app, "user:alice").await, 0, "a success clears the count");
    } else {
        assert_eq!(statuses[evaluated[0]], StatusCode::UNAUTHORIZED, "{statuses:?}");
        assert_eq!(failures(&app, "user:alice").await, FREE_ATTEMPTS + 2);
    }
}

#[tokio::test]
async fn sessions_are_stored_under_a_hash_of_the_cookie_and_a_copied_row_cannot_be_replayed() {
    use sha2::{Digest, Sha256};
    let app = TestApp::new().await;
    app.create_user("alice", false).await;
    let cookie = app.sign_in("alice", PASSWORD).await;
    let cookie_id = cookie.strip_prefix("atelier_session=").expect("session cookie").to_string();
    assert!(!cookie_id.is_empty());

    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, data FROM sessions").fetch_all(&app.state.db.pool).await.expect("sessions");
    assert_eq!(rows.len(), 1);
    let (stored, data) = &rows[0];
    assert!(!stored.contains(&cookie_id) && !data.contains(&cookie_id), "the cookie's id is stored: {rows:?}");
    let expected: String = Sha256::digest(cookie_id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(stored, &expected);

    // The cookie works; the stored value, sent as a cookie, is nobody's session.
    let me = app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["username"], "alice");
    let replayed = format!("atelier_session={stored}");
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", Auth::Cookie(&replayed), None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Signing out deletes the hashed row.
    let out =
        app.server_fn(<app::auth::SignOut as leptos::server_fn::ServerFn>::PATH, &[], Auth::Cookie(&cookie), &[]).await;
    assert!(out.status.is_success() || out.status.is_redirection(), "{}", out.text());
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&app.state.db.pool).await.expect("count");
    assert_eq!(left, 0);
    assert_eq!(app.call(Method::GET, "/api/v1/me", Auth::Cookie(&cookie), None).await.status, StatusCode::UNAUTHORIZED);
}

/// A receiver on a loopback port answering 200 on `/hook`; counts what it got.
async fn loopback_receiver() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

/// Registers a model version in `group` (creating the group), which queues
/// `model_version.created` for every matching webhook.
async fn register_version(app: &TestApp, token: &str, group: &str) {
    let created = app
        .call(Method::POST, "/api/v1/model-groups", Auth::Bearer(token), Some(serde_json::json!({"name": group})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/api/v1/artifacts?name=model.tar.gz")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(axum::body::Body::from(b"weights".to_vec()))
        .expect("request");
    let artifact = app.send(request).await.json()["id"].as_str().expect("artifact id").to_string();
    let version = app
        .call(
            Method::POST,
            &format!("/api/v1/model-groups/{group}/versions"),
            Auth::Bearer(token),
            Some(serde_json::json!({"artifact": artifact})),
        )
        .await;
    assert_eq!(version.status, StatusCode::CREATED, "{}", version.text());
}

/// The delivery history of a webhook once each delivery was attempted at least once.
async fn attempted(app: &TestApp, token: &str, hook: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = app
            .call(Method::GET, &format!("/api/v1/model-webhooks/{hook}/deliveries"), Auth::Bearer(token), None)
            .await;
        let list = r.json().as_array().cloned().unwrap_or_default();
        if !list.is_empty() && list.iter().all(|d| d["attempts"].as_i64().unwrap_or(0) >= 1) {
            return list;
        }
        assert!(std::time::Instant::now() < deadline, "no attempt was made: {}", r.text());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn webhook_urls_on_internal_addresses_are_refused_when_saved_and_when_delivered() {
    let app = TestApp::with_config(|c| c.webhook_retry_base_ms = 600_000).await;
    let admin = app.create_user("root", true).await;
    let token = app.token_for(&admin, None).await;

    for (url, address) in [
        ("http://127.0.0.1:9/hook", "127.0.0.1"),
        ("http://[::1]:8080/", "::1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://10.0.0.5/hook", "10.0.0.5"),
        ("http://172.16.3.4/hook", "172.16.3.4"),
        ("https://192.168.0.1/hook", "192.168.0.1"),
        ("http://100.64.0.1/hook", "100.64.0.1"),
        ("http://[fd12:3456::1]/hook", "fd12:3456::1"),
        ("http://[::ffff:127.0.0.1]/hook", "127.0.0.1"),
        ("http://0.0.0.0:9/hook", "0.0.0.0"),
        ("http://224.0.0.1/hook", "224.0.0.1"),
        ("http://localhost:9/hook", "127.0.0.1"),
    ] {
        let r = app
            .call(Method::POST, "/api/v1/model-webhooks", Auth::Bearer(&token), Some(serde_json::json!({"url": url})))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], "url", "{url}");
        let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        // `localhost` may resolve to ::1 first.
        assert!(
            message.contains(address) || (url.contains("localhost") && message.contains("::1")),
            "{url}: {message}"
        );
    }
    // Another notation of an address is not a way around it.
    for url in ["http://127.1/hook", "http://2130706433/hook", "http://0x7f.1/hook"] {
        let r = app
            .call(Method::POST, "/api/v1/model-webhooks", Auth::Bearer(&token), Some(serde_json::json!({"url": url})))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {}", r.text());
    }
    let public = app
        .call(
            Method::POST,
            "/api/v1/model-webhooks",
            Auth::Bearer(&token),
            Some(serde_json::json!({"url": "http://192.0.2.1:9/hook"})),
        )
        .await;
    assert_eq!(public.status, StatusCode::CREATED, "{}", public.text());
    app.call(
        Method::DELETE,
        &format!("/api/v1/model-webhooks/{}", public.json()["webhook"]["id"].as_str().unwrap_or_default()),
        Auth::Bearer(&token),
        None,
    )
    .await;

    // A URL saved while its name pointed elsewhere (DNS rebinding) or written to the
    // database directly is still not delivered to an internal address: the check is
    // on the address connected to.
    let (addr, hits) = loopback_receiver().await;
    let mut hooks = Vec::new();
    for url in [format!("http://localhost:{}/hook", addr.port()), format!("http://{addr}/hook")] {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO model_webhooks (id, group_id, url, secret, events, created_by, created_at) \
             VALUES ($1, NULL, $2, 'whsec_x', '[\"model_version.created\"]', 'root', 0)",
        )
        .bind(&id)
        .bind(&url)
        .execute(&app.state.db.pool)
        .await
        .expect("insert webhook");
        hooks.push(id);
    }
    atelier_server::webhooks::spawn_deliverer(app.state.clone());
    register_version(&app, &token, "fraud").await;
    for hook in &hooks {
        let history = attempted(&app, &token, hook).await;
        assert_eq!(history[0]["last_error"], "refused", "{history:?}");
        assert_eq!(history[0]["last_status"], serde_json::Value::Null, "{history:?}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "an internal address was reached");
}

#[tokio::test]
async fn the_operator_can_allow_internal_receivers_and_history_reports_only_the_status_class() {
    let app = TestApp::with_config(|c| {
        c.webhook_retry_base_ms = 600_000;
        c.outbound_allow = vec!["127.0.0.0/8".into()];
    })
    .await;
    let admin = app.create_user("root", true).await;
    let token = app.token_for(&admin, None).await;
    let (addr, hits) = loopback_receiver().await;
    let mut hooks = Vec::new();
    for path in ["hook", "missing"] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/model-webhooks",
                Auth::Bearer(&token),
                Some(serde_json::json!({"url": format!("http://{addr}/{path}")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        hooks.push(r.json()["webhook"]["id"].as_str().expect("id").to_string());
    }
    // Still refused: an internal address outside the allowed network.
    let r = app
        .call(
            Method::POST,
            "/api/v1/model-webhooks",
            Auth::Bearer(&token),
            Some(serde_json::json!({"url": "http://10.0.0.1/hook"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());

    atelier_server::webhooks::spawn_deliverer(app.state.clone());
    register_version(&app, &token, "fraud").await;
    let delivered = attempted(&app, &token, &hooks[0]).await;
    assert_eq!(
        (delivered[0]["status"].clone(), delivered[0]["last_status"].clone()),
        (serde_json::json!("delivered"), serde_json::json!(200))
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A 404 is reported as its class only.
    let missing = attempted(&app, &token, &hooks[1]).await;
    assert_eq!(missing[0]["last_status"], 400, "{missing:?}");
    assert_eq!(missing[0]["last_error"], "the receiver answered 4xx", "{missing:?}");
}

/// A request from client address `ip` (as the server sees a socket's peer).
fn from_address(ip: [u8; 4], method: Method, path: &str, auth: Auth<'_>) -> axum::http::Request<axum::body::Body> {
    let mut builder = axum::http::Request::builder().method(method).uri(path);
    builder = match auth {
        Auth::None => builder,
        Auth::Cookie(c) => builder.header("cookie", c),
        Auth::Bearer(t) => builder.header("authorization", format!("Bearer {t}")),
    };
    let mut request = builder.body(axum::body::Body::empty()).expect("request");
    request.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((ip, 40000))));
    request
}

/// The audit events recorded from `ip`, read through the API as an administrator.
async fn events_from(app: &TestApp, token: &str, ip: &str) -> Vec<serde_json::Value> {
    let page = app.call(Method::GET, "/api/v1/audit-events?limit=1000", Auth::Bearer(token), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let events = page.json()["events"].as_array().cloned().unwrap_or_default();
    events.into_iter().filter(|e| e["source_ip"] == ip).collect()
}

#[tokio::test]
async fn an_anonymous_flood_with_long_paths_stores_a_bounded_number_of_short_audit_events() {
    let app = TestApp::new().await;
    let admin = app.create_user("root", true).await;
    let token = app.token_for(&admin, None).await;
    let flooder = [203, 0, 113, 7];
    let long_path = format!("/api/v1/{}", "a".repeat(50_000));

    for _ in 0..200 {
        let refused = app.send(from_address(flooder, Method::POST, &long_path, Auth::None)).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }
    // Forged tokens from the same address count against the same limit.
    for _ in 0..20 {
        let refused = app.send(from_address(flooder, Method::GET, "/api/v1/users", Auth::Bearer("atl_forged"))).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }

    let flood = events_from(&app, &token, "203.0.113.7").await;
    assert!(!flood.is_empty(), "refused requests are still audited, up to the limit");
    assert!(flood.len() <= 21, "{} events stored for one address's flood", flood.len());
    for event in &flood {
        let resource = event["resource"].as_str().unwrap_or_default();
        assert!(resource.chars().count() <= 512, "a stored resource of {} characters", resource.chars().count());
        assert!(event["summary"].as_str().unwrap_or_default().chars().count() <= 500);
    }
    assert!(flood
        .iter()
        .any(|e| e["resource"].as_str().is_some_and(|r| r.starts_with("/api/v1/aaa") && r.ends_with('…'))));

    // Another address is not silenced by the first one's flood.
    let other = app.send(from_address([198, 51, 100, 2], Method::POST, &long_path, Auth::None)).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    assert_eq!(events_from(&app, &token, "198.51.100.2").await.len(), 1);

    // 220 refused requests with 50 KB paths leave kilobytes, not megabytes.
    let stored: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(LENGTH(resource) + LENGTH(summary)), 0) AS BIGINT) FROM audit_events",
    )
    .fetch_one(&app.state.db.pool)
    .await
    .expect("sum stored lengths");
    assert!(stored < 64 * 1024, "{stored} characters of resources and summaries stored");
}

#[tokio::test]
async fn a_signed_in_users_denials_are_all_audited_even_from_a_flooding_address() {
    let app = TestApp::new().await;
    let admin = app.create_user("root", true).await;
    let token = app.token_for(&admin, None).await;
    app.create_user("mallory", false).await;
    let cookie = app.sign_in("mallory", PASSWORD).await;
    let address = [203, 0, 113, 9];
    for _ in 0..50 {
        app.send(from_address(address, Method::GET, "/api/v1/users", Auth::None)).await;
    }

    for _ in 0..40 {
        let denied = app.send(from_address(address, Method::GET, "/api/v1/model-groups", Auth::Cookie(&cookie))).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text());
    }

    let events = events_from(&app, &token, "203.0.113.9").await;
    let denials = events.iter().filter(|e| e["principal"] == "mallory" && e["decision"] == "Deny").count();
    assert_eq!(denials, 40);
    let anonymous = events.iter().filter(|e| e["principal"] == "anonymous").count();
    assert!(anonymous <= 21, "{anonymous} anonymous events stored");
}

#[tokio::test]
async fn audit_events_name_the_api_token_a_change_was_made_with_but_not_its_secret() {
    let app = TestApp::new().await;
    let admin = app.create_user("root", true).await;
    let created = atelier_core::tokens::create(&app.state.db, &admin, "ci", None, None).await.expect("token");
    let cookie = app.sign_in("root", PASSWORD).await;

    let by_token = app
        .call(Method::POST, "/api/v1/groups", Auth::Bearer(&created.secret), Some(serde_json::json!({"name": "ci"})))
        .await;
    assert_eq!(by_token.status, StatusCode::CREATED, "{}", by_token.text());
    let by_session =
        app.call(Method::POST, "/api/v1/groups", Auth::Cookie(&cookie), Some(serde_json::json!({"name": "web"}))).await;
    assert_eq!(by_session.status, StatusCode::CREATED, "{}", by_session.text());

    let page = app.call(Method::GET, "/api/v1/audit-events?action=iam:CreateGroup", Auth::Cookie(&cookie), None).await;
    let events = page.json()["events"].as_array().cloned().unwrap_or_default();
    let made_with = |group: &str| {
        events
            .iter()
            .find(|e| e["resource"] == format!("atelier:iam:group/{group}"))
            .map(|e| e["token_id"].clone())
            .unwrap_or_else(|| panic!("no event for group {group}: {events:?}"))
    };
    assert_eq!(made_with("ci"), serde_json::json!(created.token.id));
    assert_eq!(made_with("web"), serde_json::Value::Null);
    assert!(!page.text().contains(&created.secret), "the token's secret is not in the audit log");
}

/// Sends `method path` with a body that starts and then never ends, and returns the
/// response: a route that read the body before authorizing would never answer.
async fn with_endless_body(
    app: &TestApp,
    path: &str,
    content_type: &str,
    auth: Auth<'_>,
) -> Option<common::TestResponse> {
    let (sender, receiver) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    sender.unbounded_send(Ok(vec![b'{'; 64 * 1024])).expect("first chunk");
    let mut builder = axum::http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json");
    builder = match auth {
        Auth::Bearer(token) => builder.header("authorization", format!("Bearer {token}")),
        Auth::Cookie(cookie) => builder.header("cookie", cookie),
        Auth::None => builder,
    };
    let request = builder.body(axum::body::Body::from_stream(receiver)).expect("request");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), app.send(request)).await.ok();
    drop(sender);
    answer
}

#[tokio::test]
async fn a_caller_not_allowed_the_action_makes_the_server_read_no_body() {
    let app = TestApp::new().await;
    let mallory = app.create_user("mallory", false).await;
    let token = app.token_for(&mallory, None).await;
    let cookie = app.sign_in("mallory", PASSWORD).await;
    let training = <app::training::CreateTrainingJob as leptos::server_fn::ServerFn>::PATH;
    let routes = [
        ("/endpoints/churn/invocations", "application/json", Auth::Bearer(&token)),
        ("/api/v1/endpoints/churn/invocations", "application/json", Auth::Bearer(&token)),
        ("/v2/models/churn/infer", "application/json", Auth::Bearer(&token)),
        ("/api/v1/artifacts?name=big.bin", "application/octet-stream", Auth::Bearer(&token)),
        ("/api/v1/datasets/photos/batches", "multipart/form-data; boundary=b", Auth::Bearer(&token)),
        (training, "multipart/form-data; boundary=b", Auth::Cookie(&cookie)),
    ];
    for (path, content_type, auth) in routes {
        let answer = with_endless_body(&app, path, content_type, auth).await;
        let answer = answer.unwrap_or_else(|| panic!("{path} read the body before refusing the caller"));
        assert!(
            matches!(answer.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
            "{path}: {} {}",
            answer.status,
            answer.text()
        );
    }
    // Anonymous callers reach only the public routes, which read at most a small body.
    let refused = app.sign_in_response("mallory", &"x".repeat(100 * 1024), Auth::None).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", refused.text());
    let answer = with_endless_body(&app, "/api/v1/datasets", "application/json", Auth::None).await;
    assert_eq!(answer.map(|a| a.status), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn an_invocation_over_the_payload_limit_is_refused_naming_it() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/endpoints/churn/invocations")
        .header("content-type", "text/csv")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::from(vec![b'1'; atelier_server::endpoints::MAX_PAYLOAD_BYTES + 1]))
        .expect("request");
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.text());
    assert!(answer.text().contains(&atelier_server::endpoints::MAX_PAYLOAD_BYTES.to_string()), "{}", answer.text());
}
