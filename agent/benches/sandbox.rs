//! What a sandbox adds to starting users' code: from asking for the process to its
//! first line of output, for `python -c "print('ready')"` run directly (as an
//! `--unsandboxed` agent runs it) and in a sandbox (bubblewrap, `setpriv`, a cgroup
//! when the agent is root). Run with `cargo bench -p atelier-agent --bench sandbox`;
//! `BENCH_RUNS` (default 30) sets how many starts are timed each way.

#[path = "../../server/benches/support/mod.rs"]
mod support;
use support::percentile;

use std::process::Stdio;
use std::time::{Duration, Instant};

use atelier_agent::sandbox::{self, Request, Sandbox};
use tokio::io::AsyncBufReadExt;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let settings = |unsandboxed| sandbox::Settings {
        unsandboxed,
        network: sandbox::Network::Host,
        uid_base: sandbox::DEFAULT_UID_BASE,
        python: std::env::var("ATELIER_PYTHON").unwrap_or_else(|_| "python3".into()),
        agent_exe: env!("CARGO_BIN_EXE_atelier-agent").into(),
    };
    let work = std::env::temp_dir().join(format!("atelier-sandbox-bench-{}", std::process::id()));
    for (label, unsandboxed) in [("direct", true), ("sandboxed", false)] {
        let sandbox = Sandbox::detect(&settings(unsandboxed), Default::default())?;
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs {
            let dir = work.join(format!("{label}-{i}"));
            std::fs::create_dir_all(&dir)?;
            let request = Request {
                name: format!("bench-{i}"),
                writable: vec![dir.clone()],
                cwd: dir.clone(),
                memory_mb: 256,
                cpus: 1,
                ..Request::default()
            };
            let started = Instant::now();
            let args = ["-c".into(), "print('ready', flush=True)".into()];
            let (mut command, guard) = sandbox.command(&request, sandbox.python(), &args)?;
            let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
            let mut line = String::new();
            tokio::io::BufReader::new(stdout).read_line(&mut line).await?;
            times.push(started.elapsed());
            anyhow::ensure!(line.trim() == "ready", "unexpected output {line:?}");
            child.wait().await?;
            drop(guard);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{label:>9} ({}): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms over {runs} starts",
            sandbox.describe(),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95)),
            ms(percentile(&times, 1.0)),
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
