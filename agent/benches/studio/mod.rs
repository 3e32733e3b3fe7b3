//! What the agent benches share: a real server on a loopback port with an
//! administrator's API token, and a real agent process registered as `bench-node`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use atelier_core::accounts::{self, NewUser, ADMIN_POLICY};
use atelier_server::config::Config;
use atelier_server::AppState;
use serde_json::Value;

pub struct Studio {
    /// The server's state (the serving bench reads metrics through it; the dispatch
    /// bench uses the API only).
    #[allow(dead_code)]
    pub state: AppState,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The `bench` administrator's API token.
    pub token: String,
    dir: PathBuf,
    agent: Child,
}

impl Studio {
    /// Starts the server (with the lost-node sweeper) in a fresh data directory, after
    /// `configure` had its say on the settings, and one agent; waits until the agent's
    /// node is Ready.
    pub async fn start(tag: &str, configure: impl FnOnce(&mut Config)) -> anyhow::Result<Studio> {
        let dir = std::env::temp_dir().join(format!("atelier-{tag}-{}", uuid::Uuid::new_v4().simple()));
        let mut config = Config::for_data_dir(dir.clone(), None);
        configure(&mut config);
        let state = AppState::new(config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        // As `atelier serve` does: no Nagle delay on streamed answers.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = atelier_server::app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        atelier_server::compute::spawn_sweeper(state.clone());
        let user = accounts::create_user(
            &state.db,
            NewUser {
                username: "bench".into(),
                display_name: String::new(),
                password: "a long bench password".into(),
                policies: vec![ADMIN_POLICY.to_string()],
                groups: Vec::new(),
            },
        )
        .await?;
        let token = atelier_core::tokens::create(&state.db, &user, "bench", None, None).await?.secret;
        let node = atelier_core::compute::nodes::create_unchecked(&state.db, "bench-node", "bench").await?;
        let agent = Command::new(env!("CARGO_BIN_EXE_atelier-agent"))
            .args(["--server", &base, "--work-dir"])
            .arg(dir.join("agent"))
            .env("ATELIER_NODE_TOKEN", &node.token)
            // The notebook kernel environment the tests create (or create it there).
            .env("ATELIER_KERNEL_ENV", std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-env"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting atelier-agent")?;
        let studio = Studio { state, base, token, dir, agent };
        studio.wait_ready().await?;
        Ok(studio)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/compute/nodes/bench-node", self.base);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let node: Value = http.get(&url).bearer_auth(&self.token).send().await?.json().await?;
            if node["status"] == "Ready" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent did not register");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Studio {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
