//! Training jobs, notebook kernels and model server instances share nodes. Placed at
//! the same moment on a node with one GPU, through the routes that place each (an
//! agent's work poll, a user's kernel start, the endpoint reconciler), at most one of
//! them gets the GPU, and nothing is placed twice.

#[path = "../../server/tests/common/mod.rs"]
mod common;
mod support;

use axum::http::{Method, StatusCode};
use common::{Auth, TestApp};
use serde_json::json;
use support::*;

/// A node with 8 CPUs, 8 GB and one GPU, registered as its agent would.
async fn one_gpu_node(app: &TestApp, token: &str) -> String {
    let node_token = add_node(app, token, "gpu-node").await;
    let info = json!({"node": {"name": "gpu-node", "hostname": "h", "os": "linux", "cpus": 8, "memory_mb": 8000,
        "disk_free_mb": 1000, "labels": {}, "agent_version": "test", "sandbox": "bubblewrap",
        "advertise_host": "127.0.0.1",
        "gpus": [{"index": 0, "uuid": "GPU-only", "model": "Test GPU", "memory_mb": 16000}]}});
    let r = app.call(Method::POST, "/agent/v1/register", Auth::Bearer(&node_token), Some(info)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    node_token
}

/// What holds a GPU on the node: (kind, id) of each job, instance and kernel.
async fn gpu_holders(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT 'job', name FROM training_jobs WHERE node_id IS NOT NULL AND gpu_indices <> '[]' \
         AND state IN ('Starting', 'Downloading', 'Training', 'Uploading') \
         UNION ALL SELECT 'instance', id FROM endpoint_instances WHERE node_id IS NOT NULL AND gpu_indices <> '[]' \
         AND state IN ('Pending', 'Starting', 'InService') \
         UNION ALL SELECT 'kernel', id FROM kernels WHERE gpu_indices <> '[]' \
         AND state IN ('pending', 'starting', 'idle', 'busy', 'dead')",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .expect("holders")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_a_kernel_and_an_instance_placed_at_once_do_not_share_a_gpu() {
    for round in 0..10 {
        let app = TestApp::new().await;
        let admin = app.create_user("admin", true).await;
        let token = app.token_for(&admin, None).await;
        let node_token = one_gpu_node(&app, &token).await;

        // A queued job that needs the GPU.
        let code = upload(&app, &token, "train.py", "print('hello')").await;
        let spec = json!({"algorithm": {"type": "script", "entry_point": "train.py", "code": [code]},
            "resources": {"cpus": 1, "memory_mb": 256, "gpus": 1}});
        let r = submit(&app, &token, "gpu-job", spec).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

        // An endpoint whose one instance needs the GPU (placed by the reconciler below).
        let r = app.call(Method::POST, "/api/v1/model-groups", Auth::Bearer(&token), Some(json!({"name": "g"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let archive = upload(&app, &token, "m.tar.gz", "weights").await;
        let version = json!({"artifact": archive, "inference": {"serving_command": "true"}});
        let r = app.call(Method::POST, "/api/v1/model-groups/g/versions", Auth::Bearer(&token), Some(version)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let path = "/api/v1/model-groups/g/versions/1/approval";
        let r = app.call(Method::POST, path, Auth::Bearer(&token), Some(json!({"status": "Approved"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let endpoint = json!({"name": "e", "variants": [{"model_group": "g", "model_version": 1, "gpus": 1}]});
        let r = app.call(Method::POST, "/api/v1/endpoints", Auth::Bearer(&token), Some(endpoint)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

        // A notebook whose kernel asks for the GPU.
        let r = app.call(Method::POST, "/api/v1/notebooks", Auth::Bearer(&token), Some(json!({"name": "n"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let notebook = r.json()["id"].as_str().expect("notebook id").to_string();

        // All three at once, each on its own task.
        let (a, b, c) = (app.router.clone(), app.state.clone(), app.router.clone());
        let (poll_token, user_token) = (node_token.clone(), token.clone());
        let job = tokio::spawn(async move {
            let request = axum::http::Request::get("/agent/v1/work?wait=0")
                .header("authorization", format!("Bearer {poll_token}"))
                .body(axum::body::Body::empty())
                .expect("request");
            tower::ServiceExt::oneshot(a, request).await.map(|r| r.status())
        });
        let instance = tokio::spawn(async move { atelier_core::endpoints::reconcile::reconcile(&b.db).await });
        let kernel = tokio::spawn(async move {
            let request = axum::http::Request::post(format!("/api/v1/notebooks/{notebook}/kernel"))
                .header("authorization", format!("Bearer {user_token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(json!({"node": "gpu-node", "gpus": 1}).to_string()))
                .expect("request");
            tower::ServiceExt::oneshot(c, request).await.map(|r| r.status())
        });
        let (job, instance, kernel) = (job.await, instance.await, kernel.await);
        assert!(job.is_ok() && instance.is_ok() && kernel.is_ok(), "round {round}: a placement panicked");
        // The reconciler's second pass places the instance if the first only created it.
        atelier_core::endpoints::reconcile::reconcile(&app.state.db).await.expect("reconcile");

        let holders = gpu_holders(&app).await;
        assert_eq!(holders.len(), 1, "round {round}: one GPU, held by {holders:?}");
    }
}
