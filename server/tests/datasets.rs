//! Datasets through the REST API: creating them, uploading batches of images, texts
//! and Ground Truth input manifests (bad files and lines rejected, the rest kept),
//! paging items and reading their content.

mod common;

use axum::http::{Method, StatusCode};
use common::{Auth, TestApp};
use serde_json::{json, Value};

/// A real 1×1 PNG.
const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";
/// The start of a JPEG (what the upload checks).
const JPEG: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00";

async fn create(app: &TestApp, token: &str, name: &str, kind: &str) -> common::TestResponse {
    app.call(Method::POST, "/api/v1/datasets", Auth::Bearer(token), Some(json!({"name": name, "kind": kind}))).await
}

fn rejected(batch: &Value) -> Vec<String> {
    batch["rejected"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_image_dataset_keeps_good_files_and_names_each_bad_one() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let r = create(&app, &token, "pets", "image").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["item_count"], 0);

    let manifest = b"{\"source-ref\":\"s3://bucket/pets/cat.png\"}\n{\"source-ref\":\"s3://bucket/pets/missing.png\"}\nnot json\n\n";
    let r = app
        .upload_batch(
            &token,
            "pets",
            &[
                ("file", Some("cat.png"), PNG),
                ("file", Some("dog.jpg"), JPEG),
                ("file", Some("evil.png"), b"<script>alert(1)</script>"),
                ("file", Some("notes.pdf"), b"%PDF-1.4"),
                ("file", Some("input.manifest"), manifest),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let batch = r.json();
    assert_eq!(batch["seq"], 1);
    assert_eq!(batch["item_count"], 2);
    assert_eq!(batch["total_bytes"], PNG.len() + JPEG.len());
    assert_eq!(
        rejected(&batch),
        [
            "evil.png: not a PNG, JPEG or WebP image",
            "notes.pdf: an image dataset takes PNG, JPEG or WebP files and .manifest files",
            "input.manifest line 3: not a JSON object: expected ident at line 1 column 2",
            "input.manifest line 2: the image s3://bucket/pets/missing.png was not uploaded with the manifest",
        ]
    );

    let items = app.call(Method::GET, "/api/v1/datasets/pets/items", Auth::Bearer(&token), None).await;
    assert_eq!(items.status, StatusCode::OK, "{}", items.text());
    let items = items.json();
    assert_eq!(items.as_array().map(Vec::len), Some(2));
    assert_eq!(items[0]["seq"], 1);
    assert_eq!(items[0]["name"], "cat.png");
    assert_eq!(items[0]["media_type"], "image/png");
    assert_eq!(items[0]["source_ref"], "s3://bucket/pets/cat.png");
    assert_eq!(items[1]["media_type"], "image/jpeg");

    // The bytes come back as stored, typed from their content and unable to run script.
    let content = app.call(Method::GET, "/api/v1/datasets/pets/items/1/content", Auth::Bearer(&token), None).await;
    assert_eq!(content.status, StatusCode::OK);
    assert_eq!(content.body, PNG);
    assert_eq!(content.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(content.header("x-content-type-options").as_deref(), Some("nosniff"));
    assert!(content.header("content-security-policy").is_some_and(|c| c.contains("sandbox")));

    // A second upload appends a batch; items keep their positions.
    let r = app.upload_batch(&token, "pets", &[("file", Some("bird.png"), PNG)]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["seq"], 2);
    let detail = app.call(Method::GET, "/api/v1/datasets/pets", Auth::Bearer(&token), None).await.json();
    assert_eq!(detail["dataset"]["item_count"], 3);
    assert_eq!(detail["batches"].as_array().map(Vec::len), Some(2));
    assert_eq!(detail["batches"][0]["source"], "5 files: cat.png, dog.jpg, evil.png, notes.pdf, input.manifest");
    let page = app.call(Method::GET, "/api/v1/datasets/pets/items?after=2&limit=10", Auth::Bearer(&token), None).await;
    assert_eq!(page.json()[0]["name"], "bird.png");
    assert_eq!(page.json()[0]["batch"], 2);

    // Refusals that leave what is stored untouched.
    let r = app.upload_batch(&token, "pets", &[("file", Some("x.png"), PNG), ("colour", None, b"red")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("unknown form field \\\"colour\\\""), "{}", r.text());
    let r = app.upload_batch(&token, "pets", &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("no files were uploaded"), "{}", r.text());
    let detail = app.call(Method::GET, "/api/v1/datasets/pets", Auth::Bearer(&token), None).await.json();
    assert_eq!(detail["dataset"]["item_count"], 3);
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM artifacts WHERE kind = 'dataset'")
        .fetch_one(&app.state.db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 3, "the refused upload's image was removed from the store");
    assert_eq!(create(&app, &token, "pets", "image").await.status, StatusCode::CONFLICT);
    let r = create(&app, &token, "sounds", "audio").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "kind");
    assert_eq!(
        app.upload_batch(&token, "nowhere", &[("file", Some("a.png"), PNG)]).await.status,
        StatusCode::NOT_FOUND
    );
    let missing = app.call(Method::GET, "/api/v1/datasets/pets/items/99/content", Auth::Bearer(&token), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_text_dataset_takes_txt_csv_and_json_lines() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    assert_eq!(create(&app, &token, "reviews", "text").await.status, StatusCode::CREATED);
    let long = "a".repeat(400);
    let csv = format!("id,review\n1,Great film\n2,\n3,\"Quoted, with a comma\"\n4,{long}\n");
    let r = app
        .upload_batch(
            &token,
            "reviews",
            &[
                ("text_column", None, b"review"),
                ("file", Some("one.txt"), "A whole document\nover two lines.".as_bytes()),
                ("file", Some("more.csv"), csv.as_bytes()),
                (
                    "file",
                    Some("lines.jsonl"),
                    b"{\"text\": \"from text\"}\n{\"source\": \"from source\"}\n{\"x\": 1}\n",
                ),
                ("file", Some("latin1.txt"), b"caf\xe9"),
                ("file", Some("pic.png"), PNG),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let batch = r.json();
    assert_eq!(batch["item_count"], 6, "{batch}");
    assert_eq!(
        rejected(&batch),
        [
            "more.csv line 3: empty text",
            "lines.jsonl line 3: a text item needs \"source\" or \"text\"",
            "latin1.txt: not UTF-8 text",
            "pic.png: a text dataset takes .txt, .csv, .jsonl and .manifest files",
        ]
    );
    let items = app.call(Method::GET, "/api/v1/datasets/reviews/items", Auth::Bearer(&token), None).await.json();
    let names: Vec<&str> = items.as_array().expect("items").iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "one.txt",
            "more.csv line 2",
            "more.csv line 4",
            "more.csv line 5",
            "lines.jsonl line 1",
            "lines.jsonl line 2"
        ]
    );
    assert_eq!(items[2]["snippet"], "Quoted, with a comma");
    // Lists carry a snippet; the content route the whole text.
    assert_eq!(items[3]["snippet"].as_str().map(|s| s.chars().count()), Some(281));
    let content = app.call(Method::GET, "/api/v1/datasets/reviews/items/4/content", Auth::Bearer(&token), None).await;
    assert_eq!(content.text(), long);
    assert_eq!(content.header("content-type").as_deref(), Some("text/plain; charset=utf-8"));

    // A named column that does not exist is reported for the file.
    let r = app
        .upload_batch(
            &token,
            "reviews",
            &[("text_column", None, b"body"), ("file", Some("x.csv"), b"id,review\n1,a\n")],
        )
        .await;
    assert_eq!(rejected(&r.json()), ["x.csv: no column named body (columns: id, review)"]);
}

#[tokio::test]
async fn only_permitted_users_see_and_change_datasets() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let admin_token = app.token_for(&admin, None).await;
    assert_eq!(create(&app, &admin_token, "pets", "image").await.status, StatusCode::CREATED);
    let labeler = app.create_user_with("lena", &["Labeler".into()]).await;
    let token = app.token_for(&labeler, None).await;
    assert_eq!(
        app.call(Method::GET, "/api/v1/datasets", Auth::Bearer(&token), None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(create(&app, &token, "mine", "image").await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.upload_batch(&token, "pets", &[("file", Some("a.png"), PNG)]).await.status, StatusCode::FORBIDDEN);
    let scientist = app.create_user_with("sam", &["DataScientist".into()]).await;
    let token = app.token_for(&scientist, None).await;
    assert_eq!(create(&app, &token, "sams", "text").await.status, StatusCode::CREATED);
    let list = app.call(Method::GET, "/api/v1/datasets", Auth::Bearer(&token), None).await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
}

/// The artifact ids of a dataset's items, by position (from the database: the API does
/// not show them).
async fn item_artifacts(app: &TestApp, dataset: &str) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT i.seq, i.artifact_id FROM dataset_items i JOIN datasets d ON d.id = i.dataset_id \
         WHERE d.name = $1 AND i.artifact_id IS NOT NULL ORDER BY i.seq",
    )
    .bind(dataset)
    .fetch_all(&app.state.db.pool)
    .await
    .expect("items")
}

/// The positions of a dataset's items, as the API lists them.
async fn item_seqs(app: &TestApp, token: &str, dataset: &str) -> Vec<i64> {
    let items = app.call(Method::GET, &format!("/api/v1/datasets/{dataset}/items"), Auth::Bearer(token), None).await;
    assert_eq!(items.status, StatusCode::OK, "{}", items.text());
    items.json().as_array().map(|a| a.iter().filter_map(|i| i["seq"].as_i64()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn deleting_a_dataset_removes_its_items_and_files_and_is_audited() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    assert_eq!(create(&app, &token, "photos", "image").await.status, StatusCode::CREATED);
    let files: [(&str, Option<&str>, &[u8]); 2] = [("file", Some("a.png"), PNG), ("file", Some("b.jpg"), JPEG)];
    assert_eq!(app.upload_batch(&token, "photos", &files).await.status, StatusCode::CREATED);
    let artifacts = item_artifacts(&app, "photos").await;
    assert_eq!(artifacts.len(), 2);

    // Who may read datasets but not delete them is refused, and nothing changes.
    let reader = app.create_user_with("rita", &["ReadOnly".into()]).await;
    let reader = app.token_for(&reader, None).await;
    let r = app.call(Method::DELETE, "/api/v1/datasets/photos", Auth::Bearer(&reader), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let r = app.call(Method::DELETE, "/api/v1/datasets/photos/items/1", Auth::Bearer(&reader), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(item_seqs(&app, &token, "photos").await, [1, 2]);

    let r = app.call(Method::DELETE, "/api/v1/datasets/photos", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = app.call(Method::GET, "/api/v1/datasets/photos", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.call(Method::GET, "/api/v1/datasets/photos/items/1/content", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for (_, id) in &artifacts {
        let r = app.call(Method::GET, &format!("/api/v1/artifacts/{id}/content"), Auth::Bearer(&token), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
        assert!(app.state.artifacts.get(id).await.is_err(), "the stored bytes of {id} are gone");
    }
    let r = app.call(Method::DELETE, "/api/v1/datasets/photos", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The name can be used again; the deletion is in the audit log.
    assert_eq!(create(&app, &token, "photos", "text").await.status, StatusCode::CREATED);
    let summaries: Vec<String> =
        sqlx::query_scalar("SELECT summary FROM audit_events").fetch_all(&app.state.db.pool).await.unwrap_or_default();
    assert!(summaries.iter().any(|s| s.contains("deleted image dataset photos: 2 items")), "{summaries:?}");
}

#[tokio::test]
async fn removing_an_item_keeps_the_others_positions() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    assert_eq!(create(&app, &token, "photos", "image").await.status, StatusCode::CREATED);
    let files: [(&str, Option<&str>, &[u8]); 3] =
        [("file", Some("a.png"), PNG), ("file", Some("b.jpg"), JPEG), ("file", Some("c.png"), PNG)];
    assert_eq!(app.upload_batch(&token, "photos", &files).await.status, StatusCode::CREATED);
    let before = item_artifacts(&app, "photos").await;

    let r = app.call(Method::DELETE, "/api/v1/datasets/photos/items/2", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = app.call(Method::DELETE, "/api/v1/datasets/photos/items/2", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(item_seqs(&app, &token, "photos").await, [1, 3]);
    assert!(app.state.artifacts.get(&before[1].1).await.is_err(), "the removed item's file is gone");
    let d = app.call(Method::GET, "/api/v1/datasets/photos", Auth::Bearer(&token), None).await.json();
    assert_eq!(d["dataset"]["item_count"], 2, "{d}");
    assert_eq!(d["dataset"]["total_bytes"], 2 * PNG.len(), "{d}");
    let r = app.call(Method::GET, "/api/v1/datasets/photos/items/3/content", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);

    // A later batch numbers its items after the last one, never reusing a position.
    assert_eq!(app.upload_batch(&token, "photos", &[("file", Some("d.png"), PNG)]).await.status, StatusCode::CREATED);
    assert_eq!(item_seqs(&app, &token, "photos").await, [1, 3, 4]);
}

#[tokio::test]
async fn a_dataset_in_use_is_not_deleted_and_lineage_keeps_its_name() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let r = app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&token), Some(json!({"name": "raters"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    for name in ["reviews", "photos"] {
        assert_eq!(create(&app, &token, name, "text").await.status, StatusCode::CREATED);
        let lines = b"{\"source\": \"one\"}\n{\"source\": \"two\"}\n{\"source\": \"three\"}\n";
        let r = app.upload_batch(&token, name, &[("file", Some("r.jsonl"), lines)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }

    // A labeling job in progress on it: refused, naming the job.
    let spec = json!({
        "name": "sentiment", "dataset": "reviews", "task_type": "text_classification",
        "categories": [{"name": "good"}, {"name": "bad"}], "teams": ["raters"],
    });
    let r = app.call(Method::POST, "/api/v1/labeling/jobs", Auth::Bearer(&token), Some(spec)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app.call(Method::DELETE, "/api/v1/datasets/reviews", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("labeling job sentiment (in progress)"), "{}", r.text());
    let r = app.call(Method::DELETE, "/api/v1/datasets/reviews/items/1", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("labeling job sentiment"), "{}", r.text());
    assert_eq!(item_count(&app, &token, "reviews").await, 3);

    // A training job not yet finished reading it: refused, naming the job.
    sqlx::query(
        "INSERT INTO training_jobs (id, name, spec, state, priority, cpus, memory_mb, gpus, created_by, created_at) \
         VALUES ('j', 'train-1', $1, 'Training', 0, 1, 1, 0, 'admin', 0)",
    )
    .bind(r#"{"algorithm":{"type":"builtin","name":"text"},"channels":[{"name":"train","dataset":"photos"}]}"#)
    .execute(&app.state.db.pool)
    .await
    .expect("test setup");
    let r = app.call(Method::DELETE, "/api/v1/datasets/photos", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("training job train-1 (Training)"), "{}", r.text());

    // Once it completed, its model version is registered; deleting the dataset then
    // leaves the version's lineage naming it as deleted.
    sqlx::query("UPDATE training_jobs SET state = 'Completed' WHERE id = 'j'")
        .execute(&app.state.db.pool)
        .await
        .expect("test setup");
    sqlx::query(
        "INSERT INTO artifacts (id, name, kind, sha256, size, job_id, created_by, created_at) \
         VALUES ('m1', 'model.tar.gz', 'model', '', 0, 'j', 'admin', 0)",
    )
    .execute(&app.state.db.pool)
    .await
    .expect("test setup");
    let r = app.call(Method::POST, "/api/v1/model-groups", Auth::Bearer(&token), Some(json!({"name": "sent"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app
        .call(
            Method::POST,
            "/api/v1/model-groups/sent/versions",
            Auth::Bearer(&token),
            Some(json!({"training_job": "train-1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app.call(Method::DELETE, "/api/v1/datasets/photos", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let v = app.call(Method::GET, "/api/v1/model-groups/sent/versions/1", Auth::Bearer(&token), None).await;
    assert_eq!(v.status, StatusCode::OK, "{}", v.text());
    let v = v.json();
    assert_eq!(v["lineage"]["datasets"], json!(["photos"]), "{v}");
    assert_eq!(v["lineage"]["deleted_datasets"], json!(["photos"]), "{v}");
}

async fn item_count(app: &TestApp, token: &str, dataset: &str) -> i64 {
    let d = app.call(Method::GET, &format!("/api/v1/datasets/{dataset}"), Auth::Bearer(token), None).await.json();
    d["dataset"]["item_count"].as_i64().unwrap_or(-1)
}
