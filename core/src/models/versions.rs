//! Model versions: registering (from a completed training job or an uploaded
//! artifact), reading, listing, editing, tags, aliases and deleting.

use std::collections::BTreeMap;

use atelier_protocol::models::{ArtifactRef, InferenceSpec, Lineage, ModelVersion, RegisterVersion, PENDING};
use atelier_protocol::{Algorithm, JobState};
use sqlx::Row;

use super::{group_for, ModelGroup};
use crate::artifacts::{self, kind};
use crate::authz::{authorize, Action, Principal, Resource};
use crate::compute::jobs;
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// A version's record, joined with its group, artifact and training job.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct VersionRow {
    pub id: String,
    pub group_id: String,
    pub group_name: String,
    pub required_approvals: i64,
    pub version: i64,
    pub status: String,
    pub status_seq: i64,
    pub approval_round: i64,
    pub artifact_id: String,
    pub artifact_name: String,
    pub artifact_sha256: String,
    pub artifact_size: i64,
    pub format: String,
    pub training_job_name: Option<String>,
    pub hyperparameters: String,
    pub metrics: String,
    pub lineage: String,
    pub inference: String,
    pub source: String,
    pub description: String,
    pub tags: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(super) const VERSION_SELECT: &str = "SELECT v.id, v.group_id, g.name AS group_name, g.required_approvals, \
     v.version, v.status, v.status_seq, v.approval_round, v.artifact_id, a.name AS artifact_name, \
     a.sha256 AS artifact_sha256, a.size AS artifact_size, v.format, j.name AS training_job_name, \
     v.hyperparameters, v.metrics, v.lineage, v.inference, v.source, v.description, v.tags, v.created_by, \
     v.created_at, v.updated_at \
     FROM model_versions v JOIN model_groups g ON g.id = v.group_id JOIN artifacts a ON a.id = v.artifact_id \
     LEFT JOIN training_jobs j ON j.id = v.training_job_id";

/// The resource name of a version; its creator is what separation of duties tests.
pub fn resource(group: &str, version: i64, created_by: &str) -> Resource {
    Resource::new(format!("atelier:models:group/{group}/version/{version}")).created_by(created_by.to_string())
}

pub fn row_resource(row: &VersionRow) -> Resource {
    resource(&row.group_name, row.version, &row.created_by)
}

fn json_or_default<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

impl VersionRow {
    /// The wire form; `approvals` and `aliases` come from other tables.
    pub fn to_wire(&self, approvals: i64, aliases: Vec<String>) -> ModelVersion {
        ModelVersion {
            group: self.group_name.clone(),
            version: self.version,
            status: self.status.clone(),
            approvals,
            required_approvals: self.required_approvals,
            artifact: ArtifactRef {
                id: self.artifact_id.clone(),
                name: self.artifact_name.clone(),
                sha256: self.artifact_sha256.clone(),
                size: self.artifact_size,
            },
            format: self.format.clone(),
            training_job: self.training_job_name.clone(),
            hyperparameters: json_or_default(&self.hyperparameters),
            metrics: json_or_default(&self.metrics),
            lineage: json_or_default(&self.lineage),
            inference: json_or_default(&self.inference),
            source: self.source.clone(),
            description: self.description.clone(),
            tags: json_or_default(&self.tags),
            aliases,
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    pub fn tag_map(&self) -> BTreeMap<String, String> {
        json_or_default(&self.tags)
    }
}

/// Tags: MLflow's limits (keys up to 250 characters, values up to 5000).
pub fn validate_tags(tags: &BTreeMap<String, String>) -> CoreResult<()> {
    if tags.len() > 100 {
        return Err(CoreError::invalid("tags", "at most 100 tags"));
    }
    for (key, value) in tags {
        validate_tag(key, value)?;
    }
    Ok(())
}

pub fn validate_tag(key: &str, value: &str) -> CoreResult<()> {
    if key.trim().is_empty() || key.chars().count() > 250 {
        return Err(CoreError::invalid("tags", format!("tag key {key:?} must be 1-250 characters")));
    }
    if value.chars().count() > 5000 {
        return Err(CoreError::invalid("tags", format!("tag {key}: the value must be at most 5000 characters")));
    }
    Ok(())
}

pub fn validate_description(description: &str) -> CoreResult<String> {
    let d = description.trim();
    if d.chars().count() > 5000 {
        return Err(CoreError::invalid("description", "description must be at most 5000 characters"));
    }
    Ok(d.to_string())
}

/// Aliases name one version of a group (`champion`, `prod-eu`); MLflow's rules.
pub fn validate_alias(alias: &str) -> CoreResult<()> {
    let lower = alias.to_ascii_lowercase();
    let version_like =
        lower.strip_prefix('v').is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()));
    if alias.is_empty()
        || alias.len() > 255
        || !alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || lower == "latest"
        || version_like
    {
        return Err(CoreError::invalid(
            "alias",
            format!(
                "alias {alias:?} is invalid: use 1-255 letters, digits, _ or -, not \"latest\" and not v<number> (those name versions)"
            ),
        ));
    }
    Ok(())
}

/// A version by group and number, for someone who may do `action` on it.
pub async fn get_for(db: &Db, p: &Principal, group: &str, version: i64, action: Action) -> CoreResult<VersionRow> {
    authorize(p, action, &Resource::new(format!("atelier:models:group/{group}/version/{version}")))?;
    let row = find(db, group, version).await?.ok_or(CoreError::NotFound("model version"))?;
    authorize(p, action, &row_resource(&row))?;
    Ok(row)
}

pub(super) async fn find(db: &Db, group: &str, version: i64) -> CoreResult<Option<VersionRow>> {
    Ok(sqlx::query_as(&format!("{VERSION_SELECT} WHERE g.name = $1 AND v.version = $2"))
        .bind(group)
        .bind(version)
        .fetch_optional(&db.pool)
        .await?)
}

/// One version in wire form.
pub async fn get(db: &Db, p: &Principal, group: &str, version: i64) -> CoreResult<ModelVersion> {
    let row = get_for(db, p, group, version, Action::GetModelVersion).await?;
    let mut wire = wires(db, vec![row]).await?;
    wire.pop().ok_or(CoreError::NotFound("model version"))
}

/// Rows to wire form, with their approvals and aliases (two queries for any number).
pub async fn wires(db: &Db, rows: Vec<VersionRow>) -> CoreResult<Vec<ModelVersion>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let mut approvals = std::collections::HashMap::new();
    let mut aliases: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    // In chunks: databases bound the number of parameters in one statement.
    for chunk in ids.chunks(500) {
        let list = placeholders(chunk.len());
        let sql = format!(
            "SELECT e.version_id, CAST(COUNT(*) AS BIGINT) AS n FROM model_version_events e \
             JOIN model_versions v ON v.id = e.version_id \
             WHERE e.kind = 'approve' AND e.round = v.approval_round AND e.version_id IN ({list}) GROUP BY e.version_id"
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&db.pool).await? {
            approvals.insert(row.try_get::<String, _>("version_id")?, row.try_get::<i64, _>("n")?);
        }
        let sql = format!("SELECT version_id, alias FROM model_aliases WHERE version_id IN ({list}) ORDER BY alias");
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&db.pool).await? {
            aliases.entry(row.try_get("version_id")?).or_default().push(row.try_get("alias")?);
        }
    }
    let mut out: Vec<ModelVersion> = rows
        .into_iter()
        .map(|r| {
            let n = approvals.get(&r.id).copied().unwrap_or(0);
            let a = aliases.remove(&r.id).unwrap_or_default();
            r.to_wire(n, a)
        })
        .collect();
    // Datasets deleted since keep their names in the lineage, marked as deleted.
    let mut named: Vec<String> = out.iter().flat_map(|v| v.lineage.datasets.iter().cloned()).collect();
    named.sort();
    named.dedup();
    let deleted = crate::datasets::deleted_among(db, &named).await?;
    if !deleted.is_empty() {
        for v in &mut out {
            v.lineage.deleted_datasets = v.lineage.datasets.iter().filter(|d| deleted.contains(d)).cloned().collect();
        }
    }
    Ok(out)
}

/// `$1, $2, ... $n`.
pub(super) fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A group's versions, newest first.
pub async fn list(db: &Db, p: &Principal, group: &str) -> CoreResult<Vec<ModelVersion>> {
    let group = group_for(db, p, group, Action::ListModelVersions).await?;
    let rows: Vec<VersionRow> =
        sqlx::query_as(&format!("{VERSION_SELECT} WHERE v.group_id = $1 ORDER BY v.version DESC"))
            .bind(&group.id)
            .fetch_all(&db.pool)
            .await?;
    // Each version is shown only if it may be read (a policy may hide some).
    let rows = rows.into_iter().filter(|r| p.can(Action::GetModelVersion, &row_resource(r))).collect();
    wires(db, rows).await
}

/// What a version records of the training job it came from.
struct FromJob {
    job_id: String,
    artifact_id: String,
    format: &'static str,
    hyperparameters: BTreeMap<String, String>,
    metrics: BTreeMap<String, f64>,
    lineage: Lineage,
}

async fn from_job(db: &Db, p: &Principal, name: &str) -> CoreResult<FromJob> {
    let job = jobs::get(db, p, name)
        .await
        .map_err(|e| CoreError::invalid("training_job", format!("training job {name}: {e}")))?;
    if job.job_state() != JobState::Completed {
        return Err(CoreError::invalid(
            "training_job",
            format!("training job {name} is {}; only a completed job's model can be registered", job.state),
        ));
    }
    let model = artifacts::for_job(db, &job.id)
        .await?
        .into_iter()
        .filter(|a| a.kind == kind::MODEL)
        .max_by_key(|a| a.created_at)
        .ok_or_else(|| CoreError::invalid("training_job", format!("training job {name} left no model artifact")))?;
    let spec = job.spec()?;
    let mut lineage = Lineage::default();
    for channel in &spec.channels {
        if let Some(d) = &channel.dataset {
            lineage.datasets.push(d.clone());
        }
        if let Some(l) = &channel.labeling_job {
            lineage.labeling_jobs.push(l.clone());
            // The labeling job's dataset is part of the lineage too.
            let dataset: Option<String> = sqlx::query_scalar(
                "SELECT d.name FROM labeling_jobs l JOIN datasets d ON d.id = l.dataset_id WHERE l.name = $1",
            )
            .bind(l)
            .fetch_optional(&db.pool)
            .await?;
            if let Some(d) = dataset {
                lineage.datasets.push(d);
            }
        }
    }
    lineage.datasets.sort();
    lineage.datasets.dedup();
    let metrics = jobs::metrics(db, &job)
        .await?
        .into_iter()
        .filter_map(|(name, points)| points.last().map(|pt| (name, pt.value)))
        .collect();
    let format = match spec.algorithm {
        Algorithm::Builtin { .. } => "atelier",
        Algorithm::Script { .. } => "archive",
    };
    Ok(FromJob {
        job_id: job.id,
        artifact_id: model.id,
        format,
        hyperparameters: spec.hyperparameters,
        metrics,
        lineage,
    })
}

/// An uploaded model (or a job's model artifact) the caller may read.
async fn from_artifact(db: &Db, p: &Principal, id: &str, field: &'static str) -> CoreResult<FromJob> {
    let artifact =
        artifacts::get(db, id).await.map_err(|_| CoreError::invalid(field, format!("artifact {id} does not exist")))?;
    jobs::read_artifact_check(db, p, &artifact)
        .await
        .map_err(|_| CoreError::invalid(field, format!("you may not read artifact {id}")))?;
    if artifact.kind != kind::UPLOAD && artifact.kind != kind::MODEL {
        return Err(CoreError::invalid(
            field,
            format!("artifact {id} is a {} artifact; register an uploaded model or a job's model", artifact.kind),
        ));
    }
    Ok(FromJob {
        job_id: String::new(),
        artifact_id: artifact.id,
        format: "archive",
        hyperparameters: BTreeMap::new(),
        metrics: BTreeMap::new(),
        lineage: Lineage::default(),
    })
}

/// Registers a new version (`PendingManualApproval`) in `group`.
pub async fn register(db: &Db, p: &Principal, group: &str, req: RegisterVersion) -> CoreResult<ModelVersion> {
    let group = group_for(db, p, group, Action::RegisterModelVersion).await?;
    let description = validate_description(&req.description)?;
    validate_tags(&req.tags)?;
    validate_inference(&req.inference)?;
    let origin = match (&req.training_job, &req.artifact) {
        (Some(job), None) => from_job(db, p, job).await?,
        (None, Some(id)) => from_artifact(db, p, id, "artifact").await?,
        _ => {
            return Err(CoreError::invalid(
                "training_job",
                "give either training_job (a completed training job) or artifact (an uploaded model)",
            ))
        }
    };
    insert(db, p, &group, origin, description, &req.tags, &req.inference, "").await
}

/// Registers a version from an MLflow client: `source` is kept as text, and the
/// artifact is the named one if `source` names an Atelier artifact or training job.
pub async fn register_from_source(
    db: &Db,
    p: &Principal,
    group: &str,
    source: &str,
    description: &str,
    tags: &BTreeMap<String, String>,
) -> CoreResult<ModelVersion> {
    let group_row = group_for(db, p, group, Action::RegisterModelVersion).await?;
    let description = validate_description(description)?;
    validate_tags(tags)?;
    let origin = if let Some(job) = source.strip_prefix("atelier:training-job/") {
        from_job(db, p, job).await?
    } else {
        let id = source.strip_prefix("atelier:artifact/").ok_or_else(|| {
            CoreError::invalid(
                "source",
                format!("source {source:?} is not an Atelier model: use atelier:artifact/<id> or atelier:training-job/<name>"),
            )
        })?;
        from_artifact(db, p, id, "source").await?
    };
    insert(db, p, &group_row, origin, description, tags, &InferenceSpec::default(), source).await
}

fn validate_inference(spec: &InferenceSpec) -> CoreResult<()> {
    for (field, text) in [("input_schema", &spec.input_schema), ("output_schema", &spec.output_schema)] {
        if text.len() > 65_536 {
            return Err(CoreError::invalid("inference", format!("inference.{field} must be at most 64 KiB")));
        }
    }
    if spec.serving_command.len() > 4096 {
        return Err(CoreError::invalid("inference", "inference.serving_command must be at most 4096 bytes"));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    db: &Db,
    p: &Principal,
    group: &ModelGroup,
    origin: FromJob,
    description: String,
    tags: &BTreeMap<String, String>,
    inference: &InferenceSpec,
    source: &str,
) -> CoreResult<ModelVersion> {
    let id = uuid::Uuid::new_v4().to_string();
    let at = now();
    let mut tx = db.pool.begin().await?;
    // The group's counter hands out the number: taking it is the transaction's first
    // statement, a write, so concurrent registrations queue on the group's row.
    let next: i64 = sqlx::query_scalar(
        "UPDATE model_groups SET next_version = next_version + 1, updated_at = $1 WHERE id = $2 RETURNING next_version - 1",
    )
    .bind(at)
    .bind(&group.id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO model_versions (id, group_id, version, status, artifact_id, format, training_job_id, \
         hyperparameters, metrics, lineage, inference, source, description, tags, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)",
    )
    .bind(&id)
    .bind(&group.id)
    .bind(next)
    .bind(PENDING)
    .bind(&origin.artifact_id)
    .bind(origin.format)
    .bind((!origin.job_id.is_empty()).then_some(origin.job_id.as_str()))
    .bind(encode(&origin.hyperparameters))
    .bind(encode(&origin.metrics))
    .bind(encode(&origin.lineage))
    .bind(encode(inference))
    .bind(source)
    .bind(&description)
    .bind(encode(tags))
    .bind(&p.user.username)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO model_version_events (version_id, round, ts_ms, actor, kind, status, comment) \
         VALUES ($1, 0, $2, $3, 'registered', $4, '')",
    )
    .bind(&id)
    .bind(crate::compute::now_ms())
    .bind(&p.user.username)
    .bind(PENDING)
    .execute(&mut *tx)
    .await?;
    let event = serde_json::json!({
        "group": group.name, "version": next, "status": PENDING, "created_by": p.user.username,
        "description": description, "format": origin.format, "metrics": origin.metrics, "lineage": origin.lineage,
    });
    super::webhooks::enqueue(&mut tx, &group.id, super::webhooks::VERSION_CREATED, &event).await?;
    tx.commit().await?;
    p.note_change(format!("registered version {next} of model group {}", group.name));
    let row = find(db, &group.name, next).await?.ok_or(CoreError::NotFound("model version"))?;
    wires(db, vec![row]).await?.pop().ok_or(CoreError::NotFound("model version"))
}

/// A JSON column's text (maps and plain structs always serialize).
fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

/// Changes a version's description and/or tags (replacing them).
pub async fn update(
    db: &Db,
    p: &Principal,
    group: &str,
    version: i64,
    description: Option<&str>,
    tags: Option<&BTreeMap<String, String>>,
) -> CoreResult<ModelVersion> {
    let row = get_for(db, p, group, version, Action::UpdateModelVersion).await?;
    let description = description.map(validate_description).transpose()?;
    if let Some(t) = tags {
        validate_tags(t)?;
    }
    // Only what was given is written, so a concurrent tag edit survives a description change.
    sqlx::query(
        "UPDATE model_versions SET description = COALESCE($1, description), tags = COALESCE($2, tags), updated_at = $3 \
         WHERE id = $4",
    )
    .bind(description)
    .bind(tags.map(encode))
    .bind(now())
    .bind(&row.id)
    .execute(&db.pool)
    .await?;
    p.note_change(format!("updated version {version} of model group {group}"));
    get(db, p, group, version).await
}

/// Sets (`Some`) or removes (`None`) one tag of a version.
pub async fn set_tag(
    db: &Db,
    p: &Principal,
    group: &str,
    version: i64,
    key: &str,
    value: Option<&str>,
) -> CoreResult<()> {
    let row = get_for(db, p, group, version, Action::UpdateModelVersion).await?;
    let mut tags = row.tag_map();
    match value {
        Some(v) => {
            validate_tag(key, v)?;
            tags.insert(key.to_string(), v.to_string());
        }
        None => {
            if tags.remove(key).is_none() {
                return Err(CoreError::NotFound("tag"));
            }
        }
    }
    validate_tags(&tags)?;
    // Conditional on the tags read, so two concurrent tag edits do not lose one.
    let updated = sqlx::query("UPDATE model_versions SET tags = $1, updated_at = $2 WHERE id = $3 AND tags = $4")
        .bind(encode(&tags))
        .bind(now())
        .bind(&row.id)
        .bind(&row.tags)
        .execute(&db.pool)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(CoreError::Conflict(format!("the tags of version {version} of {group} changed meanwhile; retry")));
    }
    p.note_change(format!(
        "{} tag {key} of version {version} of model group {group}",
        if value.is_some() { "set" } else { "deleted" }
    ));
    Ok(())
}

/// Points `alias` of the group at `version` (moving it if it named another).
pub async fn set_alias(db: &Db, p: &Principal, group: &str, alias: &str, version: i64) -> CoreResult<()> {
    validate_alias(alias)?;
    let row = get_for(db, p, group, version, Action::UpdateModelVersion).await?;
    // Moving an alias changes the version it named too.
    if let Some(current) = aliased(db, &row.group_id, alias).await? {
        authorize(p, Action::UpdateModelVersion, &resource(group, current.0, &current.1))?;
    }
    sqlx::query(
        "INSERT INTO model_aliases (group_id, alias, version_id) VALUES ($1, $2, $3) \
         ON CONFLICT (group_id, alias) DO UPDATE SET version_id = excluded.version_id",
    )
    .bind(&row.group_id)
    .bind(alias)
    .bind(&row.id)
    .execute(&db.pool)
    .await?;
    p.note_change(format!("alias {alias} of model group {group} now names version {version}"));
    Ok(())
}

/// The version an alias names: (number, creator).
async fn aliased(db: &Db, group_id: &str, alias: &str) -> CoreResult<Option<(i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT v.version, v.created_by FROM model_aliases a JOIN model_versions v ON v.id = a.version_id \
         WHERE a.group_id = $1 AND a.alias = $2",
    )
    .bind(group_id)
    .bind(alias)
    .fetch_optional(&db.pool)
    .await?)
}

/// The version `alias` names.
pub async fn by_alias(db: &Db, p: &Principal, group: &str, alias: &str) -> CoreResult<ModelVersion> {
    let g = group_for(db, p, group, Action::GetModelGroup).await?;
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT v.version FROM model_aliases a JOIN model_versions v ON v.id = a.version_id \
         WHERE a.group_id = $1 AND a.alias = $2",
    )
    .bind(&g.id)
    .bind(alias)
    .fetch_optional(&db.pool)
    .await?;
    let version = version.ok_or(CoreError::NotFound("alias"))?;
    get(db, p, group, version).await
}

pub async fn delete_alias(db: &Db, p: &Principal, group: &str, alias: &str) -> CoreResult<()> {
    let g = group_for(db, p, group, Action::GetModelGroup).await?;
    let (version, creator) = aliased(db, &g.id, alias).await?.ok_or(CoreError::NotFound("alias"))?;
    authorize(p, Action::UpdateModelVersion, &resource(group, version, &creator))?;
    let deleted = sqlx::query("DELETE FROM model_aliases WHERE group_id = $1 AND alias = $2")
        .bind(&g.id)
        .bind(alias)
        .execute(&db.pool)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(CoreError::NotFound("alias"));
    }
    p.note_change(format!("deleted alias {alias} of model group {group}"));
    Ok(())
}

/// Deletes a version (its artifact stays: training jobs and other versions may use it).
pub async fn delete(db: &Db, p: &Principal, group: &str, version: i64) -> CoreResult<()> {
    let row = get_for(db, p, group, version, Action::DeleteModelVersion).await?;
    let serving = crate::endpoints::serving(db, &row.id).await?;
    if !serving.is_empty() {
        return Err(CoreError::Conflict(format!(
            "version {version} of {group} is served by endpoint {}; deploy another version there first",
            serving.join(", ")
        )));
    }
    crate::endpoints::forget_version(db, &row.id).await?;
    sqlx::query("DELETE FROM model_versions WHERE id = $1").bind(&row.id).execute(&db.pool).await?;
    p.note_change(format!("deleted version {version} of model group {group}"));
    Ok(())
}
