//! Compute: the nodes page (status, GPUs, live utilization charts, running jobs) and
//! adding a node (its token and the command to run on it).

use std::collections::BTreeMap;

use atelier_protocol::{Gpu, Usage};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::format::format_time;
use crate::forms::{FieldError, FormError};

/// A compute node, as the pages and `/api/v1/compute/nodes` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct NodeView {
    pub name: String,
    /// Pending (token issued, no agent yet), Ready, Lost or Deregistered.
    pub status: String,
    pub hostname: String,
    pub os: String,
    pub cpus: i64,
    pub memory_mb: i64,
    pub disk_free_mb: i64,
    pub gpus: Vec<Gpu>,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    /// How the agent contains users' code: "unsandboxed" when started with
    /// `--unsandboxed`, empty for agents older than sandboxes (also unsandboxed).
    pub sandbox: String,
    /// The latest utilization the agent reported.
    pub usage: Usage,
    pub token_prefix: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_heartbeat_at: Option<i64>,
    /// Names of the training jobs running on it.
    pub running_jobs: Vec<String>,
}

impl NodeView {
    /// Whether an agent has registered the node (what it reported means something).
    pub fn registered_at_least_once(&self) -> bool {
        self.status != "Pending" && !self.hostname.is_empty()
    }
}

/// A node just added: its token (shown once) and the command that starts its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AddedNode {
    pub node: NodeView,
    pub token: String,
    pub command: String,
}

#[cfg(feature = "ssr")]
mod server {
    use super::*;
    use atelier_core::authz::Principal;
    use atelier_core::compute::{jobs, nodes};
    use atelier_core::db::Db;
    use atelier_core::CoreResult;

    /// The view of a node, with its running jobs.
    pub async fn view(db: &Db, node: nodes::Node) -> CoreResult<NodeView> {
        let running = jobs::running_on(db, &node.id).await?;
        Ok(NodeView {
            gpus: node.gpu_list(),
            labels: node.label_map(),
            usage: node.latest_usage(),
            name: node.name,
            status: node.status,
            hostname: node.hostname,
            os: node.os,
            cpus: node.cpus,
            memory_mb: node.memory_mb,
            disk_free_mb: node.disk_free_mb,
            agent_version: node.agent_version,
            sandbox: node.sandbox,
            token_prefix: node.token_prefix,
            created_by: node.created_by,
            created_at: node.created_at,
            last_heartbeat_at: node.last_heartbeat_at,
            running_jobs: running,
        })
    }

    pub async fn list(db: &Db, p: &Principal) -> CoreResult<Vec<NodeView>> {
        let mut out = Vec::new();
        for node in nodes::list(db, p).await? {
            out.push(view(db, node).await?);
        }
        Ok(out)
    }

    /// The shell command that starts an agent for this node.
    pub fn agent_command(server_url: &str, name: &str, token: &str) -> String {
        // The token goes in the environment: arguments show in `ps` and shell history.
        format!(
            "ATELIER_NODE_TOKEN={token} atelier-agent --server {server_url} --work-dir /var/lib/atelier-agent --name {name}"
        )
    }

    pub async fn add(db: &Db, p: &Principal, name: &str, server_url: &str) -> CoreResult<AddedNode> {
        let created = nodes::create(db, p, name).await?;
        let command = agent_command(server_url, &created.node.name, &created.token);
        Ok(AddedNode { node: view(db, created.node).await?, token: created.token, command })
    }
}

#[cfg(feature = "ssr")]
pub use server::{add as add_node_for, agent_command, list as list_node_views, view as node_view};

/// The URL agents should use: the configured public URL, else what the browser used.
#[cfg(feature = "ssr")]
fn server_url() -> String {
    let parts = use_context::<http::request::Parts>();
    let host = parts
        .as_ref()
        .and_then(|p| p.headers.get(http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:3000")
        .to_string();
    use_context::<PublicUrl>().and_then(|u| u.0).unwrap_or_else(|| format!("http://{host}"))
}

/// The studio's configured public URL, provided by the server to pages.
#[derive(Debug, Clone, Default)]
pub struct PublicUrl(pub Option<String>);

#[server]
pub async fn list_nodes() -> Result<Vec<NodeView>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(server::list(&db, &p).await?)
}

#[server]
pub async fn add_node(name: String) -> Result<AddedNode, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(server::add(&db, &p, &name, &server_url()).await?)
}

#[server]
pub async fn deregister_node(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::compute::nodes::deregister(&db, &p, &name).await?;
    Ok(())
}

/// The node's utilization over the last `minutes`, as an SVG chart.
#[server]
pub async fn node_chart(name: String, minutes: i64) -> Result<String, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let since = atelier_core::now() - minutes.clamp(5, 24 * 60) * 60;
    let (node, samples) = atelier_core::compute::nodes::samples(&db, &p, &name, since).await?;
    Ok(crate::charts::node_utilization(&node.name, &node.gpu_list(), &samples))
}

fn gib(mb: i64) -> String {
    format!("{:.1} GiB", mb as f64 / 1024.0)
}

/// Compute: every node with status, GPUs, utilization and running jobs.
#[component]
pub fn NodesPage() -> impl IntoView {
    let add = ServerAction::<AddNode>::new();
    let deregister = ServerAction::<DeregisterNode>::new();
    let tick = RwSignal::new(0u32);
    // Live: refetch every few seconds while the page is open.
    Effect::new(move |_| {
        let handle = set_interval_with_handle(move || tick.update(|t| *t += 1), std::time::Duration::from_secs(5));
        on_cleanup(move || {
            if let Ok(h) = handle {
                h.clear();
            }
        });
    });
    let nodes = Resource::new(move || (add.version().get(), deregister.version().get(), tick.get()), |_| list_nodes());
    let me = expect_context::<crate::CurrentUser>();
    let can_add = move || crate::auth::can(me, crate::auth::Can::AddNode);
    view! {
        <h1>"Compute nodes"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match nodes.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No compute nodes yet."</p> }.into_any(),
                    Ok(list) => list.into_iter().map(|n| view! { <NodeCard node=n deregister/> }).collect_view().into_any(),
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
            <Show when=can_add>
                <AddNodeForm add/>
            </Show>
        </Transition>
    }
}

#[component]
fn NodeCard(node: NodeView, deregister: ServerAction<DeregisterNode>) -> impl IntoView {
    let name = node.name.clone();
    let chart_name = node.name.clone();
    let chart = Resource::new(move || chart_name.clone(), |n| node_chart(n, 60));
    let gpus = if node.gpus.is_empty() {
        "none (CPU node)".to_string()
    } else {
        node.gpus
            .iter()
            .map(|g| format!("#{} {} ({})", g.index, g.model, gib(g.memory_mb as i64)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let labels = node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
    let status_class = format!("badge status-{}", node.status.to_lowercase());
    let running = if node.running_jobs.is_empty() { "none".to_string() } else { node.running_jobs.join(", ") };
    let live = node.status != "Deregistered";
    let deregister_consequence = format!(
        "Its agent's token stops working and it takes no more work; {}. Adding it again needs a new token.",
        if node.running_jobs.is_empty() {
            "nothing runs on it now".to_string()
        } else {
            format!("what runs on it ({}) is requeued on other nodes", node.running_jobs.join(", "))
        }
    );
    // Users' code on this node can reach the agent's token and every file it can.
    let unsandboxed = node.registered_at_least_once() && (node.sandbox.is_empty() || node.sandbox == "unsandboxed");
    let sandbox = if unsandboxed {
        "unsandboxed: users' code runs as the agent, with its token and files in reach".to_string()
    } else if node.sandbox.is_empty() {
        "not known yet".to_string()
    } else {
        node.sandbox.clone()
    };
    let usage = format!(
        "CPU {:.0}%, memory {} of {}",
        node.usage.cpu_pct,
        gib(node.usage.memory_used_mb as i64),
        gib(node.memory_mb)
    );
    view! {
        <section class="card node" data-node=node.name.clone()>
            <h2>{node.name.clone()} " " <span class=status_class data-testid="node-status">{node.status.clone()}</span></h2>
            <dl class="facts">
                <dt>"Host"</dt><dd>{node.hostname.clone()} " · " {node.os.clone()}</dd>
                <dt>"CPUs"</dt><dd>{node.cpus}</dd>
                <dt>"Memory"</dt><dd>{gib(node.memory_mb)}</dd>
                <dt>"Disk free"</dt><dd>{gib(node.disk_free_mb)}</dd>
                <dt>"GPUs"</dt><dd data-testid="node-gpus">{gpus}</dd>
                <dt>"Labels"</dt><dd>{if labels.is_empty() { "none".to_string() } else { labels }}</dd>
                <dt>"Sandbox"</dt>
                <dd data-testid="node-sandbox" class:warning=unsandboxed>{sandbox}</dd>
                <dt>"Utilization"</dt><dd>{usage}</dd>
                <dt>"Running jobs"</dt><dd data-testid="node-jobs">{running}</dd>
                <dt>"Last heartbeat"</dt><dd>{node.last_heartbeat_at.map(format_time).unwrap_or_else(|| "never".into())}</dd>
                <dt>"Token"</dt><dd><code>{node.token_prefix.clone()} "…"</code></dd>
            </dl>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    chart.await.ok().map(|svg| view! { <div class="chart" inner_html=svg></div> })
                })}
            </Transition>
            {live.then(move || {
                let target = name.clone();
                view! {
                <crate::confirm::ConfirmButton
                    label="Deregister"
                    title=format!("Deregister node {name}?")
                    consequence=deregister_consequence
                    confirm="Deregister node"
                    testid="deregister-node"
                    on_confirm=Callback::new(move |_| { deregister.dispatch(DeregisterNode { name: target.clone() }); })
                />
                }
            })}
        </section>
    }
}

#[component]
fn AddNodeForm(add: ServerAction<AddNode>) -> impl IntoView {
    let error = Signal::derive(move || add.value().get().and_then(Result::err));
    let added = move || add.value().get().and_then(Result::ok);
    view! {
        <ActionForm action=add attr:class="card form">
            <h2>"Add node"</h2>
            <label for="node-name">"Node name"</label>
            <input id="node-name" name="name" type="text" required maxlength="128" placeholder="gpu-01"/>
            <FieldError error field="name"/>
            <FormError error/>
            <button type="submit" class="primary">"Create node token"</button>
        </ActionForm>
        {move || added().map(|a| view! {
            <section class="card" data-testid="added-node">
                <h2>"Run this on " {a.node.name.clone()}</h2>
                <p>"The token is shown only now. The agent connects out to this studio; the node appears as Ready once it registers."</p>
                <pre class="command" data-testid="agent-command">{a.command.clone()}</pre>
            </section>
        })}
    }
}
