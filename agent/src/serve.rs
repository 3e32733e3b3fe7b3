//! The model server for the built-in algorithms, `atelier-agent serve --model-dir DIR
//! --port N`: it loads a trained model directory (`model.safetensors` and `model.json`,
//! as [`crate::builtin`] writes them) and answers the SageMaker bring-your-own-container
//! contract, `GET /ping` and `POST /invocations`.
//!
//! Inputs are turned into tensors exactly as in training (the same `encode`, `pixels`
//! and network constructors), so a prediction sees what the model was trained on.
//! [`Predictor`] holds that logic without HTTP; the axum layer only moves bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::builtin::image::{self as image_model, Cnn, ImageModel};
use crate::builtin::tabular::{Feature, ModelSpec, Task};
use crate::builtin::text::{self, TextModel};
use crate::builtin::Mlp;

/// SageMaker's limit on an invocation's payload.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Input values in one forward pass at most (64 MiB of `f32`): a request is one pass
/// unless its dense input would be larger (e.g. thousands of texts over a large
/// vocabulary), and then a few.
const MAX_PASS_VALUES: usize = 16 * 1024 * 1024;

/// Why a request got no prediction.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The request is wrong (400); the message says what and where.
    #[error("{0}")]
    BadInput(String),
    /// The model failed on valid input (500).
    #[error("the model failed: {0}")]
    Model(#[from] candle_core::Error),
}

fn bad<T>(message: impl Into<String>) -> Result<T, PredictError> {
    Err(PredictError::BadInput(message.into()))
}

/// A loaded model, ready to predict.
pub struct Predictor {
    device: Device,
    model: Model,
}

enum Model {
    Tabular { spec: ModelSpec, net: Mlp },
    Text { spec: TextModel, net: Mlp },
    Image { spec: ImageModel, net: Cnn },
}

/// The device to predict on: CUDA device 0 when the process was given a GPU and the
/// agent was built with CUDA, else the CPU.
fn inference_device() -> Device {
    let gpu_given = std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| !v.trim().is_empty());
    if !gpu_given {
        return Device::Cpu;
    }
    Device::cuda_if_available(0).unwrap_or_else(|err| {
        eprintln!("atelier-agent serve: no usable GPU ({err}); predicting on the CPU");
        Device::Cpu
    })
}

impl Predictor {
    /// Loads the model in `dir` on the GPU if one was given, else the CPU.
    pub fn load(dir: &Path) -> anyhow::Result<Predictor> {
        Predictor::load_on(dir, inference_device())
    }

    /// Loads the model in `dir` onto `device`.
    pub fn load_on(dir: &Path, device: Device) -> anyhow::Result<Predictor> {
        let spec_file = dir.join("model.json");
        let raw = std::fs::read(&spec_file).with_context(|| format!("reading {}", spec_file.display()))?;
        let spec: Value =
            serde_json::from_slice(&raw).with_context(|| format!("{} is not JSON", spec_file.display()))?;
        let algorithm = spec.get("algorithm").and_then(Value::as_str).unwrap_or_default().to_string();
        let weights_file = dir.join("model.safetensors");
        let weights = candle_core::safetensors::load(&weights_file, &device)
            .with_context(|| format!("reading {}", weights_file.display()))?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
        let parse = |what: &str| format!("model.json is not a valid {what} model");
        let model = match algorithm.as_str() {
            "tabular" => {
                let spec: ModelSpec = serde_json::from_value(spec).with_context(|| parse("tabular"))?;
                if spec.task == Task::Classification && spec.classes.is_empty() {
                    bail!("model.json lists no classes");
                }
                let net = Mlp::new(spec.input_width(), spec.hidden_units, spec.hidden_layers, spec.output_width(), vb)
                    .context("the weights do not match model.json")?;
                Model::Tabular { spec, net }
            }
            "text_classification" => {
                let spec: TextModel = serde_json::from_value(spec).with_context(|| parse("text classification"))?;
                if spec.tokenizer != text::TOKENIZER {
                    bail!(
                        "the model was trained with the tokenizer {:?}; this agent has {:?} (upgrade the agent)",
                        spec.tokenizer,
                        text::TOKENIZER
                    );
                }
                if spec.classes.is_empty() {
                    bail!("model.json lists no classes");
                }
                let net =
                    Mlp::new(spec.vocabulary.len(), spec.hidden_units, spec.hidden_layers, spec.classes.len(), vb)
                        .context("the weights do not match model.json")?;
                Model::Text { spec, net }
            }
            "image_classification" => {
                let spec: ImageModel = serde_json::from_value(spec).with_context(|| parse("image classification"))?;
                if spec.classes.is_empty() || spec.image_size < 4 {
                    bail!("model.json lists no classes or an image_size below 4");
                }
                let net = Cnn::new(&spec, vb).context("the weights do not match model.json")?;
                Model::Image { spec, net }
            }
            "" => bail!("{} has no algorithm", spec_file.display()),
            other => bail!("the algorithm {other:?} of {} cannot be served", spec_file.display()),
        };
        Ok(Predictor { device, model })
    }

    /// The algorithm of the loaded model, as in `model.json`.
    pub fn algorithm(&self) -> &'static str {
        match self.model {
            Model::Tabular { .. } => "tabular",
            Model::Text { .. } => "text_classification",
            Model::Image { .. } => "image_classification",
        }
    }

    /// Predictions for the request body `body` of type `content_type` (a `Content-Type`
    /// header value; parameters such as `charset` are ignored, empty means the model's
    /// usual type): `{"predictions": [...]}`, one per instance, in order.
    pub fn predict(&self, content_type: &str, body: &[u8]) -> Result<Value, PredictError> {
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let predictions = match &self.model {
            Model::Tabular { spec, net } => {
                let rows = match essence.as_str() {
                    "application/json" | "" => tabular_json(spec, body)?,
                    "text/csv" => tabular_csv(spec, body)?,
                    other => return bad(unsupported(other, "application/json or text/csv")),
                };
                let classify = spec.task == Task::Classification;
                let outputs = self.forward(net, rows.len(), &[spec.input_width()], classify, |i, buf| {
                    let row: HashMap<&str, &str> = rows[i].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    spec.encode(&row, buf);
                    Ok(())
                })?;
                match spec.task {
                    Task::Classification => classifications(&spec.classes, outputs),
                    Task::Regression => outputs
                        .iter()
                        .map(|out| {
                            let value = f64::from(out.first().copied().unwrap_or(f32::NAN));
                            json!({ "value": value * spec.label_std + spec.label_mean })
                        })
                        .collect(),
                }
            }
            Model::Text { spec, net } => {
                let texts = match essence.as_str() {
                    "application/json" | "" => text_json(body)?,
                    "text/plain" => text_lines(body)?,
                    other => return bad(unsupported(other, "application/json or text/plain")),
                };
                let index = spec.term_index();
                let width = spec.vocabulary.len();
                let outputs = self.forward(net, texts.len(), &[width], true, |i, buf| {
                    let start = buf.len();
                    buf.resize(start + width, 0.0);
                    for (term, value) in spec.encode(&index, &texts[i]) {
                        buf[start + term as usize] = value;
                    }
                    Ok(())
                })?;
                classifications(&spec.classes, outputs)
            }
            Model::Image { spec, net } => {
                let images: Vec<Vec<u8>> = match essence.as_str() {
                    "image/png" | "image/jpeg" | "image/jpg" | "image/webp" | "application/x-image" | "" => {
                        if body.is_empty() {
                            return bad("the body is empty; send the image's bytes");
                        }
                        vec![body.to_vec()]
                    }
                    "application/json" => image_json(body)?,
                    other => {
                        return bad(unsupported(
                            other,
                            "image/png, image/jpeg, image/webp or application/x-image (one image), or \
                             application/json (a batch)",
                        ))
                    }
                };
                let size = spec.image_size;
                let single = images.len() == 1;
                let outputs = self.forward(net, images.len(), &[3, size, size], true, |i, buf| {
                    let pixels = image_model::pixels(&images[i], size).map_err(|err| {
                        let at = if single { String::new() } else { format!("instances[{i}]: ") };
                        PredictError::BadInput(format!("{at}the image could not be decoded: {err}"))
                    })?;
                    buf.extend(pixels);
                    Ok(())
                })?;
                classifications(&spec.classes, outputs)
            }
        };
        Ok(json!({ "predictions": predictions }))
    }

    /// Runs `net` over `n` inputs of shape `row_shape`, each appended to the pass's
    /// buffer by `fill(i, buffer)`: the outputs per input, softmax probabilities when
    /// `softmax`.
    fn forward(
        &self,
        net: &dyn Module,
        n: usize,
        row_shape: &[usize],
        softmax: bool,
        mut fill: impl FnMut(usize, &mut Vec<f32>) -> Result<(), PredictError>,
    ) -> Result<Vec<Vec<f32>>, PredictError> {
        let row_len = row_shape.iter().product::<usize>().max(1);
        let per_pass = (MAX_PASS_VALUES / row_len).max(1);
        let mut outputs = Vec::with_capacity(n);
        for start in (0..n).step_by(per_pass) {
            let rows = per_pass.min(n - start);
            let mut buf = Vec::with_capacity(rows * row_len);
            for i in start..start + rows {
                fill(i, &mut buf)?;
            }
            let mut shape = vec![rows];
            shape.extend_from_slice(row_shape);
            let x = Tensor::from_vec(buf, shape, &self.device)?;
            let mut out = net.forward(&x)?;
            if softmax {
                out = candle_nn::ops::softmax_last_dim(&out)?;
            }
            outputs.extend(out.to_dtype(DType::F32)?.to_vec2::<f32>()?);
        }
        Ok(outputs)
    }
}

fn unsupported(content_type: &str, accepted: &str) -> String {
    format!("unsupported content type {content_type}; send {accepted}")
}

/// `{"label": ..., "probabilities": {class: p, ...}}` per input.
fn classifications(classes: &[String], probabilities: Vec<Vec<f32>>) -> Vec<Value> {
    probabilities
        .into_iter()
        .map(|p| {
            let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
            // Through the f32's shortest decimal form, so 0.9 is written 0.9 and not
            // 0.8999999761581421.
            let by_class: Map<String, Value> = classes
                .iter()
                .zip(&p)
                .map(|(c, v)| (c.clone(), json!(v.to_string().parse::<f64>().unwrap_or(f64::NAN))))
                .collect();
            json!({ "label": classes.get(best).cloned().unwrap_or_default(), "probabilities": by_class })
        })
        .collect()
}

/// The instances of a JSON body: `{"instances": [...]}` or a bare list.
fn json_instances(body: &[u8]) -> Result<Vec<Value>, PredictError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(err) => return bad(format!("body is not valid JSON: {err}")),
    };
    let instances = match value {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("instances") {
            Some(Value::Array(items)) => items,
            Some(_) => return bad("instances must be a list"),
            None => return bad("the JSON object has no \"instances\" list"),
        },
        _ => return bad("the JSON body must be an object with an \"instances\" list, or a list"),
    };
    if instances.is_empty() {
        return bad("instances is empty; send at least one instance");
    }
    Ok(instances)
}

/// A row's cell as the text `encode` reads, checked against the column's type.
fn cell(feature: Option<&Feature>, raw: String, at: &str) -> Result<String, PredictError> {
    if let Some(Feature::Numeric { column, .. }) = feature {
        let trimmed = raw.trim();
        if !trimmed.is_empty() && !trimmed.parse::<f64>().is_ok_and(f64::is_finite) {
            return bad(format!("{at}: {raw:?} is not a number, and the model's column {column} is numeric"));
        }
    }
    Ok(raw)
}

fn feature_of<'a>(spec: &'a ModelSpec, column: &str) -> Option<&'a Feature> {
    spec.features.iter().find(|f| match f {
        Feature::Numeric { column: c, .. } | Feature::Categorical { column: c, .. } => c == column,
    })
}

fn feature_columns(spec: &ModelSpec) -> Vec<&str> {
    spec.features
        .iter()
        .map(|f| match f {
            Feature::Numeric { column, .. } | Feature::Categorical { column, .. } => column.as_str(),
        })
        .collect()
}

type Row = Vec<(String, String)>;

fn tabular_json(spec: &ModelSpec, body: &[u8]) -> Result<Vec<Row>, PredictError> {
    let mut rows = Vec::new();
    for (i, instance) in json_instances(body)?.into_iter().enumerate() {
        let Value::Object(object) = instance else {
            return bad(format!("instances[{i}]: not an object (expected {{\"column\": value, ...}})"));
        };
        let mut row = Vec::with_capacity(object.len());
        let mut known = 0;
        for (column, value) in object {
            let feature = feature_of(spec, &column);
            known += usize::from(feature.is_some());
            let at = format!("instances[{i}].{column}");
            let raw = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                Value::Array(_) | Value::Object(_) => {
                    return bad(format!("{at}: expected a number or a string, not a list or object"))
                }
            };
            let value = cell(feature, raw, &at)?;
            row.push((column, value));
        }
        if known == 0 {
            return bad(format!(
                "instances[{i}] has none of the model's columns ({})",
                feature_columns(spec).join(", ")
            ));
        }
        rows.push(row);
    }
    Ok(rows)
}

fn tabular_csv(spec: &ModelSpec, body: &[u8]) -> Result<Vec<Row>, PredictError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body);
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
        Err(err) => return bad(format!("the CSV header could not be read: {err}")),
    };
    let missing: Vec<&str> = feature_columns(spec).into_iter().filter(|c| !header.iter().any(|h| h == c)).collect();
    if !missing.is_empty() {
        return bad(format!(
            "the CSV header lacks the model's column(s) {}; the first line must be the header",
            missing.join(", ")
        ));
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = match record {
            Ok(r) => r,
            Err(err) => return bad(format!("CSV line {}: {err}", i + 2)),
        };
        let mut row = Vec::with_capacity(header.len());
        for (column, value) in header.iter().zip(record.iter()) {
            let at = format!("CSV line {}, column {column}", i + 2);
            row.push((column.clone(), cell(feature_of(spec, column), value.to_string(), &at)?));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return bad("the CSV has no rows after the header");
    }
    Ok(rows)
}

fn text_json(body: &[u8]) -> Result<Vec<String>, PredictError> {
    json_instances(body)?
        .into_iter()
        .enumerate()
        .map(|(i, instance)| match instance {
            Value::String(s) => Ok(s),
            Value::Object(mut object) => match object.remove("text") {
                Some(Value::String(s)) => Ok(s),
                _ => bad(format!("instances[{i}]: the object has no \"text\" string")),
            },
            _ => bad(format!("instances[{i}]: expected a string or an object with a \"text\" string")),
        })
        .collect()
}

fn text_lines(body: &[u8]) -> Result<Vec<String>, PredictError> {
    let Ok(text) = std::str::from_utf8(body) else { return bad("the body is not valid UTF-8 text") };
    let lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    if lines.is_empty() {
        return bad("the body has no text; send one text per line");
    }
    Ok(lines)
}

fn image_json(body: &[u8]) -> Result<Vec<Vec<u8>>, PredictError> {
    json_instances(body)?
        .into_iter()
        .enumerate()
        .map(|(i, instance)| {
            let Some(encoded) = instance.get("b64").and_then(Value::as_str) else {
                return bad(format!("instances[{i}]: expected an object with a \"b64\" string (the image, base64)"));
            };
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .or_else(|err| bad(format!("instances[{i}]: b64 is not valid base64: {err}")))
        })
        .collect()
}

/// The HTTP service: `GET /ping` and `POST /invocations`, at most [`MAX_BODY_BYTES`] a
/// request and as many predictions at once as there are CPUs. With a `secret`,
/// invocations without `Authorization: Bearer <secret>` are refused; `/ping` stays open
/// for health checks (it tells nothing).
pub fn router(predictor: Arc<Predictor>, secret: Option<String>) -> Router {
    let workers = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let state = Served { predictor, permits: Arc::new(Semaphore::new(workers)), secret: secret.map(Arc::from) };
    Router::new()
        .route("/ping", get(ping))
        .route("/invocations", post(invocations))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(Clone)]
struct Served {
    predictor: Arc<Predictor>,
    /// Bounds the predictions running at once (each may hold its request's dense input).
    permits: Arc<Semaphore>,
    secret: Option<Arc<str>>,
}

/// Whether `headers` carry the instance's secret. The comparison takes the same time
/// wherever the first difference is, so timing does not reveal the secret piecemeal.
fn authorized(secret: &str, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| crate::kernels::wire::constant_time_eq(given, secret.as_bytes()))
}

async fn ping() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn invocations(
    State(served): State<Served>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if served.secret.as_deref().is_some_and(|secret| !authorized(secret, &headers)) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invocations go through Atelier (POST /endpoints/{name}/invocations), not to the model server",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} MiB; send smaller batches", MAX_BODY_BYTES / (1024 * 1024)),
            )
        }
        Err(rejection) => {
            return error(rejection.status(), format!("the body could not be read: {}", rejection.body_text()))
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let Ok(_permit) = served.permits.clone().acquire_owned().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down");
    };
    let predictor = served.predictor.clone();
    match tokio::task::spawn_blocking(move || predictor.predict(&content_type, &body)).await {
        Ok(Ok(predictions)) => Json(predictions).into_response(),
        Ok(Err(PredictError::BadInput(message))) => error(StatusCode::BAD_REQUEST, message),
        Ok(Err(err)) => {
            tracing::error!(%err, "prediction failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
        }
        Err(err) => {
            tracing::error!(%err, "prediction panicked");
            error(StatusCode::INTERNAL_SERVER_ERROR, "the prediction failed unexpectedly")
        }
    }
}

/// `atelier-agent serve`: loads the model and serves until SIGTERM, Ctrl-C or the
/// death of the process that started it. Load and bind failures go to stderr with a
/// non-zero exit, for the agent to report.
pub fn main(model_dir: &Path, host: &str, port: u16, secret: Option<String>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("atelier-agent serve: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(model_dir.to_path_buf(), host, port, secret)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("atelier-agent serve: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the model in `model_dir` and serves it on `host:port` until shut down.
pub async fn serve(model_dir: PathBuf, host: &str, port: u16, secret: Option<String>) -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let shown = model_dir.display().to_string();
    let predictor = tokio::task::spawn_blocking(move || Predictor::load(&model_dir))
        .await
        .context("loading the model")?
        .with_context(|| format!("cannot load the model in {shown}"))?;
    let listener =
        tokio::net::TcpListener::bind((host, port)).await.with_context(|| format!("cannot listen on {host}:{port}"))?;
    tracing::info!(algorithm = predictor.algorithm(), device = ?predictor.device, "serving {shown} on {host}:{port}");
    axum::serve(listener, router(Arc::new(predictor), secret)).with_graceful_shutdown(shutdown(parent)).await?;
    tracing::info!("model server stopped");
    Ok(())
}

/// Resolves on SIGTERM, Ctrl-C, or once this process is re-parented (the agent that
/// started it is gone, even if it was killed and could not stop it). Requests still
/// running then get a few seconds to finish.
async fn shutdown(parent: u32) {
    let parent_gone = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if std::os::unix::process::parent_id() != parent {
                break "the process that started the model server is gone";
            }
        }
    };
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        "SIGTERM"
    };
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    };
    let reason = tokio::select! {
        r = parent_gone => r,
        r = terminated => r,
        r = interrupted => r,
    };
    tracing::info!("{reason}: stopping the model server");
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        tracing::warn!("requests still running after 10 s; exiting");
        std::process::exit(0);
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::builtin::JobEnv;

    /// A job directory with `files` in its `train` channel and the given hyperparameters.
    fn job(files: &[(&str, Vec<u8>)], hyperparameters: &[(&str, &str)]) -> JobEnv {
        let dir = std::env::temp_dir().join(format!("atelier-serve-{}", uuid::Uuid::new_v4().simple()));
        let train = dir.join("train");
        std::fs::create_dir_all(&train).expect("dir");
        for (name, bytes) in files {
            std::fs::write(train.join(name), bytes).expect("write");
        }
        std::fs::create_dir_all(dir.join("checkpoints")).expect("dir");
        JobEnv {
            channels: BTreeMap::from([("train".to_string(), train)]),
            hyperparameters: hyperparameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            model_dir: dir.join("model"),
            checkpoint_dir: dir.join("checkpoints"),
            num_gpus: 0,
        }
    }

    fn bad_input(result: Result<Value, PredictError>) -> String {
        match result {
            Err(PredictError::BadInput(message)) => message,
            other => panic!("expected bad input, got {other:?}"),
        }
    }

    fn labels(answer: &Value) -> Vec<&str> {
        answer["predictions"]
            .as_array()
            .expect("predictions")
            .iter()
            .map(|p| p["label"].as_str().expect("label"))
            .collect()
    }

    /// Each prediction's probabilities sum to 1 and its label's is the largest, above `min`.
    fn check_probabilities(answer: &Value, min: f64) {
        for prediction in answer["predictions"].as_array().expect("predictions") {
            let probabilities = prediction["probabilities"].as_object().expect("probabilities");
            let sum: f64 = probabilities.values().map(|v| v.as_f64().expect("number")).sum();
            assert!((sum - 1.0).abs() < 1e-4, "{prediction}");
            let label = prediction["label"].as_str().expect("label");
            assert!(probabilities[label].as_f64().expect("number") > min, "{prediction}");
        }
    }

    /// A tabular classifier: `label` is `pos` when `x > 0`; `colour` is noise.
    fn tabular_classifier() -> Predictor {
        let mut csv = String::from("x,colour,label\n");
        for i in 0..80 {
            let x = (i as f64 - 39.5) / 40.0;
            let colour = ["red", "green", "blue"][i % 3];
            csv.push_str(&format!("{x:.3},{colour},{}\n", if x > 0.0 { "pos" } else { "neg" }));
        }
        let env = job(
            &[("data.csv", csv.into_bytes())],
            &[
                ("task", "classification"),
                ("label", "label"),
                ("epochs", "40"),
                ("batch_size", "16"),
                ("learning_rate", "0.05"),
                ("hidden_units", "8"),
                ("hidden_layers", "1"),
                ("validation_fraction", "0.2"),
                ("seed", "7"),
            ],
        );
        crate::builtin::tabular::train(&env).expect("train");
        Predictor::load(&env.model_dir).expect("load")
    }

    #[test]
    fn tabular_classifier_predicts_the_class_with_probabilities() {
        let predictor = tabular_classifier();
        assert_eq!(predictor.algorithm(), "tabular");
        let body = br#"{"instances": [{"x": 0.9, "colour": "red"}, {"x": -0.8, "colour": "blue"}, {"x": "0.7"}]}"#;
        let answer = predictor.predict("application/json; charset=utf-8", body).expect("predict");
        assert_eq!(labels(&answer), vec!["pos", "neg", "pos"], "{answer}");
        check_probabilities(&answer, 0.8);
        // A bare list means the same.
        let bare = predictor
            .predict(
                "application/json",
                br#"[{"x": 0.9, "colour": "red"}, {"x": -0.8, "colour": "blue"}, {"x": "0.7"}]"#,
            )
            .expect("predict");
        assert_eq!(bare, answer);
    }

    #[test]
    fn tabular_csv_and_json_give_the_same_answer() {
        let predictor = tabular_classifier();
        let json = predictor
            .predict(
                "application/json",
                br#"{"instances": [{"x": 0.6, "colour": "green"}, {"x": -0.3, "colour": "red"}]}"#,
            )
            .expect("json");
        // Columns in another order, with the label column (ignored, even when empty).
        let csv = predictor.predict("text/csv", b"label,colour,x\n,green,0.6\nneg,red,-0.3\n").expect("csv");
        assert_eq!(csv, json);
        assert_eq!(labels(&csv), vec!["pos", "neg"]);
    }

    #[test]
    fn tabular_bad_input_names_the_problem() {
        let predictor = tabular_classifier();
        let json = |body: &str| bad_input(predictor.predict("application/json", body.as_bytes()));
        assert!(json("{not json").starts_with("body is not valid JSON"), "{}", json("{not json"));
        assert!(json(r#"{"rows": [{"x": 1}]}"#).contains("no \"instances\""));
        assert_eq!(json(r#"{"instances": 5}"#), "instances must be a list");
        assert!(json(r#"{"instances": []}"#).contains("empty"));
        assert!(json(r#"[{"x": 1}, {"x": 2}, 3]"#).starts_with("instances[2]: not an object"));
        assert!(json(r#"[{"x": "many"}]"#).contains("instances[0].x: \"many\" is not a number"));
        assert!(json(r#"[{"x": [1]}]"#).starts_with("instances[0].x"));
        assert!(json(r#"[{"height": 1}]"#).contains("none of the model's columns (x, colour)"));
        let message = bad_input(predictor.predict("text/xml", b"<x/>"));
        assert_eq!(message, "unsupported content type text/xml; send application/json or text/csv");
        let message = bad_input(predictor.predict("text/csv", b"x,label\n1,pos\n"));
        assert!(message.contains("lacks the model's column(s) colour"), "{message}");
        let message = bad_input(predictor.predict("text/csv", b"x,colour\n"));
        assert!(message.contains("no rows"), "{message}");
        let message = bad_input(predictor.predict("text/csv", b"x,colour\n1,red\n2\n"));
        assert!(message.starts_with("CSV line 3"), "{message}");
    }

    #[test]
    fn tabular_regression_answers_in_the_label_unit() {
        let mut csv = String::from("x,y\n");
        for i in 0..60 {
            let x = (i as f64 - 30.0) / 30.0;
            csv.push_str(&format!("{x:.4},{:.4}\n", 100.0 + 20.0 * x));
        }
        let env = job(
            &[("data.csv", csv.into_bytes())],
            &[
                ("task", "regression"),
                ("label", "y"),
                ("epochs", "60"),
                ("batch_size", "8"),
                ("learning_rate", "0.05"),
                ("hidden_units", "0"),
                ("hidden_layers", "0"),
                ("validation_fraction", "0"),
                ("seed", "1"),
            ],
        );
        crate::builtin::tabular::train(&env).expect("train");
        let predictor = Predictor::load(&env.model_dir).expect("load");
        let answer = predictor.predict("text/csv", b"x\n0.5\n-0.5\n").expect("predict");
        let values: Vec<f64> = answer["predictions"]
            .as_array()
            .expect("predictions")
            .iter()
            .map(|p| p["value"].as_f64().expect("value"))
            .collect();
        assert!((values[0] - 110.0).abs() < 2.0 && (values[1] - 90.0).abs() < 2.0, "{answer}");
    }

    fn text_classifier() -> Predictor {
        let good = ["great wonderful film", "a wonderful story", "great acting", "loved it, great", "wonderful"];
        let awful = ["terrible boring film", "awful story", "boring acting", "hated it, awful", "terrible"];
        let mut manifest = String::new();
        for round in 0..3 {
            for (text, class) in good.iter().map(|t| (t, "positive")).chain(awful.iter().map(|t| (t, "negative"))) {
                let line = json!({ "source": format!("{text} {round}"), "mood": class, "mood-metadata": {} });
                manifest.push_str(&format!("{line}\n"));
            }
        }
        let env = job(
            &[("output.manifest", manifest.into_bytes())],
            &[
                ("label_attribute", ""),
                ("max_vocabulary", "1000"),
                ("min_count", "1"),
                ("hidden_units", "16"),
                ("epochs", "30"),
                ("batch_size", "8"),
                ("learning_rate", "0.05"),
                ("validation_fraction", "0.2"),
                ("seed", "3"),
            ],
        );
        crate::builtin::text::train(&env).expect("train");
        Predictor::load(&env.model_dir).expect("load")
    }

    #[test]
    fn text_classifier_predicts_from_json_and_plain_text() {
        let predictor = text_classifier();
        assert_eq!(predictor.algorithm(), "text_classification");
        let answer = predictor
            .predict("application/json", br#"{"instances": ["a great, wonderful story", {"text": "Boring. Awful!"}]}"#)
            .expect("json");
        assert_eq!(labels(&answer), vec!["positive", "negative"], "{answer}");
        check_probabilities(&answer, 0.7);
        let plain = predictor.predict("text/plain", b"a great, wonderful story\n\nBoring. Awful!\n").expect("plain");
        assert_eq!(plain, answer);

        let message = bad_input(predictor.predict("application/json", br#"{"instances": ["fine", 4]}"#));
        assert!(message.starts_with("instances[1]: expected a string"), "{message}");
        let message = bad_input(predictor.predict("application/json", br#"{"instances": [{"body": "x"}]}"#));
        assert!(message.contains("no \"text\""), "{message}");
        let message = bad_input(predictor.predict("text/plain", b"\n  \n"));
        assert!(message.contains("no text"), "{message}");
        let message = bad_input(predictor.predict("text/csv", b"a"));
        assert!(message.contains("unsupported content type text/csv"), "{message}");
    }

    fn png(rgb: [u8; 3], side: u32) -> Vec<u8> {
        let image = image::RgbImage::from_pixel(side, side, image::Rgb(rgb));
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(image)
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .expect("encode");
        bytes
    }

    #[test]
    fn image_classifier_tells_red_from_blue() {
        let mut files = Vec::new();
        let mut manifest = String::new();
        for i in 0..8u8 {
            for (class, rgb) in [("red", [200 + i * 5, 10 * i, 20]), ("blue", [10 * i, 30, 200 + i * 5])] {
                let name = format!("{class}{i}.png");
                manifest
                    .push_str(&format!("{}\n", json!({ "source-ref": name, "colour": class, "colour-metadata": {} })));
                files.push((name, png(rgb, 12)));
            }
        }
        let mut channel: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        channel.push(("output.manifest", manifest.into_bytes()));
        let env = job(
            &channel,
            &[
                ("label_attribute", "colour"),
                ("image_size", "8"),
                ("channels", "4"),
                ("epochs", "15"),
                ("batch_size", "4"),
                ("learning_rate", "0.01"),
                ("validation_fraction", "0.25"),
                ("seed", "5"),
            ],
        );
        crate::builtin::image::train(&env).expect("train");
        let predictor = Predictor::load(&env.model_dir).expect("load");
        assert_eq!(predictor.algorithm(), "image_classification");

        let red = png([255, 0, 0], 20);
        let blue = png([0, 0, 255], 20);
        let answer = predictor.predict("image/png", &red).expect("raw");
        assert_eq!(labels(&answer), vec!["red"], "{answer}");
        check_probabilities(&answer, 0.6);
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let body = json!({ "instances": [{ "b64": b64(&blue) }, { "b64": b64(&red) }] }).to_string();
        let answer = predictor.predict("application/json", body.as_bytes()).expect("batch");
        assert_eq!(labels(&answer), vec!["blue", "red"], "{answer}");
        check_probabilities(&answer, 0.6);

        let message = bad_input(predictor.predict("image/png", b"not an image"));
        assert!(message.starts_with("the image could not be decoded"), "{message}");
        let body = json!({ "instances": [{ "b64": b64(&red) }, { "b64": b64(b"junk") }] }).to_string();
        let message = bad_input(predictor.predict("application/json", body.as_bytes()));
        assert!(message.starts_with("instances[1]: the image could not be decoded"), "{message}");
        let message = bad_input(predictor.predict("application/json", br#"{"instances": [{"b64": "***"}]}"#));
        assert!(message.starts_with("instances[0]: b64 is not valid base64"), "{message}");
        let message = bad_input(predictor.predict("application/json", br#"{"instances": ["x"]}"#));
        assert!(message.contains("\"b64\""), "{message}");
        let message = bad_input(predictor.predict("text/plain", b"x"));
        assert!(message.contains("unsupported content type text/plain"), "{message}");
    }

    #[test]
    fn loading_a_directory_without_a_model_fails_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("atelier-serve-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let err = Predictor::load(&dir).err().expect("no model");
        assert!(format!("{err:#}").contains("model.json"), "{err:#}");
        std::fs::write(dir.join("model.json"), br#"{"algorithm": "xgboost"}"#).expect("write");
        let err = Predictor::load(&dir).err().expect("unknown algorithm");
        assert!(format!("{err:#}").contains("model.safetensors"), "{err:#}");
    }

    #[tokio::test]
    async fn http_answers_ping_predictions_and_errors_as_json() {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;

        let predictor = tokio::task::spawn_blocking(tabular_classifier).await.expect("train");
        let app = router(Arc::new(predictor), Some("s3cret".into()));
        let call_as = |auth: &'static str, method: &str, uri: &str, content_type: &str, body: Vec<u8>| {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .header(header::CONTENT_TYPE, content_type)
                .header(header::AUTHORIZATION, auth)
                .body(axum::body::Body::from(body))
                .expect("request");
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.expect("response");
                let status = response.status();
                let bytes = response.into_body().collect().await.expect("body").to_bytes();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            }
        };
        let call = |method: &str, uri: &str, content_type: &str, body: Vec<u8>| {
            call_as("Bearer s3cret", method, uri, content_type, body)
        };
        // Health checks need no secret; invocations without it (or with another) are refused.
        let (status, body) = call_as("", "GET", "/ping", "", Vec::new()).await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "status": "ok" })));
        for wrong in ["", "Bearer s3creT", "Bearer s3cret2", "s3cret"] {
            let (status, body) =
                call_as(wrong, "POST", "/invocations", "text/csv", b"x,colour\n0.9,red\n".to_vec()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}: {body}");
            assert!(body["error"].as_str().expect("error").contains("go through Atelier"), "{body}");
        }
        let (status, body) = call("POST", "/invocations", "text/csv", b"x,colour\n0.9,red\n".to_vec()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(labels(&body), vec!["pos"]);
        let (status, body) = call("POST", "/invocations", "text/xml", b"<x/>".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().expect("error").contains("text/xml"), "{body}");
        let (status, body) = call("POST", "/invocations", "text/csv", vec![b'1'; MAX_BODY_BYTES + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body["error"].as_str().expect("error").contains("6 MiB"), "{body}");
    }
}
