//! Jupyter kernels with a real ipykernel, driven through the kernel gateway as the
//! server drives it (no server here: the test gives the orders itself).
//!
//! The kernel environment lives in the target directory and is shared by test runs:
//! the first run creates it (pip installs ipykernel and matplotlib), which takes a
//! while.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_agent::kernels::{KernelSettings, Kernels};
use atelier_agent::sandbox::{self, Sandbox};
use atelier_protocol::notebooks::{KernelMessage, KernelOrder, KernelReport, KERNEL_DEAD, KERNEL_IDLE};
use serde_json::{json, Value};

const SECRET: &str = "kernel-secret-for-tests";

fn work_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kernels-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

fn kernels(work_dir: &std::path::Path) -> Arc<Kernels> {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("atelier_agent=info").try_init();
    Kernels::new(KernelSettings {
        work_dir: work_dir.to_path_buf(),
        advertise_host: "127.0.0.1".into(),
        sandbox: Arc::new(sandbox_under_test()),
        env: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-env"),
        packages: vec!["ipykernel".into(), "matplotlib".into()],
    })
}

/// The sandbox an agent started as root (or as this user) would make.
fn sandbox_under_test() -> Sandbox {
    Sandbox::detect(
        &sandbox::Settings {
            unsandboxed: false,
            network: sandbox::Network::Host,
            uid_base: sandbox::DEFAULT_UID_BASE,
            python: std::env::var("ATELIER_PYTHON").unwrap_or_else(|_| "python3".into()),
            agent_exe: env!("CARGO_BIN_EXE_atelier-agent").into(),
        },
        Default::default(),
    )
    .expect("a working sandbox")
}

fn order(id: &str) -> KernelOrder {
    KernelOrder { kernel_id: id.into(), secret: SECRET.into(), gpus: vec![], memory_mb: 1024, cpus: 1 }
}

fn report(kernels: &Kernels, id: &str) -> Option<KernelReport> {
    kernels.reports().into_iter().find(|r| r.kernel_id == id)
}

/// Waits for the kernel's state to be `state`; its report.
async fn wait_for(kernels: &Kernels, id: &str, state: &str, secs: u64) -> KernelReport {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = report(kernels, id).expect("the kernel is reported");
        if r.state == state {
            return r;
        }
        assert!(Instant::now() < deadline, "kernel not {state} after {secs} s: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a cell through the gateway: every message of the stream.
async fn execute(http: &reqwest::Client, url: &str, code: &str) -> Vec<KernelMessage> {
    let response = http
        .post(format!("{url}/execute"))
        .bearer_auth(SECRET)
        .json(&json!({ "code": code }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("execute");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.text().await.expect("the stream ends");
    body.lines().map(|l| serde_json::from_str(l).expect("one message per line")).collect()
}

fn find<'a>(messages: &'a [KernelMessage], msg_type: &str) -> &'a Value {
    &messages
        .iter()
        .find(|m| m.msg_type == msg_type)
        .unwrap_or_else(|| panic!("no {msg_type} in {messages:#?}"))
        .content
}

fn stdout(messages: &[KernelMessage]) -> String {
    messages
        .iter()
        .filter(|m| m.msg_type == "stream" && m.content["name"] == "stdout")
        .filter_map(|m| m.content["text"].as_str())
        .collect()
}

/// From a cell: another user's kernel's connection file, the shared environment, the
/// agent's process and memory beyond the order are all out of reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_cannot_reach_other_kernels_the_environment_or_the_agent() {
    let dir = work_dir("escape");
    let kernels = kernels(&dir);
    let mut small = order("k-small");
    small.memory_mb = 128;
    kernels.apply(vec![order("k-victim"), order("k-attacker"), small]);
    wait_for(&kernels, "k-victim", KERNEL_IDLE, 600).await;
    let url = wait_for(&kernels, "k-attacker", KERNEL_IDLE, 600).await.url.expect("a gateway URL");
    let http = reqwest::Client::new();
    let victim = dir.canonicalize().expect("dir").join("kernels/k-victim/connection.json");
    let env = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-env");
    let code = format!(
        r#"
import glob, os, sys, sysconfig
def attempt(name, fn):
    try:
        print(name, fn())
    except Exception as e:
        print(name, "BLOCKED", type(e).__name__)
attempt("victim_connection", lambda: open({victim:?}).read()[:20])
def write_pth():
    site = glob.glob({env:?} + "/lib/python*/site-packages")[0]
    open(os.path.join(site, "evil.pth"), "w").write("import os")
    return "WROTE"
attempt("write_pth", write_pth)
attempt("signal_agent", lambda: (os.kill({pid}, 0), "SIGNALLED")[1])
attempt("own_connection", lambda: "READ" if "key" in open(sys.argv[-1]).read() else "NO KEY")
print("pip_layer", os.environ.get("PIP_TARGET", "") in sys.path and os.access(os.environ["PIP_TARGET"], os.W_OK))
"#,
        pid = std::process::id()
    );
    let messages = execute(&http, &url, &code).await;
    let out = stdout(&messages);
    assert!(out.contains("victim_connection BLOCKED"), "{out}\n{messages:#?}");
    assert!(out.contains("write_pth BLOCKED"), "{out}");
    assert!(out.contains("signal_agent BLOCKED"), "{out}");
    assert!(out.contains("own_connection READ"), "its own connection file stays readable: {out}");
    assert!(out.contains("pip_layer True"), "%pip installs into the kernel's own layer: {out}");

    // Memory beyond the order: the kernel is dead, and says why.
    let url = wait_for(&kernels, "k-small", KERNEL_IDLE, 600).await.url.expect("a gateway URL");
    if kernels_limit_memory() {
        let messages = execute(&http, &url, "x = b'x' * (400 * 1024 * 1024)").await;
        let dead =
            messages.iter().find(|m| m.msg_type == "kernel_dead").expect("the cell ends with the kernel's death");
        let why = dead.content["message"].as_str().unwrap_or_default();
        assert!(why.contains("exceeded its memory limit of 128 MB"), "{why}");
        let report = wait_for(&kernels, "k-small", KERNEL_DEAD, 30).await;
        assert!(report.message.contains("exceeded its memory limit of 128 MB"), "{report:?}");
    }
    // The neighbours live on.
    assert_eq!(report(&kernels, "k-victim").map(|r| r.state), Some(KERNEL_IDLE.to_string()));
    kernels.stop_all();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether this machine lets the tests' agent make memory cgroups (root, writable
/// hierarchy), as the sandbox reports.
fn kernels_limit_memory() -> bool {
    sandbox_under_test().describe().contains("cgroup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_runs_cells_through_its_gateway() {
    let dir = work_dir("cells");
    let kernels = kernels(&dir);
    let started = Instant::now();
    kernels.apply(vec![order("k1")]);
    let ready = wait_for(&kernels, "k1", KERNEL_IDLE, 600).await;
    println!("kernel ready after {:?} (including the environment if this run created it)", started.elapsed());
    let url = ready.url.expect("a gateway URL");
    let http = reqwest::Client::new();

    let sent = Instant::now();
    let messages = execute(&http, &url, "1+1").await;
    println!("1+1 round trip through the gateway: {:?}", sent.elapsed());
    assert_eq!(find(&messages, "execute_result")["data"]["text/plain"], "2");
    let reply = find(&messages, "execute_reply");
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["execution_count"], 1);
    assert_eq!(find(&messages, "execute_input")["code"], "1+1");
    assert_eq!(messages.first().map(|m| m.msg_type.as_str()), Some("status"));
    assert!(messages.iter().any(|m| m.msg_type == "status" && m.content["execution_state"] == "idle"));
    let sent = Instant::now();
    execute(&http, &url, "2+2").await;
    println!("2+2 round trip through the gateway (warm): {:?}", sent.elapsed());

    let messages = execute(&http, &url, "print(\"hi\")").await;
    assert_eq!(stdout(&messages), "hi\n");

    let messages = execute(&http, &url, "1/0").await;
    let error = find(&messages, "error");
    assert_eq!(error["ename"], "ZeroDivisionError");
    assert!(!error["traceback"].as_array().expect("traceback").is_empty());
    assert_eq!(find(&messages, "execute_reply")["status"], "error");

    let messages = execute(&http, &url, "import matplotlib.pyplot as plt; plt.plot([1,2]); plt.show()").await;
    let png = find(&messages, "display_data")["data"]["image/png"].as_str().expect("a PNG");
    assert!(png.len() > 100, "{png}");

    let messages = execute(&http, &url, "from IPython.display import HTML, display; display(HTML(\"<b>x</b>\"))").await;
    assert_eq!(find(&messages, "display_data")["data"]["text/html"], "<b>x</b>");

    // The kernel's place, GPUs and Python: its own directory, the order's GPUs, the
    // managed environment (where `%pip install` puts packages).
    let messages = execute(
        &http,
        &url,
        "import os, sys; print(os.getcwd()); print(repr(os.environ['CUDA_VISIBLE_DEVICES'])); print(sys.prefix)",
    )
    .await;
    let env = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-env");
    let expected =
        format!("{}\n''\n{}\n", dir.canonicalize().expect("dir").join("kernels/k1/work").display(), env.display());
    assert_eq!(stdout(&messages), expected);
    let messages = execute(&http, &url, "%pip --version").await;
    assert!(stdout(&messages).contains(&env.display().to_string()), "{messages:#?}");

    // The secret is required.
    for path in ["/execute", "/interrupt", "/restart"] {
        let wrong = http.post(format!("{url}{path}")).bearer_auth("wrong").json(&json!({"code": "1"})).send().await;
        assert_eq!(wrong.expect("answers").status(), 401, "{path}");
    }
    let none = http.get(format!("{url}/status")).send().await.expect("answers");
    assert_eq!(none.status(), 401);
    let status: KernelReport =
        http.get(format!("{url}/status")).bearer_auth(SECRET).send().await.expect("status").json().await.expect("json");
    assert_eq!(status.state, KERNEL_IDLE);

    // Interrupting a running cell.
    let running = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let messages = execute(&http, &url, "import time\nfor i in range(100): time.sleep(0.1)").await;
            (messages, sent.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let interrupted = http.post(format!("{url}/interrupt")).bearer_auth(SECRET).send().await.expect("interrupt");
    assert_eq!(interrupted.status(), 200);
    let (messages, took) = running.await.expect("the cell ends");
    assert_eq!(find(&messages, "error")["ename"], "KeyboardInterrupt");
    assert!(took < Duration::from_secs(8), "took {took:?}");

    // Restarting: a fresh namespace and execution count.
    execute(&http, &url, "x = 5").await;
    let restarted = Instant::now();
    let response = http.post(format!("{url}/restart")).bearer_auth(SECRET).send().await.expect("restart");
    assert_eq!(response.status(), 200);
    let report: KernelReport = response.json().await.expect("a report");
    println!("restart took {:?}", restarted.elapsed());
    assert_eq!(report.state, KERNEL_IDLE);
    let messages = execute(&http, &url, "x").await;
    assert_eq!(find(&messages, "error")["ename"], "NameError");
    assert_eq!(find(&messages, "execute_reply")["execution_count"], 1);

    kernels.stop_all();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_exits_is_dead_and_a_removed_one_shuts_down() {
    let dir = work_dir("deaths");
    let kernels = kernels(&dir);
    kernels.apply(vec![order("k2"), order("k3")]);
    let url = wait_for(&kernels, "k2", KERNEL_IDLE, 600).await.url.expect("url");
    let http = reqwest::Client::new();

    // A cell that ends the process: the stream ends with kernel_dead, the kernel is dead.
    let messages =
        execute(&http, &url, "import os, sys, time; print('bye'); sys.stdout.flush(); time.sleep(0.5); os._exit(3)")
            .await;
    let last = messages.last().expect("messages");
    assert_eq!(last.msg_type, "kernel_dead", "{messages:#?}");
    let message = last.content["message"].as_str().expect("a message");
    assert!(message.contains("exit status: 3"), "{message}");
    let dead = wait_for(&kernels, "k2", KERNEL_DEAD, 10).await;
    assert!(dead.message.contains("exit status: 3"), "{}", dead.message);
    assert!(dead.message.contains("bye"), "the last output: {}", dead.message);

    let refused = http.post(format!("{url}/execute")).bearer_auth(SECRET).json(&json!({"code": "1"})).send().await;
    let refused = refused.expect("answers");
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("dead")), "{body}");

    // A dead kernel restarts.
    let response = http.post(format!("{url}/restart")).bearer_auth(SECRET).send().await.expect("restart");
    assert_eq!(response.status(), 200);
    assert_eq!(find(&execute(&http, &url, "1+1").await, "execute_result")["data"]["text/plain"], "2");

    // A process killed from outside: dead too, and a cell in flight learns it.
    let pid = kernels.pid("k2").expect("a pid");
    let running = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { execute(&http, &url, "import time; time.sleep(30)").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let messages = running.await.expect("the cell ends");
    assert_eq!(messages.last().map(|m| m.msg_type.as_str()), Some("kernel_dead"), "{messages:#?}");
    let dead = wait_for(&kernels, "k2", KERNEL_DEAD, 10).await;
    assert!(dead.message.contains("SIGKILL"), "{}", dead.message);

    // No longer ordered: gone from the reports at once, its port closed, its process
    // ended.
    let k3 = wait_for(&kernels, "k3", KERNEL_IDLE, 600).await;
    let k3_pid = kernels.pid("k3").expect("a pid");
    kernels.apply(vec![order("k2")]);
    assert!(report(&kernels, "k3").is_none());
    let address = k3.url.expect("url").trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&address).await.is_ok() {
        assert!(Instant::now() < deadline, "the gateway still listens");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while alive(k3_pid) {
        assert!(Instant::now() < deadline, "the kernel process still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kernels.apply(vec![]);
    assert!(kernels.reports().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether the process runs (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_stops_answering_its_heartbeat_is_dead() {
    let dir = work_dir("heartbeat");
    let kernels = kernels(&dir);
    kernels.apply(vec![order("k4")]);
    wait_for(&kernels, "k4", KERNEL_IDLE, 600).await;
    // Heartbeats answered: still up after more than two heartbeat periods.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(report(&kernels, "k4").expect("reported").state, KERNEL_IDLE);
    let pid = kernels.pid("k4").expect("a pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).expect("stop");
    let dead = wait_for(&kernels, "k4", KERNEL_DEAD, 30).await;
    assert!(dead.message.contains("stopped answering its heartbeat"), "{}", dead.message);
    assert!(!alive(pid));
    kernels.stop_all();
    let _ = std::fs::remove_dir_all(&dir);
}
