//! What the Atelier server and its compute agents say to each other (JSON over HTTP,
//! under `/agent/v1/`, authenticated with a node token), and the training job
//! specification that users submit and agents execute.
//!
//! Agents only ever connect out to the server: they register, then alternate between
//! heartbeats and a long-poll for work, so a node behind NAT works.

pub mod endpoints;
pub mod labeling;
pub mod models;
pub mod monitor;
pub mod notebooks;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every node token starts with this, so secret scanners can recognise leaked ones.
pub const NODE_TOKEN_PREFIX: &str = "atn_";

/// One NVIDIA GPU as NVML reports it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_mb: u64,
}

/// What a node is: sent once when the agent starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name in the studio (defaults to the host name).
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub disk_free_mb: u64,
    pub gpus: Vec<Gpu>,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    /// How the agent contains users' code (e.g. "bubblewrap, a uid per sandbox, …"),
    /// or "unsandboxed" (`--unsandboxed`: the node page warns). Empty from agents that
    /// predate sandboxes, which are unsandboxed.
    #[serde(default)]
    pub sandbox: String,
    /// The address the node's model servers and kernel gateways listen on: the server
    /// accepts their URLs only on it, and a re-registration may not change it.
    #[serde(default)]
    pub advertise_host: String,
}

/// `POST /agent/v1/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub node: NodeInfo,
}

/// The server's answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    pub node_name: String,
    /// Send a heartbeat at least this often.
    pub heartbeat_secs: u64,
    /// Long-poll for work with this wait.
    pub poll_wait_secs: u64,
    /// A lease lapses this long after the heartbeat that last renewed it: an agent
    /// that could not reach the server for that long stops its jobs (they have been
    /// requeued elsewhere).
    pub lease_secs: u64,
}

/// Per-GPU utilization.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuUsage {
    pub index: u32,
    pub utilization_pct: f64,
    pub memory_used_mb: u64,
}

/// A utilization sample.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_pct: f64,
    pub memory_used_mb: u64,
    pub gpus: Vec<GpuUsage>,
}

/// A lease the agent holds: the job and which attempt of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub job_id: String,
    pub attempt: i64,
}

/// `POST /agent/v1/heartbeat`: utilization and the work the agent is running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub usage: Usage,
    pub running: Vec<Held>,
    /// The model server instances the agent runs, with their state.
    #[serde(default)]
    pub instances: Vec<endpoints::InstanceReport>,
    /// The Jupyter kernels the agent runs, with their state.
    #[serde(default)]
    pub kernels: Vec<notebooks::KernelReport>,
}

/// The heartbeat's answer: work to stop now (stopped by a user, past its maximum
/// runtime, or no longer leased to this node).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub stop: Vec<StopOrder>,
    /// Every model server instance this node should run.
    #[serde(default)]
    pub instances: Vec<endpoints::InstanceOrder>,
    /// Every Jupyter kernel this node should run.
    #[serde(default)]
    pub kernels: Vec<notebooks::KernelOrder>,
}

/// Stop one job: SIGTERM, then SIGKILL after `grace_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOrder {
    pub job_id: String,
    pub reason: String,
    pub grace_secs: u64,
}

/// Work handed to an agent by `GET /agent/v1/work`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub job_id: String,
    pub job_name: String,
    /// Which attempt this is (1 for the first); a status report names it, and the
    /// server refuses reports from an attempt whose lease has passed to another.
    pub attempt: i64,
    pub spec: JobSpec,
    /// GPU indices on this node reserved for the job.
    pub gpus: Vec<u32>,
    /// Files to place before the process starts.
    pub inputs: Vec<InputFile>,
    /// A checkpoint from an earlier attempt to restore into `checkpoints/`.
    pub checkpoint: Option<String>,
}

/// One file of a channel or of the job's code, fetched from the artifact store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputFile {
    /// `code` or `data/<channel>`: the directory under the job directory.
    pub place: String,
    pub name: String,
    pub artifact_id: String,
    pub size: i64,
}

/// The lifecycle of a training job.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Starting,
    Downloading,
    Training,
    Uploading,
    Completed,
    Failed,
    Stopped,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Pending,
        JobState::Starting,
        JobState::Downloading,
        JobState::Training,
        JobState::Uploading,
        JobState::Completed,
        JobState::Failed,
        JobState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "Pending",
            JobState::Starting => "Starting",
            JobState::Downloading => "Downloading",
            JobState::Training => "Training",
            JobState::Uploading => "Uploading",
            JobState::Completed => "Completed",
            JobState::Failed => "Failed",
            JobState::Stopped => "Stopped",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No further transitions.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Stopped)
    }

    /// Held by an agent (leased).
    pub fn is_active(self) -> bool {
        !self.is_terminal() && self != JobState::Pending
    }
}

/// `POST /agent/v1/jobs/{id}/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub attempt: i64,
    pub state: JobState,
    /// The failure reason, or a progress note ("downloading 3 of 5 files").
    #[serde(default)]
    pub message: String,
}

/// One line of a job's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// `stdout`, `stderr` or `agent`.
    pub stream: String,
    pub line: String,
}

/// `POST /agent/v1/jobs/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogBatch {
    pub attempt: i64,
    pub lines: Vec<LogLine>,
}

/// Resources a job asks for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "one")]
    pub cpus: u32,
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    #[serde(default)]
    pub gpus: u32,
    /// The node must carry all of these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

fn default_memory() -> u64 {
    1024
}

impl Default for Resources {
    fn default() -> Self {
        Resources { cpus: 1, memory_mb: default_memory(), gpus: 0, labels: BTreeMap::new() }
    }
}

/// A metric definition: the first capture group (or the whole match) of `regex` in a
/// log line is a value of metric `name`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricDefinition {
    #[serde(alias = "Name")]
    pub name: String,
    #[serde(alias = "Regex")]
    pub regex: String,
}

/// What the job runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Algorithm {
    /// SageMaker script mode: `entry_point` (one of the code files) run with the
    /// hyperparameters as `--name value`. `.py` files run with Python.
    Script {
        entry_point: String,
        /// Code files (artifact ids) placed in the job's code directory.
        code: Vec<String>,
        /// The name of a requirements file among the code files, installed into a
        /// cached virtual environment.
        #[serde(default)]
        requirements: Option<String>,
    },
    /// A built-in algorithm, implemented in the agent.
    Builtin { name: String },
}

/// A channel: named input data, materialized as `input/data/<name>/`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub name: String,
    /// Uploaded files (artifact ids).
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// A dataset whose items the channel gets, with a Ground Truth input manifest
    /// `<dataset>.manifest` listing them (`source` texts, or `source-ref` file names of
    /// images). Resolved at submit: its files are added to `artifacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// A finished labeling job whose output the channel gets: its output manifest
    /// `<job>.manifest` (Ground Truth's format) and, for image jobs, the images it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labeling_job: Option<String>,
}

/// A training job as submitted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub algorithm: Algorithm,
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, String>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub metric_definitions: Vec<MetricDefinition>,
    #[serde(default)]
    pub resources: Resources,
    /// Stopped after this long in Training (seconds).
    #[serde(default = "default_max_runtime")]
    pub max_runtime_secs: u64,
    /// Higher runs first; FIFO within a priority.
    #[serde(default)]
    pub priority: i32,
}

fn default_max_runtime() -> u64 {
    86_400
}

/// A built-in algorithm's description: what the create form and the API document show.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltinAlgorithm {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// The channels it reads; the first is required.
    pub channels: &'static [&'static str],
    pub hyperparameters: &'static [HyperparameterDef],
}

/// A hyperparameter of a built-in algorithm.
#[derive(Debug, Clone, Serialize)]
pub struct HyperparameterDef {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: HyperparameterKind,
    pub description: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum HyperparameterKind {
    Integer { min: i64, max: i64 },
    Float { min: f64, max: f64 },
    Choice(&'static [&'static str]),
    Text,
}

const fn hp(
    name: &'static str,
    default: &'static str,
    kind: HyperparameterKind,
    description: &'static str,
) -> HyperparameterDef {
    HyperparameterDef { name, default, kind, description }
}

const fn int(min: i64, max: i64) -> HyperparameterKind {
    HyperparameterKind::Integer { min, max }
}

const fn float(min: f64, max: f64) -> HyperparameterKind {
    HyperparameterKind::Float { min, max }
}

const BATCH_SIZE: HyperparameterDef = hp("batch_size", "64", int(1, 65_536), "Examples per gradient step.");
const VALIDATION_FRACTION: HyperparameterDef = hp(
    "validation_fraction",
    "0.2",
    float(0.0, 0.9),
    "Share of the training examples held out when there is no validation channel.",
);
const SEED: HyperparameterDef =
    hp("seed", "42", int(0, i64::MAX), "Random seed for initialisation, shuffling and the split.");
const LABEL_ATTRIBUTE: HyperparameterDef = hp(
    "label_attribute",
    "",
    HyperparameterKind::Text,
    "The manifest's label attribute (the labeling job's name); empty: the one attribute that has \
     a `-metadata` companion.",
);

/// The built-in algorithms. Their metrics are reported as log lines
/// `#metric name=value` which the server parses like any metric definition.
pub const BUILTIN_ALGORITHMS: &[BuiltinAlgorithm] = &[
    BuiltinAlgorithm {
        name: "tabular",
        title: "Tabular classification / regression (MLP)",
        description: "Reads CSV files from the `train` channel (and optionally `validation`); the `label` column \
                      (or the first column) is the target. Classification when the target has values that are \
                      not numbers, or at most 20 distinct numbers, or when `task=classification`; regression \
                      otherwise. Numeric features are standardized; non-numeric features are \
                      one-hot encoded.",
        channels: &["train", "validation"],
        hyperparameters: &[
            hp(
                "task",
                "auto",
                HyperparameterKind::Choice(&["auto", "classification", "regression"]),
                "What to predict; auto decides from the label column.",
            ),
            hp(
                "label",
                "label",
                HyperparameterKind::Text,
                "The target column (the first column when no column has this name).",
            ),
            hp("epochs", "20", int(1, 10_000), "Passes over the training data."),
            BATCH_SIZE,
            hp("learning_rate", "0.01", float(1e-6, 10.0), "Adam step size."),
            hp("hidden_units", "64", int(0, 4096), "Units in each hidden layer; 0 makes a linear learner."),
            hp("hidden_layers", "2", int(0, 8), "Hidden layers of the MLP."),
            VALIDATION_FRACTION,
            SEED,
        ],
    },
    BuiltinAlgorithm {
        name: "text_classification",
        title: "Text classification (bag of words + MLP)",
        description: "Reads the Ground Truth output manifest (JSON Lines, `*.manifest` or `*.jsonl`) of a \
         text classification labeling job from the `train` channel (and optionally `validation`): the text in \
         `source`, the label attribute holding a class index or name, and its `-metadata` with `class-name`. \
         Words and word pairs are counted (log-scaled, L2-normalized) over a vocabulary of the most frequent.",
        channels: &["train", "validation"],
        hyperparameters: &[
            LABEL_ATTRIBUTE,
            hp("epochs", "10", int(1, 10_000), "Passes over the training data."),
            BATCH_SIZE,
            hp("learning_rate", "0.005", float(1e-6, 10.0), "Adam step size."),
            hp("max_vocabulary", "5000", int(10, 100_000), "Most frequent words and word pairs kept as features."),
            hp("min_count", "1", int(1, 1000), "Words seen fewer times in training are ignored."),
            hp("hidden_units", "64", int(0, 4096), "Units of the hidden layer; 0 makes a linear learner."),
            VALIDATION_FRACTION,
            SEED,
        ],
    },
    BuiltinAlgorithm {
        name: "image_classification",
        title: "Image classification (small CNN)",
        description: "Reads the Ground Truth output manifest (JSON Lines, `*.manifest` or `*.jsonl`) of an \
         image classification labeling job from the `train` channel (and optionally `validation`), with the \
         images (PNG, JPEG, WebP) in the same channel: `source-ref` names each image (its path in the channel, \
         or any URL whose file name is in the channel), the label attribute holds a class index or name, its \
         `-metadata` the `class-name`. Two convolution blocks and a dense layer.",
        channels: &["train", "validation"],
        hyperparameters: &[
            LABEL_ATTRIBUTE,
            hp("epochs", "10", int(1, 10_000), "Passes over the training data."),
            hp("batch_size", "32", int(1, 4096), "Images per gradient step."),
            hp("learning_rate", "0.002", float(1e-6, 10.0), "Adam step size."),
            hp("image_size", "32", int(8, 256), "Images are resized to this many pixels square."),
            hp("channels", "16", int(1, 256), "Filters of the first convolution (the second has twice as many)."),
            VALIDATION_FRACTION,
            SEED,
        ],
    },
];

/// The built-in algorithm called `name`.
pub fn builtin(name: &str) -> Option<&'static BuiltinAlgorithm> {
    BUILTIN_ALGORITHMS.iter().find(|a| a.name == name)
}

/// The metric log-line prefix built-in algorithms print.
pub const METRIC_LINE_PREFIX: &str = "#metric ";

/// Checks a built-in algorithm's hyperparameters, returning every value filled in with
/// its default, or a message naming the first bad one.
pub fn resolve_builtin_hyperparameters(
    algorithm: &BuiltinAlgorithm,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    for name in given.keys() {
        if !algorithm.hyperparameters.iter().any(|h| h.name == name) {
            let known: Vec<&str> = algorithm.hyperparameters.iter().map(|h| h.name).collect();
            return Err(format!(
                "unknown hyperparameter \"{name}\" for algorithm {}; known: {}",
                algorithm.name,
                known.join(", ")
            ));
        }
    }
    let mut out = BTreeMap::new();
    for def in algorithm.hyperparameters {
        let value = given.get(def.name).map(|v| v.trim().to_string()).unwrap_or_else(|| def.default.to_string());
        let bad = |why: String| Err(format!("hyperparameter {}: {why}", def.name));
        match def.kind {
            HyperparameterKind::Integer { min, max } => match value.parse::<i64>() {
                Ok(v) if (min..=max).contains(&v) => {}
                Ok(v) => return bad(format!("{v} is outside {min}..={max}")),
                Err(_) => return bad(format!("\"{value}\" is not an integer")),
            },
            HyperparameterKind::Float { min, max } => match value.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= min && v <= max => {}
                Ok(v) => return bad(format!("{v} is outside {min}..={max}")),
                Err(_) => return bad(format!("\"{value}\" is not a number")),
            },
            HyperparameterKind::Choice(options) => {
                if !options.contains(&value.as_str()) {
                    return bad(format!("\"{value}\" is not one of {}", options.join(", ")));
                }
            }
            HyperparameterKind::Text => {
                // Empty is allowed where it is the default (it means "decide for me").
                if (value.is_empty() && !def.default.is_empty()) || value.len() > 200 {
                    return bad("must be 1-200 characters".into());
                }
            }
        }
        out.insert(def.name.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_hyperparameters_default_and_validate() {
        let tabular = builtin("tabular").expect("tabular");
        let filled = resolve_builtin_hyperparameters(tabular, &BTreeMap::new()).expect("defaults are valid");
        assert_eq!(filled["epochs"], "20");
        let given = BTreeMap::from([("epochs".to_string(), "0".to_string())]);
        let err = resolve_builtin_hyperparameters(tabular, &given).expect_err("0 epochs");
        assert!(err.contains("epochs") && err.contains("outside"), "{err}");
        let given = BTreeMap::from([("epoch".to_string(), "3".to_string())]);
        let err = resolve_builtin_hyperparameters(tabular, &given).expect_err("unknown");
        assert!(err.contains("unknown hyperparameter \"epoch\""), "{err}");
        let given = BTreeMap::from([("learning_rate".to_string(), "fast".to_string())]);
        assert!(resolve_builtin_hyperparameters(tabular, &given).is_err());
    }

    #[test]
    fn job_spec_rejects_unknown_fields() {
        let json = r#"{"algorithm":{"type":"builtin","name":"tabular"},"hyperparamters":{}}"#;
        assert!(serde_json::from_str::<JobSpec>(json).is_err());
        let json = r#"{"algorithm":{"type":"builtin","name":"tabular"}}"#;
        let spec: JobSpec = serde_json::from_str(json).expect("minimal spec");
        assert_eq!(spec.resources, Resources::default());
    }
}
