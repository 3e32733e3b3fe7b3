//! Built-in algorithms, run by the agent as `atelier-agent builtin <name>` inside a
//! job directory, under the same SageMaker-style contract as a script: channels in
//! `SM_CHANNEL_*`, hyperparameters in `input/config/hyperparameters.json`, the model
//! into `SM_MODEL_DIR`, checkpoints into `SM_CHECKPOINT_DIR`. Metrics are printed as
//! `#metric name=value ...` lines, which the server turns into series.
//!
//! Implemented with `candle` (CPU everywhere; the agent's `cuda` feature builds it for
//! NVIDIA GPUs, used when the job was given one).

pub mod image;
pub mod manifest;
pub mod tabular;
pub mod text;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor, D};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

/// Runs the built-in algorithm `name`.
pub fn run(name: &str) -> anyhow::Result<()> {
    let env = JobEnv::from_env()?;
    match name {
        "tabular" => tabular::train(&env),
        "text_classification" => text::train(&env),
        "image_classification" => image::train(&env),
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

    /// The device to train on: the job's first GPU when it was given one.
    pub fn device(&self) -> anyhow::Result<Device> {
        Ok(if self.num_gpus > 0 { Device::cuda_if_available(0)? } else { Device::Cpu })
    }

    /// Splits `n` examples into training and held-out indices (`validation_fraction`,
    /// shuffled by `seed`), for algorithms given no validation channel.
    pub fn holdout(&self, n: usize) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
        let fraction: f64 = self.hp("validation_fraction")?;
        let mut order: Vec<usize> = (0..n).collect();
        Rng(self.hp("seed")?).shuffle(&mut order);
        let held = (((n as f64) * fraction).round() as usize).min(n.saturating_sub(1));
        let train = order.split_off(held);
        Ok((train, order))
    }
}

/// A small deterministic generator (SplitMix64): shuffles and splits reproducibly from
/// the `seed` hyperparameter.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// What the network's output is trained against.
#[derive(Debug, Clone, Copy)]
pub enum Objective {
    /// Logits per class; targets are class indices (`u32`).
    Classification,
    /// One standardized value; targets are `(n, 1)` floats. `label_std` turns the error
    /// back into the label's unit for the RMSE metric.
    Regression { label_std: f64 },
}

/// Examples the training loop draws batches from.
pub trait Examples {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Inputs and targets of the examples at `rows`.
    fn batch(&self, rows: &[u32], device: &Device) -> candle_core::Result<(Tensor, Tensor)>;
}

/// Examples already in memory as one input tensor (first dimension: examples) and one
/// target tensor.
pub struct TensorExamples {
    pub x: Tensor,
    pub y: Tensor,
}

impl Examples for TensorExamples {
    fn len(&self) -> usize {
        self.x.dims().first().copied().unwrap_or(0)
    }
    fn batch(&self, rows: &[u32], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let idx = Tensor::from_vec(rows.to_vec(), rows.len(), device)?;
        Ok((self.x.index_select(&idx, 0)?, self.y.index_select(&idx, 0)?))
    }
}

/// A multilayer perceptron: `hidden_layers` ReLU layers of `hidden_units` (none when
/// that is 0: a linear model), then a linear output.
pub struct Mlp {
    layers: Vec<candle_nn::Linear>,
}

impl Mlp {
    pub fn new(
        input: usize,
        hidden_units: usize,
        hidden_layers: usize,
        output: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Mlp> {
        let mut layers = Vec::new();
        let mut width = input;
        let hidden = if hidden_units == 0 { 0 } else { hidden_layers };
        for i in 0..hidden {
            layers.push(candle_nn::linear(width, hidden_units, vb.pp(format!("hidden{i}")))?);
            width = hidden_units;
        }
        layers.push(candle_nn::linear(width, output, vb.pp("out"))?);
        Ok(Mlp { layers })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i < last {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    epoch: usize,
}

/// The loop every built-in shares: AdamW over shuffled batches for `epochs`, a
/// `#metric` line per epoch (training loss; validation loss and accuracy or RMSE), a
/// checkpoint after each epoch (resumed from when present, so a requeued job goes on
/// where it stopped), the throughput, and the weights in `model.safetensors` of the
/// model directory (the caller writes `model.json`).
pub fn fit(
    env: &JobEnv,
    model: &dyn Module,
    varmap: &VarMap,
    objective: Objective,
    train: &dyn Examples,
    validation: Option<&dyn Examples>,
    device: &Device,
) -> anyhow::Result<()> {
    let epochs: usize = env.hp("epochs")?;
    let batch_size: usize = env.hp("batch_size")?;
    let seed: u64 = env.hp("seed")?;
    let learning_rate: f64 = env.hp("learning_rate")?;
    let mut optimizer =
        candle_nn::AdamW::new(varmap.all_vars(), candle_nn::ParamsAdamW { lr: learning_rate, ..Default::default() })?;

    let state_file = env.checkpoint_dir.join("state.json");
    let weights_file = env.checkpoint_dir.join("model.safetensors");
    let mut start = 0;
    if let (Ok(raw), true) = (std::fs::read(&state_file), weights_file.exists()) {
        let state: CheckpointState = serde_json::from_slice(&raw).context("checkpoints/state.json")?;
        let mut varmap = varmap.clone();
        varmap.load(&weights_file).context("loading the checkpoint")?;
        start = state.epoch;
        println!("resuming from the checkpoint after epoch {start}");
    }

    let loss_of = |out: &Tensor, y: &Tensor| match objective {
        Objective::Classification => candle_nn::loss::cross_entropy(out, y),
        Objective::Regression { .. } => candle_nn::loss::mse(out, y),
    };
    let started = Instant::now();
    let mut samples = 0usize;
    for epoch in start..epochs {
        // Each epoch's order depends on the seed and the epoch only, so a resumed run
        // shuffles exactly as an uninterrupted one.
        let mut order: Vec<u32> = (0..train.len() as u32).collect();
        Rng(seed.wrapping_add(epoch as u64 + 1)).shuffle(&mut order);
        let mut total_loss = 0.0f64;
        let mut batches = 0usize;
        for chunk in order.chunks(batch_size) {
            let (xb, yb) = train.batch(chunk, device)?;
            let loss = loss_of(&model.forward(&xb)?, &yb)?;
            optimizer.backward_step(&loss)?;
            total_loss += f64::from(loss.to_scalar::<f32>()?);
            batches += 1;
            samples += chunk.len();
        }
        let mut line = format!("#metric epoch={} train_loss={:.6}", epoch + 1, total_loss / batches.max(1) as f64);
        if let Some(v) = validation.filter(|v| !v.is_empty()) {
            // In batches: a whole validation set of images need not fit in memory at once.
            let (mut loss_sum, mut right) = (0.0f64, 0usize);
            let rows: Vec<u32> = (0..v.len() as u32).collect();
            for chunk in rows.chunks(batch_size.max(256)) {
                let (x, y) = v.batch(chunk, device)?;
                let out = model.forward(&x)?;
                loss_sum += f64::from(loss_of(&out, &y)?.to_scalar::<f32>()?) * chunk.len() as f64;
                if let Objective::Classification = objective {
                    let predicted = out.argmax(D::Minus1)?.to_vec1::<u32>()?;
                    right += predicted.iter().zip(y.to_vec1::<u32>()?).filter(|(a, b)| **a == *b).count();
                }
            }
            let loss = loss_sum / v.len() as f64;
            match objective {
                Objective::Classification => {
                    let accuracy = right as f64 / v.len() as f64;
                    line.push_str(&format!(" validation_loss={loss:.6} validation_accuracy={accuracy:.6}"));
                }
                Objective::Regression { label_std } => {
                    let rmse = loss.sqrt() * label_std;
                    line.push_str(&format!(" validation_loss={loss:.6} validation_rmse={rmse:.6}"));
                }
            }
        }
        println!("{line}");
        std::io::stdout().flush()?;
        // Written aside and renamed, weights first: a sync never packs a half-written
        // file, and state.json never names an epoch whose weights are missing.
        let partial = env.checkpoint_dir.join(".model.safetensors.partial");
        varmap.save(&partial).context("writing the checkpoint")?;
        std::fs::rename(&partial, &weights_file)?;
        let partial = env.checkpoint_dir.join(".state.json.partial");
        std::fs::write(&partial, serde_json::to_vec(&CheckpointState { epoch: epoch + 1 })?)?;
        std::fs::rename(&partial, &state_file)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if samples > 0 && seconds > 0.0 {
        println!("#metric samples_per_sec={:.1}", samples as f64 / seconds);
    }
    std::fs::create_dir_all(&env.model_dir)?;
    varmap.save(env.model_dir.join("model.safetensors")).context("writing the model")?;
    Ok(())
}

/// Writes `model.json`, the preprocessing and shape a server needs next to the weights.
pub fn write_model_spec(env: &JobEnv, spec: &impl Serialize) -> anyhow::Result<()> {
    std::fs::create_dir_all(&env.model_dir)?;
    std::fs::write(env.model_dir.join("model.json"), serde_json::to_vec_pretty(spec)?)?;
    println!("model written to {}", env.model_dir.display());
    Ok(())
}
