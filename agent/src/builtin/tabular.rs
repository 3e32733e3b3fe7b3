//! Tabular classification and regression with an MLP (or a linear learner when
//! `hidden_layers` or `hidden_units` is 0).
//!
//! Data: every CSV file of the `train` channel (header row required), optionally a
//! `validation` channel; otherwise `validation_fraction` of the rows is held out.
//! Numeric columns are standardized (missing values become the mean); other columns
//! are one-hot encoded (up to 50 most frequent values). The model directory gets
//! `model.safetensors` and `model.json` (the preprocessing and the network's shape),
//! which is everything a server needs to predict.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::JobEnv;

/// Most one-hot values kept per categorical column.
const MAX_CATEGORIES: usize = 50;

/// A column's preprocessing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Feature {
    Numeric { column: String, mean: f64, std: f64 },
    Categorical { column: String, values: Vec<String> },
}

impl Feature {
    fn width(&self) -> usize {
        match self {
            Feature::Numeric { .. } => 1,
            Feature::Categorical { values, .. } => values.len(),
        }
    }
    fn column(&self) -> &str {
        match self {
            Feature::Numeric { column, .. } | Feature::Categorical { column, .. } => column,
        }
    }
}

/// `model.json`: everything needed to turn a row into a prediction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSpec {
    pub algorithm: String,
    pub task: Task,
    pub label: String,
    pub features: Vec<Feature>,
    /// Class names, for classification.
    pub classes: Vec<String>,
    /// Label scaling, for regression.
    pub label_mean: f64,
    pub label_std: f64,
    pub hidden_units: usize,
    pub hidden_layers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Regression,
}

impl ModelSpec {
    pub fn input_width(&self) -> usize {
        self.features.iter().map(Feature::width).sum()
    }
    pub fn output_width(&self) -> usize {
        match self.task {
            Task::Classification => self.classes.len(),
            Task::Regression => 1,
        }
    }

    /// Encodes one row (column name to raw value) as model input.
    pub fn encode(&self, row: &HashMap<&str, &str>, out: &mut Vec<f32>) {
        for feature in &self.features {
            let raw = row.get(feature.column()).copied().unwrap_or("").trim();
            match feature {
                Feature::Numeric { mean, std, .. } => {
                    let v = raw.parse::<f64>().ok().filter(|v| v.is_finite()).unwrap_or(*mean);
                    out.push(((v - mean) / std) as f32);
                }
                Feature::Categorical { values, .. } => {
                    out.extend(values.iter().map(|c| if c == raw { 1.0 } else { 0.0 }));
                }
            }
        }
    }
}

/// The network: `hidden_layers` ReLU layers, then a linear output.
pub struct Mlp {
    layers: Vec<candle_nn::Linear>,
}

impl Mlp {
    pub fn new(spec: &ModelSpec, vb: VarBuilder) -> candle_core::Result<Mlp> {
        let mut layers = Vec::new();
        let mut width = spec.input_width();
        let hidden = if spec.hidden_units == 0 { 0 } else { spec.hidden_layers };
        for i in 0..hidden {
            layers.push(candle_nn::linear(width, spec.hidden_units, vb.pp(format!("hidden{i}")))?);
            width = spec.hidden_units;
        }
        layers.push(candle_nn::linear(width, spec.output_width(), vb.pp("out"))?);
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

/// Rows of a CSV channel: the header and the records.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn read_channel(dir: &Path) -> anyhow::Result<Table> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("the channel {} has no files", dir.display());
    }
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for file in files {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_path(&file)
            .with_context(|| format!("opening {}", file.display()))?;
        let h: Vec<String> = reader.headers()?.iter().map(|s| s.trim().to_string()).collect();
        match &header {
            None => header = Some(h),
            Some(first) if *first != h => {
                bail!("{} has different columns than the first file", file.display())
            }
            _ => {}
        }
        for (i, record) in reader.records().enumerate() {
            let record = record.with_context(|| format!("{} line {}", file.display(), i + 2))?;
            rows.push(record.iter().map(str::to_string).collect());
        }
    }
    let header = header.unwrap_or_default();
    if rows.is_empty() {
        bail!("the channel {} has a header but no rows", dir.display());
    }
    Ok(Table { header, rows })
}

fn numeric(values: &[&str]) -> bool {
    values.iter().all(|v| v.trim().is_empty() || v.trim().parse::<f64>().is_ok_and(f64::is_finite))
        && values.iter().any(|v| !v.trim().is_empty())
}

/// Learns the preprocessing from the training rows.
fn fit_spec(env: &JobEnv, table: &Table) -> anyhow::Result<ModelSpec> {
    let wanted: String = env.hp("label")?;
    let label_index = table.header.iter().position(|h| *h == wanted).unwrap_or(0);
    let label = table.header[label_index].clone();
    let labels: Vec<&str> = table.rows.iter().map(|r| r[label_index].trim()).collect();
    let mut distinct: Vec<&str> = labels.clone();
    distinct.sort();
    distinct.dedup();
    let task = match env.hp::<String>("task")?.as_str() {
        "classification" => Task::Classification,
        "regression" => Task::Regression,
        _ if numeric(&labels) && distinct.len() > 20 => Task::Regression,
        _ => Task::Classification,
    };
    let (classes, label_mean, label_std) = match task {
        Task::Classification => {
            if distinct.len() < 2 {
                bail!("the label column {label} has only one value; classification needs at least two");
            }
            (distinct.iter().map(|s| s.to_string()).collect(), 0.0, 1.0)
        }
        Task::Regression => {
            let values: Vec<f64> = labels
                .iter()
                .map(|v| v.parse::<f64>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("regression needs numbers in the label column {label}"))?;
            let (mean, std) = mean_std(&values);
            (Vec::new(), mean, std)
        }
    };
    let mut features = Vec::new();
    for (i, column) in table.header.iter().enumerate() {
        if i == label_index {
            continue;
        }
        let values: Vec<&str> = table.rows.iter().map(|r| r[i].as_str()).collect();
        if numeric(&values) {
            let parsed: Vec<f64> = values.iter().filter_map(|v| v.trim().parse::<f64>().ok()).collect();
            let (mean, std) = mean_std(&parsed);
            features.push(Feature::Numeric { column: column.clone(), mean, std });
        } else {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for v in &values {
                *counts.entry(v.trim()).or_default() += 1;
            }
            let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let values = by_count.into_iter().take(MAX_CATEGORIES).map(|(v, _)| v.to_string()).collect();
            features.push(Feature::Categorical { column: column.clone(), values });
        }
    }
    if features.is_empty() {
        bail!("there are no feature columns besides the label {label}");
    }
    Ok(ModelSpec {
        algorithm: "tabular".into(),
        task,
        label,
        features,
        classes,
        label_mean,
        label_std,
        hidden_units: env.hp("hidden_units")?,
        hidden_layers: env.hp("hidden_layers")?,
    })
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    let std = var.sqrt();
    (mean, if std > 1e-12 { std } else { 1.0 })
}

/// Encoded inputs and targets.
struct Encoded {
    x: Vec<f32>,
    y_class: Vec<u32>,
    y_value: Vec<f32>,
    n: usize,
}

fn encode(spec: &ModelSpec, table: &Table) -> anyhow::Result<Encoded> {
    let mut x = Vec::with_capacity(table.rows.len() * spec.input_width());
    let (mut y_class, mut y_value) = (Vec::new(), Vec::new());
    let label_index = table.header.iter().position(|h| *h == spec.label).context("label column missing")?;
    for (i, row) in table.rows.iter().enumerate() {
        let map: HashMap<&str, &str> =
            table.header.iter().map(String::as_str).zip(row.iter().map(String::as_str)).collect();
        let label = row[label_index].trim();
        match spec.task {
            Task::Classification => {
                let Some(class) = spec.classes.iter().position(|c| c == label) else {
                    bail!("row {}: label {label:?} was not seen in the training data", i + 1)
                };
                y_class.push(class as u32);
            }
            Task::Regression => {
                let v: f64 =
                    label.parse().with_context(|| format!("row {}: label {label:?} is not a number", i + 1))?;
                y_value.push(((v - spec.label_mean) / spec.label_std) as f32);
            }
        }
        spec.encode(&map, &mut x);
    }
    Ok(Encoded { x, y_class, y_value, n: table.rows.len() })
}

/// A small deterministic generator (SplitMix64): shuffles and splits reproducibly from
/// the `seed` hyperparameter.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

fn subset(table: &Table, rows: &[usize]) -> Table {
    Table { header: table.header.clone(), rows: rows.iter().map(|&i| table.rows[i].clone()).collect() }
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    epoch: usize,
}

/// Trains and writes the model.
pub fn train(env: &JobEnv) -> anyhow::Result<()> {
    let device = if env.num_gpus > 0 { Device::cuda_if_available(0)? } else { Device::Cpu };
    let train_dir = env.channels.get("train").context("the train channel is missing")?;
    let table = read_channel(train_dir)?;
    let seed: u64 = env.hp("seed")?;
    let mut rng = Rng(seed);
    let (train_table, validation_table) = match env.channels.get("validation") {
        Some(dir) => (table, Some(read_channel(dir)?)),
        None => {
            let fraction: f64 = env.hp("validation_fraction")?;
            let mut order: Vec<usize> = (0..table.rows.len()).collect();
            rng.shuffle(&mut order);
            let held = ((table.rows.len() as f64) * fraction).round() as usize;
            let held = held.min(table.rows.len().saturating_sub(1));
            if held == 0 {
                (table, None)
            } else {
                (subset(&table, &order[held..]), Some(subset(&table, &order[..held])))
            }
        }
    };
    let spec = fit_spec(env, &train_table)?;
    let train = encode(&spec, &train_table)?;
    let validation = validation_table.as_ref().map(|t| encode(&spec, t)).transpose()?;
    println!(
        "tabular {}: {} training rows, {} validation rows, {} inputs, {} outputs, device {:?}",
        match spec.task {
            Task::Classification => "classification",
            Task::Regression => "regression",
        },
        train.n,
        validation.as_ref().map(|v| v.n).unwrap_or(0),
        spec.input_width(),
        spec.output_width(),
        device
    );

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = Mlp::new(&spec, vb)?;
    let epochs: usize = env.hp("epochs")?;
    let batch_size: usize = env.hp("batch_size")?;
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

    let width = spec.input_width();
    let x_all = Tensor::from_vec(train.x.clone(), (train.n, width), &device)?;
    let y_all = match spec.task {
        Task::Classification => Tensor::from_vec(train.y_class.clone(), train.n, &device)?,
        Task::Regression => Tensor::from_vec(train.y_value.clone(), (train.n, 1), &device)?,
    };
    let mut order: Vec<u32> = (0..train.n as u32).collect();
    // Re-seed per epoch, so a resumed run shuffles exactly as an uninterrupted one.
    let started = Instant::now();
    let mut samples = 0usize;
    for epoch in start..epochs {
        let mut epoch_rng = Rng(seed.wrapping_add(epoch as u64 + 1));
        epoch_rng.shuffle(&mut order);
        let mut total_loss = 0.0f64;
        let mut batches = 0usize;
        for chunk in order.chunks(batch_size) {
            let idx = Tensor::from_vec(chunk.to_vec(), chunk.len(), &device)?;
            let xb = x_all.index_select(&idx, 0)?;
            let yb = y_all.index_select(&idx, 0)?;
            let out = model.forward(&xb)?;
            let loss = match spec.task {
                Task::Classification => candle_nn::loss::cross_entropy(&out, &yb)?,
                Task::Regression => candle_nn::loss::mse(&out, &yb)?,
            };
            optimizer.backward_step(&loss)?;
            total_loss += f64::from(loss.to_scalar::<f32>()?);
            batches += 1;
            samples += chunk.len();
        }
        let train_loss = total_loss / batches.max(1) as f64;
        let mut line = format!("#metric epoch={} train_loss={train_loss:.6}", epoch + 1);
        if let Some(v) = &validation {
            let x = Tensor::from_vec(v.x.clone(), (v.n, width), &device)?;
            let out = model.forward(&x)?;
            match spec.task {
                Task::Classification => {
                    let y = Tensor::from_vec(v.y_class.clone(), v.n, &device)?;
                    let loss = candle_nn::loss::cross_entropy(&out, &y)?.to_scalar::<f32>()?;
                    let predicted = out.argmax(D::Minus1)?.to_vec1::<u32>()?;
                    let right = predicted.iter().zip(&v.y_class).filter(|(a, b)| a == b).count();
                    let accuracy = right as f64 / v.n as f64;
                    line.push_str(&format!(" validation_loss={loss:.6} validation_accuracy={accuracy:.6}"));
                }
                Task::Regression => {
                    let y = Tensor::from_vec(v.y_value.clone(), (v.n, 1), &device)?;
                    let mse = candle_nn::loss::mse(&out, &y)?.to_scalar::<f32>()?;
                    let rmse = f64::from(mse).sqrt() * spec.label_std;
                    line.push_str(&format!(" validation_loss={mse:.6} validation_rmse={rmse:.6}"));
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
    std::fs::write(env.model_dir.join("model.json"), serde_json::to_vec_pretty(&spec)?)?;
    println!("model written to {}", env.model_dir.display());
    Ok(())
}
