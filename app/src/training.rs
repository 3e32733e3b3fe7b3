//! Training jobs: the list (with filters and comparison), the create form (script mode
//! or a built-in algorithm, with file uploads), the detail page (live status, log
//! tail and metric charts, artifacts, lineage, stop and clone) and the comparison page.

use std::collections::BTreeMap;

use atelier_protocol::{Algorithm, JobSpec, JobState, BUILTIN_ALGORITHMS};
use leptos::prelude::*;
use leptos::server_fn::codec::{MultipartData, MultipartFormData};
use leptos_router::hooks::{use_params_map, use_query_map};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::format::format_time;

/// A training job, as the pages and `/api/v1/training-jobs` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TrainingJobView {
    pub id: String,
    pub name: String,
    pub state: JobState,
    /// The failure reason, why it stopped, or why it was requeued.
    pub message: String,
    pub spec: JobSpec,
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at_ms: i64,
    /// The node running it (or that ran its last attempt).
    pub node: Option<String>,
    pub gpus: Vec<u32>,
    pub attempt: i64,
    pub training_started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub stop_requested: bool,
    /// Why a pending job waits ("needs 2 GPUs; largest free on any node is 1").
    pub wait_reason: Option<String>,
    /// The last value of each metric.
    pub final_metrics: BTreeMap<String, f64>,
}

/// A state transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobEventView {
    pub ts_ms: i64,
    pub attempt: i64,
    pub state: String,
    pub message: String,
    pub node: Option<String>,
}

/// A stored file: an upload, a model, an output or a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ArtifactView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub sha256: String,
    pub size: i64,
    pub job: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// Everything the detail page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TrainingJobDetail {
    pub job: TrainingJobView,
    pub events: Vec<JobEventView>,
    pub artifacts: Vec<ArtifactView>,
    /// The input files, by channel (`code` for script files): lineage.
    pub inputs: BTreeMap<String, Vec<ArtifactView>>,
}

/// A log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct LogLineView {
    pub seq: i64,
    pub attempt: i64,
    pub ts_ms: i64,
    pub stream: String,
    pub line: String,
}

#[cfg(feature = "ssr")]
pub mod server {
    //! Conversions from the core's records, shared by the server functions and the REST API.
    use super::*;
    use atelier_core::artifacts::{self, Artifact};
    use atelier_core::authz::Principal;
    use atelier_core::compute::jobs::{self, Job};
    use atelier_core::db::Db;
    use atelier_core::CoreResult;

    pub fn artifact_view(a: Artifact, job: Option<String>) -> ArtifactView {
        ArtifactView {
            id: a.id,
            name: a.name,
            kind: a.kind,
            sha256: a.sha256,
            size: a.size,
            job,
            created_by: a.created_by,
            created_at: a.created_at,
        }
    }

    /// The view of a job; `names` maps node ids to names ([`jobs::node_names`]).
    pub async fn view(
        db: &Db,
        names: &std::collections::HashMap<String, String>,
        job: Job,
        detailed: bool,
    ) -> CoreResult<TrainingJobView> {
        let wait_reason = if detailed { jobs::wait_reason(db, &job).await? } else { None };
        let final_metrics = jobs::metrics(db, &job)
            .await?
            .into_iter()
            .filter_map(|(name, points)| points.last().map(|p| (name, p.value)))
            .collect();
        Ok(TrainingJobView {
            spec: job.spec()?,
            state: job.job_state(),
            node: job.node_id.as_ref().and_then(|id| names.get(id).cloned()),
            gpus: serde_json::from_str(&job.gpu_indices).unwrap_or_default(),
            stop_requested: job.stop_requested_at.is_some(),
            id: job.id,
            name: job.name,
            message: job.message,
            created_by: job.created_by,
            created_at_ms: job.created_at,
            attempt: job.attempt,
            training_started_at: job.training_started_at,
            ended_at: job.ended_at,
            wait_reason,
            final_metrics,
        })
    }

    pub async fn list(db: &Db, p: &Principal, filter: &jobs::ListFilter) -> CoreResult<Vec<TrainingJobView>> {
        let names = jobs::node_names(db).await?;
        let mut out = Vec::new();
        for job in jobs::list(db, p, filter).await? {
            out.push(view(db, &names, job, false).await?);
        }
        Ok(out)
    }

    pub async fn detail(db: &Db, p: &Principal, name: &str) -> CoreResult<TrainingJobDetail> {
        let job = jobs::get(db, p, name).await?;
        let names = jobs::node_names(db).await?;
        let events = jobs::events(db, &job)
            .await?
            .into_iter()
            .map(|e| JobEventView {
                ts_ms: e.ts_ms,
                attempt: e.attempt,
                state: e.state,
                message: e.message,
                node: e.node_id.and_then(|id| names.get(&id).cloned()),
            })
            .collect();
        let artifacts = artifacts::for_job(db, &job.id)
            .await?
            .into_iter()
            .map(|a| artifact_view(a, Some(job.name.clone())))
            .collect();
        let spec = job.spec()?;
        let mut inputs: BTreeMap<String, Vec<ArtifactView>> = BTreeMap::new();
        let mut add = |key: String, a: CoreResult<Artifact>| {
            if let Ok(a) = a {
                inputs.entry(key).or_default().push(artifact_view(a, None));
            }
        };
        if let Algorithm::Script { code, .. } = &spec.algorithm {
            for id in code {
                add("code".into(), artifacts::get(db, id).await);
            }
        }
        let named: Vec<String> = spec.channels.iter().filter_map(|c| c.dataset.clone()).collect();
        let deleted = atelier_core::datasets::deleted_among(db, &named).await?;
        let mut sources = Vec::new();
        for channel in &spec.channels {
            // A dataset or labeling channel can hold thousands of files: name its source
            // (the lineage) and show the first few (the manifest among them).
            let source = match (&channel.dataset, &channel.labeling_job) {
                (Some(d), _) if deleted.contains(d) => Some(format!("deleted dataset {d}")),
                (Some(d), _) => Some(format!("dataset {d}")),
                (None, Some(j)) => Some(format!("labeling job {j}")),
                (None, None) => None,
            };
            let key = match &source {
                Some(s) => format!("{} ({s}, {} files)", channel.name, channel.artifacts.len()),
                None => channel.name.clone(),
            };
            if source.is_some() {
                sources.push(key.clone());
            }
            for id in channel.artifacts.iter().take(if source.is_some() { 20 } else { usize::MAX }) {
                add(key.clone(), artifacts::get(db, id).await);
            }
        }
        // A source is listed even when none of its files is left (a deleted dataset's).
        for key in sources {
            inputs.entry(key).or_default();
        }
        Ok(TrainingJobDetail { job: view(db, &names, job, true).await?, events, artifacts, inputs })
    }

    pub fn log_view(row: jobs::LogRow) -> LogLineView {
        LogLineView { seq: row.seq, attempt: row.attempt, ts_ms: row.ts_ms, stream: row.stream, line: row.line }
    }

    /// Metric series of several jobs as chart series (x: the n-th report).
    pub async fn metric_chart(db: &Db, p: &Principal, names: &[String], only: Option<&str>) -> CoreResult<String> {
        use crate::charts::{line_chart, Series};
        let mut losses = Vec::new();
        let mut others = Vec::new();
        for name in names {
            let job = jobs::get(db, p, name).await?;
            for (metric, points) in jobs::metrics(db, &job).await? {
                if metric == "epoch" || metric == "samples_per_sec" || only.is_some_and(|o| o != metric) {
                    continue;
                }
                let label = if names.len() > 1 { format!("{name}: {metric}") } else { metric.clone() };
                let series = Series {
                    label,
                    points: points.iter().enumerate().map(|(i, p)| ((i + 1) as f64, p.value)).collect(),
                };
                if metric.contains("loss") || metric.contains("rmse") {
                    losses.push(series);
                } else {
                    others.push(series);
                }
            }
        }
        let mut svg = String::new();
        if !losses.is_empty() {
            svg.push_str(&line_chart("Loss", "step (n-th report; epochs for built-ins)", "loss", &losses, None));
        }
        if !others.is_empty() {
            svg.push_str(&line_chart("Metrics", "step (n-th report; epochs for built-ins)", "value", &others, None));
        }
        Ok(svg)
    }
}

#[server]
pub async fn list_training_jobs(state: String, search: String) -> Result<Vec<TrainingJobView>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let filter = atelier_core::compute::jobs::ListFilter {
        state: JobState::parse(&state),
        created_by: None,
        name_contains: Some(search),
    };
    Ok(server::list(&db, &p, &filter).await?)
}

#[server]
pub async fn get_training_job(name: String) -> Result<TrainingJobDetail, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(server::detail(&db, &p, &name).await?)
}

#[server]
pub async fn training_logs(name: String, after: i64) -> Result<Vec<LogLineView>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let job = atelier_core::compute::jobs::get(&db, &p, &name).await?;
    let rows = if after <= 0 {
        atelier_core::compute::jobs::log_tail(&db, &job, 500).await?
    } else {
        atelier_core::compute::jobs::logs(&db, &job, after, 1000).await?
    };
    Ok(rows.into_iter().map(server::log_view).collect())
}

#[server]
pub async fn training_chart(names: Vec<String>) -> Result<String, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(server::metric_chart(&db, &p, &names, None).await?)
}

#[server]
pub async fn stop_training_job(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::compute::jobs::stop(&db, &p, &name).await?;
    if let Some(work) = use_context::<WorkSignal>() {
        (work.0)();
    }
    Ok(())
}

/// Wakes waiting agents (the server provides it; submissions and stops call it).
#[derive(Clone)]
pub struct WorkSignal(pub std::sync::Arc<dyn Fn() + Send + Sync>);

/// The create form's text fields (name, hyperparameters, metric definitions…) are
/// small: these bound what is held in memory while the form is read.
#[cfg(feature = "ssr")]
const MAX_FORM_FIELD_BYTES: usize = 64 * 1024;
#[cfg(feature = "ssr")]
const MAX_FORM_TEXT_BYTES: usize = 256 * 1024;
#[cfg(feature = "ssr")]
const MAX_FORM_FIELDS: usize = 64;

/// Creates a training job from the create form: multipart, with the files to upload.
#[server(input = MultipartFormData)]
pub async fn create_training_job(data: MultipartData) -> Result<String, AppError> {
    use crate::error::ErrorKind;
    let (db, p) = crate::context::db_and_principal()?;
    let store = crate::context::artifacts()?;
    let max = use_context::<UploadLimit>().map(|l| l.0).unwrap_or(u64::MAX);
    // Authorized before a byte of the form is read: the form may carry gigabytes.
    atelier_core::authz::authorize(
        &p,
        atelier_core::authz::Action::CreateTrainingJob,
        &atelier_core::authz::Resource::new("atelier:training:job/*"),
    )?;
    let mut multipart = data.into_inner().ok_or_else(|| AppError::new(ErrorKind::Internal, "no form data"))?;
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stored: Vec<String> = Vec::new();
    let mut text_bytes = 0usize;
    let outcome: Result<String, AppError> = async {
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| AppError::new(ErrorKind::Invalid, format!("the form could not be read: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_string();
            match field.file_name().map(str::to_string) {
                Some(file_name) if !file_name.is_empty() => {
                    let new = atelier_core::artifacts::NewArtifact {
                        name: &file_name,
                        kind: atelier_core::artifacts::kind::UPLOAD,
                        job_id: None,
                        created_by: &p.user.username,
                    };
                    let artifact = store.put(&db, new, field, max).await?;
                    stored.push(artifact.id.clone());
                    files.entry(name).or_default().push(artifact.id);
                }
                Some(_) => {} // an empty file input
                None => {
                    // Text fields are small; the upload limit is for files only.
                    let mut field = field;
                    let mut bytes = Vec::new();
                    while let Some(chunk) = field
                        .chunk()
                        .await
                        .map_err(|e| AppError::new(ErrorKind::Invalid, format!("field {name}: {e}")))?
                    {
                        bytes.extend_from_slice(&chunk);
                        if bytes.len() > MAX_FORM_FIELD_BYTES {
                            return Err(AppError::new(
                                ErrorKind::Invalid,
                                format!("field {name} is longer than {} KiB", MAX_FORM_FIELD_BYTES / 1024),
                            ));
                        }
                    }
                    text_bytes += bytes.len();
                    if text_bytes > MAX_FORM_TEXT_BYTES || fields.len() >= MAX_FORM_FIELDS {
                        return Err(AppError::new(
                            ErrorKind::Invalid,
                            format!(
                                "the form's text fields are too many or too long (at most {MAX_FORM_FIELDS} \
                                 fields, {} KiB in all)",
                                MAX_FORM_TEXT_BYTES / 1024
                            ),
                        ));
                    }
                    fields.insert(name, String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        let (name, spec) = spec_from_form(&fields, &files)
            .map_err(|(field, m)| AppError { field: Some(field.into()), ..AppError::new(ErrorKind::Invalid, m) })?;
        let job = atelier_core::compute::jobs::submit(&db, &store, &p, &name, spec).await?;
        if let Some(work) = use_context::<WorkSignal>() {
            (work.0)();
        }
        Ok(job.name)
    }
    .await;
    if outcome.is_err() {
        // Nothing half-made is left behind: the uploads of a refused job go.
        for id in stored {
            let _ = store.delete(&db, &id).await;
        }
    }
    outcome
}

/// The largest upload, provided by the server.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimit(pub u64);

/// Builds the job's name and spec from the create form's fields and uploaded files.
pub fn spec_from_form(
    fields: &BTreeMap<String, String>,
    files: &BTreeMap<String, Vec<String>>,
) -> Result<(String, JobSpec), (&'static str, String)> {
    let get = |k: &str| fields.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let number = |k: &'static str, default: u64| -> Result<u64, (&'static str, String)> {
        let v = get(k);
        if v.is_empty() {
            return Ok(default);
        }
        v.parse().map_err(|_| (k, format!("{k} must be a whole number, got \"{v}\"")))
    };
    let hyperparameters: BTreeMap<String, String> = {
        let raw = get("hyperparameters");
        if raw.is_empty() {
            BTreeMap::new()
        } else {
            let value: serde_json::Value = serde_json::from_str(&raw)
                .map_err(|e| ("hyperparameters", format!("hyperparameters are not valid JSON: {e}")))?;
            let object = value
                .as_object()
                .ok_or(("hyperparameters", "hyperparameters must be a JSON object of name: value".to_string()))?;
            object
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        }
    };
    let mut metric_definitions = Vec::new();
    for line in get("metric_definitions").lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, regex) = line
            .split_once(':')
            .ok_or(("metric_definitions", format!("\"{line}\": write one metric per line as name: regex")))?;
        metric_definitions
            .push(atelier_protocol::MetricDefinition { name: name.trim().into(), regex: regex.trim().into() });
    }
    let mut labels = BTreeMap::new();
    for pair in get("labels").split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or(("labels", format!("\"{pair}\": labels are key=value")))?;
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    let resources = atelier_protocol::Resources {
        cpus: number("cpus", 1)? as u32,
        memory_mb: number("memory_mb", 1024)?,
        gpus: number("gpus", 0)? as u32,
        labels,
    };
    let mut channels = Vec::new();
    for channel in ["train", "validation"] {
        let artifacts = files.get(&format!("{channel}_files")).cloned().unwrap_or_default();
        // The choice names a dataset, or a labeling job's output as `labeling:<job>`.
        let choice = get(&format!("{channel}_dataset"));
        let (dataset, labeling_job) = match choice.strip_prefix("labeling:") {
            Some(job) => (None, Some(job.to_string())),
            None => (Some(choice).filter(|d| !d.is_empty()), None),
        };
        if !artifacts.is_empty() || dataset.is_some() || labeling_job.is_some() {
            channels.push(atelier_protocol::Channel { name: channel.into(), artifacts, dataset, labeling_job });
        }
    }
    let algorithm = match get("algorithm").as_str() {
        "script" => Algorithm::Script {
            entry_point: get("entry_point"),
            code: files.get("code_files").cloned().unwrap_or_default(),
            requirements: Some(get("requirements")).filter(|r| !r.is_empty()),
        },
        builtin => Algorithm::Builtin { name: builtin.strip_prefix("builtin:").unwrap_or(builtin).to_string() },
    };
    let spec = JobSpec {
        algorithm,
        hyperparameters,
        channels,
        metric_definitions,
        resources,
        max_runtime_secs: number("max_runtime_secs", 86_400)?,
        priority: get("priority").parse().unwrap_or(0),
    };
    Ok((get("name"), spec))
}

fn state_class(state: JobState) -> String {
    format!("badge state-{}", state.as_str().to_lowercase())
}

fn when_ms(ms: i64) -> String {
    format_time(ms / 1000)
}

/// Training jobs: filters, the list, and picking jobs to compare.
#[component]
pub fn TrainingJobsPage() -> impl IntoView {
    let query = use_query_map();
    let state = move || query.read().get("state").unwrap_or_default();
    let search = move || query.read().get("q").unwrap_or_default();
    let jobs = Resource::new(move || (state(), search()), |(s, q)| list_training_jobs(s, q));
    let me = expect_context::<crate::CurrentUser>();
    let can_create = move || crate::auth::can(me, crate::auth::Can::CreateTrainingJob);
    view! {
        <h1>"Training jobs"</h1>
        <Transition fallback=|| ()>
            <Show when=can_create>
                <p><a class="button primary" href="/training/new">"New training job"</a></p>
            </Show>
        </Transition>
        <form method="get" class="filters">
            <label for="filter-state">"State"</label>
            <select id="filter-state" name="state">
                <option value="">"any"</option>
                {JobState::ALL.into_iter().map(|s| view! {
                    <option value=s.as_str() selected=move || state() == s.as_str()>{s.as_str()}</option>
                }).collect_view()}
            </select>
            <label for="filter-q">"Name contains"</label>
            <input id="filter-q" name="q" type="search" prop:value=search/>
            <button type="submit">"Filter"</button>
        </form>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match jobs.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No training jobs."</p> }.into_any(),
                    Ok(list) => view! {
                        <form method="get" action="/training/compare">
                        <table class="table">
                            <thead><tr><th>"Compare"</th><th>"Name"</th><th>"State"</th><th>"Algorithm"</th><th>"Node"</th><th>"Created by"</th><th>"Created"</th><th>"Final metrics"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|j| {
                                    let href = format!("/training/{}", j.name);
                                    let algorithm = match &j.spec.algorithm {
                                        Algorithm::Script { entry_point, .. } => format!("script: {entry_point}"),
                                        Algorithm::Builtin { name } => format!("built-in: {name}"),
                                    };
                                    let metrics = j.final_metrics.iter().filter(|(k, _)| k.as_str() != "epoch")
                                        .map(|(k, v)| format!("{k}={v:.4}")).collect::<Vec<_>>().join(", ");
                                    view! {
                                        <tr data-job=j.name.clone()>
                                            <td><input type="checkbox" name="jobs" value=j.name.clone() aria-label=format!("compare {}", j.name)/></td>
                                            <td><a href=href>{j.name.clone()}</a></td>
                                            <td><span class=state_class(j.state)>{j.state.as_str()}</span></td>
                                            <td>{algorithm}</td>
                                            <td>{j.node.clone().unwrap_or_default()}</td>
                                            <td>{j.created_by.clone()}</td>
                                            <td>{when_ms(j.created_at_ms)}</td>
                                            <td>{metrics}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                        <button type="submit">"Compare selected"</button>
                        </form>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The create form. `?clone=NAME` pre-fills it from an earlier job.
#[component]
pub fn NewTrainingJobPage() -> impl IntoView {
    let query = use_query_map();
    let clone_of = move || query.read().get("clone").unwrap_or_default();
    let source = Resource::new(clone_of, |name| async move {
        if name.is_empty() {
            Ok(None)
        } else {
            get_training_job(name).await.map(Some)
        }
    });
    view! {
        <h1>"New training job"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let source = source.await.ok().flatten().map(|d| d.job);
                view! { <TrainingJobForm source/> }
            })}
        </Transition>
    }
}

#[component]
fn TrainingJobForm(source: Option<TrainingJobView>) -> impl IntoView {
    use leptos::wasm_bindgen::JsCast;
    let create = Action::new_local(|data: &leptos::web_sys::FormData| create_training_job(data.clone().into()));
    let error = Signal::derive(move || create.value().get().and_then(Result::err));
    let datasets = Resource::new(|| (), |_| crate::datasets::list_datasets());
    let labeling = Resource::new(|| (), |_| crate::labeling::list_labeling_jobs());
    let spec = source.as_ref().map(|s| s.spec.clone());
    let initial_algorithm = match spec.as_ref().map(|s| &s.algorithm) {
        Some(Algorithm::Script { .. }) => "script".to_string(),
        Some(Algorithm::Builtin { name }) => format!("builtin:{name}"),
        None => "builtin:tabular".to_string(),
    };
    let algorithm = RwSignal::new(initial_algorithm);
    let is_script = move || algorithm.get() == "script";
    let defaults = move || {
        let name = algorithm.get();
        let name = name.strip_prefix("builtin:").unwrap_or("");
        atelier_protocol::builtin(name)
            .map(|a| {
                let map: BTreeMap<&str, &str> = a.hyperparameters.iter().map(|h| (h.name, h.default)).collect();
                serde_json::to_string_pretty(&map).unwrap_or_default()
            })
            .unwrap_or_else(|| "{}".into())
    };
    let hyperparameters = RwSignal::new(
        spec.as_ref()
            .map(|s| serde_json::to_string_pretty(&s.hyperparameters).unwrap_or_default())
            .unwrap_or_else(defaults),
    );
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(name)) = create.value().get() {
            navigate(&format!("/training/{name}"), Default::default());
        }
    });
    let clone_name = source.as_ref().map(|s| format!("{}-clone", s.name)).unwrap_or_default();
    let entry_point = match spec.as_ref().map(|s| &s.algorithm) {
        Some(Algorithm::Script { entry_point, .. }) => entry_point.clone(),
        _ => "train.py".into(),
    };
    let metrics_text = spec
        .as_ref()
        .map(|s| s.metric_definitions.iter().map(|m| format!("{}: {}", m.name, m.regex)).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    let r = spec.as_ref().map(|s| s.resources.clone()).unwrap_or_default();
    let labels = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
    let max_runtime = spec.as_ref().map(|s| s.max_runtime_secs).unwrap_or(86_400);
    let priority = spec.as_ref().map(|s| s.priority).unwrap_or(0);
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(form) = ev.target().and_then(|t| t.dyn_into::<leptos::web_sys::HtmlFormElement>().ok()) else {
            return;
        };
        if let Ok(data) = leptos::web_sys::FormData::new_with_form(&form) {
            create.dispatch_local(data);
        }
    };
    view! {
        <form class="card form" on:submit=on_submit data-testid="training-form">
            {source.as_ref().map(|s| view! {
                <p class="muted">"Cloned from " {s.name.clone()} ". Files are not carried over: choose them again."</p>
            })}
            <label for="job-name">"Name"</label>
            <input id="job-name" name="name" type="text" required maxlength="128" value=clone_name/>
            <label for="job-algorithm">"Algorithm"</label>
            <select id="job-algorithm" name="algorithm" on:change=move |ev| {
                algorithm.set(event_target_value(&ev));
                hyperparameters.set(defaults());
            }>
                {BUILTIN_ALGORITHMS.iter().map(|a| {
                    let value = format!("builtin:{}", a.name);
                    let selected = algorithm.get_untracked() == value;
                    view! { <option value=value selected=selected>{format!("Built-in: {}", a.title)}</option> }
                }).collect_view()}
                <option value="script" selected=is_script>"Script mode (your own Python script)"</option>
            </select>
            <Show when=is_script>
                <label for="job-code">"Code files (the entry point and what it imports)"</label>
                <input id="job-code" name="code_files" type="file" multiple/>
                <label for="job-entry">"Entry point"</label>
                <input id="job-entry" name="entry_point" type="text" value=entry_point.clone()/>
                <label for="job-requirements">"Requirements file (optional, one of the code files)"</label>
                <input id="job-requirements" name="requirements" type="text" placeholder="requirements.txt"/>
                <label for="job-metrics">"Metric definitions (one per line, name: regex; the first group is the value)"</label>
                <textarea id="job-metrics" name="metric_definitions" rows="3" placeholder="loss: loss=([0-9.]+)">{metrics_text.clone()}</textarea>
            </Show>
            <label for="job-train">"Training data (channel train)"</label>
            <input id="job-train" name="train_files" type="file" multiple/>
            <DatasetChoice id="job-train-dataset" name="train_dataset" label="…and/or a dataset or labeling output for channel train" datasets labeling/>
            <label for="job-validation">"Validation data (channel validation, optional)"</label>
            <input id="job-validation" name="validation_files" type="file" multiple/>
            <DatasetChoice id="job-validation-dataset" name="validation_dataset" label="…and/or a dataset or labeling output for channel validation" datasets labeling/>
            <label for="job-hps">"Hyperparameters (JSON)"</label>
            <textarea id="job-hps" name="hyperparameters" rows="8" prop:value=move || hyperparameters.get()
                on:input=move |ev| hyperparameters.set(event_target_value(&ev))></textarea>
            <HyperparameterHelp algorithm/>
            <fieldset class="row">
                <legend>"Resources"</legend>
                <label>"CPUs" <input name="cpus" type="number" min="1" value=r.cpus.to_string()/></label>
                <label>"Memory (MB)" <input name="memory_mb" type="number" min="1" value=r.memory_mb.to_string()/></label>
                <label>"GPUs" <input name="gpus" type="number" min="0" value=r.gpus.to_string()/></label>
                <label>"Node labels" <input name="labels" type="text" placeholder="zone=a" value=labels/></label>
                <label>"Max runtime (s)" <input name="max_runtime_secs" type="number" min="1" value=max_runtime.to_string()/></label>
                <label>"Priority" <input name="priority" type="number" value=priority.to_string()/></label>
            </fieldset>
            // Every refusal is shown here, whichever field it names: the form has
            // one place to look.
            {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="form-error">{e.message}</p> })}
            <button type="submit" class="primary" disabled=move || create.pending().get()>
                {move || if create.pending().get() { "Uploading…" } else { "Start training job" }}
            </button>
        </form>
    }
}

/// A choice of dataset for a channel (its items become the channel's files, with a
/// manifest listing them).
#[component]
fn DatasetChoice(
    id: &'static str,
    name: &'static str,
    label: &'static str,
    datasets: Resource<Result<Vec<crate::datasets::DatasetInfo>, AppError>>,
    labeling: Resource<Result<Vec<atelier_protocol::labeling::LabelingJob>, AppError>>,
) -> impl IntoView {
    view! {
        <label for=id>{label}</label>
        <select id=id name=name>
            <option value="">"none"</option>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    datasets.await.unwrap_or_default().into_iter().map(|d| {
                        let text = format!("{} ({}, {} items)", d.name, d.kind, d.item_count);
                        view! { <option value=d.name>{text}</option> }
                    }).collect_view()
                })}
                {move || Suspend::new(async move {
                    labeling.await.unwrap_or_default().into_iter().filter(|j| j.status != "InProgress").map(|j| {
                        let text = format!("{} (labeling job output, {} items)", j.name, j.item_count);
                        view! { <option value=format!("labeling:{}", j.name)>{text}</option> }
                    }).collect_view()
                })}
            </Transition>
        </select>
    }
}

#[component]
fn HyperparameterHelp(algorithm: RwSignal<String>) -> impl IntoView {
    move || {
        let name = algorithm.get();
        atelier_protocol::builtin(name.strip_prefix("builtin:").unwrap_or("")).map(|a| {
            view! {
                <details class="help">
                    <summary>"What the hyperparameters mean"</summary>
                    <p>{a.description}</p>
                    <table class="table">
                        <thead><tr><th>"Name"</th><th>"Default"</th><th>"Meaning"</th></tr></thead>
                        <tbody>
                            {a.hyperparameters.iter().map(|h| view! {
                                <tr><td><code>{h.name}</code></td><td>{h.default}</td><td>{h.description}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                </details>
            }
        })
    }
}

/// One training job: status, live log tail and charts, artifacts, lineage.
#[component]
pub fn TrainingJobPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let stop = ServerAction::<StopTrainingJob>::new();
    let tick = RwSignal::new(0u32);
    let detail = Resource::new(move || (name(), stop.version().get(), tick.get()), |(n, _, _)| get_training_job(n));
    let ended_seen = StoredValue::new(false);
    Effect::new(move |_| {
        // A job that ended does not change: after one last refresh of the log and the
        // charts, the page stops asking (and stops redrawing the forms on it, such as
        // "Register model").
        let follow = move || {
            let ended =
                detail.try_get_untracked().flatten().and_then(Result::ok).is_some_and(|d| d.job.state.is_terminal());
            if !ended {
                tick.update(|t| *t += 1);
            } else if !ended_seen.get_value() {
                ended_seen.set_value(true);
                tick.update(|t| *t = (*t / 3 + 1) * 3);
            }
        };
        let handle = set_interval_with_handle(follow, std::time::Duration::from_secs(2));
        on_cleanup(move || {
            if let Ok(h) = handle {
                h.clear();
            }
        });
    });
    let chart = Resource::new(move || (name(), tick.get() / 3), |(n, _)| training_chart(vec![n]));
    let me = expect_context::<crate::CurrentUser>();
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(d) => {
                        // Awaited here, not read: a directly loaded page hydrates with the
                        // same answer the server rendered with.
                        let me = me.0.await.ok();
                        view! { <JobSummary detail=d stop me/> }.into_any()
                    }
                }
            })}
        </Transition>
        <h2>"Metrics"</h2>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match chart.await {
                    Ok(svg) if !svg.is_empty() => view! { <div class="chart" data-testid="metric-chart" inner_html=svg></div> }.into_any(),
                    Ok(_) => view! { <p class="muted">"No metrics reported yet."</p> }.into_any(),
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                }
            })}
        </Transition>
        <h2>"Log"</h2>
        <LogTail name=Signal::derive(name) tick/>
    }
}

/// What stopping a job means, for the confirmation.
fn stop_consequence(state: JobState, node: Option<&str>) -> String {
    match (state, node) {
        (JobState::Pending, _) | (_, None) => "It leaves the queue and will not run; Clone starts it again.".into(),
        (_, Some(node)) => format!(
            "Its process on {node} is ended where it is and no model is produced; it cannot be resumed \
             (Clone starts it again)."
        ),
    }
}

#[component]
fn JobSummary(
    detail: TrainingJobDetail,
    stop: ServerAction<StopTrainingJob>,
    me: Option<crate::auth::Me>,
) -> impl IntoView {
    let j = detail.job;
    let active = !j.state.is_terminal();
    let may = |what| me.as_ref().is_some_and(|m| m.can.contains(&what));
    let can_stop = active && !j.stop_requested && may(crate::auth::Can::CreateTrainingJob);
    let register = (j.state == JobState::Completed && may(crate::auth::Can::RegisterModelVersion))
        .then(|| view! { <crate::models::RegisterFromJob job=j.name.clone()/> }.into_any());
    let clone_href = format!("/training/new?clone={}", j.name);
    let name = j.name.clone();
    let hps = j
        .spec
        .hyperparameters
        .iter()
        .map(|(k, v)| view! { <tr><td><code>{k.clone()}</code></td><td>{v.clone()}</td></tr> })
        .collect_view();
    let r = &j.spec.resources;
    let resources = format!(
        "{} CPUs, {} MB memory, {} GPUs{}",
        r.cpus,
        r.memory_mb,
        r.gpus,
        if r.labels.is_empty() { String::new() } else { format!(", labels {:?}", r.labels) }
    );
    let algorithm = match &j.spec.algorithm {
        Algorithm::Script { entry_point, requirements, .. } => format!(
            "script mode: {entry_point}{}",
            requirements.as_ref().map(|r| format!(" (requirements {r})")).unwrap_or_default()
        ),
        Algorithm::Builtin { name } => format!("built-in algorithm: {name}"),
    };
    view! {
        <h1>{j.name.clone()} " " <span class=state_class(j.state) data-testid="job-state">{j.state.as_str()}</span></h1>
        {(!j.message.is_empty()).then(|| view! { <p class="message" data-testid="job-message">{j.message.clone()}</p> })}
        {j.wait_reason.clone().map(|w| view! { <p class="muted" data-testid="wait-reason">"Waiting: " {w}</p> })}
        // A <div>, not a <p>: a <form> inside a <p> closes it in the browser's parser,
        // and hydration then finds another tree than the server rendered.
        <div class="actions">
            <a class="button" href=clone_href>"Clone"</a>
            {can_stop.then(|| {
                let target = name.clone();
                view! {
                    <crate::confirm::ConfirmButton
                        label="Stop"
                        title=format!("Stop training job {name}?")
                        consequence=stop_consequence(j.state, j.node.as_deref())
                        confirm="Stop training job"
                        testid="stop-job"
                        on_confirm=Callback::new(move |_| { stop.dispatch(StopTrainingJob { name: target.clone() }); })
                    />
                }
            })}
        </div>
        <dl class="facts">
            <dt>"Algorithm"</dt><dd>{algorithm}</dd>
            <dt>"Resources"</dt><dd>{resources}</dd>
            <dt>"Node"</dt><dd>{j.node.clone().unwrap_or_else(|| "not placed".into())}
                {(!j.gpus.is_empty()).then(|| format!(" (GPUs {:?})", j.gpus))}</dd>
            <dt>"Attempt"</dt><dd>{j.attempt}</dd>
            <dt>"Created"</dt><dd>{when_ms(j.created_at_ms)} " by " {j.created_by.clone()}</dd>
            <dt>"Priority"</dt><dd>{j.spec.priority}</dd>
        </dl>
        <h2>"Hyperparameters"</h2>
        <table class="table"><tbody>{hps}</tbody></table>
        <h2>"Inputs (lineage)"</h2>
        <ul>
            {detail.inputs.into_iter().map(|(channel, files)| view! {
                <li><strong>{channel}</strong> ": "
                    {files.into_iter().map(|f| format!("{} ({} bytes, sha256 {}…)", f.name, f.size, &f.sha256[..12.min(f.sha256.len())])).collect::<Vec<_>>().join(", ")}
                </li>
            }).collect_view()}
        </ul>
        <h2>"Artifacts"</h2>
        {if detail.artifacts.is_empty() {
            view! { <p class="muted">"None yet."</p> }.into_any()
        } else {
            view! {
                <table class="table" data-testid="artifacts">
                    <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Size"</th><th>"SHA-256"</th></tr></thead>
                    <tbody>
                        {detail.artifacts.into_iter().map(|a| view! {
                            <tr>
                                <td><a href=format!("/api/v1/artifacts/{}/content", a.id) download=a.name.clone()>{a.name.clone()}</a></td>
                                <td>{a.kind}</td><td>{a.size}</td><td><code>{a.sha256}</code></td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }}
        {register}
        <h2>"Timeline"</h2>
        <table class="table" data-testid="timeline">
            <thead><tr><th>"When"</th><th>"Attempt"</th><th>"State"</th><th>"Node"</th><th>"Note"</th></tr></thead>
            <tbody>
                {detail.events.into_iter().map(|e| view! {
                    <tr><td>{when_ms(e.ts_ms)}</td><td>{e.attempt}</td><td>{e.state}</td><td>{e.node.unwrap_or_default()}</td><td>{e.message}</td></tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// The log, following new lines as they arrive.
#[component]
fn LogTail(name: Signal<String>, tick: RwSignal<u32>) -> impl IntoView {
    let lines = RwSignal::new(Vec::<LogLineView>::new());
    let last = RwSignal::new(0i64);
    let fetch = Resource::new(move || (name.get(), tick.get()), move |(n, _)| training_logs(n, last.get_untracked()));
    Effect::new(move |_| {
        if let Some(Ok(new)) = fetch.get() {
            if let Some(l) = new.last() {
                last.set(l.seq);
                lines.update(|v| {
                    let known = v.last().map(|x| x.seq).unwrap_or(0);
                    v.extend(new.into_iter().filter(|l| l.seq > known));
                    let excess = v.len().saturating_sub(2000);
                    v.drain(..excess);
                });
            }
        }
    });
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                // The first render (also on the server) shows the tail as fetched.
                let first = fetch.await.unwrap_or_default();
                let shown = if lines.with_untracked(Vec::is_empty) { first } else { Vec::new() };
                view! {
                    <pre class="log" data-testid="job-log">
                        {move || {
                            let current = lines.get();
                            let source = if current.is_empty() { shown.clone() } else { current };
                            source.into_iter().map(|l| {
                                let class = format!("log-{}", l.stream);
                                view! { <span class=class>{l.line}"\n"</span> }
                            }).collect_view()
                        }}
                    </pre>
                }
            })}
        </Transition>
    }
}

/// Two or more jobs side by side: hyperparameters, final metrics, curves overlaid.
#[component]
pub fn CompareTrainingJobsPage() -> impl IntoView {
    let query = use_query_map();
    let names = move || query.read().get_all("jobs").unwrap_or_default();
    let jobs = Resource::new(names, |names| async move {
        let mut out = Vec::new();
        for n in names {
            out.push(get_training_job(n).await?.job);
        }
        Ok::<_, AppError>(out)
    });
    let chart = Resource::new(names, training_chart);
    view! {
        <h1>"Compare training jobs"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match jobs.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.len() < 2 => view! { <p class="muted">"Pick at least two jobs on the training jobs page."</p> }.into_any(),
                    Ok(list) => {
                        let mut hp_names: Vec<String> = list.iter().flat_map(|j| j.spec.hyperparameters.keys().cloned()).collect();
                        hp_names.sort();
                        hp_names.dedup();
                        let mut metric_names: Vec<String> = list.iter().flat_map(|j| j.final_metrics.keys().cloned()).collect();
                        metric_names.sort();
                        metric_names.dedup();
                        let header = list.iter().map(|j| view! { <th>{j.name.clone()}</th> }).collect_view();
                        let hp_rows = hp_names.into_iter().map(|h| {
                            let cells = list.iter().map(|j| view! { <td>{j.spec.hyperparameters.get(&h).cloned().unwrap_or_default()}</td> }).collect_view();
                            view! { <tr><th><code>{h.clone()}</code></th>{cells}</tr> }
                        }).collect_view();
                        let metric_rows = metric_names.into_iter().map(|m| {
                            let cells = list.iter().map(|j| view! { <td>{j.final_metrics.get(&m).map(|v| format!("{v:.4}")).unwrap_or_default()}</td> }).collect_view();
                            view! { <tr><th>{m.clone()}</th>{cells}</tr> }
                        }).collect_view();
                        let states = list.iter().map(|j| view! { <td>{j.state.as_str()}</td> }).collect_view();
                        view! {
                            <table class="table" data-testid="compare">
                                <thead><tr><th></th>{header}</tr></thead>
                                <tbody>
                                    <tr><th>"State"</th>{states}</tr>
                                    {hp_rows}
                                    {metric_rows}
                                </tbody>
                            </table>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                chart.await.ok().filter(|s| !s.is_empty()).map(|svg| view! { <div class="chart" inner_html=svg></div> })
            })}
        </Transition>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_gives_channels_from_files_and_datasets() {
        let fields: BTreeMap<String, String> = [
            ("name", "j"),
            ("algorithm", "builtin:text_classification"),
            ("hyperparameters", "{}"),
            ("train_dataset", "reviews"),
            ("validation_dataset", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let files: BTreeMap<String, Vec<String>> = [("validation_files".to_string(), vec!["a1".to_string()])].into();
        let (_, spec) = spec_from_form(&fields, &files).expect("a valid form");
        assert_eq!(
            spec.channels,
            vec![
                atelier_protocol::Channel {
                    name: "train".into(),
                    artifacts: vec![],
                    dataset: Some("reviews".into()),
                    labeling_job: None
                },
                atelier_protocol::Channel {
                    name: "validation".into(),
                    artifacts: vec!["a1".into()],
                    dataset: None,
                    labeling_job: None
                },
            ]
        );
    }
}
