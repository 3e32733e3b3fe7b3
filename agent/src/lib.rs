//! The Atelier compute agent. One runs on each compute node:
//!
//! ```text
//! atelier-agent --server URL --token NODE_TOKEN --work-dir DIR [--name N] [--label k=v ...]
//! ```
//!
//! It registers the node (CPUs, memory, disk, NVIDIA GPUs through NVML), then keeps two
//! loops going, both connecting out to the server so a node behind NAT works: a
//! heartbeat (utilization and the jobs it runs; the answer says which to stop) and a
//! long-poll for work. Each leased job runs as a child process (see [`runner`]); the
//! heartbeat answer also lists the model servers (see [`serving`]) and Jupyter kernels
//! (see [`kernels`]) the node should run.
//! Network failures are retried with backoff, so the agent rides out server restarts.

pub mod builtin;
pub mod client;
pub mod inventory;
pub mod kernels;
pub mod runner;
pub mod sandbox;
pub mod serve;
pub mod serving;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use atelier_protocol::{HeartbeatRequest, Held, RegisterRequest, StopOrder};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::client::{CallError, Client, Work};
use crate::inventory::Inventory;
use crate::runner::Context;

/// Command line of `atelier-agent`.
#[derive(Debug, Parser)]
#[command(name = "atelier-agent", version, about = "The Atelier compute agent: runs training jobs on this node.")]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The studio's URL, e.g. https://atelier.example.com.
    #[arg(long, env = "ATELIER_SERVER")]
    pub server: Option<String>,
    /// The node token from Compute > Add node (or `atelier node-token create`).
    #[arg(long, env = "ATELIER_NODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where jobs are laid out and Python environments cached.
    #[arg(long, env = "ATELIER_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// The node's name; must match the name the token was issued for (default: that name).
    #[arg(long)]
    pub name: Option<String>,
    /// A node label, `key=value`; jobs can ask for nodes with given labels. Repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The Python interpreter for script-mode jobs.
    #[arg(long, env = "ATELIER_PYTHON", default_value = "python3")]
    pub python: String,
    /// Exit when the process that started the agent exits (the server's local agent).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
    /// How often a running job's `checkpoints/` is synced to the server.
    #[arg(long, env = "ATELIER_CHECKPOINT_SECS", default_value_t = 10)]
    pub checkpoint_secs: u64,
    /// The address model servers listen on, and the server sends invocations to: this
    /// node's address as the server reaches it (the local agent's is loopback).
    #[arg(long, env = "ATELIER_ADVERTISE_HOST", default_value = "127.0.0.1")]
    pub advertise_host: String,
    /// The Python environment notebook kernels run in, created (a virtualenv of
    /// `--python`) if missing [default: WORK_DIR/kernel-env].
    #[arg(long, env = "ATELIER_KERNEL_ENV")]
    pub kernel_env: Option<PathBuf>,
    /// The packages pip installs into a new kernel environment, space separated.
    #[arg(long, env = "ATELIER_KERNEL_PACKAGES", default_value = "ipykernel matplotlib")]
    pub kernel_packages: String,
    /// Run users' code (jobs, kernels, model servers, installs) without a sandbox, as
    /// this agent, with its files and node token in reach. The node page warns of it.
    #[arg(long, env = "ATELIER_UNSANDBOXED")]
    pub unsandboxed: bool,
    /// The network users' code gets: `host` (the node's; pip works) or `none` (training
    /// jobs get loopback only; kernels, model servers and installs keep the node's).
    #[arg(long, env = "ATELIER_SANDBOX_NETWORK", value_enum, default_value = "host")]
    pub sandbox_network: sandbox::Network,
    /// The first uid given to sandboxes when the agent runs as root (one per running
    /// sandbox, from a range of 65536).
    #[arg(long, env = "ATELIER_SANDBOX_UID_BASE", default_value_t = sandbox::DEFAULT_UID_BASE)]
    pub sandbox_uid_base: u32,
}

/// Sub-commands besides running the agent.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a built-in algorithm in the current job directory (the agent starts this
    /// itself; it reads the SageMaker-style environment).
    #[command(hide = true)]
    Builtin { name: String },
    /// Serves a built-in algorithm's trained model over HTTP (SageMaker's `/ping` and
    /// `/invocations`); the agent starts this itself for an endpoint.
    #[command(hide = true)]
    Serve {
        /// The model directory: `model.safetensors` and `model.json`.
        #[arg(long)]
        model_dir: PathBuf,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The port to listen on.
        #[arg(long)]
        port: u16,
        /// Invocations must carry `Authorization: Bearer <secret>` (the agent sets it
        /// from the server's order; a command-line argument would show in `ps`).
        #[arg(long, env = "ATELIER_INSTANCE_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Joins cgroups, starts a session and becomes PROGRAM: the first step of every
    /// sandbox (see `sandbox`).
    #[command(hide = true)]
    SandboxEnter {
        #[arg(long)]
        cgroup: Vec<PathBuf>,
        #[arg(last = true, required = true)]
        program: Vec<std::ffi::OsString>,
    },
}

fn parse_label(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("label must be key=value, got {raw}"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::SandboxEnter { cgroup, program }) = &args.command {
        // Returns only if it could not become the program.
        eprintln!("atelier-agent: {:#}", sandbox::enter(cgroup, program));
        return ExitCode::FAILURE;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Some(Command::Builtin { name }) = &args.command {
        return match builtin::run(name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{err:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Serve { model_dir, host, port, secret }) = &args.command {
        // Builds its own runtime; loading failures go to stderr with a non-zero exit.
        return serve::main(model_dir, host, *port, secret.clone().filter(|s| !s.is_empty()));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("atelier-agent: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("atelier-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The jobs this agent runs: their attempt, and the channel that tells each to stop.
type Running = Arc<Mutex<HashMap<String, (i64, watch::Sender<Option<StopOrder>>)>>>;

/// Registers and serves until the token is refused.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (Some(server), Some(token), Some(work_dir)) = (args.server, args.token, args.work_dir) else {
        bail!("--server, --token and --work-dir are required (see --help)");
    };
    client::check_server_url(&server)?;
    std::fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    let work_dir = work_dir.canonicalize()?;
    runner::kill_leftovers(&work_dir);
    if args.exit_with_parent {
        watch_parent();
    }
    let client = Client::new(&server, &token)?;
    let mut inventory = Inventory::new();
    let sandbox = Arc::new(sandbox::Sandbox::detect(
        &sandbox::Settings {
            unsandboxed: args.unsandboxed,
            network: args.sandbox_network,
            uid_base: args.sandbox_uid_base,
            python: args.python.clone(),
            agent_exe: std::env::current_exe().context("locating the agent binary")?,
        },
        inventory.gpu_minors(),
    )?);
    tracing::info!(sandbox = %sandbox.describe(), "users' code runs sandboxed");
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let mut info = inventory.node_info(args.name.as_deref().unwrap_or(""), &work_dir, labels);
    info.sandbox = sandbox.describe();
    info.advertise_host = args.advertise_host.clone();
    tracing::info!(cpus = info.cpus, memory_mb = info.memory_mb, gpus = info.gpus.len(), "registering with {server}");
    let request = RegisterRequest { node: info };
    let registered = retry("registration", || client.register(&request)).await?;
    tracing::info!(node = %registered.node_name, "registered");

    let ctx = Arc::new(Context {
        client: client.clone(),
        work_dir,
        node_name: registered.node_name.clone(),
        sandbox: sandbox.clone(),
        checkpoint_interval: Duration::from_secs(args.checkpoint_secs.max(1)),
        venv_lock: tokio::sync::Mutex::new(()),
    });
    let running: Running = Arc::default();
    let serving = serving::Serving::new(client.clone(), &ctx.work_dir, args.advertise_host.clone(), sandbox.clone());
    let kernels = kernels::Kernels::new(kernels::KernelSettings {
        work_dir: ctx.work_dir.clone(),
        advertise_host: args.advertise_host.clone(),
        sandbox: sandbox.clone(),
        env: args.kernel_env.clone().unwrap_or_else(|| ctx.work_dir.join("kernel-env")),
        packages: args.kernel_packages.split_whitespace().map(str::to_string).collect(),
    });
    // Woken when the server says the kernels wanted here changed: heartbeat at once.
    let sync = kernels.changed.clone();
    let heartbeat = tokio::spawn(heartbeats(
        client.clone(),
        inventory,
        running.clone(),
        serving,
        kernels,
        Duration::from_secs(registered.heartbeat_secs.max(1)),
        Duration::from_secs(registered.lease_secs.max(2)),
    ));
    let poll_wait = Duration::from_secs(registered.poll_wait_secs.max(1));
    let mut backoff = Backoff::default();
    loop {
        if heartbeat.is_finished() {
            bail!("the server refused this node's token; stopping");
        }
        match client.poll_work(poll_wait).await {
            Ok(Work::Assigned(assignment)) => {
                backoff.reset();
                tracing::info!(job = %assignment.job_name, attempt = assignment.attempt, "leased a job");
                let (tx, rx) = watch::channel(None);
                if let Ok(mut map) = running.lock() {
                    map.insert(assignment.job_id.clone(), (assignment.attempt, tx));
                }
                let (ctx, running) = (ctx.clone(), running.clone());
                tokio::spawn(async move {
                    let (id, attempt) = (assignment.job_id.clone(), assignment.attempt);
                    runner::run(ctx, *assignment, rx).await;
                    if let Ok(mut map) = running.lock() {
                        // A later attempt of the same job may have replaced this entry.
                        if map.get(&id).is_some_and(|(a, _)| *a == attempt) {
                            map.remove(&id);
                        }
                    }
                });
            }
            Ok(Work::Nothing) => backoff.reset(),
            Ok(Work::Sync) => {
                backoff.reset();
                // A stored permit if the heartbeat loop is busy: the wake is not lost.
                sync.notify_one();
            }
            Err(CallError::Refused(message)) => bail!("the server refused this node's token: {message}"),
            Err(err) => {
                tracing::warn!(%err, "polling for work failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Exits once this process is re-parented, that is, once the server that started it is
/// gone (even if it was killed and could not stop its children).
fn watch_parent() {
    let parent = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if std::os::unix::process::parent_id() != parent {
                tracing::info!("the server that started this agent is gone; exiting");
                std::process::exit(0);
            }
        }
    });
}

/// Tells every running job to stop.
fn stop_all(running: &Running, reason: &str, grace_secs: u64) {
    if let Ok(map) = running.lock() {
        for (id, (_, tx)) in map.iter() {
            let _ = tx.send(Some(StopOrder { job_id: id.clone(), reason: reason.to_string(), grace_secs }));
        }
    }
}

/// Sends a heartbeat every `every`, relays stop orders, and fences the node: the server
/// requeues a job `lease` after the last heartbeat it received, so without one for
/// `lease - 2 × every` this node kills its jobs (grace `every / 2`). A heartbeat call
/// gives up after `every` and the loop keeps its period, so the kill is done at least
/// `every / 2` before the lease can lapse and the job start elsewhere. (The server
/// refuses a lease shorter than two heartbeats.)
async fn heartbeats(
    client: Client,
    mut inventory: Inventory,
    running: Running,
    serving: Arc<serving::Serving>,
    kernels: Arc<kernels::Kernels>,
    every: Duration,
    lease: Duration,
) {
    // When the last heartbeat that got through was sent: the server renewed the lease
    // after that instant, never before.
    let mut last_ok = tokio::time::Instant::now();
    let fence_after = lease.saturating_sub(every * 2);
    let mut fenced = false;
    loop {
        let sent = tokio::time::Instant::now();
        let held: Vec<Held> = running
            .lock()
            .map(|m| m.iter().map(|(id, (attempt, _))| Held { job_id: id.clone(), attempt: *attempt }).collect())
            .unwrap_or_default();
        let request = HeartbeatRequest {
            usage: inventory.usage(),
            running: held,
            instances: serving.reports(),
            kernels: kernels.reports(),
        };
        match client.heartbeat(&request, every).await {
            Ok(response) => {
                last_ok = sent;
                fenced = false;
                serving.apply(response.instances);
                kernels.apply(response.kernels);
                for order in response.stop {
                    if let Ok(map) = running.lock() {
                        if let Some((_, tx)) = map.get(&order.job_id) {
                            tracing::info!(job = %order.job_id, reason = %order.reason, "stop ordered");
                            let _ = tx.send(Some(order));
                        }
                    }
                }
            }
            Err(CallError::Refused(message)) => {
                tracing::error!(%message, "heartbeat refused: node token revoked");
                stop_all(&running, "the node was deregistered", 5);
                serving.stop_all();
                kernels.stop_all();
                return;
            }
            Err(err) => {
                tracing::warn!(%err, "heartbeat failed; retrying");
                // The server will requeue this node's jobs when the lease lapses: stop
                // them first, so that no job runs here and elsewhere at once.
                if !fenced && last_ok.elapsed() >= fence_after {
                    tracing::error!(
                        "no heartbeat reached the server for {} s: stopping all jobs before the lease lapses",
                        last_ok.elapsed().as_secs()
                    );
                    let reason =
                        "lost contact with the server; stopped before the lease lapsed and the job is requeued";
                    stop_all(&running, reason, (every / 2).as_secs());
                    fenced = true;
                }
            }
        }
        // Every interval, failing or not: a longer pause would itself let leases lapse.
        // Sooner when a model server or kernel changed state, so the server routes to
        // it at once, or when the server asked for one (kernels to start or stop, see
        // `Work::Sync`).
        tokio::select! {
            _ = tokio::time::sleep(every.saturating_sub(sent.elapsed())) => {}
            _ = serving.changed.notified() => {}
            _ = kernels.changed.notified() => {}
        }
    }
}

/// Exponential backoff from 0.5 s to 30 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
    async fn wait(&mut self) {
        let delay =
            Duration::from_millis(500u64.saturating_mul(1 << self.failures.min(6))).min(Duration::from_secs(30));
        self.failures += 1;
        tokio::time::sleep(delay).await;
    }
}

/// Calls `f` until it succeeds or the server refuses for good.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(CallError::Transient(err)) => {
                tracing::warn!(%err, "{what} failed; retrying");
                backoff.wait().await;
            }
            Err(err) => bail!("{what} failed: {err}"),
        }
    }
}
