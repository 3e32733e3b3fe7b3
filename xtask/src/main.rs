//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `setup [--browser]`: install what building (and browser testing) needs, skipping
//!   whatever is already there.
//! - `build [--release]`: the browser bundle (WASM + JS + CSS) into `target/site/pkg`,
//!   then the `atelier` server binary.
//! - `start [--demo] [ARGS...]`: release build, then `atelier serve ARGS...` (README
//!   command 1), or `atelier demo ARGS...`: a studio seeded with the whole story.
//! - `test`: every check CI runs (README command 2).
//! - `bench`: throughput and latency figures, and the bundle size.
//!
//! The WASM bundle is produced by the `wasm-bindgen-cli-support` library linked into
//! this task at exactly the workspace's `wasm-bindgen` version, instead of
//! cargo-leptos plus a separately installed `wasm-bindgen` CLI: the versions cannot
//! drift apart, nothing is downloaded at build time, and a fresh machine skips a
//! half-hour tool install.

mod bench;
mod build;
mod e2e;
mod s3;
mod setup;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "setup" => setup::run(rest.iter().any(|a| a == "--browser")),
        "build" => build::run(rest.iter().any(|a| a == "--release")),
        "start" => build::start(rest),
        "test" => e2e::test_all(),
        "e2e" => e2e::browser_tests(util::Profile::Dev),
        "bench" => bench::run(),
        _ => {
            eprintln!("usage: cargo xtask <setup [--browser] | build [--release] | start [--demo] [ARGS] | test | e2e | bench>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask {task} failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
