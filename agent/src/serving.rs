//! Model server instances: the server lists, in every heartbeat answer, the instances
//! this node should run; this module starts the missing ones, stops the ones no longer
//! listed, watches their health and reports their state in the next heartbeat.
//!
//! Every instance is a child process answering `GET /ping` and `POST /invocations` on
//! its own port: `atelier-agent serve` for built-in models, the version's serving
//! command for bring-your-own ones. The server sends invocations to it directly.
//! Both parse what callers send, so both run in a sandbox (see [`crate::sandbox`]) that
//! sees the unpacked model read-write and the system read-only; the archive, the log
//! and the pid file stay beside it, out of its reach.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use atelier_protocol::endpoints::{
    InstanceOrder, InstanceReport, INSTANCE_FAILED, INSTANCE_IN_SERVICE, INSTANCE_STARTING,
};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use crate::client::Client;
use crate::sandbox::{Request, Sandbox};

/// How long a model server may take to answer its first `/ping`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Health checks of a running instance: this often, failing after this many misses.
const CHECK_EVERY: Duration = Duration::from_secs(2);
const MISSES: u32 = 3;
/// A removed instance keeps answering this long, so that requests the server routed to
/// it before learning of the change still succeed (the server rereads routes every
/// second).
const DRAIN: Duration = Duration::from_secs(3);

/// What the agent runs, shared by the heartbeat loop and the instances' tasks.
pub struct Serving {
    client: Client,
    dir: PathBuf,
    host: String,
    sandbox: Arc<Sandbox>,
    instances: Mutex<HashMap<String, Handle>>,
    /// Woken when an instance's state changes, so the heartbeat reports it at once.
    pub changed: Arc<Notify>,
}

struct Handle {
    status: Arc<Mutex<InstanceReport>>,
    stop: watch::Sender<bool>,
}

impl Serving {
    pub fn new(client: Client, work_dir: &Path, host: String, sandbox: Arc<Sandbox>) -> Arc<Serving> {
        Arc::new(Serving {
            client,
            dir: work_dir.join("instances"),
            host,
            sandbox,
            instances: Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
        })
    }

    /// The state of every instance, for the heartbeat.
    pub fn reports(&self) -> Vec<InstanceReport> {
        let Ok(map) = self.instances.lock() else { return Vec::new() };
        map.values().filter_map(|h| h.status.lock().ok().map(|s| s.clone())).collect()
    }

    /// Makes the running set what the server asked for.
    pub fn apply(self: &Arc<Self>, orders: Vec<InstanceOrder>) {
        let Ok(mut map) = self.instances.lock() else { return };
        map.retain(|id, handle| {
            let keep = orders.iter().any(|o| &o.instance_id == id);
            if !keep {
                tracing::info!(instance = %id, "instance no longer wanted; stopping it");
                let _ = handle.stop.send(true);
            }
            keep
        });
        for order in orders {
            if map.contains_key(&order.instance_id) {
                continue;
            }
            tracing::info!(instance = %order.instance_id, endpoint = %order.endpoint, variant = %order.variant, "starting a model server");
            let status = Arc::new(Mutex::new(InstanceReport {
                instance_id: order.instance_id.clone(),
                state: INSTANCE_STARTING.into(),
                url: None,
                message: "fetching the model".into(),
            }));
            let (stop, stopped) = watch::channel(false);
            map.insert(order.instance_id.clone(), Handle { status: status.clone(), stop });
            let me = self.clone();
            tokio::spawn(async move { me.run(order, status, stopped).await });
        }
    }

    /// Stops every instance (the node was deregistered).
    pub fn stop_all(&self) {
        if let Ok(mut map) = self.instances.lock() {
            for (_, handle) in map.drain() {
                let _ = handle.stop.send(true);
            }
        }
    }

    fn set(&self, status: &Mutex<InstanceReport>, state: &str, url: Option<String>, message: String) {
        if let Ok(mut s) = status.lock() {
            if s.state == state && s.message == message {
                return;
            }
            *s = InstanceReport { instance_id: s.instance_id.clone(), state: state.into(), url, message };
        }
        self.changed.notify_one();
    }

    async fn run(
        self: Arc<Self>,
        order: InstanceOrder,
        status: Arc<Mutex<InstanceReport>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let dir = self.dir.join(&order.instance_id);
        // A stop during the download is seen by the health watch, which drains first.
        let result = self.serve(&order, &dir, &status, &mut stop).await;
        if let Err(err) = result {
            tracing::warn!(instance = %order.instance_id, error = %format!("{err:#}"), "instance failed");
            self.set(&status, INSTANCE_FAILED, None, format!("{err:#}"));
        }
        // A failed instance stays listed (and reported) until the server stops asking
        // for it; then it is forgotten.
        stopped(&mut stop).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }

    /// Fetches and unpacks the model, starts its server, waits for it to be healthy and
    /// watches it until told to stop (Ok) or it fails (Err).
    async fn serve(
        &self,
        order: &InstanceOrder,
        dir: &Path,
        status: &Mutex<InstanceReport>,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let model = dir.join("model");
        let archive = dir.join("model.tar.gz");
        tokio::fs::create_dir_all(dir).await?;
        self.client.download_model(&order.instance_id, &archive).await.context("fetching the model")?;
        check_sha256(&archive, &order.artifact_sha256).await?;
        let (a, m) = (archive.clone(), model.clone());
        tokio::task::spawn_blocking(move || crate::runner::unpack(&a, &m)).await?.context("unpacking the model")?;
        let port = free_port(&self.host)?;
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let (program, args): (PathBuf, Vec<std::ffi::OsString>) = if order.format == "atelier" {
            let args = ["serve".into(), "--model-dir".into(), model.clone().into_os_string(), "--host".into()];
            let mut args = args.to_vec();
            args.extend([self.host.clone().into(), "--port".into(), port.to_string().into()]);
            (self.sandbox.agent_exe().to_path_buf(), args)
        } else {
            if order.serving_command.trim().is_empty() {
                bail!("the model version has no serving command");
            }
            ("sh".into(), vec!["-c".into(), order.serving_command.clone().into()])
        };
        let request = Request {
            name: format!("instance-{}", order.instance_id),
            writable: vec![model.clone()],
            cwd: model.clone(),
            gpus: order.gpus.clone(),
            memory_mb: order.memory_mb,
            cpus: order.cpus,
            needs_network: true,
            ..Request::default()
        };
        let (mut command, guard) = self.sandbox.command(&request, &program, &args)?;
        let gpus: Vec<String> = order.gpus.iter().map(u32::to_string).collect();
        command
            .env("PORT", port.to_string())
            .env("SAGEMAKER_BIND_TO_PORT", port.to_string())
            .env("HOST", &self.host)
            .env("SM_MODEL_DIR", &model)
            .env("ATELIER_INSTANCE_SECRET", &order.secret)
            // NVML numbers GPUs in PCI bus order; CUDA, unless told, fastest first.
            .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            .env("CUDA_VISIBLE_DEVICES", gpus.join(","))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = command.spawn().context("starting the model server")?;
        let pid = child.id().map(|p| p as i32);
        if let Some(pid) = pid {
            let _ = tokio::fs::write(dir.join("pid"), pid.to_string()).await;
        }
        let url = format!("http://{}:{port}", url_host(&self.host));
        let ping = reqwest::Client::builder().timeout(CHECK_EVERY).build()?;
        self.set(status, INSTANCE_STARTING, None, format!("waiting for the model server on port {port}"));
        let result = self.watch(&mut child, &ping, &url, &log_path, status, stop).await;
        if result.is_ok() {
            // Told to stop: drain, then SIGTERM, then SIGKILL.
            tokio::time::sleep(DRAIN).await;
        }
        if let Some(pid) = pid {
            let _ = killpg(Pid::from_raw(self.sandbox.program_group(pid)), Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = child.wait().await;
        match guard.memory_exceeded() {
            Some(exceeded) => bail!("the model server {exceeded}"),
            None => result,
        }
    }

    async fn watch(
        &self,
        child: &mut tokio::process::Child,
        ping: &reqwest::Client,
        url: &str,
        log: &Path,
        status: &Mutex<InstanceReport>,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        let mut healthy = false;
        let mut misses = 0;
        loop {
            let every = if healthy { CHECK_EVERY } else { Duration::from_millis(200) };
            tokio::select! {
                exit = child.wait() => {
                    let code = exit.map(|s| self.sandbox.describe_exit(&s)).unwrap_or_else(|e| e.to_string());
                    bail!("the model server exited ({code}): {}", tail(log).await);
                }
                _ = stopped(stop) => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
            let ok = matches!(ping.get(format!("{url}/ping")).send().await, Ok(r) if r.status().is_success());
            match (ok, healthy) {
                (true, false) => {
                    healthy = true;
                    self.set(status, INSTANCE_IN_SERVICE, Some(url.to_string()), String::new());
                }
                (true, true) => misses = 0,
                (false, true) => {
                    misses += 1;
                    if misses >= MISSES {
                        bail!("the model server stopped answering /ping ({MISSES} checks in a row)");
                    }
                }
                (false, false) if started.elapsed() > STARTUP_TIMEOUT => {
                    bail!(
                        "the model server did not answer /ping within {} s: {}",
                        STARTUP_TIMEOUT.as_secs(),
                        tail(log).await
                    );
                }
                (false, false) => {}
            }
        }
    }
}

/// Until the instance is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, not across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

async fn check_sha256(path: &Path, expected: &str) -> anyhow::Result<()> {
    if expected.is_empty() {
        return Ok(());
    }
    let bytes = tokio::fs::read(path).await?;
    let actual: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if actual != expected {
        bail!("the model's SHA-256 is {actual}, not the registered {expected}");
    }
    Ok(())
}

/// A port nothing listens on now (the server binds it a moment later).
fn free_port(host: &str) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((host, 0)).with_context(|| format!("binding a port on {host}"))?;
    Ok(listener.local_addr()?.port())
}

pub(crate) fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The end of a model server's log, for a failure message.
async fn tail(log: &Path) -> String {
    let text = tokio::fs::read_to_string(log).await.unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(5);
    let tail = lines[start..].join(" | ");
    if tail.is_empty() {
        "it printed nothing".into()
    } else {
        tail.chars().rev().take(1500).collect::<Vec<_>>().into_iter().rev().collect()
    }
}
