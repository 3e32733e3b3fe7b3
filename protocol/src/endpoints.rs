//! Endpoints as the REST API, the UI and scripts see them, and what the server tells
//! agents about the model server instances they run.

use serde::{Deserialize, Serialize};

/// An endpoint's lifecycle.
pub const CREATING: &str = "Creating";
pub const IN_SERVICE: &str = "InService";
pub const UPDATING: &str = "Updating";
pub const FAILED: &str = "Failed";

/// An instance's lifecycle: placed on no node yet, started by its agent, answering
/// `/ping`, failed (replaced by the reconciler), or stopped.
pub const INSTANCE_PENDING: &str = "Pending";
pub const INSTANCE_STARTING: &str = "Starting";
pub const INSTANCE_IN_SERVICE: &str = "InService";
pub const INSTANCE_FAILED: &str = "Failed";
pub const INSTANCE_STOPPED: &str = "Stopped";

/// The response header naming the variant that answered (the request header
/// `X-Atelier-Target-Variant` picks one).
pub const VARIANT_HEADER: &str = "x-atelier-variant";
pub const TARGET_VARIANT_HEADER: &str = "x-atelier-target-variant";

/// One variant of an endpoint's configuration, as given to create or update it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSpec {
    /// Defaults to `primary` for the first variant, `variant-N` after.
    #[serde(default)]
    pub name: String,
    pub model_group: String,
    pub model_version: i64,
    #[serde(default = "one")]
    pub instance_count: i64,
    /// Relative share of traffic (weights need not sum to 1).
    #[serde(default = "one_f")]
    pub weight: f64,
    #[serde(default = "one")]
    pub cpus: i64,
    #[serde(default = "default_memory")]
    pub memory_mb: i64,
    #[serde(default)]
    pub gpus: i64,
}

fn one() -> i64 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn default_memory() -> i64 {
    512
}

impl VariantSpec {
    /// A single-instance CPU variant of a version.
    pub fn of(group: &str, version: i64) -> VariantSpec {
        VariantSpec {
            name: String::new(),
            model_group: group.into(),
            model_version: version,
            instance_count: 1,
            weight: 1.0,
            cpus: 1,
            memory_mb: default_memory(),
            gpus: 0,
        }
    }
}

/// `POST /api/v1/endpoints`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEndpoint {
    pub name: String,
    pub variants: Vec<VariantSpec>,
    /// Off unless given.
    #[serde(default)]
    pub data_capture: Option<DataCapture>,
}

/// Data capture settings (`PUT /api/v1/endpoints/{name}/data-capture`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCapture {
    /// The share of invocations captured, 0-100 (0 turns capture off).
    pub percent: i64,
    /// Capture pauses once its files take this many megabytes (default 1024).
    #[serde(default = "default_budget")]
    pub budget_mb: i64,
}

fn default_budget() -> i64 {
    1024
}

/// Data capture as it stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCaptureStatus {
    pub percent: i64,
    pub budget_mb: i64,
    pub used_bytes: i64,
    pub records: i64,
    /// Why capture is paused (its budget is used), if it is.
    pub paused: Option<String>,
}

/// One captured file.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureFile {
    /// The artifact holding the JSON Lines (`GET /api/v1/artifacts/{id}/content`).
    pub artifact_id: String,
    pub name: String,
    pub hour: i64,
    pub first_at: i64,
    pub last_at: i64,
    pub records: i64,
    pub bytes: i64,
}

/// `PUT /api/v1/endpoints/{name}`: the new configuration, deployed blue/green.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointConfig {
    pub variants: Vec<VariantSpec>,
}

/// A variant as deployed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub generation: i64,
    pub model_group: String,
    pub model_version: i64,
    pub instance_count: i64,
    pub weight: f64,
    pub cpus: i64,
    pub memory_mb: i64,
    pub gpus: i64,
    /// Instances answering health checks.
    pub healthy: i64,
    /// The autoscaling policy of variants of this name, if one is set.
    #[serde(default)]
    pub autoscaling: Option<Autoscaling>,
}

/// Target tracking for a variant (`PUT /api/v1/endpoints/{name}/variants/{variant}/autoscaling`):
/// the instance count follows the invocations of the last minute, one instance per
/// `target_invocations_per_instance`, between `min_instances` and `max_instances`.
/// The policy belongs to the variant name, so it carries over to later configurations.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Autoscaling {
    pub min_instances: i64,
    pub max_instances: i64,
    /// Invocations per instance and minute to aim for.
    pub target_invocations_per_instance: f64,
    /// After a scale-out, no further scale-out for this long (default 60); a scale-in
    /// never delays a scale-out.
    #[serde(default = "default_scale_out_cooldown")]
    pub scale_out_cooldown_secs: i64,
    /// After any scaling, or setting the policy, no scale-in for this long (default 300).
    #[serde(default = "default_scale_in_cooldown")]
    pub scale_in_cooldown_secs: i64,
}

fn default_scale_out_cooldown() -> i64 {
    60
}
fn default_scale_in_cooldown() -> i64 {
    300
}

impl Variant {
    /// The variant as it would be given again (to deploy a changed configuration).
    pub fn spec(&self) -> VariantSpec {
        VariantSpec {
            name: self.name.clone(),
            model_group: self.model_group.clone(),
            model_version: self.model_version,
            instance_count: self.instance_count,
            weight: self.weight,
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            gpus: self.gpus,
        }
    }
}

/// One model server process on a compute node.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub variant: String,
    pub generation: i64,
    pub node: Option<String>,
    pub gpus: Vec<u32>,
    pub state: String,
    pub message: String,
    pub updated_at: i64,
}

/// An endpoint with the variants traffic goes to and those being deployed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub status: String,
    /// Why it failed, or what the last update did.
    pub reason: String,
    pub generation: i64,
    pub active_generation: Option<i64>,
    /// Variants of the active configuration (the deploying one before the first).
    pub variants: Vec<Variant>,
    /// Variants of a configuration being deployed, when an update is under way.
    pub pending_variants: Vec<Variant>,
    pub instances: Vec<Instance>,
    pub data_capture: DataCaptureStatus,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An entry of an endpoint's event history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointEvent {
    pub at_ms: i64,
    pub message: String,
}

/// One minute of one variant's (or, with variant `*`, the endpoint's) metrics.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Seconds since the epoch, the start of the minute (or of a longer bucket).
    pub at: i64,
    pub invocations: i64,
    pub errors_4xx: i64,
    pub errors_5xx: i64,
    pub instances: i64,
    /// Milliseconds, from the latency histograms; absent without invocations.
    pub model_p50_ms: Option<f64>,
    pub model_p90_ms: Option<f64>,
    pub model_p99_ms: Option<f64>,
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p99_ms: Option<f64>,
}

/// `GET /api/v1/endpoints/{name}/metrics`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointMetrics {
    pub from: i64,
    pub to: i64,
    /// Seconds per point (60 for up to a day, coarser for longer ranges).
    pub step: i64,
    pub variant: String,
    pub points: Vec<MetricPoint>,
}

/// A model server the server wants an agent to run (all of them, in each heartbeat
/// answer: an instance the agent runs that is not listed is stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceOrder {
    pub instance_id: String,
    pub endpoint: String,
    pub variant: String,
    /// The version's artifact, fetched from `/agent/v1/instances/{id}/artifact`.
    pub artifact_id: String,
    pub artifact_sha256: String,
    /// `atelier` (served by the agent's built-in model server) or `archive`.
    pub format: String,
    /// For `archive`: the command that starts the model server (run with `sh -c` in
    /// the unpacked artifact, `PORT` and `SAGEMAKER_BIND_TO_PORT` set).
    pub serving_command: String,
    pub gpus: Vec<u32>,
    /// What the model server must see as `Authorization: Bearer <secret>` on
    /// `/invocations`: it listens on the node's network, where others could reach it.
    /// Given to it as `ATELIER_INSTANCE_SECRET`; empty for instances from before secrets.
    #[serde(default)]
    pub secret: String,
    /// What was reserved for it: its sandbox's limits (0: none).
    #[serde(default)]
    pub memory_mb: u64,
    #[serde(default)]
    pub cpus: u32,
}

/// An instance's state as its agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance_id: String,
    /// `Starting`, `InService` or `Failed`.
    pub state: String,
    /// Where the model server listens, once InService.
    pub url: Option<String>,
    pub message: String,
}

/// `POST /api/v1/endpoints/{name}/alarms` (a new alarm: a name already taken is a 409)
/// and `PUT /api/v1/endpoints/{name}/alarms/{alarm}` (changes one, keeping its history).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAlarm {
    pub name: String,
    /// `invocations`, `errors_4xx`, `errors_5xx`, `model_latency_p99_ms`,
    /// `overhead_latency_p99_ms` (per minute), or `drifted_features`, `violations` (per
    /// model monitor run).
    pub metric: String,
    /// `gt`, `ge`, `lt` or `le`.
    pub comparison: String,
    pub threshold: f64,
    /// Consecutive breaching periods before the alarm goes off (default 1).
    #[serde(default = "one")]
    pub periods: i64,
    /// Open a retraining job from the served version's training job when it goes off.
    #[serde(default)]
    pub retrain: bool,
}

/// `PUT /api/v1/endpoints/{name}/alarms/{alarm}/mute`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmMute {
    pub muted: bool,
}

/// An alarm with its state and recent history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub name: String,
    pub metric: String,
    pub comparison: String,
    pub threshold: f64,
    pub periods: i64,
    pub retrain: bool,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub reason: String,
    /// Muted: still evaluated, but no webhook, event or retraining job, and not shown
    /// as firing.
    #[serde(default)]
    pub muted: bool,
    pub created_by: String,
    pub updated_at: i64,
    /// State changes, newest first.
    pub history: Vec<AlarmChange>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmChange {
    pub at_ms: i64,
    pub from: String,
    pub to: String,
    pub reason: String,
}
