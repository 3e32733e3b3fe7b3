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
