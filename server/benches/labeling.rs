//! Labeling throughput: `cargo bench -p atelier-server --bench labeling` (also run by
//! `cargo xtask bench`). Prints figures for the issue note; asserts nothing.
//!
//! 1. The labeler cycle: 200 labelers at once, each asking for the next task and
//!    submitting it, through the whole REST stack in process (token authentication,
//!    policies, the team condition, the queue, the audit log), on the embedded SQLite
//!    database. `BENCH_SECONDS` (default 20) sets the measured duration.
//! 2. Next-task latency against the queue's size: jobs over 10k, 100k and 1M items.
//! 3. Output manifest export of a consolidated 1M-item job: MB/s and the process's
//!    resident memory while it streams.

mod support;
use support::percentile;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_core::accounts::{self, NewUser};
use atelier_core::db::Db;
use atelier_core::iam::store;
use atelier_protocol::labeling::{Category, LabelingJobSpec, TaskType};
use atelier_server::config::Config;
use atelier_server::AppState;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

const LABELERS: usize = 200;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

/// Resident memory now and at its peak, in MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A text dataset of `n` items written straight into the tables (uploading a million
/// lines through the API is not what this measures).
async fn dataset(db: &Db, name: &str, n: usize) -> anyhow::Result<()> {
    let id = format!("ds-{name}");
    sqlx::query(
        "INSERT INTO datasets (id, name, description, kind, item_count, total_bytes, created_by, created_at) \
         VALUES ($1, $2, '', 'text', $3, 0, 'bench', 0)",
    )
    .bind(&id)
    .bind(name)
    .bind(n as i64)
    .execute(&db.pool)
    .await?;
    let mut tx = db.pool.begin().await?;
    for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|k| format!("('{id}-{k}', '{id}', 1, {k}, 'items.jsonl line {k}', NULL, 'review number {k} of the bench, long enough to be a sentence', 'text/plain', 60, NULL, 0)"))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO dataset_items (id, dataset_id, batch_seq, seq, name, artifact_id, text, media_type, size, source_ref, created_at) VALUES {}",
            values.join(",")
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn spec(name: &str, dataset: &str) -> LabelingJobSpec {
    LabelingJobSpec {
        name: name.into(),
        dataset: dataset.into(),
        task_type: TaskType::TextClassification,
        label_attribute: None,
        categories: vec![Category { name: "good".into(), hotkey: None }, Category { name: "bad".into(), hotkey: None }],
        instructions: String::new(),
        workers_per_item: Some(3),
        teams: vec!["crowd".into()],
        task_time_limit_secs: None,
        gold: vec![],
        gold_share: None,
        review_below: None,
    }
}

async fn call(router: &Router, token: &str, path: &str, body: String) -> (StatusCode, Vec<u8>, Duration) {
    let request = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let start = Instant::now();
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    (status, bytes, start.elapsed())
}

/// One next + submit; the latencies of both, or None when no task was left.
async fn cycle(router: &Router, token: &str, job: &str) -> Option<(Duration, Duration)> {
    let (status, body, next) =
        call(router, token, &format!("/api/v1/labeling/jobs/{job}/tasks/next"), String::new()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let id = value["task"]["id"].as_str()?.to_string();
    let answer = serde_json::json!({"answer": {"label": "good"}, "duration_ms": 900}).to_string();
    let (status, body, submit) =
        call(router, token, &format!("/api/v1/labeling/jobs/{job}/tasks/{id}/submit"), answer).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    Some((next, submit))
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: n={} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default())
    );
}

async fn run() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("atelier-bench-{}", uuid::Uuid::new_v4().simple()));
    let state = AppState::new(Config::for_data_dir(dir.clone(), None)).await?;
    let db = state.db.clone();
    let router = atelier_server::app(state.clone());
    store::create_group(&db, "crowd", "").await?;
    let admin = accounts::create_user(
        &db,
        NewUser {
            username: "boss".into(),
            display_name: String::new(),
            password: "bench-password-1".into(),
            policies: vec![accounts::ADMIN_POLICY.into()],
            groups: vec![],
        },
    )
    .await?;
    let boss = atelier_core::authz::Principal::new(
        admin.clone(),
        atelier_core::authz::Credential::Session,
        Arc::new(store::compile_for_user(&db, &admin).await?),
        None,
        None,
    );
    eprintln!("creating {LABELERS} labelers…");
    let mut tokens = Vec::new();
    for n in 0..LABELERS {
        let user = accounts::create_user(
            &db,
            NewUser {
                username: format!("labeler{n}"),
                display_name: String::new(),
                password: "bench-password-1".into(),
                policies: vec!["Labeler".into()],
                groups: vec!["crowd".into()],
            },
        )
        .await?;
        tokens.push(atelier_core::tokens::create(&db, &user, "bench", None, None).await?.secret);
    }

    // 1. The labeler cycle.
    dataset(&db, "cycle", 200_000).await?;
    atelier_core::labeling::jobs::create(&db, &boss, &spec("cycle-job", "cycle")).await?;
    eprintln!("{LABELERS} labelers labeling for {seconds} s…");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for token in &tokens {
        let (router, token) = (router.clone(), token.clone());
        handles.push(tokio::spawn(async move {
            let (mut nexts, mut submits) = (Vec::new(), Vec::new());
            while Instant::now() < deadline {
                match cycle(&router, &token, "cycle-job").await {
                    Some((n, s)) => {
                        nexts.push(n);
                        submits.push(s);
                    }
                    None => break,
                }
            }
            (nexts, submits)
        }));
    }
    let (mut nexts, mut submits) = (Vec::new(), Vec::new());
    for h in handles {
        let (n, s) = h.await?;
        nexts.extend(n);
        submits.extend(s);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "labeler cycle, {LABELERS} labelers at once: {} annotations in {elapsed:.1} s = {:.0} annotations/s",
        submits.len(),
        submits.len() as f64 / elapsed
    );
    let cycles: Vec<Duration> = nexts.iter().zip(&submits).map(|(a, b)| *a + *b).collect();
    report("  next task", nexts);
    report("  submit", submits);
    report("  next + submit", cycles);

    // 2. Next-task latency against the queue's size.
    for n in [10_000usize, 100_000, 1_000_000] {
        let name = format!("queue{n}");
        let started = Instant::now();
        dataset(&db, &name, n).await?;
        atelier_core::labeling::jobs::create(&db, &boss, &spec(&format!("{name}-job"), &name)).await?;
        eprintln!("queue of {n} items ready in {:.1} s", started.elapsed().as_secs_f64());
        let mut nexts = Vec::new();
        for i in 0..900 {
            let token = &tokens[i % 30];
            if let Some((next, _)) = cycle(&router, token, &format!("{name}-job")).await {
                nexts.push(next);
            }
        }
        report(&format!("next task, queue of {n} items (30 labelers taking turns)"), nexts);
    }

    // 3. Export of a consolidated 1M-item job (labels written directly).
    let job_id: String =
        sqlx::query_scalar("SELECT id FROM labeling_jobs WHERE name = 'queue1000000-job'").fetch_one(&db.pool).await?;
    sqlx::query(
        "UPDATE labeling_items SET result = '{\"answer\":{\"label\":\"good\"},\"confidences\":[]}', confidence = 0.93 WHERE job_id = $1",
    )
    .bind(&job_id)
    .execute(&db.pool)
    .await?;
    sqlx::query("UPDATE labeling_jobs SET status = 'Completed', remaining = 0, completed_at = 0 WHERE id = $1")
        .bind(&job_id)
        .execute(&db.pool)
        .await?;
    let boss_token = atelier_core::tokens::create(&db, &admin, "bench", None, None).await?.secret;
    let (rss_before, _) = memory_mb();
    let request = Request::get("/api/v1/labeling/jobs/queue1000000-job/output")
        .header(header::AUTHORIZATION, format!("Bearer {boss_token}"))
        .body(Body::empty())?;
    let start = Instant::now();
    let response = router.clone().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let (mut bytes, mut lines, mut peak_rss) = (0usize, 0usize, rss_before);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len();
            lines += data.iter().filter(|b| **b == b'\n').count();
            peak_rss = peak_rss.max(memory_mb().0);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "output manifest of 1,000,000 items: {lines} lines, {:.1} MB in {secs:.1} s = {:.1} MB/s; resident memory {rss_before:.0} MB before, at most {peak_rss:.0} MB while streaming",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
