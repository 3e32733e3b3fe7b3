//! Placement: what each node has free, and the lock every placement holds. Training
//! jobs, notebook kernels and model server instances share nodes, so all three read
//! capacity here and claim it under [`lock`]: between reading what is free and
//! recording the claim, no other placement in this process can read the same room.
//!
//! Replicas sharing a PostgreSQL database each hold their own lock; a job's lease is
//! still taken by one conditional update, but a kernel and an instance placed on two
//! replicas at the same instant may both count the same free room.

use std::collections::{BTreeMap, BTreeSet};

use super::jobs::ACTIVE;
use super::nodes::{self, NODE_COLUMNS};
use super::scheduler::Capacity;
use crate::db::Db;
use crate::CoreResult;

/// What holds room on a node, one row per holder: leased training jobs, model server
/// instances that are placed and not stopped, and kernels that are not stopped (GPUs,
/// and CPUs and memory when they reserved some). `(node_id, cpus, memory_mb,
/// gpu_indices)`.
fn usage_query(node_filter: &str) -> String {
    let (instances, kernels) = (crate::endpoints::reconcile::LIVE, crate::notebooks::kernels::LIVE);
    format!(
        "SELECT node_id, cpus, memory_mb, gpu_indices FROM training_jobs WHERE state IN {ACTIVE} {node_filter} \
         UNION ALL SELECT node_id, cpus, memory_mb, gpu_indices FROM endpoint_instances \
         WHERE state IN {instances} {node_filter} \
         UNION ALL SELECT node_id, cpus, memory_mb, gpu_indices FROM kernels WHERE state IN {kernels} {node_filter}"
    )
}

type Usage = (String, i64, i64, String);

/// Placements in this process go one at a time. Held from reading capacity to
/// recording a claim. Without it concurrent agents would also all read the same queue
/// head and all but one lose the race for it, then race again for the next job:
/// quadratic work in a fill burst (1,000 agents placed 43 jobs/s that way).
static PLACING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the placement lock; hold the guard until the claim is stored.
pub async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    PLACING.lock().await
}

/// A node's capacity, less what the given holders use.
fn capacity_of(n: &nodes::Node, used: &[Usage]) -> Capacity {
    let mut cap = Capacity {
        name: n.name.clone(),
        cpus: n.cpus.max(0) as u32,
        memory_mb: n.memory_mb.max(0) as u64,
        gpus: n.gpu_list().iter().map(|g| g.index).collect(),
        labels: n.label_map(),
        used_cpus: 0,
        used_memory_mb: 0,
        used_gpus: BTreeSet::new(),
    };
    for (_, cpus, memory, gpus) in used.iter().filter(|(node, ..)| *node == n.id) {
        let gpus: Vec<u32> = serde_json::from_str(gpus).unwrap_or_default();
        let r = atelier_protocol::Resources {
            cpus: *cpus as u32,
            memory_mb: *memory as u64,
            gpus: gpus.len() as u32,
            labels: BTreeMap::new(),
        };
        cap.take(&r, &gpus);
    }
    cap
}

/// Every node that can take work (`include_lost`: also Lost ones, for the "could this
/// ever run" check), with what its jobs, instances and kernels use. Placing on the
/// answer needs [`lock`] held.
pub async fn capacities(db: &Db, include_lost: bool) -> CoreResult<Vec<(String, Capacity)>> {
    let all: Vec<nodes::Node> =
        sqlx::query_as(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE status = 'Ready' OR ($1 AND status = 'Lost')"))
            .bind(include_lost)
            .fetch_all(&db.pool)
            .await?;
    let used: Vec<Usage> = sqlx::query_as(&usage_query("AND node_id IS NOT NULL")).fetch_all(&db.pool).await?;
    Ok(all.into_iter().map(|n| (n.id.clone(), capacity_of(&n, &used))).collect())
}

/// One Ready node's capacity. Placing on the answer needs [`lock`] held.
pub async fn node_capacity(db: &Db, node_id: &str) -> CoreResult<Option<Capacity>> {
    let node: Option<nodes::Node> =
        sqlx::query_as(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1 AND status = 'Ready'"))
            .bind(node_id)
            .fetch_optional(&db.pool)
            .await?;
    let Some(node) = node else { return Ok(None) };
    let used: Vec<Usage> = sqlx::query_as(&usage_query("AND node_id = $1")).bind(node_id).fetch_all(&db.pool).await?;
    Ok(Some(capacity_of(&node, &used)))
}
