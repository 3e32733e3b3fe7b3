//! A local S3-compatible server for the tests of the scaled-out configuration
//! (PostgreSQL + S3): moto's server mode, installed from PyPI into a virtual environment
//! under `target/`, so the same integration tests run against a real S3 wire protocol.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::e2e::http_request;
use crate::util::{exec, target_dir};

/// Pinned so every machine tests against the same server.
const MOTO: &str = "moto[server]==5.2.5";
/// The bucket the tests use; each test keeps its artifacts under its own prefix.
const BUCKET: &str = "atelier-test";

/// Installs moto into `target/tools/moto` unless that exact version is already there;
/// returns its `moto_server`.
fn install() -> Result<PathBuf> {
    let venv = target_dir().join("tools").join("moto");
    let server = venv.join("bin").join("moto_server");
    let stamp = venv.join(".installed");
    if server.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == MOTO) {
        return Ok(server);
    }
    let _ = std::fs::remove_dir_all(&venv);
    exec(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    exec(Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", "--disable-pip-version-check", MOTO]))?;
    std::fs::write(&stamp, MOTO)?;
    Ok(server)
}

/// A running moto server with the test bucket created; stopped on drop.
pub struct S3Server {
    child: Child,
    addr: String,
}

impl S3Server {
    pub fn start() -> Result<S3Server> {
        let program = install()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server")?;
        let server = S3Server { child, addr };
        // moto accepts unsigned requests, so a plain PUT creates the bucket.
        let create = format!(
            "PUT /{BUCKET} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            server.addr
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_request(&server.addr, &create).is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("moto_server did not answer at {} within 60 s", server.addr)
    }

    /// The environment that points the tests (and `ArtifactStore::open`) at this server.
    pub fn test_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ATELIER_TEST_S3_URL", format!("s3://{BUCKET}")),
            ("AWS_ENDPOINT", format!("http://{}", self.addr)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "atelier-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "atelier-test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
