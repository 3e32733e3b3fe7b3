//! Invocation overhead and chart rendering.
//!
//! A real server (loopback HTTP), a real agent and the built-in model server for a
//! small tabular model trained here. Invocations are sent straight to the model server
//! and through the server (`POST /endpoints/{name}/invocations`, bearer token) at
//! concurrency 1, 16 and 64; the difference is what the server adds (authentication,
//! authorization, routing, metrics, the extra hop). Then a week of per-minute metrics
//! is stored and the monitoring charts' server time is measured.
//!
//! Run with `cargo bench -p atelier-agent --bench serving`; `BENCH_REQUESTS` (default
//! 4000) sets the requests per measurement.

mod studio;
#[path = "../../server/benches/support/mod.rs"]
mod support;
use support::percentile;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use atelier_core::accounts;
use atelier_server::AppState;
use serde_json::{json, Value};

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn run() -> anyhow::Result<()> {
    let requests: usize = std::env::var("BENCH_REQUESTS").ok().and_then(|s| s.parse().ok()).unwrap_or(4000);
    let studio = studio::Studio::start("serving", |config| config.heartbeat_secs = 1).await?;
    atelier_server::endpoints::spawn_background(studio.state.clone());
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build()?;
    let api = Api { http, base: studio.base.clone(), token: studio.token.clone() };
    measure(&api, &studio.state, requests).await
}

async fn measure(api: &Api, state: &AppState, requests: usize) -> anyhow::Result<()> {
    use reqwest::Method;
    // A small model: two features, two classes.
    let mut csv = String::from("x1,x2,label\n");
    for i in 0..400 {
        let (x1, x2) = ((i % 20) as f64 / 10.0 - 1.0, (i / 20) as f64 / 10.0 - 1.0);
        csv.push_str(&format!("{x1},{x2},{}\n", if x1 + x2 > 0.0 { "yes" } else { "no" }));
    }
    let upload = api
        .http
        .post(format!("{}/api/v1/artifacts?name=train.csv", api.base))
        .bearer_auth(&api.token)
        .body(csv)
        .send()
        .await?
        .json::<Value>()
        .await?;
    let spec = json!({
        "algorithm": {"type": "builtin", "name": "tabular"},
        "hyperparameters": {"epochs": "5"},
        "channels": [{"name": "train", "artifacts": [upload["id"]]}],
    });
    api.call(Method::POST, "/api/v1/training-jobs", Some(json!({"name": "bench", "spec": spec}))).await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let job = api.call(Method::GET, "/api/v1/training-jobs/bench", None).await?;
        match job["job"]["state"].as_str() {
            Some("Completed") => break,
            Some("Failed" | "Stopped") => bail!("training failed: {job}"),
            _ if Instant::now() > deadline => bail!("training did not finish"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    api.call(Method::POST, "/api/v1/model-groups", Some(json!({"name": "bench"}))).await?;
    api.call(Method::POST, "/api/v1/model-groups/bench/versions", Some(json!({"training_job": "bench"}))).await?;
    api.call(Method::POST, "/api/v1/model-groups/bench/versions/1/approval", Some(json!({"status": "Approved"})))
        .await?;
    let new = json!({"name": "bench", "variants": [{"model_group": "bench", "model_version": 1}]});
    api.call(Method::POST, "/api/v1/endpoints", Some(new)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.call(Method::GET, "/api/v1/endpoints/bench", None).await?["status"] != "InService" {
        if Instant::now() > deadline {
            bail!("the endpoint did not come into service");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (url, secret): (String, String) =
        sqlx::query_as("SELECT url, secret FROM endpoint_instances WHERE state = 'InService'")
            .fetch_one(&state.db.pool)
            .await?;

    let body = r#"{"instances": [{"x1": 0.3, "x2": 0.4}]}"#;
    let direct = format!("{url}/invocations");
    let through = format!("{}/endpoints/bench/invocations", api.base);
    println!("invocations of a trivial built-in model (1 row), {requests} requests per row:");
    println!("| concurrency | path | requests/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for concurrency in [1usize, 16, 64] {
        let d = load(&api.http, &direct, Some(&secret), body, concurrency, requests).await?;
        let t = load(&api.http, &through, Some(&api.token), body, concurrency, requests).await?;
        for (name, r) in [("model server directly", &d), ("through Atelier", &t)] {
            println!("| {concurrency} | {name} | {:.0} | {:.2} ms | {:.2} ms |", r.rps, r.p50, r.p99);
        }
        println!("| {concurrency} | added by Atelier | | {:+.2} ms | {:+.2} ms |", t.p50 - d.p50, t.p99 - d.p99);
    }

    // A week of per-minute metrics, then the charts' server time.
    let (endpoint_id,): (String,) =
        sqlx::query_as("SELECT id FROM endpoints WHERE name = 'bench'").fetch_one(&state.db.pool).await?;
    let now = atelier_core::now();
    let start = now - now.rem_euclid(60) - 7 * 86_400;
    let mut tx = state.db.pool.begin().await?;
    for i in 0..(7 * 1440) {
        let minute = start + i * 60;
        sqlx::query(
            "INSERT INTO endpoint_metrics (endpoint_id, variant, minute, invocations, errors_4xx, errors_5xx, instances) \
             VALUES ($1, 'primary', $2, $3, $4, 0, 1) ON CONFLICT (endpoint_id, variant, minute) DO NOTHING",
        )
        .bind(&endpoint_id)
        .bind(minute)
        .bind(100 + i % 50)
        .bind(i % 3)
        .execute(&mut *tx)
        .await?;
        for (kind, bucket) in [("model", 80), ("model", 90), ("overhead", 60)] {
            sqlx::query(
                "INSERT INTO endpoint_latency (endpoint_id, variant, minute, kind, bucket, n) VALUES ($1, 'primary', $2, $3, $4, 50) \
                 ON CONFLICT (endpoint_id, variant, minute, kind, bucket) DO NOTHING",
            )
            .bind(&endpoint_id)
            .bind(minute)
            .bind(kind)
            .bind(bucket + i % 5)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    let principal = bench_principal(state).await?;
    let times = chart_times(state, &principal, now).await?;
    println!();
    println!(
        "monitoring charts for a week of per-minute data (10,080 minutes, 30,240 histogram rows): p50 {:.1} ms, p99 {:.1} ms \
         (metrics query and three SVG charts, server time)",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    // What a server keeps in steady state: the last 48 hours per minute, hours before.
    let pass = atelier_core::retention::run(&state.db, atelier_core::retention::Retention::default()).await?;
    let times = chart_times(state, &principal, now).await?;
    println!(
        "the same week after folding minutes older than 48 h into hours ({} hours folded): p50 {:.1} ms, p99 {:.1} ms",
        pass.hours_folded,
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    Ok(())
}

/// Server times (ms, sorted) of 20 renderings of the week's monitoring charts.
async fn chart_times(
    state: &AppState,
    principal: &atelier_core::authz::Principal,
    now: i64,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let m =
            atelier_core::endpoints::metrics::series(&state.db, principal, "bench", "*", now - 7 * 86_400, now + 60)
                .await?;
        let x = |at: i64| (at - now) as f64 / 3600.0;
        let series = [app::charts::Series {
            label: "invocations".into(),
            points: m.points.iter().map(|p| (x(p.at), p.invocations as f64)).collect(),
        }];
        let latency = [app::charts::Series {
            label: "model p99".into(),
            points: m.points.iter().filter_map(|p| p.model_p99_ms.map(|v| (x(p.at), v))).collect(),
        }];
        let span = (-168.0, 0.0);
        let svg = app::charts::time_chart("Invocations", "hours", "requests", &series, span)
            + &app::charts::time_chart("Latency", "hours", "ms", &latency, span)
            + &app::charts::time_chart("Instances", "hours", "instances", &series, span);
        if svg.len() < 1000 {
            bail!("the charts came out empty");
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

async fn bench_principal(state: &AppState) -> anyhow::Result<atelier_core::authz::Principal> {
    let user = accounts::find_by_username(&state.db, "bench").await?.context("bench user")?;
    let compiled = Arc::new(atelier_core::iam::store::compile_for_user(&state.db, &user).await?);
    Ok(atelier_core::authz::Principal::new(user, atelier_core::authz::Credential::Session, compiled, None, None))
}

struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
}

/// `requests` POSTs of `body` to `url` from `concurrency` clients; fails on any non-200.
async fn load(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &'static str,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<Load> {
    let per = requests / concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, token) = (http.clone(), url.to_string(), token.map(str::to_string));
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(per);
            for _ in 0..per {
                let mut request = http.post(&url).header("content-type", "application/json").body(body);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let sent = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                response.bytes().await?;
                if !status.is_success() {
                    bail!("{url}: {status}");
                }
                times.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(times)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok(Load { rps: all.len() as f64 / seconds, p50: percentile(&all, 0.5), p99: percentile(&all, 0.99) })
}
