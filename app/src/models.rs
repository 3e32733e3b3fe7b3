//! The model registry's pages: model groups, a group's versions (compare, register
//! from a training job), one version (metrics against the approved one, lineage,
//! timeline, the reviewer's decision) and the reviewer inbox.

use atelier_protocol::models::{
    Delivery, ModelGroup, ModelVersion, PendingVersion, VersionEvent, Webhook, APPROVED, PENDING, REJECTED,
};
use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};
use serde::{Deserialize, Serialize};

use crate::auth::{can, Can};
use crate::error::AppError;
use crate::format::format_time;
use crate::forms::{FieldError, FormError};

/// A group and its versions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDetail {
    pub group: ModelGroup,
    pub versions: Vec<ModelVersion>,
}

/// A version with what a reviewer weighs it against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDetail {
    pub version: ModelVersion,
    /// The group's newest Approved version other than this one.
    pub approved: Option<ModelVersion>,
    pub timeline: Vec<VersionEvent>,
    /// Whether policy lets the caller decide on this version.
    pub may_decide: bool,
}

#[server]
pub async fn list_model_groups() -> Result<Vec<ModelGroup>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::models::list_groups(&db, &p).await?)
}

#[server]
pub async fn create_model_group(name: String, description: String, required_approvals: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let required = match required_approvals.trim() {
        "" => None,
        n => Some(n.parse().map_err(|_| {
            AppError::from(atelier_core::CoreError::invalid(
                "required_approvals",
                "required approvals must be a number",
            ))
        })?),
    };
    let new = atelier_core::models::NewGroup {
        name: &name,
        description: &description,
        tags: Default::default(),
        required_approvals: required,
    };
    atelier_core::models::create_group(&db, &p, new).await?;
    Ok(())
}

#[server]
pub async fn get_model_group(name: String) -> Result<GroupDetail, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let group = atelier_core::models::get_group(&db, &p, &name).await?;
    let versions = atelier_core::models::versions::list(&db, &p, &name).await?;
    Ok(GroupDetail { group, versions })
}

#[server]
pub async fn get_model_version(group: String, version: i64) -> Result<VersionDetail, AppError> {
    use atelier_core::authz::Action;
    use atelier_core::models::{approvals, versions};
    let (db, p) = crate::context::db_and_principal()?;
    let this = versions::get(&db, &p, &group, version).await?;
    let g = atelier_core::models::get_group(&db, &p, &group).await?;
    let approved = match g.approved_version.filter(|v| *v != version) {
        Some(v) => versions::get(&db, &p, &group, v).await.ok(),
        None => None,
    };
    let timeline = approvals::timeline(&db, &p, &group, version).await?;
    let may_decide = p.can(Action::UpdateModelApprovalStatus, &versions::resource(&group, version, &this.created_by));
    Ok(VersionDetail { version: this, approved, timeline, may_decide })
}

#[server]
pub async fn decide_model_version(
    group: String,
    version: i64,
    status: String,
    comment: String,
    expected_status: String,
) -> Result<String, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let decision = atelier_protocol::models::Decision { status, comment, expected_status: Some(expected_status) };
    Ok(atelier_core::models::approvals::decide(&db, &p, &group, version, &decision).await?)
}

/// Registers the model of a completed training job in `group`, creating the group
/// when there is none of that name. Returns the new version's number.
#[server]
pub async fn register_model_from_job(
    group: String,
    training_job: String,
    description: String,
) -> Result<i64, AppError> {
    use atelier_core::models::{self, versions};
    let (db, p) = crate::context::db_and_principal()?;
    match models::get_group(&db, &p, group.trim()).await {
        Err(atelier_core::CoreError::NotFound(_)) => {
            models::create_group(&db, &p, models::NewGroup { name: &group, ..Default::default() }).await?;
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let request = atelier_protocol::models::RegisterVersion {
        training_job: Some(training_job),
        description,
        ..Default::default()
    };
    Ok(versions::register(&db, &p, group.trim(), request).await?.version)
}

/// A group's webhooks with their latest deliveries.
#[server]
pub async fn group_webhooks(group: String) -> Result<Vec<(Webhook, Vec<Delivery>)>, AppError> {
    use atelier_core::models::webhooks;
    let (db, p) = crate::context::db_and_principal()?;
    let mut out = Vec::new();
    for hook in webhooks::list(&db, &p, Some(&group)).await? {
        let recent = webhooks::deliveries(&db, &p, &hook.id, 5).await?;
        out.push((hook, recent));
    }
    Ok(out)
}

/// Adds a webhook to a group for both events; returns its signing secret.
#[server]
pub async fn add_webhook(group: String, url: String) -> Result<String, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    // The server provides the operator's exceptions; without them, no internal
    // address is allowed.
    let outbound = leptos::prelude::use_context::<atelier_core::outbound::OutboundPolicy>().unwrap_or_default();
    Ok(atelier_core::models::webhooks::create(&db, &p, &outbound, Some(&group), &url, &[]).await?.1)
}

#[server]
pub async fn remove_webhook(id: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::models::webhooks::delete(&db, &p, &id).await?)
}

/// The group's deployment rule, whether the caller may change it, and the endpoints
/// they could point it at.
#[server]
pub async fn deployment_rule(group: String) -> Result<(Option<String>, bool, Vec<String>), AppError> {
    use atelier_core::endpoints::rules;
    let (db, p) = crate::context::db_and_principal()?;
    let rule = rules::get(&db, &p, &group).await?;
    let may_change = rules::may_change(&db, &p, &group).await?;
    let endpoints = match atelier_core::endpoints::list(&db, &p).await {
        Ok(list) => list.into_iter().map(|e| e.name).collect(),
        Err(atelier_core::CoreError::Forbidden(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok((rule, may_change, endpoints))
}

/// Sets the deployment rule (a blank endpoint removes it).
#[server]
pub async fn set_deployment_rule(group: String, endpoint: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let endpoint = Some(endpoint.trim()).filter(|e| !e.is_empty());
    atelier_core::endpoints::rules::set(&db, &p, &group, endpoint).await?;
    Ok(())
}

#[server]
pub async fn approval_inbox() -> Result<Vec<PendingVersion>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::models::approvals::inbox(&db, &p).await?)
}

fn status_class(status: &str) -> String {
    let kind = match status {
        APPROVED => "approved",
        REJECTED => "rejected",
        _ => "pending",
    };
    format!("badge status-{kind}")
}

fn when_ms(ms: i64) -> String {
    format_time(ms / 1000)
}

fn version_href(group: &str, version: i64) -> String {
    format!("/models/{group}/versions/{version}")
}

/// The first few metrics of a version, for tables.
fn metric_summary(v: &ModelVersion) -> String {
    v.metrics
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "epoch" | "samples_per_sec"))
        .take(3)
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Models: the registry's model groups.
#[component]
pub fn ModelsPage() -> impl IntoView {
    let create = ServerAction::<CreateModelGroup>::new();
    let groups = Resource::new(move || create.version().get(), |_| list_model_groups());
    let me = expect_context::<crate::CurrentUser>();
    let can_create = move || can(me, Can::CreateModelGroup);
    view! {
        <h1>"Model registry"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match groups.await {
                    Err(e) => view! { <p class="error" data-testid="models-error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No model groups yet. Register a model from a completed training job, or create a group below."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="model-groups">
                            <thead><tr><th>"Model group"</th><th>"Latest version"</th><th>"Approved version"</th><th>"Versions"</th><th>"Description"</th><th>"Updated"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|g| {
                                    let href = format!("/models/{}", g.name);
                                    let latest = g.latest_version.map(|v| view! { <a href=version_href(&g.name, v)>{format!("v{v}")}</a> });
                                    let approved = match g.approved_version {
                                        Some(v) => view! { <a href=version_href(&g.name, v)>{format!("v{v}")}</a> }.into_any(),
                                        None => view! { <span class="muted">"none"</span> }.into_any(),
                                    };
                                    view! {
                                        <tr data-model-group=g.name.clone()>
                                            <td><a href=href>{g.name.clone()}</a></td>
                                            <td>{latest}</td>
                                            <td>{approved}</td>
                                            <td>{g.version_count}</td>
                                            <td>{g.description.clone()}</td>
                                            <td>{format_time(g.updated_at)}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
            <Show when=can_create>
                <NewModelGroupForm create/>
            </Show>
        </Transition>
    }
}

#[component]
fn NewModelGroupForm(create: ServerAction<CreateModelGroup>) -> impl IntoView {
    let error = Signal::derive(move || create.value().get().and_then(Result::err));
    view! {
        <ActionForm action=create attr:class="card form">
            <h2>"New model group"</h2>
            <label for="model-group-name">"Name"</label>
            <input id="model-group-name" name="name" type="text" required maxlength="128"/>
            <FieldError error field="name"/>
            <label for="model-group-description">"Description"</label>
            <input id="model-group-description" name="description" type="text"/>
            <label for="model-group-quorum">"Approvals required"</label>
            <input id="model-group-quorum" name="required_approvals" type="number" min="1" max="10" value="1"/>
            <p class="muted">"Distinct reviewers who must approve a version before it is Approved."</p>
            <FieldError error field="required_approvals"/>
            <FormError error/>
            <button type="submit" class="primary">"Create model group"</button>
        </ActionForm>
    }
}

/// One model group: its versions, comparing some, and its aliases.
#[component]
pub fn ModelGroupPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("group").unwrap_or_default();
    let detail = Resource::new(name, get_model_group);
    let picked = RwSignal::new(Vec::<i64>::new());
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(d) => view! { <GroupSummary detail=d picked/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn GroupSummary(detail: GroupDetail, picked: RwSignal<Vec<i64>>) -> impl IntoView {
    let g = detail.group;
    let group = g.name.clone();
    let compare_href = {
        let group = group.clone();
        move || {
            let query: Vec<String> = picked.get().iter().map(|v| format!("v={v}")).collect();
            format!("/models/{group}/compare?{}", query.join("&"))
        }
    };
    let aliases = g.aliases.iter().map(|(a, v)| format!("{a} → v{v}")).collect::<Vec<_>>().join(", ");
    let tags = g.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
    let rows = detail
        .versions
        .into_iter()
        .map(|v| {
            let n = v.version;
            let toggle = move |_| {
                picked.update(|p| {
                    if let Some(i) = p.iter().position(|x| *x == n) {
                        p.remove(i);
                    } else {
                        p.push(n);
                    }
                })
            };
            view! {
                <tr data-version=n>
                    <td><input type="checkbox" aria-label=format!("compare v{n}") on:change=toggle/></td>
                    <td><a href=version_href(&v.group, n)>{format!("v{n}")}</a></td>
                    <td><span class=status_class(&v.status) data-testid="version-status">{v.status.clone()}</span></td>
                    <td>{metric_summary(&v)}</td>
                    <td>{v.training_job.clone().unwrap_or_else(|| "uploaded".into())}</td>
                    <td>{v.aliases.join(", ")}</td>
                    <td>{v.created_by.clone()}</td>
                    <td>{format_time(v.created_at)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h1>{g.name.clone()}</h1>
        {(!g.description.is_empty()).then(|| view! { <p>{g.description.clone()}</p> })}
        <dl class="facts">
            <dt>"Approvals required"</dt><dd>{g.required_approvals}</dd>
            <dt>"Approved version"</dt><dd>{g.approved_version.map(|v| format!("v{v}")).unwrap_or_else(|| "none".into())}</dd>
            <dt>"Aliases"</dt><dd>{if aliases.is_empty() { "none".to_string() } else { aliases }}</dd>
            <dt>"Tags"</dt><dd>{if tags.is_empty() { "none".to_string() } else { tags }}</dd>
            <dt>"Created"</dt><dd>{format_time(g.created_at)} " by " {g.created_by.clone()}</dd>
        </dl>
        <h2>"Versions"</h2>
        <table class="table" data-testid="versions">
            <thead><tr><th></th><th>"Version"</th><th>"Status"</th><th>"Metrics"</th><th>"Training job"</th><th>"Aliases"</th><th>"Created by"</th><th>"Created"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <p>
            <a class="button" href=compare_href class:disabled=move || picked.get().len() < 2 data-testid="compare-versions">"Compare selected"</a>
        </p>
        <GroupDeploymentRule group=group.clone()/>
        <GroupWebhooks group/>
    }
}

/// "Deploy each newly approved version to endpoint X", and its form.
#[component]
fn GroupDeploymentRule(group: String) -> impl IntoView {
    let set = ServerAction::<SetDeploymentRule>::new();
    let key = group.clone();
    let rule = Resource::new(move || (key.clone(), set.version().get()), |(g, _)| deployment_rule(g));
    let error = Signal::derive(move || set.value().get().and_then(Result::err));
    view! {
        <Transition fallback=|| ()>
            {move || {
                let group = group.clone();
                Suspend::new(async move {
                    let (current, may_change, endpoints) = rule.await.ok()?;
                    let summary = match &current {
                        Some(e) => format!("Each newly approved version is deployed to endpoint {e}; rejecting the version it serves goes back to the previous approved one."),
                        None => "None: approved versions are deployed by hand.".to_string(),
                    };
                    let options = endpoints.into_iter().map(|e| {
                        let selected = current.as_deref() == Some(e.as_str());
                        view! { <option value=e.clone() selected=selected>{e.clone()}</option> }
                    }).collect_view();
                    Some(view! {
                        <h2>"Deployment rule"</h2>
                        <p data-testid="deployment-rule">{summary}</p>
                        {may_change.then(|| view! {
                            <ActionForm action=set attr:class="card form" attr:data-testid="deployment-rule-form">
                                <input type="hidden" name="group" value=group/>
                                <label for="rule-endpoint">"Deploy approved versions to"</label>
                                <select id="rule-endpoint" name="endpoint">
                                    <option value="">"no endpoint (no rule)"</option>
                                    {options}
                                </select>
                                <FormError error/>
                                <button type="submit">"Save rule"</button>
                            </ActionForm>
                        })}
                    }.into_any())
                })
            }}
        </Transition>
    }
}

/// The group's webhooks, for those who may manage them (others see nothing).
#[component]
fn GroupWebhooks(group: String) -> impl IntoView {
    let add = ServerAction::<AddWebhook>::new();
    let remove = ServerAction::<RemoveWebhook>::new();
    let key = group.clone();
    let hooks =
        Resource::new(move || (key.clone(), add.version().get(), remove.version().get()), |(g, ..)| group_webhooks(g));
    let error = Signal::derive(move || add.value().get().and_then(Result::err));
    let secret = move || add.value().get().and_then(Result::ok);
    view! {
        <Transition fallback=|| ()>
            {move || {
                let group = group.clone();
                Suspend::new(async move {
                    // Without permission the section is left out.
                    let list = hooks.await.ok()?;
                    let rows = list.into_iter().map(|(h, recent)| {
                        let last = recent.first().map(|d| format!("{} ({} attempts{})", d.status, d.attempts,
                            d.last_status.map(|s| format!(", HTTP {s}")).unwrap_or_default())).unwrap_or_else(|| "no deliveries yet".into());
                        view! {
                            <tr>
                                <td><code>{h.url.clone()}</code></td>
                                <td>{h.events.join(", ")}</td>
                                <td data-testid="webhook-last">{last}</td>
                                <td>
                                    <ActionForm action=remove attr:class="inline">
                                        <input type="hidden" name="id" value=h.id.clone()/>
                                        <button type="submit" class="secondary">"Remove"</button>
                                    </ActionForm>
                                </td>
                            </tr>
                        }
                    }).collect_view();
                    Some(view! {
                        <h2>"Webhooks"</h2>
                        <table class="table" data-testid="webhooks">
                            <thead><tr><th>"URL"</th><th>"Events"</th><th>"Last delivery"</th><th></th></tr></thead>
                            <tbody>{rows}</tbody>
                        </table>
                        <ActionForm action=add attr:class="card form">
                            <input type="hidden" name="group" value=group/>
                            <label for="webhook-url">"Webhook URL"</label>
                            <input id="webhook-url" name="url" type="url" required placeholder="https://ci.example.com/atelier"/>
                            <FieldError error field="url"/>
                            <FormError error/>
                            <button type="submit" class="primary">"Add webhook"</button>
                        </ActionForm>
                        {move || secret().map(|s| view! {
                            <p class="notice">"Signing secret (shown once): " <code data-testid="webhook-secret">{s}</code></p>
                        })}
                    }.into_any())
                })
            }}
        </Transition>
    }
}

/// Versions side by side: metrics, hyperparameters and the training curves.
#[component]
pub fn CompareVersionsPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let group = move || params.read().get("group").unwrap_or_default();
    let picked = move || {
        let mut v: Vec<i64> =
            query.read().get_all("v").unwrap_or_default().iter().filter_map(|s| s.parse().ok()).collect();
        v.sort_unstable();
        v
    };
    let detail = Resource::new(group, get_model_group);
    let chart = Resource::new(
        move || (group(), picked()),
        |(g, picked)| async move {
            let versions = get_model_group(g).await?.versions;
            let jobs: Vec<String> =
                versions.into_iter().filter(|v| picked.contains(&v.version)).filter_map(|v| v.training_job).collect();
            if jobs.is_empty() {
                return Ok(String::new());
            }
            crate::training::training_chart(jobs).await
        },
    );
    view! {
        <h1>"Compare versions"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let wanted = picked();
                match detail.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(d) => {
                        let mut list: Vec<ModelVersion> = d.versions.into_iter().filter(|v| wanted.contains(&v.version)).collect();
                        list.sort_by_key(|v| v.version);
                        if list.len() < 2 {
                            return view! { <p class="muted">"Pick at least two versions on the group's page."</p> }.into_any();
                        }
                        compare_table(&list).into_any()
                    }
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                chart.await.ok().filter(|s| !s.is_empty()).map(|svg| view! { <div class="chart" data-testid="compare-chart" inner_html=svg></div> })
            })}
        </Transition>
    }
}

/// Rows of metrics (and hyperparameters) with one column per version.
fn compare_table(list: &[ModelVersion]) -> impl IntoView {
    let mut metrics: Vec<String> = list.iter().flat_map(|v| v.metrics.keys().cloned()).collect();
    metrics.sort();
    metrics.dedup();
    let mut hps: Vec<String> = list.iter().flat_map(|v| v.hyperparameters.keys().cloned()).collect();
    hps.sort();
    hps.dedup();
    let header = list.iter().map(|v| view! { <th>{format!("v{}", v.version)}</th> }).collect_view();
    let statuses = list
        .iter()
        .map(|v| view! { <td><span class=status_class(&v.status)>{v.status.clone()}</span></td> })
        .collect_view();
    let metric_rows = metrics
        .into_iter()
        .map(|m| {
            let cells = list
                .iter()
                .map(|v| view! { <td>{v.metrics.get(&m).map(|x| format!("{x:.4}")).unwrap_or_default()}</td> })
                .collect_view();
            view! { <tr><th>{m.clone()}</th>{cells}</tr> }
        })
        .collect_view();
    let hp_rows = hps
        .into_iter()
        .map(|h| {
            let cells = list
                .iter()
                .map(|v| view! { <td>{v.hyperparameters.get(&h).cloned().unwrap_or_default()}</td> })
                .collect_view();
            view! { <tr><th><code>{h.clone()}</code></th>{cells}</tr> }
        })
        .collect_view();
    view! {
        <table class="table" data-testid="compare">
            <thead><tr><th></th>{header}</tr></thead>
            <tbody>
                <tr><th>"Status"</th>{statuses}</tr>
                {metric_rows}
                {hp_rows}
            </tbody>
        </table>
    }
}

/// One version: metrics against the approved one, lineage, timeline, the decision.
#[component]
pub fn ModelVersionPage() -> impl IntoView {
    let params = use_params_map();
    let key = move || {
        let p = params.read();
        (p.get("group").unwrap_or_default(), p.get("version").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0))
    };
    let decide = ServerAction::<DecideModelVersion>::new();
    let detail = Resource::new(move || (key(), decide.version().get()), |((g, v), _)| get_model_version(g, v));
    // A decision changes the inbox count in the navigation.
    let me = expect_context::<crate::CurrentUser>();
    Effect::new(move |previous: Option<usize>| {
        let decided = decide.version().get();
        if previous.is_some_and(|p| p != decided) {
            me.0.refetch();
        }
        decided
    });
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(d) => view! { <VersionSummary detail=d decide/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn VersionSummary(detail: VersionDetail, decide: ServerAction<DecideModelVersion>) -> impl IntoView {
    let v = detail.version;
    let title = format!("{} v{}", v.group, v.version);
    let lineage = lineage_view(&v).into_any();
    let versus = versus_view(&v, detail.approved.as_ref()).into_any();
    let timeline = timeline_view(detail.timeline).into_any();
    let decision = detail.may_decide.then(|| view! { <DecisionForm version=v.clone() decide/> }.into_any());
    let artifact_href = format!("/api/v1/model-groups/{}/versions/{}/artifact", v.group, v.version);
    let quorum = (v.status == PENDING && v.required_approvals > 1)
        .then(|| format!(" ({} of {} approvals)", v.approvals, v.required_approvals));
    view! {
        <p><a href=format!("/models/{}", v.group)>"← " {v.group.clone()}</a></p>
        <h1>{title} " " <span class=status_class(&v.status) data-testid="version-status">{v.status.clone()}</span> {quorum}</h1>
        {(!v.description.is_empty()).then(|| view! { <p>{v.description.clone()}</p> })}
        <dl class="facts">
            <dt>"Artifact"</dt>
            <dd><a href=artifact_href download=v.artifact.name.clone()>{v.artifact.name.clone()}</a>
                {format!(" ({} bytes, {}, sha256 {}…)", v.artifact.size, v.format, &v.artifact.sha256[..12.min(v.artifact.sha256.len())])}</dd>
            <dt>"Created"</dt><dd>{format_time(v.created_at)} " by " <span data-testid="version-creator">{v.created_by.clone()}</span></dd>
            <dt>"Aliases"</dt><dd>{if v.aliases.is_empty() { "none".to_string() } else { v.aliases.join(", ") }}</dd>
        </dl>
        {decision}
        <h2>"Metrics"</h2>
        {versus}
        <h2>"Lineage"</h2>
        {lineage}
        <h2>"Timeline"</h2>
        {timeline}
    }
}

/// This version's metrics beside the approved version's.
fn versus_view(v: &ModelVersion, approved: Option<&ModelVersion>) -> impl IntoView {
    if v.metrics.is_empty() {
        return view! { <p class="muted">"No metrics: this version was not registered from a training job."</p> }
            .into_any();
    }
    let other = approved.map(|a| format!("approved v{}", a.version));
    let rows = v
        .metrics
        .iter()
        .map(|(name, value)| {
            let theirs = approved.and_then(|a| a.metrics.get(name)).copied();
            let delta = theirs.map(|t| format!("{:+.4}", value - t)).unwrap_or_default();
            view! {
                <tr>
                    <th>{name.clone()}</th>
                    <td>{format!("{value:.4}")}</td>
                    {approved.is_some().then(|| view! { <td>{theirs.map(|t| format!("{t:.4}")).unwrap_or_default()}</td><td>{delta}</td> })}
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="table" data-testid="versus">
            <thead><tr><th>"Metric"</th><th>{format!("v{}", v.version)}</th>
                {other.map(|o| view! { <th>{o}</th><th>"Difference"</th> })}</tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

/// Dataset -> labeling job -> training job -> this version, as a chain of boxes.
fn lineage_view(v: &ModelVersion) -> impl IntoView {
    let node = |kind: &'static str, name: String, href: Option<String>| {
        let label = match href {
            Some(h) => view! { <a href=h>{name}</a> }.into_any(),
            None => view! { <span>{name}</span> }.into_any(),
        };
        view! { <div class="lineage-node"><small>{kind}</small>{label}</div> }
    };
    let mut stages = Vec::new();
    if !v.lineage.datasets.is_empty() {
        stages.push(
            v.lineage
                .datasets
                .iter()
                .map(|d| {
                    if v.lineage.deleted_datasets.contains(d) {
                        node("dataset", format!("deleted dataset {d}"), None)
                    } else {
                        node("dataset", d.clone(), Some(format!("/datasets/{d}")))
                    }
                })
                .collect_view()
                .into_any(),
        );
    }
    if !v.lineage.labeling_jobs.is_empty() {
        stages.push(
            v.lineage
                .labeling_jobs
                .iter()
                .map(|l| node("labeling job", l.clone(), Some(format!("/labeling/{l}"))))
                .collect_view()
                .into_any(),
        );
    }
    match &v.training_job {
        Some(j) => stages.push(node("training job", j.clone(), Some(format!("/training/{j}"))).into_any()),
        None => stages.push(node("upload", v.artifact.name.clone(), None).into_any()),
    }
    stages.push(node("model version", format!("{} v{}", v.group, v.version), None).into_any());
    let last = stages.len() - 1;
    view! {
        <div class="lineage" data-testid="lineage">
            {stages.into_iter().enumerate().map(|(i, s)| view! {
                <div class="lineage-stage">{s}</div>
                {(i < last).then(|| view! { <span class="lineage-arrow" aria-hidden="true">"→"</span> })}
            }).collect_view()}
        </div>
    }
}

fn timeline_view(events: Vec<VersionEvent>) -> impl IntoView {
    view! {
        <table class="table" data-testid="version-timeline">
            <thead><tr><th>"When"</th><th>"Who"</th><th>"What"</th><th>"Status after"</th><th>"Comment"</th></tr></thead>
            <tbody>
                {events.into_iter().map(|e| view! {
                    <tr><td>{when_ms(e.ts_ms)}</td><td>{e.actor}</td><td>{e.kind}</td>
                        <td><span class=status_class(&e.status)>{e.status.clone()}</span></td><td>{e.comment}</td></tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// Approve or reject, with a comment; shown to those policy lets decide.
#[component]
fn DecisionForm(version: ModelVersion, decide: ServerAction<DecideModelVersion>) -> impl IntoView {
    let error = Signal::derive(move || decide.value().get().and_then(Result::err));
    let approve_label = if version.status == REJECTED { "Approve again" } else { "Approve" };
    view! {
        <ActionForm action=decide attr:class="card form" attr:data-testid="decision">
            <h2>"Your decision"</h2>
            <input type="hidden" name="group" value=version.group.clone()/>
            <input type="hidden" name="version" value=version.version/>
            <input type="hidden" name="expected_status" value=version.status.clone()/>
            <label for="decision-comment">"Comment"</label>
            <textarea id="decision-comment" name="comment" rows="3" placeholder="Required to reject; say what changed to approve a rejected version"></textarea>
            <FieldError error field="comment"/>
            <FormError error/>
            <div class="buttons">
                {(version.status != APPROVED).then(|| view! {
                    <button type="submit" class="primary" name="status" value=APPROVED>{approve_label}</button>
                })}
                {(version.status != REJECTED).then(|| view! {
                    <button type="submit" class="danger" name="status" value=REJECTED>"Reject"</button>
                })}
            </div>
        </ActionForm>
    }
}

/// The reviewer inbox: pending versions the user may decide on.
#[component]
pub fn ApprovalsPage() -> impl IntoView {
    let inbox = Resource::new(|| (), |_| approval_inbox());
    view! {
        <h1>"Approvals"</h1>
        <p class="muted">"Model versions waiting for your decision, oldest first."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match inbox.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted" data-testid="inbox-empty">"Nothing waits for you."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="inbox">
                            <thead><tr><th>"Version"</th><th>"Registered by"</th><th>"When"</th><th>"Approvals"</th><th>"Metrics"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|p| {
                                    let metrics = p.metrics.iter().filter(|(k, _)| !matches!(k.as_str(), "epoch" | "samples_per_sec"))
                                        .take(3).map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ");
                                    view! {
                                        <tr>
                                            <td><a href=version_href(&p.group, p.version)>{format!("{} v{}", p.group, p.version)}</a></td>
                                            <td>{p.created_by}</td>
                                            <td>{format_time(p.created_at)}</td>
                                            <td>{format!("{} of {}", p.approvals, p.required_approvals)}</td>
                                            <td>{metrics}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The inbox count beside "Approvals" in the navigation.
#[component]
pub fn ApprovalsCount() -> impl IntoView {
    let me = expect_context::<crate::CurrentUser>();
    move || {
        let n = me.0.get().and_then(Result::ok).map(|m| m.approvals_waiting).unwrap_or(0);
        (n > 0).then(|| view! { <span class="count" data-testid="approvals-count">{n}</span> })
    }
}

/// "Register model" on a completed training job's page: the group (new or existing)
/// and a description; the version records the job's metrics and lineage.
#[component]
pub fn RegisterFromJob(job: String) -> impl IntoView {
    let register = ServerAction::<RegisterModelFromJob>::new();
    let groups = Resource::new(|| (), |_| list_model_groups());
    let error = Signal::derive(move || register.value().get().and_then(Result::err));
    let navigate = leptos_router::hooks::use_navigate();
    let group_input = RwSignal::new(String::new());
    Effect::new(move |_| {
        if let Some(Ok(version)) = register.value().get() {
            navigate(&version_href(&group_input.get_untracked(), version), Default::default());
        }
    });
    view! {
        <ActionForm action=register attr:class="card form" attr:data-testid="register-model">
            <h2>"Register model"</h2>
            <input type="hidden" name="training_job" value=job/>
            <label for="register-group">"Model group"</label>
            <input id="register-group" name="group" type="text" required list="model-group-names"
                placeholder="an existing group, or a new name" on:input=move |ev| group_input.set(event_target_value(&ev))/>
            <datalist id="model-group-names">
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        groups.await.unwrap_or_default().into_iter().map(|g| view! { <option value=g.name.clone()></option> }).collect_view()
                    })}
                </Transition>
            </datalist>
            <FieldError error field="name"/>
            <label for="register-description">"Description"</label>
            <input id="register-description" name="description" type="text"/>
            <FieldError error field="training_job"/>
            <FormError error/>
            <button type="submit" class="primary">"Register model version"</button>
        </ActionForm>
    }
}
