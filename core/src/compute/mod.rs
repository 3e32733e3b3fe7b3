//! The compute plane's control side: compute nodes and their agents, the training job
//! queue, leases and placement. Agents speak `atelier_protocol`; the server's agent
//! routes call into [`nodes`] and [`jobs`] with the [`nodes::NodeCaller`] their node
//! token resolved to.

pub mod jobs;
pub mod nodes;
pub mod placement;
pub mod scheduler;

/// Timing of the agent protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Agents heartbeat this often.
    pub heartbeat_secs: u64,
    /// A lease lasts this long past the last heartbeat that renewed it.
    pub lease_secs: u64,
    /// A node is Lost (and its work requeued) after this long without a heartbeat.
    pub lost_after_secs: u64,
    /// How long a work poll waits for work before answering "nothing".
    pub poll_wait_secs: u64,
    /// Between SIGTERM and SIGKILL when a job is stopped.
    pub stop_grace_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { heartbeat_secs: 5, lease_secs: 30, lost_after_secs: 30, poll_wait_secs: 20, stop_grace_secs: 10 }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
