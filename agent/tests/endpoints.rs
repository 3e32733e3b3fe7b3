//! Endpoints end to end: a real server on a loopback port, real agents running real
//! model servers (the built-in one for a model trained here, and a bring-your-own
//! server in Python), invoked through the REST API a user would call.

#[path = "../../server/tests/common/mod.rs"]
mod common;
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{Auth, TestApp};
use serde_json::{json, Value};
use support::*;

async fn endpoint(app: &TestApp, token: &str, name: &str) -> Value {
    let r = app.call(Method::GET, &format!("/api/v1/endpoints/{name}"), Auth::Bearer(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

/// Polls the endpoint until `done` holds, or fails with its state and history.
async fn wait_endpoint(app: &TestApp, token: &str, name: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let e = endpoint(app, token, name).await;
        if done(&e) {
            return e;
        }
        if Instant::now() > deadline {
            let events =
                app.call(Method::GET, &format!("/api/v1/endpoints/{name}/events"), Auth::Bearer(token), None).await;
            panic!("endpoint {name} did not get there in {secs} s: {e:#}\nevents: {}", events.text());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn in_service(generation: i64) -> impl Fn(&Value) -> bool {
    move |e| e["status"] == "InService" && e["active_generation"] == generation
}

async fn invoke(app: &TestApp, token: &str, name: &str, content_type: &str, body: &str) -> common::TestResponse {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/endpoints/{name}/invocations"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_string()))
        .expect("request");
    app.send(request).await
}

async fn register(app: &TestApp, token: &str, group: &str, body: Value) -> i64 {
    let r = app
        .call(Method::POST, &format!("/api/v1/model-groups/{group}/versions"), Auth::Bearer(token), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["version"].as_i64().expect("version")
}

async fn approve(app: &TestApp, token: &str, group: &str, version: i64) {
    let path = format!("/api/v1/model-groups/{group}/versions/{version}/approval");
    let r = app.call(Method::POST, &path, Auth::Bearer(token), Some(json!({"status": "Approved"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

async fn create_group(app: &TestApp, token: &str, name: &str) {
    let r = app.call(Method::POST, "/api/v1/model-groups", Auth::Bearer(token), Some(json!({"name": name}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

/// A studio whose reconciler and metrics flusher run, with one agent per node name.
async fn serving_studio(nodes: &[&str]) -> (TestApp, String, Vec<Agent>) {
    let (app, url, token) = studio().await;
    atelier_server::endpoints::spawn_background(app.state.clone());
    let mut agents = Vec::new();
    for name in nodes {
        let node_token = add_node(&app, &token, name).await;
        agents.push(Agent::start(&url, &node_token, &temp_dir("agent"), &[]));
        wait_node(&app, &token, name, "Ready").await;
    }
    (app, token, agents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_model_is_deployed_invoked_split_by_weight_and_switched_without_a_failed_request() {
    let (app, token, _agents) = serving_studio(&["cpu-1"]).await;

    // A classifier of which side of x1 + x2 = 0 a point lies on.
    let mut csv = String::from("x1,x2,label\n");
    let mut seed = 11u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
    };
    // Enough rows that the baseline's range covers nearly all of the distribution.
    for _ in 0..2000 {
        let (x1, x2) = (next(), next());
        csv.push_str(&format!("{x1:.4},{x2:.4},{}\n", if x1 + x2 > 0.0 { "yes" } else { "no" }));
    }
    let data = upload(&app, &token, "train.csv", csv).await;
    let spec = json!({
        "algorithm": {"type": "builtin", "name": "tabular"},
        "hyperparameters": {"epochs": "20", "batch_size": "32", "learning_rate": "0.03"},
        "channels": [{"name": "train", "artifacts": [data]}],
        "resources": {"memory_mb": 512}
    });
    let r = submit(&app, &token, "side", spec).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let done = wait_job(&app, &token, "side", 180, terminal).await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}");

    create_group(&app, &token, "side").await;
    let v1 = register(&app, &token, "side", json!({"training_job": "side"})).await;
    let new = json!({
        "name": "side",
        "variants": [{"model_group": "side", "model_version": v1}],
        "data_capture": {"percent": 100},
    });

    // A version not yet approved cannot be deployed.
    let r = app.call(Method::POST, "/api/v1/endpoints", Auth::Bearer(&token), Some(new.clone())).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("PendingManualApproval") && r.text().contains("only Approved"), "{}", r.text());
    approve(&app, &token, "side", v1).await;
    let r = app.call(Method::POST, "/api/v1/endpoints", Auth::Bearer(&token), Some(new.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["status"], "Creating");
    let r = app.call(Method::POST, "/api/v1/endpoints", Auth::Bearer(&token), Some(new)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    let e = wait_endpoint(&app, &token, "side", 60, in_service(1)).await;
    assert_eq!(e["variants"][0]["healthy"], 1, "{e:#}");
    assert_eq!(e["instances"][0]["node"], "cpu-1", "{e:#}");

    // Predictions, from JSON and CSV.
    let r = invoke(
        &app,
        &token,
        "side",
        "application/json",
        r#"{"instances": [{"x1": 0.8, "x2": 0.7}, {"x1": -0.9, "x2": -0.6}]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-atelier-variant").as_deref(), Some("primary"));
    let labels: Vec<String> = r.json()["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| p["label"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(labels, ["yes", "no"], "{}", r.text());
    let r = invoke(&app, &token, "side", "text/csv", "x1,x2\n0.9,0.9\n").await;
    assert_eq!(r.json()["predictions"][0]["label"], "yes", "{}", r.text());
    // The model's own complaint reaches the caller as a 400.
    let r = invoke(&app, &token, "side", "application/json", "{not json").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("not valid JSON"), "{}", r.text());
    // Unknown endpoints and callers without the permission are refused.
    let r = invoke(&app, &token, "nope", "application/json", "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let labeler = app.create_user_with("lena", &["Labeler".to_string()]).await;
    let lena = app.token_for(&labeler, None).await;
    let r = invoke(&app, &lena, "side", "application/json", "{}").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // Nor can anyone reach the model server around Atelier: it listens on the node's
    // network but wants the instance's secret, which only the server sends.
    let (url, secret): (String, String) =
        sqlx::query_as("SELECT url, secret FROM endpoint_instances WHERE state = 'InService'")
            .fetch_one(&app.state.db.pool)
            .await
            .expect("the instance");
    assert!(secret.len() >= 40, "{secret}");
    let direct = |auth: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(format!("{url}/invocations"))
            .header("content-type", "text/csv")
            .body("x1,x2\n0.9,0.9\n");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    assert_eq!(direct(None).await.expect("direct call").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(direct(Some("Bearer guess".into())).await.expect("direct call").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(direct(Some(format!("Bearer {secret}"))).await.expect("direct call").status(), StatusCode::OK);

    // The same model through the Open Inference Protocol v2.
    let r = app.call(Method::GET, "/v2/health/ready", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let infer = json!({"id": "q1", "inputs": [
        {"name": "x1", "shape": [2], "datatype": "FP64", "data": [0.8, -0.9]},
        {"name": "x2", "shape": [2], "datatype": "FP64", "data": [0.7, -0.6]},
    ]});
    let r = app.call(Method::POST, "/v2/models/side/infer", Auth::Bearer(&token), Some(infer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v2 = r.json();
    assert_eq!((v2["model_name"].as_str(), v2["id"].as_str()), (Some("side"), Some("q1")), "{v2}");
    let label = v2["outputs"].as_array().and_then(|o| o.iter().find(|o| o["name"] == "label")).cloned();
    assert_eq!(label.map(|l| l["data"].clone()), Some(json!(["yes", "no"])), "{v2}");
    let bad = json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]});
    let r = app.call(Method::POST, "/v2/models/side/infer", Auth::Bearer(&token), Some(bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("not a column")), "{}", r.text());
    let r = app.call(Method::GET, "/v2/models/side/ready", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = app.call(Method::GET, "/v2/models/side", Auth::Bearer(&lena), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());

    // Metrics count what happened, with latency percentiles.
    app.state.invoker.flush(&app.state).await;
    let r = app.call(Method::GET, "/api/v1/endpoints/side/metrics", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let points = r.json()["points"].as_array().cloned().unwrap_or_default();
    let total: i64 = points.iter().filter_map(|p| p["invocations"].as_i64()).sum();
    let bad: i64 = points.iter().filter_map(|p| p["errors_4xx"].as_i64()).sum();
    assert_eq!((total, bad), (4, 1), "{}", r.text());
    assert!(points.iter().any(|p| p["model_p99_ms"].as_f64().is_some_and(|ms| ms > 0.0)), "{}", r.text());

    // Every invocation was captured, in SageMaker's record format.
    app.state.invoker.flush(&app.state).await;
    let r = app.call(Method::GET, "/api/v1/endpoints/side/captures", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let files = r.json();
    assert_eq!(
        files.as_array().map(|f| f.iter().filter_map(|f| f["records"].as_i64()).sum::<i64>()),
        Some(4),
        "{files}"
    );
    let id = files[0]["artifact_id"].as_str().expect("artifact id");
    let r = app
        .call(Method::GET, &format!("/api/v1/endpoints/side/captures/{id}/content"), Auth::Bearer(&token), None)
        .await;
    let first: Value = serde_json::from_str(r.text().lines().next().unwrap_or_default()).expect("a JSON line");
    assert_eq!(first["captureData"]["endpointInput"]["encoding"], "JSON", "{first}");
    assert!(
        first["captureData"]["endpointOutput"]["data"].as_str().is_some_and(|d| d.contains("predictions")),
        "{first}"
    );
    // Another user's token cannot read them through the artifacts API.
    let r = app.call(Method::GET, &format!("/api/v1/artifacts/{id}/content"), Auth::Bearer(&lena), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());

    // The model monitor profiles the training data (without the label) ...
    let r = app
        .call(Method::PUT, "/api/v1/endpoints/side/monitor", Auth::Bearer(&token), Some(json!({"frequency": "manual"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let monitor = r.json();
    assert_eq!(monitor["baseline"]["rows"], 2000, "{monitor}");
    let names: Vec<&str> = monitor["baseline"]["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["x1", "x2"]);
    // An alarm on drift that opens a retraining job, and a studio webhook that hears it.
    let alarm =
        json!({"name": "drift", "metric": "drifted_features", "comparison": "ge", "threshold": 1, "retrain": true});
    let r = app.call(Method::POST, "/api/v1/endpoints/side/alarms", Auth::Bearer(&token), Some(alarm)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["state"], "INSUFFICIENT_DATA");
    let bad = json!({"name": "x", "metric": "temperature", "comparison": "ge", "threshold": 1});
    let r = app.call(Method::POST, "/api/v1/endpoints/side/alarms", Auth::Bearer(&token), Some(bad)).await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("metric")),
        "{}",
        r.text()
    );
    let hook = json!({"url": "http://127.0.0.1:9/hook"});
    let r = app.call(Method::POST, "/api/v1/model-webhooks", Auth::Bearer(&token), Some(hook)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let hook_id = r.json()["webhook"]["id"].as_str().expect("webhook id").to_string();
    // ... finds no drift in inputs like the training data ...
    let batch = |shift: f64, seed: u64| {
        let mut seed = seed;
        let rows: Vec<Value> = (0..1000)
            .map(|_| {
                let mut next = || {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
                };
                json!({"x1": next() + shift, "x2": next()})
            })
            .collect();
        json!({"instances": rows}).to_string()
    };
    let r = invoke(&app, &token, "side", "application/json", &batch(0.0, 99)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    app.state.invoker.flush(&app.state).await;
    let r = app.call(Method::POST, "/api/v1/endpoints/side/monitor/runs", Auth::Bearer(&token), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let run = r.json();
    assert_eq!(
        (run["status"].as_str(), run["rows"].as_i64(), run["drifted"].as_i64()),
        (Some("Completed"), Some(1005), Some(0)),
        "{run:#}"
    );
    assert_eq!(run["violations"], 0, "{run:#}");
    // ... and drift in x1 once its inputs are shifted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let shifted_from = atelier_core::now();
    let r = invoke(&app, &token, "side", "application/json", &batch(1.5, 7)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    app.state.invoker.flush(&app.state).await;
    let body = json!({"from": shifted_from});
    let run =
        app.call(Method::POST, "/api/v1/endpoints/side/monitor/runs", Auth::Bearer(&token), Some(body)).await.json();
    assert_eq!((run["rows"].as_i64(), run["drifted"].as_i64()), (Some(1000), Some(1)), "{run:#}");
    let report = &run["report"];
    assert_eq!(report["features"][0]["name"], "x1");
    assert_eq!(report["features"][0]["drifted"], true, "{report:#}");
    assert_eq!(report["features"][1]["drifted"], false, "{report:#}");
    assert!(
        report["violations"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["kind"] == "out_of_range" && v["feature"] == "x1")),
        "{report:#}"
    );
    let r = app.call(Method::GET, "/api/v1/endpoints/side/monitor/runs", Auth::Bearer(&token), None).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
    // The drift put the alarm off (after an OK on the first run), told the webhook, and
    // opened a retraining job from the served version's training job.
    let alarms = app.call(Method::GET, "/api/v1/endpoints/side/alarms", Auth::Bearer(&token), None).await.json();
    assert_eq!(alarms[0]["state"], "ALARM", "{alarms:#}");
    let changes: Vec<&str> =
        alarms[0]["history"].as_array().expect("history").iter().filter_map(|h| h["to"].as_str()).collect();
    assert_eq!(changes, ["ALARM", "OK"], "{alarms:#}");
    let path = format!("/api/v1/model-webhooks/{hook_id}/deliveries");
    let deliveries = app.call(Method::GET, &path, Auth::Bearer(&token), None).await.text();
    assert!(deliveries.contains("endpoint.alarm_changed"), "{deliveries}");
    let jobs = app.call(Method::GET, "/api/v1/training-jobs", Auth::Bearer(&token), None).await.text();
    assert!(jobs.contains("side-retrain-"), "{jobs}");
    // Audited for the alarm's creator, naming the alarm.
    let path = "/api/v1/audit-events?action=training:CreateTrainingJob";
    let audit = app.call(Method::GET, path, Auth::Bearer(&token), None).await.json();
    let by_alarm = audit["events"].as_array().into_iter().flatten().find(|e| {
        e["summary"].as_str().is_some_and(|s| s.contains("by alarm drift of endpoint side"))
            && e["resource"].as_str().is_some_and(|r| r.contains("side-retrain-"))
    });
    assert!(by_alarm.is_some_and(|e| e["principal"] == "admin" && e["decision"] == "Allow"), "{audit:#}");

    // Capture stops at its budget; serving does not.
    let r = app
        .call(
            Method::PUT,
            "/api/v1/endpoints/side/data-capture",
            Auth::Bearer(&token),
            Some(json!({"percent": 100, "budget_mb": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Over the 1 MB budget with its answer, and under the 6 MB limit of each.
    let big = format!("x1,x2\n{}", "0.25,0.5\n".repeat(60_000));
    let r = invoke(&app, &token, "side", "text/csv", &big).await;
    assert_eq!(r.status, StatusCode::OK, "{}", &r.text()[..200.min(r.text().len())]);
    app.state.invoker.flush(&app.state).await;
    let e = endpoint(&app, &token, "side").await;
    assert!(e["data_capture"]["paused"].as_str().is_some_and(|p| p.contains("budget")), "{:#}", e["data_capture"]);
    let records = e["data_capture"]["records"].as_i64();
    let r = invoke(&app, &token, "side", "text/csv", "x1,x2\n0.1,0.1\n").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.state.invoker.flush(&app.state).await;
    assert_eq!(
        endpoint(&app, &token, "side").await["data_capture"]["records"].as_i64(),
        records,
        "nothing more is captured"
    );

    // A served version cannot be deleted.
    let r =
        app.call(Method::DELETE, &format!("/api/v1/model-groups/side/versions/{v1}"), Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("endpoint side"), "{}", r.text());

    // Switch to two variants (80/20) under continuous load: no request may fail.
    let v2 = register(&app, &token, "side", json!({"training_job": "side"})).await;
    approve(&app, &token, "side", v2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (app_router, token) = (app.router.clone(), token.clone());
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            use tower::ServiceExt;
            while !stop.load(Ordering::Relaxed) {
                let request = Request::builder()
                    .method(Method::POST)
                    .uri("/endpoints/side/invocations")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, "text/csv")
                    .body(Body::from("x1,x2\n0.5,0.5\n"))
                    .expect("request");
                let status =
                    app_router.clone().oneshot(request).await.map(|r| r.status()).unwrap_or(StatusCode::IM_A_TEAPOT);
                sent.fetch_add(1, Ordering::Relaxed);
                if status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed during the switch: {status}");
                }
            }
        })
    };
    let config = json!({"variants": [
        // No CPU reserved: this 2-core machine holds the old instance and both new ones.
        {"name": "a", "model_group": "side", "model_version": v1, "weight": 80, "cpus": 0},
        {"name": "b", "model_group": "side", "model_version": v2, "weight": 20, "cpus": 0},
    ]});
    let r = app.call(Method::PUT, "/api/v1/endpoints/side", Auth::Bearer(&token), Some(config)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "Updating");
    wait_endpoint(&app, &token, "side", 60, in_service(2)).await;
    // The old instance drains after traffic moved; keep the load on past that.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 50, "only {sent} requests were sent during the switch");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during the switch");
    let e = endpoint(&app, &token, "side").await;
    let live: Vec<&Value> =
        e["instances"].as_array().expect("instances").iter().filter(|i| i["state"] == "InService").collect();
    assert_eq!(live.len(), 2, "the first configuration's instance was stopped: {e:#}");

    // Weighted routing: about 20% to b over 1,000 requests.
    let mut to_b = 0;
    for _ in 0..1000 {
        let r = invoke(&app, &token, "side", "text/csv", "x1,x2\n0.1,0.2\n").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        if r.header("x-atelier-variant").as_deref() == Some("b") {
            to_b += 1;
        }
    }
    assert!((150..=250).contains(&to_b), "{to_b} of 1000 went to the 20% variant");
    // A variant can be asked for by name; an unknown one is refused naming the known.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/endpoints/side/invocations")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/csv")
        .header("x-atelier-target-variant", "c")
        .body(Body::from("x1,x2\n0.1,0.2\n"))
        .expect("request");
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("its variants: a, b"), "{}", r.text());

    let r = app.call(Method::DELETE, "/api/v1/endpoints/side", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = invoke(&app, &token, "side", "text/csv", "x1,x2\n0.1,0.2\n").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
}

/// A model server in plain Python: `/ping`, and `/invocations` that sums numbers.
const BYO_SERVER: &str = r#"
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/ping":
            self.reply(200, {"status": "ok"})
        else:
            self.reply(404, {"error": "not found"})
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            request = json.loads(raw)
            numbers = request["numbers"]
        except Exception as e:
            return self.reply(400, {"error": f"send {{\"numbers\": [...]}}: {e}"})
        answer = {"sum": sum(numbers), "weights": open("weights.txt").read().strip()}
        if "pad" in request:
            answer["pad"] = "x" * int(request["pad"])
        self.reply(200, answer)
    def log_message(self, *args):
        pass

ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append_data(&mut h, name, content.as_bytes()).expect("append");
    }
    builder.into_inner().and_then(|e| e.finish()).expect("tarball")
}

/// Kills model servers that outlived a killed agent (a real node would lose them with
/// the machine).
fn kill_orphans(agent: &Agent) {
    let Ok(entries) = std::fs::read_dir(agent.work_dir.join("instances")) else { return };
    for entry in entries.flatten() {
        let pid = std::fs::read_to_string(entry.path().join("pid")).ok().and_then(|p| p.trim().parse::<i32>().ok());
        // Each model server leads its own process group. (Never a pid of 1 or less:
        // `killpg` of those would reach far more than the test's processes.)
        if let Some(pid) = pid.filter(|p| *p > 1) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_model_server_is_deployed_rolled_back_and_moved_off_a_lost_node() {
    let (app, token, mut agents) = serving_studio(&["n1", "n2"]).await;
    create_group(&app, &token, "adder").await;
    let archive =
        upload(&app, &token, "adder.tar.gz", tarball(&[("serve.py", BYO_SERVER), ("weights.txt", "v1")])).await;
    let inference = json!({"serving_command": "python3 serve.py"});
    let v1 = register(&app, &token, "adder", json!({"artifact": archive, "inference": inference})).await;
    approve(&app, &token, "adder", v1).await;
    let new = json!({"name": "adder", "variants": [{"model_group": "adder", "model_version": v1}]});
    let r = app.call(Method::POST, "/api/v1/endpoints", Auth::Bearer(&token), Some(new)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let e = wait_endpoint(&app, &token, "adder", 60, in_service(1)).await;

    let r = invoke(&app, &token, "adder", "application/json", r#"{"numbers": [1, 2, 3.5]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"sum": 6.5, "weights": "v1"}));
    let r = invoke(&app, &token, "adder", "application/json", r#"{"words": []}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("numbers"), "{}", r.text());
    // An answer over the payload limit is not passed on, nor held whole in memory.
    let r = invoke(&app, &token, "adder", "application/json", r#"{"numbers": [1], "pad": 7000000}"#).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert!(r.text().contains("larger than the limit"), "{}", r.text());
    let r = invoke(&app, &token, "adder", "application/json", r#"{"numbers": [1], "pad": 10}"#).await;
    assert_eq!(r.json()["pad"], "xxxxxxxxxx", "{}", r.text());

    // A version whose server cannot start: the update is rolled back and v1 serves on.
    let broken = upload(&app, &token, "broken.tar.gz", tarball(&[("weights.txt", "v2")])).await;
    let command = json!({"serving_command": "python3 -c 'import sys; sys.exit(\"no model server here\")'"});
    let v2 = register(&app, &token, "adder", json!({"artifact": broken, "inference": command})).await;
    approve(&app, &token, "adder", v2).await;
    let config = json!({"variants": [{"model_group": "adder", "model_version": v2}]});
    let r = app.call(Method::PUT, "/api/v1/endpoints/adder", Auth::Bearer(&token), Some(config)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let e2 = wait_endpoint(&app, &token, "adder", 60, |e| {
        e["status"] == "InService" && e["reason"].as_str().is_some_and(|r| r.contains("rolled back"))
    })
    .await;
    assert!(e2["reason"].as_str().is_some_and(|r| r.contains("no model server here")), "{e2:#}");
    assert_eq!(e2["active_generation"], 1);
    let r = invoke(&app, &token, "adder", "application/json", r#"{"numbers": [2]}"#).await;
    assert_eq!(r.json()["weights"], "v1", "{}", r.text());

    // The node serving it is lost: the instance starts on the other node.
    let first = e["instances"][0]["node"].as_str().expect("node").to_string();
    let (lost, other) = if first == "n1" { (0, "n2") } else { (1, "n1") };
    agents[lost].kill();
    kill_orphans(&agents[lost]);
    let moved = wait_endpoint(&app, &token, "adder", 60, |e| {
        e["instances"].as_array().is_some_and(|l| l.iter().any(|i| i["state"] == "InService" && i["node"] == other))
    })
    .await;
    let r = invoke(&app, &token, "adder", "application/json", r#"{"numbers": [4, 5]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{} {moved:#}", r.text());
    assert_eq!(r.json()["sum"], 9);
    let events = app.call(Method::GET, "/api/v1/endpoints/adder/events", Auth::Bearer(&token), None).await.text();
    assert!(events.contains("stopped answering") || events.contains("failed"), "{events}");

    // A first deployment that cannot start ends Failed with the reason.
    let new = json!({"name": "broken", "variants": [{"model_group": "adder", "model_version": v2}]});
    let r = app.call(Method::POST, "/api/v1/endpoints", Auth::Bearer(&token), Some(new)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let failed = wait_endpoint(&app, &token, "broken", 60, |e| e["status"] == "Failed").await;
    assert!(failed["reason"].as_str().is_some_and(|r| r.contains("no model server here")), "{failed:#}");
    let r = invoke(&app, &token, "broken", "application/json", "{}").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());

    // A deployment rule: each newly approved version goes to the endpoint, and
    // rejecting the one it serves goes back to the latest earlier Approved version.
    let rule = json!({"endpoint": "adder"});
    let r = app.call(Method::PUT, "/api/v1/model-groups/adder/deployment-rule", Auth::Bearer(&token), Some(rule)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let reject = |comment: &str| json!({"status": "Rejected", "comment": comment});
    let path = format!("/api/v1/model-groups/adder/versions/{v2}/approval");
    let r = app.call(Method::POST, &path, Auth::Bearer(&token), Some(reject("cannot start"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let better =
        upload(&app, &token, "adder3.tar.gz", tarball(&[("serve.py", BYO_SERVER), ("weights.txt", "v3")])).await;
    let v3 = register(&app, &token, "adder", json!({"artifact": better, "inference": inference})).await;
    approve(&app, &token, "adder", v3).await;
    let generation = |e: &Value| e["active_generation"].as_i64().unwrap_or(0);
    let before = generation(&endpoint(&app, &token, "adder").await);
    let e = wait_endpoint(&app, &token, "adder", 60, |e| generation(e) > before && e["status"] == "InService").await;
    assert_eq!(e["variants"][0]["model_version"], v3, "{e:#}");
    let r = invoke(&app, &token, "adder", "application/json", r#"{"numbers": [1]}"#).await;
    assert_eq!(r.json()["weights"], "v3", "{}", r.text());
    let path = format!("/api/v1/model-groups/adder/versions/{v3}/approval");
    let r = app.call(Method::POST, &path, Auth::Bearer(&token), Some(reject("wrong weights"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let before = generation(&e);
    let e = wait_endpoint(&app, &token, "adder", 60, |e| generation(e) > before && e["status"] == "InService").await;
    assert_eq!(e["variants"][0]["model_version"], v1, "{e:#}");
    let events = app.call(Method::GET, "/api/v1/endpoints/adder/events", Auth::Bearer(&token), None).await.text();
    assert!(events.contains("was rejected; going back to v1"), "{events}");
    // Both moves are audited as the rule author's, naming the rule.
    let path = "/api/v1/audit-events?action=endpoints:UpdateEndpoint";
    let audit = app.call(Method::GET, path, Auth::Bearer(&token), None).await.json();
    let by_rule: Vec<&str> = audit["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["resource"] == "atelier:endpoints:endpoint/adder" && e["principal"] == "admin")
        .filter_map(|e| e["summary"].as_str())
        .filter(|s| s.starts_with("by the deployment rule of model group adder"))
        .collect();
    assert_eq!(by_rule.len(), 2, "{audit:#}");

    for agent in &agents {
        kill_orphans(agent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoint_configurations_are_refused_naming_the_field() {
    let (app, url, token) = studio().await;
    let _ = url;
    create_group(&app, &token, "g").await;
    let archive = upload(&app, &token, "m.tar.gz", tarball(&[("weights.txt", "x")])).await;
    let v = register(&app, &token, "g", json!({"artifact": archive, "inference": {"serving_command": "true"}})).await;
    approve(&app, &token, "g", v).await;
    let bare = register(&app, &token, "g", json!({"artifact": archive})).await;
    approve(&app, &token, "g", bare).await;
    let cases = [
        (json!({"name": "-bad", "variants": [{"model_group": "g", "model_version": v}]}), "name"),
        (json!({"name": "e", "variants": []}), "variants"),
        (json!({"name": "e", "variants": [{"model_group": "g", "model_version": 99}]}), "variants.model_version"),
        (
            json!({"name": "e", "variants": [{"model_group": "g", "model_version": v, "instance_count": 0}]}),
            "variants.instance_count",
        ),
        (json!({"name": "e", "variants": [{"model_group": "g", "model_version": v, "weight": -1}]}), "variants.weight"),
        (json!({"name": "e", "variants": [{"model_group": "g", "model_version": v, "gpus": 99}]}), "variants.gpus"),
        (json!({"name": "e", "variants": [{"model_group": "g", "model_version": bare}]}), "variants.model_version"),
        (
            json!({"name": "e", "variants": [
                {"name": "x", "model_group": "g", "model_version": v},
                {"name": "x", "model_group": "g", "model_version": v}]}),
            "variants.name",
        ),
    ];
    for (body, field) in cases {
        let r = app.call(Method::POST, "/api/v1/endpoints", Auth::Bearer(&token), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{body}: {}", r.text());
    }
    let r = app.call(Method::GET, "/api/v1/endpoints", Auth::Bearer(&token), None).await;
    assert_eq!(r.json(), json!([]), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_scales_out_under_load_and_back_in_and_prometheus_sees_it() {
    let (app, token, agents) = serving_studio(&["n1"]).await;
    create_group(&app, &token, "scaled").await;
    let archive =
        upload(&app, &token, "scaled.tar.gz", tarball(&[("serve.py", BYO_SERVER), ("weights.txt", "v1")])).await;
    let inference = json!({"serving_command": "python3 serve.py"});
    let v = register(&app, &token, "scaled", json!({"artifact": archive, "inference": inference})).await;
    approve(&app, &token, "scaled", v).await;
    // No CPU reserved, so three instances fit on a small test machine.
    let variant = json!({"model_group": "scaled", "model_version": v, "cpus": 0, "memory_mb": 64});
    let r = app
        .call(
            Method::POST,
            "/api/v1/endpoints",
            Auth::Bearer(&token),
            Some(json!({"name": "scaler", "variants": [variant]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    wait_endpoint(&app, &token, "scaler", 60, in_service(1)).await;

    let policy_path = "/api/v1/endpoints/scaler/variants/primary/autoscaling";
    let policy = |max: i64, target: f64, out_cooldown: i64| {
        json!({"min_instances": 1, "max_instances": max, "target_invocations_per_instance": target,
               "scale_out_cooldown_secs": out_cooldown, "scale_in_cooldown_secs": 0})
    };
    // Bad policies name the field; an unknown variant is named with the known ones.
    let r = app.call(Method::PUT, policy_path, Auth::Bearer(&token), Some(policy(0, 10.0, 0))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "max_instances");
    let r = app
        .call(
            Method::PUT,
            "/api/v1/endpoints/scaler/variants/nope/autoscaling",
            Auth::Bearer(&token),
            Some(policy(2, 10.0, 0)),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("it has: primary"), "{}", r.text());

    // 10 invocations per instance and minute, at most 2, no further scale-out for an hour.
    let r = app.call(Method::PUT, policy_path, Auth::Bearer(&token), Some(policy(2, 10.0, 3600))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for i in 0..60 {
        let r = invoke(&app, &token, "scaler", "application/json", &format!(r#"{{"numbers": [{i}]}}"#)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let healthy = |n: i64| move |e: &Value| e["variants"][0]["instance_count"] == n && e["variants"][0]["healthy"] == n;
    let e = wait_endpoint(&app, &token, "scaler", 60, healthy(2)).await;
    assert_eq!(e["variants"][0]["autoscaling"]["max_instances"], 2, "{e:#}");

    // A higher maximum does not scale out again within the cooldown ...
    let r = app.call(Method::PUT, policy_path, Auth::Bearer(&token), Some(policy(3, 10.0, 3600))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(endpoint(&app, &token, "scaler").await["variants"][0]["instance_count"], 2);
    // ... and does once the cooldown is shorter.
    let r = app.call(Method::PUT, policy_path, Auth::Bearer(&token), Some(policy(3, 10.0, 0))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    wait_endpoint(&app, &token, "scaler", 60, healthy(3)).await;
    let r = invoke(&app, &token, "scaler", "application/json", r#"{"numbers": [1, 1]}"#).await;
    assert_eq!(r.json()["sum"], 2, "{}", r.text());

    // Prometheus sees the invocations, the instance counts and the node.
    let r = app.call(Method::GET, "/metrics", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    assert!(text.contains("atelier_endpoint_invocations_total{endpoint=\"scaler\",variant=\"primary\"} 61"), "{text}");
    assert!(text.contains("atelier_endpoint_instances{endpoint=\"scaler\",variant=\"primary\",state=\"desired\"} 3"));
    assert!(text.contains("atelier_endpoint_model_latency_seconds_count{endpoint=\"scaler\",variant=\"primary\"} 61"));
    assert!(text.contains("atelier_node_ready{node=\"n1\"} 1"), "{text}");
    assert!(text.contains("atelier_node_memory_bytes{node=\"n1\"}"), "{text}");

    // A target the traffic no longer reaches scales in, keeping a working instance.
    let r = app.call(Method::PUT, policy_path, Auth::Bearer(&token), Some(policy(3, 1000.0, 0))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let e = wait_endpoint(&app, &token, "scaler", 60, healthy(1)).await;
    let live = e["instances"].as_array().map_or(0, |l| l.iter().filter(|i| i["state"] == "InService").count());
    assert_eq!(live, 1, "{e:#}");
    let r = invoke(&app, &token, "scaler", "application/json", r#"{"numbers": [5]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let events = app.call(Method::GET, "/api/v1/endpoints/scaler/events", Auth::Bearer(&token), None).await.text();
    assert!(events.contains("scaled variant primary out from 1 to 2"), "{events}");
    assert!(events.contains("scaled variant primary out from 2 to 3"), "{events}");
    assert!(events.contains("scaled variant primary in from 3 to 1"), "{events}");

    // Off: the count stays.
    let r = app.call(Method::DELETE, policy_path, Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(endpoint(&app, &token, "scaler").await["variants"][0]["autoscaling"], Value::Null);
    let r = app.call(Method::DELETE, policy_path, Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    for agent in &agents {
        kill_orphans(agent);
    }
}

/// A bring-your-own model server that answers each invocation with what it could reach
/// of its node: the agent's files, the agent's environment (its node token), the system.
const PRYING_SERVER: &str = r#"
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def attempt(fn):
    try:
        return fn()
    except Exception as e:
        return f"BLOCKED ({type(e).__name__})"

def write_usr():
    with open("/usr/atelier-escape-test", "w") as f:
        f.write("x")
    os.remove("/usr/atelier-escape-test")
    return "WROTE"

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self.reply(200, {"status": "ok"})
    def do_POST(self):
        ask = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.reply(200, {
            "agent_state": attempt(lambda: open(ask["agent_state"]).read()),
            "agent_environ": attempt(lambda: "READ" if b"ATELIER_NODE_TOKEN" in open(f"/proc/{ask['agent_pid']}/environ", "rb").read() else "NO TOKEN"),
            "write_usr": attempt(write_usr),
            "token_in_env": "ATELIER_NODE_TOKEN" in os.environ,
            "uid": os.getuid(),
        })
    def log_message(self, *args):
        pass

ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_server_cannot_reach_the_agent_or_the_system() {
    let (app, token, agents) = serving_studio(&["n1"]).await;
    let state = agents[0].work_dir.join("agent-state.json");
    std::fs::write(&state, "AGENT-STATE-CONTENT").expect("plant the agent's state");
    create_group(&app, &token, "prying").await;
    let archive = upload(&app, &token, "prying.tar.gz", tarball(&[("serve.py", PRYING_SERVER)])).await;
    let inference = json!({"serving_command": "python3 serve.py"});
    let v1 = register(&app, &token, "prying", json!({"artifact": archive, "inference": inference})).await;
    approve(&app, &token, "prying", v1).await;
    let new = json!({"name": "prying", "variants": [{"model_group": "prying", "model_version": v1}]});
    let r = app.call(Method::POST, "/api/v1/endpoints", Auth::Bearer(&token), Some(new)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    wait_endpoint(&app, &token, "prying", 60, in_service(1)).await;

    let ask = json!({"agent_state": state.display().to_string(), "agent_pid": agents[0].child.id()});
    let r = invoke(&app, &token, "prying", "application/json", &ask.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    for attempt in ["agent_state", "agent_environ", "write_usr"] {
        assert!(seen[attempt].as_str().is_some_and(|s| s.starts_with("BLOCKED")), "{attempt} got through: {seen}");
    }
    assert_eq!(seen["token_in_env"], false, "{seen}");
    let agent_uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(0);
    if agent_uid == 0 {
        assert!(
            seen["uid"].as_u64().is_some_and(|u| u >= u64::from(atelier_agent::sandbox::DEFAULT_UID_BASE)),
            "{seen}"
        );
    }
}
