//! Access control through the real routes: every route is authorized or reviewed as
//! public, built-in policies decide as documented, policies are validated, versioned
//! and take effect at once, tokens can be narrowed, and the audit log records it all.

mod common;

use atelier_core::iam::store;
use atelier_server::middleware::{authenticated_only_server_fns, is_public};
use axum::http::{Method, StatusCode};
use common::{Auth, TestApp, PASSWORD};
use serde_json::{json, Value};

const DENY_ALL: &str =
    r#"{"Version": "2012-10-17", "Statement": [{"Sid": "Nothing", "Effect": "Deny", "Action": "*", "Resource": "*"}]}"#;

async fn deny_events(app: &TestApp, principal: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE principal = $1 AND decision = 'Deny'")
        .bind(principal)
        .fetch_one(&app.state.db.pool)
        .await
        .expect("test setup")
}

/// A valid body for each REST write, so that a request reaches its authorization
/// check instead of failing validation. A new route with a required body needs a line.
fn body_for(method: &Method, path: &str) -> Option<Value> {
    if *method == Method::GET || *method == Method::DELETE {
        return None;
    }
    Some(match path {
        "/api/v1/me/password" => json!({"current_password": PASSWORD, "new_password": "another long password"}),
        "/api/v1/users" => json!({"username": "newcomer", "password": PASSWORD}),
        "/api/v1/users/{user}" => json!({"active": true}),
        "/api/v1/users/{user}/password" => json!({"password": "another long password"}),
        "/api/v1/tokens" => json!({"name": "t"}),
        "/api/v1/groups" => json!({"name": "newgroup"}),
        "/api/v1/groups/{group}" => json!({"description": "d"}),
        "/api/v1/policies" => json!({"name": "NewPolicy", "document": DENY_ALL}),
        "/api/v1/policies/{policy}" => json!({"description": "d"}),
        "/api/v1/policies/{policy}/default-version" => json!({"version": 1}),
        "/api/v1/iam/simulate" => {
            json!({"username": "admin", "action": "iam:GetUser", "resource": "atelier:iam:user/admin"})
        }
        "/api/v1/model-groups" => json!({"name": "newmodel"}),
        "/api/v1/model-groups/{group}" | "/api/v1/model-groups/{group}/versions/{version}" => {
            json!({"description": "d"})
        }
        "/api/v1/model-groups/{group}/versions" => json!({"artifact": "a1"}),
        "/api/v1/model-groups/{group}/versions/{version}/approval" => json!({"status": "Approved", "comment": "c"}),
        "/api/v1/model-groups/{group}/aliases/{alias}" => json!({"version": 1}),
        "/api/v1/model-webhooks" => json!({"url": "http://192.0.2.1:9/hook"}),
        "/api/v1/datasets" => json!({"name": "newdataset", "kind": "image"}),
        "/api/v1/endpoints" => {
            json!({"name": "newendpoint", "variants": [{"model_group": "fraud", "model_version": 1}]})
        }
        "/api/v1/endpoints/{name}" => json!({"variants": [{"model_group": "fraud", "model_version": 1}]}),
        "/api/v1/endpoints/{name}/data-capture" => json!({"percent": 10}),
        "/api/v1/model-groups/{group}/deployment-rule" => json!({"endpoint": "ep-1"}),
        "/api/v1/endpoints/{name}/monitor" => json!({"frequency": "daily"}),
        "/api/v1/endpoints/{name}/variants/{variant}/autoscaling" => {
            json!({"min_instances": 1, "max_instances": 2, "target_invocations_per_instance": 10})
        }
        "/api/v1/endpoints/{name}/alarms" | "/api/v1/endpoints/{name}/alarms/{alarm}" => {
            json!({"name": "a", "metric": "errors_5xx", "comparison": "ge", "threshold": 1})
        }
        "/api/v1/endpoints/{name}/alarms/{alarm}/mute" => json!({"muted": true}),
        "/api/v1/compute/nodes" => json!({"name": "newnode"}),
        "/api/v1/notebooks"
        | "/api/v1/notebooks/{id}"
        | "/api/v1/notebooks/{id}/duplicate"
        | "/api/v1/notebooks/{id}/revisions" => json!({"name": "nb"}),
        "/api/v1/notebooks/{id}/content" => json!({"content": {"nbformat": 4, "cells": []}, "base_version": 1}),
        "/api/v1/notebooks/{id}/shares/{username}" => json!({"role": "reader"}),
        "/api/v1/kernels/{id}/execute" => json!({"code": "1+1"}),
        "/api/v1/labeling/jobs" => json!({
            "name": "newlabeling", "dataset": "photos", "task_type": "image_classification",
            "categories": [{"name": "a"}, {"name": "b"}], "teams": ["team"],
        }),
        "/api/v1/labeling/jobs/{job}/tasks/{task}/submit" | "/api/v1/labeling/jobs/{job}/review/{seq}" => {
            json!({"answer": {"label": "a"}})
        }
        "/api/v1/training-jobs" => {
            json!({"name": "newjob", "spec": {"algorithm": {"type": "builtin", "name": "tabular"}}})
        }
        _ => json!({}),
    })
}

#[tokio::test]
async fn every_route_and_server_function_is_authorized_or_on_the_reviewed_public_lists() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token_id =
        atelier_core::tokens::create(&app.state.db, &admin, "x", None, None).await.expect("test setup").token.id;
    store::create_group(&app.state.db, "team", "").await.expect("test setup");
    store::create_policy(&app.state.db, "admin", "Custom", "", DENY_ALL).await.expect("test setup");
    store::create_policy(&app.state.db, "admin", "DenyAll", "", DENY_ALL).await.expect("test setup");
    sqlx::query("INSERT INTO model_groups (id, name, description, created_by, created_at) VALUES ('m', 'fraud', '', 'admin', 0)")
        .execute(&app.state.db.pool)
        .await
        .expect("test setup");
    atelier_core::compute::nodes::create_unchecked(&app.state.db, "gpu-1", "admin").await.expect("test setup");
    sqlx::query(
        "INSERT INTO training_jobs (id, name, spec, state, priority, cpus, memory_mb, gpus, created_by, created_at) \
         VALUES ('j', 'job-1', '{\"algorithm\":{\"type\":\"builtin\",\"name\":\"tabular\"}}', 'Pending', 0, 1, 1, 0, 'admin', 0)",
    )
    .execute(&app.state.db.pool)
    .await
    .expect("test setup");
    sqlx::query(
        "INSERT INTO artifacts (id, name, kind, sha256, size, created_by, created_at) VALUES ('a1', 'f', 'upload', '', 0, 'admin', 0)",
    )
    .execute(&app.state.db.pool)
    .await
    .expect("test setup");
    sqlx::query(
        "INSERT INTO datasets (id, name, description, kind, item_count, total_bytes, created_by, created_at) \
         VALUES ('d', 'photos', '', 'image', 0, 0, 'admin', 0)",
    )
    .execute(&app.state.db.pool)
    .await
    .expect("test setup");
    // Two labeling jobs: the REST paths name job-1, the server functions take the name
    // from the shared form below ("Custom").
    sqlx::query(
        "INSERT INTO labeling_jobs (id, name, dataset_id, task_type, label_attribute, categories, instructions, \
         workers_per_item, task_time_limit_secs, gold_share, status, item_count, remaining, created_by, created_at) \
         VALUES ('l', 'job-1', 'd', 'image_classification', 'job-1', '[]', '', 3, 300, 0.0, 'InProgress', 1, 1, 'admin', 0), \
                ('l2', 'Custom', 'd', 'image_classification', 'Custom', '[]', '', 3, 300, 0.0, 'InProgress', 1, 1, 'admin', 0)",
    )
    .execute(&app.state.db.pool)
    .await
    .expect("test setup");
    sqlx::query("INSERT INTO labeling_job_teams (job_id, team) VALUES ('l', 'team'), ('l2', 'team')")
        .execute(&app.state.db.pool)
        .await
        .expect("test setup");
    // Notebooks for the REST paths ({id}), the server functions (id, notebook), and a
    // kernel.
    for id in [token_id.as_str(), admin.id.as_str(), "n1"] {
        sqlx::query(
            "INSERT INTO notebooks (id, name, owner_id, content, cells, version, updated_by, created_at, updated_at) \
             VALUES ($1, 'nb', $2, '{\"nbformat\": 4, \"nbformat_minor\": 5, \"metadata\": {}, \"cells\": []}', 0, 1, 'admin', 0, 0)",
        )
        .bind(id)
        .bind(&admin.id)
        .execute(&app.state.db.pool)
        .await
        .expect("test setup");
    }
    sqlx::query(
        "INSERT INTO kernels (id, notebook_id, user_id, username, node_id, cpus, memory_mb, gpus, gpu_indices, state, \
         url, secret, message, created_at, updated_at, last_activity_at) \
         VALUES ($1, $1, $2, 'admin', 'no-node', 0, 0, 0, '[]', 'idle', 'http://127.0.0.1:9', 's', '', 0, 0, 0)",
    )
    .bind(&token_id)
    .bind(&admin.id)
    .execute(&app.state.db.pool)
    .await
    .expect("test setup");
    // An administrator with an explicit Deny of everything: the Deny must win everywhere.
    let denied = app.create_user_with("mallory", &["AdministratorAccess".into(), "DenyAll".into()]).await;
    let token = app.token_for(&denied, None).await;

    let doc = atelier_server::api::openapi();
    let mut checked = 0;
    for (template, item) in &doc.paths.paths {
        let ops = [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::PUT, item.put.is_some()),
            (Method::PATCH, item.patch.is_some()),
            (Method::DELETE, item.delete.is_some()),
        ];
        for (method, present) in ops {
            if !present {
                continue;
            }
            let path = template
                .replace("{user}", "admin")
                .replace("{policy}", "Custom")
                .replace("/artifacts/{id}", "/artifacts/a1")
                .replace("{id}", &token_id)
                .replace("{node}", "gpu-1")
                .replace("{job}", "job-1")
                .replace("/model-groups/{group}", "/model-groups/fraud")
                .replace("{version}", "1")
                .replace("{alias}", "champion")
                .replace("{dataset}", "photos")
                .replace("{seq}", "1")
                .replace("{task}", "t1")
                .replace("{group}", "team")
                .replace("{name}", "ep-1")
                .replace("{alarm}", "a")
                .replace("{cell}", "c1")
                .replace("{index}", "0");
            assert!(!is_public(&path), "{path} is public but documented as an authorized route");
            // Uploads name their file in the query.
            let path = match path.as_str() {
                "/api/v1/artifacts" => format!("{path}?name=x.py"),
                "/api/v1/notebooks/import" => format!("{path}?name=x"),
                _ => path,
            };
            let anonymous = app.call(method.clone(), &path, Auth::None, body_for(&method, template)).await;
            assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
            let before = deny_events(&app, "mallory").await;
            let response = app.call(method.clone(), &path, Auth::Bearer(&token), body_for(&method, template)).await;
            assert_eq!(response.status, StatusCode::FORBIDDEN, "{method} {path}: {}", response.text());
            assert_eq!(response.json()["error"]["code"], "forbidden");
            assert!(deny_events(&app, "mallory").await > before, "{method} {path}: denial not audited");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} REST operations found");

    // Inference outside /api/v1 (SageMaker's path, Open Inference Protocol v2): refused
    // the same way.
    let infer = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]});
    for (method, path) in [
        (Method::POST, "/endpoints/ep-1/invocations"),
        (Method::POST, "/v2/models/ep-1/infer"),
        (Method::GET, "/v2/models/ep-1"),
        (Method::GET, "/v2/models/ep-1/ready"),
    ] {
        let body = (method == Method::POST).then(|| infer.clone());
        let anonymous = app.call(method.clone(), path, Auth::None, body.clone()).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}: {}", anonymous.text());
        let before = deny_events(&app, "mallory").await;
        let response = app.call(method, path, Auth::Bearer(&token), body).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{path}: {}", response.text());
        assert!(deny_events(&app, "mallory").await > before, "{path}: denial not audited");
    }

    // The MLflow-compatible API: refused the same way, in MLflow's error shape.
    for (method, op) in atelier_server::mlflow::OPERATIONS {
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let path = format!("{}{op}?name=fraud&version=1&alias=champion", atelier_server::mlflow::PREFIX);
        let body = (method != Method::GET).then(|| {
            json!({"name": "fraud", "new_name": "f2", "version": "1", "alias": "champion", "key": "k", "value": "v",
                   "source": "atelier:artifact/a1", "description": "d"})
        });
        let anonymous = app.call(method.clone(), &path, Auth::None, body.clone()).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
        assert_eq!(anonymous.json()["error_code"], "UNAUTHENTICATED", "{method} {path}");
        let before = deny_events(&app, "mallory").await;
        let response = app.call(method.clone(), &path, Auth::Bearer(&token), body).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{method} {path}: {}", response.text());
        assert_eq!(response.json()["error_code"], "PERMISSION_DENIED");
        assert!(deny_events(&app, "mallory").await > before, "{method} {path}: denial not audited");
    }

    // Server functions: the same through the session, with a form that carries every
    // argument any of them takes.
    let cookie = app.sign_in("mallory", PASSWORD).await;
    let form: &[(&str, &str)] = &[
        ("name", "Custom"),
        ("description", "d"),
        ("document", DENY_ALL),
        ("username", "admin"),
        ("password", "another long password"),
        ("display_name", "x"),
        ("policy", "Custom"),
        ("group", "team"),
        ("id", &admin.id),
        ("active", "true"),
        ("attach", "true"),
        ("member", "true"),
        ("version", "1"),
        ("action", "iam:GetUser"),
        ("resource", "atelier:iam:user/admin"),
        ("context", ""),
        ("current_password", PASSWORD),
        ("new_password", "another long password"),
        ("confirm_password", "another long password"),
        ("expires_in_days", ""),
        ("filter[limit]", "10"),
        ("minutes", "60"),
        ("state", ""),
        ("search", ""),
        ("after", "0"),
        ("names[0]", "job-1"),
        ("kind", "image"),
        ("page", "1"),
        ("seq", "1"),
        ("task", "t1"),
        ("status", "Approved"),
        ("comment", "c"),
        ("expected_status", "PendingManualApproval"),
        ("training_job", "job-1"),
        ("required_approvals", "1"),
        ("url", "http://192.0.2.1:9/hook"),
        ("model", "fraud:1"),
        ("instance_count", "1"),
        ("gpus", "0"),
        ("content_type", "application/json"),
        ("body", "{}"),
        ("range_secs", "3600"),
        ("end_secs_ago", "0"),
        ("percent", "10"),
        ("budget_mb", "10"),
        ("frequency", "daily"),
        ("alarm", "a"),
        ("original", ""),
        ("muted", "true"),
        ("metric", "errors_5xx"),
        ("comparison", "ge"),
        ("threshold", "1"),
        ("periods", "1"),
        ("variant", "primary"),
        ("min_instances", "1"),
        ("max_instances", "2"),
        ("target", "10"),
        ("scale_out_cooldown_secs", "60"),
        ("scale_in_cooldown_secs", "60"),
        ("endpoint", "ep-1"),
        ("revision", "r1"),
        ("notebook", "n1"),
        ("source", "# title"),
        ("role", "reader"),
    ];
    // Server functions that take JSON (nested arguments), with a body each.
    let json_bodies: Vec<(&str, Value)> = vec![
        (
            <app::labeling::CreateLabelingJob as leptos::server_fn::ServerFn>::PATH,
            json!({"spec": {"name": "j2", "dataset": "photos", "task_type": "image_classification",
                            "categories": [{"name": "a"}, {"name": "b"}], "teams": ["team"]}}),
        ),
        (
            <app::labeling::ReviewLabelingItem as leptos::server_fn::ServerFn>::PATH,
            json!({"name": "Custom", "seq": 1, "answer": {"label": "a"}}),
        ),
        (
            <app::labeler::SubmitAnswer as leptos::server_fn::ServerFn>::PATH,
            json!({"name": "Custom", "task": "t1", "answer": {"label": "a"}, "duration_ms": 1}),
        ),
    ];
    let mut server_fns: Vec<&str> = leptos::server_fn::axum::server_fn_paths().map(|(p, _)| p).collect();
    server_fns.sort_unstable();
    assert!(server_fns.len() >= 25, "only {} server functions registered", server_fns.len());
    for path in server_fns {
        if is_public(path) {
            continue;
        }
        let anonymous = app.server_fn(path, form, Auth::None, &[]).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "anonymous {path}");
        if path == <app::training::CreateTrainingJob as leptos::server_fn::ServerFn>::PATH {
            // Multipart: checked with its own encoding below.
            continue;
        }
        if authenticated_only_server_fns().contains(&path) {
            continue;
        }
        let before = deny_events(&app, "mallory").await;
        let response = match json_bodies.iter().find(|(p, _)| *p == path) {
            Some((_, body)) => {
                let request = axum::http::Request::builder()
                    .method(Method::POST)
                    .uri(path)
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .header("cookie", &cookie)
                    .body(axum::body::Body::from(body.to_string()))
                    .expect("request");
                app.send(request).await
            }
            None => app.server_fn(path, form, Auth::Cookie(&cookie), &[]).await,
        };
        assert!(
            deny_events(&app, "mallory").await > before,
            "server function {path} did not ask authorization: {}",
            response.text()
        );
    }

    // The multipart create form: a file is refused before it is stored.
    let boundary = "XBOUNDARYX";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nj9\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"train_files\"; filename=\"d.csv\"\r\n\
         Content-Type: text/csv\r\n\r\na,b\n1,2\n\r\n--{boundary}--\r\n"
    );
    let before = deny_events(&app, "mallory").await;
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri(<app::training::CreateTrainingJob as leptos::server_fn::ServerFn>::PATH)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("accept", "application/json")
        .header("cookie", &cookie)
        .body(axum::body::Body::from(body))
        .expect("request");
    let response = app.send(request).await;
    assert!(deny_events(&app, "mallory").await > before, "create_training_job: {}", response.text());
    let (stored,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM artifacts").fetch_one(&app.state.db.pool).await.expect("count");
    assert_eq!(stored, 1, "a refused upload was stored");

    // Pages: every route of the app sends anonymous visitors to sign in.
    for route in leptos_axum::generate_route_list(app::App) {
        let path: String = route
            .path()
            .split('/')
            .map(|seg| if seg.starts_with(':') || seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let path = if path.is_empty() { "/".to_string() } else { path };
        let response = app.call(Method::GET, &path, Auth::None, None).await;
        if is_public(&path) {
            assert_eq!(response.status, StatusCode::OK, "{path}");
        } else {
            assert_eq!(response.status, StatusCode::SEE_OTHER, "{path}");
            assert!(response.header("location").is_some_and(|l| l.starts_with("/login?next=")), "{path}");
        }
    }
}

/// (policy, route, expected status) for a representative sample of the matrix.
#[tokio::test]
async fn builtin_policies_decide_real_requests_as_documented() {
    let app = TestApp::new().await;
    // (what, method, path, body, expected status for each policy below)
    type Case = (&'static str, Method, &'static str, Option<Value>, [u16; 5]);
    let cases: &[Case] = &[
        // AdministratorAccess, DataScientist, Labeler, Reviewer, ReadOnly
        ("list users", Method::GET, "/api/v1/users", None, [200, 200, 403, 403, 403]),
        ("list model groups", Method::GET, "/api/v1/model-groups", None, [200, 200, 403, 200, 200]),
        (
            "create model group",
            Method::POST,
            "/api/v1/model-groups",
            Some(json!({"name": "m"})),
            [201, 201, 403, 403, 403],
        ),
        ("create group", Method::POST, "/api/v1/groups", Some(json!({"name": "g"})), [201, 403, 403, 403, 403]),
        ("list policies", Method::GET, "/api/v1/policies", None, [200, 403, 403, 403, 403]),
        ("read audit log", Method::GET, "/api/v1/audit-events", None, [200, 403, 403, 403, 403]),
        ("catalogue", Method::GET, "/api/v1/iam/catalogue", None, [200, 200, 403, 403, 403]),
        ("own account", Method::GET, "/api/v1/me", None, [200, 200, 200, 200, 200]),
        ("own tokens", Method::GET, "/api/v1/tokens", None, [200, 200, 200, 200, 200]),
    ];
    let policies = ["AdministratorAccess", "DataScientist", "Labeler", "Reviewer", "ReadOnly"];
    for (i, policy) in policies.iter().enumerate() {
        let user = app.create_user_with(&format!("user{i}"), &[policy.to_string()]).await;
        let token = app.token_for(&user, None).await;
        for (what, method, path, body, expected) in cases {
            // Names must be fresh for each creating user.
            let body = body.clone().map(|mut b| {
                if let Some(name) = b.get("name").and_then(Value::as_str) {
                    b["name"] = json!(format!("{name}{i}"));
                }
                b
            });
            let response = app.call(method.clone(), path, Auth::Bearer(&token), body).await;
            assert_eq!(response.status.as_u16(), expected[i], "{policy}: {what}: {}", response.text());
        }
    }
}

#[tokio::test]
async fn policies_are_validated_versioned_rolled_back_and_deleted_only_when_unattached() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let read_models = json!({"Version": "2012-10-17", "Statement": [{"Sid": "Read", "Effect": "Allow", "Action": "models:List*", "Resource": "*"}]});
    let created = app
        .call(
            Method::POST,
            "/api/v1/policies",
            Auth::Bearer(&token),
            Some(json!({"name": "Models", "document": read_models})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.json()["default_version"], 1);

    // Bad documents: 400 naming the statement and the reason; the policy is unchanged.
    let bad_cases = [
        (
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "models:List*", "Resource": "*"}, {"Effect": "Allow", "Action": "models:Aprove", "Resource": "*"}]}),
            "Statement[1]: action \"models:Aprove\" is not in the catalogue",
        ),
        (json!({"Version": "2012-10-17", "Statement": [{"Efect": "Allow"}]}), "Statement[0]: unknown key \"Efect\""),
        (
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "atelier:mod*:x"}]}),
            "service part cannot hold wildcards",
        ),
        (
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"atelier:nope": "x"}}}]}),
            "unknown condition key",
        ),
        (json!("{\"Version\": \"2012-10-17\", \"Statement\": ["), "not valid JSON"),
        (json!("x".repeat(20_000)), "the limit is"),
    ];
    for (document, message) in bad_cases {
        let response = app
            .call(Method::PATCH, "/api/v1/policies/Models", Auth::Bearer(&token), Some(json!({"document": document})))
            .await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{}", response.text());
        assert_eq!(response.json()["error"]["code"], "malformed");
        let got = response.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(got.contains(message), "expected {message:?} in {got:?}");
    }
    let unchanged = app.call(Method::GET, "/api/v1/policies/Models", Auth::Bearer(&token), None).await.json();
    assert_eq!(unchanged["default_version"], 1);
    assert_eq!(unchanged["versions"].as_array().map(Vec::len), Some(1));

    // A second version becomes the default; rollback makes the first the default again.
    let v2 =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "models:*", "Resource": "*"}]});
    let updated =
        app.call(Method::PATCH, "/api/v1/policies/Models", Auth::Bearer(&token), Some(json!({"document": v2}))).await;
    assert_eq!(updated.json()["default_version"], 2);
    assert!(updated.json()["document"].as_str().unwrap_or_default().contains("models:*"));
    let rolled = app
        .call(Method::PUT, "/api/v1/policies/Models/default-version", Auth::Bearer(&token), Some(json!({"version": 1})))
        .await;
    assert_eq!(rolled.json()["default_version"], 1);
    assert!(rolled.json()["document"].as_str().unwrap_or_default().contains("models:List*"));
    assert_eq!(rolled.json()["versions"].as_array().map(Vec::len), Some(2));

    // Built-ins are read-only; attached policies cannot be deleted.
    let builtin = app
        .call(Method::PATCH, "/api/v1/policies/Labeler", Auth::Bearer(&token), Some(json!({"description": "x"})))
        .await;
    assert_eq!(builtin.status, StatusCode::CONFLICT);
    app.create_user("bob", false).await;
    let attach = app.call(Method::PUT, "/api/v1/users/bob/policies/Models", Auth::Bearer(&token), None).await;
    assert_eq!(attach.status, StatusCode::OK);
    assert_eq!(attach.json()["policies"], json!(["Models"]));
    let refused = app.call(Method::DELETE, "/api/v1/policies/Models", Auth::Bearer(&token), None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    app.call(Method::DELETE, "/api/v1/users/bob/policies/Models", Auth::Bearer(&token), None).await;
    let deleted = app.call(Method::DELETE, "/api/v1/policies/Models", Auth::Bearer(&token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(Method::GET, "/api/v1/policies/Models", Auth::Bearer(&token), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn changes_to_attachments_and_groups_take_effect_on_the_next_request() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let admin_token = app.token_for(&admin, None).await;
    let bob = app.create_user("bob", false).await;
    let bob_token = app.token_for(&bob, None).await;
    let list = |t: String| {
        let app = &app;
        async move { app.call(Method::GET, "/api/v1/model-groups", Auth::Bearer(&t), None).await.status }
    };
    assert_eq!(list(bob_token.clone()).await, StatusCode::FORBIDDEN);

    // Through a group.
    app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&admin_token), Some(json!({"name": "readers"}))).await;
    app.call(Method::PUT, "/api/v1/groups/readers/policies/ReadOnly", Auth::Bearer(&admin_token), None).await;
    assert_eq!(list(bob_token.clone()).await, StatusCode::FORBIDDEN);
    let joined = app.call(Method::PUT, "/api/v1/groups/readers/members/bob", Auth::Bearer(&admin_token), None).await;
    assert_eq!(joined.json()["members"], json!(["bob"]));
    assert_eq!(list(bob_token.clone()).await, StatusCode::OK);
    app.call(Method::DELETE, "/api/v1/groups/readers/members/bob", Auth::Bearer(&admin_token), None).await;
    assert_eq!(list(bob_token.clone()).await, StatusCode::FORBIDDEN);

    // Directly, then a Deny added to the same user wins.
    app.call(Method::PUT, "/api/v1/users/bob/policies/ReadOnly", Auth::Bearer(&admin_token), None).await;
    assert_eq!(list(bob_token.clone()).await, StatusCode::OK);
    let deny_models =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "models:*", "Resource": "*"}]});
    app.call(
        Method::POST,
        "/api/v1/policies",
        Auth::Bearer(&admin_token),
        Some(json!({"name": "NoModels", "document": deny_models})),
    )
    .await;
    app.call(Method::PUT, "/api/v1/users/bob/policies/NoModels", Auth::Bearer(&admin_token), None).await;
    assert_eq!(list(bob_token.clone()).await, StatusCode::FORBIDDEN);

    // Deleting a group removes its members' grants.
    app.call(Method::DELETE, "/api/v1/users/bob/policies/NoModels", Auth::Bearer(&admin_token), None).await;
    app.call(Method::DELETE, "/api/v1/users/bob/policies/ReadOnly", Auth::Bearer(&admin_token), None).await;
    app.call(Method::PUT, "/api/v1/groups/readers/members/bob", Auth::Bearer(&admin_token), None).await;
    assert_eq!(list(bob_token.clone()).await, StatusCode::OK);
    app.call(Method::DELETE, "/api/v1/groups/readers", Auth::Bearer(&admin_token), None).await;
    assert_eq!(list(bob_token).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_inline_policy_narrows_a_token() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let narrow =
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "models:List*", "Resource": "*"}]}"#;
    let token = app.token_for(&admin, Some(narrow)).await;
    assert_eq!(app.call(Method::GET, "/api/v1/model-groups", Auth::Bearer(&token), None).await.status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/api/v1/users", Auth::Bearer(&token), None).await.status, StatusCode::FORBIDDEN);
    // The token cannot do more than its user either.
    let bob = app.create_user("bob", false).await;
    let bob_token = app.token_for(&bob, Some(narrow)).await;
    assert_eq!(
        app.call(Method::GET, "/api/v1/model-groups", Auth::Bearer(&bob_token), None).await.status,
        StatusCode::FORBIDDEN
    );
    // An invalid inline policy is refused at creation.
    let full = app.token_for(&admin, None).await;
    let bad = app
        .call(
            Method::POST,
            "/api/v1/tokens",
            Auth::Bearer(&full),
            Some(json!({"name": "x", "policy": "{\"Version\": \"2012-10-17\"}"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("Statement"), "{}", bad.text());
}

#[tokio::test]
async fn the_simulator_explains_decisions_including_separation_of_duties() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    app.create_user_with("rita", &["Reviewer".into()]).await;
    let simulate = |context: Value| {
        let (app, token) = (&app, token.clone());
        async move {
            let body = json!({"username": "rita", "action": "models:UpdateModelApprovalStatus",
                "resource": "atelier:models:group/fraud/version/3", "context": context});
            app.call(Method::POST, "/api/v1/iam/simulate", Auth::Bearer(&token), Some(body)).await
        }
    };
    let other = simulate(json!({"atelier:ResourceCreator": "sam"})).await.json();
    assert_eq!(other["allowed"], true, "{other}");
    assert_eq!(other["decided_by"][0]["sid"], "Decide");
    let own = simulate(json!({"atelier:ResourceCreator": "rita"})).await.json();
    assert_eq!(own["allowed"], false);
    assert_eq!(own["outcome"], "ExplicitDeny");
    assert_eq!(own["decided_by"][0]["policy"], "Reviewer");
    assert_eq!(own["decided_by"][0]["sid"], "NotOwnVersions");
    assert!(own["explanation"].as_str().unwrap_or_default().contains("NotOwnVersions"));

    let none = app
        .call(
            Method::POST,
            "/api/v1/iam/simulate",
            Auth::Bearer(&token),
            Some(json!({"username": "rita", "action": "iam:CreateUser", "resource": "atelier:iam:user/*"})),
        )
        .await
        .json();
    assert_eq!(none["outcome"], "ImplicitDeny");
    assert_eq!(none["decided_by"], json!([]));

    let unknown = app
        .call(
            Method::POST,
            "/api/v1/iam/simulate",
            Auth::Bearer(&token),
            Some(json!({"username": "rita", "action": "models:Fly", "resource": "*"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.json()["error"]["field"], "action");
}

#[tokio::test]
async fn the_audit_log_records_changes_and_denials_and_exports_json_lines() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let labeler = app.create_user_with("lena", &["Labeler".into()]).await;
    let lena = app.token_for(&labeler, None).await;

    let created = app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&token), Some(json!({"name": "signs"}))).await;
    let request_id = created.header("x-request-id").expect("request id");
    let denied = app.call(Method::GET, "/api/v1/model-groups", Auth::Bearer(&lena), None).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    // Allowed reads are not recorded.
    app.call(Method::GET, "/api/v1/groups", Auth::Bearer(&token), None).await;
    // Refused credentials and anonymous calls are.
    let forged = app.call(Method::GET, "/api/v1/users", Auth::Bearer("atl_forged"), None).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    app.call(Method::GET, "/api/v1/users", Auth::None, None).await;

    let page = app.call(Method::GET, "/api/v1/audit-events?limit=10", Auth::Bearer(&token), None).await.json();
    let events = page["events"].as_array().cloned().unwrap_or_default();
    let change = events.iter().find(|e| e["action"] == "iam:CreateGroup").expect("change recorded");
    assert_eq!(change["principal"], "admin");
    assert_eq!(change["decision"], "Allow");
    assert_eq!(change["status"], 201);
    assert_eq!(change["resource"], "atelier:iam:group/signs");
    assert_eq!(change["request_id"], request_id.as_str());
    assert_eq!(change["summary"], "created group signs");
    let denial = events.iter().find(|e| e["principal"] == "lena").expect("denial recorded");
    assert_eq!(denial["action"], "models:ListModelGroups");
    assert_eq!(denial["decision"], "Deny");
    assert_eq!(denial["status"], 403);
    assert!(!events.iter().any(|e| e["action"] == "iam:ListGroups"), "allowed reads are not audited");
    let anonymous: Vec<&Value> = events.iter().filter(|e| e["principal"] == "anonymous").collect();
    assert_eq!(anonymous.len(), 2, "{anonymous:?}");
    assert!(anonymous
        .iter()
        .all(|e| e["status"] == 401 && e["resource"] == "/api/v1/users" && e["decision"] == "Deny"));
    assert!(anonymous.iter().any(|e| e["summary"].as_str().is_some_and(|s| s.starts_with("refused credentials"))));

    // A change that needed several permissions is one event.
    let created = app
        .call(
            Method::POST,
            "/api/v1/users",
            Auth::Bearer(&token),
            Some(json!({"username": "otto", "password": PASSWORD, "policies": ["ReadOnly"], "groups": ["signs"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.header("x-request-id").expect("request id");
    let same: Vec<Value> =
        app.call(Method::GET, "/api/v1/audit-events?principal=admin&limit=20", Auth::Bearer(&token), None).await.json()
            ["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["request_id"] == id.as_str())
            .collect();
    assert_eq!(same.len(), 1, "{same:?}");
    assert_eq!(same[0]["action"], "iam:CreateUser");
    assert_eq!(
        same[0]["summary"],
        "created user otto (policies: [\"ReadOnly\"], groups: [\"signs\"]); also allowed \
         iam:AttachPolicy on atelier:iam:policy/ReadOnly, iam:UpdateGroup on atelier:iam:group/signs"
    );

    // Attaching is recorded on the user or group that changed.
    app.call(Method::PUT, "/api/v1/users/otto/policies/DataScientist", Auth::Bearer(&token), None).await;
    app.call(Method::PUT, "/api/v1/groups/signs/policies/Labeler", Auth::Bearer(&token), None).await;
    let otto = app
        .call(Method::GET, "/api/v1/audit-events?resource=atelier:iam:user/otto", Auth::Bearer(&token), None)
        .await
        .json();
    let otto = otto["events"].as_array().cloned().unwrap_or_default();
    assert!(
        otto.iter().any(|e| e["action"] == "iam:UpdateUser"
            && e["summary"].as_str().is_some_and(|s| s.starts_with("attached DataScientist to user otto"))),
        "{otto:?}"
    );
    let signs = app
        .call(Method::GET, "/api/v1/audit-events?resource=atelier:iam:group/signs", Auth::Bearer(&token), None)
        .await
        .json();
    assert!(
        signs["events"].as_array().is_some_and(|l| l.iter().any(|e| e["action"] == "iam:UpdateGroup"
            && e["summary"].as_str().is_some_and(|s| s.starts_with("attached Labeler to group signs")))),
        "{signs}"
    );

    // Filters.
    let only = app
        .call(Method::GET, "/api/v1/audit-events?principal=lena&decision=Deny", Auth::Bearer(&token), None)
        .await
        .json();
    assert!(only["events"].as_array().is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["principal"] == "lena")));
    let iam = app.call(Method::GET, "/api/v1/audit-events?action=iam:*", Auth::Bearer(&token), None).await.json();
    assert!(iam["events"]
        .as_array()
        .is_some_and(|e| e.iter().all(|e| e["action"].as_str().unwrap_or("").starts_with("iam:"))));
    let bad = app.call(Method::GET, "/api/v1/audit-events?limit=0", Auth::Bearer(&token), None).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = app.call(Method::GET, "/api/v1/audit-events?colour=red", Auth::Bearer(&token), None).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Pagination walks every event exactly once.
    for i in 0..5 {
        app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&token), Some(json!({"name": format!("g{i}")}))).await;
    }
    let mut seen = Vec::new();
    let mut url = "/api/v1/audit-events?limit=2".to_string();
    loop {
        let page = app.call(Method::GET, &url, Auth::Bearer(&token), None).await.json();
        seen.extend(page["events"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["id"].clone()));
        match page["next"].as_str() {
            Some(next) => url = format!("/api/v1/audit-events?limit=2&before={next}"),
            None => break,
        }
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&app.state.db.pool)
        .await
        .expect("test setup");
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
    assert!(seen.len() as i64 >= total - 2, "pagination lost events: saw {} of {total}", seen.len());

    // Export: JSON Lines, one event per line.
    let export = app.call(Method::GET, "/api/v1/audit-events/export?principal=admin", Auth::Bearer(&token), None).await;
    assert_eq!(export.header("content-type").as_deref(), Some("application/x-ndjson"));
    let lines: Vec<Value> = export.text().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(lines.len() >= 6 && lines.iter().all(|e| e["principal"] == "admin"));

    // No route updates or deletes events.
    let doc = atelier_server::api::openapi();
    for (path, item) in &doc.paths.paths {
        if path.contains("audit") {
            assert!(
                item.put.is_none() && item.patch.is_none() && item.delete.is_none() && item.post.is_none(),
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn a_labeler_cannot_reach_the_model_registry_by_page_or_api() {
    let app = TestApp::new().await;
    app.create_user_with("lena", &["Labeler".into()]).await;
    let cookie = app.sign_in("lena", PASSWORD).await;
    let page = app.call(Method::GET, "/models", Auth::Cookie(&cookie), None).await;
    let html = page.text();
    assert!(html.contains("is not allowed to perform models:ListModelGroups"), "{html}");
    assert!(!html.contains("href=\"/models\""), "the navigation offers the registry to a labeler");
    let api = app.call(Method::GET, "/api/v1/model-groups", Auth::Cookie(&cookie), None).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    let denials: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE principal = 'lena' AND action = 'models:ListModelGroups' AND decision = 'Deny'",
    )
    .fetch_one(&app.state.db.pool)
    .await
    .expect("test setup");
    assert_eq!(denials, 2, "the page's and the API's denials are both audited");
}

#[tokio::test]
async fn delegated_administrators_cannot_escalate() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let root = app.token_for(&admin, None).await;
    app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&root), Some(json!({"name": "admins"}))).await;
    app.call(Method::PUT, "/api/v1/groups/admins/policies/AdministratorAccess", Auth::Bearer(&root), None).await;
    app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&root), Some(json!({"name": "team-a"}))).await;
    // A team lead may manage groups and create users and team policies, nothing more.
    let delegated = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["iam:UpdateGroup", "iam:CreateUser", "iam:GetUser"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["iam:CreatePolicy", "iam:AttachPolicy"], "Resource": "atelier:iam:policy/team-*"}]});
    let created = app
        .call(
            Method::POST,
            "/api/v1/policies",
            Auth::Bearer(&root),
            Some(json!({"name": "TeamLead", "document": delegated})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let lead = app.create_user_with("lead", &["TeamLead".into()]).await;
    let token = app.token_for(&lead, None).await;

    // Joining a group means getting its policies: refused for the admins group.
    let join = app.call(Method::PUT, "/api/v1/groups/admins/members/lead", Auth::Bearer(&token), None).await;
    assert_eq!(join.status, StatusCode::FORBIDDEN, "{}", join.text());
    assert!(join.text().contains("iam:AttachPolicy on atelier:iam:policy/AdministratorAccess"), "{}", join.text());
    let sneaky = app
        .call(
            Method::POST,
            "/api/v1/users",
            Auth::Bearer(&token),
            Some(json!({"username": "sock", "password": PASSWORD, "groups": ["admins"]})),
        )
        .await;
    assert_eq!(sneaky.status, StatusCode::FORBIDDEN);
    assert!(
        app.call(Method::GET, "/api/v1/users/sock", Auth::Bearer(&root), None).await.status == StatusCode::NOT_FOUND
    );
    // A group without powerful policies is fine.
    let ok = app.call(Method::PUT, "/api/v1/groups/team-a/members/lead", Auth::Bearer(&token), None).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());

    // Create* is checked against the new name.
    let doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]});
    let outside = app
        .call(
            Method::POST,
            "/api/v1/policies",
            Auth::Bearer(&token),
            Some(json!({"name": "Everything", "document": doc})),
        )
        .await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    let inside = app
        .call(Method::POST, "/api/v1/policies", Auth::Bearer(&token), Some(json!({"name": "team-x", "document": doc})))
        .await;
    assert_eq!(inside.status, StatusCode::CREATED, "{}", inside.text());
    // ...and attaching it to oneself still needs iam:UpdateUser on oneself.
    let attach = app.call(Method::PUT, "/api/v1/users/lead/policies/team-x", Auth::Bearer(&token), None).await;
    assert_eq!(attach.status, StatusCode::FORBIDDEN);

    // Refusals do not reveal whether a user exists.
    let bob = app.create_user("bob", false).await;
    let bob_token = app.token_for(&bob, None).await;
    for who in ["lead", "nobody-at-all"] {
        let r = app.call(Method::GET, &format!("/api/v1/users/{who}"), Auth::Bearer(&bob_token), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}");
    }

    // A narrowed token cannot mint an unrestricted one.
    let narrow = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*AccessToken*", "Resource": "*"}]}"#;
    let narrowed = app.token_for(&admin, Some(narrow)).await;
    let mint = app.call(Method::POST, "/api/v1/tokens", Auth::Bearer(&narrowed), Some(json!({"name": "escape"}))).await;
    assert_eq!(mint.status, StatusCode::FORBIDDEN, "{}", mint.text());
}

#[tokio::test]
async fn the_simulator_authorizes_the_user_it_simulates_and_accepts_any_condition_key() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let root = app.token_for(&admin, None).await;
    let not_admin = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:SimulatePolicy", "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:SimulatePolicy", "Resource": "atelier:iam:user/admin"}]});
    app.call(
        Method::POST,
        "/api/v1/policies",
        Auth::Bearer(&root),
        Some(json!({"name": "Sim", "document": not_admin})),
    )
    .await;
    let sim = app.create_user_with("sim", &["Sim".into()]).await;
    let token = app.token_for(&sim, None).await;
    for name in ["admin", "ADMIN", " Admin "] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/iam/simulate",
                Auth::Bearer(&token),
                Some(json!({"username": name, "action": "iam:GetUser", "resource": "*"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}");
    }
    // Keys a real request already has can be overridden.
    let r = app
        .call(Method::POST, "/api/v1/iam/simulate", Auth::Bearer(&root),
            Some(json!({"username": "sim", "action": "iam:GetUser", "resource": "atelier:iam:user/sim",
                "context": {"atelier:CurrentTime": "2030-01-01T00:00:00Z", "atelier:username": "someone", "atelier:ViaApiToken": "true"}})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["allowed"], true, "{}", r.text());
}

/// Agent routes take node tokens only: no session, no user token, no anonymous call.
#[tokio::test]
async fn agent_routes_refuse_everything_but_a_node_token() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let cookie = app.sign_in("admin", PASSWORD).await;
    let routes: &[(Method, &str)] = &[
        (Method::POST, "/agent/v1/register"),
        (Method::POST, "/agent/v1/heartbeat"),
        (Method::GET, "/agent/v1/work?wait=0"),
        (Method::POST, "/agent/v1/jobs/j/status"),
        (Method::POST, "/agent/v1/jobs/j/logs"),
        (Method::GET, "/agent/v1/jobs/j/inputs/a?attempt=1"),
        (Method::PUT, "/agent/v1/jobs/j/checkpoint?attempt=1"),
        (Method::PUT, "/agent/v1/jobs/j/outputs/model?attempt=1"),
    ];
    for (method, path) in routes {
        for auth in [Auth::None, Auth::Bearer(&token), Auth::Cookie(&cookie), Auth::Bearer("atn_forged")] {
            let r = app.call(method.clone(), path, auth, Some(json!({}))).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}: {}", r.text());
        }
    }
    let refused: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE summary LIKE 'refused node credentials%'")
            .fetch_one(&app.state.db.pool)
            .await
            .expect("count");
    assert!(refused >= 8, "refused node credentials are audited ({refused})");
}
