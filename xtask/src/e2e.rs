//! `cargo xtask test`: every check CI runs, in the order that fails fastest; and the
//! browser tests against a freshly started server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{cargo, exec, on_path, root, server_binary, target_dir, Profile};

/// The PostgreSQL server the integration tests create their databases on.
const DEFAULT_TEST_POSTGRES: &str = "postgres://root@127.0.0.1:5432/postgres";

/// Formatting, both lint builds, unit and integration tests on SQLite and PostgreSQL,
/// then the browser tests against the release build, the one users run.
pub fn test_all() -> Result<()> {
    crate::setup::run(true)?;
    exec(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The server build and the browser build enable different features of `app`, so
    // they are linted separately.
    exec(cargo().args([
        "clippy",
        "-p",
        "atelier-server",
        "-p",
        "atelier-core",
        "-p",
        "app",
        "-p",
        "atelier-agent",
        "-p",
        "atelier-protocol",
        "-p",
        "xtask",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    exec(cargo().args([
        "clippy",
        "-p",
        "frontend",
        "-p",
        "app",
        "--target",
        "wasm32-unknown-unknown",
        "--",
        "-D",
        "warnings",
    ]))?;
    exec(
        cargo()
            .args(["test", "--workspace", "--exclude", "frontend"])
            .env_remove("ATELIER_TEST_POSTGRES_URL")
            .env_remove("ATELIER_TEST_S3_URL"),
    )?;
    // The scaled-out configuration, same tests: PostgreSQL and an S3-compatible artifact
    // store. The same package selection as above, so cargo reuses every build artifact
    // (a narrower `-p` list unifies features differently and rebuilds the world).
    let postgres = std::env::var("ATELIER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES.into());
    let s3 = crate::s3::S3Server::start()?;
    let result = exec(
        cargo()
            .args(["test", "--workspace", "--exclude", "frontend", "--tests"])
            .env("ATELIER_TEST_POSTGRES_URL", &postgres)
            .envs(s3.test_env()),
    );
    drop(s3);
    drop_test_databases(&postgres);
    result?;
    browser_tests(Profile::Release)
}

/// Removes the per-test PostgreSQL databases (`atelier_t_*`), best effort.
fn drop_test_databases(admin_url: &str) {
    if !on_path("psql") {
        return;
    }
    let list = Command::new("psql")
        .args([admin_url, "-Atc", "SELECT datname FROM pg_database WHERE datname LIKE 'atelier\\_t\\_%'"])
        .output();
    if let Ok(out) = list {
        for name in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
            let _ =
                Command::new("psql").args([admin_url, "-qc", &format!("DROP DATABASE IF EXISTS \"{name}\"")]).status();
        }
    }
}

/// A server started for a test run, stopped (and its data removed) when dropped.
pub struct TestServer {
    child: Child,
    pub url: String,
    data_dir: PathBuf,
}

impl TestServer {
    /// Starts the `profile` server binary on a free port with an empty data directory.
    pub fn start(profile: Profile, admin_password: &str) -> Result<TestServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data_dir = target_dir().join(format!("test-data-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(server_binary(profile))
            .arg("serve")
            .env("ATELIER_DATA_DIR", &data_dir)
            .env("ATELIER_ADDR", &addr)
            .env("ATELIER_ADMIN_PASSWORD", admin_password)
            // The notebook kernel environment the Rust tests created (or create it there).
            .env("ATELIER_KERNEL_ENV", target_dir().join("tmp").join("kernel-env"))
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .context("starting the server (build it first)")?;
        let server = TestServer { child, url: format!("http://{addr}"), data_dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_get(&addr, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("the server did not become ready at {addr} within 60 s")
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A minimal HTTP/1.1 exchange; returns the raw response.
pub fn http_request(addr: &str, request: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn http_get(addr: &str, path: &str) -> Result<String> {
    http_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"))
}

/// Builds the bundle and server for `profile` and runs the Playwright tests in
/// `end2end/` against a freshly started server.
pub fn browser_tests(profile: Profile) -> Result<()> {
    crate::setup::run(true)?;
    crate::build::run(profile == Profile::Release)?;
    let password = "e2e-admin-password";
    let server = TestServer::start(profile, password)?;
    let result = exec(
        Command::new("npx")
            .args(["playwright", "test"])
            .current_dir(root().join("end2end"))
            .env("BASE_URL", &server.url)
            .env("ATELIER_ADMIN_PASSWORD", password),
    );
    drop(server);
    result
}
