//! Labeling jobs through the REST API: work teams decide who sees a job, the task queue
//! hands each item to `workers_per_item` distinct labelers (holds, skips, expiry,
//! idempotent submissions, many labelers at once), consolidation, the review queue, the
//! quality report and the Ground Truth output manifest.

mod common;

use atelier_core::accounts::{self, NewUser};
use axum::http::{Method, StatusCode};
use common::{Auth, TestApp, TestResponse};
use serde_json::{json, Value};

const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

/// A user in `groups` with the built-in Labeler policy, and their token.
async fn labeler(app: &TestApp, name: &str, groups: &[&str]) -> String {
    let user = accounts::create_user(
        &app.state.db,
        NewUser {
            username: name.into(),
            display_name: String::new(),
            password: common::PASSWORD.into(),
            policies: vec!["Labeler".into()],
            groups: groups.iter().map(|g| g.to_string()).collect(),
        },
    )
    .await
    .expect("create labeler");
    app.token_for(&user, None).await
}

/// An admin token, groups, and a text dataset `reviews` of `n` items: item k reads
/// "review k good" for odd k and "review k bad" for even k.
async fn studio(app: &TestApp, groups: &[&str], n: usize) -> String {
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    for g in groups {
        let r = app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&token), Some(json!({"name": g}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let r = app
        .call(Method::POST, "/api/v1/datasets", Auth::Bearer(&token), Some(json!({"name": "reviews", "kind": "text"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let lines: String = (1..=n).map(|k| format!("{{\"source\": \"review {k} {}\"}}\n", truth(k as i64))).collect();
    let r = app.upload_batch(&token, "reviews", &[("file", Some("reviews.jsonl"), lines.as_bytes())]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    token
}

fn truth(seq: i64) -> &'static str {
    if seq % 2 == 1 {
        "good"
    } else {
        "bad"
    }
}

async fn next(app: &TestApp, token: &str, job: &str, besides: Option<&str>) -> TestResponse {
    let body = besides.map(|b| json!({"besides": b}));
    app.call(Method::POST, &format!("/api/v1/labeling/jobs/{job}/tasks/next"), Auth::Bearer(token), body).await
}

async fn submit(app: &TestApp, token: &str, job: &str, task: &str, answer: Value) -> TestResponse {
    let path = format!("/api/v1/labeling/jobs/{job}/tasks/{task}/submit");
    app.call(Method::POST, &path, Auth::Bearer(token), Some(json!({"answer": answer, "duration_ms": 1500}))).await
}

/// Takes and answers tasks until none is left for this labeler; returns how many.
async fn label_all(app: &TestApp, token: &str, job: &str, answer: impl Fn(&Value) -> Value) -> usize {
    let mut done = 0;
    loop {
        let r = next(app, token, job, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let task = r.json()["task"].clone();
        if task.is_null() {
            return done;
        }
        let r = submit(app, token, job, task["id"].as_str().expect("id"), answer(&task)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["recorded"], true);
        done += 1;
    }
}

fn seq_of(task: &Value) -> i64 {
    task["item_seq"].as_i64().expect("item_seq")
}

fn manifest_lines(r: &TestResponse) -> Vec<Value> {
    r.text().lines().map(|l| serde_json::from_str(l).expect("manifest line is JSON")).collect()
}

#[tokio::test]
async fn a_team_labels_a_text_job_into_an_output_manifest() {
    let app = TestApp::new().await;
    let admin = studio(&app, &["raters", "others"], 9).await;
    let spec = json!({
        "name": "sentiment", "dataset": "reviews", "task_type": "text_classification",
        "categories": [{"name": "good", "hotkey": "g"}, {"name": "bad"}],
        "teams": ["raters"], "gold": [{"item": 9, "answer": {"label": "good"}}], "gold_share": 0.5,
    });
    // Bad settings are refused, naming the field.
    for (change, field) in [
        (json!({"categories": [{"name": "good"}]}), "categories"),
        (json!({"categories": [{"name": "good", "hotkey": "s"}, {"name": "bad"}]}), "categories"),
        (json!({"teams": ["nobody"]}), "teams"),
        (json!({"task_type": "bounding_box"}), "task_type"),
        (json!({"gold": [{"item": 99, "answer": {"label": "good"}}]}), "gold"),
        (json!({"gold": [{"item": 1, "answer": {"label": "meh"}}]}), "gold"),
        (json!({"workers_per_item": 0}), "workers_per_item"),
    ] {
        let mut bad = spec.clone();
        for (k, v) in change.as_object().expect("object") {
            bad[k] = v.clone();
        }
        let r = app.call(Method::POST, "/api/v1/labeling/jobs", Auth::Bearer(&admin), Some(bad)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{change}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{change}: {}", r.text());
    }
    let r = app.call(Method::POST, "/api/v1/labeling/jobs", Auth::Bearer(&admin), Some(spec.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let job = r.json();
    assert_eq!(job["job"]["item_count"], 8, "gold items are not labeled for the output");
    assert_eq!(job["job"]["workers_per_item"], 3);
    assert_eq!(job["job"]["label_attribute"], "sentiment");
    let r = app.call(Method::POST, "/api/v1/labeling/jobs", Auth::Bearer(&admin), Some(spec)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let ann = labeler(&app, "ann", &["raters"]).await;
    let ben = labeler(&app, "ben", &["raters"]).await;
    let cat = labeler(&app, "cat", &["raters"]).await;
    let dan = labeler(&app, "dan", &["raters"]).await;
    let eve = labeler(&app, "eve", &["others"]).await;

    // Teams decide who sees the job.
    let r = app.call(Method::GET, "/api/v1/labeling/jobs/sentiment", Auth::Bearer(&eve), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(next(&app, &eve, "sentiment", None).await.status, StatusCode::FORBIDDEN);
    let r = app.call(Method::GET, "/api/v1/labeling/jobs", Auth::Bearer(&eve), None).await;
    assert_eq!(r.json(), json!([]));
    let r = app.call(Method::GET, "/api/v1/labeling/my-work", Auth::Bearer(&ann), None).await;
    assert_eq!(r.json()[0]["job"]["name"], "sentiment", "{}", r.text());
    let r = app.call(Method::POST, "/api/v1/labeling/jobs/sentiment/stop", Auth::Bearer(&ann), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "labelers cannot stop jobs");

    // A held task comes back on a second ask; `besides` preloads another.
    let first = next(&app, &ann, "sentiment", None).await.json()["task"].clone();
    assert_eq!(next(&app, &ann, "sentiment", None).await.json()["task"]["id"], first["id"]);
    let second = next(&app, &ann, "sentiment", first["id"].as_str()).await.json()["task"].clone();
    assert_ne!(second["id"], first["id"]);
    assert_ne!(seq_of(&second), seq_of(&first));
    assert!(first["text"].as_str().expect("text").starts_with(&format!("review {}", seq_of(&first))));

    // Answers are checked; a repeated submission records nothing more.
    let id = first["id"].as_str().expect("id");
    let r = submit(&app, &ann, "sentiment", id, json!({"label": "meh"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("\\\"meh\\\" is not one of the job's categories"), "{}", r.text());
    let right = json!({"label": truth(seq_of(&first))});
    assert_eq!(submit(&app, &ann, "sentiment", id, right.clone()).await.json()["recorded"], true);
    let again = submit(&app, &ann, "sentiment", id, right).await;
    assert_eq!((again.status, again.json()["recorded"].clone()), (StatusCode::OK, json!(false)));
    let other = submit(&app, &ann, "sentiment", id, json!({"label": "bad"})).await;
    let other_is_wrong = truth(seq_of(&first)) != "bad";
    assert_eq!(other.status, if other_is_wrong { StatusCode::CONFLICT } else { StatusCode::OK });
    // Someone else's task is not yours to submit.
    assert_eq!(submit(&app, &ben, "sentiment", id, json!({"label": "good"})).await.status, StatusCode::CONFLICT);

    // A skip is recorded and the item never comes back to the skipper.
    let skipped = seq_of(&second);
    let path = format!("/api/v1/labeling/jobs/sentiment/tasks/{}/skip", second["id"].as_str().expect("id"));
    assert_eq!(app.call(Method::POST, &path, Auth::Bearer(&ann), None).await.status, StatusCode::NO_CONTENT);

    // The output waits for the job.
    let r = app.call(Method::GET, "/api/v1/labeling/jobs/sentiment/output", Auth::Bearer(&admin), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    // A hold whose time limit passed goes to someone else: expire one of ben's.
    let held = next(&app, &ben, "sentiment", None).await.json()["task"].clone();
    sqlx::query("UPDATE labeling_tasks SET expires_at = 0 WHERE id = $1")
        .bind(held["id"].as_str().expect("id"))
        .execute(&app.state.db.pool)
        .await
        .expect("expire");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // Everyone labels what is left; cat is wrong on item 1 and on the gold item.
    let ann_rest = label_all(&app, &ann, "sentiment", |t| {
        assert_ne!(seq_of(t), skipped, "a skipped item does not come back");
        json!({"label": truth(seq_of(t))})
    })
    .await;
    let cat_done = label_all(&app, &cat, "sentiment", |t| {
        let s = seq_of(t);
        json!({"label": if s == 1 || s == 9 { "bad" } else { truth(s) }})
    })
    .await;
    let dan_done = label_all(&app, &dan, "sentiment", |t| json!({"label": truth(seq_of(t))})).await;
    let r = submit(&app, &ben, "sentiment", held["id"].as_str().expect("id"), json!({"label": "good"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "an expired hold cannot be submitted: {}", r.text());
    let ben_done = label_all(&app, &ben, "sentiment", |t| json!({"label": truth(seq_of(t))})).await;

    // 8 items × 3 annotations, plus each labeler's gold item when they drew it.
    let detail = app.call(Method::GET, "/api/v1/labeling/jobs/sentiment", Auth::Bearer(&admin), None).await.json();
    let progress = &detail["progress"];
    assert_eq!(progress["annotations"], 24, "{detail}");
    assert_eq!(progress["items_done"], 8);
    assert_eq!(progress["skips"], 1);
    assert_eq!(progress["held"], 0);
    assert_eq!(detail["job"]["status"], "Completed");
    let gold_answers = progress["gold_answers"].as_i64().expect("gold answers");
    assert_eq!(1 + ann_rest + cat_done + dan_done + ben_done, 24 + gold_answers as usize);
    assert!(gold_answers <= 4);
    // The job is done: nothing more is handed out.
    let r = next(&app, &dan, "sentiment", None).await.json();
    assert_eq!((r["task"].clone(), r["job_status"].clone()), (Value::Null, json!("Completed")));

    // Labelers label; the output and the quality report are for the job's owners.
    for path in ["output", "quality"] {
        let r =
            app.call(Method::GET, &format!("/api/v1/labeling/jobs/sentiment/{path}"), Auth::Bearer(&dan), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text());
    }
    let r = app.call(Method::GET, "/api/v1/labeling/jobs/sentiment/output", Auth::Bearer(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("application/x-ndjson"));
    let lines = manifest_lines(&r);
    assert_eq!(lines.len(), 8, "every item but the gold one");
    for (n, line) in lines.iter().enumerate() {
        let seq = n as i64 + 1;
        assert_eq!(line["dataset-item"], seq);
        assert_eq!(line["source"], format!("review {seq} {}", truth(seq)));
        let meta = &line["sentiment-metadata"];
        // Two right labels outvote cat's wrong one on item 1.
        assert_eq!(meta["class-name"], truth(seq), "{line}");
        assert_eq!(line["sentiment"], if truth(seq) == "good" { 0 } else { 1 });
        assert_eq!(meta["type"], "groundtruth/text-classification");
        assert_eq!(meta["job-name"], "labeling-job/sentiment");
        assert_eq!(meta["human-annotated"], "yes");
        let confidence = meta["confidence"].as_f64().expect("confidence");
        assert!(confidence > 0.0 && confidence <= 1.0, "{line}");
    }

    let quality =
        app.call(Method::GET, "/api/v1/labeling/jobs/sentiment/quality", Auth::Bearer(&admin), None).await.json();
    let worker =
        |name: &str| quality["workers"].as_array().expect("workers").iter().find(|w| w["worker"] == name).cloned();
    let cat_q = worker("cat").expect("cat");
    if cat_q["gold_answers"] == 1 {
        assert_eq!(cat_q["gold_accuracy"], 0.0, "cat answered the gold item wrong");
    }
    // Gold tasks come at random, so who labeled how much varies; one of the four may
    // find nothing left.
    assert!(quality["workers"].as_array().expect("workers").len() >= 3, "{quality}");
    for name in ["ann", "ben", "dan"] {
        let Some(w) = worker(name) else { continue };
        if w["gold_answers"] == 1 {
            assert_eq!(w["gold_accuracy"], 1.0, "{w}");
        }
        assert_eq!(w["consensus_agreement"], 1.0, "{w}");
    }
    assert_eq!(worker("ann").expect("ann")["skips"], 1);
    let fleiss = quality["fleiss_kappa"].as_f64().expect("fleiss");
    assert!(fleiss > 0.5 && fleiss < 1.0, "one disagreement: {fleiss}");
    assert!(quality["krippendorff_alpha"].as_f64().is_some());
    // Rows: consolidated class; columns: the worker's class. cat's one slip on item 1.
    assert_eq!(quality["confusion"], json!([[11, 1], [0, 12]]), "{quality}");
    assert!(!quality["pairs"].as_array().expect("pairs").is_empty());
}

#[tokio::test]
async fn many_labelers_at_once_never_over_assign_an_item() {
    let app = TestApp::new().await;
    let admin = studio(&app, &["crowd"], 20).await;
    let spec = json!({
        "name": "crowd-job", "dataset": "reviews", "task_type": "text_classification",
        "categories": [{"name": "good"}, {"name": "bad"}], "teams": ["crowd"], "workers_per_item": 3,
    });
    assert_eq!(
        app.call(Method::POST, "/api/v1/labeling/jobs", Auth::Bearer(&admin), Some(spec)).await.status,
        StatusCode::CREATED
    );
    let mut tokens = Vec::new();
    for n in 0..12 {
        tokens.push(labeler(&app, &format!("w{n}"), &["crowd"]).await);
    }
    let app = std::sync::Arc::new(app);
    let mut handles = Vec::new();
    for token in tokens {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            label_all(&app, &token, "crowd-job", |t| json!({"label": truth(seq_of(t))})).await
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.expect("labeler");
    }
    assert_eq!(total, 60, "20 items × 3, no more");
    let counts: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT item_seq, CAST(COUNT(DISTINCT worker_id) AS BIGINT) FROM labeling_tasks WHERE status = 'submitted' GROUP BY item_seq",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .expect("counts");
    assert_eq!(counts.len(), 20);
    assert!(counts.iter().all(|(_, n)| *n == 3), "{counts:?}");
    let detail = app.call(Method::GET, "/api/v1/labeling/jobs/crowd-job", Auth::Bearer(&admin), None).await.json();
    assert_eq!(detail["job"]["status"], "Completed", "{detail}");

    // Had the last submission's request died before consolidating, the job would sit
    // at InProgress with nothing left: the next read consolidates it.
    sqlx::query("UPDATE labeling_jobs SET status = 'InProgress', consolidated_at = NULL, completed_at = NULL")
        .execute(&app.state.db.pool)
        .await
        .expect("undo consolidation");
    sqlx::query("UPDATE labeling_items SET result = NULL, confidence = NULL")
        .execute(&app.state.db.pool)
        .await
        .expect("undo");
    let r = app.call(Method::GET, "/api/v1/labeling/jobs/crowd-job/output", Auth::Bearer(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(manifest_lines(&r).len(), 20);
    let detail = app.call(Method::GET, "/api/v1/labeling/jobs/crowd-job", Auth::Bearer(&admin), None).await.json();
    assert_eq!(detail["job"]["status"], "Completed", "{detail}");
}

#[tokio::test]
async fn boxes_go_through_review_and_entities_are_checked() {
    let app = TestApp::new().await;
    let admin = studio(&app, &["boxers"], 2).await;
    let r = app
        .call(Method::POST, "/api/v1/datasets", Auth::Bearer(&admin), Some(json!({"name": "street", "kind": "image"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app.upload_batch(&admin, "street", &[("file", Some("a.png"), PNG), ("file", Some("b.png"), PNG)]).await;
    assert_eq!(r.json()["item_count"], 2, "{}", r.text());
    let spec = json!({
        "name": "cars", "dataset": "street", "task_type": "bounding_box", "workers_per_item": 2,
        "categories": [{"name": "car"}, {"name": "person"}], "teams": ["boxers"], "review_below": 0.7,
    });
    let r = app.call(Method::POST, "/api/v1/labeling/jobs", Auth::Bearer(&admin), Some(spec)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let ann = labeler(&app, "ann", &["boxers"]).await;
    let ben = labeler(&app, "ben", &["boxers"]).await;
    let other = labeler(&app, "other", &[]).await;

    // Labelers of the job's team get its images; others do not.
    let task = next(&app, &ann, "cars", None).await.json()["task"].clone();
    let content = format!("/api/v1/labeling/jobs/cars/items/{}/content", seq_of(&task));
    let r = app.call(Method::GET, &content, Auth::Bearer(&ann), None).await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, PNG));
    assert_eq!(r.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(app.call(Method::GET, &content, Auth::Bearer(&other), None).await.status, StatusCode::FORBIDDEN);
    // A labeler of the team sees only the items given to them.
    let r = app.call(Method::GET, &content, Auth::Bearer(&ben), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.text().contains("was not given to you"), "{}", r.text());

    let size = json!({"width": 200, "height": 100});
    let outside =
        json!({"boxes": [{"label": "car", "left": 150, "top": 0, "width": 100, "height": 20}], "image_size": size});
    let r = submit(&app, &ann, "cars", task["id"].as_str().expect("id"), outside).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("box 1 lies outside the 200x100 image"), "{}", r.text());

    // Both agree on item 1's car; on item 2 ann sees a car and ben a person.
    let car =
        json!({"boxes": [{"label": "car", "left": 10, "top": 10, "width": 50, "height": 40}], "image_size": size});
    let person =
        json!({"boxes": [{"label": "person", "left": 100, "top": 10, "width": 20, "height": 60}], "image_size": size});
    assert_eq!(label_all(&app, &ann, "cars", |_| car.clone()).await, 2);
    assert_eq!(label_all(&app, &ben, "cars", |t| if seq_of(t) == 1 { car.clone() } else { person.clone() }).await, 2);

    let detail = app.call(Method::GET, "/api/v1/labeling/jobs/cars", Auth::Bearer(&admin), None).await.json();
    assert_eq!(detail["job"]["status"], "Reviewing", "{detail}");
    assert_eq!(detail["progress"]["review_pending"], 1);

    let reviewer = accounts::create_user(
        &app.state.db,
        NewUser {
            username: "rita".into(),
            display_name: String::new(),
            password: common::PASSWORD.into(),
            policies: vec!["Reviewer".into()],
            groups: vec![],
        },
    )
    .await
    .expect("reviewer");
    let rita = app.token_for(&reviewer, None).await;
    let queue = app.call(Method::GET, "/api/v1/labeling/jobs/cars/review", Auth::Bearer(&rita), None).await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.text());
    let queue = queue.json();
    assert_eq!(queue.as_array().expect("queue").len(), 1, "{queue}");
    assert_eq!(queue[0]["item_seq"], 2);
    assert_eq!(queue[0]["annotations"].as_array().expect("annotations").len(), 2);
    // Each box has the support of one worker of two: both kept, each with confidence 0.5.
    assert_eq!(queue[0]["outcome"]["answer"]["boxes"].as_array().expect("boxes").len(), 2, "{queue}");
    assert_eq!(queue[0]["confidence"], 0.5);
    let r = app
        .call(Method::POST, "/api/v1/labeling/jobs/cars/review/2", Auth::Bearer(&ann), Some(json!({"answer": person})))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "labelers do not review");
    let r = app
        .call(Method::POST, "/api/v1/labeling/jobs/cars/review/2", Auth::Bearer(&rita), Some(json!({"answer": person})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["verdict"], "corrected");
    let r = app
        .call(Method::POST, "/api/v1/labeling/jobs/cars/review/2", Auth::Bearer(&rita), Some(json!({"answer": person})))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("already reviewed by rita"), "{}", r.text());

    let detail = app.call(Method::GET, "/api/v1/labeling/jobs/cars", Auth::Bearer(&admin), None).await.json();
    assert_eq!(detail["job"]["status"], "Completed", "{detail}");
    let r = app.call(Method::GET, "/api/v1/labeling/jobs/cars/output", Auth::Bearer(&admin), None).await;
    let lines = manifest_lines(&r);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["source-ref"], "a.png");
    assert_eq!(
        lines[0]["cars"],
        json!({"image_size": [{"width": 200, "height": 100, "depth": 3}],
               "annotations": [{"class_id": 0, "left": 10.0, "top": 10.0, "width": 50.0, "height": 40.0}]})
    );
    assert_eq!(lines[0]["cars-metadata"]["class-map"], json!({"0": "car"}));
    assert_eq!(lines[0]["cars-metadata"]["type"], "groundtruth/object-detection");
    assert_eq!(lines[1]["cars"]["annotations"][0]["class_id"], 1);
    assert_eq!(lines[1]["cars-metadata"]["review"], "corrected");

    // Named entities: spans must lie in the text and not overlap.
    let spec = json!({
        "name": "names.v1", "dataset": "reviews", "task_type": "named_entity", "workers_per_item": 1,
        "categories": [{"name": "NUM"}], "teams": ["boxers"],
    });
    assert_eq!(
        app.call(Method::POST, "/api/v1/labeling/jobs", Auth::Bearer(&admin), Some(spec)).await.status,
        StatusCode::CREATED
    );
    let task = next(&app, &ann, "names.v1", None).await.json()["task"].clone();
    let chars = task["text"].as_str().expect("text").chars().count();
    let id = task["id"].as_str().expect("id").to_string();
    let r = submit(&app, &ann, "names.v1", &id, json!({"entities": [{"label": "NUM", "start": 2, "end": chars + 1}]}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let r = submit(&app, &ann, "names.v1", &id, json!({"entities": [{"label": "NUM", "start": 7, "end": 8}]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    label_all(&app, &ann, "names.v1", |_| json!({"entities": []})).await;
    let r = app.call(Method::GET, "/api/v1/labeling/jobs/names.v1/output", Auth::Bearer(&admin), None).await;
    let lines = manifest_lines(&r);
    // The label attribute defaults to the job name with "." made "-".
    assert_eq!(
        lines[0]["names-v1"]["annotations"]["entities"],
        json!([{"label": "NUM", "startOffset": 7, "endOffset": 8}])
    );
    assert_eq!(lines[0]["names-v1-metadata"]["confidence"], 0.0, "one worker confirms nothing");

    // Stopping a job consolidates what it has; it stays Stopped and hands out nothing.
    let spec = json!({
        "name": "partial", "dataset": "reviews", "task_type": "text_multi_label", "workers_per_item": 2,
        "categories": [{"name": "short"}, {"name": "english"}], "teams": ["boxers"],
    });
    assert_eq!(
        app.call(Method::POST, "/api/v1/labeling/jobs", Auth::Bearer(&admin), Some(spec)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(label_all(&app, &ann, "partial", |_| json!({"labels": ["english", "short"]})).await, 2);
    let r = app.call(Method::POST, "/api/v1/labeling/jobs/partial/stop", Auth::Bearer(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["job"]["status"], "Stopped");
    let r = next(&app, &ben, "partial", None).await.json();
    assert_eq!((r["task"].clone(), r["job_status"].clone()), (Value::Null, json!("Stopped")));
    let r = app.call(Method::POST, "/api/v1/labeling/jobs/partial/stop", Auth::Bearer(&admin), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let lines = manifest_lines(
        &app.call(Method::GET, "/api/v1/labeling/jobs/partial/output", Auth::Bearer(&admin), None).await,
    );
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["partial"], json!([0, 1]), "in category order");
    assert_eq!(lines[0]["partial-metadata"]["class-map"], json!({"0": "short", "1": "english"}));
    assert_eq!(lines[0]["partial-metadata"]["type"], "groundtruth/text-classification-multilabel");
}
