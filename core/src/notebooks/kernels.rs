//! Jupyter kernels: placed on a compute node a user picks, run by its agent (never in
//! the server), one per user and notebook.
//!
//! The database holds what should run; heartbeats carry it to agents and bring their
//! reports back ([`sync_node`]). A kernel belongs to the user who started it: using it
//! is `notebooks:AttachKernel` on `atelier:notebooks:kernel/{id}` with that user as the
//! resource creator, so only they may, unless a policy says otherwise. [`cull`] shuts
//! down kernels idle for too long and reaps those that never started.

use atelier_protocol::notebooks::{
    Kernel, KernelOrder, KernelReport, StartKernel, KERNEL_BUSY, KERNEL_DEAD, KERNEL_IDLE, KERNEL_STARTING,
};
use atelier_protocol::Resources;

use crate::authz::{authorize, Action, Principal, Resource};
use crate::compute::nodes::NodeCaller;
use crate::compute::placement;
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// Placed, not yet reported by its agent.
pub const PENDING: &str = "pending";
pub const STOPPED: &str = "stopped";
/// States that hold a place on a node.
pub(crate) const LIVE: &str = "('pending', 'starting', 'idle', 'busy', 'dead')";
/// When kernels are shut down without being asked.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// An idle (or dead) kernel with no activity for this long is shut down.
    pub idle_secs: i64,
    /// A kernel not running this long after it was placed is given up.
    pub start_secs: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Row {
    id: String,
    notebook_id: String,
    username: String,
    node: String,
    gpu_indices: String,
    state: String,
    url: Option<String>,
    secret: String,
    message: String,
    created_at: i64,
    last_activity_at: i64,
}

const ROW: &str = "SELECT k.id, k.notebook_id, k.username, COALESCE(n.name, '') AS node, k.gpu_indices, k.state, \
                   k.url, k.secret, k.message, k.created_at, k.last_activity_at FROM kernels k \
                   LEFT JOIN nodes n ON n.id = k.node_id";

impl Row {
    fn kernel(self) -> Kernel {
        Kernel {
            gpus: serde_json::from_str(&self.gpu_indices).unwrap_or_default(),
            id: self.id,
            notebook_id: self.notebook_id,
            username: self.username,
            node: self.node,
            state: self.state,
            message: self.message,
            created_at: self.created_at,
            last_activity_at: self.last_activity_at,
        }
    }
}

fn resource(id: &str, username: &str) -> Resource {
    Resource::new(format!("atelier:notebooks:kernel/{id}")).created_by(username)
}

async fn find(db: &Db, id: &str) -> CoreResult<Row> {
    sqlx::query_as(&format!("{ROW} WHERE k.id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(CoreError::NotFound("kernel"))
}

/// The caller's kernel for a notebook: the live one, else the last one (so the editor
/// can say why it stopped).
pub async fn for_notebook(db: &Db, p: &Principal, notebook_id: &str) -> CoreResult<Option<Kernel>> {
    super::open(db, p, notebook_id, Action::GetNotebook).await?;
    latest_of(db, p, notebook_id).await
}

/// The caller's newest kernel for a notebook, without the access check (callers made it).
async fn latest_of(db: &Db, p: &Principal, notebook_id: &str) -> CoreResult<Option<Kernel>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "{ROW} WHERE k.notebook_id = $1 AND k.user_id = $2 \
         ORDER BY CASE WHEN k.state = 'stopped' THEN 1 ELSE 0 END, k.created_at DESC, k.id DESC LIMIT 1"
    ))
    .bind(notebook_id)
    .bind(&p.user.id)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(Row::kernel))
}

/// Starts the caller's kernel for a notebook on a node with room (or the one asked
/// for). A live kernel of theirs for the notebook is answered as it is.
pub async fn start(db: &Db, p: &Principal, notebook_id: &str, ask: &StartKernel) -> CoreResult<Kernel> {
    let notebook = super::open(db, p, notebook_id, Action::RunCell).await?;
    if let Some(k) = latest_of(db, p, notebook_id).await?.filter(|k| k.state != STOPPED) {
        authorize(p, Action::AttachKernel, &resource(&k.id, &k.username))?;
        return Ok(k);
    }
    if ask.gpus > 64 {
        return Err(CoreError::invalid("gpus", "gpus must be at most 64"));
    }
    let id = uuid::Uuid::now_v7().to_string();
    authorize(p, Action::AttachKernel, &resource(&id, &p.user.username))?;
    let wanted = Resources { cpus: ask.cpus, memory_mb: ask.memory_mb, gpus: ask.gpus, labels: Default::default() };
    let _placing = placement::lock().await;
    let nodes = placement::capacities(db, false).await?;
    let node_name = ask.node.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let placed = match node_name {
        Some(name) => {
            let (node_id, cap) = nodes
                .iter()
                .find(|(_, c)| c.name == name)
                .ok_or_else(|| CoreError::invalid("node", format!("node {name} is not a Ready compute node")))?;
            let gpus = cap.fit(&wanted).ok_or_else(|| {
                CoreError::invalid(
                    "gpus",
                    format!(
                        "node {name} has no room for this kernel: it asks {} GPUs, {} CPUs, {} MB; free are {} GPUs, {} CPUs, {} MB",
                        ask.gpus,
                        ask.cpus,
                        ask.memory_mb,
                        cap.free_gpus().len(),
                        cap.free_cpus(),
                        cap.free_memory_mb()
                    ),
                )
            })?;
            (node_id.clone(), gpus)
        }
        None => nodes
            .iter()
            .filter_map(|(id, cap)| cap.fit(&wanted).map(|gpus| (id, cap, gpus)))
            .max_by_key(|(_, cap, _)| cap.free_cpus())
            .map(|(id, _, gpus)| (id.clone(), gpus))
            .ok_or_else(|| match nodes.is_empty() {
                true => CoreError::invalid("node", "no compute node is Ready; start an agent first"),
                false => CoreError::invalid("gpus", format!("no Ready node has room for {} GPUs now", ask.gpus)),
            })?,
    };
    let (node_id, gpus) = placed;
    let t = now();
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    sqlx::query(
        "INSERT INTO kernels (id, notebook_id, user_id, username, node_id, cpus, memory_mb, gpus, gpu_indices, state, \
         url, secret, message, created_at, updated_at, last_activity_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', NULL, $10, 'waiting for the node''s agent', $11, $11, $11)",
    )
    .bind(&id)
    .bind(notebook_id)
    .bind(&p.user.id)
    .bind(&p.user.username)
    .bind(&node_id)
    .bind(i64::from(ask.cpus))
    .bind(ask.memory_mb as i64)
    .bind(i64::from(ask.gpus))
    .bind(serde_json::to_string(&gpus).map_err(CoreError::internal)?)
    .bind(&secret)
    .bind(t)
    .execute(&db.pool)
    .await?;
    let kernel = find(db, &id).await?.kernel();
    p.note_change(format!("started a kernel for notebook {} on node {}", notebook.name, kernel.node));
    Ok(kernel)
}

/// The kernels the caller started that still hold a place.
pub async fn list(db: &Db, p: &Principal) -> CoreResult<Vec<Kernel>> {
    authorize(p, Action::ListNotebooks, &super::resource("*"))?;
    let rows: Vec<Row> =
        sqlx::query_as(&format!("{ROW} WHERE k.user_id = $1 AND k.state IN {LIVE} ORDER BY k.created_at"))
            .bind(&p.user.id)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter(|r| p.can(Action::AttachKernel, &resource(&r.id, &r.username)))
        .map(Row::kernel)
        .collect())
}

/// Where to reach a kernel: its gateway and the secret it demands.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub url: String,
    pub secret: String,
}

/// Checks that the caller may use the kernel (and still run its notebook's cells) and
/// that it is running.
pub async fn attach(db: &Db, p: &Principal, id: &str) -> CoreResult<Target> {
    attach_if(db, p, id, false).await
}

/// Like [`attach`], but refuses a dead kernel (executions need a live one; a restart
/// does not).
pub async fn attach_live(db: &Db, p: &Principal, id: &str) -> CoreResult<Target> {
    attach_if(db, p, id, true).await
}

async fn attach_if(db: &Db, p: &Principal, id: &str, live: bool) -> CoreResult<Target> {
    let row = find(db, id).await?;
    authorize(p, Action::AttachKernel, &resource(&row.id, &row.username))?;
    super::open(db, p, &row.notebook_id, Action::RunCell).await?;
    match (row.state.as_str(), row.url) {
        (KERNEL_DEAD, Some(_)) if live => {
            Err(CoreError::Conflict(format!("the kernel died; restart it. {}", row.message)))
        }
        (KERNEL_IDLE | KERNEL_BUSY | KERNEL_DEAD, Some(url)) => Ok(Target { id: row.id, url, secret: row.secret }),
        (PENDING | KERNEL_STARTING, _) => {
            Err(CoreError::Conflict(format!("the kernel is still starting on node {}: {}", row.node, row.message)))
        }
        (STOPPED, _) => Err(CoreError::Conflict(format!("the kernel was shut down: {}", row.message))),
        (state, _) => Err(CoreError::Conflict(format!("the kernel is {state}: {}", row.message))),
    }
}

/// Notes activity (an execution starting or ending), which keeps the culler away.
pub async fn touch(db: &Db, id: &str) -> CoreResult<()> {
    sqlx::query("UPDATE kernels SET last_activity_at = $1 WHERE id = $2")
        .bind(now())
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Records a state the server learned first (a restart answered, a death seen while
/// relaying a cell); the agent's next report confirms it.
pub async fn set_state(db: &Db, id: &str, state: &str, message: &str) -> CoreResult<()> {
    let message: String = message.chars().take(4000).collect();
    sqlx::query(&format!(
        "UPDATE kernels SET state = $1, message = $2, updated_at = $3, last_activity_at = $3 WHERE id = $4 AND state IN {LIVE}"
    ))
    .bind(state)
    .bind(message)
    .bind(now())
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Shuts down a kernel the caller may use.
pub async fn stop(db: &Db, p: &Principal, id: &str) -> CoreResult<()> {
    let row = find(db, id).await?;
    authorize(p, Action::AttachKernel, &resource(&row.id, &row.username))?;
    if row.state == STOPPED {
        return Err(CoreError::Conflict("the kernel is already shut down".into()));
    }
    stop_where(db, "id = $1", id, &format!("shut down by {}", p.user.username)).await?;
    p.note_change(format!("shut down kernel {id} on node {}", row.node));
    Ok(())
}

/// Shuts down every kernel of a notebook.
pub async fn stop_for_notebook(db: &Db, notebook_id: &str, why: &str) -> CoreResult<u64> {
    stop_where(db, "notebook_id = $1", notebook_id, why).await
}

async fn stop_where(db: &Db, filter: &str, value: &str, why: &str) -> CoreResult<u64> {
    let t = now();
    let done = sqlx::query(&format!(
        "UPDATE kernels SET state = 'stopped', stopped_at = $1, updated_at = $1, url = NULL, message = $2 \
         WHERE {filter_} AND state IN {LIVE}",
        filter_ = filter.replace("$1", "$3")
    ))
    .bind(t)
    .bind(why)
    .bind(value)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Whether a node has kernels its agent has not picked up yet (the work poll then tells
/// the agent to send a heartbeat at once).
pub async fn pending_on(db: &Db, node_id: &str) -> CoreResult<bool> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM kernels WHERE node_id = $1 AND state = 'pending' LIMIT 1")
            .bind(node_id)
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.is_some())
}

/// A heartbeat's part for kernels: records what the agent says of its kernels and
/// answers with every kernel the node should run.
pub async fn sync_node(db: &Db, node: &NodeCaller, reports: &[KernelReport]) -> CoreResult<Vec<KernelOrder>> {
    let t = now();
    for report in reports {
        let state = match report.state.as_str() {
            s @ (KERNEL_STARTING | KERNEL_IDLE | KERNEL_BUSY | KERNEL_DEAD) => s,
            _ => continue,
        };
        let mut message: String = report.message.chars().take(4000).collect();
        let mut url = report.url.as_deref().unwrap_or("");
        // A URL off the node's address is not the node's kernel: never recorded, so the
        // kernel's secret is never sent there.
        let state = if !url.is_empty() && !node.owns_url(url) {
            message = format!(
                "refused: the agent reported the URL {} off the node's address",
                url.chars().take(200).collect::<String>()
            );
            url = "";
            KERNEL_DEAD
        } else {
            state
        };
        // A stopped kernel stays stopped whatever a late report says.
        sqlx::query(&format!(
            "UPDATE kernels SET state = $1, url = $2, message = $3, updated_at = $4 \
             WHERE id = $5 AND node_id = $6 AND state IN {LIVE} \
             AND (state <> $1 OR message <> $3 OR url IS NULL OR url <> $2)"
        ))
        .bind(state)
        .bind(url)
        .bind(&message)
        .bind(t)
        .bind(&report.kernel_id)
        .bind(&node.id)
        .execute(&db.pool)
        .await?;
    }
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT id, secret, gpu_indices, memory_mb, cpus FROM kernels WHERE node_id = $1 AND state IN {LIVE} ORDER BY id"
    ))
    .bind(&node.id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kernel_id, secret, gpus, memory_mb, cpus)| KernelOrder {
            kernel_id,
            secret,
            gpus: serde_json::from_str(&gpus).unwrap_or_default(),
            memory_mb: u64::try_from(memory_mb).unwrap_or(0),
            cpus: u32::try_from(cpus).unwrap_or(0),
        })
        .collect())
}

/// Shuts down kernels idle (or dead) for too long, kernels that never started, and
/// kernels of lost nodes. Never a busy one. Answers how many.
pub async fn cull(db: &Db, life: Lifecycle) -> CoreResult<u64> {
    let t = now();
    let idle = sqlx::query(
        "UPDATE kernels SET state = 'stopped', stopped_at = $1, updated_at = $1, url = NULL, message = $2 \
         WHERE state IN ('idle', 'dead') AND last_activity_at < $3",
    )
    .bind(t)
    .bind(match life.idle_secs {
        s if s % 60 == 0 => format!("shut down after {} minutes without activity", s / 60),
        s => format!("shut down after {s} s without activity"),
    })
    .bind(t - life.idle_secs)
    .execute(&db.pool)
    .await?;
    let stuck = sqlx::query(
        "UPDATE kernels SET state = 'stopped', stopped_at = $1, updated_at = $1, url = NULL, \
         message = $2 || message WHERE state IN ('pending', 'starting') AND created_at < $3",
    )
    .bind(t)
    .bind(format!("did not start within {} s; last word from the agent: ", life.start_secs))
    .bind(t - life.start_secs)
    .execute(&db.pool)
    .await?;
    let lost = sqlx::query(&format!(
        "UPDATE kernels SET state = 'stopped', stopped_at = $1, updated_at = $1, url = NULL, \
         message = 'its compute node was lost' WHERE state IN {LIVE} \
         AND node_id NOT IN (SELECT id FROM nodes WHERE status = 'Ready')"
    ))
    .bind(t)
    .execute(&db.pool)
    .await?;
    Ok(idle.rows_affected() + stuck.rows_affected() + lost.rows_affected())
}
