//! The MLflow-compatible registry API driven by the official MLflow client: a Python
//! script (`mlflow_client.py`) run in a virtual environment with `mlflow-skinny` (the
//! `mlflow` package's client without its server) installed from the package index,
//! cached under the target directory between runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Auth, TestApp};
use serde_json::json;

/// The client version the test pins, so a new release cannot change the result.
const MLFLOW: &str = "mlflow-skinny==3.17.2";

/// A virtual environment with the MLflow client, made once per target directory.
fn mlflow_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mlflow-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!("{MLFLOW}.installed"));
    if !marker.exists() {
        let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("run python3 -m venv");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", MLFLOW])
            .status()
            .expect("run pip");
        assert!(status.success(), "pip install {MLFLOW} failed");
        std::fs::write(&marker, b"").expect("write the install marker");
    }
    python
}

#[tokio::test]
async fn the_mlflow_client_works_against_the_registry() {
    // Installing the client is blocking work; do it off the runtime's threads.
    let python = tokio::task::spawn_blocking(mlflow_python).await.expect("install the MLflow client");

    let app = TestApp::new().await;
    let url = app.listen().await;
    let dana = app.create_user_with("dana", &["DataScientist".to_string()]).await;
    let token = app.token_for(&dana, None).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/artifacts?name=model.tar.gz")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from("a model"))
        .expect("request");
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let artifact = r.json()["id"].as_str().expect("artifact id").to_string();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mlflow_client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("MLFLOW_TRACKING_URI", &url)
            .env("MLFLOW_TRACKING_TOKEN", &token)
            .env("ATELIER_SOURCE_URI", format!("atelier:artifact/{artifact}"))
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD")
            .output()
            .expect("run the MLflow client script")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mlflow_client.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("atelier.approval_status"), "{stdout}");

    // What the client did is the registry's state: the script deleted its model, and
    // its calls were audited under the token's user.
    let admin = app.create_user("admin", true).await;
    let admin = app.token_for(&admin, None).await;
    let r = app.call(Method::GET, "/api/v1/model-groups", Auth::Bearer(&admin), None).await;
    assert_eq!(r.json(), json!([]), "{}", r.text());
    let r = app
        .call(
            Method::GET,
            "/api/v1/audit-events?principal=dana&action=models:RegisterModelVersion",
            Auth::Bearer(&admin),
            None,
        )
        .await;
    assert!(r.text().contains("registered version 2 of model group"), "{}", r.text());
}
