//! The server's own compute duties: the sweeper that notices lost nodes and expired
//! leases, and the local agent that the embedded default starts beside the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use atelier_core::compute::{jobs, nodes};

use crate::state::AppState;

/// The node name of the agent started beside the server.
pub const LOCAL_NODE: &str = "local";

/// Every second or two: mark nodes without heartbeats Lost, requeue the work of
/// expired leases, and wake waiting agents when something was requeued.
pub fn spawn_sweeper(state: AppState) {
    tokio::spawn(async move {
        let settings = state.config.compute();
        let every = Duration::from_secs((settings.heartbeat_secs / 2).clamp(1, 5));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let lost = requeue_lost(&state).await;
            let expired = jobs::sweep(&state.db).await;
            match (lost, expired) {
                (Ok(lost), Ok(expired)) => {
                    if !lost.is_empty() || expired > 0 {
                        state.work.notify_waiters();
                    }
                }
                (Err(err), _) | (_, Err(err)) => tracing::warn!(error = %err, "compute sweep failed"),
            }
        }
    });
}

/// Marks nodes without heartbeats Lost and requeues the jobs they held.
async fn requeue_lost(state: &AppState) -> Result<Vec<(String, String)>, atelier_core::CoreError> {
    let lost = nodes::sweep(&state.db, &state.config.compute()).await?;
    for (id, name) in &lost {
        jobs::requeue_node(&state.db, id, &format!("compute node {name} stopped sending heartbeats")).await?;
    }
    Ok(lost)
}

/// Starts `atelier-agent` as a child process for the node `local`, with a fresh token
/// (the previous one stops working). The child is killed when the handle is dropped.
pub async fn start_local_agent(state: &AppState, addr: SocketAddr) -> anyhow::Result<tokio::process::Child> {
    let binary = match &state.config.agent_bin {
        Some(path) => path.clone(),
        None => sibling_agent_binary()?,
    };
    let token = nodes::issue_local_token(&state.db, LOCAL_NODE).await?;
    let host = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let work_dir = state.config.data_dir.join("agent");
    std::fs::create_dir_all(&work_dir)?;
    let mut command = tokio::process::Command::new(&binary);
    // The agent runs users' code (jobs, models, kernels), which inherits its
    // environment: the server's database URL, object-store credentials and admin
    // password are not for them.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name == "DATABASE_URL" || name == "ATELIER_ADMIN_PASSWORD" || name.starts_with("AWS_") {
            command.env_remove(&key);
        }
    }
    let child = command
        .arg("--server")
        .arg(format!("http://{host}"))
        .arg("--work-dir")
        .arg(&work_dir)
        .arg("--name")
        .arg(LOCAL_NODE)
        .arg("--exit-with-parent")
        // In the environment, not the argument list, so `ps` does not show it.
        .env("ATELIER_NODE_TOKEN", token)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", binary.display()))?;
    tracing::info!(binary = %binary.display(), "started the local agent");
    Ok(child)
}

fn sibling_agent_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("locating the server binary's directory")?;
    let candidate = dir.join("atelier-agent");
    if candidate.exists() {
        return Ok(candidate);
    }
    // Test binaries live one level down (target/debug/deps).
    let up = dir.parent().map(|d| d.join("atelier-agent"));
    match up {
        Some(path) if path.exists() => Ok(path),
        _ => anyhow::bail!(
            "atelier-agent was not found next to {}; build it (cargo build -p atelier-agent), pass --agent-bin, or --no-local-agent",
            me.display()
        ),
    }
}
