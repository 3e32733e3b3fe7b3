//! The compute plane end to end: a real server on a loopback port, real
//! `atelier-agent` processes, real Python training scripts and the built-in tabular
//! algorithm, driven through the REST API a user would call.

#[path = "../../server/tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{Auth, TestApp};
use serde_json::{json, Value};
use support::*;

const CONTRACT_SCRIPT: &str = r#"
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--lr", type=float)
args = parser.parse_args()
hps = json.load(open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "hyperparameters.json")))
assert hps == {"epochs": "3", "lr": "0.5"}, hps
assert json.loads(os.environ["SM_HPS"]) == {"epochs": 3, "lr": 0.5}, os.environ["SM_HPS"]
assert os.environ["SM_HP_EPOCHS"] == "3"
assert json.loads(os.environ["SM_CHANNELS"]) == ["train"]
assert os.environ["CUDA_VISIBLE_DEVICES"] == "", "a CPU job sees no GPU"
assert os.environ["SM_NUM_GPUS"] == "0"
assert os.environ["TRAINING_JOB_NAME"] == "contract"
assert json.loads(os.environ["SM_HOSTS"]) == [os.environ["SM_CURRENT_HOST"]]
rows = open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "data.csv")).read().strip().splitlines()
print(f"rows={len(rows)} host={os.environ['SM_CURRENT_HOST']}")
loss = 1.0
for epoch in range(args.epochs):
    loss *= args.lr
    print(f"epoch={epoch + 1} loss={loss}")
print("warning: just testing stderr", file=sys.stderr)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as f:
    f.write(f"trained on {len(rows)} rows")
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "report.txt"), "w") as f:
    f.write("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_job_runs_with_the_sagemaker_contract() {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "cpu-1").await;
    let work = temp_dir("agent");
    let _agent = Agent::start(&url, &node_token, &work, &["zone=a"]);
    let node = wait_node(&app, &token, "cpu-1", "Ready").await;
    assert!(node["cpus"].as_i64().is_some_and(|c| c >= 1), "{node}");
    assert!(node["memory_mb"].as_i64().is_some_and(|m| m > 0), "{node}");
    assert_eq!(node["labels"]["zone"], "a");
    // This machine has no NVIDIA driver: a CPU node, registered without error.
    assert_eq!(node["gpus"], json!([]));

    let script = upload(&app, &token, "train.py", CONTRACT_SCRIPT).await;
    let data = upload(&app, &token, "data.csv", "a,b\n1,2\n3,4\n5,6\n").await;
    let spec = json!({
        "algorithm": {"type": "script", "entry_point": "train.py", "code": [script]},
        "hyperparameters": {"epochs": "3", "lr": "0.5"},
        "channels": [{"name": "train", "artifacts": [data]}],
        "metric_definitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
        "resources": {"cpus": 1, "memory_mb": 256, "labels": {"zone": "a"}}
    });
    let r = submit(&app, &token, "contract", spec.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let done = wait_job(&app, &token, "contract", 60, terminal).await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}\n{}", logs(&app, &token, "contract").await);
    assert_eq!(done["job"]["node"], "cpu-1");

    let states: Vec<&str> =
        done["events"].as_array().expect("events").iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(states, ["Pending", "Starting", "Downloading", "Training", "Uploading", "Completed"]);
    let log = logs(&app, &token, "contract").await;
    assert!(log.contains("rows=4 host=cpu-1"), "{log}");
    assert!(log.contains("warning: just testing stderr"), "{log}");
    let m = metrics(&app, &token, "contract").await;
    let losses: Vec<f64> =
        m["loss"].as_array().expect("loss series").iter().filter_map(|p| p["value"].as_f64()).collect();
    assert_eq!(losses, [0.5, 0.25, 0.125]);
    assert_eq!(done["job"]["final_metrics"]["loss"], 0.125);

    let artifacts = done["artifacts"].as_array().expect("artifacts");
    let model = artifacts.iter().find(|a| a["kind"] == "model").expect("a model artifact");
    let files = untar(&download(&app, &token, model["id"].as_str().expect("id")).await);
    assert_eq!(files.get("model.txt").map(Vec::as_slice), Some(&b"trained on 4 rows"[..]), "{files:?}");
    assert!(artifacts.iter().any(|a| a["kind"] == "output" && a["name"] == "output.tar.gz"));
    assert_eq!(done["inputs"]["train"][0]["name"], "data.csv");

    // Every transition was audited, by the node.
    let audit =
        app.call(Method::GET, "/api/v1/audit-events?action=agent:ReportJobStatus", Auth::Bearer(&token), None).await;
    let summaries: Vec<String> = audit.json()["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["summary"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    assert!(summaries.iter().any(|s| s.contains("Uploading -> Completed")), "{summaries:?}");

    // A failing script: Failed, with the reason from the end of its stderr.
    let failing =
        upload(&app, &token, "fail.py", "import sys\nprint('about to fail')\nsys.exit('boom: column x is missing')\n")
            .await;
    let spec = json!({"algorithm": {"type": "script", "entry_point": "fail.py", "code": [failing]}, "resources": {"memory_mb": 128}});
    assert_eq!(submit(&app, &token, "failing", spec).await.status, StatusCode::CREATED);
    let failed = wait_job(&app, &token, "failing", 60, terminal).await;
    assert_eq!(failed["job"]["state"], "Failed");
    let message = failed["job"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exit code 1") && message.contains("boom: column x is missing"), "{message}");
    // A failed job has no model to register.
    let r = app.call(Method::POST, "/api/v1/model-groups", Auth::Bearer(&token), Some(json!({"name": "m"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app
        .call(
            Method::POST,
            "/api/v1/model-groups/m/versions",
            Auth::Bearer(&token),
            Some(json!({"training_job": "failing"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("training job failing is Failed"), "{}", r.text());
    let _ = std::fs::remove_dir_all(work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_tabular_job_learns_and_saves_a_model() {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "cpu-1").await;
    let work = temp_dir("agent");
    let _agent = Agent::start(&url, &node_token, &work, &[]);
    wait_node(&app, &token, "cpu-1", "Ready").await;

    // Two clusters that a linear boundary separates, plus a categorical column.
    let mut csv = String::from("x1,x2,colour,label\n");
    let mut seed = 7u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
    };
    for i in 0..400 {
        let (x1, x2) = (next(), next());
        let label = if x1 + x2 > 0.0 { "yes" } else { "no" };
        let colour = ["red", "green", "blue"][i % 3];
        csv.push_str(&format!("{x1:.4},{x2:.4},{colour},{label}\n"));
    }
    let data = upload(&app, &token, "train.csv", csv).await;
    let spec = json!({
        "algorithm": {"type": "builtin", "name": "tabular"},
        "hyperparameters": {"epochs": "25", "batch_size": "32", "learning_rate": "0.02"},
        "channels": [{"name": "train", "artifacts": [data]}],
        "resources": {"memory_mb": 512}
    });
    let r = submit(&app, &token, "tabular", spec).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // Defaults were filled in and are shown.
    assert_eq!(r.json()["spec"]["hyperparameters"]["hidden_units"], "64");
    let done = wait_job(&app, &token, "tabular", 120, terminal).await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}\n{}", logs(&app, &token, "tabular").await);
    let m = metrics(&app, &token, "tabular").await;
    let losses: Vec<f64> =
        m["train_loss"].as_array().expect("train_loss").iter().filter_map(|p| p["value"].as_f64()).collect();
    assert_eq!(losses.len(), 25);
    assert!(losses[24] < losses[0] * 0.5, "loss should fall: {losses:?}");
    let accuracy = done["job"]["final_metrics"]["validation_accuracy"].as_f64().expect("validation accuracy");
    assert!(accuracy > 0.85, "validation accuracy {accuracy}");
    let model =
        done["artifacts"].as_array().and_then(|a| a.iter().find(|a| a["kind"] == "model").cloned()).expect("model");
    let files = untar(&download(&app, &token, model["id"].as_str().expect("id")).await);
    assert!(files.contains_key("model.safetensors"), "{:?}", files.keys());
    let spec: Value = serde_json::from_slice(&files["model.json"]).expect("model.json");
    assert_eq!(spec["task"], "classification");
    assert_eq!(spec["classes"], json!(["no", "yes"]));
    let _ = std::fs::remove_dir_all(work);
}

/// A PNG of `size` square pixels around `base` colour, with noise from `seed`.
fn noisy_png(base: [u8; 3], size: u32, seed: &mut u64) -> Vec<u8> {
    let mut image = image::RgbImage::new(size, size);
    for pixel in image.pixels_mut() {
        for (c, value) in base.iter().enumerate() {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = ((*seed >> 33) % 96) as i32 - 48;
            pixel[c] = (i32::from(*value) + noise).clamp(0, 255) as u8;
        }
    }
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode png");
    png
}

/// A Ground Truth output manifest line for a classification item.
fn manifest_line(source: (&str, &str), attribute: &str, index: usize, class: &str) -> String {
    let mut line = serde_json::Map::new();
    line.insert(source.0.into(), json!(source.1));
    line.insert(attribute.into(), json!(index));
    line.insert(
        format!("{attribute}-metadata"),
        json!({"class-name": class, "confidence": 0.9, "human-annotated": "yes", "type": "groundtruth/classification"}),
    );
    Value::Object(line).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_text_and_image_classifiers_learn_from_labeling_manifests() {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "cpu-1").await;
    let work = temp_dir("agent");
    let _agent = Agent::start(&url, &node_token, &work, &[]);
    wait_node(&app, &token, "cpu-1", "Ready").await;
    let mut seed = 11u64;
    let mut pick = |words: &[&'static str]| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        words[(seed >> 33) as usize % words.len()]
    };

    // Text: reviews whose sentiment shows in a few words among shared filler.
    let positive = ["great", "wonderful", "excellent", "loved", "superb"];
    let negative = ["awful", "boring", "terrible", "hated", "dull"];
    let filler = ["the", "film", "was", "plot", "acting", "really", "a", "story"];
    let mut lines = Vec::new();
    for i in 0..240 {
        let (class, index, words) = if i % 2 == 0 { ("positive", 1, &positive) } else { ("negative", 0, &negative) };
        let text = format!("{} {} {} {} {}", pick(&filler), pick(words), pick(&filler), pick(&filler), pick(words));
        lines.push(manifest_line(("source", &text), "sentiment", index, class));
    }
    lines.push(json!({"source": "never labeled", "sentiment-metadata": {"failure-reason": "timed out"}}).to_string());
    let manifest = upload(&app, &token, "output.manifest", lines.join("\n")).await;
    let spec = json!({
        "algorithm": {"type": "builtin", "name": "text_classification"},
        "hyperparameters": {"epochs": "15"},
        "channels": [{"name": "train", "artifacts": [manifest]}],
        "resources": {"memory_mb": 512}
    });
    let r = submit(&app, &token, "sentiment", spec).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["spec"]["hyperparameters"]["max_vocabulary"], "5000");

    // Images: reddish and bluish noise, referenced by S3 URLs whose file names were
    // uploaded into the channel.
    let mut image_seed = 5u64;
    let mut artifacts = Vec::new();
    let mut lines = Vec::new();
    for i in 0..48 {
        let (class, index, colour) = if i % 2 == 0 { ("red", 0, [200, 60, 60]) } else { ("blue", 1, [60, 60, 200]) };
        let name = format!("img-{i}.png");
        artifacts.push(upload(&app, &token, &name, noisy_png(colour, 16, &mut image_seed)).await);
        lines.push(manifest_line(("source-ref", &format!("s3://labels/images/{name}")), "colour", index, class));
    }
    let manifest = upload(&app, &token, "colours.jsonl", lines.join("\n")).await;
    artifacts.push(manifest.clone());
    let spec = json!({
        "algorithm": {"type": "builtin", "name": "image_classification"},
        "hyperparameters": {"epochs": "12", "image_size": "16", "channels": "8", "batch_size": "8"},
        "channels": [{"name": "train", "artifacts": artifacts}],
        "resources": {"memory_mb": 512}
    });
    let r = submit(&app, &token, "colours", spec).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // A manifest naming an image the channel lacks fails with the line and the name.
    let broken_lines = [
        manifest_line(("source-ref", "s3://b/missing.png"), "c", 0, "x"),
        manifest_line(("source-ref", "img-0.png"), "c", 1, "y"),
    ];
    let broken = upload(&app, &token, "broken.manifest", broken_lines.join("\n")).await;
    let spec = json!({
        "algorithm": {"type": "builtin", "name": "image_classification"},
        "channels": [{"name": "train", "artifacts": [broken, artifacts[0].clone()]}],
        "resources": {"memory_mb": 256}
    });
    assert_eq!(submit(&app, &token, "broken", spec).await.status, StatusCode::CREATED);

    for (name, classes) in [("sentiment", json!(["negative", "positive"])), ("colours", json!(["red", "blue"]))] {
        let done = wait_job(&app, &token, name, 180, terminal).await;
        assert_eq!(done["job"]["state"], "Completed", "{done:#}\n{}", logs(&app, &token, name).await);
        let accuracy = done["job"]["final_metrics"]["validation_accuracy"].as_f64().expect("validation accuracy");
        assert!(accuracy >= 0.9, "{name}: validation accuracy {accuracy}\n{}", logs(&app, &token, name).await);
        let m = metrics(&app, &token, name).await;
        let losses: Vec<f64> =
            m["train_loss"].as_array().expect("train_loss").iter().filter_map(|p| p["value"].as_f64()).collect();
        assert!(losses.last() < losses.first(), "{name}: loss should fall: {losses:?}");
        let model =
            done["artifacts"].as_array().and_then(|a| a.iter().find(|a| a["kind"] == "model").cloned()).expect("model");
        let files = untar(&download(&app, &token, model["id"].as_str().expect("id")).await);
        assert!(files.contains_key("model.safetensors"), "{:?}", files.keys());
        let spec: Value = serde_json::from_slice(&files["model.json"]).expect("model.json");
        // Classes in the labeling job's index order.
        assert_eq!(spec["classes"], classes, "{spec}");
    }
    let log = logs(&app, &token, "sentiment").await;
    assert!(log.contains("1 unlabeled skipped"), "{log}");
    let failed = wait_job(&app, &token, "broken", 60, terminal).await;
    assert_eq!(failed["job"]["state"], "Failed");
    let message = failed["job"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("broken.manifest line 1: the image s3://b/missing.png is not in the channel"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(work);
}

const DATASET_SCRIPT: &str = r#"
import json, os
train = os.environ["SM_CHANNEL_TRAIN"]
rows = [json.loads(line) for line in open(os.path.join(train, "reviews.manifest"))]
print("texts=%d first=%s" % (len(rows), rows[0]["source"]))
images = os.environ["SM_CHANNEL_IMAGES"]
refs = [json.loads(line)["source-ref"] for line in open(os.path.join(images, "pics.manifest"))]
assert all(os.path.getsize(os.path.join(images, r)) > 0 for r in refs), refs
print("images=" + ",".join(sorted(os.listdir(images))))
"#;

async fn new_dataset(app: &TestApp, token: &str, name: &str, kind: &str, files: &[(&str, &[u8])]) {
    let r = app
        .call(Method::POST, "/api/v1/datasets", Auth::Bearer(token), Some(json!({"name": name, "kind": kind})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    if files.is_empty() {
        return;
    }
    let parts: Vec<(&str, Option<&str>, &[u8])> = files.iter().map(|(n, b)| ("file", Some(*n), *b)).collect();
    let r = app.upload_batch(token, name, &parts).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_are_training_channels() {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "cpu-1").await;
    let work = temp_dir("agent");
    let _agent = Agent::start(&url, &node_token, &work, &[]);
    wait_node(&app, &token, "cpu-1", "Ready").await;
    new_dataset(&app, &token, "reviews", "text", &[("r.csv", b"text\nGreat film\nDull\n")]).await;
    let mut seed = 3u64;
    let (a, b) = (noisy_png([200, 0, 0], 4, &mut seed), noisy_png([0, 0, 200], 4, &mut seed));
    new_dataset(&app, &token, "pics", "image", &[("a.png", &a), ("b.png", &b)]).await;
    new_dataset(&app, &token, "empty", "image", &[]).await;

    let script = upload(&app, &token, "read.py", DATASET_SCRIPT).await;
    let spec = |channels: Value| {
        json!({"algorithm": {"type": "script", "entry_point": "read.py", "code": [script]},
               "channels": channels, "resources": {"memory_mb": 128}})
    };
    for (channels, expected) in [
        (json!([{"name": "train", "dataset": "nope"}]), "dataset nope: dataset not found"),
        (json!([{"name": "train", "dataset": "empty"}]), "dataset empty has no items"),
    ] {
        let r = submit(&app, &token, "bad", spec(channels)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
        assert!(r.text().contains(expected), "{}", r.text());
    }
    let r = submit(
        &app,
        &token,
        "from-datasets",
        spec(json!([{"name": "train", "dataset": "reviews"}, {"name": "images", "dataset": "pics"}])),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let done = wait_job(&app, &token, "from-datasets", 60, terminal).await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}\n{}", logs(&app, &token, "from-datasets").await);
    let log = logs(&app, &token, "from-datasets").await;
    assert!(log.contains("texts=2 first=Great film"), "{log}");
    assert!(log.contains("images=a.png,b.png,pics.manifest"), "{log}");
    // Lineage: the job names the datasets it read.
    assert!(done["inputs"]["images (dataset pics, 3 files)"].is_array(), "{}", done["inputs"]);
    assert_eq!(done["job"]["spec"]["channels"][0]["dataset"], "reviews");
    let _ = std::fs::remove_dir_all(work);
}

/// The loop's middle: images labeled through the task queue become a training channel
/// (the job's output manifest and its images), and the built-in classifier learns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labeling_jobs_output_trains_a_classifier() {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "cpu-1").await;
    let work = temp_dir("agent");
    let _agent = Agent::start(&url, &node_token, &work, &[]);
    let mut seed = 11u64;
    let images: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| {
            let colour = if i % 2 == 0 { [200, 30, 30] } else { [30, 30, 200] };
            (format!("shape-{i}.png"), noisy_png(colour, 12, &mut seed))
        })
        .collect();
    let files: Vec<(&str, &[u8])> = images.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    new_dataset(&app, &token, "shapes", "image", &files).await;
    let r = app.call(Method::POST, "/api/v1/groups", Auth::Bearer(&token), Some(json!({"name": "raters"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app
        .call(
            Method::POST,
            "/api/v1/labeling/jobs",
            Auth::Bearer(&token),
            Some(json!({"name": "shapes-1", "dataset": "shapes", "task_type": "image_classification",
                        "categories": [{"name": "red"}, {"name": "blue"}], "teams": ["raters"], "workers_per_item": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let spec = json!({
        "algorithm": {"type": "builtin", "name": "image_classification"},
        "hyperparameters": {"epochs": "12", "image_size": "12", "channels": "8", "batch_size": "8"},
        "channels": [{"name": "train", "labeling_job": "shapes-1"}],
        "resources": {"memory_mb": 512}
    });
    let r = submit(&app, &token, "too-soon", spec.clone()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("labeling job shapes-1 is InProgress"), "{}", r.text());

    // The administrator labels every image through the queue.
    loop {
        let r = app.call(Method::POST, "/api/v1/labeling/jobs/shapes-1/tasks/next", Auth::Bearer(&token), None).await;
        let task = r.json()["task"].clone();
        if task.is_null() {
            break;
        }
        let label = if task["item_seq"].as_i64().expect("seq") % 2 == 1 { "red" } else { "blue" };
        let path = format!("/api/v1/labeling/jobs/shapes-1/tasks/{}/submit", task["id"].as_str().expect("id"));
        let r = app.call(Method::POST, &path, Auth::Bearer(&token), Some(json!({"answer": {"label": label}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    wait_node(&app, &token, "cpu-1", "Ready").await;
    let r = submit(&app, &token, "from-labels", spec).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let done = wait_job(&app, &token, "from-labels", 180, terminal).await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}\n{}", logs(&app, &token, "from-labels").await);
    let accuracy = done["job"]["final_metrics"]["validation_accuracy"].as_f64().expect("validation accuracy");
    assert!(accuracy >= 0.9, "validation accuracy {accuracy}\n{}", logs(&app, &token, "from-labels").await);
    assert!(done["inputs"]["train (labeling job shapes-1, 25 files)"].is_array(), "{}", done["inputs"]);

    // The model goes into the registry with its job's metrics and lineage; a failed or
    // unfinished job cannot be registered.
    let r = app.call(Method::POST, "/api/v1/model-groups", Auth::Bearer(&token), Some(json!({"name": "shapes"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let register = |job: &str| json!({"training_job": job, "description": "colours"});
    let r = app
        .call(Method::POST, "/api/v1/model-groups/shapes/versions", Auth::Bearer(&token), Some(register("too-soon")))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let r = app
        .call(Method::POST, "/api/v1/model-groups/shapes/versions", Auth::Bearer(&token), Some(register("from-labels")))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.json();
    assert_eq!((v["version"].clone(), v["status"].clone()), (json!(1), json!("PendingManualApproval")));
    assert_eq!(v["training_job"], "from-labels");
    assert_eq!(v["format"], "atelier");
    assert_eq!(v["metrics"]["validation_accuracy"].as_f64(), Some(accuracy));
    assert_eq!(v["hyperparameters"]["epochs"], "12");
    assert_eq!(v["lineage"], json!({"datasets": ["shapes"], "labeling_jobs": ["shapes-1"]}));
    let model = done["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["kind"] == "model")
        .cloned()
        .expect("a model artifact");
    assert_eq!(v["artifact"]["sha256"], model["sha256"]);
    let _ = std::fs::remove_dir_all(work);
}

/// Trains forever, telling the journal it is alive (and where) every 0.2 s.
const LOOP_SCRIPT: &str = r#"
import os, sys, time, urllib.request
journal = sys.argv[sys.argv.index("--journal") + 1]
while True:
    urllib.request.urlopen(journal, data=f"alive {os.environ['SM_CURRENT_HOST']}".encode(), timeout=5).read()
    print("still training", flush=True)
    time.sleep(0.2)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_job_terminates_its_process() {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "cpu-1").await;
    let work = temp_dir("agent");
    let _agent = Agent::start(&url, &node_token, &work, &[]);
    wait_node(&app, &token, "cpu-1", "Ready").await;
    let journal = Journal::start().await;
    let script = upload(&app, &token, "loop.py", LOOP_SCRIPT).await;
    let spec = json!({
        "algorithm": {"type": "script", "entry_point": "loop.py", "code": [script]},
        "hyperparameters": {"journal": journal.url},
        "resources": {"memory_mb": 128}
    });
    assert_eq!(submit(&app, &token, "looping", spec).await.status, StatusCode::CREATED);
    wait_job(&app, &token, "looping", 60, state_is("Training")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while journal.lines().is_empty() {
        assert!(Instant::now() < deadline, "the script never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let r = app.call(Method::POST, "/api/v1/training-jobs/looping/stop", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let stopped = wait_job(&app, &token, "looping", 30, terminal).await;
    let stopped_at = Instant::now();
    assert_eq!(stopped["job"]["state"], "Stopped");
    assert_eq!(stopped["job"]["message"], "stopped by admin");
    // A process still running would go on reporting every 0.2 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = journal.last(|_| true).expect("it reported");
    assert!(last <= stopped_at, "the training process still reports {:?} after the stop", last - stopped_at);
    // Stopping again is a conflict, not a second stop.
    let again = app.call(Method::POST, "/api/v1/training-jobs/looping/stop", Auth::Bearer(&token), None).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let _ = std::fs::remove_dir_all(work);
}

/// Counts to 12, one step every 0.3 s, keeping its progress in `checkpoints/` and
/// reporting each start, step and finish to the test's journal.
const RESUMABLE_SCRIPT: &str = r#"
import os, sys, time, urllib.request
journal = sys.argv[sys.argv.index("--journal") + 1]
def report(line):
    urllib.request.urlopen(journal, data=line.encode(), timeout=5).read()
host = os.environ["SM_CURRENT_HOST"]
ckpt = os.path.join(os.environ["SM_CHECKPOINT_DIR"], "step.txt")
start = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
report(f"start {start} {host}")
for step in range(start + 1, 13):
    time.sleep(0.3)
    with open(ckpt + ".tmp", "w") as f:
        f.write(str(step))
    os.replace(ckpt + ".tmp", ckpt)
    report(f"step {step} {host}")
    print(f"step={step}", flush=True)
report("done")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agents_job_is_requeued_and_resumes_from_its_checkpoint() {
    let (app, url, token) = studio().await;
    let first_token = add_node(&app, &token, "node-a").await;
    let work_a = temp_dir("agent-a");
    let mut first = Agent::start(&url, &first_token, &work_a, &[]);
    wait_node(&app, &token, "node-a", "Ready").await;

    let journal = Journal::start().await;
    let script = upload(&app, &token, "count.py", RESUMABLE_SCRIPT).await;
    let spec = json!({
        "algorithm": {"type": "script", "entry_point": "count.py", "code": [script]},
        "hyperparameters": {"journal": journal.url},
        "metric_definitions": [{"name": "step", "regex": "step=(\\d+)"}],
        "resources": {"memory_mb": 128}
    });
    assert_eq!(submit(&app, &token, "resumable", spec).await.status, StatusCode::CREATED);
    // Wait for progress and a synced checkpoint, then kill the agent outright.
    wait_job(&app, &token, "resumable", 60, state_is("Training")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = logs(&app, &token, "resumable").await;
        if log.contains("step=4") && log.contains("checkpoint saved") {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill();
    let killed_at = Instant::now();

    // A second node takes over once the first is found lost.
    let second_token = add_node(&app, &token, "node-b").await;
    let work_b = temp_dir("agent-b");
    let _second = Agent::start(&url, &second_token, &work_b, &[]);
    wait_node(&app, &token, "node-a", "Lost").await;
    let done = wait_job(&app, &token, "resumable", 90, terminal).await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}\n{}", logs(&app, &token, "resumable").await);
    assert_eq!(done["job"]["node"], "node-b");
    assert_eq!(done["job"]["attempt"], 2);

    // The first attempt's process died with its agent (its sandbox does): it reported
    // nothing after the kill (one report may have been on its way).
    let last_a = journal.last(|l| l.ends_with("node-a")).expect("node-a reported");
    assert!(
        last_a < killed_at + Duration::from_millis(500),
        "node-a went on {:?} after its agent died",
        last_a - killed_at
    );
    let lines = journal.lines();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let journal = lines.join("\n");
    assert_eq!(lines.first(), Some(&"start 0 node-a"), "{journal}");
    let resumed = lines.iter().find(|l| l.ends_with("node-b")).expect("a start on node-b");
    let from: i64 = resumed.split(' ').nth(1).and_then(|n| n.parse().ok()).expect("start step");
    // A checkpoint is synced every second, so it may trail the last printed step.
    assert!(from >= 1, "resumed from step {from}, not from the checkpoint: {journal}");
    // It finished exactly once: the first attempt's process died with its agent.
    assert_eq!(lines.iter().filter(|l| **l == "done").count(), 1, "{journal}");
    let states: Vec<&str> =
        done["events"].as_array().expect("events").iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(states.iter().filter(|s| **s == "Completed").count(), 1, "{states:?}");
    assert!(done["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["state"] == "Pending" && e["message"].as_str().is_some_and(|m| m.starts_with("requeued"))));
    let _ = std::fs::remove_dir_all(work_a);
    let _ = std::fs::remove_dir_all(work_b);
}

/// A TCP relay to the server that the test can cut: a network partition between one
/// agent and the server, with both still running.
struct Relay {
    url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn to(server_url: &str) -> Relay {
        let target = server_url.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let url = format!("http://{}", listener.local_addr().expect("relay address"));
        let relay = Relay { url, cut: Default::default(), connections: Default::default() };
        let (cut, connections) = (relay.cut.clone(), relay.connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().expect("relay lock").push(handle);
            }
        });
        relay
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().expect("relay lock").drain(..) {
            connection.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_agent_stops_its_job_before_it_runs_elsewhere() {
    let (app, url, token) = studio().await;
    let relay = Relay::to(&url).await;
    let first_token = add_node(&app, &token, "node-a").await;
    let work_a = temp_dir("agent-a");
    let _first = Agent::start(&relay.url, &first_token, &work_a, &[]);
    wait_node(&app, &token, "node-a", "Ready").await;

    let journal = Journal::start().await;
    let script = upload(&app, &token, "loop.py", LOOP_SCRIPT).await;
    let spec = json!({
        "algorithm": {"type": "script", "entry_point": "loop.py", "code": [script]},
        "hyperparameters": {"journal": journal.url},
        "resources": {"memory_mb": 128}
    });
    assert_eq!(submit(&app, &token, "partitioned", spec).await.status, StatusCode::CREATED);
    wait_job(&app, &token, "partitioned", 60, state_is("Training")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while journal.lines().is_empty() {
        assert!(Instant::now() < deadline, "the script never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cut node-a off. Its agent and the job's process keep running, but the agent
    // must kill the process before the lease lapses and the job starts on node-b.
    relay.cut();
    let cut_at = Instant::now();
    let second_token = add_node(&app, &token, "node-b").await;
    let work_b = temp_dir("agent-b");
    let _second = Agent::start(&url, &second_token, &work_b, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let started_b = loop {
        if let Some(at) = journal.first(|l| l == "alive node-b") {
            break at;
        }
        assert!(Instant::now() < deadline, "the job never restarted on node-b");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Attempt 1 reports every 0.2 s while it lives: its last report came before
    // attempt 2's first.
    let last_a = journal.last(|l| l == "alive node-a").expect("node-a reported");
    assert!(
        last_a < started_b,
        "attempt 2 started on node-b {:?} after the cut while attempt 1 still ran",
        started_b - cut_at
    );
    let detail = wait_job(&app, &token, "partitioned", 10, |d| d["job"]["attempt"] == 2).await;
    assert_eq!(detail["job"]["node"], "node-b");
    let r = app.call(Method::POST, "/api/v1/training-jobs/partitioned/stop", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    wait_job(&app, &token, "partitioned", 30, terminal).await;
    let _ = std::fs::remove_dir_all(work_a);
    let _ = std::fs::remove_dir_all(work_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_requeues_its_job_and_resumes_it() {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "node-a").await;
    let work = temp_dir("agent");
    let mut agent = Agent::start(&url, &node_token, &work, &[]);
    wait_node(&app, &token, "node-a", "Ready").await;
    let journal = Journal::start().await;
    let script = upload(&app, &token, "count.py", RESUMABLE_SCRIPT).await;
    let spec = json!({
        "algorithm": {"type": "script", "entry_point": "count.py", "code": [script]},
        "hyperparameters": {"journal": journal.url},
        "resources": {"memory_mb": 128}
    });
    assert_eq!(submit(&app, &token, "restarted", spec).await.status, StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = logs(&app, &token, "restarted").await;
        if log.contains("step=3") && log.contains("checkpoint saved") {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.kill();
    let work_dir = agent.work_dir.clone();
    drop(agent);
    let _agent = Agent::start(&url, &node_token, &work_dir, &[]);
    let done = wait_job(&app, &token, "restarted", 90, terminal).await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}");
    assert_eq!(done["job"]["attempt"], 2);
    let lines = journal.lines();
    let starts: Vec<&String> = lines.iter().filter(|l| l.starts_with("start")).collect();
    assert_eq!(lines.iter().filter(|l| *l == "done").count(), 1, "{lines:?}");
    assert!(starts.get(1).is_some_and(|l| !l.starts_with("start 0")), "resumed from its checkpoint: {lines:?}");
    let _ = std::fs::remove_dir_all(work);
}

/// Registers a node straight through the agent protocol (no agent process), so the
/// scheduler and the refusals can be checked deterministically.
async fn fake_node(app: &TestApp, token: &str, name: &str, cpus: u32, gpus: u32) -> String {
    let node_token = add_node(app, token, name).await;
    let gpu_list: Vec<Value> = (0..gpus)
        .map(|i| json!({"index": i, "uuid": format!("GPU-{name}-{i}"), "model": "Test GPU", "memory_mb": 16000}))
        .collect();
    let info = json!({"node": {"name": name, "hostname": "h", "os": "linux", "cpus": cpus, "memory_mb": 8000,
        "disk_free_mb": 1000, "gpus": gpu_list, "labels": {}, "agent_version": "test"}});
    let r = app.call(Method::POST, "/agent/v1/register", Auth::Bearer(&node_token), Some(info)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    node_token
}

#[tokio::test]
async fn a_waiting_work_poll_ends_when_the_server_is_told_to_stop() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let node_token = fake_node(&app, &token, "idle", 4, 0).await;
    // With nothing to do, the poll would wait its full 20 s; the stop ends it at once,
    // so a stopping server does not wait on its agents.
    let poll = app.call(Method::GET, "/agent/v1/work?wait=20", Auth::Bearer(&node_token), None);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.state.shutdown.cancel();
    };
    let (r, ()) = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(poll, stop) })
        .await
        .expect("the poll ended before its 20 s wait");
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

#[tokio::test]
async fn bad_input_and_impossible_requests_are_refused_clearly() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let node_token = fake_node(&app, &token, "small", 4, 1).await;
    let script = upload(&app, &token, "train.py", "print('hi')").await;
    let data = upload(&app, &token, "d.csv", "a,b\n1,2\n").await;
    let script_spec = |extra: Value| {
        let mut spec = json!({"algorithm": {"type": "script", "entry_point": "train.py", "code": [script]}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        spec
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({"algorithm": {"type": "builtin", "name": "xgboost"}}), "unknown built-in algorithm \"xgboost\""),
        (
            json!({"algorithm": {"type": "builtin", "name": "tabular"}, "hyperparameters": {"epoch": "3"},
                   "channels": [{"name": "train", "artifacts": [data]}]}),
            "unknown hyperparameter \"epoch\"",
        ),
        (
            json!({"algorithm": {"type": "builtin", "name": "tabular"}, "hyperparameters": {"epochs": "many"},
                   "channels": [{"name": "train", "artifacts": [data]}]}),
            "hyperparameter epochs: \"many\" is not an integer",
        ),
        (json!({"algorithm": {"type": "builtin", "name": "tabular"}}), "needs a \"train\" channel"),
        (json!({"algorithm": {"type": "script", "entry_point": "", "code": [script]}}), "entry point is missing"),
        (
            json!({"algorithm": {"type": "script", "entry_point": "main.py", "code": [script]}}),
            "not among the code files",
        ),
        (script_spec(json!({"channels": [{"name": "train", "artifacts": []}]})), "channel \"train\" is empty"),
        (script_spec(json!({"channels": [{"name": "train", "artifacts": ["nope"]}]})), "no artifact with id nope"),
        (script_spec(json!({"metric_definitions": [{"name": "loss", "regex": "loss=(["}]})), "metric loss: bad regex"),
        (script_spec(json!({"resources": {"gpus": 2}})), "no compute node can ever run this job"),
        (script_spec(json!({"resources": {"cpus": 8}})), "the largest node has 4 CPUs"),
    ];
    for (spec, expected) in cases {
        let r = submit(&app, &token, "bad", spec.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{spec}: {}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(expected), "{spec}: expected {expected:?} in {message:?}");
    }
    // Unknown fields and bad JSON in the spec are named.
    let r =
        submit(&app, &token, "bad", json!({"algorithm": {"type": "builtin", "name": "tabular"}, "hyperparamters": {}}))
            .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("hyperparamters"), "{}", r.text());
    // Nothing was created by the refusals.
    let list = app.call(Method::GET, "/api/v1/training-jobs", Auth::Bearer(&token), None).await;
    assert_eq!(list.json(), json!([]));
    // Path traversal in an upload's name.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/artifacts?name=..%2Fescape.py")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from("x"))
        .expect("request");
    assert_eq!(app.send(request).await.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Two jobs that each need the whole node: the second waits, and says why.
    let whole = script_spec(json!({"resources": {"cpus": 4, "gpus": 1}}));
    assert_eq!(submit(&app, &token, "first", whole.clone()).await.status, StatusCode::CREATED);
    assert_eq!(submit(&app, &token, "second", whole).await.status, StatusCode::CREATED);
    assert_eq!(submit(&app, &token, "second", script_spec(json!({}))).await.status, StatusCode::CONFLICT);
    let lease = app.call(Method::GET, "/agent/v1/work?wait=0", Auth::Bearer(&node_token), None).await;
    assert_eq!(lease.status, StatusCode::OK, "{}", lease.text());
    let leased = lease.json();
    assert_eq!(leased["job_name"], "first");
    assert_eq!(leased["gpus"], json!([0]));
    let nothing = app.call(Method::GET, "/agent/v1/work?wait=0", Auth::Bearer(&node_token), None).await;
    assert_eq!(nothing.status, StatusCode::NO_CONTENT);
    let second = job(&app, &token, "second").await;
    assert_eq!(second["job"]["state"], "Pending");
    assert_eq!(second["job"]["wait_reason"], "needs 1 GPU; largest free on any node is 0");

    // An agent reporting on a job it does not hold is refused, and nothing changes.
    let other = fake_node(&app, &token, "other", 4, 0).await;
    let job_id = leased["job_id"].as_str().expect("job id");
    let report = json!({"attempt": 1, "state": "Completed", "message": ""});
    let r = app
        .call(Method::POST, &format!("/agent/v1/jobs/{job_id}/status"), Auth::Bearer(&other), Some(report.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("not leased to node other"), "{}", r.text());
    assert_eq!(job(&app, &token, "first").await["job"]["state"], "Starting");
    // Nor may it read the job's inputs.
    let r = app
        .call(Method::GET, &format!("/agent/v1/jobs/{job_id}/inputs/{script}?attempt=1"), Auth::Bearer(&other), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // The holder may, but only the job's own inputs.
    let r = app
        .call(Method::GET, &format!("/agent/v1/jobs/{job_id}/inputs/{data}?attempt=1"), Auth::Bearer(&node_token), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // A backwards transition is refused.
    let r = app
        .call(
            Method::POST,
            &format!("/agent/v1/jobs/{job_id}/status"),
            Auth::Bearer(&node_token),
            Some(json!({"attempt": 1, "state": "Training"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = app
        .call(
            Method::POST,
            &format!("/agent/v1/jobs/{job_id}/status"),
            Auth::Bearer(&node_token),
            Some(json!({"attempt": 1, "state": "Downloading"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // A deregistered node's token stops working, and its job goes back to the queue.
    let r = app.call(Method::DELETE, "/api/v1/compute/nodes/small", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let hb = json!({"usage": {"cpu_pct": 1.0, "memory_used_mb": 1, "gpus": []}, "running": []});
    let r = app.call(Method::POST, "/agent/v1/heartbeat", Auth::Bearer(&node_token), Some(hb)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let first = job(&app, &token, "first").await;
    assert_eq!(first["job"]["state"], "Pending");
    assert!(first["job"]["message"].as_str().is_some_and(|m| m.contains("deregistered")), "{first}");
    // User tokens do not open agent routes, node tokens do not open user routes.
    let r = app.call(Method::GET, "/agent/v1/work?wait=0", Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app.call(Method::GET, "/api/v1/training-jobs", Auth::Bearer(&other), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn labelers_cannot_see_or_start_training_and_data_scientists_can() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let admin_token = app.token_for(&admin, None).await;
    fake_node(&app, &admin_token, "n", 2, 0).await;
    let labeler = app.create_user_with("lab", &["Labeler".to_string()]).await;
    let lab_token = app.token_for(&labeler, None).await;
    let scientist = app.create_user_with("sci", &["DataScientist".to_string()]).await;
    let sci_token = app.token_for(&scientist, None).await;
    let script = upload(&app, &sci_token, "t.py", "print(1)").await;
    let spec = json!({"algorithm": {"type": "script", "entry_point": "t.py", "code": [script]}});
    assert_eq!(submit(&app, &sci_token, "mine", spec.clone()).await.status, StatusCode::CREATED);
    assert_eq!(submit(&app, &lab_token, "theirs", spec).await.status, StatusCode::FORBIDDEN);
    let r = app.call(Method::GET, "/api/v1/training-jobs/mine", Auth::Bearer(&lab_token), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.call(Method::POST, "/api/v1/compute/nodes", Auth::Bearer(&sci_token), Some(json!({"name": "x"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.call(Method::GET, &format!("/api/v1/artifacts/{script}/content"), Auth::Bearer(&lab_token), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
