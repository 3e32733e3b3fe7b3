//! Endpoints' pages: the list with a form to deploy an approved version, and one
//! endpoint with its variants and instances, a blue/green update, a test request,
//! live monitoring charts and its history.

use atelier_protocol::endpoints::{Endpoint, EndpointEvent, FAILED, IN_SERVICE};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};

use crate::auth::Can;
use crate::confirm::ConfirmButton;
use crate::error::AppError;
use crate::format::format_time;
use crate::forms::{FieldError, FormError};

/// What a test request got back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvokeResult {
    pub status: u16,
    pub variant: String,
    pub content_type: String,
    pub body: String,
    pub millis: f64,
}

/// The server's invocation path, handed to server functions as context (the router
/// lives in the server crate).
#[cfg(feature = "ssr")]
pub type InvokeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<InvokeResult, atelier_core::CoreError>> + Send>>;

#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct Invoke(
    #[allow(clippy::type_complexity)]
    pub  std::sync::Arc<dyn Fn(atelier_core::authz::Principal, String, String, Vec<u8>) -> InvokeFuture + Send + Sync>,
);

/// An endpoint with its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointDetail {
    pub endpoint: Endpoint,
    pub events: Vec<EndpointEvent>,
    pub may_update: bool,
    pub may_invoke: bool,
    /// Its alarms going off now (not muted): name and reason.
    pub firing: Vec<(String, String)>,
}

#[server]
pub async fn list_endpoints() -> Result<Vec<Endpoint>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::endpoints::list(&db, &p).await?)
}

/// The alarms going off now (not muted) on the endpoints the caller may see:
/// endpoint, alarm, reason.
#[server]
pub async fn firing_alarms() -> Result<Vec<(String, String, String)>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::endpoints::alarms::firing(&db, &p)
        .await?
        .into_iter()
        .map(|f| (f.endpoint, f.alarm, f.reason))
        .collect())
}

#[server]
pub async fn get_endpoint(name: String) -> Result<EndpointDetail, AppError> {
    use atelier_core::authz::Action;
    use atelier_core::endpoints;
    let (db, p) = crate::context::db_and_principal()?;
    let endpoint = endpoints::get(&db, &p, &name).await?;
    let events = endpoints::events(&db, &p, &name).await?;
    let resource = endpoints::resource(&name).created_by(endpoint.created_by.clone());
    let may_update = p.can(Action::UpdateEndpoint, &resource);
    let may_invoke = p.can(Action::InvokeEndpoint, &resource);
    let firing = endpoints::alarms::list(&db, &p, &name)
        .await?
        .into_iter()
        .filter(|a| a.state == endpoints::alarms::ALARM && !a.muted)
        .map(|a| (a.name, a.reason))
        .collect();
    Ok(EndpointDetail { endpoint, events, may_update, may_invoke, firing })
}

/// Approved versions the caller may deploy, as `group:version`, newest first.
#[server]
pub async fn deployable_versions() -> Result<Vec<String>, AppError> {
    use atelier_core::models::{self, versions};
    let (db, p) = crate::context::db_and_principal()?;
    let mut out = Vec::new();
    for g in models::list_groups(&db, &p).await? {
        if g.approved_version.is_none() {
            continue;
        }
        for v in versions::list(&db, &p, &g.name).await? {
            if v.status == atelier_protocol::models::APPROVED {
                out.push(format!("{}:{}", v.group, v.version));
            }
        }
    }
    Ok(out)
}

#[cfg(feature = "ssr")]
fn parse_model(model: &str) -> Result<(String, i64), AppError> {
    model
        .rsplit_once(':')
        .and_then(|(g, v)| v.parse().ok().map(|v| (g.to_string(), v)))
        .ok_or_else(|| invalid("model", "choose an approved model version"))
}

/// A field error, made through `CoreError` so the answer's status is 422, not 500.
#[cfg(feature = "ssr")]
fn invalid(field: &'static str, message: &str) -> AppError {
    atelier_core::CoreError::invalid(field, message).into()
}

#[cfg(feature = "ssr")]
fn parse_count(field: &'static str, raw: &str, default: i64) -> Result<i64, AppError> {
    match raw.trim() {
        "" => Ok(default),
        n => n.parse().map_err(|_| invalid(field, &format!("{field} must be a whole number"))),
    }
}

#[server]
pub async fn create_endpoint(
    name: String,
    model: String,
    instance_count: String,
    gpus: String,
) -> Result<String, AppError> {
    use atelier_protocol::endpoints::{NewEndpoint, VariantSpec};
    let (db, p) = crate::context::db_and_principal()?;
    let (group, version) = parse_model(&model)?;
    let mut variant = VariantSpec::of(&group, version);
    variant.instance_count = parse_count("instance_count", &instance_count, 1)?;
    variant.gpus = parse_count("gpus", &gpus, 0)?;
    let new = NewEndpoint { name, variants: vec![variant], data_capture: None };
    let created = atelier_core::endpoints::create(&db, &p, &new).await?;
    leptos_axum::redirect(&format!("/endpoints/{}", created.name));
    Ok(created.name)
}

/// Deploys another version to the endpoint's first variant, keeping its size.
#[server]
pub async fn update_endpoint_model(name: String, model: String) -> Result<(), AppError> {
    use atelier_protocol::endpoints::{EndpointConfig, VariantSpec};
    let (db, p) = crate::context::db_and_principal()?;
    let (group, version) = parse_model(&model)?;
    let current = atelier_core::endpoints::get(&db, &p, &name).await?;
    let mut variants: Vec<VariantSpec> = current.variants.iter().map(|v| v.spec()).collect();
    match variants.first_mut() {
        Some(first) => {
            first.model_group = group;
            first.model_version = version;
        }
        None => variants.push(VariantSpec::of(&group, version)),
    }
    atelier_core::endpoints::update(&db, &p, &name, &EndpointConfig { variants }).await?;
    Ok(())
}

/// Sets a variant's autoscaling policy (blank cooldowns take the defaults).
#[server]
pub async fn set_autoscaling(
    name: String,
    variant: String,
    min_instances: String,
    max_instances: String,
    target: String,
    scale_out_cooldown_secs: String,
    scale_in_cooldown_secs: String,
) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let target = target
        .trim()
        .parse()
        .map_err(|_| invalid("target_invocations_per_instance", "target_invocations_per_instance must be a number"))?;
    let policy = atelier_protocol::endpoints::Autoscaling {
        min_instances: parse_count("min_instances", &min_instances, 1)?,
        max_instances: parse_count("max_instances", &max_instances, 1)?,
        target_invocations_per_instance: target,
        scale_out_cooldown_secs: parse_count("scale_out_cooldown_secs", &scale_out_cooldown_secs, 60)?,
        scale_in_cooldown_secs: parse_count("scale_in_cooldown_secs", &scale_in_cooldown_secs, 300)?,
    };
    atelier_core::endpoints::autoscaling::put(&db, &p, &name, &variant, &policy).await?;
    Ok(())
}

#[server]
pub async fn remove_autoscaling(name: String, variant: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::endpoints::autoscaling::delete(&db, &p, &name, &variant).await?;
    Ok(())
}

#[server]
pub async fn delete_endpoint(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let store = crate::context::artifacts()?;
    atelier_core::endpoints::delete(&db, &store, &p, &name).await?;
    leptos_axum::redirect("/endpoints");
    Ok(())
}

/// Sends a test request through the same path as `POST /endpoints/{name}/invocations`.
#[server]
pub async fn test_invoke(name: String, content_type: String, body: String) -> Result<InvokeResult, AppError> {
    use atelier_core::CoreError;
    let p = crate::context::principal()?;
    let invoke = use_context::<Invoke>()
        .ok_or_else(|| AppError::new(crate::error::ErrorKind::Internal, "invocation context missing"))?;
    match (invoke.0)(p, name, content_type, body.into_bytes()).await {
        Ok(result) => Ok(result),
        Err(e @ (CoreError::Forbidden(_) | CoreError::Unauthenticated(_) | CoreError::NotFound(_))) => Err(e.into()),
        // The model's or the fleet's failures are the answer the user asked to see.
        Err(e) => Ok(InvokeResult {
            status: e.http_status(),
            variant: String::new(),
            content_type: "text/plain".into(),
            body: e.to_string(),
            millis: 0.0,
        }),
    }
}

/// The monitoring charts over `range_secs` ending `end_secs_ago` before now, and the
/// invocation total.
#[server]
pub async fn endpoint_charts(name: String, range_secs: i64, end_secs_ago: i64) -> Result<(String, i64), AppError> {
    use crate::charts::{time_chart, Series};
    let (db, p) = crate::context::db_and_principal()?;
    let range = range_secs.clamp(600, 31 * 86_400);
    let now = atelier_core::now();
    let end = now - end_secs_ago.clamp(0, 400 * 86_400);
    let m = atelier_core::endpoints::metrics::series(&db, &p, &name, "*", end - range, end + 60).await?;
    let (unit, per) = if range <= 3 * 3600 { ("minutes", 60.0) } else { ("hours", 3600.0) };
    let x = |at: i64| (at - now) as f64 / per;
    let line = |label: &str, f: &dyn Fn(&atelier_protocol::endpoints::MetricPoint) -> Option<f64>| Series {
        label: label.into(),
        points: m.points.iter().filter_map(|pt| f(pt).map(|y| (x(pt.at), y))).collect(),
    };
    let per_step = format!("per {} s", m.step);
    let x_desc = format!("{unit} from now");
    let span = (x(end - range), x(end));
    let mut svg = time_chart(
        &format!("Invocations ({per_step})"),
        &x_desc,
        "requests",
        &[
            line("invocations", &|p| Some(p.invocations as f64)),
            line("4xx", &|p| Some(p.errors_4xx as f64)),
            line("5xx", &|p| Some(p.errors_5xx as f64)),
        ],
        span,
    );
    svg.push_str(&time_chart(
        "Latency",
        &x_desc,
        "milliseconds",
        &[
            line("model p50", &|p| p.model_p50_ms),
            line("model p90", &|p| p.model_p90_ms),
            line("model p99", &|p| p.model_p99_ms),
            line("overhead p50", &|p| p.overhead_p50_ms),
            line("overhead p99", &|p| p.overhead_p99_ms),
        ],
        span,
    ));
    svg.push_str(&time_chart(
        "Healthy instances",
        &x_desc,
        "instances",
        &[line("instances", &|p| Some(p.instances as f64))],
        span,
    ));
    let total = m.points.iter().map(|p| p.invocations).sum();
    Ok((svg, total))
}

/// The utilization charts of the nodes the endpoint's live instances run on (those the
/// caller may see), over `range_secs` ending `end_secs_ago` before now.
#[server]
pub async fn endpoint_node_charts(
    name: String,
    range_secs: i64,
    end_secs_ago: i64,
) -> Result<Vec<(String, String)>, AppError> {
    use atelier_core::compute::nodes;
    use atelier_protocol::endpoints::{INSTANCE_IN_SERVICE, INSTANCE_PENDING, INSTANCE_STARTING};
    let (db, p) = crate::context::db_and_principal()?;
    let endpoint = atelier_core::endpoints::get(&db, &p, &name).await?;
    let mut names: Vec<String> = endpoint
        .instances
        .iter()
        .filter(|i| [INSTANCE_PENDING, INSTANCE_STARTING, INSTANCE_IN_SERVICE].contains(&i.state.as_str()))
        .filter_map(|i| i.node.clone())
        .collect();
    names.sort();
    names.dedup();
    let end = atelier_core::now() - end_secs_ago.clamp(0, 400 * 86_400);
    let since = end - range_secs.clamp(600, 31 * 86_400);
    let mut charts = Vec::new();
    for name in names {
        match nodes::samples(&db, &p, &name, since).await {
            Ok((node, mut samples)) => {
                samples.retain(|s| s.ts <= end);
                charts
                    .push((node.name.clone(), crate::charts::node_utilization(&node.name, &node.gpu_list(), &samples)))
            }
            Err(atelier_core::CoreError::Forbidden(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(charts)
}

fn status_class(status: &str) -> &'static str {
    match status {
        IN_SERVICE => "badge status-approved",
        FAILED => "badge status-rejected",
        _ => "badge status-pending",
    }
}

/// Endpoints: what is deployed, and a form to deploy an approved version.
#[component]
pub fn EndpointsPage() -> impl IntoView {
    let create = ServerAction::<CreateEndpoint>::new();
    let list = Resource::new(|| (), |_| list_endpoints());
    let firing = Resource::new(|| (), |_| firing_alarms());
    let versions = Resource::new(|| (), |_| deployable_versions());
    let me = expect_context::<crate::CurrentUser>();
    view! {
        <h1>"Endpoints"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let firing = firing.await.unwrap_or_default();
                match list.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(l) if l.is_empty() => view! { <p class="muted">"No endpoints yet. Deploy an approved model version below."</p> }.into_any(),
                    Ok(l) => view! {
                        <table class="table" data-testid="endpoints">
                            <thead><tr><th>"Endpoint"</th><th>"Status"</th><th>"Alarms"</th><th>"Serving"</th><th>"Created by"</th><th>"Updated"</th></tr></thead>
                            <tbody>
                                {l.into_iter().map(|e| {
                                    let serving = e.variants.iter()
                                        .map(|v| format!("{} v{} ({}/{} healthy)", v.model_group, v.model_version, v.healthy, v.instance_count))
                                        .collect::<Vec<_>>().join(", ");
                                    let alarms = firing.iter().filter(|(endpoint, ..)| *endpoint == e.name)
                                        .map(|(_, alarm, reason)| view! {
                                            <span class="badge status-rejected" title=reason.clone()>{format!("{alarm} firing")}</span>" "
                                        }).collect_view();
                                    view! {
                                        <tr data-endpoint=e.name.clone()>
                                            <td><a href=format!("/endpoints/{}", e.name)>{e.name.clone()}</a></td>
                                            <td><span class=status_class(&e.status)>{e.status.clone()}</span></td>
                                            <td data-testid="firing-alarms">{alarms}</td>
                                            <td>{serving}</td>
                                            <td>{e.created_by.clone()}</td>
                                            <td>{format_time(e.updated_at)}</td>
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
            {move || Suspend::new(async move {
                let may = me.0.await.ok().is_some_and(|m| m.can.contains(&Can::CreateEndpoint));
                may.then(|| view! { <NewEndpointForm create versions/> })
            })}
        </Transition>
    }
}

/// Approved versions to pick from. The resource is created by the page, never inside
/// a suspended view, so hydration finds the resources where the server made them.
type Deployable = Resource<Result<Vec<String>, AppError>>;

#[component]
fn ModelSelect(id: &'static str, versions: Deployable) -> impl IntoView {
    view! {
        <Transition fallback=move || view! { <select id=id name="model" disabled=true></select> }>
            {move || Suspend::new(async move {
                let list = versions.await.unwrap_or_default();
                if list.is_empty() {
                    return view! { <p class="muted" data-testid="no-approved">"No approved model versions yet: a reviewer approves versions in Approvals."</p> }.into_any();
                }
                view! {
                    <select id=id name="model" required=true>
                        {list.into_iter().map(|m| {
                            let label = m.replacen(':', " v", 1);
                            view! { <option value=m>{label}</option> }
                        }).collect_view()}
                    </select>
                }.into_any()
            })}
        </Transition>
    }
}

#[component]
fn NewEndpointForm(create: ServerAction<CreateEndpoint>, versions: Deployable) -> impl IntoView {
    let error = Signal::derive(move || create.value().get().and_then(Result::err));
    view! {
        <ActionForm action=create attr:class="card form" attr:data-testid="new-endpoint">
            <h2>"Deploy a model"</h2>
            <label for="endpoint-name">"Endpoint name"</label>
            <input id="endpoint-name" name="name" type="text" required maxlength="63" pattern="[A-Za-z0-9]([A-Za-z0-9\\-]*[A-Za-z0-9])?"/>
            <FieldError error field="name"/>
            <label for="endpoint-model">"Approved model version"</label>
            <ModelSelect id="endpoint-model" versions/>
            <FieldError error field="variants.model_version"/>
            <label for="endpoint-instances">"Instances"</label>
            <input id="endpoint-instances" name="instance_count" type="number" min="1" max="20" value="1"/>
            <FieldError error field="variants.instance_count"/>
            <label for="endpoint-gpus">"GPUs per instance"</label>
            <input id="endpoint-gpus" name="gpus" type="number" min="0" max="16" value="0"/>
            <FieldError error field="variants.gpus"/>
            <FormError error/>
            <button type="submit" class="primary">"Create endpoint"</button>
        </ActionForm>
    }
}

/// One endpoint.
#[component]
pub fn EndpointPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let update = ServerAction::<UpdateEndpointModel>::new();
    let tick = RwSignal::new(0u32);
    // The charts' window: its length and how long before now it ends.
    let window = RwSignal::new((3600i64, 0i64));
    let custom = RwSignal::new(false);
    let set_scaling = ServerAction::<SetAutoscaling>::new();
    let remove_scaling = ServerAction::<RemoveAutoscaling>::new();
    let changed = move || (update.version().get(), set_scaling.version().get(), remove_scaling.version().get());
    let detail = Resource::new(move || (name(), changed(), tick.get()), |(n, _, _)| get_endpoint(n));
    // The forms are drawn from a copy read again only after a change: the live parts
    // re-render every few seconds, which would reset what a user is typing.
    let config: Config = Resource::new(move || (name(), changed()), |(n, _)| get_endpoint(n));
    let charts = Resource::new(move || (name(), window.get(), tick.get()), |(n, (r, e), _)| endpoint_charts(n, r, e));
    let node_charts =
        Resource::new(move || (name(), window.get(), tick.get()), |(n, (r, e), _)| endpoint_node_charts(n, r, e));
    let versions = Resource::new(|| (), |_| deployable_versions());
    Effect::new(move |_| {
        let handle = set_interval_with_handle(move || tick.update(|t| *t += 1), std::time::Duration::from_secs(3));
        on_cleanup(move || {
            if let Ok(h) = handle {
                h.clear();
            }
        });
    });
    let update_error = Signal::derive(move || update.value().get().and_then(Result::err));
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(d) => view! { <EndpointSummary detail=d/> }.into_any(),
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                config.await.ok().filter(|d| d.may_update).map(|d| view! {
                    <EndpointForms detail=d update update_error versions set_scaling remove_scaling/>
                })
            })}
        </Transition>
        <h2>"Test request"</h2>
        <TestRequest name=Signal::derive(name)/>
        <h2>"Data capture and model monitor"</h2>
        <MonitorSection name=Signal::derive(name) tick config/>
        <h2 id="alarms">"Alarms"</h2>
        <AlarmsSection name=Signal::derive(name) tick config/>
        <h2>"Monitoring"</h2>
        <div class="actions">
            <label for="metrics-range">"Range"</label>
            <select id="metrics-range" on:change=move |ev| {
                let value = event_target_value(&ev);
                custom.set(value == "custom");
                if let Ok(v) = value.parse() { window.set((v, 0)) }
            }>
                <option value="3600">"Last hour"</option>
                <option value="86400">"Last day"</option>
                <option value="604800">"Last week"</option>
                <option value="custom">"Custom…"</option>
            </select>
        </div>
        <Show when=move || custom.get()>
            <CustomRange window/>
        </Show>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match charts.await {
                    Ok((svg, total)) => view! {
                        <p>"Invocations in range: " <strong data-testid="invocation-total">{total}</strong></p>
                        <div class="chart" data-testid="endpoint-charts" inner_html=svg></div>
                    }.into_any(),
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                }
            })}
        </Transition>
        <h3>"Nodes serving it"</h3>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match node_charts.await {
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No instance is placed on a node you can see."</p> }.into_any(),
                    Ok(list) => list.into_iter().map(|(node, svg)| view! {
                        <div class="chart" data-testid="node-chart" data-node=node inner_html=svg></div>
                    }).collect_view().into_any(),
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                config.await.ok().filter(|d| d.may_update).map(|d| view! { <DangerZone detail=d/> })
            })}
        </Transition>
    }
}

/// What deleting the endpoint takes with it, for the confirmation.
fn delete_consequence(e: &Endpoint) -> String {
    let serving =
        e.variants.iter().map(|v| format!("{} v{}", v.model_group, v.model_version)).collect::<Vec<_>>().join(", ");
    let n = e.variants.len();
    format!(
        "It serves {n} variant{} ({serving}); traffic stops, its instances shut down, and its alarms, \
         monitor, captured data and history are deleted.",
        if n == 1 { "" } else { "s" }
    )
}

/// Deleting the endpoint: at the page's end, away from the everyday forms, and asked first.
#[component]
fn DangerZone(detail: EndpointDetail) -> impl IntoView {
    let delete = ServerAction::<DeleteEndpoint>::new();
    let error = Signal::derive(move || delete.value().get().and_then(Result::err));
    let navigate = leptos_router::hooks::use_navigate();
    // The server function redirects; a client-side dispatch follows it here.
    Effect::new(move |_| {
        if matches!(delete.value().get(), Some(Ok(()))) {
            navigate("/endpoints", Default::default());
        }
    });
    let name = detail.endpoint.name.clone();
    let consequence = delete_consequence(&detail.endpoint);
    let target = name.clone();
    view! {
        <section class="card danger-zone" data-testid="danger-zone">
            <h2>"Danger zone"</h2>
            <p>"Deleting the endpoint stops its traffic at once; it cannot be undone."</p>
            <ConfirmButton
                label="Delete endpoint…"
                title=format!("Delete endpoint {name}?")
                consequence
                confirm="Delete endpoint"
                testid="delete-endpoint"
                on_confirm=Callback::new(move |_| { delete.dispatch(DeleteEndpoint { name: target.clone() }); })
            />
            <FormError error/>
        </section>
    }
}

/// The endpoint as last read, for forms that must not re-render on every refresh.
type Config = Resource<Result<EndpointDetail, AppError>>;

/// A window given in hours before now ("from 30 to 6 hours ago").
#[component]
fn CustomRange(window: RwSignal<(i64, i64)>) -> impl IntoView {
    let from = RwSignal::new("24".to_string());
    let to = RwSignal::new("0".to_string());
    let error = RwSignal::new(None::<String>);
    let apply = move |_| {
        let hours = |s: String| s.trim().parse::<f64>().ok().filter(|h| h.is_finite() && *h >= 0.0);
        match (hours(from.get()), hours(to.get())) {
            (Some(f), Some(t)) if f > t && f - t <= 31.0 * 24.0 => {
                error.set(None);
                window.set((((f - t) * 3600.0) as i64, (t * 3600.0) as i64));
            }
            _ => error.set(Some("From must be more hours ago than To, at most 31 days apart.".into())),
        }
    };
    view! {
        <div class="actions" data-testid="custom-range">
            <label for="range-from">"From (hours ago)"</label>
            <input id="range-from" type="number" min="0" step="any" prop:value=from on:input=move |ev| from.set(event_target_value(&ev))/>
            <label for="range-to">"To (hours ago)"</label>
            <input id="range-to" type="number" min="0" step="any" prop:value=to on:input=move |ev| to.set(event_target_value(&ev))/>
            <button type="button" on:click=apply>"Show"</button>
            {move || error.get().map(|e| view! { <span class="error">{e}</span> })}
        </div>
    }
}

/// Status, variants, instances and history (re-rendered on every refresh).
#[component]
fn EndpointSummary(detail: EndpointDetail) -> impl IntoView {
    let e = detail.endpoint;
    let variant_rows = |variants: &[atelier_protocol::endpoints::Variant]| {
        variants
            .iter()
            .map(|v| {
                view! {
                    <tr data-variant=v.name.clone()>
                        <td>{v.name.clone()}</td>
                        <td><a href=format!("/models/{}/versions/{}", v.model_group, v.model_version)>{format!("{} v{}", v.model_group, v.model_version)}</a></td>
                        <td>{v.weight}</td>
                        <td data-testid="healthy">{format!("{}/{}", v.healthy, v.instance_count)}</td>
                        <td>{format!("{} CPU, {} MB, {} GPU", v.cpus, v.memory_mb, v.gpus)}</td>
                        <td data-testid="autoscaling">{autoscaling_summary(v.autoscaling.as_ref())}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    let current = variant_rows(&e.variants);
    let pending = (!e.pending_variants.is_empty()).then(|| {
        let rows = variant_rows(&e.pending_variants);
        view! {
            <h3>"Being deployed (configuration " {e.generation} ")"</h3>
            <p class="muted">"Traffic moves once every new instance is healthy."</p>
            <table class="table"><tbody>{rows}</tbody></table>
        }
    });
    let instances = e
        .instances
        .iter()
        .map(|i| {
            view! {
                <tr>
                    <td><code>{i.id.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<String>()}</code></td>
                    <td>{format!("{} (config {})", i.variant, i.generation)}</td>
                    <td>{i.node.clone().unwrap_or_else(|| "—".into())}</td>
                    <td data-testid="instance-state">{i.state.clone()}</td>
                    <td>{i.message.clone()}</td>
                </tr>
            }
        })
        .collect_view();
    let events = detail
        .events
        .iter()
        .take(20)
        .map(|ev| view! { <li><span class="muted">{format_time(ev.at_ms / 1000)}</span> " " {ev.message.clone()}</li> })
        .collect_view();
    let firing = (!detail.firing.is_empty()).then(|| {
        let items = detail
            .firing
            .iter()
            .map(|(alarm, reason)| view! { <li><strong>{alarm.clone()}</strong>" is firing: "{reason.clone()}</li> })
            .collect_view();
        view! {
            <div class="alarm-banner" data-testid="firing-banner">
                <ul>{items}</ul>
                <a href="#alarms">"See the alarms"</a>
            </div>
        }
    });
    view! {
        <h1>{e.name.clone()}</h1>
        {firing}
        <p>
            <span class=status_class(&e.status) data-testid="endpoint-status">{e.status.clone()}</span>
            " "
            <span data-testid="endpoint-reason">{e.reason.clone()}</span>
        </p>
        <dl class="facts">
            <dt>"Invocation URL"</dt><dd><code>{format!("POST /endpoints/{}/invocations", e.name)}</code></dd>
            <dt>"Created"</dt><dd>{format_time(e.created_at)} " by " {e.created_by.clone()}</dd>
            <dt>"Data capture"</dt>
            <dd data-testid="capture-status">{capture_summary(&e.data_capture)}</dd>
        </dl>
        <h2>"Variants"</h2>
        <table class="table" data-testid="variants">
            <thead><tr><th>"Variant"</th><th>"Model version"</th><th>"Weight"</th><th>"Healthy"</th><th>"Resources"</th><th>"Autoscaling"</th></tr></thead>
            <tbody>{current}</tbody>
        </table>
        {pending}
        <h2>"Instances"</h2>
        <table class="table" data-testid="instances">
            <thead><tr><th>"Instance"</th><th>"Variant"</th><th>"Node"</th><th>"State"</th><th>"Message"</th></tr></thead>
            <tbody>{instances}</tbody>
        </table>
        <h2>"History"</h2>
        <ul class="events" data-testid="endpoint-events">{events}</ul>
    }
    .into_any()
}

/// What someone allowed to change the endpoint can do: deploy another version, set
/// autoscaling (deleting it is in the page's danger zone, at its end).
#[component]
fn EndpointForms(
    detail: EndpointDetail,
    update: ServerAction<UpdateEndpointModel>,
    update_error: Signal<Option<AppError>>,
    versions: Deployable,
    set_scaling: ServerAction<SetAutoscaling>,
    remove_scaling: ServerAction<RemoveAutoscaling>,
) -> impl IntoView {
    let (name, name2) = (detail.endpoint.name.clone(), detail.endpoint.name.clone());
    let variants: Vec<String> = detail.endpoint.variants.iter().map(|v| v.name.clone()).collect();
    view! {
        <ActionForm action=update attr:class="card form" attr:data-testid="update-endpoint">
            <h2>"Deploy another version"</h2>
            <input type="hidden" name="name" value=name/>
            <label for="update-model">"Approved model version"</label>
            <ModelSelect id="update-model" versions/>
            <FormError error=update_error/>
            <button type="submit">"Deploy (blue/green)"</button>
        </ActionForm>
        <AutoscalingForm name=name2 variants set=set_scaling remove=remove_scaling/>
    }
}

fn autoscaling_summary(a: Option<&atelier_protocol::endpoints::Autoscaling>) -> String {
    match a {
        None => "off".into(),
        Some(a) => format!(
            "{}-{} instances, {} invocations/min per instance",
            a.min_instances, a.max_instances, a.target_invocations_per_instance
        ),
    }
}

/// Sets or removes a variant's autoscaling policy.
#[component]
fn AutoscalingForm(
    name: String,
    variants: Vec<String>,
    set: ServerAction<SetAutoscaling>,
    remove: ServerAction<RemoveAutoscaling>,
) -> impl IntoView {
    let error = Signal::derive(move || {
        set.value().get().and_then(Result::err).or_else(|| remove.value().get().and_then(Result::err))
    });
    let options = variants.iter().map(|v| view! { <option value=v.clone()>{v.clone()}</option> }).collect_view();
    let options2 = variants.iter().map(|v| view! { <option value=v.clone()>{v.clone()}</option> }).collect_view();
    let name2 = name.clone();
    view! {
        <details class="card" data-testid="autoscaling-form">
            <summary>"Autoscaling"</summary>
            <ActionForm action=set attr:class="form">
                <input type="hidden" name="name" value=name/>
                <label for="scaling-variant">"Variant"</label>
                <select id="scaling-variant" name="variant">{options}</select>
                <label for="scaling-min">"Minimum instances"</label>
                <input id="scaling-min" name="min_instances" type="number" min="1" max="20" value="1" required/>
                <FieldError error field="min_instances"/>
                <label for="scaling-max">"Maximum instances"</label>
                <input id="scaling-max" name="max_instances" type="number" min="1" max="20" value="4" required/>
                <FieldError error field="max_instances"/>
                <label for="scaling-target">"Target invocations per instance and minute"</label>
                <input id="scaling-target" name="target" type="text" value="600" required/>
                <FieldError error field="target_invocations_per_instance"/>
                <label for="scaling-out">"Scale-out cooldown (seconds)"</label>
                <input id="scaling-out" name="scale_out_cooldown_secs" type="number" min="0" max="86400" value="60"/>
                <label for="scaling-in">"Scale-in cooldown (seconds)"</label>
                <input id="scaling-in" name="scale_in_cooldown_secs" type="number" min="0" max="86400" value="300"/>
                <FormError error/>
                <button type="submit">"Save policy"</button>
            </ActionForm>
            <ActionForm action=remove attr:class="inline-form">
                <input type="hidden" name="name" value=name2/>
                <label for="scaling-remove">"Variant"</label>
                <select id="scaling-remove" name="variant">{options2}</select>
                <button type="submit">"Turn autoscaling off"</button>
            </ActionForm>
        </details>
    }
}

fn capture_summary(c: &atelier_protocol::endpoints::DataCaptureStatus) -> String {
    let used = format!("{} records, {:.1} of {} MB", c.records, c.used_bytes as f64 / 1_048_576.0, c.budget_mb);
    match (&c.paused, c.percent) {
        (Some(reason), _) => format!("{reason} ({used})"),
        (None, 0) => format!("off ({used})"),
        (None, p) => format!("{p}% of invocations ({used})"),
    }
}

#[component]
fn TestRequest(name: Signal<String>) -> impl IntoView {
    let send = ServerAction::<TestInvoke>::new();
    view! {
        <ActionForm action=send attr:class="card form" attr:data-testid="test-request">
            <input type="hidden" name="name" value=name/>
            <label for="test-content-type">"Content type"</label>
            <select id="test-content-type" name="content_type">
                <option value="application/json">"application/json"</option>
                <option value="text/csv">"text/csv"</option>
                <option value="text/plain">"text/plain"</option>
            </select>
            <label for="test-body">"Body"</label>
            <textarea id="test-body" name="body" rows="6" required=true>"{\"instances\": []}"</textarea>
            <button type="submit" class="primary">"Send request"</button>
        </ActionForm>
        {move || send.value().get().map(|r| match r {
            Err(e) => view! { <p class="error" data-testid="test-error">{e.message}</p> }.into_any(),
            Ok(r) => view! {
                <div class="card" data-testid="test-response">
                    <p>
                        "Status " <strong data-testid="test-status">{r.status}</strong>
                        {(!r.variant.is_empty()).then(|| format!(" · variant {}", r.variant))}
                        {format!(" · {:.1} ms · {}", r.millis, r.content_type)}
                    </p>
                    <pre data-testid="test-body-out">{r.body}</pre>
                </div>
            }.into_any(),
        })}
    }
}

/// An endpoint's model monitor with its latest runs and the charts of the newest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorDetail {
    pub monitor: Option<atelier_protocol::monitor::Monitor>,
    pub runs: Vec<atelier_protocol::monitor::MonitorRun>,
    /// The newest run, with its report.
    pub latest: Option<atelier_protocol::monitor::MonitorRun>,
    /// Baseline against current distributions of the latest run's features (SVG).
    pub charts: String,
    pub may_update: bool,
}

#[server]
pub async fn set_data_capture(name: String, percent: String, budget_mb: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let dc = atelier_protocol::endpoints::DataCapture {
        percent: parse_count("data_capture.percent", &percent, 0)?,
        budget_mb: parse_count("data_capture.budget_mb", &budget_mb, 1024)?,
    };
    atelier_core::endpoints::capture::configure(&db, &p, &name, &dc).await?;
    Ok(())
}

#[server]
pub async fn get_monitor(name: String) -> Result<MonitorDetail, AppError> {
    use atelier_core::authz::Action;
    use atelier_core::monitor::runs;
    let (db, p) = crate::context::db_and_principal()?;
    let monitor = runs::get(&db, &p, &name).await?;
    let list = runs::runs(&db, &p, &name).await?;
    let latest = match list.first() {
        Some(r) => Some(runs::run(&db, &p, &name, &r.id).await?),
        None => None,
    };
    let mut charts = String::new();
    if let Some(report) = latest.as_ref().and_then(|r| r.report.as_ref()) {
        // Drifted features first; at most six charts.
        let mut features: Vec<_> = report.features.iter().collect();
        features.sort_by_key(|f| !f.drifted);
        for f in features.into_iter().take(6) {
            let labels: Vec<String> = f.baseline_distribution.iter().map(|(l, _)| l.clone()).collect();
            let share = |d: &[(String, f64)]| d.iter().map(|(_, v)| v * 100.0).collect::<Vec<f64>>();
            let title = format!("{}{}", f.name, if f.drifted { " (drifted)" } else { "" });
            charts.push_str(&crate::charts::bar_chart(
                &title,
                "% of values",
                &labels,
                &[
                    ("baseline".into(), share(&f.baseline_distribution)),
                    ("captured".into(), share(&f.current_distribution)),
                ],
                None,
            ));
        }
    }
    let endpoint = atelier_core::endpoints::get(&db, &p, &name).await?;
    let may_update = p
        .can(Action::UpdateEndpoint, &atelier_core::endpoints::resource(&name).created_by(endpoint.created_by.clone()));
    Ok(MonitorDetail { monitor, runs: list, latest, charts, may_update })
}

#[server]
pub async fn setup_monitor(name: String, frequency: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let store = crate::context::artifacts()?;
    let config = atelier_protocol::monitor::MonitorConfig { frequency, thresholds: Default::default() };
    atelier_core::monitor::runs::configure(&db, &store, &p, &name, &config).await?;
    Ok(())
}

#[server]
pub async fn run_monitor(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let store = crate::context::artifacts()?;
    atelier_core::monitor::runs::run_now(&db, &store, &p, &name, None, None).await?;
    Ok(())
}

fn number(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into())
}

/// Data capture settings and the model monitor of one endpoint.
#[component]
fn MonitorSection(name: Signal<String>, tick: RwSignal<u32>, config: Config) -> impl IntoView {
    let capture = ServerAction::<SetDataCapture>::new();
    let setup = ServerAction::<SetupMonitor>::new();
    let run = ServerAction::<RunMonitor>::new();
    let detail = Resource::new(
        move || (name.get(), setup.version().get(), run.version().get(), tick.get() / 5),
        |(n, _, _, _)| get_monitor(n),
    );
    let errors = Signal::derive(move || {
        capture
            .value()
            .get()
            .and_then(Result::err)
            .or_else(|| setup.value().get().and_then(Result::err))
            .or_else(|| run.value().get().and_then(Result::err))
    });
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                config.await.ok().filter(|d| d.may_update).map(|_| view! {
                    <div class="card-row">
                        <ActionForm action=capture attr:class="card form" attr:data-testid="capture-form">
                            <h3>"Data capture"</h3>
                            <input type="hidden" name="name" value=name.get_untracked()/>
                            <label for="capture-percent">"Capture %"</label>
                            <input id="capture-percent" name="percent" type="number" min="0" max="100" value="100"/>
                            <label for="capture-budget">"Budget (MB)"</label>
                            <input id="capture-budget" name="budget_mb" type="number" min="1" value="1024"/>
                            <button type="submit">"Set data capture"</button>
                        </ActionForm>
                        <ActionForm action=setup attr:class="card form" attr:data-testid="monitor-form">
                            <h3>"Model monitor"</h3>
                            <p class="muted">"Profiles the training data of the served version as the baseline."</p>
                            <input type="hidden" name="name" value=name.get_untracked()/>
                            <label for="monitor-frequency">"Runs"</label>
                            <select id="monitor-frequency" name="frequency">
                                <option value="hourly">"hourly"</option>
                                <option value="daily">"daily"</option>
                                <option value="manual">"on demand"</option>
                            </select>
                            <button type="submit">"Set up model monitor"</button>
                        </ActionForm>
                    </div>
                })
            })}
        </Transition>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let d = match detail.await {
                    Ok(d) => d,
                    Err(e) => return view! { <p class="error">{e.message}</p> }.into_any(),
                };
                let run_button = (d.may_update && d.monitor.is_some()).then(|| view! {
                        <ActionForm action=run attr:class="actions">
                            <input type="hidden" name="name" value=name.get_untracked()/>
                            <button type="submit" class="primary">"Run monitor now"</button>
                        </ActionForm>
                });
                let baseline = d.monitor.as_ref().map(|m| {
                    let rows = m.baseline.features.iter().map(|f| view! {
                        <tr>
                            <td>{f.name.clone()}</td>
                            <td>{format!("{:?}", f.kind).to_lowercase()}</td>
                            <td>{format!("{:.1}%", f.completeness * 100.0)}</td>
                            <td>{number(f.min)}</td>
                            <td>{number(f.max)}</td>
                            <td>{number(f.mean)}</td>
                            <td>{number(f.std)}</td>
                            <td>{f.categories.len()}</td>
                        </tr>
                    }).collect_view();
                    view! {
                        <p>
                            {format!("Baseline: {} rows of the training data of {} v{}; runs {}",
                                m.baseline.rows, m.model_group, m.model_version, m.frequency)}
                            {format!(" (drift thresholds: PSI {}, KS {}, Jensen–Shannon {})",
                                m.thresholds.psi, m.thresholds.ks, m.thresholds.js)}
                        </p>
                        <table class="table" data-testid="baseline">
                            <thead><tr><th>"Feature"</th><th>"Type"</th><th>"Complete"</th><th>"Min"</th><th>"Max"</th><th>"Mean"</th><th>"Std"</th><th>"Categories"</th></tr></thead>
                            <tbody>{rows}</tbody>
                        </table>
                    }
                });
                let runs = d.runs.iter().take(10).map(|r| view! {
                    <tr>
                        <td>{format_time(r.started_at)}</td>
                        <td>{r.status.clone()}</td>
                        <td>{r.rows}</td>
                        <td>{r.drifted}</td>
                        <td>{r.violations}</td>
                        <td>{r.message.clone()}</td>
                    </tr>
                }).collect_view();
                let report = d.latest.as_ref().and_then(|r| r.report.clone()).map(|report| {
                    let features = report.features.iter().map(|f| view! {
                        <tr data-feature=f.name.clone()>
                            <td>{f.name.clone()}</td>
                            <td>{number(f.psi)}</td>
                            <td>{number(f.ks)}</td>
                            <td>{number(f.js)}</td>
                            <td data-testid="drifted">{if f.drifted { "drifted" } else { "ok" }}</td>
                        </tr>
                    }).collect_view();
                    let violations = report.violations.iter().map(|v| view! { <li>{v.message.clone()}</li> }).collect_view();
                    view! {
                        <h3>"Latest report"</h3>
                        <table class="table" data-testid="drift-report">
                            <thead><tr><th>"Feature"</th><th>"PSI"</th><th>"KS"</th><th>"Jensen–Shannon"</th><th>"Drift"</th></tr></thead>
                            <tbody>{features}</tbody>
                        </table>
                        <ul class="events" data-testid="violations">{violations}</ul>
                    }
                });
                view! {
                    {run_button}
                    {baseline}
                    <h3>"Runs"</h3>
                    <table class="table" data-testid="monitor-runs">
                        <thead><tr><th>"Started"</th><th>"Status"</th><th>"Rows"</th><th>"Drifted"</th><th>"Violations"</th><th>"Summary"</th></tr></thead>
                        <tbody>{runs}</tbody>
                    </table>
                    {report}
                    <div class="chart" inner_html=d.charts></div>
                }.into_any()
            })}
        </Transition>
        <FormError error=errors/>
    }
}

/// An endpoint's alarms.
#[server]
pub async fn list_alarms(name: String) -> Result<Vec<atelier_protocol::endpoints::Alarm>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::endpoints::alarms::list(&db, &p, &name).await?)
}

pub use alarm_form::{put_alarm, PutAlarm};

/// The alarm form's server function, in a module of its own: it takes eight fields, and
/// only a module-level allowance reaches the code `#[server]` generates for the browser.
#[allow(clippy::too_many_arguments)]
mod alarm_form {
    use super::*;

    /// Adds an alarm, or with `original` changes that one (keeping its history). A name
    /// another alarm of the endpoint uses is refused.
    #[server]
    pub async fn put_alarm(
        name: String,
        alarm: String,
        original: Option<String>,
        metric: String,
        comparison: String,
        threshold: String,
        periods: String,
        retrain: Option<String>,
    ) -> Result<(), AppError> {
        use atelier_core::endpoints::alarms;
        let (db, p) = crate::context::db_and_principal()?;
        let new = atelier_protocol::endpoints::NewAlarm {
            name: alarm,
            metric,
            comparison,
            threshold: threshold.trim().parse().map_err(|_| invalid("threshold", "threshold must be a number"))?,
            periods: parse_count("periods", &periods, 1)?,
            retrain: retrain.is_some(),
        };
        match original.as_deref().map(str::trim).filter(|o| !o.is_empty()) {
            Some(original) => alarms::update(&db, &p, &name, original, &new).await?,
            None => alarms::create(&db, &p, &name, &new).await?,
        };
        Ok(())
    }
}

#[server]
pub async fn mute_alarm(name: String, alarm: String, muted: bool) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::endpoints::alarms::set_muted(&db, &p, &name, &alarm, muted).await?;
    Ok(())
}

#[server]
pub async fn delete_alarm(name: String, alarm: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::endpoints::alarms::delete(&db, &p, &name, &alarm).await?;
    Ok(())
}

fn comparison_symbol(c: &str) -> &str {
    match c {
        "gt" => ">",
        "ge" => "≥",
        "lt" => "<",
        "le" => "≤",
        other => other,
    }
}

/// Alarms: their state and history, and for who may change the endpoint a form to add
/// or edit one, and buttons to mute and delete them.
#[component]
fn AlarmsSection(name: Signal<String>, tick: RwSignal<u32>, config: Config) -> impl IntoView {
    let add = ServerAction::<PutAlarm>::new();
    let mute = ServerAction::<MuteAlarm>::new();
    let delete = ServerAction::<DeleteAlarm>::new();
    // The alarm being edited in the form, if any.
    let editing = RwSignal::new(None::<atelier_protocol::endpoints::Alarm>);
    let alarms = Resource::new(
        move || (name.get(), add.version().get(), mute.version().get(), delete.version().get(), tick.get() / 5),
        |(n, ..)| list_alarms(n),
    );
    let errors = Signal::derive(move || {
        mute.value().get().and_then(Result::err).or_else(|| delete.value().get().and_then(Result::err))
    });
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let may_update = config.await.ok().is_some_and(|d| d.may_update);
                let list = match alarms.await {
                    Err(e) => return view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(answer) => answer,
                };
                if list.is_empty() {
                    return view! { <p class="muted">"No alarms."</p> }.into_any();
                }
                let endpoint = name.get_untracked();
                let rows = list.into_iter().map(|a| {
                    let history = a.history.iter().take(3)
                        .map(|h| format!("{} → {} at {}", h.from, h.to, format_time(h.at_ms / 1000)))
                        .collect::<Vec<_>>().join("; ");
                    let condition = format!("{} {} {} for {} period(s){}", a.metric, comparison_symbol(&a.comparison),
                        a.threshold, a.periods, if a.retrain { ", then retrain" } else { "" });
                    let state = if a.muted { format!("{} (muted)", a.state) } else { a.state.clone() };
                    let firing = a.state == "ALARM" && !a.muted;
                    let actions = may_update.then(|| {
                        let (edited, muted) = (a.clone(), a.muted);
                        let mute_input = MuteAlarm { name: endpoint.clone(), alarm: a.name.clone(), muted: !muted };
                        let delete_input = DeleteAlarm { name: endpoint.clone(), alarm: a.name.clone() };
                        let consequence = format!(
                            "Its history goes with it and nothing watches {} on this endpoint any more{}.",
                            a.metric,
                            if a.retrain { "; no retraining job will be opened" } else { "" }
                        );
                        view! {
                            <td class="row-actions">
                                <button type="button" class="secondary" data-testid="edit-alarm"
                                    on:click=move |_| editing.set(Some(edited.clone()))>"Edit"</button>
                                <button type="button" class="secondary" data-testid="mute-alarm"
                                    on:click=move |_| { mute.dispatch(mute_input.clone()); }>
                                    {if muted { "Unmute" } else { "Mute" }}
                                </button>
                                <ConfirmButton
                                    label="Delete"
                                    title=format!("Delete alarm {} of endpoint {endpoint}?", a.name)
                                    consequence
                                    confirm="Delete alarm"
                                    testid="delete-alarm"
                                    on_confirm=Callback::new(move |_| { delete.dispatch(delete_input.clone()); })
                                />
                            </td>
                        }
                    });
                    view! {
                        <tr data-alarm=a.name.clone() class:firing=firing>
                            <td>{a.name.clone()}</td>
                            <td>{condition}</td>
                            <td data-testid="alarm-state">{state}</td>
                            <td>{a.reason.clone()}</td>
                            <td>{history}</td>
                            {actions}
                        </tr>
                    }
                }).collect_view();
                view! {
                    <table class="table" data-testid="alarms">
                        <thead><tr>
                            <th>"Alarm"</th><th>"Condition"</th><th>"State"</th><th>"Reason"</th><th>"Last changes"</th>
                            {may_update.then(|| view! { <th><span class="visually-hidden">"Actions"</span></th> })}
                        </tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                }.into_any()
            })}
        </Transition>
        <FormError error=errors/>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                config.await.ok().filter(|d| d.may_update).map(|_| view! { <AlarmForm add name editing/> })
            })}
        </Transition>
    }
}

/// Adds an alarm, or edits the one chosen in the table.
#[component]
fn AlarmForm(
    add: ServerAction<PutAlarm>,
    name: Signal<String>,
    editing: RwSignal<Option<atelier_protocol::endpoints::Alarm>>,
) -> impl IntoView {
    let error = Signal::derive(move || add.value().get().and_then(Result::err));
    let first = NodeRef::<leptos::html::Input>::new();
    // Saved: back to adding.
    Effect::new(move |_| {
        if matches!(add.value().get(), Some(Ok(()))) {
            editing.set(None);
        }
    });
    // Chosen for editing: the form takes the focus.
    Effect::new(move |_| {
        if editing.with(Option::is_some) {
            if let Some(input) = first.get_untracked() {
                let _ = input.focus();
            }
        }
    });
    let field = move |f: fn(&atelier_protocol::endpoints::Alarm) -> String, default: &'static str| {
        move || editing.with(|e| e.as_ref().map(f).unwrap_or_else(|| default.to_string()))
    };
    let is_editing = move || editing.with(Option::is_some);
    view! {
            <ActionForm action=add attr:class="card form" attr:data-testid="alarm-form">
                <h3>{move || editing.with(|e| match e {
                    Some(a) => format!("Edit alarm {}", a.name),
                    None => "Add an alarm".to_string(),
                })}</h3>
                <input type="hidden" name="name" value=name.get_untracked()/>
                <input type="hidden" name="original" prop:value=field(|a| a.name.clone(), "")/>
                <label for="alarm-name">"Name"</label>
                <input id="alarm-name" name="alarm" type="text" required maxlength="63" node_ref=first
                    prop:value=field(|a| a.name.clone(), "")/>
                <FieldError error field="name"/>
                <label for="alarm-metric">"Metric"</label>
                <select id="alarm-metric" name="metric" prop:value=field(|a| a.metric.clone(), "errors_5xx")>
                    <option value="errors_5xx">"5xx errors per minute"</option>
                    <option value="errors_4xx">"4xx errors per minute"</option>
                    <option value="invocations">"invocations per minute"</option>
                    <option value="model_latency_p99_ms">"model latency p99 (ms)"</option>
                    <option value="overhead_latency_p99_ms">"overhead latency p99 (ms)"</option>
                    <option value="drifted_features">"drifted features (per monitor run)"</option>
                    <option value="violations">"constraint violations (per monitor run)"</option>
                </select>
                <label for="alarm-comparison">"Comparison"</label>
                <select id="alarm-comparison" name="comparison" prop:value=field(|a| a.comparison.clone(), "ge")>
                    <option value="ge">"≥"</option>
                    <option value="gt">">"</option>
                    <option value="le">"≤"</option>
                    <option value="lt">"<"</option>
                </select>
                <label for="alarm-threshold">"Threshold"</label>
                <input id="alarm-threshold" name="threshold" type="text" inputmode="decimal" required value="1"
                    prop:value=field(|a| a.threshold.to_string(), "1")/>
                <FieldError error field="threshold"/>
                <label for="alarm-periods">"Consecutive periods"</label>
                <input id="alarm-periods" name="periods" type="number" min="1" max="1440" value="1"
                    prop:value=field(|a| a.periods.to_string(), "1")/>
                <FieldError error field="periods"/>
                <label class="checkbox"><input type="checkbox" name="retrain" value="on"
                    prop:checked=move || editing.with(|e| e.as_ref().is_some_and(|a| a.retrain))/> " Open a retraining job when it goes off"</label>
                <FormError error/>
                <div class="actions">
                    <button type="submit">{move || if is_editing() { "Save alarm" } else { "Add alarm" }}</button>
                    <Show when=is_editing>
                        <button type="button" class="secondary" on:click=move |_| editing.set(None)>"Cancel editing"</button>
                    </Show>
                </div>
            </ActionForm>
    }
}
