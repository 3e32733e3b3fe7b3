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
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::{fit, write_model_spec, Examples, JobEnv, Mlp, Objective, TensorExamples};

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

impl Encoded {
    fn tensors(self, spec: &ModelSpec, device: &Device) -> candle_core::Result<TensorExamples> {
        let x = Tensor::from_vec(self.x, (self.n, spec.input_width()), device)?;
        let y = match spec.task {
            Task::Classification => Tensor::from_vec(self.y_class, self.n, device)?,
            Task::Regression => Tensor::from_vec(self.y_value, (self.n, 1), device)?,
        };
        Ok(TensorExamples { x, y })
    }
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

fn subset(table: &Table, rows: &[usize]) -> Table {
    Table { header: table.header.clone(), rows: rows.iter().map(|&i| table.rows[i].clone()).collect() }
}

/// Trains and writes the model.
pub fn train(env: &JobEnv) -> anyhow::Result<()> {
    let device = env.device()?;
    let train_dir = env.channels.get("train").context("the train channel is missing")?;
    let table = read_channel(train_dir)?;
    let (train_table, validation_table) = match env.channels.get("validation") {
        Some(dir) => (table, Some(read_channel(dir)?)),
        None => {
            let (train, held) = env.holdout(table.rows.len())?;
            if held.is_empty() {
                (table, None)
            } else {
                (subset(&table, &train), Some(subset(&table, &held)))
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
    let model = Mlp::new(spec.input_width(), spec.hidden_units, spec.hidden_layers, spec.output_width(), vb)?;
    let objective = match spec.task {
        Task::Classification => Objective::Classification,
        Task::Regression => Objective::Regression { label_std: spec.label_std },
    };
    let train = train.tensors(&spec, &device)?;
    let validation = validation.map(|v| v.tensors(&spec, &device)).transpose()?;
    fit(env, &model, &varmap, objective, &train, validation.as_ref().map(|v| v as &dyn Examples), &device)?;
    write_model_spec(env, &spec)
}
