//! Reading artifacts by id (`GET /api/v1/artifacts/{id}` and `/content`) is decided by
//! what owns the artifact: a dataset's image needs the dataset's read permission and a
//! registered model needs the model version's, whatever the caller may do on training
//! jobs.

mod common;

use atelier_core::iam::store;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Auth, TestApp};
use serde_json::json;

/// A real 1×1 PNG.
const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

fn deny(action: &str) -> String {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": action, "Resource": "*"}]}).to_string()
}

/// A DataScientist with an explicit Deny of `action` attached, and their token.
async fn data_scientist_denied(app: &TestApp, username: &str, policy: &str, action: &str) -> String {
    store::create_policy(&app.state.db, "admin", policy, "", &deny(action)).await.expect("test setup");
    let user = app.create_user_with(username, &["DataScientist".into(), policy.into()]).await;
    app.token_for(&user, None).await
}

/// The status of reading artifact `id`'s record and its content, as `token`.
async fn read_statuses(app: &TestApp, token: &str, id: &str) -> (StatusCode, StatusCode) {
    let record = app.call(Method::GET, &format!("/api/v1/artifacts/{id}"), Auth::Bearer(token), None).await;
    let content = app.call(Method::GET, &format!("/api/v1/artifacts/{id}/content"), Auth::Bearer(token), None).await;
    (record.status, content.status)
}

#[tokio::test]
async fn a_dataset_image_is_read_by_id_only_by_those_who_may_read_the_dataset() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let admin_token = app.token_for(&admin, None).await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/datasets",
            Auth::Bearer(&admin_token),
            Some(json!({"name": "pets", "kind": "image"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app.upload_batch(&admin_token, "pets", &[("file", Some("cat.png"), PNG)]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let (artifact,): (String,) = sqlx::query_as(
        "SELECT i.artifact_id FROM dataset_items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'pets'",
    )
    .fetch_one(&app.state.db.pool)
    .await
    .expect("the image's artifact");

    // May read every training job, but no dataset.
    let mallory = data_scientist_denied(&app, "mallory", "NoDatasets", "datasets:*").await;
    assert_eq!(read_statuses(&app, &mallory, &artifact).await, (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN));
    let r = app.call(Method::GET, "/api/v1/datasets/pets/items/1/content", Auth::Bearer(&mallory), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the dataset's own route agrees");

    let erin = app.create_user_with("erin", &["DataScientist".into()]).await;
    let erin = app.token_for(&erin, None).await;
    for token in [&admin_token, &erin] {
        assert_eq!(read_statuses(&app, token, &artifact).await, (StatusCode::OK, StatusCode::OK));
    }
    let content =
        app.call(Method::GET, &format!("/api/v1/artifacts/{artifact}/content"), Auth::Bearer(&admin_token), None).await;
    assert_eq!(content.body, PNG);
}

#[tokio::test]
async fn a_registered_model_is_read_by_id_only_by_those_who_may_read_its_version() {
    let app = TestApp::new().await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    let dana = app.token_for(&dana, None).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/artifacts?name=model.tar.gz")
        .header("authorization", format!("Bearer {dana}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(b"weights".to_vec()))
        .expect("request");
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let artifact = r.json()["id"].as_str().expect("artifact id").to_string();
    let r = app.call(Method::POST, "/api/v1/model-groups", Auth::Bearer(&dana), Some(json!({"name": "fraud"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app
        .call(
            Method::POST,
            "/api/v1/model-groups/fraud/versions",
            Auth::Bearer(&dana),
            Some(json!({"artifact": artifact})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // May read dana's training jobs (which once was enough for her uploads), not models.
    let tom = data_scientist_denied(&app, "tom", "NoModels", "models:*").await;
    assert_eq!(read_statuses(&app, &tom, &artifact).await, (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN));
    let r = app.call(Method::GET, "/api/v1/model-groups/fraud/versions/1/artifact", Auth::Bearer(&tom), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the registry's own route agrees");

    // Reading models is enough, without any training permission.
    let rita = app.create_user_with("rita", &["Reviewer".into()]).await;
    let rita = app.token_for(&rita, None).await;
    let admin = app.create_user("admin", true).await;
    let admin = app.token_for(&admin, None).await;
    for token in [&dana, &rita, &admin] {
        assert_eq!(read_statuses(&app, token, &artifact).await, (StatusCode::OK, StatusCode::OK));
    }
}

#[tokio::test]
async fn a_plain_upload_is_still_read_by_the_readers_of_training_jobs() {
    let app = TestApp::new().await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    let dana = app.token_for(&dana, None).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/artifacts?name=train.py")
        .header("authorization", format!("Bearer {dana}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(b"print(1)".to_vec()))
        .expect("request");
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let artifact = r.json()["id"].as_str().expect("artifact id").to_string();

    let tom = data_scientist_denied(&app, "tom", "NoModels", "models:*").await;
    assert_eq!(read_statuses(&app, &tom, &artifact).await, (StatusCode::OK, StatusCode::OK));
    let nobody = data_scientist_denied(&app, "nobody", "NoTraining", "training:*").await;
    assert_eq!(read_statuses(&app, &nobody, &artifact).await, (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN));
}

#[tokio::test]
async fn a_training_channels_manifest_of_dataset_texts_needs_the_dataset_read_permission() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let admin_token = app.token_for(&admin, None).await;
    // A Ready node, so that the job can be submitted.
    let node =
        atelier_core::compute::nodes::create_unchecked(&app.state.db, "gpu1", "admin").await.expect("test setup");
    let info = json!({"node": {"name": "gpu1", "hostname": "gpu1", "os": "linux", "cpus": 8, "memory_mb": 32000,
        "disk_free_mb": 100000, "gpus": [], "labels": {}, "agent_version": "test"}});
    let r = app.call(Method::POST, "/agent/v1/register", Auth::Bearer(&node.token), Some(info)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = app
        .call(
            Method::POST,
            "/api/v1/datasets",
            Auth::Bearer(&admin_token),
            Some(json!({"name": "reviews", "kind": "text"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app.upload_batch(&admin_token, "reviews", &[("file", Some("one.txt"), b"a confidential review")]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/artifacts?name=train.py")
        .header("authorization", format!("Bearer {admin_token}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(b"print(1)".to_vec()))
        .expect("request");
    let code = app.send(request).await.json()["id"].as_str().expect("artifact id").to_string();
    let spec = json!({
        "algorithm": {"type": "script", "entry_point": "train.py", "code": [code]},
        "channels": [{"name": "train", "dataset": "reviews"}],
    });
    let r = app
        .call(
            Method::POST,
            "/api/v1/training-jobs",
            Auth::Bearer(&admin_token),
            Some(json!({"name": "j1", "spec": spec})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let (manifest,): (String,) = sqlx::query_as("SELECT id FROM artifacts WHERE name = 'reviews.manifest'")
        .fetch_one(&app.state.db.pool)
        .await
        .expect("the channel's manifest");

    let mallory = data_scientist_denied(&app, "mallory", "NoDatasets", "datasets:*").await;
    assert_eq!(read_statuses(&app, &mallory, &manifest).await, (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN));
    // The job's code is no dataset's: reading the job is still enough.
    assert_eq!(read_statuses(&app, &mallory, &code).await, (StatusCode::OK, StatusCode::OK));
    let content =
        app.call(Method::GET, &format!("/api/v1/artifacts/{manifest}/content"), Auth::Bearer(&admin_token), None).await;
    assert_eq!(content.status, StatusCode::OK);
    assert!(content.text().contains("a confidential review"), "{}", content.text());
}
