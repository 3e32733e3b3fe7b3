//! Compute nodes: issuing node tokens, agent registration and heartbeats, listing,
//! utilization history and deregistration.

use std::collections::BTreeMap;

use atelier_protocol::{Gpu, NodeInfo, Usage, NODE_TOKEN_PREFIX};
use serde::Serialize;

use super::{jobs, Settings};
use crate::accounts::random_secret;
use crate::authz::{authorize, Action, Principal, Resource};
use crate::db::Db;
use crate::iam::store::validate_name;
use crate::tokens::hash;
use crate::{now, CoreError, CoreResult};

/// Node statuses.
pub mod status {
    /// A token was issued; no agent has registered with it yet.
    pub const PENDING: &str = "Pending";
    pub const READY: &str = "Ready";
    /// Missed its heartbeats; its work was requeued.
    pub const LOST: &str = "Lost";
    /// Removed by an admin; its token no longer works.
    pub const DEREGISTERED: &str = "Deregistered";
}

/// A compute node's record.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub token_prefix: String,
    pub status: String,
    pub hostname: String,
    pub os: String,
    pub cpus: i64,
    pub memory_mb: i64,
    pub disk_free_mb: i64,
    pub gpus: String,
    pub labels: String,
    pub agent_version: String,
    /// How its agent contains users' code ("unsandboxed", or '' from an old agent).
    pub sandbox: String,
    pub usage: String,
    pub created_by: String,
    pub created_at: i64,
    pub registered_at: Option<i64>,
    pub last_heartbeat_at: Option<i64>,
}

pub(super) const NODE_COLUMNS: &str =
    "id, name, token_prefix, status, hostname, os, cpus, memory_mb, disk_free_mb, gpus, \
                            labels, agent_version, sandbox, usage, created_by, created_at, registered_at, last_heartbeat_at";

impl Node {
    pub fn gpu_list(&self) -> Vec<Gpu> {
        serde_json::from_str(&self.gpus).unwrap_or_default()
    }
    pub fn label_map(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.labels).unwrap_or_default()
    }
    pub fn latest_usage(&self) -> Usage {
        serde_json::from_str(&self.usage).unwrap_or_default()
    }
}

/// The node a request's node token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCaller {
    pub id: String,
    pub name: String,
    /// Where its model servers and kernel gateways may be ('' for nodes registered
    /// before this was recorded: not checked).
    pub advertise_host: String,
}

impl NodeCaller {
    /// Whether a URL the agent reports is on the node's registered address: the
    /// server sends kernels' and instances' secrets to such URLs, and must never send
    /// them to an address a stolen node token chose.
    pub fn owns_url(&self, url: &str) -> bool {
        if self.advertise_host.is_empty() {
            return true;
        }
        let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        !authority.contains('@') && host.eq_ignore_ascii_case(self.advertise_host.trim_matches(['[', ']']))
    }
}

/// A node just created, with its token (shown once).
#[derive(Debug, Clone)]
pub struct CreatedNode {
    pub node: Node,
    pub token: String,
}

/// The resource name of a node.
pub fn resource(name: &str) -> Resource {
    Resource::new(format!("atelier:compute:node/{name}"))
}

/// Issues the token for a new node called `name`; the node appears as Pending until
/// an agent registers with the token.
pub async fn create(db: &Db, p: &Principal, name: &str) -> CoreResult<CreatedNode> {
    let name = validate_name("name", name)?;
    authorize(p, Action::CreateNodeToken, &resource(&name))?;
    let created = insert(db, &name, &p.user.username).await?;
    p.note_change(format!("issued a token for compute node {name}"));
    Ok(created)
}

/// Adds a node without a principal: for the operator's command line, which has the
/// database itself.
pub async fn create_unchecked(db: &Db, name: &str, created_by: &str) -> CoreResult<CreatedNode> {
    let name = validate_name("name", name)?;
    insert(db, &name, created_by).await
}

async fn insert(db: &Db, name: &str, created_by: &str) -> CoreResult<CreatedNode> {
    let token = format!("{NODE_TOKEN_PREFIX}{}", random_secret(32));
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO nodes (id, name, token_hash, token_prefix, status, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(name)
    .bind(hash(&token))
    .bind(&token[..NODE_TOKEN_PREFIX.len() + 6])
    .bind(status::PENDING)
    .bind(created_by)
    .bind(now())
    .execute(&db.pool)
    .await
    .map_err(|e| match CoreError::from(e) {
        CoreError::Conflict(_) => CoreError::Conflict(format!("a compute node named {name} already exists")),
        other => other,
    })?;
    let node = find(db, name).await?.ok_or(CoreError::NotFound("compute node"))?;
    Ok(CreatedNode { node, token })
}

/// Issues a fresh token for the node `name`, creating the node if needed (the server's
/// own local agent gets a new token at every start; the old one stops working).
pub async fn issue_local_token(db: &Db, name: &str) -> CoreResult<String> {
    match find(db, name).await? {
        None => Ok(insert(db, name, "system").await?.token),
        Some(node) => {
            let token = format!("{NODE_TOKEN_PREFIX}{}", random_secret(32));
            let status = if node.status == status::DEREGISTERED { status::PENDING } else { node.status.as_str() };
            sqlx::query("UPDATE nodes SET token_hash = $1, token_prefix = $2, status = $3 WHERE id = $4")
                .bind(hash(&token))
                .bind(&token[..NODE_TOKEN_PREFIX.len() + 6])
                .bind(status)
                .bind(&node.id)
                .execute(&db.pool)
                .await?;
            Ok(token)
        }
    }
}

async fn find(db: &Db, name: &str) -> CoreResult<Option<Node>> {
    Ok(sqlx::query_as(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE name = $1"))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?)
}

/// The node whose token this is. A deregistered node's token is refused.
pub async fn authenticate(db: &Db, secret: &str) -> CoreResult<NodeCaller> {
    let refused = || CoreError::Unauthenticated("unknown or revoked node token".into());
    if !secret.starts_with(NODE_TOKEN_PREFIX) {
        return Err(refused());
    }
    let row: Option<(String, String, String, String)> =
        sqlx::query_as("SELECT id, name, status, advertise_host FROM nodes WHERE token_hash = $1")
            .bind(hash(secret))
            .fetch_optional(&db.pool)
            .await?;
    match row {
        Some((id, name, status, advertise_host)) if status != status::DEREGISTERED => {
            Ok(NodeCaller { id, name, advertise_host })
        }
        _ => Err(refused()),
    }
}

/// An agent (re)starting on the node: records what the node is, marks it Ready and
/// requeues whatever the node was running, since a starting agent holds nothing.
pub async fn register(db: &Db, node: &NodeCaller, info: &NodeInfo) -> CoreResult<()> {
    if !info.name.is_empty() && info.name != node.name {
        return Err(CoreError::invalid(
            "name",
            format!("this token registers the node \"{}\", not \"{}\"", node.name, info.name),
        ));
    }
    for (k, v) in &info.labels {
        validate_name("label", k)?;
        validate_name("label", v)?;
    }
    refuse_growth(db, node, info).await?;
    let t = now();
    sqlx::query(
        "UPDATE nodes SET status = $1, hostname = $2, os = $3, cpus = $4, memory_mb = $5, disk_free_mb = $6, \
         gpus = $7, labels = $8, agent_version = $9, registered_at = $10, last_heartbeat_at = $10, sandbox = $12, \
         advertise_host = $13, approved_cpus = COALESCE(approved_cpus, $4), \
         approved_memory_mb = COALESCE(approved_memory_mb, $5), approved_gpus = COALESCE(approved_gpus, $7) \
         WHERE id = $11 AND status <> 'Deregistered'",
    )
    .bind(status::READY)
    .bind(truncate(&info.hostname, 255))
    .bind(truncate(&info.os, 255))
    .bind(i64::from(info.cpus))
    .bind(info.memory_mb as i64)
    .bind(info.disk_free_mb as i64)
    .bind(serde_json::to_string(&info.gpus).map_err(CoreError::internal)?)
    .bind(serde_json::to_string(&info.labels).map_err(CoreError::internal)?)
    .bind(truncate(&info.agent_version, 64))
    .bind(t)
    .bind(&node.id)
    .bind(truncate(&info.sandbox, 255))
    .bind(truncate(&info.advertise_host, 255))
    .execute(&db.pool)
    .await?;
    jobs::requeue_node(db, &node.id, &format!("the agent on {} restarted", node.name)).await?;
    Ok(())
}

/// What a node's first registration reported is what an administrator let in: an
/// agent holding its token may come back with as much or less, never with more CPUs,
/// memory or GPUs, nor on another address (a stolen token would otherwise attract
/// other users' work and their kernels' secrets). Growing a node means deregistering
/// it and adding it again.
async fn refuse_growth(db: &Db, node: &NodeCaller, info: &NodeInfo) -> CoreResult<()> {
    #[derive(sqlx::FromRow)]
    struct Approved {
        approved_cpus: Option<i64>,
        approved_memory_mb: Option<i64>,
        approved_gpus: Option<String>,
        advertise_host: String,
    }
    let known: Option<Approved> = sqlx::query_as(
        "SELECT approved_cpus, approved_memory_mb, approved_gpus, advertise_host FROM nodes WHERE id = $1",
    )
    .bind(&node.id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(Approved {
        approved_cpus: Some(cpus),
        approved_memory_mb: Some(memory_mb),
        approved_gpus: Some(gpus),
        advertise_host: host,
    }) = known
    else {
        return Ok(());
    };
    let known_gpus: Vec<Gpu> = serde_json::from_str(&gpus).unwrap_or_default();
    let mut grown = Vec::new();
    if i64::from(info.cpus) > cpus {
        grown.push(format!("{} CPUs (first registered with {cpus})", info.cpus));
    }
    // Total memory reads a little differently across kernels and boots.
    if info.memory_mb as i64 > memory_mb + memory_mb / 20 {
        grown.push(format!("{} MB of memory (first registered with {memory_mb} MB)", info.memory_mb));
    }
    for gpu in info.gpus.iter().filter(|g| !known_gpus.iter().any(|k| k.uuid == g.uuid)) {
        grown.push(format!("GPU {} ({}) it was not registered with", gpu.index, truncate(&gpu.uuid, 64)));
    }
    if !host.is_empty() && host != info.advertise_host {
        grown.push(format!("the address {} (first registered at {host})", truncate(&info.advertise_host, 255)));
    }
    if grown.is_empty() {
        return Ok(());
    }
    Err(CoreError::Conflict(format!(
        "node {} came back with {}; an administrator must deregister it and add it again to accept that",
        node.name,
        grown.join(", ")
    )))
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Records a heartbeat's utilization.
pub(super) async fn record_usage(db: &Db, node: &NodeCaller, usage: &Usage) -> CoreResult<()> {
    let t = now();
    let gpus = serde_json::to_string(&usage.gpus).map_err(CoreError::internal)?;
    // A heartbeat already on its way when the node was deregistered must not revive it.
    sqlx::query(
        "UPDATE nodes SET status = $1, last_heartbeat_at = $2, usage = $3 WHERE id = $4 AND status <> 'Deregistered'",
    )
    .bind(status::READY)
    .bind(t)
    .bind(serde_json::to_string(usage).map_err(CoreError::internal)?)
    .bind(&node.id)
    .execute(&db.pool)
    .await?;
    // One sample per node and second; a second heartbeat within the same second is dropped.
    let insert = match db.backend {
        crate::db::Backend::Sqlite => "INSERT OR IGNORE INTO node_samples (node_id, ts, cpu_pct, memory_used_mb, gpus) VALUES ($1, $2, $3, $4, $5)",
        crate::db::Backend::Postgres => "INSERT INTO node_samples (node_id, ts, cpu_pct, memory_used_mb, gpus) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    };
    sqlx::query(insert)
        .bind(&node.id)
        .bind(t)
        .bind(usage.cpu_pct)
        .bind(usage.memory_used_mb as i64)
        .bind(gpus)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Nodes the principal may see (deregistered ones last).
pub async fn list(db: &Db, p: &Principal) -> CoreResult<Vec<Node>> {
    authorize(p, Action::ListNodes, &Resource::new("atelier:compute:node/*"))?;
    let nodes: Vec<Node> = sqlx::query_as(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes ORDER BY CASE WHEN status = 'Deregistered' THEN 1 ELSE 0 END, name"
    ))
    .fetch_all(&db.pool)
    .await?;
    Ok(nodes.into_iter().filter(|n| p.can(Action::GetNode, &resource(&n.name))).collect())
}

/// One node.
pub async fn get(db: &Db, p: &Principal, name: &str) -> CoreResult<Node> {
    authorize(p, Action::GetNode, &resource(name))?;
    find(db, name).await?.ok_or(CoreError::NotFound("compute node"))
}

/// A utilization sample.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Sample {
    pub ts: i64,
    pub cpu_pct: f64,
    pub memory_used_mb: i64,
    pub gpus: String,
}

/// The node's utilization since `since` (seconds), oldest first.
pub async fn samples(db: &Db, p: &Principal, name: &str, since: i64) -> CoreResult<(Node, Vec<Sample>)> {
    let node = get(db, p, name).await?;
    let samples = sqlx::query_as(
        "SELECT ts, cpu_pct, memory_used_mb, gpus FROM node_samples WHERE node_id = $1 AND ts >= $2 ORDER BY ts",
    )
    .bind(&node.id)
    .bind(since)
    .fetch_all(&db.pool)
    .await?;
    Ok((node, samples))
}

/// Every registered node with its latest utilization, for the metrics export (which
/// is not per principal: it is on the public list, for the operator's scraper).
pub async fn all_for_export(db: &Db) -> CoreResult<Vec<Node>> {
    Ok(sqlx::query_as(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE status <> 'Deregistered' ORDER BY name"))
        .fetch_all(&db.pool)
        .await?)
}

/// Removes a node: its token stops working and its work is requeued elsewhere.
pub async fn deregister(db: &Db, p: &Principal, name: &str) -> CoreResult<()> {
    authorize(p, Action::DeregisterNode, &resource(name))?;
    let node = find(db, name).await?.ok_or(CoreError::NotFound("compute node"))?;
    if node.status == status::DEREGISTERED {
        return Err(CoreError::Conflict(format!("compute node {name} is already deregistered")));
    }
    sqlx::query("UPDATE nodes SET status = $1 WHERE id = $2")
        .bind(status::DEREGISTERED)
        .bind(&node.id)
        .execute(&db.pool)
        .await?;
    jobs::requeue_node(db, &node.id, &format!("compute node {name} was deregistered")).await?;
    p.note_change(format!("deregistered compute node {name}"));
    Ok(())
}

/// Marks nodes whose heartbeats stopped as Lost (old samples go by
/// [`crate::retention`]). Returns the nodes marked lost, `(id, name)`: what they held
/// is the caller's to requeue (see `jobs::requeue_node`).
pub async fn sweep(db: &Db, settings: &Settings) -> CoreResult<Vec<(String, String)>> {
    let t = now();
    let lost: Vec<(String, String)> =
        sqlx::query_as("SELECT id, name FROM nodes WHERE status = $1 AND last_heartbeat_at < $2")
            .bind(status::READY)
            .bind(t - settings.lost_after_secs as i64)
            .fetch_all(&db.pool)
            .await?;
    let mut marked = Vec::new();
    for (id, name) in lost {
        let updated = sqlx::query("UPDATE nodes SET status = $1 WHERE id = $2 AND status = $3")
            .bind(status::LOST)
            .bind(&id)
            .bind(status::READY)
            .execute(&db.pool)
            .await?;
        if updated.rows_affected() == 1 {
            tracing::warn!(node = %name, "compute node lost: no heartbeat");
            marked.push((id, name));
        }
    }
    Ok(marked)
}
