//! Runs one leased training job, SageMaker script-mode style:
//!
//! ```text
//! <work-dir>/jobs/<job id>/
//!   code/                         the entry point and other code files (working directory)
//!   input/config/hyperparameters.json, resourceconfig.json, inputdataconfig.json
//!   input/data/<channel>/         each channel's files
//!   model/   output/   checkpoints/
//! ```
//!
//! The job directory is `<work-dir>/jobs/<job id>-<attempt>/job/`; the agent's own files
//! (archives, the pid file) sit beside it, where the job cannot reach or replace them.
//!
//! The process runs in a sandbox (see [`crate::sandbox`]) that sees the job directory's
//! five subdirectories read-write and little else, gets the `SM_*` variables,
//! `TRAINING_JOB_NAME` and `CUDA_VISIBLE_DEVICES` (its GPUs only), runs in its own
//! process group (so a stop reaches its children too), and its output is shipped to
//! the server line by line. `checkpoints/` is
//! synced to the server while it runs and restored on a later attempt; `model/` and
//! `output/` are packed and uploaded when it exits 0. Built-in algorithms run the same
//! way, as `atelier-agent builtin <name>`.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use atelier_protocol::{Algorithm, Assignment, JobState, LogBatch, LogLine, StatusReport, StopOrder};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use crate::client::{CallError, Client};
use crate::sandbox::{Guard, Request, Sandbox};

/// The subdirectories of a job directory the job may write.
const JOB_SUBDIRS: [&str; 5] = ["code", "input", "model", "output", "checkpoints"];

/// What every job of this agent shares.
pub struct Context {
    pub client: Client,
    pub work_dir: PathBuf,
    pub node_name: String,
    pub sandbox: Arc<Sandbox>,
    pub checkpoint_interval: Duration,
    /// Serializes creating the cached Python environments.
    pub venv_lock: tokio::sync::Mutex<()>,
}

/// How a job ended.
enum Outcome {
    Completed,
    Stopped(String),
    Failed(String),
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Lines to the server, batched: a background task sends what has accumulated every
/// few hundred milliseconds, so a chatty job costs a few requests a second.
#[derive(Clone)]
struct Logs {
    tx: mpsc::UnboundedSender<LogLine>,
}

impl Logs {
    fn line(&self, stream: &str, line: impl Into<String>) {
        let _ = self.tx.send(LogLine { ts_ms: now_ms(), stream: stream.to_string(), line: line.into() });
    }
    fn agent(&self, line: impl Into<String>) {
        self.line("agent", line);
    }
}

fn start_log_shipper(client: Client, job_id: String, attempt: i64) -> (Logs, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
    let task = tokio::spawn(async move {
        let mut open = true;
        while open {
            let mut lines = Vec::new();
            match rx.recv().await {
                Some(line) => lines.push(line),
                None => break,
            }
            // Gather what else arrives within a short window.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
            while lines.len() < 2000 {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(line)) => lines.push(line),
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let batch = LogBatch { attempt, lines };
            for delay in [0u64, 500, 2000, 5000] {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                match client.send_logs(&job_id, &batch).await {
                    Ok(()) => break,
                    Err(CallError::Transient(err)) => {
                        tracing::warn!(job = %job_id, %err, "sending logs failed; retrying")
                    }
                    Err(err) => {
                        tracing::warn!(job = %job_id, %err, "logs refused");
                        break;
                    }
                }
            }
        }
    });
    (Logs { tx }, task)
}

/// Runs the assignment to its end and reports the outcome.
pub async fn run(ctx: Arc<Context>, a: Assignment, mut stop: watch::Receiver<Option<StopOrder>>) {
    let (logs, shipper) = start_log_shipper(ctx.client.clone(), a.job_id.clone(), a.attempt);
    // Per attempt: a later attempt of the same job on this node never shares (or
    // deletes) the directory of one still winding down.
    let base = ctx.work_dir.join("jobs").join(format!("{}-{}", a.job_id, a.attempt));
    let outcome = match execute(&ctx, &a, &base, &logs, &mut stop).await {
        Ok(outcome) => outcome,
        Err(err) => {
            logs.agent(format!("error: {err:#}"));
            Outcome::Failed(format!("{err:#}"))
        }
    };
    let (state, message) = match outcome {
        Outcome::Completed => (JobState::Completed, String::new()),
        Outcome::Stopped(reason) => (JobState::Stopped, reason),
        Outcome::Failed(reason) => (JobState::Failed, reason),
    };
    logs.agent(format!("job {}: {}", state.as_str(), message));
    // Every line reaches the server before the final status, which ends the lease.
    drop(logs);
    let _ = shipper.await;
    report(&ctx, &a, state, &message).await;
    // Everything worth keeping is on the server now.
    if let Err(err) = tokio::fs::remove_dir_all(&base).await {
        tracing::warn!(job = %a.job_name, %err, "the job directory could not be removed");
    }
}

/// Reports a transition, retrying through network trouble.
async fn report(ctx: &Context, a: &Assignment, state: JobState, message: &str) {
    let report = StatusReport { attempt: a.attempt, state, message: message.to_string() };
    let mut delay = Duration::from_millis(500);
    for _ in 0..10 {
        match ctx.client.report(&a.job_id, &report).await {
            Ok(()) => return,
            Err(CallError::Transient(err)) => {
                tracing::warn!(job = %a.job_name, %err, "status report failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(err) => {
                tracing::warn!(job = %a.job_name, %err, "status report refused");
                return;
            }
        }
    }
}

/// Reports a transition that must succeed for the job to go on (a refusal means the
/// lease is gone: stop working on it).
async fn advance(ctx: &Context, a: &Assignment, state: JobState, message: &str) -> anyhow::Result<()> {
    let report = StatusReport { attempt: a.attempt, state, message: message.to_string() };
    let mut delay = Duration::from_millis(250);
    loop {
        match ctx.client.report(&a.job_id, &report).await {
            Ok(()) => return Ok(()),
            // A network blip is not a reason to fail the job; the lease outlives it.
            Err(CallError::Transient(err)) if delay < Duration::from_secs(8) => {
                tracing::warn!(job = %a.job_name, %err, "status report failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(err) => return Err(anyhow!("reporting {}: {err}", state.as_str())),
        }
    }
}

async fn execute(
    ctx: &Context,
    a: &Assignment,
    base: &Path,
    logs: &Logs,
    stop: &mut watch::Receiver<Option<StopOrder>>,
) -> anyhow::Result<Outcome> {
    advance(ctx, a, JobState::Downloading, "").await?;
    let dir = &base.join("job");
    lay_out(base, dir, a).await?;
    let total = a.inputs.len();
    for (i, input) in a.inputs.iter().enumerate() {
        if let Some(order) = stop.borrow().clone() {
            return Ok(Outcome::Stopped(order.reason));
        }
        let dest_dir = match input.place.as_str() {
            "code" => dir.join("code"),
            other => dir.join("input").join(other),
        };
        tokio::fs::create_dir_all(&dest_dir).await?;
        logs.agent(format!("downloading {} of {total}: {}/{} ({} bytes)", i + 1, input.place, input.name, input.size));
        let written = ctx
            .client
            .download(&a.job_id, a.attempt, &input.artifact_id, &dest_dir.join(&input.name))
            .await
            .with_context(|| format!("downloading {}", input.name))?;
        // A connection cut mid-body can end the stream early without an error.
        if i64::try_from(written).ok() != Some(input.size) {
            anyhow::bail!("downloading {}: got {written} of {} bytes", input.name, input.size);
        }
    }
    if let Some(checkpoint) = &a.checkpoint {
        logs.agent("restoring the checkpoint of an earlier attempt into checkpoints/");
        let archive = base.join("restore.tar.gz");
        ctx.client.download(&a.job_id, a.attempt, checkpoint, &archive).await.context("downloading the checkpoint")?;
        let target = dir.join("checkpoints");
        tokio::task::spawn_blocking(move || unpack(&archive, &target)).await??;
    }
    let (mut command, guard) = command_for(ctx, a, dir, logs).await?;
    advance(ctx, a, JobState::Training, "").await?;
    let mut child = command.spawn().context("starting the training process")?;
    let pid = child.id().map(|p| p as i32);
    if let Some(pid) = pid {
        std::fs::write(base.join("pid"), pid.to_string())?;
    }
    let stderr_tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(forward(out, "stdout", logs.clone(), None)));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(forward(err, "stderr", logs.clone(), Some(stderr_tail.clone()))));
    }
    let (sync_stop_tx, sync_stop_rx) = watch::channel(false);
    let sync = tokio::spawn(sync_checkpoints(
        ctx.client.clone(),
        a.job_id.clone(),
        a.attempt,
        base.to_path_buf(),
        ctx.checkpoint_interval,
        logs.clone(),
        sync_stop_rx,
    ));
    let mut stopped: Option<String> = None;
    let mut kill_timer: Option<tokio::task::JoinHandle<()>> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            changed = stop.changed() => {
                let order = if changed.is_ok() { stop.borrow().clone() } else { None };
                if let (Some(order), Some(pid)) = (order, pid) {
                    if stopped.is_none() {
                        logs.agent(format!("stopping: {} (SIGTERM, SIGKILL after {} s)", order.reason, order.grace_secs));
                        stopped = Some(order.reason.clone());
                        let program = ctx.sandbox.program_group(pid);
                        let _ = killpg(Pid::from_raw(program), Signal::SIGTERM);
                        let grace = Duration::from_secs(order.grace_secs);
                        kill_timer = Some(tokio::spawn(async move {
                            tokio::time::sleep(grace).await;
                            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                        }));
                    }
                } else if changed.is_err() {
                    // The agent is shutting down this job's supervision.
                    if let Some(pid) = pid { let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL); }
                }
            }
        }
    };
    // The group is reaped below; its id must not be signalled later.
    if let Some(timer) = kill_timer {
        timer.abort();
    }
    // Children that inherited the pipes could hold them open; the process group goes.
    if let Some(pid) = pid {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    let _ = sync_stop_tx.send(true);
    let _ = sync.await;
    if let Some(reason) = stopped {
        return Ok(Outcome::Stopped(reason));
    }
    if let Some(exceeded) = guard.memory_exceeded() {
        return Ok(Outcome::Failed(format!("the job {exceeded}")));
    }
    drop(guard);
    if !status.success() {
        let failure_file = dir.join("output").join("failure");
        let reason = match read_bounded(&failure_file, 2000) {
            Some(text) if !text.trim().is_empty() => text.trim().chars().take(2000).collect(),
            _ => {
                let tail: Vec<String> = stderr_tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
                let code = match ctx.sandbox.describe_exit(&status) {
                    signal if signal.starts_with("signal") => format!("killed by {signal}"),
                    _ => status.code().map(|c| format!("exit code {c}")).unwrap_or_else(|| "killed by a signal".into()),
                };
                if tail.is_empty() {
                    code
                } else {
                    format!("{code}: {}", tail.join("\n"))
                }
            }
        };
        return Ok(Outcome::Failed(reason));
    }
    advance(ctx, a, JobState::Uploading, "").await?;
    for (what, sub) in [("outputs/model", "model"), ("outputs/output", "output")] {
        let source = dir.join(sub);
        if sub == "output" && dir_is_empty(&source) {
            continue;
        }
        let archive = base.join(format!("{sub}.tar.gz"));
        let (s, t) = (source.clone(), archive.clone());
        tokio::task::spawn_blocking(move || pack(&s, &t)).await??;
        logs.agent(format!("uploading {sub}/ ({} bytes packed)", std::fs::metadata(&archive)?.len()));
        ctx.client.upload(&a.job_id, a.attempt, what, &archive).await.with_context(|| format!("uploading {sub}/"))?;
    }
    Ok(Outcome::Completed)
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// Reads at most `limit` bytes of a file the job wrote; none if it is not a plain file
/// (a link the job made could point anywhere, a pipe would never end).
fn read_bounded(path: &Path, limit: u64) -> Option<String> {
    use std::io::Read as _;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(limit * 4).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Creates the job directory afresh, with the configuration files.
async fn lay_out(base: &Path, dir: &Path, a: &Assignment) -> anyhow::Result<()> {
    if base.exists() {
        tokio::fs::remove_dir_all(base).await.with_context(|| format!("clearing {}", base.display()))?;
    }
    for sub in ["code", "input/config", "input/data", "model", "output", "checkpoints"] {
        tokio::fs::create_dir_all(dir.join(sub)).await?;
    }
    for channel in &a.spec.channels {
        tokio::fs::create_dir_all(dir.join("input/data").join(&channel.name)).await?;
    }
    let config = dir.join("input/config");
    tokio::fs::write(config.join("hyperparameters.json"), serde_json::to_vec_pretty(&a.spec.hyperparameters)?).await?;
    let channels: BTreeMap<&str, serde_json::Value> =
        a.spec.channels.iter().map(|c| (c.name.as_str(), serde_json::json!({"TrainingInputMode": "File"}))).collect();
    tokio::fs::write(config.join("inputdataconfig.json"), serde_json::to_vec_pretty(&channels)?).await?;
    Ok(())
}

/// Hyperparameter values as SageMaker hands them to `SM_HPS`: JSON where they parse as
/// JSON (numbers, booleans, lists), strings otherwise.
fn typed_hyperparameters(hps: &BTreeMap<String, String>) -> serde_json::Value {
    let map = hps
        .iter()
        .map(|(k, v)| {
            let value = serde_json::from_str::<serde_json::Value>(v)
                .ok()
                .filter(|j| !j.is_string())
                .unwrap_or_else(|| serde_json::Value::String(v.clone()));
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

async fn command_for(ctx: &Context, a: &Assignment, dir: &Path, logs: &Logs) -> anyhow::Result<(Command, Guard)> {
    let code = dir.join("code");
    let mut request = Request {
        name: format!("job-{}-{}", a.job_id, a.attempt),
        writable: JOB_SUBDIRS.iter().map(|sub| dir.join(sub)).collect(),
        cwd: code.clone(),
        gpus: a.gpus.clone(),
        memory_mb: a.spec.resources.memory_mb,
        cpus: a.spec.resources.cpus,
        ..Request::default()
    };
    let (program, args): (PathBuf, Vec<std::ffi::OsString>) = match &a.spec.algorithm {
        Algorithm::Script { entry_point, requirements, .. } => {
            let python = match requirements {
                Some(req) => {
                    let env = python_env(ctx, a, &code, &code.join(req), logs).await?;
                    request.readable.push(env.clone());
                    env.join("bin").join("python")
                }
                None => ctx.sandbox.python().to_path_buf(),
            };
            let script = code.join(entry_point);
            let (program, mut args) = if entry_point.ends_with(".py") {
                (python, vec![script.into_os_string()])
            } else if entry_point.ends_with(".sh") {
                (PathBuf::from("bash"), vec![script.into_os_string()])
            } else {
                (script, Vec::new())
            };
            for (k, v) in &a.spec.hyperparameters {
                args.push(format!("--{k}").into());
                args.push(v.into());
            }
            (program, args)
        }
        Algorithm::Builtin { name } => (ctx.sandbox.agent_exe().to_path_buf(), vec!["builtin".into(), name.into()]),
    };
    let (mut command, guard) = ctx.sandbox.command(&request, &program, &args)?;
    let channel_names: Vec<&str> = a.spec.channels.iter().map(|c| c.name.as_str()).collect();
    let gpus: Vec<String> = a.gpus.iter().map(|g| g.to_string()).collect();
    let hosts = serde_json::to_string(&[&ctx.node_name])?;
    let input = dir.join("input");
    command
        .current_dir(&code)
        .env("TRAINING_JOB_NAME", &a.job_name)
        .env("SM_MODEL_DIR", dir.join("model"))
        .env("SM_OUTPUT_DATA_DIR", dir.join("output"))
        .env("SM_OUTPUT_DIR", dir.join("output"))
        .env("SM_INPUT_DIR", &input)
        .env("SM_INPUT_CONFIG_DIR", input.join("config"))
        .env("SM_CHECKPOINT_DIR", dir.join("checkpoints"))
        .env("SM_CHANNELS", serde_json::to_string(&channel_names)?)
        .env("SM_HPS", typed_hyperparameters(&a.spec.hyperparameters).to_string())
        .env("SM_NUM_GPUS", a.gpus.len().to_string())
        .env("SM_NUM_CPUS", a.spec.resources.cpus.to_string())
        .env("SM_CURRENT_HOST", &ctx.node_name)
        .env("SM_HOSTS", hosts)
        .env("SM_MODULE_DIR", &code)
        // NVML numbers GPUs in PCI bus order; CUDA, unless told, fastest first.
        .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        .env("CUDA_VISIBLE_DEVICES", gpus.join(","))
        .env("NVIDIA_VISIBLE_DEVICES", if gpus.is_empty() { "void".to_string() } else { gpus.join(",") })
        // Output reaches the log as it is printed, not when a buffer fills.
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for channel in &channel_names {
        command.env(format!("SM_CHANNEL_{}", channel.to_uppercase()), input.join("data").join(channel));
    }
    for (k, v) in &a.spec.hyperparameters {
        command.env(format!("SM_HP_{}", k.to_uppercase()), v);
    }
    Ok((command, guard))
}

/// A cached virtual environment with the requirements installed, keyed by the
/// requirements' hash (and the job's code when they name local paths, which differ
/// between jobs with the same requirements). It is built in a sandbox of its own (a
/// package's build runs arbitrary code), handed back to the agent when built, and
/// bound read-only into the jobs that use it.
async fn python_env(
    ctx: &Context,
    a: &Assignment,
    code: &Path,
    requirements: &Path,
    logs: &Logs,
) -> anyhow::Result<PathBuf> {
    let content = tokio::fs::read(requirements).await.context("reading the requirements file")?;
    let mut hasher = Sha256::new();
    hasher.update(&content);
    let text = String::from_utf8_lossy(&content);
    let local = text.lines().map(str::trim).any(|l| {
        l.starts_with('.') || l.starts_with('/') || l.starts_with("-e") || l.starts_with("-r") || l.contains("file:")
    });
    if local {
        for input in a.inputs.iter().filter(|i| i.place == "code") {
            hasher.update(input.name.as_bytes());
            hasher.update(input.artifact_id.as_bytes());
        }
    }
    let key: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let venvs = ctx.work_dir.join("venvs");
    let env = venvs.join(&key);
    // Beside the environment, not in it: the install could have left anything there.
    let ready = venvs.join(format!("{key}.ready"));
    let _guard = ctx.venv_lock.lock().await;
    if ready.exists() {
        logs.agent(format!("using the cached Python environment {key}"));
        return Ok(env);
    }
    if env.exists() {
        tokio::fs::remove_dir_all(&env).await?;
    }
    tokio::fs::create_dir_all(&env).await?;
    logs.agent(format!("creating the Python environment {key} for {}", requirements.display()));
    let request = Request {
        name: format!("install-{key}"),
        writable: vec![env.clone()],
        readable: vec![code.to_path_buf()],
        cwd: code.to_path_buf(),
        memory_mb: a.spec.resources.memory_mb.max(1024),
        cpus: a.spec.resources.cpus,
        needs_network: true,
        ..Request::default()
    };
    let venv = [OsString::from("-m"), "venv".into(), env.clone().into_os_string()];
    run_logged(ctx.sandbox.command(&request, ctx.sandbox.python(), &venv)?, logs).await?;
    let pip = ["-m", "pip", "install", "--disable-pip-version-check", "-r"].map(OsString::from);
    let mut pip = pip.to_vec();
    pip.push(requirements.as_os_str().to_os_string());
    run_logged(ctx.sandbox.command(&request, env.join("bin").join("python"), &pip)?, logs).await?;
    ctx.sandbox.reclaim(&env)?;
    tokio::fs::write(&ready, b"").await?;
    Ok(env)
}

async fn run_logged((mut command, guard): (Command, Guard), logs: &Logs) -> anyhow::Result<()> {
    let output = command.stdin(Stdio::null()).output().await.context("running a setup command")?;
    for line in String::from_utf8_lossy(&output.stdout).lines().chain(String::from_utf8_lossy(&output.stderr).lines()) {
        logs.agent(line.to_string());
    }
    if let Some(exceeded) = guard.memory_exceeded() {
        anyhow::bail!("installing the requirements {exceeded}");
    }
    if !output.status.success() {
        let tail: Vec<&str> = std::str::from_utf8(&output.stderr).unwrap_or("").lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!("installing the requirements failed: {}", tail.join("\n"));
    }
    Ok(())
}

/// Longest line forwarded; a process that never prints a newline cannot exhaust memory.
const MAX_LINE_BYTES: u64 = 16 * 1024;

async fn forward(
    stream: impl tokio::io::AsyncRead + Unpin,
    name: &'static str,
    logs: Logs,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    use tokio::io::AsyncReadExt;
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bytes that are not UTF-8 are shown replaced, not dropped with their line.
        match (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                if let Some(tail) = &tail {
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == 10 {
                            t.pop_front();
                        }
                        t.push_back(line.clone());
                    }
                }
                logs.line(name, line);
            }
        }
    }
}

/// A cheap fingerprint of a directory's files: names, sizes and modification times.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, u128)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let mtime = meta.modified().ok().and_then(|m| m.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos());
                out.push((entry.path(), meta.len(), mtime.unwrap_or(0)));
            }
        }
    }
    out.sort();
    out
}

/// Uploads `checkpoints/` whenever it changed, every `interval`, until told to stop.
async fn sync_checkpoints(
    client: Client,
    job_id: String,
    attempt: i64,
    base: PathBuf,
    interval: Duration,
    logs: Logs,
    mut done: watch::Receiver<bool>,
) {
    let source = base.join("job").join("checkpoints");
    // What was restored counts as synced already.
    let mut last = fingerprint(&source);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = done.changed() => return,
        }
        let current = fingerprint(&source);
        if current == last || current.is_empty() {
            continue;
        }
        let archive = base.join("checkpoint.tar.gz");
        let (s, t) = (source.clone(), archive.clone());
        let packed = tokio::task::spawn_blocking(move || pack(&s, &t)).await;
        if !matches!(packed, Ok(Ok(()))) {
            logs.agent("checkpoint could not be packed; will retry");
            continue;
        }
        match client.upload(&job_id, attempt, "checkpoint", &archive).await {
            Ok(()) => {
                logs.agent(format!("checkpoint saved ({} files)", current.len()));
                last = current;
            }
            Err(err) => logs.agent(format!("checkpoint upload failed, will retry: {err:#}")),
        }
    }
}

/// Packs a directory into a gzip-compressed tarball.
pub fn pack(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(out)?;
    let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    // A link is stored as a link: never the file outside the job it points to.
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()?.finish()?;
    Ok(())
}

/// Unpacks a tarball into `dir` (entries that would escape it are refused by `tar`).
pub fn unpack(archive: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::open(archive)?;
    tar::Archive::new(flate2::read::GzDecoder::new(file)).unpack(dir)?;
    Ok(())
}

/// Kills processes an earlier run of this agent left behind (it was killed and could
/// not stop them), so a requeued job never runs twice at once.
pub fn kill_leftovers(work_dir: &Path) {
    // Model servers and kernels too: each one's directory has a pid file the same way.
    let entries =
        ["jobs", "instances", "kernels"].into_iter().filter_map(|d| std::fs::read_dir(work_dir.join(d)).ok()).flatten();
    for entry in entries.flatten() {
        let pid_file = entry.path().join("pid");
        let Ok(text) = std::fs::read_to_string(&pid_file) else { continue };
        let Ok(pid) = text.trim().parse::<i32>() else { continue };
        // Only if that process still works in this job's directory: the pid may have
        // been reused by something unrelated.
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        if cwd.is_some_and(|c| c.starts_with(entry.path())) {
            tracing::warn!(pid, job = %entry.file_name().to_string_lossy(), "killing a job process left by an earlier agent");
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(pid_file);
    }
}
