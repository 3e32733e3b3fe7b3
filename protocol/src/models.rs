//! The model registry as the REST API, the UI and scripts see it: model groups, their
//! numbered versions, approval decisions and the timeline they leave.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A version's approval status.
pub const PENDING: &str = "PendingManualApproval";
pub const APPROVED: &str = "Approved";
pub const REJECTED: &str = "Rejected";

/// A model group with its latest and approved versions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelGroup {
    pub name: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// Distinct approvals a version needs before it is Approved.
    pub required_approvals: i64,
    pub created_by: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
    pub version_count: i64,
    pub latest_version: Option<i64>,
    /// The newest Approved version.
    pub approved_version: Option<i64>,
    /// Alias -> version number.
    pub aliases: BTreeMap<String, i64>,
}

/// Where a version came from: the training job and what it read.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    #[serde(default)]
    pub datasets: Vec<String>,
    #[serde(default)]
    pub labeling_jobs: Vec<String>,
    /// Those of `datasets` deleted since (shown as "deleted dataset NAME"); filled in
    /// when the version is read, never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_datasets: Vec<String>,
}

/// How a version is served: its input and output, and for models that are not
/// built-in, the command that starts their server (`GET /ping`, `POST /invocations`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSpec {
    /// Free-form description or JSON schema of a request.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub input_schema: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_schema: String,
    /// The serving command for bring-your-own models, run in the unpacked artifact.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serving_command: String,
    /// The content types the model accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_types: Vec<String>,
}

/// One model version.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub group: String,
    pub version: i64,
    /// `PendingManualApproval`, `Approved` or `Rejected`.
    pub status: String,
    /// Approvals counted toward the group's quorum in the current round.
    pub approvals: i64,
    pub required_approvals: i64,
    pub artifact: ArtifactRef,
    /// `atelier` (a built-in algorithm's model) or `archive` (a tarball).
    pub format: String,
    pub training_job: Option<String>,
    pub hyperparameters: BTreeMap<String, String>,
    /// Final value of each metric of the training job.
    pub metrics: BTreeMap<String, f64>,
    pub lineage: Lineage,
    pub inference: InferenceSpec,
    /// Free text given by MLflow clients (`source`).
    pub source: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub aliases: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A version's artifact.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub id: String,
    pub name: String,
    pub sha256: String,
    pub size: i64,
}

/// An entry of a version's timeline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEvent {
    /// Milliseconds since the epoch.
    pub ts_ms: i64,
    pub actor: String,
    /// `registered`, `approve` or `reject`.
    pub kind: String,
    /// The status after the event.
    pub status: String,
    pub comment: String,
}

/// Registers a version: from a completed training job, or from an uploaded artifact.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterVersion {
    /// A completed training job whose model becomes the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_job: Option<String>,
    /// An uploaded artifact (`POST /api/v1/artifacts`): a tarball of the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub inference: InferenceSpec,
}

/// A reviewer's decision.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// `Approved` or `Rejected`.
    pub status: String,
    /// Required to reject, and to approve a rejected version.
    #[serde(default)]
    pub comment: String,
    /// The status the reviewer saw: if the version changed since, the decision is
    /// refused (409) rather than applied to a state the reviewer did not see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<String>,
}

/// A version awaiting the caller's decision (the reviewer inbox).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingVersion {
    pub group: String,
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    pub approvals: i64,
    pub required_approvals: i64,
    pub metrics: BTreeMap<String, f64>,
    pub training_job: Option<String>,
}

/// A registry webhook (its secret is shown only when it is created).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    /// The group it watches; none for every group.
    pub group: Option<String>,
    pub url: String,
    /// `model_version.created`, `model_version.status_changed`.
    pub events: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// One event's delivery to one webhook.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    /// The JSON body sent.
    pub payload: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    /// Milliseconds since the epoch.
    pub next_attempt_at: i64,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status: Option<i64>,
    pub last_error: String,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}
