//! The model registry through the REST API: registering versions, the approval state
//! machine, separation of duties, quorums, concurrent decisions, aliases and tags.

mod common;

use atelier_core::accounts::{self, NewUser};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Auth, TestApp, TestResponse};
use serde_json::{json, Value};

/// A user with these built-in policies, and their token.
async fn user(app: &TestApp, name: &str, policies: &[&str]) -> String {
    let user = accounts::create_user(
        &app.state.db,
        NewUser {
            username: name.into(),
            display_name: String::new(),
            password: common::PASSWORD.into(),
            policies: policies.iter().map(|p| p.to_string()).collect(),
            groups: Vec::new(),
        },
    )
    .await
    .expect("create user");
    app.token_for(&user, None).await
}

async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> TestResponse {
    app.call(method, path, Auth::Bearer(token), body).await
}

/// Uploads `bytes` as a model tarball; returns the artifact id.
async fn upload(app: &TestApp, token: &str, bytes: &[u8]) -> String {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/artifacts?name=model.tar.gz")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(bytes.to_vec()))
        .expect("request");
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["id"].as_str().expect("artifact id").to_string()
}

/// A group (with `quorum` approvals) and `n` versions registered by `token`.
async fn group_with_versions(app: &TestApp, token: &str, name: &str, quorum: i64, n: usize) {
    let r = call(
        app,
        Method::POST,
        "/api/v1/model-groups",
        token,
        Some(json!({"name": name, "required_approvals": quorum})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    for k in 0..n {
        let artifact = upload(app, token, format!("model {name} {k}").as_bytes()).await;
        let r = call(
            app,
            Method::POST,
            &format!("/api/v1/model-groups/{name}/versions"),
            token,
            Some(json!({"artifact": artifact, "description": format!("try {k}")})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        assert_eq!(r.json()["version"], json!(k as i64 + 1));
        assert_eq!(r.json()["status"], "PendingManualApproval");
    }
}

async fn decide(app: &TestApp, token: &str, group: &str, version: i64, body: Value) -> TestResponse {
    call(app, Method::POST, &format!("/api/v1/model-groups/{group}/versions/{version}/approval"), token, Some(body))
        .await
}

async fn status(app: &TestApp, token: &str, group: &str, version: i64) -> String {
    let r = call(app, Method::GET, &format!("/api/v1/model-groups/{group}/versions/{version}"), token, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["status"].as_str().expect("status").to_string()
}

#[tokio::test]
async fn versions_move_through_approval_and_creators_cannot_approve_their_own() {
    let app = TestApp::new().await;
    let ds = user(&app, "dana", &["DataScientist"]).await;
    let rita = user(&app, "rita", &["Reviewer"]).await;
    let rob = user(&app, "rob", &["Reviewer"]).await;
    // Rita also builds models: her own versions are still not hers to approve.
    let both = user(&app, "bea", &["Reviewer", "DataScientist"]).await;
    group_with_versions(&app, &ds, "fraud", 1, 2).await;

    // Bad registrations name what is wrong; nothing is registered.
    let r = call(&app, Method::POST, "/api/v1/model-groups/fraud/versions", &ds, Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "training_job");
    let r =
        call(&app, Method::POST, "/api/v1/model-groups/fraud/versions", &ds, Some(json!({"artifact": "nope"}))).await;
    assert_eq!(r.json()["error"]["field"], "artifact", "{}", r.text());
    let r = call(&app, Method::POST, "/api/v1/model-groups/fraud/versions", &ds, Some(json!({"training_job": "nope"})))
        .await;
    assert_eq!(r.json()["error"]["field"], "training_job", "{}", r.text());
    let r = call(&app, Method::POST, "/api/v1/model-groups", &ds, Some(json!({"name": "fraud"}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    // The creator may not decide; a reviewer may.
    let r = decide(&app, &ds, "fraud", 1, json!({"status": "Approved"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let r = decide(
        &app,
        &rita,
        "fraud",
        1,
        json!({"status": "Approved", "comment": "AUC up", "expected_status": "PendingManualApproval"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "Approved");
    let r = decide(&app, &rob, "fraud", 1, json!({"status": "Approved"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("already Approved"), "{}", r.text());

    // Rejecting needs a comment; approving a rejected version needs a new one.
    let r = decide(&app, &rob, "fraud", 1, json!({"status": "Rejected"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "comment");
    assert_eq!(status(&app, &ds, "fraud", 1).await, "Approved");
    let r = decide(&app, &rob, "fraud", 1, json!({"status": "Rejected", "comment": "leaks the label"})).await;
    assert_eq!(r.json()["status"], "Rejected", "{}", r.text());
    let r = decide(&app, &rita, "fraud", 1, json!({"status": "Approved"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let r = decide(&app, &rita, "fraud", 1, json!({"status": "Approved", "comment": "leak fixed upstream"})).await;
    assert_eq!(r.json()["status"], "Approved", "{}", r.text());
    let r = decide(&app, &rita, "fraud", 2, json!({"status": "Maybe"})).await;
    assert_eq!(r.json()["error"]["field"], "status", "{}", r.text());

    // The timeline keeps every step, with who and why.
    let r = call(&app, Method::GET, "/api/v1/model-groups/fraud/versions/1/timeline", &ds, None).await;
    let steps: Vec<(String, String, String)> = r
        .json()
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().into(),
                e["kind"].as_str().unwrap_or_default().into(),
                e["status"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let expected = [
        ("dana", "registered", "PendingManualApproval"),
        ("rita", "approve", "Approved"),
        ("rob", "reject", "Rejected"),
        ("rita", "approve", "Approved"),
    ];
    assert_eq!(steps, expected.map(|(a, k, s)| (a.to_string(), k.to_string(), s.to_string())).to_vec());

    // Separation of duties: Bea's own version is denied to her, and not in her inbox.
    group_with_versions(&app, &both, "churn", 1, 1).await;
    let r = decide(&app, &both, "churn", 1, json!({"status": "Approved"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let inbox = |token: String| {
        let app = &app;
        async move {
            let r = call(app, Method::GET, "/api/v1/model-approvals", &token, None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let mut found: Vec<String> = r
                .json()
                .as_array()
                .expect("inbox")
                .iter()
                .map(|v| format!("{}/{}", v["group"].as_str().unwrap_or_default(), v["version"]))
                .collect();
            found.sort();
            found
        }
    };
    assert_eq!(inbox(both.clone()).await, vec!["fraud/2"]);
    assert_eq!(inbox(rob.clone()).await, vec!["churn/1", "fraud/2"]);
    // A data scientist decides nothing, so their inbox is empty.
    assert!(inbox(ds.clone()).await.is_empty());
    // A reviewer scoped to one group sees that group's pending versions (and may not
    // list every group's).
    let scoped = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["models:Get*", "models:UpdateModelApprovalStatus"], "Resource": "atelier:models:group/churn*"}]}"#;
    atelier_core::iam::store::create_policy(&app.state.db, "admin", "ChurnReviewer", "", scoped).await.expect("policy");
    let carl = user(&app, "carl", &["ChurnReviewer"]).await;
    assert_eq!(inbox(carl.clone()).await, vec!["churn/1"]);
    let r = call(&app, Method::GET, "/api/v1/model-groups/fraud/versions", &carl, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());

    // The decisions are in the audit log.
    let admin = app.create_user("admin", true).await;
    let admin = app.token_for(&admin, None).await;
    let r = call(&app, Method::GET, "/api/v1/audit-events?action=models:UpdateModelApprovalStatus", &admin, None).await;
    let text = r.text();
    assert!(text.contains("rejected version 1 of model group fraud"), "{text}");
    assert!(text.contains("\"decision\":\"Deny\""), "the denied attempt is audited too: {text}");
}

#[tokio::test]
async fn a_quorum_needs_distinct_reviewers() {
    let app = TestApp::new().await;
    let ds = user(&app, "dana", &["DataScientist"]).await;
    let rita = user(&app, "rita", &["Reviewer"]).await;
    let rob = user(&app, "rob", &["Reviewer"]).await;
    group_with_versions(&app, &ds, "risk", 2, 1).await;
    let r = decide(&app, &rita, "risk", 1, json!({"status": "Approved"})).await;
    assert_eq!(r.json()["status"], "PendingManualApproval", "{}", r.text());
    let r = call(&app, Method::GET, "/api/v1/model-groups/risk/versions/1", &ds, None).await;
    assert_eq!((r.json()["approvals"].clone(), r.json()["required_approvals"].clone()), (json!(1), json!(2)));
    let r = decide(&app, &rita, "risk", 1, json!({"status": "Approved"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "one reviewer counts once: {}", r.text());
    let r = decide(&app, &rob, "risk", 1, json!({"status": "Approved"})).await;
    assert_eq!(r.json()["status"], "Approved", "{}", r.text());
    let r = call(&app, Method::GET, "/api/v1/model-groups/risk", &ds, None).await;
    assert_eq!(r.json()["approved_version"], 1, "{}", r.text());

    let r = call(&app, Method::PATCH, "/api/v1/model-groups/risk", &ds, Some(json!({"required_approvals": 1}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "data scientists do not change the quorum: {}", r.text());

    // A change is all or nothing: a refused part leaves the name as it was.
    for body in
        [json!({"name": "risk-2", "required_approvals": 1}), json!({"name": "risk-2", "description": "x".repeat(5001)})]
    {
        let r = call(&app, Method::PATCH, "/api/v1/model-groups/risk", &ds, Some(body.clone())).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.text());
        let r = call(&app, Method::GET, "/api/v1/model-groups/risk-2", &ds, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{body}: renamed although refused");
    }
    let r = call(
        &app,
        Method::PATCH,
        "/api/v1/model-groups/risk",
        &ds,
        Some(json!({"name": "risk-2", "description": "d"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!((r.json()["name"].clone(), r.json()["description"].clone()), (json!("risk-2"), json!("d")));
}

#[tokio::test]
async fn of_two_reviewers_deciding_at_once_one_wins() {
    let app = TestApp::new().await;
    let ds = user(&app, "dana", &["DataScientist"]).await;
    let rita = user(&app, "rita", &["Reviewer"]).await;
    let rob = user(&app, "rob", &["Reviewer"]).await;
    group_with_versions(&app, &ds, "race", 1, 8).await;
    for version in 1..=8 {
        let (a, b) = tokio::join!(
            decide(
                &app,
                &rita,
                "race",
                version,
                json!({"status": "Approved", "expected_status": "PendingManualApproval"})
            ),
            decide(
                &app,
                &rob,
                "race",
                version,
                json!({"status": "Rejected", "comment": "no", "expected_status": "PendingManualApproval"})
            ),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{} / {}", a.text(), b.text());
        let loser = if a.status == StatusCode::CONFLICT { &a } else { &b };
        assert!(
            loser.text().contains("changed while you were deciding") || loser.text().contains("already"),
            "{}",
            loser.text()
        );
        let winner = if a.status == StatusCode::OK { &a } else { &b };
        assert_eq!(status(&app, &ds, "race", version).await, winner.json()["status"].as_str().unwrap_or_default());
    }
}

#[tokio::test]
async fn aliases_tags_and_deletion() {
    let app = TestApp::new().await;
    let ds = user(&app, "dana", &["DataScientist"]).await;
    let admin = app.create_user("admin", true).await;
    let admin = app.token_for(&admin, None).await;
    group_with_versions(&app, &ds, "ranker", 1, 2).await;
    let r =
        call(&app, Method::PUT, "/api/v1/model-groups/ranker/aliases/champion", &admin, Some(json!({"version": 2})))
            .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    for bad in ["latest", "v3", "has space"] {
        let r = call(
            &app,
            Method::PUT,
            &format!("/api/v1/model-groups/ranker/aliases/{}", bad.replace(' ', "%20")),
            &admin,
            Some(json!({"version": 1})),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], "alias");
    }
    let r = call(&app, Method::GET, "/api/v1/model-groups/ranker", &ds, None).await;
    assert_eq!(r.json()["aliases"], json!({"champion": 2}));
    assert_eq!(r.json()["latest_version"], 2);
    let r = call(
        &app,
        Method::PATCH,
        "/api/v1/model-groups/ranker/versions/1",
        &admin,
        Some(json!({"tags": {"owner": "search"}, "description": "baseline"})),
    )
    .await;
    assert_eq!(r.json()["tags"], json!({"owner": "search"}), "{}", r.text());
    assert_eq!(r.json()["description"], "baseline");
    let r = call(&app, Method::DELETE, "/api/v1/model-groups/ranker/versions/2", &admin, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = call(&app, Method::GET, "/api/v1/model-groups/ranker", &ds, None).await;
    assert_eq!(r.json()["aliases"], json!({}), "the alias went with its version");
    assert_eq!(r.json()["latest_version"], 1);
    let r = call(&app, Method::GET, "/api/v1/model-groups/ranker/versions/1/artifact", &ds, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "model ranker 0");

    // A deleted version's number is not handed out again.
    let artifact = upload(&app, &ds, b"again").await;
    let r = call(&app, Method::POST, "/api/v1/model-groups/ranker/versions", &ds, Some(json!({"artifact": artifact})))
        .await;
    assert_eq!(r.json()["version"], 3, "{}", r.text());

    // Someone without access to the registry cannot tell which groups exist.
    let outsider = user(&app, "olga", &["Labeler"]).await;
    for group in ["ranker", "no-such-group"] {
        let r = call(&app, Method::GET, &format!("/api/v1/model-groups/{group}/versions"), &outsider, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{group}: {}", r.text());
    }
}

/// What the test receiver saw: (event header, signature header, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// A webhook receiver on a loopback port that answers 500 to its first `failures`
/// requests, then 200.
async fn receiver(failures: usize) -> (String, Received) {
    use axum::routing::post;
    let seen: Received = Default::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let mut seen = log.lock().expect("receiver log");
                seen.push((header("x-atelier-event"), header("x-atelier-signature"), body));
                if seen.len() <= failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_their_history_kept() {
    // The receiver is on loopback, which the operator must allow.
    let app = TestApp::with_config(|c| {
        c.webhook_retry_base_ms = 20;
        c.outbound_allow = vec!["127.0.0.1".into()];
    })
    .await;
    atelier_server::webhooks::spawn_deliverer(app.state.clone());
    let ds = user(&app, "dana", &["DataScientist"]).await;
    let rita = user(&app, "rita", &["Reviewer"]).await;
    let (url, seen) = receiver(2).await;
    let r = call(&app, Method::POST, "/api/v1/model-groups", &ds, Some(json!({"name": "hooked"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // Bad webhooks are refused naming the field; reviewers do not manage webhooks.
    let r = call(&app, Method::POST, "/api/v1/model-webhooks", &ds, Some(json!({"group": "hooked", "url": "ftp://x"})))
        .await;
    assert_eq!(r.json()["error"]["field"], "url", "{}", r.text());
    let r = call(
        &app,
        Method::POST,
        "/api/v1/model-webhooks",
        &ds,
        Some(json!({"group": "hooked", "url": url, "events": ["model.deleted"]})),
    )
    .await;
    assert_eq!(r.json()["error"]["field"], "events", "{}", r.text());
    let r = call(&app, Method::GET, "/api/v1/model-webhooks?group=hooked", &rita, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());

    let r = call(&app, Method::POST, "/api/v1/model-webhooks", &ds, Some(json!({"group": "hooked", "url": url}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let hook = r.json()["webhook"]["id"].as_str().expect("id").to_string();
    let secret = r.json()["secret"].as_str().expect("secret").to_string();
    let artifact = upload(&app, &ds, b"weights").await;
    let r = call(&app, Method::POST, "/api/v1/model-groups/hooked/versions", &ds, Some(json!({"artifact": artifact})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = decide(&app, &rita, "hooked", 1, json!({"status": "Approved", "comment": "ok"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Both events arrive; the first attempts failed (500) and were retried.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let history = loop {
        let r = call(&app, Method::GET, &format!("/api/v1/model-webhooks/{hook}/deliveries"), &ds, None).await;
        let list = r.json().as_array().cloned().unwrap_or_default();
        if list.len() == 2 && list.iter().all(|d| d["status"] == "delivered") {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "deliveries did not complete: {}", r.text());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let attempts: i64 = history.iter().map(|d| d["attempts"].as_i64().unwrap_or(0)).sum();
    assert_eq!(attempts, 4, "two failed attempts, then one each: {history:?}");
    assert!(history.iter().all(|d| d["last_status"] == 200));
    let seen = seen.lock().expect("receiver log").clone();
    assert_eq!(seen.len(), 4);
    let mut events: Vec<&str> = seen.iter().skip(2).map(|(e, ..)| e.as_str()).collect();
    events.sort();
    assert_eq!(events, ["model_version.created", "model_version.status_changed"]);
    for (_, signature, body) in &seen {
        assert_eq!(*signature, atelier_core::models::webhooks::signature(&secret, body.as_bytes()));
        assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64, "{signature}");
    }
    let changed = seen.iter().find(|(e, ..)| e == "model_version.status_changed").expect("status event");
    let body: Value = serde_json::from_str(&changed.2).expect("JSON body");
    assert_eq!(
        (body["data"]["from"].clone(), body["data"]["to"].clone()),
        (json!("PendingManualApproval"), json!("Approved"))
    );
    // Signed with the secret, so another key does not verify.
    assert_ne!(changed.1, atelier_core::models::webhooks::signature("whsec_other", changed.2.as_bytes()));
}
