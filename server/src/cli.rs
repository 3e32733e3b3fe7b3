//! The `atelier` command line: `serve` (the default), `demo` (serve a studio seeded with
//! the whole story) and administrative commands that work against the configured
//! database whether or not a server is running.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use atelier_core::accounts::{self, AdminBootstrap};
use atelier_core::db::Db;
use atelier_core::sessions::SqlSessionStore;
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::state::AppState;

/// Atelier: a self-hosted ML studio.
#[derive(Debug, Parser)]
#[command(name = "atelier", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the studio server (the default).
    Serve,
    /// Run the studio like `serve` and, on first start, seed it with the whole story:
    /// users, a dataset, a finished labeling job, a trained and approved model, an
    /// endpoint with monitoring, and a notebook. Prints each account's password.
    Demo,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage compute node tokens.
    NodeToken {
        #[command(subcommand)]
        command: NodeTokenCommand,
    },
    /// Administrator recovery, run on the server's machine.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make a user an administrator again when nobody can sign in as one: reactivate the
    /// account, attach AdministratorAccess directly, end its sessions, and set and print
    /// a new random password (shown only once; change it after signing in).
    Recover {
        /// The user to restore.
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeTokenCommand {
    /// Add a compute node and print its agent token (shown only once).
    Create {
        /// The node's name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print it (shown only once).
    Create {
        /// The user the token acts as.
        #[arg(long)]
        user: String,
        /// A label to recognise the token by.
        #[arg(long)]
        name: String,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(cli.config).await,
            Command::Demo => demo(cli.config).await,
            Command::Token { command: TokenCommand::Create { user, name, expires_in_days } } => {
                create_token(cli.config, &user, &name, expires_in_days).await
            }
            Command::NodeToken { command: NodeTokenCommand::Create { name } } => {
                create_node_token(cli.config, &name).await
            }
            Command::Admin { command: AdminCommand::Recover { user } } => recover_admin(cli.config, &user).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Starts the server and runs until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    run(config, false).await
}

/// Starts the server as [`serve`] does and seeds it with the demo story through its own
/// REST API once the local agent is Ready (see [`crate::demo`]).
pub async fn demo(config: Config) -> anyhow::Result<()> {
    run(config, true).await
}

async fn run(config: Config, demo: bool) -> anyhow::Result<()> {
    // A lease must outlive a couple of missed heartbeats, or healthy jobs get requeued.
    anyhow::ensure!(
        config.lease_secs >= 2 * config.heartbeat_secs && config.node_lost_after_secs >= 2 * config.heartbeat_secs,
        "ATELIER_LEASE_SECS and ATELIER_NODE_LOST_AFTER_SECS must be at least twice ATELIER_HEARTBEAT_SECS"
    );
    let state = AppState::new(config).await.context("starting up")?;
    let config = state.config.clone();
    if let AdminBootstrap::Created { password } =
        accounts::ensure_admin(&state.db, config.admin_password.clone()).await.context("creating the admin account")?
    {
        println!("Created the admin account. Sign in as 'admin' with password: {password}");
        println!("(shown only now; change it under Account > Password)");
    }
    if !crate::assets::bundle_present() {
        tracing::warn!("the browser bundle is missing: pages will not be interactive (build with `cargo xtask build`)");
    }
    spawn_cleanup(state.db.clone());
    crate::compute::spawn_sweeper(state.clone());
    crate::webhooks::spawn_deliverer(state.clone());
    crate::endpoints::spawn_background(state.clone());
    crate::notebooks::spawn_background(state.clone());
    let listener =
        tokio::net::TcpListener::bind(config.addr).await.with_context(|| format!("binding {}", config.addr))?;
    let local_addr = listener.local_addr().unwrap_or(config.addr);
    // Dropped (and so killed) when the server stops.
    let _local_agent = if config.no_local_agent {
        None
    } else {
        Some(crate::compute::start_local_agent(&state, local_addr).await.context("starting the local agent")?)
    };
    let url =
        config.public_url.clone().unwrap_or_else(|| format!("http://{}", listener.local_addr().unwrap_or(config.addr)));
    println!("Atelier is running at {url}");
    if demo {
        // The seeding talks to this listener directly, as the local agent does.
        let own = if local_addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], local_addr.port()))
        } else {
            local_addr
        };
        crate::demo::spawn(state.db.clone(), format!("http://{own}"), url.clone());
    }
    // Pages stream in several writes (shell first, then resolved data); without
    // TCP_NODELAY, Nagle's algorithm holds the later writes for the client's delayed
    // ACK and adds ~40 ms to a page.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let stopping = state.shutdown.clone();
    let app = crate::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let stopping = stopping.clone();
        async move {
            shutdown_signal().await;
            stopping.cancel();
        }
    });
    // Requests still running at the signal get a grace period; a client that keeps a
    // connection open past it (a stalled upload, say) does not hold the stop.
    let grace = async {
        stopping.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = std::future::IntoFuture::into_future(server) => served?,
        _ = grace => tracing::warn!("requests still open {} s after the stop signal were cut", SHUTDOWN_GRACE.as_secs()),
    }
    Ok(())
}

/// How long requests running when the server is told to stop may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Every ten minutes: delete expired sessions and forgotten sign-in failure counters.
fn spawn_cleanup(db: Db) {
    tokio::spawn(async move {
        let store = SqlSessionStore::new(db.clone());
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(err) = store.delete_expired().await {
                tracing::warn!(error = %err, "expired session cleanup failed");
            }
            if let Err(err) = atelier_core::throttle::prune(&db).await {
                tracing::warn!(error = %err, "sign-in counter cleanup failed");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

async fn create_node_token(config: Config, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let db = Db::connect(&config.database_url()).await.context("opening the database")?;
    let created = atelier_core::compute::nodes::create_unchecked(&db, name, "cli").await?;
    let url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.addr));
    println!("{}", created.token);
    eprintln!("Start the agent on the node with:\n  {}", app::compute::agent_command(&url, name, &created.token));
    Ok(())
}

async fn create_token(config: Config, username: &str, name: &str, expires_in_days: Option<i64>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let db = Db::connect(&config.database_url()).await.context("opening the database")?;
    let user =
        accounts::find_by_username(&db, username).await?.with_context(|| format!("no user named '{username}'"))?;
    anyhow::ensure!(user.is_active(), "user '{}' is deactivated", user.username);
    let created = atelier_core::tokens::create(&db, &user, name, expires_in_days, None).await?;
    println!("{}", created.secret);
    Ok(())
}

/// `atelier admin recover`: see [`AdminCommand::Recover`].
pub async fn recover_admin(config: Config, username: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let db = Db::connect(&config.database_url()).await.context("opening the database")?;
    let recovery = atelier_core::iam::admin::recover_administrator(&db, username).await?;
    println!("{}", recovery.password);
    eprintln!(
        "'{}' is an active administrator again (AdministratorAccess attached directly). Sign in with the \
         password above, shown only now, and change it under Account > Password.",
        recovery.user.username
    );
    if let Some(denied) = recovery.still_denied {
        eprintln!(
            "warning: another policy of '{}' still denies administering access ({denied}) Remove that \
             statement or policy from the database, or recover another user.",
            recovery.user.username
        );
    }
    Ok(())
}
