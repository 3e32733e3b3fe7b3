//! Keeps every endpoint's instances what its configuration asks for: replaces failed
//! ones, places new ones on compute nodes, moves traffic to a new generation once it
//! is healthy, and tells each agent which model servers to run.
//!
//! All of it is conditional updates on the database, so several server replicas may
//! run the reconciler at once without placing one instance twice.

use std::collections::HashMap;

use atelier_protocol::endpoints::{
    InstanceOrder, InstanceReport, CREATING, FAILED, INSTANCE_FAILED, INSTANCE_IN_SERVICE, INSTANCE_PENDING,
    INSTANCE_STARTING, IN_SERVICE, UPDATING,
};
use atelier_protocol::Resources;

use super::{add_event, EndpointRow, COLUMNS};
use crate::compute::nodes::NodeCaller;
use crate::compute::placement;
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// Instances that hold (or will hold) resources on a node.
pub(crate) const LIVE: &str = "('Pending', 'Starting', 'InService')";

/// A variant gives up replacing instances after this many failures within
/// [`FAILURE_WINDOW_SECS`] per wanted instance: a model server that cannot start
/// would otherwise be restarted forever.
const FAILURES_PER_INSTANCE: i64 = 3;
const FAILURE_WINDOW_SECS: i64 = 600;

#[derive(sqlx::FromRow)]
struct TargetVariant {
    id: String,
    name: String,
    instance_count: i64,
    cpus: i64,
    memory_mb: i64,
    gpus: i64,
}

/// One pass over every endpoint. Returns whether anything changed.
pub async fn reconcile(db: &Db) -> CoreResult<bool> {
    let t = now();
    // Instances on nodes that stopped answering (or were removed) have failed.
    let lost = sqlx::query(
        "UPDATE endpoint_instances SET state = 'Failed', message = 'its compute node stopped answering', \
         updated_at = $1 WHERE (state IN ('Starting', 'InService') AND (node_id IS NULL OR node_id IN \
         (SELECT id FROM nodes WHERE status <> 'Ready'))) OR (state = 'Pending' AND node_id IN \
         (SELECT id FROM nodes WHERE status <> 'Ready'))",
    )
    .bind(t)
    .execute(&db.pool)
    .await?;
    let mut changed = lost.rows_affected() > 0;
    let endpoints: Vec<EndpointRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM endpoints")).fetch_all(&db.pool).await?;
    for endpoint in &endpoints {
        changed |= reconcile_one(db, endpoint, t).await?;
    }
    changed |= place(db).await?;
    Ok(changed)
}

async fn reconcile_one(db: &Db, e: &EndpointRow, t: i64) -> CoreResult<bool> {
    let variants: Vec<TargetVariant> = sqlx::query_as(
        "SELECT id, name, instance_count, cpus, memory_mb, gpus FROM endpoint_variants \
         WHERE endpoint_id = $1 AND generation = $2 ORDER BY name",
    )
    .bind(&e.id)
    .bind(e.generation)
    .fetch_all(&db.pool)
    .await?;
    let counts: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT variant_id, state, CAST(COUNT(*) AS BIGINT) FROM endpoint_instances WHERE endpoint_id = $1 \
         AND (state IN {LIVE} OR (state = 'Failed' AND updated_at > $2)) GROUP BY variant_id, state"
    ))
    .bind(&e.id)
    .bind(t - FAILURE_WINDOW_SECS)
    .fetch_all(&db.pool)
    .await?;
    let count = |variant: &str, states: &[&str]| -> i64 {
        counts.iter().filter(|(v, s, _)| v == variant && states.contains(&s.as_str())).map(|(_, _, n)| n).sum()
    };
    let mut changed = false;
    let mut all_healthy = true;
    for v in &variants {
        let live = count(&v.id, &[INSTANCE_PENDING, INSTANCE_STARTING, INSTANCE_IN_SERVICE]);
        let failed = count(&v.id, &[INSTANCE_FAILED]);
        all_healthy &= count(&v.id, &[INSTANCE_IN_SERVICE]) >= v.instance_count;
        if failed >= FAILURES_PER_INSTANCE * v.instance_count && live < v.instance_count {
            return give_up(db, e, &v.id, &v.name).await;
        }
        for _ in live..v.instance_count {
            sqlx::query(
                "INSERT INTO endpoint_instances (id, endpoint_id, variant_id, node_id, cpus, memory_mb, gpu_indices, \
                 state, url, message, created_at, updated_at, secret) \
                 VALUES ($1, $2, $3, NULL, $4, $5, '[]', 'Pending', NULL, $6, $7, $7, $8)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&e.id)
            .bind(&v.id)
            .bind(v.cpus)
            .bind(v.memory_mb)
            .bind(format!(
                "waiting for a compute node with {} CPUs, {} MB and {} GPUs free",
                v.cpus, v.memory_mb, v.gpus
            ))
            .bind(t)
            .bind(crate::accounts::random_secret(32))
            .execute(&db.pool)
            .await?;
            changed = true;
        }
        if live > v.instance_count {
            changed |= scale_in(db, &v.id, live - v.instance_count, t).await?;
        }
    }
    let promotable = e.status == CREATING || e.status == UPDATING || e.status == FAILED;
    if all_healthy && !variants.is_empty() && (promotable || e.active_generation != Some(e.generation)) {
        changed |= promote(db, e, t).await?;
    }
    record_instances(db, e, t).await?;
    Ok(changed)
}

/// Stops the live instances of every configuration of an endpoint but the two in
/// `keep` (give one twice to keep one): when traffic moved, or an update was rolled
/// back or superseded.
pub(super) async fn stop_other_generations<'e, E>(
    executor: E,
    endpoint_id: &str,
    keep: [i64; 2],
    message: &str,
    t: i64,
) -> CoreResult<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(&format!(
        "UPDATE endpoint_instances SET state = 'Stopped', message = $1, updated_at = $2 WHERE endpoint_id = $3 \
         AND state IN {LIVE} AND variant_id IN (SELECT id FROM endpoint_variants WHERE endpoint_id = $3 \
         AND generation <> $4 AND generation <> $5)"
    ))
    .bind(message)
    .bind(t)
    .bind(endpoint_id)
    .bind(keep[0])
    .bind(keep[1])
    .execute(executor)
    .await?;
    Ok(())
}

/// The count went down (autoscaling): the extra instances stop, those not serving yet
/// first, then the newest. The agent lets a stopped instance drain before it ends it.
async fn scale_in(db: &Db, variant_id: &str, extra: i64, t: i64) -> CoreResult<bool> {
    let victims: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT id FROM endpoint_instances WHERE variant_id = $1 AND state IN {LIVE} ORDER BY \
         CASE state WHEN 'Pending' THEN 0 WHEN 'Starting' THEN 1 ELSE 2 END, created_at DESC, id DESC LIMIT $2"
    ))
    .bind(variant_id)
    .bind(extra)
    .fetch_all(&db.pool)
    .await?;
    let mut changed = false;
    for (id,) in victims {
        let done = sqlx::query(&format!(
            "UPDATE endpoint_instances SET state = 'Stopped', message = 'scaled in', updated_at = $1 \
             WHERE id = $2 AND state IN {LIVE}"
        ))
        .bind(t)
        .bind(&id)
        .execute(&db.pool)
        .await?;
        changed |= done.rows_affected() == 1;
    }
    Ok(changed)
}

/// Every instance of the deployed generation is healthy: traffic moves to it, and the
/// previous generation's instances are stopped.
async fn promote(db: &Db, e: &EndpointRow, t: i64) -> CoreResult<bool> {
    let mut tx = db.pool.begin().await?;
    let done = sqlx::query(
        "UPDATE endpoints SET active_generation = generation, status = $1, reason = '', updated_at = $2 \
         WHERE id = $3 AND generation = $4",
    )
    .bind(IN_SERVICE)
    .bind(t)
    .bind(&e.id)
    .bind(e.generation)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    let replaced = format!("replaced by configuration {}", e.generation);
    stop_other_generations(&mut *tx, &e.id, [e.generation; 2], &replaced, t).await?;
    let message = match e.active_generation {
        Some(old) if old != e.generation => {
            format!("configuration {} in service; traffic moved from configuration {old}", e.generation)
        }
        _ => format!("configuration {} in service", e.generation),
    };
    add_event(&mut *tx, &e.id, &message).await?;
    tx.commit().await?;
    Ok(true)
}

/// A variant's instances keep failing. A first deployment fails; an update is rolled
/// back, and the configuration already serving goes on.
async fn give_up(db: &Db, e: &EndpointRow, variant_id: &str, variant: &str) -> CoreResult<bool> {
    let last: Option<(String,)> = sqlx::query_as(
        "SELECT message FROM endpoint_instances WHERE variant_id = $1 AND state = 'Failed' ORDER BY updated_at DESC LIMIT 1",
    )
    .bind(variant_id)
    .fetch_optional(&db.pool)
    .await?;
    let cause = last.map(|(m,)| m).unwrap_or_default();
    let t = now();
    let mut tx = db.pool.begin().await?;
    let (status, generation, reason) = match e.active_generation {
        Some(active) if active != e.generation => (
            IN_SERVICE,
            active,
            format!(
                "the update to configuration {} was rolled back: variant {variant}'s instances kept failing: {cause}",
                e.generation
            ),
        ),
        _ if e.status == FAILED => return Ok(false),
        _ => (FAILED, e.generation, format!("variant {variant}'s instances kept failing: {cause}")),
    };
    let done = sqlx::query(
        "UPDATE endpoints SET status = $1, generation = $2, reason = $3, updated_at = $4 WHERE id = $5 AND generation = $6",
    )
    .bind(status)
    .bind(generation)
    .bind(&reason)
    .bind(t)
    .bind(&e.id)
    .bind(e.generation)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    if generation != e.generation {
        stop_other_generations(&mut *tx, &e.id, [generation; 2], "the update was rolled back", t).await?;
    }
    add_event(&mut *tx, &e.id, &reason).await?;
    tx.commit().await?;
    Ok(true)
}

/// The healthy instance count of the serving configuration's variants, as this
/// minute's gauge. Written only when it differs from what this minute holds: the
/// reconciler runs every second, and writes contend on SQLite.
async fn record_instances(db: &Db, e: &EndpointRow, t: i64) -> CoreResult<()> {
    let Some(active) = e.active_generation else { return Ok(()) };
    let minute = t - t.rem_euclid(60);
    let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT v.name, CAST(COUNT(i.id) AS BIGINT), \
         (SELECT m.instances FROM endpoint_metrics m WHERE m.endpoint_id = v.endpoint_id AND m.variant = v.name \
          AND m.minute = $3) FROM endpoint_variants v LEFT JOIN endpoint_instances i \
         ON i.variant_id = v.id AND i.state = 'InService' WHERE v.endpoint_id = $1 AND v.generation = $2 \
         GROUP BY v.endpoint_id, v.name",
    )
    .bind(&e.id)
    .bind(active)
    .bind(minute)
    .fetch_all(&db.pool)
    .await?;
    for (variant, n, _) in rows.into_iter().filter(|(_, n, stored)| *stored != Some(*n)) {
        sqlx::query(
            "INSERT INTO endpoint_metrics (endpoint_id, variant, minute, instances) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (endpoint_id, variant, minute) DO UPDATE SET instances = excluded.instances",
        )
        .bind(&e.id)
        .bind(&variant)
        .bind(minute)
        .bind(n)
        .execute(&db.pool)
        .await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Unplaced {
    id: String,
    variant_id: String,
    cpus: i64,
    memory_mb: i64,
    gpus: i64,
}

/// Places pending instances: on a Ready node with room, spreading a variant's
/// instances across nodes, then preferring the node with the most free CPUs.
async fn place(db: &Db) -> CoreResult<bool> {
    let pending: Vec<Unplaced> = sqlx::query_as(
        "SELECT i.id, i.variant_id, i.cpus, i.memory_mb, v.gpus FROM endpoint_instances i \
         JOIN endpoint_variants v ON v.id = i.variant_id WHERE i.state = 'Pending' AND i.node_id IS NULL \
         ORDER BY i.created_at",
    )
    .fetch_all(&db.pool)
    .await?;
    if pending.is_empty() {
        return Ok(false);
    }
    // Held until every claim below is stored: a job's lease or a kernel's start must
    // not count the same room.
    let _placing = placement::lock().await;
    let mut nodes = placement::capacities(db, false).await?;
    let spread: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT variant_id, node_id FROM endpoint_instances WHERE state IN {LIVE} AND node_id IS NOT NULL"
    ))
    .fetch_all(&db.pool)
    .await?;
    let mut per_node: HashMap<(String, String), usize> = HashMap::new();
    for (variant, node) in spread {
        *per_node.entry((variant, node)).or_default() += 1;
    }
    let mut changed = false;
    for instance in pending {
        let r = Resources {
            cpus: instance.cpus.max(0) as u32,
            memory_mb: instance.memory_mb.max(0) as u64,
            gpus: instance.gpus.max(0) as u32,
            labels: Default::default(),
        };
        let best = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, (id, cap))| cap.fit(&r).map(|gpus| (i, id, cap, gpus)))
            .min_by_key(|(_, id, cap, _)| {
                let same = per_node.get(&(instance.variant_id.clone(), (*id).clone())).copied().unwrap_or(0);
                (same, std::cmp::Reverse(cap.free_cpus()))
            })
            .map(|(i, _, _, gpus)| (i, gpus));
        let Some((i, gpus)) = best else { continue };
        let (node_id, cap) = &mut nodes[i];
        let placed = sqlx::query(
            "UPDATE endpoint_instances SET node_id = $1, gpu_indices = $2, message = $3, updated_at = $4 \
             WHERE id = $5 AND node_id IS NULL AND state = 'Pending'",
        )
        .bind(&*node_id)
        .bind(serde_json::to_string(&gpus).map_err(CoreError::internal)?)
        .bind(format!("placed on node {}; waiting for its agent", cap.name))
        .bind(now())
        .bind(&instance.id)
        .execute(&db.pool)
        .await?;
        if placed.rows_affected() == 1 {
            cap.take(&r, &gpus);
            *per_node.entry((instance.variant_id.clone(), node_id.clone())).or_default() += 1;
            changed = true;
        }
    }
    Ok(changed)
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: String,
    endpoint: String,
    variant: String,
    artifact_id: String,
    sha256: String,
    format: String,
    inference: String,
    gpu_indices: String,
    secret: String,
    memory_mb: i64,
    cpus: i64,
}

/// A heartbeat's part for serving: records what the agent says of its instances and
/// answers with every instance the node should run.
pub async fn sync_node(db: &Db, node: &NodeCaller, reports: &[InstanceReport]) -> CoreResult<Vec<InstanceOrder>> {
    let t = now();
    for report in reports {
        let state = match report.state.as_str() {
            INSTANCE_STARTING | INSTANCE_IN_SERVICE | INSTANCE_FAILED => report.state.as_str(),
            _ => continue,
        };
        let mut message: String = report.message.chars().take(2000).collect();
        let mut url = if state == INSTANCE_IN_SERVICE { report.url.as_deref() } else { None };
        // Only on the node's own address: the instance's secret goes with every request.
        let state = match url {
            Some(off) if !node.owns_url(off) => {
                let shown: String = off.chars().take(200).collect();
                message = format!("refused: the agent reported the URL {shown} off the node's address");
                url = None;
                INSTANCE_FAILED
            }
            _ => state,
        };
        // Only live instances of this node change, and only when something did: a
        // stopped instance stays stopped whatever a late report says.
        let changed: Option<(String,)> = sqlx::query_as(&format!(
            "UPDATE endpoint_instances SET state = $1, url = $2, message = $3, updated_at = $4 \
             WHERE id = $5 AND node_id = $6 AND state IN {LIVE} AND (state <> $1 OR message <> $3) RETURNING endpoint_id"
        ))
        .bind(state)
        .bind(url)
        .bind(&message)
        .bind(t)
        .bind(&report.instance_id)
        .bind(&node.id)
        .fetch_optional(&db.pool)
        .await?;
        if let (Some((endpoint_id,)), INSTANCE_IN_SERVICE | INSTANCE_FAILED) = (changed, state) {
            let short: String =
                report.instance_id.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
            let text = match state {
                INSTANCE_IN_SERVICE => format!("instance …{short} on node {} is in service", node.name),
                _ => format!("instance …{short} on node {} failed: {message}", node.name),
            };
            add_event(&db.pool, &endpoint_id, &text).await?;
        }
    }
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT i.id, e.name AS endpoint, v.name AS variant, m.artifact_id, a.sha256, m.format, m.inference, \
         i.gpu_indices, i.secret, i.memory_mb, i.cpus FROM endpoint_instances i JOIN endpoints e ON e.id = i.endpoint_id \
         JOIN endpoint_variants v ON v.id = i.variant_id JOIN model_versions m ON m.id = v.model_version_id \
         JOIN artifacts a ON a.id = m.artifact_id WHERE i.node_id = $1 AND i.state IN {LIVE} ORDER BY i.id"
    ))
    .bind(&node.id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let inference: atelier_protocol::models::InferenceSpec =
                serde_json::from_str(&r.inference).unwrap_or_default();
            InstanceOrder {
                instance_id: r.id,
                endpoint: r.endpoint,
                variant: r.variant,
                artifact_id: r.artifact_id,
                artifact_sha256: r.sha256,
                format: r.format,
                serving_command: inference.serving_command,
                gpus: serde_json::from_str(&r.gpu_indices).unwrap_or_default(),
                secret: r.secret,
                memory_mb: u64::try_from(r.memory_mb).unwrap_or(0),
                cpus: u32::try_from(r.cpus).unwrap_or(0),
            }
        })
        .collect())
}

/// The artifact a node may fetch for one of its live instances.
pub async fn instance_artifact(db: &Db, node: &NodeCaller, instance_id: &str) -> CoreResult<String> {
    let row: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT m.artifact_id FROM endpoint_instances i JOIN endpoint_variants v ON v.id = i.variant_id \
         JOIN model_versions m ON m.id = v.model_version_id WHERE i.id = $1 AND i.node_id = $2 AND i.state IN {LIVE}"
    ))
    .bind(instance_id)
    .bind(&node.id)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|(a,)| a).ok_or_else(|| CoreError::Forbidden(format!("instance {instance_id} is not placed on this node")))
}

/// Where an endpoint's traffic goes: the serving configuration's variants, each with
/// the URLs of its healthy instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub endpoint_id: String,
    /// With its creator, for policies that test it.
    pub resource: crate::authz::Resource,
    pub name: String,
    /// The share of invocations to capture, 0 when off or paused.
    pub capture_percent: i64,
    pub variants: Vec<RouteVariant>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteVariant {
    pub name: String,
    pub weight: f64,
    pub instances: Vec<RouteInstance>,
}

/// A healthy instance: where its model server listens, and the secret it expects.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteInstance {
    pub url: String,
    pub secret: String,
}

/// The route of an endpoint (callers authorize).
pub async fn route(db: &Db, name: &str) -> CoreResult<Route> {
    let e = super::find(db, name).await?;
    let rows: Vec<(String, f64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT v.name, v.weight, i.url, i.secret FROM endpoint_variants v LEFT JOIN endpoint_instances i \
         ON i.variant_id = v.id AND i.state = 'InService' AND i.url IS NOT NULL \
         WHERE v.endpoint_id = $1 AND v.generation = $2 ORDER BY v.name, i.id",
    )
    .bind(&e.id)
    .bind(e.active_generation.unwrap_or(-1))
    .fetch_all(&db.pool)
    .await?;
    let mut variants: Vec<RouteVariant> = Vec::new();
    for (name, weight, url, secret) in rows {
        if variants.last().is_none_or(|v| v.name != name) {
            variants.push(RouteVariant { name, weight, instances: Vec::new() });
        }
        if let (Some(url), Some(v)) = (url, variants.last_mut()) {
            v.instances.push(RouteInstance { url, secret: secret.unwrap_or_default() });
        }
    }
    let capture_percent = if e.capture_paused.is_empty() { e.capture_percent } else { 0 };
    Ok(Route { resource: super::row_resource(&e), name: e.name, capture_percent, endpoint_id: e.id, variants })
}
