//! Training jobs: submission and validation, the queue, leases to agents, status
//! reports, logs and metric series, stopping, and requeueing the work of lost agents.
//!
//! Every change of a job's lease is a conditional `UPDATE` on its current state and
//! attempt, so concurrent agents (or server replicas) can never both hold one job.

use std::collections::{BTreeMap, BTreeSet};

use atelier_protocol::{
    Algorithm, Assignment, HeartbeatRequest, HeartbeatResponse, InputFile, JobSpec, JobState, LogBatch, StatusReport,
    StopOrder, METRIC_LINE_PREFIX,
};
use serde::Serialize;

use super::nodes::{self, NodeCaller};
use super::placement;
use super::scheduler::{self, Capacity, Queued};
use super::{now_ms, Settings};
use crate::artifacts::{self, Artifact, ArtifactStore};
use crate::audit::{self, NewEvent};
use crate::authz::{authorize, Action, Principal, Resource};
use crate::datasets;
use crate::db::Db;
use crate::iam::store::validate_name;
use crate::labeling;
use crate::{now, CoreError, CoreResult};

/// A training job's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub spec: String,
    pub state: String,
    pub message: String,
    pub priority: i64,
    pub cpus: i64,
    pub memory_mb: i64,
    pub gpus: i64,
    pub created_by: String,
    pub created_at: i64,
    pub node_id: Option<String>,
    pub gpu_indices: String,
    pub attempt: i64,
    pub lease_expires_at: Option<i64>,
    pub training_started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub stop_requested_at: Option<i64>,
    pub stop_reason: Option<String>,
    pub checkpoint_artifact: Option<String>,
}

const JOB_COLUMNS: &str = "id, name, spec, state, message, priority, cpus, memory_mb, gpus, created_by, created_at, \
     node_id, gpu_indices, attempt, lease_expires_at, training_started_at, ended_at, stop_requested_at, \
     stop_reason, checkpoint_artifact";

/// States an agent holds a lease in.
pub(crate) const ACTIVE: &str = "('Starting', 'Downloading', 'Training', 'Uploading')";

impl Job {
    pub fn spec(&self) -> CoreResult<JobSpec> {
        serde_json::from_str(&self.spec).map_err(CoreError::internal)
    }
    pub fn job_state(&self) -> JobState {
        JobState::parse(&self.state).unwrap_or(JobState::Failed)
    }
}

/// The resource name of a training job.
pub fn resource(job: &Job) -> Resource {
    Resource::new(format!("atelier:training:job/{}", job.name)).created_by(job.created_by.clone())
}

fn resource_named(name: &str) -> Resource {
    Resource::new(format!("atelier:training:job/{name}"))
}

async fn find(db: &Db, name: &str) -> CoreResult<Option<Job>> {
    Ok(sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE name = $1"))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?)
}

pub(crate) async fn find_by_id(db: &Db, id: &str) -> CoreResult<Job> {
    let job: Option<Job> = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    job.ok_or(CoreError::NotFound("training job"))
}

async fn add_event(
    db: &Db,
    job: &str,
    attempt: i64,
    state: JobState,
    message: &str,
    node: Option<&str>,
) -> CoreResult<()> {
    sqlx::query(
        "INSERT INTO training_job_events (job_id, ts_ms, attempt, state, message, node_id) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job)
    .bind(now_ms())
    .bind(attempt)
    .bind(state.as_str())
    .bind(message)
    .bind(node)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Audits a change to a job made by the system or an agent (user changes are audited
/// by the request that made them).
async fn audit_system(db: &Db, principal: &str, action: &str, job_name: &str, summary: String) {
    let event = NewEvent {
        principal: principal.to_string(),
        action: action.to_string(),
        resource: format!("atelier:training:job/{job_name}"),
        allowed: true,
        summary,
        ..NewEvent::default()
    };
    audit::record_or_log(db, event).await;
}

fn validate_key(field: &'static str, what: &str, key: &str) -> CoreResult<()> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(
            field,
            format!("{what} \"{key}\" must be 1-64 letters, digits, _ or -, starting with a letter or _"),
        ))
    }
}

/// Compiles a metric definition's regex with a bounded size.
pub fn metric_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern).size_limit(1 << 20).build().map_err(|e| e.to_string())
}

async fn usable_artifact(db: &Db, p: &Principal, id: &str, what: &str) -> CoreResult<Artifact> {
    let artifact = artifacts::get(db, id)
        .await
        .map_err(|_| CoreError::invalid("spec", format!("{what}: no artifact with id {id}")))?;
    if artifact.kind != artifacts::kind::UPLOAD && artifact.kind != artifacts::kind::MODEL {
        return Err(CoreError::invalid("spec", format!("{what}: artifact {id} is a {}, not a file", artifact.kind)));
    }
    read_artifact_check(db, p, &artifact)
        .await
        .map_err(|_| CoreError::invalid("spec", format!("{what}: you may not read artifact {id}")))?;
    Ok(artifact)
}

/// Who may read an artifact: the readers of what owns it (see
/// [`artifacts::authorize_read`]). Kept under this name for the inputs a spec names.
pub async fn read_artifact_check(db: &Db, p: &Principal, artifact: &Artifact) -> CoreResult<()> {
    artifacts::authorize_read(db, p, artifact).await
}

/// The jobs whose spec names the artifact (as code or in a channel).
pub(crate) async fn naming_artifact(db: &Db, artifact_id: &str) -> CoreResult<Vec<Job>> {
    // Specs are JSON text; an id appears quoted. Artifact ids are server-made UUIDs, so
    // they hold no LIKE wildcards.
    let pattern = format!("%\"{artifact_id}\"%");
    Ok(sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE spec LIKE $1"))
        .bind(pattern)
        .fetch_all(&db.pool)
        .await?)
}

/// Checks a spec, filling in built-in defaults. Returns the spec to store.
async fn validate_spec(db: &Db, p: &Principal, mut spec: JobSpec) -> CoreResult<JobSpec> {
    let invalid = |m: String| CoreError::invalid("spec", m);
    for key in spec.hyperparameters.keys() {
        validate_key("spec", "hyperparameter", key)?;
    }
    for value in spec.hyperparameters.values() {
        if value.len() > 4096 {
            return Err(invalid("hyperparameter values must be at most 4096 bytes".into()));
        }
    }
    let mut names = BTreeSet::new();
    for channel in &spec.channels {
        validate_key("spec", "channel", &channel.name)?;
        if !names.insert(channel.name.clone()) {
            return Err(invalid(format!("channel \"{}\" is given twice", channel.name)));
        }
        if channel.dataset.is_some() && channel.labeling_job.is_some() {
            return Err(invalid(format!("channel \"{}\" names a dataset and a labeling job; give one", channel.name)));
        }
        if let Some(dataset) = &channel.dataset {
            let found = datasets::get(db, p, dataset)
                .await
                .map_err(|e| invalid(format!("channel \"{}\": dataset {dataset}: {e}", channel.name)))?;
            if found.item_count == 0 {
                return Err(invalid(format!("channel \"{}\": dataset {dataset} has no items", channel.name)));
            }
        } else if let Some(job) = &channel.labeling_job {
            let found = labeling::jobs::get_for(db, p, job, Action::GetLabelingJob)
                .await
                .map_err(|e| invalid(format!("channel \"{}\": labeling job {job}: {e}", channel.name)))?;
            if !labeling::output::has_output(&found) {
                return Err(invalid(format!(
                    "channel \"{}\": labeling job {job} is {}; its output exists once it is completed or stopped",
                    channel.name, found.status
                )));
            }
        } else if channel.artifacts.is_empty() {
            return Err(invalid(format!("channel \"{}\" is empty: give it at least one file", channel.name)));
        }
        let mut files = BTreeSet::new();
        for id in &channel.artifacts {
            let a = usable_artifact(db, p, id, &format!("channel \"{}\"", channel.name)).await?;
            if !files.insert(a.name.clone()) {
                return Err(invalid(format!("channel \"{}\" has two files named {}", channel.name, a.name)));
            }
        }
    }
    if spec.metric_definitions.len() > 50 {
        return Err(invalid("at most 50 metric definitions".into()));
    }
    for def in &spec.metric_definitions {
        validate_key("spec", "metric name", &def.name)?;
        metric_regex(&def.regex).map_err(|e| invalid(format!("metric {}: bad regex: {e}", def.name)))?;
    }
    let r = &spec.resources;
    if r.cpus == 0 || r.cpus > 1024 {
        return Err(invalid("resources.cpus must be 1-1024".into()));
    }
    if r.memory_mb == 0 || r.memory_mb > 16 * 1024 * 1024 {
        return Err(invalid("resources.memory_mb must be positive".into()));
    }
    if r.gpus > 64 {
        return Err(invalid("resources.gpus must be at most 64".into()));
    }
    if spec.max_runtime_secs == 0 || spec.max_runtime_secs > 30 * 86_400 {
        return Err(invalid("max_runtime_secs must be between 1 and 2592000 (30 days)".into()));
    }
    match &mut spec.algorithm {
        Algorithm::Script { entry_point, code, requirements } => {
            if entry_point.trim().is_empty() {
                return Err(invalid("the entry point is missing: name the script to run".into()));
            }
            if code.is_empty() {
                return Err(invalid("no code files: upload the entry point script".into()));
            }
            let mut code_names = BTreeSet::new();
            for id in code.iter() {
                code_names.insert(usable_artifact(db, p, id, "code").await?.name);
            }
            if !code_names.contains(entry_point.trim()) {
                return Err(invalid(format!(
                    "the entry point {entry_point} is not among the code files ({})",
                    code_names.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
            *entry_point = entry_point.trim().to_string();
            if let Some(req) = requirements.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
                if !code_names.contains(req) {
                    return Err(invalid(format!("the requirements file {req} is not among the code files")));
                }
            } else {
                *requirements = None;
            }
        }
        Algorithm::Builtin { name } => {
            let known: Vec<&str> = atelier_protocol::BUILTIN_ALGORITHMS.iter().map(|a| a.name).collect();
            let algorithm = atelier_protocol::builtin(name).ok_or_else(|| {
                invalid(format!("unknown built-in algorithm \"{name}\"; known: {}", known.join(", ")))
            })?;
            spec.hyperparameters =
                atelier_protocol::resolve_builtin_hyperparameters(algorithm, &spec.hyperparameters).map_err(invalid)?;
            let required = algorithm.channels[0];
            if !spec.channels.iter().any(|c| c.name == required) {
                return Err(invalid(format!("algorithm {} needs a \"{required}\" channel", algorithm.name)));
            }
            for c in &spec.channels {
                if !algorithm.channels.contains(&c.name.as_str()) {
                    return Err(invalid(format!(
                        "algorithm {} reads the channels {}, not \"{}\"",
                        algorithm.name,
                        algorithm.channels.join(", "),
                        c.name
                    )));
                }
            }
        }
    }
    Ok(spec)
}

/// Submits a training job.
pub async fn submit(db: &Db, store: &ArtifactStore, p: &Principal, name: &str, spec: JobSpec) -> CoreResult<Job> {
    let name = validate_name("name", name)?;
    authorize(p, Action::CreateTrainingJob, &resource_named(&name))?;
    let mut spec = validate_spec(db, p, spec).await?;
    let capacities: Vec<Capacity> = placement::capacities(db, true).await?.into_iter().map(|(_, c)| c).collect();
    if let Some(reason) = scheduler::never_fits(&spec.resources, &capacities) {
        return Err(CoreError::invalid("resources", reason));
    }
    // Last, when only a name clash can still refuse the job (leaving an unused
    // manifest behind): dataset channels get their files, a manifest written for each.
    for channel in spec.channels.iter_mut() {
        let files = match (&channel.dataset, &channel.labeling_job) {
            (Some(dataset), _) => Some(datasets::channel_files(db, store, p, dataset).await?),
            (None, Some(job)) => Some(labeling::output::channel_files(db, store, p, job).await?),
            (None, None) => None,
        };
        if let Some(files) = files {
            let mut names = BTreeSet::new();
            for id in &channel.artifacts {
                names.insert(artifacts::get(db, id).await?.name);
            }
            for (_, file) in &files {
                if !names.insert(file.clone()) {
                    return Err(CoreError::invalid(
                        "spec",
                        format!("channel \"{}\" would have two files named {file}", channel.name),
                    ));
                }
            }
            channel.artifacts.extend(files.into_iter().map(|(id, _)| id));
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO training_jobs (id, name, spec, state, message, priority, cpus, memory_mb, gpus, labels, created_by, created_at) \
         VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(&name)
    .bind(serde_json::to_string(&spec).map_err(CoreError::internal)?)
    .bind(JobState::Pending.as_str())
    .bind(i64::from(spec.priority))
    .bind(i64::from(spec.resources.cpus))
    .bind(spec.resources.memory_mb as i64)
    .bind(i64::from(spec.resources.gpus))
    .bind(serde_json::to_string(&spec.resources.labels).map_err(CoreError::internal)?)
    .bind(&p.user.username)
    .bind(now_ms())
    .execute(&db.pool)
    .await
    .map_err(|e| match CoreError::from(e) {
        CoreError::Conflict(_) => CoreError::Conflict(format!("a training job named {name} already exists")),
        other => other,
    })?;
    add_event(db, &id, 0, JobState::Pending, &format!("submitted by {}", p.user.username), None).await?;
    p.note_change(format!("started training job {name}"));
    find_by_id(db, &id).await
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<JobState>,
    pub created_by: Option<String>,
    pub name_contains: Option<String>,
}

/// Training jobs the principal may see, newest first (at most 500).
pub async fn list(db: &Db, p: &Principal, filter: &ListFilter) -> CoreResult<Vec<Job>> {
    authorize(p, Action::ListTrainingJobs, &Resource::new("atelier:training:job/*"))?;
    let jobs: Vec<Job> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM training_jobs \
         WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR created_by = $2) AND ($3 IS NULL OR LOWER(name) LIKE $3) \
         ORDER BY created_at DESC LIMIT 500"
    ))
    .bind(filter.state.map(JobState::as_str))
    .bind(filter.created_by.as_deref())
    .bind(
        filter
            .name_contains
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            // `_` is a LIKE wildcard (and allowed in names): the SQL may let a few extra
            // names through, which the exact check below removes.
            .map(|n| format!("%{}%", n.to_lowercase().replace('%', ""))),
    )
    .fetch_all(&db.pool)
    .await?;
    let needle = filter.name_contains.as_deref().map(|n| n.trim().to_lowercase()).filter(|n| !n.is_empty());
    Ok(jobs
        .into_iter()
        .filter(|j| needle.as_ref().is_none_or(|n| j.name.to_lowercase().contains(n)))
        .filter(|j| p.can(Action::GetTrainingJob, &resource(j)))
        .collect())
}

/// One training job.
pub async fn get(db: &Db, p: &Principal, name: &str) -> CoreResult<Job> {
    authorize(p, Action::GetTrainingJob, &resource_named(name))?;
    let job = find(db, name).await?.ok_or(CoreError::NotFound("training job"))?;
    authorize(p, Action::GetTrainingJob, &resource(&job))?;
    Ok(job)
}

/// Why a pending job has not been placed yet.
pub async fn wait_reason(db: &Db, job: &Job) -> CoreResult<Option<String>> {
    if job.job_state() != JobState::Pending {
        return Ok(None);
    }
    let spec = job.spec()?;
    let ready: Vec<Capacity> = placement::capacities(db, false).await?.into_iter().map(|(_, c)| c).collect();
    if let Some(reason) = scheduler::why_waiting(&spec.resources, &ready) {
        return Ok(Some(reason));
    }
    let (ahead,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM training_jobs WHERE state = 'Pending' AND id <> $1 \
         AND (priority > $2 OR (priority = $2 AND created_at <= $3))",
    )
    .bind(&job.id)
    .bind(job.priority)
    .bind(job.created_at)
    .fetch_one(&db.pool)
    .await?;
    Ok(Some(if ahead > 0 {
        format!("queued behind {ahead} job(s) of higher or equal priority")
    } else {
        "waiting for an agent to pick it up".into()
    }))
}

/// A state transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Event {
    pub ts_ms: i64,
    pub attempt: i64,
    pub state: String,
    pub message: String,
    pub node_id: Option<String>,
}

/// The job's transitions, oldest first.
pub async fn events(db: &Db, job: &Job) -> CoreResult<Vec<Event>> {
    Ok(sqlx::query_as(
        "SELECT ts_ms, attempt, state, message, node_id FROM training_job_events WHERE job_id = $1 ORDER BY ts_ms, attempt",
    )
    .bind(&job.id)
    .fetch_all(&db.pool)
    .await?)
}

/// A stored log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LogRow {
    pub seq: i64,
    pub attempt: i64,
    pub ts_ms: i64,
    pub stream: String,
    pub line: String,
}

/// Log lines after `after` (a sequence number), at most `limit`.
pub async fn logs(db: &Db, job: &Job, after: i64, limit: i64) -> CoreResult<Vec<LogRow>> {
    Ok(sqlx::query_as(
        "SELECT seq, attempt, ts_ms, stream, line FROM training_job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(&job.id)
    .bind(after)
    .bind(limit.clamp(1, 5000))
    .fetch_all(&db.pool)
    .await?)
}

/// The last `n` log lines.
pub async fn log_tail(db: &Db, job: &Job, n: i64) -> CoreResult<Vec<LogRow>> {
    let mut rows: Vec<LogRow> = sqlx::query_as(
        "SELECT seq, attempt, ts_ms, stream, line FROM training_job_logs WHERE job_id = $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind(&job.id)
    .bind(n.clamp(1, 5000))
    .fetch_all(&db.pool)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// One point of a metric series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub ts_ms: i64,
    pub value: f64,
}

/// Every metric series of the job, by name.
pub async fn metrics(db: &Db, job: &Job) -> CoreResult<BTreeMap<String, Vec<Point>>> {
    let rows: Vec<(String, i64, f64)> =
        sqlx::query_as("SELECT name, ts_ms, value FROM training_job_metrics WHERE job_id = $1 ORDER BY name, seq")
            .bind(&job.id)
            .fetch_all(&db.pool)
            .await?;
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for (name, ts_ms, value) in rows {
        out.entry(name).or_default().push(Point { ts_ms, value });
    }
    Ok(out)
}

/// Stops a job: a queued one at once, a running one through its agent (SIGTERM, then
/// SIGKILL after the grace period).
pub async fn stop(db: &Db, p: &Principal, name: &str) -> CoreResult<Job> {
    authorize(p, Action::StopTrainingJob, &resource_named(name))?;
    let job = find(db, name).await?.ok_or(CoreError::NotFound("training job"))?;
    authorize(p, Action::StopTrainingJob, &resource(&job))?;
    let reason = format!("stopped by {}", p.user.username);
    let state = job.job_state();
    if state.is_terminal() {
        return Err(CoreError::Conflict(format!("training job {name} is already {}", job.state)));
    }
    let stopped_now = sqlx::query(
        "UPDATE training_jobs SET state = 'Stopped', message = $1, ended_at = $2, stop_requested_at = $2, stop_reason = $1 \
         WHERE id = $3 AND state = 'Pending'",
    )
    .bind(&reason)
    .bind(now())
    .bind(&job.id)
    .execute(&db.pool)
    .await?;
    if stopped_now.rows_affected() == 1 {
        add_event(db, &job.id, job.attempt, JobState::Stopped, &reason, None).await?;
    } else {
        sqlx::query(&format!(
            "UPDATE training_jobs SET stop_requested_at = $1, stop_reason = $2 \
             WHERE id = $3 AND state IN {ACTIVE} AND stop_requested_at IS NULL"
        ))
        .bind(now())
        .bind(&reason)
        .bind(&job.id)
        .execute(&db.pool)
        .await?;
    }
    p.note_change(format!("stopped training job {name}"));
    find_by_id(db, &job.id).await
}

/// Names of the jobs a node is running.
pub async fn running_on(db: &Db, node_id: &str) -> CoreResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT name FROM training_jobs WHERE node_id = $1 AND state IN {ACTIVE} ORDER BY name"
    ))
    .bind(node_id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// Node names by id (for showing where jobs ran).
pub async fn node_names(db: &Db) -> CoreResult<std::collections::HashMap<String, String>> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, name FROM nodes").fetch_all(&db.pool).await?;
    Ok(rows.into_iter().collect())
}

/// Leases the next job that fits on the node, under the placement lock (see
/// [`placement::lock`]).
pub async fn lease(db: &Db, node: &NodeCaller, settings: &Settings) -> CoreResult<Lease> {
    // A full node (the steady state of a busy cluster) costs one aggregate query.
    let totals: Option<(i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT n.cpus, n.memory_mb, CAST(COALESCE(SUM(j.cpus), 0) AS BIGINT), \
         CAST(COALESCE(SUM(j.memory_mb), 0) AS BIGINT) FROM nodes n \
         LEFT JOIN training_jobs j ON j.node_id = n.id AND j.state IN {ACTIVE} \
         WHERE n.id = $1 AND n.status = 'Ready' GROUP BY n.cpus, n.memory_mb"
    ))
    .bind(&node.id)
    .fetch_optional(&db.pool)
    .await?;
    match totals {
        None => return Ok(Lease::Full),
        Some((cpus, memory, used_cpus, used_memory)) if used_cpus >= cpus || used_memory >= memory => {
            return Ok(Lease::Full)
        }
        Some(_) => {}
    }
    let _placing = placement::lock().await;
    let Some(capacity) = placement::node_capacity(db, &node.id).await? else {
        return Ok(Lease::Full);
    };
    let free_gpus = capacity.free_gpus().len() as i64;
    // Only jobs small enough for what is free, in queue order; the head is enough,
    // since labels are the only thing left to filter on.
    type Row = (String, i64, i64, i64, i64, i64, String);
    let pending: Vec<Row> = sqlx::query_as(
        "SELECT id, priority, created_at, cpus, memory_mb, gpus, labels FROM training_jobs \
         WHERE state = 'Pending' AND cpus <= $1 AND memory_mb <= $2 AND gpus <= $3 \
         ORDER BY priority DESC, created_at, id LIMIT 64",
    )
    .bind(i64::from(capacity.free_cpus()))
    .bind(capacity.free_memory_mb() as i64)
    .bind(free_gpus)
    .fetch_all(&db.pool)
    .await?;
    let mut queue: Vec<Queued> = pending
        .into_iter()
        .map(|(id, priority, created_at, cpus, memory_mb, gpus, labels)| Queued {
            id,
            priority,
            created_at,
            resources: atelier_protocol::Resources {
                cpus: cpus.max(0) as u32,
                memory_mb: memory_mb.max(0) as u64,
                gpus: gpus.max(0) as u32,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
            },
        })
        .collect();
    scheduler::queue_order(&mut queue);
    while let Some((job, gpus)) = scheduler::pick(&capacity, &queue) {
        let job_id = job.id.clone();
        let taken = sqlx::query(
            "UPDATE training_jobs SET state = 'Starting', message = '', node_id = $1, gpu_indices = $2, \
             attempt = attempt + 1, lease_expires_at = $3, training_started_at = NULL WHERE id = $4 AND state = 'Pending'",
        )
        .bind(&node.id)
        .bind(serde_json::to_string(&gpus).map_err(CoreError::internal)?)
        .bind(now() + settings.lease_secs as i64)
        .bind(&job_id)
        .execute(&db.pool)
        .await?;
        if taken.rows_affected() == 1 {
            let job = find_by_id(db, &job_id).await?;
            let gpu_note = if gpus.is_empty() { String::new() } else { format!(", GPUs {gpus:?}") };
            let message = format!("placed on {}{gpu_note}", node.name);
            add_event(db, &job.id, job.attempt, JobState::Starting, &message, Some(&node.id)).await?;
            return Ok(Lease::Assigned(Box::new(assignment(db, &job, gpus).await?)));
        }
        // Another agent took it between the read and the update.
        queue.retain(|j| j.id != job_id);
    }
    Ok(Lease::NothingFits)
}

/// The answer to a node asking for work.
#[derive(Debug)]
pub enum Lease {
    Assigned(Box<Assignment>),
    /// No CPU or memory left (or the node is not Ready): only a job ending on it
    /// changes that.
    Full,
    /// Room, but no queued job fits it.
    NothingFits,
}

async fn assignment(db: &Db, job: &Job, gpus: Vec<u32>) -> CoreResult<Assignment> {
    let spec = job.spec()?;
    let mut inputs = Vec::new();
    if let Algorithm::Script { code, .. } = &spec.algorithm {
        for id in code {
            let a = artifacts::get(db, id).await?;
            inputs.push(InputFile { place: "code".into(), name: a.name, artifact_id: a.id, size: a.size });
        }
    }
    for channel in &spec.channels {
        for id in &channel.artifacts {
            let a = artifacts::get(db, id).await?;
            inputs.push(InputFile {
                place: format!("data/{}", channel.name),
                name: a.name,
                artifact_id: a.id,
                size: a.size,
            });
        }
    }
    Ok(Assignment {
        job_id: job.id.clone(),
        job_name: job.name.clone(),
        attempt: job.attempt,
        spec,
        gpus,
        inputs,
        checkpoint: job.checkpoint_artifact.clone(),
    })
}

/// The job, if this node holds the lease of this attempt.
pub async fn check_lease(db: &Db, node: &NodeCaller, job_id: &str, attempt: i64) -> CoreResult<Job> {
    let job = find_by_id(db, job_id).await.map_err(|_| CoreError::NotFound("training job"))?;
    if job.node_id.as_deref() != Some(node.id.as_str()) || job.attempt != attempt || !job.job_state().is_active() {
        return Err(CoreError::Conflict(format!(
            "training job {} (attempt {attempt}) is not leased to node {}",
            job.name, node.name
        )));
    }
    Ok(job)
}

fn may_follow(from: JobState, to: JobState) -> bool {
    use JobState::*;
    let rank = |s: JobState| match s {
        Starting => 1,
        Downloading => 2,
        Training => 3,
        Uploading => 4,
        _ => 5,
    };
    to.is_terminal() || (to.is_active() && rank(to) > rank(from))
}

/// An agent reports a transition of a job it holds.
pub async fn report_status(db: &Db, node: &NodeCaller, job_id: &str, report: &StatusReport) -> CoreResult<()> {
    let job = check_lease(db, node, job_id, report.attempt).await?;
    let from = job.job_state();
    if from == report.state {
        return Ok(());
    }
    if !may_follow(from, report.state) {
        return Err(CoreError::Conflict(format!(
            "a job cannot go from {} to {}",
            from.as_str(),
            report.state.as_str()
        )));
    }
    let message: String = report.message.chars().take(4000).collect();
    let message = match (report.state, job.stop_reason.as_deref()) {
        (JobState::Stopped, Some(reason)) if message.is_empty() => reason.to_string(),
        _ => message,
    };
    let t = now();
    let terminal = report.state.is_terminal();
    let updated = sqlx::query(&format!(
        "UPDATE training_jobs SET state = $1, message = $2, \
         training_started_at = CASE WHEN $3 THEN $4 ELSE training_started_at END, \
         ended_at = CASE WHEN $5 THEN $4 ELSE ended_at END, \
         lease_expires_at = CASE WHEN $5 THEN NULL ELSE lease_expires_at END \
         WHERE id = $6 AND attempt = $7 AND node_id = $8 AND state IN {ACTIVE}"
    ))
    .bind(report.state.as_str())
    .bind(&message)
    .bind(report.state == JobState::Training)
    .bind(t)
    .bind(terminal)
    .bind(&job.id)
    .bind(report.attempt)
    .bind(&node.id)
    .execute(&db.pool)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(CoreError::Conflict(format!("training job {} changed while reporting", job.name)));
    }
    add_event(db, &job.id, job.attempt, report.state, &message, Some(&node.id)).await?;
    let summary = if message.is_empty() {
        format!("{} -> {}", from.as_str(), report.state.as_str())
    } else {
        format!("{} -> {}: {message}", from.as_str(), report.state.as_str())
    };
    audit_system(db, &format!("node:{}", node.name), "agent:ReportJobStatus", &job.name, summary).await;
    Ok(())
}

/// Longest stored log line; longer ones are cut.
const MAX_LINE: usize = 8192;

/// Appends a batch of log lines, and extracts metric values from them.
pub async fn append_logs(db: &Db, node: &NodeCaller, job_id: &str, batch: &LogBatch) -> CoreResult<usize> {
    if batch.lines.len() > 10_000 {
        return Err(CoreError::TooLarge("at most 10000 log lines per batch".into()));
    }
    let job = check_lease(db, node, job_id, batch.attempt).await?;
    if batch.lines.is_empty() {
        return Ok(0);
    }
    let spec = job.spec()?;
    let definitions: Vec<(String, regex::Regex)> = spec
        .metric_definitions
        .iter()
        .filter_map(|d| metric_regex(&d.regex).ok().map(|r| (d.name.clone(), r)))
        .collect();
    let n = batch.lines.len() as i64;
    let mut tx = db.pool.begin().await?;
    let (last,): (i64,) =
        sqlx::query_as("UPDATE training_jobs SET log_seq = log_seq + $1 WHERE id = $2 RETURNING log_seq")
            .bind(n)
            .bind(&job.id)
            .fetch_one(&mut *tx)
            .await?;
    let first = last - n + 1;
    for (i, line) in batch.lines.iter().enumerate() {
        let seq = first + i as i64;
        let text: String = if line.line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.line.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…", &line.line[..cut])
        } else {
            line.line.clone()
        };
        let stream = match line.stream.as_str() {
            "stdout" | "stderr" | "agent" => line.stream.as_str(),
            _ => "stdout",
        };
        sqlx::query(
            "INSERT INTO training_job_logs (job_id, seq, attempt, ts_ms, stream, line) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&job.id)
        .bind(seq)
        .bind(batch.attempt)
        .bind(line.ts_ms)
        .bind(stream)
        .bind(&text)
        .execute(&mut *tx)
        .await?;
        for (name, value) in extract_metrics(&definitions, &text) {
            sqlx::query(
                "INSERT INTO training_job_metrics (job_id, name, seq, ts_ms, value) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&job.id)
            .bind(&name)
            .bind(seq)
            .bind(line.ts_ms)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(batch.lines.len())
}

/// The metric values in one log line: each definition's first capture group (or whole
/// match) that parses as a number, and `#metric name=value` lines of the built-ins.
pub fn extract_metrics(definitions: &[(String, regex::Regex)], line: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    if let Some(rest) = line.trim().strip_prefix(METRIC_LINE_PREFIX) {
        for pair in rest.split_whitespace() {
            if let Some((name, value)) = pair.split_once('=') {
                if validate_key("metric", "metric", name).is_ok() {
                    if let Ok(v) = value.parse::<f64>() {
                        // One value per metric and line (the last one given).
                        out.retain(|(n, _)| n != name);
                        if v.is_finite() {
                            out.push((name.to_string(), v));
                        }
                    }
                }
            }
        }
    }
    for (name, regex) in definitions {
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(caps) = regex.captures(line) {
            let text = caps.get(1).or_else(|| caps.get(0)).map(|m| m.as_str()).unwrap_or("");
            if let Ok(v) = text.trim().parse::<f64>() {
                if v.is_finite() {
                    out.push((name.clone(), v));
                }
            }
        }
    }
    out
}

/// A heartbeat: records utilization, renews the leases the agent holds, and answers
/// with the jobs it must stop.
pub async fn heartbeat(
    db: &Db,
    node: &NodeCaller,
    request: &HeartbeatRequest,
    settings: &Settings,
) -> CoreResult<HeartbeatResponse> {
    nodes::record_usage(db, node, &request.usage).await?;
    let t = now();
    // Everything the node holds, in one query; then one update renews the leases.
    let holding: Vec<Job> =
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE node_id = $1 AND state IN {ACTIVE}"))
            .bind(&node.id)
            .fetch_all(&db.pool)
            .await?;
    let mut stop = Vec::new();
    let mut renew: Vec<&str> = Vec::new();
    for held in &request.running {
        let Some(job) = holding.iter().find(|j| j.id == held.job_id && j.attempt == held.attempt) else {
            stop.push(StopOrder {
                job_id: held.job_id.clone(),
                reason: "the job is no longer leased to this node".into(),
                grace_secs: 0,
            });
            continue;
        };
        renew.push(&job.id);
        let spec = job.spec()?;
        let overdue = job.training_started_at.is_some_and(|s| t - s > spec.max_runtime_secs as i64);
        let reason = match (&job.stop_reason, overdue) {
            (Some(reason), _) if job.stop_requested_at.is_some() => Some(reason.clone()),
            (_, true) => {
                let reason = format!("MaxRuntimeExceeded: ran longer than {} s", spec.max_runtime_secs);
                sqlx::query("UPDATE training_jobs SET stop_requested_at = $1, stop_reason = $2 WHERE id = $3")
                    .bind(t)
                    .bind(&reason)
                    .bind(&job.id)
                    .execute(&db.pool)
                    .await?;
                Some(reason)
            }
            _ => None,
        };
        if let Some(reason) = reason {
            stop.push(StopOrder { job_id: job.id.clone(), reason, grace_secs: settings.stop_grace_secs });
        }
    }
    if !renew.is_empty() {
        // Only what the agent says it runs: a job it lost track of lapses and is requeued.
        let placeholders: Vec<String> = (0..renew.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE training_jobs SET lease_expires_at = $1 WHERE node_id = $2 AND state IN {ACTIVE} AND id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(t + settings.lease_secs as i64).bind(&node.id);
        for id in renew {
            query = query.bind(id);
        }
        query.execute(&db.pool).await?;
    }
    Ok(HeartbeatResponse { stop, instances: Vec::new(), kernels: Vec::new() })
}

/// Puts a job whose lease ended without an outcome back in the queue (or marks it
/// Stopped, if a user had asked for that). Returns whether it changed.
async fn requeue(db: &Db, job: &Job, reason: &str, only_if_expired: bool) -> CoreResult<bool> {
    let (state, message) = match &job.stop_reason {
        Some(stop) if job.stop_requested_at.is_some() => (JobState::Stopped, stop.clone()),
        _ => (JobState::Pending, format!("requeued: {reason}")),
    };
    let changed = sqlx::query(&format!(
        "UPDATE training_jobs SET state = $1, message = $2, node_id = CASE WHEN $3 THEN node_id ELSE NULL END, \
         gpu_indices = '[]', lease_expires_at = NULL, training_started_at = NULL, \
         ended_at = CASE WHEN $3 THEN $4 ELSE NULL END \
         WHERE id = $5 AND attempt = $6 AND state IN {ACTIVE} AND (NOT $7 OR lease_expires_at < $4)"
    ))
    .bind(state.as_str())
    .bind(&message)
    .bind(state == JobState::Stopped)
    .bind(now())
    .bind(&job.id)
    .bind(job.attempt)
    // The sweep read the job a moment ago: a heartbeat may have renewed it since.
    .bind(only_if_expired)
    .execute(&db.pool)
    .await?;
    if changed.rows_affected() == 1 {
        add_event(db, &job.id, job.attempt, state, &message, job.node_id.as_deref()).await?;
        audit_system(db, "system", "compute:RequeueJob", &job.name, message).await;
        return Ok(true);
    }
    Ok(false)
}

/// Requeues everything a node holds (its agent restarted, it was lost or removed).
pub async fn requeue_node(db: &Db, node_id: &str, reason: &str) -> CoreResult<usize> {
    let held: Vec<Job> =
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE node_id = $1 AND state IN {ACTIVE}"))
            .bind(node_id)
            .fetch_all(&db.pool)
            .await?;
    let mut n = 0;
    for job in &held {
        if requeue(db, job, reason, false).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// Requeues jobs whose lease expired. Returns how many.
pub async fn sweep(db: &Db) -> CoreResult<usize> {
    let expired: Vec<Job> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM training_jobs WHERE state IN {ACTIVE} AND lease_expires_at < $1"
    ))
    .bind(now())
    .fetch_all(&db.pool)
    .await?;
    let mut n = 0;
    for job in &expired {
        if requeue(db, job, "its lease expired (no heartbeat from the node)", true).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// Records a new checkpoint of the attempt, replacing the previous one, which is
/// returned for deletion. Refused if the attempt lost its lease during the upload.
pub async fn set_checkpoint(db: &Db, node: &NodeCaller, job: &Job, artifact: &Artifact) -> CoreResult<Option<String>> {
    let current = check_lease(db, node, &job.id, job.attempt).await?;
    let updated = sqlx::query(&format!(
        "UPDATE training_jobs SET checkpoint_artifact = $1 WHERE id = $2 AND attempt = $3 AND node_id = $4 AND state IN {ACTIVE}"
    ))
    .bind(&artifact.id)
    .bind(&job.id)
    .bind(job.attempt)
    .bind(&node.id)
    .execute(&db.pool)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(CoreError::Conflict(format!(
            "training job {} is no longer leased to node {}",
            job.name, node.name
        )));
    }
    Ok(current.checkpoint_artifact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_come_from_definitions_and_builtin_lines() {
        let defs = vec![
            ("loss".to_string(), metric_regex(r"(?:^|\s)loss=([0-9.e-]+)").expect("regex")),
            ("acc".to_string(), metric_regex(r"accuracy: ([0-9.]+)").expect("regex")),
        ];
        assert_eq!(
            extract_metrics(&defs, "epoch 1 loss=0.25 accuracy: 0.9"),
            vec![("loss".to_string(), 0.25), ("acc".to_string(), 0.9)]
        );
        assert_eq!(
            extract_metrics(&defs, "#metric train_loss=1.5 epoch=2"),
            vec![("train_loss".to_string(), 1.5), ("epoch".to_string(), 2.0)]
        );
        assert!(extract_metrics(&defs, "loss=nan").is_empty());
        assert!(extract_metrics(&defs, "nothing here").is_empty());
    }

    #[test]
    fn transitions_only_move_forward() {
        use JobState::*;
        assert!(may_follow(Starting, Downloading));
        assert!(may_follow(Starting, Training));
        assert!(may_follow(Training, Failed));
        assert!(!may_follow(Training, Downloading));
        assert!(!may_follow(Uploading, Pending));
    }
}
