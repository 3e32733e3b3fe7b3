//! Admin > Groups, Policies and the policy simulator.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};

use crate::confirm::ConfirmButton;
use crate::error::AppError;
use crate::format::format_time;
use crate::forms::{FieldError, FormError};

/// A group as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct GroupInfo {
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub member_count: i64,
}

/// A group with its members (usernames) and attached policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct GroupDetail {
    #[serde(flatten)]
    pub group: GroupInfo,
    pub members: Vec<String>,
    pub policies: Vec<String>,
}

/// A policy as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct PolicyInfo {
    pub name: String,
    pub description: String,
    /// Built-in policies are defined by Atelier and cannot be changed.
    pub builtin: bool,
    pub default_version: i64,
    /// Number of users and groups it is attached to.
    pub attachments: i64,
    pub updated_at: i64,
}

/// One stored version of a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct PolicyVersionInfo {
    pub version: i64,
    pub document: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A policy with its default document, every version and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct PolicyDetail {
    #[serde(flatten)]
    pub policy: PolicyInfo,
    pub document: String,
    pub versions: Vec<PolicyVersionInfo>,
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// A statement that decided a simulated request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DecidingStatement {
    pub policy: String,
    pub index: usize,
    pub sid: Option<String>,
    /// `Allow` or `Deny`.
    pub effect: String,
}

/// The simulator's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SimulationResult {
    pub allowed: bool,
    /// `Allow`, `ExplicitDeny` or `ImplicitDeny`.
    pub outcome: String,
    pub decided_by: Vec<DecidingStatement>,
    pub explanation: String,
    /// The policies evaluated (SelfService, direct and through groups).
    pub policies: Vec<String>,
}

/// The catalogue of actions, resource types and condition keys policies may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Catalogue {
    pub actions: Vec<CatalogueAction>,
    pub resource_types: Vec<String>,
    pub condition_keys: Vec<CatalogueKey>,
    pub condition_operators: Vec<String>,
    pub variables: Vec<String>,
    pub policy_versions: Vec<String>,
    pub max_document_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CatalogueAction {
    pub name: String,
    /// `Read` or `Write` (writes are always audited).
    pub access: String,
    pub resource: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CatalogueKey {
    pub name: String,
    /// `String`, `Bool` or `Date`.
    #[serde(rename = "type")]
    pub key_type: String,
    pub description: String,
}

#[cfg(feature = "ssr")]
impl Catalogue {
    /// The catalogue, from its one definition in `atelier_core::iam::catalogue`.
    pub fn new() -> Self {
        use atelier_core::iam::{catalogue, document, Action};
        Catalogue {
            actions: Action::ALL
                .iter()
                .map(|a| {
                    let d = a.def();
                    CatalogueAction {
                        name: d.name.into(),
                        access: format!("{:?}", d.access),
                        resource: d.resource.into(),
                        description: d.description.into(),
                    }
                })
                .collect(),
            resource_types: catalogue::resource_types().iter().map(|r| r.pattern.to_string()).collect(),
            condition_keys: catalogue::CONDITION_KEYS
                .iter()
                .map(|k| CatalogueKey {
                    name: if k.name.ends_with('/') { format!("{}<tag>", k.name) } else { k.name.into() },
                    key_type: format!("{:?}", k.key_type),
                    description: k.description.into(),
                })
                .collect(),
            condition_operators: document::Operator::ALL.iter().map(|o| o.name().to_string()).collect(),
            variables: catalogue::VARIABLES.iter().map(|(v, _)| v.to_string()).collect(),
            policy_versions: document::VERSIONS.iter().map(|v| v.to_string()).collect(),
            max_document_bytes: document::MAX_DOCUMENT_BYTES,
        }
    }
}

#[cfg(feature = "ssr")]
impl Default for Catalogue {
    fn default() -> Self {
        Catalogue::new()
    }
}

#[cfg(feature = "ssr")]
mod convert {
    use super::*;
    use atelier_core::iam::{admin, simulate, store};

    impl From<store::GroupInfo> for GroupInfo {
        fn from(g: store::GroupInfo) -> Self {
            GroupInfo { name: g.name, description: g.description, created_at: g.created_at, member_count: g.members }
        }
    }

    impl From<admin::GroupDetail> for GroupDetail {
        fn from(d: admin::GroupDetail) -> Self {
            GroupDetail { group: d.group.into(), members: d.members, policies: d.policies }
        }
    }

    impl From<store::PolicyInfo> for PolicyInfo {
        fn from(p: store::PolicyInfo) -> Self {
            PolicyInfo {
                name: p.name,
                description: p.description,
                builtin: p.builtin != 0,
                default_version: p.default_version,
                attachments: p.attachments,
                updated_at: p.updated_at,
            }
        }
    }

    impl From<admin::PolicyDetail> for PolicyDetail {
        fn from(d: admin::PolicyDetail) -> Self {
            PolicyDetail {
                policy: d.policy.into(),
                document: d.document,
                versions: d
                    .versions
                    .into_iter()
                    .map(|v| PolicyVersionInfo {
                        version: v.version,
                        document: v.document,
                        created_at: v.created_at,
                        created_by: v.created_by,
                    })
                    .collect(),
                users: d.users,
                groups: d.groups,
            }
        }
    }

    impl From<simulate::Simulation> for SimulationResult {
        fn from(s: simulate::Simulation) -> Self {
            SimulationResult {
                allowed: s.allowed,
                outcome: format!("{:?}", s.evaluation.outcome),
                decided_by: s
                    .evaluation
                    .decided_by
                    .into_iter()
                    .map(|d| DecidingStatement {
                        policy: d.policy,
                        index: d.index,
                        sid: d.sid,
                        effect: format!("{:?}", d.effect),
                    })
                    .collect(),
                explanation: s.explanation,
                policies: s.policies,
            }
        }
    }
}

/// Policy and group names for the "attach" and "add to group" pickers. Needs
/// `iam:ListPolicies`; the groups are left out when the viewer may not list them.
#[server]
pub async fn attach_choices() -> Result<(Vec<String>, Vec<String>), AppError> {
    use atelier_core::authz::{Action, Resource};
    use atelier_core::iam::{admin, builtin};
    let (db, p) = crate::context::db_and_principal()?;
    let policies = admin::list_policies(&db, &p)
        .await?
        .into_iter()
        .map(|p| p.name)
        .filter(|n| n != builtin::SELF_SERVICE)
        .collect();
    let groups = if p.can(Action::ListGroups, &Resource::group("*")) {
        admin::list_groups(&db, &p).await?.into_iter().map(|g| g.name).collect()
    } else {
        Vec::new()
    };
    Ok((policies, groups))
}

#[server]
pub async fn list_groups() -> Result<Vec<GroupInfo>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::iam::admin::list_groups(&db, &p).await?.into_iter().map(GroupInfo::from).collect())
}

#[server]
pub async fn get_group(name: String) -> Result<GroupDetail, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::iam::admin::get_group(&db, &p, &name).await?.into())
}

#[server]
pub async fn create_group(name: String, description: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::iam::admin::create_group(&db, &p, &name, &description).await?;
    Ok(())
}

#[server]
pub async fn delete_group(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::iam::admin::delete_group(&db, &p, &name).await?;
    leptos_axum::redirect("/admin/groups");
    Ok(())
}

#[server]
pub async fn set_group_member(group: String, username: String, member: bool) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::iam::admin::set_member(&db, &p, &group, &username, member).await?;
    Ok(())
}

/// The attach forms start on no policy (none is a safe default): a clear error when
/// none was chosen.
#[cfg(feature = "ssr")]
pub(crate) fn policy_chosen(policy: &str) -> Result<(), AppError> {
    if policy.trim().is_empty() {
        // Through CoreError: the answer's status is then 422.
        return Err(atelier_core::CoreError::invalid("policy", "Choose a policy to attach.").into());
    }
    Ok(())
}

#[server]
pub async fn set_group_policy(group: String, policy: String, attach: bool) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    policy_chosen(&policy)?;
    atelier_core::iam::admin::set_group_policy(&db, &p, &group, &policy, attach).await?;
    Ok(())
}

#[server]
pub async fn list_policies() -> Result<Vec<PolicyInfo>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::iam::admin::list_policies(&db, &p).await?.into_iter().map(PolicyInfo::from).collect())
}

#[server]
pub async fn get_policy(name: String) -> Result<PolicyDetail, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::iam::admin::get_policy(&db, &p, &name).await?.into())
}

#[server]
pub async fn create_policy(name: String, description: String, document: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let detail = atelier_core::iam::admin::create_policy(&db, &p, &name, &description, &document).await?;
    leptos_axum::redirect(&format!("/admin/policies/{}", detail.policy.name));
    Ok(())
}

/// Saves a new version of a policy document, which becomes the default.
#[server]
pub async fn save_policy(name: String, document: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::iam::admin::update_policy(&db, &p, &name, Some(&document), None).await?;
    Ok(())
}

#[server]
pub async fn set_default_version(name: String, version: i64) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::iam::admin::set_default_version(&db, &p, &name, version).await?;
    Ok(())
}

#[server]
pub async fn delete_policy(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::iam::admin::delete_policy(&db, &p, &name).await?;
    leptos_axum::redirect("/admin/policies");
    Ok(())
}

/// Runs the simulator. `context` holds one `key=value` per line.
#[server]
pub async fn simulate(
    username: String,
    action: String,
    resource: String,
    context: String,
) -> Result<SimulationResult, AppError> {
    use atelier_core::iam::simulate::SimulationRequest;
    use atelier_core::CoreError;
    let (db, p) = crate::context::db_and_principal()?;
    let mut pairs = Vec::new();
    for line in context.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| CoreError::invalid("context", format!("\"{line}\" is not key=value")))?;
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    let request = SimulationRequest { username, action, resource, context: pairs };
    Ok(atelier_core::iam::admin::simulate(&db, &p, &request).await?.into())
}

/// The catalogue, for the policy editor's reference and the simulator's pickers.
#[server]
pub async fn get_catalogue() -> Result<Catalogue, AppError> {
    use atelier_core::authz::{Action, Resource};
    crate::context::authorize(Action::GetCatalogue, &Resource::new("atelier:iam:catalogue"))?;
    Ok(Catalogue::new())
}

/// The catalogue as a reference table under the policy editor.
#[component]
fn CatalogueReference() -> impl IntoView {
    let catalogue = Resource::new(|| (), |_| get_catalogue());
    view! {
        <details class="card" data-testid="catalogue">
            <summary>"Catalogue: actions, resources and condition keys"</summary>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    catalogue.await.ok().map(|c| view! {
                        <table class="table">
                            <thead><tr><th>"Action"</th><th>"Access"</th><th>"Resource"</th><th>"Description"</th></tr></thead>
                            <tbody>
                                {c.actions.into_iter().map(|a| view! {
                                    <tr><td><code>{a.name}</code></td><td>{a.access}</td><td><code>{a.resource}</code></td><td>{a.description}</td></tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                        <h3>"Condition keys"</h3>
                        <ul>
                            {c.condition_keys.into_iter().map(|k| view! {
                                <li><code>{k.name}</code>" ("{k.key_type}"): "{k.description}</li>
                            }).collect_view()}
                        </ul>
                        <p>"Operators: "{c.condition_operators.join(", ")}". Variables: "{c.variables.join(", ")}
                           ". Version: "{c.policy_versions.join(", ")}". At most "{c.max_document_bytes}" bytes."</p>
                    })
                })}
            </Transition>
        </details>
    }
}

/// Admin > Groups.
#[component]
pub fn GroupsPage() -> impl IntoView {
    let create = ServerAction::<CreateGroup>::new();
    let groups = Resource::new(move || create.version().get(), |_| list_groups());
    let error = Signal::derive(move || create.value().get().and_then(Result::err));
    let me = expect_context::<crate::CurrentUser>();
    let can_create = move || crate::auth::can(me, crate::auth::Can::CreateGroup);
    view! {
        <h1>"Groups"</h1>
        <p class="muted">"Members of a group get its policies. Labeling work teams are groups too."</p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match groups.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No groups yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table">
                            <thead><tr><th>"Name"</th><th>"Description"</th><th>"Members"</th><th>"Created"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|g| {
                                    let (key, href) = (g.name.clone(), format!("/admin/groups/{}", g.name));
                                    view! {
                                    <tr data-group=key>
                                        <td><A href=href>{g.name}</A></td>
                                        <td>{g.description}</td>
                                        <td>{g.member_count}</td>
                                        <td>{format_time(g.created_at)}</td>
                                    </tr>
                                }}).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
        <Show when=can_create>
        <ActionForm action=create attr:class="card form">
            <h2>"New group"</h2>
            <label for="group-name">"Name"</label>
            <input id="group-name" name="name" type="text" required maxlength="128"/>
            <FieldError error field="name"/>
            <label for="group-description">"Description"</label>
            <input id="group-description" name="description" type="text"/>
            <FieldError error field="description"/>
            <FormError error/>
            <button type="submit" class="primary">"Create group"</button>
        </ActionForm>
        </Show>
        </Transition>
    }
}

/// Admin > Groups > one group.
#[component]
pub fn GroupPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let member = ServerAction::<SetGroupMember>::new();
    let policy = ServerAction::<SetGroupPolicy>::new();
    let delete = ServerAction::<DeleteGroup>::new();
    // The server function redirects; after a confirmation it is dispatched from code, so
    // the page follows here as well.
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if matches!(delete.value().get(), Some(Ok(()))) {
            navigate("/admin/groups", Default::default());
        }
    });
    let group = Resource::new(move || (name(), member.version().get(), policy.version().get()), |(n, ..)| get_group(n));
    let choices = Resource::new(|| (), |_| attach_choices());
    let error = Signal::derive(move || {
        [member.value().get(), policy.value().get(), delete.value().get()].into_iter().flatten().find_map(Result::err)
    });
    view! {
        <p><A href="/admin/groups">"← Groups"</A></p>
        <FormError error/>
        <FieldError error field="username"/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let (all_policies, _) = choices.await.unwrap_or_default();
                match group.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(g) => {
                        let GroupDetail { group: info, members, policies } = g;
                        // StoredValue is Copy: each form's children closure can take it.
                        let gname = StoredValue::new(info.name.clone());
                        let member_count = members.len();
                        let member_rows = members.into_iter().map(|m| {
                            let (href, value) = (format!("/admin/users/{m}"), m.clone());
                            view! {
                                <li>
                                    <A href=href>{m}</A>" "
                                    <ActionForm action=member attr:class="inline">
                                        <input type="hidden" name="group" value=gname.get_value()/>
                                        <input type="hidden" name="username" value=value/>
                                        <input type="hidden" name="member" value="false"/>
                                        <button type="submit" class="link">"Remove"</button>
                                    </ActionForm>
                                </li>
                            }
                        }).collect_view();
                        let options = all_policies.into_iter().filter(|p| !policies.contains(p))
                            .map(|p| { let v = p.clone(); view! { <option value=v>{p}</option> } }).collect_view();
                        let policy_rows = policies.into_iter().map(|p| {
                            let (href, key) = (format!("/admin/policies/{p}"), p.clone());
                            let group = gname.get_value();
                            let title = format!("Detach policy {p} from group {group}?");
                            let consequence = format!(
                                "Every member of {group} loses what {p} allows them from their next request on, \
                                 unless another of their policies allows it too."
                            );
                            let target = SetGroupPolicy { group, policy: p.clone(), attach: false };
                            view! {
                                <li data-policy=key>
                                    <A href=href>{p}</A>" "
                                    <ConfirmButton
                                        label="Detach"
                                        class="link"
                                        title
                                        consequence
                                        confirm="Detach policy"
                                        on_confirm=Callback::new(move |_| { policy.dispatch(target.clone()); })
                                    />
                                </li>
                            }
                        }).collect_view();
                        view! {
                            <h1>"Group " {gname.get_value()}</h1>
                            <p class="muted">{info.description}</p>
                            <section class="card">
                                <h2>"Members"</h2>
                                <ul data-testid="group-members">{member_rows}</ul>
                                <ActionForm action=member attr:class="inline">
                                    <input type="hidden" name="group" value=gname.get_value()/>
                                    <input type="hidden" name="member" value="true"/>
                                    <input type="text" name="username" placeholder="username" aria-label="Username to add" required/>
                                    <button type="submit" class="secondary">"Add member"</button>
                                </ActionForm>
                            </section>
                            <section class="card">
                                <h2>"Policies"</h2>
                                <ul data-testid="group-policies">{policy_rows}</ul>
                                <ActionForm action=policy attr:class="inline">
                                    <input type="hidden" name="group" value=gname.get_value()/>
                                    <input type="hidden" name="attach" value="true"/>
                                    <select name="policy" aria-label="Policy to attach" data-testid="attach-policy">
                                        <option value="" selected>"Choose a policy…"</option>
                                        {options}
                                    </select>
                                    <button type="submit" class="secondary">"Attach policy"</button>
                                </ActionForm>
                                <FieldError error field="policy"/>
                            </section>
                            <ConfirmButton
                                label="Delete group"
                                title=format!("Delete group {}?", gname.get_value())
                                consequence=format!(
                                    "Its {member_count} member(s) lose what its policies allow them; the policies themselves stay."
                                )
                                confirm="Delete group"
                                testid="delete-group"
                                on_confirm=Callback::new(move |_| { delete.dispatch(DeleteGroup { name: gname.get_value() }); })
                            />
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

const TEMPLATE: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ReadModels",
      "Effect": "Allow",
      "Action": ["models:List*", "models:Get*"],
      "Resource": "*"
    }
  ]
}"#;

/// Admin > Policies.
#[component]
pub fn PoliciesPage() -> impl IntoView {
    let create = ServerAction::<CreatePolicy>::new();
    let policies = Resource::new(|| (), |_| list_policies());
    let error = Signal::derive(move || create.value().get().and_then(Result::err));
    view! {
        <h1>"Policies"</h1>
        <p class="muted">"IAM-style JSON documents: default deny, an explicit Deny wins. "<A href="/admin/simulator">"Try them in the simulator."</A></p>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match policies.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table">
                            <thead><tr><th>"Name"</th><th>"Type"</th><th>"Description"</th><th>"Version"</th><th>"Attached"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|p| {
                                    let (key, href) = (p.name.clone(), format!("/admin/policies/{}", p.name));
                                    view! {
                                    <tr data-policy=key>
                                        <td><A href=href>{p.name}</A></td>
                                        <td>{if p.builtin { "built-in" } else { "customer" }}</td>
                                        <td>{p.description}</td>
                                        <td>{if p.builtin { "-".to_string() } else { format!("v{}", p.default_version) }}</td>
                                        <td>{p.attachments}</td>
                                    </tr>
                                }}).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
        <ActionForm action=create attr:class="card form">
            <h2>"New policy"</h2>
            <label for="policy-name">"Name"</label>
            <input id="policy-name" name="name" type="text" required maxlength="128"/>
            <FieldError error field="name"/>
            <label for="policy-description">"Description"</label>
            <input id="policy-description" name="description" type="text"/>
            <label for="policy-document">"Document"</label>
            <textarea id="policy-document" name="document" rows="14" class="code" spellcheck="false">{TEMPLATE}</textarea>
            <FieldError error field="document"/>
            <FormError error/>
            <button type="submit" class="primary">"Create policy"</button>
        </ActionForm>
        <CatalogueReference/>
    }
}

/// Admin > Policies > one policy: document editor, versions, rollback, delete.
#[component]
pub fn PolicyPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let save = ServerAction::<SavePolicy>::new();
    let rollback = ServerAction::<SetDefaultVersion>::new();
    let delete = ServerAction::<DeletePolicy>::new();
    // The server function redirects; after a confirmation it is dispatched from code, so
    // the page follows here as well.
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if matches!(delete.value().get(), Some(Ok(()))) {
            navigate("/admin/policies", Default::default());
        }
    });
    let policy =
        Resource::new(move || (name(), save.version().get(), rollback.version().get()), |(n, ..)| get_policy(n));
    let save_error = Signal::derive(move || save.value().get().and_then(Result::err));
    let error = Signal::derive(move || {
        [rollback.value().get(), delete.value().get()].into_iter().flatten().find_map(Result::err)
    });
    view! {
        <p><A href="/admin/policies">"← Policies"</A></p>
        <FormError error/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match policy.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(p) => {
                        let PolicyDetail { policy: info, document, versions, users, groups } = p;
                        let pname = StoredValue::new(info.name.clone());
                        let default_version = info.default_version;
                        let holders = format!(
                            "Attached to users: {}; groups: {}.",
                            if users.is_empty() { "none".to_string() } else { users.join(", ") },
                            if groups.is_empty() { "none".to_string() } else { groups.join(", ") },
                        );
                        let holders_again = holders.clone();
                        let header = view! {
                            <h1>"Policy " {pname.get_value()}</h1>
                            <p class="muted">{info.description.clone()}</p>
                            <p>
                                {if info.builtin { "Built-in (read-only). ".to_string() } else { format!("Default version: v{default_version}. ") }}
                                {holders}
                            </p>
                        };
                        if info.builtin {
                            return view! { {header} <pre class="code" data-testid="policy-document">{document}</pre> }.into_any();
                        }
                        let value = document.clone();
                        let version_rows = versions.into_iter().map(|v| {
                            view! {
                                <tr data-version=v.version>
                                    <td>{format!("v{}", v.version)}{(v.version == default_version).then_some(" (default)")}</td>
                                    <td>{format_time(v.created_at)}</td>
                                    <td>{v.created_by}</td>
                                    <td><details><summary>"View"</summary><pre class="code">{v.document}</pre></details></td>
                                    <td>
                                        {(v.version != default_version).then(|| view! {
                                            <ActionForm action=rollback attr:class="inline">
                                                <input type="hidden" name="name" value=pname.get_value()/>
                                                <input type="hidden" name="version" value=v.version/>
                                                <button type="submit" class="secondary">"Make default"</button>
                                            </ActionForm>
                                        })}
                                    </td>
                                </tr>
                            }
                        }).collect_view();
                        view! {
                            {header}
                            <ActionForm action=save attr:class="card form">
                                <input type="hidden" name="name" value=pname.get_value()/>
                                <label for="policy-document">"Document (saving adds a version and makes it the default)"</label>
                                // prop:value as well: after the user typed, the text content no longer
                                // sets what the box shows, and a rollback must.
                                <textarea id="policy-document" name="document" rows="18" class="code" spellcheck="false"
                                    data-testid="policy-document" prop:value=value>{document}</textarea>
                                <FieldError error=save_error field="document"/>
                                <FormError error=save_error/>
                                <button type="submit" class="primary">"Save new version"</button>
                            </ActionForm>
                            <section class="card">
                                <h2>"Versions"</h2>
                                <table class="table">
                                    <thead><tr><th>"Version"</th><th>"Saved"</th><th>"By"</th><th>"Document"</th><th></th></tr></thead>
                                    <tbody>{version_rows}</tbody>
                                </table>
                            </section>
                            <ConfirmButton
                                label="Delete policy"
                                title=format!("Delete policy {}?", pname.get_value())
                                consequence=format!("Every version of it goes. {holders_again}")
                                confirm="Delete policy"
                                testid="delete-policy"
                                on_confirm=Callback::new(move |_| { delete.dispatch(DeletePolicy { name: pname.get_value() }); })
                            />
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

/// Admin > Simulator.
#[component]
pub fn SimulatorPage() -> impl IntoView {
    let run = ServerAction::<Simulate>::new();
    let catalogue = Resource::new(|| (), |_| get_catalogue());
    let error = Signal::derive(move || run.value().get().and_then(Result::err));
    view! {
        <h1>"Policy simulator"</h1>
        <p class="muted">"What would a user's policies decide? Nothing is changed and nothing is run."</p>
        <ActionForm action=run attr:class="card form">
            <label for="sim-username">"User"</label>
            <input id="sim-username" name="username" type="text" required placeholder="alice"/>
            <FieldError error field="username"/>
            <label for="sim-action">"Action"</label>
            <Transition fallback=|| view! { <input id="sim-action" name="action" type="text" required/> }>
                {move || Suspend::new(async move {
                    let actions = catalogue.await.map(|c| c.actions).unwrap_or_default();
                    view! {
                        <select id="sim-action" name="action">
                            {actions.into_iter().map(|a| { let v = a.name.clone(); view! { <option value=v>{a.name}</option> } }).collect_view()}
                        </select>
                    }
                })}
            </Transition>
            <FieldError error field="action"/>
            <label for="sim-resource">"Resource"</label>
            <input id="sim-resource" name="resource" type="text" required placeholder="atelier:models:group/fraud/version/3"/>
            <FieldError error field="resource"/>
            <label for="sim-context">"Context keys (one key=value per line, optional)"</label>
            <textarea id="sim-context" name="context" rows="3" class="code" placeholder="atelier:ResourceCreator=bob"></textarea>
            <FieldError error field="context"/>
            <FormError error/>
            <button type="submit" class="primary">"Simulate"</button>
        </ActionForm>
        {move || run.value().get().and_then(Result::ok).map(|r| view! {
            <section class=if r.allowed { "card decision allow" } else { "card decision deny" } data-testid="simulation">
                <h2 data-testid="decision">{if r.allowed { "Allow" } else { "Deny" }}</h2>
                <p data-testid="explanation">{r.explanation.clone()}</p>
                {(!r.decided_by.is_empty()).then(|| view! {
                    <ul>
                        {r.decided_by.iter().map(|d| view! {
                            <li>{format!("{} — statement {}{} ({})", d.policy, d.index, d.sid.as_ref().map(|s| format!(" \"{s}\"")).unwrap_or_default(), d.effect)}</li>
                        }).collect_view()}
                    </ul>
                })}
                <p class="muted">"Policies evaluated: "{r.policies.join(", ")}</p>
            </section>
        })}
    }
}
