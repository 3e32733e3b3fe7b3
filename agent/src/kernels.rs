//! Jupyter kernels for notebooks: the server lists, in every heartbeat answer, the
//! kernels this node should run; this module starts the missing ones, shuts down the
//! ones no longer listed and reports their state (`starting`, `idle`, `busy`, `dead`)
//! in the next heartbeat.
//!
//! Each kernel is an ipykernel process in a sandbox of its own (see
//! [`crate::sandbox`]), working in `{work_dir}/kernels/{kernel_id}/work/`, with its
//! ZeroMQ sockets on loopback. Beside `work/` lie the agent's files for it (the
//! connection file, the log, the pid), which the kernel cannot replace; `packages/`
//! takes what `%pip install` installs, since the shared environment is read-only. The agent speaks the Jupyter messaging protocol to it (see
//! [`wire`]) and offers it to the server over HTTP: the kernel gateway (see
//! `atelier_protocol::notebooks` for its routes), one listener per kernel on the
//! advertised host, guarded by the order's secret.
//!
//! The kernels share one Python environment, a virtualenv with ipykernel created once
//! (atomically, so that agents sharing the directory can race) from `--python`, in a
//! sandbox, and bound read-only into every kernel: no kernel can change what another
//! one imports.

mod gateway;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{bail, Context as _};
use atelier_protocol::notebooks::{
    KernelMessage, KernelOrder, KernelReport, KERNEL_BUSY, KERNEL_DEAD, KERNEL_IDLE, KERNEL_STARTING,
};
use axum::http::StatusCode;
use bytes::Bytes;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use zeromq::{DealerSendHalf, DealerSocket, ReqSocket, Socket as _, SocketRecv as _, SocketSend as _, SubSocket};

use self::wire::{Message, Session};
use crate::sandbox::{Guard, Request, Sandbox};

/// How long a kernel may take from spawning to answering `kernel_info_request`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `kernel_info_request` is repeated while waiting for the kernel.
const INFO_EVERY: Duration = Duration::from_millis(500);
/// Heartbeats of a running kernel: this often, each given this long, failing after
/// this many misses in a row.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
const HEARTBEAT_MISSES: u32 = 2;
/// How long a kernel told to shut down may take before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// After an execution's reply, how long to wait for the kernel's return to idle (its
/// iopub message may have been lost) before ending the stream anyway.
const IDLE_GRACE: Duration = Duration::from_secs(5);
/// How much of a kernel's output, and of its log, a dead kernel's message keeps.
const OUTPUT_KEEP: usize = 2048;
const LOG_KEEP: usize = 1536;

/// Where and how kernels run.
#[derive(Debug, Clone)]
pub struct KernelSettings {
    /// The agent's work directory; kernels work in `kernels/{kernel_id}/` under it.
    pub work_dir: PathBuf,
    /// The address the kernel gateways listen on (the node's address as the server
    /// reaches it).
    pub advertise_host: String,
    /// How kernels (and the environment's creation) are contained; its interpreter is
    /// the one the kernel environment is created from.
    pub sandbox: Arc<Sandbox>,
    /// The kernel environment (a virtualenv), created if missing.
    pub env: PathBuf,
    /// What is pip-installed into a new kernel environment (must include ipykernel).
    pub packages: Vec<String>,
}

/// The kernels the agent runs, shared by the heartbeat loop and the kernels' tasks.
pub struct Kernels {
    dir: PathBuf,
    host: String,
    env: Arc<Environment>,
    kernels: Mutex<HashMap<String, Handle>>,
    /// Woken when a kernel starts, becomes ready or dies (not when it merely turns busy
    /// or idle), so the heartbeat reports it at once.
    pub changed: Arc<Notify>,
}

struct Handle {
    kernel: Arc<Kernel>,
    stop: watch::Sender<bool>,
}

impl Kernels {
    pub fn new(settings: KernelSettings) -> Arc<Kernels> {
        Arc::new(Kernels {
            dir: settings.work_dir.join("kernels"),
            host: settings.advertise_host,
            env: Arc::new(Environment {
                sandbox: settings.sandbox,
                dir: settings.env,
                packages: settings.packages,
                lock: tokio::sync::Mutex::new(()),
                ready: AtomicBool::new(false),
            }),
            kernels: Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
        })
    }

    /// The state of every kernel, for the heartbeat.
    pub fn reports(&self) -> Vec<KernelReport> {
        let Ok(map) = self.kernels.lock() else { return Vec::new() };
        map.values().map(|h| h.kernel.report()).collect()
    }

    /// Makes the running set what the server asked for.
    pub fn apply(self: &Arc<Self>, orders: Vec<KernelOrder>) {
        let Ok(mut map) = self.kernels.lock() else { return };
        map.retain(|id, handle| {
            let keep = orders.iter().any(|o| &o.kernel_id == id);
            if !keep {
                tracing::info!(kernel = %id, "kernel no longer wanted; shutting it down");
                let _ = handle.stop.send(true);
            }
            keep
        });
        for order in orders {
            if map.contains_key(&order.kernel_id) {
                continue;
            }
            tracing::info!(kernel = %order.kernel_id, gpus = ?order.gpus, "starting a kernel");
            let kernel = Arc::new(Kernel {
                dir: self.dir.join(&order.kernel_id),
                id: order.kernel_id.clone(),
                secret: order.secret,
                gpus: order.gpus,
                memory_mb: order.memory_mb,
                cpus: order.cpus,
                env: self.env.clone(),
                status: Mutex::new(Status { state: KERNEL_STARTING, url: None, message: "starting the kernel".into() }),
                current: Mutex::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                shut_down: AtomicBool::new(false),
                changed: self.changed.clone(),
            });
            let (stop, stopped) = watch::channel(false);
            map.insert(order.kernel_id, Handle { kernel: kernel.clone(), stop });
            let me = self.clone();
            tokio::spawn(async move { me.run(kernel, stopped).await });
        }
        drop(map);
    }

    /// Shuts every kernel down (the node was deregistered).
    pub fn stop_all(&self) {
        if let Ok(mut map) = self.kernels.lock() {
            for (_, handle) in map.drain() {
                let _ = handle.stop.send(true);
            }
        }
    }

    /// The process id of a kernel's current process (tests kill it to see the kernel
    /// die).
    pub fn pid(&self, kernel_id: &str) -> Option<i32> {
        let map = self.kernels.lock().ok()?;
        let kernel = map.get(kernel_id)?.kernel.clone();
        drop(map);
        let current = kernel.current.lock().ok()?;
        current.as_ref().map(|p| p.program)
    }

    /// Creates the kernel environment unless it exists; its interpreter.
    pub async fn prepare_environment(&self) -> anyhow::Result<PathBuf> {
        self.env.ensure(|_| {}).await
    }

    /// One kernel, from its order to its shutdown.
    async fn run(self: Arc<Self>, kernel: Arc<Kernel>, mut stop: watch::Receiver<bool>) {
        let gateway = match self.listen(&kernel).await {
            Ok(gateway) => gateway,
            Err(err) => {
                tracing::warn!(kernel = %kernel.id, error = %format!("{err:#}"), "kernel failed");
                kernel.set(KERNEL_DEAD, format!("{err:#}"));
                stopped(&mut stop).await;
                return;
            }
        };
        tokio::select! {
            _ = kernel.start() => {}
            _ = stopped(&mut stop) => {}
        }
        stopped(&mut stop).await;
        kernel.shutdown().await;
        gateway.abort();
        tracing::info!(kernel = %kernel.id, "kernel shut down");
    }

    /// Starts the kernel's gateway on a free port of the advertised host.
    async fn listen(&self, kernel: &Arc<Kernel>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        if !is_safe_name(&kernel.id) {
            bail!("the kernel id {:?} is not a valid directory name", kernel.id);
        }
        let listener = tokio::net::TcpListener::bind((self.host.as_str(), 0))
            .await
            .with_context(|| format!("binding the kernel gateway on {}", self.host))?;
        let port = listener.local_addr()?.port();
        if let Ok(mut status) = kernel.status.lock() {
            status.url = Some(format!("http://{}:{port}", crate::serving::url_host(&self.host)));
        }
        let router = gateway::router(kernel.clone());
        let id = kernel.id.clone();
        // An execution streams many small writes; without TCP_NODELAY, Nagle's
        // algorithm holds each for the server's delayed ACK (40 ms a cell).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        Ok(tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::warn!(kernel = %id, %err, "the kernel gateway stopped");
            }
        }))
    }
}

/// Until the kernel is told to shut down.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, not across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Whether a name from the server can be a directory name under the work directory.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The kernels' Python environment.
struct Environment {
    /// Contains its creation, and the kernels; its interpreter is the base.
    sandbox: Arc<Sandbox>,
    dir: PathBuf,
    packages: Vec<String>,
    /// One creation at a time in this agent (others wait for it).
    lock: tokio::sync::Mutex<()>,
    /// Known to work: no need to check again.
    ready: AtomicBool,
}

impl Environment {
    fn python(&self) -> PathBuf {
        self.dir.join("bin").join("python")
    }

    /// The environment's interpreter, once the environment can run a kernel; calls
    /// `creating` with what it is doing first if it has to create it.
    async fn ensure(self: &Arc<Self>, creating: impl FnOnce(String)) -> anyhow::Result<PathBuf> {
        if self.ready.load(Ordering::SeqCst) || self.usable().await {
            self.ready.store(true, Ordering::SeqCst);
            return Ok(self.python());
        }
        creating(format!("creating the kernel environment (pip install {})", self.packages.join(" ")));
        // In a task of its own: a kernel shut down meanwhile must not abandon a
        // creation that other kernels wait for.
        let me = self.clone();
        tokio::spawn(async move {
            let _one_at_a_time = me.lock.lock().await;
            if !me.usable().await {
                me.create().await?;
            }
            me.ready.store(true, Ordering::SeqCst);
            Ok(me.python())
        })
        .await
        .context("creating the kernel environment")?
    }

    /// Whether its interpreter can import ipykernel (asked in a sandbox: an
    /// environment made before sandboxes may hold what a kernel once put there).
    async fn usable(&self) -> bool {
        let Some(parent) = self.dir.parent() else { return false };
        if !self.python().exists() {
            return false;
        }
        let request = Request {
            name: "kernel-env-check".into(),
            readable: vec![self.dir.clone()],
            cwd: parent.to_path_buf(),
            memory_mb: 512,
            ..Request::default()
        };
        let Ok((mut command, _guard)) =
            self.sandbox.command(&request, self.python(), &["-c".into(), "import ipykernel".into()])
        else {
            return false;
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    /// Builds the environment beside its final place, then renames it there: an agent
    /// never sees a half-made environment, and of agents racing, the first rename wins
    /// and the others use it. (A venv's scripts embed its path, but the agent only ever
    /// runs `bin/python -m ...`, which finds the venv relative to itself.)
    async fn create(&self) -> anyhow::Result<()> {
        let name =
            self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "kernel-env".into());
        let parent = self.dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        tokio::fs::create_dir_all(&parent).await.with_context(|| format!("creating {}", parent.display()))?;
        if tokio::fs::try_exists(&self.dir).await.unwrap_or(false) {
            // There, but it cannot import ipykernel: move it aside and start over.
            tracing::warn!(env = %self.dir.display(), "the kernel environment is broken; recreating it");
            let aside = parent.join(format!("{name}.broken-{}", uuid::Uuid::new_v4().simple()));
            if tokio::fs::rename(&self.dir, &aside).await.is_ok() {
                let _ = tokio::fs::remove_dir_all(&aside).await;
            }
        }
        let tmp = parent.join(format!("{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
        tracing::info!(env = %self.dir.display(), packages = %self.packages.join(" "), "creating the kernel environment");
        let built = async {
            tokio::fs::create_dir_all(&tmp).await?;
            // A package's build runs arbitrary code: in a sandbox that sees only `tmp`.
            let request = Request {
                name: "kernel-env".into(),
                writable: vec![tmp.clone()],
                cwd: tmp.clone(),
                memory_mb: 2048,
                needs_network: true,
                ..Request::default()
            };
            let venv = ["-m".into(), "venv".into(), tmp.clone().into_os_string()];
            run_quietly(self.sandbox.command(&request, self.sandbox.python(), &venv)?, "python -m venv").await?;
            let mut pip: Vec<std::ffi::OsString> =
                ["-m", "pip", "install", "--disable-pip-version-check", "-q"].map(Into::into).to_vec();
            pip.extend(self.packages.iter().map(Into::into));
            run_quietly(self.sandbox.command(&request, tmp.join("bin").join("python"), &pip)?, "pip install").await?;
            self.sandbox.reclaim(&tmp)
        }
        .await;
        if let Err(err) = built {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return Err(err);
        }
        match tokio::fs::rename(&tmp, &self.dir).await {
            Ok(()) => {
                tracing::info!(env = %self.dir.display(), "kernel environment ready");
                Ok(())
            }
            Err(err) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                if tokio::fs::try_exists(&self.dir).await.unwrap_or(false) {
                    // Another agent got there first.
                    return Ok(());
                }
                Err(err).with_context(|| format!("moving the new environment to {}", self.dir.display()))
            }
        }
    }
}

/// Runs a command to completion; fails with the end of its output.
async fn run_quietly((mut command, _guard): (tokio::process::Command, Guard), what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {what} ({:?})", command.as_std().get_program()))?;
    if !output.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        bail!("{what} failed ({}): {}", output.status, last_chars(text.trim(), 1500));
    }
    Ok(())
}

/// A kernel: its order, its state, and its current process.
struct Kernel {
    id: String,
    secret: String,
    gpus: Vec<u32>,
    /// Its sandbox's limits (0: none).
    memory_mb: u64,
    cpus: u32,
    dir: PathBuf,
    env: Arc<Environment>,
    status: Mutex<Status>,
    /// The running process, once started and until it dies or is replaced.
    current: Mutex<Option<Arc<Process>>>,
    /// Starting, restarting and shutting down, one at a time.
    lifecycle: tokio::sync::Mutex<()>,
    /// Counts processes, so that a replaced process's death is not taken for the
    /// kernel's.
    generation: AtomicU64,
    /// Set once shut down: nothing may start it again (a restart still in flight).
    shut_down: AtomicBool,
    changed: Arc<Notify>,
}

struct Status {
    state: &'static str,
    url: Option<String>,
    message: String,
}

impl Kernel {
    fn report(&self) -> KernelReport {
        match self.status.lock() {
            Ok(s) => KernelReport {
                kernel_id: self.id.clone(),
                state: s.state.into(),
                url: s.url.clone(),
                message: s.message.clone(),
            },
            Err(_) => KernelReport {
                kernel_id: self.id.clone(),
                state: KERNEL_DEAD.into(),
                url: None,
                message: "internal error".into(),
            },
        }
    }

    /// Sets the state; wakes the heartbeat unless only busy and idle swapped.
    fn set(&self, state: &'static str, message: String) {
        fn class(s: &str) -> &str {
            if s == KERNEL_BUSY {
                KERNEL_IDLE
            } else {
                s
            }
        }
        let wake = match self.status.lock() {
            Ok(mut s) => {
                let wake = class(s.state) != class(state) || s.message != message;
                s.state = state;
                s.message = message;
                wake
            }
            Err(_) => false,
        };
        if wake {
            self.changed.notify_one();
        }
    }

    /// Follows the kernel's `status` messages: busy or idle, while it is up.
    fn set_execution_state(&self, generation: u64, execution_state: &str) {
        let state = match execution_state {
            "busy" => KERNEL_BUSY,
            "idle" => KERNEL_IDLE,
            _ => return,
        };
        if !self.is_current(generation) {
            return;
        }
        if let Ok(mut s) = self.status.lock() {
            if s.state == KERNEL_BUSY || s.state == KERNEL_IDLE {
                s.state = state;
            }
        }
    }

    fn is_current(&self, generation: u64) -> bool {
        self.current.lock().is_ok_and(|c| c.as_ref().is_some_and(|p| p.generation == generation))
    }

    /// The running process, or why there is none (for a 409).
    fn ready_process(&self) -> Result<Arc<Process>, String> {
        let process = self.current.lock().ok().and_then(|c| c.clone());
        let report = self.report();
        match process {
            Some(p) if report.state == KERNEL_IDLE || report.state == KERNEL_BUSY => Ok(p),
            _ if report.state == KERNEL_STARTING => Err(format!("the kernel is starting: {}", report.message)),
            _ => Err(format!("the kernel is dead: {}", report.message)),
        }
    }

    /// Starts the kernel (first start).
    async fn start(self: &Arc<Self>) {
        let _one_at_a_time = self.lifecycle.lock().await;
        let _ = self.start_locked().await;
    }

    async fn start_locked(self: &Arc<Self>) -> Result<(), String> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err("the kernel was shut down".into());
        }
        self.set(KERNEL_STARTING, "starting the kernel".into());
        let started = async {
            let python = self.env.ensure(|doing| self.set(KERNEL_STARTING, doing)).await?;
            self.set(KERNEL_STARTING, "starting the kernel".into());
            self.spawn(&python).await
        }
        .await;
        let process = match started {
            Ok(process) => process,
            Err(err) => {
                let message = format!("{err:#}");
                tracing::warn!(kernel = %self.id, error = %message, "the kernel did not start");
                self.set(KERNEL_DEAD, message.clone());
                return Err(message);
            }
        };
        if let Ok(mut current) = self.current.lock() {
            *current = Some(process.clone());
        }
        self.set(KERNEL_IDLE, String::new());
        // It may have died between being ready and being recorded, unseen.
        let died = process.shared.dead.borrow().clone();
        if let Some(message) = died {
            self.process_exited(process.generation, message.clone());
            return Err(message);
        }
        tracing::info!(kernel = %self.id, pid = process.pid, "kernel ready");
        Ok(())
    }

    /// A new process in place of the current one, once it is ready.
    async fn restart(self: &Arc<Self>) -> Result<KernelReport, String> {
        let _one_at_a_time = self.lifecycle.lock().await;
        let old = self.current.lock().ok().and_then(|mut c| c.take());
        self.set(KERNEL_STARTING, "restarting the kernel".into());
        if let Some(old) = old {
            tracing::info!(kernel = %self.id, "restarting the kernel");
            old.kill("the kernel was restarted").await;
        }
        self.start_locked().await?;
        Ok(self.report())
    }

    /// Stops the current process for good.
    async fn shutdown(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        let _one_at_a_time = self.lifecycle.lock().await;
        let process = self.current.lock().ok().and_then(|mut c| c.take());
        if let Some(process) = process {
            process.shutdown().await;
        }
    }

    /// Called when a process exited: the kernel is dead, if that was its process.
    fn process_exited(&self, generation: u64, message: String) {
        let gone = self.current.lock().ok().and_then(|mut c| {
            if c.as_ref().is_some_and(|p| p.generation == generation) {
                c.take()
            } else {
                None
            }
        });
        if gone.is_some() {
            tracing::warn!(kernel = %self.id, %message, "kernel died");
            self.set(KERNEL_DEAD, message);
        }
    }

    /// Sends SIGINT to the kernel process (its `interrupt_mode` is "signal").
    fn interrupt(&self) -> Result<(), String> {
        let process = self.ready_process()?;
        kill(Pid::from_raw(process.program), Signal::SIGINT).map_err(|e| format!("interrupting the kernel: {e}"))
    }

    /// Sends an `execute_request`; the lines of the stream to answer with.
    async fn execute(&self, code: &str, silent: bool) -> Result<mpsc::Receiver<Bytes>, (StatusCode, String)> {
        let process = self.ready_process().map_err(|m| (StatusCode::CONFLICT, m))?;
        let request = process.session.request(
            "execute_request",
            json!({
                "code": code,
                "silent": silent,
                "store_history": !silent,
                "user_expressions": {},
                "allow_stdin": false,
                "stop_on_error": true,
            }),
        );
        let msg_id = request.msg_id().to_string();
        let (events_tx, events) = mpsc::unbounded_channel();
        if let Ok(mut routes) = process.shared.routes.lock() {
            routes.insert(msg_id.clone(), events_tx);
        }
        let sent = process.shell.lock().await.send(process.session.encode(&request)).await;
        if let Err(err) = sent {
            if let Ok(mut routes) = process.shared.routes.lock() {
                routes.remove(&msg_id);
            }
            return Err((StatusCode::INTERNAL_SERVER_ERROR, format!("sending the code to the kernel: {err}")));
        }
        let (lines, body) = mpsc::channel(64);
        tokio::spawn(forward(events, lines, process.shared.clone(), msg_id));
        Ok(body)
    }

    /// Spawns a kernel process and waits until it answers on shell and iopub.
    async fn spawn(self: &Arc<Self>, python: &Path) -> anyhow::Result<Arc<Process>> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let (work, packages) = (self.dir.join("work"), self.dir.join("packages"));
        for dir in [&work, &packages] {
            tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;
        }
        let [shell_port, iopub_port, stdin_port, control_port, hb_port] = free_ports()?;
        let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let connection = json!({
            "transport": "tcp",
            "ip": "127.0.0.1",
            "shell_port": shell_port,
            "iopub_port": iopub_port,
            "stdin_port": stdin_port,
            "control_port": control_port,
            "hb_port": hb_port,
            "signature_scheme": "hmac-sha256",
            "key": key,
            "kernel_name": "python3",
        });
        let connection_file = self.dir.join("connection.json");
        // Replaced, never written through: the kernel could have left a link there.
        let _ = std::fs::remove_file(&connection_file);
        write_private(&connection_file, &serde_json::to_vec_pretty(&connection)?)?;
        let log_path = self.dir.join("kernel.log");
        let _ = std::fs::remove_file(&log_path);
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let gpus: Vec<String> = self.gpus.iter().map(u32::to_string).collect();
        let sandbox = &self.env.sandbox;
        let request = Request {
            name: format!("kernel-{}", self.id),
            writable: vec![work.clone(), packages.clone()],
            readable: vec![self.env.dir.clone()],
            private_files: vec![connection_file.clone()],
            cwd: work,
            gpus: self.gpus.clone(),
            memory_mb: self.memory_mb,
            cpus: self.cpus,
            needs_network: true,
        };
        let args = ["-m".into(), "ipykernel_launcher".into(), "-f".into(), connection_file.clone().into_os_string()];
        let (mut command, guard) = sandbox.command(&request, python, &args)?;
        command
            // NVML numbers GPUs in PCI bus order; CUDA, unless told, fastest first.
            .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            .env("CUDA_VISIBLE_DEVICES", gpus.join(","))
            .env("PYTHONUNBUFFERED", "1")
            .env("MPLBACKEND", "module://matplotlib_inline.backend_inline")
            // `%pip install` goes to the kernel's own layer, found before the shared
            // environment's packages.
            .env("PIP_TARGET", &packages)
            .env("PYTHONPATH", &packages)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !sandbox.enabled() {
            // ipykernel exits by itself once this process is gone (in a sandbox, its
            // parent is the sandbox's init, and the sandbox dies with the agent).
            command.env("JPY_PARENT_PID", std::process::id().to_string());
        }
        let child = command.spawn().with_context(|| format!("starting {}", python.display()))?;
        let pid = child.id().map(|p| p as i32).context("the kernel process has no pid")?;
        let group = Group(pid);
        // For `runner::kill_leftovers`, should this agent die without killing it.
        let _ = tokio::fs::write(self.dir.join("pid"), pid.to_string()).await;

        let session = Session::new(key.as_bytes());
        let shared = Arc::new(Shared::default());
        let (exited_tx, mut exited) = watch::channel(None::<String>);
        let mut tasks = Tasks::default();
        tasks.spawn(watch_exit(
            child,
            (guard, self.env.sandbox.clone()),
            exited_tx,
            shared.clone(),
            log_path.clone(),
            Arc::downgrade(self),
            generation,
        ));

        let handshake = connect(&session, shell_port, iopub_port, control_port, hb_port);
        let (shell, iopub, control) = tokio::select! {
            ready = tokio::time::timeout(STARTUP_TIMEOUT, handshake) => match ready {
                Ok(Ok(sockets)) => sockets,
                Ok(Err(err)) => bail!("connecting to the kernel: {err:#}\n{}", log_tail(&log_path, LOG_KEEP).await),
                Err(_) => bail!(
                    "the kernel did not answer within {} s\n{}",
                    STARTUP_TIMEOUT.as_secs(),
                    log_tail(&log_path, LOG_KEEP).await
                ),
            },
            status = async { exited.wait_for(Option::is_some).await.map(|s| s.clone().unwrap_or_default()) } => {
                let status = status.unwrap_or_default();
                bail!("the kernel exited while starting ({status})\n{}", log_tail(&log_path, LOG_KEEP).await)
            }
        };
        let (shell_send, shell_recv) = shell.split();
        let me = Arc::downgrade(self);
        tasks.spawn(read_iopub(iopub, session.clone(), shared.clone(), me, generation));
        tasks.spawn(read_shell(shell_recv, session.clone(), shared.clone()));
        tasks.spawn(heartbeat(format!("tcp://127.0.0.1:{hb_port}"), shared.clone(), exited.clone(), pid));
        // Started and answering: bubblewrap has long since started the kernel itself.
        let program = self.env.sandbox.program_group(pid);
        Ok(Arc::new(Process {
            generation,
            pid,
            program,
            session,
            shell: tokio::sync::Mutex::new(shell_send),
            control: tokio::sync::Mutex::new(control),
            shared,
            exited,
            _tasks: tasks,
            _group: group,
        }))
    }
}

/// One ipykernel process and the agent's connections to it.
struct Process {
    generation: u64,
    /// The process the agent spawned, whose group is the whole sandbox.
    pid: i32,
    /// The kernel itself (the leader of its own process group), for interrupts.
    program: i32,
    session: Session,
    shell: tokio::sync::Mutex<DealerSendHalf>,
    control: tokio::sync::Mutex<DealerSocket>,
    shared: Arc<Shared>,
    /// The exit status, once it has exited.
    exited: watch::Receiver<Option<String>>,
    // Dropping the process stops its tasks and kills its process group.
    _tasks: Tasks,
    _group: Group,
}

/// What a process's tasks share with the gateway.
#[derive(Default)]
struct Shared {
    /// The executions in flight, by the `msg_id` of their request.
    routes: Mutex<HashMap<String, mpsc::UnboundedSender<KernelMessage>>>,
    /// The end of what the kernel printed (streams and errors).
    output: Mutex<String>,
    /// Why the agent is ending the process, and whether the message should show its
    /// last output; unset when it dies by itself.
    cause: Mutex<Option<(String, bool)>>,
    /// Set once the process is gone: why, with its last output.
    dead: watch::Sender<Option<String>>,
}

impl Shared {
    fn set_cause(&self, cause: &str, with_output: bool) {
        if let Ok(mut c) = self.cause.lock() {
            c.get_or_insert_with(|| (cause.to_string(), with_output));
        }
    }

    /// Passes a message to the execution it belongs to.
    fn route(&self, parent: &str, message: KernelMessage) {
        let Ok(mut routes) = self.routes.lock() else { return };
        if let Some(tx) = routes.get(parent) {
            if tx.send(message).is_err() {
                routes.remove(parent);
            }
        }
    }

    /// Keeps the text of stream and error messages, for a dead kernel's message.
    fn remember_output(&self, message: &Message) {
        let text = match message.msg_type() {
            "stream" => message.content["text"].as_str().unwrap_or("").to_string(),
            "error" => {
                let traceback: Vec<&str> =
                    message.content["traceback"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                if traceback.is_empty() {
                    format!(
                        "{}: {}\n",
                        message.content["ename"].as_str().unwrap_or(""),
                        message.content["evalue"].as_str().unwrap_or("")
                    )
                } else {
                    format!("{}\n", strip_ansi(&traceback.join("\n")))
                }
            }
            _ => return,
        };
        if let Ok(mut output) = self.output.lock() {
            output.push_str(&text);
            if output.len() > 2 * OUTPUT_KEEP {
                *output = last_chars(&output, OUTPUT_KEEP).to_string();
            }
        }
    }

    /// Why the process ended, for the kernel's report and running executions.
    async fn death_message(&self, status: &str, log: &Path) -> String {
        let cause = self.cause.lock().ok().and_then(|c| c.clone());
        let (mut message, with_output) = cause.unwrap_or_else(|| (format!("the kernel exited ({status})"), true));
        if !with_output {
            return message;
        }
        let output = self.output.lock().map(|o| last_chars(o.trim_end(), OUTPUT_KEEP).to_string()).unwrap_or_default();
        if !output.is_empty() {
            message.push_str("\n\nLast output:\n");
            message.push_str(&output);
        }
        let log = log_tail(log, LOG_KEEP).await;
        if !log.is_empty() {
            message.push_str("\n\n");
            message.push_str(&log);
        }
        message
    }
}

impl Process {
    /// Kills the process group at once.
    async fn kill(&self, cause: &str) {
        self.shared.set_cause(cause, false);
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        self.wait_exit(SHUTDOWN_GRACE).await;
    }

    /// Asks the kernel to shut down, then kills what is left of its process group.
    async fn shutdown(&self) {
        self.shared.set_cause("the kernel was shut down", false);
        let request = self.session.request("shutdown_request", json!({"restart": false}));
        let sent = tokio::time::timeout(Duration::from_secs(1), async {
            self.control.lock().await.send(self.session.encode(&request)).await
        })
        .await;
        if matches!(sent, Ok(Ok(()))) {
            self.wait_exit(SHUTDOWN_GRACE).await;
        }
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        self.wait_exit(SHUTDOWN_GRACE).await;
    }

    async fn wait_exit(&self, limit: Duration) {
        let mut exited = self.exited.clone();
        let _ = tokio::time::timeout(limit, async { exited.wait_for(Option::is_some).await.map(|_| ()) }).await;
    }
}

/// Connects the shell, iopub and control sockets and waits for the kernel: a
/// `kernel_info_reply` on shell says it is up, a `status` on iopub that the
/// subscription has taken (messages published before that are lost, so asking again
/// until one arrives).
async fn connect(
    session: &Session,
    shell_port: u16,
    iopub_port: u16,
    control_port: u16,
    hb_port: u16,
) -> anyhow::Result<(DealerSocket, SubSocket, DealerSocket)> {
    // ipykernel binds its heartbeat port last: once it accepts, all the others do, and
    // the sockets below connect at once rather than backing off.
    while tokio::net::TcpStream::connect(("127.0.0.1", hb_port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let endpoint = |port: u16| format!("tcp://127.0.0.1:{port}");
    let mut iopub = SubSocket::new();
    iopub.subscribe("").await?;
    iopub.connect(&endpoint(iopub_port)).await?;
    let mut shell = DealerSocket::new();
    shell.connect(&endpoint(shell_port)).await?;
    let mut control = DealerSocket::new();
    control.connect(&endpoint(control_port)).await?;
    let (mut replied, mut subscribed) = (false, false);
    let mut next = Instant::now();
    while !(replied && subscribed) {
        if Instant::now() >= next {
            shell.send(session.encode(&session.request("kernel_info_request", json!({})))).await?;
            next = Instant::now() + INFO_EVERY;
        }
        tokio::select! {
            frames = shell.recv() => {
                match session.decode(frames?.into_vec()) {
                    Ok(m) if m.msg_type() == "kernel_info_reply" => replied = true,
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "dropping a message from the kernel's shell"),
                }
            }
            frames = iopub.recv() => {
                match session.decode(frames?.into_vec()) {
                    Ok(m) if m.msg_type() == "status" => subscribed = true,
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "dropping a message from the kernel's iopub"),
                }
            }
            _ = tokio::time::sleep_until(next) => {}
        }
    }
    Ok((shell, iopub, control))
}

/// Routes iopub messages to their executions and follows the kernel's busy/idle state.
async fn read_iopub(
    mut iopub: SubSocket,
    session: Session,
    shared: Arc<Shared>,
    kernel: Weak<Kernel>,
    generation: u64,
) {
    loop {
        let frames = match iopub.recv().await {
            Ok(frames) => frames.into_vec(),
            Err(err) => {
                tracing::debug!(%err, "reading the kernel's iopub");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let message = match session.decode(frames) {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(%err, "dropping a message from the kernel's iopub");
                continue;
            }
        };
        if message.msg_type() == "status" {
            if let (Some(kernel), Some(state)) = (kernel.upgrade(), message.content["execution_state"].as_str()) {
                kernel.set_execution_state(generation, state);
            }
        }
        shared.remember_output(&message);
        if let Some(parent) = message.parent_id() {
            let parent = parent.to_string();
            let msg_type = message.msg_type().to_string();
            shared.route(&parent, KernelMessage { msg_type, content: message.content });
        }
    }
}

/// Routes `execute_reply` messages to their executions.
async fn read_shell(mut shell: zeromq::DealerRecvHalf, session: Session, shared: Arc<Shared>) {
    loop {
        let frames = match shell.recv().await {
            Ok(frames) => frames.into_vec(),
            Err(err) => {
                tracing::debug!(%err, "reading the kernel's shell");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match session.decode(frames) {
            Ok(m) if m.msg_type() == "execute_reply" => {
                if let Some(parent) = m.parent_id() {
                    let parent = parent.to_string();
                    shared.route(&parent, KernelMessage { msg_type: "execute_reply".into(), content: m.content });
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "dropping a message from the kernel's shell"),
        }
    }
}

/// Pings the kernel's heartbeat; after enough misses in a row while the process still
/// runs, kills it (the kernel is then dead, see [`watch_exit`]).
async fn heartbeat(endpoint: String, shared: Arc<Shared>, exited: watch::Receiver<Option<String>>, pid: i32) {
    // A REQ socket whose request got no answer cannot send again: a new one after each
    // miss.
    let mut socket: Option<ReqSocket> = None;
    let mut misses = 0;
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, ping(&mut socket, &endpoint)).await {
            Ok(Ok(())) => misses = 0,
            _ => {
                misses += 1;
                socket = None;
            }
        }
        if misses >= HEARTBEAT_MISSES && exited.borrow().is_none() {
            tracing::warn!(pid, "the kernel stopped answering its heartbeat; killing it");
            shared.set_cause("the kernel stopped answering its heartbeat", true);
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return;
        }
    }
}

async fn ping(socket: &mut Option<ReqSocket>, endpoint: &str) -> anyhow::Result<()> {
    let socket = match socket {
        Some(s) => s,
        None => {
            let mut s = ReqSocket::new();
            s.connect(endpoint).await?;
            socket.insert(s)
        }
    };
    socket.send(zeromq::ZmqMessage::from("ping")).await?;
    socket.recv().await?;
    Ok(())
}

/// Waits for the process to exit, then tells the executions and the kernel.
async fn watch_exit(
    mut child: tokio::process::Child,
    (guard, sandbox): (Guard, Arc<Sandbox>),
    exited: watch::Sender<Option<String>>,
    shared: Arc<Shared>,
    log: PathBuf,
    kernel: Weak<Kernel>,
    generation: u64,
) {
    let status = match child.wait().await {
        Ok(status) => sandbox.describe_exit(&status),
        Err(err) => format!("waiting for it failed: {err}"),
    };
    if let Some(exceeded) = guard.memory_exceeded() {
        shared.set_cause(&format!("the kernel {exceeded}"), true);
    }
    drop(guard);
    let _ = exited.send(Some(status.clone()));
    let message = shared.death_message(&status, &log).await;
    shared.dead.send_if_modified(|dead| {
        let first = dead.is_none();
        if first {
            *dead = Some(message.clone());
        }
        first
    });
    // Last: this may drop the process, and with it this task.
    if let Some(kernel) = kernel.upgrade() {
        kernel.process_exited(generation, message);
    }
}

/// Relays an execution's messages as ND-JSON lines until its reply and the kernel's
/// return to idle have both been seen, or the kernel dies.
async fn forward(
    mut events: mpsc::UnboundedReceiver<KernelMessage>,
    lines: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    msg_id: String,
) {
    let mut dead = shared.dead.subscribe();
    let (mut replied, mut idle) = (false, false);
    let mut deadline: Option<Instant> = None;
    loop {
        let message = tokio::select! {
            event = events.recv() => match event {
                Some(message) => message,
                None => break,
            },
            message = died(&mut dead) => {
                let _ = lines.send(line(&KernelMessage { msg_type: "kernel_dead".into(), content: json!({"message": message}) })).await;
                break;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
        };
        let mut done = false;
        match (message.msg_type.as_str(), message.content["execution_state"].as_str()) {
            ("execute_reply", _) => {
                replied = true;
                // A request skipped after an earlier error may not go busy and idle.
                done = message.content["status"] == "aborted";
            }
            ("status", Some("idle")) => idle = true,
            _ => {}
        }
        if lines.send(line(&message)).await.is_err() {
            break; // The caller went away.
        }
        if done || (replied && idle) {
            break;
        }
        if replied && deadline.is_none() {
            deadline = Some(Instant::now() + IDLE_GRACE);
        }
    }
    if let Ok(mut routes) = shared.routes.lock() {
        routes.remove(&msg_id);
    }
}

/// Once the process is gone: why.
async fn died(dead: &mut watch::Receiver<Option<String>>) -> String {
    match dead.wait_for(Option::is_some).await {
        Ok(message) => message.clone().unwrap_or_default(),
        Err(_) => "the kernel is gone".into(),
    }
}

fn line(message: &KernelMessage) -> Bytes {
    let mut bytes = serde_json::to_vec(message).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Tasks that end with their owner.
#[derive(Default)]
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Tasks {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(task).abort_handle());
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A kernel's process group, killed when dropped (with whatever the kernel started).
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// Five loopback ports nothing listens on now (the kernel binds them a moment later).
fn free_ports() -> anyhow::Result<[u16; 5]> {
    // All held at once, so that the five differ.
    let listeners = (0..5)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free loopback ports")?;
    let mut ports = [0u16; 5];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Writes a file only its owner can read (the connection file holds the signing key).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// The end of the kernel's log, labelled, or "" if it is empty.
async fn log_tail(path: &Path, keep: usize) -> String {
    let text = tokio::fs::read(path).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    // ipykernel warns on every start that loopback TCP is not encrypted: noise here.
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("running over TCP without encryption")).collect();
    let text = lines.join("\n");
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("Kernel log:\n{}", last_chars(text, keep))
    }
}

/// At most the last `keep` bytes of `text`, cut at a character boundary.
fn last_chars(text: &str, keep: usize) -> &str {
    let mut start = text.len().saturating_sub(keep);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Without terminal colour codes (IPython colours its tracebacks).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters, ended by a letter.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_stripped_from_tracebacks() {
        assert_eq!(strip_ansi("\u{1b}[0;31mZeroDivisionError\u{1b}[0m: x"), "ZeroDivisionError: x");
    }

    #[test]
    fn tails_cut_at_character_boundaries() {
        assert_eq!(last_chars("héllo", 4), "llo");
        assert_eq!(last_chars("abc", 10), "abc");
    }

    #[test]
    fn kernel_ids_must_be_plain_names() {
        assert!(is_safe_name("0190f0a2-7b1c-7d3e-9f00-123456789abc"));
        assert!(!is_safe_name("../etc"));
        assert!(!is_safe_name(".."));
        assert!(!is_safe_name("a/b"));
        assert!(!is_safe_name(""));
    }

    #[test]
    fn only_a_change_between_starting_ready_and_dead_wakes_the_heartbeat() {
        let kernel = Kernel {
            id: "k".into(),
            secret: "s".into(),
            gpus: Vec::new(),
            memory_mb: 0,
            cpus: 0,
            dir: PathBuf::from("/nonexistent"),
            env: Arc::new(Environment {
                sandbox: Arc::new(crate::sandbox::Sandbox::off_for_tests()),
                dir: PathBuf::from("/nonexistent"),
                packages: Vec::new(),
                lock: tokio::sync::Mutex::new(()),
                ready: AtomicBool::new(false),
            }),
            status: Mutex::new(Status { state: KERNEL_STARTING, url: None, message: String::new() }),
            current: Mutex::new(None),
            lifecycle: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            shut_down: AtomicBool::new(false),
            changed: Arc::new(Notify::new()),
        };
        let woken = |k: &Kernel| {
            let notified = k.changed.notified();
            tokio::pin!(notified);
            // A stored permit completes `notified` at once.
            futures::FutureExt::now_or_never(notified).is_some()
        };
        kernel.set(KERNEL_IDLE, String::new());
        assert!(woken(&kernel));
        kernel.set(KERNEL_BUSY, String::new());
        assert!(!woken(&kernel));
        kernel.set(KERNEL_IDLE, String::new());
        assert!(!woken(&kernel));
        kernel.set(KERNEL_DEAD, "gone".into());
        assert!(woken(&kernel));
    }
}
