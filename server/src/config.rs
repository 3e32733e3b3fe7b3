//! Every setting of the server, in one place. Each has a command-line flag and an
//! environment variable; `atelier --help` lists them with their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Server settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Directory for the embedded database and local artifacts.
    #[arg(long, env = "ATELIER_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "ATELIER_ADDR", default_value = "127.0.0.1:3000", global = true)]
    pub addr: SocketAddr,

    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST/DB`.
    /// Default: SQLite at DATA_DIR/atelier.db.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Password for the `admin` account created on first start (default: random, printed once).
    #[arg(long, env = "ATELIER_ADMIN_PASSWORD", hide_env_values = true, global = true)]
    pub admin_password: Option<String>,

    /// The URL users reach the studio at. An `https://` URL marks session cookies Secure.
    #[arg(long, env = "ATELIER_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// A browser session ends after this many seconds without a request.
    #[arg(long, env = "ATELIER_SESSION_IDLE_TIMEOUT_SECS", default_value_t = 8 * 3600, global = true)]
    pub session_idle_timeout_secs: i64,

    /// A browser session ends this many seconds after sign-in, active or not.
    #[arg(long, env = "ATELIER_SESSION_ABSOLUTE_TIMEOUT_SECS", default_value_t = 24 * 3600, global = true)]
    pub session_absolute_timeout_secs: i64,

    /// Take the client address from `X-Forwarded-For` (only behind a trusted reverse proxy).
    #[arg(long, env = "ATELIER_TRUST_PROXY_HEADERS", default_value_t = false, global = true)]
    pub trust_proxy_headers: bool,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ATELIER_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024, global = true)]
    pub max_body_bytes: usize,

    /// Requests taking longer than this many seconds are answered 408.
    #[arg(long, env = "ATELIER_REQUEST_TIMEOUT_SECS", default_value_t = 60, global = true)]
    pub request_timeout_secs: u64,

    /// Directory of the local artifact store (default: DATA_DIR/artifacts).
    #[arg(long, env = "ATELIER_ARTIFACT_DIR", global = true)]
    pub artifact_dir: Option<PathBuf>,

    /// Keep artifacts in an S3-compatible bucket instead: `s3://bucket/prefix`. Credentials,
    /// region and endpoint come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT` (MinIO, Ceph, ...) and `AWS_ALLOW_HTTP`.
    #[arg(long, env = "ATELIER_ARTIFACT_STORE", global = true)]
    pub artifact_store: Option<String>,

    /// Largest file upload (artifacts, checkpoints, models), in bytes.
    #[arg(long, env = "ATELIER_MAX_UPLOAD_BYTES", default_value_t = 10 * 1024 * 1024 * 1024, global = true)]
    pub max_upload_bytes: u64,

    /// Do not start the local compute agent beside the server.
    #[arg(long, env = "ATELIER_NO_LOCAL_AGENT", default_value_t = false, global = true)]
    pub no_local_agent: bool,

    /// The `atelier-agent` binary for the local agent (default: next to this binary).
    #[arg(long, env = "ATELIER_AGENT_BIN", global = true)]
    pub agent_bin: Option<PathBuf>,

    /// Agents send a heartbeat this often (seconds).
    #[arg(long, env = "ATELIER_HEARTBEAT_SECS", default_value_t = 5, global = true)]
    pub heartbeat_secs: u64,

    /// A job's lease lapses this many seconds after the last heartbeat that renewed it,
    /// and the job is requeued.
    #[arg(long, env = "ATELIER_LEASE_SECS", default_value_t = 30, global = true)]
    pub lease_secs: u64,

    /// A node without heartbeats for this many seconds is Lost; its work is requeued.
    #[arg(long, env = "ATELIER_NODE_LOST_AFTER_SECS", default_value_t = 30, global = true)]
    pub node_lost_after_secs: u64,

    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, env = "ATELIER_STOP_GRACE_SECS", default_value_t = 10, global = true)]
    pub stop_grace_secs: u64,

    /// A failed webhook delivery is retried after this many milliseconds, doubling for
    /// each further attempt (at most an hour apart, 8 attempts in all).
    #[arg(long, env = "ATELIER_WEBHOOK_RETRY_BASE_MS", default_value_t = 2000, global = true)]
    pub webhook_retry_base_ms: u64,

    /// An invocation whose model has not answered after this many seconds gets 504.
    #[arg(long, env = "ATELIER_INVOCATION_TIMEOUT_SECS", default_value_t = 60, global = true)]
    pub invocation_timeout_secs: u64,

    /// Endpoint metrics stay per minute for this many hours, then are folded into hours
    /// (node utilization stays per heartbeat for an hour, then per minute).
    #[arg(long, env = "ATELIER_METRICS_DETAIL_HOURS", default_value_t = 48, global = true)]
    pub metrics_detail_hours: u32,

    /// Endpoint metrics and node utilization older than this many days are deleted.
    #[arg(long, env = "ATELIER_METRICS_RETENTION_DAYS", default_value_t = 90, global = true)]
    pub metrics_retention_days: u32,

    /// A notebook kernel without activity for this many seconds is shut down (never
    /// while it runs a cell).
    #[arg(long, env = "ATELIER_KERNEL_IDLE_SECS", default_value_t = 3600, global = true)]
    pub kernel_idle_secs: u32,

    /// A kernel not running this many seconds after it was placed is given up (the
    /// first kernel on a node installs ipykernel into its environment, which takes a while).
    #[arg(long, env = "ATELIER_KERNEL_START_TIMEOUT_SECS", default_value_t = 600, global = true)]
    pub kernel_start_timeout_secs: u32,

    /// Internal addresses that webhook deliveries may reach anyway, comma-separated: host
    /// names, IP addresses or CIDR networks (`hooks.corp,10.0.0.0/8`). Without an entry
    /// here, URLs on loopback, link-local, private, carrier-grade NAT, unique-local,
    /// unspecified or multicast addresses are refused.
    #[arg(long, env = "ATELIER_OUTBOUND_ALLOW", value_delimiter = ',', global = true)]
    pub outbound_allow: Vec<String>,

    /// Log format: `text` or `json`. The level comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "ATELIER_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
}

impl Config {
    /// The database URL, defaulting to SQLite inside the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite://{}?mode=rwc", self.data_dir.join("atelier.db").display()),
        }
    }

    /// Where local artifacts are kept.
    pub fn artifact_dir(&self) -> PathBuf {
        self.artifact_dir.clone().unwrap_or_else(|| self.data_dir.join("artifacts"))
    }

    /// The agent protocol's timing.
    pub fn compute(&self) -> atelier_core::compute::Settings {
        atelier_core::compute::Settings {
            heartbeat_secs: self.heartbeat_secs.max(1),
            lease_secs: self.lease_secs.max(2),
            lost_after_secs: self.node_lost_after_secs.max(2),
            poll_wait_secs: 20,
            stop_grace_secs: self.stop_grace_secs,
        }
    }

    /// How long metrics are kept, and at what resolution.
    pub fn retention(&self) -> atelier_core::retention::Retention {
        atelier_core::retention::Retention {
            detail_hours: i64::from(self.metrics_detail_hours.max(1)),
            days: i64::from(self.metrics_retention_days.max(1)),
        }
    }

    /// When kernels are shut down without being asked.
    pub fn kernel_lifecycle(&self) -> atelier_core::notebooks::kernels::Lifecycle {
        atelier_core::notebooks::kernels::Lifecycle {
            idle_secs: i64::from(self.kernel_idle_secs.max(1)),
            start_secs: i64::from(self.kernel_start_timeout_secs.max(10)),
        }
    }

    /// Whether cookies must carry the Secure flag.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
    }

    /// Settings for tests and tools: defaults with the given data directory and database.
    pub fn for_data_dir(data_dir: PathBuf, database_url: Option<String>) -> Config {
        Config {
            data_dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url,
            admin_password: None,
            public_url: None,
            session_idle_timeout_secs: 8 * 3600,
            session_absolute_timeout_secs: 24 * 3600,
            trust_proxy_headers: false,
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_secs: 60,
            log_format: "text".into(),
            webhook_retry_base_ms: 2000,
            invocation_timeout_secs: 60,
            metrics_detail_hours: 48,
            metrics_retention_days: 90,
            kernel_idle_secs: 3600,
            kernel_start_timeout_secs: 600,
            artifact_dir: None,
            artifact_store: None,
            max_upload_bytes: 10 * 1024 * 1024 * 1024,
            no_local_agent: true,
            agent_bin: None,
            heartbeat_secs: 5,
            lease_secs: 30,
            node_lost_after_secs: 30,
            stop_grace_secs: 10,
            outbound_allow: Vec::new(),
        }
    }
}
