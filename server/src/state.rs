//! Shared state handed to every handler. Everything a second replica would need lives
//! in the database, so this holds only handles and settings.

use std::sync::Arc;

use atelier_core::artifacts::ArtifactStore;
use atelier_core::db::Db;
use atelier_core::iam::store::PolicyCache;
use atelier_core::outbound::OutboundPolicy;
use axum::extract::FromRef;
use leptos::prelude::LeptosOptions;

use crate::config::Config;
use crate::metrics::Metrics;

/// Handles and settings shared by all requests. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub leptos_options: LeptosOptions,
    pub metrics: Arc<Metrics>,
    /// Compiled policies per principal; checked against the database's IAM
    /// generation on every request, so it never serves stale permissions.
    pub policy_cache: PolicyCache,
    pub artifacts: ArtifactStore,
    /// Woken when work may be placeable (a job submitted, requeued or finished), so
    /// waiting agent polls look at the queue at once instead of at their next tick.
    pub work: Arc<tokio::sync::Notify>,
    /// Woken when a job ends, freeing capacity: full nodes wait for this only.
    pub freed: Arc<tokio::sync::Notify>,
    /// Routes endpoint invocations and counts them until the next flush.
    pub invoker: Arc<crate::endpoints::Invoker>,
    /// Talks to the agents' kernel gateways (see `crate::notebooks`).
    pub kernel_client: reqwest::Client,
    /// Which internal addresses the server's own outbound requests may reach
    /// (`ATELIER_OUTBOUND_ALLOW`).
    pub outbound: Arc<OutboundPolicy>,
    /// How many refused unauthenticated requests are written to the audit log per
    /// client address. In memory, so per replica: see the type's notes.
    pub unauthenticated_audit: Arc<atelier_core::audit::UnauthenticatedLimiter>,
    /// Cancelled when the server is told to stop: requests that would otherwise stay
    /// open (agents' long-polls, kernel streams) end, so the stop does not wait on them.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// Connects to the database (running migrations) and prepares the state.
    pub async fn new(config: Config) -> anyhow::Result<AppState> {
        std::fs::create_dir_all(&config.data_dir)?;
        let db = Db::connect(&config.database_url()).await?;
        let leptos_options =
            LeptosOptions::builder().output_name(app::BUNDLE_NAME).site_pkg_dir("pkg").site_addr(config.addr).build();
        let artifacts = ArtifactStore::open(config.artifact_store.as_deref(), &config.artifact_dir())?;
        artifacts.check().await.map_err(anyhow::Error::msg)?;
        let config_timeout = config.invocation_timeout_secs;
        let outbound = Arc::new(OutboundPolicy::parse(&config.outbound_allow)?);
        Ok(AppState {
            db,
            artifacts,
            config: Arc::new(config),
            leptos_options,
            metrics: Arc::new(Metrics::default()),
            policy_cache: PolicyCache::default(),
            work: Arc::new(tokio::sync::Notify::new()),
            freed: Arc::new(tokio::sync::Notify::new()),
            invoker: Arc::new(crate::endpoints::Invoker::new(std::time::Duration::from_secs(config_timeout))?),
            kernel_client: crate::notebooks::client()?,
            outbound,
            unauthenticated_audit: Arc::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
        })
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}
