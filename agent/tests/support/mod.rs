//! What the compute-plane tests share: a studio on a loopback port with short
//! heartbeats, real agent processes, and the REST calls the tests make.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::common::{self, Auth, TestApp};

/// A studio with short heartbeats and leases, so lost nodes are noticed in seconds.
pub async fn studio() -> (TestApp, String, String) {
    let app = TestApp::with_config(|c| {
        c.heartbeat_secs = 1;
        // An agent fences itself after lease - 2 heartbeats without contact: 4 s of
        // slack, so a slow heartbeat on a loaded test machine does not stop a job.
        c.lease_secs = 6;
        c.node_lost_after_secs = 4;
        c.stop_grace_secs = 2;
        // Webhook receivers in these tests listen on loopback.
        c.outbound_allow = vec!["127.0.0.0/8".into()];
    })
    .await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let url = app.listen().await;
    (app, url, token)
}

pub struct Agent {
    pub child: Child,
    pub work_dir: PathBuf,
}

impl Agent {
    pub fn start(url: &str, node_token: &str, work_dir: &Path, labels: &[&str]) -> Agent {
        Agent::start_with(url, node_token, work_dir, labels, &[])
    }

    /// An agent with `extra` command-line arguments (`--unsandboxed`, ...).
    pub fn start_with(url: &str, node_token: &str, work_dir: &Path, labels: &[&str], extra: &[&str]) -> Agent {
        Agent::spawn(Command::new(env!("CARGO_BIN_EXE_atelier-agent")), url, node_token, work_dir, labels, extra)
    }

    /// An agent run as the ordinary user `uid` (the test runs as root), as an operator
    /// runs one without root: `setpriv` execs it, so its pid is the child's.
    pub fn start_as(uid: u32, url: &str, node_token: &str, work_dir: &Path) -> Agent {
        let mut command = Command::new("setpriv");
        let id = uid.to_string();
        command.args(["--reuid", &id, "--regid", &id, "--clear-groups", "--", env!("CARGO_BIN_EXE_atelier-agent")]);
        Agent::spawn(command, url, node_token, work_dir, &[], &[])
    }

    fn spawn(
        mut command: Command,
        url: &str,
        node_token: &str,
        work_dir: &Path,
        labels: &[&str],
        extra: &[&str],
    ) -> Agent {
        command
            .args(["--server", url, "--work-dir"])
            .arg(work_dir)
            .env("ATELIER_NODE_TOKEN", node_token)
            .env("ATELIER_CHECKPOINT_SECS", "1")
            // One notebook kernel environment for every test run (creating it installs
            // ipykernel and matplotlib once).
            .env("ATELIER_KERNEL_ENV", kernel_env())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for label in labels {
            command.args(["--label", label]);
        }
        command.args(extra);
        Agent { child: command.spawn().expect("start atelier-agent"), work_dir: work_dir.to_path_buf() }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The kernel environment the tests share (`target/tmp/kernel-env`).
pub fn kernel_env() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-env")
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("atelier-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub async fn add_node(app: &TestApp, token: &str, name: &str) -> String {
    let r = app.call(Method::POST, "/api/v1/compute/nodes", Auth::Bearer(token), Some(json!({"name": name}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = r.json();
    assert!(body["command"].as_str().is_some_and(|c| c.contains("atelier-agent --server")), "{body}");
    body["token"].as_str().expect("node token").to_string()
}

pub async fn upload(app: &TestApp, token: &str, name: &str, bytes: impl Into<Vec<u8>>) -> String {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/artifacts?name={name}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(bytes.into()))
        .expect("request");
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["id"].as_str().expect("artifact id").to_string()
}

pub async fn submit(app: &TestApp, token: &str, name: &str, spec: Value) -> common::TestResponse {
    app.call(Method::POST, "/api/v1/training-jobs", Auth::Bearer(token), Some(json!({"name": name, "spec": spec})))
        .await
}

pub async fn job(app: &TestApp, token: &str, name: &str) -> Value {
    let r = app.call(Method::GET, &format!("/api/v1/training-jobs/{name}"), Auth::Bearer(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

pub async fn logs(app: &TestApp, token: &str, name: &str) -> String {
    let r = app
        .call(Method::GET, &format!("/api/v1/training-jobs/{name}/logs?limit=5000"), Auth::Bearer(token), None)
        .await;
    r.json()
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["line"].as_str()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

pub async fn metrics(app: &TestApp, token: &str, name: &str) -> Value {
    app.call(Method::GET, &format!("/api/v1/training-jobs/{name}/metrics"), Auth::Bearer(token), None).await.json()
}

/// Polls the job until `done` holds for it, or fails with its log after `secs`.
pub async fn wait_job(app: &TestApp, token: &str, name: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let detail = job(app, token, name).await;
        if done(&detail) {
            return detail;
        }
        if Instant::now() > deadline {
            panic!("job {name} did not get there in {secs} s: {detail:#}\nlog:\n{}", logs(app, token, name).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |d| d["job"]["state"] == state
}

pub fn terminal(d: &Value) -> bool {
    matches!(d["job"]["state"].as_str(), Some("Completed" | "Failed" | "Stopped"))
}

pub async fn wait_node(app: &TestApp, token: &str, name: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.call(Method::GET, &format!("/api/v1/compute/nodes/{name}"), Auth::Bearer(token), None).await;
        if r.json()["status"] == status {
            return r.json();
        }
        assert!(Instant::now() < deadline, "node {name} never became {status}: {}", r.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn download(app: &TestApp, token: &str, id: &str) -> Vec<u8> {
    let r = app.call(Method::GET, &format!("/api/v1/artifacts/{id}/content"), Auth::Bearer(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.body
}

/// The files of a `.tar.gz`, by path.
pub fn untar(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out = std::collections::BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if entry.header().entry_type().is_file() {
            let path = entry.path().expect("path").to_string_lossy().trim_start_matches("./").to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read entry");
            out.insert(path, data);
        }
    }
    out
}

/// Where jobs report to the test: a listener on loopback that keeps every line POSTed
/// to it with the time it arrived. Jobs run in sandboxes that see no file of the
/// test's, but they share the node's network.
pub struct Journal {
    pub url: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl Journal {
    pub async fn start() -> Journal {
        let lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Default::default();
        let kept = lines.clone();
        let router = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: String| {
                let kept = kept.clone();
                async move {
                    if let Ok(mut lines) = kept.lock() {
                        lines.extend(body.lines().map(|l| (Instant::now(), l.to_string())));
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the journal");
        let url = format!("http://{}/", listener.local_addr().expect("journal address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Journal { url, lines }
    }

    /// Every line so far, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.iter().map(|(_, line)| line.clone()).collect()).unwrap_or_default()
    }

    /// When the last line matching `f` arrived.
    pub fn last(&self, f: impl Fn(&str) -> bool) -> Option<Instant> {
        self.lines.lock().ok()?.iter().rev().find(|(_, l)| f(l)).map(|(t, _)| *t)
    }

    /// When the first line matching `f` arrived.
    pub fn first(&self, f: impl Fn(&str) -> bool) -> Option<Instant> {
        self.lines.lock().ok()?.iter().find(|(_, l)| f(l)).map(|(t, _)| *t)
    }
}
