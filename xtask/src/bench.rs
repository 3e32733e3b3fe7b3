//! `cargo xtask bench`: requests/s and latency of the signed-in home page (SSR) and of
//! `/healthz` under 32 concurrent connections (wrk), the bundle size, the
//! authorization bench (`server/benches/authz.rs`), the scheduler and dispatch
//! benches, the labeling, registry and serving benches (invocation overhead, endpoint charts), drift over a million rows, and the built-in training throughput against PyTorch (`TORCH_PYTHON`). Figures are printed for the issue
//! note; nothing here asserts a speed.

use std::io::Write;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::e2e::{http_request, TestServer};
use crate::util::{on_path, Profile};

pub fn run() -> Result<()> {
    if !on_path("wrk") {
        crate::setup::apt_install(&["wrk"])?;
    }
    crate::build::run(true)?;
    let password = "bench-admin-password";
    let server = TestServer::start(Profile::Release, password)?;
    let cookie = sign_in(server.addr(), password)?;

    let home = wrk(&server.url, "/", Some(&cookie))?;
    let health = wrk(&server.url, "/healthz", None)?;
    let (raw, gzip) = bundle_size()?;
    println!();
    println!("| target | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    println!("| GET / (signed in, SSR) | {} | {} | {} |", home.rps, home.p50, home.p99);
    println!("| GET /healthz | {} | {} | {} |", health.rps, health.p50, health.p99);
    println!();
    println!("WASM bundle: {:.1} KiB raw, {:.1} KiB gzip", raw as f64 / 1024.0, gzip as f64 / 1024.0);
    drop(server);
    println!();
    for (package, bench) in [
        ("atelier-server", "authz"),
        ("atelier-server", "scheduler"),
        ("atelier-agent", "dispatch"),
        ("atelier-agent", "tabular"),
        ("atelier-core", "consolidation"),
        ("atelier-server", "labeling"),
        ("atelier-server", "registry"),
        ("atelier-agent", "serving"),
    ] {
        crate::util::exec(crate::util::cargo().args(["bench", "-p", package, "--bench", bench]))?;
    }
    // Drift: profiling and comparing a million captured rows of 20 features.
    crate::util::exec(crate::util::cargo().args([
        "test",
        "-p",
        "atelier-protocol",
        "--release",
        "--lib",
        "profile_a_million_rows",
        "--",
        "--ignored",
        "--nocapture",
    ]))?;
    Ok(())
}

/// Signs in through the login form's server function and returns the session cookie.
fn sign_in(addr: &str, password: &str) -> Result<String> {
    let page = http_request(addr, &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"))?;
    let action = page
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no form action on /login")?
        .to_string();
    let body = format!("username=admin&password={password}&next=%2F");
    let response = http_request(
        addr,
        &format!(
            "POST {action} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )?;
    let cookie = response
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .context("sign-in returned no session cookie")?;
    Ok(cookie.to_string())
}

struct Figures {
    rps: String,
    p50: String,
    p99: String,
}

fn wrk(base: &str, path: &str, cookie: Option<&str>) -> Result<Figures> {
    // A short discarded run first: a fresh server's first seconds (cold caches,
    // allocator growth, the connection pool filling) are not its steady state.
    let mut warm_up = Command::new("wrk");
    warm_up.args(["-t2", "-c32", "-d3s"]);
    if let Some(cookie) = cookie {
        warm_up.args(["-H", &format!("Cookie: {cookie}")]);
    }
    warm_up.arg(format!("{base}{path}")).output().context("running wrk")?;

    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c32", "-d10s", "--latency"]);
    if let Some(cookie) = cookie {
        cmd.args(["-H", &format!("Cookie: {cookie}")]);
    }
    cmd.arg(format!("{base}{path}"));
    let out = cmd.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("--- wrk {path}\n{text}");
    if text.contains("Non-2xx") {
        bail!("{path} answered non-2xx responses under load");
    }
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    Ok(Figures { rps: find("Requests/sec:"), p50: find("50%"), p99: find("99%") })
}

fn bundle_size() -> Result<(usize, usize)> {
    let wasm = std::fs::read(crate::build::site_pkg_dir().join("atelier_bg.wasm"))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&wasm)?;
    Ok((wasm.len(), gz.finish()?.len()))
}
