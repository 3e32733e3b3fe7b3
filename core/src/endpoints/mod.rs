//! Endpoints: named, versioned configurations of variants, each serving one Approved
//! model version on a number of model server instances that agents run.
//!
//! Every change of variants makes a new *generation*. The reconciler
//! ([`reconcile`]) starts the new generation's instances beside the old ones and
//! moves traffic (`active_generation`) only once all of them answer health checks:
//! blue/green, so a version switch drops no request.

pub mod alarms;
pub mod autoscaling;
pub mod capture;
pub mod metrics;
pub mod reconcile;
pub mod rules;

use std::collections::{BTreeSet, HashMap};

use atelier_protocol::endpoints::{
    Endpoint, EndpointConfig, EndpointEvent, Instance, NewEndpoint, Variant, VariantSpec, CREATING, UPDATING,
};
use atelier_protocol::models::APPROVED;
use sqlx::{Any, Transaction};

use crate::authz::{authorize, Action, Principal, Resource};
use crate::compute::now_ms;
use crate::db::Db;
use crate::models::versions;
use crate::{now, CoreError, CoreResult};

/// An endpoint's record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub reason: String,
    pub generation: i64,
    pub active_generation: Option<i64>,
    pub capture_percent: i64,
    pub capture_budget_mb: i64,
    pub capture_paused: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, name, status, reason, generation, active_generation, capture_percent, capture_budget_mb, \
                       capture_paused, created_by, created_at, updated_at";

/// The resource name of an endpoint.
pub fn resource(name: &str) -> Resource {
    Resource::new(format!("atelier:endpoints:endpoint/{name}"))
}

fn row_resource(row: &EndpointRow) -> Resource {
    resource(&row.name).created_by(row.created_by.clone())
}

/// Endpoint and variant names: they appear in URLs and headers.
pub fn validate_name(field: &'static str, name: &str) -> CoreResult<String> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(CoreError::invalid(
            field,
            format!("{field} must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen"),
        ));
    }
    Ok(name.to_string())
}

pub(crate) async fn find(db: &Db, name: &str) -> CoreResult<EndpointRow> {
    let row: Option<EndpointRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM endpoints WHERE name = $1"))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    row.ok_or(CoreError::NotFound("endpoint"))
}

/// An endpoint for someone who may do `action` on it: asked by name first, so a
/// refusal does not tell whether the endpoint exists.
pub async fn endpoint_for(db: &Db, p: &Principal, name: &str, action: Action) -> CoreResult<EndpointRow> {
    authorize(p, action, &resource(name))?;
    let row = find(db, name).await?;
    authorize(p, action, &row_resource(&row))?;
    Ok(row)
}

/// A variant checked against the registry, ready to insert.
struct Resolved {
    spec: VariantSpec,
    version_id: String,
}

/// Checks a configuration: names, counts and resources in range, every version
/// readable by the caller and Approved.
async fn resolve(db: &Db, p: &Principal, specs: &[VariantSpec]) -> CoreResult<Vec<Resolved>> {
    if specs.is_empty() {
        return Err(CoreError::invalid("variants", "an endpoint needs at least one variant"));
    }
    if specs.len() > 10 {
        return Err(CoreError::invalid("variants", "an endpoint has at most 10 variants"));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut spec = spec.clone();
        spec.name = if spec.name.trim().is_empty() {
            if i == 0 {
                "primary".into()
            } else {
                format!("variant-{}", i + 1)
            }
        } else {
            validate_name("variants.name", &spec.name)?
        };
        if !names.insert(spec.name.clone()) {
            return Err(CoreError::invalid("variants.name", format!("two variants are named {}", spec.name)));
        }
        let check = |ok: bool, field: &'static str, message: String| {
            if ok {
                Ok(())
            } else {
                Err(CoreError::invalid(field, format!("variant {}: {message}", spec.name)))
            }
        };
        check(
            (1..=20).contains(&spec.instance_count),
            "variants.instance_count",
            "instance_count must be 1-20".into(),
        )?;
        check(
            spec.weight.is_finite() && spec.weight > 0.0 && spec.weight <= 1000.0,
            "variants.weight",
            "weight must be a number above 0 and at most 1000".into(),
        )?;
        // 0 reserves no CPU: the instance shares the node with whatever runs there.
        check((0..=256).contains(&spec.cpus), "variants.cpus", "cpus must be 0-256".into())?;
        check((64..=4_194_304).contains(&spec.memory_mb), "variants.memory_mb", "memory_mb must be 64-4194304".into())?;
        check((0..=16).contains(&spec.gpus), "variants.gpus", "gpus must be 0-16".into())?;
        let row = versions::get_for(db, p, &spec.model_group, spec.model_version, Action::GetModelVersion)
            .await
            .map_err(|e| match e {
                CoreError::NotFound(_) => CoreError::invalid(
                    "variants.model_version",
                    format!(
                        "variant {}: version {} of model group {} does not exist",
                        spec.name, spec.model_version, spec.model_group
                    ),
                ),
                other => other,
            })?;
        if row.status != APPROVED {
            return Err(CoreError::invalid(
                "variants.model_version",
                format!(
                    "variant {}: version {} of {} is {}; only Approved versions can be deployed",
                    spec.name, row.version, row.group_name, row.status
                ),
            ));
        }
        let inference: atelier_protocol::models::InferenceSpec =
            serde_json::from_str(&row.inference).unwrap_or_default();
        if row.format != "atelier" && inference.serving_command.trim().is_empty() {
            return Err(CoreError::invalid(
                "variants.model_version",
                format!(
                    "variant {}: version {} of {} is an archive without a serving command; register it with \
                     inference.serving_command",
                    spec.name, row.version, row.group_name
                ),
            ));
        }
        out.push(Resolved { spec, version_id: row.id });
    }
    Ok(out)
}

async fn insert_variants(
    tx: &mut Transaction<'static, Any>,
    endpoint_id: &str,
    generation: i64,
    variants: &[Resolved],
) -> CoreResult<()> {
    for v in variants {
        sqlx::query(
            "INSERT INTO endpoint_variants (id, endpoint_id, generation, name, model_version_id, instance_count, \
             weight, cpus, memory_mb, gpus) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(endpoint_id)
        .bind(generation)
        .bind(&v.spec.name)
        .bind(&v.version_id)
        .bind(v.spec.instance_count)
        .bind(v.spec.weight)
        .bind(v.spec.cpus)
        .bind(v.spec.memory_mb)
        .bind(v.spec.gpus)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A user as the principal of work done on their behalf outside a request (an alarm
/// opening a retraining job, a deployment rule deploying): their current policies apply.
pub(crate) async fn acting_as(db: &Db, username: &str) -> CoreResult<Principal> {
    let user = crate::accounts::find_by_username(db, username)
        .await?
        .ok_or_else(|| CoreError::invalid("user", format!("{username} no longer exists")))?;
    let compiled = std::sync::Arc::new(crate::iam::store::compile_for_user(db, &user).await?);
    Ok(Principal::new(user, crate::authz::Credential::Session, compiled, None, None))
}

/// Appends to an endpoint's event history.
pub(crate) async fn add_event<'e, E>(executor: E, endpoint_id: &str, message: &str) -> CoreResult<()>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query("INSERT INTO endpoint_events (id, endpoint_id, at_ms, message) VALUES ($1, $2, $3, $4)")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(endpoint_id)
        .bind(now_ms())
        .bind(message)
        .execute(executor)
        .await?;
    Ok(())
}

fn describe(variants: &[Resolved]) -> String {
    variants
        .iter()
        .map(|v| {
            format!("{} = {} v{} ×{}", v.spec.name, v.spec.model_group, v.spec.model_version, v.spec.instance_count)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates an endpoint; the reconciler deploys it.
pub async fn create(db: &Db, p: &Principal, new: &NewEndpoint) -> CoreResult<Endpoint> {
    let name = validate_name("name", &new.name)?;
    authorize(p, Action::CreateEndpoint, &resource(&name))?;
    let variants = resolve(db, p, &new.variants).await?;
    let capture =
        new.data_capture.clone().unwrap_or(atelier_protocol::endpoints::DataCapture { percent: 0, budget_mb: 1024 });
    capture::validate(&capture)?;
    let id = uuid::Uuid::new_v4().to_string();
    let at = now();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO endpoints (id, name, status, reason, generation, active_generation, capture_percent, \
         capture_budget_mb, created_by, created_at, updated_at) VALUES ($1, $2, $3, '', 1, NULL, $6, $7, $4, $5, $5)",
    )
    .bind(&id)
    .bind(&name)
    .bind(CREATING)
    .bind(&p.user.username)
    .bind(at)
    .bind(capture.percent)
    .bind(capture.budget_mb)
    .execute(&mut *tx)
    .await
    .map_err(|e| match CoreError::from(e) {
        CoreError::Conflict(_) => CoreError::Conflict(format!("an endpoint named {name} already exists")),
        other => other,
    })?;
    insert_variants(&mut tx, &id, 1, &variants).await?;
    add_event(&mut *tx, &id, &format!("created by {}: {}", p.user.username, describe(&variants))).await?;
    tx.commit().await?;
    p.note_change(format!("created endpoint {name}: {}", describe(&variants)));
    view(db, find(db, &name).await?).await
}

/// Deploys a new configuration: a new generation, started beside the current one,
/// which keeps serving until the new one is healthy.
pub async fn update(db: &Db, p: &Principal, name: &str, config: &EndpointConfig) -> CoreResult<Endpoint> {
    let row = endpoint_for(db, p, name, Action::UpdateEndpoint).await?;
    let mut variants = resolve(db, p, &config.variants).await?;
    // A variant under autoscaling starts within its policy's range.
    let policies = autoscaling::policies(db, &row.id).await?;
    for v in &mut variants {
        let policy = policies.iter().find(|(name, _)| *name == v.spec.name).map(|(_, a)| a);
        v.spec.instance_count = autoscaling::clamp(v.spec.instance_count, policy);
    }
    // Read before the transaction: on SQLite a transaction that reads first and then
    // writes fails at once (rather than waiting) if another connection wrote meanwhile.
    // The conditional update below still makes concurrent updates exclusive.
    let (max,): (Option<i64>,) =
        sqlx::query_as("SELECT CAST(MAX(generation) AS BIGINT) FROM endpoint_variants WHERE endpoint_id = $1")
            .bind(&row.id)
            .fetch_one(&db.pool)
            .await?;
    let generation = max.unwrap_or(0).max(row.generation) + 1;
    let mut tx = db.pool.begin().await?;
    // Conditional on the generation read: of two concurrent updates, one wins.
    let status = if row.active_generation.is_some() { UPDATING } else { CREATING };
    let changed = sqlx::query(
        "UPDATE endpoints SET generation = $1, status = $2, reason = '', updated_at = $3 WHERE id = $4 AND generation = $5",
    )
    .bind(generation)
    .bind(status)
    .bind(now())
    .bind(&row.id)
    .bind(row.generation)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() != 1 {
        return Err(CoreError::Conflict(format!(
            "endpoint {name} changed while you were updating it; reload and retry"
        )));
    }
    insert_variants(&mut tx, &row.id, generation, &variants).await?;
    // Instances of a superseded, never-active generation are no longer wanted.
    let keep = [generation, row.active_generation.unwrap_or(generation)];
    reconcile::stop_other_generations(&mut *tx, &row.id, keep, "superseded by a newer configuration", now()).await?;
    add_event(&mut *tx, &row.id, &format!("update by {}: {}", p.user.username, describe(&variants))).await?;
    tx.commit().await?;
    p.note_change(format!("updated endpoint {name}: {}", describe(&variants)));
    view(db, find(db, name).await?).await
}

/// Deletes an endpoint; its instances stop when their agents next hear from the server.
pub async fn delete(db: &Db, store: &crate::artifacts::ArtifactStore, p: &Principal, name: &str) -> CoreResult<()> {
    let row = endpoint_for(db, p, name, Action::DeleteEndpoint).await?;
    let captured: Vec<(String,)> = sqlx::query_as("SELECT artifact_id FROM endpoint_captures WHERE endpoint_id = $1")
        .bind(&row.id)
        .fetch_all(&db.pool)
        .await?;
    let mut tx = db.pool.begin().await?;
    let tables = [
        "endpoint_alarms",
        "endpoint_autoscaling",
        "monitor_runs",
        "monitor_schedules",
        "endpoint_captures",
        "endpoint_latency",
        "endpoint_metrics",
        "endpoint_events",
        "endpoint_instances",
        "endpoint_variants",
    ];
    for table in tables {
        sqlx::query(&format!("DELETE FROM {table} WHERE endpoint_id = $1")).bind(&row.id).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM endpoints WHERE id = $1").bind(&row.id).execute(&mut *tx).await?;
    tx.commit().await?;
    // The captured files go too (after the commit: a failure leaves files, never rows
    // naming missing files).
    for (artifact,) in captured {
        if let Err(err) = store.delete(db, &artifact).await {
            tracing::warn!(error = %err, "a captured file of a deleted endpoint could not be deleted");
        }
    }
    p.note_change(format!("deleted endpoint {name}"));
    Ok(())
}

/// Endpoints the principal may see.
pub async fn list(db: &Db, p: &Principal) -> CoreResult<Vec<Endpoint>> {
    authorize(p, Action::ListEndpoints, &resource("*"))?;
    let rows: Vec<EndpointRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM endpoints ORDER BY name")).fetch_all(&db.pool).await?;
    let mut out = Vec::new();
    for row in rows.into_iter().filter(|r| p.can(Action::GetEndpoint, &row_resource(r))) {
        out.push(view(db, row).await?);
    }
    Ok(out)
}

/// One endpoint.
pub async fn get(db: &Db, p: &Principal, name: &str) -> CoreResult<Endpoint> {
    let row = endpoint_for(db, p, name, Action::GetEndpoint).await?;
    view(db, row).await
}

/// An endpoint's event history, newest first.
pub async fn events(db: &Db, p: &Principal, name: &str) -> CoreResult<Vec<EndpointEvent>> {
    let row = endpoint_for(db, p, name, Action::GetEndpoint).await?;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT at_ms, message FROM endpoint_events WHERE endpoint_id = $1 ORDER BY at_ms DESC, id DESC LIMIT 200",
    )
    .bind(&row.id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|(at_ms, message)| EndpointEvent { at_ms, message }).collect())
}

/// The endpoints serving a model version (the registry refuses to delete it).
pub async fn serving(db: &Db, version_id: &str) -> CoreResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT e.name FROM endpoint_variants v JOIN endpoints e ON e.id = v.endpoint_id \
         WHERE v.model_version_id = $1 AND (v.generation = e.generation OR v.generation = e.active_generation) \
         ORDER BY e.name",
    )
    .bind(version_id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// Removes the past configurations that named a version about to be deleted (callers
/// checked that no endpoint serves or deploys it).
pub(crate) async fn forget_version(db: &Db, version_id: &str) -> CoreResult<()> {
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "DELETE FROM endpoint_instances WHERE variant_id IN (SELECT id FROM endpoint_variants WHERE model_version_id = $1)",
    )
    .bind(version_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM endpoint_variants WHERE model_version_id = $1").bind(version_id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct VariantRow {
    id: String,
    generation: i64,
    name: String,
    group_name: String,
    version: i64,
    instance_count: i64,
    weight: f64,
    cpus: i64,
    memory_mb: i64,
    gpus: i64,
}

#[derive(sqlx::FromRow)]
struct InstanceRow {
    id: String,
    variant_id: String,
    node_name: Option<String>,
    gpu_indices: String,
    state: String,
    message: String,
    updated_at: i64,
}

/// The wire form: the active (or first deploying) generation's variants, an update's
/// variants, and the live instances of both.
async fn view(db: &Db, row: EndpointRow) -> CoreResult<Endpoint> {
    let variants: Vec<VariantRow> = sqlx::query_as(
        "SELECT v.id, v.generation, v.name, g.name AS group_name, m.version, v.instance_count, v.weight, v.cpus, \
         v.memory_mb, v.gpus FROM endpoint_variants v JOIN model_versions m ON m.id = v.model_version_id \
         JOIN model_groups g ON g.id = m.group_id WHERE v.endpoint_id = $1 AND (v.generation = $2 OR v.generation = $3) \
         ORDER BY v.generation, v.name",
    )
    .bind(&row.id)
    .bind(row.generation)
    .bind(row.active_generation.unwrap_or(-1))
    .fetch_all(&db.pool)
    .await?;
    let instances: Vec<InstanceRow> = sqlx::query_as(
        "SELECT i.id, i.variant_id, n.name AS node_name, i.gpu_indices, i.state, i.message, i.updated_at \
         FROM endpoint_instances i LEFT JOIN nodes n ON n.id = i.node_id \
         WHERE i.endpoint_id = $1 AND (i.state IN ('Pending', 'Starting', 'InService') OR i.updated_at > $2) \
         ORDER BY i.created_at, i.id",
    )
    .bind(&row.id)
    // Failed and stopped instances stay listed for ten minutes, so their reason shows.
    .bind(now() - 600)
    .fetch_all(&db.pool)
    .await?;
    let by_id: HashMap<&str, &VariantRow> = variants.iter().map(|v| (v.id.as_str(), v)).collect();
    let policies = autoscaling::policies(db, &row.id).await?;
    let to_wire = |v: &VariantRow| Variant {
        name: v.name.clone(),
        generation: v.generation,
        model_group: v.group_name.clone(),
        model_version: v.version,
        instance_count: v.instance_count,
        weight: v.weight,
        cpus: v.cpus,
        memory_mb: v.memory_mb,
        gpus: v.gpus,
        healthy: instances.iter().filter(|i| i.variant_id == v.id && i.state == "InService").count() as i64,
        autoscaling: policies.iter().find(|(name, _)| *name == v.name).map(|(_, a)| a.clone()),
    };
    let shown = row.active_generation.unwrap_or(row.generation);
    let current = variants.iter().filter(|v| v.generation == shown).map(to_wire).collect();
    let pending = variants.iter().filter(|v| v.generation != shown).map(to_wire).collect();
    let instances = instances
        .iter()
        .map(|i| {
            let variant = by_id.get(i.variant_id.as_str());
            Instance {
                id: i.id.clone(),
                variant: variant.map(|v| v.name.clone()).unwrap_or_default(),
                generation: variant.map(|v| v.generation).unwrap_or_default(),
                node: i.node_name.clone(),
                gpus: serde_json::from_str(&i.gpu_indices).unwrap_or_default(),
                state: i.state.clone(),
                message: i.message.clone(),
                updated_at: i.updated_at,
            }
        })
        .collect();
    let data_capture = capture::status(db, &row).await?;
    Ok(Endpoint {
        data_capture,
        name: row.name,
        status: row.status,
        reason: row.reason,
        generation: row.generation,
        active_generation: row.active_generation,
        variants: current,
        pending_variants: pending,
        instances,
        created_by: row.created_by,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
