//! Built-in algorithms, run by the agent as `atelier-agent builtin <name>` inside a
//! job directory, under the same SageMaker-style contract as a script: channels in
//! `SM_CHANNEL_*`, hyperparameters in `input/config/hyperparameters.json`, the model
//! into `SM_MODEL_DIR`, checkpoints into `SM_CHECKPOINT_DIR`. Metrics are printed as
//! `#metric name=value ...` lines, which the server turns into series.
//!
//! Implemented with `candle` (CPU everywhere; the agent's `cuda` feature builds it for
//! NVIDIA GPUs, used when the job was given one).

pub mod tabular;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};

/// Runs the built-in algorithm `name`.
pub fn run(name: &str) -> anyhow::Result<()> {
    let env = JobEnv::from_env()?;
    match name {
        "tabular" => tabular::train(&env),
        other => bail!("unknown built-in algorithm {other}"),
    }
}

/// The job's environment, as the agent set it.
#[derive(Debug, Clone)]
pub struct JobEnv {
    pub channels: BTreeMap<String, PathBuf>,
    pub hyperparameters: BTreeMap<String, String>,
    pub model_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub num_gpus: usize,
}

impl JobEnv {
    pub fn from_env() -> anyhow::Result<JobEnv> {
        let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set: run inside a job"));
        let names: Vec<String> = serde_json::from_str(&var("SM_CHANNELS")?).context("SM_CHANNELS")?;
        let mut channels = BTreeMap::new();
        for name in names {
            channels.insert(name.clone(), PathBuf::from(var(&format!("SM_CHANNEL_{}", name.to_uppercase()))?));
        }
        let config = PathBuf::from(var("SM_INPUT_CONFIG_DIR")?).join("hyperparameters.json");
        let hyperparameters = serde_json::from_slice(&std::fs::read(&config).context("reading hyperparameters.json")?)
            .context("hyperparameters.json")?;
        Ok(JobEnv {
            channels,
            hyperparameters,
            model_dir: PathBuf::from(var("SM_MODEL_DIR")?),
            checkpoint_dir: PathBuf::from(var("SM_CHECKPOINT_DIR")?),
            num_gpus: var("SM_NUM_GPUS").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }

    /// A hyperparameter parsed as `T` (the server filled in every default).
    pub fn hp<T: std::str::FromStr>(&self, name: &str) -> anyhow::Result<T> {
        let raw = self.hyperparameters.get(name).with_context(|| format!("hyperparameter {name} is missing"))?;
        raw.parse().map_err(|_| anyhow::anyhow!("hyperparameter {name}: cannot parse {raw:?}"))
    }
}
