//! Registry read throughput: `cargo bench -p atelier-server --bench registry` (also run
//! by `cargo xtask bench`). Prints figures for the issue note; asserts nothing.
//!
//! A group of 10,000 versions on the embedded SQLite database; 64 clients (4 for searches) at once send
//! requests through the whole stack in process (bearer token, policies, audit): the
//! REST get-version, MLflow's `model-versions/get`, and MLflow's
//! `model-versions/search` for the group (one page of 100). `BENCH_SECONDS` (default
//! 10) sets each measurement's duration.

mod support;
use support::percentile;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_core::accounts::{self, NewUser};
use atelier_server::config::Config;
use atelier_server::AppState;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

const VERSIONS: i64 = 10_000;

/// The path of the n-th request.
type PathFn = Box<dyn Fn(u64) -> String + Send + Sync>;
const CLIENTS: usize = 64;
/// Searches read the whole group each: fewer at once.
const SEARCHERS: usize = 4;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn get(router: &Router, token: &str, path: &str) -> (StatusCode, Duration, Vec<u8>) {
    let request = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let start = Instant::now();
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let body = response.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    (status, start.elapsed(), body)
}

/// Requests/s, p50 and p99 of `path(n)` for `seconds` with `clients` at once.
async fn measure(
    router: &Router,
    token: &str,
    seconds: u64,
    clients: usize,
    path: impl Fn(u64) -> String + Send + Sync + 'static,
) -> (f64, Duration, Duration) {
    let path = Arc::new(path);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (router, token, path, stop) = (router.clone(), token.to_string(), path.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = c as u64 * 7919;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let (status, took, body) = get(&router, &token, &path(n >> 33)).await;
                assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                latencies.push(took);
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for c in tasks {
        all.extend(c.await.expect("client"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, percentile(&all, 0.5), percentile(&all, 0.99))
}

async fn run() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("atelier-bench-{}", uuid::Uuid::new_v4().simple()));
    let state = AppState::new(Config::for_data_dir(dir.clone(), None)).await?;
    let db = state.db.clone();
    let router = atelier_server::app(state.clone());
    let user = accounts::create_user(
        &db,
        NewUser {
            username: "reader".into(),
            display_name: String::new(),
            password: "bench-password-1".into(),
            policies: vec!["DataScientist".into()],
            groups: vec![],
        },
    )
    .await?;
    let token = atelier_core::tokens::create(&db, &user, "bench", None, None).await?.secret;

    eprintln!("registering {VERSIONS} versions…");
    sqlx::query("INSERT INTO artifacts (id, name, kind, sha256, size, created_by, created_at) VALUES ('a', 'model.tar.gz', 'upload', 'ab', 1, 'reader', 0)")
        .execute(&db.pool)
        .await?;
    sqlx::query("INSERT INTO model_groups (id, name, description, created_by, created_at) VALUES ('g', 'fraud', '', 'reader', 0)")
        .execute(&db.pool)
        .await?;
    let mut tx = db.pool.begin().await?;
    for v in 1..=VERSIONS {
        sqlx::query(
            "INSERT INTO model_versions (id, group_id, version, status, artifact_id, format, metrics, created_by, created_at, updated_at) \
             VALUES ($1, 'g', $2, 'PendingManualApproval', 'a', 'archive', '{\"auc\": 0.9}', 'reader', $2, $2)",
        )
        .bind(format!("v{v}"))
        .bind(v)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    println!();
    println!("Registry reads, {VERSIONS} versions in one group, {seconds} s each (SQLite, in process):");
    println!("| request | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    let rows: [(&str, usize, PathFn); 3] = [
        (
            "GET /api/v1/model-groups/fraud/versions/{n}",
            CLIENTS,
            Box::new(|n| format!("/api/v1/model-groups/fraud/versions/{}", n % VERSIONS as u64 + 1)),
        ),
        (
            "GET /api/2.0/mlflow/model-versions/get",
            CLIENTS,
            Box::new(|n| format!("/api/2.0/mlflow/model-versions/get?name=fraud&version={}", n % VERSIONS as u64 + 1)),
        ),
        (
            "GET /api/2.0/mlflow/model-versions/search (name='fraud', 100 per page)",
            SEARCHERS,
            Box::new(|_| "/api/2.0/mlflow/model-versions/search?filter=name%3D%27fraud%27&max_results=100".to_string()),
        ),
    ];
    for (label, clients, path) in rows {
        let (rps, p50, p99) = measure(&router, &token, seconds, clients, path).await;
        println!(
            "| {label}, {clients} clients | {rps:.0} | {:.2} ms | {:.2} ms |",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
