//! Scheduler load: 1,000 simulated agents heartbeating every 5 s and re-polling for
//! work every 5 s (what a waiting long-poll does when nothing wakes it), against
//! 10,000 queued jobs, on
//! the embedded SQLite database. Reports lease and heartbeat latency percentiles and
//! the server process's CPU use.
//!
//! The agents are tasks calling the same core functions the agent routes call (no
//! HTTP in between: the in-process REST overhead is measured by the authz bench).
//! Run with `cargo bench -p atelier-server --bench scheduler` (also part of
//! `cargo xtask bench`). `BENCH_SECONDS` (default 30) sets the measured duration.

mod support;
use support::percentile;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_core::compute::{jobs, nodes, Settings};
use atelier_protocol::{Gpu, HeartbeatRequest, Held, NodeInfo, Usage};
use atelier_server::config::Config;
use atelier_server::AppState;
use tokio::sync::Mutex;

fn nodes_count() -> usize {
    std::env::var("BENCH_NODES").ok().and_then(|s| s.parse().ok()).unwrap_or(1000)
}
const JOBS: usize = 10_000;

fn cpu_seconds() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("atelier-bench-{}", uuid::Uuid::new_v4().simple()));
    let state = AppState::new(Config::for_data_dir(dir.clone(), None)).await?;
    let db = state.db.clone();
    let settings = Settings::default();

    eprintln!("registering {} nodes and queueing {JOBS} jobs…", nodes_count());
    let mut callers = Vec::new();
    for i in 0..nodes_count() {
        let name = format!("node-{i:04}");
        let created = nodes::create_unchecked(&db, &name, "bench").await?;
        let caller = nodes::authenticate(&db, &created.token).await?;
        let gpus = (0..(i % 3) as u32)
            .map(|g| Gpu { index: g, uuid: format!("GPU-{i}-{g}"), model: "Sim".into(), memory_mb: 16_000 })
            .collect();
        let info = NodeInfo {
            name: name.clone(),
            hostname: name,
            os: "linux".into(),
            cpus: 8,
            memory_mb: 32_000,
            disk_free_mb: 100_000,
            gpus,
            labels: BTreeMap::new(),
            agent_version: "bench".into(),
            sandbox: String::new(),
            advertise_host: String::new(),
        };
        nodes::register(&db, &caller, &info).await?;
        callers.push(caller);
    }
    let spec = r#"{"algorithm":{"type":"builtin","name":"tabular"}}"#;
    let mut tx = db.pool.begin().await?;
    for i in 0..JOBS {
        sqlx::query(
            "INSERT INTO training_jobs (id, name, spec, state, priority, cpus, memory_mb, gpus, created_by, created_at) \
             VALUES ($1, $2, $3, 'Pending', $4, 2, 4000, $5, 'bench', $6)",
        )
        .bind(format!("job-{i:05}"))
        .bind(format!("job-{i:05}"))
        .bind(spec)
        .bind((i % 4) as i64)
        .bind((i % 3) as i64)
        .bind(i as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    // Unloaded cost of one call, for reference.
    let mut solo = Vec::new();
    for caller in callers.iter().take(200) {
        let t = Instant::now();
        jobs::lease(&db, caller, &settings).await?;
        solo.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut solo_beats = Vec::new();
    for caller in callers.iter().take(200) {
        let request = HeartbeatRequest {
            usage: Usage::default(),
            running: Vec::new(),
            instances: Vec::new(),
            kernels: Vec::new(),
        };
        let t = Instant::now();
        jobs::heartbeat(&db, caller, &request, &settings).await?;
        solo_beats.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    solo.sort_by(f64::total_cmp);
    solo_beats.sort_by(f64::total_cmp);
    println!(
        "  unloaded: lease p50 {:.2} ms (placing a job), heartbeat p50 {:.2} ms",
        percentile(&solo, 0.5),
        percentile(&solo_beats, 0.5)
    );
    // (seconds since the start, milliseconds, placed a job)
    let leases = Arc::new(Mutex::new(Vec::<(f64, f64, bool)>::new()));
    let beats = Arc::new(Mutex::new(Vec::<f64>::new()));
    let placed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let deadline = started + Duration::from_secs(seconds);
    eprintln!("running {seconds} s of load…");
    let mut tasks = Vec::new();
    for (i, caller) in callers.into_iter().enumerate() {
        let (db, leases, beats, placed) = (db.clone(), leases.clone(), beats.clone(), placed.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the agents over the second and the heartbeat period.
            tokio::time::sleep(Duration::from_millis((i as u64 * 997) % 1000)).await;
            let mut held: Vec<Held> = Vec::new();
            let mut next_beat = Instant::now() + Duration::from_millis((i as u64 * 4999) % 5000);
            while Instant::now() < deadline {
                let t = Instant::now();
                let at = started.elapsed().as_secs_f64();
                match jobs::lease(&db, &caller, &settings).await {
                    Ok(jobs::Lease::Assigned(a)) => {
                        placed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        held.push(Held { job_id: a.job_id, attempt: a.attempt });
                        leases.lock().await.push((at, t.elapsed().as_secs_f64() * 1000.0, true));
                        continue;
                    }
                    Ok(_) => leases.lock().await.push((at, t.elapsed().as_secs_f64() * 1000.0, false)),
                    Err(err) => eprintln!("lease failed: {err}"),
                }
                if Instant::now() >= next_beat {
                    let request = HeartbeatRequest {
                        usage: Usage::default(),
                        running: held.clone(),
                        instances: Vec::new(),
                        kernels: Vec::new(),
                    };
                    let t = Instant::now();
                    if let Err(err) = jobs::heartbeat(&db, &caller, &request, &settings).await {
                        eprintln!("heartbeat failed: {err}");
                    }
                    beats.lock().await.push(t.elapsed().as_secs_f64() * 1000.0);
                    next_beat += Duration::from_secs(5);
                }
                // A waiting long-poll looks at the queue again after 5 s when nothing
                // wakes it (no job ends and none is submitted during the run).
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let calls = leases.lock().await.clone();
    // The cluster fills up first (a burst of placements, all serialized through the
    // one SQLite writer); after the last placement it is in its steady state.
    let filled_at = calls.iter().filter(|c| c.2).map(|c| c.0).fold(0.0, f64::max);
    let mut leases: Vec<f64> = calls.iter().map(|c| c.1).collect();
    let mut steady: Vec<f64> = calls.iter().filter(|c| c.0 > filled_at + 1.0).map(|c| c.1).collect();
    let mut beats = beats.lock().await.clone();
    leases.sort_by(f64::total_cmp);
    steady.sort_by(f64::total_cmp);
    beats.sort_by(f64::total_cmp);
    println!("scheduler bench: {} simulated agents, {JOBS} queued jobs, SQLite, {wall:.1} s", nodes_count());
    println!(
        "  lease calls:     {} ({:.0}/s), placed {}; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        leases.len(),
        leases.len() as f64 / wall,
        placed.load(std::sync::atomic::Ordering::Relaxed),
        percentile(&leases, 0.5),
        percentile(&leases, 0.99),
        leases.last().copied().unwrap_or(0.0)
    );
    println!(
        "  of which after the cluster filled ({filled_at:.1} s in): {} calls; latency p50 {:.2} ms, p99 {:.2} ms",
        steady.len(),
        percentile(&steady, 0.5),
        percentile(&steady, 0.99)
    );
    println!(
        "  heartbeats:      {} ({:.0}/s); latency p50 {:.2} ms, p99 {:.2} ms",
        beats.len(),
        beats.len() as f64 / wall,
        percentile(&beats, 0.5),
        percentile(&beats, 0.99)
    );
    println!("  server CPU:      {:.0}% of one core ({cpu:.1} s CPU in {wall:.1} s)", cpu / wall * 100.0);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
