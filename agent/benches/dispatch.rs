//! Dispatch latency: from `POST /api/v1/training-jobs` to the job's process running on
//! an idle agent, through the real server (loopback HTTP) and a real agent process.
//!
//! Two figures per job: until the agent reports Training (it does so just before it
//! spawns the process), and until the Python script's first line (so including the
//! interpreter's start-up). Run with `cargo bench -p atelier-agent --bench dispatch`;
//! `BENCH_JOBS` (default 40) sets how many jobs are timed.

mod studio;
#[path = "../../server/benches/support/mod.rs"]
mod support;
use support::percentile;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let count: usize = std::env::var("BENCH_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let studio = studio::Studio::start("dispatch", |_| {}).await?;
    let (base, token) = (studio.base.clone(), studio.token.clone());

    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        async move {
            let r = http.get(format!("{base}{path}")).bearer_auth(&token).send().await?;
            anyhow::Ok(r.json::<Value>().await?)
        }
    };
    let script = "import time\nprint(f'started {time.time_ns() // 1_000_000}', flush=True)\n";
    let upload: Value = http
        .post(format!("{base}/api/v1/artifacts?name=start.py"))
        .bearer_auth(&token)
        .body(script)
        .send()
        .await?
        .json()
        .await?;
    let code = upload["id"].as_str().context("artifact id")?.to_string();

    let (mut to_spawn, mut to_first_line) = (Vec::new(), Vec::new());
    for i in 0..count {
        let name = format!("dispatch-{i}");
        let spec = json!({"algorithm": {"type": "script", "entry_point": "start.py", "code": [code]},
                          "resources": {"memory_mb": 64}});
        let submitted = now_ms();
        let r = http
            .post(format!("{base}/api/v1/training-jobs"))
            .bearer_auth(&token)
            .json(&json!({"name": name, "spec": spec}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("submit failed: {}", r.text().await?);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let detail = loop {
            let d = get(format!("/api/v1/training-jobs/{name}")).await?;
            if matches!(d["job"]["state"].as_str(), Some("Completed" | "Failed" | "Stopped")) {
                break d;
            }
            if Instant::now() > deadline {
                bail!("job {name} did not finish: {d}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let training = detail["events"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["state"] == "Training"))
            .and_then(|e| e["ts_ms"].as_i64())
            .context("no Training event")?;
        let logs = get(format!("/api/v1/training-jobs/{name}/logs")).await?;
        let started = logs
            .as_array()
            .and_then(|l| l.iter().find_map(|l| l["line"].as_str()?.strip_prefix("started ")?.parse::<i64>().ok()))
            .context("no start line")?;
        to_spawn.push((training - submitted) as f64);
        to_first_line.push((started - submitted) as f64);
    }
    drop(studio);
    to_spawn.sort_by(f64::total_cmp);
    to_first_line.sort_by(f64::total_cmp);
    println!("dispatch bench: {count} jobs, one idle local agent, SQLite, loopback HTTP");
    println!(
        "  submit -> Training reported (process spawned): p50 {:.0} ms, p99 {:.0} ms",
        percentile(&to_spawn, 0.5),
        percentile(&to_spawn, 0.99)
    );
    println!(
        "  submit -> first line printed by the Python process: p50 {:.0} ms, p99 {:.0} ms",
        percentile(&to_first_line, 0.5),
        percentile(&to_first_line, 0.99)
    );
    Ok(())
}
