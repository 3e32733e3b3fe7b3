//! Notebook kernels: how long a kernel takes to start on a node whose kernel
//! environment exists, and the round trip of a trivial cell (`1+1`) with a warm kernel.
//!
//! A real server (loopback HTTP), a real agent and real ipykernel processes. The round
//! trip is what the editor does: `POST /api/v1/kernels/{id}/execute` with the session's
//! credentials, reading the event stream to its end. It is measured through the server
//! and straight against the agent's kernel gateway (the same request without the
//! server's authentication, authorization and relay), so the difference is what the
//! server adds. Rendering in the browser is not included.
//!
//! Run with `cargo bench -p atelier-agent --bench notebooks`; `BENCH_CELLS` (default
//! 300) sets the cells per measurement, `BENCH_STARTS` (default 10) the kernel starts.

mod studio;
#[path = "../../server/benches/support/mod.rs"]
mod support;
use support::percentile;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

async fn run() -> anyhow::Result<()> {
    let (cells, starts) = (env_or("BENCH_CELLS", 300), env_or("BENCH_STARTS", 10));
    let studio = studio::Studio::start("notebooks", |config| config.heartbeat_secs = 1).await?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", studio.base)).bearer_auth(&studio.token)
    };
    let notebook: Value =
        api(reqwest::Method::POST, "/api/v1/notebooks").json(&json!({"name": "bench"})).send().await?.json().await?;
    let nb = notebook["id"].as_str().context("notebook id")?.to_string();

    // Kernel starts, each from the request to the kernel answering as idle.
    let mut start_ms = Vec::new();
    let mut kernel = String::new();
    for i in 0..=starts {
        let started = Instant::now();
        let k: Value = api(reqwest::Method::POST, &format!("/api/v1/notebooks/{nb}/kernel"))
            .json(&json!({}))
            .send()
            .await?
            .json()
            .await?;
        kernel = k["id"].as_str().context("kernel id")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let k: Value =
                api(reqwest::Method::GET, &format!("/api/v1/notebooks/{nb}/kernel")).send().await?.json().await?;
            if k["state"] == "idle" {
                break;
            }
            if Instant::now() > deadline {
                bail!("the kernel did not start: {k}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The first start may create the kernel environment: not a warm start.
        if i > 0 {
            start_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        if i < starts {
            api(reqwest::Method::DELETE, &format!("/api/v1/kernels/{kernel}")).send().await?;
        }
    }
    start_ms.sort_by(f64::total_cmp);
    println!(
        "kernel start (warm node, {} starts): p50 {:.0} ms, max {:.0} ms",
        start_ms.len(),
        percentile(&start_ms, 0.5),
        start_ms.last().copied().unwrap_or_default()
    );

    let (url, secret): (String, String) = sqlx::query_as("SELECT url, secret FROM kernels WHERE id = $1")
        .bind(&kernel)
        .fetch_one(&studio.state.db.pool)
        .await?;
    let through = format!("{}/api/v1/kernels/{kernel}/execute", studio.base);
    let direct = format!("{url}/execute");
    for (label, target, token) in
        [("kernel gateway directly", &direct, &secret), ("through Atelier", &through, &studio.token)]
    {
        let mut ms = Vec::with_capacity(cells);
        for i in 0..cells + 20 {
            let started = Instant::now();
            let response = http.post(target).bearer_auth(token).json(&json!({"code": "1+1"})).send().await?;
            if !response.status().is_success() {
                bail!("{label}: {}", response.text().await?);
            }
            let body = response.text().await?;
            if !body.contains("execute_result") {
                bail!("{label}: no result in {body}");
            }
            // The first cells warm connections and the kernel.
            if i >= 20 {
                ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "1+1 round trip, {label} ({cells} cells): p50 {:.2} ms, p99 {:.2} ms",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99)
        );
    }
    Ok(())
}
